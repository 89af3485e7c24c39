"""The engine: prepare a plan, run chunks, finalize into one result.

One process (``caimx process``, a notebook) calls :func:`process_movie`. A queue of workers calls
:func:`prepare` once, :func:`run_chunk` once per chunk (any order, any worker, retries harmless) and
:func:`finalize` once at the end; finalize reads only the chunks' partial results, never the movie.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import itertools
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from model.inference import correlation, deconvolve, motion, patches, resample
from model.inference.chunks import (
    IMAGE_PLANES,
    ChunkResult,
    chunk_done,
    read_chunk,
    read_shifts,
    write_chunk,
)
from model.inference.decide import Candidates, patch_candidates, pixel_major
from model.inference.digest import digest_alongside
from model.inference.extract import NeuropilRing, PlacedFootprints, extract_fluorescence
from model.inference.finalize import Stitcher, finalize_result
from model.inference.params import ImageParams, InferenceParams
from model.inference.plan import Plan, Tile, check_movie, make_plan
from model.inference.prefetch import Prefetched
from model.inference.run import (
    Predictor,
    attention_sums,
    card_geometry,
    card_input_scaling,
    checked_outputs,
    predict_batches,
    runtime_of,
    start_predict,
)
from model.inference.scaling import MovieRange, movie_range, movie_sample, network_units
from model.inference.somasize import estimate_soma_diameter
from model.inference.source import as_movie, movie_name
from model.results import DIGEST_PENDING, write_input_digest

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
    #: Where the chunk stage's network thread spent its time (part of ``seconds["chunks"]``).
    chunk_seconds: dict[str, float] = field(default_factory=dict)
    #: Seconds from the start at which: the first network batch started (``first batch``), the
    #: last one's outputs came back (``last batch``), the input's SHA-256, made alongside
    #: everything else (:class:`~model.inference.digest.MovieDigest`), was done (``sha256``).
    timeline: dict[str, float] = field(default_factory=dict)
    #: How the movie was brought to the model (:func:`~.resample.choose`'s record: the soma
    #: diameter and frame rate found or given, the bin and the scale applied).
    adapted: dict[str, Any] = field(default_factory=dict)

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
    sample = movie_sample(movie, params.scaling)
    as_given = network_units(sample)
    # the somata's size also tells the decisions whether the mean image shows somata at all
    soma = estimate_soma_diameter(sample) if params.resample.soma_diameter_px is None else None
    how = resample.choose(movie, card, params.resample, soma)
    seen = resample.network_movie(movie, how.temporal_bin, how.spatial_scale)
    if how.active:
        try:
            check_movie(tuple(seen.shape), params.plan)
        except ValueError as exc:
            raise ValueError(f"binned by {how.temporal_bin} and resized by "
                             f"{how.spatial_scale:g}, {exc}") from exc
    if as_given:
        # prepared for the network already: fed as it is (the published samples are)
        rng = MovieRange(0.0, 1.0)
        params = dataclasses.replace(params, scaling=dataclasses.replace(
            params.scaling, background_level=0.0, peak_level=1.0, spatial_sigma=0.0))
    else:
        rng = movie_range(seen, params=params.scaling, sample=None if how.active else sample)
    del sample
    if params.motion.enabled and min(seen.shape[1:]) < params.motion.min_size:
        params = dataclasses.replace(params, motion=dataclasses.replace(params.motion,
                                                                        enabled=False))
    plan = make_plan(tuple(seen.shape), patch=patch, trace_offset=offset, params=params.plan,
                     movie_low=rng.low, movie_high=rng.high, all_params=params.to_dict())
    record = {**how.record, "input": ("as given: values within [0, 1], the network's units"
                                      if as_given else "scaled by the movie's range")}
    plan = dataclasses.replace(
        plan, source_shape=tuple(movie.shape) if how.active else None,
        temporal_bin=how.temporal_bin, spatial_scale=how.spatial_scale, resample=record)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if params.motion.enabled:
        np.save(work / REFERENCE_FILE, motion.reference_image(seen, params=params.motion))
    (work / PLAN_FILE).write_text(plan.to_json(), encoding="utf-8")
    return plan


def load_plan(work_dir: str | Path) -> Plan:
    return Plan.from_json((Path(work_dir) / PLAN_FILE).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class ChunkInput:
    """What a chunk feeds the network, all computed in the reading threads: the scaled patches
    cut from its block of frames, the tiles' image planes that come from the movie alone
    (:func:`movie_tile_images`), and for the candidates' raw traces the block pixel by pixel
    (:func:`~model.inference.decide.pixel_major`; the block's frames themselves are not kept)
    with where it lies: ``origin`` ``(y0, x0)`` on the padded frame, ``block_shape`` ``(h, w)``,
    the ``first_frame`` read and the motion ``shifts`` applied (:class:`~.patches.Block`)."""

    chunk_id: str
    window: int
    tiles: tuple[int, ...]
    scaled: np.ndarray
    span: np.ndarray
    images: np.ndarray
    pixels: np.ndarray
    origin: tuple[int, int]
    block_shape: tuple[int, int]
    first_frame: int
    shifts: np.ndarray | None


def read_chunk_input(movie: Any, plan: Plan, chunk_id: str, card: Any, *,
                     reference: np.ndarray | None = None,
                     pool: Executor | None = None, parts: int = 4) -> ChunkInput:
    """Read, motion-correct and cut one chunk's patches (CPU work only; no network); ``pool``:
    where its frames are read and prepared as up to ``parts`` parts (:func:`~.patches.read_block`).
    The block's images and pixel-major copy are made on two more threads while this one cuts
    the patches."""
    movie = resample.network_movie(as_movie(movie), plan.temporal_bin, plan.spatial_scale)
    params = InferenceParams.from_dict(plan.params)
    chunk = plan.chunk(chunk_id)
    tiles = tuple(plan.tiles[i] for i in chunk.tiles)
    block = patches.read_block(movie, plan, chunk.window, tiles, reference=reference,
                               motion_params=params.motion, sigma=params.scaling.spatial_sigma,
                               pool=pool, parts=parts)
    # two threads of their own: the pool's queue holds the parts of the chunks read ahead
    with ThreadPoolExecutor(2, thread_name_prefix="caimx-block") as side:
        images = side.submit(movie_tile_images, block, tiles, plan, chunk.window, params.images)
        pixels = side.submit(pixel_major, block.data)
        scaled, span = patches.network_patches(block, tiles, plan.patch[1],
                                               mode=card_input_scaling(card),
                                               scaling=params.scaling)
    return ChunkInput(chunk_id=chunk_id, window=chunk.window, tiles=tuple(chunk.tiles),
                      scaled=scaled, span=span, images=images.result(),
                      pixels=pixels.result(), origin=(block.y0, block.x0),
                      block_shape=block.data.shape[1:], first_frame=block.first_frame,
                      shifts=block.shifts)


#: The planes of :data:`~model.inference.chunks.IMAGE_PLANES` computed from the movie block.
_MOVIE_PLANES = [i for i, name in enumerate(IMAGE_PLANES) if name != "attention_sum"]


def owned_frames(plan: Plan, window: int) -> slice:
    """The frames of a window's block (and of its network outputs) that the window owns."""
    w = plan.windows[window]
    return slice(w.own_first - w.start + plan.trace_offset,
                 w.own_stop - w.start + plan.trace_offset)


def movie_tile_images(block: patches.Block, tiles: tuple[Tile, ...], plan: Plan, window: int,
                      params: ImageParams) -> np.ndarray:
    """Per tile, the :data:`~model.inference.chunks.IMAGE_PLANES` that come from the movie: sum
    and maximum of the owned frames and the correlation image's moments; the attention plane is
    left 0 for the network's outputs. ``(len(tiles), len(IMAGE_PLANES), size, size)`` float32.

    Computed where the chunk is read (the reading threads), not where its outputs are turned into
    candidates (one thread for the whole movie)."""
    size = plan.patch[1]
    owned = block.data[owned_frames(plan, window)]
    whole = np.concatenate([
        owned.sum(axis=0)[None],
        (owned.max(axis=0) if len(owned) else np.zeros(owned.shape[1:]))[None],
        correlation.window_moments(owned, bin_frames=params.correlation_bin,
                                   size=params.correlation_size)])
    out = np.zeros((len(tiles), len(IMAGE_PLANES), size, size), np.float32)
    for i, t in enumerate(tiles):
        oy, ox = t.y0 - block.y0, t.x0 - block.x0
        out[i, _MOVIE_PLANES] = whole[:, oy:oy + size, ox:ox + size]
    return out


class ChunkAssembler:
    """Turns one chunk's network outputs into its :class:`ChunkResult`, a batch at a time.

    The batches may split the chunk's patches anywhere (one network call may also hold patches of
    the neighbouring chunks): each patch's candidates depend only on that patch, so the result is
    the same bytes for any batch size. ``network``: what computed the outputs (the predictor's
    ``runtime``), recorded with the chunk.
    """

    def __init__(self, chunk: ChunkInput, plan: Plan, network: str = "") -> None:
        params = InferenceParams.from_dict(plan.params)
        self.chunk_id, self.window, self.tile_ids = chunk.chunk_id, chunk.window, chunk.tiles
        self.network = network
        self.origin, self.block_shape = chunk.origin, chunk.block_shape
        self.first_frame, self.shifts = chunk.first_frame, chunk.shifts
        self.pixels, self.span = chunk.pixels, chunk.span  # not the patches: freed once fed
        self.images = chunk.images
        self.plan = plan
        self.tiles = [plan.tiles[i] for i in chunk.tiles]
        size = plan.patch[1]
        self._owned = owned_frames(plan, chunk.window)
        n_owned = self._owned.stop - self._owned.start
        self.attention = np.zeros((len(self.tiles), size, size), np.float32)
        self.denoised = (np.zeros((len(self.tiles), n_owned, size, size), np.float32)
                         if params.write_denoised else None)
        # every part of a channel is collected; min_area applies to the stitched neurons
        self._collect = dataclasses.replace(params.decide, min_area=1)
        self._parts: dict[int, Candidates] = {}  # by first patch: each part written once
        self._counts: dict[int, int] = {}

    @property
    def n_patches(self) -> int:
        return len(self.tiles)

    def add(self, first: int, outputs: Any) -> None:
        """Take the outputs of the chunk's patches ``first .. first + len(outputs)``. Parts of
        one chunk may be added from several threads at once (each writes its own patches)."""
        n = np.asarray(outputs.traces).shape[0]
        span = self.span
        self.attention[first:first + n] = attention_sums(outputs.attention, self._owned)
        if self.denoised is not None:
            self.denoised[first:first + n] = (np.asarray(outputs.denoised)[:, self._owned]
                                              * span[first:first + n, None, None, None])
        self._parts[first] = patch_candidates(
            outputs, first, self.tiles, self.pixels, block_shape=self.block_shape,
            origin=self.origin, frame_shape=self.plan.movie_shape[1:], span=span,
            offset=self.plan.trace_offset, params=self._collect)
        self._counts[first] = n

    def result(self) -> ChunkResult:
        received = sum(self._counts.values())
        if received != self.n_patches:
            raise RuntimeError(f"chunk {self.chunk_id}: outputs for {received} of "
                               f"{self.n_patches} patches")
        parts = [self._parts[first] for first in sorted(self._parts)]
        return ChunkResult(chunk_id=self.chunk_id, window=self.window, tiles=self.tile_ids,
                           first_frame=self.first_frame, shifts=self.shifts,
                           candidates=Candidates.concat(parts, self.plan.trace_length),
                           images=self._tile_images(), denoised=self.denoised,
                           network=self.network)

    def _tile_images(self) -> np.ndarray:
        """The movie's planes from the read step with this chunk's attention sums added."""
        out = self.images.copy()
        out[:, IMAGE_PLANES.index("attention_sum")] = self.attention
        return out


def run_chunk_input(chunk: ChunkInput, predictor: Predictor, plan: Plan) -> ChunkResult:
    """Run a chunk's patches through the network and extract its candidates."""
    params = InferenceParams.from_dict(plan.params)
    assembler = ChunkAssembler(chunk, plan, runtime_of(predictor))
    for first, out in predict_batches(predictor, chunk.scaled, batch_size=params.batch_size,
                                      denoised=params.write_denoised,
                                      attention_frames=owned_frames(plan, chunk.window)):
        assembler.add(first, out)
    return assembler.result()


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
    result = compute_chunk(movie, predictor, plan, chunk_id,
                           reference=motion_reference(plan, work_dir))
    return write_chunk(work_dir, result)


def motion_reference(plan: Plan, work_dir: str | Path) -> np.ndarray | None:
    """The plan's motion reference from ``work_dir`` (None when motion correction is off)."""
    if not plan.params.get("motion", {}).get("enabled"):
        return None
    path = Path(work_dir) / REFERENCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"motion reference missing: {path}")
    return np.load(path)


