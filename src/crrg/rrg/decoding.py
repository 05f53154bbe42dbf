"""The region-guided decoding policy, step by step: what :class:`crrg.generation.DecodingOptions` means
for an rrg model.

A report is written in five steps, each a function of its own so each can be read, tested and timed
alone:

1. :func:`analyse_study` -- the frontal image through the detector and heads; the finding
   probabilities (the attached classifier's where it has them, :func:`crrg.rrg.joint.merge_external`);
   which regions get a sentence.
2. :func:`plan_candidates` -- how many candidates per sentence and how wide the beam search is.
3. :func:`write_candidates` -- one beam search for everything the decoder writes: the IMPRESSION, the
   whole-study ("global") sentences and one sentence per selected region (on a CPU the decoder's step
   loop, not its arithmetic, is most of a report's time, and the searches of a batch do not interact).
   The search is :mod:`crrg.generation.beam`'s: transformers' own, step for step, without its per-step
   overhead, and a region whose candidates are settled leaves the batch (a real film selects many
   regions, and one long sentence used to keep all of them decoding).
4. :func:`choose_region_sentences` -- per region, the top candidate, their consensus, the re-ranked one
   (joint "rerank"), or the consensus of those that agree with the classifier (joint "filter" with
   ``filter_candidates``).
5. :func:`assemble` -- the pieces, the joint filter's veto (:func:`consistent_with_findings`), the
   IMPRESSION policy and the FINDINGS order, into a :class:`crrg.reporting.GeneratedReport`.

Every tensor is made on the model's device, so the same code runs on a CPU or a GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from crrg.generation.options import DecodingOptions, ImpressionPolicy, JointMode
from crrg.observations import ANATOMICAL_REGIONS, CHEXPERT_14, LUNG_FIELD_REGIONS
from crrg.reporting import GeneratedReport, RegionOut, SentenceOut, StudyInput, timings
from crrg.rrg.assembly import GLOBAL_REGION, RegionSentence, assemble_report
from crrg.rrg.consensus import consensus
from crrg.rrg.detector import NUM_REGIONS, Detections
from crrg.rrg.language import decode

# Findings that do not make a study abnormal (they do not call for an IMPRESSION of their own).
NOT_ABNORMAL = ("No Finding", "Support Devices")


@dataclass
class Analysis:
    """What step 1 found in one study."""

    index: int  # the frontal image's index in the study
    detections: Detections
    features: torch.Tensor  # (29, w) region features
    probs: dict[str, torch.Tensor]  # selection / abnormal (29,), findings (14,)
    finding_probs: torch.Tensor  # (14,) the classifier's where it has them, else the finding head's
    thresholds: "Thresholds"  # noqa: F821 - crrg.rrg.model.Thresholds with the merged per-finding thresholds
    selected: torch.Tensor  # (29,) bool
    regions: list[int]  # indices of the selected regions
    abnormal: torch.Tensor  # (29,) bool


@dataclass
class Plan:
    """Step 2: the beam search's width and how many candidates each sentence gets."""

    num_beams: int
    candidates: int


def analyse_study(model, study: StudyInput, options: DecodingOptions, source=...) -> Analysis:
    """Step 1; ``source`` is the finding source (default: the model's :attr:`finding_source`; the
    model passes the one its OOD routing chose, :meth:`crrg.rrg.model.RRGModel.finding_source_for`)."""
    from crrg.rrg import joint
    from crrg.rrg.model import Thresholds

    index = study.frontal_index()
    det, feats, probs = model.analyse(study.images[index])
    finding_probs, finding_thresholds = probs["findings"], dict(model.thresholds.findings or {})
    if source is ...:
        source = model.finding_source
    if source is not None:
        finding_probs, finding_thresholds = joint.merge_external(source, study, finding_probs, finding_thresholds)
    finding_probs = finding_probs.to(feats.device)
    thresholds = Thresholds(model.thresholds.selection, model.thresholds.abnormal, finding_thresholds)
    selected = (probs["selection"] >= model.thresholds.selection) | (probs["abnormal"] >= model.thresholds.abnormal)
    regions = [i for i in range(NUM_REGIONS) if bool(selected[i])]
    abnormal = probs["abnormal"] >= model.thresholds.abnormal
    return Analysis(index, det, feats, probs, finding_probs, thresholds, selected, regions, abnormal)


