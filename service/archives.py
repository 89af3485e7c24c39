"""Uploaded ``.zip`` archives: a folder of TIFF files or a Zarr store sent as one file.

A movie that is a folder (a TIFF series, a Zarr store) can be uploaded zipped, by multipart or
tus. The archive is recognised from its first bytes and unpacked next to the upload, once (later
jobs on the same tus upload reuse the unpacked folder), and the movie is the folder inside it:

- the archive is checked from its central directory **before** anything is written: no absolute
  paths, drive letters, ``..``, backslashes or NUL bytes in names, no symlinks or other special
  files, no encrypted or duplicate entries, at most :data:`MAX_ENTRIES` entries, and the sum of the
  declared uncompressed sizes at most the upload limit (a zip bomb is refused, 413);
- entries are then written one by one, each path checked again to stay inside the target, and
  the bytes counted as they come out of the decompressor, so an entry that unpacks to more than
  it declared is cut off; a CRC mismatch refuses the archive;
- the files are unpacked into a temporary folder that is renamed into place when complete.

macOS ``__MACOSX/`` entries and ``.DS_Store`` files are skipped. The movie is the first folder,
going down through folders that hold nothing but one folder, that is a Zarr store or holds TIFF
files; an archive of one movie file (``.tif``, ``.h5``...) is that file.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

from model.io.tiff_series import tiff_files
from service.errors import UnsafeArchiveError, UploadTooLargeError
from service.sources import ResolvedSource

ZIP_MAGIC = b"PK\x03\x04"
MAX_ENTRIES = 100_000
BLOCK = 4 * 1024 * 1024
SKIPPED = ("__MACOSX",)
SKIPPED_FILES = (".DS_Store",)


def is_zip(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4) == ZIP_MAGIC


def _entry_path(name: str) -> PurePosixPath:
    if "\x00" in name or "\\" in name:
        raise UnsafeArchiveError(f"the archive entry {name!r} has a NUL byte or a backslash in its "
                                 "name")  # fmt: skip
    pure = PurePosixPath(name)
    if pure.is_absolute() or (pure.parts and len(pure.parts[0]) == 2 and pure.parts[0][1] == ":"):
        raise UnsafeArchiveError(f"the archive entry {name!r} has an absolute path")
    if ".." in pure.parts:
        raise UnsafeArchiveError(f"the archive entry {name!r} climbs out of the archive ('..')")
    return pure


def _skipped(pure: PurePosixPath) -> bool:
    return bool(pure.parts) and (pure.parts[0] in SKIPPED or pure.name in SKIPPED_FILES)


def check_archive(archive: zipfile.ZipFile, *, max_bytes: int) -> list[zipfile.ZipInfo]:
    """The entries to unpack, after every check that needs no unpacking (see the module text).

    Raises
    ------
    UnsafeArchiveError (422), UploadTooLargeError (413)
    """
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise UnsafeArchiveError(f"the archive has {len(infos)} entries; at most {MAX_ENTRIES} "
                                 "are unpacked")  # fmt: skip
    seen: set[PurePosixPath] = set()
    wanted, total = [], 0
    for info in infos:
        pure = _entry_path(info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise UnsafeArchiveError(f"the archive entry {info.filename!r} is a symbolic link; "
                                     "archive the files themselves")  # fmt: skip
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(f"the archive entry {info.filename!r} is not a file or folder")
        if info.flag_bits & 0x1:
            raise UnsafeArchiveError(f"the archive entry {info.filename!r} is encrypted")
        if pure in seen:
            raise UnsafeArchiveError(f"the archive holds {info.filename!r} twice")
        seen.add(pure)
        if _skipped(pure) or info.is_dir() or not pure.parts:
            continue
        total += info.file_size
        if total > max_bytes:
            raise UploadTooLargeError(
                f"the archive unpacks to more than this service accepts ({max_bytes} bytes); it "
                "was not unpacked", max_bytes=max_bytes)  # fmt: skip
        wanted.append(info)
    if not wanted:
        raise UnsafeArchiveError("the archive holds no files")
    return wanted


def _extract(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], target: Path,
             max_bytes: int) -> None:  # fmt: skip
    root = target.resolve()
    written = 0
    for info in infos:
        dest = (target / info.filename).resolve()
        if not dest.is_relative_to(root):
            raise UnsafeArchiveError(f"the archive entry {info.filename!r} leads outside the "
                                     "archive")  # fmt: skip
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            out = open(dest, "xb")  # noqa: SIM115 - closed below
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise UnsafeArchiveError(f"the archive entry {info.filename!r} clashes with another "
                                     "entry (a file and a folder of one name)") from exc
        left = info.file_size
        with archive.open(info) as source, out:
            while block := source.read(min(BLOCK, left + 1)):
                left -= len(block)
                written += len(block)
                if left < 0 or written > max_bytes:
                    raise UnsafeArchiveError(f"the archive entry {info.filename!r} unpacks to "
                                             "more bytes than it declares")  # fmt: skip
                out.write(block)


def movie_root(folder: Path) -> Path:
    """The movie in an unpacked archive: a Zarr store, a folder of TIFFs, or one movie file."""
    here = folder
    while True:
        if any((here / marker).exists() for marker in ("zarr.json", ".zarray", ".zgroup")):
            return here
        if tiff_files(here):
            return here
        children = [c for c in here.iterdir() if not c.name.startswith(".")]
        if len(children) == 1 and children[0].is_dir():
            here = children[0]
            continue
        if len(children) == 1 and children[0].is_file():
            return children[0]
        return here  # open_movie says what is wrong with it


def unpack(archive_path: Path, target: Path, *, max_bytes: int) -> Path:
    """Unpack ``archive_path`` into ``target`` (once) and return the movie in it.

    Raises
    ------
    UnsafeArchiveError (422), UploadTooLargeError (413)
    """
    if not target.is_dir():
        try:
            archive = zipfile.ZipFile(archive_path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise UnsafeArchiveError(f"the zip archive could not be read ({exc})") from exc
        with archive:
            infos = check_archive(archive, max_bytes=max_bytes)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                _extract(archive, infos, staging, max_bytes)
                os.rename(staging, target)
            except (zipfile.BadZipFile, EOFError) as exc:  # CRC or truncated data
                raise UnsafeArchiveError(f"the zip archive is damaged ({exc})") from exc
            except OSError:
                if not target.is_dir():  # not a concurrent unpack that finished first
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return movie_root(target)


def unpacked_folder(upload: Path) -> Path:
    """Where an uploaded archive is unpacked: next to it, ``<file name>.unpacked``."""
    return upload.with_name(upload.name + ".unpacked")


def unpack_upload(source: ResolvedSource, *, max_bytes: int) -> ResolvedSource:
    """``source`` itself, or, for an uploaded zip archive, the movie unpacked from it."""
    if source.record.get("kind") not in ("multipart", "upload") or not is_zip(Path(source.path)):
        return source
    target = unpacked_folder(Path(source.path))
    root = unpack(Path(source.path), target, max_bytes=max_bytes)
    inside = root.relative_to(target).as_posix()
    return replace(source, path=root,
                   record={**source.record, "archive": "zip", "movie_in_archive": inside})
