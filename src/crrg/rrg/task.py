"""Training the region-guided generator (task ``rrg``), one resumable stage at a time.

Stages, each started from the previous stage's exported model (``model.init``):

``detector``     Faster R-CNN on the region boxes of the frontal images; with ``loss.detector_heads``
                 the region heads also train through it, on its features at the true boxes.
``classifiers``  detector frozen; region features -> selection, abnormality and CheXpert-14 heads.
``pretrain``     GPT-2 as a plain language model on report text (IU X-Ray reports + the training
                 split's reports and region sentences); trains the tokenizer when the model has none.
``language``     GPT-2 with the region prefix on (region feature, region sentence) pairs,
                 conditioned on the finding probabilities it will see at inference: the attached
                 classifier's (:mod:`crrg.rrg.joint`) where the model has one, else the finding head's
                 (``loss.condition_on_classifier: false`` keeps the head's).
``joint``        projector, heads and decoder fine-tuned together (heads loss + sentence loss).

The detector is frozen after its stage, so the stages after it read its RoI features from a cache
(computed once per manifest split and model, next to the ``model.init`` folder): on a 2-core CPU this
turns an epoch of the later stages from minutes into seconds.

Config sections: ``model`` (``name``, ``overrides``, ``init``), ``data`` (``manifest``, ``train_split``,
``val_split``, ``max_train``), ``corpus`` (``iu_xray``: Open-i archive or null, ``max_texts``),
``loss`` (weights), ``stages`` (per-stage ``trainer`` overrides, used by :func:`train_stages`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from crrg.errors import ConfigError, InputError
from crrg.observations import ANATOMICAL_REGIONS, CHEXPERT_14
from crrg.records import StudyRecord, read_manifest

log = logging.getLogger(__name__)

STAGES = ("detector", "classifiers", "pretrain", "language", "joint")
FEATURE_STAGES = ("classifiers", "language", "joint")


def _section(config: dict, name: str) -> dict:
    value = config.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"config section {name!r} must be a mapping")
    return value


def stage_of(config: dict) -> str:
    stage = config.get("stage") or "detector"
    if stage not in STAGES:
        raise ConfigError(f"rrg stage {stage!r} is not one of {list(STAGES)}")
    return stage


# ----------------------------------------------------------------------------------------- model
def build_rrg(config: dict):
    """The model a stage starts from: the ``model.init`` folder if given, else a fresh registry model."""
    from crrg.models.registry import create_model

    model_cfg = _section(config, "model")
    if model_cfg.get("init"):
        return load_stage_model(model_cfg["init"], model_cfg.get("overrides")).train()
    if model_cfg.get("warm_start"):
        return warm_start_model(config, model_cfg["warm_start"]).train()
    return create_model(_base_model_config(config), **(model_cfg.get("overrides") or {}))


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


# ------------------------------------------------------------------------------------------ data
def load_split(config: dict, key: str, default: str | None) -> list[StudyRecord]:
    data = _section(config, "data")
    manifest = data.get("manifest")
    if not manifest:
        raise ConfigError("data.manifest is missing (crrg train rrg --data M.jsonl)")
    split = data.get(key, default)
    if not split:
        return []
    records = read_manifest(manifest, split=split)
    limit = data.get("max_train") if key == "train_split" else data.get("max_val")
    return records[: int(limit)] if limit else records


def frontal_index(record: StudyRecord) -> int | None:
    """The image the region boxes belong to (regions of the first frontal image, else of image 0)."""
    if not record.images:
        return None
    indices = {r.image for r in record.regions or []}
    for i, im in enumerate(record.images):
        if im.view in ("PA", "AP") and (not indices or i in indices):
            return i
    return min(indices) if indices else 0


def with_regions(records: list[StudyRecord]) -> list[StudyRecord]:
    usable = [r for r in records if r.regions and r.images]
    if records and not usable:
        raise InputError("no study in the manifest has region annotations; the rrg generator trains on "
                         "records with 'regions' (e.g. from `crrg synth`)")
    return usable


def report_corpus(config: dict) -> list[str]:
    """Report text for tokenizer and language-model pretraining: IU X-Ray reports + the training split."""
    from crrg.text import clean_report, split_sentences

    corpus_cfg = _section(config, "corpus")
    texts: list[str] = []
    iu = corpus_cfg.get("iu_xray")
    if iu:
        from crrg.data.iu_xray import IuXrayReader

        for record in IuXrayReader(iu):
            report = clean_report(record.report, deid_replacement="")
            texts.extend(split_sentences(report))
    for record in load_split(config, "train_split", "train"):
        for region in record.regions or []:
            texts.extend(region.sentences)
        texts.extend(split_sentences(record.report))
    texts = [t.strip() for t in texts if t and t.strip()]
    limit = corpus_cfg.get("max_texts")
    return texts[: int(limit)] if limit else texts


def _load_frontal_image(record: StudyRecord, image_size: int):
    """The frontal (H, W) image resized so its long side is at most ``image_size``, the scale used, and its index."""
    from crrg.image import load_image, resize

    index = frontal_index(record)
    image = load_image(record.images[index].path)
    h, w = image.shape
    scale = image_size / max(h, w)
    if scale < 1:
        image, _ = resize(image, max(1, round(h * scale)), max(1, round(w * scale)))
    else:
        scale = 1.0
    return image, scale, index


def _load_frontal(record: StudyRecord, image_size: int) -> tuple[torch.Tensor, float, int]:
    """:func:`_load_frontal_image` as the detector's (3, H, W) tensor."""
    from crrg.rrg.detector import to_rgb_tensor

    image, scale, index = _load_frontal_image(record, image_size)
    return to_rgb_tensor(image), scale, index


