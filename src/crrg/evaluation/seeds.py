"""Mean ± sd of a metric over runs that differ only in their seed.

Input: the metrics JSONs that ``crrg evaluate --out`` writes (one per run), or any JSON with a
``"metrics"`` object of numbers. Each metric's mean and sample standard deviation (n - 1) over the
runs is returned; a metric missing from some run is reported with the runs that have it (``n``).
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Sequence

import numpy as np

from crrg.errors import InputError


def read_metrics(path: Path) -> dict[str, float]:
    """The scalar metrics of one metrics JSON (``crrg evaluate --out``'s ``"metrics"``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path} is not valid JSON") from None
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict):
        raise InputError(f"{path} has no \"metrics\" object (expected the JSON of crrg evaluate --out)")
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and k != "n"}


def summarize_seeds(paths: Sequence[Path]) -> dict:
    """``{"runs": [...], "metrics": {name: {"mean", "sd", "n", "values"}}}`` over the given runs."""
    if len(paths) < 2:
        raise InputError("give the metrics JSONs of at least two runs (seeds) to summarise")
    runs = [read_metrics(p) for p in paths]
    names = list(dict.fromkeys(k for run in runs for k in run))
    out: dict = {"runs": [str(p) for p in paths], "metrics": {}}
    for name in names:
        values = [run[name] for run in runs if name in run]
        arr = np.asarray(values, dtype=float)
        out["metrics"][name] = {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(arr) > 1 else None,
                                "n": len(values), "values": values}
    return out
