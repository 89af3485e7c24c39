"""The typical soma diameter of a movie, estimated from its mean image before the network runs.

Somata are the movie's commonest blobs of one size, brighter or darker than the neuropil around
them (GCaMP6s somata are often dim in bright neuropil). The estimate is the scale at which a
blob detector responds most over the whole image: the scale-normalized Laplacian of Gaussian
(``sigma^2 * LoG``), whose response to a disc of diameter ``d`` peaks at ``sigma = d / (2
sqrt(2))``, is applied at many scales to the locally normalized mean image, and the scale with
the most response energy (both signs) wins. The pixel noise left in a mean of a few hundred
frames would favour the smallest scales; its energy at each scale is measured on the difference
of the means of the even and odd sampled frames (the same signal, independent noise) and
subtracted.

Measured against the labelled somata (docs/accuracy.md): 0.90 x the labels' equivalent diameter
on the real development recording, 0.94-1.26 x the true diameter on simulated movies from 6 to
21 pixels, dim or bright somata, 1 to 16 photons per pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Gaussian scale (pixels) of the local normalisation: the mean image's slow brightness changes
#: (vignetting, depth, bright and dark regions of neuropil) are divided out at this scale.
NORMALISE_SIGMA = 8.0
#: The scales searched, as diameters in pixels.
DIAMETERS = (3.0, 45.0)
#: Scales searched between them (geometric steps of about 7 %).
N_SCALES = 40
#: Fewest sampled frames for the estimate (half of them give the noise's image).
MIN_FRAMES = 8
#: Smallest frame edge (pixels) on which the estimate is made: a field of a few somata says
#: little about their typical size.
MIN_EDGE = 64


@dataclass(frozen=True)
class SomaSize:
    """The estimate and what it came from (JSON-able through ``dataclasses.asdict``)."""

    diameter_px: float
    method: str = "scale of the strongest blobs in the mean image (Laplacian of Gaussian)"


def estimate_soma_diameter(frames: np.ndarray) -> SomaSize | None:
    """The typical soma diameter in pixels from sampled frames ``(n, H, W)`` (evenly spaced over
    the movie); ``None`` when the frames are too few or too small to tell.

    Parameters
    ----------
    frames : ndarray, shape (n, H, W)
        Raw or scaled frames (any affine map of the intensities gives the same answer).
    """
    frames = np.asarray(frames)
    n, height, width = frames.shape
    if n < MIN_FRAMES or min(height, width) < MIN_EDGE:
        return None
    even = frames[0::2].mean(axis=0, dtype=np.float64)
    odd = frames[1::2].mean(axis=0, dtype=np.float64)
    mean, noise = (even + odd) / 2, (even - odd) / 2
    local = ndimage.gaussian_filter(mean, NORMALISE_SIGMA)
    spread = np.sqrt(ndimage.gaussian_filter((mean - local) ** 2, NORMALISE_SIGMA))
    if not np.all(spread > 0):
        return None
    signal, noise = (mean - local) / spread, noise / spread
    sigmas = np.geomspace(*DIAMETERS, N_SCALES) / (2 * math.sqrt(2))
    border = math.ceil(2 * NORMALISE_SIGMA)
    inner = (slice(border, -border), slice(border, -border))

    def energy(image: np.ndarray, sigma: float) -> float:
        response = sigma * sigma * ndimage.gaussian_laplace(image, sigma)
        return float(np.mean(response[inner] ** 2))

    excess = [energy(signal, s) - energy(noise, s) for s in sigmas]
    best = int(np.argmax(excess))
    if excess[best] <= 0:
        return None
    return SomaSize(diameter_px=round(float(2 * math.sqrt(2) * sigmas[best]), 2))
