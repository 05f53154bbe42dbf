"""The chest-radiograph gate on generated negatives and every real / synthetic radiograph we have.

    python benchmarks/bench_gate.py [--synth DIR] [--fit]

Positives: NIH 64 px train + valid, covid_cxr, VinDr, IU samples, real_cxr_samples (PNG and DICOM)
from ../shared/data, the synthetic films in examples/, and the PNG / DICOM films of a rendered
synthetic set (``--synth``, from ``crrg synth generate``). Negatives: :mod:`crrg.image.gate_examples`
(photos, documents, CT / MR slices, phantoms, noise, blanks, tiny images) plus extreme crops of the
positives. Everything is split in two by a hash of its source (NIH by its own train / valid folders):
``--fit`` fits the logistic weights on the fit half, chooses the threshold there (every fit negative
refused, then as many positives as possible kept) and writes src/crrg/image/gate_params.py; the table
reports both halves, the report half being data the weights and threshold never saw.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, median, percentile, print_table, save_results  # noqa: E402

from crrg.errors import CrrgError  # noqa: E402
from crrg.image import gate, gate_examples  # noqa: E402
from crrg.image.loading import load_image_with_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CRRG_SHARED_DATA", ROOT.parent / "shared" / "data"))
PARAMS = ROOT / "src" / "crrg" / "image" / "gate_params.py"


def half(key: str) -> str:
    return "fit" if zlib.crc32(key.encode()) % 2 == 0 else "report"


def positives(synth: Path | None) -> list[tuple[str, str, Path]]:
    """(dataset, split, path) of every radiograph available."""
    out = []
    for split, folder in (("fit", "train"), ("report", "valid")):
        out += [("nih_64px", split, p) for p in sorted((SHARED / "nih1000_64px" / folder).rglob("*.png"))]
    for dataset, folder, patterns in (("covid_cxr", "covid_cxr/images", ("*.jpg", "*.jpeg", "*.png")),
                                      ("vindr", "vindr_cxr_samples", ("*.png",)),
                                      ("iu_samples", "iu_xray_image_samples", ("*.png",)),
                                      ("real_cxr_samples", "real_cxr_samples", ("*.png", "*.dcm"))):
        for pattern in patterns:
            out += [(dataset, half(p.name), p) for p in sorted((SHARED / folder).glob(pattern))]
    out += [("synthetic_examples", half(name), p) for name, p in gate_examples.repo_radiographs()]
    if synth is not None:
        for p in sorted(synth.rglob("*")):
            if p.suffix in (".png", ".dcm"):
                out.append(("synthetic_" + p.suffix[1:], half(p.name.split("_")[0]), p))
    return out


def load_positives(items):
    loaded, failed = [], []
    for dataset, split, path in items:
        try:
            image, info = load_image_with_info(path)
        except CrrgError as exc:
            failed.append((dataset, str(exc)))
            continue
        loaded.append((dataset, split, path.name, image, info))
    return loaded, failed


def load_negatives(seed: int, crop_sources):
    out = []
    for ex in gate_examples.negatives(seed, crop_sources):
        split = half(ex.source)
        try:
            image, info = load_image_with_info(ex.data, name=ex.name + ex.suffix)
        except CrrgError as exc:
            out.append((ex.group, split, ex.name, None, None, str(exc)))
            continue
        out.append((ex.group, split, ex.name, image, info, ""))
    return out


def _small(image: np.ndarray, side: int = 256) -> np.ndarray:
    step = max(1, min(image.shape) // side)
    return np.ascontiguousarray(image[::step, ::step])


def _augment(rng, image: np.ndarray, negative: bool) -> np.ndarray:
    """A random view of an image as a thumbnail: crops, flips, gamma (negatives also rotate and invert)."""
    h, w = image.shape
    lo = 0.3 if negative else 0.75
    ch, cw = max(8, int(h * rng.uniform(lo, 1))), max(8, int(w * rng.uniform(lo, 1)))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out = image[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if negative:
        out = np.rot90(out, int(rng.integers(0, 4)))
        if rng.random() < 0.3:
            out = 1.0 - out
    out = np.clip(out, 0, 1) ** rng.uniform(0.6, 1.6 if negative else 1.4)
    if not negative and rng.random() < 0.3:  # a film padded into a figure or a square (black or white bands)
        h, w = out.shape
        pad = [(0, 0), (0, 0)]
        pad[int(rng.integers(0, 2))] = (int(rng.integers(0, h // 3 + 1)), int(rng.integers(0, w // 3 + 1)))
        out = np.pad(out, pad, constant_values=float(rng.choice([0.0, 1.0])))
    return gate.thumbnail(np.ascontiguousarray(out, dtype=np.float32))


def _extreme_crops(rng, images: list[np.ndarray]) -> list[np.ndarray]:
    """Patches of at most a fifth of each side of the larger films (smaller ones fall to the size rule)."""
    out = []
    for image in images:
        h, w = image.shape
        if min(h, w) // 5 < gate.GateConfig().min_side:
            continue
        for _ in range(3):
            ch, cw = h // int(rng.integers(5, 9)), w // int(rng.integers(5, 9))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            out.append(np.ascontiguousarray(image[y:y + ch, x:x + cw]))
    return out


def fit(pos, neg, seed: int = 0, epochs: int = 15) -> None:
    """Train GateNet on the fit half (images the hard rules already refuse are left out), choose the
    threshold there, and write gate_params.py."""
    import base64

    import torch

    from crrg.image import gate_params

    cfg = gate.GateConfig()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    kept = [(dataset, _small(image)) for dataset, split, _, image, info in pos
            if split == "fit" and not gate._hard_rules(image, info, cfg)]
    fit_pos = [image for _, image in kept]
    # Each dataset drawn in proportion to the square root of its size: 120 synthetic films are not
    # drowned by 600 NIH thumbnails.
    counts = {d: sum(1 for k, _ in kept if k == d) for d, _ in kept}
    draw = np.array([np.sqrt(counts[d]) / counts[d] for d, _ in kept])
    draw /= draw.sum()
    fit_neg = [_small(image) for _, split, _, image, info, _ in neg
               if split == "fit" and image is not None and not gate._hard_rules(image, info, cfg)]
    neg_names = [f"{group}/{name}" for group, split, name, image, info, _ in neg
                 if split == "fit" and image is not None and not gate._hard_rules(image, info, cfg)]
    crops = _extreme_crops(rng, [image for _, split, _, image, _ in pos if split == "fit"])
    fit_neg += crops
    neg_names += [f"crop/{i}" for i in range(len(crops))]
    print(f"fit: {len(fit_pos)} positives, {len(fit_neg)} negatives past the hard rules")
    net = gate.GateNet.module()
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=epochs * (2 * len(fit_pos) // 64 + 1))
    per_epoch = len(fit_pos)
    for epoch in range(epochs):
        xs = [_augment(rng, fit_pos[i], False) for i in rng.choice(len(fit_pos), len(fit_pos), p=draw)]
        xs += [_augment(rng, fit_neg[i], True) for i in rng.integers(0, len(fit_neg), per_epoch)]
        ys = np.array([1.0] * len(fit_pos) + [0.0] * per_epoch, np.float32)
        x = torch.from_numpy(np.stack([gate._thumb_channels(t) for t in xs]))
        y = torch.from_numpy(ys)
        order = torch.randperm(len(y))
        net.train()
        total = 0.0
        for start in range(0, len(y), 64):
            idx = order[start:start + 64]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss) * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(y):.4f}")
    flat = np.concatenate([t.detach().numpy().ravel() for t in net.parameters()]).astype(np.float16)
    gate_params.WEIGHTS = base64.b64encode(flat.tobytes()).decode()
    pos_scores = np.array([gate.radiograph_score(gate.thumbnail(image)) for image in fit_pos])
    neg_scores = np.array([gate.radiograph_score(gate.thumbnail(image)) for image in fit_neg])
    print("highest-scoring fit negatives:", ", ".join(f"{neg_names[i]} {neg_scores[i]:.3f}" for i in np.argsort(-neg_scores)[:6]))
    # Every generated negative must be refused; the training crops of the fit films themselves (a fifth
    # to an eighth of each side) bound the threshold only up to the 1st percentile of the positives.
    generated = neg_scores[: len(neg_scores) - len(crops)]
    worst, low = float(generated.max()), float(np.quantile(pos_scores, 0.01))
    worst_crop = float(np.quantile(neg_scores[len(generated):], 0.995)) if len(crops) else 0.0
    threshold = max(worst + 1e-4, min(max(worst_crop, worst) + 1e-4, low))
    print(f"worst generated negative {worst:.4f}, crops' 99.5th percentile {worst_crop:.4f}")
    print(f"fit scores: worst negative {worst:.4f}, 1st percentile of positives {low:.4f}; threshold {threshold:.4f}")
    lines = [gate_params.WEIGHTS[k:k + 100] for k in range(0, len(gate_params.WEIGHTS), 100)]
    PARAMS.write_text(
        '"""Weights of the chest-radiograph gate\'s tiny CNN (crrg.image.gate.GateNet: float16, base64) and its threshold.\n\n'
        "Generated by `python benchmarks/bench_gate.py --fit` on the fit half of generated negatives and real /\n"
        'synthetic radiographs (see benchmarks/results/gate.md). Do not edit by hand."""\n\n'
        "WEIGHTS = (\n" + "".join(f'    "{line}"\n' for line in lines) + ")\n"
        f"THRESHOLD = {threshold:.6g}\n"
    )
    import importlib

    importlib.reload(gate_params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synth", type=Path, help="a crrg synth generate output folder (synthetic positives)")
    parser.add_argument("--fit", action="store_true", help="refit the weights and threshold (writes gate_params.py)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"shared data not found at {SHARED}")
    pos, failed = load_positives(positives(args.synth))
    rng = np.random.default_rng(args.seed)
    crop_sources = [(f"crop_{name}", image) for _, _, name, image, _ in
                    [pos[i] for i in rng.choice(len(pos), size=min(40, len(pos)), replace=False)]]
    neg = load_negatives(args.seed, crop_sources)
    if args.fit:
        fit(pos, neg, args.seed)
    rows, payload, times = [], {"positives": {}, "negatives": {}}, []
    by_dataset: dict[tuple[str, str], list[bool]] = {}
    refused_examples: list[str] = []
    for dataset, split, name, image, info in pos:
        t = time.perf_counter()
        result = gate.assess(image, info)
        times.append(time.perf_counter() - t)
        by_dataset.setdefault((dataset, split), []).append(result.accepted)
        if not result.accepted and len(refused_examples) < 15:
            refused_examples.append(f"{dataset}/{name}: {result.reason}")
    for dataset, error in failed:
        by_dataset.setdefault((dataset, "load"), []).append(False)
        refused_examples.append(f"{dataset}: not loaded: {error}")
    for (dataset, split), acc in sorted(by_dataset.items()):
        rows.append(["positive", dataset, split, len(acc), f"{100 * np.mean(acc):.1f} % accepted"])
        payload["positives"][f"{dataset}/{split}"] = {"n": len(acc), "accepted": float(np.mean(acc))}
    by_group: dict[tuple[str, str], list[bool]] = {}
    leaked = []
    for group, split, name, image, info, error in neg:
        refused = True if image is None else not gate.assess(image, info).accepted
        by_group.setdefault((group, split), []).append(refused)
        if not refused:
            leaked.append(f"{split}: {group}/{name}")
    for (group, split), ref in sorted(by_group.items()):
        rows.append(["negative", group, split, len(ref), f"{100 * np.mean(ref):.1f} % refused"])
        payload["negatives"][f"{group}/{split}"] = {"n": len(ref), "refused": float(np.mean(ref))}
    for split in ("fit", "report"):
        p = [a for (d, s), acc in by_dataset.items() if s == split for a in acc]
        n = [r for (g, s), ref in by_group.items() if s == split for r in ref]
        rows.append(["ALL", "positives / negatives", split, f"{len(p)} / {len(n)}",
                     f"{100 * np.mean(p):.2f} % accepted / {100 * np.mean(n):.2f} % refused"])
        payload[f"summary_{split}"] = {"positives": len(p), "accepted": float(np.mean(p)), "negatives": len(n),
                                       "refused": float(np.mean(n))}
    table = print_table("Chest-radiograph gate", ["kind", "set", "split", "n", "result"], rows)
    ms = [t * 1e3 for t in times]
    timing = f"Gate time per decoded image: median {median(ms):.2f} ms, p95 {percentile(ms, 0.95):.2f} ms ({machine()})."
    extra = "\n\nRefused positives (first 15):\n" + "\n".join(f"- {r}" for r in refused_examples) if refused_examples else ""
    extra += "\n\nNegatives let through:\n" + "\n".join(f"- {r}" for r in leaked) if leaked else "\n\nNegatives let through: none."
    print(timing + extra)
    payload.update({"gate_ms_median": median(ms), "gate_ms_p95": percentile(ms, 0.95), "leaked": leaked,
                    "refused_positives": refused_examples})
    save_results("gate", payload, table + "\n\n" + timing + extra + "\n\nCommand: `python benchmarks/bench_gate.py"
                 + (" --synth DIR" if args.synth else "") + "`")
    print(f"written {RESULTS / 'gate.md'}")


if __name__ == "__main__":
    main()
