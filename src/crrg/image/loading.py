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
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from crrg.errors import ImageError

log = logging.getLogger(__name__)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# 5000 x 5000 = 25 megapixels: the largest chest detectors are 43 x 43 cm at 100 um (4300 x 4300 =
# 18.5 MP), and every crrg model looks at 512 px or less, so nothing a model can use is lost. The old
# limit (8192 x 8192 = 67 MP) let a 116 KB PNG of 60 MP cost +2.3 GB; now such a file is refused from
# its header, before a byte of it is decoded.
DEFAULT_MAX_PIXELS = 5000 * 5000
# No radiograph file comes near this (a 25 MP 16-bit DICOM is 50 MB); it bounds what a path, a
# stream or an inflated DICOM may make the loader read into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_RGB_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class ImageInfo:
    """Technical metadata of a loaded image (never patient fields)."""

    name: str
    format: str  # "PNG", "JPEG", "DICOM", ... (PIL format names, or DICOM)
    original_size: tuple[int, int]  # (height, width) of the stored image
    mode: str  # PIL mode, or the DICOM photometric interpretation
    bits: int  # bits per sample of the stored data
    view: str = "unknown"  # one of crrg.observations.VIEWS (DICOM ViewPosition)
    inverted: bool = False  # MONOCHROME1 / INVERSE presentation was inverted
    voi: str = "none"  # "lut", "window" or "none": which DICOM display transform was applied
    frames: int = 1  # DICOM frames (only the first is returned)
    transfer_syntax: str | None = None  # DICOM only
    modality: str | None = None  # DICOM Modality (CR, DX, CT, ...), None for other formats or when absent
    scale: float = 1.0  # returned size / original size (< 1 only when max_side asked for a reduced decode)
    chroma: float = 0.0  # mean colour saturation in [0, 1] before the reduction to gray (0 for gray images)


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None,
               max_side: int | None = None) -> np.ndarray:
    """Decode a radiograph into ``float32 (H, W)`` in ``[0, 1]`` with 0 = black; see the module docstring."""
    return load_image_with_info(source, max_pixels=max_pixels, name=name, max_side=max_side)[0]


def load_image_with_info(
    source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None, max_side: int | None = None
) -> tuple[np.ndarray, ImageInfo]:
    """Like :func:`load_image`, also returning the :class:`ImageInfo` of the file.

    ``max_side``: decode at a reduced resolution (an integer factor, so that the longer side is at
    most about ``max_side``) where the format allows it cheaply (JPEG DCT scaling, PIL ``reduce``);
    ``info.scale`` says by how much. ``None`` (default) keeps the stored resolution.
    """
    data, label, suffix = _read_source(source, name)
    if not data:
        raise ImageError(f"{label}: the file is empty")
    if _looks_like_dicom(data, suffix):
        image, info = _load_dicom(data, label, max_pixels)
    else:
        image, info = _load_pil(data, label, max_pixels, max_side)
    if not np.all(np.isfinite(image)):
        raise ImageError(f"{label}: the decoded pixels contain NaN or infinite values")
    log.debug("loaded %s: %s %s %dx%d view=%s", label, info.format, info.mode, info.original_size[1],
              info.original_size[0], info.view)
    return image, info


