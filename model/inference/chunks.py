"""Per-chunk partial results on disk: written atomically, byte-identical when a chunk is re-run.

A chunk folder ``<work_dir>/chunks/<chunk id>/`` holds ``.npy`` files (``np.save`` output depends
only on the array) and a ``meta.json`` with sorted keys. It is written to a temporary sibling and
renamed into place, so a reader never sees half a chunk and a retried chunk replaces it with the
same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.inference.decide import Candidates

SHIFTS_FILE = "shifts.npy"
CANDIDATE_FIELDS = ("tile", "channel", "bbox", "mask_offsets", "masks", "traces", "snr")
IMAGE_PLANES = ("movie_sum", "movie_max", "attention_sum",
                "correlation_pixel_power", "correlation_cross", "correlation_neighbourhood_power")
"""The planes of :attr:`ChunkResult.images`, per tile; chunks written before the correlation
image have the first three only."""


@dataclass(frozen=True)
class ChunkResult:
    """What one chunk found.

    Attributes
    ----------
    chunk_id : str
    window : int
    tiles : tuple of int
    candidates : Candidates
    images : ndarray, shape (n_tiles, 6, S, S), float32
        Per tile (:data:`IMAGE_PLANES`), over the window's owned frames: the movie's sum
        (movie-range units), its per-frame maximum, the network attention's sum, and the three
        moments of the correlation image (:func:`model.inference.correlation.window_moments`).
    denoised : ndarray or None, shape (n_tiles, n_owned_frames, S, S), float32
    shifts : ndarray or None, shape (t, 2), float64
        Motion shifts of movie frames ``first_frame .. first_frame + t`` (the window's frames),
        kept so the fluorescence pass moves every frame as the network's input was moved.
    network : str
        What computed the network's outputs (the predictor's ``runtime``: framework, version,
        device); empty when unknown.
    """

    chunk_id: str
    window: int
    tiles: tuple[int, ...]
    candidates: Candidates
    images: np.ndarray
    denoised: np.ndarray | None = None
    first_frame: int = 0
    shifts: np.ndarray | None = None
    network: str = ""


def chunk_dir(work_dir: str | Path, chunk_id: str) -> Path:
    return Path(work_dir) / "chunks" / chunk_id


def write_chunk(work_dir: str | Path, result: ChunkResult) -> Path:
    """Write ``result`` atomically; returns its folder."""
    final = chunk_dir(work_dir, result.chunk_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{result.chunk_id}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name in CANDIDATE_FIELDS:
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(result.candidates, name)))
    np.save(tmp / "images.npy", np.ascontiguousarray(result.images, dtype=np.float32))
    if result.denoised is not None:
        np.save(tmp / "denoised.npy", np.ascontiguousarray(result.denoised, dtype=np.float32))
    meta = {"chunk_id": result.chunk_id, "window": result.window, "tiles": list(result.tiles),
            "n_candidates": len(result.candidates), "first_frame": result.first_frame}
    if result.network:
        meta["network"] = result.network
    if result.shifts is not None:
        np.save(tmp / SHIFTS_FILE, np.ascontiguousarray(result.shifts, dtype=np.float64))
    (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def chunk_done(work_dir: str | Path, chunk_id: str) -> bool:
    """Whether the chunk's partial result is complete on disk."""
    return (chunk_dir(work_dir, chunk_id) / "meta.json").is_file()


def read_chunk(work_dir: str | Path, chunk_id: str) -> ChunkResult:
    """Read a chunk written by :func:`write_chunk`."""
    folder = chunk_dir(work_dir, chunk_id)
    if not chunk_done(work_dir, chunk_id):
        raise FileNotFoundError(f"chunk {chunk_id} has no result in {folder}")
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    cands = Candidates(**{name: np.load(folder / f"{name}.npy") for name in CANDIDATE_FIELDS})
    denoised = np.load(folder / "denoised.npy") if (folder / "denoised.npy").exists() else None
    shifts = np.load(folder / SHIFTS_FILE) if (folder / SHIFTS_FILE).is_file() else None
    return ChunkResult(chunk_id=meta["chunk_id"], window=meta["window"], tiles=tuple(meta["tiles"]),
                       candidates=cands, images=np.load(folder / "images.npy"), denoised=denoised,
                       first_frame=int(meta.get("first_frame", 0)), shifts=shifts,
                       network=str(meta.get("network", "")))


def read_shifts(work_dir: str | Path, chunk_id: str) -> tuple[int, np.ndarray] | None:
    """``(first_frame, shifts)`` of a written chunk; None when it was not motion-corrected."""
    folder = chunk_dir(work_dir, chunk_id)
    if not (folder / SHIFTS_FILE).is_file():
        return None
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return int(meta["first_frame"]), np.load(folder / SHIFTS_FILE)