def run_chunks(movie: Any, predictor: Predictor, plan: Plan, chunk_ids: list[str], *,
               work_dir: str | Path, read_ahead: int | None = None,
               candidate_threads: int | None = None, batch_size: int | None = None,
               batches_in_flight: int | None = None,
               on_written: Callable[[str], None] | None = None) -> dict[str, float]:
    """Compute chunks ``chunk_ids`` and write each partial result, as :func:`run_chunk` does, but
    as one pipeline: chunks read ahead in threads, full network batches across chunk borders,
    candidates on their own threads (what a GPU worker needs to keep its GPU busy).
    ``read_ahead``, ``candidate_threads``, ``batch_size`` and ``batches_in_flight`` default to
    the plan's parameters; a worker gives its own (the plan was made wherever the job was
    prepared, and the chunk results are the same bytes for any of them).

    ``on_written(chunk_id)`` is called in order as each chunk's result lands on disk; returns
    where the network thread's time went (see ``ResultSummary.chunk_seconds``).
    """
    movie = as_movie(movie)
    if tuple(movie.shape) != plan.frames_shape:
        raise ValueError(f"movie shape {tuple(movie.shape)} does not match the plan "
                         f"{plan.frames_shape}")
    unknown = set(chunk_ids) - {c.id for c in plan.chunks}
    if unknown:
        raise KeyError(f"chunks not in the plan: {sorted(unknown)}")
    params = InferenceParams.from_dict(plan.params)
    return _run_chunks(movie, predictor, plan, Path(work_dir),
                       reference=motion_reference(plan, work_dir),
                       read_ahead=params.read_ahead if read_ahead is None else read_ahead,
                       candidate_threads=(params.candidate_threads if candidate_threads is None
                                          else candidate_threads),
                       batches_in_flight=(params.batches_in_flight if batches_in_flight is None
                                          else batches_in_flight),
                       batch_size=params.batch_size if batch_size is None else batch_size,
                       progress=None, should_cancel=None, chunk_ids=list(chunk_ids),
                       on_written=on_written)


