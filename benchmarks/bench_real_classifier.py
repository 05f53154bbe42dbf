"""Finding classifier on real radiographs: pretrained towers, synthetic-to-real levers, real labels.

    OMP_NUM_THREADS=1 python benchmarks/bench_real_classifier.py \\
        --recipe configs/real/lite0-synthetic.yaml --real-recipe configs/real/lite0-real-labels.yaml \\
        --export /work/runs/real_classifier

Every row is one recipe variant (frozen tower, cached features, logistic heads; see
``crrg.clip.probe_recipe``) scored on NIH ``valid/`` (the test split: 200 real 64 px films, official
labels mapped to CheXpert names as stated in ``crrg.clip.real_labels``) and on the synthetic test
split. ``select`` is the mean AUC on NIH ``train/`` used to choose C (held-out when NIH labels do not
train the heads, 5-fold by patient when they do): the only real number any choice was made on.
The bundled ``crrg-default`` attached classifier is scored on the same images in the same run.

``--export`` saves the real-label recipe's classifier (and the synthetic-only one beside it, with a
``-synthetic-only`` suffix) with ``save_pretrained`` in float16, then reloads it and scores the
reloaded model through ``probabilities(images)``, so the table's numbers are the saved model's.
``--fused-export`` does the same for the fused real-label classifier (NIH-only heads and synthetic
heads mixed per label, ``crrg.clip.probe_recipe.train_fused``; configs/real/lite0-fused.yaml).
``--finetune DIR`` fine-tunes the whole tower (``crrg.clip.probe_finetune``; about an hour on one
loaded CPU), saves it and scores it; ``--score NAME=FOLDER`` scores any saved classifier folder.

NIH valid has few positives for most observations (the first table row counts them: Edema 1,
Pneumonia 4): those AUCs are one or a few films' ranks. ``n/a 95% CI`` is the bootstrap interval of
the normal-vs-abnormal AUC, the one column with 100 films a side.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from crrg.clip.probe_recipe import FeatureCache, ProbeRecipe, load_domains, mean_auc, train_recipe  # noqa: E402
from crrg.clip.real_labels import read_nih14  # noqa: E402
from crrg.image.realism import LEVERS, RealismConfig  # noqa: E402

log = logging.getLogger("bench_real_classifier")
MAPPED = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "Lung Lesion", "Lung Opacity",
          "Pneumonia", "Pneumothorax")
RESULTS = REPO / "benchmarks" / "results" / "real_classifier.md"


def auc(y, s) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y) > 0.5
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def bootstrap_ci(y, s, n: int = 1000, seed: int = 0) -> str:
    """95 % percentile bootstrap interval of the AUC over films: how far 200 films let a number move."""
    rng = np.random.default_rng(seed)
    y, s = np.asarray(y) > 0.5, np.asarray(s)
    values = []
    for _ in range(n):
        k = rng.integers(0, len(y), len(y))
        if 0 < y[k].sum() < len(k):
            values.append(auc(y[k], s[k]))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return f"{lo:.2f}–{hi:.2f}"


def nih_scores(labels, scores, truth: dict[str, np.ndarray]) -> dict[str, float]:
    """Per mapped observation AUC plus normal vs abnormal (``1 - P(No Finding)``, else the max finding score)."""
    out = {}
    if "No Finding" in labels:
        abnormal = 1.0 - scores[:, labels.index("No Finding")]
    else:
        abnormal = scores.max(1)
    out["normal vs abnormal"] = auc(1.0 - truth["No Finding"], abnormal)
    out["n/a 95% CI"] = bootstrap_ci(1.0 - truth["No Finding"], abnormal)
    for name in MAPPED:
        out[name] = auc(truth[name], scores[:, labels.index(name)]) if name in labels else float("nan")
    out["mean mapped"] = float(np.nanmean([out[n] for n in MAPPED]))
    return out


def run_variant(name: str, recipe: ProbeRecipe, cache: FeatureCache, nih_valid, truth, rows: list) -> tuple:
    t0 = time.perf_counter()
    domains = load_domains(recipe, cache)
    result = train_recipe(recipe, domains)
    x_valid = cache.features([i.path for i in nih_valid])
    valid_scores = result.heads.scores(result.real_standardiser(x_valid))
    test = domains["synth_test"]
    synth_auc = mean_auc(test.targets, test.mask, result.heads.scores(result.synth_standardiser(test.features)))
    row = {"variant": name, "select": result.selection[result.c, result.real_weight], "C": result.c, "real weight": result.real_weight, **nih_scores(recipe.labels, valid_scores, truth),
           "synthetic test": synth_auc, "seconds": time.perf_counter() - t0}
    rows.append(row)
    log.info("%s: %s", name, {k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in row.items()})
    return result, domains


def bundled_row(nih_valid, truth, synth_test_items, labels: list[str], rows: list,
                folder: Path | None = None, name: str = "bundled crrg-default classifier (ResNet-18, synthetic, before)") -> None:
    """Score a saved classifier folder (default: the bundled synthetic one) on the same films."""
    from crrg.clip.data import load_image
    from crrg.models.registry import load_pretrained

    folder = folder or REPO / "src" / "crrg" / "models" / "pretrained" / "crrg-default" / "classifier"
    model = load_pretrained(folder)
    scores = model.probabilities([load_image(i.path) for i in nih_valid])
    synth_scores = model.probabilities([load_image(i.path) for i in synth_test_items])
    cols = [labels.index(n) for n in model.labels]
    targets = np.array([[i.target[c] for c in cols] for i in synth_test_items])
    mask = np.array([[i.mask[c] for c in cols] for i in synth_test_items])
    rows.append({"variant": name, "select": float("nan"),
                 "C": float("nan"), **nih_scores(list(model.labels), scores, truth), "synthetic test": mean_auc(targets, mask, synth_scores),
                 "seconds": float("nan")})


def export(recipe: ProbeRecipe, result, cache: FeatureCache, out: Path, nih_valid, truth, synth_test_items) -> dict:
    import torch

    from crrg.clip.data import load_image
    from crrg.clip.probe import build_probe_classifier
    from crrg.models.registry import load_pretrained, save_pretrained

    model = build_probe_classifier(recipe.tower, cache.tower.state_dict(), recipe.labels, result.heads,
                                   result.real_standardiser, result.thresholds,
                                   {"description": _describe(recipe)})
    save_pretrained(model, out, dtype=torch.float16)
    reloaded = load_pretrained(out)
    images = [load_image(i.path) for i in nih_valid]
    scores = reloaded.probabilities(images)
    size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    torch.set_num_threads(1)
    times = []
    for image in images[:60]:
        t0 = time.perf_counter()
        reloaded.probabilities([image])
        times.append(time.perf_counter() - t0)
    synth_scores = reloaded.probabilities([load_image(i.path) for i in synth_test_items])
    targets = np.array([i.target for i in synth_test_items])
    mask = np.array([i.mask for i in synth_test_items])
    per_label_synth = {}
    for j, name in enumerate(recipe.labels):
        rows_ = mask[:, j] > 0
        per_label_synth[name] = auc(targets[rows_, j], synth_scores[rows_, j])
    return {"folder": str(out), "nih": nih_scores(list(reloaded.labels), scores, truth), "size_mb": size_mb,
            "latency_p50_ms": 1000 * statistics.median(times), "latency_p95_ms": 1000 * float(np.percentile(times, 95)),
            "synthetic test": mean_auc(targets, mask, synth_scores), "synthetic per label": per_label_synth,
            "C": result.c, "real weight": result.real_weight, "thresholds": result.thresholds}


def finetune_export(recipe: ProbeRecipe, out: Path, epochs: int, real_weight: float = 3.0) -> None:
    """Fine-tune the recipe's ImageNet tower end to end and save it (float16) as a ``classifier``.

    Training films: the synthetic train split with the recipe's realism levers, brought down to 64 px
    and back (the NIH films' resolution), plus NIH train folds 1-4 (5-fold by patient) with light
    positioning/LUT jitter at ``real_weight``. The epoch, and whether to keep BatchNorm statistics
    re-estimated on the unlabelled NIH train films (AdaBN), are chosen on NIH train fold 0. NIH
    ``valid/`` is not read.
    """
    import torch

    from crrg.clip.data import load_image
    from crrg.clip.probe import group_folds
    from crrg.clip.probe_finetune import FinetuneConfig, TrainSet, finetune
    from crrg.clip.probe_recipe import _nih_groups, synthetic_items
    from crrg.image.realism import RealismAugment
    from crrg.models.registry import build_model, save_pretrained

    nih = read_nih14(recipe.nih, recipe.labels, split="train")
    syn = synthetic_items(recipe, "train")
    folds = group_folds(_nih_groups(Path(recipe.nih), nih), recipe.folds, recipe.seed)
    nih_images = [load_image(i.path) for i in nih]
    arrays = lambda items: (np.array([i.target for i in items], np.float32), np.array([i.mask for i in items], np.float32))  # noqa: E731
    (y_nih, m_nih), (y_syn, m_syn) = arrays(nih), arrays(syn)
    train, held = np.where(folds != 0)[0], np.where(folds == 0)[0]
    sets = [TrainSet([load_image(i.path) for i in syn], y_syn, m_syn, RealismAugment(RealismConfig.from_dict(recipe.realism or {})), 1.0, 64),
            TrainSet([nih_images[k] for k in train], y_nih[train], m_nih[train],
                     RealismAugment(RealismConfig.only("rotation", "contrast", "lut", degrees=5.0)), real_weight, 0)]
    held_images = [nih_images[k] for k in held]
    model = build_model({"family": "classifier", "image_encoder": recipe.tower, "labels": recipe.labels, "dropout": 0.0,
                         "mode": "finetune"})
    result = finetune(model, sets, FinetuneConfig(epochs=epochs), lambda m: mean_auc(y_nih[held], m_nih[held], m.probabilities(held_images)),
                      unlabelled_real=nih_images)
    saved = build_model({"family": "classifier", "image_encoder": {**recipe.tower, "weights": None}, "labels": recipe.labels,
                         "dropout": 0.0, "mode": "finetune",
                         "description": f"fine-tuned tower (benchmarks/bench_real_classifier.py --finetune): epoch {result.epoch}, AdaBN {result.adabn}"})
    saved.load_state_dict(result.model.state_dict())
    save_pretrained(saved, out, dtype=torch.float16)
    log.info("fine-tuned classifier saved to %s (epoch %d, AdaBN %s, %.0f s)", out, result.epoch, result.adabn, result.seconds)


def _describe(recipe: ProbeRecipe) -> str:
    """One line for the saved config: how this classifier was made (the recipe without local paths)."""
    keep = {k: v for k, v in vars(recipe).items() if k not in ("cache_dir", "synthetic", "nih", "covid")}
    return "frozen-tower probe (benchmarks/bench_real_classifier.py, crrg.clip.probe_recipe): " + json.dumps(keep, default=str)


def positives_row(truth: dict[str, np.ndarray]) -> dict:
    """How many NIH valid films are positive per column: an AUC on 1 or 4 positives is one film's rank, not a measure."""
    row = {"variant": "*NIH valid positives (of 200)*", "normal vs abnormal": f"{int((1 - truth['No Finding']).sum())} abnormal"}
    row.update({n: str(int(truth[n].sum())) for n in MAPPED})
    return row


def fmt(v) -> str:
    return "–" if isinstance(v, float) and np.isnan(v) else (f"{v:.3f}" if isinstance(v, float) else str(v))


def table(rows: list[dict]) -> str:
    cols = ["variant", "select", "normal vs abnormal", "n/a 95% CI", "mean mapped", "Cardiomegaly", "Pleural Effusion", "Atelectasis",
            "Consolidation", "Edema", "Lung Lesion", "Lung Opacity", "Pneumonia", "Pneumothorax", "synthetic test"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, float("nan"))) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(REPO / "configs" / "real" / "lite0-synthetic.yaml"))
    parser.add_argument("--real-recipe", default=str(REPO / "configs" / "real" / "lite0-real-labels.yaml"))
    parser.add_argument("--export", type=Path, default=None, help="save the classifiers here (outside the repo)")
    parser.add_argument("--levers", default=",".join(LEVERS), help="levers to ablate one by one ('' = none)")
    parser.add_argument("--cache-dir", default=None, help="keep tower features here between runs")
    parser.add_argument("--synthetic", default=None, help="synthetic manifest (overrides the recipes')")
    parser.add_argument("--fused-export", type=Path, default=None,
                        help="save the fused real-label classifier (NIH heads + synthetic heads, CV-chosen) here")
    parser.add_argument("--finetune", type=Path, default=None,
                        help="also fine-tune the whole tower (crrg.clip.probe_finetune; about 1 h on 1 CPU), save it here and score it")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--score", action="append", default=[], metavar="NAME=FOLDER",
                        help="also score a saved classifier folder (e.g. a fine-tuned tower from probe_finetune)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    base = ProbeRecipe.from_yaml(args.recipe)
    real = ProbeRecipe.from_yaml(args.real_recipe)
    if args.cache_dir:
        base.cache_dir = real.cache_dir = args.cache_dir
    if args.synthetic:
        base.synthetic = real.synthetic = args.synthetic
    nih_valid = read_nih14(base.nih, base.labels, split="valid")
    truth = {n: np.array([i.target[j] for i in nih_valid]) for j, n in enumerate(base.labels)}
    from crrg.clip.probe_recipe import synthetic_items

    synth_test_items = synthetic_items(base, "test")
    rows: list[dict] = [positives_row(truth)]
    bundled_row(nih_valid, truth, synth_test_items, base.labels, rows)
    shipped_real = REPO / "src" / "crrg" / "models" / "pretrained" / "crrg-default" / "classifier_real"
    if shipped_real.is_dir():
        bundled_row(nih_valid, truth, synth_test_items, base.labels, rows, shipped_real,
                    "shipped crrg-default 0.8.0 classifier_real (real labels), direct, no OOD routing")
    cache = FeatureCache(base.tower, base.cache_dir)
    clean = replace(base, realism=None, standardise=False, real_labels=[])
    random_tower = {**base.tower, "weights": None}
    run_variant("random-init tower, clean synthetic", replace(clean, tower=random_tower), FeatureCache(random_tower, base.cache_dir), nih_valid, truth, rows)
    run_variant("ImageNet tower, clean synthetic", clean, cache, nih_valid, truth, rows)
    run_variant("ImageNet tower, clean synthetic, C on synthetic val (no real label at all)",
                replace(clean, select_on="synthetic_val"), cache, nih_valid, truth, rows)
    run_variant("+ feature standardisation (unlabelled real)", replace(clean, standardise=True), cache, nih_valid, truth, rows)
    levers = [x for x in args.levers.split(",") if x]
    for lever in levers:
        cfg = RealismConfig.only(lever)
        run_variant(f"+ realism: {lever} only", replace(clean, realism=_as_dict(cfg)), cache, nih_valid, truth, rows)
    run_variant("+ realism: all eleven levers, no standardisation",
                replace(base, standardise=False, realism=_as_dict(RealismConfig(style=0.5))), cache, nih_valid, truth, rows)
    run_variant("+ realism: recipe levers (all but text, style), no standardisation", replace(base, standardise=False),
                cache, nih_valid, truth, rows)
    synth_result, _ = run_variant("synthetic-only recipe (recipe levers + standardisation)", base, cache, nih_valid, truth, rows)
    real_nih = replace(real, real_labels=["nih"])
    run_variant("real labels: NIH train + synthetic", real_nih, cache, nih_valid, truth, rows)
    real_result, _ = run_variant("real labels: NIH train + COVID + synthetic (recipe)", real, cache, nih_valid, truth, rows)
    levers = replace(clean, realism=_as_dict(RealismConfig.only("resolution", resolution_px=(64, 64))))
    run_variant("+ realism: resolution matched to the 64 px NIH films (always 64 px)", levers, cache, nih_valid, truth, rows)
    fused_rows = {"real labels: NIH train only, own heads, C by 5-fold CV": replace(base, real_labels=["nih"], fusion="global", fusion_alphas=[1.0]),
                  "real labels: NIH heads fused with synthetic heads, one alpha by CV": replace(base, real_labels=["nih"], fusion="global"),
                  "real labels: NIH heads fused with synthetic heads, alpha per label by CV": replace(base, real_labels=["nih"], fusion="per_label")}
    fused = {}
    for name, recipe in fused_rows.items():
        fused[name] = (recipe, run_variant(name, recipe, cache, nih_valid, truth, rows)[0])
    if args.finetune:
        finetune_export(base, args.finetune, args.finetune_epochs)
        args.score.append(f"fine-tuned tower: synthetic (realism, 64 px matched) + NIH train folds 1-4, epoch and AdaBN by NIH fold 0={args.finetune}")
    for spec in args.score:
        name, _, folder = spec.partition("=")
        bundled_row(nih_valid, truth, synth_test_items, base.labels, rows, Path(folder), name)
    report = [f"# Finding classifier on real radiographs\n",
              f"Machine: {platform.machine()} {platform.processor() or ''}, 1 torch thread, CPU only; "
              f"tower {base.tower}. NIH valid = 200 real 64 px films (test split, never used for a choice); "
              f"synthetic test = {len(synth_test_items)} studies of {base.synthetic}. AUCs; `select` = mean AUC on NIH train "
              "(held-out, or 5-fold by patient when NIH labels train), used to choose C.\n",
              "Mapping: Effusion→Pleural Effusion, Mass/Nodule→Lung Lesion, Infiltration→Lung Opacity, "
              "Pleural_Thickening→Pleural Other, others by name; normal vs abnormal = NIH `No Finding` vs any label.\n",
              table(rows), "", tower_choice(base)]
    saves = []
    if args.export:
        saves += [(args.export.parent / (args.export.name + suffix), recipe, result)
                  for suffix, recipe, result in (("", real, real_result), ("-synthetic-only", base, synth_result))]
    if args.fused_export:
        saves.append((args.fused_export, *fused["real labels: NIH heads fused with synthetic heads, one alpha by CV"]))
    if saves:
        for out, recipe, result in saves:
            info = export(recipe, result, cache, out, nih_valid, truth, synth_test_items)
            kind = "real labels" if recipe.real_labels else "no real labels"
            if recipe.fusion != "off":
                kind += f", NIH heads fused with synthetic heads ({recipe.fusion} alpha); C below is the NIH heads'"
            report.append(f"## Saved: `{info['folder']}` ({kind})\n")
            report.append(f"size {info['size_mb']:.1f} MB (float16); latency per image p50 {info['latency_p50_ms']:.1f} ms, "
                          f"p95 {info['latency_p95_ms']:.1f} ms (1 thread, batch 1); C = {info['C']}, real-film weight {info['real weight']}; synthetic test mean AUC "
                          f"{info['synthetic test']:.3f}\n")
            report.append(table([{"variant": "reloaded, probabilities(images)", **info["nih"], "synthetic test": info["synthetic test"]}]))
            report.append("\nSynthetic test AUC per label: " + ", ".join(f"{k} {fmt(v)}" for k, v in info["synthetic per label"].items()) + "\n")
    text = "\n".join(report) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


