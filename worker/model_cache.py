"""One loaded model per worker process, loaded on first use (after the pool has forked)."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caimx.settings import Settings

log = logging.getLogger(__name__)
_lock = threading.Lock()
_cache: dict[tuple[str, str, str], tuple[Any, dict[str, int]]] = {}


@dataclass(frozen=True)
class CachedModel:
    predictor: Any
    load_s: float
    """Seconds this call spent importing TensorFlow and loading (0 when already in memory)."""
    tuned: dict[str, int] = field(default_factory=dict)
    """Batch size and threads chosen for the GPU the model runs on, for the settings the
    deployment left unset (:func:`model.runtimes.accelerator_choices`); empty on a CPU. The
    predictor was loaded with that batch size."""

    def engine_settings(self, settings: Settings) -> dict[str, int]:
        """``batch_size``, ``read_ahead`` and ``candidate_threads`` to run the engine with:
        the GPU's choices where made, else the deployment's settings."""
        from model.runtimes import TUNED_FOR_ACCELERATOR

        return {key: self.tuned.get(key, getattr(settings, key)) for key in TUNED_FOR_ACCELERATOR}


def get_predictor(name: str, settings: Settings) -> CachedModel:
    """The predictor of model ``name`` from ``settings.models_dir``, run as
    ``settings.model_runtime`` says (:mod:`model.runtimes`); loads the framework and the model
    once per process.

    Raises
    ------
    model.registry.UnknownModelError
        No such model is installed on this worker.
    """
    models_dir, runtime = settings.models_dir, settings.model_runtime
    key = (str(models_dir), name, runtime)
    with _lock:
        if key in _cache:
            predictor, tuned = _cache[key]
            return CachedModel(predictor, 0.0, tuned)
        from model.registry import resolve_model

        installed = resolve_model(name, models_dir)  # fails fast, before TensorFlow loads
        start = time.perf_counter()
        from model.runtimes import TUNED_FOR_ACCELERATOR, accelerator_choices, load_predictor

        unset = {k for k in TUNED_FOR_ACCELERATOR if k not in settings.model_fields_set}
        device, tuned = accelerator_choices(runtime, unset, os.cpu_count() or 1)
        if tuned:
            log.info("%s found: %s (set CAIMX_* to choose otherwise)", device,
                     ", ".join(f"{k} {v}" for k, v in tuned.items()))
        predictor = load_predictor(installed.path, runtime,
                                   batch_size=tuned.get("batch_size", settings.batch_size))
        _cache[key] = (predictor, tuned)
        return CachedModel(predictor, time.perf_counter() - start, tuned)


def loaded_models() -> list[str]:
    with _lock:
        return sorted({name for _, name, _ in _cache})


def clear() -> None:
    with _lock:
        _cache.clear()
