"""Typed model configs: one dataclass per family, checked before any weight is allocated.

A model config is JSON (``crrg/models/configs/*.json``, a saved folder's ``config.json``).
:func:`validate_config` reads it into the family's dataclass the way
:class:`crrg.training.config.TrainerConfig` reads a recipe: an unknown key fails with its dotted path
named (``rrg.language.n_layr``), a value of the wrong type fails, and sizes a CPU or GPU could never
hold (``n_layer: 100000``) fail here, in one line, instead of allocating until memory runs out.
Defaults live in the dataclasses. ``crrg models info NAME`` prints the typed config.

Families registered by plug-ins have no schema here and are passed through unchanged.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Union

from crrg.errors import ConfigError
from crrg.rrg.detector import DetectorConfig
from crrg.rrg.language import LanguageConfig
from crrg.rrg.region_context import RegionContextConfig

# Largest model a config may ask for: an order of magnitude above anything crrg trains, far below what
# would exhaust a machine while it is being built.
MAX_PARAMETERS = 3_000_000_000


@dataclass
class Meta:
    """Keys every saved model may carry beside its architecture."""

    name: str | None = None  # the registry name it was built from
    version: str | None = None  # a shipped model's version (crrg-default 0.7.0)
    description: str | None = None
    files: list[str] | None = None  # every file of the saved folder besides config.json (registry.save_pretrained)


# ----------------------------------------------------------------------------------------------- rrg
@dataclass
class RRGHeads:
    region_hidden: int = 128  # hidden width of the per-region selection and abnormality heads
    finding_hidden: int = 256  # hidden width of the study-level CheXpert-14 head


@dataclass
class RRGThresholds:
    selection: float = 0.5  # a region gets a sentence at this selection probability ...
    abnormal: float = 0.5  # ... or at this abnormality probability
    findings: dict[str, float] | None = None  # per CheXpert-14 finding (thresholds.json overrides)


@dataclass
class RRGAssembly:
    dedup_threshold: float = 0.9  # cosine similarity above which a sentence repeats an earlier one
    embedder: bool = True  # use the sentence embedder for repeats (else exact text)
    drop_restatements: bool = False  # drop sentences that only restate findings stated before
    normal_impression: str | None = None  # IMPRESSION of a study with nothing abnormal


@dataclass
class RRGConfig(Meta):
    """The region-guided generator (:mod:`crrg.rrg.model`)."""

    family: Literal["rrg"] = "rrg"
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    feature_width: int = 256  # width of a region's feature after projection
    heads: RRGHeads = field(default_factory=RRGHeads)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    thresholds: RRGThresholds = field(default_factory=RRGThresholds)
    assembly: RRGAssembly = field(default_factory=RRGAssembly)
    special_ids: dict[str, int] | None = None  # pad / bos / eos of the trained tokenizer
    region_context: RegionContextConfig | None = None  # a tower pooled inside each region box
    global_sentences: bool = True  # also write the sentences no region owns (bones, edema)
    children: dict[str, str] | None = None  # finding_classifier / context_encoder -> their sub-folder
    joint: str | None = None  # crrg <= 0.7: the default joint mode (now decoding.json)
    decoding: dict[str, Any] | None = None  # crrg <= 0.7: decoding defaults (now decoding.json)

    def __post_init__(self) -> None:
        _between("rrg.feature_width", self.feature_width, 1, 8192)
        _between("rrg.heads.region_hidden", self.heads.region_hidden, 1, 16384)
        _between("rrg.heads.finding_hidden", self.heads.finding_hidden, 1, 16384)
        lang = self.language
        for key, hi in (("vocab_size", 262144), ("n_layer", 96), ("n_embd", 8192), ("n_head", 128),
                        ("n_positions", 16384), ("prefix_length", 64), ("max_new_tokens", 4096)):
            _between(f"rrg.language.{key}", getattr(lang, key), 1, hi)
        _parameters("rrg.language", lang.n_layer, lang.n_embd, lang.vocab_size + lang.n_positions)


# ----------------------------------------------------------------------------------------- clip
@dataclass
class ClipConfig(Meta):
    """CLIP image-text model (:mod:`crrg.clip.model`); the towers' own keys are checked by their builders."""

    family: Literal["clip"] = "clip"
    image_encoder: dict[str, Any] = field(default_factory=dict)  # crrg.clip.image_encoders
    text_encoder: dict[str, Any] = field(default_factory=dict)  # crrg.clip.text_encoders
    embed_dim: int = 256  # width of the shared embedding space
    projection: str = "linear"
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    report_section: str = "both"  # which report text is the image's caption: findings, impression or both

    def __post_init__(self) -> None:
        _between("clip.embed_dim", self.embed_dim, 1, 16384)
        _image_encoder("clip.image_encoder", self.image_encoder)
        _hf_arch("clip.text_encoder.hf_config", self.text_encoder.get("hf_config"))