class DetectorDataset(Dataset):
    def __init__(self, records: list[StudyRecord], image_size: int):
        self.records, self.image_size = records, image_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        from crrg.rrg.detector import targets_from_regions

        record = self.records[i]
        image, scale, index = _load_frontal(record, self.image_size)
        target = targets_from_regions(record.regions, index)
        target["boxes"] = target["boxes"] * scale
        return image, target, region_targets(record, index)


def collate_detector(batch):
    """Images and detection targets as lists (torchvision's convention), region targets stacked."""
    regions = {k: torch.stack([b[2][k] for b in batch]) for k in batch[0][2]}
    return [b[0] for b in batch], [b[1] for b in batch], regions


def scatter_regions(features: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image features in target order -> (B, 29, F) in region order, and a (B, 29) mask of the
    regions that had a box (a region without one gets zeros and is left out of the region losses)."""
    out = features[0].new_zeros(len(features), len(ANATOMICAL_REGIONS), features[0].shape[-1])
    present = torch.zeros(len(features), len(ANATOMICAL_REGIONS))
    for i, (f, t) in enumerate(zip(features, targets)):
        out[i, t["labels"] - 1] = f
        present[i, t["labels"] - 1] = 1.0
    return out, present


def region_targets(record: StudyRecord, index: int) -> dict[str, torch.Tensor]:
    from crrg.rrg.classifiers import label_targets

    selected = torch.zeros(len(ANATOMICAL_REGIONS))
    abnormal = torch.zeros(len(ANATOMICAL_REGIONS))
    known = torch.zeros(len(ANATOMICAL_REGIONS))
    for r in record.regions or []:
        if r.image != index:
            continue
        k = ANATOMICAL_REGIONS.index(r.name)
        known[k] = 1
        selected[k] = float(bool(r.sentences))
        abnormal[k] = float(r.abnormal)
    findings, _ = label_targets(record.labels)
    return {"selected": selected, "abnormal": abnormal, "known": known, "findings": torch.tensor(findings)}


def region_sentences(record: StudyRecord, index: int) -> list[tuple[int, str]]:
    return [(ANATOMICAL_REGIONS.index(r.name), " ".join(r.sentences)) for r in record.regions or []
            if r.image == index and r.sentences]


def _weights_key(key, module) -> None:
    """Feed a module's weights into a cache key (a cheap fingerprint: name and sum per tensor)."""
    for name, p in module.state_dict().items():
        key.update(name.encode())
        key.update(p.float().sum().item().hex().encode() if p.numel() else b"")


@torch.no_grad()
def compute_features(model, records: list[StudyRecord], cache_dir: Path | None, tag: str) -> torch.Tensor:
    """Region inputs (N, 29, input_width) of the frozen detector for each record (its RoI features, then
    the region context when the model has one, :meth:`RRGModel.region_inputs`), cached on disk by content."""
    from crrg.io import atomic_save_file
    from crrg.rrg.detector import to_rgb_tensor

    key = hashlib.sha1()
    key.update(tag.encode())
    for r in records:
        key.update(r.id.encode())
        key.update(r.images[frontal_index(r)].path.encode())
    _weights_key(key, model.detector)
    if model.context is not None:
        from crrg.rrg.region_context import tower_of

        key.update(json.dumps(model.context_cfg.to_dict(), sort_keys=True).encode())
        _weights_key(key, tower_of(model).image_encoder)
    path = cache_dir / f"rrg-features-{key.hexdigest()[:16]}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        return torch.load(path)
    model.detector.eval()
    image_size = model.det_cfg.image_size
    feats = []
    batch = 8  # one backbone call per few images: fewer, larger matrix products on a CPU
    for start in range(0, len(records), batch):
        loaded = [_load_frontal_image(r, image_size) for r in records[start:start + batch]]
        images = [im for im, _, _ in loaded]
        detections = model.detector.detect([to_rgb_tensor(im) for im in images])
        feats.extend(model.region_inputs(images, detections).half())
        if (start // batch + 1) % 25 == 0:
            log.info("rrg: region features %d/%d", len(feats), len(records))
    out = torch.stack(feats) if feats else torch.zeros(0, len(ANATOMICAL_REGIONS), model.input_width)
    if path is not None:
        atomic_save_file(path, lambda tmp: torch.save(out, tmp))
    return out


def classifier_conditions(model, records: list[StudyRecord], cache_dir: Path | None, tag: str) -> torch.Tensor | None:
    """(N, 14) finding probabilities the model's attached classifier (:mod:`crrg.rrg.joint`) gives each
    record, NaN where it gives none; None without an attached classifier. At inference the decoder is
    conditioned on these, not on the rrg finding head, so the language stages train on them too."""
    from crrg.image import load_image
    from crrg.io import atomic_save_file
    from crrg.reporting import StudyInput

    source = getattr(model, "finding_source", None)
    if source is None:
        return None
    key = hashlib.sha1(f"conditions-{tag}".encode())
    for r in records:
        key.update(r.id.encode())
        key.update(r.images[frontal_index(r)].path.encode())
    weighted = getattr(source, "classifier", source)
    if isinstance(weighted, nn.Module):
        _weights_key(key, weighted)
    path = cache_dir / f"rrg-conditions-{key.hexdigest()[:16]}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        return torch.load(path)
    out = torch.full((len(records), len(CHEXPERT_14)), float("nan"))
    for i, r in enumerate(records):
        image = r.images[frontal_index(r)]
        given = source.predict_proba(StudyInput(images=[load_image(image.path)], views=[image.view], id=r.id))
        for j, name in enumerate(CHEXPERT_14):
            if name in given:
                out[i, j] = float(given[name])
        if (i + 1) % 500 == 0:
            log.info("rrg: classifier conditions %d/%d", i + 1, len(records))
    if path is not None:
        atomic_save_file(path, lambda tmp: torch.save(out, tmp))
    return out


class StudyFeatureDataset(Dataset):
    """Per study: cached RoI features, region / finding targets, the region sentences and, with an
    attached classifier, its finding probabilities (``conditions``, NaN for the findings it lacks)."""

    def __init__(self, records: list[StudyRecord], features: torch.Tensor, conditions: torch.Tensor | None = None):
        self.records, self.features, self.conditions = records, features, conditions

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        index = frontal_index(record)
        item = region_targets(record, index)
        item["features"] = self.features[i].float()
        item["sentences"] = region_sentences(record, index)
        has_abnormal = bool((item["abnormal"] * item["known"]).sum() > 0)
        item["impression"] = record.impression.strip() if has_abnormal and record.impression.strip() else None
        item["global"] = global_findings(record)
        if self.conditions is not None:
            item["conditions"] = self.conditions[i].float()
        return item


def global_findings(record: StudyRecord) -> str:
    """The findings sentences that no region of the record carries ("" when every one has a region)."""
    from crrg.text import split_sentences

    owned = {s.strip().lower().rstrip(".") for r in record.regions or [] for s in r.sentences}
    return " ".join(s for s in split_sentences(record.findings) if s.strip().lower().rstrip(".") not in owned)


def collate_studies(batch: list[dict]) -> dict[str, Any]:
    out = {k: torch.stack([b[k] for b in batch]) for k in ("features", "selected", "abnormal", "known", "findings")}
    if all("conditions" in b for b in batch):
        out["conditions"] = torch.stack([b["conditions"] for b in batch])
    out["sentences"] = [(row, region, text) for row, b in enumerate(batch) for region, text in b["sentences"]]
    out["impressions"] = [(row, b["impression"]) for row, b in enumerate(batch) if b.get("impression")]
    out["globals"] = [(row, b["global"]) for row, b in enumerate(batch) if b.get("global") is not None]
    return out


class TextDataset(Dataset):
    def __init__(self, texts: list[str]):
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> str:
        return self.texts[i]


def _identity(batch):
    return batch


class RRGDataModule(L.LightningDataModule):
    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        self.stage_name = stage_of(config)
        trainer = _section(config, "trainer")
        self.batch_size = int(trainer.get("batch_size", 8))
        self.num_workers = int(trainer.get("num_workers", 0))

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "_ready", False):
            return
        train = load_split(self.config, "train_split", "train")
        val = load_split(self.config, "val_split", "val")
        if self.stage_name == "pretrain":
            texts = report_corpus(self.config)
            cut = max(1, len(texts) // 50)
            self.train_set, self.val_set = TextDataset(texts[cut:]), TextDataset(texts[:cut])
        elif self.stage_name == "detector":
            size = _model_image_size(self.config)
            self.train_set = DetectorDataset(with_regions(train), size)
            self.val_set = DetectorDataset(with_regions(val), size) if val else None
        else:
            model = build_rrg(self.config).eval()
            cache = _cache_dir(self.config)
            train = with_regions(train)
            val = with_regions(val) if val else []
            use = self.stage_name != "classifiers" and bool(_section(self.config, "loss").get("condition_on_classifier", True))

            def dataset(records: list[StudyRecord], tag: str) -> StudyFeatureDataset:
                conditions = classifier_conditions(model, records, cache, tag) if use else None
                return StudyFeatureDataset(records, compute_features(model, records, cache, tag), conditions)

            self.train_set = dataset(train, "train")
            self.val_set = dataset(val, "val") if val else None
        self._ready = True

    def _collate(self):
        return {"detector": collate_detector, "pretrain": _identity}.get(self.stage_name, collate_studies)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          collate_fn=self._collate())

    def val_dataloader(self):
        if self.val_set is None or len(self.val_set) == 0:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=self._collate())


