"""The model a stage of the ``rrg`` task starts from, and its tokenizer.

``model.init`` (a previous stage's export), ``model.warm_start`` (take every fitting weight of a saved
model) or a fresh registry model (``model.name`` / ``model.config``); ``model.classifier`` attaches a
saved finding classifier (joint design, region context) to a model that has none, so a recipe can
build the bundled model's composite from its parts. Stage names live here too.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

from crrg.errors import ConfigError, InputError
from crrg.rrg.region_data import _section, report_corpus

log = logging.getLogger(__name__)

STAGES = ("detector", "classifiers", "pretrain", "language", "joint")
FEATURE_STAGES = ("classifiers", "language", "joint")




def stage_of(config: dict) -> str:
    stage = config.get("stage") or "detector"
    if stage not in STAGES:
        raise ConfigError(f"rrg stage {stage!r} is not one of {list(STAGES)}")
    return stage


# ----------------------------------------------------------------------------------------- model
def build_rrg(config: dict):
    """The model a stage starts from: the ``model.init`` folder if given, else a fresh registry model;
    then ``model.classifier`` attached if the model has no classifier yet."""
    from crrg.models.registry import create_model

    model_cfg = _section(config, "model")
    if model_cfg.get("init"):
        model = load_stage_model(model_cfg["init"], model_cfg.get("overrides")).train()
    elif model_cfg.get("warm_start"):
        model = warm_start_model(config, model_cfg["warm_start"]).train()
    else:
        model = create_model(_base_model_config(config), **(model_cfg.get("overrides") or {}))
    if model_cfg.get("classifier") and getattr(model, "finding_source", None) is None:
        attach_saved_classifier(model, model_cfg["classifier"])
    return model


def attach_saved_classifier(model, folder: str | os.PathLike) -> None:
    """Attach the finding classifier saved in ``folder`` (a ``crrg train classifier`` export): the joint
    design's finding source and, for a model with region context, its context tower. It is saved
    inside every later stage's export, so only the first stage that needs it names it."""
    from crrg.rrg import joint

    if not (Path(folder) / "config.json").is_file():
        raise InputError(f"model.classifier {folder} is not a saved classifier (no config.json)")
    joint.attach_classifier(model, joint.load_finding_source(str(folder)))
    log.info("rrg: attached the classifier in %s", folder)


def warm_start_model(config: dict, folder: str | os.PathLike):
    """A fresh model of this config that takes every weight of a saved rrg model whose shape fits, and
    its tokenizer: a resized detector head or new heads start fresh while the backbone and the
    language model keep what an earlier (smaller) run learnt."""
    from safetensors.torch import load_file

    from crrg.models.registry import CONFIG_FILE, WEIGHTS_FILE, _merge, build_model

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise InputError(f"model.warm_start {folder} is not a saved rrg model ({CONFIG_FILE} + {WEIGHTS_FILE})")
    source_cfg = json.loads((folder / CONFIG_FILE).read_text())
    cfg = _merge(_base_model_config(config), _section(config, "model").get("overrides") or {})
    if source_cfg.get("special_ids") and (folder / "tokenizer").is_dir():
        cfg["special_ids"] = source_cfg["special_ids"]
        cfg["language"] = {**cfg.get("language", {}), "init": None}
    model = build_model(cfg)
    own = model.state_dict()
    source = load_file(str(folder / WEIGHTS_FILE))
    fitting = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fitting, strict=False)
    log.info("rrg: warm start from %s: %d of %d tensors taken", folder, len(fitting), len(own))
    if (folder / "tokenizer").is_dir():
        from crrg.rrg.language import load_tokenizer

        model.tokenizer = load_tokenizer(folder)
    return model


# Heads added to the model after a run's earlier stages were exported start from their initial values.
NEW_HEAD_PREFIXES = ("impression_query.", "global_query.", "context_projector.")


def load_stage_model(folder: str | os.PathLike, overrides: dict | None = None):
    """Load a previous stage's export, with ``overrides`` (the config's ``model.overrides``) merged into
    its config; weights it lacks may only be those of :data:`NEW_HEAD_PREFIXES`."""
    from safetensors.torch import load_file

    from crrg.models.registry import CONFIG_FILE, WEIGHTS_FILE, _merge, build_model

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise InputError(f"model.init {folder} is not a saved rrg model ({CONFIG_FILE} + {WEIGHTS_FILE})")
    model = build_model(_merge(json.loads((folder / CONFIG_FILE).read_text()), overrides or {}))
    missing, unexpected = model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=False)
    missing = [k for k in missing if not k.startswith(NEW_HEAD_PREFIXES)]
    if missing or unexpected:
        raise InputError(f"weights in {folder} do not fit the rrg model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.on_loaded(folder)
    return model


def _base_model_config(config: dict) -> dict:
    """``model.name`` (a registry name) or ``model.config`` (an inline config with ``family: rrg``)."""
    from crrg.models.registry import get_model_config

    model_cfg = _section(config, "model")
    if model_cfg.get("config"):
        return copy.deepcopy(model_cfg["config"])
    if not model_cfg.get("name"):
        raise ConfigError("model.name is missing (a registry name such as rrg-mobilenet-gpt2)")
    return get_model_config(model_cfg["name"])


def ensure_tokenizer(model, config: dict) -> None:
    """Give the model its tokenizer: a hub / local GPT-2's own, or a BPE trained on the report corpus.

    Deterministic for a given corpus, so the module and the data module build the same one.
    """
    if model.tokenizer is not None:
        return
    from crrg.rrg.language import load_hub_tokenizer, special_ids, train_tokenizer

    lang = model.lang_cfg
    if lang.init:
        tokenizer = load_hub_tokenizer(lang.init)
    else:
        tokenizer = train_tokenizer(report_corpus(config), vocab_size=lang.vocab_size)
    if len(tokenizer) > lang.vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but language.vocab_size is {lang.vocab_size}")
    model.tokenizer = tokenizer
    ids = special_ids(tokenizer)
    gpt_cfg = model.language.gpt2.config
    gpt_cfg.bos_token_id, gpt_cfg.eos_token_id, gpt_cfg.pad_token_id = ids["bos"], ids["eos"], ids["pad"]
    model.crrg_config["special_ids"] = ids
    if lang.init:
        model.language.load_hub_weights(lang.init)
        model.crrg_config["language"]["init"] = None  # the weights are ours now; loading needs no hub
