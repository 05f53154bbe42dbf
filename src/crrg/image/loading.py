"""One loader for PNG, JPEG and DICOM radiographs: ``float32 (H, W)`` in ``[0, 1]``, 0 = black.

Every model in crrg sees pixels normalised this one way, whatever the file format or bit depth, so
a checkpoint trained on 8-bit PNGs also works on a 16-bit DICOM from a hospital PACS:

* air is dark and bone is bright, as a radiologist sees the film: DICOM ``MONOCHROME1`` (where
  larger stored values are darker) and ``PresentationLUTShape = INVERSE`` are inverted;
* DICOM pixels pass through the modality LUT (rescale slope / intercept) and the first VOI LUT or
  window (centre / width), i.e. the display the modality intended. Without a VOI, 8-bit data is
  scaled by its 0..255 range and deeper data by its own minimum / maximum;
* 16-bit PNG / TIFF is scaled by its actual bit range (12-bit data stored in 16 bits is divided by
  4095, not 65535);
* colour images (RGB, RGBA, LA, palette, CMYK) are reduced to luminance with the ITU-R 601 weights
  and any alpha channel is dropped.

Anything that cannot be decoded into a radiograph raises :class:`~crrg.errors.ImageError` naming the
file: empty, truncated or corrupt files, non-images, compressed DICOM without a decoder plugin, and
images larger than ``max_pixels`` (a decompression bomb is refused before its pixels are decoded).

Sources may be paths or in-memory bytes / file objects (the HTTP service passes uploads), with a
``name`` used in messages. :class:`ImageInfo` carries the technical metadata (size, view position,
photometric interpretation); patient-identifying DICOM fields are never read into it nor logged.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from crrg.errors import ImageError
from crrg.observations import normalise_view

log = logging.getLogger(__name__)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# 8192 x 8192: far above any chest radiograph (large CR plates are about 4300 x 3500) yet small
# enough that a decompression bomb is refused before it takes the machine's memory.
DEFAULT_MAX_PIXELS = 8192 * 8192
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_RGB_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclass
class ImageInfo:
    """Technical metadata of a loaded image (never patient fields)."""

    name: str
    format: str  # "PNG", "JPEG", "DICOM", ... (PIL format names, or DICOM)
    original_size: tuple[int, int]  # (height, width) of the decoded image
    mode: str  # PIL mode, or the DICOM photometric interpretation
    bits: int  # bits per sample of the stored data
    view: str = "unknown"  # one of crrg.observations.VIEWS (DICOM ViewPosition)
    inverted: bool = False  # MONOCHROME1 / INVERSE presentation was inverted
    voi: str = "none"  # "lut", "window" or "none": which DICOM display transform was applied
    frames: int = 1  # DICOM frames (only the first is returned)
    transfer_syntax: str | None = None  # DICOM only


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """Decode a radiograph into ``float32 (H, W)`` in ``[0, 1]`` with 0 = black; see the module docstring."""
    return load_image_with_info(source, max_pixels=max_pixels, name=name)[0]


def load_image_with_info(
    source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> tuple[np.ndarray, ImageInfo]:
    """Like :func:`load_image`, also returning the :class:`ImageInfo` of the file."""
    data, label, suffix = _read_source(source, name)
    if not data:
        raise ImageError(f"{label}: the file is empty")
    if _looks_like_dicom(data, suffix):
        image, info = _load_dicom(data, label, max_pixels)
    else:
        image, info = _load_pil(data, label, max_pixels, suffix)
    if not np.all(np.isfinite(image)):
        raise ImageError(f"{label}: the decoded pixels contain NaN or infinite values")
    log.debug("loaded %s: %s %s %dx%d view=%s", label, info.format, info.mode, info.original_size[1],
              info.original_size[0], info.view)
    return image, info


def _read_source(source: ImageSource, name: str | None) -> tuple[bytes, str, str]:
    """Bytes, a label for messages, and the lower-case suffix (may be empty)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<uploaded image>"
        return bytes(source), label, Path(label).suffix.lower()
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        if not path.exists():
            raise ImageError(f"{label}: no such file")
        if path.is_dir():
            raise ImageError(f"{label}: is a folder, not an image file")
        try:
            return path.read_bytes(), label, path.suffix.lower()
        except OSError as exc:
            raise ImageError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    if hasattr(source, "read"):
        label = name or str(getattr(source, "name", "<image stream>"))
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{label}: the stream must be opened in binary mode")
        return bytes(data), label, Path(label).suffix.lower()
    raise ImageError(f"cannot load an image from a {type(source).__name__}; give a path, bytes or a binary file")


