"""Which device a model runs on: one rule for the CLI (``--device``), the service and torchrun.

``auto`` is a GPU when torch sees one, else the CPU. Under ``torchrun`` (``LOCAL_RANK`` set) every
rank takes the GPU of its local rank, so N processes on one node use N GPUs instead of all landing on
``cuda:0``. Asking for CUDA where there is none is a clear error, not a silent CPU run.
"""

from __future__ import annotations

import os

import torch

from crrg.generation.options import GenerationError

DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"


def local_rank() -> int | None:
    """The torchrun local rank, or None outside torchrun."""
    value = os.environ.get("LOCAL_RANK")
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise GenerationError(f"LOCAL_RANK={value!r} is not an integer; is this process started by torchrun?") from None


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` -> a :class:`torch.device` that exists here."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text not in ("auto", "cuda") and not text.startswith("cuda:"):
        raise GenerationError(f"device {spec!r} is not one of {DEVICE_CHOICES}")
    available = torch.cuda.is_available()
    if text == "auto" and not available:
        return torch.device("cpu")
    if not available:
        raise GenerationError(f"device {spec!r} asks for CUDA, but torch sees no GPU here "
                              f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                              "use --device cpu or --device auto")
    count = torch.cuda.device_count()
    if text.startswith("cuda:"):
        try:
            index = int(text.split(":", 1)[1])
        except ValueError:
            raise GenerationError(f"device {spec!r} is not one of {DEVICE_CHOICES}") from None
    else:
        index = local_rank() or 0
    if not 0 <= index < count:
        raise GenerationError(f"device cuda:{index} does not exist: torch sees {count} GPU(s) (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def resolve_dtype(spec) -> torch.dtype | None:
    """None, a torch dtype or its name (float32, float16, bfloat16) -> the dtype (None: leave as saved)."""
    if spec is None or isinstance(spec, torch.dtype):
        return spec
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if str(spec).lower() not in names:
        raise GenerationError(f"dtype {spec!r} is not one of float32, float16, bfloat16")
    return names[str(spec).lower()]
