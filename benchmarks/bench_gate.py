"""The chest-radiograph gate on generated negatives and every real / synthetic radiograph we have,
the previous gate beside it in the same run.

    python benchmarks/bench_gate.py [--synth DIR] [--baseline /work/baseline/src] [--fit]

Positives: NIH 64 px train + valid, covid_cxr, VinDr, IU samples, real_cxr_samples (PNG and DICOM)
from ../shared/data, the synthetic films in examples/, and the PNG / DICOM films of a rendered
synthetic set (``--synth``, from ``crrg synth generate``). Negatives: :mod:`crrg.image.gate_examples`
and :mod:`crrg.image.gate_synthetic` (photos, gray photos, documents, charts, CT / MR slices and
reformats, phantoms, radiographs of other body parts, noise and smooth fields, blanks, tiny images)
plus extreme crops of the positives. Everything is split in two by a hash of its source (NIH by its
own train / valid folders). ``--fit`` trains GateNet on the fit half (plus new draws of the hardest
generated families, fit only; hard-example mining each epoch), chooses the threshold on the
out-of-fold scores of a cross-validation on the fit half (or, where that rule would refuse more than
1 % of the fit films, at the 0.5th percentile of the fit films' scores) and writes
src/crrg/image/gate_weights.safetensors; the table reports both halves, the report half being data
the weights and threshold never saw. ``--baseline SRC`` loads the gate of another checkout (e.g. the
previous release's ``gate.py`` + ``gate_params.py``) and scores the same images with it.
"""

from __future__ import annotations

import argparse
import importlib.util
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
FIT_LOG: dict = {}  # how --fit chose the threshold, saved with the results
SOURCES = {"nih_64px": "NIH", "covid_cxr": "COVID", "vindr": "VinDr", "iu_samples": "samples",
           "real_cxr_samples": "samples", "synthetic_examples": "synthetic", "synthetic_png": "synthetic",
           "synthetic_dcm": "synthetic"}


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
            out.append((ex.group, split, ex.name, ex.source, None, None, str(exc)))
            continue
        out.append((ex.group, split, ex.name, ex.source, image, info, ""))
    return out