def finalize(plan: Plan, *, work_dir: str | Path, output: str | Path,
             attrs: dict[str, Any] | None = None,
             params: InferenceParams | None = None, movie: Any = None,
             stitched: Stitcher | None = None) -> ResultSummary:
    """Stitch all chunk results in ``work_dir`` into the result group at ``output``.

    ``params`` may override the decision and stitching thresholds of the plan (to study them without
    re-running the network); scaling, plan and motion parameters always come from the plan. With
    ``movie``, each neuron's fluorescence and neuropil are then read from it
    (:func:`add_fluorescence`). ``stitched``: a :class:`~.finalize.Stitcher` already fed every
    chunk result (the chunks are then not read again, except for the denoised movie).
    """
    missing = [c.id for c in plan.chunks if not chunk_done(work_dir, c.id)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} chunk(s) have no result yet, e.g. {missing[0]}")
    base = InferenceParams.from_dict(plan.params)
    if params is not None:
        base = dataclasses.replace(base, decide=params.decide, stitch=params.stitch)
    t0 = time.perf_counter()
    if stitched is not None and params is not None:
        raise ValueError("params cannot change the thresholds of chunks already stitched")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="caimx-result") as writes:
        # the result's arrays are written while the fluorescence is read (it needs only the
        # footprints); every write is done before this returns or raises
        info = finalize_result(plan, lambda cid: read_chunk(work_dir, cid), output=output,
                               params=base, attrs=dict(attrs or {}), stitched=stitched,
                               writes=writes if movie is not None else None)
        seconds = {"finalize": time.perf_counter() - t0}
        try:
            if movie is not None:
                seconds.update(add_fluorescence(
                    movie, plan, work_dir=work_dir, output=output, params=base,
                    footprints=PlacedFootprints(info["footprints"], plan.frames_shape[1:])))
        finally:
            if info["written"] is not None:
                t0 = time.perf_counter()
                info["written"].result()
                seconds["result writes"] = time.perf_counter() - t0
    return ResultSummary(output=str(output), n_neurons=info["n_neurons"],
                         movie_shape=plan.frames_shape, n_chunks=len(plan.chunks),
                         n_candidates=info["n_candidates"], decisions=info["decisions"],
                         seconds=seconds)


