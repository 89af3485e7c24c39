"""Somata: where they are and what their footprints look like.

Footprints are soft-edged ellipses (value 0.5 on the ellipse boundary, 1 inside), some with a
darker nucleus (never below 0.55, so ``footprint >= 0.5`` is the whole soma) and optionally faint
dendrite-like processes (weights 0.1-0.3, below the 0.5 soma threshold). Cells overlap only at
their rims (``SimulationParams.soma_separation``) and may be cut by the field-of-view border:
centres are drawn over the field of view extended by the largest soma radius.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from model.simulate.params import SimulationParams

SOMA_THRESHOLD = 0.5


@dataclass(frozen=True)
class CellLayout:
    """Footprints of K cells on an (H, W) field of view.

    Attributes
    ----------
    footprints : scipy.sparse.csr_array, shape (K, H*W), float32
        Spatial weights in [0, 1] (soma ~1, nucleus >= 0.55, processes 0.1-0.3).
    masks : scipy.sparse.csr_array, shape (K, H*W), bool
        Soma masks (inside the ellipse boundary, nucleus included, processes excluded).
    centers : ndarray, shape (K, 2), float64
        Soma centres (y, x) in pixels; may lie outside the field of view.
    axes : ndarray, shape (K, 2), float64
        Ellipse semi-axes in pixels.
    visible_fraction : ndarray, shape (K,), float64
        Fraction of the soma mask that lies inside the field of view.
    """

    footprints: sp.csr_array
    masks: sp.csr_array
    centers: np.ndarray
    axes: np.ndarray
    visible_fraction: np.ndarray
    shape: tuple[int, int]

    @property
    def count(self) -> int:
        """Number of cells K."""
        return int(self.centers.shape[0])

    def dense_footprints(self) -> np.ndarray:
        """Footprints as a dense float32 array of shape (K, H, W)."""
        return self.footprints.toarray().reshape(self.count, *self.shape).astype(np.float32)

    def dense_masks(self) -> np.ndarray:
        """Soma masks as a dense bool array of shape (K, H, W)."""
        return self.masks.toarray().reshape(self.count, *self.shape).astype(bool)


#: Positions tried for a cell before it is left out (``SimulationParams.soma_separation``).
SEPARATION_TRIES = 50


class _Placed:
    """Centres placed so far; a new one is clear when it keeps ``separation`` x (r_i + r_j)."""

    def __init__(self, separation: float, radius: np.ndarray) -> None:
        self.separation, self.radius = separation, radius
        self.index: list[int] = []
        self.centers: list[tuple[float, float]] = []

    def clear(self, i: int, center: np.ndarray) -> bool:
        if self.separation <= 0 or not self.index:
            return True
        dist = np.hypot(*(np.asarray(self.centers) - center).T)
        return bool(np.all(dist >= self.separation * (self.radius[self.index] + self.radius[i])))

    def find_spot(self, i: int, rng: np.random.Generator, ys: tuple[float, float],
                  xs: tuple[float, float], vessel: np.ndarray) -> np.ndarray | None:
        """A new centre for cell ``i`` outside vessels and clear of the others, or None."""
        for _ in range(SEPARATION_TRIES):
            center = np.array([rng.uniform(*ys), rng.uniform(*xs)])
            if vessel_ok(vessel, *center) and self.clear(i, center):
                return center
        return None

    def add(self, i: int, center: np.ndarray) -> None:
        self.index.append(i)
        self.centers.append((float(center[0]), float(center[1])))


def vessel_ok(vessel: np.ndarray, y: float, x: float) -> bool:
    """Whether a soma centre at (y, x) avoids the vessel shadows (transmission >= 0.85)."""
    h, w = vessel.shape
    yi, xi = int(np.clip(round(y), 0, h - 1)), int(np.clip(round(x), 0, w - 1))
    return bool(vessel[yi, xi] >= 0.85)


def place_cells(params: SimulationParams, rng: np.random.Generator,
                vessel: np.ndarray) -> CellLayout:
    """Draw cell positions and shapes and render their footprints.

    Parameters
    ----------
    params : SimulationParams
        Uses the field of view, pixel size, soma sizes, density, nucleus and process settings.
    rng : numpy.random.Generator
        Source of every random choice here.
    vessel : ndarray, shape (H, W)
        Light transmission of the vessel shadows; somata are not centred in vessels.

    Returns
    -------
    CellLayout
    """
    h, w = params.height, params.width
    px = params.pixel_size_um
    d_lo, d_hi = params.soma_diameter_um
    margin = d_hi / px / 2.0
    ext_area_mm2 = (h + 2 * margin) * (w + 2 * margin) * (px * 1e-3) ** 2
    n_try = int(rng.poisson(params.density_per_mm2 * ext_area_mm2))
    centers = np.column_stack([rng.uniform(-margin, h - 1 + margin, n_try),
                               rng.uniform(-margin, w - 1 + margin, n_try)])
    diam = rng.uniform(d_lo, d_hi, n_try) / px
    elong = rng.uniform(-params.soma_elongation, params.soma_elongation, n_try) / 2.0
    axes = np.column_stack([diam / 2 * (1 + elong), diam / 2 * (1 - elong)])
    angle = rng.uniform(0, np.pi, n_try)
    harmonics = rng.normal(0, 0.04, (n_try, 2))
    phases = rng.uniform(0, 2 * np.pi, (n_try, 2))
    has_nucleus = rng.random(n_try) < params.nucleus_fraction
    nucleus = np.column_stack([rng.uniform(0.4, 0.6, n_try), rng.uniform(0.3, 0.45, n_try)])
    has_process = rng.random(n_try) < params.process_fraction
    process_seeds = rng.integers(0, 2**31, n_try)
    soft = params.edge_softness_um / px

    keep: list[int] = []
    rows_f, rows_m = [], []
    visible = []
    placed = _Placed(params.soma_separation, diam / 2)
    for i in range(n_try):
        if not vessel_ok(vessel, *centers[i]):
            continue
        if not placed.clear(i, centers[i]):
            spot = placed.find_spot(i, rng, (-margin, h - 1 + margin), (-margin, w - 1 + margin),
                                    vessel)
            if spot is None:
                continue
            centers[i] = spot
        placed.add(i, centers[i])
        fp, mask = _render_cell(
            (h, w), centers[i], axes[i], angle[i], soft, harmonics[i], phases[i],
            nucleus[i] if has_nucleus[i] else None,
            np.random.default_rng(process_seeds[i]) if has_process[i] else None, px)
        if mask.nnz == 0:
            continue
        keep.append(i)
        rows_f.append(fp)
        rows_m.append(mask)
        visible.append(mask.nnz / (np.pi * axes[i, 0] * axes[i, 1]))
    if keep:
        footprints = sp.vstack(rows_f, format="csr").astype(np.float32)
        masks = sp.vstack(rows_m, format="csr").astype(bool)
    else:
        footprints = sp.csr_array((0, h * w), dtype=np.float32)
        masks = sp.csr_array((0, h * w), dtype=bool)
    idx = np.asarray(keep, dtype=int)
    return CellLayout(footprints=sp.csr_array(footprints), masks=sp.csr_array(masks),
                      centers=centers[idx], axes=axes[idx],
                      visible_fraction=np.clip(np.asarray(visible, float), 0, 1),
                      shape=(h, w))


def _render_cell(shape, center, axes, angle, soft, harmonics, phases, nucleus, proc_rng, px):
    """One cell's footprint and soma mask as sparse (1, H*W) rows."""
    h, w = shape
    reach = axes.max() + 3 * soft + 2
    if proc_rng is not None:
        reach += 40.0 / px
    y0, y1 = max(int(center[0] - reach), 0), min(int(center[0] + reach) + 2, h)
    x0, x1 = max(int(center[1] - reach), 0), min(int(center[1] + reach) + 2, w)
    empty = sp.csr_array((1, h * w), dtype=np.float32)
    if y0 >= y1 or x0 >= x1:
        return empty, empty.astype(bool)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dy, dx = yy - center[0], xx - center[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dy + s * dx, -s * dy + c * dx
    phi = np.arctan2(v, u)
    wobble = (1 + harmonics[0] * np.cos(2 * phi + phases[0])
              + harmonics[1] * np.cos(3 * phi + phases[1]))
    rho = np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2) / wobble
    mean_r = axes.mean()
    soma = 1.0 / (1.0 + np.exp(np.clip((rho - 1.0) * mean_r / soft, -50, 50)))
    mask = soma >= SOMA_THRESHOLD
    fp = soma.copy()
    if nucleus is not None:
        size, depth = nucleus
        nuc = 1.0 / (1.0 + np.exp(np.clip((rho - size) * mean_r / soft, -50, 50)))
        fp = fp * (1.0 - depth * nuc)
    if proc_rng is not None:
        fp = np.maximum(fp, _processes(yy, xx, center, mean_r, proc_rng, px))
    fp = np.where(fp >= 0.02, fp, 0.0)
    return _to_row(fp, (y0, y1, x0, x1), shape), _to_row(mask, (y0, y1, x0, x1), shape)


