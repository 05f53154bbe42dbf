"""From patient + insertion to a displayed radiograph and its projected label map.

Per view: cached anatomy line integrals for the pose (projected once, kept in memory and on disk),
plus the projection of the study's attenuation change, spheres and devices; then the 2-D part of the
acquisition that does not need ray casting (in-plane rotation, shift, habitus scaling, inspiration
depth, smooth elastic deformation), then the detector: Beer-Lambert transmission with a random
exposure, quantum noise, log and a film-like characteristic curve, contrast / gamma, blur,
collimation and the side marker.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from crrg.io import atomic_save_file
from crrg.synth.anatomy import CHANNEL_NAMES, CHANNELS, cardiothoracic_ratio, region_boxes, silhouettes
from crrg.synth.ct import Phantom, mu_from_hu, normalise_heart
from crrg.synth.findings import Anatomy3D, Insertion
from crrg.synth.projector import Camera, make_camera, project_points, project_volume, render_full, rotation_matrix

log = logging.getLogger(__name__)

FOV_MM = 350.0  # field of view at the isocentre
CACHE_VERSION = 1  # bump when the anatomy projection changes


@dataclass
class PoseRender:
    camera: Camera
    line: np.ndarray  # (S, S) anatomy line integrals, mm x mu
    channels: np.ndarray | None  # (C, S/2, S/2) label path lengths (frontal views only)
    lo: float  # tone-mapping anchors: lung-level and bone-level line integrals
    hi: float


@dataclass
class Acquisition:
    """The random 2-D and detector parameters of one image."""

    angle: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)  # (x, y)
    inspiration: float = 1.0
    elastic: float = 0.0
    exposure: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    noise: float = 0.01
    blur: float = 0.6
    collimation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    marker: bool = True
    seed: int = 0


def _gaussian(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (1, 1, H, W) tensor with replicated borders."""
    r = int(np.ceil(3 * sigma))
    g = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    g = (g / g.sum()).to(t.dtype)
    r_h = min(r, t.shape[-1] - 1)
    r_v = min(r, t.shape[-2] - 1)
    if r_h < r or r_v < r:
        g = g[r - min(r_h, r_v): r + min(r_h, r_v) + 1]
        g = g / g.sum()
        r = min(r_h, r_v)
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(t, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))


