import gzip
import zipfile
from pathlib import Path

import pytest

from crrg.data.mimic_cxr import MimicCxrReader
from crrg.errors import InputError
from crrg.observations import CHEXPERT_14
from crrg.records import read_manifest, write_manifest

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___M with cough
 
 COMPARISON:  ___.
 
 FINDINGS: 
 
 Mild cardiomegaly.  No pleural
 effusion.
 
 IMPRESSION: 
 
 Mild cardiomegaly.
"""


def write_gz(path: Path, text: str) -> None:
    with gzip.open(path, "wt") as handle:
        handle.write(text)


def make_mimic(root: Path, with_metadata: bool = True) -> Path:
    """A four-study MIMIC-CXR-JPG tree in the real layout; study 50000003 has no report file."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [("d1", 50000001, 10000032, "train"), ("d2", 50000001, 10000032, "train"),
            ("d3", 50000002, 10000032, "validate"), ("d4", 50000003, 11000001, "test"),
            ("d5", 50000004, 11000001, "test")]
    write_gz(root / "mimic-cxr-2.0.0-split.csv.gz",
             "dicom_id,study_id,subject_id,split\n" + "".join(f"{d},{s},{p},{sp}\n" for d, s, p, sp in rows))
    if with_metadata:
        views = {"d1": "PA", "d2": "LATERAL", "d3": "AP", "d4": "", "d5": "XTABLE LATERAL"}
        write_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz",
                 "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n"
                 + "".join(f"{d},{p},{s},CHEST,{views[d]},3056,2544\n" for d, s, p, _ in rows))
    header = "subject_id,study_id," + ",".join(CHEXPERT_14) + "\n"
    labels = {50000001: {"Cardiomegaly": "1.0", "Pleural Effusion": "0.0", "Edema": "-1.0"},
              50000002: {"No Finding": "1.0"}}
    lines = [f"{10000032},{study}," + ",".join(values.get(n, "") for n in CHEXPERT_14) + "\n" for study, values in labels.items()]
    write_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", header + "".join(lines))
    reports = root / "files" / "p10" / "p10000032"
    reports.mkdir(parents=True)
    (reports / "s50000001.txt").write_text(REPORT)
    (reports / "s50000002.txt").write_text("FINAL REPORT\n IMPRESSION: No acute process.\n")
    other = root / "files" / "p11" / "p11000001"
    other.mkdir(parents=True)
    (other / "s50000004.txt").write_text("Portable chest. Lungs are clear.\n")
    return root


def test_records_sections_labels_views_and_paths(tmp_path: Path):
    root = make_mimic(tmp_path / "mimic")
    out = tmp_path / "manifests" / "m.jsonl"
    reader = MimicCxrReader(root, manifest_dir=out.parent)
    assert len(reader) == 4
    assert write_manifest(out, reader) == 4
    records = {r.id: r for r in read_manifest(out)}
    first = records["s50000001"]
    assert first.patient_id == "p10000032" and first.split == "train"
    assert first.indication == "___M with cough" and first.comparison == "___."
    assert first.findings == "Mild cardiomegaly. No pleural effusion."
    assert first.impression == "Mild cardiomegaly."
    assert first.labels["Cardiomegaly"] == 1 and first.labels["Pleural Effusion"] == 0 and first.labels["Edema"] == -1
    assert first.labels["Pneumonia"] is None
    assert [im.view for im in first.images] == ["PA", "LATERAL"]
    assert Path(first.images[0].path).resolve() == (root / "files/p10/p10000032/s50000001/d1.jpg").resolve()
    assert records["s50000002"].split == "val" and records["s50000002"].labels["No Finding"] == 1
    assert records["s50000002"].impression == "No acute process."
    missing = records["s50000003"]
    assert missing.report == "" and missing.split == "test" and missing.images[0].view == "unknown"
    assert all(v is None for v in missing.labels.values())  # not in the chexpert table
    assert records["s50000004"].findings == "Portable chest. Lungs are clear."
    assert records["s50000004"].images[0].view == "LATERAL"
    assert reader.notes["reports_missing"] == 1
    assert (reader.notes["train"], reader.notes["val"], reader.notes["test"]) == (1, 1, 2)


def test_separate_reports_folder_and_missing_metadata(tmp_path: Path):
    root = make_mimic(tmp_path / "jpg", with_metadata=False)
    reports = tmp_path / "reports"
    reports.mkdir()
    (root / "files").rename(reports / "files")
    records = list(MimicCxrReader(root, reports=reports))
    assert records[0].findings == "Mild cardiomegaly. No pleural effusion."
    assert {im.view for r in records for im in r.images} == {"unknown"}
    # PhysioNet's mimic-cxr-reports.zip, read in place
    with zipfile.ZipFile(tmp_path / "mimic-cxr-reports.zip", "w") as archive:
        for file in sorted((reports / "files").rglob("*.txt")):
            archive.write(file, file.relative_to(reports).as_posix())
    reader = MimicCxrReader(root, reports=tmp_path / "mimic-cxr-reports.zip")
    from_zip = list(reader)
    assert [r.to_dict() for r in from_zip] == [r.to_dict() for r in records]
    assert reader.notes["reports_missing"] == 1


def test_missing_tables_and_columns_are_named(tmp_path: Path):
    with pytest.raises(InputError, match="mimic-cxr-2.0.0-split.csv.gz"):
        MimicCxrReader(tmp_path)
    write_gz(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", "dicom_id,study_id,split\nd1,1,train\n")
    with pytest.raises(InputError, match=r"lacks column\(s\) \['subject_id'\]"):
        MimicCxrReader(tmp_path)
    write_gz(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", "dicom_id,study_id,subject_id,split\nd1,1,10,holdout\n")
    with pytest.raises(InputError, match="holdout"):
        MimicCxrReader(tmp_path)
    write_gz(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", "dicom_id,study_id,subject_id,split\nd1,1,10,train\n")
    write_gz(tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz",
             "subject_id,study_id," + ",".join(CHEXPERT_14) + "\n10,1,2.0" + "," * 13 + "\n")
    with pytest.raises(InputError, match="study 1 has 'No Finding' = 2.0"):
        MimicCxrReader(tmp_path)
    (tmp_path / "bad.zip").write_bytes(b"nope")
    with pytest.raises(InputError, match="not a readable zip"):
        MimicCxrReader(tmp_path, reports=tmp_path / "bad.zip")
