"""Rule-based CheXpert-14 report labeler (mention phrases, negation, uncertainty, No Finding rule).

``label_report(text) -> {observation: 1 | 0 | -1 | None}``; see :mod:`crrg.labeler.core`.
"""

from crrg.labeler.core import Mention, find_mentions, label_report, label_reports

__all__ = ["label_report", "label_reports", "find_mentions", "Mention"]
