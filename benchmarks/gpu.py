"""GPU throughput of the network and of the whole engine, with the Keras runner (JAX on a GPU).

Runs where TensorFlow is absent: the model runs from its ``model.weights.h5`` through
:class:`model.keras_serving.KerasPredictor` on the active Keras backend. Each stage appends JSON
rows to ``--out`` as it finishes, so a stage cut short leaves the earlier ones.

    KERAS_BACKEND=jax python benchmarks/gpu.py network --presets mini full --batches 64 256
    KERAS_BACKEND=jax python benchmarks/gpu.py engine --size 512 --frames 3000 --work /tmp/w

``network``: patches/s of the bare network (random weights) per preset and batch (best single
call, and back-to-back calls with one in flight as the engine runs them), converted to
frames/s of a 512 x 512 movie under the engine's default plan (tiles overlapping by 4 px, windows
by 20 frames), which is what the engine must feed the network. ``engine``: simulates a movie,
runs ``process_movie`` on it (defaults, motion correction on), scores it against the ground truth
and splits the wall time into the network's share (time the engine waited on the network)
and the rest.
``layers``: the network cut after each of ``--upto`` layers, to see where its time goes.
``simulate``: only the movie (to make it while another stage holds the GPU).
Peak memory over a long movie: ``benchmarks/long_movie.py --runtime keras``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from long_movie import peak_rss_gb, timed_process

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FRAME = 512
#: the interpreter's switch interval when the benchmark starts (5 ms unless changed)
DEFAULT_SWITCH_INTERVAL = sys.getswitchinterval()


def _emit(out: Path | None, row: dict[str, Any]) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if out is not None:
        with out.open("a") as fh:
            fh.write(line + "\n")


def _machine() -> dict[str, Any]:
    import keras

    row = {"stage": "machine", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "platform": platform.platform(), "python": platform.python_version(),
           "keras": keras.__version__, "backend": keras.backend.backend(),
           "cpus": os.cpu_count()}
    if keras.backend.backend() == "jax":
        import jax

        row["devices"] = [str(d.device_kind) for d in jax.devices()]
        row["jax"] = jax.__version__
    return row


def patches_per_frame(patch: tuple[int, int, int], size: int = FRAME) -> float:
    """Patches the engine's default plan cuts per frame of a ``size`` x ``size`` movie."""
    from model.inference.params import PlanParams
    from model.inference.plan import make_plan

    frames = patch[0] * 40
    plan = make_plan((frames, size, size), patch=patch, trace_offset=2, params=PlanParams(),
                     movie_low=0.0, movie_high=1.0)
    return plan.patches_per_frame


class TimedPredictor:
    """Wraps a predictor and adds up the wall time the caller spends in it: inside ``predict``,
    or starting a batch and waiting for its outputs (``start``, as the engine calls it; with
    an asynchronous runtime the device's work overlaps the caller's, so this is the time the
    caller was held up, not the device's busy time)."""

    def __init__(self, predictor: Any) -> None:
        self._predictor = predictor
        self.card = predictor.card
        self.runtime = getattr(predictor, "runtime", "")  # recorded in the result
        self.seconds = 0.0
        self.start_seconds = 0.0  # of which starting calls (a synchronous copy to the device)
        self.stage_seconds = 0.0  # staging batches (the copy to the device), in another thread
        self.patches = 0  # see reset()

    def reset(self) -> None:
        """Zero the clocks and the patch count (before an engine run)."""
        self.seconds = self.start_seconds = self.stage_seconds = 0.0
        self.patches = 0

    def predict(self, patches: np.ndarray) -> Any:
        return self.start(patches)()

    def stage(self, patches: np.ndarray, *, attention_frames: np.ndarray | None = None) -> Any:
        """The predictor's staging, timed apart (the engine stages in its batch thread)."""
        t0 = time.perf_counter()
        staged = self._predictor.stage(patches, attention_frames=attention_frames)
        self.stage_seconds += time.perf_counter() - t0
        return staged

    def start(self, patches: np.ndarray, *, denoised: bool = True,
              attention_frames: np.ndarray | None = None) -> Any:
        t0 = time.perf_counter()
        fetch = self._predictor.start(patches, denoised=denoised,
                                      attention_frames=attention_frames)
        elapsed = time.perf_counter() - t0
        self.seconds += elapsed
        self.start_seconds += elapsed
        self.patches += (len(patches) if isinstance(patches, np.ndarray)
                         else sum(n for n, _, _ in patches.parts))  # staged

        def timed_fetch() -> Any:
            t0 = time.perf_counter()
            out = fetch()
            self.seconds += time.perf_counter() - t0
            return out

        return timed_fetch