def plan_candidates(options: DecodingOptions) -> Plan:
    rerank = options.joint is JointMode.RERANK
    if options.consensus > 1 and not rerank:
        candidates = options.consensus
    elif options.candidates is not None:
        candidates = options.candidates
    else:
        candidates = max(options.beams, 3) if rerank else 1
    num_beams = options.beams
    if (rerank or candidates > 1) and not options.sample:
        num_beams = max(num_beams, candidates)
    return Plan(num_beams, candidates)


def _finding_positive(analysis: Analysis) -> bool:
    """The study-level finding head sees all regions at once and is often surer than any one region's
    abnormality score: a positive finding also asks for an IMPRESSION."""
    return any(float(analysis.finding_probs[j]) >= analysis.thresholds.finding(name)
               for j, name in enumerate(CHEXPERT_14) if name not in NOT_ABNORMAL)


def _queries(model, analysis: Analysis) -> dict[str, torch.Tensor]:
    """The decoder's inputs of one study: the IMPRESSION's (from the abnormal regions, or from the region
    most likely abnormal when only the finding head calls the study abnormal), the whole-study
    sentences' and one per selected region (keys only for what is written)."""
    feats, probs, abnormal = analysis.features, analysis.probs, analysis.abnormal
    queries: dict[str, torch.Tensor] = {}
    if bool(abnormal.any()) or _finding_positive(analysis):
        mask = abnormal if bool(abnormal.any()) else probs["abnormal"] >= probs["abnormal"].max()
        queries["impression"] = model.impression_query(feats.unsqueeze(0), mask.unsqueeze(0))
    if model.global_sentences:
        queries["global"] = model.global_query(feats.unsqueeze(0), torch.ones(1, NUM_REGIONS, device=feats.device))
    if analysis.regions:
        queries["regions"] = feats[analysis.regions]
    return queries


def write_candidates(model, analysis: Analysis, options: DecodingOptions, plan: Plan) -> dict[str, list[list[str]]]:
    """Candidates of everything the decoder writes for one study, in one beam search: ``{"impression":
    [[...]], "global": [[...]], "regions": [[...] per selected region]}`` (see :func:`_queries`)."""
    return write_candidates_of_studies(model, [analysis], options, plan)[0]


def write_candidates_of_studies(model, analyses: list[Analysis], options: DecodingOptions,
                                plan: Plan) -> list[dict[str, list[list[str]]]]:
    """:func:`write_candidates` of several studies in one beam search (a search's rows do not interact,
    and a study whose candidates are settled leaves the batch, :mod:`crrg.generation.beam`)."""
    per_study = [_queries(model, a) for a in analyses]
    inputs, conds = [], []
    for analysis, queries in zip(analyses, per_study):
        for q in queries.values():
            inputs.append(q)
            if options.joint is not JointMode.OFF:
                conds.append(analysis.finding_probs.unsqueeze(0).to(q).expand(len(q), -1))
    if not inputs:
        return [{} for _ in analyses]
    inputs = torch.cat(inputs)
    cond = torch.cat(conds) if conds else None
    k = plan.candidates
    ids = model.language.generate(inputs, cond, num_return_sequences=k, num_beams=plan.num_beams,
                                  do_sample=options.sample, top_p=options.top_p, temperature=options.temperature,
                                  max_new_tokens=options.max_new_tokens)
    decoded = decode(model.tokenizer, ids)
    every = [decoded[i * k:(i + 1) * k] for i in range(inputs.shape[0])]
    out, row = [], 0
    for queries in per_study:
        written = {}
        for name, q in queries.items():
            written[name] = every[row:row + len(q)]
            row += len(q)
        out.append(written)
    return out


