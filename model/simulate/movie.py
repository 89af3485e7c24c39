"""In-memory simulation: :func:`simulate` returns the movie and all of its ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.simulate.params import SimulationParams
from model.simulate.scene import Scene


@dataclass(frozen=True)
class GroundTruth:
    """What a simulated movie is made of (everything but the noisy movie itself).

    Attributes
    ----------
    footprints : ndarray, shape (K, H, W), float32
        Spatial weights in [0, 1]; ``footprints >= 0.5`` is the soma.
    masks : ndarray, shape (K, H, W), bool
        Soma masks.
    traces : ndarray, shape (K, T), float32
        Noise-free dF/F of each cell (0 at rest).
    spikes : ndarray, shape (K, T), uint16
        Spikes per frame.
    baselines : ndarray, shape (K,), float32
        Resting soma brightness relative to the neuropil mean.
    silent : ndarray, shape (K,), bool
        Cells that never spike.
    centers : ndarray, shape (K, 2), float32
        Soma centres (y, x) in pixels.
    visible_fraction : ndarray, shape (K,), float32
        Fraction of each soma inside the field of view.
    components : dict of str to ndarray
        ``neuropil_mean`` (H, W), ``neuropil_fields`` (J, H, W), ``neuropil_traces`` (J, T),
        ``vessel`` (H, W), ``bleach`` (T,), ``shifts`` (T, 2): see ``docs/simulation.md``.
    params : SimulationParams
    clean : ndarray, shape (T, H, W), float32, or None
        Expected detector output in ADU (the movie before noise), when kept.
    """

    footprints: np.ndarray
    masks: np.ndarray
    traces: np.ndarray
    spikes: np.ndarray
    baselines: np.ndarray
    silent: np.ndarray
    centers: np.ndarray
    visible_fraction: np.ndarray
    components: dict[str, np.ndarray]
    params: SimulationParams
    clean: np.ndarray | None = None

    @classmethod
    def from_scene(cls, scene: Scene, clean: np.ndarray | None = None) -> GroundTruth:
        """Collect the ground truth of a :class:`~model.simulate.scene.Scene`."""
        bg = scene.background
        return cls(
            footprints=scene.cells.dense_footprints(), masks=scene.cells.dense_masks(),
            traces=scene.activity.dff, spikes=scene.activity.spikes,
            baselines=scene.baselines, silent=scene.activity.silent,
            centers=scene.cells.centers.astype(np.float32),
            visible_fraction=scene.cells.visible_fraction.astype(np.float32),
            components={"neuropil_mean": bg.neuropil_mean, "neuropil_fields": bg.neuropil_fields,
                        "neuropil_traces": bg.neuropil_traces, "vessel": bg.vessel,
                        "bleach": bg.bleach, "shifts": bg.shifts},
            params=scene.params, clean=clean)

    @property
    def count(self) -> int:
        """Number of cells K."""
        return int(self.traces.shape[0])


@dataclass(frozen=True)
class SimulatedMovie:
    """A simulated movie with its ground truth.

    Attributes
    ----------
    movie : ndarray, shape (T, H, W), float32 or uint16
        Detector output in ADU.
    truth : GroundTruth
        Footprints, traces, spikes, components and (unless dropped) the clean movie.
    """

    movie: np.ndarray
    truth: GroundTruth

    @property
    def footprints(self) -> np.ndarray:
        """(K, H, W) float32 footprints."""
        return self.truth.footprints

    @property
    def traces(self) -> np.ndarray:
        """(K, T) float32 dF/F traces."""
        return self.truth.traces

    @property
    def spikes(self) -> np.ndarray:
        """(K, T) uint16 spikes per frame."""
        return self.truth.spikes

    @property
    def clean(self) -> np.ndarray | None:
        """(T, H, W) float32 movie before noise, in ADU."""
        return self.truth.clean

    @property
    def params(self) -> SimulationParams:
        """The parameters that made this movie."""
        return self.truth.params


def simulate(params: SimulationParams | None = None, *, keep_clean: bool = True
             ) -> SimulatedMovie:
    """Simulate a two-photon calcium-imaging movie with exact ground truth, in memory.

    Parameters
    ----------
    params : SimulationParams, optional
        Defaults to ``SimulationParams()`` (512 x 512 x 2000 frames at 30 Hz).
    keep_clean : bool
        Keep the noise-free movie (doubles the memory: T*H*W*4 bytes).

    Returns
    -------
    SimulatedMovie
        Identical, byte for byte, for identical ``params`` (seed included).

    Notes
    -----
    For movies larger than memory, stream them with :func:`model.simulate.write_simulation`.
    """
    params = params or SimulationParams()
    scene = Scene.build(params)
    t, h, w = scene.shape
    movie = np.empty((t, h, w), np.uint16 if params.dtype == "uint16" else np.float32)
    clean = np.empty((t, h, w), np.float32) if keep_clean else None
    for t0, chunk, clean_chunk in scene.iter_chunks(with_clean=keep_clean):
        movie[t0:t0 + chunk.shape[0]] = chunk
        if clean is not None:
            clean[t0:t0 + chunk.shape[0]] = clean_chunk
    return SimulatedMovie(movie=movie, truth=GroundTruth.from_scene(scene, clean))