@contextlib.contextmanager
def dtype_policy(dtype: str) -> Iterator[None]:
    """Networks built inside run under ``dtype`` (Keras ``mixed_bfloat16`` for bfloat16, which
    changes the outputs)."""
    import keras

    keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


def network(args: argparse.Namespace) -> None:
    import keras

    from model.inference.run import frame_weights
    from model.keras_serving import KerasPredictor
    from model.network import PRESETS, build_network
    from model.registry import ModelCard

    for preset, dtype, ista, head in [(p, d, i, h) for p in args.presets for d in args.dtypes
                                      for i in args.ista for h in args.head]:
        config = PRESETS[preset]
        if args.tile:  # the same weights on larger (or smaller) square patches
            config = config.with_(H=args.tile, W=args.tile)
        card = ModelCard(name=preset, version="0", preset=preset, T=config.T, H=config.H,
                         W=config.W, N=config.N, trace_offset=2, input_scaling="movie-range",
                         training_data="", weights_sha256="", parameters=0, license="",
                         created="")
        keras.utils.set_random_seed(0)
        per_frame = patches_per_frame((config.T, config.H, config.W))
        for batch in args.batches:
            with dtype_policy(dtype):
                predictor = KerasPredictor(Path("."), card,
                                           build_network(config, ista_convs=ista,
                                                         head_convs=head),
                                           batch_size=batch)
            x = np.random.default_rng(0).random((batch, config.T, config.H, config.W),
                                                np.float32)
            for attention in args.attention:
                options = {"denoised": args.denoised,
                           # a middle window's sum: all frames but 10 at either end
                           "attention_frames": frame_weights(config.T, slice(10, config.T - 10),
                                                             batch)
                           if attention == "sums" else None}
                t0 = time.perf_counter()
                predictor.predict(x, **options)
                first = time.perf_counter() - t0
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    predictor.predict(x, **options)
                    times.append(time.perf_counter() - t0)
                rate = batch / min(times)
                pipelined, start_s, fetch_s = _pipelined_rate(predictor, x, args.repeats,
                                                              options)
                _emit(args.out, {
                    "stage": "network", "preset": preset, "batch": batch, "tile": config.H,
                    "dtype": dtype, "ista": ista, "head": head, "denoised": args.denoised,
                    "attention": attention,
                    "compile_s": round(first, 2), "best_call_s": round(min(times), 4),
                    "patches_per_s": round(rate, 1),
                    "pipelined_patches_per_s": round(pipelined, 1),
                    "pipelined_start_s": round(start_s, 4), "pipelined_fetch_s": round(fetch_s, 4),
                    "patches_per_512_frame": round(per_frame, 2),
                    "frames_per_s_512_plan": round(rate / per_frame, 1),
                    "pipelined_frames_per_s_512_plan": round(pipelined / per_frame, 1),
                    "peak_rss_gb": round(peak_rss_gb(), 2)})


def _pipelined_rate(predictor: Any, x: np.ndarray, calls: int, options: dict[str, Any],
                    ) -> tuple[float, float, float]:  # fmt: skip
    """Patches/s over ``calls`` back-to-back calls with one in flight, as the engine runs them
    (on JAX the next call is queued before the last one's outputs are copied back), and the
    mean seconds per call the caller spent starting a call (the input's copy to the device,
    where that is synchronous) and fetching one (waiting for the device, and the outputs' copy
    back)."""
    starting = fetching = 0.0

    def start() -> Any:
        nonlocal starting
        t = time.perf_counter()
        fetch = predictor.start(x, **options)
        starting += time.perf_counter() - t
        return fetch

    def collect(fetch: Any) -> None:
        nonlocal fetching
        t = time.perf_counter()
        fetch()
        fetching += time.perf_counter() - t

    t0 = time.perf_counter()
    in_flight = start()
    for _ in range(calls - 1):
        started = start()
        collect(in_flight)
        in_flight = started
    collect(in_flight)
    return calls * len(x) / (time.perf_counter() - t0), starting / calls, fetching / calls


def layers_time(args: argparse.Namespace) -> None:
    """Time the network cut after each of ``--upto`` layers (where the time goes)."""
    import keras

    from model.network import PRESETS, build_network

    for preset in args.presets:
        config = PRESETS[preset]
        net = build_network(config)
        x = np.random.default_rng(0).random((args.batches[0], config.T, config.H, config.W, 1),
                                            np.float32)
        for name in args.upto:
            part = keras.Model(net.input, net.get_layer(name).output)
            part.predict_on_batch(x)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                part.predict_on_batch(x)
                times.append(time.perf_counter() - t0)
            _emit(args.out, {"stage": "layers", "preset": preset, "upto": name,
                             "batch": len(x), "best_call_s": round(min(times), 4)})