def _looks_like_dicom(data: bytes, suffix: str) -> bool:
    return data[128:132] == b"DICM" or suffix in DICOM_SUFFIXES


def _check_size(label: str, height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageError(f"{label}: the image has no pixels ({width}x{height})")
    if height * width > max_pixels:
        raise ImageError(
            f"{label}: {width}x{height} = {height * width:,} pixels exceeds the limit of {max_pixels:,} "
            "(a decompression bomb or not a radiograph; raise max_pixels if the file is genuine)"
        )


# ----------------------------------------------------------------------------------------- PIL


def _load_pil(data: bytes, label: str, max_pixels: int, suffix: str) -> tuple[np.ndarray, ImageInfo]:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # reads the header only: the size is known before decoding
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: the image is absurdly large (decompression bomb); refused") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not a PNG, JPEG, DICOM or other known image format") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{label}: corrupt image header ({exc})") from None
    with im:
        width, height = im.size
        _check_size(label, height, width, max_pixels)
        fmt = im.format or "unknown"
        try:
            im.seek(0)
            im.load()
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageError(f"{label}: corrupt or truncated {fmt} data ({exc})") from None
        mode = im.mode
        try:
            pixels, bits = _pil_to_gray(im)
        except (OSError, ValueError) as exc:
            raise ImageError(f"{label}: cannot convert {fmt} mode {mode} to gray ({exc})") from None
    info = ImageInfo(name=label, format=fmt, original_size=(height, width), mode=mode, bits=bits)
    return pixels, info


