"""Streams (fastlstm.LSTMStream / GRUStream, fl_*_stream_* in fastlstm.h): one step per call.

The contract checked here: T steps of a stream give bit for bit the output of fastlstm.lstm /
gru over the same T inputs from the same initial state (same thread count), for both dtypes,
B = 1 and B > 1, several H (multiples of the vector width and not), both GRU variants; reset
semantics; the weights are copied at construction; bad arguments raise errors naming them;
and a plain C program driving the C API gets the same bits (and the C functions refuse
blocks that are not streams of their kind)."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import fastlstm
from testkit import DTYPES, readonly

KINDS = ("lstm", "gru", "gru_orig")  # gru_orig: linear_before_reset=False
SHAPES = [(1, 28, 128), (1, 3, 1), (3, 5, 19), (8, 7, 33), (8, 4, 64)]  # (B, I, H)


def _weights(kind: str, I: int, H: int, dtype, rng) -> list:
    g = 4 if kind == "lstm" else 3
    k = 1 / np.sqrt(H)
    return [rng.uniform(-k, k, s).astype(dtype) for s in ((g * H, I), (g * H, H), (g * H,),
                                                          (g * H,))]


def _stream(kind: str, w: list, B: int, num_threads=None):
    if kind == "lstm":
        return fastlstm.LSTMStream(*w, batch_size=B, num_threads=num_threads)
    return fastlstm.GRUStream(*w, batch_size=B, linear_before_reset=kind == "gru",
                              num_threads=num_threads)


def _sequence(kind: str, x, w, h0, c0, threads: int):
    """fastlstm.lstm / gru over x (T, B, I) on `threads` threads: (output, h_n, c_n or None)."""
    fastlstm.set_num_threads(threads)
    try:
        if kind == "lstm":
            r = fastlstm.lstm(x, *w, h0, c0, training=False)
            return r.output, r.h_n, r.c_n
        r = fastlstm.gru(x, *w, h0, training=False, linear_before_reset=kind == "gru")
        return r.output, r.h_n, None
    finally:
        fastlstm.set_num_threads(None)


def _problem(kind, T, B, I, H, dtype, seed=0):
    rng = np.random.default_rng(seed)
    w = _weights(kind, I, H, dtype, rng)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype) if kind == "lstm" else None
    return x, w, h0, c0


def _reset(s, kind, h0, c0):
    if kind == "lstm":
        s.reset(h0, c0)
    else:
        s.reset(h0)


# ------------------------------------------------------------------------------ bitwise parity

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("B,I,H", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_steps_equal_the_sequence_bitwise(kind, dtype, B, I, H, threads):
    T = 6
    x, w, h0, c0 = _problem(kind, T, B, I, H, dtype)
    y, h_n, c_n = _sequence(kind, x, w, h0, c0, threads)
    s = _stream(kind, w, B, num_threads=threads)
    _reset(s, kind, h0, c0)
    got = np.stack([s.step(x[t]) for t in range(T)])
    assert got.dtype == dtype and got.shape == (T, B, H)
    np.testing.assert_array_equal(got, y)
    np.testing.assert_array_equal(s.h, h_n)
    if kind == "lstm":
        np.testing.assert_array_equal(s.c, c_n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_new_stream_starts_at_zeros_and_reset_restarts(kind, dtype):
    T, B, I, H = 4, 3, 5, 24
    x, w, h0, c0 = _problem(kind, T, B, I, H, dtype, seed=1)
    s = _stream(kind, w, B)
    assert not s.h.any()
    y0, _, _ = _sequence(kind, x, w, None, None, 1)
    np.testing.assert_array_equal(np.stack([s.step(x[t]) for t in range(T)]), y0)
    # reset with a state, mid-stream: the next steps are a fresh sequence from that state
    y1, _, _ = _sequence(kind, x, w, h0, c0, 1)
    _reset(s, kind, h0, c0)
    np.testing.assert_array_equal(s.h, h0)
    np.testing.assert_array_equal(np.stack([s.step(x[t]) for t in range(T)]), y1)
    # reset() = zeros again
    s.reset()
    assert not s.h.any()
    np.testing.assert_array_equal(np.stack([s.step(x[t]) for t in range(T)]), y0)


def test_lstm_reset_h0_only_zeroes_c():
    T, B, I, H = 3, 2, 4, 8
    x, w, h0, c0 = _problem("lstm", T, B, I, H, np.float64, seed=2)
    s = fastlstm.LSTMStream(*w, batch_size=B)
    s.reset(h0, c0)
    s.step(x[0])
    s.reset(h0)
    assert not s.c.any()
    np.testing.assert_array_equal(s.h, h0)
    y, _, _ = _sequence("lstm", x, w, h0, None, 1)
    np.testing.assert_array_equal(np.stack([s.step(x[t]) for t in range(T)]), y)
    s.reset(c0=c0)
    assert not s.h.any()
    np.testing.assert_array_equal(s.c, c0)


def test_state_properties_are_copies():
    x, w, h0, c0 = _problem("lstm", 2, 2, 3, 5, np.float32)
    s = fastlstm.LSTMStream(*w, batch_size=2)
    s.reset(h0, c0)
    h, c = s.h, s.c
    h[...] = 7
    c[...] = 7
    np.testing.assert_array_equal(s.h, h0)
    np.testing.assert_array_equal(s.c, c0)


@pytest.mark.parametrize("kind", KINDS)
def test_weights_are_copied_at_construction(kind):
    T, B, I, H = 3, 2, 4, 9
    x, w, _, _ = _problem(kind, T, B, I, H, np.float32, seed=3)
    want, _, _ = _sequence(kind, x, w, None, None, 1)
    s = _stream(kind, w, B)
    for a in w:
        a[...] = np.nan
    np.testing.assert_array_equal(np.stack([s.step(x[t]) for t in range(T)]), want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_thread_counts_give_the_same_bits(kind, dtype):
    """Threads split the batch rows into tiles: 16 rows make several tiles on any ISA."""
    T, B, I, H = 3, 16, 6, 40
    x, w, h0, c0 = _problem(kind, T, B, I, H, dtype, seed=4)
    outs = []
    for n in (1, 2, 3):
        s = _stream(kind, w, B, num_threads=n)
        assert s.num_threads == n
        _reset(s, kind, h0, c0)
        outs.append(np.stack([s.step(x[t]) for t in range(T)]))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    y, _, _ = _sequence(kind, x, w, h0, c0, 1)
    np.testing.assert_array_equal(outs[0], y)


def test_a_stream_keeps_the_instruction_set_it_was_packed_for(monkeypatch):
    """The packed panels are as wide as the ISA's vectors: FASTLSTM_ISA read after init must
    not send a step to another ISA's kernels (it would read the panels wrongly)."""
    T, B, I, H = 3, 2, 5, 37
    x, w, h0, c0 = _problem("lstm", T, B, I, H, np.float32, seed=9)
    y, _, _ = _sequence("lstm", x, w, h0, c0, 1)
    s = fastlstm.LSTMStream(*w, batch_size=B)
    s.reset(h0, c0)
    monkeypatch.setenv("FASTLSTM_ISA", "generic")
    np.testing.assert_array_equal(np.stack([s.step(x[t]) for t in range(T)]), y)


