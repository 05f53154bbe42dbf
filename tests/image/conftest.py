"""Small synthetic image files written per test: every format and bit depth the loader promises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                **attrs) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientName = "SECRET^PATIENT"
    ds.PatientID = "PID-123456"
    ds.set_pixel_data(pixels, photometric, bits_stored or (8 if pixels.dtype == np.uint8 else 16))
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def dicom_writer(tmp_path):
    def make(name: str, pixels: np.ndarray, **kwargs) -> Path:
        return write_dicom(tmp_path / name, pixels, **kwargs)

    return make


def deflated_dicom(rows: int, columns: int, pixel_bytes: int | None = None, modality: str = "DX",
                   fill: int = 0) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM, written without holding its inflated size in memory:
    Rows x Columns 8-bit gray, with ``pixel_bytes`` bytes of pixel data (default: exactly Rows x Columns).

    A few hundred kB of this inflates to hundreds of MB: the shape of a DICOM decompression bomb.
    """
    import io
    import struct
    import zlib

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False
    write_dataset(header, ds)
    n = rows * columns if pixel_bytes is None else pixel_bytes
    n += n % 2
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    meta_fp = DicomBytesIO()
    meta_fp.is_little_endian, meta_fp.is_implicit_VR = True, False
    write_file_meta_info(meta_fp, meta, enforce_standard=True)
    out.write(meta_fp.getvalue())
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out.write(packer.compress(header.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, n)))
    chunk = bytes([fill]) * (1 << 20)
    while n > 0:
        out.write(packer.compress(chunk[:min(n, len(chunk))]))
        n -= len(chunk)
    out.write(packer.flush())
    return out.getvalue()
