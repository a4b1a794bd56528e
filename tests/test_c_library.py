"""The C core as a C programmer gets it: the header and static library installed in the package
(fastlstm.get_include(), fastlstm.get_library_dir()) link into a plain C program that includes
<complex.h> first, and that program's LSTM forward on 2 threads matches fastlstm.lstm bit for
bit. From a checkout, csrc/Makefile builds the same library on its own."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastlstm

CC = shlex.split(os.environ.get("CC", "cc"))
LDFLAGS = shlex.split(os.environ.get("LDFLAGS", ""))  # e.g. the sanitizer runtimes (.ci/sanitize)
REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "csrc" / "examples" / "lstm_forward.c"

pytestmark = [
    pytest.mark.skipif(shutil.which(CC[0]) is None, reason=f"no C compiler ({CC[0]}) on PATH"),
    pytest.mark.skipif(not EXAMPLE.exists(), reason="csrc/examples is not beside the tests"),
    pytest.mark.skipif(sys.platform == "win32", reason="the example is built with cc-style flags"),
]


def _problem(T=7, B=5, I=11, H=19, seed=0):
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w = [rng.uniform(-k, k, s).astype(np.float32)
         for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
    return (T, B, I, H), x, w


def _run_example(exe: Path, tmp_path: Path, threads: int = 2, exact: bool = True):
    """Run the example on a problem and compare with fastlstm.lstm: bit for bit when it links
    the same library the package uses, else (another compile of the sources, other flags)
    within float32 rounding."""
    (T, B, I, H), x, w = _problem()
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    inp.write_bytes(b"".join(a.tobytes() for a in [x, *w]))
    run = subprocess.run([str(exe), str(T), str(B), str(I), str(H), str(threads), str(inp),
                          str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    got = np.frombuffer(out.read_bytes(), np.float32)
    y, h_n, c_n = np.split(got, [T * B * H, T * B * H + B * H])
    fastlstm.set_num_threads(threads)
    try:
        want = fastlstm.lstm(x, *w, training=False)
    finally:
        fastlstm.set_num_threads(None)
    check = np.testing.assert_array_equal if exact else \
        (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6))
    check(y.reshape(T, B, H), want.output)
    check(h_n.reshape(B, H), want.h_n)
    check(c_n.reshape(B, H), want.c_n)
    return run.stdout


def test_c_program_links_the_installed_library(tmp_path):
    exe = tmp_path / "lstm_forward"
    omp = ["-fopenmp"] if fastlstm.openmp_enabled() else []
    # exactly the command the README gives, with no macro of the program's own
    cmd = [*CC, str(EXAMPLE), f"-I{fastlstm.get_include()}", f"-L{fastlstm.get_library_dir()}",
           "-lfastlstm", *omp, "-lm", *LDFLAGS, "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, " ".join(cmd) + "\n" + build.stderr[-4000:]
    printed = _run_example(exe, tmp_path)
    assert f"fastlstm {fastlstm.__version__} openmp {int(fastlstm.openmp_enabled())} " \
           f"isa {fastlstm.isa()}" in printed


def test_header_compiles_after_complex_h_strictly(tmp_path):
    src = tmp_path / "strict.c"
    src.write_text("#include <complex.h>\n#include <math.h>\n#include \"fastlstm.h\"\n"
                   "int main(void) { fl_dims d = {1, 0, 1, 1, 0, 1}; size_t n = 1;\n"
                   "  return fl_lstm_reserve_bytes(&d, 4, &n) == FL_OK && n == 0 ? 0 : 1; }\n")
    cmd = [*CC, "-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-fsyntax-only",
           f"-I{fastlstm.get_include()}", str(src)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-4000:]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.skipif(not (REPO / "csrc" / "Makefile").exists(), reason="no csrc/Makefile")
def test_makefile_builds_the_library_from_a_checkout(tmp_path):
    csrc = tmp_path / "csrc"
    shutil.copytree(REPO / "csrc", csrc, ignore=shutil.ignore_patterns("build", "*.a", "*.o"))
    omp = "-fopenmp" if fastlstm.openmp_enabled() else ""
    # make itself runs without the sanitizer runtime a .ci/sanitize run preloads (ASan reports
    # GNU make's own reads); what it builds links the runtime through LDFLAGS
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    make = subprocess.run(["make", "-j2", "-C", str(csrc), "example", f"CC={shlex.join(CC)}",
                           f"OPENMP={omp}"], capture_output=True, text=True, timeout=900, env=env)
    assert make.returncode == 0, make.stdout[-2000:] + make.stderr[-4000:]
    assert (csrc / "libfastlstm.a").exists()
    # its own compile (-O3 by default): the package may have been built with other flags
    printed = _run_example(csrc / "build" / "lstm_forward", tmp_path, exact=False)
    assert f"openmp {int(bool(omp))}" in printed
