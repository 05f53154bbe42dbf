"""Findings: sampled per study, then inserted into the patient in 3-D before projection.

Everything a finding does is expressed as a change of attenuation in patient space, so it shows up
consistently on the frontal and the lateral view, with the right magnification and overlap:

* a coarse attenuation *delta volume* (effusion, pneumothorax, consolidation, atelectasis, edema,
  emphysema, fracture, cardiomegaly, mediastinal widening), projected by casting rays only through
  its bounding box;
* analytic spheres (nodules, masses, calcified granulomas): the line integral of a sphere is known
  in closed form, so they stay sharp at any image size;
* thin radiopaque polylines (tubes, lines, pacemaker leads, sternotomy wires) and a pacemaker can,
  projected point by point through the same camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from crrg.synth import ct as T
from crrg.synth.ct import Phantom, mu_from_hu

KINDS = ("cardiomegaly", "mediastinum", "effusion", "pneumothorax", "consolidation", "atelectasis", "edema",
         "nodule", "mass", "granuloma", "fracture", "emphysema", "devices")


@dataclass
class Finding:
    """One abnormality of a study: what, how bad, which side, where (region name or lobe), and free parameters."""

    kind: str
    severity: str = ""  # mild/moderate/severe, small/moderate/large
    side: str = ""  # right / left / bilateral / ""
    location: str = ""  # e.g. "right lower lobe", "right mid lung zone"
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "severity": self.severity, "side": self.side, "location": self.location, "params": self.params}


@dataclass
class Sphere:
    center: np.ndarray  # world mm (x, y, z)
    radius: float  # mm
    dmu: float  # attenuation change relative to water


@dataclass
class Polyline:
    points: np.ndarray  # (N, 3) world mm
    radius: float  # mm
    dmu: float
    closed: bool = False


@dataclass
class Insertion:
    """What a study's findings do to the patient: the inputs of the projector."""

    delta: np.ndarray | None = None  # coarse (Z, Y, X) attenuation change, cropped
    delta_lo: tuple[int, int, int] = (0, 0, 0)  # coarse index of delta[0, 0, 0]
    spheres: list[Sphere] = field(default_factory=list)
    polylines: list[Polyline] = field(default_factory=list)
    plates: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (polygon (N, 3) world mm, line integral mm)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # label channel -> replaced coarse mask (cardiomegaly)
    # fraction of the fine anatomy's attenuation taken away (pneumothorax air, emphysema): applied on the fine
    # grid so the vessels really disappear instead of being averaged out
    removal: np.ndarray | None = None
    removal_lo: tuple[int, int, int] = (0, 0, 0)


