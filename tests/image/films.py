"""Stand-in chest films for tests of the reporting paths: small, seeded, and accepted by the
chest-radiograph gate (random noise or flat gray images are refused by it, as they should be)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def chest_film(seed: int = 0, size: tuple[int, int] = (72, 64)) -> np.ndarray:
    """uint8 (height, width): one of the repository's synthetic example films, resized, with seeded noise
    (so two seeds give two different images)."""
    from PIL import Image

    from crrg.image import load_image

    films = sorted(EXAMPLES.glob("*_frontal.png"))
    image = load_image(films[seed % len(films)])
    small = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)
    noisy = small + np.random.default_rng(seed).normal(0, 0.01, small.shape)
    return (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)


def write_chest_film(path: str | Path, seed: int = 0, size: tuple[int, int] = (72, 64)) -> Path:
    from PIL import Image

    Image.fromarray(chest_film(seed, size)).save(path)
    return Path(path)


def chest_film_png(seed: int = 0, size: tuple[int, int] = (72, 64)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(chest_film(seed, size)).save(buffer, format="PNG")
    return buffer.getvalue()
