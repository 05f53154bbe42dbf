"""Fit a model folder's OOD statistics (``ood.safetensors``) on films of its own training data.

    python -m crrg.ood fit --model src/crrg/models/pretrained/crrg-default \
        --data /work/data/synth5k/manifest.jsonl --fit-split train --val-split val

The statistics come from the frontal film of each ``--fit-split`` study, the threshold from the
``--percentile`` of the ``--val-split`` studies' scores (held out from the fit, same distribution), so
that about 1 in 100 films like the training films is called unreliable. If the folder's
``config.json`` lists its files (``"files"``), ``ood.safetensors`` is added to the list.

    python -m crrg.ood domain --model src/crrg/models/pretrained/crrg-default \
        --data /work/data/synth5k/manifest.jsonl --fit-split train --real REAL_FILMS [...]

adds the synthetic-vs-real discriminant (:mod:`crrg.ood.domain`) to the folder's statistics, fitted on
the ``--fit-split`` films against unlabelled real films: each ``REAL_FILMS`` is a folder (its PNG,
JPEG and DICOM files, recursively), a manifest (``.jsonl``: every study's frontal film) or a list of
paths (``.txt``, one per line, relative to the list).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from crrg.errors import ConfigError, CrrgError, InputError
from crrg.ood.score import classifier_of, tower_features
from crrg.ood.stats import OOD_FILE, FeatureStats

log = logging.getLogger(__name__)


def frontal_paths(manifest: str, split: str | None, limit: int | None = None) -> list[str]:
    """The frontal film of each study of ``split``, chosen by the one frontal rule the model reads with
    (:meth:`crrg.records.StudyRecord.frontal_image`); studies of lateral films only are left out."""
    from crrg.records import read_manifest

    records = read_manifest(manifest, split=split)
    paths = [im.path for im in (r.frontal_image() for r in records) if im is not None]
    if not paths:
        raise InputError(f"{manifest} has no studies with images in split {split!r}")
    return paths[:limit] if limit else paths


def features_of(classifier, paths: list[str], batch: int = 64) -> np.ndarray:
    from crrg.image import load_image

    chunks = [tower_features(classifier, [load_image(p) for p in paths[i:i + batch]])
              for i in range(0, len(paths), batch)]
    return np.concatenate(chunks)


def folder_tower(folder: Path):
    """The module whose image tower a model folder's statistics describe (:func:`classifier_of`)."""
    from crrg.models.registry import load_pretrained

    classifier = classifier_of(load_pretrained(str(folder)))
    if classifier is None:
        raise ConfigError(f"{folder} has no image tower (an attached classifier) to fit OOD statistics for")
    return classifier


def fit_model_folder(folder: str | Path, manifest: str, fit_split: str = "train", val_split: str = "val",
                     k: int | None = None, percentile: float = 99.0, limit: int | None = None) -> FeatureStats:
    folder = Path(folder)
    classifier = folder_tower(folder)
    fit_paths, val_paths = frontal_paths(manifest, fit_split, limit), frontal_paths(manifest, val_split)
    log.info("OOD statistics: %d %s films to fit, %d %s films to calibrate", len(fit_paths), fit_split,
             len(val_paths), val_split)
    features = features_of(classifier, fit_paths)
    held_out = {}
    if k is None:
        k, held_out = FeatureStats.choose_k(features)
        log.info("held-out log-likelihood per number of principal directions: %s; chose k = %d",
                 {c: round(v, 1) for c, v in held_out.items()}, k)
    stats = FeatureStats.fit(features, k=k,
                             meta={"data": str(manifest), "fit_split": fit_split, "val_split": val_split,
                                   "tower": type(classifier.image_encoder).__name__,
                                   "k_held_out_loglik": {str(c): round(v, 2) for c, v in held_out.items()}})
    stats.calibrate(features_of(classifier, val_paths), percentile)
    stats.save(folder)
    _declare(folder)
    return stats


