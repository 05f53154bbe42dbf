"""Salesforce InstructBLIP checkpoints (hub id or local folder) behind crrg's report interface, trainable.

ClinicalBLIP starts from InstructBLIP; users with internet and a GPU can run a hub checkpoint (e.g.
``Salesforce/instructblip-flan-t5-xl``) with the same prior-knowledge prompts and get the same
:class:`~crrg.reporting.GeneratedReport` as from a crrg-trained model. Config::

    {"family": "blip", "backend": "instructblip", "hub_id": "Salesforce/instructblip-flan-t5-xl",
     "prompt": {"variant": "indication"}, "generation": {"max_new_tokens": 120}, "dtype": "float16",
     "lora": {"vision": {"r": 8}, "lm": {"r": 16}}}

Only the frontal image is shown to the model (InstructBLIP takes one image per prompt).

``crrg train blip`` with ``model.backend: instructblip`` fine-tunes it (:mod:`crrg.blip.task`): the
checkpoint is loaded by ``from_pretrained`` exactly as for inference, peft LoRA goes on the vision
model (part ``vision``) and the language model (part ``lm``, on its query and value projections,
whose names depend on the LM: :data:`LM_LORA_TARGETS`), and the Q-Former with its query tokens and
the language projection (group ``qformer``) train. The loss is the LM loss of the report: a T5 gets
it as ``labels``; a decoder-only LM reads instruction + report and the instruction is masked out.

The frozen base is the hub's, so this module's ``state_dict`` holds only what training changes
(:data:`SAVED_GROUPS`): a saved folder (and every training checkpoint) is the Q-Former bridge and the
LoRA weights, a few hundred MB instead of the 8-30 GB of the base, with each adapter again in peft
format under ``adapters/``. Loading the folder loads the base from ``hub_id`` and those weights on top.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from crrg.blip import lora as lora_lib
from crrg.blip.prompts import PromptConfig, build_instruction
from crrg.errors import ConfigError, InputError
from crrg.reporting import GeneratedReport, SentenceOut, StudyInput, timings

log = logging.getLogger(__name__)

# Query and value projections per language-model type: LoRA's usual targets (Hu et al. 2021), the
# attention names differ between T5 (flan-t5 InstructBLIPs) and LLaMA / OPT (vicuna, opt InstructBLIPs).
LM_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "t5": ("q", "v"), "mt5": ("q", "v"), "umt5": ("q", "v"),
    "llama": ("q_proj", "v_proj"), "opt": ("q_proj", "v_proj"), "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"), "gemma": ("q_proj", "v_proj"), "gpt2": ("c_attn",),
}
VISION_LORA_TARGETS = ("qkv",)  # the fused attention projection of InstructBLIP's ViT
# Parameter groups a saved folder holds; the rest is the hub base, loaded from hub_id.
SAVED_GROUPS = ("qformer", "vision_lora", "lm_lora")
ADAPTERS_DIR = "adapters"
_PARTS = {"vision": "vision_model", "lm": "language_model"}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ConfigError(f"dtype {name!r} is not float32, float16 or bfloat16")
    return _DTYPES[name]


@dataclass
class HubBatch:
    """The tensors InstructBLIP's ``forward`` takes; built by :meth:`HubInstructBlip.collate`."""

    pixel_values: torch.Tensor  # (B, 3, S, S), the frontal image
    qformer_input_ids: torch.Tensor  # (B, Lq) the instruction, Q-Former tokenizer
    qformer_attention_mask: torch.Tensor
    input_ids: torch.Tensor  # (B, L) image tokens + instruction [+ report + eos for a decoder-only LM]
    attention_mask: torch.Tensor
    labels: torch.Tensor | None  # report + eos (T5) or -100 on image tokens and instruction (decoder-only)

    def to(self, device: torch.device | str) -> "HubBatch":
        return HubBatch(**{k: v.to(device) if v is not None else None for k, v in self.__dict__.items()})