def _pil_to_gray(im) -> tuple[np.ndarray, int]:
    """Gray float32 in [0, 1] from any PIL mode, and the bits per sample of the source."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float32), 1
    if mode == "L":
        return np.asarray(im, dtype=np.float32) / 255.0, 8
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.float64)
        if arr.min() < 0:
            return _min_max(arr), 32
        return (arr / _bit_range(arr)).astype(np.float32), 16 if mode.startswith("I;16") else 32
    if mode == "F":
        return _min_max(np.asarray(im, dtype=np.float64)), 32
    if mode in ("LA", "La", "PA"):
        im = im.convert("LA") if mode != "LA" else im
        return np.asarray(im, dtype=np.float32)[..., 0] / 255.0, 8
    if mode != "RGB":
        im = im.convert("RGBA" if "A" in mode or "transparency" in im.info else "RGB")
    rgb = np.asarray(im, dtype=np.float64)[..., :3]
    return (rgb @ _RGB_WEIGHTS / 255.0).astype(np.float32), 8


def _bit_range(arr: np.ndarray) -> float:
    """Full-scale value of unsigned data: 2**bits - 1 for the fewest whole bits that hold the maximum.

    A 16-bit container often holds 10-, 12- or 14-bit detector data; dividing by 65535 would make it
    nearly black. Data that fits in 8 bits is still scaled by 255.
    """
    peak = float(arr.max()) if arr.size else 0.0
    bits = max(8, int(np.ceil(np.log2(peak + 1.0)))) if peak > 0 else 8
    return float(2**bits - 1)


def _min_max(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


# --------------------------------------------------------------------------------------- DICOM


def _load_dicom(data: bytes, label: str, max_pixels: int) -> tuple[np.ndarray, ImageInfo]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import pixel_array

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise ImageError(f"{label}: not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageError(f"{label}: the DICOM file has no pixel data (a report, structured report or header only?)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    except (AttributeError, ValueError, TypeError) as exc:
        raise ImageError(f"{label}: DICOM image header is incomplete ({exc})") from None
    _check_size(label, rows, cols, max_pixels)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        arr = ds.pixel_array if frames == 1 else pixel_array(ds, index=0)
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        if syntax is not None and syntax.is_compressed:
            raise ImageError(
                f"{label}: compressed with {syntax.name} ({syntax}) and no installed decoder handles it; "
                "install one, e.g. `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg` or `pip install python-gdcm`"
                f" ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from None
        raise ImageError(f"{label}: cannot decode the DICOM pixel data ({str(exc).splitlines()[0]})") from None
    except (ValueError, AttributeError, KeyError, TypeError, EOFError, OSError) as exc:
        raise ImageError(f"{label}: corrupt or truncated DICOM pixel data ({exc})") from None
    if frames > 1:
        log.warning("%s: %d frames; using the first", label, frames)

    if arr.ndim == 3:  # colour DICOM (pydicom already converted YBR to RGB)
        image = _min_max(arr[..., :3].astype(np.float64) @ _RGB_WEIGHTS) if arr.dtype.kind == "f" else (
            (arr[..., :3].astype(np.float64) @ _RGB_WEIGHTS) / float(2**bits_stored - 1)).astype(np.float32)
        voi, inverted = "none", False
    else:
        image, voi, inverted = _dicom_gray(arr, ds, photometric, bits_stored, label)
    info = ImageInfo(
        name=label, format="DICOM", original_size=(rows, cols), mode=photometric, bits=bits_stored,
        view=normalise_view(ds.get("ViewPosition")), inverted=inverted, voi=voi, frames=frames,
        transfer_syntax=str(syntax) if syntax is not None else None,
    )
    return np.clip(image, 0.0, 1.0).astype(np.float32), info


def _dicom_gray(arr: np.ndarray, ds, photometric: str, bits_stored: int, label: str) -> tuple[np.ndarray, str, bool]:
    """Modality LUT, then VOI LUT / window, then scale to [0, 1] and invert MONOCHROME1."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        values = apply_modality_lut(arr, ds)
        voi = _voi_kind(ds)
        if voi == "lut":
            # Pass every input the LUT maps through pydicom to read its output range (LUTData may
            # be raw OW bytes or a list, 8 or 16 bits: pydicom knows how to parse it).
            entries, first = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor[:2])
            domain = np.arange(first, first + (entries or 65536), dtype=np.int64)
            probe = apply_voi_lut(domain, ds, prefer_lut=True)
            lo, hi = float(np.min(probe)), float(np.max(probe))
            if values.dtype.kind == "f" and np.array_equal(values, np.round(values)):
                values = values.astype(np.int64)  # a LUT indexes integers; rescale made them floats
            values = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
        elif voi == "window":
            # The window's output range depends on the stored bits and rescale; probing the same
            # function with extreme inputs reads it off instead of re-deriving pydicom's rules.
            probe = apply_voi_lut(np.array([-1e15, 1e15]), ds, prefer_lut=False)
            lo, hi = float(np.min(probe)), float(np.max(probe))
            values = apply_voi_lut(values, ds, prefer_lut=False).astype(np.float64)
        else:
            values = np.asarray(values, dtype=np.float64)
            lo, hi = _dicom_native_range(values, ds, bits_stored)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ImageError(f"{label}: invalid DICOM LUT / window attributes ({exc})") from None
    image = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    inverted = photometric == "MONOCHROME1"
    if str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE":
        inverted = not inverted
    if inverted:
        image = 1.0 - image
    return image.astype(np.float32), voi, inverted


def _voi_kind(ds) -> str:
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        return "lut"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        return "window"
    return "none"


def _dicom_native_range(values: np.ndarray, ds, bits_stored: int) -> tuple[float, float]:
    """Display range without a VOI: 8-bit data keeps its full scale, deeper data its own min / max."""
    rescaled = ds.get("RescaleSlope") is not None or ds.get("ModalityLUTSequence") is not None
    if bits_stored <= 8 and not rescaled and int(ds.get("PixelRepresentation", 0)) == 0:
        return 0.0, 255.0
    return float(values.min()), float(values.max())
