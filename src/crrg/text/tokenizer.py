"""A report tokenizer trained on a report corpus with HF ``tokenizers``.

Radiology reports use a small, repetitive vocabulary ("costophrenic", "cardiomediastinal") that
general tokenizers cut into many pieces; a byte-level BPE trained on the reports themselves keeps
sequences short and never meets an unknown character. The result is saved as a
``PreTrainedTokenizerFast`` folder, so any transformers model loads it with ``from_pretrained``.
Training text is cleaned and lower-cased exactly as at inference (:func:`prepare_text`), so the
two never drift apart.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

from crrg.errors import ConfigError, InputError
from crrg.text.clean import clean_report

log = logging.getLogger(__name__)

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3 in this order
CONFIG_NAME = "crrg_tokenizer.json"


@dataclass
class TokenizerConfig:
    vocab_size: int = 4000
    min_frequency: int = 2
    lowercase: bool = True
    add_bos_eos: bool = True  # wrap every encoded text in <bos> ... <eos> (what a decoder LM trains on)


def prepare_text(text: str, lowercase: bool = True) -> str:
    """The text form the tokenizer sees, at training and at use: cleaned, optionally lower-cased."""
    text = clean_report(text)
    return text.lower() if lowercase else text


def report_texts_from_jsonl(path: str | os.PathLike) -> Iterator[str]:
    """Report texts of a crrg manifest or a JSONL of ``{"report": ...}`` lines.

    Manifest records give findings + impression; lines with a ``report`` field give that field.
    """
    from crrg.io import iter_jsonl
    from crrg.records import report_of_line

    for _, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or "crrg_manifest" in obj:
            continue
        text = report_of_line(obj)
        if isinstance(text, str) and text:
            yield text


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig | None = None):
    """Train a byte-level BPE tokenizer on report texts; returns a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    config = config or TokenizerConfig()
    if config.vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ConfigError(f"vocab size {config.vocab_size} is too small: byte-level BPE needs at least {len(SPECIAL_TOKENS) + 256}")
    corpus = [prepare_text(t, config.lowercase) for t in texts]
    corpus = [t for t in corpus if t]
    if not corpus:
        raise InputError("no report text to train a tokenizer on")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    # the tokenizer itself lower-cases too, so calling it on raw text matches what it was trained on
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if config.lowercase else [])
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    if config.add_bos_eos:
        bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, bos_id), (EOS, eos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    log.info("trained a %d-token BPE vocabulary on %d reports", tok.get_vocab_size(), len(corpus))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK)
    fast.crrg_config = config  # type: ignore[attr-defined]
    return fast


def save_tokenizer(tokenizer, out_dir: str | os.PathLike, config: TokenizerConfig | None = None) -> Path:
    """Save with ``save_pretrained`` into a temporary folder, then move it into place.

    The folder appears complete or not at all, so an interrupted run never leaves a tokenizer that
    loads but lacks its special tokens.
    """
    import shutil
    import tempfile

    from crrg.io import atomic_write_json

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A tokenizer loaded without its crrg config (e.g. straight from a model folder) still records its real size.
    config = config or getattr(tokenizer, "crrg_config", None) or TokenizerConfig(vocab_size=len(tokenizer))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / CONFIG_NAME, asdict(config))
        if out.exists():
            old = out.with_name(out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_tokenizer(path: str | os.PathLike):
    """Load a tokenizer folder written by :func:`save_tokenizer` (or any fast-tokenizer folder/hub id)."""
    from transformers import PreTrainedTokenizerFast

    p = Path(path)
    if p.exists() and not (p / "tokenizer.json").is_file():
        raise InputError(f"{p} is not a tokenizer folder (no tokenizer.json)")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    cfg_file = p / CONFIG_NAME
    if cfg_file.is_file():
        tokenizer.crrg_config = TokenizerConfig(**json.loads(cfg_file.read_text(encoding="utf-8")))
    return tokenizer
