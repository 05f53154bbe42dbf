"""Train a finding classifier from a recipe (``configs/real/*.yaml``): frozen tower, cached features, heads.

The recipe names the tower, the realism augmentation of the synthetic films, whether real labelled
films join the training set, and the data folders. Every setting that is chosen (the heads'
regularisation ``C``, the decision thresholds) is chosen on NIH ``train/`` (cross-validated by
patient where its labels train the heads, otherwise as held-out data) or on the synthetic val split;
NIH ``valid/`` is never read here, so it stays a test set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from crrg.clip.data import LabeledImage, labeled_from_records
from crrg.clip.probe import LinearHeads, Standardiser, extract_features, fit_heads, group_folds, out_of_fold_scores
from crrg.errors import ConfigError, reject_unknown_keys

log = logging.getLogger(__name__)

DEFAULT_LABELS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Fracture", "Support Devices",
)
REAL_SOURCES = ("nih", "covid")
FUSION_MODES = ("off", "global", "per_label")


@dataclass
class ProbeRecipe:
    """A frozen-tower classifier recipe (one YAML file in ``configs/real/``)."""

    tower: dict[str, Any] = field(default_factory=lambda: {"name": "efficientnet_lite0", "weights": "imagenet", "image_size": 160})
    labels: list[str] = field(default_factory=lambda: list(DEFAULT_LABELS))
    synthetic: str = "/work/data/synth/manifest.jsonl"  # a crrg synth manifest (train / val / test splits)
    nih: str = "../shared/data/nih1000_64px"  # NIH folder with labels14.csv
    covid: str = "../shared/data/covid_cxr"  # COVID-19 collection folder with metadata.jsonl
    realism: dict[str, Any] | None = None  # RealismConfig fields; None = clean synthetic films
    augment_copies: int = 1  # augmented copies of each synthetic film (each one tower pass)
    standardise: bool = True  # per-domain feature statistics (real ones from unlabelled NIH train films)
    real_labels: list[str] = field(default_factory=list)  # [] = synthetic labels only; or nih, covid
    # Weight of a real labelled film relative to a synthetic one; a list is a grid chosen with C.
    real_weight: float | list[float] = 1.0
    c_grid: list[float] = field(default_factory=lambda: [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3])
    folds: int = 5
    # What C and the thresholds are chosen on when NIH labels do not train the heads: NIH train films
    # (held out: their labels only rank 6 values of C) or synthetic val (no real label used at all).
    select_on: str = "nih_train"
    # Real labels as a second set of heads instead of extra rows: "off" (rows, as real_labels says), or
    # NIH-only heads fused with the synthetic-only heads, one mixing weight for all labels ("global") or
    # one per label ("per_label"), chosen by cross-validation on NIH train (see train_fused).
    fusion: str = "off"
    fusion_alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    seed: int = 0
    cache_dir: str | None = None  # where tower features are kept between runs (keyed by everything that shapes them)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProbeRecipe":
        reject_unknown_keys(cls, d, "recipe key(s)")
        recipe = cls(**d)
        bad = [s for s in recipe.real_labels if s not in REAL_SOURCES]
        if bad:
            raise ConfigError(f"real_labels {bad} unknown; use any of {list(REAL_SOURCES)}")
        if recipe.select_on not in ("nih_train", "synthetic_val"):
            raise ConfigError(f"select_on is nih_train or synthetic_val, got {recipe.select_on!r}")
        if recipe.fusion not in FUSION_MODES:
            raise ConfigError(f"fusion is one of {list(FUSION_MODES)}, got {recipe.fusion!r}")
        if recipe.fusion != "off" and recipe.real_labels != ["nih"]:
            raise ConfigError("fusion fuses NIH-only heads with synthetic ones: set real_labels: [nih]")
        return recipe

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ProbeRecipe":
        import yaml

        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})


@dataclass
class Domain:
    """Labelled films of one source with their tower features."""

    items: list[LabeledImage]
    features: np.ndarray
    groups: list[str] = field(default_factory=list)

    @property
    def targets(self) -> np.ndarray:
        return np.asarray([i.target for i in self.items], np.float32)

    @property
    def mask(self) -> np.ndarray:
        return np.asarray([i.mask for i in self.items], np.float32)


class FeatureCache:
    """Tower features per (tower, size, images, augmentation, seed), in memory and optionally on disk."""

    def __init__(self, tower_config: dict[str, Any], cache_dir: str | None):
        from crrg.clip.image_encoders import build_image_encoder

        self.tower_config = dict(tower_config)
        self.tower = build_image_encoder(self.tower_config).eval()
        self.image_size = int(self.tower_config.get("image_size", 224))
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: dict[str, np.ndarray] = {}

    def features(self, paths: Sequence[str], augment=None, augment_key: Any = None, seed: int = 0) -> np.ndarray:
        key = hashlib.sha1(json.dumps([self.tower_config, list(paths), augment_key, seed], sort_keys=True,
                                      default=str).encode()).hexdigest()[:20]
        if key in self._memory:
            return self._memory[key]
        path = self.cache_dir / f"{key}.npy" if self.cache_dir else None
        if path is not None and path.is_file():
            out = np.load(path)
        else:
            log.info("tower features for %d images (augment=%s)", len(paths), augment_key)
            out = extract_features(self.tower, list(paths), self.image_size, augment=augment, seed=seed)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                from crrg.io import atomic_save_file

                atomic_save_file(path, lambda tmp: np.save(open(tmp, "wb"), out))
        self._memory[key] = out
        return out


def _nih_groups(nih_root: Path, items: Sequence[LabeledImage]) -> list[str]:
    import csv

    with (nih_root / "labels14.csv").open(newline="") as f:
        patient = {row["path"]: row["patient_id"] for row in csv.DictReader(f)}
    return [patient.get(i.id, i.id) for i in items]


def synthetic_items(recipe: ProbeRecipe, split: str) -> list[LabeledImage]:
    from crrg.records import read_manifest

    return labeled_from_records(read_manifest(recipe.synthetic, split=split), recipe.labels, "positive")


def load_domains(recipe: ProbeRecipe, cache: FeatureCache) -> dict[str, Domain]:
    """Tower features of every training and selection set the recipe uses (never NIH ``valid/``)."""
    from crrg.clip.real_labels import read_covid, read_nih14
    from crrg.image.realism import RealismAugment, RealismConfig, StyleBank

    nih_root = Path(recipe.nih)
    nih_train = read_nih14(nih_root, recipe.labels, split="train")
    domains = {"nih_train": Domain(nih_train, cache.features([i.path for i in nih_train]), _nih_groups(nih_root, nih_train))}
    train = synthetic_items(recipe, "train")
    augment, augment_key = None, None
    if recipe.realism is not None:
        config = RealismConfig.from_dict(recipe.realism)
        bank = None
        if config.style > 0:  # histogram targets from unlabelled real films (NIH train, labels unused)
            from crrg.clip.data import load_image

            bank = StyleBank.from_images([load_image(i.path) for i in nih_train])
        augment, augment_key = RealismAugment(config, bank), asdict(config)
    copies = [cache.features([i.path for i in train], augment, augment_key, seed=recipe.seed + k)
              for k in range(max(1, recipe.augment_copies if augment else 1))]
    domains["synth_train"] = Domain(train * len(copies), np.concatenate(copies))
    for split in ("val", "test"):
        items = synthetic_items(recipe, split)
        domains[f"synth_{split}"] = Domain(items, cache.features([i.path for i in items]))
    if "covid" in recipe.real_labels:
        covid = read_covid(recipe.covid, recipe.labels)
        domains["covid"] = Domain(covid, cache.features([i.path for i in covid]))
    return domains


def both_classes(target: np.ndarray, mask: np.ndarray) -> bool:
    """Whether one label's known rows hold positives and negatives (else it has no AUC)."""
    y = target[mask > 0] > 0.5
    return bool(0 < y.sum() < len(y))


