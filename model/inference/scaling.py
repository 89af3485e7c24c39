"""Robust per-movie intensity range, and the network input scalings a model card can name."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.inference.params import ScalingParams
from model.inference.source import read_frames


@dataclass(frozen=True)
class MovieRange:
    """Robust intensity range of a movie (raw units).

    Attributes
    ----------
    low, high : float
        The movie's ``low_percentile`` and ``high_percentile`` over sampled frames.
    """

    low: float
    high: float

    @property
    def span(self) -> float:
        return self.high - self.low


def sample_indices(n_frames: int, n_samples: int) -> np.ndarray:
    """Evenly spaced frame indices, at most ``n_samples`` of them, int64 ``(k,)``."""
    k = min(n_frames, n_samples)
    return np.unique(np.linspace(0, n_frames - 1, k).round().astype(np.int64))


def percentiles(sample: np.ndarray, q: list[float], *, overwrite: bool = False) -> np.ndarray:
    """``np.percentile(sample.astype(float64), q)`` (linear interpolation), float64 ``(len(q),)``.

    The two order statistics each percentile needs are selected in the sample's own dtype (exact
    for integers and floats alike) and only they are interpolated in float64; each pair is looked
    for among the values between bounds read off a sorted subsample (:func:`_bracketed`), the
    whole sample partitioned only when a bound misses. Same values as NumPy; for 200 frames of
    512 x 512 1.6 s -> 0.3 s (uint16) / 0.1 s (binned float32). ``overwrite``: a full partition
    may reorder a contiguous ``sample`` in place rather than a copy (values kept, order not).
    """
    flat = np.ravel(sample)
    n = flat.size
    subsample = np.sort(flat[::max(1, n // SUBSAMPLE_SIZE)])
    out = []
    for value in q:
        pos = float(value) / 100.0 * (n - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        pair = _bracketed(flat, lo, hi, subsample)
        if pair is None:
            if overwrite and sample.flags.c_contiguous:
                part = sample.reshape(-1)
                part.partition([lo, hi])
            else:
                part = np.partition(flat, [lo, hi])
            pair = part[lo], part[hi]
        below, above = float(pair[0]), float(pair[1])
        out.append(below + (above - below) * (pos - lo))
    return np.asarray(out, np.float64)


#: Values in the subsample whose order statistics bound each searched rank.
SUBSAMPLE_SIZE = 200_000


def _bracketed(flat: np.ndarray, lo: int, hi: int, subsample: np.ndarray,
               ) -> tuple[Any, Any] | None:  # fmt: skip
    """The values of ranks ``lo`` <= ``hi`` of ``flat``, found among the values between two
    bounds taken from the sorted ``subsample`` six standard deviations of a rank's sampling
    error either side; ``None`` when the counts show a bound missed."""
    n, m = flat.size, subsample.size
    p = min(lo / max(n - 1, 1), 1.0)
    margin = 6 * math.sqrt(m * p * (1 - p)) + 8
    low = subsample[max(0, math.floor(p * (m - 1) - margin))]
    high = subsample[min(m - 1, math.ceil(p * (m - 1) + margin))]
    inside = flat >= low
    below = n - np.count_nonzero(inside)
    if below > lo:
        return None
    np.logical_and(inside, flat <= high, out=inside)
    candidates = flat[inside]
    if below + candidates.size <= hi:
        return None
    part = np.partition(candidates, [lo - below, hi - below])
    return part[lo - below], part[hi - below]


def movie_sample(movie, params: ScalingParams) -> np.ndarray:
    """The ``params.sample_frames`` evenly spaced frames :func:`movie_range` measures."""
    return read_frames(movie, sample_indices(movie.shape[0], params.sample_frames))


def network_units(sample: np.ndarray) -> bool:
    """Whether sampled frames are already in the network's input units: floating-point values
    within [0, 1] (a movie prepared for the network, as the published samples are), which the
    engine then feeds as they are (no intensity map, no smoothing)."""
    return (sample.dtype.kind == "f" and sample.size > 0 and bool(np.all(np.isfinite(sample)))
            and float(sample.min()) >= 0.0 and float(sample.max()) <= 1.0)


def movie_range(movie, *, params: ScalingParams, sample: np.ndarray | None = None) -> MovieRange:
    """Percentile range of a sample of frames.

    Parameters
    ----------
    movie : MovieLike
        ``(T, H, W)`` movie with ``.read``.
    params : ScalingParams
        Which percentiles and how many frames.
    sample : ndarray, optional
        The frames :func:`movie_sample` reads, when already read (reordered in place).

    Raises
    ------
    ValueError
        If the sampled frames hold NaN/Inf or the movie is constant.
    """
    if sample is None:
        sample = movie_sample(movie, params)
    if sample.dtype.kind == "f" and not np.all(np.isfinite(sample)):
        raise ValueError("the movie holds NaN or infinite pixel values; fix or drop those frames")
    low, high = percentiles(sample, [params.low_percentile, params.high_percentile],
                            overwrite=True)
    if not high > low:
        low, high = float(sample.min()), float(sample.max())
    if not high > low:
        raise ValueError(f"the movie is constant (every sampled pixel is {low:g}); nothing to find")
    return MovieRange(low=float(low), high=float(high))


def scale_block(block: np.ndarray, movie_range: MovieRange) -> np.ndarray:
    """Map raw intensities to the movie range: ``(x - low) / span`` clipped to [0, 1], float32."""
    out = (np.asarray(block, dtype=np.float32) - np.float32(movie_range.low))
    out /= np.float32(movie_range.span)
    np.clip(out, 0.0, 1.0, out=out)
    if not np.all(np.isfinite(out)):
        raise ValueError("the movie holds NaN or infinite pixel values; fix or drop those frames")
    return out


def minmax_patches(patches: np.ndarray, *, min_range: float,
                   out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch min-max scaling to [0, 1], with a floor on the range.

    Parameters
    ----------
    patches : ndarray, shape (B, T, h, w), float32
        Patches already mapped to the movie range ([0, 1]).
    min_range : float
        Smallest divisor; a flat (background-only) patch is not stretched beyond it.
    out : ndarray, optional
        Where the result goes (``patches`` itself, float32, to scale in place).

    Returns
    -------
    scaled : ndarray, shape (B, T, h, w), float32
        In [0, 1]; a new array unless ``out`` is given.
    span : ndarray, shape (B,), float32
        The divisor used per patch (multiply network traces by it to return to movie units).
    """
    lo = patches.min(axis=(1, 2, 3), keepdims=True)
    hi = patches.max(axis=(1, 2, 3), keepdims=True)
    span = np.maximum(hi - lo, np.float32(max(min_range, 1e-6))).astype(np.float32)
    scaled = np.subtract(patches, lo, out=out)
    np.divide(scaled, span, out=scaled)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    return scaled.astype(np.float32, copy=False), span.reshape(-1)


