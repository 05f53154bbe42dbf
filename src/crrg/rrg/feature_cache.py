"""Cached inputs of the stages after the detector: region features and classifier conditions.

The detector is frozen after its stage, so its RoI features (and the region context of the attached
classifier's tower) for a study never change: they are computed once per split and model and
stored as safetensors (tensors only: loading a cache runs no code), keyed by the studies and a
fingerprint of the weights that produce them. On a 2-core CPU this turns an epoch of the later
stages from minutes into seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import nn

from crrg.observations import ANATOMICAL_REGIONS, CHEXPERT_14
from crrg.records import StudyRecord
from crrg.rrg.region_data import _load_frontal_image, frontal_index
from crrg.rrg.region_data import _section

log = logging.getLogger(__name__)
CACHE_KEY = "values"


def save_cached(path: Path, values: torch.Tensor) -> None:
    from safetensors.torch import save_file

    from crrg.io import atomic_save_file

    atomic_save_file(path, lambda tmp: save_file({CACHE_KEY: values.contiguous()}, tmp))


def load_cached(path: Path) -> torch.Tensor:
    """A cache entry; an unreadable one is a clear error naming the file to delete."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from crrg.errors import InputError

    try:
        return load_file(str(path))[CACHE_KEY]
    except (SafetensorError, KeyError, OSError) as exc:
        raise InputError(f"feature cache {path} is damaged ({exc}); delete it and run again") from None


def _weights_key(key, module) -> None:
    """Feed a module's weights into a cache key (a cheap fingerprint: name and sum per tensor)."""
    for name, p in module.state_dict().items():
        key.update(name.encode())
        key.update(p.float().sum().item().hex().encode() if p.numel() else b"")


@torch.no_grad()
def compute_features(model, records: list[StudyRecord], cache_dir: Path | None, tag: str) -> torch.Tensor:
    """Region inputs (N, 29, input_width) of the frozen detector for each record (its RoI features, then
    the region context when the model has one, :meth:`RRGModel.region_inputs`), cached on disk by content."""
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
    path = cache_dir / f"rrg-features-{key.hexdigest()[:16]}.safetensors" if cache_dir is not None else None
    if path is not None and path.is_file():
        return load_cached(path)
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
        save_cached(path, out)
    return out


def classifier_conditions(model, records: list[StudyRecord], cache_dir: Path | None, tag: str) -> torch.Tensor | None:
    """(N, 14) finding probabilities the model's attached classifier (:mod:`crrg.rrg.joint`) gives each
    record, NaN where it gives none; None without an attached classifier. At inference the decoder is
    conditioned on these, not on the rrg finding head, so the language stages train on them too."""
    from crrg.image import load_image
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
    path = cache_dir / f"rrg-conditions-{key.hexdigest()[:16]}.safetensors" if cache_dir is not None else None
    if path is not None and path.is_file():
        return load_cached(path)
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
        save_cached(path, out)
    return out


def feature_cache_dir(config: dict) -> Path | None:
    """``data.feature_cache`` (created), else the ``model.init`` folder, else None (no cache)."""
    data = _section(config, "data")
    if data.get("feature_cache"):
        Path(data["feature_cache"]).mkdir(parents=True, exist_ok=True)
        return Path(data["feature_cache"])
    init = _section(config, "model").get("init")
    return Path(init) if init else None
