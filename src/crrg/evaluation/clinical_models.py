"""The field's model-based report metrics, from the maintained RadEval package (``pip install 'crrg[clinical]'``).

Why RadEval rather than the individual packages: it is the one maintained distribution that carries
all of them (CheXbert, RadGraph-XL, BERTScore, RaTEScore, RadCliQ-v1, GREEN) and runs on
transformers 5, which crrg uses; ``f1chexbert`` 0.0.2 calls ``hf_hub_download(force_filename=...)``,
which huggingface_hub 1.x removed, and ``radgraph`` 0.1.18 depends on an archived AllenNLP fork.
RadEval 2.2.1's vendored RadGraph imports itself as ``RadEval.…`` (the source folder's name), which
fails on a case-sensitive file system when installed from PyPI; :func:`_radeval` maps that name to
the installed ``radeval`` package before loading it.

What each set computes (all per study, so the bootstrap can resample them):

``chexbert``  CheXbert labels of both sides -> micro-5 / macro-14 / micro-14 / example-14 F1
              (:mod:`crrg.evaluation.label_f1`), uncertain counted as ``negative`` by default.
``semb``      SembScore: cosine of the CheXbert [CLS] embeddings of prediction and reference.
``radgraph``  RadGraph F1 with the RadGraph-XL model, simple / partial / complete reward levels.
``bertscore`` BERTScore F1 with the settings of ReXrank's CXR-Report-Metric: ``distilroberta-base``,
              layer 5, baseline rescaling (lang en), idf weights from the references.
``ratescore`` RaTEScore (entity-aware; its NER and synonym models).
``radcliq``   RadCliQ-v1 per study (lower is better) and its corpus summary 1 / mean, which ReXrank ranks by.
``green``     GREEN (a 7B judge model): only where a GPU is present, otherwise reported as skipped.

Weights come from the Hugging Face hub on first use. ``crrg evaluate --metrics-cache DIR`` (or
``CRRG_METRICS_CACHE``) points every download at DIR, so a cache filled on a machine with network can
be copied to one without; when a weight is missing and the hub cannot be reached, the user gets one
line naming the repositories to fetch, never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crrg.errors import ConfigError, CrrgError
from crrg.evaluation.blocks import LabelF1Block, MetricBlock, PerSampleBlock
from crrg.evaluation.label_f1 import binarize
from crrg.observations import CHEXPERT_14

log = logging.getLogger(__name__)

CACHE_ENV = "CRRG_METRICS_CACHE"
BERTSCORE_SETTINGS = {"model_type": "distilroberta-base", "num_layers": 5, "rescale_with_baseline": True,
                      "lang": "en", "idf": "references"}
RADGRAPH_MODEL = "radgraph-xl"
GREEN_MODEL = "StanfordAIMI/GREEN-radllama2-7b"
WEIGHTS: dict[str, str] = {
    "chexbert": "StanfordAIMI/RRG_scorers (chexbert.pth) and bert-base-uncased",
    "semb": "StanfordAIMI/RRG_scorers (chexbert.pth) and bert-base-uncased",
    "radgraph": "StanfordAIMI/RRG_scorers (radgraph-xl.tar.gz)",
    "bertscore": "distilroberta-base",
    "ratescore": "Angelakeke/RaTE-NER-Deberta and FremyCompany/BioLORD-2023-C",
    "radcliq": "StanfordAIMI/RRG_scorers (chexbert.pth, radgraph.tar.gz), bert-base-uncased and distilroberta-base",
    "green": GREEN_MODEL,
}


def use_metrics_cache(directory: Path | str | None) -> Path | None:
    """Send every metric download to ``directory`` (or $CRRG_METRICS_CACHE): the hub cache and the
    per-package caches (CheXbert, RadGraph use ``~/.cache/<name>``, i.e. $XDG_CACHE_HOME).

    Must run before the metric packages are imported; returns the directory in use (None: defaults).
    """
    directory = directory or os.environ.get(CACHE_ENV)
    if not directory:
        return None
    path = Path(directory).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["XDG_CACHE_HOME"] = str(path)
    os.environ["HF_HOME"] = str(path / "huggingface")
    return path


class _RadEvalAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve ``RadEval.x.y`` to the already importable ``radeval.x.y`` (same module objects)."""

    def find_spec(self, name, path=None, target=None):
        if name == "RadEval" or name.startswith("RadEval."):
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module("radeval" + spec.name[len("RadEval"):])
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._real_spec  # keep the real module's identity


