"""The one output format of report generation, shared by every generator, the CLI and the service.

A generator model (region-guided ``rrg``, ``blip``, retrieval baselines) implements
``generate_report(study: StudyInput, **options) -> GeneratedReport``. ``crrg report`` and
``crrg serve`` only know this protocol, so both generators produce the same JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class StudyInput:
    """One study as a generator sees it: decoded images (see :func:`crrg.image.load_image`) plus context."""

    images: list[np.ndarray]  # float32 (H, W) in [0, 1], 0 = black
    views: list[str]  # one of crrg.observations.VIEWS per image
    indication: str = ""
    id: str = ""


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

    @property
    def report(self) -> str:
        return " ".join(p for p in (self.findings.strip(), self.impression.strip()) if p)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["report"] = self.report
        return d


class ReportGenerator(Protocol):
    def generate_report(self, study: StudyInput, **options: Any) -> GeneratedReport: ...
