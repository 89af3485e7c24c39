"""Small movies with one known cell, written to disk for tests that run the whole engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def blinking_disk_movie(path: Path, frames: int = 120, size: int = 40) -> Path:
    """A uint16 ``.npy`` movie at ``path``: noisy background and one disk of radius 5 that
    fires a few calcium transients (what `caimx process` must find, by any runtime)."""
    movie = np.clip(np.random.default_rng(1).normal(300, 20, (frames, size, size)), 0, None)
    yy, xx = np.mgrid[:size, :size]
    spikes = np.convolve((np.random.default_rng(2).random(frames) < 0.06) * 1.0,
                         np.exp(-np.arange(30) / 6))[:frames]
    movie += (200 + 600 * spikes)[:, None, None] * (((yy - 20) ** 2 + (xx - 18) ** 2) <= 25)
    np.save(path, movie.astype(np.uint16))
    return path

