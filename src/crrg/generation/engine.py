"""The report engine: a loaded generator, the device it runs on, and its decoding defaults.

:func:`load_generator` is the one way to get a report generator (``crrg report``, ``crrg serve``, batch
and torchrun runs, benchmarks): a bundled name, a saved folder or a hub id in; a :class:`ReportEngine`
out. The engine holds the model (an ``nn.Module`` that never leaves its device), hands it studies and
:class:`~crrg.generation.options.DecodingOptions`, and returns :class:`~crrg.reporting.GeneratedReport`
with the same ``timings_ms`` keys (:data:`crrg.reporting.TIMING_KEYS`) whichever family wrote it.
Models build their input tensors on their own device, so nothing here is CPU-only.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Mapping

import torch

from crrg.errors import CrrgError
from crrg.generation.device import resolve_device, resolve_dtype
from crrg.generation.options import DecodingOptions, GenerationError
from crrg.reporting import TIMING_KEYS, GeneratedReport, StudyInput

log = logging.getLogger(__name__)


def default_decoding(model) -> DecodingOptions:
    """A model's own decoding defaults: an rrg model's ``decoding`` (its ``decoding.json``), a ClinicalBLIP
    model's ``generation`` config, else the :class:`DecodingOptions` defaults."""
    own = getattr(model, "decoding", None)
    if isinstance(own, DecodingOptions):
        return own
    generation = getattr(model, "generation", None)
    if isinstance(generation, Mapping):
        return DecodingOptions().replace(beams=generation.get("num_beams"),
                                         max_new_tokens=generation.get("max_new_tokens"))
    return DecodingOptions()


class ReportEngine:
    """A generator ready to write reports on one device (see the module docstring)."""

    def __init__(self, model, name: str = "", device: torch.device | str | None = None):
        if not hasattr(model, "generate_report"):
            raise GenerationError(f"model {name or type(model).__name__} ({type(model).__name__}) does not generate reports")
        self.model = model
        self.name = name
        self.device = torch.device(device) if device is not None else _device_of(model)
        self.family = (getattr(model, "crrg_config", None) or {}).get("family", "")
        self.defaults = default_decoding(model)

    def options(self, overrides: DecodingOptions | Mapping[str, Any] | None = None) -> DecodingOptions:
        """The options a call decodes with: ``overrides`` (None values: keep) on top of the model's defaults."""
        if isinstance(overrides, DecodingOptions):
            return overrides
        return self.defaults.replace(overrides)

    def generate(self, study: StudyInput, options: DecodingOptions | Mapping[str, Any] | None = None) -> GeneratedReport:
        """The report of one study (see :meth:`options` for how ``options`` combine with the defaults)."""
        resolved = self.options(options)
        start = time.perf_counter()
        report = self._call(study, resolved)
        timings = dict(report.timings_ms or {})
        timings.setdefault("total_ms", round((time.perf_counter() - start) * 1000.0, 1))
        report.timings_ms = {k: float(timings.get(k, 0.0)) for k in TIMING_KEYS}
        return report

    def generate_many(self, studies: list[StudyInput], options: DecodingOptions | Mapping[str, Any] | None = None,
                      ) -> list[GeneratedReport]:
        """The reports of several studies, each the one :meth:`generate` writes for it; an rrg model decodes
        them in one batched search (issue 21: a GPU needs batches; on a CPU it saves the per-step
        overhead), the other families one by one."""
        resolved = self.options(options)
        if self.family != "rrg" or len(studies) < 2:
            return [self.generate(s, resolved) for s in studies]
        reports = self.model.generate_reports(list(studies), resolved)
        for report in reports:
            report.timings_ms = {k: float((report.timings_ms or {}).get(k, 0.0)) for k in TIMING_KEYS}
        return reports

    def generate_report(self, study: StudyInput, **overrides: Any) -> GeneratedReport:
        """The :class:`crrg.reporting.ReportGenerator` protocol, so an engine goes wherever a model did."""
        return self.generate(study, overrides)

    def _call(self, study: StudyInput, o: DecodingOptions) -> GeneratedReport:
        if self.family == "rrg":
            return self.model.generate_report(study, o)
        if self.family == "blip":  # ClinicalBLIP and hub InstructBLIP read the generic fields only
            sampling = {"top_p": o.top_p, "temperature": o.temperature} if o.sample else {}
            return self.model.generate_report(study, num_beams=o.beams, max_new_tokens=o.max_new_tokens,
                                              do_sample=o.sample, **sampling)
        return self.model.generate_report(study)  # retrieval: nothing to decode

    @property
    def crrg_config(self) -> dict:
        """The model's config (``version``, ``family``, ...), as on the model."""
        return getattr(self.model, "crrg_config", None) or {}

    def to(self, device: str | torch.device) -> "ReportEngine":
        self.device = resolve_device(device)
        self.model.to(self.device)
        return self


def _device_of(model) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def load_generator(name_or_path: str | os.PathLike | None = None, *, device: str | torch.device = "auto",
                   dtype: str | torch.dtype | None = None) -> ReportEngine:
    """A report generator on ``device`` (cpu, cuda, cuda:N, auto; each torchrun rank its own GPU).

    ``name_or_path``: a bundled model name (None: the bundled ``crrg-default``), a saved folder or a hub
    id. ``dtype``: float32, float16 or bfloat16 to cast the weights to (None: as loaded). Every failure
    the user can fix is a :class:`GenerationError` with one line on what to do."""
    from crrg.models.registry import DEFAULT_MODEL, load_pretrained

    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    target = resolve_device(device)
    cast = resolve_dtype(dtype)
    try:
        model = load_pretrained(name, map_location=None)
    except GenerationError:
        raise
    except CrrgError as exc:
        raise GenerationError(str(exc)) from exc
    engine = ReportEngine(model, name)
    model.to(device=target, dtype=cast) if cast is not None else model.to(target)
    engine.device = target
    log.info("generator %s (%s) on %s", name, engine.family or type(model).__name__, target)
    return engine