@dataclass
class ClassifierConfig(Meta):
    """Supervised classifier on the CLIP image tower (:mod:`crrg.clip.classifier`)."""

    family: Literal["classifier"] = "classifier"
    image_encoder: dict[str, Any] = field(default_factory=dict)  # crrg.clip.image_encoders
    labels: list[str] | None = None  # None: the CheXpert-14 findings
    dropout: float = 0.0
    mode: str | None = None  # how it was trained: linear_probe or finetune (informational)

    def __post_init__(self) -> None:
        if not self.image_encoder:
            raise ConfigError("classifier config needs an 'image_encoder' object")
        _image_encoder("classifier.image_encoder", self.image_encoder)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"classifier.dropout is {self.dropout}; it must lie in [0, 1)")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ConfigError("classifier.labels must be unique")


# ----------------------------------------------------------------------------------------- blip
@dataclass
class BlipQFormer:
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    intermediate_size: int | None = None  # None: 4 x hidden_size
    num_query_tokens: int = 16
    cross_attention_frequency: int = 1
    dropout: float = 0.1


@dataclass
class BlipConfig(Meta):
    """ClinicalBLIP (:mod:`crrg.blip.model`), or a hub InstructBLIP with ``backend: instructblip``."""

    family: Literal["blip"] = "blip"
    backend: Literal["instructblip"] | None = None
    hub_id: str | None = None  # instructblip backend: hub id or local folder
    dtype: str | None = None  # instructblip backend: float32, float16 or bfloat16
    image_size: int = 128
    max_images: int = 2
    max_instruction_tokens: int = 64
    max_report_tokens: int = 160
    vision: dict[str, Any] | None = None  # crrg.blip.vision: type resnet18, vit or clip
    qformer: BlipQFormer = field(default_factory=BlipQFormer)
    lm: dict[str, Any] | None = None  # pretrained (hub id / folder) or config (architecture) [+ tokenizer]
    soft_prompt_tokens: int = 0
    itc_weight: float = 0.0
    itc_dim: int = 128
    prompt: dict[str, Any] | None = None  # crrg.blip.prompts.PromptConfig
    generation: dict[str, Any] | None = None  # default decoding: max_new_tokens, num_beams, ...
    lora: dict[str, Any] | None = None  # adapters on vision / lm
    classifier: str | None = None  # a saved classifier that supplies the prompt's likely findings

    def __post_init__(self) -> None:
        _between("blip.image_size", self.image_size, 16, 4096)
        _between("blip.max_images", self.max_images, 1, 16)
        _between("blip.max_instruction_tokens", self.max_instruction_tokens, 1, 8192)
        _between("blip.max_report_tokens", self.max_report_tokens, 1, 8192)
        q = self.qformer
        for key, hi in (("hidden_size", 8192), ("layers", 64), ("heads", 128), ("num_query_tokens", 512)):
            _between(f"blip.qformer.{key}", getattr(q, key), 1, hi)
        _parameters("blip.qformer", q.layers, q.hidden_size, 0)
        if self.backend == "instructblip" and not self.hub_id:
            raise ConfigError("an 'instructblip' backend config needs 'hub_id' (hub id or local folder)")
        if self.vision and self.vision.get("type") == "vit":
            _hf_arch("blip.vision", {"hidden_size": self.vision.get("hidden_size", 192),
                                     "num_hidden_layers": self.vision.get("layers", 4)})
        _hf_arch("blip.lm.config", (self.lm or {}).get("config"))


