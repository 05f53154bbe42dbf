"""resolve_device: cpu, cuda, cuda:N, auto; a clear error without CUDA; one GPU per torchrun rank."""

from __future__ import annotations

import pytest
import torch

from crrg.generation import GenerationError, resolve_device, resolve_dtype


def test_cpu_and_auto_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(GenerationError, match="asks for CUDA, but torch sees no GPU"):
            resolve_device(spec)
    with pytest.raises(GenerationError, match="cpu, cuda, cuda:N or auto"):
        resolve_device("gpu")


def test_each_torchrun_rank_takes_its_local_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda", 3)
    assert resolve_device("cuda") == torch.device("cuda", 3)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # an explicit index wins
    with pytest.raises(GenerationError, match="cuda:7 does not exist"):
        resolve_device("cuda:7")
    monkeypatch.setenv("LOCAL_RANK", "5")
    with pytest.raises(GenerationError, match="cuda:5 does not exist"):
        resolve_device("cuda")


def test_dtypes_by_name():
    assert resolve_dtype("float16") is torch.float16 and resolve_dtype(None) is None
    with pytest.raises(GenerationError, match="float64"):
        resolve_dtype("float64")