class Anatomy3D:
    """Coarse attenuation and the per-structure geometry every finding needs, computed once per phantom."""

    def __init__(self, phantom: Phantom, factor: int = 2):
        self.phantom = phantom
        self.factor = factor
        self.spacing = phantom.spacing * factor
        mu = mu_from_hu(phantom.hu)
        z, y, x = (s // factor * factor for s in mu.shape)
        self.mu = mu[:z, :y, :x].reshape(z // factor, factor, y // factor, factor, x // factor, factor).mean((1, 3, 5)).astype(np.float32)
        self.labels = phantom.labels[factor // 2:z:factor, factor // 2:y:factor, factor // 2:x:factor]
        self.origin = phantom.origin + (factor - 1) / 2 * phantom.spacing  # centre of coarse voxel 0
        self.shape = self.mu.shape
        self.lung = {"right": np.isin(self.labels, T.LUNG_RIGHT), "left": np.isin(self.labels, T.LUNG_LEFT)}
        self.lungs = self.lung["right"] | self.lung["left"]
        self.edt = {s: ndimage.distance_transform_edt(m) * self.spacing for s, m in self.lung.items()}
        zz, yy, xx = np.indices(self.shape)
        self.zz, self.yy, self.xx = zz, yy, xx
        self.geom = {}
        for side, m in self.lung.items():
            idx = np.argwhere(m)
            lo, hi = idx.min(0), idx.max(0)
            # lateral coordinate in [0, 1]: 0 at the lung's medial edge, 1 at its lateral edge
            lateral = (xx - lo[2]) / max(hi[2] - lo[2], 1) if side == "right" else (hi[2] - xx) / max(hi[2] - lo[2], 1)
            apical = (zz - lo[0]) / max(hi[0] - lo[0], 1)
            bottom = np.where(m.any(0), m.argmax(0), -1)  # lowest lung z per (y, x) column: the diaphragm surface
            self.geom[side] = {"lo": lo, "hi": hi, "lateral": np.clip(lateral, 0, 1).astype(np.float32),
                               "height": np.clip(apical, 0, 1).astype(np.float32), "bottom": bottom}
        heart = self.labels == T.HEART
        self.heart = heart
        pv = np.argwhere(self.labels == T.PULMONARY_VEIN)
        mid_x = np.argwhere(self.lungs)[:, 2].mean()
        self.mid_x = mid_x
        self.hilum = {}
        for side in ("right", "left"):
            sel = pv[pv[:, 2] > mid_x] if side == "right" else pv[pv[:, 2] <= mid_x]
            if len(sel) == 0:
                g = self.geom[side]
                sel = np.array([[(g["lo"][0] + g["hi"][0]) * 0.55, (g["lo"][1] + g["hi"][1]) / 2, mid_x]])
            self.hilum[side] = sel.mean(0)
        tr = np.argwhere(self.labels == T.TRACHEA)
        self.trachea_path = self._centerline(tr)
        self.svc_path = self._centerline(np.argwhere(self.labels == T.SVC))
        self.sternum = np.argwhere(self.labels == T.STERNUM)

    def _centerline(self, idx: np.ndarray) -> np.ndarray:
        """Per-slice centroids (z, y, x) of a tubular structure, top to bottom."""
        if len(idx) == 0:
            return np.zeros((0, 3))
        pts = [idx[idx[:, 0] == z].mean(0) for z in np.unique(idx[:, 0])]
        return np.array(pts[::-1])

    def world(self, zyx) -> np.ndarray:
        return self.origin + self.spacing * np.asarray(zyx, float)[..., ::-1]


def _smooth_noise(rng: np.random.Generator, shape, scale: int) -> np.ndarray:
    """Smooth random field in [0, 1]: coarse uniform noise, trilinearly upsampled."""
    import torch
    import torch.nn.functional as F

    small = rng.random(tuple(max(int(np.ceil(s / scale)), 2) for s in shape)).astype(np.float32)
    field_ = F.interpolate(torch.from_numpy(small)[None, None], size=tuple(int(s) for s in shape), mode="trilinear",
                           align_corners=True)[0, 0].numpy()
    field_ = (field_ - field_.min()) / max(float(field_.max() - field_.min()), 1e-6)
    return field_


def _bbox3(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(lo, hi) index bounds (hi exclusive) of a 3-D mask, from its axis projections (much faster than argwhere)."""
    bounds = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        bounds.append((hit[0], hit[-1] + 1))
    lo, hi = zip(*bounds)
    return np.array(lo), np.array(hi)


class Inserter:
    """Turns a study's :class:`Finding` list into an :class:`Insertion`."""

    def __init__(self, anatomy: Anatomy3D):
        self.a = anatomy

    def insert(self, findings: list[Finding], rng: np.random.Generator) -> Insertion:
        a = self.a
        delta = np.zeros(a.shape, np.float32)
        out = Insertion()
        self._removal = np.zeros(a.shape, np.float32)
        for f in findings:
            getattr(self, f"_{f.kind}")(f, delta, out, rng)
        removal = np.clip(self._removal, 0.0, 1.0)
        box = _bbox3(removal > 1e-4)
        if box is not None:
            lo, hi = box
            out.removal = np.ascontiguousarray(removal[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
            out.removal_lo = tuple(int(v) for v in lo)
        # never make attenuation negative, never beyond dense bone
        np.maximum(delta, -a.mu, out=delta)
        box = _bbox3(np.abs(delta) > 1e-4)
        if box is not None:
            lo, hi = box
            out.delta = np.ascontiguousarray(delta[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
            out.delta_lo = tuple(int(v) for v in lo)
        return out

    # --- heart and mediastinum -------------------------------------------------------------------
    @staticmethod
    def _resampled_in_box(mask: np.ndarray, scale, anchor: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """``mask`` scaled about ``anchor`` (z, y, x index) by ``scale`` (z, y, x), computed only inside the
        box [lo, hi): nearest-neighbour inverse mapping, voxels mapped from outside the volume are empty."""
        zz, yy, xx = np.meshgrid(*(np.arange(l, h) for l, h in zip(lo, hi)), indexing="ij")
        src = [np.rint(anchor[i] + (g - anchor[i]) / scale[i]).astype(int) for i, g in enumerate((zz, yy, xx))]
        ok = np.ones(zz.shape, bool)
        for i, s in enumerate(src):
            ok &= (s >= 0) & (s < mask.shape[i])
            np.clip(s, 0, mask.shape[i] - 1, out=s)
        out = np.zeros_like(mask)
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = mask[src[0], src[1], src[2]] & ok
        return out

    def _scaled_mask(self, mask: np.ndarray, scale: tuple[float, float, float], anchor: np.ndarray) -> np.ndarray:
        """``mask`` grown about ``anchor`` (the box is widened to hold the scaled mask); never smaller than ``mask``."""
        idx = np.argwhere(mask)
        lo = np.maximum(np.floor(anchor - (anchor - idx.min(0)) * np.array(scale)) - 2, 0).astype(int)
        hi = np.minimum(np.ceil(anchor + (idx.max(0) - anchor) * np.array(scale)) + 3, mask.shape).astype(int)
        return self._resampled_in_box(mask, scale, anchor, lo, hi) | mask

    def _fill_soft(self, new: np.ndarray, old: np.ndarray, delta: np.ndarray, level: float = 1.04) -> None:
        """Where a grown organ covers lung or fat, the attenuation becomes that of blood / soft tissue."""
        grown = new & ~old & ~np.isin(self.a.labels, T.BONE_LABELS)
        delta[grown] += np.maximum(level - self.a.mu[grown], 0.0)

    def _cardiomegaly(self, f: Finding, delta, out: Insertion, rng) -> None:
        a = self.a
        s = float(f.params["scale"])
        idx = np.argwhere(a.heart)
        # the heart enlarges mostly to the left and downward: anchor the scaling at its right upper part
        anchor = np.array([idx[:, 0].max() * 0.6 + idx[:, 0].mean() * 0.4, idx[:, 1].mean(), idx[:, 2].mean() * 0.6 + idx[:, 2].max() * 0.4])
        new = self._scaled_mask(a.heart, (1 + (s - 1) * 0.45, 1 + (s - 1) * 0.6, s), anchor)
        self._fill_soft(new, a.heart, delta)
        out.masks["heart"] = new

    def _mediastinum(self, f: Finding, delta, out: Insertion, rng) -> None:
        a = self.a
        s = float(f.params["scale"])
        vessels = np.isin(a.labels, (T.AORTA, T.SVC) + T.GREAT_VESSELS)
        top_heart = np.argwhere(a.heart)[:, 0].max()
        vessels[: max(top_heart - 2, 0)] = False  # widen the upper mediastinum only
        idx = np.argwhere(vessels)
        anchor = idx.mean(0)
        anchor[2] = a.mid_x
        new = self._scaled_mask(vessels, (1.0, 1.1, s), anchor)
        self._fill_soft(new, vessels, delta)
        for name, ids in (("aorta", (T.AORTA,)), ("svc", (T.SVC,))):
            m = np.isin(a.labels, ids)
            m_up = m.copy()
            m_up[: max(top_heart - 2, 0)] = False
            out.masks[name] = m | self._scaled_mask(m_up, (1.0, 1.1, s), anchor) if m_up.any() else m

    # --- pleura ---------------------------------------------------------------------------------
    def _effusion(self, f: Finding, delta, out: Insertion, rng) -> None:
        a = self.a
        frac = {"small": 0.12, "moderate": 0.3, "large": 0.55}[f.severity] * rng.uniform(0.85, 1.15)
        for side in (("right", "left") if f.side == "bilateral" else (f.side,)):
            g, lung = a.geom[side], a.lung[side]
            zmin, zmax = g["lo"][0], g["hi"][0]
            h = frac * (zmax - zmin)
            # meniscus: the fluid climbs the lateral chest wall, and rises toward the back
            post = (a.yy - g["lo"][1]) / max(g["hi"][1] - g["lo"][1], 1)
            level = zmin + h * (1.0 + 0.6 * g["lateral"] ** 2 + 0.5 * (1 - post))
            fluid = lung & (a.zz < level)
            delta[fluid] += np.maximum(1.02 - a.mu[fluid], 0)
            # the fluid also separates lung from the chest wall: a thin lateral rim above the level
            rim = lung & (a.edt[side] < 1.5 * a.spacing) & (g["lateral"] > 0.6) & (a.zz < level + 0.6 * h) & ~fluid
            delta[rim] += 0.5 * np.maximum(1.0 - a.mu[rim], 0)

    def _pneumothorax(self, f: Finding, delta, out: Insertion, rng) -> None:
        """The lung collapses toward its hilum and base; air without markings fills the apical and lateral space."""
        a = self.a
        side = f.side
        lung = a.lung[side]
        c = {"small": 0.86, "moderate": 0.74, "large": 0.58}[f.severity] * rng.uniform(0.95, 1.05)
        idx = np.argwhere(lung)
        lo, hi = idx.min(0), idx.max(0)
        medial_x = hi[2] if side == "left" else lo[2]  # x grows toward the patient's right
        anchor = np.array([lo[0] + 0.1 * (hi[0] - lo[0]), (lo[1] + hi[1]) / 2, medial_x])
        collapsed = self._shrunk_mask(lung, (c, 0.5 + 0.5 * c, c), anchor)
        air = lung & ~collapsed
        self._removal[air] = 1.0
        line = collapsed & ~ndimage.binary_erosion(collapsed)
        line &= ndimage.binary_dilation(air, iterations=1)
        delta[line] += 0.5
        rest = collapsed & ~line
        delta[rest] += 0.05 * (1 - c) / 0.4

    def _shrunk_mask(self, mask: np.ndarray, scale, anchor: np.ndarray) -> np.ndarray:
        """``mask`` scaled down about ``anchor`` (inside the mask's own box); never larger than ``mask``."""
        idx = np.argwhere(mask)
        return self._resampled_in_box(mask, scale, anchor, idx.min(0), idx.max(0) + 1) & mask

    # --- lungs ----------------------------------------------------------------------------------
    def _lobe_mask(self, f: Finding) -> np.ndarray:
        lobe = T.LOBES.get(f.location)
        if lobe is not None:
            return self.a.labels == lobe
        return self.a.lung[f.side or "right"]

    def _consolidation(self, f: Finding, delta, out: Insertion, rng) -> None:
        a = self.a
        lobe = self._lobe_mask(f)
        idx = np.argwhere(lobe)
        lo, hi = idx.min(0), idx.max(0) + 1
        sub = tuple(slice(l, h) for l, h in zip(lo, hi))
        noise = _smooth_noise(rng, tuple(hi - lo), scale=6)
        patchy = f.params.get("pattern", "lobar") == "patchy"
        thr = 0.55 if patchy else 0.2
        m = lobe[sub] & (noise > thr)
        soft = ndimage.gaussian_filter(m.astype(np.float32), 0.8)
        # air bronchograms: airways (already near air in the coarse grid) stay lucent inside the opacity
        airway = a.mu[sub] < 0.06
        dens = f.params.get("density", 0.85)
        add = soft * np.maximum(dens - a.mu[sub], 0) * ~airway
        delta[sub] += add * lobe[sub]

    def _atelectasis(self, f: Finding, delta, out: Insertion, rng) -> None:
        a = self.a
        pattern = f.params.get("pattern", "plate")
        sides = ("right", "left") if f.side == "bilateral" else (f.side,)
        for side in sides:
            g, lung = a.geom[side], a.lung[side]
            zmin, zmax = g["lo"][0], g["hi"][0]
            if pattern == "plate":  # linear / discoid bands in the lower zone
                for _ in range(rng.integers(1, 3)):
                    zc = zmin + rng.uniform(0.12, 0.3) * (zmax - zmin)
                    tilt = rng.uniform(-0.08, 0.08)
                    band = lung & (np.abs(a.zz - zc - tilt * (a.xx - a.mid_x)) < 0.8) & (g["lateral"] > rng.uniform(0.15, 0.35)) & (g["lateral"] < rng.uniform(0.7, 0.9))
                    delta[band] += np.maximum(0.9 - a.mu[band], 0)
            else:  # basal subsegmental collapse with volume loss: the hemidiaphragm rises
                rise = rng.uniform(0.06, 0.12) * (zmax - zmin)
                lifted = lung & (a.zz < (g["bottom"][None] + rise)) & (g["bottom"][None] >= 0)
                delta[lifted] += np.maximum(1.0 - a.mu[lifted], 0)
                sub = tuple(slice(l, h + 1) for l, h in zip(g["lo"], g["hi"]))
                noise = _smooth_noise(rng, lung[sub].shape, scale=5)
                opac = lung[sub] & ~lifted[sub] & (a.zz[sub] < zmin + 0.3 * (zmax - zmin)) & (noise > 0.5) & (g["lateral"][sub] < 0.75)
                soft = ndimage.gaussian_filter(opac.astype(np.float32), 0.8)
                delta[sub] += soft * np.maximum(0.75 - a.mu[sub], 0) * lung[sub]

    def _edema(self, f: Finding, delta, out: Insertion, rng) -> None:
        a = self.a
        amp = {"mild": 0.12, "moderate": 0.22, "severe": 0.38}[f.severity] * rng.uniform(0.85, 1.15)
        for side in ("right", "left"):
            hz, hy, hx = a.hilum[side]
            g = a.geom[side]
            sub = tuple(slice(l, h + 1) for l, h in zip(g["lo"], g["hi"]))
            lung = a.lung[side][sub]
            zz, yy, xx = a.zz[sub], a.yy[sub], a.xx[sub]
            r2 = ((zz - hz) ** 2 + (yy - hy) ** 2 * 0.6 + (xx - hx) ** 2) * a.spacing ** 2
            sigma = rng.uniform(55, 80)
            haze = np.exp(-r2 / (2 * sigma ** 2)) * (0.7 + 0.6 * _smooth_noise(rng, lung.shape, 8))
            delta[sub] += (amp * haze * lung).astype(np.float32)
            if f.severity != "mild":  # Kerley B lines: short horizontal septal lines at the lateral bases
                g = a.geom[side]
                zmin, zmax = g["lo"][0], g["hi"][0]
                for _ in range(int(rng.integers(5, 10))):
                    zc = int(zmin + rng.uniform(0.08, 0.35) * (zmax - zmin))
                    line = a.lung[side][zc] & (a.edt[side][zc] < rng.uniform(12, 20)) & (g["lateral"][zc] > 0.75)
                    yc = rng.uniform(g["lo"][1], g["hi"][1])
                    line &= np.abs(a.yy[zc] - yc) < rng.uniform(3, 8)
                    delta[zc][line] += 0.6

    def _emphysema(self, f: Finding, delta, out: Insertion, rng) -> None:
        a = self.a
        self._removal[a.lungs] += 0.3
        for side in ("right", "left"):
            g = a.geom[side]
            b = g["bottom"].astype(float)
            ok = b >= 0
            zmin = g["lo"][0]
            flat = np.where(ok, zmin + (b - zmin) * 0.25, b)
            # flatten only where no heart sits on the diaphragm: lucency around the heart's underside would
            # outline it like a mass
            ok &= ~ndimage.binary_dilation(a.heart.any(0), iterations=3)
            region = (a.zz >= flat[None] - 0.5) & (a.zz < b[None]) & ok[None] & ~np.isin(a.labels, T.BONE_LABELS) & ~a.heart
            delta[region] += 0.1 - a.mu[region]

    def _fracture(self, f: Finding, delta, out: Insertion, rng) -> None:
        a = self.a
        rib = f.params["rib"]
        ids = (T.RIBS_RIGHT if f.side == "right" else T.RIBS_LEFT)[rib - 1]
        idx = np.argwhere(a.labels == ids)
        if len(idx) == 0:
            return
        g = a.geom[f.side]
        lat = g["lateral"][idx[:, 0], idx[:, 1], idx[:, 2]]
        cand = idx[lat > np.quantile(lat, 0.7)]
        p = cand[rng.integers(len(cand))]
        d2 = ((idx - p) ** 2).sum(1)
        gap = idx[d2 <= 1.5 ** 2]
        delta[gap[:, 0], gap[:, 1], gap[:, 2]] -= a.mu[gap[:, 0], gap[:, 1], gap[:, 2]] * 0.85
        # a step-off: the fragment below the break drops by one voxel
        frag = idx[(d2 > 1.5 ** 2) & (d2 <= 5 ** 2) & (idx[:, 1] < p[1])]
        for z, y, x in frag:
            if z > 0:
                delta[z - 1, y, x] += 0.5 * a.mu[z, y, x]
                delta[z, y, x] -= 0.5 * a.mu[z, y, x]
        f.params["point"] = a.world(p).round(1).tolist()

    # --- spheres: nodules, masses, granulomas ----------------------------------------------------
    def _lung_point(self, f: Finding, rng, margin_mm: float) -> np.ndarray:
        a = self.a
        side = f.side
        g = a.geom[side]
        zone = f.location.split()[1] if f.location else "mid"
        band = {"upper": (0.66, 0.95), "mid": (0.33, 0.66), "lower": (0.1, 0.33)}.get(zone, (0.1, 0.95))
        ok = a.lung[side] & (a.edt[side] > margin_mm) & (g["height"] >= band[0]) & (g["height"] < band[1]) & (g["lateral"] > 0.3)
        idx = np.argwhere(ok)
        if len(idx) == 0:
            idx = np.argwhere(a.lung[side])
        return a.world(idx[rng.integers(len(idx))]) + rng.uniform(-0.5, 0.5, 3) * a.spacing

    def _nodule(self, f: Finding, delta, out: Insertion, rng) -> None:
        r = float(f.params["size_mm"]) / 2
        c = self._lung_point(f, rng, r)
        out.spheres.append(Sphere(c, r, 0.85))
        for _ in range(int(rng.integers(0, 3))):  # lobulation
            out.spheres.append(Sphere(c + rng.normal(0, r * 0.35, 3), r * rng.uniform(0.5, 0.75), 0.5))

    _mass = _nodule

    def _granuloma(self, f: Finding, delta, out: Insertion, rng) -> None:
        r = float(f.params["size_mm"]) / 2
        out.spheres.append(Sphere(self._lung_point(f, rng, r), r, 3.2))

    # --- devices ----------------------------------------------------------------------------------
    def _devices(self, f: Finding, delta, out: Insertion, rng) -> None:
        a = self.a
        kinds = f.params["kinds"]
        top = a.shape[0] - 1
        wire = 25.0  # metal, relative to water
        if "ett" in kinds and len(a.trachea_path):
            path = a.trachea_path
            carina_z = path[-1][0]
            tip_z = carina_z + rng.uniform(30, 60) / a.spacing
            pts = [p for p in path if p[0] >= tip_z]
            pts = [np.array([top + 20, pts[0][1] + 3, pts[0][2]])] + pts if pts else []
            if len(pts) >= 2:
                out.polylines.append(Polyline(a.world(np.array(pts)), 0.8, wire * 0.4))
                out.polylines.append(Polyline(a.world(np.array(pts)) + [3.5, 0, 0], 0.5, wire * 0.15))
                f.params["ett_tip_above_carina_mm"] = round(float((tip_z - carina_z) * a.spacing), 0)
        if "central line" in kinds and len(a.svc_path):
            svc = a.svc_path
            start = np.array([top + 10, svc[0][1] - 4, svc[0][2] + 25 / a.spacing])  # right internal jugular
            tip = svc[-1] + np.array([-rng.uniform(0, 3), 0, 0])
            mid = [svc[0] + np.array([6, 0, 8 / a.spacing])]
            pts = np.array([start] + mid + list(svc[1:-1]) + [tip])
            out.polylines.append(Polyline(a.world(pts), 0.9, wire * 0.3))
        if "pacemaker" in kinds:
            # generator in the left infraclavicular soft tissue, lead through the veins into the RV apex
            lx = np.argwhere(a.lung["left"])
            z0 = a.geom["left"]["hi"][0] - 20 / a.spacing
            ant = np.argwhere(a.labels[int(z0)] > 0)[:, 0].max() if (a.labels[int(z0)] > 0).any() else a.shape[1] * 0.8
            gen_c = a.world(np.array([z0, ant + 2, lx[:, 2].min() + 0.35 * (lx[:, 2].max() - lx[:, 2].min())]))
            u, w = np.array([1.0, 0, 0.25]), np.array([0.0, 0.0, 1.0])
            ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            outline = gen_c + 25 * np.cos(ang)[:, None] * u / np.linalg.norm(u) + 21 * np.sin(ang)[:, None] * w
            out.plates.append((outline, 60.0))
            heart = np.argwhere(a.heart)
            apex = heart[np.argmin(heart[:, 2] - 0.5 * heart[:, 0])]  # leftmost-inferior point of the heart
            svc = a.svc_path if len(a.svc_path) else np.array([a.hilum["right"]])
            ra = svc[-1] + np.array([-12 / a.spacing, 0, 0])
            gi = (gen_c - a.origin)[::-1] / a.spacing
            pts = np.array([gi, gi + np.array([4, -6, 15]) / 1.0, svc[0], svc[len(svc) // 2], ra,
                            (ra + apex) / 2 + np.array([-3, 0, 0]), apex + np.array([2, 2, 2])], float)
            t = np.linspace(0, 1, len(pts))
            tt = np.linspace(0, 1, 60)
            smooth = np.stack([np.interp(tt, t, pts[:, i]) for i in range(3)], 1)
            smooth = ndimage.gaussian_filter1d(smooth, 2.0, axis=0, mode="nearest")
            out.polylines.append(Polyline(a.world(smooth), 1.0, wire * 0.5))
        if "sternotomy" in kinds and len(a.sternum):
            st = a.sternum
            zs = np.linspace(np.quantile(st[:, 0], 0.15), np.quantile(st[:, 0], 0.9), int(rng.integers(5, 8)))
            for z in zs:
                sl = st[np.abs(st[:, 0] - z) < 1.5]
                c = a.world(sl.mean(0))
                ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
                ring = c + np.stack([9 * np.cos(ang), 6 * np.sin(ang), 2.5 * np.sin(2 * ang) + rng.normal(0, 0.8)], 1)
                out.polylines.append(Polyline(ring, 0.7, wire * 0.6, closed=True))
