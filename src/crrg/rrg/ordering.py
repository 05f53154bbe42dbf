"""The order of FINDINGS sentences, learned from the training reports.

Radiologists dictate in a house order (lines and tubes, then what is wrong, then the stock negatives,
the heart last or first), and n-gram metrics reward it: CIDEr and BLEU count n-grams that run across
sentence boundaries, and ROUGE-L takes the longest common subsequence of the whole report. Anatomical
order ignores all of that.

A sentence's *kind* is what the labeler says it states ("Pleural Effusion=0,Pneumothorax=0"), or its
normalised text when it states no observation ("the lungs are clear"). From the training FINDINGS we
count how often a kind comes before another; a report's sentences are then put in the order that agrees
with the most of those pairwise preferences (a Kemeny order, exact by dynamic programming over subsets
for the usual handful of sentences). Mean positions would not do: a heart sentence that comes first in
40 % of reports and last in 60 % has a middle mean position and would land between the lungs and the
pleura, where it never is.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from crrg.errors import InputError
from crrg.io import atomic_write_json

ORDER_FILE = "sentence_order.json"
EXACT_UP_TO = 10  # sentences; 2^10 subsets x 10 x 10 is a few ms, beyond that a greedy order is used


def sentence_kind(text: str) -> str:
    from crrg.rrg.assembly import normalise_sentence, stated_findings

    claims = sorted(f"{name}={value}" for name, value, _ in stated_findings(text))
    return ",".join(claims) if claims else "text:" + normalise_sentence(text)


class SentenceOrder:
    """Pairwise precedence counts of sentence kinds (``before[(a, b)]``: reports where a precedes b)."""

    def __init__(self, before: dict[tuple[str, str], int] | None = None):
        self.before = Counter(before or {})

    @classmethod
    def fit(cls, findings: Iterable[str], min_count: int = 3) -> "SentenceOrder":
        """Count precedences over the kinds seen in at least ``min_count`` reports' sentences (the rare
        ones, a nodule's exact size, carry no reliable order and would bloat the table)."""
        from crrg.text import split_sentences

        reports = [[sentence_kind(s) for s in split_sentences(text)] for text in findings if text and text.strip()]
        seen = Counter(k for kinds in reports for k in kinds)
        common = {k for k, n in seen.items() if n >= min_count}
        before: Counter = Counter()
        for kinds in reports:
            kinds = [k for k in kinds if k in common]
            for i, j in itertools.combinations(range(len(kinds)), 2):
                if kinds[i] != kinds[j]:
                    before[(kinds[i], kinds[j])] += 1
        return cls(before)

    def __bool__(self) -> bool:
        return bool(self.before)

    def p_before(self, a: str, b: str) -> float:
        """P(a precedes b), smoothed towards 1/2 (a pair never seen together has no preference)."""
        ab, ba = self.before.get((a, b), 0), self.before.get((b, a), 0)
        return (ab + 0.5) / (ab + ba + 1.0)

    def arrange(self, items: Sequence, text_of=lambda s: s.text) -> list:
        """``items`` (already in anatomical order, which breaks ties) in the learned order."""
        n = len(items)
        if n < 2 or not self.before:
            return list(items)
        kinds = [sentence_kind(text_of(s)) for s in items]
        # a tiny bonus for keeping the given order: kinds the table does not know stay where anatomy put them
        w = [[self.p_before(kinds[i], kinds[j]) + (1e-6 if i < j else 0.0) for j in range(n)] for i in range(n)]
        order = _kemeny(w) if n <= EXACT_UP_TO else _greedy(w)
        return [items[i] for i in order]

    def to_dict(self) -> dict:
        return {"before": [[a, b, n] for (a, b), n in sorted(self.before.items())]}

    @classmethod
    def from_dict(cls, data: dict) -> "SentenceOrder":
        try:
            return cls({(str(a), str(b)): int(n) for a, b, n in data["before"]})
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"the sentence order table is malformed ({err}); expected "
                             '{"before": [[kind_a, kind_b, count], ...]}') from None

    def save(self, folder: str | Path) -> None:
        atomic_write_json(Path(folder) / ORDER_FILE, self.to_dict())

    @classmethod
    def load(cls, folder: str | Path) -> "SentenceOrder | None":
        path = Path(folder) / ORDER_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path} is not valid JSON ({err})") from None
        return cls.from_dict(data)


def _kemeny(w: list[list[float]]) -> list[int]:
    """The permutation maximising the sum of w[i][j] over pairs with i placed before j (DP over subsets:
    the best order of a set ends with some element, which follows all the others)."""
    n = len(w)
    best: dict[int, tuple[float, int, int]] = {0: (0.0, -1, 0)}  # subset -> (score, last, previous subset)
    for size in range(n):
        for subset in [s for s in best if bin(s).count("1") == size]:
            score = best[subset][0]
            members = [j for j in range(n) if subset >> j & 1]
            for i in range(n):
                if subset >> i & 1:
                    continue
                value = score + sum(w[j][i] for j in members)
                grown = subset | 1 << i
                if grown not in best or value > best[grown][0] + 1e-12:
                    best[grown] = (value, i, subset)
    order, subset = [], (1 << n) - 1
    while subset:
        _, last, subset = best[subset]
        order.append(last)
    return order[::-1]


def _greedy(w: list[list[float]]) -> list[int]:
    """Borda order (most pairwise wins first), for reports too long for the exact order."""
    n = len(w)
    wins = [sum(w[i][j] for j in range(n) if j != i) for i in range(n)]
    return sorted(range(n), key=lambda i: -wins[i])
