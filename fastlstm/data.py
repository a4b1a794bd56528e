"""MNIST-format datasets: IDX files (raw or gzipped), validation, checksums and download.

The four files use the names of the original MNIST distribution::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

Three published datasets use these names and sizes: MNIST, Fashion-MNIST and
Kuzushiji-MNIST (KMNIST). :func:`load_mnist` recognises each one by its
published checksums (:data:`KNOWN_DATASETS`) and records which one it read in
``MNIST.dataset``; four files from different datasets are an error. Any other
data in the same IDX format is read with ``load_mnist(path, verify=False)``
(the structure is still checked) or with a ``checksums=`` table of its own.
Only the standard library and NumPy are used; there is no multiprocessing (the
whole dataset fits in memory).

Checksums are MD5 digests of the *decompressed* IDX content, so the same table
holds for ``.gz`` and raw files and for any recompression of the ``.gz``; the
published digests of the original ``.gz`` files are accepted too (for KMNIST,
which publishes only those, they are the only ones known).

Files are untrusted: the IDX header is read first and checked (magic number,
dimensions, the exact sizes of the known datasets, :data:`MAX_IDX_BYTES`)
before anything is allocated, and decompression stops at the size the header
implies, so a small gzip bomb costs milliseconds, not gigabytes.
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
    "FASHION_MNIST_GZ_MD5",
    "FASHION_MNIST_MD5",
    "IDX_SIZES",
    "KMNIST_GZ_MD5",
    "KNOWN_DATASETS",
    "KnownDataset",
    "MAX_IDX_BYTES",
    "MNIST",
    "MNIST_FILES",
    "MNIST_GZ_MD5",
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

#: File name without ``.gz`` -> MD5 of the original distribution's ``.gz`` file.
MNIST_GZ_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: Fashion-MNIST (Zalando Research): MD5 of the decompressed IDX content. The
#: same digests as torchvision's FashionMNIST table; checked against the files of
#: the Debian package dataset-fashion-mnist (recompressed, decompressed content
#: identical).
FASHION_MNIST_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

#: Fashion-MNIST: MD5 of the ``.gz`` files as published in the
#: zalandoresearch/fashion-mnist README.
FASHION_MNIST_GZ_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}

#: Kuzushiji-MNIST (ROIS-CODH, rois-codh/kmnist, MNIST-format release): MD5 of the
#: ``.gz`` files as served by codh.rois.ac.jp (the table torchvision's KMNIST uses).
#: No digest of the decompressed content is published, so a recompressed or
#: decompressed copy is not recognised (read it with ``verify=False``).
KMNIST_GZ_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
    "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
    "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
    "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134",
}

#: File name without ``.gz`` -> decompressed size in bytes, the same for all three
#: known datasets (60000 / 10000 images of 28x28 and their labels, 16- and 8-byte headers).
IDX_SIZES: Mapping[str, int] = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}

#: Largest decompressed IDX file :func:`read_idx` accepts by default (bytes); the
#: header is checked against it before anything is allocated.
MAX_IDX_BYTES = 1 << 31


@dataclass(frozen=True)
class KnownDataset:
    """A published dataset in the MNIST file layout, recognised by its checksums.

    Attributes
    ----------
    name : str
        Display name, e.g. ``"Fashion-MNIST"``.
    md5 : mapping of str to str
        File name without ``.gz`` -> MD5 of the decompressed content (may be empty).
    gz_md5 : mapping of str to str
        File name without ``.gz`` -> MD5 of the published ``.gz`` file.
    source : str
        Where the files come from.
    """

    name: str
    md5: Mapping[str, str]
    gz_md5: Mapping[str, str]
    source: str

    def matches(self, name: str, content_md5: str, gz_md5: str | None) -> bool:
        if self.md5.get(name) == content_md5:
            return True
        return gz_md5 is not None and self.gz_md5.get(name) == gz_md5


#: The datasets :func:`load_mnist` recognises when ``verify=True`` (the default).
KNOWN_DATASETS: tuple[KnownDataset, ...] = (
    KnownDataset("MNIST", MNIST_MD5, MNIST_GZ_MD5, "http://yann.lecun.com/exdb/mnist/ (or --download)"),
    KnownDataset("Fashion-MNIST", FASHION_MNIST_MD5, FASHION_MNIST_GZ_MD5,
                 "https://github.com/zalandoresearch/fashion-mnist (Debian: dataset-fashion-mnist)"),
    KnownDataset("KMNIST", {}, KMNIST_GZ_MD5, "https://github.com/rois-codh/kmnist (MNIST format)"),
)

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
    """The four arrays of an MNIST-format dataset, as stored in the files.

    Attributes
    ----------
    train_images : numpy.ndarray or None
        (60000, 28, 28) uint8, pixel values 0..255. None when only the test
        split was read (``load_mnist(..., splits=("test",))``).
    train_labels : numpy.ndarray or None
        (60000,) uint8, classes 0..9; None like ``train_images``.
    test_images : numpy.ndarray
        (10000, 28, 28) uint8.
    test_labels : numpy.ndarray
        (10000,) uint8.
    path : pathlib.Path
        The folder the files were read from.
    dataset : str or None
        The dataset recognised by its checksums: ``"MNIST"``, ``"Fashion-MNIST"``
        or ``"KMNIST"`` (see :data:`KNOWN_DATASETS`); None when the files were
        not verified (``verify=False``) or were checked against a ``checksums=``
        table of the caller's.

    Other datasets in the same format have other sizes only if their files say
    so; the shapes are whatever the IDX headers give.
    """

    train_images: np.ndarray | None = field(repr=False)
    train_labels: np.ndarray | None = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    path: Path
    dataset: str | None = None

    def __repr__(self) -> str:
        train = "not read" if self.train_labels is None else len(self.train_labels)
        return (
            f"MNIST(path={str(self.path)!r}, dataset={self.dataset!r}, train={train}, "
            f"test={len(self.test_labels)}, image_shape={self.test_images.shape[1:]})"
        )


# ---------------------------------------------------------------------------
# Reading one IDX file
# ---------------------------------------------------------------------------


def _gzip_error(path: Path, exc: BaseException) -> DatasetError:
    return DatasetError(f"{path}: corrupt or truncated gzip data ({exc})", path)


def _read_up_to(f, buf: memoryview) -> int:
    """Fill ``buf`` from ``f``; return the number of bytes read (short only at end of file).

    In slices of 1 MiB: GzipFile.readinto decompresses into a temporary ``bytes`` of the
    requested size, which would double the peak memory for one large request.
    """
    done = 0
    while done < len(buf):
        n = f.readinto(buf[done : done + (1 << 20)])
        if not n:
            break
        done += n
    return done


def _read_content(
    path: Path, magic: int | None, *, size: int | None = None, max_bytes: int = MAX_IDX_BYTES
) -> bytearray:
    """The decompressed IDX content of ``path``, read no further than its header allows.

    The header is read and checked first (magic number, type, dimensions, then
    the total size against ``size`` if given, else against ``max_bytes``); only
    then is the buffer allocated, and decompression stops one read past the size
    the header implies. Gzip is detected by content, not by name: an IDX file
    starts with two zero bytes, a gzip stream with 1f 8b.
    """
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed below, possibly through GzipFile)
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found", path) from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})", path) from exc
    with raw:
        try:
            is_gzip = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            file_size = os.fstat(raw.fileno()).st_size
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read ({exc})", path) from exc
        f = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw
        try:
            return _read_checked(f, path, magic, size, max_bytes, None if is_gzip else file_size)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise _gzip_error(path, exc) from exc
        except DatasetError:
            raise
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read ({exc})", path) from exc


def _read_checked(f, path: Path, magic: int | None, size: int | None, max_bytes: int,
                  raw_size: int | None) -> bytearray:
    head = f.read(4)
    if len(head) < 4:
        raise DatasetError(f"{path}: truncated: {len(head)} bytes, too short for an IDX header", path)
    found = int.from_bytes(head, "big")
    if magic is not None and found != magic:
        raise DatasetError(f"{path}: wrong magic number 0x{found:08X}, expected 0x{magic:08X}", path)
    type_code, ndim = head[2], head[3]
    if head[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise DatasetError(f"{path}: not an IDX file (magic number 0x{found:08X})", path)
    header = 4 + 4 * ndim
    rest = f.read(header - 4)
    if len(rest) < header - 4:
        raise DatasetError(
            f"{path}: truncated: {4 + len(rest)} bytes, the header alone needs {header}", path)
    dims = tuple(int.from_bytes(rest[4 * k : 4 * k + 4], "big") for k in range(ndim))
    expected = header + math.prod(dims) * _IDX_DTYPES[type_code].itemsize
    says = f"header says shape {dims} ({expected} bytes)"
    if size is not None and expected != size:
        raise DatasetError(
            f"{path}: {says}, but this file of MNIST, Fashion-MNIST and KMNIST has {size} bytes; "
            f"it is not one of them (for other data in the IDX format pass verify=False, "
            f"CLI --no-verify)", path)
    if expected > max_bytes:
        raise DatasetError(
            f"{path}: {says}, more than the limit of {max_bytes} bytes (max_bytes)", path)
    if raw_size is not None and raw_size != expected:
        # A raw file's size is known before reading anything more.
        what = "truncated" if raw_size < expected else "size mismatch"
        raise DatasetError(f"{path}: {what}: {says}, content has {raw_size} bytes", path)
    content = bytearray(expected)
    content[:header] = head + rest
    got = header + _read_up_to(f, memoryview(content)[header:])
    if got < expected:
        raise DatasetError(f"{path}: truncated: {says}, content has {got} bytes", path)
    # Anything after the data is an error; read a little of it to say how much (and,
    # for gzip, to reach the end of the stream, where the CRC is checked).
    extra = len(f.read(_CHUNK + 1))
    if extra:
        has = f"{expected + extra}" if extra <= _CHUNK else f"more than {expected + _CHUNK}"
        raise DatasetError(f"{path}: size mismatch: {says}, content has {has} bytes", path)
    return content


def _parse_idx(content: bytes | bytearray) -> np.ndarray:
    """Array of already checked IDX ``content`` (see :func:`_read_content`)."""
    type_code, ndim = content[2], content[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(content[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    flat = np.frombuffer(content, dtype=dtype, count=math.prod(dims), offset=header)
    # astype copies: the result is writable, native-endian and owns its memory.
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _md5(content: bytes | bytearray) -> str:
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_idx(
    file: PathLike, *, magic: int | None = None, md5: str | None = None,
    max_bytes: int = MAX_IDX_BYTES,
) -> np.ndarray:
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
    max_bytes : int, default :data:`MAX_IDX_BYTES`
        Largest decompressed size accepted. The header is checked against it
        before anything is allocated or decompressed past the header.

    Returns
    -------
    numpy.ndarray
        Array with the shape given by the header, native byte order, writable.

    Raises
    ------
    DatasetError
        If the file is missing, unreadable, not IDX, has the wrong magic number,
        is truncated or longer than its header says, is larger than
        ``max_bytes``, or fails the checksum. The message names the file.
    """
    path = Path(file)
    content = _read_content(path, magic, max_bytes=max_bytes)
    if md5 is not None:
        digest = _md5(content)
        if digest != md5.lower():
            raise DatasetError(
                f"{path}: checksum mismatch: md5 of the decompressed content is {digest}, "
                f"expected {md5.lower()}; the file is damaged or is not the file expected",
                path,
            )
    return _parse_idx(content)


