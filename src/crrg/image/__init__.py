"""Radiograph pixels in, one documented range out, and geometry-aware transforms.

``load_image(path) -> float32 (H, W) in [0, 1], 0 = black`` for PNG, JPEG and DICOM;
``load_radiograph(path)`` also passes it through the chest-radiograph gate (every reporting path uses
it: CLI, batch, service); the transforms
(letterbox resize, crop) return an :class:`Affine` so boxes follow the pixels both ways.
"""

from crrg.image.loading import DEFAULT_MAX_PIXELS, MAX_FILE_BYTES, ImageInfo, load_image, load_image_with_info
from crrg.image.dicom import DicomHeader, read_dicom_header
from crrg.image.gate import GateError, check_chest_radiograph, load_radiograph
from crrg.image import transforms
from crrg.image.transforms import Affine, Preprocess, center_crop, clip_boxes, crop, letterbox, resize, to_tensor

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_FILE_BYTES",
    "DicomHeader",
    "GateError",
    "check_chest_radiograph",
    "load_radiograph",
    "read_dicom_header",
    "ImageInfo",
    "load_image",
    "load_image_with_info",
    "transforms",
    "Affine",
    "Preprocess",
    "center_crop",
    "clip_boxes",
    "crop",
    "letterbox",
    "resize",
    "to_tensor",
]
