"""DecodingOptions: typed, validated, saved beside the model, and mapped from HTTP query parameters."""

from __future__ import annotations

import json

import pytest

from crrg.errors import ConfigError
from crrg.generation import (DECODING_FILE, DecodingOptions, GenerationError, ImpressionPolicy, JointMode,
                             options_from_query)
from crrg.generation.options import from_legacy_config


def test_unknown_options_are_refused_by_name_before_any_work():
    with pytest.raises(GenerationError, match=r"unknown decoding option\(s\) \['num_beam'\]"):
        DecodingOptions().replace(num_beam=3)
    with pytest.raises(ConfigError, match="joint='veto' is not one of off, condition, rerank, filter"):
        DecodingOptions.from_dict({"joint": "veto"})
    with pytest.raises(GenerationError, match="beams=0"):
        DecodingOptions(beams=0)
    with pytest.raises(GenerationError, match="top_p"):
        DecodingOptions().replace(top_p=1.5)
    with pytest.raises(GenerationError, match="must be an integer"):
        DecodingOptions().replace(consensus=2.5)


def test_replace_keeps_what_is_not_given_and_types_what_is():
    base = DecodingOptions(consensus=4, joint=JointMode.FILTER)
    out = base.replace({"beams": "3", "joint": None, "impression": "agreement"})
    assert out.beams == 3 and out.consensus == 4 and out.joint is JointMode.FILTER
    assert out.impression is ImpressionPolicy.AGREEMENT and base.beams == 1  # frozen: a copy


def test_query_parameters_become_typed_overrides():
    assert options_from_query({"beams": "4", "joint": "filter", "learned_order": "false", "top_p": "0.5"}) == {
        "beams": 4, "joint": JointMode.FILTER, "learned_order": False, "top_p": 0.5}
    with pytest.raises(GenerationError, match="'beamz'"):
        options_from_query({"beamz": "4"})
    with pytest.raises(GenerationError, match="learned_order='maybe' must be true or false"):
        options_from_query({"learned_order": "maybe"})


def test_defaults_are_saved_beside_the_model_and_old_configs_still_read(tmp_path):
    legacy = {"joint": "filter", "decoding": {"consensus": 4, "impression_agreement": True, "filter_candidates": True}}
    options = from_legacy_config(legacy)
    assert options == DecodingOptions(consensus=4, joint=JointMode.FILTER, impression=ImpressionPolicy.AGREEMENT,
                                      filter_candidates=True)
    options.save(tmp_path)
    assert json.loads((tmp_path / DECODING_FILE).read_text())["joint"] == "filter"
    assert DecodingOptions.load(tmp_path) == options
    assert DecodingOptions.load(tmp_path / "elsewhere", legacy) == options  # no decoding.json: the old keys
    (tmp_path / DECODING_FILE).write_text('{"beams": 2, "bogus": 1}')
    with pytest.raises(GenerationError, match="decoding.json.*bogus"):
        DecodingOptions.load(tmp_path)
    (tmp_path / DECODING_FILE).write_text("{not json")
    with pytest.raises(GenerationError, match="not valid JSON"):
        DecodingOptions.load(tmp_path)
    with pytest.raises(GenerationError, match="impression_agreements"):
        from_legacy_config({"decoding": {"impression_agreements": True}})


def test_every_field_has_a_docstring():
    import inspect

    source = inspect.getsource(DecodingOptions)
    for name in DecodingOptions.field_names():
        head = source.split(f"    {name}:", 1)[1].splitlines()
        assert head[1].strip().startswith('"""'), f"field {name} has no docstring"