def _simulate(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    from model.simulate import SimulationParams, ground_truth_path, write_simulation

    name = f"sim{args.size}x{args.frames}_p{args.photons:g}_d{args.density:g}_s{args.seed}"
    movie = work / f"{name}.tif"
    truth = Path(ground_truth_path(movie))
    if not (movie.exists() and truth.exists()):
        t0 = time.perf_counter()
        write_simulation(SimulationParams(height=args.size, width=args.size, frames=args.frames,
                                          photons=args.photons, density_per_mm2=args.density,
                                          seed=args.seed, dtype="uint16"), movie)
        print(f"simulated {movie.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return movie, truth


def _load_variant(path: Path, batch: int, dtype: str, ista: str, head: str) -> Any:
    """The model folder's network built under ``dtype`` with its ISTA and segmentation-head
    convolutions computed as ``ista`` and ``head``."""
    from model.keras_serving import KerasPredictor

    with dtype_policy(dtype):
        return KerasPredictor.load(path, batch_size=batch, ista_convs=ista, head_convs=head)


def _process(movie_path: Path, args: argparse.Namespace, output: Path, predictor: Any,
             temporal_bin: int, in_flight: int) -> dict[str, Any]:
    import dataclasses

    from model.inference import InferenceParams, deconvolve
    from model.inference.params import MotionParams, PlanParams, ResampleParams

    params = dataclasses.replace(InferenceParams(), batch_size=args.batch,
                                 read_ahead=args.read_ahead,
                                 candidate_threads=args.candidate_threads,
                                 batches_in_flight=in_flight,
                                 motion=MotionParams(enabled=not args.no_motion),
                                 plan=PlanParams(shifted_tiling=args.shifted_tiling),
                                 resample=ResampleParams(temporal_bin=temporal_bin))
    # what a worker process has after its first movie: OASIS and the parts of SciPy it
    # imports (about 0.3 s under the interpreter lock, during the first row's chunk pass)
    deconvolve.preload()
    t0 = time.perf_counter()
    one = np.zeros((1, *predictor.card.patch_shape), np.float32)
    predictor.start(one, denoised=params.write_denoised,  # compile, as the engine calls it
                    attention_frames=np.ones(one.shape[:2], np.float32))()
    compile_s = time.perf_counter() - t0
    predictor.reset()
    timing = timed_process(movie_path, predictor, params, output)
    return {"batch": args.batch, "read_ahead": args.read_ahead,
            "candidate_threads": args.candidate_threads, "batches_in_flight": in_flight,
            "motion": not args.no_motion, "shifted_tiling": args.shifted_tiling,
            "temporal_bin": temporal_bin,
            "compile_s": round(compile_s, 1), **timing,
            "network_s": round(predictor.seconds, 1), "patches": predictor.patches,
            "network_start_s": round(predictor.start_seconds, 2),
            "staging_s": round(predictor.stage_seconds, 2),
            "network_share": round(predictor.seconds / timing["wall_s"], 3),
            "network_patches_per_s": round(predictor.patches / max(predictor.seconds, 1e-9), 1),
            "peak_rss_gb": round(peak_rss_gb(), 2)}


def engine(args: argparse.Namespace) -> None:
    """Each variant loaded (and compiled) once, then run at every ``--temporal-bin``: the batch
    shape is the same, so later bins reuse the compiled network."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    movie, truth_path = (Path(args.movie), None) if args.movie else _simulate(args, work)
    for dtype, ista, head in [(d, i, h) for d in args.dtypes for i in args.ista
                              for h in args.head]:
        predictor = TimedPredictor(_load_variant(Path(args.model), args.batch, dtype, ista,
                                                 head))
        for temporal_bin, in_flight, switch_ms in itertools.product(
                args.temporal_bin, args.batches_in_flight, args.switch_interval_ms):
            output = work / f"result_{dtype}_{ista}_{head}_bin{temporal_bin}_f{in_flight}.zarr"
            sys.setswitchinterval(switch_ms / 1000)
            row = {"stage": "engine", "movie": movie.name, "dtype": dtype, "ista": ista,
                   "head": head, "runtime": predictor.runtime, "switch_interval_ms": switch_ms,
                   **_process(movie, args, output, predictor, temporal_bin, in_flight)}
            sys.setswitchinterval(DEFAULT_SWITCH_INTERVAL)
            if truth_path is not None:
                row.update(_score(output, truth_path))
            _emit(args.out, row)


def _score(output: Path, truth_path: Path) -> dict[str, Any]:
    from model.evaluate import evaluate
    from model.results import read_result

    result = read_result(output)
    with np.load(truth_path) as gt:
        masks = gt["masks"] if "masks" in gt else gt["footprints"]
        true_traces = gt.get("traces")
    traces = next((t for t in (result.calcium, result.corrected, result.traces)
                   if t is not None), None)
    score = evaluate(result.footprints, masks, found_traces=traces, true_traces=true_traces)
    return {"f1": round(score.f1, 3), "precision": round(score.precision, 3),
            "recall": round(score.recall, 3), "trace_r": score.trace_r,
            "traces": "calcium" if result.calcium is not None else "fluorescence"}


def simulate(args: argparse.Namespace) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    _simulate(args, work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage",
                    choices=("machine", "network", "layers", "simulate", "engine"))
    ap.add_argument("--out", type=Path, default=None, help="append JSON rows to this file")
    ap.add_argument("--presets", nargs="+", default=["mini", "full"])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--tile", type=int, default=None,
                    help="network: square patch edge in pixels (a multiple of 32; default: the "
                         "preset's own); the engine's plan then cuts tiles of this size")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtypes", nargs="+", default=["float32"], choices=("float32", "bfloat16"),
                    help="network, engine: compute dtype (bfloat16 = Keras mixed_bfloat16)")
    ap.add_argument("--ista", nargs="+", default=["auto"], choices=("auto", "conv3d", "frame2d"),
                    help="network, engine: ISTA (1,3,3) convolutions as Conv3D or per-frame 2-D "
                         "(auto: what the Keras runner picks on this machine)")
    ap.add_argument("--head", nargs="+", default=["auto"], choices=("auto", "conv3d", "frame2d"),
                    help="network, engine: segmentation-head convolutions as Conv3D or as 2-D "
                         "convolutions over frames stacked with their time neighbours (auto: "
                         "what the Keras runner picks on this machine)")
    ap.add_argument("--denoised", action="store_true",
                    help="network: also return the denoised movie (the engine asks for it only "
                         "when it writes it; off by default)")
    ap.add_argument("--attention", nargs="+", default=["maps", "sums"],
                    choices=("maps", "sums"),
                    help="network: the attention output as per-frame maps, or summed over a "
                         "window's frames on the device as the engine asks for it (one row "
                         "each)")
    ap.add_argument("--upto", nargs="+", default=["denoised", "convlstm", "attention_relu"],
                    help="layers stage: cut the network after each of these layers")
    ap.add_argument("--read-ahead", type=int, default=4, help="engine: chunks read ahead")
    ap.add_argument("--candidate-threads", type=int, default=1,
                    help="engine: threads turning outputs into candidates")
    ap.add_argument("--batches-in-flight", type=int, nargs="+", default=[1],
                    help="engine: batches left running while an earlier one is collected "
                         "(several: one run each, same compiled network)")
    ap.add_argument("--switch-interval-ms", type=float, nargs="+", default=[5.0],
                    help="engine: the interpreter's thread switch interval (Python's default "
                    "5 ms): how long the thread feeding the device may wait for the interpreter "
                    "lock while other threads hold it")
    ap.add_argument("--model", default=str(ROOT / "model" / "zoo" / "caimx-mini"))
    ap.add_argument("--batch", type=int, default=256, help="engine batch size")
    ap.add_argument("--work", default="/tmp/caimx-gpu")
    ap.add_argument("--size", type=int, default=FRAME)
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--photons", type=float, default=4.0)
    ap.add_argument("--density", type=float, default=800.0)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--movie", default=None,
                    help="engine: process this movie (not scored) instead of a simulated one")
    ap.add_argument("--no-motion", action="store_true", help="motion correction off")
    ap.add_argument("--shifted-tiling", action="store_true",
                    help="engine: a second grid of tiles half a stride off (PlanParams)")
    ap.add_argument("--temporal-bin", type=int, nargs="+", default=[1],
                    help="engine: frames averaged into one network frame (ResampleParams); "
                         "several: one run each, same compiled network")
    args = ap.parse_args()
    from model.keras_serving import preferred_convs

    preferred = preferred_convs()
    args.ista = list(dict.fromkeys(preferred["ista"] if i == "auto" else i for i in args.ista))
    args.head = list(dict.fromkeys(preferred["head"] if h == "auto" else h for h in args.head))
    if args.stage == "machine":
        _emit(args.out, _machine())
    else:
        {"network": network, "layers": layers_time, "simulate": simulate,
         "engine": engine}[args.stage](args)


if __name__ == "__main__":
    main()
