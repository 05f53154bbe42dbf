"""load_image: one range for every format, inversion of MONOCHROME1, VOI, and clear errors."""

from __future__ import annotations

import io
import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from crrg.errors import ImageError
from crrg.image import load_image, load_image_with_info


def ramp(height: int = 32, width: int = 48, peak: int = 255) -> np.ndarray:
    """A horizontal ramp 0..peak: dark on the left, bright on the right."""
    row = np.linspace(0, peak, width)
    return np.tile(row, (height, 1)).round().astype(np.uint16 if peak > 255 else np.uint8)


def expected_ramp(height: int = 32, width: int = 48) -> np.ndarray:
    return (ramp(height, width).astype(np.float32) / 255.0)


# --------------------------------------------------------------------------- PNG / JPEG


def test_gray_png_is_float_in_unit_range(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(ramp()).save(path)
    image = load_image(path)
    assert image.dtype == np.float32 and image.shape == (32, 48)
    np.testing.assert_allclose(image, expected_ramp(), atol=1e-6)
    assert image[:, 0].max() == 0.0 and image[:, -1].min() == 1.0  # 0 = black


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_colour_modes_reduce_to_the_same_gray(tmp_path, mode):
    gray = Image.fromarray(ramp())
    path = tmp_path / f"img_{mode}.png"
    gray.convert(mode).save(path)
    image, info = load_image_with_info(path)
    assert image.shape == (32, 48)
    assert info.mode == mode
    np.testing.assert_allclose(image, expected_ramp(), atol=1.5 / 255)


def test_rgb_uses_luminance_weights(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 255  # pure green
    path = tmp_path / "green.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_allclose(load_image(path), 0.587, atol=1e-6)


def test_16bit_png_scaled_by_its_actual_bit_range(tmp_path):
    twelve_bit = ramp(peak=4095)
    path = tmp_path / "twelve.png"
    Image.fromarray(twelve_bit).save(path)  # stored as a 16-bit PNG
    image, info = load_image_with_info(path)
    assert info.bits == 16
    assert image.max() == pytest.approx(1.0)  # divided by 4095, not 65535
    np.testing.assert_allclose(image, twelve_bit / 4095.0, atol=1e-6)
    full = ramp(peak=65535)
    Image.fromarray(full).save(tmp_path / "sixteen.png")
    np.testing.assert_allclose(load_image(tmp_path / "sixteen.png"), full / 65535.0, atol=1e-6)


def test_jpeg_loads_close_to_its_source(tmp_path):
    path = tmp_path / "x.jpg"
    Image.fromarray(ramp(64, 64)).save(path, quality=95)
    image, info = load_image_with_info(path)
    assert info.format == "JPEG"
    np.testing.assert_allclose(image, expected_ramp(64, 64), atol=0.03)


def test_bytes_and_stream_input_use_the_given_name(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(ramp()).save(buffer, format="PNG")
    data = buffer.getvalue()
    np.testing.assert_allclose(load_image(data, name="upload.png"), expected_ramp(), atol=1e-6)
    np.testing.assert_allclose(load_image(io.BytesIO(data)), expected_ramp(), atol=1e-6)
    with pytest.raises(ImageError, match="upload.png"):
        load_image(data[:60], name="upload.png")


# --------------------------------------------------------------------------- errors


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png.*empty"):
        load_image(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_non_image(tmp_path):
    path = tmp_path / "report.png"
    path.write_text("FINDINGS: the heart is normal in size.\n")
    with pytest.raises(ImageError, match=r"report\.png: not a PNG"):
        load_image(path)


def test_truncated_png_and_jpeg(tmp_path):
    for suffix, fmt in (("png", "PNG"), ("jpg", "JPEG")):
        buffer = io.BytesIO()
        Image.fromarray((np.random.default_rng(0).random((128, 128)) * 255).astype(np.uint8)).save(buffer, format=fmt)
        path = tmp_path / f"cut.{suffix}"
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        with pytest.raises(ImageError, match=rf"cut\.{suffix}.*(truncated|corrupt)"):
            load_image(path)


def _png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims another size: what a decompression bomb looks like to the header reader."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    body = bytes(data[ihdr + 4: ihdr + 8]) + struct.pack(">II", width, height) + bytes(data[ihdr + 16: ihdr + 21])
    data[ihdr + 8: ihdr + 16] = struct.pack(">II", width, height)
    data[ihdr + 21: ihdr + 25] = struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    return bytes(data)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_header_size(100_000, 100_000))
    with pytest.raises(ImageError, match=r"bomb\.png.*(exceeds the limit|decompression bomb)"):
        load_image(path)
    path.write_bytes(_png_with_header_size(12_000, 12_000))  # under PIL's own limit, over ours
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(path)


def test_max_pixels_is_configurable(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(ramp()).save(path)
    with pytest.raises(ImageError, match="exceeds the limit of 100"):
        load_image(path, max_pixels=100)


# --------------------------------------------------------------------------- DICOM


def test_dicom_8bit_matches_png_convention(dicom_writer):
    path = dicom_writer("eight.dcm", ramp(), ViewPosition="AP")
    image, info = load_image_with_info(path)
    np.testing.assert_allclose(image, expected_ramp(), atol=1e-6)
    assert info.format == "DICOM" and info.view == "AP" and not info.inverted


def test_monochrome1_is_inverted(dicom_writer):
    pixels = ramp(peak=4095)
    mono2 = load_image(dicom_writer("m2.dcm", pixels, bits_stored=12))
    mono1, info = load_image_with_info(dicom_writer("m1.dcm", pixels, photometric="MONOCHROME1", bits_stored=12))
    assert info.inverted
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono1[:, 0].min() == 1.0  # the smallest stored value is white in MONOCHROME1


def test_inverse_presentation_lut_flips_again(dicom_writer):
    pixels = ramp(peak=4095)
    normal = load_image(dicom_writer("a.dcm", pixels, bits_stored=12))
    flipped = load_image(dicom_writer("b.dcm", pixels, bits_stored=12, PresentationLUTShape="INVERSE"))
    np.testing.assert_allclose(flipped, 1.0 - normal, atol=1e-6)


def test_window_is_applied(dicom_writer):
    pixels = ramp(peak=4095)
    # Window 1000..3000: everything below is black, above is white, linear between.
    image, info = load_image_with_info(dicom_writer("w.dcm", pixels, bits_stored=12, WindowCenter=2000, WindowWidth=2000))
    assert info.voi == "window"
    raw = pixels.astype(np.float64)
    expected = np.clip((raw - 1000) / 2000, 0, 1)
    np.testing.assert_allclose(image, expected, atol=2e-3)
    assert image[raw < 1000].max() == 0.0 and image[raw > 3000].min() == 1.0


def test_rescale_then_window(dicom_writer):
    pixels = ramp(peak=4095)
    # stored*2 - 1000 is in -1000..7190; window centre 3095 width 8190 spans all of it.
    image = load_image(dicom_writer("r.dcm", pixels, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000,
                                    WindowCenter=3095, WindowWidth=8190))
    np.testing.assert_allclose(image, pixels / 4095.0, atol=2e-3)


def test_voi_lut_sequence_is_applied(dicom_writer):
    from pydicom.dataset import Dataset

    pixels = ramp(peak=255).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    lut = (np.arange(256)[::-1] * 100).astype(np.uint16)  # a reversing LUT: shows that it was used
    item.LUTData = lut.astype("<u2").tobytes()
    image, info = load_image_with_info(dicom_writer("lut.dcm", pixels, bits_stored=8, VOILUTSequence=[item]))
    assert info.voi == "lut"
    np.testing.assert_allclose(image, 1.0 - pixels / 255.0, atol=1e-6)


def test_16bit_dicom_without_window_uses_its_range(dicom_writer):
    pixels = (ramp(peak=4095).astype(np.uint16) + 100)
    image = load_image(dicom_writer("raw16.dcm", pixels, bits_stored=16))
    assert image.min() == 0.0 and image.max() == pytest.approx(1.0)


def test_dicom_without_pixels(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "SR"
    path = tmp_path / "sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageError, match=r"sr\.dcm.*no pixel data"):
        load_image(path)


def test_compressed_dicom_without_decoder_says_what_to_install(dicom_writer, tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    path = dicom_writer("plain.dcm", ramp())
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 64])  # not decodable without a JPEG-LS plugin
    out = tmp_path / "jls.dcm"
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(ImageError, match=r"jls\.dcm: compressed with JPEG-LS.*no installed decoder.*pip install"):
        load_image(out)


def test_truncated_dicom(dicom_writer, tmp_path):
    data = dicom_writer("full.dcm", ramp(64, 64)).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ImageError, match=r"cut\.dcm"):
        load_image(cut)


def test_dicom_bomb_refused(dicom_writer):
    path = dicom_writer("big.dcm", ramp(64, 64))
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(path, max_pixels=1000)


def test_patient_fields_are_not_logged_or_returned(dicom_writer, caplog):
    path = dicom_writer("p.dcm", ramp(), ViewPosition="PA")
    with caplog.at_level(logging.DEBUG, logger="crrg"):
        image, info = load_image_with_info(path)
    text = caplog.text + repr(info)
    assert "SECRET" not in text and "PID-123456" not in text
    assert info.view == "PA"


# --------------------------------------------------------------------------- real samples


def test_real_monochrome1_twin_is_inverted(shared_data):
    folder = shared_data / "real_cxr_samples"
    mono2 = load_image(folder / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    mono1, info = load_image_with_info(folder / "Fake_MONOHR1.dcm")
    assert info.mode == "MONOCHROME1" and info.inverted
    assert mono1.shape == mono2.shape == (1024, 1024)
    corr = np.corrcoef(mono1.ravel(), mono2.ravel())[0, 1]
    assert corr < -0.999
    # Displayed as a radiograph: the lungs (dark) are darker than the mediastinum (bright) in both.
    for image in (mono2, 1.0 - mono1):
        assert image[400:600, 150:350].mean() < image[400:600, 450:570].mean()


def test_real_pngs_load(shared_data):
    paths = sorted((shared_data / "real_cxr_samples").glob("*.png"))
    assert paths
    for path in paths:
        image = load_image(path)
        assert image.ndim == 2 and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05
