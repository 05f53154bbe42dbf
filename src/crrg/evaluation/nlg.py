"""BLEU-1..4, METEOR, ROUGE-L and CIDEr exactly as the COCO-caption protocol (pycocoevalcap) computes them.

The protocol: every text goes through the Stanford PTBTokenizer (lower-cased, punctuation dropped),
then ``Bleu(4)`` (``closest`` reference length), ``Meteor`` (METEOR 1.5, ``-l en -norm``), ``Rouge``
(ROUGE-L, beta 1.2) and ``Cider`` (CIDEr-D weights, n = 4, sigma 6) score the whole corpus. Numbers
are corpus-level, as every report-generation paper quotes them; we call pycocoevalcap itself so that
they are comparable, not a re-implementation.

pycocoevalcap talks to two Java processes line by line, and some text breaks that protocol:
the tokenizer's ``-preserveLines`` mode also splits at ``\\r``, form feeds, vertical tabs and the
Unicode line / paragraph separators, after which every following report is paired with the wrong
reference (silently wrong numbers); characters outside the Basic Multilingual Plane (emoji) come back
as lone surrogates. :func:`sanitize_for_java` replaces all such characters with a space before the
text reaches Java. Printable ASCII and ordinary Unicode letters pass unchanged, so for normal text
the numbers are exactly pycocoevalcap's own.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Mapping, Sequence

from crrg.errors import CrrgError, InputError

log = logging.getLogger(__name__)

NLG_KEYS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})
_SAFE_ASCII = re.compile(r"[ -~]*")


def sanitize_for_java(text: str) -> str:
    """Make ``text`` one line of safe characters for the PTB tokenizer and METEOR subprocesses.

    Whitespace, control, format, separator, unassigned and surrogate / private characters become a
    single space each, as do characters outside the BMP; the rest is NFC-normalised (so a composed
    and a decomposed "é" match). Printable ASCII is returned unchanged.
    """
    if _SAFE_ASCII.fullmatch(text):
        return text
    text = unicodedata.normalize("NFC", text)
    return "".join(
        " " if ord(ch) > 0xFFFF or unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text
    )


def _as_reference_lists(refs: Mapping[str, str | Sequence[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in refs.items():
        texts = [value] if isinstance(value, str) else list(value)
        if not texts:
            raise InputError(f"reference {key!r} has no text")
        if not all(isinstance(t, str) for t in texts):
            raise InputError(f"reference {key!r} must be a string or a list of strings")
        out[str(key)] = texts
    return out


def check_same_ids(preds: Mapping[str, object], refs: Mapping[str, object], what: str = "predictions") -> None:
    """Raise an InputError listing a few ids that are only in one of the two sides."""
    missing = sorted(set(map(str, refs)) - set(map(str, preds)))
    extra = sorted(set(map(str, preds)) - set(map(str, refs)))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} reference id(s) have no prediction (e.g. {', '.join(missing[:5])})")
        if extra:
            parts.append(f"{len(extra)} {what} id(s) have no reference (e.g. {', '.join(extra[:5])})")
        raise InputError("; ".join(parts))
    if not refs:
        raise InputError("nothing to evaluate: no reports given")


def _java_missing() -> CrrgError:
    return CrrgError(
        "the COCO-caption metrics need a Java runtime and `java` was not found: install one "
        "(Debian: apt-get install default-jre-headless)"
    )


def _meteor_failed() -> CrrgError:
    return CrrgError("the METEOR Java process failed (out of memory? a 2 GB heap is needed); "
                     "rerun with METEOR disabled (--no-meteor) to get the other metrics")


def tokenize(texts: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """PTB-tokenize (lower-case, punctuation removed) ``{id: [text, ...]}`` with pycocoevalcap's tokenizer."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = {key: [{"caption": sanitize_for_java(t)} for t in values] for key, values in texts.items()}
    try:
        tokens = PTBTokenizer().tokenize(captions)
    except FileNotFoundError:
        raise _java_missing() from None
    bad = [key for key, values in texts.items() if len(tokens.get(key, ())) != len(values)]
    if bad:  # sanitising should make this impossible; never return misaligned numbers
        raise RuntimeError(f"PTBTokenizer returned misaligned lines for ids {bad[:5]}")
    return tokens


