"""Finalize: read chunk results window by window, stitch, decide, and write the result group."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from model.inference import correlation, resample
from model.inference.anatomy import dark_somata
from model.inference.chunks import IMAGE_PLANES, ChunkResult
from model.inference.decide import (
    TOO_DIM,
    Candidates,
    keep_neuron,
    soma_contrast,
)
from model.inference.params import DecideParams, InferenceParams
from model.inference.plan import Plan
from model.inference.refine import occupied_mask, paint, refine_neurons
from model.inference.stitch import (
    BY_MEAN_IMAGE,
    Footprint,
    KeptNeuron,
    Neuron,
    assemble_trace,
    centroid,
    link_window,
    merge_duplicates,
    merge_tiles,
)
from model.results import FOOTPRINT_SLAB, ResultWriter


def _filter(cands: Candidates, params: DecideParams) -> Candidates:
    """Drop candidates whose binarized mask has fewer than ``min_area`` pixels."""
    areas = np.add.reduceat((cands.masks > params.mask_threshold).astype(np.int64),
                            cands.mask_offsets[:-1]) if len(cands) else np.zeros(0, np.int64)
    sizes = np.diff(cands.mask_offsets)
    areas = np.where(sizes > 0, areas, 0)
    return cands.take(np.nonzero(areas >= params.min_area)[0])


class _Images:
    """Running sums of the summary images over tile-owned regions (planes of
    :data:`~model.inference.chunks.IMAGE_PLANES`)."""

    def __init__(self, plan: Plan) -> None:
        _, height, width = plan.movie_shape
        self.plan = plan
        self.mean = np.zeros((height, width), np.float64)
        self.max = np.full((height, width), -np.inf, np.float64)
        self.attention = np.zeros((height, width), np.float64)
        # chunks written before the correlation image lack its moments: the image then comes
        # from the other windows alone (zero where no window has them)
        self.moments = np.zeros((len(correlation.MOMENTS), height, width), np.float64)
        self._strips_of: dict[tuple[int, ...], list] = {}

    def add(self, chunk: ChunkResult) -> None:
        with_moments = chunk.images.shape[1] == len(IMAGE_PLANES)
        for (ya, yb, xa, xb), parts in self._strips(chunk.tiles):
            crops = [chunk.images[i, :, ly, lx] for i, ly, lx in parts]
            strip = crops[0] if len(crops) == 1 else np.concatenate(crops, axis=-1)
            self.mean[ya:yb, xa:xb] += strip[0]
            self.max[ya:yb, xa:xb] = np.maximum(self.max[ya:yb, xa:xb], strip[1])
            self.attention[ya:yb, xa:xb] += strip[2]
            if with_moments:
                self.moments[:, ya:yb, xa:xb] += strip[3:]

    def _strips(self, tiles: tuple[int, ...],
                ) -> list[tuple[tuple[int, int, int, int], list[tuple[int, slice, slice]]]]:
        """The regions that ``tiles`` own, joined along rows: per strip of side-by-side owned
        regions, its frame box ``(y0, y1, x0, x1)`` and, left to right, each tile's position in
        the chunk and the part of its images it owns. A whole window's images are then added in
        one step per row of tiles instead of one per tile (this runs on the thread that
        stitches, under the interpreter lock). The same for every window: kept per tile set."""
        key = tuple(tiles)
        if key not in self._strips_of:
            rows: dict[tuple[int, int], list[tuple[int, int, int, slice, slice]]] = {}
            for i, index in enumerate(tiles):
                tile = self.plan.tiles[index]
                (ya, yb), (xa, xb) = tile.own_y, tile.own_x
                if ya < yb and xa < xb:  # tiles of the shifted grid own nothing
                    rows.setdefault((ya, yb), []).append(
                        (xa, xb, i, slice(ya - tile.y0, yb - tile.y0),
                         slice(xa - tile.x0, xb - tile.x0)))
            strips = []
            for (ya, yb), row in rows.items():
                row.sort(key=lambda part: part[0])
                for xa, xb, i, ly, lx in row:
                    if strips and strips[-1][0][:2] == (ya, yb) and strips[-1][0][3] == xa:
                        box, parts = strips[-1]
                        strips[-1] = ((ya, yb, box[2], xb), [*parts, (i, ly, lx)])
                    else:
                        strips.append(((ya, yb, xa, xb), [(i, ly, lx)]))
            self._strips_of[key] = strips
        return self._strips_of[key]

    def finish(self) -> dict[str, np.ndarray]:
        n_frames = self.plan.movie_shape[0]
        low, span = self.plan.movie_low, self.plan.movie_high - self.plan.movie_low
        return {
            "mean_image": (self.mean / n_frames * span + low).astype(np.float32),
            "max_projection": (np.where(np.isfinite(self.max), self.max, 0) * span + low)
            .astype(np.float32),
            "attention_mean": (self.attention / n_frames).astype(np.float32),
            "correlation_image": correlation.correlation_image(self.moments),
        }


class Stitcher:
    """Merges each window's candidates across tiles and links them to the neurons of the earlier
    windows, one window at a time as its chunks arrive (any order); also sums the images.

    Finalize feeds it the chunk results from disk; a process that holds them as they are computed
    (:func:`~model.inference.engine.process_movie`) feeds it while the network runs on, leaving
    finalize only the decisions and the writing. Both give the same neurons.
    """

    def __init__(self, plan: Plan, params: InferenceParams) -> None:
        self.plan, self.params = plan, params
        self.images = _Images(plan)
        self.neurons: list[Neuron] = []
        self._boxes: np.ndarray | None = None  # the neurons' boxes, kept from window to window
        self.n_candidates = 0
        self._chunks = {w.index: [c.id for c in plan.chunks if c.window == w.index]
                        for w in plan.windows}
        self._waiting: dict[str, Candidates] = {}
        self._next_window = 0
        self.networks: set[str] = set()  # what computed the chunks' outputs

    def add(self, result: ChunkResult) -> None:
        """Take one chunk's result; stitch every window whose chunks are then all in."""
        self._waiting[result.chunk_id] = result.candidates
        self.images.add(result)
        if result.network:
            self.networks.add(result.network)
        while self._next_window < len(self.plan.windows):
            ids = self._chunks[self._next_window]
            if not all(i in self._waiting for i in ids):
                break
            self._stitch_window(self._next_window, [self._waiting.pop(i) for i in ids])
            self._next_window += 1

    def _stitch_window(self, window: int, parts: list[Candidates]) -> None:
        decide, stitch = self.params.decide, self.params.stitch
        cands = Candidates.concat(parts, self.plan.trace_length)
        self.n_candidates += len(cands)
        found = merge_tiles(_filter(cands, decide), decide=decide, stitch=stitch, plan=self.plan)
        self._boxes = link_window(self.neurons, window, found, self.plan, decide=decide,
                                  stitch=stitch, boxes=self._boxes)

    def finish(self) -> tuple[list[Neuron], int]:
        """``(neurons, n_candidates)`` once every window is in (duplicates merged)."""
        if self._next_window < len(self.plan.windows):
            raise RuntimeError(f"window {self._next_window} of {len(self.plan.windows)} has not "
                               "all its chunks")
        return (merge_duplicates(self.neurons, decide=self.params.decide,
                                 stitch=self.params.stitch), self.n_candidates)


