"""The engine: prepare a plan, run chunks, finalize into one result.

One process (``caimx process``, a notebook) calls :func:`process_movie`. A queue of workers calls
:func:`prepare` once, :func:`run_chunk` once per chunk (any order, any worker, retries harmless) and
:func:`finalize` once at the end; finalize reads only the chunks' partial results, never the movie.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from model.inference import motion, patches, resample
from model.inference.chunks import ChunkResult, chunk_done, read_chunk, write_chunk
from model.inference.decide import Candidates, patch_candidates
from model.inference.extract import NeuropilRing, extract_fluorescence
from model.inference.finalize import finalize_result
from model.inference.params import DecideParams, InferenceParams
from model.inference.plan import Plan, check_movie, make_plan
from model.inference.run import Predictor, card_geometry, card_input_scaling, predict_batches
from model.inference.scaling import movie_range
from model.inference.source import as_movie, movie_name, movie_sha256

PLAN_FILE = "plan.json"
REFERENCE_FILE = "motion_reference.npy"
DEFAULT_PARAMS = InferenceParams()  # frozen, so sharing one default is safe


class InferenceCancelled(RuntimeError):
    """Raised when ``should_cancel()`` returned true between chunks."""


@dataclass(frozen=True)
class ResultSummary:
    """What :func:`process_movie` did."""

    output: str
    n_neurons: int
    movie_shape: tuple[int, int, int]
    n_chunks: int
    n_candidates: int
    decisions: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def frames_per_s(self) -> float:
        total = sum(self.seconds.values())
        return self.movie_shape[0] / total if total > 0 else float("inf")


def prepare(movie: Any, card: Any, *, work_dir: str | Path,
            params: InferenceParams = DEFAULT_PARAMS) -> Plan:
    """Measure the movie's range (and motion reference), build the plan, write both to ``work_dir``.

    Parameters
    ----------
    movie : MovieReader or ndarray, shape (T, H, W)
    card : ModelCard
        Gives the patch size ``(T, H, W)``, ``N``, ``trace_offset`` and ``input_scaling`` (an
        unknown scaling raises ``ValueError`` here, before any work).
    work_dir : path
        Folder shared by chunks and finalize.
    """
    movie = as_movie(movie)
    check_movie(tuple(movie.shape), params.plan)
    patch, _, offset = card_geometry(card)
    card_input_scaling(card)
    how = resample.choose(movie, card, params.resample)
    seen = resample.network_movie(movie, how.temporal_bin, how.spatial_scale)
    if how.active:
        try:
            check_movie(tuple(seen.shape), params.plan)
        except ValueError as exc:
            raise ValueError(f"binned by {how.temporal_bin} and resized by "
                             f"{how.spatial_scale:g}, {exc}") from exc
    rng = movie_range(seen, params=params.scaling)
    plan = make_plan(tuple(seen.shape), patch=patch, trace_offset=offset, params=params.plan,
                     movie_low=rng.low, movie_high=rng.high, all_params=params.to_dict())
    plan = dataclasses.replace(
        plan, source_shape=tuple(movie.shape) if how.active else None,
        temporal_bin=how.temporal_bin, spatial_scale=how.spatial_scale, resample=how.record)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if params.motion.enabled:
        np.save(work / REFERENCE_FILE, motion.reference_image(seen, params=params.motion))
    (work / PLAN_FILE).write_text(plan.to_json(), encoding="utf-8")
    return plan


def load_plan(work_dir: str | Path) -> Plan:
    return Plan.from_json((Path(work_dir) / PLAN_FILE).read_text(encoding="utf-8"))


def _tile_images(block: patches.Block, tiles, plan: Plan, window: int, attention_sum: np.ndarray):
    w = plan.windows[window]
    size = plan.patch[1]
    lo = w.own_first - w.start + plan.trace_offset
    hi = w.own_stop - w.start + plan.trace_offset
    out = np.zeros((len(tiles), 3, size, size), np.float32)
    raw = patches.cut_patches(block, tiles, size)[:, lo:hi]
    out[:, 0] = raw.sum(axis=1)
    out[:, 1] = raw.max(axis=1) if hi > lo else 0.0
    out[:, 2] = attention_sum
    return out, (lo, hi)


@dataclass(frozen=True)
class ChunkInput:
    """What a chunk feeds the network: its block of frames and the scaled patches cut from it."""

    chunk_id: str
    window: int
    tiles: tuple[int, ...]
    block: patches.Block
    scaled: np.ndarray
    span: np.ndarray


def read_chunk_input(movie: Any, plan: Plan, chunk_id: str, card: Any, *,
                     reference: np.ndarray | None = None) -> ChunkInput:
    """Read, motion-correct and cut one chunk's patches (CPU work only; no network)."""
    movie = resample.network_movie(as_movie(movie), plan.temporal_bin, plan.spatial_scale)
    params = InferenceParams.from_dict(plan.params)
    chunk = plan.chunk(chunk_id)
    tiles = tuple(plan.tiles[i] for i in chunk.tiles)
    block = patches.read_block(movie, plan, chunk.window, tiles, reference=reference,
                               motion_params=params.motion, sigma=params.scaling.spatial_sigma)
    scaled, span = patches.network_patches(block, tiles, plan.patch[1],
                                           mode=card_input_scaling(card), scaling=params.scaling)
    return ChunkInput(chunk_id=chunk_id, window=chunk.window, tiles=tuple(chunk.tiles),
                      block=block, scaled=scaled, span=span)


