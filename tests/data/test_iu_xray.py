import gzip
import json
import tarfile
from pathlib import Path

import pytest

from crrg.data.iu_xray import IuXrayReader, read_split_file
from crrg.errors import InputError
from crrg.records import read_manifest, write_manifest


def openi_xml(n: int, images: list[str], findings: str = "The lungs are clear.", impression: str = "Normal chest x-XXXX.",
              mesh: tuple[str, ...] = ("normal",)) -> str:
    parents = "".join(f'<parentImage id="{i}"><figureId>F1</figureId></parentImage>' for i in images)
    terms = "".join(f"<major>{m}</major>" for m in mesh)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation><meta type="rr"/><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">Positive TB test</AbstractText>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH>{terms}<automatic>calcified granuloma</automatic></MeSH>{parents}</eCitation>"""


@pytest.fixture()
def openi(tmp_path: Path) -> Path:
    folder = tmp_path / "ecgen-radiology"
    folder.mkdir()
    (folder / "1.xml").write_text(openi_xml(1, ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]))
    (folder / "2.xml").write_text(openi_xml(2, ["CXR2_IM-0652-1001", "CXR2_IM-0652-2001"], findings="",
                                            impression="Cardiomegaly &lt;BR&gt;mild.", mesh=("Cardiomegaly/mild", "Opacity")))
    (folder / "10.xml").write_text(openi_xml(10, []))
    with tarfile.open(tmp_path / "NLMCXR_reports.tgz", "w:gz") as tar:
        tar.add(folder, arcname="ecgen-radiology")
    meta = "imageid,Patient ID,View Position,filename\nCXR1_IM-0001-3001,1,PA,x\nCXR1_IM-0001-4001,1,LL,x\nCXR2_IM-0652-1001,2,,x\nCXR2_IM-0652-2001,2,LARGE LATERAL,x\n"
    with gzip.open(tmp_path / "nlmcxr_dicom_metadata.csv.gz", "wt") as handle:
        handle.write(meta)
    split = {"train": [{"id": "2", "report": "", "image_path": []}], "val": [{"id": "CXR1_1_IM-0001"}],
             "test": [{"id": "77"}]}
    (tmp_path / "annotation.json").write_text(json.dumps(split))
    return tmp_path


def test_archive_and_folder_give_the_same_records(openi: Path):
    from_tgz = [r.to_dict() for r in IuXrayReader(openi / "NLMCXR_reports.tgz")]
    from_dir = [r.to_dict() for r in IuXrayReader(openi / "ecgen-radiology")]
    from_parent = [r.to_dict() for r in IuXrayReader(openi)]
    assert from_tgz == from_dir == from_parent
    assert [r["id"] for r in from_tgz] == ["CXR1", "CXR2", "CXR10"]  # numeric order, not file-name order


def test_sections_mesh_views_and_split(openi: Path):
    reader = IuXrayReader(openi / "NLMCXR_reports.tgz", split_file=openi / "annotation.json",
                          metadata=openi / "nlmcxr_dicom_metadata.csv.gz")
    records = {r.id: r for r in reader}
    one, two, ten = records["CXR1"], records["CXR2"], records["CXR10"]
    assert one.patient_id == "CXR1"
    assert one.indication == "Positive TB test" and one.comparison == "None."
    assert one.impression == "Normal chest x-XXXX."  # raw text, XXXX kept
    assert two.findings == "" and two.impression == "Cardiomegaly <BR>mild."
    assert two.meta["mesh_major"] == ["Cardiomegaly/mild", "Opacity"]
    assert two.meta["mesh_automatic"] == ["calcified granuloma"]
    # CXR1_1_IM-... ids in the XML match CXR1_IM-... rows of the metadata
    assert [(im.path, im.view) for im in one.images] == [("CXR1_1_IM-0001-3001.png", "PA"), ("CXR1_1_IM-0001-4001.png", "LL")]
    assert [im.view for im in two.images] == ["unknown", "LATERAL"]
    assert ten.images == []
    assert (one.split, two.split, ten.split) == ("val", "train", "unassigned")
    assert reader.notes["split_ids_without_report"] == 1  # CXR77


