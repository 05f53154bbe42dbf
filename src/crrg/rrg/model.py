"""The region-guided report generator (family ``rrg``): detector -> region heads -> GPT-2 -> report.

``generate_report`` follows :mod:`crrg.reporting`: it takes one study (frontal and optionally lateral
image), finds the 29 regions on the frontal image, decides which regions get a sentence, writes each
selected region's sentence with the prefix-conditioned GPT-2, and assembles FINDINGS and IMPRESSION.
The lateral image is accepted but not used by this model (the region ground truth is frontal only).
How it decodes (beams, consensus, joint mode, impression policy, sentence order) is a
:class:`crrg.generation.DecodingOptions` run step by step by :mod:`crrg.rrg.decoding`; the model's
defaults are ``decoding.json`` in its folder, apart from its architecture.

Config keys (``src/crrg/models/configs/rrg-*.json``, typed in :class:`crrg.models.schema.RRGConfig`):
``detector`` (:class:`DetectorConfig`), ``feature_width``, ``language`` (:class:`LanguageConfig`),
``heads`` (hidden sizes), ``thresholds`` (selection / abnormal / per-finding), ``assembly``
(``dedup_threshold``, ``embedder``, ``drop_restatements``, ``normal_impression``), ``region_context``
(optional, :class:`crrg.rrg.region_context.RegionContextConfig`: each region's feature also carries an
image tower pooled inside the region box). Folders saved before ``decoding.json`` existed keep their
``joint`` and ``decoding`` keys in config.json, and are read as before.

Two optional children, both ``nn.Module`` children (seen by ``.to()``, ``state_dict()``, ``eval()``)
and saved in the model folder apart from its own weights (:data:`CHILD_DIRS`):
``finding_classifier`` (the joint design's classifier, :mod:`crrg.rrg.joint`) and ``context_encoder``
(the image tower of the region context). In crrg-default both are the same CLIP classifier, stored
once in ``classifier/``. A third, ``real_finding_classifier`` (``classifier_real/``), is the joint
design's finding source for a film the OOD score (:mod:`crrg.ood`) calls unreliable, i.e. unlike the
synthetic training films (:meth:`RRGModel.finding_source_for`); the region context keeps its
``context_encoder`` whatever the film. The FINDINGS sentence order learned from the training reports
(:mod:`crrg.rrg.ordering`) is the folder's ``sentence_order.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from crrg.errors import ConfigError, InputError
from crrg.generation.options import DECODING_FILE, DecodingOptions
from crrg.io import atomic_write_json
from crrg.models.registry import register_family
from crrg.reporting import GeneratedReport, StudyInput
from crrg.rrg.assembly import NORMAL_IMPRESSION, SentenceEmbedder
from crrg.rrg.classifiers import RegionBinaryClassifier, StudyFindingClassifier
from crrg.rrg.detector import DetectorConfig, Detections, RegionDetector, to_gray_tensor
from crrg.rrg.language import LanguageConfig, RegionLanguageModel, load_tokenizer, save_tokenizer
from crrg.rrg.ordering import ORDER_FILE, SentenceOrder

log = logging.getLogger(__name__)
THRESHOLDS_FILE = "thresholds.json"
CLASSIFIER_DIR = "classifier"  # the finding classifier (and, when it is the same module, the context encoder)
CONTEXT_DIR = "context_encoder"  # a context encoder that is not the finding classifier
REAL_CLASSIFIER_DIR = "classifier_real"  # the finding classifier for films the OOD score calls unreliable
CHILDREN = ("finding_classifier", "context_encoder", "real_finding_classifier")


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
        from crrg.generation.options import from_legacy_config
        from crrg.models.schema import RRGConfig, parse
        from crrg.rrg.region_context import RegionContext
        from crrg.rrg.region_features import RegionFeatureProjector

        cfg = parse(RRGConfig, config, "rrg")  # every default in one place: crrg.models.schema.RRGConfig
        self.det_cfg, self.lang_cfg, self.context_cfg = cfg.detector, cfg.language, cfg.region_context
        width = cfg.feature_width
        self.detector = RegionDetector(self.det_cfg)
        self.projector = RegionFeatureProjector(self.detector.feature_size, width)
        self.context = RegionContext(self.context_cfg) if self.context_cfg else None
        self.context_projector = None
        if self.context_cfg:
            # added to the projected detector feature; zero at first, so a model warm-started without
            # context writes exactly what it wrote before until training moves it
            self.context_projector = nn.Sequential(nn.LayerNorm(self.context_cfg.channels),
                                                   nn.Linear(self.context_cfg.channels, width))
            nn.init.zeros_(self.context_projector[1].weight)
            nn.init.zeros_(self.context_projector[1].bias)
        self.selection = RegionBinaryClassifier(width, cfg.heads.region_hidden)
        self.abnormality = RegionBinaryClassifier(width, cfg.heads.region_hidden)
        self.findings = StudyFindingClassifier(width, cfg.heads.finding_hidden)
        self.language = RegionLanguageModel(self.lang_cfg, width, cfg.special_ids)
        self.impression_query = SummaryQuery(width)
        self.global_query = SummaryQuery(width)
        t = cfg.thresholds
        self.thresholds = Thresholds(t.selection, t.abnormal, t.findings)
        self.dedup_threshold = cfg.assembly.dedup_threshold
        # Also drop sentences that only restate findings an earlier sentence stated (crrg.rrg.assembly).
        self.drop_restatements = cfg.assembly.drop_restatements
        self.use_embedder = cfg.assembly.embedder
        # The IMPRESSION of a study with nothing abnormal (a bundled model's is the consensus of its
        # training reports' normal impressions, crrg.rrg.consensus).
        self.normal_impression = cfg.assembly.normal_impression or NORMAL_IMPRESSION
        # Findings sentences no region owns (bones, edema): written from all regions at once.
        self.global_sentences = cfg.global_sentences
        # How reports are decoded by default: decoding.json of a saved folder (read in on_loaded), or
        # the joint/decoding keys of a config written before that file existed.
        self.decoding: DecodingOptions = from_legacy_config(config)
        self.tokenizer = None
        self._embedder: SentenceEmbedder | None = None
        # FINDINGS order learned from the training reports (crrg.rrg.ordering); anatomical without one
        self.sentence_order = None
        self.finding_classifier: nn.Module | None = None
        self.context_encoder: nn.Module | None = None
        self.real_finding_classifier: nn.Module | None = None
        # False routes every film to the synthetic-trained source (how benchmarks measure "before")
        self.route_ood = True
        self._plain_source = None  # a finding source that is not a module (a stand-in, a remote service)

    # ----- the optional children -----
    @property
    def finding_source(self):
        """The joint design's finding source (:class:`crrg.rrg.joint.FindingSource`), or None."""
        if self._plain_source is not None:
            return self._plain_source
        if self.finding_classifier is None:
            return None
        from crrg.rrg.joint import as_finding_source

        return as_finding_source(self.finding_classifier)

    def finding_source_for(self, assessment) -> tuple[Any, str | None]:
        """The finding source for a film with this OOD ``assessment`` (None: not scored) and the name
        recorded in ``report.ood["finding_source"]``: the real-film classifier when the film reads as
        real (:attr:`OODAssessment.reads_as_real`: the domain discriminant's verdict, or the OOD flag
        without one) and the model has one, else :attr:`finding_source` (name None: nothing recorded,
        so such a report is byte-for-byte what it was before the real child existed)."""
        if (self.route_ood and self.real_finding_classifier is not None and assessment is not None
                and assessment.reads_as_real):
            from crrg.rrg.joint import as_finding_source

            return as_finding_source(self.real_finding_classifier), "real"
        return self.finding_source, None

    @finding_source.setter
    def finding_source(self, source) -> None:
        from crrg.rrg.joint import attach_classifier

        attach_classifier(self, source, context=False)

    def train(self, mode: bool = True) -> "RRGModel":
        """Like ``nn.Module.train``; the children (trained apart, frozen here) stay in eval mode."""
        super().train(mode)
        for name in CHILDREN:
            child = getattr(self, name)
            if child is not None:
                child.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.impression_query.query.device

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

        context = self.context(tower_of(self), list(images), [d.pooling_boxes for d in detections])
        return torch.cat([feats, context.to(feats)], -1)

    def heads(self, region_features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"selection": self.selection(region_features), "abnormal": self.abnormality(region_features),
                "findings": self.findings(region_features)}

    @property
    def embedder(self) -> SentenceEmbedder | None:
        if self.use_embedder and self._embedder is None:
            self._embedder = SentenceEmbedder()
        return self._embedder

    # ----- saving: one declared artifact -----
    def child_dirs(self) -> dict[str, str]:
        """Which sub-folder each present child is saved in (a module shared by both is saved once)."""
        dirs = {}
        if self.finding_classifier is not None:
            dirs["finding_classifier"] = CLASSIFIER_DIR
        if self.context_encoder is not None:
            shared = self.context_encoder is self.finding_classifier
            dirs["context_encoder"] = CLASSIFIER_DIR if shared else CONTEXT_DIR
        if self.real_finding_classifier is not None:
            dirs["real_finding_classifier"] = REAL_CLASSIFIER_DIR
        return dirs

    def weights_apart(self) -> tuple[str, ...]:
        """State-dict prefixes saved in the children's own folders, not in model.safetensors."""
        return tuple(f"{name}." for name in self.child_dirs())

    def artifact_config(self) -> dict[str, Any]:
        """What config.json records beyond the architecture: the children's folders."""
        return {"children": self.child_dirs()}

    def on_saved(self, folder: Path, dtype=None) -> None:
        from crrg.models.registry import save_pretrained

        folder = Path(folder)
        if self.tokenizer is not None:
            save_tokenizer(self.tokenizer, folder)
        atomic_write_json(folder / THRESHOLDS_FILE, self.thresholds.to_dict())
        self.decoding.save(folder)
        # decoding is not architecture: a config loaded from an old folder loses its joint/decoding keys
        config = json.loads((folder / "config.json").read_text())
        if "joint" in config or "decoding" in config:
            for cfg in (config, getattr(self, "crrg_config", {})):
                cfg.pop("joint", None)
                cfg.pop("decoding", None)
            atomic_write_json(folder / "config.json", config)
        if self.sentence_order:
            self.sentence_order.save(folder)
        elif (folder / ORDER_FILE).exists():
            (folder / ORDER_FILE).unlink()
        # Each child travels with the model, in the model's dtype, so that loading the folder gives the
        # same reports; a child folder left by an earlier save must go, or loading would attach it.
        dirs = self.child_dirs()
        for name, sub in dirs.items():
            child = getattr(self, name)
            if getattr(child, "crrg_config", None) is None:
                raise ConfigError(f"the rrg model's {name} ({type(child).__name__}) has no crrg_config and cannot be "
                                  "saved; build it with crrg.models.create_model or load_pretrained")
            if name == "context_encoder" and sub == CLASSIFIER_DIR:
                continue  # the same module as the finding classifier, saved once
            save_pretrained(child, folder / sub, dtype=dtype)
        for sub in (CLASSIFIER_DIR, CONTEXT_DIR, REAL_CLASSIFIER_DIR):
            if sub not in dirs.values() and (folder / sub).exists():
                shutil.rmtree(folder / sub)

    def on_loaded(self, folder: Path, config: Mapping[str, Any] | None = None) -> None:
        from crrg.models.registry import load_pretrained

        folder = Path(folder)
        config = config if config is not None else getattr(self, "crrg_config", {})
        if (folder / "tokenizer").is_dir():
            self.tokenizer = load_tokenizer(folder)
        dirs = dict(config.get("children") or {})
        if "children" not in config and (folder / CLASSIFIER_DIR / "config.json").is_file():
            dirs = {"finding_classifier": CLASSIFIER_DIR}  # saved before children were declared
        if self.context is not None and "context_encoder" not in dirs and "finding_classifier" in dirs:
            # region context added to a model with a classifier (or a folder from before children were
            # declared): the tower is the finding classifier's, as it always was
            dirs["context_encoder"] = dirs["finding_classifier"]
        loaded: dict[str, nn.Module] = {}
        for name, sub in dirs.items():
            if name not in CHILDREN:
                raise ConfigError(f"{folder}/config.json names an unknown child {name!r}; known: {list(CHILDREN)}")
            if sub not in loaded:
                loaded[sub] = load_pretrained(folder / sub).requires_grad_(False)
            setattr(self, name, loaded[sub])
        self.sentence_order = SentenceOrder.load(folder)
        if (folder / THRESHOLDS_FILE).is_file():
            self.thresholds = Thresholds.from_dict(json.loads((folder / THRESHOLDS_FILE).read_text()))
        if (folder / DECODING_FILE).is_file():
            self.decoding = DecodingOptions.load(folder)
        from crrg.ood import OODScorer

        self.ood = OODScorer.for_model(self, folder)  # None without the folder's ood.safetensors

    # ----- inference -----
    @torch.no_grad()
    def analyse(self, image) -> tuple[Detections, torch.Tensor, dict[str, torch.Tensor]]:
        """Detector + heads on one (H, W) image: detections, region features (29, w), probabilities."""
        det = self.detector.detect([to_gray_tensor(image).to(self.device)])[0]
        feats = self.region_features(self.region_inputs([image], [det]))
        probs = {k: torch.sigmoid(v)[0] for k, v in self.heads(feats).items()}
        return det, feats[0], probs

    @torch.no_grad()
    def generate_report(self, study: StudyInput, options: DecodingOptions | Mapping[str, Any] | None = None,
                        **overrides: Any) -> GeneratedReport:
        """The report of one study, decoded with ``options`` (default: the model's own,
        :attr:`decoding`) with ``overrides`` (field names of :class:`DecodingOptions`) applied on top."""
        return self.generate_reports([study], options, **overrides)[0]

    @torch.no_grad()
    def generate_reports(self, studies: list[StudyInput], options: DecodingOptions | Mapping[str, Any] | None = None,
                         **overrides: Any) -> list[GeneratedReport]:
        """:meth:`generate_report` of several studies, their decoder searches batched into one (the
        reports are the ones each study gets alone; on a GPU the batch is what keeps it busy)."""
        from crrg.rrg.decoding import decode_studies

        if self.tokenizer is None:
            raise ConfigError("this rrg model has no tokenizer: it was never trained (run `crrg train rrg`)")
        if options is None or isinstance(options, Mapping):
            options = self.decoding.replace(options)
        options = options.replace(overrides)
        self.eval()
        ood = getattr(self, "ood", None)
        # how unlike the model's training films each film is (crrg.ood, docs/ood.md); scored first, as
        # it picks the finding source (finding_source_for)
        assessments = [ood.assess(s.images[s.frontal_index()]) if ood is not None else None for s in studies]
        chosen = [self.finding_source_for(a) for a in assessments]
        reports = decode_studies(self, list(studies), options, [source for source, _ in chosen])
        for report, assessment, (_, source_name) in zip(reports, assessments, chosen):
            if assessment is not None:
                report.ood = assessment.to_dict()
                if source_name is not None:
                    report.ood["finding_source"] = source_name
                if assessment.warning:
                    report.warnings.append(assessment.warning)
        return reports


@register_family("rrg")
def build(config: dict) -> RRGModel:
    return RRGModel(config)
