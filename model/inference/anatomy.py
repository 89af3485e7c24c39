"""Somata the mean image shows and the network cannot: cell bodies darker than the neuropil.

The network finds somata by their activity and by being brighter than their surround, as in the
simulated movies it was trained on. In many real recordings most somata are neither during a
short movie: with GCaMP6s the neuropil is bright and a silent cell body, which holds no neuropil,
is a dim disc in it (on the real development recording the median labelled soma is 0.93 times as
bright as its surround, and most labelled cells never fire in its 80 s). Such somata are found
here, in the mean image, at the soma size estimated from the movie (:mod:`.somasize`):

1. the mean image is normalised locally (its mean and spread over ``NORMALISE`` diameters
   divided out, so bright and dark regions of neuropil count alike) and clipped to one spread
   either way (a few very bright pixels, such as dendrites crossing the plane, cannot outweigh a
   soma-sized disc);
2. a scale-normalised Laplacian of Gaussian at ``LOG_SCALE`` diameters responds to discs of
   the soma's size, positively to dark ones;
3. each local maximum of that response above ``DecideParams.dark_soma_evidence`` (in units of the
   local spread, times :func:`bright_to_dark`: in a movie of bright somata the neuropil between
   them reads as dark discs), at least half a diameter from the next, is a soma whose footprint
   is a disc of the estimated diameter (the mean image shows where a dim soma is better than its
   outline), unless kept network neurons or clear bright discs hem it in (the neuropil between
   bright somata).

Bright soma-sized spots of the mean image are left to the network: on the development half they
were rarely labelled cells (precision 0.05: bright dendrite crossings and puncta), while the
network judges bright somata by their activity too. A dark disc that a kept network neuron
already covers is not added again. The choice of the constants and the evidence for each are
in ``docs/decision-rules.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max

#: Scale of the local normalisation of the mean image, in soma diameters.
NORMALISE = 1.5
#: Scale of the Laplacian of Gaussian, in soma diameters (a uniform disc responds most at
#: ``1 / (2 sqrt(2)) = 0.35``; a labelled dim soma's dark interior is smaller than its outline).
LOG_SCALE = 0.3
#: Local maxima of the response closer than this many diameters are one soma.
MIN_SEPARATION = 0.5
#: A dark disc whose ring (from one pixel past its edge to 1.1 diameters from its centre) lies
#: more than this share on kept neurons or clear bright discs is the neuropil hemmed in between
#: bright somata, not a soma.
MAX_HEMMED = 0.35
#: A disc with more than this share of its pixels on a kept neuron (or a stronger disc) is that
#: neuron.
MAX_SHARED = 0.2


@dataclass(frozen=True)
class DarkSoma:
    """One dark disc of the mean image: its footprint (boolean, at ``(y0, x0)``), its centre and
    the response that found it."""

    on: np.ndarray
    y0: int
    x0: int
    centre: tuple[int, int]
    evidence: float


def dark_soma_response(mean_image: np.ndarray, diameter: float) -> np.ndarray:
    """The response of the locally normalised, clipped mean image to dark discs of
    ``diameter`` pixels (scale-normalised Laplacian of Gaussian), ``(H, W)`` float64."""
    image = np.asarray(mean_image, np.float64)
    local = ndimage.gaussian_filter(image, NORMALISE * diameter)
    spread = np.sqrt(ndimage.gaussian_filter((image - local) ** 2, NORMALISE * diameter))
    z = np.divide(image - local, spread, out=np.zeros_like(image), where=spread > 0)
    np.clip(z, -1.0, 1.0, out=z)
    sigma = LOG_SCALE * diameter
    return sigma * sigma * ndimage.gaussian_laplace(z, sigma)


def bright_to_dark(response: np.ndarray, diameter: float) -> float:
    """How much the mean image's strongest bright blobs outweigh its strongest dark ones, at
    least 1: the 1st percentile of the response (bright discs) over its 99th (dark discs),
    inside a margin of a diameter.

    Where somata are bright (as the network was trained to see them), the neuropil between them
    reads as dark discs, and a dark disc must stand out further to be a soma: on simulated
    movies of bright somata the ratio is 1.3-1.9 and the gaps between dense somata came out as
    false somata without it; on the development recording, whose somata are dim, it is 1."""
    margin = max(1, int(np.ceil(diameter)))
    inner = response[margin:-margin, margin:-margin]
    if inner.size == 0:
        inner = response
    dark, bright = np.percentile(inner, 99), -np.percentile(inner, 1)
    return float(max(1.0, bright / dark)) if dark > 0 else 1.0


def disc(diameter: float) -> np.ndarray:
    """A boolean disc of ``diameter`` pixels, centred in an odd box."""
    radius = diameter / 2
    reach = int(np.floor(radius))
    yy, xx = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    return yy * yy + xx * xx <= radius * radius


def dark_somata(mean_image: np.ndarray, diameter: float, threshold: float, *,
                occupied: np.ndarray | None = None, border: int = 2) -> list[DarkSoma]:
    """The dark somata of ``mean_image`` (on the network's grid) of about ``diameter`` pixels
    whose response reaches ``threshold`` (times :func:`bright_to_dark`), strongest first;
    those whose disc lies in part (over :data:`MAX_SHARED`) on ``occupied`` pixels (kept
    neurons) or on a stronger one, or whose surroundings are mostly kept neurons
    (:data:`MAX_HEMMED`), are left out. Maxima within ``border`` pixels of the frame's
    edge are not taken (half a soma outside the frame)."""
    occupied = (np.zeros(np.shape(mean_image), bool) if occupied is None
                else np.array(occupied, dtype=bool))
    response = dark_soma_response(mean_image, diameter)
    peaks = peak_local_max(response, min_distance=max(1, int(MIN_SEPARATION * diameter)),
                           threshold_abs=threshold * bright_to_dark(response, diameter),
                           exclude_border=border)
    shape = disc(diameter)
    reach = shape.shape[0] // 2
    outer = int(np.ceil(1.1 * diameter))
    yy, xx = np.mgrid[-outer:outer + 1, -outer:outer + 1]
    distance = np.hypot(yy, xx)
    ring = (distance > diameter / 2 + 1) & (distance <= 1.1 * diameter)
    # what hems a dark disc in: the kept neurons (not the discs found here) and the bright discs
    # as clear as a dark one must be (bright somata the network did not keep)
    kept = np.pad(occupied | (response <= -threshold), outer)
    height, width = response.shape
    found = []
    for y, x in peaks.tolist():
        if kept[y:y + 2 * outer + 1, x:x + 2 * outer + 1][ring].mean() > MAX_HEMMED:
            continue
        y0, x0 = y - reach, x - reach
        ya, yb, xa, xb = max(y0, 0), min(y0 + shape.shape[0], height), max(x0, 0), min(
            x0 + shape.shape[1], width)
        on = shape[ya - y0:yb - y0, xa - x0:xb - x0]
        if occupied[ya:yb, xa:xb][on].mean() > MAX_SHARED:
            continue
        occupied[ya:yb, xa:xb] |= on  # strongest first: a weaker maximum on the same soma goes
        found.append(DarkSoma(on=on, y0=ya, x0=xa, centre=(y, x),
                              evidence=float(response[y, x])))
    return found