def _model_image_size(config: dict) -> int:
    model_cfg = _section(config, "model")
    if model_cfg.get("init"):
        base = json.loads((Path(model_cfg["init"]) / "config.json").read_text())
    else:
        base = _base_model_config(config)
    overrides = (model_cfg.get("overrides") or {}).get("detector", {})
    return int(overrides.get("image_size", base.get("detector", {}).get("image_size", 256)))


def _cache_dir(config: dict) -> Path | None:
    data = _section(config, "data")
    if data.get("feature_cache"):
        Path(data["feature_cache"]).mkdir(parents=True, exist_ok=True)
        return Path(data["feature_cache"])
    init = _section(config, "model").get("init")
    return Path(init) if init else None


# ---------------------------------------------------------------------------------------- module
class RRGModule(L.LightningModule):
    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        self.stage_name = stage_of(config)
        self.model = build_rrg(config)
        if self.stage_name in ("pretrain", "language", "joint"):
            ensure_tokenizer(self.model, config)
        elif self.stage_name in FEATURE_STAGES and self.model.tokenizer is None:
            pass
        loss = _section(config, "loss")
        self.w_sel = float(loss.get("selection", 1.0))
        self.w_abn = float(loss.get("abnormal", 1.0))
        self.w_find = float(loss.get("findings", 1.0))
        self.w_lm = float(loss.get("language", 1.0))
        # > 0: the detector stage also trains the region heads on its ground-truth-box features
        # (RegionDetector.losses_and_target_features), so those features learn to show disease.
        self.w_det_heads = float(loss.get("detector_heads", 0.0))
        if self.stage_name == "detector" and self.w_det_heads > 0 and self.model.context is not None:
            raise ConfigError("loss.detector_heads trains the region heads on the detector's features alone, but this "
                              "model's region features also carry region_context: set loss.detector_heads to 0 for "
                              "the detector stage (the classifiers stage trains the heads on both)")
        # About one region in nine is abnormal: without up-weighting them the head learns "normal".
        self.abnormal_pos_weight = float(loss.get("abnormal_pos_weight", 1.0))
        # Zeroing the finding probabilities for some sentences teaches the decoder to write without
        # them too, so "joint off" can be measured on the same model.
        self.condition_dropout = float(loss.get("condition_dropout", 0.3))
        self._freeze()

    def _trainable(self) -> list[nn.Module]:
        m = self.model
        heads = [m.projector, m.selection, m.abnormality, m.findings] + ([m.context_projector] if m.context_projector else [])
        return {
            "detector": [m.detector] + (heads if self.w_det_heads > 0 else []),
            "classifiers": heads,
            "pretrain": [m.language.gpt2],
            # the region context is what lets the decoder tell a mass from other opacities, so the
            # decoder's own loss also shapes its projection (the joint stage then refits the heads to it)
            "language": [m.language, m.impression_query, m.global_query] + ([m.context_projector] if m.context_projector else []),
            "joint": heads + [m.language, m.impression_query, m.global_query],
        }[self.stage_name]

    def _freeze(self) -> None:
        self.model.requires_grad_(False)
        for module in self._trainable():
            module.requires_grad_(True)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # A checkpoint written before a newer head existed resumes with that head's initial values.
        state = checkpoint.get("state_dict", {})
        for key, value in self.state_dict().items():
            if key not in state and key.removeprefix("model.").startswith(NEW_HEAD_PREFIXES):
                state[key] = value

    def on_train_epoch_start(self) -> None:
        # Frozen parts stay in eval mode (no dropout, fixed BatchNorm statistics).
        self.model.eval()
        for module in self._trainable():
            module.train()

    def _lm_batch(self, batch: dict, feats: torch.Tensor, finding_probs: torch.Tensor):
        from crrg.rrg.language import encode_sentences

        impressions = batch.get("impressions") or []
        globals_ = (batch.get("globals") or []) if self.model.global_sentences else []
        if not batch["sentences"] and not impressions and not globals_:
            return None
        rows = torch.tensor([s[0] for s in batch["sentences"]] + [i[0] for i in impressions] + [g[0] for g in globals_],
                            dtype=torch.long)
        regions = torch.tensor([s[1] for s in batch["sentences"]], dtype=torch.long)
        inputs = [feats[rows[: len(regions)], regions]]
        if impressions:
            # the IMPRESSION is written from the (ground-truth) abnormal regions, as at inference
            imp_rows = rows[len(regions):len(regions) + len(impressions)]
            abnormal = (batch["abnormal"] * batch["known"])[imp_rows]
            inputs.append(self.model.impression_query(feats[imp_rows], abnormal))
        if globals_:
            # an empty target teaches the decoder to stop at once when nothing is left to say
            g_rows = rows[len(regions) + len(impressions):]
            inputs.append(self.model.global_query(feats[g_rows], torch.ones_like(batch["known"][g_rows])))
        texts = [s[2] for s in batch["sentences"]] + [i[1] for i in impressions] + [g[1] for g in globals_]
        ids, mask = encode_sentences(self.model.tokenizer, texts,
                                     self.model.lang_cfg.n_positions - self.model.lang_cfg.prefix_length - 1)
        ids, mask = ids.to(self.device), mask.to(self.device)
        cond = finding_probs[rows]
        if "conditions" in batch:  # the attached classifier's probabilities, the head's where it has none
            given = batch["conditions"][rows].to(cond)
            cond = torch.where(torch.isnan(given), cond, given)
        if self.training and self.condition_dropout > 0:
            keep = (torch.rand(len(rows), 1, device=cond.device) >= self.condition_dropout).to(cond.dtype)
            cond = cond * keep
        return self.model.language.conditioned_loss(torch.cat(inputs), ids, mask, cond)

    def _head_losses(self, batch: dict, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        bce = nn.functional.binary_cross_entropy_with_logits
        logits = self.model.heads(feats)
        known = batch["known"]
        denom = known.sum().clamp(min=1)
        return {
            "selection": (bce(logits["selection"], batch["selected"], reduction="none") * known).sum() / denom,
            "abnormal": (bce(logits["abnormal"], batch["abnormal"], reduction="none",
                             pos_weight=torch.tensor(self.abnormal_pos_weight, device=known.device)) * known).sum() / denom,
            "findings": bce(logits["findings"], batch["findings"]),
            "finding_probs": torch.sigmoid(logits["findings"]),
        }

    def _weighted_head_losses(self, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The three head losses, each times its ``loss.*`` weight (one rule for every stage that trains heads)."""
        return {"selection": self.w_sel * parts["selection"], "abnormal": self.w_abn * parts["abnormal"],
                "findings": self.w_find * parts["findings"]}

    def _step(self, batch, prefix: str) -> torch.Tensor:
        stage, m = self.stage_name, self.model
        if stage == "detector":
            images, targets, regions = batch
            train = prefix == "train"
            with torch.set_grad_enabled(train):
                # torchvision only returns losses in train mode; validation then restores eval mode
                if self.w_det_heads > 0:
                    losses, feats = m.detector.losses_and_target_features(images, targets, update_statistics=train)
                    roi, present = scatter_regions(feats, targets)
                    regions = {**regions, "known": regions["known"] * present.to(regions["known"])}
                    weighted = self._weighted_head_losses(self._head_losses(regions, m.region_features(roi)))
                    losses.update({f"heads_{k}": self.w_det_heads * v for k, v in weighted.items()})
                else:
                    losses = m.detector.losses(images, targets, update_statistics=train)
            if not train:
                m.detector.frcnn.eval()
            loss = sum(losses.values())
            for k, v in losses.items():
                self.log(f"{prefix}_{k}", v, batch_size=len(images))
        elif stage == "pretrain":
            from crrg.rrg.language import encode_sentences

            ids, mask = encode_sentences(m.tokenizer, batch, m.lang_cfg.n_positions)
            loss = m.language.text_loss(ids.to(self.device), mask.to(self.device))
        else:
            feats = m.region_features(batch["features"])
            parts = self._head_losses(batch, feats)
            if stage == "classifiers":
                loss = sum(self._weighted_head_losses(parts).values())
            else:
                lm = self._lm_batch(batch, feats, parts["finding_probs"].detach())
                lm = lm if lm is not None else feats.sum() * 0
                self.log(f"{prefix}_lm_loss", lm, batch_size=len(feats))
                loss = self.w_lm * lm
                if stage == "joint":
                    loss = loss + sum(self._weighted_head_losses(parts).values())
            for k in ("selection", "abnormal", "findings"):
                self.log(f"{prefix}_{k}_loss", parts[k], batch_size=len(feats))
        size = len(batch[0]) if stage == "detector" else (len(batch) if stage == "pretrain" else len(batch["features"]))
        self.log(f"{prefix}_loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        trainer_cfg = _section(self.config, "trainer")
        params = [p for module in self._trainable() for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=float(trainer_cfg.get("lr", 1e-3)),
                                      weight_decay=float(trainer_cfg.get("weight_decay", 0.0)))
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1000
        warmup = max(1, total // 20)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class RRGTask:
    stages = STAGES

    def build_module(self, config: dict) -> RRGModule:
        return RRGModule(config)

    def build_datamodule(self, config: dict) -> RRGDataModule:
        return RRGDataModule(config)

    def export(self, module: RRGModule, out_dir: Path) -> None:
        from crrg.models.registry import save_pretrained

        model = module.model.cpu().eval()
        if module.stage_name in ("classifiers", "joint"):
            tune_thresholds(model, module.config)
        train = load_split(module.config, "train_split", "train") or []
        learned = normal_impression(train)
        if learned:
            model.normal_impression = learned
            model.crrg_config.setdefault("assembly", {})["normal_impression"] = learned
        from crrg.rrg.ordering import SentenceOrder

        model.sentence_order = SentenceOrder.fit(r.findings for r in train) or None
        save_pretrained(model, out_dir)


def normal_impression(records: list[StudyRecord]) -> str | None:
    """The consensus (:func:`crrg.rrg.consensus.consensus`) of the training impressions that state no
    finding: the wording of "nothing acute" this corpus uses most, in the form that shares the most
    words with the others. None when the records have no such impression."""
    from crrg.rrg.consensus import consensus
    from crrg.rrg.joint import positive_claims

    texts = [r.impression.strip() for r in records if r.impression.strip()]
    # no positive or uncertain statement at all: "Support devices in appropriate position." is not normal
    normal = [t for t in texts if not positive_claims(t)]
    if not normal:
        return None
    top = Counter(normal).most_common(50)  # the long tail cannot win and costs time
    return consensus([t for t, _ in top], [n for _, n in top])


def best_f1_threshold(scores: torch.Tensor, targets: torch.Tensor, default: float = 0.5) -> float:
    """The threshold in 0.05..0.95 with the best F1 of ``scores >= t`` against 0/1 ``targets``."""
    if targets.sum() == 0 or targets.sum() == len(targets):
        return default
    best, best_f1 = default, -1.0
    for t in torch.linspace(0.05, 0.95, 19).tolist():
        pred = scores >= t
        tp = float((pred & (targets == 1)).sum())
        f1 = 2 * tp / max(1.0, float(pred.sum()) + float(targets.sum()))
        if f1 > best_f1:
            best, best_f1 = round(t, 2), f1
    return best


@torch.no_grad()
def tune_thresholds(model, config: dict) -> None:
    """Thresholds that maximise F1 on the validation split: per finding (0.5 where a finding has no
    positives), and for region selection and region abnormality over all known regions."""
    val = with_regions(load_split(config, "val_split", "val") or [])
    if not val:
        return
    feats = compute_features(model, val, _cache_dir(config), "val")
    logits = model.heads(model.region_features(feats.float()))
    probs = torch.sigmoid(logits["findings"])
    region = [region_targets(r, frontal_index(r)) for r in val]
    targets = torch.stack([t["findings"] for t in region])
    chosen = {name: best_f1_threshold(probs[:, j], targets[:, j]) for j, name in enumerate(CHEXPERT_14)
              if 0 < targets[:, j].sum() < len(targets)}
    model.thresholds.findings = chosen or None
    known = torch.stack([t["known"] for t in region]).bool()
    for key, attr in (("selected", "selection"), ("abnormal", "abnormal")):
        y = torch.stack([t[key] for t in region])[known]
        setattr(model.thresholds, attr, best_f1_threshold(torch.sigmoid(logits[attr])[known], y))


# ---------------------------------------------------------------------------------------- driver
def stage_config(config: dict, stage: str, init: str | os.PathLike | None) -> dict:
    """The config of one stage: the base config + ``stages.<stage>`` overrides, started from ``init``."""
    from crrg.models.registry import _merge  # the registry's deep merge, shared on purpose

    cfg = copy.deepcopy(config)
    per_stage = _section(_section(config, "stages"), stage)
    cfg = _merge(cfg, per_stage)
    cfg.pop("stages", None)
    cfg["stage"] = stage
    if init is not None:
        cfg.setdefault("model", {})["init"] = str(init)
    return cfg


def train_stages(config: dict, out_dir: str | os.PathLike, stages: tuple[str, ...] = STAGES, resume: bool = False,
                 devices: int = 1) -> Path:
    """Run the stages in order, each in ``out_dir/<stage>`` with the training engine, each starting
    from the previous stage's exported model.

    On resume a finished stage (its ``model/`` exists) is skipped and an interrupted one continues
    from its last checkpoint, so a killed pipeline picks up where it stopped.
    """
    from crrg.training import engine

    out = Path(out_dir)
    init = _section(config, "model").get("init")
    config = copy.deepcopy(config)
    # One feature cache for the whole run: its entries are keyed by detector weights and studies.
    config.setdefault("data", {}).setdefault("feature_cache", str(out / "feature_cache"))
    for stage in stages:
        if stage not in STAGES:
            raise ConfigError(f"rrg stage {stage!r} is not one of {list(STAGES)}")
        stage_dir = out / stage
        done = stage_dir / "model"
        if resume and (done / "config.json").is_file():
            log.info("rrg: stage %s already done (%s)", stage, done)
            init = done
            continue
        cfg = stage_config(config, stage, init)
        init = Path(engine.train("rrg", cfg, stage_dir, devices=devices, resume=resume and stage_dir.exists()))
    return Path(init)


def _register() -> None:
    from crrg.training.tasks import register_task

    register_task("rrg", RRGTask)


_register()
