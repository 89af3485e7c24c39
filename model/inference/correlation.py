"""The correlation image: how strongly each pixel's activity follows its neighbourhood's.

Active somata stand out in it even when they are dim in the mean image, which is why Suite2p
(``Vcorr``) and CaImAn (``Cn``) show it for curation. Here each pixel's time course is correlated
with the mean of the other pixels of its ``size x size`` neighbourhood, after two steps that keep
the measure about transients rather than noise or slow drift:

- frames are averaged in bins of ``bin_frames`` (photon noise shrinks, calcium transients, which
  last many frames, do not);
- each temporal window's binned frames are centred on that window's own mean, so bleaching and
  slow baseline drift between windows add nothing.

The engine computes three per-pixel sums per window (:func:`window_moments`), finalize adds them
over windows and turns them into the image (:func:`correlation_image`). Sums add, so the image does
not depend on how the movie was cut into chunks or in which order they ran.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: The planes :func:`window_moments` returns: sum of squares of the pixel's centred values, sum of
#: their products with the neighbourhood mean's, sum of squares of the neighbourhood mean's.
MOMENTS = ("pixel_power", "cross", "neighbourhood_power")


def window_moments(frames: np.ndarray, *, bin_frames: int, size: int) -> np.ndarray:
    """The three sums of :data:`MOMENTS` over one window's frames ``(t, h, w)``: ``(3, h, w)``
    float32 (zeros when the window holds fewer than two bins).

    The neighbourhood of a pixel at the block's edge holds only the pixels inside the block; its
    mean is then scaled by a constant, which leaves the correlation unchanged.
    """
    frames = np.asarray(frames, dtype=np.float32)
    n_bins = frames.shape[0] // bin_frames
    out = np.zeros((3, *frames.shape[1:]), np.float32)
    if n_bins < 2:
        return out
    binned = frames[:n_bins * bin_frames].reshape(n_bins, bin_frames, *frames.shape[1:]).mean(1)
    centred = binned - binned.mean(axis=0)
    area = size * size
    around = ndimage.uniform_filter(centred, (0, size, size), mode="constant")
    around = (around * area - centred) / (area - 1)
    out[0] = np.einsum("tij,tij->ij", centred, centred)
    out[1] = np.einsum("tij,tij->ij", centred, around)
    out[2] = np.einsum("tij,tij->ij", around, around)
    return out


def correlation_image(moments: np.ndarray) -> np.ndarray:
    """Pearson correlation per pixel ``(H, W)`` float32 in [-1, 1] from summed moments
    ``(3, H, W)``; 0 where a pixel or its neighbourhood never changed."""
    power, cross, around = (np.asarray(m, dtype=np.float64) for m in moments)
    denominator = np.sqrt(power * around)
    safe = denominator > 0
    out = np.zeros(power.shape, np.float64)
    np.divide(cross, denominator, out=out, where=safe)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
