"""Where neurons come out: one neuron per cell, at the cell's position, across tiles and windows.

A stand-in network (no TensorFlow) reports, per patch, every pixel whose peak brightness stands
out; it puts all of a patch's cells into channel 0, as the published mini weights often do with
two or more active cells in one patch, and it only sees the part of a cell inside its patch.
"""

from __future__ import annotations

import shutil
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from model.inference import InferenceParams, process_movie
from model.inference.decide import mask_components
from model.io import open_movie
from model.outputs import summed_attention
from model.results import IMAGE_NAMES, read_result

CARD = {"name": "peaks", "version": "0", "T": 20, "H": 16, "W": 16, "N": 2, "trace_offset": 2,
        "input_scaling": "movie-range"}


class PeakPredictor:
    """Channel 0: pixels whose peak over time is above half the patch's brightest peak."""

    def __init__(self, card: dict | None = None, min_peak: float = 0.2) -> None:
        self.card = dict(card or CARD)
        self.min_peak = min_peak

    def predict(self, patches: np.ndarray):
        b, t, h, w = patches.shape
        n = self.card["N"]
        footprints = np.zeros((b, n, h, w), np.float32)
        traces = np.zeros((b, n, t - 4), np.float32)
        for i, patch in enumerate(patches):
            peak = patch.max(axis=0) - np.median(patch)
            if peak.max() < self.min_peak:
                continue
            on = peak > 0.5 * peak.max()
            footprints[i, 0] = on
            traces[i, 0] = patch[2:-2, on].mean(axis=1)
        zeros = np.zeros((b, t, h, w), np.float32)
        attention = np.array(patches, np.float32)  # a map that differs from frame to frame
        return SimpleNamespace(denoised=zeros, attention=attention, footprints=footprints,
                               raw_footprints=footprints, traces=traces)


#: The synthetic movies here are 40 x 40: smaller than motion.min_size, so motion correction is
#: asked for explicitly where these tests exercise it.
SMALL = {"motion": {"min_size": 8}}


def disk_movie(centers, *, shape=(60, 40, 40), radius=3.0, resting=60.0, seed=0):
    """Flat background, Gaussian noise, disks (resting brightness) that flash at different times."""
    rng = np.random.default_rng(seed)
    t, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    movie = 100.0 + rng.normal(0, 2.0, shape)
    masks = []
    for k, (cy, cx) in enumerate(centers):
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        activity = np.zeros(t)
        for start in range(3 + 4 * k, t - 4, 17):
            activity[start:start + 4] = [1.0, 0.7, 0.45, 0.25]
        movie += (resting + 200.0 * activity)[:, None, None] * mask
        masks.append(mask)
    return movie.astype(np.float32), np.array(masks)


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.array(np.nonzero(mask)).mean(axis=1)


def _found_once_at(result, masks, tolerance=1.0):
    found = result.footprints > 0
    assert len(found) == len(masks), f"{len(found)} neurons for {len(masks)} cells"
    errors = []
    for mask in masks:
        true = _centroid(mask)
        distances = [np.linalg.norm(_centroid(f) - true) for f in found]
        errors.append(min(distances))
    assert max(errors) <= tolerance, errors


def test_a_channel_with_two_separate_cells_gives_two_candidates():
    mask = np.zeros((16, 16), np.float32)
    mask[2:6, 2:6] = 0.9
    mask[10:14, 9:13] = 0.8
    mask[0, 15] = 0.7  # one stray pixel: below min_area
    parts = mask_components(mask, 0.5, 4)
    assert [(y0, y1, x0, x1) for y0, y1, x0, x1, _ in parts] == [(2, 6, 2, 6), (10, 14, 9, 13)]
    assert all(on.all() for *_, on in parts)


@pytest.mark.parametrize("motion", [False, True])
def test_cells_in_one_patch_and_across_tile_borders_come_out_once_where_they_are(tmp_path,
                                                                                 motion):
    # tiles of 16 at 0, 8, 16, 24: (16, 20) is cut by the tiles at 0 and 16, (27, 7) by those at
    # 8 and 24; (5, 5) and (5, 30) share the tile at x 16-31 with (16, 20)
    centers = [(5.0, 5.0), (16.0, 20.0), (27.0, 7.0), (5.0, 30.0), (33.0, 33.0)]
    movie, masks = disk_movie(centers)
    params = InferenceParams.from_dict({"motion": {"enabled": motion},
                                        "plan": {"window_overlap": 8},
                                        "decide": {"min_area": 10}})
    process_movie(movie, PeakPredictor(), output=tmp_path / "r.zarr", params=params)
    _found_once_at(read_result(tmp_path / "r.zarr"), masks)


