"""Uploaded bytes -> a decoded radiograph with its view, checked at the edge of the service.

DICOM uploads must be plain radiographs (modality CR, DX or DR, or none stated): a CT slice or an
ultrasound frame is refused from its header, before any pixel is decoded (415). Every image then
goes through the chest-radiograph gate of :mod:`crrg.image.gate`, the same one ``crrg report``
uses (422 for a photograph, a document, noise...). The view comes from the form field (``frontal`` /
``lateral``), else DICOM ViewPosition, else "unknown" (generators treat unknown as frontal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crrg.errors import ImageError
from crrg.image.gate import RADIOGRAPH_MODALITIES, load_radiograph


class UnsupportedModality(ImageError):
    """A DICOM of a modality other than a radiograph (the service answers 415)."""


@dataclass
class DecodedImage:
    pixels: np.ndarray  # float32 (H, W) in [0, 1]
    view: str


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def dicom_view_and_modality(data: bytes, max_pixels: int | None = None) -> tuple[str, str | None]:
    """ViewPosition and Modality from the image loader's bounded header read (a deflated DICOM is
    inflated only as far as its header, never whole)."""
    from crrg.image.dicom import read_dicom_header

    header = read_dicom_header(data, name="uploaded DICOM", max_pixels=max_pixels)
    return header.view, header.modality


def decode_upload(data: bytes, view_hint: str | None, max_pixels: int, gate: bool = True) -> DecodedImage:
    view = "unknown"
    if is_dicom(data):
        view, modality = dicom_view_and_modality(data, max_pixels)
        if modality is not None and modality not in RADIOGRAPH_MODALITIES:
            raise UnsupportedModality(f"uploaded DICOM has modality {modality}; only radiographs (CR, DX, DR) are accepted")
    if view_hint == "frontal" and view not in ("PA", "AP"):
        view = "PA"
    elif view_hint == "lateral":
        view = "LATERAL"
    pixels, _ = load_radiograph(data, name="uploaded file", max_pixels=max_pixels, gate=gate)
    return DecodedImage(pixels=pixels, view=view)
