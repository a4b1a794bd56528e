"""The kernels under OpenMP settings that grant fewer threads than asked for, and in forked
children: results must still match the reference and be bitwise those of a 1-thread run.

OpenMP reads its environment once, at start, so every setting runs in a fresh interpreter:
this file, run as a script (``python test_omp_settings.py <mode>``), computes every case and
prints one digest per case; the test compares them with the digests of 1-thread runs in the
pytest process, whose results are checked against fastlstm.reference once (so a digest that
matches is also a result that matches the reference). A hang fails by timeout, not by hanging.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import fastlstm  # noqa: E402
from fastlstm import reference as ref  # noqa: E402
from testkit import (GRU_GRAD_NAMES, LSTM_GRAD_NAMES, assert_results_close, child_env,  # noqa: E402
                     make_gru_problem, make_lstm_problem, make_upstream)

BATCHES = (1, 2, 7, 8, 9, 64, 130)
HIDDEN = (16, 64, 130)
KINDS = ("lstm", "gru_lbr0", "gru_lbr1")
DTYPES = (np.float64, np.float32)
T, I = 3, 5
TIMEOUT = 240  # seconds for one subprocess; a hang fails the test instead of hanging CI


def cases():
    for kind in KINDS:
        for dt in DTYPES:
            for B in BATCHES:
                for H in HIDDEN:
                    yield kind, dt, B, H


def key(kind, dt, B, H) -> str:
    return f"{kind}-{np.dtype(dt).name}-B{B}-H{H}"


def problem(kind, dt, B, H) -> dict:
    seed = 7 * B + H
    if kind == "lstm":
        return make_lstm_problem(T, B, I, H, dt, seed=seed, with_lengths=B >= 2)
    return make_gru_problem(T, B, I, H, dt, seed=seed, with_lengths=B >= 2,
                            linear_before_reset=kind == "gru_lbr1")


def run(module, kind, p):
    """Outputs and every gradient, as (names, result, grads)."""
    out = (module.lstm if kind == "lstm" else module.gru)(**p)
    grads = out.backward(**make_upstream(p, seed=1))
    names = ("output", "h_n", "c_n") if kind == "lstm" else ("output", "h_n")
    return names, out, grads


def digest(kind, p) -> str:
    names, out, grads = run(fastlstm, kind, p)
    gnames = LSTM_GRAD_NAMES if kind == "lstm" else GRU_GRAD_NAMES
    h = hashlib.sha256()
    for a in [getattr(out, n) for n in names] + [getattr(grads, n) for n in gnames]:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def digests(threads: int) -> dict:
    fastlstm.set_num_threads(threads)
    try:
        return {key(*c): digest(c[0], problem(*c)) for c in cases()}
    finally:
        fastlstm.set_num_threads(None)


# ------------------------------------------------------------------------ worker (script)

def _forked_child(conn, threads):
    result = digests(threads)
    result["get_num_threads"] = fastlstm.get_num_threads()  # what the child is told it gets
    conn.send(result)
    conn.close()


def _in_forked_child(threads: int, timeout: float = 120) -> dict:
    """digests(threads) computed in a child forked from this process (fails on a hang)."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_forked_child, args=(send, threads))
    child.start()
    send.close()
    if not recv.poll(timeout):
        child.kill()
        child.join()
        raise SystemExit(f"forked child still running after {timeout} s (hang)")
    result = recv.recv()
    child.join(timeout)
    return result


def worker(mode: str) -> dict:
    if mode == "fork":
        # the parent uses a team of 2 first: libgomp's pool exists when the child is forked
        fastlstm.set_num_threads(2)
        run(fastlstm, "lstm", problem("lstm", np.float32, 64, 64))
        return {f"t{n}": _in_forked_child(n) for n in (2, 3)}
    if mode == "fork_during_call":
        # another thread is inside 2-thread kernels while the child is forked
        stop = threading.Event()

        def busy():
            fastlstm.set_num_threads(2)
            p = problem("lstm", np.float32, 1, 130)  # the unit split: barriers every step
            while not stop.is_set():
                run(fastlstm, "lstm", p)

        t = threading.Thread(target=busy)
        t.start()
        try:
            return {"t2": _in_forked_child(2)}
        finally:
            stop.set()
            t.join()
    return {f"t{n}": digests(n) for n in (2, 3)}