def test_reading_ahead_in_threads_changes_nothing(tmp_path):
    """Chunks read ahead in threads (any number; 6: each chunk's frames in 6 parts) give the
    same bytes as reading in turn."""
    movie, _ = disk_movie([(5.0, 5.0), (16.0, 20.0), (27.0, 7.0)], shape=(120, 40, 40))
    results = {}
    for read_ahead in (0, 1, 3, 6):
        params = InferenceParams.from_dict({**SMALL, "plan": {"window_overlap": 8},
                                            "decide": {"min_area": 10}, "read_ahead": read_ahead})
        out = tmp_path / f"r{read_ahead}.zarr"
        summary = process_movie(movie, PeakPredictor(), output=out, params=params)
        assert summary.n_chunks >= 4
        results[read_ahead] = read_result(out)
        # when the first batch started and the last came back, when the hash was done
        line, total = summary.timeline, sum(summary.seconds.values())
        assert 0 < line["first batch"] < line["last batch"] <= total + 0.05
        assert 0 < line["sha256"] <= total + 0.05
    assert len(results[0].footprints) >= 1 and results[0].traces.any()  # something to compare
    for read_ahead in (1, 3, 6):
        np.testing.assert_array_equal(results[read_ahead].footprints, results[0].footprints)
        np.testing.assert_array_equal(results[read_ahead].traces, results[0].traces)


def test_a_digest_known_beforehand_is_recorded_without_hashing_the_file(tmp_path):
    movie, _ = disk_movie([(16.0, 20.0)])
    np.save(tmp_path / "movie.npy", movie)
    known = "AB" * 32  # not the file's: only a digest taken as given comes out as this
    params = InferenceParams.from_dict({**SMALL, "plan": {"window_overlap": 8}})
    with open_movie(tmp_path / "movie.npy") as reader:
        process_movie(reader, PeakPredictor(), output=tmp_path / "r.zarr", params=params,
                      input_sha256=known)
        with pytest.raises(ValueError, match="not a SHA-256"):
            process_movie(reader, PeakPredictor(), output=tmp_path / "bad.zarr", params=params,
                          input_sha256="ab" * 31)
    assert read_result(tmp_path / "r.zarr").attrs["input"]["sha256"] == "ab" * 32
    assert not (tmp_path / "bad.zarr").exists()


class SizeRecorder(PeakPredictor):
    """:class:`PeakPredictor` that records how many patches each call was given."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def predict(self, patches: np.ndarray):
        self.sizes.append(len(patches))
        return super().predict(patches)


def _chunk_files(work) -> dict[str, bytes]:
    return {str(p.relative_to(work)): p.read_bytes()
            for p in sorted((work / "chunks").rglob("*")) if p.is_file()}


def _candidates_in(work) -> int:
    """How many candidates the chunk results in ``work`` hold (byte-equal chunk files compare
    something only if some are found)."""
    from model.inference import load_plan
    from model.inference.chunks import read_chunk

    return sum(len(read_chunk(work, chunk.id).candidates.tile) for chunk in load_plan(work).chunks)


def test_batches_span_chunks_and_change_no_byte(tmp_path):
    """The network gets full batches across chunk borders (a compiling runtime pads short ones);
    every chunk's result is the same bytes as the worker's one-chunk-at-a-time path, also with
    the parts of one chunk turned into candidates on several threads at once."""
    from model.inference import load_plan, run_chunk

    movie, _ = disk_movie([(5.0, 5.0), (16.0, 20.0), (27.0, 7.0)], shape=(120, 40, 40))
    files = {}
    for batch, threads in ((1, 1), (7, 3), (16, 1), (100, 2)):
        params = InferenceParams.from_dict({**SMALL, "plan": {"window_overlap": 8},
                                            "batch_size": batch, "read_ahead": 2,
                                            "candidate_threads": threads})
        predictor = SizeRecorder()
        summary = process_movie(movie, predictor, output=tmp_path / f"r{batch}.zarr",
                                params=params, work_dir=tmp_path / f"w{batch}")
        n_patches = sum(predictor.sizes)
        assert summary.n_chunks >= 4 and n_patches == 9 * summary.n_chunks  # 9 tiles a window
        assert predictor.sizes == [batch] * (n_patches // batch) + (
            [n_patches % batch] if n_patches % batch else [])
        files[batch] = _chunk_files(tmp_path / f"w{batch}")
        assert len(files[batch]) == summary.n_chunks * 10  # candidates (7), images, shifts, meta
    assert _candidates_in(tmp_path / "w1") >= 3  # three cells, cut by tiles and windows
    assert files[7] == files[1] and files[16] == files[1] and files[100] == files[1]

    plan = load_plan(tmp_path / "w1")
    (tmp_path / "one").mkdir()
    for name in ("plan.json", "motion_reference.npy"):
        shutil.copy(tmp_path / "w1" / name, tmp_path / "one" / name)
    for chunk in plan.chunks:  # the worker's path: one chunk, its own batches
        run_chunk(movie, PeakPredictor(), plan, chunk.id, work_dir=tmp_path / "one")
    assert _chunk_files(tmp_path / "one") == files[1]


class InFlightPredictor(PeakPredictor):
    """:class:`PeakPredictor` with ``start``, as an asynchronous runtime has: the outputs are
    computed when fetched, and every start and fetch is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int]] = []
        self.asked_denoised: set[bool] = set()
        self.attention_frames: list[np.ndarray] = []

    def start(self, patches: np.ndarray, *, denoised: bool = True, attention_frames=None):
        call = sum(1 for event, _ in self.log if event == "start")
        self.log.append(("start", call))
        self.asked_denoised.add(denoised)

        def fetch():
            self.log.append(("fetch", call))
            out = vars(PeakPredictor.predict(self, patches))
            if attention_frames is not None:  # as the Keras runner sums them on a device
                self.attention_frames.append(attention_frames)
                out["attention"] = summed_attention(out["attention"], attention_frames)
            return SimpleNamespace(**{**out, "denoised": out["denoised"] if denoised else None})

        return fetch


