"""Text protocols: what happens to a report before BLEU / METEOR / ROUGE-L / CIDEr see it.

Report-generation papers do not all score the same text, and the numbers move with it (METEOR
most of all), so every crrg result names its protocol:

``coco`` (crrg's default)
    pycocoevalcap's own pipeline: the Stanford PTBTokenizer lower-cases and drops punctuation,
    then the scorers run on the tokens (:mod:`crrg.evaluation.nlg`).
``r2gen``
    The R2Gen family (Chen et al., EMNLP 2020, and the many models that reuse its code): each report
    is cleaned by the dataset's rules, split on spaces, words seen fewer than ``threshold`` times in
    the training reports become ``<unk>``, the text is cut to ``max_seq_length - 1`` words (the
    tokenizer adds a begin token before cutting the sequence to ``max_seq_length``), and the
    scorers run on the result directly, without the PTB tokenizer (so the " . " tokens count).
    IU X-Ray: threshold 3, max_seq_length 60; MIMIC-CXR: threshold 10, max_seq_length 100 (R2Gen's
    training scripts). Predictions go through the same steps as references: an R2Gen model's
    output is already in that form, and another system's output is put into it.

The cleaning rules are written out below from R2Gen's description of its tokenizer; the details
that change numbers are kept on purpose, e.g. the punctuation class ``[.,?;*!%^&_+():-\\[\\]{}]``
is a regular-expression range from ``:`` to ``[``, so it also removes ``< = > @`` but keeps
``-`` ("x-XXXX" stays "x-xxxx"), and empty sentences are not dropped.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sequence

from crrg.errors import InputError

Protocol = Literal["coco", "r2gen"]
Dataset = Literal["iu_xray", "mimic_cxr"]
PROTOCOLS: tuple[str, ...] = ("coco", "r2gen")
DATASETS: tuple[str, ...] = ("iu_xray", "mimic_cxr")
UNK = "<unk>"

# (old, new) replacements applied in this order to the whole report, before it is split into sentences.
_NUMBERING = [("1. ", ""), (". 2. ", ". "), (". 3. ", ". "), (". 4. ", ". "), (". 5. ", ". "),
              (" 2. ", ". "), (" 3. ", ". "), (" 4. ", ". "), (" 5. ", ". ")]
_REPORT_STEPS: dict[str, list[tuple[str, str]]] = {
    "iu_xray": [("..", ".")] * 3 + _NUMBERING,
    "mimic_cxr": [("\n", " ")] + [("__", "_")] * 7 + [("  ", " ")] * 6 + [("..", ".")] * 8 + _NUMBERING,
}
# Characters removed from each sentence: first these four, then the character class (see module docstring).
_SENTENCE_DROP_FIRST = ('"', "/", "\\", "'")
_SENTENCE_DROP = re.compile("[" + re.escape(".,?;*!%^&_+()") + "\\:-\\[" + re.escape("]{}") + "]")


@dataclass(frozen=True)
class R2GenSettings:
    """R2Gen's per-dataset settings (from its training scripts)."""

    threshold: int
    max_seq_length: int


R2GEN_SETTINGS: dict[str, R2GenSettings] = {
    "iu_xray": R2GenSettings(threshold=3, max_seq_length=60),
    "mimic_cxr": R2GenSettings(threshold=10, max_seq_length=100),
}


def r2gen_clean(report: str, dataset: str) -> str:
    """R2Gen's ``clean_report_<dataset>``: sentences lower-cased, punctuation stripped, joined by " . ", ending " .". """
    if dataset not in _REPORT_STEPS:
        raise InputError(f"unknown dataset {dataset!r} for the r2gen protocol: use one of {', '.join(DATASETS)}")
    text = report
    for old, new in _REPORT_STEPS[dataset]:
        text = text.replace(old, new)
    sentences = text.strip().lower().split(". ")
    cleaned = []
    for sentence in sentences:
        for ch in _SENTENCE_DROP_FIRST:
            sentence = sentence.replace(ch, "")
        cleaned.append(_SENTENCE_DROP.sub("", sentence.strip().lower()))
    return " . ".join(cleaned) + " ."


