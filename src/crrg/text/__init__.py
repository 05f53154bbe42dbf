"""Report text tools: sections, cleaning, sentence splitting, metric normalisation, tokenizer.

Pure functions on strings (no model, no global state) so every part of crrg can use them; the
tokenizer lives in :mod:`crrg.text.tokenizer` and imports ``tokenizers``/``transformers`` only
when used.
"""

from crrg.text.clean import clean_report
from crrg.text.normalize import normalize_for_metrics
from crrg.text.sentences import split_sentences

try:  # written by the data part; absent on a partial checkout
    from crrg.text.sections import extract_sections
except ModuleNotFoundError as _exc:  # pragma: no cover - only while sections.py does not exist yet
    if _exc.name != "crrg.text.sections":
        raise

__all__ = ["clean_report", "split_sentences", "normalize_for_metrics", "extract_sections"]
