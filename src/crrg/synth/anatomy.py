"""Anatomical region boxes from the projected label map.

The 29 Chest ImaGenome regions are derived from where the CT's segmented structures land on the
detector (lungs, heart, trachea, spine, clavicles, aorta, SVC, pulmonary veins), after the same pose,
warp and magnification as the image, so a box moves and grows exactly as its anatomy does (an
enlarged heart widens the cardiac-silhouette box). Zones and angles that no segmentation names
(lung zones, costophrenic angles, hemidiaphragms, right atrium) are cut from the projected lung and
heart silhouettes with the rules radiologists use to describe them.
"""

from __future__ import annotations

import numpy as np

from crrg.observations import ANATOMICAL_REGIONS
from crrg.synth import ct as T

# Label channels projected for every frontal pose: name -> TotalSegmentator ids.
CHANNELS: dict[str, tuple[int, ...]] = {
    "right lung": T.LUNG_RIGHT,
    "left lung": T.LUNG_LEFT,
    "heart": (T.HEART,),
    "trachea": (T.TRACHEA,),
    "spine": T.VERTEBRAE,
    "right clavicle": (T.CLAVICLE_RIGHT,),
    "left clavicle": (T.CLAVICLE_LEFT,),
    "aorta": (T.AORTA,),
    "svc": (T.SVC,),
    "pulmonary vein": (T.PULMONARY_VEIN,),
}
CHANNEL_NAMES = tuple(CHANNELS)
# Path length (mm) through a structure above which a pixel belongs to its silhouette.
THRESHOLD_MM = {"right lung": 8.0, "left lung": 8.0, "heart": 8.0, "spine": 5.0}
DEFAULT_THRESHOLD_MM = 2.0


def silhouettes(channels: np.ndarray) -> dict[str, np.ndarray]:
    """(C, H, W) projected path lengths -> boolean silhouettes by channel name."""
    return {name: channels[i] > THRESHOLD_MM.get(name, DEFAULT_THRESHOLD_MM) for i, name in enumerate(CHANNEL_NAMES)}


