"""The real-film contrast stretch of :mod:`crrg.rrg.detector` (``contrast_percentiles``): where a film's
percentiles are read, how it is stretched, and when the mirrored look can reuse the film's percentiles
(issue 20). Kept apart so the detector module stays about the network."""

from __future__ import annotations

import torch


def contrast_bounds(image: torch.Tensor, percentiles: tuple[float, float] | None) -> tuple[float, float] | None:
    """The intensities at ``percentiles`` (low, high) of ``image`` ((H, W) or its first plane), read from
    a regular subsample of a large film; None when there is nothing to stretch (no percentiles, a flat film)."""
    if percentiles is None:
        return None
    flat = _contrast_sample(image)
    lo, hi = torch.quantile(flat.reshape(-1).float(), torch.tensor(percentiles, dtype=torch.float32) / 100.0).tolist()
    return None if hi - lo < 1e-3 else (lo, hi)


def _contrast_sample(image: torch.Tensor) -> torch.Tensor:
    flat = image[0] if image.ndim == 3 else image
    if flat.numel() > 1_000_000:  # the percentiles of a large film from a regular subsample
        flat = flat[:: _sample_step(flat.shape[0]), :: _sample_step(flat.shape[1])]
    return flat


def _sample_step(size: int) -> int:
    return max(1, size // 1000)


def stretch_contrast(image: torch.Tensor, percentiles: tuple[float, float] | None,
                     bounds: tuple[float, float] | None | type(...) = ...) -> torch.Tensor:
    """``image`` with its ``percentiles`` (low, high) mapped to 0 and 1 and clipped; unchanged when
    ``percentiles`` is None or the image is flat (a blank film has no contrast to stretch).
    ``bounds``: :func:`contrast_bounds` of ``image`` when the caller already has them."""
    if percentiles is None:
        return image
    if bounds is ...:
        bounds = contrast_bounds(image, percentiles)
    if bounds is None:
        return image
    lo, hi = bounds
    return ((image - lo) / (hi - lo)).clamp_(0.0, 1.0)


def mirror_keeps_sample(width: int) -> bool:
    """Whether the horizontally flipped film's percentile subsample is the same set of pixels as the
    film's (so its :func:`contrast_bounds` are the same and need not be computed again)."""
    step = _sample_step(width)
    return step == 1 or (width - 1) % step == 0