class StagingPredictor(InFlightPredictor):
    """:class:`InFlightPredictor` with ``stage``, as the Keras runner has: each batch is staged
    (recorded with the thread that staged it) before it is started."""

    def __init__(self) -> None:
        super().__init__()
        self.staged_on: set[str] = set()
        self.started_on: set[str] = set()

    def stage(self, patches: np.ndarray, *, attention_frames=None):
        self.staged_on.add(threading.current_thread().name)
        return SimpleNamespace(patches=np.array(patches), attention_frames=attention_frames)

    def start(self, patches, *, denoised: bool = True, attention_frames=None):
        assert isinstance(patches, SimpleNamespace) and attention_frames is None
        self.started_on.add(threading.current_thread().name)
        return super().start(patches.patches, denoised=denoised,
                             attention_frames=patches.attention_frames)


@pytest.mark.parametrize("depth", [1, 0, 2])
def test_the_next_batches_start_before_the_last_is_collected(tmp_path, depth):
    """With a predictor that has ``start``, batch k + ``batches_in_flight`` is started before
    batch k's outputs are fetched (1 by default: the device is never left waiting on the host);
    the chunk results are the same bytes as with ``predict`` alone, also when the predictor sums
    the attention maps over the frame weights it is given or stages its batches beforehand (in
    the thread that cuts them), and the denoised movie is not asked for when it is not
    written."""
    movie, _ = disk_movie([(5.0, 5.0), (16.0, 20.0), (27.0, 7.0)], shape=(120, 40, 40))
    files = {}
    staging = StagingPredictor()
    for name, predictor, in_flight in (("plain", PeakPredictor(), 1), ("staged", staging, 1),
                                       ("in flight", InFlightPredictor(), depth)):
        params = InferenceParams.from_dict({**SMALL, "plan": {"window_overlap": 8}, "batch_size": 7,
                                            "read_ahead": 2, "batches_in_flight": in_flight})
        process_movie(movie, predictor, output=tmp_path / f"{name}.zarr", params=params,
                      work_dir=tmp_path / name)
        files[name] = _chunk_files(tmp_path / name)
    assert _candidates_in(tmp_path / "plain") >= 3  # three cells, cut by tiles and windows
    assert files["in flight"] == files["plain"] and files["staged"] == files["plain"]
    # staged in the thread that cuts the batches, not the one that feeds the device
    assert staging.staged_on == {"caimx-batches"}
    assert staging.started_on and "caimx-batches" not in staging.started_on
    weights = np.concatenate(predictor.attention_frames)
    assert set(np.unique(weights)) == {0, 1}
    assert weights.sum(axis=1).min() > 0 and weights.sum(axis=1).max() < weights.shape[1]
    log = predictor.log
    calls = sum(1 for event, _ in log if event == "start")
    assert calls > depth + 2 and predictor.asked_denoised == {False}
    expected = [("start", k) for k in range(depth)]
    for k in range(depth, calls):
        expected += [("start", k), ("fetch", k - depth)]
    expected += [("fetch", k) for k in range(calls - depth, calls)]
    assert log == expected


