"""Suite2p layout: ``suite2p/plane0/{stat,F,Fneu,spks,iscell,ops}.npy`` that the Suite2p GUI opens.

What each file holds (K neurons, T frames, H x W pixels):

- ``stat.npy``: object array of K dicts with ``ypix``, ``xpix`` (int32), ``lam`` (float32, the
  footprint's values), ``med`` ([y, x] median pixel), ``npix``, ``npix_norm``, ``radius``,
  ``aspect_ratio``, ``compact``, ``footprint``, ``skew``, ``std``, ``snr``, ``overlap``,
  ``soma_crop``.
- ``F.npy``: each neuron's fluorescence read from the movie (``fluorescence``, footprint-weighted
  mean of the motion-corrected frames, the movie's units) ``(K, T)`` float32.
- ``Fneu.npy``: the neuropil ring's mean (``neuropil``), so Suite2p's ``F - 0.7 * Fneu`` is the
  result's corrected trace. (Results made before fluorescence was read: the caimx network traces
  as ``F`` and zeros as ``Fneu``.)
- ``spks.npy``: OASIS's deconvolved activity (``spikes``) ``(K, T)`` float32, as Suite2p's own;
  zeros for results without it (made without ``oasis-deconv``), since the GUI needs the file.
- ``iscell.npy``: ``(K, 2)``: 1 (every neuron caimx keeps is a cell) and the tile evidence (0..1).
- ``ops.npy``: a dict with ``Ly``, ``Lx``, ``nframes``, ``fs``, ``tau``, ``meanImg``,
  ``meanImgE``, ``max_proj``, ``Vcorr`` (the result's ``correlation_image``, the GUI's
  "correlation map"), ``xrange``, ``yrange`` and the caimx result attributes (``caimx``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, stats

from model.exports.source import ExportSource

PLANE_DIR = Path("suite2p") / "plane0"
DEFAULT_TAU = 1.0
"""Indicator decay time in s that Suite2p's GUI uses to bin traces (its own default)."""


def _shape_stats(ypix: np.ndarray, xpix: np.ndarray, lam: np.ndarray) -> dict[str, float]:
    """Radius, aspect ratio and compactness in the spirit of Suite2p's ``roi_stats``."""
    weights = lam / lam.sum()
    coords = np.stack([ypix, xpix]).astype(np.float64)
    centre = coords @ weights
    centred = coords - centre[:, None]
    cov = (centred * weights) @ centred.T
    eig = np.sort(np.clip(np.linalg.eigvalsh(cov), 1e-6, None))[::-1]
    radii = 2.0 * np.sqrt(eig)  # two standard deviations along each axis
    radius = float(np.sqrt(radii[0] * radii[1]))
    aspect = float(2.0 * radii[0] / (0.01 + radii[0] + radii[1]))
    med = np.array([np.median(ypix), np.median(xpix)])
    dist = np.hypot(ypix - med[0], xpix - med[1])
    n = len(ypix)
    side = int(np.ceil(np.sqrt(n))) + 2
    grid = np.mgrid[-side:side + 1, -side:side + 1]
    disk = np.sort(np.hypot(grid[0], grid[1]).ravel())[:n]  # the n pixels nearest a centre
    compact = float(dist.mean() / max(disk.mean(), 1e-6)) if n > 1 else 1.0
    return {"radius": radius, "aspect_ratio": aspect, "compact": max(compact, 1.0)}


