"""One loaded model per worker process, loaded on first use (after the pool has forked)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caimx.settings import Settings

_lock = threading.Lock()
_cache: dict[tuple[str, str, str], Any] = {}


@dataclass(frozen=True)
class CachedModel:
    predictor: Any
    load_s: float
    """Seconds this call spent importing TensorFlow and loading (0 when already in memory)."""


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
            return CachedModel(_cache[key], 0.0)
        from model.registry import resolve_model

        installed = resolve_model(name, models_dir)  # fails fast, before TensorFlow loads
        start = time.perf_counter()
        from model.runtimes import load_predictor

        predictor = load_predictor(installed.path, runtime, batch_size=settings.batch_size)
        _cache[key] = predictor
        return CachedModel(predictor, time.perf_counter() - start)


def loaded_models() -> list[str]:
    with _lock:
        return sorted({name for _, name, _ in _cache})


def clear() -> None:
    with _lock:
        _cache.clear()
