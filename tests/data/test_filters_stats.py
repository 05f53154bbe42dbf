import pytest

from crrg.data.filters import apply_filters, parse_views
from crrg.data.stats import compute_stats
from crrg.errors import InputError
from crrg.records import ImageRef, StudyRecord


def records():
    return [
        StudyRecord(id="a", patient_id="p1", images=[ImageRef("a1.png", "PA"), ImageRef("a2.png", "LL")], split="train",
                    findings="one two three", impression="four", labels={"Cardiomegaly": 1, "Edema": 0}),
        StudyRecord(id="b", patient_id="p1", images=[ImageRef("b.png", "LATERAL")], split="train", findings="x y"),
        StudyRecord(id="c", patient_id="p2", images=[], split="test", labels={"Cardiomegaly": -1}),
    ]


def test_parse_views():
    assert parse_views("frontal") == ("PA", "AP")
    assert parse_views("pa, lateral") == ("PA", "LATERAL", "LL")
    assert parse_views(None) is None
    with pytest.raises(InputError, match="'oblique' is not one of"):
        parse_views("oblique")


def test_filters_drop_images_and_studies():
    kept = list(apply_filters(records(), views=("PA", "AP")))
    assert [r.id for r in kept] == ["a"] and [im.path for im in kept[0].images] == ["a1.png"]
    assert [r.id for r in apply_filters(records(), with_report=True)] == ["a", "b"]
    assert [r.id for r in apply_filters(records(), with_images=True)] == ["a", "b"]


def test_stats_counts_views_labels_and_lengths():
    stats = compute_stats(records())
    assert (stats.studies, stats.patients, stats.images) == (3, 2, 3)
    assert stats.splits == {"train": 2, "test": 1}
    assert stats.views == {"PA": 1, "LATERAL": 1, "LL": 1}
    assert stats.views_per_split["test"] == {}
    cardio = stats.labels["Cardiomegaly"]
    assert (cardio.positive, cardio.negative, cardio.uncertain, cardio.missing) == (1, 0, 1, 1)
    assert cardio.prevalence == pytest.approx(1 / 3)
    assert stats.labels["Fracture"].prevalence is None  # never labelled: not "0 %"
    assert stats.studies_without_report == 1 and stats.studies_without_images == 1
    assert stats.report_words.count == 2 and stats.report_words.mean == 3.0 and stats.report_words.median == 3.0
    assert stats.report_words.max == 4
    d = stats.to_dict()
    assert d["labels"]["Cardiomegaly"]["prevalence"] == pytest.approx(1 / 3)


def test_manifest_writer_keeps_unicode_meta_and_regions(tmp_path):
    from crrg.errors import ManifestError
    from crrg.records import Region, read_manifest, write_manifest

    recs = records()
    recs[0].meta = {"mesh_major": ["Cardiomegaly/mild"], "note": "ünïcode"}
    recs[0].regions = [Region(name="right lung", image=0, box=[1.0, 2.0, 30.0, 40.0], abnormal=True, sentences=["s"])]
    assert write_manifest(tmp_path / "a.jsonl", recs) == 3
    assert "ünïcode" in (tmp_path / "a.jsonl").read_text(encoding="utf-8")  # not \u-escaped
    back = read_manifest(tmp_path / "a.jsonl", resolve_paths=False)
    assert [r.id for r in back] == [r.id for r in recs]
    assert back[0].meta == recs[0].meta and back[0].regions == recs[0].regions
    assert all(b.labels[k] == v for b, r in zip(back, recs) for k, v in r.labels.items())
    with pytest.raises(ManifestError, match="duplicate study id 'a'"):
        write_manifest(tmp_path / "c.jsonl", [recs[0], recs[0]])
    assert not (tmp_path / "c.jsonl").exists()


def test_view_filter_keeps_regions_on_their_image():
    from crrg.records import Region

    box = [0.0, 0.0, 10.0, 10.0]
    record = StudyRecord(id="s", images=[ImageRef("lat.jpg", "LATERAL"), ImageRef("pa.jpg", "PA")],
                         regions=[Region("trachea", 1, box, sentences=["Midline."]), Region("spine", 0, box)])
    (kept,) = apply_filters([record], views=("PA", "AP"))
    assert [im.path for im in kept.images] == ["pa.jpg"]
    assert [(r.name, r.image) for r in kept.regions] == [("trachea", 0)]
    only_lateral = StudyRecord(id="t", images=[ImageRef("pa.jpg", "PA"), ImageRef("lat.jpg", "LATERAL")],
                               regions=[Region("spine", 1, box)])
    (kept,) = apply_filters([only_lateral], views=("PA",))
    assert kept.regions is None