def test_image_folder_layouts_keep_only_existing_images(openi: Path, tmp_path: Path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "CXR1_1_IM-0001-3001.png").write_bytes(b"png")
    r2gen = tmp_path / "images" / "CXR2_IM-0652"
    r2gen.mkdir(parents=True)
    (r2gen / "1.png").write_bytes(b"png")
    out = tmp_path / "out"
    for root in (flat, tmp_path / "images"):
        reader = IuXrayReader(openi / "ecgen-radiology", images=root, manifest_dir=out)
        write_manifest(out / "m.jsonl", reader)
        records = {r.id: r for r in read_manifest(out / "m.jsonl")}
        paths = [im.path for r in records.values() for im in r.images]
        assert len(paths) == 1 and Path(paths[0]).is_file()
        assert reader.notes["images_missing"] == 3
    assert Path(paths[0]).resolve() == (r2gen / "1.png").resolve()
    assert records["CXR2"].images[0].path.endswith("1.png")


def test_kaggle_pair(tmp_path: Path):
    (tmp_path / "indiana_reports.csv").write_text(
        "uid,MeSH,Problems,image,indication,comparison,findings,impression\n"
        '1,normal,normal,Xray Chest PA and Lateral,Positive TB test,None.,"The heart is normal, lungs clear.",Normal chest x-XXXX.\n'
        "2,Cardiomegaly/borderline;Pulmonary Artery/enlarged,Cardiomegaly;Pulmonary Artery,Chest,,,,Borderline cardiomegaly.\n")
    (tmp_path / "indiana_projections.csv").write_text(
        "uid,filename,projection\n1,1_IM-0001-4001.dcm.png,Frontal\n1,1_IM-0001-3001.dcm.png,Lateral\n2,2_IM-0652-1001.dcm.png,Frontal\n")
    images = tmp_path / "images" / "images_normalized"
    images.mkdir(parents=True)
    (images / "1_IM-0001-4001.dcm.png").write_bytes(b"png")
    records = list(IuXrayReader(tmp_path / "indiana_reports.csv"))
    assert [r.id for r in records] == ["CXR1", "CXR2"]
    assert records[0].findings == "The heart is normal, lungs clear."
    assert [(im.path, im.view) for im in records[0].images] == [("1_IM-0001-4001.dcm.png", "PA"), ("1_IM-0001-3001.dcm.png", "LATERAL")]
    assert records[1].meta["mesh_major"] == ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"]
    assert records[1].meta["problems"] == ["Cardiomegaly", "Pulmonary Artery"]
    with_images = list(IuXrayReader(tmp_path / "indiana_reports.csv", images=tmp_path / "images", manifest_dir=tmp_path))
    assert [im.path for im in with_images[0].images] == ["images/images_normalized/1_IM-0001-4001.dcm.png"]


def test_bad_inputs_are_named(tmp_path: Path, openi: Path):
    (tmp_path / "bad.csv").write_text("uid,text\n1,x\n")
    with pytest.raises(InputError, match="lacks column"):
        IuXrayReader(tmp_path / "bad.csv")
    (tmp_path / "bad.tgz").write_bytes(b"not a tar")
    with pytest.raises(InputError, match="not a readable tar"):
        list(IuXrayReader(tmp_path / "bad.tgz"))
    (tmp_path / "split.json").write_text(json.dumps({"train": [{"id": "1"}], "test": [{"id": "CXR1"}]}))
    with pytest.raises(InputError, match="both"):
        read_split_file(tmp_path / "split.json")
    with pytest.raises(InputError, match="does not exist"):
        IuXrayReader(tmp_path / "missing.tgz")
    broken = tmp_path / "broken" / "ecgen-radiology"
    broken.mkdir(parents=True)
    (broken / "1.xml").write_text("<eCitation><uId id='CXR1'/>")
    with pytest.raises(InputError, match="1.xml: not valid XML"):
        IuXrayReader(broken)


def test_acceptance_on_the_real_open_i_archive(shared_data: Path, tmp_path: Path):
    iu = shared_data / "iu_xray_reports"
    reader = IuXrayReader(iu / "NLMCXR_reports.tgz", split_file=iu / "r2gen_split_annotation.json",
                          metadata=iu / "nlmcxr_dicom_metadata.csv.gz", manifest_dir=tmp_path)
    assert write_manifest(tmp_path / "iu.jsonl", reader) == 3955
    records = read_manifest(tmp_path / "iu.jsonl")
    counts = {s: sum(r.split == s for r in records) for s in ("train", "val", "test", "unassigned")}
    assert counts == {"train": 3062, "val": 382, "test": 382, "unassigned": 129}
    assert sum(len(r.images) for r in records) == 7470
    by_id = {r.id: r for r in records}
    assert by_id["CXR1"].meta["mesh_major"] == ["normal"]
    assert "XXXX" in by_id["CXR1"].impression
    views = [im.view for r in records for im in r.images]
    assert views.count("PA") == 3593 and views.count("LL") == 717
