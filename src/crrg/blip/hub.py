"""Salesforce InstructBLIP checkpoints (hub id or local folder) behind crrg's report interface.

ClinicalBLIP starts from InstructBLIP; users with internet and a GPU can run a hub checkpoint (e.g.
``Salesforce/instructblip-flan-t5-xl``) with the same prior-knowledge prompts and get the same
:class:`~crrg.reporting.GeneratedReport` as from a crrg-trained model. Config::

    {"family": "blip", "backend": "instructblip", "hub_id": "Salesforce/instructblip-flan-t5-xl",
     "prompt": {"variant": "indication"}, "generation": {"max_new_tokens": 120}, "dtype": "float16"}

Only the frontal image is shown to the model (InstructBLIP takes one image per prompt).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from crrg.blip.prompts import PromptConfig, build_instruction
from crrg.errors import ConfigError, InputError
from crrg.reporting import GeneratedReport, SentenceOut, StudyInput, timings

log = logging.getLogger(__name__)


class HubInstructBlip(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

        source = config.get("hub_id")
        if not source:
            raise ConfigError("an 'instructblip' backend config needs 'hub_id' (hub id or local folder)")
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(config.get("dtype", "float32"))
        if dtype is None:
            raise ConfigError(f"dtype {config.get('dtype')!r} is not float32, float16 or bfloat16")
        try:
            self.processor = InstructBlipProcessor.from_pretrained(source)
            self.model = InstructBlipForConditionalGeneration.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as exc:  # not found locally, bad id, no network, gated repo
            raise ConfigError(f"cannot load InstructBLIP checkpoint {source!r}: {exc}") from None
        self.config = config
        self.prompt_config = PromptConfig(**(config.get("prompt") or {"variant": "indication"}))
        self.generation = dict(config.get("generation") or {})
        self.model.eval()

    @staticmethod
    def _to_rgb(image: np.ndarray):
        from PIL import Image

        if not isinstance(image, np.ndarray) or image.ndim != 2:
            raise InputError(f"expected a gray image of shape (H, W), got {getattr(image, 'shape', type(image))}")
        gray = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")

    @torch.no_grad()
    def generate_report(self, study: StudyInput, findings: Mapping[str, float] | None = None,
                        classifier: Callable[[StudyInput], Mapping[str, float]] | None = None,
                        prompt_variant: str | None = None, **options: Any) -> GeneratedReport:
        start = time.perf_counter()
        if not study.images:
            raise InputError("a study needs at least one image")
        prompt = PromptConfig(**{**self.prompt_config.__dict__, "variant": prompt_variant or self.prompt_config.variant})
        if prompt.variant in ("predicted", "ground_truth"):
            findings = findings if findings is not None else (classifier(study) if classifier else None)
            if findings is None:
                log.warning("no finding probabilities given: using the indication-only prompt")
                prompt = PromptConfig(**{**prompt.__dict__, "variant": "indication"})
        instruction = build_instruction(study.indication, findings or {}, prompt)
        frontal = study.frontal_index(required=False)
        inputs = self.processor(images=self._to_rgb(study.images[frontal]), text=instruction, return_tensors="pt")
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(next(self.model.parameters()).dtype)
        settings = {"max_new_tokens": 120, "num_beams": 1}
        settings.update({k: v for k, v in {**self.generation, **options}.items() if k in settings and v is not None})
        prepared = time.perf_counter()
        out = self.model.generate(**inputs, do_sample=False, **settings)
        generated = time.perf_counter()
        text = self.processor.batch_decode(out, skip_special_tokens=True)[0].strip()
        if text.startswith(instruction):  # decoder-only LMs echo the prompt
            text = text[len(instruction):].strip()
        from crrg.blip.model import _sentences, split_report

        findings_text, impression = split_report(text)
        done = time.perf_counter()
        return GeneratedReport(findings=findings_text, impression=impression,
                               sentences=[SentenceOut(text=s) for s in _sentences(findings_text) + _sentences(impression)],
                               probabilities={k: float(v) for k, v in (findings or {}).items()},
                               model=str(self.config.get("name", self.config["hub_id"])),
                               timings_ms=timings(prepared - start, generated - prepared, done - generated, done - start))