def test_out_is_written_and_returned():
    T, B, I, H = 4, 3, 5, 17
    x, w, h0, c0 = _problem("lstm", T, B, I, H, np.float32, seed=5)
    y, _, _ = _sequence("lstm", x, w, h0, c0, 1)
    s = fastlstm.LSTMStream(*w, batch_size=B)
    s.reset(h0, c0)
    out = np.empty((B, H), np.float32)
    for t in range(T):
        r = s.step(x[t], out=out)
        assert r is out
        np.testing.assert_array_equal(out, y[t])


def test_inputs_of_any_layout_are_accepted_and_left_untouched():
    T, B, I, H = 3, 3, 4, 10
    x, w, h0, c0 = _problem("lstm", T, B, I, H, np.float64, seed=6)
    y, _, _ = _sequence("lstm", x, w, h0, c0, 1)
    wt = [readonly(np.asfortranarray(a)) for a in w]  # Fortran order, read-only
    s = fastlstm.LSTMStream(*wt, batch_size=B)
    s.reset(readonly(h0), np.asfortranarray(c0))
    x_bf = np.ascontiguousarray(x.transpose(1, 0, 2))  # (B, T, I): x_bf[:, t] is strided
    before = x_bf.copy()
    got = [s.step(x_bf[:, t]) for t in range(2)]
    got.append(s.step(x[2].tolist()))  # nested lists convert too
    np.testing.assert_array_equal(np.stack(got), y)
    np.testing.assert_array_equal(x_bf, before)