def require_radeval():
    """Import RadEval (the ``crrg[clinical]`` extra) or raise one clear line; map its ``RadEval.`` imports."""
    return _radeval()


def _radeval():
    try:
        import radeval  # noqa: F401
    except ImportError:
        raise ConfigError("the model-based metrics need the optional packages: pip install 'crrg[clinical]' "
                          "(RadEval); the default --metrics nlg,ce works without them") from None
    if not any(isinstance(f, _RadEvalAlias) for f in sys.meta_path):
        sys.meta_path.append(_RadEvalAlias())
    return radeval


def _loading(metric: str, fn: Callable):
    """Run ``fn`` (which loads or runs a metric model); turn a failed download into one clear line."""
    try:
        return fn()
    except CrrgError:
        raise
    except Exception as exc:  # the packages raise OSError, HF hub errors, requests errors, RuntimeError...
        cache = os.environ.get(CACHE_ENV) or "DIR"
        raise ConfigError(
            f"{metric}: could not load its model ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
            f"it needs {WEIGHTS[metric]} from the Hugging Face hub: run the same command once where the hub is "
            f"reachable with --metrics-cache {cache}, copy {cache} here and pass --metrics-cache {cache} "
            f"(or set {CACHE_ENV})") from None


# Loaders: one function per package object, so tests can replace them with local stand-ins.
def _chexbert_model(device: str):
    _radeval()
    from radeval.metrics.f1chexbert import F1CheXbert

    return F1CheXbert(device=device)


def _radgraph_scorer():
    _radeval()
    from radeval.metrics.radgraph import F1RadGraph

    return F1RadGraph(reward_level="all", model_type=RADGRAPH_MODEL)


def _bert_scorer(refs: Sequence[str], device: str):
    _radeval()
    from radeval.metrics.bertscore._vendor import BERTScorer

    s = BERTSCORE_SETTINGS
    return BERTScorer(model_type=s["model_type"], num_layers=s["num_layers"], rescale_with_baseline=True,
                      lang=s["lang"], idf=True, idf_sents=list(refs), batch_size=64, device=device)


def _rate_scorer():
    _radeval()
    from radeval.metrics.RaTEScore.scorer import RaTEScore

    return RaTEScore()


def _radcliq_scorer():
    _radeval()
    from radeval.metrics.RadCliQv1.radcliq import CompositeMetric

    return CompositeMetric()


def _green_scorer(output_dir: str):
    _radeval()
    from radeval.metrics.green_score.green import GREEN

    return GREEN(GREEN_MODEL, output_dir=output_dir)


