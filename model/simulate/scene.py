"""A simulated imaging scene: cells, activity and background, rendered frame block by block.

Generative model (all arrays in the reference frame of the field of view)::

    cells[t]    = sum_k footprint_k * baseline_k * (1 + dff_k[t])
    occluded    = min(sum_k footprint_k * occlusion_k, 1)
    relative[t] = shift_t(vessel * bleach[t] * (neuropil[t] * (1 - occluded) + cells[t]))
    clean[t]    = offset + gain * photons * relative[t]                  # ADU, noise free
    movie[t]    = offset + gain * Poisson(photons * relative[t]) + N(0, read_noise^2)

``shift_t`` is the rigid bilinear shift of :func:`model.simulate.background.apply_shifts`
(identity when ``motion_um == 0``). The detector noise of frames ``[64 i, 64 (i + 1))`` comes
from generators seeded with ``(seed, i, part)``, so the bytes never depend on threads or order.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from model.simulate.activity import Activity, simulate_activity
from model.simulate.background import Background, apply_shifts, make_background, make_vessels
from model.simulate.cells import CellLayout, place_cells
from model.simulate.params import SimulationParams

#: Frames per noise chunk; the detector noise of each chunk has its own seeded generator.
CHUNK_FRAMES = 64
#: Independently seeded parts of each chunk, drawn in parallel.
NOISE_PARTS = 2
_NOISE_KEY = 7919


@dataclass(frozen=True)
class Scene:
    """Every random choice of a simulated movie except the detector noise.

    Attributes
    ----------
    params : SimulationParams
    cells : CellLayout
    activity : Activity
    baselines : ndarray, shape (K,), float32
        Resting soma brightness relative to the neuropil mean.
    background : Background
    occlusion : ndarray, shape (K,), float32
        Fraction of the neuropil's light each soma displaces (``soma_occlusion``).
    """

    params: SimulationParams
    cells: CellLayout
    activity: Activity
    baselines: np.ndarray
    background: Background
    occlusion: np.ndarray | None = None

    @classmethod
    def build(cls, params: SimulationParams) -> Scene:
        """Draw the scene of ``params`` (deterministic in ``params.seed``)."""
        seeds = np.random.SeedSequence(params.seed).spawn(6)  # the first 5 as before 6 existed
        rngs = [np.random.default_rng(s) for s in seeds]
        vessel = make_vessels(params, rngs[0])
        cells = place_cells(params, rngs[1], vessel)
        activity = simulate_activity(cells.count, params, rngs[2])
        baselines = rngs[3].uniform(*params.baseline, cells.count).astype(np.float32)
        population = activity.dff.mean(axis=0) if cells.count else None
        background = make_background(params, rngs[4], population, vessel)
        occlusion = (rngs[5].uniform(*params.soma_occlusion, cells.count).astype(np.float32)
                     if params.soma_occlusion[1] > 0 else None)
        return cls(params, cells, activity, baselines, background, occlusion)

    @functools.cached_property
    def occluded(self) -> np.ndarray | None:
        """``(H, W)``: the share of the neuropil's light the somata displace (None: none)."""
        if self.occlusion is None or self.cells.count == 0:
            return None
        _, h, w = self.shape
        share = self.cells.footprints.T @ self.occlusion
        return np.minimum(share, 1.0).astype(np.float32).reshape(h, w)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Movie shape (T, H, W)."""
        return self.params.frames, self.params.height, self.params.width

    def cell_fluorescence(self, t0: int, t1: int) -> np.ndarray:
        """Sum over cells of ``footprint_k * baseline_k * (1 + dff_k[t])``, shape (t, H, W)."""
        values = self.baselines[:, None] * (1.0 + self.activity.dff[:, t0:t1])
        return self._render(values, t0, t1)

    def cell_signal(self, t0: int, t1: int) -> np.ndarray:
        """Activity part only: ``sum_k footprint_k * baseline_k * dff_k[t]``, shape (t, H, W).

        This is the denoising target (no rest fluorescence, no background, no motion).
        """
        values = self.baselines[:, None] * self.activity.dff[:, t0:t1]
        return self._render(values, t0, t1)

    def _render(self, values: np.ndarray, t0: int, t1: int) -> np.ndarray:
        _, h, w = self.shape
        if self.cells.count == 0:
            return np.zeros((t1 - t0, h, w), np.float32)
        out = self.cells.footprints.T @ values.astype(np.float32)
        return np.ascontiguousarray(out.T, dtype=np.float32).reshape(t1 - t0, h, w)

    def relative(self, t0: int, t1: int) -> np.ndarray:
        """Noise-free brightness relative to the neuropil mean, after motion, (t, H, W)."""
        bg = self.background
        frames = bg.neuropil(t0, t1, self.params.neuropil_fluctuation)
        if self.occluded is not None:
            frames *= 1.0 - self.occluded
        frames += self.cell_fluorescence(t0, t1)
        frames *= bg.vessel
        frames *= bg.bleach[t0:t1, None, None]
        return apply_shifts(frames, bg.shifts[t0:t1])

    def clean(self, t0: int, t1: int) -> np.ndarray:
        """Expected detector output in ADU of frames ``t0:t1``, float32 (T, H, W)."""
        p = self.params
        scale = np.float32(p.gain * p.photons)
        return self.relative(t0, t1) * scale + np.float32(p.offset)

    def iter_chunks(self, *, with_clean: bool = False
                    ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """Yield ``(t0, movie, clean)`` per block of :data:`CHUNK_FRAMES` frames.

        ``movie`` has the params' dtype; ``clean`` is float32 ADU (``None`` unless asked).
        """
        for t0 in range(0, self.params.frames, CHUNK_FRAMES):
            t1 = min(t0 + CHUNK_FRAMES, self.params.frames)
            rel = self.relative(t0, t1)
            movie = self._detect(rel, t0 // CHUNK_FRAMES)
            clean = None
            if with_clean:
                p = self.params
                clean = rel * np.float32(p.gain * p.photons) + np.float32(p.offset)
            yield t0, movie, clean

    def _detect(self, relative: np.ndarray, chunk: int) -> np.ndarray:
        """Detector output of one chunk: shot noise, gain, offset, read noise, dtype.

        The chunk's frames are split in :data:`NOISE_PARTS` fixed parts, each with its own
        generator seeded by ``(seed, chunk, part)``, drawn on parallel threads.
        """
        out = np.empty(relative.shape, np.uint16 if self.params.dtype == "uint16" else np.float32)
        bounds = np.linspace(0, relative.shape[0], NOISE_PARTS + 1).astype(int)
        jobs = [(relative[a:b], out[a:b], chunk, part)
                for part, (a, b) in enumerate(itertools.pairwise(bounds)) if b > a]
        list(_pool().map(lambda job: self._detect_part(*job), jobs))
        return out

    def _detect_part(self, relative: np.ndarray, out: np.ndarray, chunk: int, part: int) -> None:
        p = self.params
        if p.noise:
            seq = np.random.SeedSequence(p.seed, spawn_key=(_NOISE_KEY, chunk, part))
            rng = np.random.default_rng(seq)
            adu = rng.poisson(relative * np.float32(p.photons)).astype(np.float32)
            adu *= np.float32(p.gain)
            adu += np.float32(p.offset)
            if p.read_noise > 0:
                noise = rng.standard_normal(relative.shape, dtype=np.float32)
                noise *= np.float32(p.read_noise)
                adu += noise
        else:
            adu = relative * np.float32(p.gain * p.photons) + np.float32(p.offset)
        if p.dtype == "uint16":
            np.rint(adu, out=adu)
            np.clip(adu, 0, 65535, out=adu)
        out[...] = adu


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """Threads for the detector noise (numpy's generators release the GIL)."""
    return ThreadPoolExecutor(max_workers=NOISE_PARTS, thread_name_prefix="caimx-noise")