def test_empty_batch():
    w = _weights("gru", 3, 4, np.float32, np.random.default_rng(0))
    s = fastlstm.GRUStream(*w, batch_size=0)
    assert s.step(np.zeros((0, 3), np.float32)).shape == (0, 4)
    assert s.h.shape == (0, 4)


def test_attributes_and_exports():
    w = _weights("gru", 3, 4, np.float64, np.random.default_rng(0))
    s = fastlstm.GRUStream(*w, batch_size=2, linear_before_reset=False)
    assert (s.batch_size, s.input_size, s.hidden_size, s.num_threads) == (2, 3, 4, 1)
    assert s.dtype == np.float64 and s.linear_before_reset is False
    assert "GRUStream(batch_size=2" in repr(s)
    assert {"LSTMStream", "GRUStream"} <= set(fastlstm.__all__)


def test_streams_in_threads_are_independent():
    """One stream per thread, stepped concurrently (the GIL is released in step)."""
    T, B, I, H = 50, 1, 8, 32
    x, w, h0, c0 = _problem("lstm", T, B, I, H, np.float32, seed=7)
    want, _, _ = _sequence("lstm", x, w, h0, c0, 1)
    results = [None] * 4

    def run(k):
        s = fastlstm.LSTMStream(*w)
        s.reset(h0, c0)
        results[k] = np.stack([s.step(x[t]) for t in range(T)])

    workers = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, want)


# ------------------------------------------------------------------------------ bad arguments

def _good():
    return _weights("lstm", 3, 4, np.float32, np.random.default_rng(0))


WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@pytest.mark.parametrize("i,name", list(enumerate(WEIGHT_NAMES)))
def test_constructor_names_the_bad_weight(i, name):
    w = _good()
    bad = list(w)
    bad[i] = w[i].astype(np.float64) if i else w[i].astype(np.int32)
    with pytest.raises(TypeError, match=name):
        fastlstm.LSTMStream(*bad)
    bad = list(w)
    bad[i] = w[i][:-1]
    with pytest.raises(ValueError, match=name):
        fastlstm.LSTMStream(*bad)
    bad[i] = None
    with pytest.raises(TypeError, match=name):
        fastlstm.LSTMStream(*bad)


def test_gru_stream_wants_three_gates():
    with pytest.raises(ValueError, match="weight_hh"):
        fastlstm.GRUStream(*_good())


@pytest.mark.parametrize("arg,exc", [(-1, ValueError), (True, TypeError), (1.5, TypeError),
                                     ("2", TypeError)])
def test_bad_batch_size(arg, exc):
    with pytest.raises(exc, match="batch_size"):
        fastlstm.LSTMStream(*_good(), batch_size=arg)


@pytest.mark.parametrize("arg,exc", [(0, ValueError), (-2, ValueError), (True, TypeError),
                                     (2.0, TypeError), (2**31, ValueError)])
def test_bad_num_threads(arg, exc):
    with pytest.raises(exc, match="num_threads"):
        fastlstm.LSTMStream(*_good(), num_threads=arg)


def test_step_names_a_bad_input():
    s = fastlstm.LSTMStream(*_good(), batch_size=2)
    with pytest.raises(TypeError, match="x_t"):
        s.step(np.zeros((2, 3), np.float64))
    with pytest.raises(TypeError, match="x_t"):
        s.step(None)
    with pytest.raises(ValueError, match=r"x_t must have shape \(2, 3\)"):
        s.step(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="x_t"):
        s.step(np.zeros(6, np.float32))


