"""Under .ci/sanitize (an ASan build), proof that the method can see what it is meant to: a
kernel output one element too short, allocated the way the binding allocates outputs, makes
ASan stop the process with a heap-buffer-overflow. Skipped in ordinary runs."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from testkit import child_env

pytestmark = pytest.mark.skipif("libasan" not in os.environ.get("LD_PRELOAD", ""),
                                reason="only under the AddressSanitizer build (.ci/sanitize)")

CHILD = textwrap.dedent("""
    import ctypes, numpy as np
    from fastlstm import _core
    T, B, I, H = 3, 2, 4, 5
    class Dims(ctypes.Structure):
        _fields_ = [("seq_len", ctypes.c_int64), ("batch", ctypes.c_int64),
                    ("input_size", ctypes.c_int64), ("hidden_size", ctypes.c_int64),
                    ("batch_first", ctypes.c_int), ("n_threads", ctypes.c_int)]
    lib = ctypes.CDLL(_core.__file__)
    a = lambda *s: _core.empty_aligned(s, np.float32)
    x, w_ih, w_hh, b_ih, b_hh = a(T, B, I), a(4 * H, I), a(4 * H, H), a(4 * H), a(4 * H)
    for arr in (x, w_ih, w_hh, b_ih, b_hh):
        arr[...] = 0.1
    y = a(T * B * H - SHORT)  # SHORT elements too few for the output
    p = lambda arr: ctypes.c_void_p(arr.ctypes.data)
    st = lib.fl_lstm_forward_f32(ctypes.byref(Dims(T, B, I, H, 0, 1)), p(x), p(w_ih), p(w_hh),
                                 p(b_ih), p(b_hh), None, None, None, p(y), None, None, None,
                                 None, ctypes.c_size_t(0))
    print("status", st)
""")


@pytest.mark.parametrize("short, overflow", [(0, False), (1, True)])
def test_asan_sees_a_write_one_element_past_an_output(short, overflow):
    run = subprocess.run([sys.executable, "-c", CHILD.replace("SHORT", str(short))],
                         capture_output=True, text=True, timeout=120, env=child_env())
    if overflow:
        assert run.returncode != 0 and "heap-buffer-overflow" in run.stderr, run.stderr[-3000:]
    else:
        assert run.returncode == 0 and "status 0" in run.stdout, run.stderr[-3000:]
