"""A compact, browser-sized view of a result: mean image as PNG, neuron contours, short traces.

Footprints are read one neuron at a time (chunks ``(1, H, W)``), so memory stays small.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from PIL import Image
from skimage.measure import approximate_polygon, find_contours

from model.exports.source import recorded_fs

#: Backgrounds the web page can show under the contours: (name in the preview, result array).
PREVIEW_IMAGES = (("mean", "mean_image"), ("correlation", "correlation_image"),
                  ("max", "max_projection"))


def image_png(image: np.ndarray, *, max_side: int = 512) -> tuple[str, float]:
    """``image`` (H, W) as a base64 grayscale PNG (1st..99.5th percentile stretched).

    Returns the PNG and the scale (PNG pixels per image pixel, <= 1).
    """
    finite = np.nan_to_num(image.astype(np.float64))
    low, high = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
    scaled = np.clip((finite - low) / max(high - low, 1e-12), 0, 1)
    picture = Image.fromarray((scaled * 255).astype(np.uint8), mode="L")
    scale = min(1.0, max_side / max(image.shape))
    if scale < 1.0:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        picture = picture.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii"), scale


def contours(footprint: np.ndarray, *, tolerance: float = 0.5) -> list[list[list[float]]]:
    """Outlines of ``footprint > 0`` as closed polygons of ``[x, y]`` pixel coordinates."""
    padded = np.pad(footprint > 0, 1).astype(np.float32)
    polygons = []
    for line in find_contours(padded, 0.5):
        line = approximate_polygon(line - 1.0, tolerance=tolerance)
        polygons.append([[round(float(x), 2), round(float(y), 2)] for y, x in line])
    return polygons


def downsample(traces: np.ndarray, max_points: int) -> tuple[np.ndarray, int]:
    """Block means of ``traces`` (K, T), at most ``max_points`` columns; returns (blocks, step)."""
    n_frames = traces.shape[1]
    step = max(1, int(np.ceil(n_frames / max_points)))
    if step == 1:
        return traces, 1
    usable = (n_frames // step) * step
    blocks = traces[:, :usable].reshape(traces.shape[0], -1, step).mean(axis=2)
    if usable < n_frames:
        blocks = np.concatenate([blocks, traces[:, usable:].mean(axis=1, keepdims=True)], axis=1)
    return blocks, step


def denoised_traces(group: zarr.Group, *, frames_per_read: int = 64) -> np.ndarray | None:
    """Footprint-weighted mean of the ``denoised`` movie per neuron and frame, (K, T) float32.

    None when the result holds no denoised movie. Reads the movie once, a block of frames at a
    time; footprints are kept sparse.
    """
    if "denoised" not in group:
        return None
    from scipy import sparse

    footprints = group["footprints"]
    k, height, width = footprints.shape
    rows = [sparse.csr_matrix(np.asarray(footprints[i], np.float32).reshape(1, -1))
            for i in range(k)]
    weights = sparse.vstack(rows).tocsr() if rows else sparse.csr_matrix((0, height * width))
    norm = np.asarray(weights.sum(axis=1)).ravel()
    norm[norm == 0] = 1.0
    movie = group["denoised"]
    n_frames = movie.shape[0]
    out = np.zeros((k, n_frames), np.float32)
    for t0 in range(0, n_frames, frames_per_read):
        block = np.asarray(movie[t0:t0 + frames_per_read], np.float32).reshape(-1, height * width)
        out[:, t0:t0 + len(block)] = (weights @ block.T) / norm[:, None]
    return out


def build_preview(result: str | Path, *, max_side: int = 512, max_points: int = 2000) -> dict:
    """The JSON document behind ``GET /v1/jobs/{id}/preview``.

    Keys: ``shape`` [T, H, W], ``fs`` (or null), ``image`` {``png`` (base64), ``scale``,
    ``width``, ``height``} (the mean image), ``images`` (the same for each of
    :data:`PREVIEW_IMAGES` the result holds, by name), ``trace_step`` (frames per trace point),
    ``neurons``: one object per neuron with ``id``, ``centroid`` [y, x], ``area``, ``snr``,
    ``contours`` (polygons of [x, y] in image pixels) and ``trace`` (block means,
    ``trace_step`` frames each). When the result holds the denoised movie (``has_denoised``),
    each neuron also has ``denoised_trace``: the footprint-weighted mean of the denoised movie
    (movie-range units), in the same blocks.
    """
    group = zarr.open_group(str(result), mode="r")
    attrs = dict(group.attrs)
    footprints = group["footprints"]
    k, height, width = footprints.shape
    traces, step = downsample(np.asarray(group["traces"][...], np.float32), max_points)
    denoised = denoised_traces(group)
    if denoised is not None:
        denoised, _ = downsample(denoised, max_points)
    backgrounds = {}
    for name, key in PREVIEW_IMAGES:
        if key in group:  # results made before the correlation image lack it
            png, scale = image_png(np.asarray(group[key][...]), max_side=max_side)
            backgrounds[name] = {"png": png, "scale": scale, "width": int(width),
                                 "height": int(height)}
    centroid = group["neurons/centroid"][...]
    area, snr = group["neurons/area"][...], group["neurons/snr"][...]
    neurons: list[dict[str, Any]] = []
    for i in range(k):
        neurons.append({
            "id": i,
            "centroid": [round(float(v), 2) for v in centroid[i]],
            "area": int(area[i]),
            "snr": round(float(snr[i]), 3),
            "contours": contours(np.asarray(footprints[i])),
            "trace": [round(float(v), 5) for v in traces[i]],
        })
        if denoised is not None:
            neurons[-1]["denoised_trace"] = [round(float(v), 5) for v in denoised[i]]
    return {
        "shape": [int(group["traces"].shape[1]), int(height), int(width)],
        "fs": recorded_fs(attrs),
        "model": {key: (attrs.get("model") or {}).get(key) for key in ("name", "version")},
        "input": (attrs.get("input") or {}).get("name"),
        "image": backgrounds["mean"],
        "images": backgrounds,
        "trace_step": step,
        "has_denoised": denoised is not None,
        "neurons": neurons,
    }


def cached_preview(result: str | Path, *, max_side: int = 512, max_points: int = 2000) -> dict:
    """:func:`build_preview`, kept as JSON in ``<result parent>/exports/`` after the first call."""
    path = Path(result).parent / "exports" / f"preview-{max_side}-{max_points}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    preview = build_preview(result, max_side=max_side, max_points=max_points)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp",
                                     encoding="utf-8") as handle:  # fmt: skip
        json.dump(preview, handle)
    os.replace(handle.name, path)
    return preview
