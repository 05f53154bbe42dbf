"""Generate a full-size synthetic Chest ImaGenome silver set (+ matching MIMIC-CXR tables) in the real layout.

Used by ``bench_imagenome.py`` to time ``crrg data prepare mimic-cxr --imagenome`` at the real size
(243,324 silver scene graphs, one per frontal image; 227,835 studies) without the credentialed data.
Each graph is shaped like a real one: 36 objects (the 29 regions crrg uses and 7 it does not) with
224-space and original-pixel boxes and the same keys, 2-5 report sentences related to their
regions (:data:`PHRASES`) with ``category|yes/no|name`` attribute lists, a few relationships; written as compact JSON
(the real files are indented, which changes only their size on disk). The MIMIC-CXR side is the
split and metadata tables (frontal images with graphs, plus a lateral for 60 % of the studies);
no reports and no images are written, so prepare counts the reports as missing.

    python benchmarks/make_imagenome_fixture.py /work/data/imagenome_full [--graphs 243324] [--zip]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import time
import zipfile
from pathlib import Path

REGIONS = ("right lung", "right upper lung zone", "right mid lung zone", "right lower lung zone", "right hilar structures",
           "right apical zone", "right costophrenic angle", "right hemidiaphragm", "left lung", "left upper lung zone",
           "left mid lung zone", "left lower lung zone", "left hilar structures", "left apical zone",
           "left costophrenic angle", "left hemidiaphragm", "trachea", "spine", "right clavicle", "left clavicle",
           "aortic arch", "mediastinum", "upper mediastinum", "svc", "cardiac silhouette", "cavoatrial junction",
           "right atrium", "carina", "abdomen")
EXTRA = ("right cardiophrenic angle", "left cardiophrenic angle", "left cardiac silhouette", "right cardiac silhouette",
         "left upper abdomen", "right upper abdomen", "left arm")
# MIMIC-style sentences with the regions a Chest ImaGenome scene graph relates them to, hand-labelled in
# the dataset's style (the named anatomy, the default site of a finding named without anatomy, and the
# parent lung of a lung zone). Written for this fixture: these are not pairs copied from the dataset.
PHRASES: list[tuple[str, tuple[str, ...]]] = [
    ("There is a small right pleural effusion.", ("right costophrenic angle", "right lung")),
    ("Small bilateral pleural effusions are unchanged.", ("right costophrenic angle", "left costophrenic angle", "right lung", "left lung")),
    ("Patchy opacity at the left base may reflect atelectasis.", ("left lower lung zone", "left lung")),
    ("Bibasilar atelectasis.", ("right lower lung zone", "left lower lung zone", "right lung", "left lung")),
    ("Right lower lobe consolidation concerning for pneumonia.", ("right lower lung zone", "right lung")),
    ("Left upper lobe opacity.", ("left upper lung zone", "left lung")),
    ("The heart size is mildly enlarged.", ("cardiac silhouette",)),
    ("Heart size is normal.", ("cardiac silhouette",)),
    ("The cardiomediastinal silhouette is within normal limits.", ("cardiac silhouette", "mediastinum")),
    ("Mediastinal contours are normal.", ("mediastinum",)),
    ("The lungs are clear.", ("right lung", "left lung")),
    ("No pneumothorax is seen.", ("right lung", "left lung", "right apical zone", "left apical zone")),
    ("Small left apical pneumothorax.", ("left apical zone", "left lung")),
    ("Mild pulmonary vascular congestion.", ("right hilar structures", "left hilar structures", "right lung", "left lung")),
    ("Hilar contours are unremarkable.", ("right hilar structures", "left hilar structures")),
    ("The aortic knob is calcified.", ("aortic arch",)),
    ("A right IJ catheter terminates in the mid SVC.", ("svc",)),
    ("Endotracheal tube tip is 4 cm above the carina.", ("trachea", "carina")),
    ("Degenerative changes of the thoracic spine.", ("spine",)),
    ("Blunting of the left costophrenic angle.", ("left costophrenic angle", "left lung")),
    ("Elevation of the right hemidiaphragm.", ("right hemidiaphragm",)),
    ("Widening of the upper mediastinum.", ("upper mediastinum", "mediastinum")),
    ("No free air below the diaphragm.", ("abdomen", "right hemidiaphragm", "left hemidiaphragm")),
    ("Old fracture of the left clavicle.", ("left clavicle",)),
]
ATTRS = [["anatomicalfinding|yes|pleural effusion", "nlp|yes|abnormal"], ["anatomicalfinding|yes|atelectasis",
         "anatomicalfinding|yes|lung opacity", "nlp|yes|abnormal"], ["nlp|yes|normal"],
         ["anatomicalfinding|no|pneumothorax", "nlp|yes|normal"], ["tubesandlines|yes|picc", "nlp|yes|abnormal"]]


def scene_graph(dicom: str, study: int, subject: int, rng: random.Random) -> dict:
    width, height = rng.randint(2000, 3056), rng.randint(2000, 3056)
    ratio = 224 / max(width, height)
    objects = []
    for name in REGIONS + EXTRA:
        x1, y1 = rng.uniform(0, width * 0.7), rng.uniform(0, height * 0.7)
        x2, y2 = x1 + rng.uniform(50, width * 0.3), y1 + rng.uniform(50, height * 0.3)
        box = [round(v * ratio) for v in (x1, y1, x2, y2)]
        objects.append({"object_id": f"{dicom}_{name}", "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
                        "width": box[2] - box[0], "height": box[3] - box[1], "bbox_name": name,
                        "synsets": ["C0000000"], "name": name.title(), "original_x1": round(x1), "original_y1": round(y1),
                        "original_x2": round(x2), "original_y2": round(y2), "original_width": round(x2 - x1),
                        "original_height": round(y2 - y1)})
    by_region: dict[str, list[str]] = {}
    for phrase, names in rng.sample(PHRASES, rng.randint(2, 5)):
        for name in names:
            by_region.setdefault(name, []).append(phrase)
    if rng.random() < 0.3:  # a description of an object crrg has no region for
        by_region.setdefault(rng.choice(EXTRA), []).append("Left breast implant.")
    attributes = []
    for name, phrases in by_region.items():
        n = len(phrases)
        attrs = [rng.choice(ATTRS) for _ in range(n)]
        attributes.append({name: True, "bbox_name": name, "synsets": ["C0000000"], "name": name.title(),
                           "attributes": attrs, "attributes_ids": [["C0000000"] * len(a) for a in attrs],
                           "phrases": phrases, "phrase_IDs": [f"{study}|{i}" for i in range(n)],
                           "sections": ["finalreport"] * n, "comparison_cues": [[] for _ in range(n)],
                           "temporal_cues": [[] for _ in range(n)], "severity_cues": [[] for _ in range(n)],
                           "texture_cues": [[] for _ in range(n)], "object_id": f"{dicom}_{name}"})
    relationships = [{"relationship_id": f"{dicom}_{study}_{i}", "predicate": "['No status change']",
                      "synsets": ["C0000000"], "relationship_names": ["comparison|yes|no change"],
                      "relationship_contexts": [1.0], "phrase": rng.choice(PHRASES)[0], "attributes": [],
                      "bbox_name": rng.choice(REGIONS), "subject_id": f"{dicom}_x", "object_id": f"{dicom}_y"}
                     for i in range(rng.randint(0, 3))]
    return {"image_id": dicom, "viewpoint": rng.choice(["PA", "AP"]), "patient_id": subject, "study_id": study,
            "gender": rng.choice("MF"), "age_decile": "60-70", "reason_for_exam": "___M with cough.",
            "StudyOrder": 1, "StudyDateTime": "2180-01-01 00:00:00", "objects": objects,
            "attributes": attributes, "relationships": relationships}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--graphs", type=int, default=243_324, help="frontal images with a scene graph")
    parser.add_argument("--studies", type=int, default=227_835)
    parser.add_argument("--zip", action="store_true", help="write silver_dataset/scene_graph.zip instead of the folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    studies = min(args.studies, args.graphs)
    silver = args.out / "chest-imagenome" / "silver_dataset"
    silver.mkdir(parents=True, exist_ok=True)
    mimic = args.out / "mimic-cxr-jpg"
    mimic.mkdir(parents=True, exist_ok=True)
    archive = zipfile.ZipFile(silver / "scene_graph.zip", "w", zipfile.ZIP_DEFLATED) if args.zip else None
    folder = silver / "scene_graph"
    if archive is None:
        folder.mkdir(exist_ok=True)
    rows, views = [], []
    t0 = time.perf_counter()
    for i in range(args.graphs):
        study_index = i if i < studies else rng.randrange(studies)
        study, subject = 50_000_000 + study_index, 10_000_000 + study_index // 2
        dicom = f"{i:08x}-{study_index:08x}-imgn"
        text = json.dumps(scene_graph(dicom, study, subject, rng), separators=(",", ":"))
        if archive is not None:
            archive.writestr(f"scene_graph/{dicom}_SceneGraph.json", text)
        else:
            (folder / f"{dicom}_SceneGraph.json").write_text(text)
        rows.append((dicom, study, subject))
        views.append(rng.choice(["PA", "AP"]))
        if i < studies and rng.random() < 0.6:
            rows.append((f"{i:08x}-{study_index:08x}-lat", study, subject))
            views.append("LATERAL")
        if (i + 1) % 20_000 == 0:
            print(f"{i + 1} graphs, {time.perf_counter() - t0:.0f} s", flush=True)
    if archive is not None:
        archive.close()
    split = {s: ("test" if s % 50 == 0 else "validate" if s % 50 == 1 else "train") for _, s, _ in rows}
    with gzip.open(mimic / "mimic-cxr-2.0.0-split.csv.gz", "wt") as handle:
        handle.write("dicom_id,study_id,subject_id,split\n")
        handle.writelines(f"{d},{s},{p},{split[s]}\n" for d, s, p in rows)
    with gzip.open(mimic / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as handle:
        handle.write("dicom_id,subject_id,study_id,ViewPosition,Rows,Columns\n")
        handle.writelines(f"{d},{p},{s},{v},3056,2544\n" for (d, s, p), v in zip(rows, views))
    print(f"wrote {args.graphs} scene graphs and {len(rows)} image rows under {args.out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