class Renderer:
    """Renders studies of one phantom at one size; caches anatomy projections per (view, pose)."""

    def __init__(self, phantom: Phantom, size: int = 256, n_poses: int = 8, cache_dir: str | Path | None = None):
        self.heart_scale = normalise_heart(phantom)
        self.phantom = phantom
        self.size = int(size)
        self.n_poses = n_poses
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.anatomy = Anatomy3D(phantom)
        self.mu = torch.from_numpy(mu_from_hu(phantom.hu))[None]
        a = self.anatomy
        lung_idx = np.argwhere(a.lungs)
        lo, hi = a.world(lung_idx.min(0)), a.world(lung_idx.max(0))
        c = (lo + hi) / 2
        c[2] = hi[2] + 40.0 - FOV_MM / 2  # lung apices ~4 cm below the top of the film
        self.isocentre = c
        self._poses: dict[tuple[str, int], PoseRender] = {}
        digest = hashlib.blake2b(digest_size=8)
        for arr in (phantom.hu, phantom.labels, np.asarray([phantom.spacing, *phantom.origin, FOV_MM, CACHE_VERSION])):
            digest.update(np.ascontiguousarray(arr).tobytes())
        self.fingerprint = digest.hexdigest()
        onehot = np.stack([np.isin(a.labels, ids) for ids in CHANNELS.values()]).astype(np.float32)
        self.label_volume = torch.from_numpy(onehot)

    # --- poses ----------------------------------------------------------------------------------
    def pose_angles(self, view: str, index: int) -> tuple[float, float, float]:
        """Pose ``index`` of a view; pose 0 is straight. Independent of the study seed so caches are shared."""
        if index == 0:
            return 0.0, 0.0, 0.0
        rng = np.random.default_rng([7919, index, ("PA", "AP", "LATERAL").index(view)])
        return float(rng.uniform(-6, 6)), float(rng.uniform(-6, 6)), float(rng.uniform(-3, 3))

    def camera(self, view: str, pose: int, size: int | None = None) -> Camera:
        return make_camera(view, self.isocentre, FOV_MM, size or self.size, rotation_matrix(*self.pose_angles(view, pose)))

    def pose(self, view: str, index: int) -> PoseRender:
        key = (view, index)
        if key in self._poses:
            return self._poses[key]
        cam = self.camera(view, index)
        path = self.cache_dir / f"pose_{self.fingerprint}_{view}_{index}_{self.size}.npz" if self.cache_dir else None
        if path is not None and path.is_file():
            data = np.load(path)
            line, channels = data["line"], (data["channels"] if "channels" in data else None)
        else:
            a = self.anatomy
            line = render_full(self.mu, self.phantom.origin, self.phantom.spacing, cam, step_mm=self.phantom.spacing)[0].numpy()
            channels = None
            if view in ("PA", "AP"):
                half = cam.resized(self.size // 2)
                channels = render_full(self.label_volume, a.origin, a.spacing, half, step_mm=a.spacing).numpy()
            if path is not None:
                arrays = {"line": line} if channels is None else {"line": line, "channels": channels}
                atomic_save_file(path, lambda tmp: np.savez(tmp, **arrays))
        body = line[line > 0.05 * line.max()]
        lo, hi = np.percentile(body, [3.0, 96.0])
        pr = PoseRender(cam, line.astype(np.float32), None if channels is None else channels.astype(np.float32), float(lo), float(hi))
        self._poses[key] = pr
        return pr

    def base_ctr(self) -> float:
        """Cardiothoracic ratio of the unmodified phantom on a straight PA film."""
        return cardiothoracic_ratio(silhouettes(self.pose("PA", 0).channels))

    # --- projection of a study's insertion --------------------------------------------------------
    def project_insertion(self, ins: Insertion, cam: Camera) -> np.ndarray:
        a = self.anatomy
        n = cam.size
        line = np.zeros((n, n), np.float32)
        if ins.delta is not None:
            half = cam.resized(n // 2)
            lo = a.origin + a.spacing * np.asarray(ins.delta_lo, float)[::-1]
            patch, box = project_volume(torch.from_numpy(ins.delta)[None], lo, a.spacing, half, step_mm=a.spacing)
            if box is not None:
                small = np.zeros((n // 2, n // 2), np.float32)
                c0, r0, c1, r1 = box
                small[r0:r1, c0:c1] = patch[0].numpy()
                line += F.interpolate(torch.from_numpy(small)[None, None], size=(n, n), mode="bilinear", align_corners=False)[0, 0].numpy()
        if ins.removal is not None:
            line += self._project_removal(ins, cam)
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
        for sp in ins.spheres:
            (col, row), = project_points(cam, sp.center[None])
            mag = cam.magnification(sp.center)
            r_px = sp.radius * mag / cam.pixel_mm
            rho2 = ((xx - col) ** 2 + (yy - row) ** 2) / max(r_px, 1e-3) ** 2
            chord = 2 * sp.radius * np.sqrt(np.clip(1 - rho2, 0, None))
            line += sp.dmu * chord.astype(np.float32)
        if ins.polylines or ins.plates:
            line += self._draw_devices(ins, cam)
        return line

    def _project_removal(self, ins: Insertion, cam: Camera) -> np.ndarray:
        """Minus the fine anatomy's line integral over the removed fraction, at full detector resolution."""
        a = self.anatomy
        f = a.factor
        frac = torch.from_numpy(ins.removal)[None, None]
        fine_frac = F.interpolate(frac, scale_factor=f, mode="nearest")[0]
        z0, y0, x0 = (v * f for v in ins.removal_lo)
        dz, dy, dx = fine_frac.shape[1:]
        mu = self.mu[:, z0:z0 + dz, y0:y0 + dy, x0:x0 + dx]
        fine_frac = fine_frac[:, : mu.shape[1], : mu.shape[2], : mu.shape[3]]
        lo = self.phantom.origin + self.phantom.spacing * np.array([x0, y0, z0], float)
        patch, box = project_volume(-(mu * fine_frac), lo, self.phantom.spacing, cam, step_mm=1.5 * self.phantom.spacing)
        out = np.zeros((cam.size, cam.size), np.float32)
        if box is not None:
            c0, r0, c1, r1 = box
            out[r0:r1, c0:c1] = patch[0].numpy()
        return out

    def _draw_devices(self, ins: Insertion, cam: Camera) -> np.ndarray:
        """Wires as thick lines whose value is a cylinder's mean chord; drawn at 2x and averaged down (anti-aliasing)."""
        n = cam.size
        ss = 2
        canvas = Image.new("F", (n * ss, n * ss), 0.0)
        draw = ImageDraw.Draw(canvas)
        for poly, integral in ins.plates:
            px = project_points(cam, poly) * ss
            draw.polygon([tuple(p) for p in px], fill=float(integral))
        for pl in ins.polylines:
            px = project_points(cam, pl.points) * ss
            mag = cam.magnification(pl.points.mean(0))
            width = max(int(round(2 * pl.radius * mag / cam.pixel_mm * ss)), 1)
            pts = [tuple(p) for p in px]
            if pl.closed:
                pts.append(pts[0])
            draw.line(pts, fill=float(pl.dmu * 2 * pl.radius * 0.785), width=width, joint="curve")
        arr = np.asarray(canvas, np.float32).reshape(n, ss, n, ss).mean((1, 3))
        return arr

    def project_channel(self, mask: np.ndarray, cam: Camera) -> np.ndarray:
        """Path length through a (coarse) structure mask at half resolution."""
        a = self.anatomy
        half = cam.resized(cam.size // 2)
        idx = np.argwhere(mask)
        lo, hi = idx.min(0), idx.max(0) + 1
        crop = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32)
        world_lo = a.origin + a.spacing * lo[::-1].astype(float)
        out = np.zeros((half.size, half.size), np.float32)
        patch, box = project_volume(torch.from_numpy(crop)[None], world_lo, a.spacing, half, step_mm=a.spacing)
        if box is not None:
            c0, r0, c1, r1 = box
            out[r0:r1, c0:c1] = patch[0].numpy()
        return out

    # --- 2-D acquisition -----------------------------------------------------------------------------
    def warp_grid(self, acq: Acquisition, n: int, apex_row: float) -> torch.Tensor:
        """Sampling grid (1, n, n, 2) in normalised coordinates for the in-plane part of the pose and habitus."""
        rng = np.random.default_rng(acq.seed)
        lin = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        apex = apex_row / n * 2 - 1
        # inspiration: stretch (deep) or squash (shallow) below the apices
        yy = torch.where(yy > apex, apex + (yy - apex) / acq.inspiration, yy)
        th = np.deg2rad(acq.angle)
        x = (np.cos(th) * xx - np.sin(th) * yy) / acq.scale[0] - acq.shift[0]
        y = (np.sin(th) * xx + np.cos(th) * yy) / acq.scale[1] - acq.shift[1]
        if acq.elastic > 0:
            coarse = torch.from_numpy(rng.normal(0, acq.elastic, (1, 2, 5, 5)).astype(np.float32))
            disp = F.interpolate(coarse, size=(n, n), mode="bicubic", align_corners=True)[0]
            x, y = x + disp[0], y + disp[1]
        return torch.stack([x, y], -1)[None].float()

    def detector(self, line: np.ndarray, pose: PoseRender, acq: Acquisition) -> np.ndarray:
        """Line integrals -> displayed image in [0, 1] (bright = attenuating)."""
        rng = np.random.default_rng(acq.seed + 1)
        x = (line - pose.lo) / max(pose.hi - pose.lo, 1e-6)
        k = 2.5 * acq.exposure  # Beer-Lambert: transmitted fraction through the normalised path
        transmitted = np.exp(-k * np.clip(x, -0.3, None))
        photons = 4000.0 / max(acq.noise, 1e-4) ** 0.5
        counts = transmitted * photons
        counts = counts + rng.normal(0, 1, counts.shape) * np.sqrt(np.maximum(counts, 1.0)) * acq.noise * 30
        density = -np.log(np.clip(counts / photons, 1e-5, None)) / k  # log transform of the detector
        # digital radiography processing: compress the large-scale dynamic range, enhance detail
        # (what makes heart borders and vessels crisp on a processed film), then the focal-spot blur
        t = torch.from_numpy(density.astype(np.float32))[None, None]
        low = _gaussian(t, max(density.shape[0] / 24, 1.0))
        t = 0.5 + (low - 0.5) * 1.1 + (t - low) * 1.6  # fixed anchor: one finding must not shift the whole film
        if acq.blur > 0:
            t = _gaussian(t, acq.blur)
        density = t[0, 0].numpy()
        # film-like characteristic curve (toe and shoulder), then display contrast and gamma
        slope, mid = acq.contrast * 4.0, 0.5
        y = 1 / (1 + np.exp(-slope * (density - mid)))
        y0, y1 = 1 / (1 + np.exp(slope * (mid + 0.1))), 1 / (1 + np.exp(-slope * (1.25 - mid)))
        y = np.clip((y - y0) / (y1 - y0), 0, 1) ** acq.gamma
        n = y.shape[0]
        left, top, right, bottom = (int(round(f * n)) for f in acq.collimation)
        bright = 0.92
        if left:
            y[:, :left] = bright
        if right:
            y[:, n - right:] = bright
        if top:
            y[:top] = bright
        if bottom:
            y[n - bottom:] = bright
        return y.astype(np.float32)

    def marker(self, img: np.ndarray, text: str, right_side: bool, rng: np.random.Generator) -> np.ndarray:
        """A lead side marker (bright letter) in an upper corner."""
        n = img.shape[0]
        pil = Image.fromarray((img * 65535).astype(np.uint16).astype(np.int32), mode="I")
        draw = ImageDraw.Draw(pil)
        try:
            font = ImageFont.load_default(size=max(int(n * 0.055), 8))
        except TypeError:  # Pillow < 10.1
            font = ImageFont.load_default()
        x = int(n * rng.uniform(0.04, 0.12)) if not right_side else int(n * rng.uniform(0.84, 0.9))
        y = int(n * rng.uniform(0.04, 0.12))
        draw.text((x, y), text, fill=int(65535 * 0.97), font=font)
        return np.asarray(pil, np.float32) / 65535.0

    # --- one view ------------------------------------------------------------------------------------
    def render_view(self, view: str, pose_index: int, ins: Insertion, acq: Acquisition,
                    marker_text: str | None = None) -> tuple[np.ndarray, dict[str, list[float]] | None, float | None]:
        """Returns (image in [0, 1], region boxes in pixels or None, cardiothoracic ratio or None)."""
        pose = self.pose(view, pose_index)
        cam = pose.camera
        line = pose.line + self.project_insertion(ins, cam)
        n = self.size
        channels = None
        if pose.channels is not None:
            channels = pose.channels.copy()
            for name, mask in ins.masks.items():
                channels[CHANNEL_NAMES.index(name)] = self.project_channel(mask, cam)
        lung_rows = np.flatnonzero(((channels[0] > 8) | (channels[1] > 8)).any(1)) * 2 if channels is not None else None
        apex = float(lung_rows[0]) if lung_rows is not None and lung_rows.size else 0.12 * n
        grid = self.warp_grid(acq, n, apex)
        warped = F.grid_sample(torch.from_numpy(line)[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0].numpy()
        img = self.detector(warped, pose, acq)
        boxes, ctr = None, None
        if channels is not None:
            half_grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(n // 2, n // 2), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
            wch = F.grid_sample(torch.from_numpy(channels)[None], half_grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0].numpy()
            sil = silhouettes(wch)
            boxes = region_boxes(sil, scale=n / (n // 2))
            ctr = cardiothoracic_ratio(sil)
        if marker_text:
            img = self.marker(img, marker_text, right_side=marker_text == "L" and view != "LATERAL", rng=np.random.default_rng(acq.seed + 2))
        return img, boxes, ctr