def speaks_for_itself(region: str, abnormal: bool) -> bool:
    """Whether a sentence of ``region`` may call that region normal in a study the classifier calls
    abnormal: outside the lung fields, for a normal-looking region ("No acute osseous abnormality.");
    "The lungs are clear." beside an atelectasis may not."""
    return region not in LUNG_FIELD_REGIONS and region != GLOBAL_REGION and not abnormal


def _chosen(texts: list[str], options: DecodingOptions) -> str:
    return consensus(texts) if options.consensus > 1 else texts[0]


def vetting(options: DecodingOptions, plan: Plan) -> bool:
    """Whether region candidates are vetted against the classifier before their consensus."""
    return options.joint is JointMode.FILTER and plan.candidates > 1 and options.filter_candidates


def choose_region_sentences(analysis: Analysis, written: dict[str, list[list[str]]], options: DecodingOptions,
                            plan: Plan) -> list[str]:
    """One sentence per selected region from its candidates (see the module docstring, step 4). With
    vetting, a region keeps the candidates the joint filter would keep (all of them when it would keep
    none), so the filter vetoes its sentence only when no candidate agrees with the classifier."""
    from crrg.rrg import joint

    if not analysis.regions:
        return []
    per_region = written["regions"]
    if options.joint is JointMode.RERANK:
        return [joint.rerank(c, analysis.finding_probs, float(analysis.probs["abnormal"][r]), analysis.thresholds)
                for c, r in zip(per_region, analysis.regions)]
    if vetting(options, plan):
        decisions = joint.finding_decisions(analysis.finding_probs, analysis.thresholds.findings)
        out = []
        for texts, r in zip(per_region, analysis.regions):
            local = speaks_for_itself(ANATOMICAL_REGIONS[r], bool(analysis.abnormal[r]))
            kept = [t for t, k in zip(texts, joint.consistent_sentences(texts, decisions, [local] * len(texts))) if k]
            out.append(_chosen(kept or texts, options))
        return out
    return [_chosen(c, options) for c in per_region]


def consistent_with_findings(model, pieces: list[RegionSentence], impression: str | None, finding_probs: torch.Tensor,
                             thresholds=None, impression_candidates: list[str] | None = None,
                             ) -> tuple[list[RegionSentence], str | None]:
    """The "filter" joint mode: drop FINDINGS and IMPRESSION sentences that contradict the finding
    decisions, then make the IMPRESSION agree with what is left: the kept impression sentences (of the
    candidate, when several are given, that best restates the kept FINDINGS,
    :func:`crrg.rrg.joint.agreeing_impression`), else the kept findings that state an abnormality, else
    the model's normal statement."""
    from crrg.labeler import label_report
    from crrg.rrg import joint
    from crrg.text import split_sentences

    decisions = joint.finding_decisions(finding_probs, (thresholds or model.thresholds).findings)
    local = [speaks_for_itself(p.region, p.abnormal) for p in pieces]
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
    return pieces, " ".join(stating) if stating else model.normal_impression


