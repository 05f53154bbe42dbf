import torch
import pytest

from crrg.errors import ConfigError
from crrg.rrg.language import (LanguageConfig, RegionLanguageModel, decode, encode_sentences, special_ids,
                               train_tokenizer)

TEXTS = ["the heart size is normal", "there is a small left pleural effusion", "the lungs are clear",
         "no pneumothorax is seen", "there is an opacity in the right lower lung zone"] * 4


def _lm(tokenizer, **kw):
    cfg = LanguageConfig.from_dict({"vocab_size": 400, "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 40,
                                    "dropout": 0.0, **kw})
    torch.manual_seed(0)
    return RegionLanguageModel(cfg, feature_width=8, special_ids=special_ids(tokenizer)).eval()


def test_config_validation():
    with pytest.raises(ConfigError, match="divisible"):
        LanguageConfig.from_dict({"n_embd": 30, "n_head": 4})
    with pytest.raises(ConfigError, match="unknown language"):
        LanguageConfig.from_dict({"layers": 2})


def test_encode_adds_bos_eos_and_pads():
    tok = train_tokenizer(TEXTS, vocab_size=400)
    ids, mask = encode_sentences(tok, ["The lungs are clear", "no"], 20)
    assert ids[0, 0] == tok.bos_token_id and tok.eos_token_id in ids[0].tolist()
    assert mask[1].sum() < mask[0].sum() and ids[1, -1] == tok.pad_token_id
    assert decode(tok, ids[:1]) == ["the lungs are clear"]


def test_prefix_conditioning_changes_the_output():
    tok = train_tokenizer(TEXTS, vocab_size=400)
    lm = _lm(tok)
    # Teach two features two different sentences; the generated text must follow the feature.
    feats = torch.eye(8)[:2] * 3
    ids, mask = encode_sentences(tok, ["the heart size is normal", "there is a small left pleural effusion"], 30)
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    lm.train()
    for _ in range(150):
        loss = lm.conditioned_loss(feats, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.eval()
    out = decode(tok, lm.generate(feats, max_new_tokens=12))
    assert out == ["the heart size is normal", "there is a small left pleural effusion"]
    # the finding-probability prefix token is part of the conditioning too
    probs = torch.zeros(2, 14)
    a = lm.prefix_embeddings(feats, probs)
    b = lm.prefix_embeddings(feats, probs + 1)
    assert a.shape == (2, 3, 32) and not torch.allclose(a[:, -1], b[:, -1])


def test_beam_search_and_sampling_return_the_requested_candidates():
    tok = train_tokenizer(TEXTS, vocab_size=400)
    lm = _lm(tok)
    feats = torch.randn(3, 8)
    assert lm.generate(feats, num_beams=3, num_return_sequences=3, max_new_tokens=5).shape[0] == 9
    torch.manual_seed(1)
    assert lm.generate(feats, do_sample=True, top_p=0.8, temperature=0.7, max_new_tokens=5).shape[0] == 3


def test_text_pretraining_loss_decreases():
    tok = train_tokenizer(TEXTS, vocab_size=400)
    lm = _lm(tok, condition_on_findings=False)
    ids, mask = encode_sentences(tok, TEXTS[:5], 30)
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    lm.train()
    first = None
    for _ in range(20):
        loss = lm.text_loss(ids, mask)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_hub_init_code_path_with_a_local_gpt2(tmp_path, tiny_config, tiny_manifest):
    """`language.init` loads a GPT-2 and its tokenizer with from_pretrained (a local folder stands in for the hub)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from crrg.rrg.task import build_rrg, ensure_tokenizer

    tok = train_tokenizer(TEXTS, vocab_size=400)
    ids = special_ids(tok)
    local = tmp_path / "tiny-gpt2"
    torch.manual_seed(3)
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=400, n_positions=48, n_embd=32, n_layer=1, n_head=2,
                                     bos_token_id=ids["bos"], eos_token_id=ids["eos"]))
    gpt.save_pretrained(local)
    tok.save_pretrained(local)
    tiny_config["language"]["init"] = str(local)
    config = {"model": {"config": tiny_config}, "data": {"manifest": str(tiny_manifest)}}
    model = build_rrg(config)
    ensure_tokenizer(model, config)
    loaded = model.language.gpt2.transformer.wte.weight
    assert torch.equal(loaded, gpt.transformer.wte.weight)
    assert model.tokenizer.encode("the lungs are clear") == tok.encode("the lungs are clear")
    assert model.crrg_config["language"]["init"] is None  # a saved model no longer needs the hub

    tiny_config["language"]["n_embd"] = 64
    tiny_config["language"]["n_head"] = 2
    model = build_rrg({"model": {"config": tiny_config}})
    with pytest.raises(ConfigError, match="n_embd"):
        ensure_tokenizer(model, config)
