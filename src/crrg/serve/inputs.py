"""Uploaded bytes -> a decoded radiograph with its view, checked at the edge of the service.

DICOM uploads must be plain radiographs (modality CR, DX or DR, or none stated): a CT slice or an
ultrasound frame would decode to pixels and silently produce a meaningless report. The view comes
from the form field (``frontal`` / ``lateral``), else DICOM ViewPosition, else "unknown" (generators
treat unknown as frontal).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from crrg.errors import ImageError
from crrg.image import load_image
from crrg.observations import normalise_view

RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})


class UnsupportedModality(ImageError):
    """A DICOM of a modality other than a radiograph (the service answers 415)."""


@dataclass
class DecodedImage:
    pixels: np.ndarray  # float32 (H, W) in [0, 1]
    view: str


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def dicom_view_and_modality(data: bytes) -> tuple[str, str | None]:
    import pydicom

    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception as exc:
        raise ImageError(f"uploaded DICOM file cannot be read: {exc.__class__.__name__}") from None
    modality = str(getattr(header, "Modality", "") or "").upper() or None
    return normalise_view(getattr(header, "ViewPosition", None)), modality


def decode_upload(data: bytes, view_hint: str | None, max_pixels: int) -> DecodedImage:
    view = "unknown"
    if is_dicom(data):
        view, modality = dicom_view_and_modality(data)
        if modality is not None and modality not in RADIOGRAPH_MODALITIES:
            raise UnsupportedModality(f"uploaded DICOM has modality {modality}; only radiographs (CR, DX, DR) are accepted")
    if view_hint == "frontal" and view not in ("PA", "AP"):
        view = "PA"
    elif view_hint == "lateral":
        view = "LATERAL"
    pixels = load_image(data, name="uploaded file", max_pixels=max_pixels)
    return DecodedImage(pixels=pixels, view=view)