def add_fluorescence(movie: Any, plan: Plan, *, work_dir: str | Path, output: str | Path,
                     params: InferenceParams,
                     footprints: PlacedFootprints | None = None,
                     ) -> dict[str, float]:  # fmt: skip
    """Read each neuron's fluorescence and neuropil from ``movie`` into the result at ``output``,
    motion-corrected against the reference the network's input was corrected against; then, when
    ``oasis-deconv`` is installed, its denoised calcium and spikes (:mod:`.deconvolve`).
    ``footprints``: those just written there, as finalize held them (else they are read back).
    Returns the seconds of each step (``fluorescence``, ``deconvolve``)."""
    from model.results import write_deconvolved, write_fluorescence

    t0 = time.perf_counter()
    if footprints is None:
        footprints = zarr.open_group(str(output), mode="r")["footprints"]  # a slab at a time
    reference = motion_reference(plan, work_dir)
    if reference is not None and reference.shape != tuple(plan.frames_shape[1:]):
        reference = resample.image_to_movie(reference, tuple(plan.frames_shape[1:]))  # rescaled
    ring = NeuropilRing()
    fluorescence, neuropil = extract_fluorescence(
        movie, footprints, reference=reference, motion_params=params.motion, ring=ring,
        threads=params.read_ahead,
        shifts=chunk_shifts(plan, work_dir, reestimate_binned=params.motion.reestimate_binned)
        if reference is not None else None)
    write_fluorescence(output, fluorescence, neuropil,
                       {**ring.to_dict(), "weights": "footprint",
                        "motion_corrected": reference is not None})  # fmt: skip
    seconds = {"fluorescence": time.perf_counter() - t0}
    if deconvolve.available():
        t0 = time.perf_counter()
        write_deconvolved(output, *deconvolve.deconvolve_traces(
            fluorescence - ring.coefficient * neuropil, processes=params.deconvolve_processes))
        seconds["deconvolve"] = time.perf_counter() - t0
    return seconds


