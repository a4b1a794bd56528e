"""Datasets in the MNIST layout: recognition of MNIST / Fashion-MNIST / KMNIST by checksum,
mixed folders, --no-verify for other IDX data, untrusted files (gzip bombs, lying headers) and
``evaluate`` reading only the test files.

The mechanics use small fake datasets (``data.KNOWN_DATASETS`` and ``data.IDX_SIZES`` patched);
the real MNIST files ($FASTLSTM_DATA or ../shared/datasets/mnist) and the Debian package
dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) are used when present, skipped
otherwise. Every path is absolute, so no test depends on the folder pytest was started from.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from testkit import child_env

from fastlstm import data
from fastlstm.__main__ import main

NAMES = data.MNIST_FILES  # role -> file name without .gz
ROOT = Path(__file__).resolve().parents[1]


def _real_mnist_dir() -> Path:
    # Resolved once, at import: a relative $FASTLSTM_DATA means relative to where pytest started,
    # whatever folder a test later chdirs to.
    env = os.environ.get("FASTLSTM_DATA")
    return Path(env).resolve() if env else ROOT.parent / "shared" / "datasets" / "mnist"


def _complete(folder: Path) -> bool:
    return all((folder / f"{n}.gz").is_file() or (folder / n).is_file() for n in NAMES.values())


MNIST_DIR = _real_mnist_dir()
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_mnist = pytest.mark.skipif(not _complete(MNIST_DIR),
                                 reason=f"MNIST not found in {MNIST_DIR} (set FASTLSTM_DATA)")
needs_fashion = pytest.mark.skipif(
    not _complete(FASHION_DIR),
    reason=f"Fashion-MNIST not in {FASHION_DIR} (apt-get install dataset-fashion-mnist)")


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


class Fake:
    """A small dataset in the MNIST layout: 6 train and 4 test images of 28x28, labels 0..9."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        arrays = {
            "train_images": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
            "train_labels": rng.integers(0, 10, 6, dtype=np.uint8),
            "test_images": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
            "test_labels": rng.integers(0, 10, 4, dtype=np.uint8),
        }
        self.arrays = arrays
        self.content = {NAMES[r]: idx_bytes(a) for r, a in arrays.items()}
        self.gz = {n: gzip.compress(c, mtime=0) for n, c in self.content.items()}
        self.md5 = {n: md5(c) for n, c in self.content.items()}
        self.gz_md5 = {n: md5(g) for n, g in self.gz.items()}

    def write(self, folder: Path, gz: bool = True, only: tuple[str, ...] | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.content:
            if only is None or name in only:
                if gz:
                    (folder / f"{name}.gz").write_bytes(self.gz[name])
                else:
                    (folder / name).write_bytes(self.content[name])
        return folder


@pytest.fixture
def fakes(monkeypatch):
    """Three fake known datasets, like the real ones: MNIST and Fashion-MNIST with digests of
    the content and of the .gz, KMNIST with .gz digests only."""
    mnist, fashion, kmnist = Fake(1), Fake(2), Fake(3)
    monkeypatch.setattr(data, "KNOWN_DATASETS", (
        data.KnownDataset("MNIST", mnist.md5, mnist.gz_md5, "mnist-source"),
        data.KnownDataset("Fashion-MNIST", fashion.md5, fashion.gz_md5, "fashion-source"),
        data.KnownDataset("KMNIST", {}, kmnist.gz_md5, "kmnist-source"),
    ))
    monkeypatch.setattr(data, "IDX_SIZES", {n: len(c) for n, c in mnist.content.items()})
    return {"MNIST": mnist, "Fashion-MNIST": fashion, "KMNIST": kmnist}


# ---------------------------------------------------------------------------
# The published tables
# ---------------------------------------------------------------------------


def test_known_tables_are_complete_and_distinct():
    names = set(NAMES.values())
    assert [d.name for d in data.KNOWN_DATASETS] == ["MNIST", "Fashion-MNIST", "KMNIST"]
    digests = []
    for d in data.KNOWN_DATASETS:
        assert set(d.gz_md5) == names
        assert set(d.md5) in (names, set())
        for digest in [*d.md5.values(), *d.gz_md5.values()]:
            assert len(digest) == 32 and int(digest, 16) >= 0 and digest == digest.lower()
            digests.append(digest)
    assert len(set(digests)) == len(digests)
    assert data.IDX_SIZES == {"train-images-idx3-ubyte": 47040016, "train-labels-idx1-ubyte": 60008,
                              "t10k-images-idx3-ubyte": 7840016, "t10k-labels-idx1-ubyte": 10008}


# ---------------------------------------------------------------------------
# Recognition mechanics on fake datasets
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["MNIST", "Fashion-MNIST"])
@pytest.mark.parametrize("form", ["gz", "raw", "recompressed"])
def test_recognised_by_content_digest_in_any_form(tmp_path, fakes, which, form):
    fake = fakes[which]
    folder = fake.write(tmp_path / "d", gz=form != "raw")
    if form == "recompressed":  # another gzip of the same content: only the content digest fits
        for name, content in fake.content.items():
            (folder / f"{name}.gz").write_bytes(gzip.compress(content, compresslevel=1, mtime=123))
    got = data.load_mnist(folder)
    assert got.dataset == which
    for role, arr in fake.arrays.items():
        np.testing.assert_array_equal(getattr(got, role), arr)