def test_the_digest_and_oasis_begin_once_the_first_batch_is_started(tmp_path, monkeypatch):
    """The movie's digest (a full read of it), OASIS's imports and its fork server (under the
    interpreter lock, and processes of their own) wait until the network has its first batch:
    before it, prepare and the first chunk are what the device waits for. The digest is still
    the movie's."""
    import hashlib

    from model.inference import deconvolve
    from model.inference.digest import MovieDigest

    predictor = InFlightPredictor()
    began: dict[str, list[int]] = {"preload": [], "digest": []}

    def starts() -> int:
        return sum(1 for event, _ in predictor.log if event == "start")

    def preload(processes: int = 1, n_frames: int = 0) -> None:
        began["preload"].append(starts())

    start_digest = MovieDigest.start

    def digest_start(self) -> None:
        began["digest"].append(starts())
        start_digest(self)

    monkeypatch.setattr(deconvolve, "preload", preload)
    monkeypatch.setattr(MovieDigest, "start", digest_start)
    movie, _ = disk_movie([(5.0, 5.0), (16.0, 20.0)], shape=(120, 40, 40))
    params = InferenceParams.from_dict({**SMALL, "plan": {"window_overlap": 8}, "batch_size": 7,
                                        "read_ahead": 2})
    process_movie(movie, predictor, output=tmp_path / "r.zarr", params=params)
    assert len(began["preload"]) == 1 and began["preload"][0] >= 1
    assert began["digest"] and began["digest"][0] >= 1
    recorded = read_result(tmp_path / "r.zarr").attrs["input"]["sha256"]
    assert recorded == hashlib.sha256(np.ascontiguousarray(movie).tobytes()).hexdigest()


def test_the_denoised_movie_is_asked_for_when_it_is_written(tmp_path):
    movie, _ = disk_movie([(5.0, 5.0), (16.0, 20.0), (27.0, 7.0)], shape=(120, 40, 40))
    predictor = InFlightPredictor()
    params = InferenceParams.from_dict({**SMALL, "plan": {"window_overlap": 8},
                                        "write_denoised": True, "decide": {"min_area": 10}})
    result = process_movie(movie, predictor, output=tmp_path / "d.zarr", params=params)
    assert predictor.asked_denoised == {True} and result.n_neurons >= 1


@pytest.mark.parametrize("predictor_class", [PeakPredictor, InFlightPredictor])
def test_cancel_while_chunks_are_read_ahead(tmp_path, predictor_class):
    """Cancelling is checked before each network call; chunks already computed are written
    (with a batch in flight, its outputs are collected first)."""
    from model.inference import InferenceCancelled

    movie, _ = disk_movie([(5.0, 5.0)], shape=(120, 40, 40))
    asked = []

    def should_cancel() -> bool:
        asked.append(1)
        return len(asked) > 2

    # 9 patches a chunk, 2 calls of 16: 3 chunks complete, the 4th half done
    params = InferenceParams.from_dict({**SMALL, "plan": {"window_overlap": 8}, "read_ahead": 2,
                                        "batch_size": 16})
    with pytest.raises(InferenceCancelled, match="cancelled after 3 of"):
        process_movie(movie, predictor_class(), output=tmp_path / "r.zarr", params=params,
                      should_cancel=should_cancel, work_dir=tmp_path / "w")
    assert len(list((tmp_path / "w" / "chunks").glob("*/meta.json"))) == 3


def test_fluorescence_reuses_the_shifts_the_chunks_applied(tmp_path):
    """Each chunk stores the motion shifts it applied; the fluorescence pass moves every frame by
    them instead of estimating them again, and reads the same values as estimating would."""
    from model.inference import load_plan
    from model.inference.engine import REFERENCE_FILE, chunk_shifts
    from model.inference.extract import extract_fluorescence

    movie, _ = disk_movie([(8.0, 9.0), (20.0, 24.0), (30.0, 10.0)], shape=(120, 40, 40))
    movie[1::3] = np.roll(movie[1::3], 3, axis=2)  # every third frame 3 px to the right
    params = InferenceParams.from_dict({"plan": {"window_overlap": 8}, "decide": {"min_area": 10},
                                        "motion": {"enabled": True, "min_size": 8}})
    process_movie(movie, PeakPredictor(), output=tmp_path / "r.zarr", params=params,
                  work_dir=tmp_path / "w")
    shifts = chunk_shifts(load_plan(tmp_path / "w"), tmp_path / "w")
    assert shifts.shape == (120, 2)
    np.testing.assert_array_equal(shifts[1::3], [[0.0, -3.0]] * 40)
    assert not shifts[0::3].any() and not shifts[2::3].any()

    footprints = read_result(tmp_path / "r.zarr").footprints
    reference = np.load(tmp_path / "w" / REFERENCE_FILE)
    reused = extract_fluorescence(movie, footprints, reference=reference, shifts=shifts)
    estimated = extract_fluorescence(movie, footprints, reference=reference,
                                     motion_params=params.motion)
    assert len(footprints) == 3
    np.testing.assert_array_equal(reused[0], estimated[0])
    np.testing.assert_array_equal(reused[1], estimated[1])


