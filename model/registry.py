"""Installed models: ``<models_dir>/<name>/model_card.json`` beside ``saved_model/``.

Pure Python (json, dataclasses): the API uses it, so it never imports TensorFlow or Keras.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CARD_FILE = "model_card.json"
#: Card fields that may be missing (the training movies' frame rate, pixel size and soma size are
#: what ``model.inference`` needs to bin and rescale a movie to match them).
OPTIONAL_FIELDS = ("metrics", "frame_rate_hz", "pixel_size_um", "neuron_diameter_um")
SAVED_MODEL_DIR = "saved_model"
WEIGHTS_FILE = "model.weights.h5"  # Keras 3 weights of the network (run by model.keras_serving)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file (streamed)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class UnknownModelError(LookupError):
    """No installed model of that name."""

    def __init__(self, name: str, models_dir: Path, installed: list[str]) -> None:
        self.name = name
        self.models_dir = models_dir
        self.installed = installed
        listing = ", ".join(installed) if installed else "none"
        super().__init__(
            f"no model named {name!r} is installed in {models_dir} (installed: {listing})"
        )


class ModelCardError(ValueError):
    """A ``model_card.json`` that is missing fields or unreadable."""


@dataclass(frozen=True)
class ModelCard:
    """What a model is and how to feed it (see docs/architecture.md)."""

    name: str
    version: str
    preset: str
    T: int
    H: int
    W: int
    N: int
    trace_offset: int
    input_scaling: str
    training_data: str
    weights_sha256: str
    parameters: int
    license: str
    created: str
    metrics: dict[str, Any] = field(default_factory=dict)
    frame_rate_hz: float | None = None  # of the training movies, when known
    pixel_size_um: float | None = None
    neuron_diameter_um: float | None = None

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        """``(T, H, W)`` of one network input."""
        return (self.T, self.H, self.W)

    @property
    def trace_length(self) -> int:
        """Frames per output trace: ``T - 2 * trace_offset``."""
        return self.T - 2 * self.trace_offset

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build from a parsed card; unknown keys are ignored, missing ones are an error."""
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.name not in OPTIONAL_FIELDS}
        missing = sorted(required - set(data))
        if missing:
            raise ModelCardError(f"model card lacks {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in known}
        for key in ("T", "H", "W", "N", "trace_offset", "parameters"):
            values[key] = int(values[key])
        values["metrics"] = dict(values.get("metrics") or {})
        for key in ("frame_rate_hz", "pixel_size_um", "neuron_diameter_um"):
            if values.get(key) is not None:
                values[key] = float(values[key])
        return cls(**values)

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        """Read ``path`` (a card file or a model folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / CARD_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelCardError(f"cannot read model card {path}: {exc}") from exc
        return cls.from_dict(data)

    def write(self, path: str | Path) -> Path:
        """Write to ``path`` (a card file or a model folder); returns the file written."""
        path = Path(path)
        if path.is_dir():
            path = path / CARD_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


@dataclass(frozen=True)
class InstalledModel:
    """A model folder and its card."""

    path: Path
    card: ModelCard

    @property
    def saved_model_path(self) -> Path:
        return self.path / SAVED_MODEL_DIR


def _model_dirs(models_dir: Path) -> list[Path]:
    if not models_dir.is_dir():
        return []
    return sorted(
        p for p in models_dir.iterdir()
        if (p / CARD_FILE).is_file() and (p / SAVED_MODEL_DIR).is_dir()
    )  # fmt: skip


def list_models(models_dir: str | Path) -> list[ModelCard]:
    """Cards of all models installed in ``models_dir``, sorted by folder name."""
    return [ModelCard.read(p) for p in _model_dirs(Path(models_dir))]


def resolve_model(name: str, models_dir: str | Path) -> InstalledModel:
    """The installed model ``name``; raises :class:`UnknownModelError` listing what exists."""
    models_dir = Path(models_dir)
    path = models_dir / name
    installed = _model_dirs(models_dir)
    if "/" in name or "\\" in name or name in ("", ".", "..") or path not in installed:
        raise UnknownModelError(name, models_dir, [p.name for p in installed])
    return InstalledModel(path=path, card=ModelCard.read(path))
