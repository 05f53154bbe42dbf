import json

import pytest

from crrg.errors import ConfigError, InputError
from crrg.text.tokenizer import BOS, EOS, PAD, UNK, TokenizerConfig, load_tokenizer, report_texts_from_jsonl, save_tokenizer, train_tokenizer

CORPUS = [
    "The heart is normal in size. No pleural effusion or pneumothorax.",
    "Mild cardiomegaly. Small left pleural effusion. XXXX are intact.",
    "Lungs are clear. No focal consolidation. Normal chest x-XXXX.",
    "Costophrenic angles are sharp. The cardiomediastinal silhouette is normal.",
] * 20


def test_train_save_load_roundtrip(tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok = train_tokenizer(CORPUS, TokenizerConfig(vocab_size=400, min_frequency=2))
    out = save_tokenizer(tok, tmp_path / "tok")
    loaded = load_tokenizer(out)
    assert isinstance(loaded, PreTrainedTokenizerFast)
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token, loaded.unk_token) == (BOS, EOS, PAD, UNK)
    assert loaded.pad_token_id == 0
    ids = loaded("The HEART is normal.")["input_ids"]
    assert ids[0] == loaded.bos_token_id and ids[-1] == loaded.eos_token_id
    # lower-cased by the tokenizer itself, and frequent report words became single tokens
    assert "Ġheart" in loaded.convert_ids_to_tokens(ids)
    assert loaded.decode(ids, skip_special_tokens=True).strip() == "the heart is normal."
    assert loaded.crrg_config.vocab_size == 400
    assert len(loaded) <= 400
    batch = loaded(["no effusion.", "the heart is normal in size."], padding=True)
    assert batch["input_ids"][0][-1] == loaded.pad_token_id


def test_a_tokenizer_without_its_config_is_saved_with_its_real_size(tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok = train_tokenizer(CORPUS, TokenizerConfig(vocab_size=400, min_frequency=2))
    out = save_tokenizer(tok, tmp_path / "tok")
    bare = PreTrainedTokenizerFast.from_pretrained(str(out))  # loaded as a model folder does: no crrg_config
    assert not hasattr(bare, "crrg_config")
    again = save_tokenizer(bare, tmp_path / "again")
    assert load_tokenizer(again).crrg_config.vocab_size == len(bare) != TokenizerConfig().vocab_size


def test_corpus_from_manifest_and_report_jsonl(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [{"crrg_manifest": 1}, {"id": "1", "findings": "Heart normal.", "impression": "No acute disease."}, {"id": "2", "report": "Small effusion."}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert list(report_texts_from_jsonl(path)) == ["Heart normal. No acute disease.", "Small effusion."]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\nnot json\n')
    with pytest.raises(InputError, match="bad.jsonl:2"):
        list(report_texts_from_jsonl(bad))


def test_bad_configs():
    with pytest.raises(ConfigError):
        train_tokenizer(CORPUS, TokenizerConfig(vocab_size=100))
    with pytest.raises(InputError):
        train_tokenizer(["", "XXXX"], TokenizerConfig(vocab_size=300))
