"""Golden tests of the shipped model on examples/: what crrg-default says about studies a reader knows."""

from __future__ import annotations

from pathlib import Path

import pytest

from crrg.reporting import StudyInput

pytestmark = pytest.mark.slow  # loading crrg-default takes 3-15 s on a busy 2-core machine

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def engine():
    from crrg.generation import load_generator

    return load_generator(device="cpu")  # None: the bundled crrg-default


def _study(name: str) -> StudyInput:
    from crrg.image import load_image

    return StudyInput(images=[load_image(EXAMPLES / f"{name}_frontal.png"), load_image(EXAMPLES / f"{name}_lateral.png")],
                      views=["PA", "LATERAL"], id=name)


def test_the_pneumothorax_study_states_a_pneumothorax(engine):
    from crrg.labeler import label_report

    report = engine.generate(_study("pneumothorax"))
    assert "pneumothorax" in report.impression.lower()
    assert label_report(report.report)["Pneumothorax"] == 1
    assert report.labels["Pneumothorax"] == 1


def test_the_normal_study_states_no_finding(engine):
    from crrg.labeler import label_report
    from crrg.observations import CHEXPERT_14

    report = engine.generate(_study("normal"))
    labels = label_report(report.report)
    positive = [n for n in CHEXPERT_14 if n != "No Finding" and labels.get(n) in (1, -1)]
    assert positive == [], report.report
    assert report.impression == "No acute cardiopulmonary process."


def test_a_batch_of_studies_gets_the_reports_each_study_gets_alone(engine):
    """generate_many decodes the studies in one search (crrg.generation.beam); no report may change."""
    names = sorted(p.name[:-len("_frontal.png")] for p in EXAMPLES.glob("*_frontal.png"))[:4]
    studies = [_study(n) for n in names]
    alone = [engine.generate(s) for s in studies]
    together = engine.generate_many(studies)
    assert len(names) >= 2 and [r.report for r in together] == [r.report for r in alone]
    assert [r.ood for r in together] == [r.ood for r in alone]
    assert all(r.timings_ms["total_ms"] > 0 for r in together)