def stitch_all(plan: Plan, load: Callable[[str], ChunkResult], params: InferenceParams,
               ) -> Stitcher:  # fmt: skip
    """A :class:`Stitcher` fed every chunk result, in plan order."""
    stitcher = Stitcher(plan, params)
    for chunk in plan.chunks:
        stitcher.add(load(chunk.id))
    return stitcher


def decide_all(neurons: list[Neuron], params: DecideParams, total_windows: int = 1,
               mean_image: np.ndarray | None = None,
               ) -> tuple[list[KeptNeuron], Counter]:  # fmt: skip
    """Apply the neuron rule; returns kept neurons as records (sorted) and a count per reason.

    ``total_windows``: the movie's temporal windows (for ``min_window_fraction``);
    ``mean_image``: on the network's grid, for the soma contrast (without it, the contrast is
    unknown and that test passes)."""
    passed, dim, reasons = [], [], Counter()
    for neuron in neurons:
        fp = neuron.footprint
        on = fp.values > params.mask_threshold
        # the contrast (a ring around the footprint) only where the tests before it pass: most
        # stitched neurons are one-window detections that fail those
        ok, reason = _keep(neuron, on, float("nan"), params, total_windows)
        contrast = float("nan")
        if ok and mean_image is not None and on.any():
            contrast = soma_contrast(mean_image, on, fp.y0, fp.x0)
            ok, reason = _keep(neuron, on, contrast, params, total_windows)
        reasons[reason] += 1
        if ok:
            passed.append((neuron, on, contrast))
        elif reason == TOO_DIM:
            dim.append((neuron, on))
    if dim and params.bright_neighbour_contrast is not None and mean_image is not None:
        passed += _dim_beside_somata(dim, passed, mean_image, params, total_windows, reasons)
    kept = refine_neurons(passed, mean_image, params, reasons)
    kept.sort(key=lambda r: r.order)
    return kept, reasons