def real_film_paths(sources: list[str]) -> list[str]:
    """The films named by ``sources`` (folders, manifests, path lists), in a stable order; a folder's
    films are its files a batch report would read (:data:`crrg.inference.batch.IMAGE_SUFFIXES`)."""
    from crrg.inference.batch import IMAGE_SUFFIXES

    paths: list[str] = []
    for source in sources:
        src = Path(source)
        if src.is_dir():
            paths += sorted(str(p) for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif src.suffix == ".jsonl":
            paths += frontal_paths(str(src), None)
        elif src.suffix == ".txt":
            paths += [str(src.parent / line.strip()) for line in src.read_text().splitlines() if line.strip()]
        else:
            raise InputError(f"{source}: not a folder, a manifest (.jsonl) or a list of paths (.txt)")
    if not paths:
        raise InputError(f"no real films in {', '.join(sources)}")
    return paths


def fit_domain(folder: str | Path, manifest: str, real: list[str], fit_split: str = "train", c: float = 0.1,
               limit: int | None = None) -> FeatureStats:
    """Fit the folder's synthetic-vs-real discriminant and store it with its OOD statistics."""
    from crrg.ood.domain import DomainDiscriminant

    folder = Path(folder)
    stats = FeatureStats.load(folder)
    if stats is None:
        raise ConfigError(f"{folder} has no {OOD_FILE}: fit the OOD statistics first (`python -m crrg.ood fit`)")
    classifier = folder_tower(folder)
    synthetic_paths, real_paths = frontal_paths(manifest, fit_split, limit), real_film_paths(real)
    log.info("domain discriminant: %d synthetic %s films against %d real films", len(synthetic_paths),
             fit_split, len(real_paths))
    stats.domain = DomainDiscriminant.fit(features_of(classifier, synthetic_paths), features_of(classifier, real_paths),
                                          c=c, meta={"synthetic": f"{manifest} [{fit_split}]", "real": list(real)})
    stats.save(folder)
    return stats


def _declare(folder: Path) -> None:
    """Add the file to config.json's "files" list when the folder declares its files."""
    from crrg.io import atomic_write_json

    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    files = config.get("files")
    if isinstance(files, list) and OOD_FILE not in files:
        config["files"] = [*files, OOD_FILE]
        atomic_write_json(config_path, config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m crrg.ood", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit ood.safetensors for a model folder")
    fit.add_argument("--model", required=True, help="model folder (its classifier tower is used)")
    fit.add_argument("--data", required=True, help="manifest.jsonl of the model's training data")
    fit.add_argument("--fit-split", default="train")
    fit.add_argument("--val-split", default="val")
    fit.add_argument("--k", type=int, default=None,
                     help="principal directions kept (default: chosen by held-out likelihood on the fit films)")
    fit.add_argument("--percentile", type=float, default=99.0)
    fit.add_argument("--limit", type=int, default=None, help="at most this many fit films")
    domain = sub.add_parser("domain", help="add the synthetic-vs-real discriminant to a folder's statistics")
    domain.add_argument("--model", required=True, help="model folder with ood.safetensors")
    domain.add_argument("--data", required=True, help="manifest.jsonl of the model's (synthetic) training data")
    domain.add_argument("--fit-split", default="train")
    domain.add_argument("--real", nargs="+", required=True,
                        help="unlabelled real films: folders, manifests (.jsonl) or path lists (.txt)")
    domain.add_argument("--c", type=float, default=0.1, help="inverse L2 strength of the logistic regression")
    domain.add_argument("--limit", type=int, default=None, help="at most this many synthetic films")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "domain":
            stats = fit_domain(args.model, args.data, args.real, args.fit_split, args.c, args.limit)
            print(json.dumps({"file": str(Path(args.model) / OOD_FILE), "domain": stats.domain.meta}))
            return
        stats = fit_model_folder(args.model, args.data, args.fit_split, args.val_split, args.k, args.percentile,
                                 args.limit)
    except CrrgError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps({"file": str(Path(args.model) / OOD_FILE), "threshold": stats.threshold, **stats.meta}))
