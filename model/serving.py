"""Run an installed model from its SavedModel alone (no network code needed).

>>> predictor = SavedModelPredictor.load("model/zoo/deepcaimx-mini")
>>> out = predictor.predict(patches)        # patches: float32 (B, T, H, W) in [0, 1]
>>> out.footprints.shape                    # (B, N, H, W)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf  # noqa: TID251 (model/ may import TensorFlow)

from model.outputs import SERVING_OUTPUTS, PatchOutputs, as_patch_batch
from model.registry import CARD_FILE, SAVED_MODEL_DIR, ModelCard

SIGNATURE = "serving_default"
INPUT_NAME = "movie"


class SavedModelPredictor:
    """A loaded SavedModel plus its model card."""

    def __init__(self, path: Path, card: ModelCard, function: Callable[..., dict[str, Any]],
                 keep_alive: object) -> None:
        self.path = path
        self.card = card
        self._function = function
        self._keep_alive = keep_alive  # the loaded object owns the variables

    @classmethod
    def load(cls, path: str | Path) -> SavedModelPredictor:
        """Load from a model folder (holding ``saved_model/`` and ``model_card.json``) or from
        the ``saved_model/`` folder itself (the card is then read from its parent)."""
        path = Path(path)
        if (path / SAVED_MODEL_DIR).is_dir():
            model_dir, saved = path, path / SAVED_MODEL_DIR
        elif (path / "saved_model.pb").is_file():
            model_dir, saved = path.parent, path
        else:
            raise FileNotFoundError(f"no SavedModel in {path}")
        card = ModelCard.read(model_dir / CARD_FILE)
        loaded = tf.saved_model.load(str(saved))
        if SIGNATURE not in loaded.signatures:
            raise ValueError(f"{saved} has no {SIGNATURE!r} signature")
        return cls(model_dir, card, loaded.signatures[SIGNATURE], loaded)

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        return self.card.patch_shape

    def predict(self, patches: np.ndarray, batch_size: int | None = None) -> PatchOutputs:
        """Run ``patches`` float32 ``(B, T, H, W)`` (already min-max scaled per patch).

        ``batch_size`` splits large batches into network calls of at most that many patches.
        """
        patches = as_patch_batch(patches, self.card.patch_shape)
        step = batch_size or max(len(patches), 1)
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, len(patches), step):
            movie = tf.constant(patches[start:start + step, ..., None])
            result = self._function(**{INPUT_NAME: movie})
            parts.append({key: value.numpy() for key, value in result.items()})
        if not parts:
            return PatchOutputs.empty(self.card)
        return PatchOutputs.concat([PatchOutputs(**{key: p[key] for key in SERVING_OUTPUTS})
                                    for p in parts])