def run_chunk_input(chunk: ChunkInput, predictor: Predictor, plan: Plan) -> ChunkResult:
    """Run a chunk's patches through the network and extract its candidates."""
    params = InferenceParams.from_dict(plan.params)
    tiles = [plan.tiles[i] for i in chunk.tiles]
    size = plan.patch[1]
    block, span = chunk.block, chunk.span
    w = plan.windows[chunk.window]
    lo = w.own_first - w.start + plan.trace_offset
    hi = w.own_stop - w.start + plan.trace_offset
    attention = np.zeros((len(tiles), size, size), np.float32)
    denoised = (np.zeros((len(tiles), hi - lo, size, size), np.float32)
                if params.write_denoised else None)
    collect_params = DecideParams(mask_threshold=params.decide.mask_threshold, min_area=1,
                                  max_area=params.decide.max_area)
    parts: list[Candidates] = []
    for first, out in predict_batches(predictor, chunk.scaled, batch_size=params.batch_size):
        n = np.asarray(out.traces).shape[0]
        attention[first:first + n] = np.asarray(out.attention)[:, lo:hi].sum(axis=1)
        if denoised is not None:
            denoised[first:first + n] = (np.asarray(out.denoised)[:, lo:hi]
                                         * span[first:first + n, None, None, None])
        parts.append(patch_candidates(
            out, first, tiles, block.data, origin=(block.y0, block.x0),
            frame_shape=plan.movie_shape[1:], span=span, offset=plan.trace_offset,
            params=collect_params))
    images, _ = _tile_images(block, tiles, plan, chunk.window, attention)
    return ChunkResult(chunk_id=chunk.chunk_id, window=chunk.window, tiles=chunk.tiles,
                       candidates=Candidates.concat(parts, plan.trace_length), images=images,
                       denoised=denoised)


def compute_chunk(movie: Any, predictor: Predictor, plan: Plan, chunk_id: str, *,
                  reference: np.ndarray | None = None) -> ChunkResult:
    """Run one chunk through the network and extract its candidates (nothing written)."""
    chunk = read_chunk_input(movie, plan, chunk_id, predictor.card, reference=reference)
    return run_chunk_input(chunk, predictor, plan)


