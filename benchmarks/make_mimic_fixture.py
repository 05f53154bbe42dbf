"""Generate a synthetic MIMIC-CXR-JPG + reports tree in the real layout, at any size.

Used by ``bench_mimic_prepare.py`` to time ``crrg data prepare mimic-cxr`` at full MIMIC size
(377,110 image rows, 227,835 reports) without the credentialed data. Report texts follow the real
template (FINAL REPORT, EXAMINATION, INDICATION, TECHNIQUE, COMPARISON, FINDINGS, IMPRESSION,
wrapped at ~78 columns, ``___`` de-identification) and are 500-1500 characters long. No images are
written: prepare does not open them.

    python benchmarks/make_mimic_fixture.py OUT_DIR [--studies 227835] [--images 377110]
"""

from __future__ import annotations

import argparse
import random
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

CHEXPERT_14 = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
               "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
               "Fracture", "Support Devices")

SENTENCES = [
    "The lungs are clear without focal consolidation.", "There is no pleural effusion or pneumothorax.",
    "The cardiomediastinal silhouette is within normal limits.", "Heart size is mildly enlarged.",
    "There is mild pulmonary vascular congestion.", "Patchy opacity at the left lung base may reflect atelectasis.",
    "A right internal jugular central venous catheter terminates in the mid SVC.",
    "Small bilateral pleural effusions are unchanged compared to the prior study.",
    "Degenerative changes are noted in the thoracic spine.", "No acute osseous abnormality is identified.",
    "An endotracheal tube terminates 4 cm above the carina.", "Hilar contours are normal.",
    "There is moderate pulmonary edema, slightly worse than on ___.", "Median sternotomy wires are intact.",
    "Calcification of the aortic knob is seen.", "No free air below the right hemidiaphragm.",
]
IMPRESSIONS = ["No acute cardiopulmonary process.", "Mild pulmonary edema.", "Small bilateral pleural effusions.",
               "Left basilar atelectasis; pneumonia is not excluded in the appropriate clinical setting.",
               "Lines and tubes in standard position. No pneumothorax."]
VIEWS = ["PA"] * 30 + ["AP"] * 40 + ["LATERAL"] * 25 + ["LL"] * 4 + ["", "AP AXIAL", "XTABLE LATERAL"]


def report_text(rng: random.Random) -> str:
    findings = " ".join(rng.sample(SENTENCES, rng.randint(6, 16)))
    wrap = lambda s: "\n ".join(textwrap.wrap(s, 76))  # noqa: E731
    return (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n \n"
        f" INDICATION:  ___M with {rng.choice(['cough', 'fever', 'shortness of breath', 'chest pain'])}, "
        "evaluate for pneumonia.\n \n"
        " TECHNIQUE:  Chest PA and lateral\n \n"
        f" COMPARISON:  {rng.choice(['None.', 'Chest radiograph ___.', 'Prior study from ___.'])}\n \n"
        f" FINDINGS: \n \n {wrap(findings)}\n \n"
        f" IMPRESSION: \n \n {wrap(rng.choice(IMPRESSIONS))}\n"
    )


def make_fixture(out: Path, n_studies: int, n_images: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    n_subjects = max(1, n_studies // 3)
    subjects = np.sort(nrng.choice(np.arange(10_000_000, 20_000_000), n_subjects, replace=False))
    study_subject = np.sort(nrng.integers(0, n_subjects, n_studies))
    study_ids = nrng.choice(np.arange(50_000_000, 60_000_000), n_studies, replace=False)
    # every study has >= 1 image; the rest are spread at random
    image_study = np.concatenate([np.arange(n_studies), nrng.integers(0, n_studies, n_images - n_studies)])
    dicoms = [f"{rng.getrandbits(32):08x}-{rng.getrandbits(32):08x}-{rng.getrandbits(32):08x}-"
              f"{rng.getrandbits(32):08x}-{rng.getrandbits(32):08x}" for _ in range(n_images)]
    subj_of_image = subjects[study_subject[image_study]]
    split_of_subject = nrng.choice(["train", "validate", "test"], n_subjects, p=[0.98, 0.01, 0.01])
    pd.DataFrame({"dicom_id": dicoms, "study_id": study_ids[image_study], "subject_id": subj_of_image,
                  "split": split_of_subject[study_subject[image_study]]}).to_csv(
        out / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    pd.DataFrame({"dicom_id": dicoms, "subject_id": subj_of_image, "study_id": study_ids[image_study],
                  "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
                  "ViewPosition": [rng.choice(VIEWS) for _ in range(n_images)],
                  "Rows": 3056, "Columns": 2544, "StudyDate": 21800506, "StudyTime": 213014.531}).to_csv(
        out / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    labels = nrng.choice([1.0, 0.0, -1.0, np.nan], size=(n_studies, 14), p=[0.15, 0.1, 0.05, 0.7])
    chexpert = pd.DataFrame(labels, columns=list(CHEXPERT_14))
    chexpert.insert(0, "study_id", study_ids)
    chexpert.insert(0, "subject_id", subjects[study_subject])
    chexpert.to_csv(out / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    made: set[str] = set()
    for i in range(n_studies):
        subject = str(subjects[study_subject[i]])
        folder = out / "files" / f"p{subject[:2]}" / f"p{subject}"
        if subject not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(subject)
        (folder / f"s{study_ids[i]}.txt").write_text(report_text(rng), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--studies", type=int, default=227_835)
    parser.add_argument("--images", type=int, default=377_110)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    make_fixture(args.out, args.studies, args.images, args.seed)
    print(f"fixture with {args.studies} studies / {args.images} images in {args.out} "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
