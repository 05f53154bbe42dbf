"""List the unlabelled real films crrg-default's synthetic-vs-real discriminant is fitted on.

    python scripts/real_domain_films.py ../shared/data > real_films.txt
    python -m crrg.ood domain --model src/crrg/models/pretrained/crrg-default \
        --data SYNTH/manifest.jsonl --fit-split train --real real_films.txt

NIH ``train/`` (never ``valid/``, the real benchmark's test split) and the COVID films of one half of
its patients (a patient = source, age and sex, the key ``benchmarks/bench_real_boxes.py`` uses; halves
by a seeded shuffle), so that the other half stays unseen and measures how the discriminant carries to
films it never saw. No label of any film is read; only pixels.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 0


def covid_fit_half(covid: Path) -> list[Path]:
    rows = [json.loads(line) for line in (covid / "metadata.jsonl").read_text().splitlines() if line.strip()]
    key = lambda r: f"{r.get('source')}|{r.get('age')}|{r.get('sex')}"  # noqa: E731
    patients = sorted({key(r) for r in rows})
    random.Random(SEED).shuffle(patients)
    fit = set(patients[: len(patients) // 2])
    return [covid / r["image"] for r in rows if key(r) in fit]


def main(argv: list[str]) -> int:
    shared = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "shared" / "data"
    nih = sorted((shared / "nih1000_64px" / "train").rglob("*.png"))
    films = [*nih, *covid_fit_half(shared / "covid_cxr")]
    print("\n".join(str(p.resolve()) for p in films))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
