"""MNIST reader: IDX files (raw or gzipped), validation, checksums and download.

The four files use the names of the original distribution::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

Any folder with these four names in the same IDX format (Fashion-MNIST, for
instance) can be read with ``load_mnist(path, verify=False)`` or with a
``checksums=`` table of its own. Only the standard library and NumPy are used;
there is no multiprocessing (the whole dataset fits in memory).

Checksums are MD5 digests of the *decompressed* IDX content, so the same table
holds for ``.gz`` and raw files and for any recompression of the ``.gz``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import socket
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "DEFAULT_MIRRORS",
    "MNIST",
    "MNIST_FILES",
    "MNIST_MD5",
    "DatasetError",
    "DownloadError",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "as_sequences",
    "download_mnist",
    "find_data_dir",
    "load_mnist",
    "read_idx",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Role -> file name without ``.gz`` (the original distribution's names).
MNIST_FILES: Mapping[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: File name without ``.gz`` -> MD5 of the decompressed IDX content.
MNIST_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: Base URLs tried in order by :func:`download_mnist`; each serves the four ``.gz`` files.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

DATA_ENV = "FASTLSTM_DATA"
MIRRORS_ENV = "FASTLSTM_MNIST_MIRRORS"
DEFAULT_DIR = "MNIST_data"

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension (N,)

# IDX type code -> big-endian dtype (the IDX format is big-endian throughout).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16


class DatasetError(ValueError):
    """A dataset file is missing, truncated, corrupt or fails its checksum.

    Attributes
    ----------
    path : pathlib.Path or None
        The file (or folder) the error is about.
    """

    def __init__(self, message: str, path: PathLike | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class DownloadError(DatasetError):
    """Every mirror failed for a file.

    Attributes
    ----------
    failures : list of (str, str)
        ``(url, reason)`` for each attempt, in the order tried.
    """

    def __init__(self, message: str, path: PathLike | None, failures: list[tuple[str, str]]) -> None:
        super().__init__(message, path)
        self.failures = failures


@dataclass(frozen=True)
class MNIST:
    """The four MNIST arrays, as stored in the files.

    Attributes
    ----------
    train_images : numpy.ndarray
        (60000, 28, 28) uint8, pixel values 0..255.
    train_labels : numpy.ndarray
        (60000,) uint8, digits 0..9.
    test_images : numpy.ndarray
        (10000, 28, 28) uint8.
    test_labels : numpy.ndarray
        (10000,) uint8.
    path : pathlib.Path
        The folder the files were read from.

    Other datasets in the same format (Fashion-MNIST) have other sizes only if
    their files say so; the shapes are whatever the IDX headers give.
    """

    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    path: Path

    def __repr__(self) -> str:
        return (
            f"MNIST(path={str(self.path)!r}, train={len(self.train_labels)}, "
            f"test={len(self.test_labels)}, image_shape={self.train_images.shape[1:]})"
        )


# ---------------------------------------------------------------------------
# Reading one IDX file
# ---------------------------------------------------------------------------


def _decompress_if_gzip(raw: bytes, path: Path) -> bytes:
    # Detect gzip by content, not by name: an IDX file starts with two zero bytes,
    # a gzip stream with 1f 8b, so a misnamed file is still read correctly.
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DatasetError(f"{path}: corrupt or truncated gzip data ({exc})", path) from exc


def _parse_idx(content: bytes, path: Path, magic: int | None) -> np.ndarray:
    if len(content) < 4:
        raise DatasetError(f"{path}: truncated: {len(content)} bytes, too short for an IDX header", path)
    found = int.from_bytes(content[:4], "big")
    if magic is not None and found != magic:
        raise DatasetError(f"{path}: wrong magic number 0x{found:08X}, expected 0x{magic:08X}", path)
    type_code, ndim = content[2], content[3]
    if content[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise DatasetError(f"{path}: not an IDX file (magic number 0x{found:08X})", path)
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DatasetError(f"{path}: truncated: {len(content)} bytes, the header alone needs {header}", path)
    dims = tuple(int.from_bytes(content[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(content) != expected:
        what = "truncated" if len(content) < expected else "size mismatch"
        raise DatasetError(
            f"{path}: {what}: header says shape {dims} ({expected} bytes), content has {len(content)} bytes",
            path,
        )
    count = expected - header
    flat = np.frombuffer(content, dtype=dtype, count=count // dtype.itemsize, offset=header)
    # astype copies: the result is writable, native-endian and owns its memory.
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def read_idx(file: PathLike, *, magic: int | None = None, md5: str | None = None) -> np.ndarray:
    """Read one IDX file, raw or gzipped.

    Parameters
    ----------
    file : str or os.PathLike
        Path of the file. Gzip is detected from the content, not the name.
    magic : int, optional
        Required magic number, e.g. ``0x00000803`` for MNIST images or
        ``0x00000801`` for labels. Any valid IDX type is accepted when None.
    md5 : str, optional
        Expected MD5 hex digest of the decompressed content. Not checked when None.

    Returns
    -------
    numpy.ndarray
        Array with the shape given by the header, native byte order, writable.

    Raises
    ------
    DatasetError
        If the file is missing, unreadable, not IDX, has the wrong magic number,
        is truncated or longer than its header says, or fails the checksum.
        The message names the file.
    """
    path = Path(file)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found", path) from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})", path) from exc
    content = _decompress_if_gzip(raw, path)
    del raw
    if md5 is not None:
        digest = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if digest != md5.lower():
            raise DatasetError(
                f"{path}: checksum mismatch: md5 of the decompressed content is {digest}, "
                f"expected {md5.lower()}. The file is corrupt or is not the expected file: "
                f"delete it and fetch it again (download=True, CLI --download), or pass "
                f"verify=False if it is another dataset in the same format.",
                path,
            )
    return _parse_idx(content, path, magic)


# ---------------------------------------------------------------------------
# Finding and loading the dataset
# ---------------------------------------------------------------------------


def _locate(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Map each role to its file in ``folder`` (``.gz`` preferred) and list the missing names."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, name in MNIST_FILES.items():
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            missing.append(f"{name}[.gz]")
    return found, missing


def _default_dir() -> Path:
    env = os.environ.get(DATA_ENV, "")
    return Path(env) if env else Path(DEFAULT_DIR)


def find_data_dir(path: PathLike | None = None) -> Path:
    """Return the folder that holds the four MNIST files.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder to use. When given it is the only place looked at, so a typo
        never silently falls back to another dataset. When None, the folder in
        ``$FASTLSTM_DATA`` (if set) and then ``./MNIST_data`` are tried.

    Returns
    -------
    pathlib.Path
        The first folder that has all four files (each ``.gz`` or raw).

    Raises
    ------
    DatasetError
        If no folder has them; the message lists each place tried and what
        was missing there, and how to get the files.
    """
    if path is not None:
        places = [(Path(path), "path argument")]
    else:
        places = []
        env = os.environ.get(DATA_ENV, "")
        if env:
            places.append((Path(env), f"${DATA_ENV}"))
        places.append((Path(DEFAULT_DIR), "default"))
    tried = []
    for folder, origin in places:
        if not folder.is_dir():
            tried.append(f"  {folder.absolute()} ({origin}): no such folder")
            continue
        _, missing = _locate(folder)
        if not missing:
            return folder
        tried.append(f"  {folder.absolute()} ({origin}): missing {', '.join(missing)}")
    hint = (
        f"Download them with load_mnist(..., download=True) or the CLI flag --download, "
        f"or point ${DATA_ENV} (or the path argument) at a folder that has them."
    )
    raise DatasetError(
        "MNIST files not found. Places tried:\n" + "\n".join(tried) + "\n" + hint,
        places[0][0],
    )


def _check_checksums(checksums: Mapping[str, str]) -> None:
    unknown = sorted(set(checksums) - set(MNIST_FILES.values()))
    if unknown:
        raise ValueError(
            f"checksums has unknown keys {unknown}; keys are the file names without .gz "
            f"{sorted(MNIST_FILES.values())} and values the md5 of the decompressed content"
        )


def load_mnist(
    path: PathLike | None = None,
    *,
    download: bool = False,
    mirrors: Sequence[str] | str | None = None,
    verify: bool = True,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> MNIST:
    """Read the MNIST training and test sets.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder with the four files. When None: ``$FASTLSTM_DATA``, then
        ``./MNIST_data`` (see :func:`find_data_dir`).
    download : bool, default False
        If files are missing, download the missing ones (existing files are
        never overwritten) into ``path``, or into ``$FASTLSTM_DATA`` / ``./MNIST_data``.
    mirrors : sequence of str or str, optional
        Base URLs for the download; see :func:`download_mnist`.
    verify : bool, default True
        Check each file's MD5 (of the decompressed content) against
        ``checksums``. Set False to read another dataset in the same format
        (Fashion-MNIST); the structure is still checked. Downloads are always verified.
    checksums : mapping of str to str, optional
        File name without ``.gz`` -> MD5 of its decompressed content. Defaults
        to :data:`MNIST_MD5`. A file without an entry fails verification.
    timeout : float, default 30.0
        Socket timeout in seconds for each download request.

    Returns
    -------
    MNIST
        ``train_images`` (N, 28, 28) uint8, ``train_labels`` (N,) uint8,
        ``test_images``, ``test_labels``; N = 60000 and 10000 for MNIST.

    Raises
    ------
    DatasetError
        Missing, truncated or corrupt file, checksum mismatch, image and label
        counts that differ, or a label outside 0..9. The message names the file.
    DownloadError
        ``download=True`` and every mirror failed for a file.
    """
    table = MNIST_MD5 if checksums is None else checksums
    _check_checksums(table)
    try:
        folder = find_data_dir(path)
    except DatasetError:
        if not download:
            raise
        folder = Path(path) if path is not None else _default_dir()
        download_mnist(folder, mirrors, checksums=table, timeout=timeout)
    files, _ = _locate(folder)

    arrays = {}
    for role, file in files.items():
        name = MNIST_FILES[role]
        md5 = None
        if verify:
            if name not in table:
                raise DatasetError(
                    f"{file}: no checksum known for {name}; pass checksums= with its md5 "
                    f"or verify=False to check only its structure",
                    file,
                )
            md5 = table[name]
        magic = IMAGES_MAGIC if role.endswith("images") else LABELS_MAGIC
        arrays[role] = read_idx(file, magic=magic, md5=md5)

    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"{files[f'{split}_images']} has {images.shape[0]} images but "
                f"{files[f'{split}_labels']} has {labels.shape[0]} labels",
                files[f"{split}_labels"],
            )
        if labels.size and labels.max() > 9:
            bad = int(np.argmax(labels > 9))
            raise DatasetError(
                f"{files[f'{split}_labels']}: label {labels[bad]} at index {bad} is outside 0..9",
                files[f"{split}_labels"],
            )
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DatasetError(
            f"{folder}: train images are {arrays['train_images'].shape[1:]} but test images are "
            f"{arrays['test_images'].shape[1:]}",
            folder,
        )
    return MNIST(path=folder, **arrays)


def as_sequences(images: np.ndarray, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    """Scale uint8 images to floats in [0, 1] for use as sequences.

    Parameters
    ----------
    images : numpy.ndarray
        (N, 28, 28) uint8, e.g. ``MNIST.train_images``.
    dtype : dtype, default float32
        float32 or float64.

    Returns
    -------
    numpy.ndarray
        (N, 28, 28) ``images / 255``: with ``batch_first=True`` each image is a
        sequence of T=28 rows of I=28 pixels; transpose to (T, B, I) with
        ``x.transpose(1, 0, 2)`` for the time-major layout.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"images must be (N, rows, cols) uint8, got {images.shape} {images.dtype}")
    out = images.astype(dtype)
    np.divide(out, 255, out=out)
    return out


