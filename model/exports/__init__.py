"""Result groups written out in the formats other tools read (no TensorFlow here).

- ``nwb``: one NWB file (:mod:`model.exports.nwb`), opened by pynwb, NWB Widgets, DANDI.
- ``suite2p``: ``suite2p/plane0/*.npy`` (:mod:`model.exports.suite2p`), opened by the Suite2p GUI.
- ``tiff``: ``footprints.tif`` + ``traces.csv`` (:mod:`model.exports.tiff`), for ImageJ and Excel.

:func:`export_result` writes one format into a folder; :func:`build_download` makes the single
file a web client downloads (the NWB file, or a zip of the folder) and caches it next to the
result.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from model.exports.source import FALLBACK_FS, ExportSource, load_source

FORMATS = ("nwb", "suite2p", "tiff")
DOWNLOAD_NAMES = {"nwb": "result.nwb", "suite2p": "suite2p.zip", "tiff": "tiff.zip"}

__all__ = [
    "DOWNLOAD_NAMES", "FALLBACK_FS", "FORMATS", "ExportSource", "build_download",
    "export_result", "load_source",
]


def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    return format


def export_result(
    result: str | Path, out_dir: str | Path, *, format: str, fs: float | None = None
) -> Path:
    """Write the result group ``result`` as ``format`` into ``out_dir``.

    Returns the NWB file (``out_dir/<input stem>.nwb``), the Suite2p plane folder
    (``out_dir/suite2p/plane0``) or ``out_dir`` itself (tiff).

    Raises
    ------
    ValueError
        Unknown format, bad frame rate, or ``result`` is not a result group.
    """
    _check_format(format)
    source = load_source(result, fs=fs)
    out_dir = Path(out_dir)
    if format == "nwb":
        from model.exports.nwb import write_nwb

        stem = Path(source.input_name).stem if source.input_name != "<array>" else "result"
        return write_nwb(source, out_dir / f"{stem or 'result'}.nwb")
    if format == "suite2p":
        from model.exports.suite2p import write_suite2p

        return write_suite2p(source, out_dir)
    from model.exports.tiff import write_tiff

    return write_tiff(source, out_dir)


def download_path(result: str | Path, format: str, *, fs: float | None = None) -> Path:
    """Where :func:`build_download` caches ``format`` for the result group ``result``."""
    name = DOWNLOAD_NAMES[_check_format(format)]
    if fs is not None:
        stem, _, ext = name.partition(".")
        name = f"{stem}-{fs:g}fps.{ext}"
    return Path(result).parent / "exports" / name


def build_download(result: str | Path, format: str, *, fs: float | None = None) -> Path:
    """The file to download for ``format``: made once, then served from the cache.

    The file is built in a temporary folder beside the cache and moved into place atomically,
    so concurrent requests never see half a file (at worst both build it).
    """
    target = download_path(result, format, fs=fs)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        written = export_result(result, Path(tmp) / "out", format=format, fs=fs)
        if format == "nwb":
            os.replace(written, target)
            return target
        staged = Path(tmp) / target.name
        _zip_folder(Path(tmp) / "out", staged)
        os.replace(staged, target)
    return target


def _zip_folder(folder: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())


def remove_downloads(result: str | Path) -> None:
    """Delete the cached downloads of ``result`` (e.g. when the result is replaced)."""
    shutil.rmtree(Path(result).parent / "exports", ignore_errors=True)