def run_chunk(movie: Any, predictor: Predictor, plan: Plan, chunk_id: str, *,
              work_dir: str | Path) -> Path:
    """Compute one chunk and write its partial result to ``work_dir`` (idempotent).

    Returns the chunk's folder.
    """
    movie = as_movie(movie)
    if tuple(movie.shape) != plan.frames_shape:
        raise ValueError(f"movie shape {tuple(movie.shape)} does not match the plan "
                         f"{plan.frames_shape}")
    ref_path = Path(work_dir) / REFERENCE_FILE
    reference = np.load(ref_path) if plan.params.get("motion", {}).get("enabled") else None
    if reference is None and plan.params.get("motion", {}).get("enabled"):
        raise FileNotFoundError(f"motion reference missing: {ref_path}")
    result = compute_chunk(movie, predictor, plan, chunk_id, reference=reference)
    return write_chunk(work_dir, result)


def finalize(plan: Plan, *, work_dir: str | Path, output: str | Path,
             attrs: dict[str, Any] | None = None,
             params: InferenceParams | None = None, movie: Any = None) -> ResultSummary:
    """Stitch all chunk results in ``work_dir`` into the result group at ``output``.

    ``params`` may override the decision and stitching thresholds of the plan (to study them without
    re-running the network); scaling, plan and motion parameters always come from the plan. With
    ``movie``, each neuron's fluorescence and neuropil are then read from it
    (:func:`add_fluorescence`).
    """
    missing = [c.id for c in plan.chunks if not chunk_done(work_dir, c.id)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} chunk(s) have no result yet, e.g. {missing[0]}")
    base = InferenceParams.from_dict(plan.params)
    if params is not None:
        base = dataclasses.replace(base, decide=params.decide, stitch=params.stitch)
    t0 = time.perf_counter()
    info = finalize_result(plan, lambda cid: read_chunk(work_dir, cid), output=output,
                           params=base, attrs=dict(attrs or {}))
    seconds = {"finalize": time.perf_counter() - t0}
    if movie is not None:
        t0 = time.perf_counter()
        add_fluorescence(movie, plan, work_dir=work_dir, output=output, params=base)
        seconds["fluorescence"] = time.perf_counter() - t0
    return ResultSummary(output=str(output), n_neurons=info["n_neurons"],
                         movie_shape=plan.frames_shape, n_chunks=len(plan.chunks),
                         n_candidates=info["n_candidates"], decisions=info["decisions"],
                         seconds=seconds)


def add_fluorescence(movie: Any, plan: Plan, *, work_dir: str | Path, output: str | Path,
                     params: InferenceParams) -> None:  # fmt: skip
    """Read each neuron's fluorescence and neuropil from ``movie`` into the result at ``output``,
    motion-corrected against the reference the network's input was corrected against; then, when
    ``oasis-deconv`` is installed, its denoised calcium and spikes (:mod:`.deconvolve`)."""
    from model.inference import deconvolve
    from model.results import write_deconvolved, write_fluorescence

    group = zarr.open_group(str(output), mode="r")
    footprints = group["footprints"]  # read one neuron at a time
    reference = None
    if params.motion.enabled:
        reference = np.load(Path(work_dir) / REFERENCE_FILE)
        if reference.shape != tuple(plan.frames_shape[1:]):  # made on rescaled frames
            reference = resample.image_to_movie(reference, tuple(plan.frames_shape[1:]))
    ring = NeuropilRing()
    fluorescence, neuropil = extract_fluorescence(movie, footprints, reference=reference,
                                                  motion_params=params.motion, ring=ring,
                                                  threads=params.read_ahead)
    write_fluorescence(output, fluorescence, neuropil,
                       {**ring.to_dict(), "weights": "footprint",
                        "motion_corrected": reference is not None})  # fmt: skip
    if deconvolve.available():
        write_deconvolved(output, *deconvolve.deconvolve_traces(
            fluorescence - ring.coefficient * neuropil))


