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
