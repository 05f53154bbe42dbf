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
``loss`` (weights), ``stages`` (per-stage settings, applied by :mod:`crrg.training.stages`: ``crrg train rrg
--config X`` runs the recipe's stages).

The task's parts live in modules by concern: :mod:`~crrg.rrg.stage_model` (the model a stage starts
from), :mod:`~crrg.rrg.region_data` (examples from records), :mod:`~crrg.rrg.feature_cache` (frozen
detector features), :mod:`~crrg.rrg.training_data` (data module), :mod:`~crrg.rrg.training_module`
(losses, optimizer), :mod:`~crrg.rrg.calibration` (thresholds, normal impression at export).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

from crrg.errors import ConfigError
# The task's parts, re-exported: code and recipes written against crrg.rrg.task keep working.
from crrg.rrg.calibration import best_f1_threshold, normal_impression, tune_thresholds  # noqa: F401
from crrg.rrg.feature_cache import feature_cache_dir, classifier_conditions, compute_features  # noqa: F401
from crrg.rrg.region_data import (frontal_index, global_findings, load_split, region_sentences,  # noqa: F401
                                  region_targets, report_corpus, scatter_regions, with_regions)
from crrg.rrg.stage_model import (FEATURE_STAGES, NEW_HEAD_PREFIXES, STAGES, build_rrg, ensure_tokenizer,  # noqa: F401
                                  load_stage_model, stage_of, warm_start_model)
from crrg.rrg.training_data import (DetectorDataset, RRGDataModule, StudyFeatureDataset, TextDataset,  # noqa: F401
                                    collate_detector, collate_studies)
from crrg.rrg.training_module import RRGModule

log = logging.getLogger(__name__)
__all__ = ["STAGES", "FEATURE_STAGES", "NEW_HEAD_PREFIXES", "RRGTask", "RRGModule", "RRGDataModule", "DetectorDataset",
           "StudyFeatureDataset", "TextDataset", "best_f1_threshold", "build_rrg", "classifier_conditions",
           "collate_detector", "collate_studies", "compute_features", "ensure_tokenizer", "feature_cache_dir",
           "frontal_index", "global_findings", "load_split", "load_stage_model", "normal_impression", "region_sentences",
           "region_targets", "report_corpus", "scatter_regions", "stage_config", "stage_of", "train_stages",
           "tune_thresholds", "warm_start_model", "with_regions"]


class RRGTask:
    """The region-guided generator's stages; see the module docstring."""

    stages = STAGES
    stage_init_key = "model.init"

    def __init__(self) -> None:
        self._model = None

    def build_module(self, config: dict) -> RRGModule:
        module = RRGModule(config)
        self._model = module.model  # the data module computes its features with this one
        return module

    def build_datamodule(self, config: dict) -> RRGDataModule:
        return RRGDataModule(config, model=self._model)

    def prepare_stages(self, config: dict, out: Path) -> dict:
        """One feature cache for a whole run: its entries are keyed by detector weights and studies."""
        config = copy.deepcopy(config)
        config.setdefault("data", {}).setdefault("feature_cache", str(out / "feature_cache"))
        return config

    def validate(self, config: dict) -> None:
        """Checks that need no model: the stage name and where the model comes from."""
        stage_of(config)
        model = config.get("model") or {}
        if not (model.get("init") or model.get("warm_start") or model.get("name") or model.get("config")):
            raise ConfigError("model: set name (a registry name), config, init or warm_start")

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


def stage_config(config: dict, stage: str, init: str | os.PathLike | None) -> dict:
    """The config of one stage (:func:`crrg.training.stages.stage_config` with ``model.init``)."""
    from crrg.training.stages import stage_config as generic

    return generic(config, stage, init, RRGTask.stage_init_key)


def train_stages(config: dict, out_dir: str | os.PathLike, stages: tuple[str, ...] = STAGES, resume: bool = False,
                 devices: int = 1, *, progress_bar: bool = True, extra_callbacks: tuple = ()) -> Path:
    """Run ``stages`` in order, each in ``out_dir/<stage>``, each starting from the previous stage's
    export (:func:`crrg.training.stages.run_stages`); a resumed pipeline skips finished stages and
    continues an interrupted one from its last checkpoint."""
    from crrg.training.stages import run_stages

    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ConfigError(f"rrg stage {bad[0]!r} is not one of {list(STAGES)}")
    return run_stages("rrg", config, out_dir, [s for s in STAGES if s in stages], resume=resume, devices=devices,
                      progress_bar=progress_bar, extra_callbacks=extra_callbacks)


def _register() -> None:
    from crrg.training.tasks import register_task

    register_task("rrg", RRGTask)


_register()