class NlgScorer:
    """The four COCO scorers with one METEOR Java process kept alive across calls (it takes seconds to start).

    Use as a context manager, or call :meth:`close`; :func:`nlg_metrics` does both for one-off use.
    ``meteor`` is the pycocoevalcap ``Meteor`` object in use (None when METEOR is disabled).
    """

    def __init__(self, meteor: bool = True) -> None:
        self.meteor = None
        if meteor:
            from pycocoevalcap.meteor.meteor import Meteor

            try:
                self.meteor = Meteor()
            except FileNotFoundError:
                raise _java_missing() from None

    def __enter__(self) -> "NlgScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        meteor, self.meteor = self.meteor, None
        if meteor is not None:
            meteor.__del__()  # stops the JVM; safe to run again when the object is collected
            meteor.meteor_p.stdout.close()
            meteor.meteor_p.stderr.close()

    def score_tokenized(self, gts: dict[str, list[str]], res: dict[str, list[str]], meteor: bool = True) -> dict[str, float]:
        """Score already tokenized texts (``{id: [text]}``), exactly as pycocoevalcap's scorers do.

        ``meteor=False`` leaves METEOR out for this call even when the scorer has a METEOR process.
        """
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        out = {f"bleu_{n + 1}": float(bleu[n]) for n in range(4)}
        if self.meteor is not None and meteor:
            try:
                out["meteor"] = float(self.meteor.compute_score(gts, res)[0])
            except ValueError:
                raise _meteor_failed() from None
        out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
        out["cider"] = float(Cider().compute_score(gts, res)[0])
        return out

    def meteor_statistics(self, gts: dict[str, list[str]], res: dict[str, list[str]]) -> dict[str, str]:
        """METEOR's sufficient statistics of each segment (the ``SCORE`` answers pycocoevalcap collects).

        Corpus METEOR of any multiset of segments is one ``EVAL`` of their statistics
        (:meth:`meteor_from_statistics`): a bootstrap resample costs one round trip to Java, not a re-alignment.
        """
        if self.meteor is None:
            raise CrrgError("METEOR is disabled in this scorer")
        with self.meteor.lock:
            return {key: self.meteor._stat(res[key][0], gts[key]) for key in gts}

    def meteor_from_statistics(self, statistics: Sequence[str]) -> float:
        """Corpus METEOR from per-segment statistics, as ``Meteor.compute_score`` computes it."""
        if self.meteor is None:
            raise CrrgError("METEOR is disabled in this scorer")
        proc = self.meteor.meteor_p
        with self.meteor.lock:
            proc.stdin.write(("EVAL ||| " + " ||| ".join(statistics) + "\n").encode())
            proc.stdin.flush()
            try:
                for _ in statistics:
                    proc.stdout.readline()
                return float(proc.stdout.readline().strip())
            except ValueError:
                raise _meteor_failed() from None

    def score(self, preds: Mapping[str, str], refs: Mapping[str, str | Sequence[str]]) -> dict[str, float]:
        """Corpus-level metrics of ``preds`` (``{id: text}``) against ``refs`` (``{id: text or [texts]}``)."""
        ref_lists = _as_reference_lists(refs)
        check_same_ids(preds, ref_lists)
        pred_lists: dict[str, list[str]] = {}
        for key, text in preds.items():
            if not isinstance(text, str):
                raise InputError(f"prediction {key!r} must be a string, not {type(text).__name__}")
            pred_lists[str(key)] = [text]
        keys = sorted(ref_lists)
        gts = tokenize({k: ref_lists[k] for k in keys})
        res = tokenize({k: pred_lists[k] for k in keys})
        return self.score_tokenized(gts, res)


def nlg_metrics(
    preds: Mapping[str, str], refs: Mapping[str, str | Sequence[str]], meteor: bool = True
) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (keys :data:`NLG_KEYS`; ``meteor`` omitted when disabled)."""
    with NlgScorer(meteor=meteor) as scorer:
        return scorer.score(preds, refs)