# --------------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def expected() -> dict:
    """Digests of 1-thread runs in this process, each run checked against the reference."""
    fastlstm.set_num_threads(1)
    try:
        for kind, dt, B, H in cases():
            p = problem(kind, dt, B, H)
            names, out, grads = run(fastlstm, kind, p)
            _, rout, rgrads = run(ref, kind, p)
            gnames = LSTM_GRAD_NAMES if kind == "lstm" else GRU_GRAD_NAMES
            what = key(kind, dt, B, H) + ":"
            assert_results_close(out, rout, names, dt, what)
            assert_results_close(grads, rgrads, gnames, dt, what + "d")
    finally:
        fastlstm.set_num_threads(None)
    return digests(1)


def run_worker(mode: str, env: dict) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__)))
    full_env = dict(os.environ, **env)
    full_env["PYTHONPATH"] = os.pathsep.join([root, HERE, full_env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), mode], env=full_env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_same(got: dict, expected: dict) -> None:
    for threads, d in got.items():
        wrong = sorted(k for k in expected if d.get(k) != expected[k])
        assert not wrong, f"{threads}: not bitwise the 1-thread result: {wrong}"


needs_openmp = pytest.mark.skipif(not fastlstm.openmp_enabled(), reason="serial build")


@needs_openmp
@pytest.mark.parametrize("env", [{"OMP_THREAD_LIMIT": "1"}, {"OMP_MAX_ACTIVE_LEVELS": "0"}],
                         ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()))
def test_fewer_threads_granted(env, expected):
    assert_same(run_worker("threads", env), expected)


@needs_openmp
def test_dynamic_teams_on_a_loaded_machine(expected):
    """OMP_DYNAMIC=true: libgomp shrinks teams by the load average; busy loops add load (how
    much the team shrinks is up to the runtime, the two settings above force it)."""
    loaders = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                              else os.cpu_count() or 1)]
    try:
        got = run_worker("threads", {"OMP_DYNAMIC": "true"})
    finally:
        for p in loaders:
            p.kill()
            p.wait()
    assert_same(got, expected)


