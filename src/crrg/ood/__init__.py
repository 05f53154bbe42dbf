"""Out-of-distribution score of a film against the model's own training films (issue 20, item 5b).

:mod:`crrg.ood.stats` fits and stores the statistics, :mod:`crrg.ood.score` scores a film with them,
``python -m crrg.ood fit`` fits them for a model folder. The meaning of the score: ``docs/ood.md``.
"""

from crrg.ood.score import OODAssessment, OODScorer, classifier_of, tower_features
from crrg.ood.stats import OOD_FILE, FeatureStats

__all__ = ["FeatureStats", "OOD_FILE", "OODAssessment", "OODScorer", "classifier_of", "tower_features"]
