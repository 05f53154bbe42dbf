"""Fuzz the image loader: thousands of random and mutated PNG / JPEG / DICOM byte strings from a seeded
generator. Each must give a valid image or a clean CrrgError: never another exception, a hang, or
memory out of bounds (issue 23: "zero tracebacks, zero hangs")."""

from __future__ import annotations

import io
import struct
import resource
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from crrg.errors import CrrgError
from crrg.image import load_image
from tests.image.conftest import deflated_dicom

N_INPUTS = 2400
SEED = 20261205


def _pil_bytes(rng: np.random.Generator, fmt: str) -> bytes:
    h, w = int(rng.integers(1, 80)), int(rng.integers(1, 80))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        im = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    elif kind == 1:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    elif kind == 2 and fmt == "PNG":
        im = Image.fromarray(rng.integers(0, 4096, (h, w), dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).convert("P" if fmt == "PNG" else "L")
    buffer = io.BytesIO()
    im.save(buffer, format=fmt)
    return buffer.getvalue()


def _dicom_bytes(rng: np.random.Generator) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

    if rng.random() < 0.15:
        return deflated_dicom(int(rng.integers(1, 40)), int(rng.integers(1, 40)), fill=int(rng.integers(0, 256)))
    h, w = int(rng.integers(1, 48)), int(rng.integers(1, 48))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if rng.random() < 0.7 else ImplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = str(rng.choice(["DX", "CR", "CT", "MR"]))
    colour = rng.random() < 0.15
    if colour:
        ds.set_pixel_data(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB", 8)
    else:
        bits = int(rng.choice([8, 12, 16]))
        pixels = rng.integers(0, 2**bits, (h, w)).astype(np.uint8 if bits == 8 else np.uint16)
        ds.set_pixel_data(pixels, str(rng.choice(["MONOCHROME1", "MONOCHROME2"])), bits)
    # Header fields that lie about the pixels.
    lies = {"Rows": lambda: int(rng.integers(0, 70000)), "Columns": lambda: int(rng.integers(0, 70000)),
            "NumberOfFrames": lambda: int(rng.integers(-2, 100000)), "SamplesPerPixel": lambda: int(rng.integers(0, 5)),
            "BitsAllocated": lambda: int(rng.choice([0, 1, 7, 8, 16, 24, 32, 64, 65535])),
            "BitsStored": lambda: int(rng.integers(0, 70)), "PixelRepresentation": lambda: int(rng.integers(0, 3)),
            "WindowCenter": lambda: float(rng.normal(0, 1e6)), "WindowWidth": lambda: float(rng.normal(0, 1e6)),
            "RescaleSlope": lambda: float(rng.normal(0, 1e3)), "RescaleIntercept": lambda: float(rng.normal(0, 1e6)),
            "PhotometricInterpretation": lambda: str(rng.choice(["RGB", "YBR_FULL", "PALETTE COLOR", "MONOCHROME1", "X"]))}
    for key in rng.choice(list(lies), size=int(rng.integers(0, 3)), replace=False):
        setattr(ds, str(key), lies[str(key)]())
    if rng.random() < 0.1:
        ds.PixelData = ds.PixelData * int(rng.integers(2, 4))  # excess bytes
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=False)
    except Exception:  # noqa: BLE001 - pydicom cannot write some lies; the input generator tries again
        return _dicom_bytes(rng)
    data = buffer.getvalue()
    return data if data[128:132] == b"DICM" else b"\0" * 128 + b"DICM" + data


def _png_header_lie(rng: np.random.Generator, data: bytes) -> bytes:
    """Rewrite the IHDR size (with a valid CRC), so the header disagrees with the compressed rows."""
    if not data.startswith(b"\x89PNG"):
        return data
    width, height = int(rng.integers(0, 2**31)), int(rng.integers(0, 2**31))
    if rng.random() < 0.5:
        width, height = int(rng.integers(1, 6000)), int(rng.integers(1, 6000))
    out = bytearray(data)
    out[16:24] = struct.pack(">II", width, height)
    out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])) & 0xFFFFFFFF)
    return bytes(out)


def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 6))
        if op == 0 and out:  # flip bits
            for _ in range(int(rng.integers(1, 16))):
                out[int(rng.integers(0, len(out)))] ^= 1 << int(rng.integers(0, 8))
        elif op == 1 and out:  # truncate
            del out[int(rng.integers(0, len(out))):]
        elif op == 2:  # insert random bytes
            at = int(rng.integers(0, len(out) + 1))
            out[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif op == 3 and out:  # overwrite a run with 0x00 / 0xFF
            at = int(rng.integers(0, len(out)))
            out[at:at + int(rng.integers(1, 32))] = bytes([int(rng.choice([0, 255]))]) * int(rng.integers(1, 32))
        elif op == 4 and len(out) > 8:  # duplicate a slice
            a = int(rng.integers(0, len(out) - 1))
            b = int(rng.integers(a + 1, min(len(out), a + 512) + 1))
            out[b:b] = out[a:b]
        elif op == 5:
            out = bytearray(_png_header_lie(rng, bytes(out)))
    return bytes(out)


def fuzz_inputs(n: int, seed: int = SEED):
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = i % 8
        if kind == 0:
            data = rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes()
            if rng.random() < 0.5:  # random bytes behind a valid magic number
                data = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\0" * 128 + b"DICM", b"GIF89a", b"II*\0"][i % 5] + data
        elif kind in (1, 2):
            data = _pil_bytes(rng, "PNG")
        elif kind == 3:
            data = _pil_bytes(rng, "JPEG")
        else:
            data = _dicom_bytes(rng)
        if kind != 0 and rng.random() < 0.8:
            data = _mutate(rng, data)
        yield i, data


@pytest.mark.slow  # ~20-40 s on 2 cores; CI runs it (make test runs the slow lane too)
def test_fuzz_loader_gives_an_image_or_a_clean_error():
    started = time.perf_counter()
    outcomes = {"image": 0, "error": 0}
    slowest = 0.0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux; the peak so far
    for i, data in fuzz_inputs(N_INPUTS):
        t = time.perf_counter()
        try:
            image = load_image(data, name=f"fuzz-{i}")
        except CrrgError:
            outcomes["error"] += 1
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"input {i} (seed {SEED}) raised {type(exc).__name__}: {exc}")
        else:
            assert image.dtype == np.float32 and image.ndim == 2, f"input {i}: {image.dtype} {image.shape}"
            assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0, f"input {i}"
            outcomes["image"] += 1
        slowest = max(slowest, time.perf_counter() - t)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    elapsed = time.perf_counter() - started
    print(f"{N_INPUTS} inputs in {elapsed:.1f} s ({N_INPUTS / elapsed:.0f}/s): {outcomes}, slowest {slowest:.2f} s, "
          f"peak RSS grew {grown / 1e6:.0f} MB")
    assert outcomes["image"] > N_INPUTS // 20 and outcomes["error"] > N_INPUTS // 5  # both paths exercised
    assert slowest < 5.0, f"one input took {slowest:.1f} s"
    assert grown < 512 << 20, f"peak RSS grew by {grown / 1e6:.0f} MB"