def _bbox(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _rows_extent(mask: np.ndarray, r0: float, r1: float) -> tuple[float, float, float, float] | None:
    sub = np.zeros_like(mask)
    a, b = int(np.floor(r0)), int(np.ceil(r1))
    sub[a:b] = mask[a:b]
    return _bbox(sub)


def _box_around(cx: float, cy: float, half_w: float, half_h: float) -> tuple[float, float, float, float]:
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


def cardiothoracic_ratio(sil: dict[str, np.ndarray]) -> float:
    """Widest heart diameter over widest inner thoracic diameter (lung outer edges) on a frontal view."""
    heart = _bbox(sil["heart"])
    lungs = _bbox(sil["right lung"] | sil["left lung"])
    if heart is None or lungs is None:
        return float("nan")
    return (heart[2] - heart[0]) / max(lungs[2] - lungs[0], 1.0)


def region_boxes(sil: dict[str, np.ndarray], scale: float = 1.0) -> dict[str, list[float]]:
    """All 29 region boxes [x1, y1, x2, y2] in image pixels (silhouette pixels times ``scale``), clipped to the image.

    Frontal display convention: the patient's right lung is on the image's left.
    """
    h, w = next(iter(sil.values())).shape
    boxes: dict[str, tuple[float, float, float, float]] = {}
    spine = _bbox(sil["spine"])
    mid_col = (spine[0] + spine[2]) / 2 if spine else w / 2
    lung_all = _bbox(sil["right lung"] | sil["left lung"]) or (0.15 * w, 0.1 * h, 0.85 * w, 0.75 * h)
    for side in ("right", "left"):
        lung = sil[f"{side} lung"]
        lb = _bbox(lung)
        if lb is None:  # a segmentation without this lung: fall back to half the thorax
            x0, y0, x1, y1 = lung_all
            lb = (x0, y0, mid_col, y1) if side == "right" else (mid_col, y0, x1, y1)
            lung = np.zeros_like(lung)
            lung[int(lb[1]):int(lb[3]), int(lb[0]):int(lb[2])] = True
        x0, y0, x1, y1 = lb
        lh, lw = y1 - y0, x1 - x0
        lateral_is_low = side == "right"  # the right lung's lateral edge is on the image's left
        boxes[f"{side} lung"] = lb
        for k, zone in enumerate(("upper", "mid", "lower")):
            boxes[f"{side} {zone} lung zone"] = _rows_extent(lung, y0 + k * lh / 3, y0 + (k + 1) * lh / 3) or lb
        clav = _bbox(sil[f"{side} clavicle"])
        apex_bottom = min(max(clav[3] if clav else y0 + 0.2 * lh, y0 + 0.12 * lh), y0 + 0.3 * lh)
        boxes[f"{side} apical zone"] = _rows_extent(lung, y0, apex_bottom) or lb
        # hilum: the pulmonary veins on this side, else the medial middle of the lung
        pv = sil["pulmonary vein"].copy()
        if side == "right":
            pv[:, int(mid_col):] = False
        else:
            pv[:, : int(mid_col)] = False
        pvb = _bbox(pv)
        if pvb is not None and (pvb[2] - pvb[0]) * (pvb[3] - pvb[1]) > 4:
            pad = 0.06 * lw
            hb = (pvb[0] - pad, pvb[1] - pad, pvb[2] + pad, pvb[3] + pad)
        else:
            cx = x1 - 0.2 * lw if lateral_is_low else x0 + 0.2 * lw
            hb = _box_around(cx, y0 + 0.47 * lh, 0.15 * lw, 0.12 * lh)
        boxes[f"{side} hilar structures"] = hb
        # bottom contour of the lung: the hemidiaphragm
        cols = np.flatnonzero(lung.any(0))
        bottoms = np.array([np.flatnonzero(lung[:, c])[-1] for c in cols], float)
        # the dome: the highest point of the bottom contour over the lateral two thirds (medially the
        # contour runs into the heart and mediastinum, not the diaphragm)
        k = max(int(round(len(cols) * 2 / 3)), 1)
        lateral_bottoms = bottoms[:k] if lateral_is_low else bottoms[-k:]
        dome_top = lateral_bottoms.min() if len(lateral_bottoms) else y1 - 0.15 * lh
        boxes[f"{side} hemidiaphragm"] = (x0, dome_top - 0.02 * lh, x1, y1 + 0.02 * lh)
        # costophrenic angle: the lateral-most low corner of the lung
        lat_cols = cols[: max(len(cols) // 3, 1)] if lateral_is_low else cols[-max(len(cols) // 3, 1):]
        lat_bottom = bottoms[: len(lat_cols)] if lateral_is_low else bottoms[-len(lat_cols):]
        corner_row = float(lat_bottom.max()) if len(lat_bottom) else y1
        corner_col = float(lat_cols[int(np.argmax(lat_bottom))]) if len(lat_bottom) else (x0 if lateral_is_low else x1)
        half = 0.1 * lw
        boxes[f"{side} costophrenic angle"] = (corner_col - half, corner_row - 1.6 * half, corner_col + half, corner_row + 0.4 * half)
    trachea = _bbox(sil["trachea"])
    heart = _bbox(sil["heart"]) or (mid_col - 0.15 * w, lung_all[1] + 0.45 * (lung_all[3] - lung_all[1]), mid_col + 0.2 * w, lung_all[3] - 0.05 * h)
    if trachea is None:
        trachea = (mid_col - 0.03 * w, 0.0, mid_col + 0.03 * w, lung_all[1] + 0.25 * (lung_all[3] - lung_all[1]))
    boxes["trachea"] = trachea
    tr_mask = sil["trachea"]
    carina_row = trachea[3]
    low_cols = np.flatnonzero(tr_mask[int(max(carina_row - 2, 0)):int(carina_row)].any(0)) if tr_mask.any() else np.array([])
    carina_col = float(low_cols.mean()) if low_cols.size else (trachea[0] + trachea[2]) / 2
    boxes["carina"] = _box_around(carina_col, carina_row - 0.01 * h, 0.04 * w, 0.035 * h)
    boxes["spine"] = _rows_extent(sil["spine"], lung_all[1], lung_all[3]) or (mid_col - 0.04 * w, lung_all[1], mid_col + 0.04 * w, lung_all[3])
    for side in ("right", "left"):
        boxes[f"{side} clavicle"] = _bbox(sil[f"{side} clavicle"]) or _box_around(
            mid_col + (-0.15 if side == "right" else 0.15) * w, lung_all[1] + 0.02 * h, 0.12 * w, 0.03 * h)
    aorta = sil["aorta"]
    ab = _bbox(aorta)
    if ab is not None:
        arch = _rows_extent(aorta, ab[1], ab[1] + 0.12 * (lung_all[3] - lung_all[1])) or ab
    else:
        arch = _box_around(mid_col + 0.04 * w, lung_all[1] + 0.2 * h, 0.06 * w, 0.04 * h)
    boxes["aortic arch"] = arch
    svc = _bbox(sil["svc"]) or (mid_col - 0.08 * w, arch[1], mid_col - 0.02 * w, heart[1])
    boxes["svc"] = svc
    boxes["cardiac silhouette"] = heart
    med_x0 = min(heart[0], svc[0], trachea[0], arch[0])
    med_x1 = max(heart[2], arch[2], trachea[2])
    top = lung_all[1]
    boxes["mediastinum"] = (med_x0, top, med_x1, heart[3])
    upper_bottom = max(carina_row, arch[3])
    boxes["upper mediastinum"] = (min(svc[0], trachea[0], arch[0]), top, max(arch[2], trachea[2]), upper_bottom)
    boxes["cavoatrial junction"] = _box_around((svc[0] + svc[2]) / 2, svc[3], 0.035 * w, 0.035 * h)
    hw_, hh_ = heart[2] - heart[0], heart[3] - heart[1]
    boxes["right atrium"] = (heart[0], heart[1] + 0.3 * hh_, heart[0] + 0.4 * hw_, heart[3])
    dome = min(boxes["right hemidiaphragm"][1], boxes["left hemidiaphragm"][1])
    boxes["abdomen"] = (lung_all[0], dome + 0.02 * h, lung_all[2], min(float(h), lung_all[3] + 0.25 * (lung_all[3] - lung_all[1])))

    out: dict[str, list[float]] = {}
    for name in ANATOMICAL_REGIONS:
        x0, y0, x1, y1 = boxes[name]
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        x0, y0 = min(max(x0, 0.0), w - 1.0), min(max(y0, 0.0), h - 1.0)
        x1, y1 = min(max(x1, x0 + 1.0), float(w)), min(max(y1, y0 + 1.0), float(h))
        out[name] = [round(x0 * scale, 1), round(y0 * scale, 1), round(x1 * scale, 1), round(y1 * scale, 1)]
    return out