def _llvm_openmp_runtime() -> bool:
    """Whether the kernels run on LLVM's libomp (a clang build) rather than GCC's libgomp."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libomp" in line for line in maps)
    except OSError:
        return False


FORK_DURING_CALL = pytest.param("fork_during_call", marks=pytest.mark.skipif(
    _llvm_openmp_runtime(),
    reason="LLVM libomp can deadlock in a child forked while another thread is inside a "
           "parallel region (it hangs in __kmpc_global_thread_num before any kernel code "
           "runs); a known limit of clang builds, documented in the README"))


@needs_openmp
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.parametrize("mode", ["fork", FORK_DURING_CALL])
def test_forked_child(mode, expected):
    got = run_worker(mode, {})
    assert_same(got, expected)
    if mode == "fork":  # forked after this process's first call: the kernels run on one thread
        # (fork_during_call may fork before the other thread's first call has registered the
        # fork handler; that child keeps its threads, which is safe: it has no pool of its own)
        assert all(d["get_num_threads"] == 1 for d in got.values())


IMPORTS_NOTHING = textwrap.dedent('''
    import sys
    import numpy as np
    import fastlstm
    from testkit import make_gru_problem, make_lstm_problem, make_upstream
    problems = [(fastlstm.lstm, make_lstm_problem(3, 4, 5, 6, np.float32, seed=1, with_lengths=True)),
                (fastlstm.gru, make_gru_problem(3, 4, 5, 6, np.float64, seed=2)),
                (fastlstm.gru, make_gru_problem(3, 4, 5, 6, np.float32, seed=3,
                                                linear_before_reset=True))]
    upstream = [make_upstream(p, seed=4) for _, p in problems]
    before = set(sys.modules)
    for (f, p), up in zip(problems, upstream):
        f(**p).backward(**up)
        f(**p, training=False)
    print(sorted(set(sys.modules) - before))
''')


def test_a_call_imports_nothing():
    """A child forked while another thread imports a module waits for that import's lock
    forever, so the first kernel call must not import anything (it once looked up a text
    codec, which imports one: a fork during a thread's first call hung the child)."""
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([HERE, env["PYTHONPATH"]])
    r = subprocess.run([sys.executable, "-c", IMPORTS_NOTHING], env=env, capture_output=True,
                       text=True, timeout=TIMEOUT, cwd=HERE)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------- a call from inside Cython's prange

PRANGE_PYX = textwrap.dedent('''
    # cython: language_level=3
    from cython.parallel cimport prange
    from fastlstm.libfastlstm cimport fl_dims, fl_lstm_forward_f32

    cdef int one(int T, int B, int I, int H, const float *x, const float *w_ih,
                 const float *w_hh, const float *b_ih, const float *b_hh,
                 float *y) noexcept nogil:
        cdef fl_dims d
        d.seq_len = T; d.batch = B; d.input_size = I; d.hidden_size = H
        d.batch_first = 0; d.n_threads = 2
        return fl_lstm_forward_f32(&d, x, w_ih, w_hh, b_ih, b_hh, NULL, NULL, NULL, y, NULL,
                                   NULL, NULL, NULL, 0)

    def run(int T, int B, int I, int H, size_t x, size_t w_ih, size_t w_hh, size_t b_ih,
            size_t b_hh, size_t y):
        """Problem k (k = 0, 1) from one thread each of a 2-thread prange; the arguments are
        the addresses of C-contiguous float32 arrays stacking the two problems."""
        cdef int k
        cdef int st[2]
        for k in prange(2, nogil=True, num_threads=2, schedule="static", chunksize=1):
            st[k] = one(T, B, I, H, <const float *>x + k * T * B * I,
                        <const float *>w_ih + k * 4 * H * I, <const float *>w_hh + k * 4 * H * H,
                        <const float *>b_ih + k * 4 * H, <const float *>b_hh + k * 4 * H,
                        <float *>y + k * T * B * H)
        return st[0], st[1]
''')

PRANGE_SETUP = textwrap.dedent('''
    import os
    import fastlstm
    from Cython.Build import cythonize
    from setuptools import Extension, setup
    package_parent = os.path.dirname(os.path.dirname(fastlstm.__file__))
    setup(ext_modules=cythonize([Extension("prange_ext", ["prange_ext.pyx"],
                                           include_dirs=[fastlstm.get_include()],
                                           library_dirs=[fastlstm.get_library_dir()],
                                           libraries=["fastlstm", "m"],
                                           extra_compile_args=["-fopenmp"],
                                           extra_link_args=["-fopenmp"])],
                                include_path=[package_parent]))
''')


@needs_openmp
@pytest.mark.skipif(sys.platform == "win32", reason="-fopenmp flags")
def test_called_from_inside_prange(tmp_path):
    """Nested in a 2-thread prange (max-active-levels 1), each call gets a team of 1."""
    pytest.importorskip("Cython")
    (tmp_path / "prange_ext.pyx").write_text(PRANGE_PYX)
    (tmp_path / "setup.py").write_text(PRANGE_SETUP)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-4000:]
    sys.path.insert(0, str(tmp_path))
    try:
        import prange_ext
    finally:
        sys.path.remove(str(tmp_path))
    for B, H in ((1, 64), (2, 130), (9, 64)):
        ps = [make_lstm_problem(4, B, 6, H, np.float32, seed=s) for s in (B, B + 100)]
        stack = {k: np.stack([p[k] for p in ps]) for k in
                 ("x", "weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        y = np.full((2, 4, B, H), np.nan, np.float32)
        for _ in range(3):
            addr = [a.ctypes.data for a in (stack["x"], stack["weight_ih"], stack["weight_hh"],
                                            stack["bias_ih"], stack["bias_hh"], y)]
            assert prange_ext.run(4, B, 6, H, *addr) == (0, 0)
            fastlstm.set_num_threads(1)
            try:
                for k, p in enumerate(ps):
                    p = dict(p, h0=None, c0=None)
                    np.testing.assert_array_equal(y[k], fastlstm.lstm(**p).output,
                                                  err_msg=f"B={B} H={H} problem {k}")
            finally:
                fastlstm.set_num_threads(None)


if __name__ == "__main__":
    print(json.dumps(worker(sys.argv[1])))
