"""Run Suite2p on one movie; executed by the Suite2p benchmark venv, never by the project's venv.

Suite2p is a benchmark dependency only; it lives in its own venv (``.benchvenv/suite2p``, see
``benchmarks/suite2p_compare.py`` for how it is made). This script is started by
``benchmarks/suite2p_compare.py`` once per movie, so its peak RSS is Suite2p's alone:

    .benchvenv/suite2p/bin/python benchmarks/suite2p_runner.py MOVIE_DIR OUT_DIR \\
        --fs 30 --tau 0.4 --diameter 12.5

``MOVIE_DIR`` holds the movie's TIFF (and nothing else Suite2p reads). Suite2p writes
``OUT_DIR/suite2p/plane0/{stat,F,Fneu,iscell,spks,ops}.npy``. The last line on stdout is a JSON
object: versions, seconds spent importing and running, this process's peak RSS, and ``no_rois``
(true when Suite2p stopped because detection found no ROI; it writes no output files then).

Settings: Suite2p's defaults (sparsery detection, built-in classifier, neuropil coefficient 0.7)
with the recording's ``fs``, the indicator's decay time as ``tau``, the soma diameter in pixels
(``diameter``, and sparsery's ``spatial_scale`` nearest to it: its automatic estimate fails on
small movies and falls back to 6 pixels), rigid registration only (``nonrigid`` off: the movies
are small and have no motion) and the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path
from typing import Any

T_START = time.perf_counter()


def spatial_scale(diameter: float) -> int:
    """Sparsery's ``spatial_scale`` (1: 6, 2: 12, 3: 24, 4: 48 pixels) nearest to ``diameter``."""
    return int(min(4, max(1, round(math.log2(diameter / 6.0)) + 1)))


def settings_for(fs: float, tau: float, diameter: float) -> dict[str, Any]:
    """Suite2p's default settings with the movie's own frame rate, kinetics and cell size."""
    from suite2p.parameters import default_settings

    settings = default_settings()  # nested dicts; run_s2p merges only the top level
    settings["torch_device"] = "cpu"
    settings["fs"] = fs
    settings["tau"] = tau
    settings["diameter"] = [diameter, diameter]
    settings["detection"]["sparsery_settings"]["spatial_scale"] = spatial_scale(diameter)
    settings["registration"]["nonrigid"] = False
    return settings


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s values, nested dicts merged key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = (merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("movie_dir", type=Path, help="folder with the movie's TIFF")
    ap.add_argument("out_dir", type=Path, help="save_path0 of Suite2p")
    ap.add_argument("--fs", type=float, required=True, help="frame rate (Hz)")
    ap.add_argument("--tau", type=float, required=True, help="indicator decay time (s)")
    ap.add_argument("--diameter", type=float, required=True, help="soma diameter (pixels)")
    ap.add_argument("--settings", default=None,
                    help="JSON of Suite2p settings merged over these (nested dicts merge), "
                         "e.g. '{\"detection\": {\"threshold_scaling\": 0.5}}'")
    args = ap.parse_args()

    import importlib.metadata

    import suite2p
    import torch
    from suite2p.run_s2p import run_s2p

    settings = merge(settings_for(args.fs, args.tau, args.diameter),
                     json.loads(args.settings) if args.settings else {})
    import_s = time.perf_counter() - T_START
    rss_after_import_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out_dir.mkdir(parents=True, exist_ok=True)
    db = {"data_path": [str(args.movie_dir)], "save_path0": str(args.out_dir)}
    t0 = time.perf_counter()
    no_rois = False
    try:
        run_s2p(db=db, settings=settings)
    except ValueError as exc:  # Suite2p stops with an error when detection finds nothing
        if "no ROIs were found" not in str(exc):
            raise
        no_rois = True
    run_s = time.perf_counter() - t0
    print(json.dumps({
        "suite2p": getattr(suite2p, "version", None) or importlib.metadata.version("suite2p"),
        "torch": torch.__version__, "cellpose": importlib.metadata.version("cellpose"),
        "import_s": round(import_s, 2), "run_s": round(run_s, 2), "no_rois": no_rois,
        "rss_after_import_mb": round(rss_after_import_mb, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "plane_dir": str(args.out_dir / "suite2p" / "plane0"),
    }))


if __name__ == "__main__":
    main()
