"""crrg.generation.beam: the same beam search as transformers' generate, cheaper."""

from __future__ import annotations

import pytest
import torch

from crrg.generation import beam
from crrg.rrg.language import LanguageConfig, RegionLanguageModel, decode, special_ids, train_tokenizer

TEXTS = ["the heart size is normal", "there is a small left pleural effusion", "the lungs are clear",
         "no pneumothorax is seen", "there is an opacity in the right lower lung zone"] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=400)


def _lm(tokenizer, seed: int, eos_weight: float) -> RegionLanguageModel:
    """A random decoder whose EOS is likely enough that hypotheses finish at different lengths."""
    cfg = LanguageConfig.from_dict({"vocab_size": 400, "n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 60,
                                    "dropout": 0.0})
    torch.manual_seed(seed)
    lm = RegionLanguageModel(cfg, feature_width=8, special_ids=special_ids(tokenizer)).eval()
    with torch.no_grad():  # sharper next-token choices, and EOS lifted by eos_weight nats at every step
        wte = lm.gpt2.transformer.wte.weight
        wte.mul_(5.0)
        eos = wte[tokenizer.eos_token_id]
        lm.gpt2.transformer.ln_f.bias.copy_(eos * eos_weight / eos.dot(eos))
    return lm


def _both(lm, feats, probs, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    lm.fast_beam_search = False
    reference = lm.generate(feats, probs, **kw)
    lm.fast_beam_search = True
    return reference, lm.generate(feats, probs, **kw)


@pytest.mark.slow  # transformers' own search is the slow side: 3-15 s on a busy 2-core machine
def test_the_same_candidates_as_transformers_generate(tokenizer):
    lengths = set()
    for seed in range(4):
        lm = _lm(tokenizer, seed, eos_weight=3.0 + seed % 3)
        g = torch.Generator().manual_seed(seed)
        for batch, beams, returned in ((1, 2, 1), (3, 4, 4), (5, 3, 2), (7, 4, 4)):
            feats, probs = torch.randn(batch, 8, generator=g) * 2, torch.rand(batch, 14, generator=g)
            reference, fast = _both(lm, feats, probs, num_beams=beams, num_return_sequences=returned,
                                    max_new_tokens=16)
            assert fast.shape[0] == batch * returned
            assert decode(tokenizer, fast) == decode(tokenizer, reference), (seed, batch, beams, returned)
            eos = reference == tokenizer.eos_token_id
            lengths.update(torch.where(eos.any(1), eos.int().argmax(1), -1).tolist())
    # hypotheses that end early, late and at the length limit: every way out of the search ran
    assert -1 in lengths and len(lengths) > 4, lengths


def test_finished_studies_leave_the_batch(tokenizer, monkeypatch):
    """Why it is faster: an item whose hypotheses can no longer change is not decoded further."""
    lm = _lm(tokenizer, 2, eos_weight=5.0)
    rows = []
    forward = beam._forward
    monkeypatch.setattr(beam, "_forward", lambda g, e, c: rows.append(e.shape[0]) or forward(g, e, c))
    g = torch.Generator().manual_seed(0)
    feats, probs = torch.randn(8, 8, generator=g) * 2, torch.rand(8, 14, generator=g)
    reference, fast = _both(lm, feats, probs, num_beams=4, num_return_sequences=4, max_new_tokens=16)
    assert decode(tokenizer, fast) == decode(tokenizer, reference)
    steps = rows[1:]  # rows[0] is the prompt, once per study row
    assert rows[0] == 8 and steps[0] == 32
    assert min(steps) < 32 and min(steps) >= beam.MIN_ROWS


def test_other_searches_stay_with_transformers(tokenizer):
    lm = _lm(tokenizer, 0, eos_weight=4.0)
    assert beam.supported(lm.gpt2, num_beams=4, do_sample=False)
    assert not beam.supported(lm.gpt2, num_beams=1, do_sample=False)  # greedy
    assert not beam.supported(lm.gpt2, num_beams=4, do_sample=True)  # beam sampling
    lm.gpt2.generation_config.repetition_penalty = 1.2  # a logits processor the fast search lacks
    assert not beam.supported(lm.gpt2, num_beams=4, do_sample=False)
    lm.gpt2.generation_config.repetition_penalty = 1.0
    lm.train()
    assert not beam.supported(lm.gpt2, num_beams=4, do_sample=False)
    with pytest.raises(ValueError, match="num_return_sequences"):
        beam.beam_search(lm.gpt2, torch.zeros(1, 3, 32), num_beams=2, num_return_sequences=3, max_new_tokens=4,
                         eos_token_id=2, pad_token_id=0)