def test_recognised_by_gz_digest_only(tmp_path, fakes):
    folder = fakes["KMNIST"].write(tmp_path / "k")
    assert data.load_mnist(folder).dataset == "KMNIST"
    # Decompressed, it has no published digest: not recognised, and the message says why.
    raw = fakes["KMNIST"].write(tmp_path / "kraw", gz=False)
    with pytest.raises(data.DatasetError, match=r"KMNIST is recognised only by its published \.gz file.*--no-verify"):
        data.load_mnist(raw)
    assert data.load_mnist(raw, verify=False).dataset is None


def test_mixed_datasets_are_an_error(tmp_path, fakes):
    folder = fakes["MNIST"].write(tmp_path / "mix")
    fakes["Fashion-MNIST"].write(folder, only=(NAMES["train_images"],))  # Fashion images, MNIST labels
    with pytest.raises(data.DatasetError, match="different datasets") as info:
        data.load_mnist(folder)
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz is Fashion-MNIST" in msg
    assert "train-labels-idx1-ubyte.gz is MNIST" in msg
    # Structure-only reading takes the mix as it is.
    assert data.load_mnist(folder, verify=False).dataset is None


def test_mixed_within_test_split_only(tmp_path, fakes):
    folder = fakes["Fashion-MNIST"].write(tmp_path / "mix")
    fakes["KMNIST"].write(folder, only=(NAMES["test_labels"],))
    with pytest.raises(data.DatasetError, match="t10k-labels-idx1-ubyte.gz is KMNIST"):
        data.load_mnist(folder, splits=("test",))


def test_damaged_fashion_file_is_never_told_to_fetch_mnist(tmp_path, fakes):
    fashion = fakes["Fashion-MNIST"]
    folder = fashion.write(tmp_path / "fashion")
    labels = bytearray(fashion.content[NAMES["train_labels"]])
    labels[10] = (labels[10] + 1) % 10  # still valid, same size: only the checksum can tell
    bad = folder / f"{NAMES['train_labels']}.gz"
    bad.write_bytes(gzip.compress(bytes(labels), mtime=0))
    with pytest.raises(data.DatasetError, match="checksum mismatch") as info:
        data.load_mnist(folder)
    msg = str(info.value)
    assert info.value.path == bad and str(bad) in msg
    assert "not the train-labels-idx1-ubyte of MNIST, Fashion-MNIST or KMNIST" in msg
    assert "other files here are Fashion-MNIST" in msg and "fashion-source" in msg
    assert "--no-verify" in msg and "verify=False" in msg
    assert "download" not in msg  # --download fetches MNIST: never advise it for Fashion-MNIST