def chunk_shifts(plan: Plan, work_dir: str | Path, *,
                 reestimate_binned: bool = False) -> np.ndarray | None:
    """The motion shifts ``(T, 2)`` the chunks applied, one per movie frame, so the fluorescence
    pass need not estimate them again. With temporal binning each frame gets its bin's shift
    (None with ``reestimate_binned``); None when the chunks saw resized frames (other pixels) or
    some frame has none."""
    if plan.spatial_scale != 1.0 or (plan.temporal_bin > 1 and reestimate_binned):
        return None
    shifts = np.full((plan.movie_shape[0], 2), np.nan)
    for chunk in plan.chunks:
        found = read_shifts(work_dir, chunk.id)
        if found is None:
            return None
        first, values = found
        shifts[first:first + len(values)] = values
    if np.isnan(shifts).any():
        return None
    return np.repeat(shifts, plan.temporal_bin, axis=0)[:plan.frames_shape[0]]


def software_version() -> str:
    """The installed caimx version (``unknown`` when run from a bare checkout)."""
    try:
        return importlib.metadata.version("caimx")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def result_attrs(movie: Any, card: Any, params: InferenceParams, *,
                 sha256: str) -> dict[str, Any]:
    """Group attributes: model, input (name, sha256, shape, dtype, fps, the plane and channel read
    from a multi-plane file), software, parameters. ``sha256``: the movie's digest, or
    :data:`~model.results.DIGEST_PENDING` while it is being made."""
    card_dict = card.to_dict() if hasattr(card, "to_dict") else dict(card)
    return {
        "model": {"name": card_dict.get("name"), "version": card_dict.get("version"),
                  "card": card_dict},
        "input": {"name": movie_name(movie), "sha256": sha256,
                  "shape": list(movie.shape), "dtype": str(getattr(movie, "dtype", "")),
                  "fps": getattr(movie, "fps", None),
                  "layout": getattr(movie, "layout", None) or None},
        "software": {"caimx": software_version()},
        "parameters": params.to_dict(),
    }


#: Batches of network outputs the candidate thread may lag behind the network (each held in
#: memory: 210 MB for 256 mini patches).
POST_BACKLOG = 2


