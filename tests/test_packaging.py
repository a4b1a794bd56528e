"""What a published package must get right beyond the kernels: one version, a clear error when
the source folder shadows the installed package, the binding refusing dtypes it has no kernel
for, and the C API's range checks (which must not overflow themselves)."""
from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm import _core


def test_one_version_everywhere():
    header = open(os.path.join(fastlstm.get_include(), "fastlstm.h")).read()
    in_header = re.search(r'#define FASTLSTM_VERSION "([^"]+)"', header).group(1)
    assert fastlstm.__version__ == in_header == _core.version()
    try:
        assert importlib.metadata.version("fastlstm") == in_header
    except importlib.metadata.PackageNotFoundError:  # an in-place build, not installed
        pass


def test_importing_the_source_folder_without_a_core_says_what_to_do(tmp_path):
    """A checkout's root on sys.path (python -m, python -c) hides the installed package."""
    pkg = os.path.dirname(fastlstm.__file__)
    shadow = tmp_path / "fastlstm"
    shadow.mkdir()
    for name in os.listdir(pkg):
        if name.endswith((".py", ".pyx", ".pxd")):
            shutil.copy(os.path.join(pkg, name), shadow / name)
    (tmp_path / "setup.py").write_text("")
    run = subprocess.run([sys.executable, "-c", "import fastlstm"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastlstm is being imported from its source folder")
    assert "pip install -e ." in last and "another folder" in last
    assert "circular" not in run.stderr


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.complex64])
def test_binding_refuses_dtypes_without_a_kernel(dtype):
    B, I, H = 2, 3, 4
    a = lambda *s: np.zeros(s, dtype)  # noqa: E731
    out = lambda *s: np.zeros(s, np.float64)  # noqa: E731  (big enough for any dtype)
    with pytest.raises(TypeError, match="float32 or float64"):
        _core.lstm_cell_forward(a(B, I), a(B, H), a(B, H), a(4 * H, I), a(4 * H, H), a(4 * H),
                                a(4 * H), out(B, H), out(B, H), B, I, H, 1)


def _c_api():
    lib = ctypes.CDLL(_core.__file__)  # the extension links libfastlstm.a: its symbols are here
    lib.fl_lstm_reserve_bytes.restype = ctypes.c_int
    lib.fl_lstm_forward_f32.restype = ctypes.c_int
    return lib


class Dims(ctypes.Structure):
    _fields_ = [("seq_len", ctypes.c_int64), ("batch", ctypes.c_int64),
                ("input_size", ctypes.c_int64), ("hidden_size", ctypes.c_int64),
                ("batch_first", ctypes.c_int), ("n_threads", ctypes.c_int)]


FL_OK, FL_EINVAL = 0, 1


@pytest.mark.parametrize("T,B,I,H", [
    (1, 0, 2**62, 2**62 + 1),       # 4*H and I+H overflow int64 (the guard used to pass)
    (1, 1, 2**62, 1), (1, 1, 1, 2**61), (2**40, 2**40, 1, 1), (2**62, 0, 1, 1),
    (1, 0, 2**63 - 1, 2**63 - 1),
])
def test_c_size_guard_cannot_overflow(T, B, I, H):
    lib = _c_api()
    d = Dims(T, B, I, H, 0, 1)
    nbytes = ctypes.c_size_t(12345)
    assert lib.fl_lstm_reserve_bytes(ctypes.byref(d), ctypes.c_size_t(4),
                                     ctypes.byref(nbytes)) == FL_EINVAL
    assert nbytes.value == 12345  # untouched
    buf = (ctypes.c_float * 64)()
    p = ctypes.cast(buf, ctypes.c_void_p)
    st = lib.fl_lstm_forward_f32(ctypes.byref(d), p, p, p, p, p, None, None, None, p, None, None,
                                 None, None, ctypes.c_size_t(0))
    assert st == FL_EINVAL


def test_c_sizes_of_an_empty_batch_are_zero_not_an_error():
    lib = _c_api()
    d = Dims(5, 0, 3, 4, 0, 1)
    nbytes = ctypes.c_size_t(12345)
    assert lib.fl_lstm_reserve_bytes(ctypes.byref(d), ctypes.c_size_t(4),
                                     ctypes.byref(nbytes)) == FL_OK
    assert nbytes.value == 0
    assert lib.fl_lstm_reserve_bytes(ctypes.byref(d), ctypes.c_size_t(2),
                                     ctypes.byref(nbytes)) == FL_EINVAL  # no float16 kernel
    assert lib.fl_lstm_reserve_bytes(ctypes.byref(d), ctypes.c_size_t(4), None) == FL_EINVAL


def test_kept_scratch_is_bounded_in_blocks_and_bytes(monkeypatch):
    """Each Python thread keeps recent scratch blocks by exact size: at most four, and at most
    _SCRATCH_KEEP_MAX bytes together."""
    monkeypatch.setattr(_core, "_SCRATCH_KEEP_MAX", 1 << 20)
    _core.release_scratch()
    rng = np.random.default_rng(0)
    try:
        for T in (1, 2, 3, 4, 5, 6, 40, 80):  # scratch sizes grow with T (GRU: T*B*3H)
            x = rng.standard_normal((T, 16, 8)).astype(np.float32)
            w = [rng.standard_normal(s).astype(np.float32) for s in ((96, 8), (96, 32), (96,), (96,))]
            fastlstm.gru(x, *w, training=False)
            blocks = _core._scratch.blocks
            assert len(blocks) <= 4 and sum(blocks) <= 1 << 20
    finally:
        _core.release_scratch()