def r2gen_vocabulary(train_reports: Iterable[str], dataset: str, threshold: int | None = None) -> frozenset[str]:
    """Words seen at least ``threshold`` times in the cleaned training reports (R2Gen's vocabulary)."""
    threshold = R2GEN_SETTINGS[dataset].threshold if threshold is None else threshold
    counts = Counter(tok for report in train_reports for tok in r2gen_clean(report, dataset).split())
    return frozenset(word for word, n in counts.items() if n >= threshold)


def read_r2gen_train_reports(path: Path) -> list[str]:
    """The ``train`` reports of an R2Gen ``annotation.json`` (``{"train": [{"report": ...}, ...], ...}``)."""
    try:
        ann = json.loads(Path(path).read_text(encoding="utf-8"))
        return [str(item["report"]) for item in ann["train"]]
    except FileNotFoundError:
        raise InputError(f"{path} does not exist (expected an R2Gen annotation.json)") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{path} is not an R2Gen annotation.json with a \"train\" list of {{\"report\"}} items") from None


@dataclass(frozen=True)
class TextProtocol:
    """A named protocol and, for r2gen, the dataset settings and training vocabulary in use."""

    name: str = "coco"
    dataset: str | None = None
    vocabulary: frozenset[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise InputError(f"unknown protocol {self.name!r}: use one of {', '.join(PROTOCOLS)}")
        if self.name == "r2gen" and self.dataset not in R2GEN_SETTINGS:
            raise InputError("--protocol r2gen needs --dataset iu_xray or --dataset mimic_cxr "
                             "(R2Gen's cleaning rules and lengths differ between the two)")

    def r2gen_text(self, report: str) -> str:
        """One report as R2Gen scores it: cleaned, rare words as <unk>, cut to max_seq_length - 1 words."""
        settings = R2GEN_SETTINGS[str(self.dataset)]
        tokens = r2gen_clean(report, str(self.dataset)).split()
        if self.vocabulary is not None:
            tokens = [tok if tok in self.vocabulary else UNK for tok in tokens]
        return " ".join(tokens[: settings.max_seq_length - 1])

    def describe(self) -> dict:
        """What goes into every output so a number can be traced to its protocol."""
        if self.name == "coco":
            return {"name": "coco", "dataset": self.dataset,
                    "text": "pycocoevalcap PTBTokenizer (lower-case, punctuation removed), corpus-level scorers"}
        settings = R2GEN_SETTINGS[str(self.dataset)]
        return {
            "name": "r2gen", "dataset": self.dataset, "threshold": settings.threshold,
            "max_seq_length": settings.max_seq_length,
            "unk": "training vocabulary" if self.vocabulary is not None else "not applied (no --r2gen-ann given)",
            "vocabulary_size": None if self.vocabulary is None else len(self.vocabulary),
            "text": f"R2Gen clean_report_{self.dataset}, split on spaces, cut to {settings.max_seq_length - 1} words; "
                    "scorers without the PTB tokenizer",
        }

    def label(self) -> str:
        """One line for tables and logs."""
        if self.name == "coco":
            return "protocol coco (pycocoevalcap PTB tokenizer)" + (f", dataset {self.dataset}" if self.dataset else "")
        d = self.describe()
        return (f"protocol r2gen, dataset {self.dataset} (threshold {d['threshold']}, max_seq_length "
                f"{d['max_seq_length']}, <unk>: {d['unk']})")


def prepare_nlg_inputs(
    protocol: TextProtocol, preds: Mapping[str, str], refs: Mapping[str, str | Sequence[str]]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(gts, res)`` as the pycocoevalcap scorers take them (``{id: [text, ...]}``), for ``protocol``."""
    from crrg.evaluation.nlg import _as_reference_lists, check_same_ids, tokenize

    ref_lists = _as_reference_lists(refs)
    check_same_ids(preds, ref_lists)
    keys = sorted(ref_lists)
    for key in keys:
        if not isinstance(preds[key], str):
            raise InputError(f"prediction {key!r} must be a string, not {type(preds[key]).__name__}")
    if protocol.name == "coco":
        gts = tokenize({k: ref_lists[k] for k in keys})
        res = tokenize({k: [preds[k]] for k in keys})
        return gts, res
    gts = {k: [protocol.r2gen_text(t) for t in ref_lists[k]] for k in keys}
    res = {k: [protocol.r2gen_text(preds[k])] for k in keys}
    return gts, res