def label_auc(target: np.ndarray, mask: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC of one label over its known rows; None without :func:`both_classes`."""
    from sklearn.metrics import roc_auc_score

    rows = mask > 0
    return float(roc_auc_score(target[rows] > 0.5, score[rows])) if both_classes(target, mask) else None


def mean_auc(targets: np.ndarray, mask: np.ndarray, scores: np.ndarray) -> float:
    """Mean ROC AUC over the labels with both classes among their known rows."""
    aucs = [a for j in range(targets.shape[1]) if (a := label_auc(targets[:, j], mask[:, j], scores[:, j])) is not None]
    return float(np.mean(aucs)) if aucs else float("nan")


@dataclass
class ProbeResult:
    heads: LinearHeads
    real_standardiser: Standardiser
    synth_standardiser: Standardiser
    c: float
    thresholds: dict[str, float]
    selection: dict[tuple[float, float], float]  # (C, real weight) -> mean AUC on the selection data
    real_weight: float = 1.0


def train_probe(recipe: ProbeRecipe, domains: dict[str, Domain]) -> ProbeResult:
    """Fit the heads; choose C and thresholds on NIH train (out-of-fold when its labels train) and synthetic val."""
    from crrg.clip.classifier import choose_thresholds

    synth, nih = domains["synth_train"], domains["nih_train"]
    synth_std = Standardiser.fit(synth.features)
    real_std = Standardiser.fit(nih.features) if recipe.standardise else synth_std
    x_synth = synth_std(synth.features)
    extra_x, extra_y, extra_m = [x_synth], [synth.targets], [synth.mask]
    n_covid = 0
    if "covid" in domains:
        covid = domains["covid"]
        covid_std = Standardiser.fit(covid.features) if recipe.standardise else synth_std
        extra_x.append(covid_std(covid.features))
        extra_y.append(covid.targets)
        extra_m.append(covid.mask)
        n_covid = len(covid.items)
    x_nih = real_std(nih.features)
    extra = (np.concatenate(extra_x), np.concatenate(extra_y), np.concatenate(extra_m))
    use_nih = "nih" in recipe.real_labels
    real_weights = [float(w) for w in (recipe.real_weight if isinstance(recipe.real_weight, list) else [recipe.real_weight])]
    if not use_nih and not n_covid:
        real_weights = real_weights[:1]  # no real labelled film: the weight changes nothing

    def extra_weights(w: float) -> np.ndarray:
        return np.concatenate([np.ones(len(x_synth), np.float32), np.full(n_covid, w, np.float32)])

    folds = group_folds(nih.groups, recipe.folds, recipe.seed)
    val = domains["synth_val"]
    synthetic_only = not use_nih and recipe.select_on == "synthetic_val"
    selection, nih_scores = {}, {}
    for w in real_weights:
        for c in recipe.c_grid:
            if use_nih:
                scores = out_of_fold_scores(x_nih, nih.targets, nih.mask, c, folds, extra, w, extra_weights(w))
            else:
                heads = fit_heads(*extra, c, sample_weight=extra_weights(w))
                scores = heads.scores(x_nih)
                if synthetic_only:
                    selection[c, w] = mean_auc(val.targets, val.mask, heads.scores(synth_std(val.features)))
            nih_scores[c, w] = scores
            if not synthetic_only:
                selection[c, w] = mean_auc(nih.targets, nih.mask, scores)
    best_c, best_w = max(selection, key=lambda k: selection[k])
    how = "synthetic val" if synthetic_only else "NIH train " + ("cross-validation" if use_nih else "held-out AUC")
    log.info("(C, real weight) by %s: %s", how, {k: round(a, 4) for k, a in selection.items()})
    x_all, y_all, m_all, w_all = extra[0], extra[1], extra[2], extra_weights(best_w)
    if use_nih:
        x_all, y_all = np.concatenate([x_all, x_nih]), np.concatenate([y_all, nih.targets])
        m_all = np.concatenate([m_all, nih.mask])
        w_all = np.concatenate([w_all, np.full(len(x_nih), best_w, np.float32)])
    heads = fit_heads(x_all, y_all, m_all, best_c, sample_weight=w_all)
    # Thresholds: NIH train scores (out-of-fold) where NIH has the label, synthetic val elsewhere.
    thresholds = choose_thresholds(val.targets, heads.scores(synth_std(val.features)), recipe.labels, val.mask)
    nih_thr = choose_thresholds(nih.targets, nih_scores[best_c, best_w], recipe.labels, nih.mask)
    for j, name in enumerate(recipe.labels):
        if nih.mask[:, j].any() and not synthetic_only:
            thresholds[name] = nih_thr[name]
    return ProbeResult(heads, real_std, synth_std, best_c, {k: float(v) for k, v in thresholds.items()}, selection, best_w)



def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def train_fused(recipe: ProbeRecipe, domains: dict[str, Domain]) -> ProbeResult:
    """Synthetic-only heads and NIH-only heads on the same standardised real features, fused per label.

    Why not one set of heads on both (``train_probe`` with real labels): synthetic and NIH labels
    disagree on what a label looks like (NIH's are report-mined, 600 films), and one C and one real
    weight for every label let the synthetic rows blur the real signal or the reverse. Here each source
    gets its own heads and its own C; their logits, each z-scored on NIH train (no labels), are mixed
    with weight ``alpha`` (NIH) per label and recalibrated (Platt) on NIH train: still one linear head,
    so the saved classifier is the same shape. ``alpha``, both C and the calibration come from 5-fold
    by-patient out-of-fold scores on NIH train; labels NIH never gives keep the synthetic head.
    """
    from sklearn.linear_model import LogisticRegression

    from crrg.clip.classifier import choose_thresholds

    synth = train_probe(replace(recipe, real_labels=[], fusion="off"), domains)
    nih = domains["nih_train"]
    x = synth.real_standardiser(nih.features)
    y, m = nih.targets, nih.mask
    folds = group_folds(nih.groups, recipe.folds, recipe.seed)
    oof_by_c = {c: out_of_fold_scores(x, y, m, c, folds) for c in recipe.c_grid}
    selection = {(c, 1.0): mean_auc(y, m, s) for c, s in oof_by_c.items()}
    c_nih = max(oof_by_c, key=lambda c: selection[c, 1.0])
    nih_heads = fit_heads(x, y, m, c_nih)
    oof, syn = _logit(oof_by_c[c_nih]), _logit(synth.heads.scores(x))
    # z-scoring constants from the full-data logits on NIH train (unlabelled use), so train and inference agree
    full = _logit(nih_heads.scores(x))
    mu_n, sd_n = full.mean(0), full.std(0) + 1e-6
    mu_s, sd_s = syn.mean(0), syn.std(0) + 1e-6
    z_oof, z_syn = (oof - mu_n) / sd_n, (syn - mu_s) / sd_s
    alphas = [float(a) for a in recipe.fusion_alphas]
    known = [j for j in range(y.shape[1]) if both_classes(y[:, j], m[:, j])]
    table = np.array([[label_auc(y[:, j], m[:, j], a * z_oof[:, j] + (1 - a) * z_syn[:, j]) for j in known] for a in alphas])
    if recipe.fusion == "global":
        chosen = {j: alphas[int(np.argmax(table.mean(1)))] for j in known}
    else:
        chosen = {j: alphas[int(np.argmax(table[:, k]))] for k, j in enumerate(known)}
    log.info("fusion (%s) NIH C %g, alpha per label %s", recipe.fusion, c_nih,
             {recipe.labels[j]: a for j, a in chosen.items()})
    weight, bias = synth.heads.weight.copy(), synth.heads.bias.copy()
    fused_oof = synth.heads.scores(x).copy()
    for j, a in chosen.items():
        w = a * nih_heads.weight[j] / sd_n[j] + (1 - a) * synth.heads.weight[j] / sd_s[j]
        b = a * (nih_heads.bias[j] - mu_n[j]) / sd_n[j] + (1 - a) * (synth.heads.bias[j] - mu_s[j]) / sd_s[j]
        z = a * z_oof[:, j] + (1 - a) * z_syn[:, j]
        rows = m[:, j] > 0
        platt = LogisticRegression(C=1e4).fit(z[rows, None], y[rows, j] > 0.5)
        # A negative slope would turn the ranking over on the strength of a few NIH films: keep it
        # positive (a label the fusion cannot rank then scores near its base rate, in the same order).
        scale, shift = max(float(platt.coef_[0, 0]), 1e-3), float(platt.intercept_[0])
        weight[j], bias[j] = scale * w, scale * b + shift
        fused_oof[:, j] = 1.0 / (1.0 + np.exp(-(scale * z + shift)))
    heads = LinearHeads(weight.astype(np.float32), bias.astype(np.float32))
    thresholds = dict(synth.thresholds)
    nih_thr = choose_thresholds(y, fused_oof, recipe.labels, m)
    for j in chosen:
        thresholds[recipe.labels[j]] = float(nih_thr[recipe.labels[j]])
    fused_sel = float(np.mean([label_auc(y[:, j], m[:, j], fused_oof[:, j]) for j in known]))
    log.info("NIH-only heads: C by NIH train cross-validation %s; fused out-of-fold mean AUC %.4f",
             {c: round(a, 4) for (c, _), a in selection.items()}, fused_sel)
    return ProbeResult(heads, synth.real_standardiser, synth.synth_standardiser, c_nih, thresholds, {(c_nih, 1.0): fused_sel})


def train_recipe(recipe: ProbeRecipe, domains: dict[str, Domain]) -> ProbeResult:
    """The recipe's heads: fused synthetic and NIH heads when ``recipe.fusion`` asks, else :func:`train_probe`."""
    return train_fused(recipe, domains) if recipe.fusion != "off" else train_probe(recipe, domains)
