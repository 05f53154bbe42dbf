"""``crrg label``: CheXpert-14 labels for a JSONL of reports with the rule-based labeler."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterator

import typer

from crrg.cli.common import info, progress


def _read_reports(path: Path, field: str) -> Iterator[tuple[dict, str]]:
    """Yield (line object, report text); a manifest line without ``field`` gives findings + impression."""
    from crrg.errors import InputError
    from crrg.io import iter_jsonl
    from crrg.records import report_of_line

    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object like {{\"id\": ..., \"{field}\": ...}}")
        if lineno == 1 and "crrg_manifest" in obj:
            continue
        if "id" not in obj:
            raise InputError(f"{path}:{lineno}: missing \"id\"")
        text = report_of_line(obj, field)
        if text is None:
            raise InputError(f"{path}:{lineno}: missing \"{field}\" (or findings/impression)")
        if not isinstance(text, str):
            raise InputError(f"{path}:{lineno}: \"{field}\" must be a string, not {type(text).__name__}")
        yield obj, text


def label_cmd(
    source: Path = typer.Argument(..., help="JSONL with {\"id\", \"report\"} per line (a crrg manifest works too)."),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL to write: each input line plus \"labels\"."),
    field: str = typer.Option("report", "--field", help="Name of the report text field."),
) -> None:
    """Label reports with the 14 CheXpert observations: 1 positive, 0 negative, -1 uncertain, null not mentioned."""
    from crrg.errors import InputError
    from crrg.io import atomic_open
    from crrg.labeler import label_report
    from crrg.observations import CHEXPERT_14

    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name")
    if out.resolve() == source.resolve():
        raise InputError("--out must differ from the input file")
    if not source.is_file():
        raise InputError(f"{source} does not exist")
    with open(source, encoding="utf-8") as probe:
        total = sum(1 for line in probe if line.strip())
    positives: Counter = Counter()
    n = 0
    seen: set = set()
    with atomic_open(out, "w") as handle:
        for obj, text in progress(_read_reports(source, field), total=total, description="labelling"):
            if obj["id"] in seen:
                raise InputError(f"{source}: id {obj['id']!r} occurs more than once")
            seen.add(obj["id"])
            labels = label_report(text)
            obj["labels"] = labels
            handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
            positives.update(name for name, v in labels.items() if v == 1)
            n += 1
    summary = ", ".join(f"{name} {positives[name]}" for name in CHEXPERT_14 if positives[name])
    info(f"labelled {n} reports -> {out}" + (f"; positive: {summary}" if summary else ""))


def register(app: typer.Typer) -> None:
    app.command("label")(label_cmd)
