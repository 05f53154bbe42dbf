"""A generated report as a FHIR R4 ``DiagnosticReport``.

Hospital systems ingest reports as FHIR resources. The report text goes into ``presentedForm``
(base64 plain text), the impression into ``conclusion``, and every finding the model calls positive
into ``conclusionCode`` (SNOMED CT where a well-known concept exists, text otherwise). The status is
``preliminary``: a machine-written report is a draft for a radiologist, never a final result.
The film's OOD score (:mod:`crrg.ood`) travels as extensions; an unreliable report's warning opens its text.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timezone

from crrg.reporting import GeneratedReport

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
EXTENSIONS = "https://github.com/crrg/crrg/fhir/StructureDefinition"

# SNOMED CT concepts for the CheXpert observations that have an unambiguous one.
SNOMED_CODES: dict[str, tuple[str, str]] = {
    "Cardiomegaly": ("8186001", "Cardiomegaly"),
    "Pleural Effusion": ("60046008", "Pleural effusion"),
    "Pneumothorax": ("36118008", "Pneumothorax"),
    "Atelectasis": ("46621007", "Atelectasis"),
    "Pneumonia": ("233604007", "Pneumonia"),
    "Edema": ("19242006", "Pulmonary edema"),
    "Consolidation": ("95436008", "Lung consolidation"),
    "Fracture": ("125605004", "Fracture of bone"),
}


def _finding_concept(observation: str, probability: float | None) -> dict:
    concept: dict = {"text": observation}
    if observation in SNOMED_CODES:
        code, display = SNOMED_CODES[observation]
        concept["coding"] = [{"system": SNOMED, "code": code, "display": display}]
    if probability is not None:
        concept["extension"] = [{
            "url": f"{EXTENSIONS}/finding-probability",
            "valueDecimal": round(float(probability), 4),
        }]
    return concept


def diagnostic_report(report: GeneratedReport, model_version: str, issued: datetime | None = None) -> dict:
    """Build the DiagnosticReport resource (a plain dict, ready for JSON)."""
    issued = issued or datetime.now(timezone.utc)
    text = report.report
    if report.findings and report.impression:
        text = f"FINDINGS: {report.findings.strip()}\n\nIMPRESSION: {report.impression.strip()}"
    if report.warnings:  # an unreliable report says so before anything else (crrg.ood)
        text = "WARNING: " + " ".join(report.warnings) + "\n\n" + text
    positives = [obs for obs, value in report.labels.items() if value == 1 and obs != "No Finding"]
    resource = {
        "resourceType": "DiagnosticReport",
        "id": str(uuid.uuid4()),
        "status": "preliminary",
        "category": [{
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}]
        }],
        "code": {"coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
                 "text": "Chest radiograph report"},
        "issued": issued.isoformat(),
        "performer": [{"display": f"crrg {report.model} {model_version} (automated draft, not for clinical use)"}],
        "conclusion": report.impression.strip() or text,
        "conclusionCode": [_finding_concept(obs, report.probabilities.get(obs)) for obs in positives],
        "presentedForm": [{
            "contentType": "text/plain; charset=utf-8",
            "language": "en",
            "title": "Chest radiograph report (machine-generated draft)",
            "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
        }],
    }
    if report.ood is not None:
        resource["extension"] = [
            {"url": f"{EXTENSIONS}/ood-score", "valueDecimal": round(float(report.ood["score"]), 4)},
            {"url": f"{EXTENSIONS}/ood-threshold", "valueDecimal": round(float(report.ood["threshold"]), 4)},
            {"url": f"{EXTENSIONS}/ood-unreliable", "valueBoolean": bool(report.ood["unreliable"])},
        ]
        if report.ood.get("finding_source"):  # which classifier stated the findings (OOD routing, crrg.rrg.model)
            resource["extension"].append({"url": f"{EXTENSIONS}/finding-source",
                                          "valueString": str(report.ood["finding_source"])})
    return resource
