"""Scanbox ``.sbx`` movies with their ``.mat`` info file.

Layout (Scanbox, Neurolabware): the ``.sbx`` file is raw little-endian uint16, frame after frame;
inside a frame, rows, then columns, then channels (``(T, rows, cols, channels)`` in C order).
Values are stored inverted, ``65535 - value``. ``info.sz`` gives ``(rows, cols)``; the channel
count is ``info.chan.nchan`` (newer versions) or follows ``info.channels`` (1: both PMTs, 2 or 3:
one); the frame rate is ``info.resfreq / rows``, doubled in bidirectional mode (``scanmode 0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model.io.base import MovieReader, copy_and_release
from model.io.errors import MovieFormatError


def info_path(path: Path) -> Path:
    return path.with_suffix(".mat")


def read_info(path: Path) -> Any:
    from scipy.io import loadmat

    mat = info_path(path)
    if not mat.is_file():
        raise MovieFormatError(
            f"{path.name!r} is a Scanbox movie without its info file {mat.name!r}; put both "
            "side by side"
        )
    try:
        info = loadmat(mat, squeeze_me=True, struct_as_record=False).get("info")
    except (ValueError, OSError, TypeError) as exc:
        raise MovieFormatError(f"{mat.name!r} is not a readable Scanbox info file ({exc})") from exc
    if info is None:
        raise MovieFormatError(f"{mat.name!r} has no 'info' structure")
    return info


def _field(info: Any, name: str, default: Any = None) -> Any:
    return getattr(info, name, default)


def n_channels(info: Any) -> int:
    chan = _field(info, "chan")
    if chan is not None and _field(chan, "nchan") is not None:
        return int(_field(chan, "nchan"))
    channels = _field(info, "channels")
    if channels is None:
        return 1
    return {1: 2, 2: 1, 3: 1}.get(int(channels), 1)


def frame_rate(info: Any, rows: int) -> float | None:
    resfreq = _field(info, "resfreq")
    if resfreq is None or rows <= 0:
        return None
    bidirectional = int(_field(info, "scanmode", 1)) == 0
    return float(resfreq) / rows * (2 if bidirectional else 1)


class SbxMovie(MovieReader):
    """One channel of a Scanbox recording, memory-mapped and un-inverted on read.

    Parameters
    ----------
    path
        The ``.sbx`` file (its ``.mat`` info file lies next to it), or the ``.mat`` file.
    channel
        Which PMT channel, when the recording has two (default 0).
    """

    def __init__(self, path: Path, *, channel: int | None = None, fps: float | None = None) -> None:
        path = path.with_suffix(".sbx") if path.suffix.lower() == ".mat" else path
        info = read_info(path)
        size = np.atleast_1d(_field(info, "sz", []))
        if size.size != 2:
            raise MovieFormatError(f"{info_path(path).name!r} has no frame size 'sz'")
        rows, cols = int(size[0]), int(size[1])
        planes = _field(info, "otparam")
        if planes is not None and np.size(planes) >= 3 and int(np.ravel(planes)[2]) > 1:
            raise MovieFormatError(
                f"{path.name!r} is a volumetric (optotune) recording; caimx reads one plane"
            )
        nchan = n_channels(info)
        channel = 0 if channel is None else int(channel)
        if not 0 <= channel < nchan:
            raise MovieFormatError(f"{path.name!r} has {nchan} channel(s); {channel} is not one")
        frame_bytes = rows * cols * nchan * 2
        n_bytes = path.stat().st_size
        if n_bytes % frame_bytes:
            raise MovieFormatError(
                f"{path.name!r} is {n_bytes} bytes, not a whole number of {rows}x{cols}x{nchan} "
                "frames: truncated, or the info file belongs to another recording"
            )
        frames = n_bytes // frame_bytes
        self._raw = np.memmap(path, dtype="<u2", mode="r", shape=(frames, rows, cols, nchan))
        self._channel = channel
        super().__init__(path, shape=(frames, rows, cols), dtype=np.dtype(np.uint16),
                         fps=frame_rate(info, rows) or fps)  # fmt: skip
        self.concurrent_reads = True  # a memory map

    def _read(self, t0: int, t1: int, y: slice, x: slice) -> np.ndarray:
        return np.uint16(65535) - copy_and_release(self._raw, self._raw[t0:t1, y, x, self._channel])

    def close(self) -> None:
        self._raw = None  # type: ignore[assignment]
