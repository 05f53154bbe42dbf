"""ReXrank (rexrank.ai) in and out: its input JSON, its submission JSON, its ground truth.

ReXrank's layout (``data/<dataset>/ReXRank_<Dataset>_test.json`` in rajpurkarlab/ReXrank) is one JSON
object keyed by study id; each entry has ``image_path`` (a list, relative to an image root the
evaluator passes separately; MIMIC-CXR's start with "/p10/..."), ``key_image_path``,
``frontal_lateral`` (a view per image: "Frontal" / "Lateral" for IU X-Ray, "postero-anterior",
"antero-posterior", "left lateral", ... for MIMIC-CXR), ``context`` (age, sex, indication,
comparison), ``section_findings`` and ``section_impression`` (NaN when absent), ``report`` and
``split``; its example prediction file uses ``findings`` / ``impression`` instead. A model's
inference script is run as ``inference.py <input_json> <output_json> <img_root_dir>`` and writes the
same object with a ``model_prediction`` text added to every entry (ReXrank's ``prediction.json``).
ReXrank scores that prediction against ``"Findings: {findings} Impression: {impression}"``, where a
missing section reads ``None`` (its script formats a missing value that way), so
:func:`ground_truth_text` does the same.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from crrg.errors import InputError
from crrg.observations import normalise_view
from crrg.records import ImageRef, StudyRecord

PREDICTION_KEY = "model_prediction"


def is_rexrank_json(path: Path) -> bool:
    """True when ``path`` is a JSON object of study entries that have an ``image_path`` list (ReXrank's layout)."""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read(1).strip() != "{":
                return False
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and isinstance(v.get("image_path"), list) for v in data.values())


def read_rexrank(path: Path) -> dict[str, dict[str, Any]]:
    """The entries of a ReXrank JSON, ``{study_id: entry}`` in file order; malformed files are InputErrors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: expected a ReXrank JSON object {{study_id: {{\"image_path\": [...], ...}}}}")
    for key, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("image_path"), list):
            raise InputError(f"{path}: study {key!r} has no \"image_path\" list (not ReXrank's layout)")
    return {str(k): v for k, v in data.items()}


def _section(entry: Mapping[str, Any], name: str) -> str | None:
    for key in (f"section_{name}", name):
        value = entry.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        return str(value)
    return None


def ground_truth_text(entry: Mapping[str, Any]) -> str:
    """ReXrank's reference text of one entry: ``Findings: {findings} Impression: {impression}``."""
    return f"Findings: {_section(entry, 'findings')} Impression: {_section(entry, 'impression')}"


def read_rexrank_ground_truth(path: Path) -> dict[str, str]:
    """``{study_id: "Findings: ... Impression: ..."}`` from a ReXrank input or prediction JSON."""
    return {key: ground_truth_text(entry) for key, entry in read_rexrank(path).items()}


def read_rexrank_predictions(path: Path) -> dict[str, str]:
    """``{study_id: model_prediction}`` from a ReXrank submission JSON; entries without one are an error."""
    entries = read_rexrank(path)
    missing = [k for k, e in entries.items() if not isinstance(e.get(PREDICTION_KEY), str)]
    if missing:
        raise InputError(f"{path}: {len(missing)} stud(ies) have no \"{PREDICTION_KEY}\" text (e.g. {missing[0]})")
    return {k: e[PREDICTION_KEY] for k, e in entries.items()}


def _image_path(image_root: Path | None, rel: str) -> str:
    # ReXrank's paths are relative to the image root, MIMIC's with a leading "/" ("/p10/p100.../s5.../x.jpg")
    return str((Path(image_root) if image_root is not None else Path(".")).absolute() / rel.lstrip("/"))


def rexrank_records(path: Path, image_root: Path | None = None) -> list[StudyRecord]:
    """One :class:`StudyRecord` per ReXrank entry: images resolved against ``image_root``, views from
    ``frontal_lateral``, ``context`` as the indication, the ReXrank sections as findings / impression."""
    records = []
    for key, entry in read_rexrank(path).items():
        views = entry.get("frontal_lateral") or []
        images = [ImageRef(path=_image_path(image_root, str(rel)),
                           view=normalise_view(views[i]) if i < len(views) else "unknown")
                  for i, rel in enumerate(entry["image_path"])]
        records.append(StudyRecord(id=key, images=images, indication=str(entry.get("context") or ""),
                                   findings=_section(entry, "findings") or "",
                                   impression=_section(entry, "impression") or "",
                                   split=str(entry.get("split") or "test"), meta={"rexrank": True}))
    return records


def submission(entries: Mapping[str, Mapping[str, Any]], predictions: Mapping[str, str]) -> dict[str, dict]:
    """ReXrank's submission object: every input entry, unchanged, plus its ``model_prediction``."""
    missing = [k for k in entries if k not in predictions]
    if missing:
        raise InputError(f"{len(missing)} ReXrank stud(ies) have no generated report (e.g. {missing[0]})")
    out = {}
    for key, entry in entries.items():
        item = copy.deepcopy(dict(entry))
        item[PREDICTION_KEY] = predictions[key]
        out[key] = item
    return out


def write_rexrank_submission(path: Path, input_json: Path, predictions: Mapping[str, str]) -> None:
    """Write (atomically) the submission JSON for the ReXrank ``input_json`` with ``predictions`` by study id."""
    from crrg.io import atomic_write_json

    atomic_write_json(path, submission(read_rexrank(input_json), predictions), indent=4)


def format_report(findings: str, impression: str) -> str:
    """A crrg report as ReXrank's reference is written ("Findings: ... Impression: ...")."""
    return f"Findings: {findings.strip()} Impression: {impression.strip()}".strip()


def read_batch_reports(path: Path) -> dict[str, str]:
    """``{id: "Findings: ... Impression: ..."}`` from ``crrg report`` batch output (JSONL of generated reports);
    a study whose line holds an ``error`` is left out."""
    from crrg.io import iter_jsonl

    out = {}
    for _, line in iter_jsonl(path):
        if isinstance(line, dict) and "id" in line and "error" not in line:
            out[str(line["id"])] = format_report(str(line.get("findings") or ""), str(line.get("impression") or ""))
    return out


def report_rexrank(input_json: Path, image_root: Path, out: Path,
                   run_batch: Callable[[list[str], Path], int]) -> int:
    """``crrg report`` on a ReXrank input JSON: its studies as a temporary crrg manifest, reported by
    ``run_batch([manifest], jsonl_out)`` (crrg's batch mode), then ReXrank's submission JSON written to ``out``.

    Returns ``run_batch``'s exit code; the submission is written only when every study has a report.
    """
    import tempfile

    from crrg.records import write_manifest

    records = rexrank_records(input_json, image_root)
    with tempfile.TemporaryDirectory(prefix="crrg-rexrank-") as tmp:
        manifest, reports = Path(tmp) / "rexrank_manifest.jsonl", Path(tmp) / "reports.jsonl"
        write_manifest(manifest, records)
        code = run_batch([str(manifest)], reports)
        predictions = read_batch_reports(reports) if reports.exists() else {}
    missing = [r.id for r in records if r.id not in predictions]
    if missing:
        raise InputError(f"{len(missing)} ReXrank stud(ies) got no report (e.g. {missing[0]}); "
                         "fix their images and run again")
    write_rexrank_submission(out, input_json, predictions)
    return code
