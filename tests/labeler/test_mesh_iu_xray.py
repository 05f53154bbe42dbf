"""The labeler against the MeSH terms human indexers gave the real IU X-Ray reports (issue targets)."""

import pytest

from crrg.labeler import label_reports
from crrg.labeler.mesh import MACRO_TARGET, TARGETS, is_indexed, macro_f1, mesh_observations, score_against_mesh


def test_mesh_mapping():
    assert mesh_observations(["Cardiomegaly/borderline", "Opacity/lung/base/left"]) == {"Cardiomegaly", "Lung Opacity"}
    assert mesh_observations(["Cardiac Shadow/enlarged/mild"]) == {"Cardiomegaly"}
    assert mesh_observations(["Costophrenic Angle/left/blunted"]) == {"Pleural Effusion"}
    assert mesh_observations(["Thickening/pleura/right"]) == {"Pleural Other"}
    assert mesh_observations(["Calcified Granuloma/lung/upper lobe/right"]) == set()
    assert mesh_observations(["normal"]) == {"No Finding"}
    assert not is_indexed(["No Indexing"]) and not is_indexed([])


def test_scoring_counts():
    labels = [{"Cardiomegaly": 1}, {"Cardiomegaly": -1}, {"Cardiomegaly": 0}, {"Cardiomegaly": None}]
    mesh = [["Cardiomegaly"], ["Cardiomegaly"], ["Cardiomegaly"], ["normal"]]
    strict = score_against_mesh(labels, mesh, uncertain_positive=False, observations=["Cardiomegaly"])["Cardiomegaly"]
    loose = score_against_mesh(labels, mesh, uncertain_positive=True, observations=["Cardiomegaly"])["Cardiomegaly"]
    assert (strict.tp, strict.fp, strict.fn) == (1, 0, 2)
    assert (loose.tp, loose.fp, loose.fn) == (2, 0, 1)
    assert loose.precision == 1.0 and abs(loose.recall - 2 / 3) < 1e-9


def test_targets_on_real_reports(shared_data):
    reports = shared_data / "iu_xray_reports" / "NLMCXR_reports.tgz"
    if not reports.is_file():
        pytest.skip("IU X-Ray reports not available")
    from crrg.data.iu_xray import IuXrayReader

    texts, mesh = [], []
    for rec in IuXrayReader(reports):
        terms = list(rec.meta.get("mesh_major") or [])
        if is_indexed(terms) and rec.report.strip():
            texts.append(rec.report)
            mesh.append(terms)
    assert len(texts) > 3800
    scores = score_against_mesh(label_reports(texts), mesh, uncertain_positive=True)
    table = {k: round(s.f1, 3) for k, s in scores.items()}
    for name, target in TARGETS.items():
        assert scores[name].f1 >= target, (name, table)
    assert macro_f1(scores) >= MACRO_TARGET, table
    # counting uncertain as negative must still give a useful labeler
    strict = score_against_mesh(label_reports(texts), mesh, uncertain_positive=False)
    assert macro_f1(strict) >= MACRO_TARGET, {k: round(s.f1, 3) for k, s in strict.items()}
