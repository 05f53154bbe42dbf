"""CIDEr-D of many resamples of one corpus, as sparse-matrix algebra (for the bootstrap).

pycocoevalcap's ``CiderScorer`` recomputes every n-gram vector in Python for each corpus, which is
about a second for 500 reports, i.e. a quarter of an hour for 1,000 resamples. The score of a
resample depends on the draw only through the document frequencies (how many drawn studies' references
contain each n-gram) and the corpus size, so the n-gram counts are put into sparse matrices once and
each resample is a few sparse products. The formula is pycocoevalcap's CIDEr-D (n = 1..4, sigma 6,
idf ``log(N) - log(max(1, df))``, clipped hypothesis weights, Gaussian length penalty on bigram
counts, x10); tests check it against pycocoevalcap itself. One reference per study (the case of every
crrg evaluation); with several, :class:`crrg.evaluation.blocks.NlgBlock` falls back to pycocoevalcap.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import sparse

_N, _SIGMA = 4, 6.0


def _dense(m) -> np.ndarray:
    return m.toarray() if sparse.issparse(m) else np.asarray(m)


class CiderResampler:
    """Cooked n-gram counts of aligned hypotheses / single references; :meth:`score` of any study draw."""

    def __init__(self, ctest: Sequence[dict], crefs: Sequence[Sequence[dict]]) -> None:
        if any(len(refs) != 1 for refs in crefs):
            raise ValueError("CiderResampler handles one reference per study")
        vocab: dict[tuple, int] = {}
        for counts in list(ctest) + [refs[0] for refs in crefs]:
            for ngram in counts:
                vocab.setdefault(ngram, len(vocab))
        order = np.zeros(len(vocab), dtype=np.int64)
        for ngram, j in vocab.items():
            order[j] = len(ngram) - 1
        self.order_matrix = sparse.csr_matrix((np.ones(len(vocab)), (np.arange(len(vocab)), order)),
                                              shape=(len(vocab), _N))

        def matrix(rows: Sequence[dict]) -> sparse.csr_matrix:
            r, c, v = [], [], []
            for i, counts in enumerate(rows):
                for ngram, tf in counts.items():
                    r.append(i)
                    c.append(vocab[ngram])
                    v.append(float(tf))
            return sparse.csr_matrix((v, (r, c)), shape=(len(rows), len(vocab)))

        self.hyp = matrix(ctest)
        self.ref = matrix([refs[0] for refs in crefs])
        self.present = (self.ref > 0).astype(np.float64)
        bigrams = np.asarray(order == 1, dtype=np.float64)
        self.delta = np.asarray(self.hyp @ bigrams - self.ref @ bigrams).ravel()
        self.penalty = np.exp(-(self.delta ** 2) / (2 * _SIGMA ** 2))

    def per_study(self, weights: np.ndarray) -> np.ndarray:
        """CIDEr-D of every study when the corpus holds study ``s`` ``weights[s]`` times."""
        df = np.asarray(self.present.T @ weights).ravel()
        idf = np.log(float(weights.sum())) - np.log(np.maximum(1.0, df))
        scale = sparse.diags(idf)
        h, r = self.hyp @ scale, self.ref @ scale
        dot = _dense(h.minimum(r).multiply(r) @ self.order_matrix)
        norm_h = np.sqrt(_dense(h.multiply(h) @ self.order_matrix))
        norm_r = np.sqrt(_dense(r.multiply(r) @ self.order_matrix))
        both = (norm_h != 0) & (norm_r != 0)
        val = np.where(both, dot / np.where(both, norm_h * norm_r, 1.0), dot)
        return val.mean(axis=1) * self.penalty * 10.0

    def score(self, idx: np.ndarray) -> float:
        """Corpus CIDEr-D of the studies ``idx`` (repeats allowed), as pycocoevalcap would give on that corpus."""
        weights = np.bincount(idx, minlength=self.hyp.shape[0]).astype(np.float64)
        return float(self.per_study(weights)[idx].mean())
