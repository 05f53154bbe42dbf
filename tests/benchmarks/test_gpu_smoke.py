"""benchmarks/gpu_smoke.py runs on a CPU at tiny sizes (what CI can prove of the GPU benchmark)."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_smoke.py"


@pytest.mark.slow
def test_gpu_smoke_runs_every_family_at_tiny_size():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    results = module.main(["--tiny", "--steps", "2", "--no-save"])
    assert [r["family"].split()[0] for r in results] == ["detector", "decoder", "clinicalblip"]
    for r in results:
        assert r["steps"] == 2 and r["per_s"] > 0 and r["peak_gb"] > 0 and math.isfinite(r["loss"])
        assert all(0 < v < 600_000 for v in (*r["latency_b1"], *r["latency_b32"]))
        assert r["latency_b1"][0] <= r["latency_b1"][1]
