"""Peak memory and time of ``process_movie`` over a long movie on disk (e.g. 512 x 512 x 20000).

The movie is a simulated one cycled forwards and backwards (no frame jumps) into a uint16 ``.npy``
of the requested length, then processed with the engine's defaults (motion correction on).

``--network real`` runs the SavedModel on every patch (on 2 CPU cores 91 minutes for
512 x 512 x 20000). ``--network replay`` runs the SavedModel once, on patches of the movie's first
chunk, before the clock starts, and then returns those real outputs for every batch: the model is
loaded as in a real run, and every other stage (reading, binning, motion correction, candidates,
chunk files, stitching, fluorescence, deconvolution) does its full work, but the neurons found
mean nothing. It measures memory and the engine's own time (what the engine delivers around a
network that costs nothing: its ceiling on a GPU host), not accuracy.

    .venv/bin/python benchmarks/long_movie.py --frames 20000 --network replay --work /tmp/long
    KERAS_BACKEND=jax python benchmarks/long_movie.py --network real --runtime keras \\
        --batch-size 256 --read-ahead 6                  # on a GPU, without TensorFlow
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cycle_movie(source: Any, target: Path, frames: int, block: int = 500) -> Path:
    """Write ``frames`` frames of ``source`` (a movie reader) to the uint16 ``.npy`` ``target``,
    forwards then backwards then forwards..., ``block`` frames at a time."""
    length, height, width = source.shape
    out = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint16,
                                    shape=(frames, height, width))
    order = np.concatenate([np.arange(length), np.arange(length)[::-1]])
    for t0 in range(0, frames, block):
        idx = order[np.arange(t0, min(frames, t0 + block)) % len(order)]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        out[t0:t0 + len(idx)] = np.asarray(source.read(lo, hi))[idx - lo]
    out.flush()
    del out
    return target


class ReplayPredictor:
    """The real predictor on the first batch; its outputs, cycled, for every later batch.

    With ``patches_per_s`` it stands in for an asynchronous device of that speed: ``start``
    queues the batch on one device queue and returns at once, and its fetch sleeps (the
    interpreter lock released) until the device would be done, as a JAX call on a GPU does.
    """

    def __init__(self, predictor: Any, patches_per_s: float | None = None) -> None:
        self._predictor = predictor
        self.card = predictor.card
        self._outputs: Any = None
        self.first_call_s = 0.0
        self.patches_per_s = patches_per_s
        self._device_free_at = 0.0
        self.device_busy_s = 0.0

    def prime(self, movie: Any, params: Any, batch_size: int, work: Path) -> None:
        """Run the real network once, on the movie's first chunk, before any clock starts."""
        from model.inference.engine import motion_reference, prepare, read_chunk_input

        plan = prepare(movie, self.card, work_dir=work, params=params)
        chunk = read_chunk_input(movie, plan, plan.chunks[0].id, self.card,
                                 reference=motion_reference(plan, work))
        t0 = time.perf_counter()
        # a few patches through the network (a CPU runtime's activations for a GPU-sized batch
        # would set the process's peak memory), repeated to one full batch
        first = self._predictor.predict(chunk.scaled[:16])
        self.first_call_s = time.perf_counter() - t0
        idx = np.arange(batch_size) % len(first.traces)
        self._outputs = dataclasses.replace(
            first, **{k: getattr(first, k)[idx] for k in first.__dataclass_fields__})

    def predict(self, patches: np.ndarray) -> Any:
        if self._outputs is None:
            self._outputs = self._predictor.predict(patches)
        first = self._outputs
        if len(patches) == len(first.traces):
            return first  # a full batch: no copy, so replaying costs the engine nothing
        idx = np.arange(len(patches)) % len(first.traces)
        return dataclasses.replace(first, **{k: getattr(first, k)[idx]
                                             for k in first.__dataclass_fields__})

    def start(self, patches: np.ndarray, *, denoised: bool = True,
              attention_frames: np.ndarray | None = None) -> Any:
        outputs = self.predict(patches)  # the maps: the engine sums them, as for a SavedModel
        if not self.patches_per_s:
            return lambda: outputs
        busy = len(patches) / self.patches_per_s
        done = max(time.perf_counter(), self._device_free_at) + busy
        self._device_free_at = done
        self.device_busy_s += busy

        def fetch() -> Any:
            time.sleep(max(0.0, done - time.perf_counter()))
            return outputs

        return fetch


