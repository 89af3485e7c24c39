"""Simulated training patches, scaled exactly as the inference engine scales real ones.

Each sample is a small simulated scene (the patch plus ``margin`` pixels on every side, so cells
are cut by the patch border) of T frames. Like :mod:`model.inference.patches`, the scene is
mapped to [0, 1] by its (1, 99.9) percentiles, smoothed per frame (``spatial_sigma``), the patch
is cut out and scaled per ``input_scaling`` (default per-patch min-max with a floor on its range,
``min_patch_range``; ``"movie-range"`` is the fixed-level mapping the engine uses for the
published weights).

Sample ``i`` of a stream with seed ``s`` depends only on ``(s, i)``: any order, any worker count,
and a resumed run see the same patches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from model.inference.params import ScalingParams
from model.inference.scaling import MovieRange, scale_block, scale_patches
from model.simulate import Scene, SimulationParams
from model.training.targets import PatchTargets, build_targets, select_targets

KINDS = ("active", "empty", "silent")
#: Draws of an "active" patch until one has a target neuron (then it is kept as it is).
ACTIVE_TRIES = 4
_SCALING = ScalingParams()


@dataclass(frozen=True)
class TrainingData:
    """How training patches are drawn. Ranges are sampled uniformly (log-uniform for photons).

    ``base`` fixes what the user's microscope fixes (indicator, fps, pixel size, soma sizes);
    the rest is varied per patch so the network sees dim and bright cells, every SNR, empty and
    silent-only patches.
    """

    base: SimulationParams = field(default_factory=lambda: SimulationParams(
        height=48, width=48, frames=100, vessels=1, bleach_fraction=0.02))
    margin: int = 8
    photons: tuple[float, float] = (0.5, 30.0)
    density_per_mm2: tuple[float, float] = (1000.0, 5000.0)
    silent_fraction: tuple[float, float] = (0.0, 0.5)
    kind_probs: tuple[float, float, float] = (0.7, 0.15, 0.15)
    soma_scale: tuple[float, float] = (0.8, 1.25)
    motion_um: tuple[float, float] = (0.0, 0.3)
    spatial_sigma: float = _SCALING.spatial_sigma
    min_patch_range: float = _SCALING.min_patch_range
    input_scaling: str = "minmax-per-patch"

    def with_(self, **changes) -> TrainingData:
        """A copy with some fields changed; fields of base only (``indicator``, ``fps``,
        ``pixel_size_um``, ...) change ``base``."""
        own = {f.name for f in dataclasses.fields(self)}
        base_keys = {f.name for f in dataclasses.fields(SimulationParams)} - own
        base = {k: changes.pop(k) for k in list(changes) if k in base_keys}
        out = dataclasses.replace(self, **changes)
        return dataclasses.replace(out, base=out.base.replace(**base)) if base else out

    def to_dict(self) -> dict:
        """JSON-able description (for checkpoints and model cards)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "base"}
        d["base"] = self.base.to_dict()
        return d


@dataclass(frozen=True)
class PatchSample:
    """One training sample.

    Attributes
    ----------
    movie : ndarray, shape (T, H, W), float32
        Network input in [0, 1].
    targets : PatchTargets
    kind : str
        ``"active"``, ``"empty"`` (no cells) or ``"silent"`` (only silent cells).
    photons : float
        Photons per pixel per frame at the neuropil mean (the SNR of this patch).
    """

    movie: np.ndarray
    targets: PatchTargets
    kind: str
    photons: float


def sample_params(data: TrainingData, frames: int, size: tuple[int, int], seed: int,
                  rng: np.random.Generator, kind: str, photons: float | None = None
                  ) -> SimulationParams:
    """Draw the simulation parameters of one patch of ``kind`` (``photons`` fixed if given)."""
    lo, hi = np.log(data.photons[0]), np.log(data.photons[1])
    drawn = float(np.exp(rng.uniform(lo, hi)))
    scale = rng.uniform(*data.soma_scale)
    diam = tuple(d * scale for d in data.base.soma_diameter_um)
    density = np.exp(rng.uniform(*np.log(data.density_per_mm2)))
    silent = rng.uniform(*data.silent_fraction)
    if kind == "empty":
        density = 0.0
    elif kind == "silent":
        silent = 1.0
    return data.base.replace(
        height=size[0] + 2 * data.margin, width=size[1] + 2 * data.margin, frames=frames,
        photons=drawn if photons is None else float(photons), soma_diameter_um=diam,
        density_per_mm2=float(density), silent_fraction=float(silent),
        motion_um=float(rng.uniform(*data.motion_um)), noise=True, dtype="float32", seed=seed)


