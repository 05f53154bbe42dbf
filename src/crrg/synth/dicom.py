"""DICOM export of synthetic radiographs (Digital X-Ray, for presentation), so pipelines that read DICOM can be tested.

UIDs are derived from the study id (deterministic), so regenerating a set with the same seed gives
byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crrg.io import atomic_save_file

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def write_dicom(path: str | Path, pixels: np.ndarray, study_id: str, view: str, pixel_mm: float, image_index: int,
                description: str = "") -> None:
    """Write a MONOCHROME2 16-bit DX image with the tags readers rely on (view, spacing, orientation, UIDs)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if pixels.dtype != np.uint16:
        raise ValueError("DICOM export expects uint16 pixels")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[study_id, str(image_index), "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[study_id, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study_id, str(image_index), "series"])
    ds.PatientID = study_id
    ds.PatientName = "SYNTHETIC^" + study_id
    ds.StudyID = study_id[-16:]
    ds.StudyDate = ds.SeriesDate = "20000101"
    ds.Modality = "DX"
    ds.Manufacturer = "crrg synth"
    ds.BodyPartExamined = "CHEST"
    dicom_view = {"PA": "PA", "AP": "AP", "LATERAL": "LL"}[view]
    ds.ViewPosition = dicom_view
    ds.PatientOrientation = ["L", "F"] if view in ("PA", "AP") else ["P", "F"]
    ds.SeriesDescription = f"CHEST {dicom_view}"
    ds.ImageComments = description[:10240]
    ds.InstanceNumber = image_index + 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = [round(pixel_mm, 4)] * 2
    ds.PixelSpacing = [round(pixel_mm, 4)] * 2
    ds.WindowCenter = 32768
    ds.WindowWidth = 65536
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()

    def _save(tmp: str) -> None:
        ds.save_as(tmp, enforce_file_format=True)

    atomic_save_file(path, _save)
