"""The Keras runner under JAX, the runtime of GPU workers, run here on the CPU.

Keras picks its backend once per process, so JAX runs in a subprocess (``KERAS_BACKEND=jax``)
and its results are compared with the TensorFlow SavedModel's in this one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from small_movies import blinking_disk_movie

from caimx.settings import REPO_MODELS_DIR
from model.outputs import SERVING_OUTPUTS
from model.runtimes import load_predictor

MODEL = REPO_MODELS_DIR / "caimx-mini"
pytestmark = pytest.mark.skipif(not (MODEL / "saved_model").is_dir(),
                                reason="the shipped caimx-mini is not installed")

RUNNER = textwrap.dedent("""
    import sys
    import jax
    import keras
    import numpy as np
    from model.keras_serving import KerasPredictor
    from model.outputs import SERVING_OUTPUTS

    assert keras.backend.backend() == "jax", keras.backend.backend()
    from model.runtimes import accelerator
    assert accelerator("keras") is None, "JAX on the CPU is no accelerator"
    model, patches_file, out_file = sys.argv[1:]
    patches = np.load(patches_file)
    predictor = KerasPredictor.load(model, batch_size=2)  # per-frame convolutions on JAX
    whole = predictor.predict(patches)                    # 2 + 1 padded
    first = predictor.start(patches[:2])                  # two batches in flight at once
    second = predictor.start(patches[2:], denoised=False)
    a, b = first(), second()
    assert b.denoised is None, "denoised was not asked for"
    weights = np.zeros(patches.shape[:2], np.float32)
    weights[:, 20:80] = 1
    summed = predictor.predict(patches, attention_frames=weights)  # summed on the device
    staged = predictor.stage(patches, attention_frames=weights)    # on the device beforehand
    assert all(isinstance(x, jax.Array) for _, x, _ in staged.parts)
    from_staged = predictor.start(staged)()
    assert np.array_equal(from_staged.attention, summed.attention)
    assert np.array_equal(from_staged.traces, whole.traces)
    np.savez(out_file, **{key: getattr(whole, key) for key in SERVING_OUTPUTS},
             started_traces=np.concatenate([a.traces, b.traces]),
             started_footprints=np.concatenate([a.footprints, b.footprints]),
             attention_sum=summed.attention)
""")
CLI = "import sys; from caimx.cli import main; sys.exit(main(sys.argv[1:]))"


def _jax_env() -> dict[str, str]:
    return {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}


def test_the_jax_runner_matches_the_saved_model(tmp_path):
    """Outputs of the jitted, asynchronous JAX path (with the convolutions JAX runs best on a
    CPU: per frame) equal the SavedModel's (1e-3: two backends' convolutions), batches started
    together come back intact, a call without the denoised movie leaves it out, the attention
    summed on the device over the frames asked for is the sum of those frames' maps, and
    patches staged on the device beforehand give the same outputs."""
    rng = np.random.default_rng(5)
    patches = np.clip(0.35 + rng.normal(0, 0.05, (3, 100, 32, 32)), 0, 1).astype(np.float32)
    patches[:, :, 10:18, 12:20] += np.linspace(0, 0.5, 100, dtype=np.float32)[None, :, None, None]
    np.save(tmp_path / "patches.npy", patches)
    out = tmp_path / "jax.npz"
    done = subprocess.run([sys.executable, "-c", RUNNER, str(MODEL), str(tmp_path / "patches.npy"),
                           str(out)], env=_jax_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jax_out = np.load(out)
    saved = load_predictor(MODEL, "savedmodel").predict(patches)
    assert (saved.footprints > 0.5).any()  # a neuron found: the outputs compared are not empty
    for key in SERVING_OUTPUTS:
        np.testing.assert_allclose(jax_out[key], getattr(saved, key), atol=1e-3, err_msg=key)
    np.testing.assert_allclose(jax_out["started_traces"], jax_out["traces"], atol=1e-6)
    np.testing.assert_allclose(jax_out["started_footprints"], jax_out["footprints"], atol=1e-6)
    np.testing.assert_allclose(jax_out["attention_sum"],
                               jax_out["attention"][:, 20:80].sum(axis=1), rtol=1e-5, atol=1e-5)


def test_caimx_process_on_jax_finds_the_saved_models_neurons(tmp_path):
    """The whole engine through the JAX runner (batches kept in flight, attention summed on the
    device) gives the neurons, traces and attention image of the SavedModel run."""
    from model.results import read_result

    blinking_disk_movie(tmp_path / "movie.npy")
    results = {}
    for runtime, env in (("savedmodel", os.environ), ("keras", _jax_env())):
        out = tmp_path / f"{runtime}.zarr"
        done = subprocess.run(
            [sys.executable, "-c", CLI, "process", str(tmp_path / "movie.npy"), "-o",
             str(out), "--models-dir", str(REPO_MODELS_DIR), "--runtime", runtime,
             "--batch-size", "4", "--quiet"],
            env=dict(env), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[runtime] = read_result(out)
    a, b = results["savedmodel"], results["keras"]
    assert a.footprints.shape == b.footprints.shape and len(a.footprints) >= 1
    np.testing.assert_array_equal(a.footprints > 0, b.footprints > 0)
    np.testing.assert_allclose(b.traces, a.traces, rtol=1e-3, atol=1e-3)
    # summed on the device over each window's own frames, on the host from the SavedModel's maps
    np.testing.assert_allclose(b.images["attention_mean"], a.images["attention_mean"], atol=1e-3)
    assert a.images["attention_mean"].max() > 0.01
