"""fastlstm.data: IDX reading, validation, checksums, folder lookup and download.

Real MNIST files are read from $FASTLSTM_DATA or ../shared/datasets/mnist (skipped if
absent). Everything else uses small synthetic IDX files in tmp_path; downloads go to an
http.server on 127.0.0.1 started here, never to the real mirrors.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fastlstm import data

NAMES = data.MNIST_FILES  # role -> file name without .gz


def _real_dir() -> Path:
    # Absolute, resolved once at import: a relative $FASTLSTM_DATA means relative to the folder
    # pytest was started from, and tests below chdir elsewhere.
    env = os.environ.get("FASTLSTM_DATA")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2] / "shared/datasets/mnist"


REAL_DIR = _real_dir()
HAVE_REAL = all(
    (REAL_DIR / f"{n}.gz").is_file() or (REAL_DIR / n).is_file() for n in NAMES.values()
)
needs_real = pytest.mark.skipif(
    not HAVE_REAL, reason=f"MNIST files not found in {REAL_DIR} (set FASTLSTM_DATA to their folder)"
)


# ---------------------------------------------------------------------------
# Synthetic IDX files
# ---------------------------------------------------------------------------

_TYPE_CODES = {
    np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E,
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode ``arr`` as IDX: 2 zero bytes, type code, ndim, big-endian dims, big-endian data."""
    header = bytes([0, 0, _TYPE_CODES[arr.dtype.type], arr.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_file(path: Path, content: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(content, mtime=0) if gz else content)
    return path


def md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


class Synthetic:
    """A small MNIST-shaped dataset: 5 train and 3 test images of 28x28."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.arrays = {
            "train_images": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
            "train_labels": np.array([5, 0, 4, 1, 9], dtype=np.uint8),
            "test_images": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
            "test_labels": np.array([7, 2, 1], dtype=np.uint8),
        }
        self.content = {NAMES[role]: idx_bytes(a) for role, a in self.arrays.items()}
        self.gz = {name: gzip.compress(c, mtime=0) for name, c in self.content.items()}
        self.checksums = {name: md5(c) for name, c in self.content.items()}

    def write(self, folder: Path, gz: bool = True, skip: tuple[str, ...] = ()) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.content.items():
            if name not in skip:
                write_file(folder / (f"{name}.gz" if gz else name), content, gz)
        return folder


@pytest.fixture
def syn() -> Synthetic:
    return Synthetic()


def assert_same_arrays(mnist: data.MNIST, syn: Synthetic) -> None:
    for role, expected in syn.arrays.items():
        got = getattr(mnist, role)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------
# read_idx
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    arr = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    path = write_file(tmp_path / "x.idx", idx_bytes(arr), gz)
    got = data.read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    assert got.flags.writeable
    np.testing.assert_array_equal(got, arr)


def test_read_idx_gzip_detected_by_content_not_name(tmp_path, syn):
    # gzipped content under the raw name, and raw content under the .gz name
    name = NAMES["train_labels"]
    gz_as_raw = write_file(tmp_path / name, syn.content[name], gz=True)
    raw_as_gz = write_file(tmp_path / f"{name}.gz", syn.content[name], gz=False)
    for path in (gz_as_raw, raw_as_gz):
        np.testing.assert_array_equal(data.read_idx(path, magic=data.LABELS_MAGIC), [5, 0, 4, 1, 9])


def test_read_idx_md5(tmp_path, syn):
    name = NAMES["test_labels"]
    path = write_file(tmp_path / f"{name}.gz", syn.content[name], gz=True)
    data.read_idx(path, md5=syn.checksums[name].upper())  # case-insensitive
    with pytest.raises(data.DatasetError, match="checksum mismatch") as info:
        data.read_idx(path, md5="0" * 32)
    assert str(path) in str(info.value) and info.value.path == path


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_wrong_magic(tmp_path, syn, gz):
    name = NAMES["train_labels"]
    path = write_file(tmp_path / name, syn.content[name], gz)
    with pytest.raises(data.DatasetError, match=r"wrong magic number 0x00000801, expected 0x00000803"):
        data.read_idx(path, magic=data.IMAGES_MAGIC)


@pytest.mark.parametrize("content", [b"\x01\x02\x08\x01" + bytes(8), b"\x00\x00\x07\x01" + bytes(8),
                                     b"\x00\x00\x08\x00", b"PK\x03\x04 not idx"])
def test_read_idx_not_idx(tmp_path, content):
    path = write_file(tmp_path / "bad", content, gz=False)
    with pytest.raises(data.DatasetError, match="not an IDX file") as info:
        data.read_idx(path)
    assert info.value.path == path


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("cut", [1, 100, 790, 3 * 28 * 28 + 16 - 5])
def test_read_idx_truncated_content(tmp_path, syn, gz, cut):
    name = NAMES["test_images"]
    path = write_file(tmp_path / name, syn.content[name][:-cut], gz)
    with pytest.raises(data.DatasetError, match="truncated") as info:
        data.read_idx(path, magic=data.IMAGES_MAGIC)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip_stream(tmp_path, syn):
    name = NAMES["test_images"]
    path = tmp_path / f"{name}.gz"
    path.write_bytes(syn.gz[name][: len(syn.gz[name]) // 2])
    with pytest.raises(data.DatasetError, match="corrupt or truncated gzip") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_corrupt_gzip_crc(tmp_path, syn):
    name = NAMES["test_labels"]
    blob = bytearray(syn.gz[name])
    blob[-8] ^= 0xFF  # CRC32 field in the gzip trailer
    path = tmp_path / f"{name}.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(data.DatasetError, match="corrupt or truncated gzip"):
        data.read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_trailing_bytes(tmp_path, syn, gz):
    name = NAMES["train_labels"]
    path = write_file(tmp_path / name, syn.content[name] + b"\x00\x00", gz)
    expected = r"size mismatch: header says shape \(5,\) \(13 bytes\), content has 15"
    with pytest.raises(data.DatasetError, match=expected):
        data.read_idx(path)


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "nope" / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(data.DatasetError, match="file not found") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------
# load_mnist on synthetic folders (Fashion-MNIST style: same names, unknown checksums)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_load_unverified_folder(tmp_path, syn, gz):
    folder = syn.write(tmp_path / "fashion", gz=gz)
    mnist = data.load_mnist(folder, verify=False)
    assert_same_arrays(mnist, syn)
    assert mnist.path == folder
    assert "train=5" in repr(mnist) and "test=3" in repr(mnist)


def test_load_default_verify_rejects_unknown_content(tmp_path, syn):
    # Other sizes than the known datasets' are refused from the header, before any hashing.
    folder = syn.write(tmp_path / "custom")
    expected = r"header says shape \(5, 28, 28\).* has 47040016 bytes; it is not one of them.*--no-verify"
    with pytest.raises(data.DatasetError, match=expected):
        data.load_mnist(folder)


def test_load_with_own_checksums(tmp_path, syn):
    folder = syn.write(tmp_path / "fashion")
    assert_same_arrays(data.load_mnist(folder, checksums=syn.checksums), syn)

    partial = dict(syn.checksums)
    del partial[NAMES["test_images"]]
    with pytest.raises(data.DatasetError, match="no checksum known for t10k-images-idx3-ubyte"):
        data.load_mnist(folder, checksums=partial)

    wrong = dict(syn.checksums, **{NAMES["train_labels"]: "f" * 32})
    with pytest.raises(data.DatasetError, match="train-labels-idx1-ubyte.gz: checksum mismatch"):
        data.load_mnist(folder, checksums=wrong)


def test_load_rejects_checksum_keys_with_gz(tmp_path, syn):
    folder = syn.write(tmp_path / "fashion")
    gz_keys = {f"{k}.gz": v for k, v in syn.checksums.items()}
    with pytest.raises(ValueError, match="unknown keys.*decompressed"):
        data.load_mnist(folder, checksums=gz_keys)


def test_load_prefers_gz_and_accepts_mixed(tmp_path, syn):
    folder = syn.write(tmp_path / "d", gz=False)
    name = NAMES["train_labels"]
    other = idx_bytes(np.array([1, 1, 1, 1, 1], np.uint8))
    write_file(folder / f"{name}.gz", other, gz=True)
    mnist = data.load_mnist(folder, verify=False)
    np.testing.assert_array_equal(mnist.train_labels, [1, 1, 1, 1, 1])


def test_load_count_mismatch(tmp_path, syn):
    folder = syn.write(tmp_path / "d")
    name = NAMES["test_labels"]
    write_file(folder / f"{name}.gz", idx_bytes(np.array([7, 2], np.uint8)), gz=True)
    expected = r"t10k-images-idx3-ubyte.gz has 3 images but .*t10k-labels-idx1-ubyte.gz has 2 labels"
    with pytest.raises(data.DatasetError, match=expected):
        data.load_mnist(folder, verify=False)


def test_load_bad_label(tmp_path, syn):
    folder = syn.write(tmp_path / "d")
    name = NAMES["train_labels"]
    write_file(folder / f"{name}.gz", idx_bytes(np.array([5, 0, 10, 1, 9], np.uint8)), gz=True)
    expected = r"train-labels-idx1-ubyte.gz: label 10 at index 2 is outside 0..9"
    with pytest.raises(data.DatasetError, match=expected):
        data.load_mnist(folder, verify=False)


def test_load_images_and_labels_swapped(tmp_path, syn):
    folder = syn.write(tmp_path / "d", skip=(NAMES["train_images"],))
    write_file(folder / f"{NAMES['train_images']}.gz", syn.content[NAMES["train_labels"]], gz=True)
    with pytest.raises(data.DatasetError, match="train-images-idx3-ubyte.gz: wrong magic number"):
        data.load_mnist(folder, verify=False)


def test_load_image_shape_mismatch(tmp_path, syn):
    folder = syn.write(tmp_path / "d")
    write_file(folder / f"{NAMES['test_images']}.gz", idx_bytes(np.zeros((3, 28, 27), np.uint8)), gz=True)
    with pytest.raises(data.DatasetError, match=r"\(28, 28\) but test images are \(28, 27\)"):
        data.load_mnist(folder, verify=False)


def test_load_missing_file_is_named(tmp_path, syn):
    folder = syn.write(tmp_path / "d", skip=(NAMES["test_labels"],))
    with pytest.raises(data.DatasetError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]") as info:
        data.load_mnist(folder, verify=False)
    assert "train-images" not in str(info.value)  # only the missing file is listed


# ---------------------------------------------------------------------------
# find_data_dir
# ---------------------------------------------------------------------------


@pytest.fixture
def no_data_env(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTLSTM_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


def test_find_explicit_env_and_default(tmp_path, monkeypatch, syn, no_data_env):
    explicit = syn.write(tmp_path / "explicit")
    env_dir = syn.write(tmp_path / "env")
    default = syn.write(tmp_path / "MNIST_data")
    assert data.find_data_dir(explicit) == explicit
    assert data.find_data_dir() == Path("MNIST_data")
    monkeypatch.setenv("FASTLSTM_DATA", str(env_dir))
    assert data.find_data_dir() == env_dir
    assert data.find_data_dir(str(explicit)) == explicit
    # An incomplete $FASTLSTM_DATA folder falls through to ./MNIST_data.
    (env_dir / f"{NAMES['train_images']}.gz").unlink()
    assert data.find_data_dir() == Path("MNIST_data")
    assert data.load_mnist(verify=False).path.resolve() == default


def test_find_explicit_path_does_not_fall_back(tmp_path, syn, no_data_env):
    syn.write(tmp_path / "MNIST_data")
    typo = tmp_path / "fashon"
    with pytest.raises(data.DatasetError) as info:
        data.find_data_dir(typo)
    msg = str(info.value)
    assert f"{typo} (path argument): no such folder" in msg
    assert "MNIST_data" not in msg


def test_find_nothing_lists_places_and_remedies(tmp_path, monkeypatch, syn, no_data_env):
    env_dir = syn.write(tmp_path / "env", skip=(NAMES["test_images"],))
    monkeypatch.setenv("FASTLSTM_DATA", str(env_dir))
    with pytest.raises(data.DatasetError) as info:
        data.load_mnist()
    msg = str(info.value)
    assert f"{env_dir} ($FASTLSTM_DATA): missing t10k-images-idx3-ubyte[.gz]" in msg
    assert f"{tmp_path / 'MNIST_data'} (default): no such folder" in msg
    for remedy in ("download=True", "--download", "$FASTLSTM_DATA"):
        assert remedy in msg


# ---------------------------------------------------------------------------
# as_sequences
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_as_sequences(dtype):
    images = np.array([[[0, 255], [51, 128]]], dtype=np.uint8)
    x = data.as_sequences(images, dtype)
    assert x.dtype == dtype and x.shape == (1, 2, 2)
    np.testing.assert_array_equal(x, images.astype(np.float64).astype(dtype) / dtype(255))
    assert x[0, 0, 1] == 1.0 and x[0, 0, 0] == 0.0


def test_as_sequences_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        data.as_sequences(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"\(N, rows, cols\)"):
        data.as_sequences(np.zeros((28, 28), np.uint8))
    with pytest.raises(TypeError, match="float32 or float64"):
        data.as_sequences(np.zeros((1, 28, 28), np.uint8), np.int32)


# ---------------------------------------------------------------------------
# The real MNIST files
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> data.MNIST:
    return data.load_mnist(REAL_DIR)


@needs_real
def test_real_shapes_and_dtypes(real):
    assert real.train_images.shape == (60000, 28, 28)
    assert real.train_labels.shape == (60000,)
    assert real.test_images.shape == (10000, 28, 28)
    assert real.test_labels.shape == (10000,)
    for arr in (real.train_images, real.train_labels, real.test_images, real.test_labels):
        assert arr.dtype == np.uint8


@needs_real
def test_real_first_labels_and_histogram(real):
    np.testing.assert_array_equal(real.train_labels[:5], [5, 0, 4, 1, 9])
    np.testing.assert_array_equal(real.test_labels[:5], [7, 2, 1, 0, 4])
    for labels in (real.train_labels, real.test_labels):
        counts = np.bincount(labels, minlength=10)
        assert counts.size == 10
        frac = counts / labels.size
        assert frac.min() > 0.08 and frac.max() < 0.12, counts  # roughly balanced digits
    assert np.bincount(real.train_labels)[1] == 6742  # the most frequent digit


@needs_real
def test_real_pixels(real):
    assert real.train_images.min() == 0 and real.train_images.max() == 255
    assert real.train_images[0].sum() == 27525  # the first "5"
    x = data.as_sequences(real.test_images)
    assert x.dtype == np.float32 and x.shape == (10000, 28, 28)
    assert x.min() == 0.0 and x.max() == 1.0


@needs_real
def test_real_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTLSTM_DATA", str(REAL_DIR))
    monkeypatch.chdir(tmp_path)
    assert data.find_data_dir() == REAL_DIR


def _real_file(name: str) -> Path:
    gz = REAL_DIR / f"{name}.gz"
    return gz if gz.exists() else REAL_DIR / name


@needs_real
def test_real_altered_byte_fails_checksum(tmp_path):
    name = NAMES["train_labels"]
    content = data.read_idx(_real_file(name))
    altered = content.copy()
    altered[1234] = (altered[1234] + 1) % 10  # still a valid label, same header and size
    folder = tmp_path / "copy"
    folder.mkdir()
    for other in NAMES.values():
        if other != name:
            (folder / _real_file(other).name).symlink_to(_real_file(other))
    path = write_file(folder / f"{name}.gz", idx_bytes(altered), gz=True)
    with pytest.raises(data.DatasetError, match="checksum mismatch") as info:
        data.load_mnist(folder)
    assert str(path) in str(info.value)
    # Structure-only reading accepts it; the unaltered content passes raw or recompressed.
    np.testing.assert_array_equal(data.read_idx(path, magic=data.LABELS_MAGIC), altered)
    for gz in (False, True):
        path = write_file(tmp_path / f"{name}-{gz}", idx_bytes(content), gz)
        np.testing.assert_array_equal(data.read_idx(path, md5=data.MNIST_MD5[name]), content)


# ---------------------------------------------------------------------------
# Download against a local http.server
# ---------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (kind, body)``; kind is ok, drop or stall; else 404."""

    def do_GET(self):  # noqa: N802 (http.server naming)
        state = self.server.state
        state.requests.append(self.path)
        kind, body = state.routes.get(self.path, (None, b""))
        if kind is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "ok":
            self.wfile.write(body)
        elif kind == "drop":  # announce the full length, send half, close
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif kind == "stall":  # headers, then silence until the test ends
            self.wfile.flush()
            state.release.wait(10)

    def log_message(self, *args):
        pass


class _State:
    def __init__(self, port: int) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.requests: list[str] = []
        self.release = threading.Event()
        self.port = port

    def mirror(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.port}/{prefix}/"

    def serve(self, prefix: str, files: dict[str, bytes], kind: str = "ok") -> str:
        for name, body in files.items():
            self.routes[f"/{prefix}/{name}.gz"] = (kind, body)
        return self.mirror(prefix)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")  # never route 127.0.0.1 through a proxy
    monkeypatch.delenv("FASTLSTM_MNIST_MIRRORS", raising=False)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = _State(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd.state
    finally:
        httpd.state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_download_good(tmp_path, server, syn):
    mirror = server.serve("m1", syn.gz)
    dest = tmp_path / "new" / "dir"
    assert data.download_mnist(dest, [mirror], checksums=syn.checksums, timeout=5) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in NAMES.values())
    assert_same_arrays(data.load_mnist(dest, checksums=syn.checksums), syn)
    # Everything present: a second call fetches nothing.
    n = len(server.requests)
    data.download_mnist(dest, [mirror], checksums=syn.checksums, timeout=5)
    assert len(server.requests) == n


def _corrupt(gz_blob: bytes, how: str) -> bytes:
    if how == "altered-byte":  # valid gzip of wrong content
        content = bytearray(gzip.decompress(gz_blob))
        content[-1] ^= 0x01
        return gzip.compress(bytes(content), mtime=0)
    return gz_blob[: len(gz_blob) // 2]  # truncated gzip, served with a matching length


@pytest.mark.parametrize("how", ["altered-byte", "truncated-gzip"])
def test_download_corrupt_falls_to_next_mirror(tmp_path, server, syn, how):
    bad = server.serve("bad", {n: _corrupt(b, how) for n, b in syn.gz.items()})
    good = server.serve("good", syn.gz)
    dest = tmp_path / "d"
    data.download_mnist(dest, [bad, good], checksums=syn.checksums, timeout=5)
    assert leftovers(dest) == []
    assert_same_arrays(data.load_mnist(dest, checksums=syn.checksums), syn)
    for name in NAMES.values():  # each file was tried on the bad mirror first
        assert server.requests.index(f"/bad/{name}.gz") < server.requests.index(f"/good/{name}.gz")


def test_download_corrupt_everywhere_leaves_nothing(tmp_path, server, syn):
    name = NAMES["train_images"]
    bad = server.serve("bad", {n: _corrupt(b, "altered-byte") for n, b in syn.gz.items()})
    dest = tmp_path / "d"
    expected = rf"could not download {name}.gz .*\n  .*/bad/{name}.gz: checksum mismatch"
    with pytest.raises(data.DownloadError, match=expected):
        data.download_mnist(dest, bad, checksums=syn.checksums, timeout=5)
    assert list(dest.iterdir()) == []


def test_download_dropped_connection(tmp_path, server, syn):
    dropped = server.serve("drop", syn.gz, kind="drop")
    good = server.serve("good", syn.gz)
    dest = tmp_path / "d"
    with pytest.raises(data.DownloadError, match=r"connection dropped after \d+ of \d+ bytes") as info:
        data.download_mnist(dest, [dropped], checksums=syn.checksums, timeout=5)
    assert len(info.value.failures) == 1
    assert list(dest.iterdir()) == []  # no partial file, under either name

    data.download_mnist(dest, [dropped, good], checksums=syn.checksums, timeout=5)
    assert leftovers(dest) == []
    assert_same_arrays(data.load_mnist(dest, checksums=syn.checksums), syn)


def test_download_stalled_server_times_out(tmp_path, server, syn):
    name = NAMES["test_labels"]
    stalled = server.serve("stall", {name: syn.gz[name]}, kind="stall")
    good = server.serve("good", syn.gz)
    dest = syn.write(tmp_path / "d", skip=(name,))
    start = time.monotonic()
    data.download_mnist(dest, [stalled, good], checksums=syn.checksums, timeout=0.3)
    assert time.monotonic() - start < 5
    assert server.requests == [f"/stall/{name}.gz", f"/good/{name}.gz"]
    assert leftovers(dest) == []
    assert_same_arrays(data.load_mnist(dest, checksums=syn.checksums), syn)


def test_download_all_mirrors_fail_lists_them(tmp_path, server, syn):
    refused = closed_port_url()
    missing = server.mirror("empty")
    dropped = server.serve("drop", syn.gz, kind="drop")
    broken = server.serve("broken", {n: _corrupt(b, "truncated-gzip") for n, b in syn.gz.items()})
    stalled = server.serve("stall", syn.gz, kind="stall")
    mirrors = [refused, missing, dropped, broken, stalled]
    dest = tmp_path / "d"
    with pytest.raises(data.DownloadError) as info:
        data.download_mnist(dest, mirrors, checksums=syn.checksums, timeout=0.3)
    err = info.value
    first = NAMES["train_images"]  # the first file fails everywhere, so the call stops there
    assert [url for url, _ in err.failures] == [f"{m}{first}.gz" for m in mirrors]
    msg = str(err)
    assert f"{refused}{first}.gz: cannot connect" in msg
    assert f"{missing}{first}.gz: HTTP 404" in msg
    assert f"{dropped}{first}.gz: connection dropped after" in msg
    assert f"{broken}{first}.gz: corrupt gzip data" in msg
    assert f"{stalled}{first}.gz: timed out (no data for 0.3 s)" in msg
    assert "FASTLSTM_MNIST_MIRRORS" in msg
    assert isinstance(err, data.DatasetError) and isinstance(err, ValueError)
    assert err.path == dest / f"{first}.gz"
    assert list(dest.iterdir()) == []


def test_download_mirrors_from_env(tmp_path, server, syn, monkeypatch):
    good = server.serve("good", syn.gz)
    monkeypatch.setenv("FASTLSTM_MNIST_MIRRORS", f" {server.mirror('empty')} ,{good.rstrip('/')}")
    dest = tmp_path / "d"
    data.download_mnist(dest, checksums=syn.checksums, timeout=5)
    name = NAMES["train_labels"]
    assert f"/empty/{name}.gz" in server.requests and f"/good/{name}.gz" in server.requests
    assert_same_arrays(data.load_mnist(dest, checksums=syn.checksums), syn)


def test_download_argument_errors(tmp_path, syn):
    with pytest.raises(ValueError, match="mirrors is empty"):
        data.download_mnist(tmp_path, [" ", ""], checksums=syn.checksums)
    partial = {NAMES["train_images"]: syn.checksums[NAMES["train_images"]]}
    with pytest.raises(ValueError, match="no md5 for"):
        data.download_mnist(tmp_path, ["http://127.0.0.1:9/"], checksums=partial)


def test_default_mirrors_are_https_and_serve_the_gz_names():
    assert data.DEFAULT_MIRRORS
    assert all(m.startswith("https://") and m.endswith("/") for m in data.DEFAULT_MIRRORS)
    assert set(data.MNIST_MD5) == set(NAMES.values())


def test_load_mnist_download_fetches_only_missing(tmp_path, server, syn):
    good = server.serve("good", syn.gz)
    keep = NAMES["train_labels"]
    dest = syn.write(tmp_path / "d", gz=False, skip=tuple(n for n in NAMES.values() if n != keep))
    mnist = data.load_mnist(dest, download=True, mirrors=good, checksums=syn.checksums, timeout=5)
    assert_same_arrays(mnist, syn)
    assert f"/good/{keep}.gz" not in server.requests and len(server.requests) == 3
    assert (dest / keep).exists() and not (dest / f"{keep}.gz").exists()


def test_load_mnist_download_into_env_dir(tmp_path, server, syn, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASTLSTM_DATA", str(tmp_path / "envdir"))
    good = server.serve("good", syn.gz)
    mnist = data.load_mnist(download=True, mirrors=[good], checksums=syn.checksums, timeout=5)
    assert mnist.path == tmp_path / "envdir"
    assert not (tmp_path / "MNIST_data").exists()


@needs_real
def test_download_real_files_with_default_table(tmp_path, server):
    # The real .gz files (train-images recompressed) pass the default MNIST_MD5 table.
    blobs = {}
    for name in NAMES.values():
        blob = _real_file(name).read_bytes()
        blobs[name] = blob if blob.startswith(b"\x1f\x8b") else gzip.compress(blob)
    dest = tmp_path / "d"
    data.download_mnist(dest, [server.serve("real", blobs)], timeout=10)
    mnist = data.load_mnist(dest)
    np.testing.assert_array_equal(mnist.train_labels[:5], [5, 0, 4, 1, 9])