def _keep(neuron: Neuron, on: np.ndarray, contrast: float, params: DecideParams,
          total_windows: int) -> tuple[bool, str]:
    return keep_neuron(area=int(on.sum()), n_windows=len(neuron.segments), params=params,
                       total_windows=total_windows, contrast=contrast)


def _dim_beside_somata(dim: list[tuple[Neuron, np.ndarray]],
                       passed: list[tuple[Neuron, np.ndarray, float]], mean_image: np.ndarray,
                       params: DecideParams, total_windows: int, reasons: Counter,
                       ) -> list[tuple[Neuron, np.ndarray, float]]:  # fmt: skip
    """Neurons of ``dim`` (failed only the soma-contrast rule) that pass it once the bright somata
    among ``passed`` (contrast >= ``bright_neighbour_contrast``) are left out of their ring.

    In a dense field the ring of a cell holds its neighbours, and their bright pixels set the
    ring's 90th percentile: the cell reads as no brighter than its surroundings although it is
    brighter than the neuropil. Only clear somata are left out, never the other dim detections,
    so that false detections along one vessel edge still see each other's pixels in their rings.
    """
    somata = [p for p in passed if p[2] >= params.bright_neighbour_contrast]
    if not somata:
        return []
    occupied = occupied_mask(mean_image.shape, somata)
    rescued = []
    for neuron, on in dim:
        fp = neuron.footprint
        contrast = soma_contrast(mean_image, on, fp.y0, fp.x0, exclude=occupied)
        if _keep(neuron, on, contrast, params, total_windows)[0]:
            reasons[TOO_DIM] -= 1
            reasons["kept"] += 1
            reasons["kept once bright neighbours were left out of its ring"] += 1
            rescued.append((neuron, on, contrast))
    return rescued


