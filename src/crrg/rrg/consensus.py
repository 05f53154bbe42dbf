"""Consensus choice among candidate texts: minimum Bayes risk under an n-gram agreement utility.

Greedy decoding takes the most likely next word at every step and can mix two phrasings of one
statement; beam search finds likelier whole sentences but favours the longest complete phrasing. A
region's beam candidates are mostly rewordings of one statement, and the one that agrees most with
the others (the minimum-Bayes-risk choice, as in Kumar & Byrne 2004 for machine translation) is the
wording a reader, and every n-gram metric, expects. The same rule picks the normal IMPRESSION a model
writes from the normal impressions of its training reports.

The utility is the mean over n = 1..4 of the n-gram F1 (clipped counts) of two word sequences: a
smooth, symmetric stand-in for sentence BLEU that is defined for sentences of a few words.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

_TOKEN = re.compile(r"[a-z0-9]+(?:[.'-][a-z0-9]+)*|[^\sa-z0-9]")
MAX_N = 4


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks ("3.2 cm" stays one number)."""
    return _TOKEN.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def ngram_agreement(a: str | list[str], b: str | list[str], max_n: int = MAX_N) -> float:
    """Mean n-gram F1 of two texts over n = 1..max_n (0 for no overlap, 1 for equal texts)."""
    ta = words(a) if isinstance(a, str) else a
    tb = words(b) if isinstance(b, str) else b
    if not ta and not tb:
        return 1.0
    total = 0.0
    for n in range(1, max_n + 1):
        ga, gb = _ngrams(ta, n), _ngrams(tb, n)
        size = sum(ga.values()) + sum(gb.values())
        total += 2.0 * sum((ga & gb).values()) / size if size else 0.0
    return total / max_n


def consensus(candidates: Sequence[str], weights: Sequence[float] | None = None) -> str:
    """The candidate with the highest weighted agreement with all candidates (itself included, so a
    text seen more often weighs more); the first wins a tie. ``weights``: how often or how likely
    each candidate is (default 1 each)."""
    if not candidates:
        raise ValueError("consensus of no candidates")
    weights = list(weights) if weights is not None else [1.0] * len(candidates)
    if len(weights) != len(candidates):
        raise ValueError(f"{len(candidates)} candidates but {len(weights)} weights")
    distinct: dict[str, float] = {}
    for text, w in zip(candidates, weights):
        distinct[text] = distinct.get(text, 0.0) + float(w)
    if len(distinct) == 1:
        return next(iter(distinct))
    texts = list(distinct)
    tokens = [words(t) for t in texts]
    best, best_score = texts[0], float("-inf")
    for i, text in enumerate(texts):
        score = sum(distinct[texts[j]] * (1.0 if i == j else ngram_agreement(tokens[i], tokens[j]))
                    for j in range(len(texts)))
        if score > best_score + 1e-12:
            best, best_score = text, score
    return best