def make_sample(data: TrainingData, index: int, *, seed: int, frames: int,
                size: tuple[int, int], n_channels: int, kind: str | None = None,
                photons: float | None = None) -> PatchSample:
    """Simulate sample ``index`` of the stream ``seed``.

    Parameters
    ----------
    data : TrainingData
    index, seed : int
        The sample is a pure function of ``(seed, index)`` (and the other arguments).
    frames, size, n_channels : int, (int, int), int
        T, (H, W) and N of the network.
    kind : str, optional
        Force ``"active"``, ``"empty"`` or ``"silent"``; default: drawn with ``kind_probs``.
        An ``"active"`` patch is redrawn (up to :data:`ACTIVE_TRIES` times) until it holds a
        target neuron.
    photons : float, optional
        Fix the SNR (photons per pixel per frame at the neuropil mean) instead of drawing it.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    kind = kind or str(rng.choice(KINDS, p=np.asarray(data.kind_probs) / sum(data.kind_probs)))
    for _ in range(ACTIVE_TRIES):
        sample = _draw(data, rng, kind, frames, size, n_channels, photons)
        if kind != "active" or sample.targets.cells.size:
            break
    return sample


def _draw(data: TrainingData, rng: np.random.Generator, kind: str, frames: int,
          size: tuple[int, int], n_channels: int, photons: float | None) -> PatchSample:
    params = sample_params(data, frames, size, int(rng.integers(2**31)), rng, kind, photons)
    scene = Scene.build(params)
    movie = _whole(scene)
    m = data.margin
    y0, x0 = (int(v) for v in rng.integers(0, 2 * m + 1, 2))
    crop = (slice(y0, y0 + size[0]), slice(x0, x0 + size[1]))
    patch = _engine_scaling(movie, crop, data)
    soma = scene.cells.dense_masks()[:, crop[0], crop[1]]
    dff = scene.activity.dff
    cells = select_targets(soma.sum(axis=(1, 2)), np.pi * scene.cells.axes.prod(axis=1), dff,
                           max_neurons=n_channels)
    signal = scene.cell_signal(0, frames)[:, crop[0], crop[1]]
    targets = build_targets(cells, soma, dff, signal, n_channels)
    return PatchSample(movie=patch, targets=targets, kind=kind, photons=params.photons)


def _whole(scene: Scene) -> np.ndarray:
    return np.concatenate([chunk for _, chunk, _ in scene.iter_chunks()])


def _engine_scaling(movie: np.ndarray, crop: tuple[slice, slice], data: TrainingData
                    ) -> np.ndarray:
    """Movie-range scaling, smoothing, crop and the model's input scaling, as the engine does."""
    low, high = np.percentile(movie, [_SCALING.low_percentile, _SCALING.high_percentile])
    if not high > low:
        low, high = float(movie.min()), float(movie.min()) + 1.0
    scaled = scale_block(movie, MovieRange(float(low), float(high)))
    if data.spatial_sigma > 0:
        scaled = ndimage.gaussian_filter(scaled, (0, data.spatial_sigma, data.spatial_sigma),
                                         mode="nearest")
    patch = np.ascontiguousarray(scaled[:, crop[0], crop[1]])
    params = dataclasses.replace(_SCALING, min_patch_range=data.min_patch_range)
    return scale_patches(patch[None], mode=data.input_scaling, params=params)[0][0]


def stack_batch(samples: list[PatchSample]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Network input ``(B, T, H, W, 1)`` and targets for :func:`model.losses.published_losses`.

    Targets: ``clean`` (B, T, H, W), ``attention`` (B, T, H, W), ``masks`` (B, N, H, W),
    ``traces`` (B, T, N); all float32.
    """
    x = np.stack([s.movie for s in samples])[..., None].astype(np.float32)
    y = {key: np.stack([getattr(s.targets, key) for s in samples]).astype(np.float32)
         for key in ("clean", "attention", "masks", "traces")}
    return x, y