# ---------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------


class _BadDownload(Exception):
    """A response that arrived but is not the file: short, corrupt or wrong checksum."""


def _mirror_list(mirrors: Sequence[str] | str | None) -> list[str]:
    if mirrors is None:
        mirrors = os.environ.get(MIRRORS_ENV, "") or DEFAULT_MIRRORS
    if isinstance(mirrors, str):
        mirrors = mirrors.split(",")
    bases = [m.strip() for m in mirrors if m.strip()]
    if not bases:
        raise ValueError("mirrors is empty: give at least one base URL")
    return [b if b.endswith("/") else b + "/" for b in bases]


def _content_md5(path: Path) -> str:
    """MD5 of the file's content, decompressed if it is gzip; streamed in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        is_gzip = f.read(2) == _GZIP_MAGIC
    opener = gzip.open if is_gzip else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Stream ``url`` into ``dest``; a body shorter than its Content-Length is a failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "fastlstm (urllib)"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        announced = response.headers.get("Content-Length")
        received = 0
        for chunk in iter(lambda: response.read(_CHUNK), b""):
            out.write(chunk)
            received += len(chunk)
    # http.client does not raise when a connection closes early during chunked
    # reads, so a dropped connection shows only as a short body.
    if announced is not None and announced.isdigit() and received != int(announced):
        raise _BadDownload(f"connection dropped after {received} of {announced} bytes")


def _verify_download(path: Path, md5: str) -> None:
    try:
        digest = _content_md5(path)
    except (EOFError, OSError, zlib.error) as exc:
        raise _BadDownload(f"corrupt gzip data ({exc})") from exc
    if digest != md5:
        raise _BadDownload(f"checksum mismatch: md5 of the decompressed content is {digest}, expected {md5}")


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, _BadDownload):
        return str(exc)
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect ({exc.reason})"
    if isinstance(exc, socket.timeout):  # TimeoutError since Python 3.10
        return f"timed out (no data for {timeout} s)"
    return f"{type(exc).__name__}: {exc}"


def _download_one(name: str, folder: Path, bases: list[str], md5: str, timeout: float) -> Path:
    target = folder / f"{name}.gz"
    failures: list[tuple[str, str]] = []
    for base in bases:
        url = f"{base}{name}.gz"
        # Same folder as the target, so os.replace is an atomic rename.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            logger.info("downloading %s", url)
            _fetch(url, tmp, timeout)
            _verify_download(tmp, md5)
            os.replace(tmp, target)
            return target
        except (_BadDownload, OSError, http.client.HTTPException, ValueError) as exc:
            # ValueError: a malformed mirror URL (urllib's "unknown url type").
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()
            failures.append((url, _describe(exc, timeout)))
            logger.warning("download of %s failed: %s", url, failures[-1][1])
        finally:
            tmp.unlink(missing_ok=True)
    lines = "\n".join(f"  {url}: {reason}" for url, reason in failures)
    raise DownloadError(
        f"could not download {name}.gz into {folder}; every mirror failed:\n{lines}\n"
        f"Set mirrors= or ${MIRRORS_ENV} (comma-separated base URLs), or copy the files there by hand.",
        target,
        failures,
    )


def download_mnist(
    dest_dir: PathLike,
    mirrors: Sequence[str] | str | None = None,
    *,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download the MNIST files that are missing from ``dest_dir``.

    Each missing file is fetched from the mirrors in order into a temporary
    file in ``dest_dir``, its MD5 (of the decompressed content) is checked, and
    it is moved into place with ``os.replace``; a partial or corrupt download
    is deleted and the next mirror is tried. Files already present (``.gz``
    or raw) are left alone; :func:`load_mnist` verifies them when reading.

    Parameters
    ----------
    dest_dir : str or os.PathLike
        Folder to download into; created if needed.
    mirrors : sequence of str or str, optional
        Base URLs, each serving ``<base>/train-images-idx3-ubyte.gz`` etc. A
        string is split at commas. Defaults to ``$FASTLSTM_MNIST_MIRRORS``
        (comma-separated) if set, else :data:`DEFAULT_MIRRORS`.
    checksums : mapping of str to str, optional
        File name without ``.gz`` -> MD5 of its decompressed content. Defaults
        to :data:`MNIST_MD5`. Every file to download needs an entry.
    timeout : float, default 30.0
        Socket timeout in seconds (connect and each read), per request.

    Returns
    -------
    pathlib.Path
        ``dest_dir``.

    Raises
    ------
    DownloadError
        Every mirror failed for a file; the message lists each URL and why.
    ValueError
        ``mirrors`` is empty or ``checksums`` lacks a file to download.
    """
    table = MNIST_MD5 if checksums is None else checksums
    _check_checksums(table)
    bases = _mirror_list(mirrors)
    folder = Path(dest_dir)
    folder.mkdir(parents=True, exist_ok=True)
    found, _ = _locate(folder)
    todo = [name for role, name in MNIST_FILES.items() if role not in found]
    lacking = [name for name in todo if name not in table]
    if lacking:
        raise ValueError(f"checksums has no md5 for {lacking}: downloads are always verified")
    for name in todo:
        _download_one(name, folder, bases, table[name].lower(), timeout)
    return folder