def _read_ahead(movie: Any, plan: Plan, card: Any, ids: list[str], *,
                reference: np.ndarray | None, read_ahead: int) -> Iterator[ChunkInput]:
    """Chunks ``ids`` in order, read and motion-corrected ``read_ahead`` ahead in threads (each
    chunk read ahead holds its block and patches in memory). Each chunk's frames are read and
    prepared as parts by ``read_ahead`` more threads, first come first served, so the first
    chunk, which the network waits for, is ready in a fraction of one thread's time (as many
    parts as those threads, at least 4: on a many-core GPU host every thread takes a part)."""
    if read_ahead < 1:
        yield from (read_chunk_input(movie, plan, chunk_id, card, reference=reference)
                    for chunk_id in ids)
        return
    # the readers stop (each waiting on its parts) before the parts' threads do
    with (ThreadPoolExecutor(max_workers=read_ahead, thread_name_prefix="caimx-frames") as parts,
          ThreadPoolExecutor(max_workers=read_ahead, thread_name_prefix="caimx-read") as reader):

        def read(chunk_id: str) -> ChunkInput:
            return read_chunk_input(movie, plan, chunk_id, card, reference=reference, pool=parts,
                                    parts=max(4, read_ahead))

        pending: deque[Future[ChunkInput]] = deque()
        queued = iter(ids)
        try:
            for chunk_id in itertools.islice(queued, read_ahead + 1):
                pending.append(reader.submit(read, chunk_id))
            while pending:
                chunk = pending.popleft().result()
                for chunk_id in itertools.islice(queued, 1):
                    pending.append(reader.submit(read, chunk_id))
                yield chunk
        finally:
            for future in pending:
                future.cancel()


@dataclass
class _Segment:
    """Patches ``first .. first + count`` of one chunk, placed consecutively in a batch."""

    assembler: ChunkAssembler
    first: int
    count: int

    @property
    def ends_chunk(self) -> bool:
        return self.first + self.count == self.assembler.n_patches


def _full_batches(inputs: Iterator[ChunkInput], plan: Plan, batch_size: int, network: str = "",
                  ) -> Iterator[tuple[np.ndarray, np.ndarray, list[_Segment]]]:  # fmt: skip
    """The patches of consecutive chunks in batches of ``batch_size``; only the movie's last batch
    may be smaller. A chunk rarely holds a multiple of the batch size (361 tiles of a 512 x 512
    movie in batches of 256), and a compiling runtime pads every short batch to the full size.
    With each batch come the frame weights of its patches' attention sums (the frames each
    patch's window owns; :func:`~model.inference.run.start_predict`)."""
    queue: deque[tuple[ChunkInput, ChunkAssembler, int]] = deque()  # chunk, its results, next
    waiting = 0
    for chunk in itertools.chain(inputs, [None]):
        if chunk is not None:
            assembler = ChunkAssembler(chunk, plan, network)
            queue.append((chunk, assembler, 0))
            waiting += assembler.n_patches
        while waiting >= batch_size or (chunk is None and waiting):
            parts, segments, room = [], [], batch_size
            while room and queue:
                source, assembler, start = queue.popleft()
                n = min(room, assembler.n_patches - start)
                parts.append(source.scaled[start:start + n])
                segments.append(_Segment(assembler, start, n))
                room, waiting = room - n, waiting - n
                if start + n < assembler.n_patches:
                    queue.appendleft((source, assembler, start + n))
            batch = np.concatenate(parts) if len(parts) > 1 else parts[0]
            weights = np.zeros(batch.shape[:2], np.float32)
            at = 0
            for seg in segments:
                weights[at:at + seg.count, owned_frames(plan, seg.assembler.window)] = 1
                at += seg.count
            yield np.ascontiguousarray(batch, dtype=np.float32), weights, segments


def _staged(batches: Iterator[tuple[np.ndarray, np.ndarray, list[_Segment]]],
            predictor: Predictor) -> Iterator[tuple[Any, np.ndarray | None, list[_Segment]]]:
    """``batches`` as :func:`_full_batches` cuts them, each staged by the predictor when it can
    (``stage``, with ``start``: the Keras runner copies the batch to the device), in the thread
    that cuts them: the thread that feeds the device then only queues calls. A staged batch
    carries its frame weights (None beside it)."""
    stage = getattr(predictor, "stage", None)
    if stage is None or getattr(predictor, "start", None) is None:
        yield from batches
        return
    for batch, weights, segments in batches:
        yield stage(batch, attention_frames=weights), None, segments


def _finish_chunk(work: Path, assembler: ChunkAssembler, stitcher: Stitcher | None,
                  parts: list[Future[None]]) -> None:
    """Once the chunk's ``parts`` (its outputs turned into candidates) are done: write its result
    and hand it to ``stitcher``."""
    for part in parts:
        part.result()  # the first failure is raised
    result = assembler.result()
    write_chunk(work, result)
    if stitcher is not None:
        stitcher.add(result)


