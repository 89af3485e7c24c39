"""Read a chunk's block of the movie (with the plan's padding) and cut it into network patches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from model.inference import motion
from model.inference.params import MotionParams, ScalingParams
from model.inference.plan import Plan, Tile, padded_index
from model.inference.scaling import MovieRange, scale_block, scale_patches


@dataclass(frozen=True)
class Block:
    """A padded block of the movie in movie-range units.

    Attributes
    ----------
    data : ndarray, shape (T_model, h, w), float32
        Frames of one window, region ``[y0:y0+h, x0:x0+w]`` of the padded frame, scaled to [0, 1] by
        the movie range.
    y0, x0 : int
        Origin of the block on the padded frame.
    shifts : ndarray, shape (t, 2), or None
        Motion shifts applied to movie frames ``first_frame .. first_frame + t`` (None: not
        motion-corrected).
    """

    data: np.ndarray
    y0: int
    x0: int
    first_frame: int = 0
    shifts: np.ndarray | None = None


def _time_indices(plan: Plan, window: int) -> np.ndarray:
    start = plan.windows[window].start
    p = np.arange(start, start + plan.patch[0])
    return padded_index(p, plan.movie_shape[0], before=plan.trace_offset)


def read_block(movie, plan: Plan, window: int, tiles: tuple[Tile, ...], *,
               reference: np.ndarray | None = None,
               motion_params: MotionParams | None = None, sigma: float = 0.0) -> Block:
    """Read the frames of ``window`` covering ``tiles``, padded per the plan's rule.

    With a ``reference`` image, whole frames are read and motion-corrected before the region is cut,
    so every chunk of a window applies the same shifts. ``sigma`` > 0 smooths each frame with a
    Gaussian of that many pixels (block edges extended by their nearest pixel).
    """
    _, height, width = plan.movie_shape
    size = plan.patch[1]
    t_idx = _time_indices(plan, window)
    y0, x0 = min(t.y0 for t in tiles), min(t.x0 for t in tiles)
    y1, x1 = max(t.y0 for t in tiles) + size, max(t.x0 for t in tiles) + size
    y_idx = padded_index(np.arange(y0, y1), height)
    x_idx = padded_index(np.arange(x0, x1), width)
    t_lo, t_hi = int(t_idx.min()), int(t_idx.max()) + 1
    shifts = None
    if reference is not None:
        frames = movie.read(t_lo, t_hi)
        shifts = motion.estimate_shifts(frames, reference, params=motion_params or MotionParams())
        frames = motion.apply_shifts(frames, shifts)
        frames = frames[:, y_idx.min():y_idx.max() + 1, x_idx.min():x_idx.max() + 1]
    else:
        frames = movie.read(t_lo, t_hi, y=slice(int(y_idx.min()), int(y_idx.max()) + 1),
                            x=slice(int(x_idx.min()), int(x_idx.max()) + 1))
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"the movie reader returned a {frames.ndim}-D block; expected (t, h, w)")
    block = frames[np.ix_(t_idx - t_lo, y_idx - y_idx.min(), x_idx - x_idx.min())]
    scaled = scale_block(block, MovieRange(plan.movie_low, plan.movie_high))
    if sigma > 0:
        scaled = ndimage.gaussian_filter(scaled, (0, sigma, sigma), mode="nearest")
    return Block(data=scaled, y0=y0, x0=x0, first_frame=t_lo, shifts=shifts)


def cut_patches(block: Block, tiles: tuple[Tile, ...], size: int) -> np.ndarray:
    """Patches ``(len(tiles), T_model, size, size)`` float32 (copies) of ``block`` at the tiles."""
    out = np.empty((len(tiles), block.data.shape[0], size, size), dtype=np.float32)
    for i, t in enumerate(tiles):
        oy, ox = t.y0 - block.y0, t.x0 - block.x0
        out[i] = block.data[:, oy:oy + size, ox:ox + size]
    return out


def network_patches(block: Block, tiles: tuple[Tile, ...], size: int, *, mode: str,
                    scaling: ScalingParams) -> tuple[np.ndarray, np.ndarray]:
    """Patches scaled as the model expects (its card's ``input_scaling``), and each divisor.

    Parameters
    ----------
    mode : str
        ``"movie-range"`` or ``"minmax-per-patch"`` (see :mod:`model.inference.scaling`); anything
        else raises ``ValueError``.
    scaling : ScalingParams
        The levels (movie-range) or the range floor (minmax-per-patch).

    Returns
    -------
    patches : ndarray, shape (B, T_model, size, size), float32
    span : ndarray, shape (B,), float32
        Multiply network traces (and the denoised movie) by it to return to movie-range units.
    """
    return scale_patches(cut_patches(block, tiles, size), mode=mode, params=scaling)