SCHEMAS: dict[str, type] = {"rrg": RRGConfig, "clip": ClipConfig, "classifier": ClassifierConfig, "blip": BlipConfig}


def validate_config(config: Mapping[str, Any]):
    """A config dict -> its family's typed config (None for a family without a schema), or a ConfigError."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"a model config must be a JSON object, got {type(config).__name__}")
    family = config.get("family")
    schema = SCHEMAS.get(family)
    return None if schema is None else parse(schema, config, str(family))


def typed_dict(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The typed config with every default filled in (what ``crrg models info`` prints)."""
    typed = validate_config(config)
    return None if typed is None else dataclasses.asdict(typed)


# ----------------------------------------------------------------------------------------- parsing
def parse(cls, data: Any, where: str):
    """``data`` (a dict) -> ``cls`` (a dataclass), checking keys and types field by field."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be an object, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) {[f'{where}.{k}' for k in unknown]} in the model config; known: {names}")
    hints = typing.get_type_hints(cls)
    values = {k: _value(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    if hasattr(cls, "from_dict"):  # the nested configs' own semantic checks (DetectorConfig, LanguageConfig)
        return cls.from_dict(values)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _value(tp, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _value(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {options}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} is {value!r}; it must be one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be an object, got {type(value).__name__}")
        if args:
            return {str(k): _value(args[1], v, f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [value_ if item is Any else _value(item, value_, f"{where}[{i}]") for i, value_ in enumerate(value)]
        return tuple(items) if origin is tuple else items
    return value  # Any


def _between(where: str, value: int | float, lo: int | float, hi: int | float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{where} is {value}; it must lie in {lo}..{hi} (a model of this size cannot be built here)")


def _parameters(where: str, layers: int, width: int, embeddings: int) -> None:
    """Refuse a transformer whose parameter count (about 12 x layers x width^2 plus its embeddings)
    exceeds :data:`MAX_PARAMETERS`, before a single weight is allocated."""
    estimate = 12 * layers * width * width + embeddings * width
    if estimate > MAX_PARAMETERS:
        raise ConfigError(f"{where} asks for about {estimate / 1e9:.1f} billion parameters "
                          f"({layers} layers of width {width}); the limit is {MAX_PARAMETERS / 1e9:.0f} billion")


def _hf_arch(where: str, arch: Mapping[str, Any] | None) -> None:
    """Size checks of a Hugging Face architecture dict (GPT-2, BERT, ViT key names)."""
    if not arch:
        return
    layers = arch.get("num_hidden_layers", arch.get("n_layer", 1))
    width = arch.get("hidden_size", arch.get("n_embd", 1))
    vocab = arch.get("vocab_size", 0)
    for key, value, hi in (("layers", layers, 256), ("width", width, 16384), ("vocab_size", vocab, 1_000_000)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where} {key} must be an integer, got {value!r}")
        _between(f"{where} {key}", value, 0, hi)
    _parameters(where, layers, width, vocab)


def _image_encoder(where: str, spec: Mapping[str, Any]) -> None:
    size = spec.get("image_size", 224)
    if not isinstance(size, int) or isinstance(size, bool):
        raise ConfigError(f"{where}.image_size must be an integer, got {size!r}")
    _between(f"{where}.image_size", size, 16, 4096)
    options = spec.get("options") or {}
    if "num_layers" in options or "hidden_dim" in options:
        _hf_arch(f"{where}.options", {"num_hidden_layers": options.get("num_layers", 1),
                                      "hidden_size": options.get("hidden_dim", 1)})
