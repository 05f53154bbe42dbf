"""The image input contract under hostile input (issue 23 items 1, 5, 6, 7, 11, 13): bombs, huge legal
images, inconsistent DICOM headers, thin images, other modalities, devices and FIFOs as paths."""

from __future__ import annotations

import io
import os
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from crrg.errors import ImageError
from crrg.image import load_image, load_image_with_info, read_dicom_header
from tests.image.conftest import deflated_dicom, write_dicom


def peak_bytes(fn) -> tuple[object, int]:
    """(result or raised ImageError, peak traced bytes) of fn()."""
    tracemalloc.start()
    try:
        try:
            result = fn()
        except ImageError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------ item 1: deflated DICOM bomb


def test_legit_deflated_dicom_still_loads():
    image, info = load_image_with_info(deflated_dicom(64, 48, fill=51), name="ok.dcm")
    assert image.shape == (64, 48)
    np.testing.assert_allclose(image, 51 / 255, atol=1e-6)
    assert info.transfer_syntax == "1.2.840.10008.1.2.1.99"


def test_deflated_bomb_is_refused_with_bounded_memory():
    data = deflated_dicom(512, 512, pixel_bytes=200 << 20)  # ~200 KB that inflates to 200 MB
    assert len(data) < 1_000_000
    result, peak = peak_bytes(lambda: load_image(data, name="bomb.dcm"))
    assert isinstance(result, ImageError) and "bomb.dcm" in str(result) and "bomb" in str(result)
    assert peak < 32 << 20, f"peak {peak / 1e6:.0f} MB"


def test_header_read_of_a_deflated_bomb_is_bounded():
    data = deflated_dicom(512, 512, pixel_bytes=200 << 20, modality="CT")
    header, peak = peak_bytes(lambda: read_dicom_header(data, "bomb.dcm"))
    assert not isinstance(header, ImageError)
    assert header.modality == "CT" and (header.rows, header.columns) == (512, 512)
    assert peak < 16 << 20, f"peak {peak / 1e6:.0f} MB"


def test_deflated_header_declaring_too_many_pixels_is_refused_before_inflating():
    data = deflated_dicom(20_000, 20_000)  # 400 MB of zeros
    result, peak = peak_bytes(lambda: load_image(data, name="big.dcm"))
    assert isinstance(result, ImageError) and "exceeds the limit" in str(result)
    assert peak < 16 << 20


# ------------------------------------------------------------------ item 5: large legal images


def _png_zeros(width: int, height: int) -> bytes:
    """A genuine (decodable) 8-bit gray PNG of zeros, streamed: 60 MP in ~60 KB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    packer, parts, row = zlib.compressobj(9), [], b"\0" * (width + 1)
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def test_60_megapixel_png_is_refused_from_its_header():
    data = _png_zeros(10_000, 6_000)
    start = time.perf_counter()
    result, peak = peak_bytes(lambda: load_image(data, name="huge.png"))
    assert isinstance(result, ImageError) and "exceeds the limit" in str(result)
    assert time.perf_counter() - start < 1.0 and peak < 8 << 20


def test_colour_decode_makes_no_float64_copies():
    rgb = np.random.default_rng(0).integers(0, 255, (1000, 1000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    image, peak = peak_bytes(lambda: load_image(buffer.getvalue()))
    expected = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(image, expected, atol=1e-5)
    assert peak < 20 * rgb.shape[0] * rgb.shape[1], f"peak {peak / 1e6:.0f} MB for 1 MP"  # was ~40 bytes / px


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_reduced_resolution_decode(fmt):
    ramp = np.tile(np.linspace(0, 255, 1600), (1200, 1)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format=fmt)
    image, info = load_image_with_info(buffer.getvalue(), max_side=400)
    assert max(image.shape) <= 800 and info.scale < 0.6 and info.original_size == (1200, 1600)
    assert abs(image.shape[0] / image.shape[1] - 0.75) < 0.02
    np.testing.assert_allclose(image[:, 0].mean(), 0.0, atol=0.03)
    np.testing.assert_allclose(image[:, -1].mean(), 1.0, atol=0.03)


# ------------------------------------------------------------------ item 6: inconsistent DICOM


def test_gray_dicom_with_excess_pixel_bytes_is_refused(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "ok.dcm", np.zeros((512, 512), np.uint8))
    ds = pydicom.dcmread(path)
    ds.PixelData = bytes(2 * 512 * 512)  # decoded as a (2, 512) "colour" image before
    ds.save_as(tmp_path / "excess.dcm", enforce_file_format=True)
    with pytest.raises(ImageError, match=r"excess\.dcm: .*pixel data.*declare"):
        load_image(tmp_path / "excess.dcm")


def test_monochrome_with_three_samples_is_refused(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "ok.dcm", np.zeros((64, 64), np.uint8))
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel = 3
    ds.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
    with pytest.raises(ImageError, match=r"bad\.dcm: MONOCHROME2 with SamplesPerPixel 3"):
        load_image(tmp_path / "bad.dcm")


def test_frames_declared_but_missing_is_refused(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "ok.dcm", np.zeros((64, 64), np.uint8))
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 4
    ds.save_as(tmp_path / "frames.dcm", enforce_file_format=True)
    with pytest.raises(ImageError, match=r"frames\.dcm: truncated pixel data"):
        load_image(tmp_path / "frames.dcm")


# ------------------------------------------------------------------ item 13: devices, FIFOs, folders


@pytest.mark.timeout(20)
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match=r"pipe\.png: is a FIFO"):
        load_image(fifo)


@pytest.mark.timeout(20)
def test_dev_zero_is_refused_immediately():
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with pytest.raises(ImageError, match=r"/dev/zero: is a device, not an image file"):
        load_image("/dev/zero")


def test_folder_and_missing_file_messages(tmp_path):
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "absent.png")


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    from crrg.image import loading

    monkeypatch.setattr(loading, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.png"
    path.write_bytes(b"\0" * 2000)
    with pytest.raises(ImageError, match="larger than any radiograph"):
        load_image(path)