def _dark_somata(plan: Plan, kept: list[KeptNeuron], mean_image: np.ndarray,
                 params: DecideParams, reasons: Counter) -> list[KeptNeuron]:
    """The somata darker than the neuropil around them that no kept network neuron covers
    (:mod:`.anatomy`), at the soma size the plan recorded (none when it has none)."""
    diameter = (plan.resample or {}).get("network_soma_diameter_px")
    if params.dark_soma_evidence is None or not diameter:
        return []
    occupied = np.zeros(mean_image.shape, bool)
    for rec in kept:
        paint(occupied, rec.footprint.values > 0, rec.footprint.y0, rec.footprint.x0)
    out = []
    for soma in dark_somata(mean_image, float(diameter), params.dark_soma_evidence,
                            occupied=occupied):
        footprint = Footprint(soma.y0, soma.x0, soma.on.astype(np.float32))
        out.append(KeptNeuron(
            footprint=footprint, centroid=centroid(footprint, params.mask_threshold),
            area=int(soma.on.sum()),
            contrast=soma_contrast(mean_image, soma.on, soma.y0, soma.x0),
            found_by=BY_MEAN_IMAGE))
    reasons["kept: a soma darker than the neuropil, from the mean image"] += len(out)
    return out


def _write_denoised(writer: ResultWriter, plan: Plan, load: Callable[[str], ChunkResult]) -> None:
    _, height, width = plan.movie_shape
    n_frames, frame = plan.frames_shape[0], plan.frames_shape[1:]
    b = plan.temporal_bin
    for window in plan.windows:
        slab = np.zeros((window.own_stop - window.own_first, height, width), np.float32)
        for chunk in (c for c in plan.chunks if c.window == window.index):
            result = load(chunk.id)
            for i, index in enumerate(result.tiles):
                tile = plan.tiles[index]
                (ya, yb), (xa, xb) = tile.own_y, tile.own_x
                slab[:, ya:yb, xa:xb] = result.denoised[i][:, ya - tile.y0:yb - tile.y0,
                                                           xa - tile.x0:xb - tile.x0]
        span = plan.movie_high - plan.movie_low
        if plan.spatial_scale != 1.0:
            slab = resample.resize_frames(slab, frame)
        first, stop = window.own_first * b, min(window.own_stop * b, n_frames)
        if b > 1:  # each bin's frame stands for the frames it averaged
            slab = np.repeat(slab, b, axis=0)[:stop - first]
        writer.put_denoised(first, slab * span)


def _to_movie_grid(plan: Plan, kept: list[KeptNeuron], reasons: Counter,
                   threshold: float) -> list[KeptNeuron]:
    """``kept`` with footprints, centroids and areas on the movie's pixel grid (rescaled
    runs)."""
    if plan.spatial_scale == 1.0:
        return kept
    out = []
    for rec in kept:
        fp = rec.footprint
        back = resample.footprint_to_movie(fp.values, fp.y0, fp.x0, plan.movie_shape[1:],
                                           plan.frames_shape[1:], threshold)
        if back is None:
            reasons["kept"] -= 1
            reasons["vanished at the movie's resolution"] += 1
            continue
        values, y0, x0 = back
        footprint = Footprint(y0, x0, values)
        out.append(dataclasses.replace(rec, footprint=footprint,
                                       centroid=centroid(footprint, threshold),
                                       area=int((values > threshold).sum())))
    out.sort(key=lambda r: r.order)
    return out