def peak_rss_gb() -> float:
    """Peak resident memory of this process image (``VmHWM``). ``ru_maxrss`` would not do: Linux
    carries it over ``exec`` from the parent, which touched every page of the movie it wrote."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed_process(movie_path: Path, predictor: Any, params: Any, output: Path,
                  work_dir: Path | None = None) -> dict[str, Any]:
    """``process_movie`` on the movie at ``movie_path``: its size, wall time and stage times.
    ``work_dir``: keep the plan and chunk results there (``benchmarks/stitching.py`` reads them)."""
    from model.inference import process_movie
    from model.io import open_movie

    with open_movie(movie_path) as movie:
        t0 = time.perf_counter()
        summary = process_movie(movie, predictor, output=output, params=params,
                                work_dir=work_dir)
        wall = time.perf_counter() - t0
    return {"shape": list(summary.movie_shape), "wall_s": round(wall, 1),
            "frames_per_s": round(summary.movie_shape[0] / wall, 1),
            "stages_s": {k: round(v, 1) for k, v in summary.seconds.items()},
            "chunk_stage_s": {k: round(v, 1) for k, v in summary.chunk_seconds.items()},
            "timeline_s": {k: round(v, 1) for k, v in summary.timeline.items()},
            "n_chunks": summary.n_chunks, "n_candidates": summary.n_candidates,
            "n_neurons": summary.n_neurons}


def measure(args: argparse.Namespace, movie_path: Path) -> dict[str, Any]:
    """Process ``movie_path`` in this process (a fresh one: ``VmHWM`` is its peak)."""
    from model.inference import InferenceParams
    from model.inference.params import ResampleParams
    from model.runtimes import load_predictor

    predictor = load_predictor(args.model, args.runtime, batch_size=args.batch_size)
    if args.network == "replay":
        predictor = ReplayPredictor(predictor, args.device_patches_per_s)
    params = dataclasses.replace(InferenceParams(), batch_size=args.batch_size,
                                 read_ahead=args.read_ahead,
                                 candidate_threads=args.candidate_threads,
                                 resample=ResampleParams(temporal_bin=args.temporal_bin))
    if args.network == "replay":
        from model.io import open_movie

        with open_movie(movie_path) as movie:
            predictor.prime(movie, params, args.batch_size, args.work / "prime")
    loaded_rss = peak_rss_gb()
    timing = timed_process(movie_path, predictor, params, args.work / "result.zarr",
                           args.work / "chunks" if args.keep_work else None)
    if args.network == "replay" and args.device_patches_per_s:
        # the engine against the bare (stand-in) device: the overhead measure
        busy = predictor.device_busy_s
        timing.update(device_patches_per_s=args.device_patches_per_s,
                      device_busy_s=round(busy, 1),
                      device_frames_per_s=round(timing["shape"][0] / busy, 1),
                      engine_share_of_device=round(busy / timing["wall_s"], 3))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.platform(), "network": args.network,
        "movie_gb": round(movie_path.stat().st_size / 1e9, 2), "runtime": args.runtime,
        "batch_size": args.batch_size, "read_ahead": args.read_ahead,
        "candidate_threads": args.candidate_threads,
        "temporal_bin": args.temporal_bin, **timing,
        "rss_model_loaded_gb": round(loaded_rss, 2), "peak_rss_gb": round(peak_rss_gb(), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--source-frames", type=int, default=2000, help="simulated frames cycled")
    ap.add_argument("--network", choices=("real", "replay"), default="replay")
    ap.add_argument("--model", default=str(ROOT / "model" / "zoo" / "caimx-mini"))
    ap.add_argument("--runtime", choices=("savedmodel", "keras"), default="savedmodel",
                    help="keras: the model's Keras weights on KERAS_BACKEND (jax on a GPU)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--read-ahead", type=int, default=1)
    ap.add_argument("--candidate-threads", type=int, default=1)
    ap.add_argument("--temporal-bin", type=int, default=1, help="frames averaged per network frame")
    ap.add_argument("--device-patches-per-s", type=float, default=None,
                    help="replay: stand in for an asynchronous device of this speed")
    ap.add_argument("--work", type=Path, default=Path("/tmp/caimx-long"))
    ap.add_argument("--keep-work", action="store_true",
                    help="keep the plan and chunk results in WORK/chunks")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args, args.measure)))
        return

    from model.io import open_movie
    from model.simulate import SimulationParams, write_simulation

    args.work.mkdir(parents=True, exist_ok=True)
    source = args.work / f"sim{args.size}x{args.source_frames}.tif"
    if not source.exists():
        write_simulation(SimulationParams(height=args.size, width=args.size,
                                          frames=args.source_frames, seed=11, dtype="uint16"),
                         source)
    movie_path = args.work / f"long{args.size}x{args.frames}.npy"
    if not movie_path.exists():
        with open_movie(source) as src:
            cycle_movie(src, movie_path.with_suffix(".tmp.npy"), args.frames)
        movie_path.with_suffix(".tmp.npy").rename(movie_path)
    # a fresh process image, so that its peak RSS is the engine's alone (writing the movie
    # through a memory map above touched every page of it)
    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--measure", str(movie_path)],
                   check=True)


if __name__ == "__main__":
    main()
