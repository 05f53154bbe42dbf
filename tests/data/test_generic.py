import json
from pathlib import Path

import pytest

from crrg.data.generic import GenericReader
from crrg.errors import InputError
from crrg.records import read_manifest, write_manifest


def test_csv_with_report_text_labels_split_and_views(tmp_path: Path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "table.csv").write_text(
        "ID,image,report,split,view,Cardiomegaly,Pleural Effusion,patient_id\n"
        'a1,imgs/a_pa.png;imgs/a_lat.png,"INDICATION: cough\nFINDINGS: Big heart.\nIMPRESSION: Cardiomegaly.",validate,PA;LATERAL,1.0,0,p1\n'
        "a2,/abs/b.png,Lungs are clear.,,,,-1,\n")
    out = tmp_path / "out" / "m.jsonl"
    reader = GenericReader(tmp_path / "table.csv", manifest_dir=out.parent)
    write_manifest(out, reader)
    a1, a2 = read_manifest(out)
    assert a1.id == "a1" and a1.patient_id == "p1" and a1.split == "val"
    assert (a1.indication, a1.findings, a1.impression) == ("cough", "Big heart.", "Cardiomegaly.")
    assert [im.view for im in a1.images] == ["PA", "LATERAL"]
    assert Path(a1.images[0].path).resolve() == (tmp_path / "imgs" / "a_pa.png").resolve()
    assert a1.labels["Cardiomegaly"] == 1 and a1.labels["Pleural Effusion"] == 0 and a1.labels["Edema"] is None
    assert a2.findings == "Lungs are clear." and a2.split == "unassigned" and a2.images[0].path == "/abs/b.png"
    assert a2.labels["Pleural Effusion"] == -1 and a2.patient_id is None


def test_jsonl_with_image_list_findings_columns_and_chosen_columns(tmp_path: Path):
    rows = [{"frontal": "f1.png", "lateral": "l1.png", "findings": "Clear.", "impression": "Normal.", "report": "ignored"},
            {"frontal": "f2.png", "lateral": None, "text": "x"}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = list(GenericReader(tmp_path / "t.jsonl", image_columns=["frontal", "lateral"], report_column="report",
                                 images_root="/data", manifest_dir=None))
    assert [im.path for im in records[0].images] == ["/data/f1.png", "/data/l1.png"]
    assert (records[0].findings, records[0].impression) == ("Clear.", "Normal.")  # own columns win
    assert records[1].id == "row2" and records[1].findings == ""
    listed = tmp_path / "list.jsonl"
    listed.write_text(json.dumps({"id": 7, "images": ["a.png", "b.png"], "report": "FINDINGS: ok"}) + "\n")
    (record,) = GenericReader(listed, images_root=tmp_path, manifest_dir=tmp_path)
    assert record.id == "7" and [im.path for im in record.images] == ["a.png", "b.png"] and record.findings == "ok"


def test_errors_name_the_columns_and_lines(tmp_path: Path):
    (tmp_path / "t.csv").write_text("file,notes\nx.png,hello\n")
    with pytest.raises(InputError, match=r"neither image columns .* its columns are \['file', 'notes'\]"):
        GenericReader(tmp_path / "t.csv")
    with pytest.raises(InputError, match=r"no image column\(s\) \['frontal'\]"):
        GenericReader(tmp_path / "t.csv", image_columns=["frontal"])
    with pytest.raises(InputError, match="no report column 'report'"):
        GenericReader(tmp_path / "t.csv", image_columns=["file"], report_column="report")
    (tmp_path / "bad.csv").write_text("image,report,Edema\na.png,x,yes\n")
    with pytest.raises(InputError, match=r"bad.csv:2: label column 'Edema' has value 'yes'"):
        list(GenericReader(tmp_path / "bad.csv"))
    (tmp_path / "views.csv").write_text("image,view\na.png;b.png;c.png,PA;AP\n")
    with pytest.raises(InputError, match="2 views for 3 images"):
        list(GenericReader(tmp_path / "views.csv"))
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png"}\n{oops\n')
    with pytest.raises(InputError, match="bad.jsonl:2: not valid JSON"):
        GenericReader(tmp_path / "bad.jsonl")