def test_binned_frames_lend_their_shift_to_each_of_their_frames(tmp_path):
    """With temporal binning the chunks' shifts belong to binned frames: the fluorescence pass
    moves each movie frame by its bin's shift (the last bin holds 2 frames), or estimates every
    frame again when asked to."""
    from model.inference import load_plan
    from model.inference.engine import chunk_shifts

    movie, _ = disk_movie([(8.0, 9.0), (20.0, 24.0), (30.0, 10.0)], shape=(242, 40, 40))
    movie[120:180] = np.roll(movie[120:180], 3, axis=2)  # bins 40-59 moved 3 px to the right
    params = InferenceParams.from_dict({**SMALL, "plan": {"window_overlap": 8},
                                        "decide": {"min_area": 10},
                                        "resample": {"temporal_bin": 3}})
    process_movie(movie, PeakPredictor(), output=tmp_path / "r.zarr", params=params,
                  work_dir=tmp_path / "w")
    plan = load_plan(tmp_path / "w")
    assert plan.movie_shape[0] == 81
    shifts = chunk_shifts(plan, tmp_path / "w")
    assert shifts.shape == (242, 2)
    np.testing.assert_array_equal(shifts[120:180], [[0.0, -3.0]] * 60)
    assert not shifts[:120].any() and not shifts[180:].any()
    assert chunk_shifts(plan, tmp_path / "w", reestimate_binned=True) is None
    result = read_result(tmp_path / "r.zarr")
    assert result.fluorescence.shape == (3, 242)
    assert result.fluorescence[:, 120:180].min() > 150  # read from the moved disks, not beside


def test_stitching_while_the_network_runs_equals_finalizing_from_disk(tmp_path):
    """process_movie stitches each window as its chunks complete; finalizing the same chunk files
    afterwards (the queue's path) writes the same result."""
    from model.inference import finalize, load_plan
    from model.inference.engine import add_fluorescence

    movie, _ = disk_movie([(5.0, 5.0), (16.0, 20.0), (27.0, 7.0)], shape=(120, 40, 40))
    params = InferenceParams.from_dict({**SMALL, "plan": {"window_overlap": 8},
                                        "decide": {"min_area": 10}, "batch_size": 7,
                                        "read_ahead": 2})
    summary = process_movie(movie, PeakPredictor(), output=tmp_path / "live.zarr", params=params,
                            work_dir=tmp_path / "w")
    plan = load_plan(tmp_path / "w")
    again = finalize(plan, work_dir=tmp_path / "w", output=tmp_path / "disk.zarr", movie=movie)
    assert summary.n_neurons == again.n_neurons == 3
    assert summary.decisions == again.decisions
    # the arrays written while the fluorescence was read (above) against written first (here)
    finalize(plan, work_dir=tmp_path / "w", output=tmp_path / "first.zarr")
    add_fluorescence(movie, plan, work_dir=tmp_path / "w", output=tmp_path / "first.zarr",
                     params=InferenceParams.from_dict(plan.params))
    assert "result writes" in summary.seconds and "result writes" in again.seconds
    live = read_result(tmp_path / "live.zarr")
    assert live.footprints.any() and live.traces.any() and live.fluorescence.any()  # not empty
    for other in ("disk", "first"):
        disk = read_result(tmp_path / f"{other}.zarr")
        for name in ("footprints", "traces", "fluorescence", "neuropil", "calcium", "spikes"):
            np.testing.assert_array_equal(getattr(live, name), getattr(disk, name),
                                          err_msg=name)
        assert live.images.keys() == disk.images.keys() and len(live.images) == len(IMAGE_NAMES)
        for name, image in live.images.items():
            np.testing.assert_array_equal(image, disk.images[name], err_msg=name)
        for name, values in live.neurons.items():
            np.testing.assert_array_equal(values, disk.neurons[name], err_msg=name)
