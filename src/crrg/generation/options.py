"""Decoding options: how a generator writes (beams, sampling, consensus, joint mode, impression policy).

One typed object instead of loose ``**options``: the CLI (``crrg report --beams ... --joint ...``), the
HTTP API (:func:`options_from_query`) and Python callers all build a :class:`DecodingOptions`, and a
typo fails here with the key named, before any image is read. A saved model keeps its default options
in ``decoding.json`` beside its weights (:data:`DECODING_FILE`), apart from its architecture config:
changing how a model decodes is not changing the model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

from crrg.errors import ConfigError

DECODING_FILE = "decoding.json"


class GenerationError(ConfigError):
    """The one error class of :mod:`crrg.generation`: a generator cannot be loaded or run as asked (not a
    report generator, a device that is absent, a decoding option that is unknown or out of range).
    Problems with the study itself (no image, lateral films only) stay :class:`crrg.errors.InputError`."""


class JointMode(str, Enum):
    """How the finding classifier and the sentence writer work together (:mod:`crrg.rrg.joint`)."""

    OFF = "off"  # the decoder writes from the region features alone
    CONDITION = "condition"  # the 14 finding probabilities are an extra prefix token of the decoder
    RERANK = "rerank"  # conditioning, and each region's candidates re-ranked by agreement with the classifier
    FILTER = "filter"  # conditioning, and sentences that contradict the classifier's decisions are dropped


class ImpressionPolicy(str, Enum):
    """Which IMPRESSION candidate is kept."""

    TOP = "top"  # the decoder's best beam
    AGREEMENT = "agreement"  # the candidate whose stated findings best restate the FINDINGS


@dataclass(frozen=True)
class DecodingOptions:
    """Every choice of how a report is decoded, with its default. A generator reads the fields it knows
    (ClinicalBLIP and retrieval ignore the region-guided ones)."""

    beams: int = 1
    """Beam-search width (1 = greedy). Raised to ``candidates`` when several candidates are needed."""
    sample: bool = False
    """Nucleus sampling instead of beam search (reports then differ from run to run)."""
    top_p: float = 0.9
    """Sampling only: the probability mass of the nucleus the next token is drawn from."""
    temperature: float = 1.0
    """Sampling only: softmax temperature (below 1 sharper, above 1 more varied)."""
    max_new_tokens: int | None = None
    """Longest sentence (region-guided) or report (BLIP) in tokens; None: the model's own limit."""
    consensus: int = 0
    """Write each sentence as the consensus (minimum Bayes risk, :mod:`crrg.rrg.consensus`) of this many
    beam or sampled candidates; 0 or 1: the top candidate. Joint "rerank" re-ranks them instead."""
    candidates: int | None = None
    """Candidates per region for re-ranking or filtering; None: ``consensus`` when it is above 1, else 3 for
    "rerank" and 1 otherwise."""
    joint: JointMode = JointMode.CONDITION
    """Coupling of the finding classifier and the writer (:class:`JointMode`)."""
    impression: ImpressionPolicy = ImpressionPolicy.TOP
    """Which IMPRESSION candidate is kept (:class:`ImpressionPolicy`); "agreement" needs several candidates."""
    learned_order: bool = True
    """FINDINGS in the sentence order learned from the training reports (``sentence_order.json``);
    False: anatomical order."""
    filter_candidates: bool = False
    """Joint "filter" with several candidates: a region's sentence is the consensus of the candidates that
    agree with the classifier, and is vetoed only when none does."""

    def __post_init__(self) -> None:
        _check_ranges(self)

    # ----- building from dicts (configs, CLI flags, query parameters) -----
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def replace(self, overrides: Mapping[str, Any] | None = None, **more: Any) -> "DecodingOptions":
        """A copy with ``overrides`` applied (None values mean "keep"); unknown keys are refused by name."""
        given = {k: v for k, v in {**dict(overrides or {}), **more}.items() if v is not None}
        unknown = sorted(set(given) - set(self.field_names()))
        if unknown:
            raise GenerationError(f"unknown decoding option(s) {unknown}; known: {list(self.field_names())}")
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in given.items()})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "DecodingOptions":
        if d is not None and not isinstance(d, Mapping):
            raise GenerationError(f"decoding options must be a JSON object, got {type(d).__name__}")
        return cls().replace(d or {})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (v.value if isinstance(v, Enum) else v) for f in fields(self) for v in [getattr(self, f.name)]}

    # ----- stored beside a saved model -----
    def save(self, folder: str | Path) -> None:
        from crrg.io import atomic_write_json

        atomic_write_json(Path(folder) / DECODING_FILE, self.to_dict())

    @classmethod
    def load(cls, folder: str | Path, config: Mapping[str, Any] | None = None) -> "DecodingOptions":
        """A saved model's defaults: its ``decoding.json``; else, for folders saved before that file
        existed, the ``joint`` / ``decoding`` keys of its ``config.json`` (:func:`from_legacy_config`)."""
        path = Path(folder) / DECODING_FILE
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise GenerationError(f"{path} is not valid JSON ({exc}); restore it from the model's source") from None
            try:
                return cls.from_dict(stored)
            except GenerationError as exc:
                raise GenerationError(f"{path}: {exc}") from None
        return from_legacy_config(config or {})


