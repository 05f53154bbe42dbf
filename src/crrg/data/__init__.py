"""Dataset readers -> :class:`~crrg.records.StudyRecord` manifests, filters and manifest statistics.

Every reader is an iterable of StudyRecords with a length (for progress bars) and a ``notes`` dict
of counts filled in after iteration; :func:`crrg.records.write_manifest` streams them to JSONL.
"""

from crrg.data.filters import apply_filters, keep_views, parse_views, require_images, require_report
from crrg.data.generic import GenericReader
from crrg.data.imagenome import ImaGenome, WithImaGenomeRegions
from crrg.data.iu_xray import IuXrayReader
from crrg.data.mimic_cxr import MimicCxrReader
from crrg.data.splits import assign_splits, parse_ratios
from crrg.data.stats import ManifestStats, compute_stats, manifest_stats

__all__ = [
    "GenericReader", "ImaGenome", "IuXrayReader", "MimicCxrReader", "ManifestStats", "apply_filters", "assign_splits", "compute_stats",
    "keep_views", "manifest_stats", "parse_ratios", "parse_views", "require_images", "require_report", "WithImaGenomeRegions",
]
