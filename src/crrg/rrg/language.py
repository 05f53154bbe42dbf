"""The sentence decoder: a Hugging Face GPT-2 conditioned on one region's feature vector.

Conditioning is a *visual prefix* (ClipCap / RGRG-style): the region feature is mapped to
``prefix_length`` token embeddings placed before BOS, so the stock GPT2LMHeadModel (and its
``generate``: beam search, nucleus sampling) is used unchanged. For the joint design the
classifier's 14 finding probabilities can add one more prefix token.

The decoder is first pretrained as a plain language model on report text (IU X-Ray + the synthetic
corpus), then fine-tuned with prefixes. It is built from a config (small: 4 layers, 256 wide) with a
report-text BPE tokenizer trained here, or initialised from a hub / local GPT-2 (``gpt2``,
``distilgpt2``, a PubMed GPT-2) with that model's own tokenizer.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from crrg.errors import ConfigError, InputError, reject_unknown_keys
from crrg.observations import CHEXPERT_14

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"


@dataclass
class LanguageConfig:
    vocab_size: int = 2048
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 96
    prefix_length: int = 2
    condition_on_findings: bool = True  # joint design: one prefix token from the classifier's probabilities
    max_new_tokens: int = 40
    init: str | None = None  # hub id or local folder of a GPT-2 to start from (tokenizer included)
    dropout: float = 0.1

    @classmethod
    def from_dict(cls, d: dict | None) -> "LanguageConfig":
        d = dict(d or {})
        reject_unknown_keys(cls, d, "language-model option(s)")
        cfg = cls(**d)
        if cfg.n_embd % cfg.n_head:
            raise ConfigError(f"language n_embd {cfg.n_embd} is not divisible by n_head {cfg.n_head}")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """crrg's report tokenizer (:mod:`crrg.text.tokenizer`: cleaned, lower-cased byte-level BPE) with
    no ``<bos>``/``<eos>`` template: :func:`encode_sentences` adds them around each sentence itself."""
    from crrg.text.tokenizer import TokenizerConfig
    from crrg.text.tokenizer import train_tokenizer as train_report_tokenizer

    return train_report_tokenizer(texts, TokenizerConfig(vocab_size=vocab_size, add_bos_eos=False))


def load_hub_tokenizer(name: str):
    """The tokenizer of a hub / local GPT-2, with the pad token GPT-2 lacks."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # no internet, wrong id: the user's to fix
        raise InputError(f"cannot load the tokenizer of {name!r}: {exc}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.bos_token is None:
        tok.bos_token = tok.eos_token
    return tok


class RegionLanguageModel(nn.Module):
    def __init__(self, cfg: LanguageConfig, feature_width: int, special_ids: dict[str, int] | None = None):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.cfg = cfg
        ids = special_ids or {"pad": 0, "bos": 1, "eos": 2}
        gpt_cfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                             n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                             pad_token_id=ids["pad"], resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                             attn_pdrop=cfg.dropout)
        self.gpt2 = GPT2LMHeadModel(gpt_cfg)
        self.prefix = nn.Sequential(nn.Linear(feature_width, cfg.n_embd * cfg.prefix_length), nn.Tanh())
        self.findings_prefix = nn.Linear(len(CHEXPERT_14), cfg.n_embd) if cfg.condition_on_findings else None
        # beam search by crrg.generation.beam (the same texts as gpt2.generate, faster); False: generate's own
        self.fast_beam_search = True

    def load_hub_weights(self, name: str) -> None:
        """Replace the decoder with a pretrained GPT-2 (hub id or local folder); sizes must match the config."""
        from transformers import GPT2LMHeadModel

        try:
            pretrained = GPT2LMHeadModel.from_pretrained(name)
        except Exception as exc:
            raise InputError(f"cannot load GPT-2 weights from {name!r}: {exc}") from None
        c = pretrained.config
        if (c.n_embd, c.n_layer, c.vocab_size) != (self.cfg.n_embd, self.cfg.n_layer, self.cfg.vocab_size):
            raise ConfigError(f"{name!r} has n_embd={c.n_embd} n_layer={c.n_layer} vocab={c.vocab_size}; "
                              f"the config says {self.cfg.n_embd}/{self.cfg.n_layer}/{self.cfg.vocab_size}")
        pretrained.config.pad_token_id = self.gpt2.config.pad_token_id
        self.gpt2 = pretrained

    @property
    def embed(self) -> nn.Embedding:
        return self.gpt2.get_input_embeddings()

    def prefix_embeddings(self, region_features: torch.Tensor, finding_probs: torch.Tensor | None = None) -> torch.Tensor:
        """(B, width) [+ (B, 14)] -> (B, P, n_embd)."""
        b = region_features.shape[0]
        parts = [self.prefix(region_features).view(b, self.cfg.prefix_length, self.cfg.n_embd)]
        if self.findings_prefix is not None:
            if finding_probs is None:
                finding_probs = region_features.new_zeros(b, len(CHEXPERT_14))
            parts.append(self.findings_prefix(finding_probs).unsqueeze(1))
        return torch.cat(parts, 1)

    def text_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Plain language-model loss (pretraining on report text); ids start with BOS, end with EOS."""
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return self.gpt2(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss

    def conditioned_loss(self, region_features: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         finding_probs: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of the sentence tokens given the region prefix (prefix positions carry no loss)."""
        prefix = self.prefix_embeddings(region_features, finding_probs)
        embeds = torch.cat([prefix, self.embed(input_ids)], 1)
        mask = torch.cat([attention_mask.new_ones(prefix.shape[:2]), attention_mask], 1)
        labels = torch.cat([input_ids.new_full(prefix.shape[:2], -100), input_ids.masked_fill(attention_mask == 0, -100)], 1)
        return self.gpt2(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def generate(self, region_features: torch.Tensor, finding_probs: torch.Tensor | None = None, *, num_beams: int = 1,
                 do_sample: bool = False, top_p: float = 0.9, temperature: float = 1.0, num_return_sequences: int = 1,
                 max_new_tokens: int | None = None) -> torch.Tensor:
        """Token ids (B * num_return_sequences, T) of the sentences, without the prefix and BOS."""
        from crrg.generation import beam

        cfg = self.gpt2.config
        prefix = self.prefix_embeddings(region_features, finding_probs)
        bos = self.embed(torch.full((prefix.shape[0], 1), cfg.bos_token_id, dtype=torch.long, device=prefix.device))
        embeds = torch.cat([prefix, bos], 1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        limit = max_new_tokens or self.cfg.max_new_tokens
        limit = min(limit, cfg.n_positions - embeds.shape[1])
        if self.fast_beam_search and beam.supported(self.gpt2, num_beams=num_beams, do_sample=do_sample):
            # the same search as generate's, without its per-step overhead (crrg.generation.beam)
            return beam.beam_search(self.gpt2, embeds, num_beams=num_beams, num_return_sequences=num_return_sequences,
                                    max_new_tokens=limit, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id)
        kwargs = dict(do_sample=do_sample, num_beams=num_beams, num_return_sequences=num_return_sequences,
                      max_new_tokens=limit, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id)
        if do_sample:
            kwargs.update(top_p=top_p, temperature=temperature)
        return self.gpt2.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)


def special_ids(tokenizer) -> dict[str, int]:
    return {"pad": tokenizer.pad_token_id, "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id}


def encode_sentences(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS + tokens + EOS, right-padded; lower-cased like the metrics (reports are case-insensitive)."""
    ids = [[tokenizer.bos_token_id] + tokenizer.encode(t.lower(), add_special_tokens=False)[: max_length - 2]
           + [tokenizer.eos_token_id] for t in texts]
    width = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def decode(tokenizer, ids: torch.Tensor) -> list[str]:
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids.tolist()]


def save_tokenizer(tokenizer, folder: Path) -> None:
    """Saved next to the weights (atomically, by :func:`crrg.text.tokenizer.save_tokenizer`)."""
    from crrg.text.tokenizer import save_tokenizer as save_report_tokenizer

    save_report_tokenizer(tokenizer, Path(folder) / TOKENIZER_DIR)


def load_tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    path = Path(folder) / TOKENIZER_DIR
    if not path.is_dir():
        raise InputError(f"{folder} has no {TOKENIZER_DIR}/ folder; it is not a complete rrg model")
    return PreTrainedTokenizerFast.from_pretrained(str(path))
