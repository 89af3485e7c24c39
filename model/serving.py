"""Run an installed model from its SavedModel alone (no network code needed).

>>> predictor = SavedModelPredictor.load("model/zoo/deepcaimx-mini")
>>> out = predictor.predict(patches)        # patches: float32 (B, T, H, W) in [0, 1]
>>> out.footprints.shape                    # (B, N, H, W)

A SavedModel exported with the ``serving_compact`` signature (:mod:`model.export`) is called
through it when the caller wants neither the denoised movie nor the per-frame attention maps
(``predict(..., denoised=False, attention_frames=weights)``, as the engine asks): the network
skips the last synthesis and a tenth of the bytes come back from the device. Older exports
have only ``serving_default``; the same call then runs it and drops or sums on the host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf  # noqa: TID251 (model/ may import TensorFlow)

from model.outputs import (
    COMPACT_OUTPUTS,
    SERVING_OUTPUTS,
    PatchOutputs,
    PatchPredictor,
    as_patch_batch,
    checked_frame_weights,
    summed_attention,
)
from model.registry import CARD_FILE, SAVED_MODEL_DIR, ModelCard
from model.runtimes import framework_device

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"
COMPACT_SIGNATURE = "serving_compact"
INPUT_NAME = "movie"
FRAME_WEIGHTS_NAME = "attention_frames"


class SavedModelPredictor(PatchPredictor):
    """A loaded SavedModel plus its model card."""

    def __init__(self, path: Path, card: ModelCard, function: Callable[..., dict[str, Any]],
                 keep_alive: object,
                 compact: Callable[..., dict[str, Any]] | None = None) -> None:
        self.path = path
        self.card = card
        self._function = function
        self._compact = compact
        self._keep_alive = keep_alive  # the loaded object owns the variables
        self.runtime = f"TensorFlow {tf.__version__} SavedModel, {framework_device('tensorflow')}"

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
        compact = loaded.signatures.get(COMPACT_SIGNATURE)
        if compact is None:
            log.warning("model %s was exported without the %s signature: the engine runs the "
                        "whole network and copies every output back; `caimx model refresh %s` "
                        "adds it", card.name, COMPACT_SIGNATURE, card.name)
        return cls(model_dir, card, loaded.signatures[SIGNATURE], loaded, compact)

    @property
    def has_compact_signature(self) -> bool:
        """Whether the SavedModel has ``serving_compact`` (exports from before it do not)."""
        return self._compact is not None

    def start(self, patches: np.ndarray, batch_size: int | None = None, *,
              denoised: bool = True,
              attention_frames: np.ndarray | None = None) -> Callable[[], PatchOutputs]:
        """Call the SavedModel on ``patches``; the returned function copies the outputs to the
        host (the engine's interface for runners that compute asynchronously). On a CPU the
        work is done when this returns; on a GPU the calls may still be running, and the copy
        waits for them. Options as :meth:`~model.outputs.PatchPredictor.predict`; with
        ``denoised=False`` and frame weights the call goes through ``serving_compact`` when the
        SavedModel has it."""
        patches = as_patch_batch(patches, self.card.patch_shape)
        weights = checked_frame_weights(attention_frames, patches.shape[:2])
        compact = self._compact is not None and weights is not None and not denoised
        keys = SERVING_OUTPUTS if denoised else COMPACT_OUTPUTS
        step = batch_size or max(len(patches), 1)
        calls: list[tuple[dict[str, Any], np.ndarray | None]] = []
        for start in range(0, len(patches), step):
            movie = tf.constant(patches[start:start + step, ..., None])
            part_weights = None if weights is None else weights[start:start + step]
            if compact:
                result = self._compact(**{INPUT_NAME: movie,
                                          FRAME_WEIGHTS_NAME: tf.constant(part_weights)})
                calls.append((result, None))  # summed by the SavedModel
            else:
                calls.append((self._function(**{INPUT_NAME: movie}), part_weights))

        def fetch() -> PatchOutputs:
            parts = []
            for result, sum_weights in calls:
                got = {key: result[key].numpy() for key in keys}
                if sum_weights is not None:
                    got["attention"] = summed_attention(got["attention"], sum_weights)
                parts.append(PatchOutputs(**{key: got.get(key) for key in SERVING_OUTPUTS}))
            if parts:
                return PatchOutputs.concat(parts)
            return PatchOutputs.empty(self.card, denoised=denoised,
                                      summed_attention=weights is not None)

        return fetch