def _processes(yy, xx, center, radius, rng, px) -> np.ndarray:
    """Faint, slowly curving dendrite-like lines leaving the soma (weights 0.1-0.3)."""
    out = np.zeros_like(yy)
    for _ in range(int(rng.integers(2, 5))):
        length = rng.uniform(15.0, 40.0) / px
        heading = rng.uniform(0, 2 * np.pi)
        turn = rng.normal(0, 0.03 * px)
        weight = rng.uniform(0.1, 0.3)
        steps = np.arange(0.0, length, 0.7)
        headings = heading + turn * steps
        py = center[0] + radius * np.sin(heading) + np.cumsum(0.7 * np.sin(headings))
        pxs = center[1] + radius * np.cos(heading) + np.cumsum(0.7 * np.cos(headings))
        taper = np.linspace(1.0, 0.3, steps.size)
        for yc, xc, t in zip(py, pxs, taper, strict=True):
            d2 = (yy - yc) ** 2 + (xx - xc) ** 2
            np.maximum(out, weight * t * np.exp(-d2 / 1.0), out=out)
    return out


def _to_row(patch: np.ndarray, box, shape) -> sp.csr_array:
    """Embed a local box of values into a sparse (1, H*W) row."""
    y0, _, x0, _ = box
    h, w = shape
    ys, xs = np.nonzero(patch)
    cols = (ys + y0) * w + (xs + x0)
    order = np.argsort(cols)
    data = patch[ys, xs][order]
    return sp.csr_array((data, cols[order], np.array([0, data.size])), shape=(1, h * w))
