"""Read a chunk's block of the movie (with the plan's padding) and cut it into network patches."""

from __future__ import annotations

from concurrent.futures import Executor
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


#: Fewest frames of one part when a block's frames are read and prepared as parts in a pool
#: (a window of 100 frames: up to 12 parts, one per reading thread of a 16-core GPU host).
FRAMES_PER_PART = 8


def read_block(movie, plan: Plan, window: int, tiles: tuple[Tile, ...], *,
               reference: np.ndarray | None = None,
               motion_params: MotionParams | None = None, sigma: float = 0.0,
               pool: Executor | None = None, parts: int = 4) -> Block:
    """Read the frames of ``window`` covering ``tiles``, padded per the plan's rule.

    With a ``reference`` image, whole frames are read and motion-corrected before the region is cut,
    so every chunk of a window applies the same shifts. ``sigma`` > 0 smooths each frame with a
    Gaussian of that many pixels (block edges extended by their nearest pixel).

    With a ``pool``, the frames are read and prepared as up to ``parts`` consecutive ranges at
    once (every step is frame by frame, so the block is the same): a pool shared by the chunks
    read ahead, first come first served, finishes the first chunk first.
    """
    _, height, width = plan.movie_shape
    size = plan.patch[1]
    t_idx = _time_indices(plan, window)
    y0, x0 = min(t.y0 for t in tiles), min(t.x0 for t in tiles)
    y1, x1 = max(t.y0 for t in tiles) + size, max(t.x0 for t in tiles) + size
    y_idx = padded_index(np.arange(y0, y1), height)
    x_idx = padded_index(np.arange(x0, x1), width)
    rows = slice(int(y_idx.min()), int(y_idx.max()) + 1)
    cols = slice(int(x_idx.min()), int(x_idx.max()) + 1)
    movie_range = MovieRange(plan.movie_low, plan.movie_high)

    def prepare(t_a: int, t_b: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Frames ``t_a .. t_b``: read, motion-corrected, cut and padded, scaled, smoothed."""
        shifts = None
        if reference is not None:
            frames = movie.read(t_a, t_b)
            shifts = motion.estimate_shifts(frames, reference,
                                            params=motion_params or MotionParams())
            frames = motion.apply_shifts(frames, shifts)[:, rows, cols]
        else:
            frames = movie.read(t_a, t_b, y=rows, x=cols)
        frames = np.asarray(frames)
        if frames.ndim != 3:
            raise ValueError(f"the movie reader returned a {frames.ndim}-D block; expected "
                             "(t, h, w)")
        scaled = scale_block(_take(_take(frames, y_idx - rows.start, 1), x_idx - cols.start, 2),
                             movie_range)
        if sigma > 0:
            scaled = ndimage.gaussian_filter(scaled, (0, sigma, sigma), mode="nearest")
        return scaled, shifts

    t_lo, t_hi = int(t_idx.min()), int(t_idx.max()) + 1
    n_parts = max(1, min(parts, (t_hi - t_lo) // FRAMES_PER_PART)) if pool is not None else 1
    edges = np.linspace(t_lo, t_hi, n_parts + 1).round().astype(int)
    ranges = list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
    done = list((pool.map if n_parts > 1 else map)(lambda r: prepare(*r), ranges))
    data = np.concatenate([d for d, _ in done]) if n_parts > 1 else done[0][0]
    shifts = None if reference is None else np.concatenate([s for _, s in done])
    return Block(data=_take(data, t_idx - t_lo, 0), y0=y0, x0=x0, first_frame=t_lo,
                 shifts=shifts)


def _take(array: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    """``np.take(array, index, axis)``, a view where ``index`` is a run of consecutive positions
    (no padding on that side: most blocks)."""
    if index.size and np.array_equal(index, np.arange(index[0], index[0] + index.size)):
        return array[(slice(None),) * axis + (slice(int(index[0]), int(index[0]) + index.size),)]
    return np.take(array, index, axis=axis)


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
    # the cut patches are a copy of their own, scaled in place (148 MB at 512 x 512)
    cut = cut_patches(block, tiles, size)
    return scale_patches(cut, mode=mode, params=scaling, out=cut)