def test_step_names_a_bad_out():
    s = fastlstm.LSTMStream(*_good(), batch_size=2)
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="out"):
        s.step(x, out=np.zeros((2, 4), np.float64))
    with pytest.raises(TypeError, match="out"):
        s.step(x, out=[[0.0] * 4] * 2)
    with pytest.raises(ValueError, match="out must have shape"):
        s.step(x, out=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="out must be writeable"):
        s.step(x, out=readonly(np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match="out must be an aligned C-contiguous"):
        s.step(x, out=np.zeros((4, 2), np.float32).T)
    h = s.h
    both = np.zeros(14, np.float32)  # out overlapping x_t
    with pytest.raises(ValueError, match="overlap"):
        s.step(both[:6].reshape(2, 3), out=both[4:12].reshape(2, 4))
    np.testing.assert_array_equal(s.h, h)  # nothing stepped


def test_reset_names_a_bad_state():
    s = fastlstm.LSTMStream(*_good(), batch_size=2)
    with pytest.raises(ValueError, match="h0"):
        s.reset(np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match="c0"):
        s.reset(None, np.zeros((2, 4), np.float64))
    g = fastlstm.GRUStream(*_weights("gru", 3, 4, np.float32, np.random.default_rng(0)))
    g.reset(None, None)  # reset(h0, c0) works for both kinds of stream
    with pytest.raises(TypeError, match="c0"):
        g.reset(None, np.zeros((1, 4), np.float32))  # but a GRU has no cell state


# ------------------------------------------------------------------------------ the C API

CC = shlex.split(os.environ.get("CC", "cc"))
LDFLAGS = shlex.split(os.environ.get("LDFLAGS", ""))  # the sanitizer runtimes (.ci/sanitize)
EXAMPLE = Path(__file__).resolve().parent.parent / "csrc" / "examples" / "lstm_stream.c"
needs_cc = pytest.mark.skipif(shutil.which(CC[0]) is None or sys.platform == "win32",
                              reason=f"needs a C compiler ({CC[0]}) taking cc-style flags")


def _build(src: Path, exe: Path) -> None:
    omp = ["-fopenmp"] if fastlstm.openmp_enabled() else []
    cmd = [*CC, "-std=c11", "-Wall", "-Wextra", "-Werror", str(src),
           f"-I{fastlstm.get_include()}", f"-L{fastlstm.get_library_dir()}", "-lfastlstm",
           *omp, "-lm", *LDFLAGS, "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, " ".join(cmd) + "\n" + build.stderr[-4000:]


@needs_cc
@pytest.mark.skipif(not EXAMPLE.exists(), reason="csrc/examples is not beside the tests")
def test_c_program_steps_give_the_sequence_bits(tmp_path):
    exe = tmp_path / "lstm_stream"
    _build(EXAMPLE, exe)
    T, B, I, H, threads = 7, 5, 11, 19, 2
    x, w, _, _ = _problem("lstm", T, B, I, H, np.float32, seed=8)
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    inp.write_bytes(b"".join(a.tobytes() for a in [x, *w]))
    run = subprocess.run([str(exe), str(T), str(B), str(I), str(H), str(threads), str(inp),
                          str(out), "30"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"isa {fastlstm.isa()}" in run.stdout and "step_us median" in run.stdout
    got = np.frombuffer(out.read_bytes(), np.float32)
    y, h, c = np.split(got, [T * B * H, T * B * H + B * H])
    want_y, want_h, want_c = _sequence("lstm", x, w, None, None, threads)
    np.testing.assert_array_equal(y.reshape(T, B, H), want_y)
    np.testing.assert_array_equal(h.reshape(B, H), want_h)
    np.testing.assert_array_equal(c.reshape(B, H), want_c)


MISUSE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fastlstm.h"
#define EXPECT(cond) do { if (!(cond)) { printf("failed line %d: %s\n", __LINE__, #cond); \
                                         return 1; } } while (0)
int main(void) {
    enum { B = 2, I = 3, H = 5 };
    float w_ih[4 * H * I] = {0}, w_hh[4 * H * H] = {0}, b[4 * H] = {0}, x[B * I] = {0};
    float h[B * H], c[B * H];
    double xd[B * I] = {0}, hd[B * H];
    size_t n = 0, ng = 0;
    EXPECT(fl_lstm_stream_bytes(1, B, I, H, 2, &n) == FL_EINVAL);
    EXPECT(fl_lstm_stream_bytes(1, B, 0, H, 4, &n) == FL_EINVAL);
    EXPECT(fl_lstm_stream_bytes(1, -1, I, H, 4, &n) == FL_EINVAL);
    EXPECT(fl_lstm_stream_bytes(1, B, I, H, 4, NULL) == FL_EINVAL);
    EXPECT(fl_lstm_stream_bytes(1, B, I, H, 4, &n) == FL_OK && n > 0);
    EXPECT(fl_gru_stream_bytes(1, B, I, H, 4, 1, &ng) == FL_OK && ng > 0);
    char *raw = aligned_alloc(64, n + 64);
    EXPECT(raw != NULL);
    memset(raw, 0, n + 64);
    /* not initialised, or not 64-byte aligned */
    EXPECT(fl_lstm_stream_step_f32(raw, x, h) == FL_EINVAL);
    EXPECT(fl_lstm_stream_reset_f32(raw, NULL, NULL) == FL_EINVAL);
    EXPECT(fl_lstm_stream_state_f32(raw, h, c) == FL_EINVAL);
    EXPECT(fl_lstm_stream_step_f32(NULL, x, h) == FL_EINVAL);
    EXPECT(fl_lstm_stream_init_f32(raw + 8, n, 1, B, I, H, w_ih, w_hh, b, b) == FL_EINVAL);
    EXPECT(fl_lstm_stream_init_f32(raw, n - 1, 1, B, I, H, w_ih, w_hh, b, b) == FL_ENOMEM);
    EXPECT(fl_lstm_stream_step_f32(raw, x, h) == FL_EINVAL); /* a failed init leaves no stream */
    EXPECT(fl_lstm_stream_init_f32(raw, n, 1, B, I, H, NULL, w_hh, b, b) == FL_EINVAL);
    EXPECT(fl_lstm_stream_init_f32(raw, n, 1, B, I, H, w_ih, w_hh, b, b) == FL_OK);
    EXPECT(fl_lstm_stream_step_f32(raw, NULL, h) == FL_EINVAL);
    EXPECT(fl_lstm_stream_step_f32(raw, x, NULL) == FL_OK); /* h_out may be NULL */
    /* another kind or dtype */
    EXPECT(fl_lstm_stream_step_f64(raw, xd, hd) == FL_EINVAL);
    EXPECT(fl_gru_stream_step_f32(raw, x, h) == FL_EINVAL);
    EXPECT(fl_gru_stream_reset_f32(raw, NULL) == FL_EINVAL);
    /* a copy is an independent stream in the same state */
    float xs[B * I], h1[B * H], h2[B * H], c1[B * H], c2[B * H];
    for (int i = 0; i < B * I; i++) xs[i] = (float)(i % 5) - 2.0f;
    for (int i = 0; i < 4 * H * I; i++) w_ih[i] = 0.01f * (float)(i % 13);
    EXPECT(fl_lstm_stream_init_f32(raw, n, 1, B, I, H, w_ih, w_hh, b, b) == FL_OK);
    EXPECT(fl_lstm_stream_step_f32(raw, xs, h1) == FL_OK);
    char *copy = aligned_alloc(64, n);
    EXPECT(copy != NULL);
    memcpy(copy, raw, n);
    EXPECT(fl_lstm_stream_step_f32(raw, xs, h1) == FL_OK);
    EXPECT(fl_lstm_stream_step_f32(copy, xs, h2) == FL_OK);
    EXPECT(memcmp(h1, h2, sizeof h1) == 0);
    EXPECT(fl_lstm_stream_state_f32(raw, NULL, c1) == FL_OK);
    EXPECT(fl_lstm_stream_state_f32(copy, h2, c2) == FL_OK);
    EXPECT(memcmp(c1, c2, sizeof c1) == 0 && memcmp(h1, h2, sizeof h1) == 0);
    /* a GRU block refuses the LSTM's calls */
    char *g = aligned_alloc(64, ng);
    EXPECT(g != NULL);
    EXPECT(fl_gru_stream_init_f32(g, ng, 1, B, I, H, 1, w_ih, w_hh, b, b) == FL_OK);
    EXPECT(fl_lstm_stream_step_f32(g, x, h) == FL_EINVAL);
    EXPECT(fl_gru_stream_step_f32(g, x, h) == FL_OK);
    EXPECT(fl_gru_stream_state_f32(g, h) == FL_OK);
    free(raw), free(copy), free(g);
    printf("ok\n");
    return 0;
}
"""


@needs_cc
def test_c_api_refuses_what_is_not_a_stream(tmp_path):
    src, exe = tmp_path / "misuse.c", tmp_path / "misuse"
    src.write_text(MISUSE)
    _build(src, exe)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr
