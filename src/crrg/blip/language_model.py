"""A small GPT-2 that already speaks radiology, for ClinicalBLIP to start from when the hub is out of reach.

ClinicalBLIP freezes its language model in stage 1, so that model must already write report
language: a randomly initialised one would leave the Q-Former aligning images to noise. With
internet, ``lm.pretrained: gpt2`` (or any hub causal LM) does that; here we train crrg's report
tokenizer (:mod:`crrg.text.tokenizer`, case kept) and a few-layer GPT-2 on report text and save both
as an ordinary Hugging Face folder that ``lm.pretrained`` accepts.

It is a task of the training engine (``crrg train report-lm``), so it resumes after a kill, logs,
and uses the shared schedule like every other model; :func:`pretrain_report_lm` runs it from Python.

Config sections::

    lm:     {vocab_size: 4000, n_layer: 4, n_embd: 256, n_head: 4, n_positions: 256, max_tokens: 128}
    data:   {manifest: M.jsonl, train_split: train, texts: null}   # texts: an inline list instead
    corpus: {iu_xray: null}                                       # the Open-i report archive, added
    trainer: {...}   (the engine's; the model dir is the Hugging Face folder)
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from crrg.errors import ConfigError, InputError

log = logging.getLogger(__name__)


@dataclass
class LmPretrainConfig:
    vocab_size: int = 4000
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 256
    epochs: int = 3
    batch_size: int = 16
    lr: float = 5e-4
    max_tokens: int = 128
    seed: int = 0


ARCH_KEYS = ("vocab_size", "n_layer", "n_embd", "n_head", "n_positions", "max_tokens")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4000):
    """crrg's report tokenizer (:func:`crrg.text.tokenizer.train_tokenizer`) as a GPT-2 needs it: case
    kept (reports are generated, not only read) and no template (an end token is appended per text)."""
    from crrg.text.tokenizer import TokenizerConfig
    from crrg.text.tokenizer import train_tokenizer as train_report_tokenizer

    return train_report_tokenizer(texts, TokenizerConfig(vocab_size=vocab_size, lowercase=False, add_bos_eos=False))


def build_gpt2(tokenizer, config: Any):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt = GPT2Config(vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd,
                     n_layer=config.n_layer, n_head=config.n_head, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(gpt)


def _lm_section(config: dict) -> LmPretrainConfig:
    section = config.get("lm") or {}
    if not isinstance(section, dict):
        raise ConfigError("config section 'lm' must be a mapping")
    bad = sorted(set(section) - set(ARCH_KEYS))
    if bad:
        raise ConfigError(f"unknown lm setting(s) {bad}; known: {sorted(ARCH_KEYS)}")
    lm = LmPretrainConfig(**section)
    if lm.max_tokens >= lm.n_positions:  # each text gets an end token after its max_tokens
        raise ConfigError(f"lm.max_tokens ({lm.max_tokens}) must be below lm.n_positions ({lm.n_positions})")
    return lm


def corpus_texts(config: dict) -> list[str]:
    """``data.texts``, else the report texts of ``data.manifest``'s training split, plus the IU X-Ray reports."""
    data = config.get("data") or {}
    texts = list(data.get("texts") or [])
    if not texts and data.get("manifest"):
        from crrg.records import read_manifest

        texts = [r.report for r in read_manifest(data["manifest"], split=data.get("train_split", "train"))]
    iu = (config.get("corpus") or {}).get("iu_xray")
    if iu:
        from crrg.data.iu_xray import IuXrayReader
        from crrg.text import clean_report

        texts += [clean_report(r.report, deid_replacement="") for r in IuXrayReader(iu)]
    texts = [t.strip() for t in texts if t and t.strip()]
    if len(texts) < 2:
        raise InputError("need at least two report texts to pretrain a language model (data.manifest or data.texts)")
    return texts


class ReportLMModule(L.LightningModule):
    def __init__(self, model, config: dict) -> None:
        super().__init__()
        self.model, self.config = model, config

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch["ids"].masked_fill(batch["mask"] == 0, -100)
        return self.model(input_ids=batch["ids"], attention_mask=batch["mask"], labels=labels).loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["ids"]), on_epoch=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), prog_bar=True, batch_size=len(batch["ids"]), sync_dist=True)

    def configure_optimizers(self) -> Any:
        from crrg.training.optim import configure_adamw

        return configure_adamw(self, self.model.parameters(), self.config)


