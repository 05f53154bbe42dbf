"""What the ``rrg`` task learns at export beside the weights: thresholds tuned on the validation
split, the normal IMPRESSION of the corpus."""

from __future__ import annotations

from collections import Counter

import torch

from crrg.observations import CHEXPERT_14
from crrg.records import StudyRecord
from crrg.rrg.feature_cache import feature_cache_dir, compute_features
from crrg.rrg.region_data import frontal_index, load_split, region_targets, with_regions


def normal_impression(records: list[StudyRecord]) -> str | None:
    """The consensus (:func:`crrg.rrg.consensus.consensus`) of the training impressions that state no
    finding: the wording of "nothing acute" this corpus uses most, in the form that shares the most
    words with the others. None when the records have no such impression."""
    from crrg.rrg.consensus import consensus
    from crrg.rrg.joint import positive_claims

    texts = [r.impression.strip() for r in records if r.impression.strip()]
    # no positive or uncertain statement at all: "Support devices in appropriate position." is not normal
    normal = [t for t in texts if not positive_claims(t)]
    if not normal:
        return None
    top = Counter(normal).most_common(50)  # the long tail cannot win and costs time
    return consensus([t for t, _ in top], [n for _, n in top])


def best_f1_threshold(scores: torch.Tensor, targets: torch.Tensor, default: float = 0.5) -> float:
    """The threshold in 0.05..0.95 with the best F1 of ``scores >= t`` against 0/1 ``targets``."""
    if targets.sum() == 0 or targets.sum() == len(targets):
        return default
    best, best_f1 = default, -1.0
    for t in torch.linspace(0.05, 0.95, 19).tolist():
        pred = scores >= t
        tp = float((pred & (targets == 1)).sum())
        f1 = 2 * tp / max(1.0, float(pred.sum()) + float(targets.sum()))
        if f1 > best_f1:
            best, best_f1 = round(t, 2), f1
    return best


@torch.no_grad()
def tune_thresholds(model, config: dict) -> None:
    """Thresholds that maximise F1 on the validation split: per finding (0.5 where a finding has no
    positives), and for region selection and region abnormality over all known regions."""
    val = with_regions(load_split(config, "val_split", "val") or [])
    if not val:
        return
    feats = compute_features(model, val, feature_cache_dir(config), "val")
    logits = model.heads(model.region_features(feats.float()))
    probs = torch.sigmoid(logits["findings"])
    region = [region_targets(r, frontal_index(r)) for r in val]
    targets = torch.stack([t["findings"] for t in region])
    chosen = {name: best_f1_threshold(probs[:, j], targets[:, j]) for j, name in enumerate(CHEXPERT_14)
              if 0 < targets[:, j].sum() < len(targets)}
    model.thresholds.findings = chosen or None
    known = torch.stack([t["known"] for t in region]).bool()
    for key, attr in (("selected", "selection"), ("abnormal", "abnormal")):
        y = torch.stack([t[key] for t in region])[known]
        setattr(model.thresholds, attr, best_f1_threshold(torch.sigmoid(logits[attr])[known], y))
