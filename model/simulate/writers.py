"""Simulated movies on disk (TIFF or Zarr) and the ground-truth file (``<name>.gt.npz``).

Ground-truth format (``numpy.savez_compressed``; every key documented in ``docs/simulation.md``):
``footprints`` (K, H, W) float32, ``masks`` (K, H, W) bool, ``traces`` (K, T) float32 dF/F,
``spikes`` (K, T) uint16, ``baselines`` (K,), ``silent`` (K,), ``centers`` (K, 2),
``visible_fraction`` (K,), the background components, ``params`` (JSON string), ``format``
(``"caimx-gt/1"``), and ``clean`` (T, H, W) float32 when kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import tifffile

from model.simulate.movie import GroundTruth
from model.simulate.params import SimulationParams
from model.simulate.scene import CHUNK_FRAMES, Scene

GT_FORMAT = "caimx-gt/1"
_COMPONENTS = ("neuropil_mean", "neuropil_fields", "neuropil_traces", "vessel", "bleach", "shifts")
_PER_CELL = ("footprints", "masks", "traces", "spikes", "baselines", "silent", "centers",
             "visible_fraction")


def ground_truth_path(movie_path: str | Path) -> Path:
    """Default ground-truth path of a movie: ``movie.tif`` -> ``movie.gt.npz``."""
    path = Path(movie_path)
    name = path.name
    for suffix in (".ome.tif", ".tiff", ".tif", ".zarr"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".gt.npz")


def save_ground_truth(path: str | Path, truth: GroundTruth, *, include_clean: bool = True) -> Path:
    """Write ``truth`` as a compressed ``.npz`` (format ``caimx-gt/1``); returns the path."""
    path = Path(path)
    arrays = {k: getattr(truth, k) for k in _PER_CELL}
    arrays.update({k: truth.components[k] for k in _COMPONENTS})
    if include_clean and truth.clean is not None:
        arrays["clean"] = truth.clean
    arrays["params"] = np.array(json.dumps(truth.params.to_dict()))
    arrays["format"] = np.array(GT_FORMAT)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_ground_truth(path: str | Path) -> GroundTruth:
    """Read a ground-truth file written by :func:`save_ground_truth`.

    Parameters
    ----------
    path : str or Path
        A ``.gt.npz`` file, or a movie path whose ``.gt.npz`` sits beside it.

    Returns
    -------
    GroundTruth
    """
    path = Path(path)
    if not path.name.endswith(".npz"):
        path = ground_truth_path(path)
    with np.load(path, allow_pickle=False) as data:
        if "format" not in data or str(data["format"]) != GT_FORMAT:
            raise ValueError(f"{path} is not a caimx ground-truth file ({GT_FORMAT})")
        fields = {k: data[k] for k in _PER_CELL}
        components = {k: data[k] for k in _COMPONENTS}
        clean = data.get("clean")
        params = SimulationParams.from_dict(json.loads(str(data["params"])))
    return GroundTruth(**fields, components=components, params=params, clean=clean)


def write_simulation(params: SimulationParams, path: str | Path, *,
                     truth_path: str | Path | None = None, clean_path: str | Path | None = None,
                     progress: Callable[[int, int], None] | None = None) -> GroundTruth:
    """Simulate a movie straight to disk, block by block (memory ~ 64 frames at a time).

    Parameters
    ----------
    params : SimulationParams
    path : str or Path
        ``*.tif``/``*.tiff`` (ImageJ hyperstack with the frame interval) or ``*.zarr``
        (Zarr v3 array, chunks (64, H, W), attribute ``fps``). BigTIFF above 4 GB.
    truth_path : str or Path, optional
        Ground-truth file; default :func:`ground_truth_path` of ``path``.
    clean_path : str or Path, optional
        Also write the noise-free movie (float32 ADU) there, same format rules as ``path``.
    progress : callable, optional
        ``progress(frames_done, frames_total)`` after each block.

    Returns
    -------
    GroundTruth
        Without ``clean`` (it is on disk if ``clean_path`` was given).
    """
    scene = Scene.build(params)
    movie_dtype = np.uint16 if params.dtype == "uint16" else np.float32

    def movie_blocks() -> Iterator[np.ndarray]:
        for t0, movie, _ in scene.iter_chunks():
            yield movie
            if progress is not None:
                progress(t0 + movie.shape[0], params.frames)

    _write_blocks(Path(path), movie_blocks(), scene.shape, movie_dtype, params.fps)
    if clean_path is not None:
        blocks = (scene.clean(t0, min(t0 + CHUNK_FRAMES, params.frames))
                  for t0 in range(0, params.frames, CHUNK_FRAMES))
        _write_blocks(Path(clean_path), blocks, scene.shape, np.float32, params.fps)
    truth = GroundTruth.from_scene(scene)
    save_ground_truth(truth_path or ground_truth_path(path), truth)
    return truth


def _write_blocks(path: Path, blocks: Iterable[np.ndarray], shape: tuple[int, int, int],
                  dtype: np.dtype, fps: float) -> None:
    """Stream (t, H, W) blocks into a TIFF (ImageJ, or BigTIFF above 4 GB) or a Zarr array."""
    name = path.name.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith((".tif", ".tiff")):
        big = int(np.prod(shape)) * np.dtype(dtype).itemsize >= 2**32 - 2**25
        pages = (frame for block in blocks for frame in block)
        meta = {"axes": "TYX", "finterval": 1.0 / fps} if not big else {"axes": "TYX", "fps": fps}
        with tifffile.TiffWriter(path, bigtiff=big, imagej=not big) as tif:
            tif.write(pages, shape=shape, dtype=dtype, metadata=meta)
    elif name.endswith(".zarr"):
        import zarr

        arr = zarr.create_array(store=str(path), shape=shape, dtype=dtype,
                                chunks=(CHUNK_FRAMES, *shape[1:]), overwrite=True,
                                attributes={"fps": fps})
        t0 = 0
        for block in blocks:
            arr[t0:t0 + block.shape[0]] = block
            t0 += block.shape[0]
    else:
        raise ValueError(f"cannot write {path}: use a .tif, .tiff or .zarr path")


def write_movie(path: str | Path, movie: np.ndarray, *, fps: float) -> Path:
    """Write an in-memory (T, H, W) movie as TIFF or Zarr (same layout as above)."""
    path = Path(path)
    blocks = (movie[t0:t0 + CHUNK_FRAMES] for t0 in range(0, movie.shape[0], CHUNK_FRAMES))
    _write_blocks(path, blocks, movie.shape, movie.dtype, fps)
    return path
