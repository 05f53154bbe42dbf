"""The one output format of report generation, shared by every generator, the CLI and the service.

A generator model (region-guided ``rrg``, ``blip``, retrieval baselines) implements
``generate_report(study: StudyInput, **options) -> GeneratedReport``; :mod:`crrg.generation` wraps it
in an engine (device, decoding options, one error class) that ``crrg report``, ``crrg serve`` and batch
runs use, so every generator produces the same JSON, with the same :data:`TIMING_KEYS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

# The keys of GeneratedReport.timings_ms, the same for every generator: reading the images (detector,
# image tower, retrieval embedding), writing the text (decoding, index search), putting the report
# together (assembly, labelling), and the whole call.
TIMING_KEYS = ("encode_ms", "generate_ms", "assemble_ms", "total_ms")


def timings(encode_s: float = 0.0, generate_s: float = 0.0, assemble_s: float = 0.0,
            total_s: float | None = None) -> dict[str, float]:
    """Durations in seconds -> the :data:`TIMING_KEYS` dict in milliseconds (total: the sum when not given)."""
    total = encode_s + generate_s + assemble_s if total_s is None else total_s
    return {k: round(v * 1000.0, 1) for k, v in zip(TIMING_KEYS, (encode_s, generate_s, assemble_s, total))}


@dataclass
class StudyInput:
    """One study as a generator sees it: decoded images (see :func:`crrg.image.load_image`) plus context."""

    images: list[np.ndarray]  # float32 (H, W) in [0, 1], 0 = black
    views: list[str]  # one of crrg.observations.VIEWS per image
    indication: str = ""
    id: str = ""

    def frontal_index(self, required: bool = True) -> int:
        """Index of the frontal image (:func:`crrg.observations.frontal_index`, the one rule). A study of
        lateral films only is refused when ``required``, else its first image is used."""
        from crrg.errors import InputError
        from crrg.observations import frontal_index

        if not self.images:
            raise InputError("the study has no images")
        index = frontal_index(self.views, fallback=None if required else 0)
        if index is None:
            raise InputError("the study has only lateral images; a frontal (PA/AP) image is needed")
        return index


@dataclass
class SentenceOut:
    text: str
    region: str | None = None  # anatomical region name, when the generator is region-guided
    image: int = 0  # index into StudyInput.images
    box: list[float] | None = None  # [x1, y1, x2, y2] in pixels of that image


@dataclass
class RegionOut:
    name: str
    image: int
    box: list[float]
    abnormal_probability: float
    selected: bool


@dataclass
class GeneratedReport:
    findings: str
    impression: str
    sentences: list[SentenceOut] = field(default_factory=list)
    regions: list[RegionOut] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)  # CheXpert-14 finding probabilities
    labels: dict[str, int | None] = field(default_factory=dict)  # thresholded / labeler output
    model: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    # How unlike the model's training films the study's film is (crrg.ood, docs/ood.md): score,
    # threshold, unreliable, percentile; None for a model without OOD statistics.
    ood: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)  # what the reader must know (an unreliable report)

    @property
    def report(self) -> str:
        return " ".join(p for p in (self.findings.strip(), self.impression.strip()) if p)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["report"] = self.report
        return d


class ReportGenerator(Protocol):
    def generate_report(self, study: StudyInput, **options: Any) -> GeneratedReport: ...
