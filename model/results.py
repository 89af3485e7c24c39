"""The result of processing one movie: a Zarr v3 group (schema in ``docs/results.md``).

No TensorFlow here: the API reads results with this module.

Every function that adds to a written result (:func:`write_fluorescence`,
:func:`write_deconvolved`, :func:`write_input_digest`, the last step of both the engine and the
worker) ends by consolidating the group's metadata into its root ``zarr.json``: a reader over
HTTP, where a store cannot be listed, then sees every array (``group.array_keys()``,
``group.tree()``) and opens each one without fetching its own ``zarr.json``. The field is
marked ``must_understand: false``, so readers that do not know it read the group as before.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

SCHEMA_VERSION = "1"
IMAGE_NAMES = ("mean_image", "attention_mean", "max_projection", "correlation_image")
NEURON_FIELDS = {
    "centroid": np.float32, "area": np.int32, "snr": np.float32, "first_window": np.int32,
    "n_windows": np.int32, "tile_evidence": np.float32, "contrast": np.float32,
    "found_by": np.int8,
}
#: ``neurons/found_by``: what found each neuron.
FOUND_BY = {1: "network", 2: "mean image (a soma darker than the neuropil around it)"}


#: Footprints written or read at once (32 MB at 512 x 512): Zarr then handles a slab's chunks
#: concurrently instead of one round trip per neuron.
FOOTPRINT_SLAB = 32


class ResultWriter:
    """Write a result group piece by piece (footprints a slab of neurons at a time, memory stays
    small).

    Parameters
    ----------
    path : str or Path
        Folder of the Zarr v3 group; replaced if it exists.
    movie_shape : (T, H, W)
    n_neurons : int
        K, the number of neurons.
    attrs : dict
        Group attributes (JSON-able); ``schema_version`` is added.
    with_denoised : bool
        Create the ``denoised`` ``(T, H, W)`` array.
    """

    def __init__(self, path: str | Path, *, movie_shape: tuple[int, int, int], n_neurons: int,
                 attrs: dict[str, Any], with_denoised: bool = False) -> None:
        n_frames, height, width = movie_shape
        self.path = Path(path)
        self.group = zarr.open_group(str(self.path), mode="w", zarr_format=3)
        self.group.attrs.update({**attrs, "schema_version": SCHEMA_VERSION})
        k = int(n_neurons)
        self.footprints = self.group.create_array(
            "footprints", shape=(k, height, width), chunks=(1, height, width), dtype="float32",
            fill_value=0.0)
        self.traces = self.group.create_array(
            "traces", shape=(k, n_frames), chunks=(max(1, min(k, 64)), min(n_frames, 16384)),
            dtype="float32", fill_value=0.0)
        for name in IMAGE_NAMES:
            self.group.create_array(name, shape=(height, width), chunks=(height, width),
                                    dtype="float32", fill_value=0.0)
        neurons = self.group.create_group("neurons")
        for name, dtype in NEURON_FIELDS.items():
            shape = (k, 2) if name == "centroid" else (k,)
            neurons.create_array(name, shape=shape, chunks=(max(k, 1), *shape[1:]), dtype=dtype,
                                 fill_value=0)
        self.denoised = None
        if with_denoised:
            self.denoised = self.group.create_array(
                "denoised", shape=(n_frames, height, width),
                chunks=(min(n_frames, 32), min(height, 256), min(width, 256)), dtype="float32",
                fill_value=0.0)

    def put_footprint(self, k: int, y0: int, x0: int, values: np.ndarray) -> None:
        """Footprint ``k``: ``values`` ``(h, w)`` placed at ``(y0, x0)``; zero elsewhere."""
        self.put_footprints(k, [(y0, x0, values)])

    def put_footprints(self, first: int, placed: list[tuple[int, int, np.ndarray]]) -> None:
        """Footprints ``first, first + 1, ...``, each ``(y0, x0, values)`` as in
        :meth:`put_footprint`; written in one call (Zarr compresses the chunks concurrently)."""
        _, height, width = self.footprints.shape
        slab = np.zeros((len(placed), height, width), np.float32)
        for full, (y0, x0, values) in zip(slab, placed, strict=True):
            h, w = values.shape
            full[y0:y0 + h, x0:x0 + w] = values
        self.footprints[first:first + len(placed)] = slab

    def put_traces(self, traces: np.ndarray) -> None:
        """All traces ``(K, T)`` float32."""
        if traces.shape != self.traces.shape:
            raise ValueError(f"traces must be {self.traces.shape}, got {traces.shape}")
        if traces.size:
            self.traces[...] = traces.astype(np.float32)

    def put_image(self, name: str, image: np.ndarray) -> None:
        """One of :data:`IMAGE_NAMES`, ``(H, W)`` float32."""
        if name not in IMAGE_NAMES:
            raise ValueError(f"unknown image {name!r}")
        self.group[name][...] = image.astype(np.float32)

    def put_neurons(self, fields: dict[str, np.ndarray]) -> None:
        """Per-neuron arrays named as in :data:`NEURON_FIELDS`."""
        for name, values in fields.items():
            array = self.group["neurons"][name]
            if array.shape[0]:
                array[...] = np.asarray(values, dtype=NEURON_FIELDS[name]).reshape(array.shape)

    def put_denoised(self, t0: int, data: np.ndarray) -> None:
        """Frames ``t0 .. t0 + len(data)`` of the denoised movie ``(t, H, W)``."""
        if self.denoised is None:
            raise ValueError("this result was created without a denoised array")
        self.denoised[t0:t0 + data.shape[0]] = data.astype(np.float32)


def consolidate_result(path: str | Path) -> None:
    """Index every array and group of the result in its root ``zarr.json`` (see the module
    docstring); again after any change, so the index never lags the arrays."""
    with warnings.catch_warnings():
        # zarr-python's note that consolidated metadata is not (yet) in the v3 specification:
        # it is an optional field other readers ignore
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(path))


def write_fluorescence(path: str | Path, fluorescence: np.ndarray, neuropil: np.ndarray,
                       info: dict[str, Any]) -> None:  # fmt: skip
    """Add ``fluorescence`` and ``neuropil`` ``(K, T)`` (read from the movie,
    :mod:`model.inference.extract`) to a written result; ``info`` goes to ``attrs.fluorescence``.
    Writing again replaces them with the same bytes."""
    group = zarr.open_group(str(path), mode="r+")
    _put_traces_like(group, {"fluorescence": fluorescence, "neuropil": neuropil})
    group.attrs["fluorescence"] = info
    consolidate_result(path)


def write_input_digest(path: str | Path, sha256: str) -> None:
    """Set ``attrs.input.sha256`` of a written result (the engine writes the result while the
    movie's digest is still being computed, :data:`DIGEST_PENDING` until then)."""
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["input"] = {**group.attrs["input"], "sha256": sha256}
    consolidate_result(path)


#: ``attrs.input.sha256`` of a result whose movie digest is not in yet (only ever seen in a
#: result whose writing was interrupted).
DIGEST_PENDING = "pending"


def _put_traces_like(group: zarr.Group, arrays: dict[str, np.ndarray]) -> None:
    """Write ``(K, T)`` arrays beside ``traces``, with its shape and chunks (replacing any)."""
    k, n_frames = group["traces"].shape
    for name, values in arrays.items():
        if values.shape != (k, n_frames):
            raise ValueError(f"{name} must be {(k, n_frames)}, got {values.shape}")
        array = group.create_array(name, shape=(k, n_frames), chunks=group["traces"].chunks,
                                   dtype="float32", fill_value=0.0, overwrite=True)  # fmt: skip
        if values.size:
            array[...] = values.astype(np.float32)


def write_deconvolved(path: str | Path, calcium: np.ndarray, spikes: np.ndarray,
                      info: dict[str, Any]) -> None:  # fmt: skip
    """Add ``calcium`` and ``spikes`` ``(K, T)`` (:mod:`model.inference.deconvolve`) to a written
    result; ``info`` goes to ``attrs.deconvolution``. Writing again gives the same bytes."""
    group = zarr.open_group(str(path), mode="r+")
    _put_traces_like(group, {"calcium": calcium, "spikes": spikes})
    group.attrs["deconvolution"] = info
    consolidate_result(path)


@dataclass(frozen=True)
class Result:
    """A result read back (footprints and traces loaded; ``denoised`` stays lazy)."""

    footprints: np.ndarray
    traces: np.ndarray
    images: dict[str, np.ndarray]
    neurons: dict[str, np.ndarray]
    attrs: dict[str, Any]
    denoised: Any | None
    fluorescence: np.ndarray | None = None
    neuropil: np.ndarray | None = None
    calcium: np.ndarray | None = None
    spikes: np.ndarray | None = None

    @property
    def n_neurons(self) -> int:
        return int(self.footprints.shape[0])

    @property
    def corrected(self) -> np.ndarray | None:
        """``fluorescence - coefficient * neuropil`` (``None`` when the result has neither)."""
        if self.fluorescence is None or self.neuropil is None:
            return None
        coefficient = float(self.attrs.get("fluorescence", {}).get("coefficient", 0.7))
        return self.fluorescence - coefficient * self.neuropil

    @property
    def demixed(self) -> np.ndarray | None:
        """:attr:`corrected` with overlapping cells separated by their footprints
        (:func:`model.inference.extract.demix`); ``None`` when the result has no fluorescence."""
        corrected = self.corrected
        if corrected is None:
            return None
        from model.inference.extract import demix

        return demix(corrected, self.footprints)


def read_result(path: str | Path) -> Result:
    """Open a result group written by :class:`ResultWriter`.

    Raises
    ------
    ValueError
        If ``path`` is not a result group or has another schema version.
    """
    try:
        group = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise ValueError(f"{path} is not a caimx result (no Zarr group)") from exc
    attrs = dict(group.attrs)
    if attrs.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: result schema {attrs.get('schema_version')!r} is not "
                         f"{SCHEMA_VERSION!r}")
    return Result(
        footprints=group["footprints"][...],
        traces=group["traces"][...],
        images={name: group[name][...] for name in IMAGE_NAMES
                if name in group},  # results older than an image lack it
        neurons={name: group["neurons"][name][...] for name in NEURON_FIELDS
                 if name in group["neurons"]},  # results older than a field lack it
        attrs=attrs,
        denoised=group.get("denoised", None),
        fluorescence=group["fluorescence"][...] if "fluorescence" in group else None,
        neuropil=group["neuropil"][...] if "neuropil" in group else None,
        calcium=group["calcium"][...] if "calcium" in group else None,
        spikes=group["spikes"][...] if "spikes" in group else None,
    )