def roi_stats(footprints: np.ndarray, traces: np.ndarray, snr: np.ndarray) -> list[dict]:
    """One Suite2p ``stat`` dict per footprint ``(K, H, W)``."""
    stat = []
    overlap_count = (footprints > 0).sum(axis=0)
    for k, footprint in enumerate(footprints):
        ypix, xpix = np.nonzero(footprint > 0)
        lam = footprint[ypix, xpix].astype(np.float32)
        if len(ypix) == 0:  # an empty footprint: keep the index, describe it as one pixel
            ypix, xpix, lam = np.zeros(1, int), np.zeros(1, int), np.zeros(1, np.float32)
        entry: dict[str, Any] = {
            "ypix": ypix.astype(np.int32),
            "xpix": xpix.astype(np.int32),
            "lam": lam,
            "med": [int(np.median(ypix)), int(np.median(xpix))],
            "npix": len(ypix),
            "footprint": 1.0,
            "soma_crop": np.ones(len(ypix), bool),
            "overlap": overlap_count[ypix, xpix] > 1,
            "std": float(np.std(traces[k])),
            "skew": float(stats.skew(traces[k])) if np.std(traces[k]) > 0 else 0.0,
            "snr": float(snr[k]),
        }
        entry.update(_shape_stats(ypix, xpix, np.maximum(lam, 1e-6)))
        stat.append(entry)
    mean_npix = np.mean([s["npix"] for s in stat]) if stat else 1.0
    for entry in stat:
        entry["npix_norm"] = float(entry["npix"] / mean_npix)
    return stat


def enhanced_mean_image(mean_image: np.ndarray, *, sigma: float = 8.0) -> np.ndarray:
    """High-pass filtered, contrast-normalized mean image in [0, 1] (Suite2p's "meanImgE")."""
    image = mean_image.astype(np.float64)
    high = image - ndimage.gaussian_filter(image, sigma)
    local = np.sqrt(ndimage.gaussian_filter(high**2, sigma)) + 1e-9
    enhanced = np.clip(high / local, -6, 6)
    low, top = np.percentile(enhanced, [1, 99])
    return np.clip((enhanced - low) / max(top - low, 1e-9), 0, 1).astype(np.float32)


def write_suite2p(source: ExportSource, folder: str | Path) -> Path:
    """Write the Suite2p files under ``folder/suite2p/plane0``; returns that plane folder."""
    result = source.result
    plane = Path(folder) / PLANE_DIR
    plane.mkdir(parents=True, exist_ok=True)
    n_frames, height, width = source.movie_shape
    traces = result.traces.astype(np.float32)
    evidence = np.clip(source.neuron("tile_evidence").astype(np.float32), 0, 1)
    stat = roi_stats(result.footprints, traces, source.neuron("snr"))
    stat_array = np.empty(len(stat), dtype=object)
    stat_array[:] = stat
    mean_image = result.images["mean_image"].astype(np.float32)
    ops = {
        "Ly": height, "Lx": width, "nframes": n_frames, "fs": source.fs, "tau": DEFAULT_TAU,
        "nplanes": 1, "nchannels": 1, "aspect": 1.0,
        "meanImg": mean_image, "meanImgE": enhanced_mean_image(mean_image),
        "max_proj": result.images["max_projection"].astype(np.float32),
        "xrange": [0, width], "yrange": [0, height],
        "save_path": str(plane), "data_path": [], "filelist": [source.input_name],
        "caimx": {"fs_known": source.fs_known, **result.attrs},
    }
    if "correlation_image" in result.images:  # results made before it lack it
        ops["Vcorr"] = result.images["correlation_image"].astype(np.float32)
    np.save(plane / "stat.npy", stat_array, allow_pickle=True)
    if result.fluorescence is not None and result.neuropil is not None:
        np.save(plane / "F.npy", result.fluorescence.astype(np.float32))
        np.save(plane / "Fneu.npy", result.neuropil.astype(np.float32))
    else:  # results made before fluorescence was read from the movie
        np.save(plane / "F.npy", traces)
        np.save(plane / "Fneu.npy", np.zeros_like(traces))
    spikes = result.spikes.astype(np.float32) if result.spikes is not None else None
    np.save(plane / "spks.npy", spikes if spikes is not None else np.zeros_like(traces))
    np.save(plane / "iscell.npy", np.stack([np.ones(len(stat), np.float32), evidence], axis=1)
            .reshape(len(stat), 2))
    np.save(plane / "ops.npy", np.array(ops, dtype=object), allow_pickle=True)
    return plane
