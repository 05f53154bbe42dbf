"""A small GPT-2 that already speaks radiology, for ClinicalBLIP to start from when the hub is out of reach.

ClinicalBLIP freezes its language model in stage 1, so that model must already write report
language: a randomly initialised one would leave the Q-Former aligning images to noise. With
internet, ``lm.pretrained: gpt2`` (or any hub causal LM) does that; here we train a byte-level BPE
tokenizer and a few-layer GPT-2 on report text (IU X-Ray reports, synthetic reports) and save both
as an ordinary Hugging Face folder that ``lm.pretrained`` accepts.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from crrg.errors import InputError

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]


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


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4000):
    """A byte-level BPE tokenizer (GPT-2 style) trained on ``texts``, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|pad|>")


def build_gpt2(tokenizer, config: LmPretrainConfig):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt = GPT2Config(vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd,
                     n_layer=config.n_layer, n_head=config.n_head, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(gpt)


def pretrain_report_lm(texts: Sequence[str], out_dir: str | Path, config: LmPretrainConfig = LmPretrainConfig(),
                       on_epoch: Callable[[int, float], None] | None = None) -> Path:
    """Train tokenizer + GPT-2 on report texts and save them (atomically, as one folder) to ``out_dir``."""
    import torch

    texts = [t.strip() for t in texts if t and t.strip()]
    if len(texts) < 2:
        raise InputError("need at least two report texts to pretrain a language model")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = train_tokenizer(texts, config.vocab_size)
    model = build_gpt2(tokenizer, config)
    encoded = [tokenizer(" " + t, add_special_tokens=False)["input_ids"][: config.max_tokens] + [tokenizer.eos_token_id]
               for t in texts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    steps = config.epochs * math.ceil(len(encoded) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(steps, 1), pct_start=0.1)
    model.train()
    for epoch in range(config.epochs):
        rng.shuffle(encoded)
        total, count = 0.0, 0
        for i in range(0, len(encoded), config.batch_size):
            rows = encoded[i: i + config.batch_size]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            labels = ids.masked_fill(mask == 0, -100)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total, count = total + loss.item(), count + 1
        log.info("LM pretraining epoch %d: loss %.3f", epoch + 1, total / max(count, 1))
        if on_epoch:
            on_epoch(epoch + 1, total / max(count, 1))
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # the folder appears complete or not at all
    return out