#: What a model card's ``input_scaling`` may say, and what each means for the network input.
INPUT_SCALINGS: dict[str, str] = {
    "movie-range": "one affine map for the whole movie: its low/high percentiles go to "
                   "ScalingParams.background_level/peak_level, clipped to [0, 1]",
    "minmax-per-patch": "each patch min-max scaled to [0, 1] (floor ScalingParams.min_patch_range)",
}


def check_input_scaling(mode: str) -> str:
    """Return ``mode`` if it is a known input scaling; otherwise raise a ``ValueError``."""
    if mode not in INPUT_SCALINGS:
        known = ", ".join(repr(k) for k in INPUT_SCALINGS)
        raise ValueError(f"unknown input_scaling {mode!r} in the model card; this engine knows "
                         f"{known}")
    return mode


def level_patches(patches: np.ndarray, *, background: float, peak: float,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Map movie-range units to fixed network levels: 0 -> ``background``, 1 -> ``peak``.

    Parameters
    ----------
    patches : ndarray, shape (B, T, h, w), float32
        Patches already mapped to the movie range ([0, 1]).
    background, peak : float
        Network input levels of the movie's low and high percentiles (``0 <= background < peak
        <= 1``).
    out : ndarray, optional
        Where the result goes (``patches`` itself, float32, to scale in place).

    Returns
    -------
    scaled : ndarray, shape (B, T, h, w), float32
        In [0, 1], a new array unless ``out`` is given; every patch gets the same map, so a dim
        patch stays dim.
    span : ndarray, shape (B,), float32
        The divisor ``1 / (peak - background)`` per patch (multiply network traces by it to return
        to movie units), as :func:`minmax_patches` returns.
    """
    if not 0.0 <= background < peak <= 1.0:
        raise ValueError(f"need 0 <= background < peak <= 1, got {background}, {peak}")
    gain = np.float32(peak - background)
    scaled = np.multiply(np.asarray(patches, dtype=np.float32), gain, out=out)
    np.add(scaled, np.float32(background), out=scaled)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    span = np.full(scaled.shape[0], 1.0 / gain, dtype=np.float32)
    return scaled, span


def scale_patches(patches: np.ndarray, *, mode: str, params: ScalingParams,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Network input for patches in movie-range units, per the model's ``input_scaling``.

    Returns ``(scaled, span)`` as :func:`minmax_patches` and :func:`level_patches` do (in
    ``out`` when given); raises ``ValueError`` for an unknown ``mode``.
    """
    if check_input_scaling(mode) == "movie-range":
        return level_patches(patches, background=params.background_level, peak=params.peak_level,
                             out=out)
    return minmax_patches(patches, min_range=params.min_patch_range, out=out)
