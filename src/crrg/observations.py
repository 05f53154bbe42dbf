"""Fixed vocabularies shared by every dataset, model and metric.

The order of :data:`CHEXPERT_14` is the order used everywhere (label vectors, classifier heads,
metric tables), so that numbers from different parts of crrg line up.
"""

from __future__ import annotations

CHEXPERT_14: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The five observations of the "micro-5" clinical-efficacy convention (CheXpert competition tasks).
MICRO_5: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

# Label values: positive, negative, uncertain; ``None`` means "not mentioned".
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
LABEL_VALUES = (POSITIVE, NEGATIVE, UNCERTAIN, None)

VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL", "LL", "unknown")
FRONTAL_VIEWS = frozenset({"PA", "AP"})
LATERAL_VIEWS = frozenset({"LATERAL", "LL"})


def frontal_index(views, fallback: int | None = None) -> int | None:
    """The one rule for which image of a study is "the frontal one" (the image region-guided models,
    classifiers and retrieval read): the first PA/AP image, else the first image whose view is not
    lateral (an unlabelled film is more often frontal than not), else ``fallback`` (None: the study has
    only lateral films, which no frontal-view model may read as frontal)."""
    views = list(views)
    for i, view in enumerate(views):
        if view in FRONTAL_VIEWS:
            return i
    for i, view in enumerate(views):
        if view not in LATERAL_VIEWS:
            return i
    return fallback

# The 29 anatomical regions of Chest ImaGenome, in the order RGRG uses for its detector classes.
ANATOMICAL_REGIONS: tuple[str, ...] = (
    "right lung",
    "right upper lung zone",
    "right mid lung zone",
    "right lower lung zone",
    "right hilar structures",
    "right apical zone",
    "right costophrenic angle",
    "right hemidiaphragm",
    "left lung",
    "left upper lung zone",
    "left mid lung zone",
    "left lower lung zone",
    "left hilar structures",
    "left apical zone",
    "left costophrenic angle",
    "left hemidiaphragm",
    "trachea",
    "spine",
    "right clavicle",
    "left clavicle",
    "aortic arch",
    "mediastinum",
    "upper mediastinum",
    "svc",
    "cardiac silhouette",
    "cavoatrial junction",
    "right atrium",
    "carina",
    "abdomen",
)
# The regions of the lung fields, the first 16 above: a sentence from one of them that calls it normal
# ("The lungs are clear.") speaks about the lungs, where most findings are.
LUNG_FIELD_REGIONS: frozenset[str] = frozenset(ANATOMICAL_REGIONS[:16])


def normalise_view(value: str | None) -> str:
    """Map the many spellings of a view position (DICOM ViewPosition, Kaggle 'Frontal') to :data:`VIEWS`.

    A bare "Frontal" (Kaggle IU X-Ray projections) becomes PA: IU X-Ray frontal films are upright
    outpatient PA studies, and crrg's models treat PA and AP alike as frontal anyway.
    """
    if value is None:
        return "unknown"
    v = str(value).strip().upper().replace("-", "").replace(" ", "")
    if v in ("PA", "POSTEROANTERIOR", "FRONTAL"):
        return "PA"
    if v in ("AP", "ANTEROPOSTERIOR", "APSUPINE", "APERECT"):
        return "AP"
    if v in ("LATERAL", "LAT", "RL", "RLATERAL"):
        return "LATERAL"
    if v in ("LL", "LEFTLATERAL", "LLATERAL"):
        return "LL"
    return "unknown"