def test_damaged_mnist_file_suggests_download(tmp_path, fakes):
    folder = fakes["MNIST"].write(tmp_path / "mnist")
    (folder / f"{NAMES['test_images']}.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8)), mtime=0))
    with pytest.raises(data.DatasetError, match="other files here are MNIST.*--download.*--no-verify"):
        data.load_mnist(folder)


def test_unknown_data_of_the_right_size_points_to_no_verify(tmp_path, fakes):
    folder = Fake(99).write(tmp_path / "mine")
    with pytest.raises(data.DatasetError, match=r"None of the 4 files here matches.*--no-verify"):
        data.load_mnist(folder)
    assert data.load_mnist(folder, verify=False).dataset is None


def test_custom_checksums_table_still_works(tmp_path, fakes):
    mine = Fake(7)
    folder = mine.write(tmp_path / "mine")
    assert data.load_mnist(folder, checksums=mine.md5).dataset is None
    wrong = dict(mine.md5, **{NAMES["test_labels"]: "0" * 32})
    with pytest.raises(data.DatasetError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch.*checksums="):
        data.load_mnist(folder, checksums=wrong)


def test_no_verify_still_checks_structure(tmp_path):
    mine = Fake(5)
    folder = mine.write(tmp_path / "mine")
    (folder / f"{NAMES['train_labels']}.gz").write_bytes(
        gzip.compress(idx_bytes(np.array([1, 2, 3, 4, 5, 10], np.uint8)), mtime=0))
    with pytest.raises(data.DatasetError, match="label 10 at index 5 is outside 0..9"):
        data.load_mnist(folder, verify=False)
    (folder / f"{NAMES['train_labels']}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(4)))
    with pytest.raises(data.DatasetError, match="6 images but .* 0 labels"):
        data.load_mnist(folder, verify=False)
    (folder / f"{NAMES['test_images']}.gz").write_bytes(mine.gz[NAMES["test_labels"]])
    with pytest.raises(data.DatasetError, match="wrong magic number"):
        data.load_mnist(folder, verify=False, splits=("test",))


def test_splits_reads_only_the_files_asked_for(tmp_path, fakes, monkeypatch):
    folder = fakes["Fashion-MNIST"].write(tmp_path / "f", only=(NAMES["test_images"], NAMES["test_labels"]))
    opened = []
    real_read = data._read_content
    monkeypatch.setattr(data, "_read_content", lambda path, *a, **k: opened.append(path.name) or real_read(path, *a, **k))
    got = data.load_mnist(folder, splits=("test",))
    assert got.dataset == "Fashion-MNIST" and got.train_images is None and got.train_labels is None
    assert sorted(opened) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert "train=not read" in repr(got)
    with pytest.raises(data.DatasetError, match=r"missing train-images-idx3-ubyte\[\.gz\]"):
        data.load_mnist(folder)
    with pytest.raises(ValueError, match="splits"):
        data.load_mnist(folder, splits=("validation",))


# ---------------------------------------------------------------------------
# Real files
# ---------------------------------------------------------------------------


@needs_mnist
def test_real_mnist_is_recognised():
    assert MNIST_DIR.is_absolute()
    assert data.load_mnist(MNIST_DIR, splits=("test",)).dataset == "MNIST"


@needs_fashion
def test_real_fashion_mnist_is_recognised():
    got = data.load_mnist(FASHION_DIR)
    assert got.dataset == "Fashion-MNIST"
    assert got.train_images.shape == (60000, 28, 28) and got.test_images.shape == (10000, 28, 28)
    for labels, n in ((got.train_labels, 6000), (got.test_labels, 1000)):
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), [n] * 10)
    # The Debian files are recompressed: only the digests of the content can match them.
    for name, digest in data.FASHION_MNIST_MD5.items():
        with gzip.open(FASHION_DIR / f"{name}.gz", "rb") as f:
            assert md5(f.read()) == digest


@needs_mnist
@needs_fashion
def test_real_fashion_images_with_mnist_labels_are_refused(tmp_path):
    folder = tmp_path / "mix"
    folder.mkdir()
    for name in NAMES.values():
        src = FASHION_DIR if name == NAMES["train_images"] else MNIST_DIR
        (folder / f"{name}.gz").symlink_to(src / f"{name}.gz")
    with pytest.raises(data.DatasetError, match="different datasets") as info:
        data.load_mnist(folder)
    assert "train-images-idx3-ubyte.gz is Fashion-MNIST" in str(info.value)
    assert "train-labels-idx1-ubyte.gz is MNIST" in str(info.value)


@needs_fashion
def test_cli_trains_and_evaluates_fashion_mnist(tmp_path, capsys):
    ckpt, tj, ej = tmp_path / "m.npz", tmp_path / "t.json", tmp_path / "e.json"
    assert main(["train", "--data", str(FASHION_DIR), "--hidden", "8", "--limit", "64",
                 "--batch-size", "32", "--epochs", "1", "--test-limit", "200", "--threads", "1",
                 "--quiet", "--save", str(ckpt), "--json", str(tj)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"data: Fashion-MNIST in {FASHION_DIR}"
    t = json.loads(tj.read_text())
    assert t["dataset"] == "Fashion-MNIST" and t["data_dir"] == str(FASHION_DIR)
    assert main(["evaluate", "--load", str(ckpt), "--data", str(FASHION_DIR), "--test-limit", "200",
                 "--json", str(ej)]) == 0
    assert "Fashion-MNIST" in capsys.readouterr().out
    assert json.loads(ej.read_text())["dataset"] == "Fashion-MNIST"


# ---------------------------------------------------------------------------
# CLI --no-verify on data of one's own
# ---------------------------------------------------------------------------


def _custom_idx_dataset(folder: Path, rows: int = 12, cols: int = 10, n_train: int = 64,
                        n_test: int = 32) -> Path:
    """Images in the IDX format that no known dataset has: class = the bright row."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, rows, cols)).astype(np.uint8)
        images[np.arange(n), labels, :] = 250
        (folder / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return folder


def test_cli_no_verify_trains_on_custom_idx_data(tmp_path, capsys):
    folder = _custom_idx_dataset(tmp_path / "custom")
    args = ["train", "--data", str(folder), "--hidden", "8", "--limit", "48", "--batch-size", "16",
            "--epochs", "2", "--threads", "1", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "it is not one of them" in err and "--no-verify" in err

    tj = tmp_path / "t.json"
    assert main(args + ["--no-verify", "--json", str(tj), "--save", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "data: unverified IDX data (--no-verify)" in out
    assert len([line for line in out.splitlines() if line.startswith("epoch")]) == 2
    t = json.loads(tj.read_text())
    assert t["dataset"] == "unverified IDX data (--no-verify)" and t["train_images"] == 48
    assert t["test_images"] == 32

    # evaluate needs only the test files, and --no-verify too
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte.gz"):
        (folder / name).unlink()
    assert main(["evaluate", "--load", str(tmp_path / "m.npz"), "--data", str(folder),
                 "--no-verify"]) == 0
    assert "(32 images, unverified IDX data (--no-verify))" in capsys.readouterr().out


@needs_mnist
def test_cli_evaluate_never_opens_train_files(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    for name in (NAMES["test_images"], NAMES["test_labels"]):
        (folder / f"{name}.gz").symlink_to(MNIST_DIR / f"{name}.gz")
    # Train files that would be an error (or a bomb) if anything read them.
    for name in (NAMES["train_images"], NAMES["train_labels"]):
        (folder / name).write_bytes(b"not an IDX file")
    ckpt = tmp_path / "m.npz"
    custom = _custom_idx_dataset(tmp_path / "c", rows=28, cols=28, n_train=16, n_test=16)
    assert main(["train", "--data", str(custom), "--no-verify", "--hidden", "4", "--epochs", "1",
                 "--threads", "1", "--quiet", "--save", str(ckpt)]) == 0
    capsys.readouterr()

    opened = []
    real_read = data._read_content
    monkeypatch.setattr(data, "_read_content",
                        lambda path, *a, **k: opened.append(path.name) or real_read(path, *a, **k))
    assert main(["evaluate", "--load", str(ckpt), "--data", str(folder)]) == 0
    assert "(10000 images, MNIST)" in capsys.readouterr().out
    assert sorted(opened) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


# ---------------------------------------------------------------------------
# Untrusted files: gzip bombs and lying headers
# ---------------------------------------------------------------------------

_BOMB_GIB = 4


def _gzip_bomb(path: Path, header: bytes, gib: int = _BOMB_GIB) -> Path:
    """``header`` then ``gib`` GiB of zeros, gzipped: one 64 MiB member repeated (gzip allows
    concatenated members), so it is written in well under a second and is a few MB."""
    zeros = gzip.compress(bytes(64 << 20), compresslevel=9, mtime=0)
    with open(path, "wb") as f:
        f.write(gzip.compress(header, mtime=0))
        for _ in range(gib * 16):
            f.write(zeros)
    return path


_PROBE = textwrap.dedent("""
    import json, resource, sys, time
    from fastlstm import data
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        if sys.argv[2] == "load":
            data.load_mnist(sys.argv[1], verify=sys.argv[3] == "verify")
            error = None
        else:
            data.read_idx(sys.argv[1])
            error = None
    except data.DatasetError as e:
        error = str(e)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"error": error, "seconds": seconds, "grew_mb": (after - before) / 1024}))
