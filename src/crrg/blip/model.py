"""ClinicalBLIP: image encoder -> instruction-aware Q-Former -> projection -> causal language model.

The InstructBLIP recipe at a size a CPU can train: learned query tokens read the image tokens of
every image of a study through the Q-Former's cross-attention while also seeing the instruction
(which carries the prior knowledge, see :mod:`crrg.blip.prompts`); their outputs, projected to the
language model's width, are prefixed to the instruction and the language model writes the report.

The model is registered as family ``blip``; its config (``crrg/models/configs/blip-*.json``) names the
image encoder, Q-Former size, language model (hub id, local folder, or an architecture config) and
which LoRA adapters are attached, so :func:`crrg.models.registry.load_pretrained` rebuilds exactly
the saved structure. Saved folders are self-contained: the language model's architecture is written
into config.json and its tokenizer into ``tokenizer/``.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from crrg.blip import lora as lora_lib
from crrg.blip.prompts import PromptConfig, build_instruction
from crrg.blip.vision import build_image_encoder, default_lora_targets, to_pixels
from crrg.errors import ConfigError, InputError
from crrg.io import atomic_write_json
from crrg.models.registry import CONFIG_FILE, register_family
from crrg.observations import FRONTAL_VIEWS, LATERAL_VIEWS
from crrg.reporting import GeneratedReport, SentenceOut, StudyInput, timings

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
ADAPTERS_DIR = "adapters"
IMPRESSION_MARK = "Impression:"


def view_index(view: str) -> int:
    """0 frontal, 1 lateral, 2 unknown: the model learns one embedding per kind of view."""
    return 0 if view in FRONTAL_VIEWS else 1 if view in LATERAL_VIEWS else 2


def check_study_images(images: Sequence, views: Sequence[str]) -> None:
    """The films and views of one study, as every ClinicalBLIP backend needs them: one view per film."""
    if not images:
        raise InputError("a study needs at least one image")
    if len(views) != len(images):
        raise InputError(f"{len(images)} images but {len(views)} views")


def report_target(findings: str, impression: str) -> str:
    """The text the model learns to write; the impression follows a fixed mark so it can be split off."""
    findings, impression = (findings or "").strip(), (impression or "").strip()
    if impression:
        return f"{findings} {IMPRESSION_MARK} {impression}".strip()
    return findings


def split_report(text: str) -> tuple[str, str]:
    """Generated text -> (findings, impression), undoing :func:`report_target`."""
    head, mark, tail = text.partition(IMPRESSION_MARK)
    if not mark:
        match = re.search(r"impression\s*:", text, flags=re.IGNORECASE)
        if match:
            head, tail = text[: match.start()], text[match.end():]
    return head.strip(), tail.replace(IMPRESSION_MARK, " ").strip()


@dataclass
class BlipBatch:
    """Tensors of one batch; built by :meth:`ClinicalBlip.collate` from plain samples."""

    pixels: torch.Tensor  # (B, M, 1, S, S)
    image_mask: torch.Tensor  # (B, M) bool, False = padding image
    view_ids: torch.Tensor  # (B, M)
    instruction_ids: torch.Tensor  # (B, Li) right-padded, for the Q-Former
    instruction_mask: torch.Tensor  # (B, Li)
    lm_ids: torch.Tensor  # (B, L) instruction + report + eos, right-padded
    lm_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L) report tokens, -100 elsewhere
    report_ids: torch.Tensor  # (B, Lr) report tokens alone, right-padded (the Q-Former's text side for ITC)
    report_mask: torch.Tensor  # (B, Lr)

    def to(self, device: torch.device | str) -> "BlipBatch":
        return BlipBatch(**{k: v.to(device) for k, v in self.__dict__.items()})


def _load_tokenizer(source: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # missing folder, no network, not a tokenizer
        raise ConfigError(f"cannot load the language model tokenizer from {source!r}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _build_lm(spec: Mapping[str, Any]):
    from transformers import AutoConfig, AutoModelForCausalLM

    if spec.get("pretrained"):
        try:
            return AutoModelForCausalLM.from_pretrained(spec["pretrained"])
        except Exception as exc:
            raise ConfigError(f"cannot load language model {spec['pretrained']!r}: {exc}") from None
    arch = dict(spec.get("config") or {})
    model_type = arch.pop("model_type", None)
    if not model_type:
        raise ConfigError("lm needs 'pretrained' (hub id or folder) or 'config' with a 'model_type'")
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **arch))


class ClinicalBlip(nn.Module):
    """See the module docstring. ``tokenizer`` is attached after construction (config or saved folder)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

        self.config = config
        self.image_size = int(config.get("image_size", 128))
        self.max_images = int(config.get("max_images", 2))
        self.max_instruction_tokens = int(config.get("max_instruction_tokens", 64))
        self.max_report_tokens = int(config.get("max_report_tokens", 160))
        lm_spec = config.get("lm") or {}
        self.lm = _build_lm(lm_spec)
        self.tokenizer = None
        tok_source = lm_spec.get("tokenizer") or lm_spec.get("pretrained")
        if tok_source:
            self.set_tokenizer(_load_tokenizer(tok_source))
        lm_width = self.lm.get_input_embeddings().embedding_dim
        vocab = self.lm.get_input_embeddings().num_embeddings

        vision_spec = config.get("vision") or {"type": "resnet18"}
        self.vision = build_image_encoder(self.image_size, vision_spec)
        q = config.get("qformer") or {}
        hidden = int(q.get("hidden_size", 128))
        self.view_embedding = nn.Embedding(3, self.vision.out_dim)
        self.image_embedding = nn.Embedding(self.max_images, self.vision.out_dim)
        qconfig = InstructBlipQFormerConfig(
            vocab_size=vocab, hidden_size=hidden, num_hidden_layers=int(q.get("layers", 2)),
            num_attention_heads=int(q.get("heads", 4)), intermediate_size=int(q.get("intermediate_size", 4 * hidden)),
            cross_attention_frequency=int(q.get("cross_attention_frequency", 1)),
            encoder_hidden_size=self.vision.out_dim, max_position_embeddings=max(self.max_instruction_tokens, 32),
            pad_token_id=0, hidden_dropout_prob=float(q.get("dropout", 0.1)),
            attention_probs_dropout_prob=float(q.get("dropout", 0.1)),
        )
        self.qformer = InstructBlipQFormerModel(qconfig)
        self.query_tokens = nn.Parameter(torch.randn(1, int(q.get("num_query_tokens", 16)), hidden) * 0.02)
        self.projection = nn.Linear(hidden, lm_width)
        n_soft = int(config.get("soft_prompt_tokens", 0))
        self.soft_prompt = nn.Parameter(torch.randn(n_soft, lm_width) * 0.02) if n_soft > 0 else None
        # Optional BLIP-2 stage-1 image-text contrastive loss (ITC) beside the generation loss (ITG).
        self.itc_weight = float(config.get("itc_weight", 0.0))
        self.itc_tokens = max(self.max_instruction_tokens, 32)
        # The heads always exist (a few thousand weights) so a stage can switch ITC on or off at run time.
        dim = int(config.get("itc_dim", 128))
        self.itc_image = nn.Linear(hidden, dim)
        self.itc_text = nn.Linear(hidden, dim)
        self.itc_logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

        self.prompt_config = PromptConfig(**(config.get("prompt") or {}))
        self.generation = dict(config.get("generation") or {})
        for part, spec in (config.get("lora") or {}).items():
            if spec:
                self._attach_lora(part, spec)

    def train(self, mode: bool = True) -> "ClinicalBlip":
        """Like ``nn.Module.train``, but frozen normalisation layers of the image encoder stay in eval mode.

        A frozen pretrained tower (the CLIP ResNet with LoRA) must keep the BatchNorm statistics it was
        trained with; in train mode they would drift to this data set's batches although no weight is
        trained, and the tower would no longer be the one that was aligned.
        """
        super().train(mode)
        if mode:
            for module in self.vision.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                        p.requires_grad for p in module.parameters(recurse=False)):
                    module.eval()
        return self

    # ----- tokenizer and saving -------------------------------------------------------------------
    def set_tokenizer(self, tokenizer) -> None:
        vocab = self.lm.get_input_embeddings().num_embeddings
        if len(tokenizer) > vocab:
            raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but the language model only {vocab}")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ConfigError("this ClinicalBLIP model has no tokenizer: set lm.tokenizer in its config or load a saved model")
        return self.tokenizer

    def base_lm(self):
        return self.lm.get_base_model() if lora_lib.has_lora(self, "lm") else self.lm

    def portable_config(self) -> dict[str, Any]:
        """The config with the language model's architecture inlined: loading needs no hub or source folder."""
        config = copy.deepcopy(getattr(self, "crrg_config", self.config))
        arch = self.base_lm().config.to_dict()
        keep = {k: v for k, v in arch.items() if not k.startswith("_") and k not in ("architectures", "transformers_version", "torch_dtype", "dtype")}
        config["lm"] = {"config": keep}
        tower = getattr(self.vision.get_base_model() if lora_lib.has_lora(self, "vision") else self.vision, "tower_config", None)
        if tower is not None:  # a CLIP tower: record its architecture, not the checkpoint it came from
            config["vision"] = {"type": "clip", "tower": tower}
        return config

    def on_saved(self, folder: Path, dtype=None) -> None:
        """Make the saved folder self-contained: inline LM config, tokenizer, and each LoRA adapter."""
        atomic_write_json(folder / CONFIG_FILE, self.portable_config())
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
        for part in lora_lib.ADAPTER_PARTS:
            if lora_lib.has_lora(self, part):
                lora_lib.save_adapter(self, part, folder / ADAPTERS_DIR / part)

    def on_loaded(self, folder: Path) -> None:
        if (folder / TOKENIZER_DIR).is_dir():
            self.set_tokenizer(_load_tokenizer(str(folder / TOKENIZER_DIR)))

    def merge_adapters(self) -> None:
        """Fold all LoRA adapters into the base weights (faster inference); the config follows."""
        for part in lora_lib.ADAPTER_PARTS:
            if lora_lib.has_lora(self, part):
                lora_lib.merge_lora(self, part)
        for cfg in (self.config, getattr(self, "crrg_config", None)):
            if cfg is not None:
                cfg["lora"] = {}

    def _attach_lora(self, part: str, spec: Mapping[str, Any]) -> None:
        if part not in lora_lib.ADAPTER_PARTS:
            raise ConfigError(f"lora.{part}: LoRA can go on {list(lora_lib.ADAPTER_PARTS)} only")
        if part == "vision":
            candidates = default_lora_targets(self.config.get("vision") or {"type": "resnet18"})
        else:  # attention (and GPT-2's output) projections of the common causal LMs
            candidates = ["c_attn", "c_proj", "q_proj", "v_proj"]
        names = [n for n, _ in getattr(self, part).named_modules()]
        defaults = [t for t in candidates if any(n == t or n.endswith("." + t) for n in names)]
        lora_lib.add_lora(self, part, lora_lib.LoraSpec.from_dict(dict(spec)), defaults)

    def add_adapters(self, part: str, spec: Mapping[str, Any]) -> None:
        """Attach LoRA to ``vision`` or ``lm`` (e.g. going from stage 1 to stage 2); the config follows."""
        lora_lib.add_adapters(self, part, spec)

    def attached_classifier(self) -> Callable[[StudyInput], dict[str, float]]:
        """The classifier named by ``config["classifier"]`` (a saved crrg CLIP or classifier model), loaded once.

        It supplies the "likely findings" of the prompt when the caller (``crrg report``) gives none.
        """
        if getattr(self, "_classifier", None) is None:
            from crrg.clip.predict import load_classifier

            loaded = load_classifier(self.config["classifier"])

            def predict(study: StudyInput) -> dict[str, float]:
                probs = loaded.probabilities([study.images[study.frontal_index(required=False)]])[0]
                return {name: float(p) for name, p in zip(loaded.names, probs)}

            self._classifier = predict
        return self._classifier

    # ----- batching --------------------------------------------------------------------------------
    def encode_text(self, text: str, limit: int) -> list[int]:
        return self._require_tokenizer()(text, add_special_tokens=False)["input_ids"][:limit]

    def collate(self, samples: Sequence[Mapping[str, Any]]) -> BlipBatch:
        """Samples ``{"pixels": (M, 1, S, S) tensor, "views": [..], "instruction": str, "target": str}`` -> batch."""
        tok = self._require_tokenizer()
        b = len(samples)
        m = max(1, max(min(len(s["views"]), self.max_images) for s in samples))
        s_ = self.image_size
        pixels = torch.zeros(b, m, 1, s_, s_)
        image_mask = torch.zeros(b, m, dtype=torch.bool)
        view_ids = torch.full((b, m), 2, dtype=torch.long)
        instr, seqs, labels, reports = [], [], [], []
        for i, sample in enumerate(samples):
            n = min(len(sample["views"]), self.max_images)
            pixels[i, :n] = sample["pixels"][:n]
            image_mask[i, :n] = True
            view_ids[i, :n] = torch.tensor([view_index(v) for v in sample["views"][:n]])
            ids = self.encode_text(sample["instruction"], self.max_instruction_tokens)
            target = self.encode_text(" " + sample.get("target", ""), self.max_report_tokens) if sample.get("target") is not None else []
            tail = target + [tok.eos_token_id] if sample.get("target") is not None else []
            instr.append(ids)
            reports.append(target[: self.itc_tokens] or [tok.pad_token_id])
            seqs.append(ids + tail)
            labels.append([-100] * len(ids) + tail)
        li, l_, lr = max(len(x) for x in instr), max(len(x) for x in seqs), max(len(x) for x in reports)

        def pad(rows: list[list[int]], width: int, value: int) -> torch.Tensor:
            return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)

        return BlipBatch(
            pixels=pixels, image_mask=image_mask, view_ids=view_ids,
            instruction_ids=pad(instr, li, tok.pad_token_id), instruction_mask=pad([[1] * len(r) for r in instr], li, 0),
            lm_ids=pad(seqs, l_, tok.pad_token_id), lm_mask=pad([[1] * len(r) for r in seqs], l_, 0),
            labels=pad(labels, l_, -100),
            report_ids=pad(reports, lr, tok.pad_token_id), report_mask=pad([[1] * len(r) for r in reports], lr, 0),
        )

    # ----- forward ----------------------------------------------------------------------------------
    def visual_prefix(self, batch: BlipBatch) -> torch.Tensor:
        """Query outputs of the Q-Former, projected to the LM width, plus soft-prompt tokens: (B, P, D)."""
        return self._prefix(self.query_outputs(batch))

    def _prefix(self, queries: torch.Tensor) -> torch.Tensor:
        prefix = self.projection(queries)
        if self.soft_prompt is not None:
            prefix = torch.cat([prefix, self.soft_prompt.expand(queries.shape[0], -1, -1)], dim=1)
        return prefix

    def query_outputs(self, batch: BlipBatch) -> torch.Tensor:
        """The learned queries after reading the images (cross-attention) and the instruction: (B, Q, H)."""
        b, m = batch.image_mask.shape
        flat = batch.pixels.flatten(0, 1)
        tokens = self.vision(flat)  # (B*M, N, C)
        n = tokens.shape[1]
        tokens = tokens.view(b, m, n, -1)
        positions = torch.arange(m, device=tokens.device)
        tokens = tokens + self.view_embedding(batch.view_ids)[:, :, None] + self.image_embedding(positions)[None, :, None]
        encoder_states = tokens.reshape(b, m * n, -1)
        encoder_mask = batch.image_mask[:, :, None].expand(b, m, n).reshape(b, m * n).long()
        queries = self.query_tokens.expand(b, -1, -1)
        q = queries.shape[1]
        attention = torch.cat([torch.ones(b, q, dtype=torch.long, device=queries.device), batch.instruction_mask], dim=1)
        out = self.qformer(input_ids=batch.instruction_ids, attention_mask=attention, query_embeds=queries,
                           encoder_hidden_states=encoder_states, encoder_attention_mask=encoder_mask)
        return out.last_hidden_state[:, :q]

    def contrastive_loss(self, queries: torch.Tensor, batch: BlipBatch) -> torch.Tensor:
        """BLIP-2 ITC: each study's best-matching query vs the Q-Former's text encoding of its report."""
        text = self.qformer(input_ids=batch.report_ids, attention_mask=batch.report_mask).last_hidden_state
        mask = batch.report_mask[:, :, None].to(text.dtype)
        text = F.normalize(self.itc_text((text * mask).sum(1) / mask.sum(1).clamp(min=1)), dim=-1)  # (B, E)
        image = F.normalize(self.itc_image(queries), dim=-1)  # (B, Q, E)
        sim = torch.einsum("bqe,ce->bcq", image, text).max(dim=-1).values * self.itc_logit_scale.exp().clamp(max=100)
        target = torch.arange(sim.shape[0], device=sim.device)
        return (F.cross_entropy(sim, target) + F.cross_entropy(sim.t(), target)) / 2

    def forward(self, batch: BlipBatch) -> torch.Tensor:
        """Cross-entropy of the report tokens given images and instruction (+ ITC when itc_weight > 0)."""
        queries = self.query_outputs(batch)
        prefix = self._prefix(queries)
        embeds = torch.cat([prefix, self.lm.get_input_embeddings()(batch.lm_ids)], dim=1)
        b, p = prefix.shape[:2]
        mask = torch.cat([torch.ones(b, p, dtype=batch.lm_mask.dtype, device=prefix.device), batch.lm_mask], dim=1)
        labels = torch.cat([torch.full((b, p), -100, dtype=torch.long, device=prefix.device), batch.labels], dim=1)
        loss = self.lm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        if self.itc_weight > 0 and b > 1 and self.training:
            loss = loss + self.itc_weight * self.contrastive_loss(queries, batch)
        return loss

    @torch.no_grad()
    def generate_texts(self, batch: BlipBatch, **options: Any) -> list[str]:
        """Reports for a batch (its lm_ids must hold only the instruction). Left-pads for batched decoding."""
        tok = self._require_tokenizer()
        settings: dict[str, Any] = {"max_new_tokens": 120, "num_beams": 1, "no_repeat_ngram_size": 0, "repetition_penalty": 1.0,
                                    "do_sample": False, "top_p": None, "temperature": None}
        unknown = sorted(k for k, v in options.items() if k not in settings and v is not None)
        if unknown:
            log.warning("ClinicalBLIP ignores generation option(s) %s", unknown)
        settings.update({k: v for k, v in self.generation.items() if k in settings})
        settings.update({k: v for k, v in options.items() if k in settings and v is not None})
        prefix = self.visual_prefix(batch)
        b, p, d = prefix.shape
        width = int(batch.lm_mask.sum(1).max())
        embed = self.lm.get_input_embeddings()
        rows, masks = [], []
        for i in range(b):
            n = int(batch.lm_mask[i].sum())
            pad = width - n
            pad_emb = embed(torch.full((pad,), tok.pad_token_id, dtype=torch.long, device=prefix.device))
            rows.append(torch.cat([pad_emb, prefix[i], embed(batch.lm_ids[i, :n])], dim=0))
            masks.append(torch.cat([torch.zeros(pad, dtype=torch.long), torch.ones(p + n, dtype=torch.long)]))
        embeds = torch.stack(rows)
        mask = torch.stack(masks).to(prefix.device)
        kwargs: dict[str, Any] = dict(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=int(settings["max_new_tokens"]),
                                      num_beams=int(settings["num_beams"]), do_sample=bool(settings["do_sample"]),
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                      repetition_penalty=float(settings["repetition_penalty"]))
        if settings["do_sample"]:
            kwargs.update({k: float(settings[k]) for k in ("top_p", "temperature") if settings[k] is not None})
        if settings["no_repeat_ngram_size"]:
            kwargs["no_repeat_ngram_size"] = int(settings["no_repeat_ngram_size"])
        out = self.lm.generate(**kwargs)
        return [tok.decode(row, skip_special_tokens=True).strip() for row in out]

    # ----- one study --------------------------------------------------------------------------------
    def prepare_sample(self, images: Sequence[np.ndarray], views: Sequence[str], instruction: str,
                       target: str | None = None) -> dict[str, Any]:
        check_study_images(images, views)
        order = sorted(range(len(images)), key=lambda i: view_index(views[i]))[: self.max_images]
        pixels = torch.stack([to_pixels(images[i], self.image_size) for i in order])
        return {"pixels": pixels, "views": [views[i] for i in order], "instruction": instruction, "target": target}

    def generate_report(
        self,
        study: StudyInput,
        findings: Mapping[str, float] | None = None,
        classifier: Callable[[StudyInput], Mapping[str, float]] | None = None,
        prompt_variant: str | None = None,
        **options: Any,
    ) -> GeneratedReport:
        """Write the report of one study.

        ``findings`` ({observation: probability}) or ``classifier`` (study -> that dict) supply the
        "likely findings" of the prompt. A model trained with findings in its prompt but called
        without them falls back to the indication-only prompt and says so in the log: a prompt
        claiming "no likely findings" would silently bias the report.
        """
        start = time.perf_counter()
        variant = prompt_variant or self.prompt_config.variant
        prompt = PromptConfig(**{**self.prompt_config.__dict__, "variant": variant})
        probabilities: dict[str, float] = {}
        if variant in ("predicted", "ground_truth"):
            if findings is None and classifier is None and self.config.get("classifier"):
                classifier = self.attached_classifier()
            if findings is None and classifier is not None:
                findings = classifier(study)
            if findings is None:
                log.warning("no finding probabilities given to ClinicalBLIP: using the indication-only prompt")
                prompt = PromptConfig(**{**prompt.__dict__, "variant": "indication"})
            else:
                probabilities = {k: float(v) for k, v in findings.items()}
        instruction = build_instruction(study.indication, probabilities, prompt)
        sample = self.prepare_sample(study.images, study.views, instruction)
        batch = self.collate([sample]).to(next(self.parameters()).device)
        prepared = time.perf_counter()
        was_training = self.training
        self.eval()
        try:
            text = self.generate_texts(batch, **options)[0]
        finally:
            self.train(was_training)
        generated = time.perf_counter()
        findings_text, impression = split_report(text)
        sentences = [SentenceOut(text=s) for s in _sentences(findings_text) + _sentences(impression)]
        done = time.perf_counter()
        return GeneratedReport(
            findings=findings_text, impression=impression, sentences=sentences, probabilities=probabilities,
            model=str(self.config.get("name", "blip")),
            timings_ms=timings(prepared - start, generated - prepared, done - generated, done - start),
        )


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


@register_family("blip")
def build(config: dict[str, Any]) -> nn.Module:
    if config.get("backend") == "instructblip":
        from crrg.blip.hub import HubInstructBlip

        return HubInstructBlip(config)
    return ClinicalBlip(config)


def load_json(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
