"""A small result group written with the real ResultWriter (no network needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.results import ResultWriter


def write_small_result(path: Path, *, fps: float | None = 30.0, k: int = 3, t: int = 50,
                       h: int = 40, w: int = 36, denoised: bool = False) -> Path:  # fmt: skip
    """A result group with ``k`` disc-shaped neurons and sine-like traces."""
    rng = np.random.default_rng(1)
    attrs = {
        "model": {"name": "deepcaimx-mini", "version": "1.0", "card": {}},
        "input": {"name": "movie.tif", "sha256": "ab" * 32, "shape": [t, h, w],
                  "dtype": "uint16", "fps": fps},
        "software": {"caimx": "0.1.0", "network": ["TensorFlow 2.21.0 SavedModel, CPU"]},
        "plan": {"movie_low": 10.0, "movie_high": 200.0},
    }
    writer = ResultWriter(path, movie_shape=(t, h, w), n_neurons=k, attrs=attrs,
                          with_denoised=denoised)
    yy, xx = np.mgrid[:h, :w]
    centres = [(8 + 9 * i, 6 + 10 * i) for i in range(k)]
    for i, (cy, cx) in enumerate(centres):
        disc = np.where((yy - cy) ** 2 + (xx - cx) ** 2 <= 9, 0.5 + 0.1 * i, 0.0)
        writer.put_footprint(i, 0, 0, disc.astype(np.float32))
    time = np.arange(t)
    traces = np.array([np.maximum(0, np.sin(time / (3 + i))) + 0.01 * rng.random(t)
                       for i in range(k)], np.float32).reshape(k, t)
    writer.put_traces(traces)
    if denoised:  # each neuron's disc lit with twice its trace
        movie = np.zeros((t, h, w), np.float32)
        for i, (cy, cx) in enumerate(centres):
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
            movie[:, disc] += 2 * traces[i][:, None]
        writer.put_denoised(0, movie)
    mean = 50 + 10 * rng.random((h, w))
    for cy, cx in centres:
        mean += 40 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6)
    writer.put_image("mean_image", mean)
    writer.put_image("max_projection", mean * 1.5)
    writer.put_image("attention_mean", rng.random((h, w)))
    writer.put_image("correlation_image", rng.uniform(-0.2, 1.0, (h, w)))
    writer.put_neurons({
        "centroid": np.array(centres, np.float32).reshape(k, 2), "area": np.full(k, 29),
        "snr": np.linspace(4, 8, k), "first_window": np.zeros(k), "n_windows": np.ones(k),
        "tile_evidence": np.linspace(0.5, 1, k),
    })
    return path