def _run_chunks(movie: Any, predictor: Predictor, plan: Plan, work: Path, *,
                reference: np.ndarray | None, read_ahead: int, batch_size: int,
                candidate_threads: int = 1, batches_in_flight: int = 1,
                progress: Callable[[int, int], None] | None,
                should_cancel: Callable[[], bool] | None,
                stitcher: Stitcher | None = None, chunk_ids: list[str] | None = None,
                on_written: Callable[[str], None] | None = None,
                timeline: dict[str, float] | None = None,
                on_first_batch: Callable[[], None] | None = None) -> dict[str, float]:
    """Every chunk, as a pipeline of five rooms: ``read_ahead`` threads read and motion-correct
    the next chunks; one thread cuts them into full batches, across chunk borders, one batch
    ahead (and has the predictor stage each on the device, where it can); this thread runs the
    network, collecting each batch's outputs only once
    ``batches_in_flight`` later batches are started (a predictor that computes asynchronously,
    the Keras runner on JAX, keeps the device busy meanwhile); ``candidate_threads`` threads
    turn the outputs into candidates; one more thread writes each chunk's result, in chunk
    order, once its candidates are complete, and hands it to ``stitcher``. ``chunk_ids``: these
    chunks only (default: all); ``on_written`` is called with each chunk's id, in order, once
    its result is on disk.

    Returns where this thread's time went: ``network`` (starting batches and waiting for their
    outputs), ``waiting for reads`` (the next batch not cut yet: its chunks not read, or the
    cutting not done) and ``waiting for candidates`` (the candidate thread behind by more than
    :data:`POST_BACKLOG` batches, and at the end). ``timeline`` gets the clock
    (``time.perf_counter``) at which the first batch started and the last one's outputs came.
    ``on_first_batch`` is called once the first batch is started: work that can wait until the
    device is busy begins then, not while the device waits for the first chunk.
    """
    timeline = timeline if timeline is not None else {}
    clock = {"network": 0.0, "waiting for reads": 0.0, "waiting for candidates": 0.0}
    denoised = InferenceParams.from_dict(plan.params).write_denoised
    ids = [c.id for c in plan.chunks] if chunk_ids is None else list(chunk_ids)
    total = len(ids)
    inputs = _read_ahead(movie, plan, predictor.card, ids, reference=reference,
                         read_ahead=read_ahead)
    written = 0
    with (ThreadPoolExecutor(max_workers=max(candidate_threads, 1),
                             thread_name_prefix="caimx-candidates") as post,
          ThreadPoolExecutor(max_workers=1, thread_name_prefix="caimx-write") as writer):
        batches: deque[list[Future[None]]] = deque()  # each batch's tasks, until settled
        parts: dict[str, list[Future[None]]] = {}  # each unfinished chunk's candidate tasks
        finishing: deque[tuple[Future[None], str]] = deque()  # chunk writes, for progress

        def settle(backlog: int) -> None:
            nonlocal written
            while len(batches) > backlog:
                for task in batches.popleft():
                    task.result()  # the first failure is raised, not a later consequence
            while finishing and finishing[0][0].done():
                task, chunk_id = finishing.popleft()
                task.result()
                written += 1
                if on_written is not None:
                    on_written(chunk_id)
                if progress is not None:
                    progress(written, total)

        def hand_over(fetch: Callable[[], Any], n: int, segments: list[_Segment]) -> None:
            """Wait for one batch's outputs and queue its candidates and chunk writes."""
            t0 = time.perf_counter()
            out = checked_outputs(fetch(), n, denoised=denoised)
            clock["network"] += time.perf_counter() - t0
            tasks, at = [], 0
            for seg in segments:
                tasks.append(post.submit(seg.assembler.add, seg.first,
                                         out.take(at, at + seg.count)))
                chunk_id = seg.assembler.chunk_id
                parts.setdefault(chunk_id, []).append(tasks[-1])
                at += seg.count
                if seg.ends_chunk:
                    tasks.append(writer.submit(_finish_chunk, work, seg.assembler, stitcher,
                                               parts.pop(chunk_id)))
                    finishing.append((tasks[-1], chunk_id))
            batches.append(tasks)
            t0 = time.perf_counter()
            settle(POST_BACKLOG)
            clock["waiting for candidates"] += time.perf_counter() - t0

        feed = Prefetched(_staged(_full_batches(inputs, plan, batch_size, runtime_of(predictor)),
                                 predictor),
                          name="caimx-batches")
        # batches started, not collected: each collected once batches_in_flight later ones run
        in_flight: deque[tuple[Callable[[], Any], int, list[_Segment]]] = deque()
        try:
            while True:
                t0 = time.perf_counter()
                batch, weights, segments = next(feed, (None, None, []))
                clock["waiting for reads"] += time.perf_counter() - t0
                if batch is None:
                    break
                if should_cancel is not None and should_cancel():
                    while in_flight:
                        hand_over(*in_flight.popleft())
                    settle(0)  # what the network computed is written (and counted)
                    raise InferenceCancelled(f"cancelled after {written} of {total} chunks")
                t0 = time.perf_counter()
                first = "first batch" not in timeline
                timeline.setdefault("first batch", t0)
                in_flight.append((start_predict(predictor, batch, denoised=denoised,
                                                attention_frames=weights),
                                  sum(seg.count for seg in segments), segments))
                clock["network"] += time.perf_counter() - t0
                if first and on_first_batch is not None:
                    on_first_batch()
                del batch
                while len(in_flight) > batches_in_flight:  # while the device runs later ones
                    hand_over(*in_flight.popleft())
            while in_flight:
                hand_over(*in_flight.popleft())
            timeline["last batch"] = time.perf_counter()
            t0 = time.perf_counter()
            settle(0)  # every batch's tasks done, each chunk's write among them
            clock["waiting for candidates"] += time.perf_counter() - t0
        finally:
            for task in (*itertools.chain.from_iterable(batches), *(f for f, _ in finishing)):
                task.cancel()
            feed.close()
            inputs.close()
    return clock