def _small(image: np.ndarray, side: int = 256) -> np.ndarray:
    step = max(1, min(image.shape) // side)
    return np.ascontiguousarray(image[::step, ::step])


def _augment(rng, image: np.ndarray, negative: bool) -> np.ndarray:
    """A random view of an image as a thumbnail. Both: crops, flips, gamma, blur or grain. Negatives
    also rotate and invert; positives are also padded into figures (flat or noisy bands), carry burned-in
    labels (bright or dark boxes: letters, markers) and tilt a little, as real films and paper figures do."""
    from scipy.ndimage import gaussian_filter, rotate

    h, w = image.shape
    lo = 0.3 if negative else 0.7
    ch, cw = max(8, int(h * rng.uniform(lo, 1))), max(8, int(w * rng.uniform(lo, 1)))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out = np.array(image[y:y + ch, x:x + cw], dtype=np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if negative:
        if rng.random() < 0.5:  # half upright: an upright abdomen film is the hard case
            out = np.rot90(out, int(rng.integers(1, 4)))
        if rng.random() < 0.3:
            out = 1.0 - out
    else:
        if rng.random() < 0.2:
            out = rotate(out, rng.uniform(-10, 10), reshape=False, order=1, mode="nearest")
        for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.4 else 0):
            bh, bw = int(rng.integers(2, max(3, out.shape[0] // 8))), int(rng.integers(2, max(3, out.shape[1] // 5)))
            by, bx = int(rng.integers(0, out.shape[0] - bh + 1)), int(rng.integers(0, out.shape[1] - bw + 1))
            out[by:by + bh, bx:bx + bw] = rng.choice([0.0, 1.0, rng.uniform()])
    out = np.clip(out, 0, 1) ** rng.uniform(0.6, 1.6 if negative else 1.4)
    if rng.random() < 0.2:
        out = gaussian_filter(out, rng.uniform(0.5, 2.0))
    if rng.random() < 0.2:
        out = np.clip(out + rng.normal(0, rng.uniform(0.01, 0.05), out.shape), 0, 1)
    if not negative and rng.random() < 0.3:  # a film padded into a figure or a square (black or white bands)
        h, w = out.shape
        pad = [(0, 0), (0, 0)]
        pad[int(rng.integers(0, 2))] = (int(rng.integers(0, h // 3 + 1)), int(rng.integers(0, w // 3 + 1)))
        out = np.pad(out, pad, constant_values=float(rng.choice([0.0, 1.0])))
        if rng.random() < 0.5:  # bands with scanner noise or a caption speck: not flat, not trimmed
            band = np.ones_like(out, bool)
            band[pad[0][0]:out.shape[0] - pad[0][1], pad[1][0]:out.shape[1] - pad[1][1]] = False
            out = np.where(band, np.clip(out + rng.normal(0, 0.03, out.shape), 0, 1), out)
    return gate.thumbnail(np.ascontiguousarray(out, dtype=np.float32))


def _extreme_crops(rng, images: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    """Patches of at most a fifth of each side of the larger films (smaller ones fall to the size rule)."""
    out = []
    for key, image in images:
        h, w = image.shape
        if min(h, w) // 5 < gate.GateConfig().min_side:
            continue
        for _ in range(3):
            ch, cw = h // int(rng.integers(5, 9)), w // int(rng.integers(5, 9))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            out.append((key, np.ascontiguousarray(image[y:y + ch, x:x + cw])))
    return out


def _sqrt_balanced(keys: list[str]) -> np.ndarray:
    """Draw probabilities: each key (dataset or negative family) in proportion to the square root of its
    size, so 120 synthetic films are not drowned by 600 NIH thumbnails nor 30 skulls by 300 photo crops."""
    counts = {k: keys.count(k) for k in set(keys)}
    p = np.array([np.sqrt(counts[k]) / counts[k] for k in keys])
    return p / p.sum()


def _hardness_draw(base: np.ndarray, hardness: np.ndarray) -> np.ndarray:
    """Draw probabilities that favour the examples the net still gets wrong: ``base`` times (0.2 +
    hardness), hardness being the score of a negative or 1 - score of a positive. Without it a family
    of 24 abdomen films among thousands of easy negatives was drawn ~20 times an epoch and never learnt."""
    p = base * (0.2 + hardness)
    return p / p.sum()


def train(pos, neg, seed: int, epochs: int):
    """GateNet trained on (key, image) positives and negatives; returns the torch module. Each epoch
    draws as many positives as there are and as many negatives, family-balanced (square root) and, from
    the second epoch on, weighted towards the examples the net scored wrongly (hard-example mining)."""
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    p_base, n_base = _sqrt_balanced([k for k, _ in pos]), _sqrt_balanced([k for k, _ in neg])
    p_draw, n_draw = p_base, n_base
    p_thumbs = [gate.thumbnail(im) for _, im in pos]
    n_thumbs = [gate.thumbnail(im) for _, im in neg]
    net = gate.GateNet.module()
    per_epoch, batch = len(pos), 64
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3,
                                                   total_steps=epochs * ((2 * per_epoch + batch - 1) // batch))
    for epoch in range(epochs):
        xs = [_augment(rng, pos[i][1], False) for i in rng.choice(len(pos), per_epoch, p=p_draw)]
        xs += [_augment(rng, neg[i][1], True) for i in rng.choice(len(neg), per_epoch, p=n_draw)]
        x = torch.from_numpy(np.stack([gate._thumb_channels(t) for t in xs]))
        y = torch.from_numpy(np.array([1.0] * per_epoch + [0.0] * per_epoch, np.float32))
        order, total = torch.randperm(len(y)), 0.0
        net.train()
        for start in range(0, len(y), batch):
            idx = order[start:start + batch]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        net.eval()
        p_draw = _hardness_draw(p_base, 1.0 - scores(net, p_thumbs))
        n_draw = _hardness_draw(n_base, scores(net, n_thumbs))
        if epoch % 5 == 4 or epoch == epochs - 1:
            print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(y):.4f} ({time.strftime('%H:%M:%S')})", flush=True)
    return net.eval()


def scores(net, thumbs: list[np.ndarray]) -> np.ndarray:
    """The gate's score (mean over the thumbnail and its mirror) with a torch module."""
    import torch

    out = []
    for start in range(0, len(thumbs), 256):
        chunk = thumbs[start:start + 256]
        x = torch.from_numpy(np.stack([gate._thumb_channels(t) for t in chunk]))
        xm = torch.from_numpy(np.stack([gate._thumb_channels(t[:, ::-1]) for t in chunk]))
        with torch.no_grad():
            out.append(((torch.sigmoid(net(x)) + torch.sigmoid(net(xm))) / 2).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _family(group: str, name: str) -> str:
    """The draw key of a negative: its group, and for other body parts the part (abdomen, skull, ...)."""
    return f"{group}/{name.split('_')[1]}" if group == "xray_other" else group


def extra_negatives(seed: int, n: int = 192):
    """More draws of the generated families a tiny CNN finds hardest (radiographs of other body parts,
    smooth fields), for fitting only: split "fit", sources prefixed ``extra_`` (their own CV folds). The
    report half is untouched: these are new draws, not the report half's examples."""
    from crrg.image import gate_synthetic

    rng = np.random.default_rng(seed + 1000)
    out = []
    for ex in list(gate_synthetic.other_radiographs(rng, n)) + list(gate_synthetic.fields(rng, n // 4)):
        image, info = load_image_with_info(ex.data, name=ex.name + ex.suffix)
        out.append((ex.group, "fit", ex.name, "extra_" + ex.source, image, info, ""))
    return out


def fit(pos, neg, seed: int = 0, epochs: int = 30, folds: int = 4, only_fold: int | None = None) -> None:
    """Cross-validate on the fit half (folds by patient / study / source), choose the threshold on the
    out-of-fold scores, train on the whole fit half and write the weights file. ``only_fold`` (a quick
    look while choosing settings, fit half only): train one fold, print its held-out fold, write nothing."""
    import torch

    torch.set_num_threads(1)
    cfg = gate.GateConfig()
    rng = np.random.default_rng(seed)
    P = [(dataset, name.split("_")[0], image) for dataset, split, name, image, info in pos
         if split == "fit" and not gate._hard_rules(image, info, cfg)]
    N = [(_family(group, name), source, image) for group, split, name, source, image, info, _ in neg + extra_negatives(seed)
         if split == "fit" and image is not None and not gate._hard_rules(image, info, cfg)]
    N += [("train_crop", key, image) for key, image in
          _extreme_crops(rng, [(name.split("_")[0], image) for _, split, name, image, _ in pos if split == "fit"])]
    print(f"fit: {len(P)} positives, {len(N)} negatives past the hard rules", flush=True)
    fold_of = lambda key: zlib.crc32(("cv" + key).encode()) % folds  # noqa: E731
    p_thumbs = [gate.thumbnail(image) for _, _, image in P]
    n_thumbs = [gate.thumbnail(image) for _, _, image in N]
    p_oof, n_oof = np.zeros(len(P)), np.zeros(len(N))
    for k in range(folds) if only_fold is None else (only_fold,):
        print(f"fold {k + 1}/{folds}", flush=True)
        net = train([(d, _small(im)) for d, key, im in P if fold_of(key) != k],
                    [(g, _small(im)) for g, key, im in N if fold_of(key) != k], seed + 1 + k, epochs)
        pi = [i for i, (_, key, _) in enumerate(P) if fold_of(key) == k]
        ni = [i for i, (_, key, _) in enumerate(N) if fold_of(key) == k]
        p_oof[pi] = scores(net, [p_thumbs[i] for i in pi])
        n_oof[ni] = scores(net, [n_thumbs[i] for i in ni])
    if only_fold is not None:
        _print_fold(P, N, p_oof, n_oof, [fold_of(key) == only_fold for _, key, _ in P],
                    [fold_of(key) == only_fold for _, key, _ in N])
        return
    threshold = choose_threshold(P, N, p_oof, n_oof)
    print("final model on the whole fit half", flush=True)
    net = train([(d, _small(im)) for d, _, im in P], [(g, _small(im)) for g, _, im in N], seed, epochs)
    if np.mean(p_oof >= threshold) < 0.99:  # the out-of-fold rule would refuse real films: positives first
        threshold = float(np.quantile(scores(net, p_thumbs), 0.005))
        print(f"out-of-fold threshold keeps < 99 % of fit films; threshold {threshold:.4f} keeps 99.5 % of them "
              "(final model, fit half)")
        FIT_LOG["shipped_threshold"] = threshold
    gate.save_gate_weights([t.detach().numpy() for t in net.parameters()], threshold,
                           note=fit_note(seed, len(P), len(N), folds))
    print(f"written {gate.WEIGHTS_FILE}")


def fit_note(seed: int, positives: int, negatives: int, folds: int) -> str:
    """How the shipped threshold was chosen (kept in the weights file's metadata and printed by the report)."""
    note = (f"benchmarks/bench_gate.py --fit --seed {seed}: {positives} positives, {negatives} negatives (fit half); "
            f"{folds}-fold out-of-fold threshold: worst generated negative {FIT_LOG['oof_worst_generated_negative']:.4f}, "
            f"lowest 1st percentile of a source with >= 100 films {FIT_LOG['oof_lowest_source_1st_percentile']:.4f}, "
            f"threshold {FIT_LOG['threshold']:.4f}, out-of-fold positives accepted {FIT_LOG['oof_positives_accepted']:.4f}")
    if "shipped_threshold" in FIT_LOG:
        note += f"; shipped {FIT_LOG['shipped_threshold']:.4f} (0.5th percentile of the fit films' scores)"
    return note


def _print_fold(P, N, p_oof, n_oof, p_in, n_in) -> None:
    """One held-out fold of the fit half: acceptance per dataset and refusal per family at a few thresholds."""
    p_in, n_in = np.array(p_in), np.array(n_in)
    for t in (0.3, 0.5, 0.7, 0.9):
        cells = []
        for d in sorted({d for d, _, _ in P}):
            m = p_in & np.array([x == d for x, _, _ in P])
            if m.any():
                cells.append(f"{d} {np.mean(p_oof[m] >= t):.3f}/{m.sum()}")
        for g in sorted({g for g, _, _ in N}):
            m = n_in & np.array([x == g for x, _, _ in N])
            if m.any() and np.mean(n_oof[m] < t) < 1:
                cells.append(f"{g} {np.mean(n_oof[m] < t):.3f}/{m.sum()}")
        print(f"t={t}: " + ", ".join(cells), flush=True)
    worst = np.argsort(-np.where(n_in, n_oof, -1))[:8]
    print("worst negatives:", ", ".join(f"{N[i][0]}/{N[i][1]} {n_oof[i]:.3f}" for i in worst))
    low = np.argsort(np.where(p_in, p_oof, 2))[:8]
    print("lowest positives:", ", ".join(f"{P[i][0]}/{P[i][1]} {p_oof[i]:.3f}" for i in low))


def choose_threshold(P, N, p_oof: np.ndarray, n_oof: np.ndarray) -> float:
    """Out-of-fold scores -> threshold, in logit space: halfway between the highest generated negative and
    the lowest 1st percentile of any source with >= 100 fit films (every source keeps >= 99 %); when they
    cross, every generated negative is refused and the positives pay."""
    logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))  # noqa: E731
    generated = np.array([g != "train_crop" for g, _, _ in N])
    worst = float(n_oof[generated].max())
    order = np.argsort(-n_oof)
    print("highest out-of-fold negatives:", ", ".join(f"{N[i][0]}/{N[i][1]} {n_oof[i]:.3f}" for i in order[:8]))
    print(f"train crops: 99.5th percentile {np.quantile(n_oof[~generated], 0.995):.3f}")
    lows = {}
    for dataset in sorted({d for d, _, _ in P}):
        s = p_oof[[i for i, (d, _, _) in enumerate(P) if d == dataset]]
        lows[dataset] = float(np.quantile(s, 0.01))
        print(f"  {dataset}: n {len(s)}, 1st percentile {lows[dataset]:.3f}, min {s.min():.3f}")
    low = min(v for d, v in lows.items() if sum(1 for x, _, _ in P if x == d) >= 100)
    if worst >= low:
        threshold = worst + 1e-3
    else:
        threshold = float(1 / (1 + np.exp(-(logit(worst) + logit(low)) / 2)))
    print(f"out-of-fold: worst generated negative {worst:.4f}, lowest source 1st percentile {low:.4f}; "
          f"threshold {threshold:.4f}; positives accepted {np.mean(p_oof >= threshold):.4f}")
    FIT_LOG.update({"oof_worst_generated_negative": worst, "oof_source_1st_percentiles": lows,
                    "oof_lowest_source_1st_percentile": low,
                    "threshold": threshold, "oof_positives_accepted": float(np.mean(p_oof >= threshold))})
    return threshold


def load_baseline(src: Path):
    """The gate module of another checkout (``src`` = its src/ folder), loaded beside this one; its
    ``gate_params.py`` (weights as Python code, before 0.9) is registered under its old name."""
    import crrg.image

    folder = src / "crrg" / "image"
    params = folder / "gate_params.py"
    if params.is_file():
        spec = importlib.util.spec_from_file_location("crrg.image.gate_params", params)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["crrg.image.gate_params"] = module
        crrg.image.gate_params = module
    spec = importlib.util.spec_from_file_location("baseline_gate", folder / "gate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_gate"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class AtThreshold:
    """The current gate with another CNN threshold (to show the trade-off beside the shipped one)."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def assess(self, image, info):
        result = gate.assess(image, info)
        accepted = not np.isnan(result.score) and result.score >= self.threshold
        return gate.GateResult(accepted, "" if accepted else (result.reason or f"score {result.score:.2f}"), result.score)


def _pct(values) -> str:
    return f"{100 * np.mean(values):.2f}" if len(values) else "-"


def evaluate(gates: dict, pos, failed, neg):
    """Each gate's decision on every image; per-image gate times, the gates interleaved image by image."""
    decisions = {name: {"pos": [], "neg": []} for name in gates}
    times = {name: [] for name in gates}
    for dataset, split, name, image, info in pos:
        for gname, module in gates.items():
            t = time.perf_counter()
            result = module.assess(image, info)
            times[gname].append(1e3 * (time.perf_counter() - t))
            decisions[gname]["pos"].append((dataset, split, name, result.accepted, result.reason))
    for dataset, error in failed:
        for gname in gates:
            decisions[gname]["pos"].append((dataset, "load", "?", False, error))
    for group, split, name, _, image, info, _ in neg:
        for gname, module in gates.items():
            refused = True if image is None else not module.assess(image, info).accepted
            decisions[gname]["neg"].append((group, split, name, refused))
    return decisions, times


def report(decisions, times, args) -> None:
    names = list(decisions)
    rows, payload = [], {"gates": names, "positives": {}, "negatives": {}, "sources": {}}
    keys = sorted({(d, s) for d, s, *_ in decisions[names[-1]]["pos"]})
    for dataset, split in keys:
        acc = {g: [a for d, s, _, a, _ in decisions[g]["pos"] if (d, s) == (dataset, split)] for g in names}
        rows.append(["positive", dataset, split, len(acc[names[-1]])] + [_pct(acc[g]) + " % acc" for g in names])
        payload["positives"][f"{dataset}/{split}"] = {"n": len(acc[names[-1]]), **{g: float(np.mean(acc[g])) for g in names}}
    for source in dict.fromkeys(SOURCES.values()):
        for split in ("report", "all"):
            acc = {g: [a for d, s, _, a, _ in decisions[g]["pos"] if SOURCES[d] == source and split in (s, "all")] for g in names}
            rows.append(["source", source, split, len(acc[names[-1]])] + [_pct(acc[g]) + " % acc" for g in names])
            payload["sources"][f"{source}/{split}"] = {"n": len(acc[names[-1]]), **{g: float(np.mean(acc[g])) for g in names}}
    for group, split in sorted({(g, s) for g, s, *_ in decisions[names[-1]]["neg"]}):
        ref = {g: [r for gr, s, _, r in decisions[g]["neg"] if (gr, s) == (group, split)] for g in names}
        rows.append(["negative", group, split, len(ref[names[-1]])] + [_pct(ref[g]) + " % ref" for g in names])
        payload["negatives"][f"{group}/{split}"] = {"n": len(ref[names[-1]]), **{g: float(np.mean(ref[g])) for g in names}}
    for split in ("fit", "report"):
        p = {g: [a for _, s, _, a, _ in decisions[g]["pos"] if s == split] for g in names}
        n = {g: [r for _, s, _, r in decisions[g]["neg"] if s == split] for g in names}
        rows.append(["ALL", "positives / negatives", split, f"{len(p[names[-1]])} / {len(n[names[-1]])}"]
                    + [f"{_pct(p[g])} % acc / {_pct(n[g])} % ref" for g in names])
        payload[f"summary_{split}"] = {"positives": len(p[names[-1]]), "negatives": len(n[names[-1]]),
                                       **{g: {"accepted": float(np.mean(p[g])), "refused": float(np.mean(n[g]))} for g in names}}
    table = print_table("Chest-radiograph gate (acc = accepted, ref = refused)",
                        ["kind", "set", "split", "n"] + names, rows)
    timing = "Gate time per decoded positive image (same run, interleaved): " + "; ".join(
        f"{g}: median {median(times[g]):.2f} ms, p95 {percentile(times[g], 0.95):.2f} ms" for g in names) + f" ({machine()})."
    if FIT_LOG:
        payload["fit"] = FIT_LOG
    from safetensors import safe_open

    with safe_open(str(gate.WEIGHTS_FILE), framework="numpy") as f:
        metadata = f.metadata() or {}
    timing += (f"\n\nShipped threshold {float(metadata['threshold']):.4f}, chosen on the fit half only: "
               f"{metadata.get('note', '')}. Columns after@T show the same weights at another threshold "
               "(the trade-off; not used to choose).")
    payload["timing_ms"] = {g: {"median": median(times[g]), "p95": percentile(times[g], 0.95)} for g in names}
    extra = ""
    for g in names:
        refused = [f"{d}/{n}: {r}" for d, s, n, a, r in decisions[g]["pos"] if not a]
        leaked = [f"{s}: {gr}/{n}" for gr, s, n, r in decisions[g]["neg"] if not r]
        payload[g] = {"refused_positives": refused, "leaked": leaked}
        extra += f"\n\n{g}: refused positives ({len(refused)}, first 15):\n" + "\n".join(f"- {r}" for r in refused[:15])
        extra += f"\n\n{g}: negatives let through ({len(leaked)}):" + ("\n" + "\n".join(f"- {r}" for r in leaked) if leaked else " none.")
    print(timing + extra)
    command = "python benchmarks/bench_gate.py" + (" --synth DIR" if args.synth else "") + (
        f" --baseline {args.baseline}" if args.baseline else "")
    save_results("gate", payload, table + "\n\n" + timing + extra + f"\n\nCommand: `{command}`")
    print(f"written {RESULTS / 'gate.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synth", type=Path, help="a crrg synth generate output folder (synthetic positives)")
    parser.add_argument("--baseline", type=Path, help="src/ of a previous checkout whose gate to score beside this one")
    parser.add_argument("--fit", action="store_true", help="refit the weights and threshold (writes gate_weights.safetensors)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--only-fold", type=int, help="with --fit: train and print one CV fold of the fit half only")
    parser.add_argument("--also-threshold", type=float, action="append", default=[],
                        help="also report the current weights at this CNN threshold (a column 'after@T')")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"shared data not found at {SHARED}")
    pos, failed = load_positives(positives(args.synth))
    rng = np.random.default_rng(args.seed)
    crop_sources = [(f"crop_{name}", image) for _, _, name, image, _ in
                    [pos[i] for i in rng.choice(len(pos), size=min(40, len(pos)), replace=False)]]
    neg = load_negatives(args.seed, crop_sources)
    print(f"{len(pos)} positives, {len(neg)} negatives", flush=True)
    if args.fit:
        fit(pos, neg, args.seed, args.epochs, only_fold=args.only_fold)
        if args.only_fold is not None:
            return
    gates = {"before": load_baseline(args.baseline)} if args.baseline else {}
    gates["after"] = gate
    for t in args.also_threshold:
        gates[f"after@{t:g}"] = AtThreshold(t)
    report(*evaluate(gates, pos, failed, neg), args)


if __name__ == "__main__":
    main()
