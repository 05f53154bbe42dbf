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