def finalize_result(plan: Plan, load: Callable[[str], ChunkResult], *, output: str | Path,
                    params: InferenceParams, attrs: dict[str, Any],
                    stitched: Stitcher | None = None,
                    writes: Executor | None = None) -> dict[str, Any]:
    """Stitch, decide and write; returns ``{"n_neurons", "n_candidates", "decisions",
    "footprints", "written"}``, ``footprints`` those written, as ``(y0, x0, values)`` per neuron.

    The result group, its arrays and attributes are created here; with ``writes`` the arrays'
    contents (footprints, traces, images, per-neuron fields, the denoised movie) are written
    there and ``written`` is that task's future (else None): what comes next, reading each
    neuron's fluorescence, needs only ``footprints``, so the two overlap.

    Stitching and the decision rules work on the network's grid (binned frames, rescaled pixels:
    ``plan.movie_shape``); footprints, images, traces and the denoised movie are then brought to
    the movie's own frames and pixels (``plan.frames_shape``, :mod:`model.inference.resample`).
    ``stitched``: a :class:`Stitcher` already fed every chunk (with these ``params``).
    """
    stitcher = stitched if stitched is not None else stitch_all(plan, load, params)
    neurons, n_candidates = stitcher.finish()
    network_images = stitcher.images.finish()
    # the mean image judges the network's neurons only where it shows somata at all
    mean_image = network_images["mean_image"] if resample.shows_somata(plan.resample) else None
    kept, reasons = decide_all(neurons, params.decide, total_windows=len(plan.windows),
                               mean_image=mean_image)
    if mean_image is not None:
        kept += _dark_somata(plan, kept, mean_image, params.decide, reasons)
    kept = _to_movie_grid(plan, kept, reasons, params.decide.mask_threshold)
    reasons = Counter({k: v for k, v in reasons.items() if v})
    attrs = {**attrs, "decisions": dict(sorted(reasons.items())), "n_candidates": n_candidates,
             "plan": {"n_windows": len(plan.windows), "n_tiles": len(plan.tiles),
                      "n_chunks": len(plan.chunks), "movie_low": plan.movie_low,
                      "movie_high": plan.movie_high, "network_shape": list(plan.movie_shape)},
             "resample": plan.resample or {"temporal_bin": plan.temporal_bin,
                                           "spatial_scale": plan.spatial_scale},
             "parameters": params.to_dict()}
    if stitcher.networks:
        attrs["software"] = {**attrs.get("software", {}), "network": sorted(stitcher.networks)}
    writer = ResultWriter(output, movie_shape=plan.frames_shape, n_neurons=len(kept), attrs=attrs,
                          with_denoised=params.write_denoised)
    args = (writer, plan, load, kept, network_images, params.write_denoised)
    written = writes.submit(_write_contents, *args) if writes is not None else None
    if written is None:
        _write_contents(*args)
    return {"n_neurons": len(kept), "n_candidates": n_candidates,
            "decisions": dict(sorted(reasons.items())),
            "footprints": [(r.footprint.y0, r.footprint.x0, r.footprint.values) for r in kept],
            "written": written}


def _write_contents(writer: ResultWriter, plan: Plan, load: Callable[[str], ChunkResult],
                    kept: list[KeptNeuron], network_images: dict[str, np.ndarray],
                    with_denoised: bool) -> None:
    """The result arrays' contents: footprints, traces, images, per-neuron fields, and the
    denoised movie when the result has one."""
    n_frames, frame = plan.frames_shape[0], plan.frames_shape[1:]
    traces = np.zeros((len(kept), plan.movie_shape[0]), np.float32)
    for first in range(0, len(kept), FOOTPRINT_SLAB):
        writer.put_footprints(first, [(r.footprint.y0, r.footprint.x0, r.footprint.values)
                                      for r in kept[first:first + FOOTPRINT_SLAB]])
    for k, rec in enumerate(kept):
        if rec.neuron is not None:  # a soma the network did not find has no network trace
            traces[k] = assemble_trace(plan, rec.neuron.segments)
    writer.put_traces(resample.traces_to_frames(traces, plan.temporal_bin, n_frames))
    for name, image in network_images.items():
        writer.put_image(name, resample.image_to_movie(image, frame))
    nan = float("nan")
    writer.put_neurons({
        "centroid": np.array([r.centroid for r in kept], np.float32).reshape(-1, 2),
        "area": [r.area for r in kept],
        "snr": [r.neuron.snr if r.neuron else nan for r in kept],
        "first_window": [r.first_window for r in kept],
        "n_windows": [len(r.neuron.segments) if r.neuron else 0 for r in kept],
        "tile_evidence": [r.neuron.tile_evidence if r.neuron else nan for r in kept],
        "contrast": [r.contrast for r in kept],
        "found_by": [r.found_by for r in kept],
    })
    if with_denoised:
        _write_denoised(writer, plan, load)