def software_version() -> str:
    """The installed caimx version (``unknown`` when run from a bare checkout)."""
    try:
        return importlib.metadata.version("caimx")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def result_attrs(movie: Any, card: Any, params: InferenceParams) -> dict[str, Any]:
    """Group attributes: model, input (name, sha256, shape, dtype, fps, the plane and channel read
    from a multi-plane file), software, parameters."""
    card_dict = card.to_dict() if hasattr(card, "to_dict") else dict(card)
    return {
        "model": {"name": card_dict.get("name"), "version": card_dict.get("version"),
                  "card": card_dict},
        "input": {"name": movie_name(movie), "sha256": movie_sha256(movie),
                  "shape": list(movie.shape), "dtype": str(getattr(movie, "dtype", "")),
                  "fps": getattr(movie, "fps", None),
                  "layout": getattr(movie, "layout", None) or None},
        "software": {"caimx": software_version()},
        "parameters": params.to_dict(),
    }


def _run_chunks(movie: Any, predictor: Predictor, plan: Plan, work: Path, *,
                reference: np.ndarray | None, read_ahead: int,
                progress: Callable[[int, int], None] | None,
                should_cancel: Callable[[], bool] | None) -> None:
    """Every chunk in order. ``read_ahead`` threads read and motion-correct the next chunks while
    the network runs on the current one (each chunk read ahead holds its patches in memory)."""
    ids = [c.id for c in plan.chunks]

    def read(chunk_id: str) -> ChunkInput:
        return read_chunk_input(movie, plan, chunk_id, predictor.card, reference=reference)

    with ThreadPoolExecutor(max_workers=max(read_ahead, 1),
                            thread_name_prefix="caimx-read") as reader:
        pending: deque[Future[ChunkInput]] = deque()
        for done, chunk_id in enumerate(ids, start=1):
            if should_cancel is not None and should_cancel():
                for future in pending:
                    future.cancel()
                raise InferenceCancelled(f"cancelled after {done - 1} of {len(ids)} chunks")
            while read_ahead and len(pending) <= read_ahead and done - 1 + len(pending) < len(ids):
                pending.append(reader.submit(read, ids[done - 1 + len(pending)]))
            current = pending.popleft().result() if pending else read(chunk_id)
            write_chunk(work, run_chunk_input(current, predictor, plan))
            del current
            if progress is not None:
                progress(done, len(ids))


def process_movie(movie: Any, predictor: Predictor, *, output: str | Path,
                  params: InferenceParams = DEFAULT_PARAMS,
                  progress: Callable[[int, int], None] | None = None,
                  should_cancel: Callable[[], bool] | None = None,
                  work_dir: str | Path | None = None) -> ResultSummary:
    """Find neurons and their traces in a whole movie and write the result group.

    Parameters
    ----------
    movie : MovieReader or array-like, shape (T, H, W)
        Read lazily, one window of frames at a time.
    predictor : Predictor
        E.g. ``model.serving.SavedModelPredictor``.
    output : path
        Folder of the Zarr v3 result group (replaced if present).
    params : InferenceParams
    progress : callable(done, total), optional
        Called after each chunk.
    should_cancel : callable() -> bool, optional
        Checked before each chunk; true raises :class:`InferenceCancelled`.
    work_dir : path, optional
        Where chunk results go; default ``<output>.work`` next to the output, removed on success.

    Returns
    -------
    ResultSummary
    """
    movie = as_movie(movie)
    output = Path(output)
    work = Path(work_dir) if work_dir is not None else output.with_name(output.name + ".work")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    plan = prepare(movie, predictor.card, work_dir=work, params=params)
    reference = np.load(work / REFERENCE_FILE) if params.motion.enabled else None
    timings["prepare"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _run_chunks(movie, predictor, plan, work, reference=reference, read_ahead=params.read_ahead,
                progress=progress, should_cancel=should_cancel)
    timings["chunks"] = time.perf_counter() - t0
    summary = finalize(plan, work_dir=work, output=output,
                       attrs=result_attrs(movie, predictor.card, params), movie=movie)
    timings.update(summary.seconds)
    if work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return ResultSummary(output=summary.output, n_neurons=summary.n_neurons,
                         movie_shape=summary.movie_shape, n_chunks=summary.n_chunks,
                         n_candidates=summary.n_candidates, decisions=summary.decisions,
                         seconds=timings)
