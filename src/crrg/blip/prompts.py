"""Instructions with prior knowledge for ClinicalBLIP (prompt learning as in the ClinicalBLIP paper).

The instruction tells the model what the clinician already knows: the indication and the findings a
classifier considers likely. Findings arrive as a plain ``{observation: probability}`` dict so the
same builder serves the CLIP classifier's predictions and, for the ablation ceiling, ground-truth
labels (see :func:`labels_to_probabilities`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from crrg.errors import ConfigError
from crrg.observations import CHEXPERT_14

# The four prior-knowledge settings of the ablation. "ground_truth" formats like "predicted" but is
# fed labels from the reference report: it is the ceiling of what better predictions could buy.
PROMPT_VARIANTS: tuple[str, ...] = ("none", "indication", "predicted", "ground_truth")
TASK_SENTENCE = "Write the findings and impression."

# How observation names read inside a sentence ("Pleural Effusion" -> "pleural effusion").
_PHRASES = {name: name.lower() for name in CHEXPERT_14}
_PHRASES["Enlarged Cardiomediastinum"] = "enlarged cardiomediastinum"
_PHRASES["Support Devices"] = "support devices"


@dataclass(frozen=True)
class PromptConfig:
    variant: str = "predicted"
    threshold: float = 0.5  # probability at or above which a finding is named "likely"
    uncertain_threshold: float | None = None  # if set, [uncertain, threshold) is named "possible"
    max_indication_chars: int = 160

    def __post_init__(self) -> None:
        if self.variant not in PROMPT_VARIANTS:
            raise ConfigError(f"prompt variant {self.variant!r} is not one of {list(PROMPT_VARIANTS)}")
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"prompt threshold {self.threshold} must be in (0, 1]")


def labels_to_probabilities(labels: Mapping[str, int | None]) -> dict[str, float]:
    """CheXpert labels (1 / 0 / -1 / None) as probabilities: positive 1, uncertain 0.5, else 0."""
    return {name: {1: 1.0, -1: 0.5}.get(value, 0.0) for name, value in labels.items() if name in _PHRASES}


def clean_indication(text: str, max_chars: int = 160) -> str:
    """One short line: de-identification marks (XXXX) and trailing punctuation removed."""
    text = re.sub(r"\bX{2,}\b", " ", text or "")
    text = re.sub(r"\s+", " ", text).strip().strip(".,;: ")
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0]
    return text


def likely_findings(probabilities: Mapping[str, float], config: PromptConfig) -> tuple[list[str], list[str]]:
    """Names of likely and possible findings, most probable first; "No Finding" is never listed."""
    unknown = [name for name in probabilities if name not in _PHRASES]
    if unknown:
        raise ConfigError(f"unknown observation(s) {unknown}; expected CheXpert-14 names")
    ranked = sorted(((p, n) for n, p in probabilities.items() if n != "No Finding"), key=lambda t: (-t[0], t[1]))
    likely = [_PHRASES[n] for p, n in ranked if p >= config.threshold]
    low = config.uncertain_threshold
    possible = [_PHRASES[n] for p, n in ranked if low is not None and low <= p < config.threshold]
    return likely, possible


def build_instruction(
    indication: str = "",
    findings: Mapping[str, float] | None = None,
    config: PromptConfig = PromptConfig(),
) -> str:
    """The instruction for one study, e.g. "Indication: dyspnea. Likely findings: cardiomegaly. Write ...".

    ``findings`` is ``{observation: probability}``; for the "ground_truth" variant pass
    :func:`labels_to_probabilities` of the reference labels. Variants that do not use a part ignore it.
    """
    parts: list[str] = []
    if config.variant != "none":
        indication = clean_indication(indication, config.max_indication_chars)
        parts.append(f"Indication: {indication or 'none given'}.")
    if config.variant in ("predicted", "ground_truth"):
        likely, possible = likely_findings(findings or {}, config)
        parts.append(f"Likely findings: {', '.join(likely) if likely else 'none'}.")
        if possible:
            parts.append(f"Possible findings: {', '.join(possible)}.")
    parts.append(TASK_SENTENCE)
    return " ".join(parts)