""")


def _probe(*args: str) -> dict:
    # not from the repo root: its fastlstm/ folder would hide the installed package
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True,
                       timeout=120, cwd=os.path.dirname(ROOT), env=child_env())
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    made = {
        # The case: zeros all the way (magic number 0).
        "zeros": _gzip_bomb(folder / "zeros.gz", b""),
        # A correct MNIST images header, then far more pixels than it announces.
        "long": _gzip_bomb(folder / "long.gz", b"\x00\x00\x08\x03" + b"".join(
            d.to_bytes(4, "big") for d in (60000, 28, 28))),
        # A header announcing 4 GiB of labels (the largest IDX dimension), delivered.
        "huge": _gzip_bomb(folder / "huge.gz", b"\x00\x00\x08\x01" + (2**32 - 1).to_bytes(4, "big")),
    }
    return made


@pytest.mark.parametrize("kind, verify, expected", [
    ("zeros", "verify", "wrong magic number 0x00000000"),
    ("long", "verify", r"size mismatch: header says shape \(60000, 28, 28\) \(47040016 bytes\), "
                       r"content has more than"),
    ("long", "no-verify", "size mismatch"),
])
def test_gzip_bomb_in_a_dataset_folder_is_refused_fast_and_small(tmp_path, bombs, kind, verify, expected):
    folder = Fake(0).write(tmp_path / "d")
    target = folder / f"{NAMES['train_images']}.gz"
    target.unlink()
    target.symlink_to(bombs[kind])
    got = _probe(str(folder), "load", verify)
    assert got["error"] is not None and re.search(expected, got["error"]), got
    assert "\n" not in got["error"]
    # Before: 4.3 GB and 22 s. Now: at most the 47 MB the header announces, well under a second.
    assert got["seconds"] < 5, got
    assert got["grew_mb"] < 150, got  # the 47 MB buffer, not twice that, nor gigabytes


def test_lying_label_header_is_refused_before_allocating(tmp_path, bombs):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / f"{NAMES['train_labels']}.gz").symlink_to(bombs["huge"])
    got = _probe(str(folder / f"{NAMES['train_labels']}.gz"), "read")
    assert "more than the limit" in got["error"] and got["seconds"] < 5 and got["grew_mb"] < 100, got


def test_exact_size_of_known_files_is_checked_from_the_header(tmp_path):
    # MNIST-sized header but 1 image: refused before reading on, with a remedy.
    folder = Fake(0).write(tmp_path / "d")
    with pytest.raises(data.DatasetError, match=r"\(6, 28, 28\) \(4720 bytes\), but this file of MNIST, "
                                                r"Fashion-MNIST and KMNIST has 47040016 bytes"):
        data.load_mnist(folder)


def test_raw_file_size_is_checked_before_reading(tmp_path):
    path = tmp_path / "x"
    with open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big"))
        f.truncate(1 << 40)  # 1 TiB sparse file: nothing can read it in time
    t0 = time.perf_counter()
    with pytest.raises(data.DatasetError, match=r"size mismatch: header says shape \(10,\) \(18 bytes\), "
                                                r"content has 1099511627776 bytes"):
        data.read_idx(path)
    assert time.perf_counter() - t0 < 1


def test_max_bytes(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8))))
    assert data.read_idx(path, max_bytes=108).shape == (100,)
    with pytest.raises(data.DatasetError, match="more than the limit of 107 bytes"):
        data.read_idx(path, max_bytes=107)