def assemble(model, analysis: Analysis, written: dict[str, list[list[str]]], texts: list[str],
             options: DecodingOptions) -> GeneratedReport:
    """Step 5: region and global sentences, the joint filter, the IMPRESSION policy, the FINDINGS order."""
    from crrg.rrg import joint
    from crrg.text import split_sentences

    index, probs = analysis.index, analysis.probs
    boxes = analysis.detections.boxes.tolist()
    abnormal_probs = probs["abnormal"].tolist()
    pieces = [RegionSentence(ANATOMICAL_REGIONS[r], text, index, [round(v, 1) for v in boxes[r]],
                             bool(probs["abnormal"][r] >= model.thresholds.abnormal))
              for r, text in zip(analysis.regions, texts)]
    global_text = _chosen(written["global"][0], options) if "global" in written else ""
    if global_text:
        pieces += [RegionSentence(GLOBAL_REGION, t, index) for t in split_sentences(global_text)]
    # the top beam, or the candidate that agrees with the FINDINGS; the consensus of the impression's
    # candidates scored lower on val (CIDEr 1.010 -> 0.982)
    impression_candidates = written["impression"][0] if "impression" in written else []
    impression = impression_candidates[0] if impression_candidates else None
    agreement = options.impression is ImpressionPolicy.AGREEMENT
    if options.joint is JointMode.FILTER:
        pieces, impression = consistent_with_findings(model, pieces, impression, analysis.finding_probs,
                                                      analysis.thresholds,
                                                      impression_candidates if agreement else None)
    elif agreement and len(impression_candidates) > 1:
        impression = joint.agreeing_impression(impression_candidates, [p.text for p in pieces])
    assembled = assemble_report(pieces, model.embedder if len(pieces) > 1 else None, model.dedup_threshold,
                                impression=impression, restatements=model.drop_restatements,
                                normal_impression=model.normal_impression,
                                order=model.sentence_order if options.learned_order else None,
                                # no self-contradiction: the classifier's decision settles a clash
                                decisions=joint.finding_decisions(analysis.finding_probs, analysis.thresholds.findings))
    probabilities = {name: round(float(p), 4) for name, p in zip(CHEXPERT_14, analysis.finding_probs.tolist())}
    return GeneratedReport(
        findings=assembled.findings,
        impression=assembled.impression,
        sentences=[SentenceOut(s.text, None if s.region == GLOBAL_REGION else s.region, s.image, s.box)
                   for s in assembled.sentences],
        regions=[RegionOut(name, index, [round(v, 1) for v in boxes[i]], round(float(abnormal_probs[i]), 4),
                           bool(analysis.selected[i])) for i, name in enumerate(ANATOMICAL_REGIONS)],
        probabilities=probabilities,
        labels={name: int(probabilities[name] >= analysis.thresholds.finding(name)) for name in CHEXPERT_14},
        model="rrg",
    )


def decode_study(model, study: StudyInput, options: DecodingOptions, source=...) -> GeneratedReport:
    """All five steps, timed (:data:`crrg.reporting.TIMING_KEYS`); ``source`` as in :func:`analyse_study`."""
    return decode_studies(model, [study], options, [source])[0]


def decode_studies(model, studies: list[StudyInput], options: DecodingOptions, sources: list | None = None,
                   ) -> list[GeneratedReport]:
    """:func:`decode_study` of several studies with one beam search for all of them (step 3); each report is
    the one its study gets alone. ``timings_ms``: each study's own encode and assemble time, and an equal
    share of the shared search."""
    sources = sources if sources is not None else [...] * len(studies)
    start = time.perf_counter()
    analyses, encode_s = [], []
    for study, source in zip(studies, sources):
        t = time.perf_counter()
        analyses.append(analyse_study(model, study, options, source))
        encode_s.append(time.perf_counter() - t)
    t_encoded = time.perf_counter()
    plan = plan_candidates(options)
    written = write_candidates_of_studies(model, analyses, options, plan)
    texts = [choose_region_sentences(a, w, options, plan) for a, w in zip(analyses, written)]
    write_s = (time.perf_counter() - t_encoded) / max(len(studies), 1)
    reports = []
    for analysis, w, t_texts, enc in zip(analyses, written, texts, encode_s):
        t = time.perf_counter()
        report = assemble(model, analysis, w, t_texts, options)
        assemble_s = time.perf_counter() - t
        # one study: its total is the wall time (planning included); several: the sum of its shares
        total = time.perf_counter() - start if len(studies) == 1 else None
        report.timings_ms = timings(enc, write_s, assemble_s, total)
        reports.append(report)
    return reports