def from_legacy_config(config: Mapping[str, Any]) -> DecodingOptions:
    """Defaults of an rrg model saved with decoding in its architecture config (crrg <= 0.7:
    ``"joint": MODE`` and ``"decoding": {"consensus", "impression_agreement", "filter_candidates"}``)."""
    legacy = dict(config.get("decoding") or {})
    unknown = sorted(set(legacy) - {"consensus", "impression_agreement", "filter_candidates"})
    if unknown:
        raise GenerationError(f"unknown key(s) {unknown} in the config's 'decoding' section")
    return DecodingOptions().replace(
        joint=config.get("joint"), consensus=legacy.get("consensus"),
        filter_candidates=legacy.get("filter_candidates"),
        impression=None if "impression_agreement" not in legacy else
        (ImpressionPolicy.AGREEMENT if legacy["impression_agreement"] else ImpressionPolicy.TOP))


def options_from_query(params: Mapping[str, str]) -> dict[str, Any]:
    """HTTP query parameters (strings) -> overrides for :meth:`DecodingOptions.replace`, typed and
    checked here (``?beams=4&joint=filter&learned_order=false``); an unknown parameter or a bad value
    raises :class:`GenerationError` naming it. Parameters that are not decoding options must be
    removed by the caller first."""
    out: dict[str, Any] = {}
    known = {f.name: f for f in fields(DecodingOptions)}
    for key, raw in params.items():
        if key not in known:
            raise GenerationError(f"unknown decoding option {key!r}; known: {list(known)}")
        out[key] = _coerce(key, raw)
    DecodingOptions().replace(out)  # range checks
    return out


# ----- checks -----
_INTS = ("beams", "max_new_tokens", "consensus", "candidates")
_FLOATS = ("top_p", "temperature")
_BOOLS = ("sample", "learned_order", "filter_candidates")
_ENUMS = {"joint": JointMode, "impression": ImpressionPolicy}


def _coerce(key: str, value: Any) -> Any:
    """A value from JSON, a CLI flag or a query string -> the field's type, or a clear error."""
    try:
        if key in _ENUMS:
            enum = _ENUMS[key]
            return value if isinstance(value, enum) else enum(str(value).strip().lower())
        if key in _BOOLS:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if key in _INTS:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if key in _FLOATS:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
    except (ValueError, TypeError):
        if key in _ENUMS:
            choices = ", ".join(m.value for m in _ENUMS[key])
            raise GenerationError(f"decoding option {key}={value!r} is not one of {choices}") from None
        kind = "an integer" if key in _INTS else "a number" if key in _FLOATS else "true or false"
        raise GenerationError(f"decoding option {key}={value!r} must be {kind}") from None
    return value


def _check_ranges(o: DecodingOptions) -> None:
    for key in _ENUMS:
        if not isinstance(getattr(o, key), _ENUMS[key]):
            object.__setattr__(o, key, _coerce(key, getattr(o, key)))
    problems = []
    if o.beams < 1 or o.beams > 64:
        problems.append(f"beams={o.beams} (1..64)")
    if not 0.0 < o.top_p <= 1.0:
        problems.append(f"top_p={o.top_p} (0 < top_p <= 1)")
    if not 0.0 < o.temperature <= 100.0:
        problems.append(f"temperature={o.temperature} (0 < t <= 100)")
    if o.max_new_tokens is not None and not 1 <= o.max_new_tokens <= 4096:
        problems.append(f"max_new_tokens={o.max_new_tokens} (1..4096)")
    if not 0 <= o.consensus <= 64:
        problems.append(f"consensus={o.consensus} (0..64)")
    if o.candidates is not None and not 1 <= o.candidates <= 64:
        problems.append(f"candidates={o.candidates} (1..64)")
    if problems:
        raise GenerationError("decoding option(s) out of range: " + ", ".join(problems))
