"""``crrg synth generate``: many synthetic studies, deterministic by seed, resumable, in parallel.

Layout of an output folder::

    images/<id>_frontal.png, images/<id>_lateral.png   (optionally .dcm too)
    studies/<id>.json     one sidecar per finished study (the record + how it was made)
    manifest.jsonl        rebuilt from the sidecars at the end (crrg record format, with splits)
    .cache/               phantom and per-pose anatomy projections (safe to delete)
    DONE                  written last

Study ``i`` depends only on (seed, i): its own random generator, a pose drawn from a fixed bank, the
same phantom, so the bytes do not depend on the number of workers or on interruptions. A study is
finished when its sidecar exists (written after its images), which is what resuming skips.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from crrg.errors import InputError
from crrg.io import atomic_save_file, atomic_write_json, atomic_write_text
from crrg.observations import ANATOMICAL_REGIONS
from crrg.records import ImageRef, Region, StudyRecord, write_manifest

log = logging.getLogger(__name__)

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
VIEW_CHOICES = ("frontal", "lateral")


@dataclass
class SynthConfig:
    out: str
    n: int = 5000
    seed: int = 0
    size: int = 256
    views: tuple[str, ...] = VIEW_CHOICES
    workers: int = 1
    bits: int = 16
    dicom: bool = False
    ct: str | None = None
    mask: str | None = None
    sentence_bank: str | None = None
    n_poses: int = 8
    splits: tuple[float, float, float] = SPLIT_FRACTIONS
    spacing: float = 1.75
    cache_dir: str | None = None  # phantom + pose projections; default OUT/.cache (share one between sets to save minutes)

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.out) / ".cache"

    def validate(self) -> None:
        if self.n < 1:
            raise InputError(f"--n must be at least 1 (got {self.n})")
        if not 64 <= self.size <= 1024:
            raise InputError(f"--size must be between 64 and 1024 pixels (got {self.size})")
        if self.size % 2:
            raise InputError(f"--size must be even (got {self.size})")
        bad = [v for v in self.views if v not in VIEW_CHOICES]
        if bad or not self.views:
            raise InputError(f"--views must be a comma-separated subset of {','.join(VIEW_CHOICES)} (got {','.join(self.views)})")
        if self.bits not in (8, 16):
            raise InputError(f"--bits must be 8 or 16 (got {self.bits})")
        if self.workers < 1:
            raise InputError(f"--workers must be at least 1 (got {self.workers})")
        if abs(sum(self.splits) - 1) > 1e-6 or min(self.splits) < 0:
            raise InputError(f"split fractions must be non-negative and sum to 1 (got {self.splits})")
        if self.sentence_bank and not Path(self.sentence_bank).is_file():
            raise InputError(f"--sentence-bank {self.sentence_bank} does not exist")

    def fingerprint(self) -> dict:
        """What makes two runs produce the same studies (resuming with different settings is refused)."""
        keep = ("seed", "size", "views", "bits", "dicom", "ct", "mask", "sentence_bank", "n_poses", "splits", "spacing")
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in keep}


def study_id(seed: int, index: int) -> str:
    return f"synth-s{seed}-{index:06d}"


def assign_split(seed: int, index: int, fractions=SPLIT_FRACTIONS) -> str:
    u = np.random.default_rng([seed, index, 77]).random()
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


class StudyMaker:
    """Everything one process needs to make studies: the renderer (with its caches) and the sentence bank."""

    def __init__(self, cfg: SynthConfig):
        from crrg.synth.findings import Inserter
        from crrg.synth.render import Renderer
        from crrg.synth.reports import SentenceBank

        self.cfg = cfg
        cache = cfg.cache
        phantom = load_phantom_cached(cfg.ct, cfg.mask, cfg.spacing, cache)
        self.renderer = Renderer(phantom, size=cfg.size, n_poses=cfg.n_poses, cache_dir=cache)
        self.inserter = Inserter(self.renderer.anatomy)
        self.bank = SentenceBank.from_manifest(cfg.sentence_bank) if cfg.sentence_bank else None
        self._base_ctr: float | None = None

    @property
    def base_ctr(self) -> float:
        if self._base_ctr is None:
            self._base_ctr = float(self.renderer.base_ctr())
        return self._base_ctr

    def make(self, index: int) -> dict:
        """Render and write study ``index``; returns its sidecar dict."""
        from crrg.synth.render import Acquisition
        from crrg.synth.reports import write_report
        from crrg.synth.sampling import choose_view, sample_findings

        cfg = self.cfg
        out = Path(cfg.out)
        sid = study_id(cfg.seed, index)
        rng = np.random.default_rng([cfg.seed, index])
        findings = sample_findings(rng, self.base_ctr)
        frontal_view = choose_view(findings, rng)
        insertion = self.inserter.insert(findings, rng)
        report = write_report(findings, rng, self.bank)
        habitus = (float(rng.uniform(0.9, 1.1)), float(rng.uniform(0.95, 1.05)))
        inspiration = float(rng.uniform(0.93, 1.06))
        images: list[ImageRef] = []
        regions: list[Region] | None = None
        meta: dict = {"synthetic": True, "findings": [f.to_dict() for f in findings], "views": {}}
        for view_kind in cfg.views:
            view = frontal_view if view_kind == "frontal" else "LATERAL"
            pose = int(rng.integers(cfg.n_poses))
            collimate = rng.random() < 0.5
            acq = Acquisition(
                angle=float(rng.uniform(-3, 3)), shift=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))),
                scale=habitus, inspiration=inspiration, elastic=float(rng.uniform(0.004, 0.012)),
                exposure=float(rng.uniform(0.85, 1.15)), contrast=float(rng.uniform(0.85, 1.2)), gamma=float(rng.uniform(0.8, 1.25)),
                noise=float(rng.uniform(0.005, 0.03)), blur=float(rng.uniform(0.3, 1.0)),
                collimation=tuple(float(rng.uniform(0, 0.05)) if collimate else 0.0 for _ in range(4)),  # type: ignore[arg-type]
                marker=bool(rng.random() < 0.8), seed=int(rng.integers(2**31)))
            marker = None
            if acq.marker:
                marker = "L" if view == "LATERAL" else ("R" if rng.random() < 0.6 else "L")
            img, boxes, ctr = self.renderer.render_view(view, pose, insertion, acq, marker)
            name = f"images/{sid}_{view_kind}.png"
            self._write_png(out / name, img)
            if cfg.dicom:
                from crrg.synth.dicom import write_dicom

                cam = self.renderer.pose(view, pose).camera
                write_dicom(out / name.replace(".png", ".dcm"), _to_uint16(img), sid, view, cam.pixel_mm, len(images),
                            description=report.findings)
            meta["views"][view_kind] = {"view": view, "pose": pose, "pose_angles": self.renderer.pose_angles(view, pose),
                                        "acquisition": {k: v for k, v in asdict(acq).items() if k != "seed"}}
            if boxes is not None and regions is None:
                meta["cardiothoracic_ratio"] = round(float(ctr), 3)
                regions = self._regions(boxes, report, len(images))
            images.append(ImageRef(path=name, view=view))
        record = StudyRecord(id=sid, patient_id=sid, images=images, indication=report.indication, findings=report.findings,
                             impression=report.impression, labels=report.labels, split=assign_split(cfg.seed, index, cfg.splits),
                             regions=regions, meta=meta)
        sidecar = record.to_dict()
        atomic_write_json(out / "studies" / f"{sid}.json", sidecar, indent=None)
        return sidecar

    @staticmethod
    def _regions(boxes: dict[str, list[float]], report, image_index: int) -> list[Region]:
        regions = []
        for name in ANATOMICAL_REGIONS:
            touching = [s for s in report.sentences if name in s.regions]
            abnormal = any(s.abnormal for s in touching)
            sentences = [s.text[0].upper() + s.text[1:] for s in touching if s.abnormal == abnormal]
            regions.append(Region(name=name, image=image_index, box=boxes[name], abnormal=abnormal, sentences=sentences))
        return regions

    def _write_png(self, path: Path, img: np.ndarray) -> None:
        from PIL import Image

        if self.cfg.bits == 16:
            pil = Image.fromarray(_to_uint16(img))  # mode I;16
        else:
            pil = Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
        atomic_save_file(path, lambda tmp: pil.save(tmp, format="PNG", compress_level=3))


def _to_uint16(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 65535), 0, 65535).astype(np.uint16)


def load_phantom_cached(ct: str | None, mask: str | None, spacing: float, cache_dir: Path):
    """Load the phantom, reusing an .npz of the resampled arrays (reading and resampling a CT takes ~15 s)."""
    from crrg.synth.ct import Phantom, default_ct_paths, load_phantom

    if ct is None and mask is None:
        ct_p, mask_p = default_ct_paths()
    else:
        if not ct or not mask:
            raise InputError("pass both --ct and --mask (a CT in HU and its TotalSegmentator label map)")
        ct_p, mask_p = Path(ct), Path(mask)
        for p in (ct_p, mask_p):
            if not p.is_file():
                raise InputError(f"{p} does not exist")
    key = hashlib.blake2b(digest_size=8)
    for p in (ct_p, mask_p):
        st = p.stat()
        key.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    key.update(f"{spacing}|v1".encode())
    path = cache_dir / f"phantom_{key.hexdigest()}.npz"
    if path.is_file():
        try:
            d = np.load(path)
            return Phantom(hu=d["hu"], labels=d["labels"], spacing=float(d["spacing"]), origin=d["origin"], source=str(ct_p))
        except (OSError, KeyError, ValueError):
            log.warning("ignoring unreadable phantom cache %s", path)
    phantom = load_phantom(ct_p, mask_p, spacing=spacing)
    atomic_save_file(path, lambda tmp: np.savez(tmp, hu=phantom.hu, labels=phantom.labels, spacing=phantom.spacing, origin=phantom.origin))
    return phantom


# --- worker processes ------------------------------------------------------------------------------
_WORKER: dict = {}  # per-process StudyMaker, set by the pool initializer (a process-local cache, not shared state)


def _init_worker(cfg: SynthConfig, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["maker"] = StudyMaker(cfg)


def _warm(key: tuple[str, int]) -> tuple[str, int]:
    _WORKER["maker"].renderer.pose(*key)
    return key


def _work(index: int) -> int:
    _WORKER["maker"].make(index)
    return index


def _views_used(cfg: SynthConfig) -> list[str]:
    views = []
    if "frontal" in cfg.views:
        views += ["PA", "AP"]
    if "lateral" in cfg.views:
        views.append("LATERAL")
    return views


def pending_indices(cfg: SynthConfig) -> list[int]:
    studies = Path(cfg.out) / "studies"
    return [i for i in range(cfg.n) if not (studies / f"{study_id(cfg.seed, i)}.json").is_file()]


def _check_settings(cfg: SynthConfig) -> None:
    out = Path(cfg.out)
    settings = out / "synth_config.json"
    fp = cfg.fingerprint()
    if settings.is_file():
        try:
            old = json.loads(settings.read_text())
        except json.JSONDecodeError:
            old = None
        if old is not None and old != fp:
            diff = sorted(k for k in fp if old.get(k) != fp[k])
            raise InputError(f"{out} was generated with different settings ({', '.join(diff)}); use another --out folder or the same settings to resume")
    atomic_write_json(settings, fp)


def generate(cfg: SynthConfig, progress: Callable[[Iterable[int], int], Iterator[int]] | None = None) -> Path:
    """Make the studies ``0 .. n-1`` that are not yet written, then (re)build the manifest; returns its path."""
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(cfg)
    done_flag = out / "DONE"
    if done_flag.exists():
        done_flag.unlink()
    todo = pending_indices(cfg)
    log.info("%d of %d studies to make in %s", len(todo), cfg.n, out)
    wrap = progress or (lambda it, total: iter(it))
    if todo:
        if cfg.workers == 1 or len(todo) == 1:
            maker = StudyMaker(cfg)
            for _ in wrap((maker.make(i) or i for i in todo), len(todo)):
                pass
        else:
            threads = max(1, (os.cpu_count() or 1) // cfg.workers)
            # the phantom cache is written once, before the workers read it
            load_phantom_cached(cfg.ct, cfg.mask, cfg.spacing, cfg.cache)
            ctx = mp.get_context("spawn")
            with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg, threads)) as pool:
                # project every pose's anatomy once, spread over the workers (cached on disk for all of them)
                keys = [(v, p) for v in _views_used(cfg) for p in range(cfg.n_poses)]
                for _ in pool.imap_unordered(_warm, keys):
                    pass
                for _ in wrap(pool.imap_unordered(_work, todo, chunksize=4), len(todo)):
                    pass
    manifest = build_manifest(out, cfg.n, cfg.seed)
    atomic_write_text(done_flag, f"{cfg.n} studies\n")
    return manifest


def build_manifest(out: Path, n: int, seed: int) -> Path:
    """The manifest from the sidecars of studies 0 .. n-1, in study order."""
    records = []
    for i in range(n):
        path = out / "studies" / f"{study_id(seed, i)}.json"
        if not path.is_file():
            raise InputError(f"study {i} of {out} is missing ({path}); run generate again to finish it")
        records.append(StudyRecord.from_dict(json.loads(path.read_text(encoding="utf-8"))))
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, records)
    return manifest
