"""Chest ImaGenome reader on small fixtures in the dataset's real layout (silver folder / zip, gold tables)."""

import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crrg.cli.main import app
from crrg.data.imagenome import (EMPTY_BOX, NO_BOX, NO_GRAPH, NO_ORIGINAL, OTHER_OBJECT, ImaGenome,
                                 WithImaGenomeRegions, parse_scene_graph)
from crrg.data.mimic_cxr import MimicCxrReader
from crrg.errors import InputError
from crrg.observations import ANATOMICAL_REGIONS
from crrg.records import read_manifest
from tests.data.test_mimic_cxr import make_mimic

runner = CliRunner()


def scene_graph(dicom: str) -> dict:
    """A scene graph shaped like Chest ImaGenome's: 29 regions + an extra object, 224-space and original boxes."""
    objects = []
    for k, name in enumerate(ANATOMICAL_REGIONS):
        x1, y1 = 10 * k, 20 + k
        objects.append({"object_id": f"{dicom}_{name}", "bbox_name": name, "x1": 1, "y1": 2, "x2": 3, "y2": 4,
                        "width": 2, "height": 2, "original_x1": x1, "original_y1": y1, "original_x2": x1 + 100,
                        "original_y2": y1 + 200, "original_width": 100, "original_height": 200})
    objects[0]["original_x1"] = -5  # right lung: clipped to 0
    del objects[1]["original_x2"]  # right upper lung zone: no original box
    objects[2]["original_x2"] = objects[2]["original_x1"]  # right mid lung zone: empty
    objects.append({"bbox_name": "left cardiophrenic angle", "original_x1": 1, "original_y1": 1, "original_x2": 5,
                    "original_y2": 5})
    attributes = [
        {"bbox_name": "right lower lung zone", "phrases": ["Patchy   opacity at the right base.", "Patchy opacity at the right base."],
         "attributes": [["anatomicalfinding|yes|lung opacity", "nlp|yes|abnormal"], ["nlp|yes|abnormal"]]},
        {"bbox_name": "cardiac silhouette", "phrases": ["Heart size is normal."], "attributes": [["nlp|yes|normal"]]},
        {"bbox_name": "right upper lung zone", "phrases": ["Apical scarring."], "attributes": [["nlp|yes|abnormal"]]},
        {"bbox_name": "left breast", "phrases": ["Breast implant."], "attributes": [["nlp|yes|abnormal"]]},
    ]
    return {"image_id": dicom, "viewpoint": "PA", "objects": objects, "attributes": attributes, "relationships": []}


def make_imagenome(root: Path, layout: str = "folder", gold: bool = False) -> Path:
    """Silver graph for d1 (PA) only: d3 (AP) has none; d2 and d5 are laterals."""
    silver = root / "silver_dataset"
    silver.mkdir(parents=True)
    graph = json.dumps(scene_graph("d1"))
    if layout == "folder":
        (silver / "scene_graph").mkdir()
        (silver / "scene_graph" / "d1_SceneGraph.json").write_text(graph)
    else:
        with zipfile.ZipFile(silver / "scene_graph.zip", "w") as archive:
            archive.writestr("scene_graph/d1_SceneGraph.json", graph)
            archive.writestr("scene_graph/", "")
    if gold:
        (root / "gold_dataset").mkdir()
        (root / "gold_dataset" / "gold_bbox_coordinate_annotations_1000images.csv").write_text(
            "image_id,x1,y1,x2,y2,width,height,bbox_name,annot_id,original_x1,original_x2,original_y1,original_y2,"
            "original_width,original_height\n"
            "d3.dcm,1,2,3,4,2,2,left lung,a,100,400,50,650,300,600\n"
            "d3.dcm,1,2,3,4,2,2,trachea,a,200,260,10,300,60,290\n")
        (root / "gold_dataset" / "gold_object_attribute_with_coordinates.txt").write_text(
            "patient_id\tstudy_id\timage_id\trow_id\tsentence\tbbox\trelation\tlabel_name\tcategoryID\tcontext\n"
            "10000032\t50000002\td3.dcm\t1\tLeft effusion.\tleft lung\t1\tabnormal\tnlp\tyes\n"
            "10000032\t50000002\td3.dcm\t1\tLeft effusion.\tleft lung\t1\tpleural effusion\tanatomicalfinding\tyes\n"
            "10000032\t50000002\td3.dcm\t2\tTrachea midline.\ttrachea\t1\tnormal\tnlp\tyes\n")
    return root