def tower_choice(recipe: ProbeRecipe) -> str:
    """How the tower was chosen: NIH train only, 5-fold by patient, NIH labels only (no synthetic films)."""
    from crrg.clip.probe import Standardiser, group_folds, out_of_fold_scores
    from crrg.clip.probe_recipe import _nih_groups

    items = read_nih14(recipe.nih, recipe.labels, split="train")
    y = np.array([i.target for i in items], np.float32)
    m = np.array([i.mask for i in items], np.float32)
    folds = group_folds(_nih_groups(Path(recipe.nih), items), recipe.folds, recipe.seed)
    lines = ["## Tower choice (NIH train only, 5-fold by patient, NIH labels, mean AUC over labels; best C)\n",
             "| tower | weights | features | dim | mean AUC |", "|---|---|---|---|---|"]
    for arch in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        for weights in ("imagenet", None):
            for options in ({"blocks": 5}, {}):
                if weights is None and arch != "efficientnet_lite0":
                    continue
                cfg = {"name": arch, "weights": weights, "image_size": recipe.tower.get("image_size", 128), "options": options}
                x = FeatureCache(cfg, recipe.cache_dir).features([i.path for i in items])
                x = Standardiser.fit(x)(x)
                best = max(mean_auc(y, m, out_of_fold_scores(x, y, m, c, folds)) for c in (1e-4, 1e-3, 3e-3))
                where = "after 5 stages" if options else "full (1280-d head conv)"
                lines.append(f"| {arch} | {weights or 'random'} | {where} | {x.shape[1]} | {best:.3f} |")
    return "\n".join(lines) + "\n"


def _as_dict(cfg: RealismConfig) -> dict:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


if __name__ == "__main__":
    main()
