"""Load an installed model with the runtime a worker or the CLI is configured for.

``savedmodel`` (default) runs the TensorFlow SavedModel; ``keras`` builds the network from the
card and runs ``model.weights.h5`` on the active Keras backend, e.g. JAX on a GPU
(``KERAS_BACKEND=jax``) where no GPU build of TensorFlow is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

Runtime = Literal["savedmodel", "keras"]
RUNTIMES: tuple[str, ...] = ("savedmodel", "keras")


def framework_device(framework: str) -> str:
    """Where ``framework`` (``"jax"`` or ``"tensorflow"``) computes here: ``"GPU"``, ``"TPU"``
    or ``"CPU"``. Imports the framework."""
    if framework == "jax":
        import jax

        return jax.default_backend().upper()
    if framework == "tensorflow":
        import tensorflow as tf  # noqa: TID251 (model/ may import TensorFlow)

        return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    return "CPU"


def accelerator(runtime: str) -> str | None:
    """``"GPU"`` (or ``"TPU"``) when ``runtime`` will compute on such a device here, else None.

    Asks the framework the runtime uses (JAX or TensorFlow), which is imported for it.
    """
    framework = "tensorflow" if runtime == "savedmodel" else runtime
    if runtime == "keras":
        import keras

        framework = keras.backend.backend()
    device = framework_device(framework)
    return None if device == "CPU" else device


def accelerator_defaults(runtime: str, cores: int) -> dict[str, int]:
    """Engine settings that keep one GPU busy, for a host with ``cores`` CPU cores.

    Measured on one H100 with 16 cores under JAX (docs/benchmarks.md, the GPU leases): batches
    of 256, 12 threads reading ahead, 4 turning outputs into candidates. The SavedModel gets
    batches of 128 (about 4 GB of activations; its best size on a GPU is not measured). Fewer
    cores get fewer threads, leaving about 4 to the network's feeding and the rest.
    """
    return {"batch_size": 256 if runtime == "keras" else 128,
            "read_ahead": max(2, min(12, cores - 4)),
            "candidate_threads": max(1, min(4, cores // 4))}


TUNED_FOR_ACCELERATOR = ("batch_size", "read_ahead", "candidate_threads")
"""The settings :func:`accelerator_choices` picks for a GPU when the user did not."""


def accelerator_choices(runtime: str, unset: set[str] | frozenset[str],
                        cores: int) -> tuple[str | None, dict[str, int]]:
    """``(device, values)``: the accelerator ``runtime`` computes on here (None: the CPU) and,
    for it, :func:`accelerator_defaults` of those :data:`TUNED_FOR_ACCELERATOR` settings that
    are in ``unset`` (empty on the CPU)."""
    device = accelerator(runtime)
    if device is None:
        return None, {}
    tuned = accelerator_defaults(runtime, cores)
    return device, {key: tuned[key] for key in TUNED_FOR_ACCELERATOR if key in unset}


def load_predictor(path: str | Path, runtime: str = "savedmodel", *,
                   batch_size: int | None = None) -> Any:
    """The predictor of the model folder ``path`` under ``runtime``.

    ``batch_size`` fixes the Keras runner's compiled batch (the SavedModel takes any batch).
    """
    if runtime == "savedmodel":
        from model.serving import SavedModelPredictor

        return SavedModelPredictor.load(path)
    if runtime == "keras":
        from model.keras_serving import DEFAULT_BATCH, KerasPredictor

        return KerasPredictor.load(path, batch_size=batch_size or DEFAULT_BATCH)
    raise ValueError(f"unknown model runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
