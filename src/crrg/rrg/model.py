"""The region-guided report generator (family ``rrg``): detector -> region heads -> GPT-2 -> report.

``generate_report`` follows :mod:`crrg.reporting`: it takes one study (frontal and optionally lateral
image), finds the 29 regions on the frontal image, decides which regions get a sentence, writes each
selected region's sentence with the prefix-conditioned GPT-2, and assembles FINDINGS and IMPRESSION.
The lateral image is accepted but not used by this model (the region ground truth is frontal only).

Config keys (``src/crrg/models/configs/rrg-*.json``): ``detector`` (:class:`DetectorConfig`),
``feature_width``, ``language`` (:class:`LanguageConfig`), ``heads`` (hidden sizes), ``thresholds``
(selection / abnormal / per-finding), ``assembly`` (``dedup_threshold``, ``embedder``,
``drop_restatements``, ``normal_impression``), ``decoding`` (``consensus``: beam candidates per
sentence to take the consensus of, :mod:`crrg.rrg.consensus`; ``impression_agreement``: the IMPRESSION
is the beam candidate that restates the FINDINGS; ``filter_candidates``: with joint "filter", a region's
candidates that contradict the classifier are vetoed before their consensus is taken), ``joint`` (the default joint mode of :meth:`RRGModel.generate_report`: ``off``, ``condition``, ``rerank`` or ``filter``),
``region_context`` (optional, :class:`crrg.rrg.region_context.RegionContextConfig`: each region's
feature also carries the attached classifier's tower pooled inside the region box).
The FINDINGS sentence order learned from the training reports (:mod:`crrg.rrg.ordering`) is the
model folder's ``sentence_order.json``; without it sentences stay in anatomical order.
A finding classifier attached for the joint design (:func:`crrg.rrg.joint.attach_classifier`) is saved
in the model folder's ``classifier/`` and attached again on load.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crrg.errors import ConfigError, InputError
from crrg.io import atomic_write_json
from crrg.models.registry import register_family
from crrg.observations import ANATOMICAL_REGIONS, CHEXPERT_14, FRONTAL_VIEWS, LATERAL_VIEWS, LUNG_FIELD_REGIONS
from crrg.reporting import GeneratedReport, RegionOut, SentenceOut, StudyInput
from crrg.rrg.assembly import GLOBAL_REGION, NORMAL_IMPRESSION, RegionSentence, SentenceEmbedder, assemble_report
from crrg.rrg.ordering import ORDER_FILE, SentenceOrder
from crrg.rrg.consensus import consensus
from crrg.rrg.classifiers import RegionBinaryClassifier, StudyFindingClassifier
from crrg.rrg.detector import NUM_REGIONS, DetectorConfig, Detections, RegionDetector, to_rgb_tensor
from crrg.rrg.language import (LanguageConfig, RegionLanguageModel, decode, load_tokenizer, save_tokenizer,
                               special_ids)

log = logging.getLogger(__name__)
THRESHOLDS_FILE = "thresholds.json"
CLASSIFIER_DIR = "classifier"  # an attached finding classifier (crrg.rrg.joint), saved inside the model
# Findings that do not make a study abnormal (they do not call for an IMPRESSION of their own).
NOT_ABNORMAL = ("No Finding", "Support Devices")
JOINT_MODES = ("off", "condition", "rerank", "filter")


@dataclass
class Thresholds:
    selection: float = 0.5
    abnormal: float = 0.5
    findings: dict[str, float] | None = None  # per CheXpert-14 name; 0.5 when absent

    def finding(self, name: str) -> float:
        return (self.findings or {}).get(name, 0.5)

    @classmethod
    def from_dict(cls, t: dict) -> "Thresholds":
        return cls(t.get("selection", 0.5), t.get("abnormal", 0.5), t.get("findings"))

    def to_dict(self) -> dict:
        return {"selection": self.selection, "abnormal": self.abnormal, "findings": self.findings}


def choose_frontal(study: StudyInput) -> int:
    """Index of the image the regions are read from: the first frontal, else the first non-lateral."""
    if not study.images:
        raise InputError("the study has no images")
    for i, view in enumerate(study.views):
        if view in FRONTAL_VIEWS:
            return i
    for i, view in enumerate(study.views):
        if view not in LATERAL_VIEWS:
            return i
    raise InputError("the study has only lateral images; the region-guided generator needs a frontal (PA/AP) image")


class SummaryQuery(nn.Module):
    """The decoder's input for text that belongs to no single region: the mean feature of a set of
    regions plus a learned vector saying which kind of text to write. The IMPRESSION uses the abnormal
    regions; the "global" findings (bones, edema, ... sentences no region owns) use all regions."""

    def __init__(self, width: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(width))

    def forward(self, region_features: torch.Tensor, abnormal: torch.Tensor) -> torch.Tensor:
        """(B, 29, w) features and (B, 29) 0/1 abnormal masks -> (B, w)."""
        weights = abnormal.to(region_features.dtype).unsqueeze(-1)
        mean = (region_features * weights).sum(1) / weights.sum(1).clamp(min=1)
        return mean + self.query


class RRGModel(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.det_cfg = DetectorConfig.from_dict(config.get("detector"))
        self.lang_cfg = LanguageConfig.from_dict(config.get("language"))
        width = int(config.get("feature_width", 256))
        heads = config.get("heads", {})
        self.detector = RegionDetector(self.det_cfg)
        from crrg.rrg.region_features import RegionFeatureProjector

        self.projector = RegionFeatureProjector(self.detector.feature_size, width)
        from crrg.rrg.region_context import RegionContext, RegionContextConfig

        self.context_cfg = RegionContextConfig.from_dict(config.get("region_context"))
        self.context = RegionContext(self.context_cfg) if self.context_cfg else None
        self.context_projector = None
        if self.context_cfg:
            # added to the projected detector feature; zero at first, so a model warm-started without
            # context writes exactly what it wrote before until training moves it
            self.context_projector = nn.Sequential(nn.LayerNorm(self.context_cfg.channels),
                                                   nn.Linear(self.context_cfg.channels, width))
            nn.init.zeros_(self.context_projector[1].weight)
            nn.init.zeros_(self.context_projector[1].bias)
        self.selection = RegionBinaryClassifier(width, heads.get("region_hidden", 128))
        self.abnormality = RegionBinaryClassifier(width, heads.get("region_hidden", 128))
        self.findings = StudyFindingClassifier(width, heads.get("finding_hidden", 256))
        ids = config.get("special_ids")
        self.language = RegionLanguageModel(self.lang_cfg, width, ids)
        self.impression_query = SummaryQuery(width)
        self.global_query = SummaryQuery(width)
        t = config.get("thresholds", {})
        self.thresholds = Thresholds.from_dict(t)
        assembly = config.get("assembly", {})
        self.dedup_threshold = float(assembly.get("dedup_threshold", 0.9))
        # Also drop sentences that only restate findings an earlier sentence stated (crrg.rrg.assembly).
        self.drop_restatements = bool(assembly.get("drop_restatements", False))
        self.use_embedder = bool(assembly.get("embedder", True))
        # The IMPRESSION of a study with nothing abnormal (a bundled model's is the consensus of its
        # training reports' normal impressions, crrg.rrg.consensus).
        self.normal_impression = str(assembly.get("normal_impression") or NORMAL_IMPRESSION)
        decoding = config.get("decoding", {})
        self.consensus_candidates = int(decoding.get("consensus", 0))
        # IMPRESSION: the beam candidate that restates the FINDINGS (crrg.rrg.joint.agreeing_impression)
        self.impression_agreement = bool(decoding.get("impression_agreement", False))
        # joint "filter": veto each region's candidates before taking their consensus, so a region whose
        # consensus contradicts the classifier keeps a candidate that agrees instead of losing its sentence
        self.filter_candidates = bool(decoding.get("filter_candidates", False))
        # Findings sentences no region owns (bones, edema): written from all regions at once.
        self.global_sentences = bool(config.get("global_sentences", True))
        self.joint_mode = str(config.get("joint", "condition"))
        if self.joint_mode not in JOINT_MODES:
            raise ConfigError(f"unknown joint mode {self.joint_mode!r} in the rrg config; one of {JOINT_MODES}")
        self.tokenizer = None
        self._embedder: SentenceEmbedder | None = None
        # FINDINGS order learned from the training reports (crrg.rrg.ordering); anatomical without one
        self.sentence_order = None
        self.finding_source = None  # joint design: an external classifier (crrg.rrg.joint)

    # ----- pieces used by training and inference -----
    @property
    def input_width(self) -> int:
        """Width of what :meth:`region_features` takes: detector features, then the region context."""
        return self.detector.feature_size + (self.context_cfg.channels if self.context_cfg else 0)

    def region_features(self, roi_features: torch.Tensor) -> torch.Tensor:
        """(..., 29, input_width) -> (..., 29, width); with region context the input is the detector's
        features followed by the context (:meth:`region_inputs`)."""
        if roi_features.shape[-1] != self.input_width:
            raise ValueError(f"region inputs are {roi_features.shape[-1]} wide; this model takes {self.input_width} "
                             f"(detector {self.detector.feature_size}"
                             + (f" + region context {self.context_cfg.channels})" if self.context_cfg else ")"))
        size = self.detector.feature_size
        out = self.projector(roi_features[..., :size])
        if self.context_projector is not None:
            out = out + self.context_projector(roi_features[..., size:])
        return out

    def region_inputs(self, images: list, detections: list[Detections]) -> torch.Tensor:
        """(B, 29, input_width): each image's detector features, with the region context appended when
        the config asks for it. ``images`` are the (H, W) arrays the detections were made on."""
        feats = torch.stack([d.features.float() for d in detections])
        if self.context is None:
            return feats
        from crrg.rrg.region_context import tower_of

        context = self.context(tower_of(self), list(images), [d.boxes for d in detections])
        return torch.cat([feats, context.to(feats)], -1)

    def heads(self, region_features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"selection": self.selection(region_features), "abnormal": self.abnormality(region_features),
                "findings": self.findings(region_features)}

    @property
    def embedder(self) -> SentenceEmbedder | None:
        if self.use_embedder and self._embedder is None:
            self._embedder = SentenceEmbedder()
        return self._embedder

    # ----- save / load of what is not a tensor -----
    def on_saved(self, folder: Path, dtype=None) -> None:
        if self.tokenizer is not None:
            save_tokenizer(self.tokenizer, Path(folder))
        atomic_write_json(Path(folder) / THRESHOLDS_FILE, self.thresholds.to_dict())
        if self.sentence_order:
            self.sentence_order.save(folder)
        elif (Path(folder) / ORDER_FILE).exists():
            (Path(folder) / ORDER_FILE).unlink()
        # An attached image classifier (joint design) travels with the model, in the model's dtype, so
        # that loading the folder gives the same reports; without one, a classifier left in the folder
        # by an earlier save must go, or loading would attach it.
        attached = getattr(self.finding_source, "classifier", None)
        if attached is not None and getattr(attached, "crrg_config", None) is not None:
            from crrg.models.registry import save_pretrained

            save_pretrained(attached, Path(folder) / CLASSIFIER_DIR, dtype=dtype)
        elif (Path(folder) / CLASSIFIER_DIR).exists():
            import shutil

            shutil.rmtree(Path(folder) / CLASSIFIER_DIR)

    def on_loaded(self, folder: Path) -> None:
        folder = Path(folder)
        if (folder / "tokenizer").is_dir():
            self.tokenizer = load_tokenizer(folder)
        if (folder / CLASSIFIER_DIR / "config.json").is_file():
            from crrg.rrg import joint

            joint.attach_classifier(self, joint.load_finding_source(str(folder / CLASSIFIER_DIR)))
        self.sentence_order = SentenceOrder.load(folder)
        if (folder / THRESHOLDS_FILE).is_file():
            t = json.loads((folder / THRESHOLDS_FILE).read_text())
            self.thresholds = Thresholds.from_dict(t)

    # ----- inference -----
    @torch.no_grad()
    def analyse(self, image) -> tuple[Detections, torch.Tensor, dict[str, torch.Tensor]]:
        """Detector + heads on one (H, W) image: detections, region features (29, w), probabilities."""
        det = self.detector.detect([to_rgb_tensor(image)])[0]
        feats = self.region_features(self.region_inputs([image], [det]))
        probs = {k: torch.sigmoid(v)[0] for k, v in self.heads(feats).items()}
        return det, feats[0], probs

    def generate_report(self, study: StudyInput, **options: Any) -> GeneratedReport:
        """Options: num_beams, do_sample, top_p, temperature, max_new_tokens, joint ("off" | "condition" |
        "rerank" | "filter"; default: the config's ``joint``), candidates (sentences per region for re-ranking),
        consensus (write each sentence as the consensus of this many beam or sampled candidates,
        :mod:`crrg.rrg.consensus`; 0 or 1 = off; default: the config's ``decoding.consensus``; joint
        "rerank" re-ranks its candidates instead), learned_order (False: FINDINGS in anatomical order even
        when the model has learned a sentence order, :mod:`crrg.rrg.ordering`), impression_agreement (the
        IMPRESSION is the beam candidate that best restates the FINDINGS; default: the config's
        ``decoding.impression_agreement``; needs candidates, i.e. consensus or beams > 1), filter_candidates
        (joint "filter" with candidates: the consensus of a region's candidates that agree with the
        classifier, the region's sentence vetoed only when none does; default: the config's
        ``decoding.filter_candidates``)."""
        from crrg.rrg import joint

        if self.tokenizer is None:
            raise ConfigError("this rrg model has no tokenizer: it was never trained (run `crrg train rrg`)")
        unknown = set(options) - {"num_beams", "do_sample", "top_p", "temperature", "max_new_tokens", "joint",
                                  "candidates", "beams", "sample", "consensus", "learned_order",
                                  "impression_agreement", "filter_candidates"}
        if unknown:
            raise InputError(f"unknown option(s) for the rrg generator: {sorted(unknown)}")
        self.eval()
        timings: dict[str, float] = {}
        start = time.perf_counter()
        index = choose_frontal(study)
        det, feats, probs = self.analyse(study.images[index])
        timings["detect_ms"] = (time.perf_counter() - start) * 1000

        mode = options.get("joint") or self.joint_mode
        if mode not in JOINT_MODES:
            raise InputError(f"unknown joint mode {mode!r}; one of {', '.join(JOINT_MODES)}")
        finding_probs, finding_thresholds = probs["findings"], dict(self.thresholds.findings or {})
        if self.finding_source is not None:
            finding_probs, finding_thresholds = joint.merge_external(self.finding_source, study, finding_probs,
                                                                     finding_thresholds)
        thresholds = Thresholds(self.thresholds.selection, self.thresholds.abnormal, finding_thresholds)
        selected = (probs["selection"] >= self.thresholds.selection) | (probs["abnormal"] >= self.thresholds.abnormal)
        regions = [i for i in range(NUM_REGIONS) if bool(selected[i])]

        t0 = time.perf_counter()
        num_beams = int(options.get("num_beams", options.get("beams", 1)) or 1)
        do_sample = bool(options.get("do_sample", options.get("sample", False)))
        consensus_k = int(options.get("consensus", self.consensus_candidates) or 0)
        if consensus_k > 1 and mode != "rerank":
            candidates = consensus_k
        else:
            candidates = int(options.get("candidates", 1 if mode != "rerank" else max(num_beams, 3)))
        if (mode == "rerank" or candidates > 1) and not do_sample:
            num_beams = max(num_beams, candidates)
        texts: list[str] = []
        abnormal = probs["abnormal"] >= self.thresholds.abnormal
        gen_kwargs = dict(num_beams=num_beams, do_sample=do_sample, top_p=float(options.get("top_p", 0.9)),
                          temperature=float(options.get("temperature", 1.0)), max_new_tokens=options.get("max_new_tokens"))
        impression = None
        impression_candidates: list[str] = []
        agreement = bool(options.get("impression_agreement", self.impression_agreement))

        def candidates_of(inputs: torch.Tensor, cond: torch.Tensor | None) -> list[list[str]]:
            ids = self.language.generate(inputs, cond, num_return_sequences=candidates, **gen_kwargs)
            decoded = decode(self.tokenizer, ids)
            return [decoded[k * candidates:(k + 1) * candidates] for k in range(inputs.shape[0])]

        def chosen(texts_: list[str]) -> str:
            return consensus(texts_) if consensus_k > 1 else texts_[0]

        # The study-level finding head sees all regions at once and is often surer than any one
        # region's abnormality score: a positive finding also asks for an IMPRESSION, written from
        # the region most likely abnormal when no region passed its own threshold.
        finding_positive = any(float(finding_probs[j]) >= thresholds.finding(name)
                               for j, name in enumerate(CHEXPERT_14) if name not in NOT_ABNORMAL)
        study_cond = finding_probs.unsqueeze(0) if mode != "off" else None
        # What the decoder writes, one beam search for all of it: on a CPU the decoder's step loop, not
        # its arithmetic, is most of a report's time, and the searches of a batch do not interact.
        queries: dict[str, torch.Tensor] = {}
        if bool(abnormal.any()) or finding_positive:
            mask = abnormal if bool(abnormal.any()) else probs["abnormal"] >= probs["abnormal"].max()
            queries["impression"] = self.impression_query(feats.unsqueeze(0), mask.unsqueeze(0))
        if self.global_sentences:
            queries["global"] = self.global_query(feats.unsqueeze(0), torch.ones(1, NUM_REGIONS))
        if regions:
            queries["regions"] = feats[regions]
        written: dict[str, list[list[str]]] = {}
        if queries:
            inputs = torch.cat(list(queries.values()))
            cond = study_cond.expand(len(inputs), -1) if study_cond is not None else None
            every = candidates_of(inputs, cond)
            start_row = 0
            for name, q in queries.items():
                written[name] = every[start_row:start_row + len(q)]
                start_row += len(q)
        if "impression" in written:
            # the top beam, or the candidate that agrees with the FINDINGS (chosen below); the consensus of
            # the impression's candidates scored lower on val (CIDEr 1.010 -> 0.982)
            impression_candidates = written["impression"][0]
            impression = impression_candidates[0]
        vetting = mode == "filter" and candidates > 1 and options.get("filter_candidates", self.filter_candidates)
        decisions = joint.finding_decisions(finding_probs, thresholds.findings) if vetting else {}

        def agreeing(texts_: list[str], local: bool) -> list[str]:
            """A region's candidates the joint filter would keep (all of them when it would keep none):
            the filter then vetoes the region's sentence only when no candidate agrees with the
            classifier. The global findings are not vetted so (val CIDEr 1.147 -> 1.129 when they were)."""
            kept = [t for t, k in zip(texts_, joint.consistent_sentences(texts_, decisions, [local] * len(texts_))) if k]
            return kept or texts_

        global_text = chosen(written["global"][0]) if "global" in written else ""
        if regions:
            per_region = written["regions"]
            if mode == "rerank":
                texts = [joint.rerank(c, finding_probs, float(probs["abnormal"][r]), thresholds)
                         for c, r in zip(per_region, regions)]
            elif vetting:
                texts = [chosen(agreeing(c, self._speaks_for_itself(ANATOMICAL_REGIONS[r], bool(abnormal[r]))))
                         for c, r in zip(per_region, regions)]
            else:
                texts = [chosen(c) for c in per_region]
        timings["generate_ms"] = (time.perf_counter() - t0) * 1000

        t0 = time.perf_counter()
        boxes = det.boxes.tolist()
        pieces = [RegionSentence(ANATOMICAL_REGIONS[r], text, index, [round(v, 1) for v in boxes[r]],
                                 bool(probs["abnormal"][r] >= self.thresholds.abnormal))
                  for r, text in zip(regions, texts)]
        if global_text:
            from crrg.text import split_sentences

            pieces += [RegionSentence(GLOBAL_REGION, t, index) for t in split_sentences(global_text)]
        if mode == "filter":
            pieces, impression = self._consistent_with_findings(pieces, impression, finding_probs, thresholds,
                                                                impression_candidates if agreement else None)
        elif agreement and len(impression_candidates) > 1:
            impression = joint.agreeing_impression(impression_candidates, [p.text for p in pieces])
        assembled = assemble_report(pieces, self.embedder if len(pieces) > 1 else None, self.dedup_threshold,
                                    impression=impression, restatements=self.drop_restatements,
                                    normal_impression=self.normal_impression,
                                    order=self.sentence_order if options.get("learned_order", True) else None)
        timings["assemble_ms"] = (time.perf_counter() - t0) * 1000
        probabilities = {name: round(float(p), 4) for name, p in zip(CHEXPERT_14, finding_probs)}
        report = GeneratedReport(
            findings=assembled.findings,
            impression=assembled.impression,
            sentences=[SentenceOut(s.text, None if s.region == GLOBAL_REGION else s.region, s.image, s.box)
                       for s in assembled.sentences],
            regions=[RegionOut(name, index, [round(v, 1) for v in boxes[i]], round(float(probs["abnormal"][i]), 4),
                               bool(selected[i])) for i, name in enumerate(ANATOMICAL_REGIONS)],
            probabilities=probabilities,
            labels={name: int(probabilities[name] >= thresholds.finding(name)) for name in CHEXPERT_14},
            model="rrg",
        )
        timings["total_ms"] = (time.perf_counter() - start) * 1000
        report.timings_ms = {k: round(v, 1) for k, v in timings.items()}
        return report

    @staticmethod
    def _speaks_for_itself(region: str, abnormal: bool) -> bool:
        """Whether a sentence of ``region`` may call that region normal in a study the classifier calls
        abnormal: outside the lung fields, for a normal-looking region ("No acute osseous abnormality.");
        "The lungs are clear." beside an atelectasis may not."""
        return region not in LUNG_FIELD_REGIONS and region != GLOBAL_REGION and not abnormal

    def _consistent_with_findings(self, pieces: list[RegionSentence], impression: str | None,
                                  finding_probs: torch.Tensor,
                                  thresholds: Thresholds | None = None,
                                  impression_candidates: list[str] | None = None) -> tuple[list[RegionSentence], str | None]:
        """The "filter" joint mode: drop FINDINGS and IMPRESSION sentences that contradict the finding
        head's decisions, then make the IMPRESSION agree with what is left: the kept impression
        sentences (of the candidate, when several are given, that best restates the kept FINDINGS,
        :func:`crrg.rrg.joint.agreeing_impression`), else the kept findings that state an
        abnormality, else the normal statement."""
        from crrg.labeler import label_report
        from crrg.rrg import joint
        from crrg.text import split_sentences

        decisions = joint.finding_decisions(finding_probs, (thresholds or self.thresholds).findings)
        local = [self._speaks_for_itself(p.region, p.abnormal) for p in pieces]
        keep = joint.consistent_sentences([p.text for p in pieces], decisions, local=local)
        pieces = [p for p, k in zip(pieces, keep) if k]

        def consistent(text: str) -> str:
            parts = split_sentences(text) or [text]
            return " ".join(t for t, k in zip(parts, joint.consistent_sentences(parts, decisions)) if k)

        if impression_candidates and len(impression_candidates) > 1:
            filtered = [t for t in map(consistent, impression_candidates) if t]
            if filtered:
                return pieces, joint.agreeing_impression(filtered, [p.text for p in pieces])
        if impression is not None and impression.strip():
            kept = consistent(impression)
            if kept:
                return pieces, kept
        stating = [p.text for p in pieces
                   if any(v in (1, -1) for name, v in label_report(p.text).items() if name not in NOT_ABNORMAL)]
        return pieces, " ".join(stating) if stating else self.normal_impression


@register_family("rrg")
def build(config: dict) -> RRGModel:
    return RRGModel(config)