def test_parse_scene_graph_maps_boxes_sentences_and_flags():
    counts: Counter = Counter()
    regions = {r.name: r for r in parse_scene_graph(scene_graph("d1"), counts, image=2)}
    assert len(regions) == 27 and all(r.image == 2 for r in regions.values())
    assert regions["right lung"].box == [0.0, 20.0, 100.0, 220.0]  # original pixels, negative x clipped
    assert "right upper lung zone" not in regions and "right mid lung zone" not in regions
    lower = regions["right lower lung zone"]
    assert lower.sentences == ["Patchy opacity at the right base."] and lower.abnormal
    assert regions["cardiac silhouette"].sentences == ["Heart size is normal."] and not regions["cardiac silhouette"].abnormal
    assert regions["trachea"].sentences == [] and not regions["trachea"].abnormal
    assert counts == {OTHER_OBJECT: 1, NO_ORIGINAL: 1, EMPTY_BOX: 1, NO_BOX: 1}
    # A size clips the far corners too.
    clipped = {r.name: r for r in parse_scene_graph(scene_graph("d1"), Counter(), size=(150, 210))}
    assert clipped["right lung"].box == [0.0, 20.0, 100.0, 210.0]


@pytest.mark.parametrize("layout", ["folder", "zip"])
def test_reader_adds_regions_to_frontal_images_and_counts_the_rest(tmp_path: Path, layout: str):
    mimic = make_mimic(tmp_path / "mimic")
    imagenome = make_imagenome(tmp_path / "chest-imagenome" / "1.0.0", layout)
    reader = WithImaGenomeRegions(MimicCxrReader(mimic), tmp_path / "chest-imagenome")
    records = {r.id: r for r in reader}
    s1 = records["s50000001"]
    assert [im.view for im in s1.images] == ["PA", "LATERAL"]
    assert len(s1.regions) == 27 and {r.image for r in s1.regions} == {0}
    assert records["s50000002"].regions is None  # its AP image has no scene graph
    assert reader.notes["imagenome studies with regions"] == 1 and reader.notes["imagenome regions"] == 27
    assert reader.notes[f"imagenome unmapped: {NO_GRAPH}"] == 2  # d3 (AP) and d4 (view unknown)
    assert reader.notes[f"imagenome unmapped: {OTHER_OBJECT}"] == 1
    assert reader.notes["studies"] == 4  # the MIMIC-CXR reader's own notes are kept
    assert ImaGenome(imagenome).root == imagenome


def test_gold_annotations_replace_silver_for_their_images(tmp_path: Path):
    mimic = make_mimic(tmp_path / "mimic")
    make_imagenome(tmp_path / "ig", gold=True)
    records = {r.id: r for r in WithImaGenomeRegions(MimicCxrReader(mimic), tmp_path / "ig")}
    gold = {r.name: r for r in records["s50000002"].regions}
    assert gold["left lung"].box == [100.0, 50.0, 400.0, 650.0]
    assert gold["left lung"].sentences == ["Left effusion."] and gold["left lung"].abnormal
    assert gold["trachea"].sentences == ["Trachea midline."] and not gold["trachea"].abnormal
    silver_only = {r.id: r for r in WithImaGenomeRegions(MimicCxrReader(mimic), tmp_path / "ig", use_gold=False)}
    assert silver_only["s50000002"].regions is None


def test_cli_prepare_mimic_with_imagenome(tmp_path: Path):
    mimic = make_mimic(tmp_path / "mimic")
    make_imagenome(tmp_path / "ig", "zip")
    out = tmp_path / "out" / "m.jsonl"
    result = runner.invoke(app, ["data", "prepare", "mimic-cxr", "--root", str(mimic), "--imagenome", str(tmp_path / "ig"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "imagenome regions: 27" in result.output and "frontal image without scene graph: 2" in result.output
    records = {r.id: r for r in read_manifest(out)}
    assert len(records["s50000001"].regions) == 27


def test_folder_without_imagenome_data_is_a_clear_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="--imagenome"):
        ImaGenome(tmp_path / "empty")
    mimic = make_mimic(tmp_path / "mimic")
    result = runner.invoke(app, ["data", "prepare", "mimic-cxr", "--root", str(mimic), "--imagenome",
                                 str(tmp_path / "empty"), "--out", str(tmp_path / "m.jsonl")])
    # (the CLI's entry point prints a CrrgError as one line with exit code 2: tests/data/test_cli_data.py)
    assert isinstance(result.exception, InputError) and not (tmp_path / "m.jsonl").exists()


def test_clip_boxes_reads_the_jpg_size(tmp_path: Path):
    from PIL import Image

    mimic = make_mimic(tmp_path / "mimic")
    make_imagenome(tmp_path / "ig")
    jpg = mimic / "files" / "p10" / "p10000032" / "s50000001" / "d1.jpg"
    jpg.parent.mkdir(parents=True)
    Image.new("L", (150, 210)).save(jpg)
    reader = WithImaGenomeRegions(MimicCxrReader(mimic, manifest_dir=tmp_path), tmp_path / "ig", clip_to_images=True,
                                  manifest_dir=tmp_path)
    regions = {r.name: r for r in next(iter(reader)).regions}
    assert regions["right lung"].box == [0.0, 20.0, 100.0, 210.0]