class _Padder:
    """Collate token lists into padded ``ids`` and ``mask`` (a class, so loader workers can pickle it)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return {"ids": ids, "mask": mask}


class ReportLMData(L.LightningDataModule):
    def __init__(self, encoded: list[list[int]], pad_id: int, config: dict) -> None:
        super().__init__()
        cut = max(1, len(encoded) // 50) if len(encoded) >= 20 else 0  # 2% for val_loss when there is enough
        self.train_set, self.val_set = encoded[cut:], encoded[:cut]
        self.padder = _Padder(pad_id)
        trainer = config["trainer"]
        self.batch_size, self.num_workers = int(trainer["batch_size"]), int(trainer["num_workers"])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          collate_fn=self.padder)

    def val_dataloader(self) -> Any:
        if not self.val_set:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=self.padder)


class ReportLMTask:
    """Tokenizer + GPT-2 pretraining on report text; the exported model folder is a Hugging Face LM."""

    def __init__(self) -> None:
        self._tokenizer = None
        self._encoded: list[list[int]] | None = None

    def validate(self, config: dict) -> None:
        _lm_section(config)

    def _prepare(self, config: dict) -> None:
        if self._tokenizer is not None:
            return
        lm = _lm_section(config)
        texts = corpus_texts(config)
        # Deterministic for a corpus, so a resumed run rebuilds exactly the tokenizer it started with.
        self._tokenizer = train_tokenizer(texts, lm.vocab_size)
        eos = self._tokenizer.eos_token_id
        self._encoded = [self._tokenizer(" " + t, add_special_tokens=False)["input_ids"][: lm.max_tokens] + [eos] for t in texts]

    def build_module(self, config: dict) -> ReportLMModule:
        self._prepare(config)
        return ReportLMModule(build_gpt2(self._tokenizer, _lm_section(config)), config)

    def build_datamodule(self, config: dict) -> ReportLMData:
        self._prepare(config)
        return ReportLMData(self._encoded, self._tokenizer.pad_token_id, config)

    def export(self, module: ReportLMModule, out_dir: Path) -> None:
        """Model and tokenizer into one folder that appears complete or not at all."""
        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        module.model.save_pretrained(str(tmp))
        self._tokenizer.save_pretrained(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)


def pretrain_report_lm(texts: Sequence[str], out_dir: str | Path, config: LmPretrainConfig = LmPretrainConfig(),
                       on_epoch: Callable[[int, float], None] | None = None, run_dir: str | Path | None = None) -> Path:
    """Train tokenizer + GPT-2 on report texts with the engine and save the Hugging Face folder to ``out_dir``.

    ``run_dir`` keeps the engine's run folder (checkpoints, logs; pass the same one to resume);
    without it a temporary folder is used and removed. ``on_epoch(epoch, mean train loss)`` is
    called after each epoch.
    """
    from crrg.training.config import resolved_config
    from crrg.training.engine import train

    texts = [t.strip() for t in texts if t and t.strip()]
    if len(texts) < 2:
        raise InputError("need at least two report texts to pretrain a language model")
    values = asdict(config)
    cfg = resolved_config({
        "lm": {k: values[k] for k in ARCH_KEYS},
        "data": {"texts": texts},
        "trainer": {"seed": config.seed, "max_epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
                    "weight_decay": 0.01, "gradient_clip": 1.0, "warmup_fraction": 0.1, "log_every_n_steps": 1,
                    "checkpoint_every_n_steps": 1000},
    })
    callbacks = [_EpochLoss(on_epoch)] if on_epoch else []
    scratch = None if run_dir is not None else Path(tempfile.mkdtemp(prefix="crrg-report-lm-"))
    run = Path(run_dir) if run_dir is not None else scratch
    try:
        resume = (run / "checkpoints").is_dir()
        model_dir = train(ReportLMTask(), cfg, run, resume=resume, progress_bar=False, extra_callbacks=callbacks)
        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        shutil.rmtree(staging)
        shutil.copytree(model_dir, staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)  # the folder appears complete or not at all
        return out
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


class _EpochLoss(L.Callback):
    def __init__(self, on_epoch: Callable[[int, float], None]) -> None:
        self.on_epoch = on_epoch

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        loss = trainer.callback_metrics.get("train_loss_epoch")
        if loss is not None:
            self.on_epoch(trainer.current_epoch + 1, float(loss))


def _register() -> None:
    from crrg.training.tasks import register_task

    register_task("report-lm", ReportLMTask)


_register()