def _gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dot = np.einsum("nd,nd->n", a, b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide(dot, norms, out=np.zeros(len(dot)), where=norms > 0)


def chexbert_label_dicts(rows: Sequence[Sequence[int]], names: Sequence[str]) -> list[dict]:
    """CheXbert's label rows (its own column order, 1 / 0 / -1) as crrg label dicts over :data:`CHEXPERT_14`."""
    missing = set(CHEXPERT_14) - set(names)
    if missing:
        raise ValueError(f"CheXbert labels lack {sorted(missing)}")
    return [{name: int(v) for name, v in zip(names, row)} for row in rows]


@dataclass
class ClinicalModels:
    """Loads each package model once (shared by every system evaluated) and turns its output into blocks."""

    uncertain: str = "negative"
    device: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    def _device(self) -> str:
        if self.device is None:
            self.device = "cuda" if _gpu_available() else "cpu"
        return self.device

    def _get(self, key: str, metric: str, factory: Callable):
        if key not in self._cache:
            self._cache[key] = _loading(metric, factory)
        return self._cache[key]

    def blocks(self, sets: Sequence[str], hyps: list[str], refs: list[str]) -> list[MetricBlock]:
        out: list[MetricBlock] = []
        for name in sets:
            block = getattr(self, f"_{name}")(hyps, refs)
            if block is not None:
                out.append(block)
        return out

    def _chexbert(self, hyps, refs) -> MetricBlock:
        model = self._get("chexbert", "chexbert", lambda: _chexbert_model(self._device()))
        names = list(model.TARGET_NAMES)
        pred, ref = _loading("chexbert", lambda: (model.get_labels(hyps, mode="classification"),
                                                  model.get_labels(refs, mode="classification")))
        return LabelF1Block(binarize(chexbert_label_dicts(pred, names), self.uncertain),
                            binarize(chexbert_label_dicts(ref, names), self.uncertain), prefix="chexbert")

    def _semb(self, hyps, refs) -> MetricBlock:
        model = self._get("chexbert", "semb", lambda: _chexbert_model(self._device()))
        a, b = _loading("semb", lambda: (np.vstack(model.get_embeddings(hyps)), np.vstack(model.get_embeddings(refs))))
        return PerSampleBlock({"semb_score": _cosine(a, b)})

    def _radgraph(self, hyps, refs) -> MetricBlock:
        scorer = self._get("radgraph", "radgraph", _radgraph_scorer)
        result = _loading("radgraph", lambda: scorer(refs=refs, hyps=hyps))
        per_level = result[1]
        return PerSampleBlock({f"radgraph_{level}": np.asarray(per_level[i], dtype=float)
                               for i, level in enumerate(("simple", "partial", "complete"))})

    def _bertscore(self, hyps, refs) -> MetricBlock:
        # idf weights come from this evaluation's references, so the scorer is built per reference set
        scorer = _loading("bertscore", lambda: _bert_scorer(refs, self._device()))
        _, _, f1 = _loading("bertscore", lambda: scorer.score(cands=hyps, refs=refs, verbose=False, batch_size=64))
        return PerSampleBlock({"bertscore": np.asarray(f1, dtype=float)})

    def _ratescore(self, hyps, refs) -> MetricBlock:
        scorer = self._get("ratescore", "ratescore", _rate_scorer)
        scores = _loading("ratescore", lambda: scorer.compute_score(candidate_list=hyps, reference_list=refs)[0])
        return PerSampleBlock({"ratescore": np.asarray(scores, dtype=float)})

    def _radcliq(self, hyps, refs) -> MetricBlock:
        scorer = self._get("radcliq", "radcliq", _radcliq_scorer)
        _, per = _loading("radcliq", lambda: scorer.predict(refs, hyps))
        return PerSampleBlock({"radcliq_v1": np.asarray(per, dtype=float)},
                              {"radcliq_v1_inverse": ("radcliq_v1", lambda v: 1.0 / float(np.mean(v)))})

    def _green(self, hyps, refs) -> MetricBlock | None:
        if not _gpu_available():
            self.skipped["green"] = "needs a GPU (a 7B judge model); none is present"
            log.warning("GREEN skipped: it needs a GPU")
            return None
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            scorer = self._get("green", "green", lambda: _green_scorer(tmp))
            _, _, per, _ = _loading("green", lambda: scorer(refs, hyps))
        return PerSampleBlock({"green": np.asarray(per, dtype=float)})


def package_versions() -> dict[str, str | None]:
    """Versions of the packages behind the numbers (recorded in every metrics JSON)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("crrg", "pycocoevalcap", "radeval", "transformers", "torch", "scikit-learn", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