# ---------------------------------------------------------------------------
# Finding and loading the dataset
# ---------------------------------------------------------------------------


_SPLITS = ("train", "test")


def _roles(splits: Sequence[str]) -> list[str]:
    if isinstance(splits, str):
        splits = (splits,)
    bad = [x for x in splits if x not in _SPLITS]
    if bad or not splits:
        raise ValueError(f"splits must be a non-empty subset of {_SPLITS}, got {tuple(splits)}")
    return [role for role in MNIST_FILES if role.split("_")[0] in splits]


def _locate(folder: Path, roles: Sequence[str] = tuple(MNIST_FILES)) -> tuple[dict[str, Path], list[str]]:
    """Map each role to its file in ``folder`` (``.gz`` preferred) and list the missing names."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role in roles:
        name = MNIST_FILES[role]
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


def find_data_dir(path: PathLike | None = None, *, splits: Sequence[str] = _SPLITS) -> Path:
    """Return the folder that holds the MNIST-format files.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder to use. When given it is the only place looked at, so a typo
        never silently falls back to another dataset. When None, the folder in
        ``$FASTLSTM_DATA`` (if set) and then ``./MNIST_data`` are tried.
    splits : sequence of {"train", "test"}, default both
        Whose files must be there.

    Returns
    -------
    pathlib.Path
        The first folder that has the files (each ``.gz`` or raw).

    Raises
    ------
    DatasetError
        If no folder has them; the message lists each place tried and what
        was missing there, and how to get the files.
    """
    roles = _roles(splits)
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
        _, missing = _locate(folder, roles)
        if not missing:
            return folder
        tried.append(f"  {folder.absolute()} ({origin}): missing {', '.join(missing)}")
    hint = (
        f"Download MNIST with load_mnist(..., download=True) or the CLI flag --download, "
        f"or point ${DATA_ENV} (or the path argument) at a folder that has the files "
        f"(MNIST, Fashion-MNIST, KMNIST or other data in the same format)."
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


_CUSTOM_DATA_HINT = "for data of your own in the IDX format pass verify=False (CLI --no-verify)"


def _identify(files: Mapping[str, Path], contents: Mapping[str, bytearray], folder: Path) -> str:
    """The name of the one known dataset all ``files`` belong to, or a DatasetError saying why not."""
    matches: dict[str, list[str]] = {}
    digests: dict[str, str] = {}
    for role, path in files.items():
        name = MNIST_FILES[role]
        content_md5 = _md5(contents[role])
        gz_md5 = _file_md5(path) if _is_gzip(path) else None
        matches[role] = [d.name for d in KNOWN_DATASETS if d.matches(name, content_md5, gz_md5)]
        digests[role] = f"md5 of the decompressed content {content_md5}" + (
            f", of the .gz file {gz_md5}" if gz_md5 else "")
    common = set.intersection(*(set(m) for m in matches.values()))
    if common:
        return next(d.name for d in KNOWN_DATASETS if d.name in common)

    names = [d.name for d in KNOWN_DATASETS]
    known_names = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
    unmatched = [role for role in files if not matches[role]]
    if not unmatched:
        parts = "; ".join(f"{files[r].name} is {' or '.join(matches[r])}" for r in files)
        raise DatasetError(
            f"{folder}: the files come from different datasets: {parts}. All of them must come "
            f"from one dataset: put the matching files side by side; {_CUSTOM_DATA_HINT}",
            folder,
        )
    role = unmatched[0]
    path, name = files[role], MNIST_FILES[role]
    others = {d for r in files if r not in unmatched for d in matches[r]}
    recognised = [r for r in files if matches[r]]
    msg = (f"{path}: checksum mismatch: it is not the {name} of {known_names} ({digests[role]})")
    no_content_md5 = [d.name for d in KNOWN_DATASETS if name not in d.md5]
    if no_content_md5:
        msg += f"; {' and '.join(no_content_md5)} is recognised only by its published .gz file"
    if recognised and len(others) == 1:
        (ds,) = others
        source = next(d.source for d in KNOWN_DATASETS if d.name == ds)
        which = ("The other files here are" if len(unmatched) == 1 else
                 f"The files recognised here ({', '.join(files[r].name for r in recognised)}) are")
        msg += (f". {which} {ds}: if this one should be {ds} too it is damaged: "
                f"replace it with {ds}'s own {name}.gz from {source}")
        if ds == "MNIST":
            msg += " (delete it and rerun with download=True / --download)"
        msg += f"; {_CUSTOM_DATA_HINT}"
    elif recognised:
        parts = ", ".join(f"{files[r].name} is {' or '.join(matches[r])}" for r in recognised)
        msg += f". The other files here come from different datasets ({parts}); {_CUSTOM_DATA_HINT}"
    else:
        n = len(files)
        msg += (f". None of the {n} files here matches a known dataset: {_CUSTOM_DATA_HINT}; "
                f"if they should be one of {known_names}, they are damaged: get fresh copies from "
                f"that dataset's source")
    raise DatasetError(msg, path)


def load_mnist(
    path: PathLike | None = None,
    *,
    download: bool = False,
    mirrors: Sequence[str] | str | None = None,
    verify: bool = True,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    splits: Sequence[str] = _SPLITS,
    max_bytes: int = MAX_IDX_BYTES,
) -> MNIST:
    """Read the training and test sets of MNIST, Fashion-MNIST, KMNIST or other IDX data.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder with the four files. When None: ``$FASTLSTM_DATA``, then
        ``./MNIST_data`` (see :func:`find_data_dir`).
    download : bool, default False
        If files are missing, download the missing ones of MNIST (existing
        files are never overwritten) into ``path``, or into ``$FASTLSTM_DATA`` /
        ``./MNIST_data``.
    mirrors : sequence of str or str, optional
        Base URLs for the download; see :func:`download_mnist`.
    verify : bool, default True
        Recognise the files by their MD5 as one of :data:`KNOWN_DATASETS`
        (MNIST, Fashion-MNIST, KMNIST), all from the same one; the result's
        ``dataset`` names it. With ``checksums=`` check against that table
        instead. Set False to read any other data in the same IDX format: the
        structure (magic numbers, dimensions, sizes, labels 0..9) is still
        checked. Downloads are always verified.
    checksums : mapping of str to str, optional
        File name without ``.gz`` -> MD5 of its decompressed content, for a
        dataset of your own. A file without an entry fails verification.
        Defaults to the known datasets' tables.
    timeout : float, default 30.0
        Socket timeout in seconds for each download request.
    splits : sequence of {"train", "test"}, default both
        Which files to read; the others are not opened, and their arrays in
        the result are None (``splits=("test",)`` to evaluate a model).
    max_bytes : int, default :data:`MAX_IDX_BYTES`
        Largest decompressed file accepted when ``verify=False`` or with
        ``checksums=``; with the default verification each file must have the
        exact size of the known datasets' files.

    Returns
    -------
    MNIST
        ``train_images`` (N, 28, 28) uint8, ``train_labels`` (N,) uint8,
        ``test_images``, ``test_labels``, ``path`` and ``dataset``;
        N = 60000 and 10000 for the known datasets.

    Raises
    ------
    DatasetError
        Missing, truncated or corrupt file, a header that does not fit,
        checksum mismatch, files from different datasets, image and label
        counts that differ, or a label outside 0..9. The message names the
        file and, for a checksum, which dataset the other files are.
    DownloadError
        ``download=True`` and every mirror failed for a file.
    """
    roles = _roles(splits)
    if checksums is not None:
        _check_checksums(checksums)
    try:
        folder = find_data_dir(path, splits=splits)
    except DatasetError:
        if not download:
            raise
        folder = Path(path) if path is not None else _default_dir()
        _download_missing(folder, _mirror_list(mirrors), MNIST_MD5 if checksums is None else checksums,
                          timeout, roles)
    files, _ = _locate(folder, roles)

    # Structure first, for every file (cheap, and bounded by the headers), then checksums.
    known_sizes = verify and checksums is None
    contents: dict[str, bytearray] = {}
    for role, file in files.items():
        name = MNIST_FILES[role]
        if verify and checksums is not None and name not in checksums:
            raise DatasetError(
                f"{file}: no checksum known for {name}; pass checksums= with its md5 "
                f"or verify=False to check only its structure",
                file,
            )
        magic = IMAGES_MAGIC if role.endswith("images") else LABELS_MAGIC
        contents[role] = _read_content(file, magic, size=IDX_SIZES[name] if known_sizes else None,
                                       max_bytes=max_bytes)

    dataset = None
    if verify and checksums is not None:
        for role, file in files.items():
            digest, expected = _md5(contents[role]), checksums[MNIST_FILES[role]].lower()
            if digest != expected:
                raise DatasetError(
                    f"{file}: checksum mismatch: md5 of the decompressed content is {digest}, "
                    f"expected {expected} (from checksums=); the file is damaged or is not the "
                    f"file expected, or pass verify=False to check only its structure",
                    file,
                )
    elif verify:
        dataset = _identify(files, contents, folder)

    arrays: dict[str, np.ndarray | None] = dict.fromkeys(MNIST_FILES)
    for role in files:
        arrays[role] = _parse_idx(contents.pop(role))

    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images is None:
            continue
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
    if (arrays["train_images"] is not None and arrays["test_images"] is not None
            and arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]):
        raise DatasetError(
            f"{folder}: train images are {arrays['train_images'].shape[1:]} but test images are "
            f"{arrays['test_images'].shape[1:]}",
            folder,
        )
    return MNIST(path=folder, dataset=dataset, **arrays)


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


def _content_md5(path: Path, max_bytes: int = MAX_IDX_BYTES) -> str:
    """MD5 of the file's content, decompressed if it is gzip; streamed in chunks.

    Stops with ``_BadDownload`` after ``max_bytes`` decompressed bytes (a gzip bomb).
    """
    digest = hashlib.md5(usedforsecurity=False)
    opener = gzip.open if _is_gzip(path) else open
    total = 0
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            total += len(chunk)
            if total > max_bytes:
                raise _BadDownload(f"more than {max_bytes} bytes once decompressed")
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
    return _download_missing(Path(dest_dir), _mirror_list(mirrors), table, timeout, list(MNIST_FILES))


def _download_missing(folder: Path, bases: list[str], table: Mapping[str, str], timeout: float,
                      roles: Sequence[str]) -> Path:
    _check_checksums(table)
    folder.mkdir(parents=True, exist_ok=True)
    found, _ = _locate(folder, roles)
    todo = [MNIST_FILES[role] for role in roles if role not in found]
    lacking = [name for name in todo if name not in table]
    if lacking:
        raise ValueError(f"checksums has no md5 for {lacking}: downloads are always verified")
    for name in todo:
        _download_one(name, folder, bases, table[name].lower(), timeout)
    return folder
