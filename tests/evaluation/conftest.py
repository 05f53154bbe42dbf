"""One METEOR Java process for the whole evaluation test session: it takes seconds to start."""

from __future__ import annotations

import json
import random
import shutil

import pytest


@pytest.fixture(scope="session")
def nlg_scorer():
    if shutil.which("java") is None:
        pytest.skip("java is not installed (needed by pycocoevalcap)")
    from crrg.evaluation.nlg import NlgScorer

    with NlgScorer(meteor=True) as scorer:
        yield scorer


@pytest.fixture(scope="session")
def iu_pairs(shared_data):
    """IU X-Ray test-split reports (R2Gen annotation) and the same reports shuffled as 'predictions'."""
    ann = json.loads((shared_data / "iu_xray_reports" / "r2gen_split_annotation.json").read_text())
    refs = {str(x["id"]): x["report"] for x in ann["test"]}
    ids = sorted(refs)
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    preds = {a: refs[b] for a, b in zip(ids, shuffled)}
    return preds, refs, ann
