"""DICOM radiographs: a bounded header read, checked pixel geometry, and display-ready gray pixels.

A DICOM file is only as trustworthy as its header, so everything that could cost memory is checked
against the header *before* it is paid for:

* the deflated transfer syntax (the whole dataset zlib-compressed, up to ~1000:1) is inflated in
  bounded steps: first at most :data:`HEADER_LIMIT` bytes to read Rows / Columns / frames / samples,
  then only as many bytes as those declare. A 500 KB upload that would inflate to gigabytes is refused
  after inflating about a megabyte (pydicom itself inflates the whole stream at once, even for a
  header-only read);
* Rows x Columns against ``max_pixels``; SamplesPerPixel against the photometric interpretation;
  the length of native pixel data against Rows x Columns x samples x frames x bits (a gray image with
  excess bytes must not be decoded as a colour image of another shape), and the decoded array's shape
  against Rows / Columns.

:func:`read_dicom_header` is the one header read for everyone (the loader, the service's modality and
view check): patient fields are never copied out of it.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from pydicom.errors import BytesLengthException, InvalidDicomError

from crrg.errors import ImageError
from crrg.image.loading import MAX_FILE_BYTES, _min_max, check_size
from crrg.observations import normalise_view

log = logging.getLogger(__name__)

DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian (PS3.5 A.5)
# Everything of a dataset before its pixel data (and after it) must fit in this many inflated bytes;
# real headers are a few kB, rarely more than 100 kB with private tags.
HEADER_LIMIT = 1 << 20
_BITS_ALLOCATED = (1, 8, 16, 32, 64)
# What pydicom raises on hostile bytes (elements are parsed lazily, so any attribute access can raise);
# its BytesLengthException is a RuntimeError.
DICOM_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, IndexError, AttributeError, UnicodeError,
                NotImplementedError, OverflowError, RuntimeError, zlib.error, struct.error, BytesLengthException,
                InvalidDicomError)
_RGB_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class DicomHeader:
    """The technical header fields crrg uses (never patient fields)."""

    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    photometric: str
    modality: str | None  # upper case, None when not stated
    view: str  # one of crrg.observations.VIEWS
    transfer_syntax: str | None

    @property
    def frame_bytes(self) -> int:
        """Bytes of one native (uncompressed) frame."""
        bits = self.rows * self.columns * self.samples_per_pixel * self.bits_allocated
        return (bits + 7) // 8


def read_dicom_header(data: bytes, name: str = "<uploaded DICOM>", max_pixels: int | None = None) -> DicomHeader:
    """The header of a DICOM file held in memory, read without its pixel data and with deflated
    data inflated only as far as the header (the service's modality / view check calls this)."""
    return _header_of(_read(data, name, with_pixels=False, max_pixels=max_pixels), name, max_pixels)


def load_dicom(data: bytes, label: str, max_pixels: int):
    """Gray float32 (H, W) in [0, 1] of the first frame, its :class:`DicomHeader`, ``voi``, ``inverted`` and
    chroma (mean colour saturation, 0 for gray)."""
    try:
        return _decode(data, label, max_pixels)
    except ImageError:
        raise
    except DICOM_ERRORS as exc:  # a malformed element met anywhere (pydicom parses elements on access)
        raise ImageError(f"{label}: malformed DICOM ({_first_line(exc)})") from None


def _decode(data: bytes, label: str, max_pixels: int):
    from pydicom.pixels import pixel_array

    ds = _read(data, label, with_pixels=True, max_pixels=max_pixels)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageError(f"{label}: the DICOM file has no pixel data (a report, structured report or header only?)")
    header = _header_of(ds, label, max_pixels)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    native = syntax is None or not syntax.is_compressed
    if native and "PixelData" in ds:
        _check_native_length(label, header, len(ds.PixelData))
    try:
        arr = ds.pixel_array if header.frames == 1 else pixel_array(ds, index=0)
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        if syntax is not None and syntax.is_compressed:
            raise ImageError(
                f"{label}: compressed with {syntax.name} ({syntax}) and no installed decoder handles it; "
                "install one, e.g. `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg` or `pip install python-gdcm`"
                f" ({_first_line(exc)})"
            ) from None
        raise ImageError(f"{label}: cannot decode the DICOM pixel data ({_first_line(exc)})") from None
    except (ValueError, AttributeError, KeyError, TypeError, EOFError, OSError, IndexError, MemoryError) as exc:
        raise ImageError(f"{label}: corrupt or truncated DICOM pixel data ({_first_line(exc)})") from None
    expected = (header.rows, header.columns) + ((header.samples_per_pixel,) if header.samples_per_pixel > 1 else ())
    if arr.shape != expected:
        raise ImageError(f"{label}: the decoded pixels have shape {arr.shape}, but Rows x Columns x SamplesPerPixel "
                         f"declare {expected}; the file is inconsistent")
    if header.frames > 1:
        log.warning("%s: %d frames; using the first", label, header.frames)
    if arr.ndim == 3:  # colour DICOM (pydicom already converted YBR to RGB)
        rgb = arr[..., :3].astype(np.float32) @ _RGB_WEIGHTS
        image = _min_max(rgb) if arr.dtype.kind == "f" else rgb / float(2**header.bits_stored - 1)
        step = max(1, max(arr.shape[:2]) // 64)
        small = arr[::step, ::step, :3].astype(np.float32)
        chroma = float((small.max(-1) - small.min(-1)).mean() / max(float(np.ptp(small)), 1e-6))
        return np.clip(image, 0.0, 1.0).astype(np.float32), header, "none", False, chroma
    image, voi, inverted = _gray(arr, ds, header, label)
    return np.clip(image, 0.0, 1.0).astype(np.float32), header, voi, inverted, 0.0


# --------------------------------------------------------------------------------- reading


def _read(data: bytes, label: str, with_pixels: bool, max_pixels: int | None):
    """A pydicom dataset; deflated data inflated within bounds (see the module docstring)."""
    import pydicom

    try:
        meta, body_at = _file_meta(data)
        if meta is not None and str(meta.get("TransferSyntaxUID", "")).strip("\0 ") == DEFLATED:
            return _read_deflated(data, meta, body_at, label, with_pixels, max_pixels)
        return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=not with_pixels)
    except ImageError:
        raise
    except DICOM_ERRORS as exc:
        raise ImageError(f"{label}: not a readable DICOM file ({_first_line(exc)})") from None


def _file_meta(data: bytes):
    """(file meta dataset or None, offset of the dataset after it)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = io.BytesIO(data)
    read_preamble(fp, True)
    start = fp.tell()
    if data[start:start + 2] != b"\x02\x00":  # no group 0002: a bare dataset
        return None, start
    meta = _read_file_meta_info(fp)
    return meta, fp.tell()


def _read_deflated(data: bytes, meta, body_at: int, label: str, with_pixels: bool, max_pixels: int | None):
    from pydicom.dataset import FileDataset
    from pydicom.filereader import _at_pixel_data, read_dataset
    from pydicom.uid import ExplicitVRLittleEndian

    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    body = inflater.decompress(data[body_at:], HEADER_LIMIT)
    reached = []

    def at_pixels(tag, vr, length) -> bool:
        if _at_pixel_data(tag, vr, length):
            reached.append(True)
            return True
        return False

    if _more(inflater):
        ds = read_dataset(io.BytesIO(body), False, True, stop_when=at_pixels)
        if not reached:
            raise ImageError(f"{label}: the deflated DICOM header inflates past {HEADER_LIMIT:,} bytes before its "
                             "pixel data; refused (a decompression bomb?)")
        if with_pixels:
            header = _header_of(ds, label, max_pixels)
            budget = min(header.frame_bytes * header.frames + 2 * HEADER_LIMIT, MAX_FILE_BYTES)
            body += inflater.decompress(inflater.unconsumed_tail, max(budget - len(body), 1))
            if _more(inflater):
                raise ImageError(f"{label}: the deflated DICOM data inflates past {budget:,} bytes, more than its "
                                 "header declares or the loader accepts; refused (a decompression bomb?)")
    if with_pixels or not reached:
        ds = read_dataset(io.BytesIO(body), False, True, stop_when=None if with_pixels else _at_pixel_data)
    meta = type(meta)(meta)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what the inflated bytes are now
    out = FileDataset(label, ds, preamble=b"\0" * 128, file_meta=meta, is_implicit_VR=False, is_little_endian=True)
    out.original_transfer_syntax = DEFLATED
    return out


def _more(inflater) -> bool:
    """Whether the stream would inflate further than what has been taken (bounded check: one byte)."""
    if inflater.eof:
        return False
    return bool(inflater.unconsumed_tail) or bool(inflater.decompress(b"", 1))


def _header_of(ds, label: str, max_pixels: int | None) -> DicomHeader:
    try:
        header = DicomHeader(
            rows=int(ds.get("Rows", 0) or 0),
            columns=int(ds.get("Columns", 0) or 0),
            frames=int(ds.get("NumberOfFrames", 1) or 1),
            samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
            bits_allocated=int(ds.get("BitsAllocated", 8) or 8),
            bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8),
            photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper(),
            modality=(str(ds.get("Modality", "") or "").strip().upper() or None),
            view=normalise_view(ds.get("ViewPosition")),
            transfer_syntax=_syntax_of(ds),
        )
    except DICOM_ERRORS as exc:
        raise ImageError(f"{label}: DICOM image header is incomplete or malformed ({_first_line(exc)})") from None
    if "Rows" in ds or "Columns" in ds:
        _check_header(label, header, max_pixels)
    return header


def _syntax_of(ds) -> str | None:
    original = getattr(ds, "original_transfer_syntax", None)
    if original:
        return original
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(syntax) if syntax is not None else None


def _check_header(label: str, h: DicomHeader, max_pixels: int | None) -> None:
    if max_pixels is not None:
        check_size(label, h.rows, h.columns, max_pixels)
    elif h.rows <= 0 or h.columns <= 0:
        raise ImageError(f"{label}: the DICOM image has no pixels ({h.columns}x{h.rows})")
    if h.frames < 1 or h.frames > 10_000:
        raise ImageError(f"{label}: NumberOfFrames {h.frames} is not a plausible count; the header is corrupt")
    if h.bits_allocated not in _BITS_ALLOCATED or not 1 <= h.bits_stored <= h.bits_allocated:
        raise ImageError(f"{label}: BitsAllocated {h.bits_allocated} / BitsStored {h.bits_stored} are not valid")
    if h.photometric.startswith("MONOCHROME") and h.samples_per_pixel != 1:
        raise ImageError(f"{label}: {h.photometric} with SamplesPerPixel {h.samples_per_pixel}; a gray image has 1")
    if h.samples_per_pixel not in (1, 3):
        raise ImageError(f"{label}: SamplesPerPixel {h.samples_per_pixel} is not 1 (gray) or 3 (colour)")


def _check_native_length(label: str, h: DicomHeader, got: int) -> None:
    """Uncompressed pixel data must be exactly what the header declares (plus one byte of padding)."""
    need = h.frame_bytes * h.frames
    if got < need:
        raise ImageError(f"{label}: truncated pixel data: {got:,} bytes where Rows x Columns x SamplesPerPixel x "
                         f"NumberOfFrames need {need:,}")
    if got > need + 1:
        raise ImageError(f"{label}: {got:,} bytes of pixel data where Rows x Columns x SamplesPerPixel x "
                         f"NumberOfFrames ({h.rows}x{h.columns}x{h.samples_per_pixel}x{h.frames}) declare {need:,}; "
                         "the header does not describe the pixels, so the image cannot be trusted")


# --------------------------------------------------------------------------------- display


def _gray(arr: np.ndarray, ds, header: DicomHeader, label: str) -> tuple[np.ndarray, str, bool]:
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
            values = apply_voi_lut(values, ds, prefer_lut=True)
        elif voi == "window":
            # The window's output range depends on the stored bits and rescale; probing the same
            # function with extreme inputs reads it off instead of re-deriving pydicom's rules.
            probe = apply_voi_lut(np.array([-1e15, 1e15]), ds, prefer_lut=False)
            lo, hi = float(np.min(probe)), float(np.max(probe))
            values = apply_voi_lut(values, ds, prefer_lut=False)
        else:
            lo, hi = _native_range(values, ds, header.bits_stored)
    except DICOM_ERRORS as exc:
        raise ImageError(f"{label}: invalid DICOM LUT / window attributes ({_first_line(exc)})") from None
    # float64 arithmetic on one gray plane only: window/LUT outputs can exceed float32's exact integers
    image = ((np.asarray(values, dtype=np.float64) - lo) / (hi - lo)).astype(np.float32) if hi > lo and np.isfinite(
        hi - lo) else np.zeros(np.shape(values), np.float32)
    inverted = header.photometric == "MONOCHROME1"
    if str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE":
        inverted = not inverted
    if inverted:
        image = 1.0 - image
    return image, voi, inverted


def _voi_kind(ds) -> str:
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        return "lut"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        return "window"
    return "none"


def _native_range(values: np.ndarray, ds, bits_stored: int) -> tuple[float, float]:
    """Display range without a VOI: 8-bit data keeps its full scale, deeper data its own min / max."""
    rescaled = ds.get("RescaleSlope") is not None or ds.get("ModalityLUTSequence") is not None
    if bits_stored <= 8 and not rescaled and int(ds.get("PixelRepresentation", 0)) == 0:
        return 0.0, 255.0
    return float(np.min(values)), float(np.max(values))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