def process_movie(movie: Any, predictor: Predictor, *, output: str | Path,
                  params: InferenceParams = DEFAULT_PARAMS,
                  progress: Callable[[int, int], None] | None = None,
                  should_cancel: Callable[[], bool] | None = None,
                  work_dir: str | Path | None = None,
                  input_sha256: str | None = None) -> ResultSummary:
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
    input_sha256 : str, optional
        The SHA-256 of the movie's file when it is already known (the service hashes an upload
        as it arrives): recorded as given, and the movie is not read once more to hash it.

    Returns
    -------
    ResultSummary
    """
    movie = as_movie(movie)
    output = Path(output)
    work = Path(work_dir) if work_dir is not None else output.with_name(output.name + ".work")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    timeline: dict[str, float] = {}
    # the movie's digest (a process reading the whole file), OASIS's imports (under the
    # interpreter lock) and its fork server wait until the device has its first batch: before
    # that, prepare and the first chunk are what it waits for
    preload = threading.Thread(target=deconvolve.preload,
                               args=(params.deconvolve_processes, movie.shape[0]),
                               name="caimx-preload", daemon=True)
    with digest_alongside(movie, input_sha256, start=False) as digest:

        def begin_background_work() -> None:
            digest.start()
            preload.start()

        t0 = time.perf_counter()
        plan = prepare(movie, predictor.card, work_dir=work, params=params)
        reference = motion_reference(plan, work)
        timings["prepare"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        stitcher = Stitcher(plan, InferenceParams.from_dict(plan.params))
        chunk_seconds = _run_chunks(
            movie, predictor, plan, work, reference=reference, read_ahead=params.read_ahead,
            batch_size=params.batch_size, candidate_threads=params.candidate_threads,
            batches_in_flight=params.batches_in_flight, progress=progress,
            should_cancel=should_cancel, stitcher=stitcher, timeline=timeline,
            on_first_batch=begin_background_work)
        timings["chunks"] = time.perf_counter() - t0
        # the digest (a full read of the movie) goes on during finalize and the fluorescence pass
        summary = finalize(plan, work_dir=work, output=output, movie=movie, stitched=stitcher,
                           attrs=result_attrs(movie, predictor.card, params,
                                              sha256=DIGEST_PENDING))
        timings.update(summary.seconds)
        t0 = time.perf_counter()
        write_input_digest(output, digest.result())
        timings["digest"] = time.perf_counter() - t0
        timeline["sha256"] = digest.finished_at
    if work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return ResultSummary(output=summary.output, n_neurons=summary.n_neurons,
                         movie_shape=summary.movie_shape, n_chunks=summary.n_chunks,
                         n_candidates=summary.n_candidates, decisions=summary.decisions,
                         seconds=timings, chunk_seconds=chunk_seconds,
                         timeline={k: v - start for k, v in timeline.items()},
                         adapted=dict(plan.resample))