def _read_source(source: ImageSource, name: str | None) -> tuple[bytes, str, str]:
    """Bytes (at most MAX_FILE_BYTES), a label for messages, and the lower-case suffix (may be empty).

    Paths must be regular files: a FIFO would block for ever and ``/dev/zero`` would never end, so both
    are refused from ``stat`` before anything is opened.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<uploaded image>"
        if len(source) > MAX_FILE_BYTES:
            raise ImageError(f"{label}: {len(source):,} bytes is larger than any radiograph "
                             f"(limit {MAX_FILE_BYTES:,}); refused")
        return bytes(source), label, Path(label).suffix.lower()
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        return _read_path(path, label), label, path.suffix.lower()
    if hasattr(source, "read"):
        label = name or str(getattr(source, "name", "<image stream>"))
        try:
            data = source.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ImageError(f"{label}: cannot be read ({exc.strerror or exc})") from None
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{label}: the stream must be opened in binary mode")
        _check_length(label, len(data))
        return bytes(data), label, Path(label).suffix.lower()
    raise ImageError(f"cannot load an image from a {type(source).__name__}; give a path, bytes or a binary file")


def _read_path(path: Path, label: str) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{label}: is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise ImageError(f"{label}: is {kind}, not an image file; give the path of a PNG, JPEG or DICOM file")
    _check_length(label, st.st_size)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ImageError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    _check_length(label, len(data))
    return data


def _check_length(label: str, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{label}: the file is larger than any radiograph ({MAX_FILE_BYTES:,} bytes at most); refused")


def _looks_like_dicom(data: bytes, suffix: str) -> bool:
    return data[128:132] == b"DICM" or suffix in DICOM_SUFFIXES


def check_size(label: str, height: int, width: int, max_pixels: int) -> None:
    """Refuse an image with no pixels or more than ``max_pixels``, from its header, before decoding."""
    if height <= 0 or width <= 0:
        raise ImageError(f"{label}: the image has no pixels ({width}x{height})")
    if height * width > max_pixels:
        raise ImageError(
            f"{label}: {width}x{height} = {height * width:,} pixels exceeds the limit of {max_pixels:,} "
            "(larger than any chest radiograph: a decompression bomb or not a radiograph; raise max_pixels if "
            "the file is genuine)"
        )


# ----------------------------------------------------------------------------------------- PIL


def _load_pil(data: bytes, label: str, max_pixels: int, max_side: int | None) -> tuple[np.ndarray, ImageInfo]:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # reads the header only: the size is known before decoding
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: the image is absurdly large (decompression bomb); refused") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not a PNG, JPEG, DICOM or other known image format") from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError, struct.error) as exc:
        raise ImageError(f"{label}: corrupt image header ({exc})") from None
    with im:
        width, height = im.size
        check_size(label, height, width, max_pixels)
        fmt = im.format or "unknown"
        mode = im.mode
        factor = _reduction(width, height, max_side)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.seek(0)
                if factor > 1 and fmt == "JPEG":
                    im.draft(im.mode, (width // factor, height // factor))  # DCT scaling: decoded small
                im.load()
                if im.size != (width, height) and fmt != "JPEG":
                    raise ImageError(f"{label}: the decoded size {im.size} differs from the header's {(width, height)}")
                pixels, bits = _pil_to_gray(im, factor)
                chroma = _chroma(im)
        except ImageError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError, struct.error,
                Image.DecompressionBombError, MemoryError) as exc:
            raise ImageError(f"{label}: corrupt or truncated {fmt} data ({exc})") from None
    scale = pixels.shape[1] / width
    info = ImageInfo(name=label, format=fmt, original_size=(height, width), mode=mode, bits=bits, scale=scale,
                     chroma=chroma)
    return pixels, info


def _chroma(im) -> float:
    """Mean (max - min) over R, G, B of a 64 px thumbnail: ~0 for a gray film saved as RGB, large for a photo."""
    if im.mode in ("1", "L", "LA", "La", "I", "F") or im.mode.startswith("I;16"):
        return 0.0
    small = im.copy()
    small.thumbnail((64, 64))
    rgb = np.asarray(small.convert("RGB"), dtype=np.int16)
    return float((rgb.max(-1) - rgb.min(-1)).mean() / 255.0)


def _reduction(width: int, height: int, max_side: int | None) -> int:
    """The integer factor that brings the longer side to at most ~max_side (1 = full resolution)."""
    if not max_side or max(width, height) <= max_side:
        return 1
    return max(1, max(width, height) // max_side)


def _pil_to_gray(im, factor: int = 1) -> tuple[np.ndarray, int]:
    """Gray float32 in [0, 1] from any PIL mode, and the bits per sample of the source.

    Works in float32 (exact for 16-bit data) on one plane at a time: a float64 (H, W, 3) copy of a
    large colour image cost 24 bytes per pixel.
    """
    mode = im.mode
    if factor > 1 and im.size[0] // factor >= 1 and im.size[1] // factor >= 1:
        if mode in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV") or mode.startswith("I;16"):
            im = im.convert("I" if mode.startswith("I;16") else "RGBA" if "A" in mode else "RGB" if mode != "1" else "L")
        im = im.reduce(factor)
    if im.mode == "1":
        return np.asarray(im, dtype=np.float32), 1
    if im.mode == "L":
        return np.asarray(im, dtype=np.float32) / np.float32(255.0), 8
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im)
        bits = 16 if mode.startswith("I;16") else 32
        if arr.min() < 0:
            return _min_max(arr.astype(np.float64)), bits
        if arr.max() < 2**24:  # exact in float32
            return arr.astype(np.float32) / np.float32(_bit_range(arr)), bits
        return (arr.astype(np.float64) / _bit_range(arr)).astype(np.float32), bits
    if im.mode == "F":
        return _min_max(np.asarray(im, dtype=np.float32)), 32
    if im.mode in ("LA", "La", "PA"):
        im = im.convert("LA") if im.mode != "LA" else im
        return np.asarray(im.getchannel(0), dtype=np.float32) / np.float32(255.0), 8
    if im.mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
    gray = np.zeros((im.size[1], im.size[0]), np.float32)
    for band, weight in enumerate(_RGB_WEIGHTS):
        gray += np.asarray(im.getchannel(band), dtype=np.float32) * np.float32(weight / 255.0)
    return gray, 8


def _bit_range(arr: np.ndarray) -> float:
    """Full-scale value of unsigned data: 2**bits - 1 for the fewest whole bits that hold the maximum.

    A 16-bit container often holds 10-, 12- or 14-bit detector data; dividing by 65535 would make it
    nearly black. Data that fits in 8 bits is still scaled by 255.
    """
    peak = float(arr.max()) if arr.size else 0.0
    bits = max(8, int(np.ceil(np.log2(peak + 1.0)))) if peak > 0 else 8
    return float(2**bits - 1)


def _min_max(arr: np.ndarray) -> np.ndarray:
    """Stretch to [0, 1] by the array's own range (signed or float data without a stated scale)."""
    lo, hi = float(arr.min()), float(arr.max())
    if not hi > lo or not np.isfinite(hi - lo):
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


# --------------------------------------------------------------------------------------- DICOM


def _load_dicom(data: bytes, label: str, max_pixels: int) -> tuple[np.ndarray, ImageInfo]:
    from crrg.image.dicom import load_dicom

    image, header, voi, inverted, chroma = load_dicom(data, label, max_pixels)
    info = ImageInfo(
        name=label, format="DICOM", original_size=(header.rows, header.columns), mode=header.photometric,
        bits=header.bits_stored, view=header.view, inverted=inverted, voi=voi, frames=header.frames,
        transfer_syntax=header.transfer_syntax, modality=header.modality, chroma=chroma,
    )
    return image, info
