"""Paired bootstrap confidence intervals for every metric and for the difference between two systems.

Each resample draws the n studies with replacement; every system is scored on the *same* draw
(paired), so the interval of a difference reflects only which studies happened to be in the test
set, not the noise of two independent draws. Metrics are re-aggregated on each draw exactly as on
the full set (corpus BLEU / CIDEr, micro F1, ...), see :mod:`crrg.evaluation.blocks`. The interval
is the percentile interval of the resampled values; ``share_positive`` is the share of resamples in
which the difference is above 0 (a descriptive number, not a p-value).
"""

from __future__ import annotations

import logging
import numbers
from typing import Mapping, Sequence

import numpy as np

from crrg.evaluation.blocks import MetricBlock, score_all

log = logging.getLogger(__name__)


def _scalars(metrics: Mapping) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and k != "n"}


def draws(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """``(resamples, n)`` study indices drawn with replacement (numpy PCG64 from ``seed``)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def paired_bootstrap(
    systems: Mapping[str, Sequence[MetricBlock]],
    n: int,
    full: Mapping[str, Mapping[str, float]],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    progress=None,
) -> dict:
    """Percentile intervals of every scalar metric of every system, and of each system minus the first.

    ``full`` holds each system's metrics on all studies (the point estimates). Returns
    ``{"resamples", "seed", "level", "systems": {name: {metric: [low, high]}},
    "differences": {"B - A": {metric: {"difference", "interval", "share_positive"}}}}``.
    """
    if resamples < 2:
        raise ValueError("the bootstrap needs at least 2 resamples")
    names = list(systems)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    rows = draws(n, resamples, seed)
    iterator = progress(rows, total=resamples, description="bootstrap") if progress else rows
    for idx in iterator:
        for name in names:
            for key, value in _scalars(score_all(systems[name], idx)).items():
                samples[name].setdefault(key, []).append(value)
    tail = (1.0 - level) / 2 * 100
    bounds = (tail, 100 - tail)

    def interval(values: Sequence[float]) -> list[float]:
        low, high = np.percentile(np.asarray(values, dtype=float), bounds)
        return [float(low), float(high)]

    out: dict = {"resamples": resamples, "seed": seed, "level": level,
                 "systems": {name: {k: interval(v) for k, v in samples[name].items()} for name in names},
                 "differences": {}}
    base = names[0]
    for name in names[1:]:
        diffs = {}
        for key, values in samples[name].items():
            if key not in samples[base] or key not in full[name] or key not in full[base]:
                continue
            d = np.asarray(values) - np.asarray(samples[base][key])
            diffs[key] = {"difference": float(full[name][key]) - float(full[base][key]),
                          "interval": interval(d), "share_positive": float((d > 0).mean())}
        out["differences"][f"{name} - {base}"] = diffs
    return out