class HubInstructBlip(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

        source = config.get("hub_id")
        if not source:
            raise ConfigError("an 'instructblip' backend config needs 'hub_id' (hub id or local folder)")
        dtype = _dtype(config.get("dtype", "float32"))
        try:
            self.processor = InstructBlipProcessor.from_pretrained(source)
            self.model = InstructBlipForConditionalGeneration.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as exc:  # not found locally, bad id, no network, gated repo
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"cannot load InstructBLIP checkpoint {source!r}: {first}") from None
        self.config = config
        self.prompt_config = PromptConfig(**(config.get("prompt") or {"variant": "indication"}))
        self.generation = dict(config.get("generation") or {})
        self.max_instruction_tokens = int(config.get("max_instruction_tokens", 128))
        self.max_report_tokens = int(config.get("max_report_tokens", 160))
        tokenizer = self.processor.tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.decoder_only = bool(self.model.config.use_decoder_only_language_model)
        # byte-level BPE (OPT, GPT-2) marks a word's leading space in the token; sentencepiece (T5,
        # LLaMA) adds it itself: the report is encoded the way it would read after the instruction
        first = tokenizer.convert_ids_to_tokens(tokenizer("a", add_special_tokens=False)["input_ids"][:1])
        self._report_prefix = "" if first and first[0][:1] in ("▁", "Ġ") else " "
        for part, spec in (config.get("lora") or {}).items():
            if spec:
                self._attach_lora(part, spec)
        self._saved_in_float32()
        self.model.eval()

    # ----- LoRA and parameter groups (crrg.blip.lora) ----------------------------------------------
    def adapter_place(self, part: str) -> tuple[nn.Module, str]:
        if part not in _PARTS:
            raise ConfigError(f"LoRA part {part!r} is not one of {list(_PARTS)}")
        return self.model, _PARTS[part]

    def parameter_group(self, name: str) -> str:
        """``vision`` / ``vision_lora`` / ``lm`` / ``lm_lora``, else ``qformer`` (Q-Former, queries, projection)."""
        name = name.removeprefix("model.")
        for part, attr in _PARTS.items():
            if name.startswith(attr + "."):
                return f"{part}_lora" if "lora_" in name else part
        return "qformer"

    def lora_targets(self, part: str) -> list[str]:
        if part == "vision":
            return list(VISION_LORA_TARGETS)
        kind = self.model.config.text_config.model_type
        if kind not in LM_LORA_TARGETS:
            raise ConfigError(f"LoRA on the language model: crrg knows the query/value projections of "
                              f"{sorted(LM_LORA_TARGETS)}, not {kind!r}; name them in lora.lm.target_modules")
        return list(LM_LORA_TARGETS[kind])

    def _attach_lora(self, part: str, spec: Mapping[str, Any]) -> None:
        parsed = lora_lib.LoraSpec.from_dict(dict(spec))
        self.adapter_place(part)  # refuses unknown parts
        lora_lib.add_lora(self, part, parsed, [] if parsed.target_modules else self.lora_targets(part))

    def add_adapters(self, part: str, spec: Mapping[str, Any]) -> None:
        lora_lib.add_adapters(self, part, spec)
        self._saved_in_float32()

    # ----- dtypes: the hub base in ``dtype``, what training changes in float32 -------------------------
    def _saved_in_float32(self) -> None:
        """The bridge and adapters stay float32 whatever ``dtype`` the base has: AdamW updates them, and
        stage 2 continues stage 1's weights exactly; :meth:`_autocast` runs the mix."""
        for name, param in self.named_parameters():
            if self._saved(name) and param.dtype != torch.float32:
                param.data = param.data.float()

    def set_base_dtype(self, name: str) -> None:
        """Hold the hub base in ``name`` (stage 2 may change what stage 1 used); the config follows."""
        dtype = _dtype(name)
        for key, tensor in [*self.named_parameters(), *self.named_buffers()]:
            if not self._saved(key) and tensor.is_floating_point():
                tensor.data = tensor.data.to(dtype)
        for cfg in (self.config, getattr(self, "crrg_config", None)):
            if cfg is not None:
                cfg["dtype"] = name

    @property
    def base_dtype(self) -> torch.dtype:
        """The hub base's dtype, read off its LM embedding (it follows ``.to(dtype)`` of the whole model)."""
        return self.model.language_model.get_input_embeddings().weight.dtype

    def _autocast(self, device: torch.device):
        """A float16/bfloat16 base meets the float32 bridge under autocast (inside Lightning's own or alone)."""
        from contextlib import nullcontext

        if self.base_dtype == torch.float32:
            return nullcontext()  # never autocast(enabled=False): it would switch off trainer.precision's
        return torch.autocast(device.type, dtype=self.base_dtype)

    # ----- what a saved folder and a checkpoint hold ----------------------------------------------
    def _saved(self, key: str) -> bool:
        return self.parameter_group(key) in SAVED_GROUPS

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """Only :data:`SAVED_GROUPS`: the base is the hub's (see the module docstring)."""
        full = super().state_dict(prefix=prefix, keep_vars=keep_vars)
        out = destination if destination is not None else OrderedDict()
        if hasattr(out, "_metadata") and hasattr(full, "_metadata"):
            out._metadata.update(full._metadata)
        out.update((k, v) for k, v in full.items() if self._saved(k[len(prefix):]))
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Missing base weights are expected (they came from the hub); a missing saved weight is not."""
        from torch.nn.modules.module import _IncompatibleKeys

        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if self._saved(k)]
        if strict and (missing or result.unexpected_keys):
            raise InputError(f"weights do not fit this InstructBLIP: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
        return _IncompatibleKeys(missing, result.unexpected_keys)

    def on_saved(self, folder: Path, dtype: Any = None) -> None:
        """Each adapter also in peft's own format (``adapters/vision``, ``adapters/lm``), to ship or swap alone."""
        for part in lora_lib.ADAPTER_PARTS:
            if lora_lib.has_lora(self, part):
                lora_lib.save_adapter(self, part, Path(folder) / ADAPTERS_DIR / part)

    # ----- batching ---------------------------------------------------------------------------------
    @staticmethod
    def _to_rgb(image: np.ndarray):
        from PIL import Image

        if not isinstance(image, np.ndarray) or image.ndim != 2:
            raise InputError(f"expected a gray image of shape (H, W), got {getattr(image, 'shape', type(image))}")
        gray = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")

    @staticmethod
    def images_read(views: Sequence[str]) -> list[int]:
        """Which of a study's films the model reads: the frontal one (crrg.observations.frontal_index)."""
        from crrg.observations import frontal_index

        return [frontal_index(views, fallback=0)] if views else []

    def prepare_sample(self, images: Sequence[np.ndarray], views: Sequence[str], instruction: str,
                       target: str | None = None) -> dict[str, Any]:
        """The frontal image through the checkpoint's own image processor (resize, CLIP normalisation)."""
        from crrg.blip.model import check_study_images

        check_study_images(images, views)
        index = self.images_read(views)[0]
        pixels = self.processor.image_processor(self._to_rgb(images[index]), return_tensors="pt")["pixel_values"]
        return {"pixels": pixels, "views": [views[index]], "instruction": instruction, "target": target}

    def collate(self, samples: Sequence[Mapping[str, Any]]) -> HubBatch:
        """Samples ``{"pixels": (1, 3, S, S), "instruction": str, "target": str | None}`` -> a right-padded batch.

        The LM input is what ``InstructBlipProcessor`` builds (one image token per query, then the
        tokenized instruction with the tokenizer's own special tokens), so training and inference agree.
        """
        tok, qtok = self.processor.tokenizer, self.processor.qformer_tokenizer
        image_ids = [int(self.model.config.image_token_id)] * int(self.model.config.num_query_tokens)
        instructions = [s["instruction"] for s in samples]
        q = qtok(instructions, padding="longest", truncation=True, max_length=self.max_instruction_tokens, return_tensors="pt")
        seqs, labels = [], []
        for sample in samples:
            prompt = image_ids + tok(sample["instruction"], truncation=True, max_length=self.max_instruction_tokens)["input_ids"]
            target = sample.get("target")
            report = [] if target is None else tok(self._report_prefix + target, add_special_tokens=False, truncation=True,
                                                   max_length=self.max_report_tokens)["input_ids"] + [tok.eos_token_id]
            if self.decoder_only:
                seqs.append(prompt + report)
                labels.append([-100] * len(prompt) + report)
            else:
                seqs.append(prompt)
                labels.append(report)

        def pad(rows: list[list[int]], value: int) -> torch.Tensor:
            width = max(1, max(len(r) for r in rows))
            return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)

        has_target = all(s.get("target") is not None for s in samples)
        return HubBatch(pixel_values=torch.cat([s["pixels"].float() for s in samples]),
                        qformer_input_ids=q["input_ids"], qformer_attention_mask=q["attention_mask"],
                        input_ids=pad(seqs, tok.pad_token_id), attention_mask=pad([[1] * len(r) for r in seqs], 0),
                        labels=pad(labels, -100) if has_target else None)

    def _inputs(self, batch: HubBatch) -> dict[str, torch.Tensor]:
        return {"pixel_values": batch.pixel_values.to(self.base_dtype), "qformer_input_ids": batch.qformer_input_ids,
                "qformer_attention_mask": batch.qformer_attention_mask, "input_ids": batch.input_ids,
                "attention_mask": batch.attention_mask}

    def forward(self, batch: HubBatch) -> torch.Tensor:
        """The LM loss of the report given the image and the instruction."""
        if batch.labels is None:
            raise InputError("a training batch needs report targets")
        with self._autocast(batch.input_ids.device):
            return self.model(**self._inputs(batch), labels=batch.labels).loss

    # ----- one study ----------------------------------------------------------------------------------
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
        sample = self.prepare_sample([study.images[frontal]], [study.views[frontal] if study.views else ""], instruction)
        inputs = self._inputs(self.collate([sample]).to(next(self.model.parameters()).device))
        settings = {"max_new_tokens": 120, "num_beams": 1}
        settings.update({k: v for k, v in {**self.generation, **options}.items() if k in settings and v is not None})
        prepared = time.perf_counter()
        was_training = self.training
        self.eval()
        try:
            with self._autocast(inputs["input_ids"].device):
                out = self.model.generate(**inputs, do_sample=False, **settings)
        finally:
            self.train(was_training)
        generated = time.perf_counter()
        width = inputs["input_ids"].shape[1]
        if self.decoder_only and out.shape[1] >= width and torch.equal(out[:, :width], inputs["input_ids"]):
            out = out[:, width:]  # decoder-only LMs return the prompt before the report
        text = self.processor.batch_decode(out, skip_special_tokens=True)[0].strip()
        from crrg.blip.model import _sentences, split_report

        findings_text, impression = split_report(text)
        done = time.perf_counter()
        return GeneratedReport(findings=findings_text, impression=impression,
                               sentences=[SentenceOut(text=s) for s in _sentences(findings_text) + _sentences(impression)],
                               probabilities={k: float(v) for k, v in (findings or {}).items()},
                               model=str(self.config.get("name", self.config["hub_id"])),
                               timings_ms=timings(prepared - start, generated - prepared, done - generated, done - start))
