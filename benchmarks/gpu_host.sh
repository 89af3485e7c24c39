#!/usr/bin/env bash
# GPU benchmarks on a host that has JAX (with CUDA) and Python 3.12 but neither TensorFlow nor
# Keras, and no network access (docs/benchmarks.md, "GPU").
#
#   bash benchmarks/gpu_host.sh wheels    # here: pure-Python / manylinux wheels into vendor-wheels/
#   bash benchmarks/gpu_host.sh run OUT   # there, with vendor-wheels/ copied beside the tree:
#                                         # bare network, then the engine on 1000 and 10000 frames
#                                         # (network on every frame, on frames binned by 4 and 8)
#   bash benchmarks/gpu_host.sh engine OUT  # there: the faster bare network form, then the engine
#                                         # on 30000 frames (binned by 8; 1 and 2 batches in
#                                         # flight, 2 with a 1 ms switch interval), on 10000
#                                         # (unbinned) and on the scored 1000 (bins 1, 8),
#                                         # then `caimx process` with its own GPU choices
#
# READ_AHEAD (default 12) and CANDIDATE_THREADS (default 4) set the engine's CPU threads: a GPU
# host's 16 cores read ahead and turn outputs into candidates while the GPU runs.
# Rows (JSON lines) go to OUT/rows.jsonl; every stage prints as it goes, so a run stopped by a
# time limit still leaves what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."

# what the GPU host's image lacks; each at the version this checkout's .venv runs
WHEELS=(keras namex optree zarr numcodecs donfig google-crc32c oasis-deconv threadpoolctl
        pydantic pydantic-core pydantic-settings python-dotenv typing-inspection annotated-types
        typing-extensions)
# (the last two lines for `caimx process` itself, typing-extensions at the version pydantic
# needs; the image has its tqdm, psutil and fsspec)
READ_AHEAD="${READ_AHEAD:-12}"
CANDIDATE_THREADS="${CANDIDATE_THREADS:-4}"

setup() {  # $1: OUT; installs the wheels, exports the environment, sets $rows
  mkdir -p "$1"
  export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false
  # each stage is a process of its own; compiled networks are reused from disk (20 s each)
  export JAX_COMPILATION_CACHE_DIR=/tmp/caimx-jax-cache
  python3 -m pip install -q --no-index --no-deps --target /tmp/caimx-site vendor-wheels/*.whl
  export PYTHONPATH="/tmp/caimx-site:$PWD"
  rows="$1/rows.jsonl"
  python3 benchmarks/gpu.py machine --out "$rows"
}

cycled() {  # $1: frames; the scored simulation cycled to that length, as /tmp/caimx-gpu/longN.npy
  python3 -c "
import sys; sys.path.insert(0, 'benchmarks')
from pathlib import Path
from long_movie import cycle_movie
from model.io import open_movie
with open_movie(next(Path('/tmp/caimx-gpu').glob('*.tif'))) as src:
    cycle_movie(src, Path('/tmp/caimx-gpu/long$1.npy'), $1)"
}

engine() {  # engine rows: gpu.py engine ARGS..., with this host's threads and the faster head
  python3 benchmarks/gpu.py engine --batch 256 --read-ahead "$READ_AHEAD" \
    --candidate-threads "$CANDIDATE_THREADS" --ista frame2d --head "$head" \
    --work /tmp/caimx-gpu --out "$rows" "$@"
}

SCORED=(--size 512 --frames 1000 --seed 11 --photons 4 --density 800)

case "${1:-}" in
  wheels)
    mkdir -p vendor-wheels
    for name in "${WHEELS[@]}"; do
      spec="$name==$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))")"
      .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 --platform any -d vendor-wheels "$spec"
    done
    ls vendor-wheels
    ;;
  run)
    setup "${2:?usage: gpu_host.sh run OUT}"
    # bare network: the published layers, then the ISTA per frame with the head as Conv3D and
    # per frame (time neighbours stacked as channels)
    python3 benchmarks/gpu.py network --presets mini --batches 256 --ista conv3d --head conv3d \
      --out "$rows"
    python3 benchmarks/gpu.py network --presets mini --batches 256 --ista frame2d \
      --head conv3d frame2d --out "$rows"
    # the faster head form by the bare rows above
    head="$(python3 -c "
import json, sys
rows = [r for r in map(json.loads, open(sys.argv[1]))
        if r['stage'] == 'network' and r.get('ista') == 'frame2d']
print(max(rows, key=lambda r: r['pipelined_patches_per_s'])['head'] if rows else 'conv3d')
" "$rows")"
    # the engine on the scored 512 x 512 x 1000 movie: every frame to the network, then frames
    # binned by 4 and by 8 (a quarter / an eighth of the patches; F1 on the CPU in
    # docs/benchmarks.md); one process, one compilation
    engine "${SCORED[@]}" --temporal-bin 1 4 8
    # throughput where fixed costs weigh little: the same movie cycled to 10000 frames
    cycled 10000
    engine --movie /tmp/caimx-gpu/long10000.npy --temporal-bin 8 1 4
    ;;
  engine)
    setup "${2:?usage: gpu_host.sh engine OUT}"
    head=frame2d
    python3 benchmarks/gpu.py network --presets mini --batches 256 --ista frame2d \
      --head frame2d --out "$rows"
    python3 benchmarks/gpu.py simulate "${SCORED[@]}" --work /tmp/caimx-gpu
    # the 1000 frames/s target first: 30000 frames binned by 8, one batch left running while
    # the last is collected (the default), then two; then two with a 1 ms thread switch
    # interval (the thread feeding the GPU waits less for the interpreter lock)
    cycled 30000
    engine --movie /tmp/caimx-gpu/long30000.npy --temporal-bin 8 --batches-in-flight 1 2
    engine --movie /tmp/caimx-gpu/long30000.npy --temporal-bin 8 --batches-in-flight 2 \
      --switch-interval-ms 1
    # the overhead target: every frame to the network
    cycled 10000
    engine --movie /tmp/caimx-gpu/long10000.npy --temporal-bin 1
    engine "${SCORED[@]}" --temporal-bin 1 8
    # what `caimx process --runtime keras` chooses by itself on this host (no tuning flags)
    python3 -c "import sys; from caimx.cli import main; sys.exit(main(sys.argv[1:]))" process \
      "$(ls /tmp/caimx-gpu/*.tif | head -n 1)" -o /tmp/caimx-gpu/cli.zarr --runtime keras \
      --temporal-bin 8 --models-dir model/zoo 2>&1 | tail -n 8 | tee "$2/cli.txt" || true
    ;;
  *)
    echo "usage: bash benchmarks/gpu_host.sh wheels | run OUT | engine OUT" >&2
    exit 2
    ;;
esac
