"""The kernels are compiled three times (AVX-512, AVX2+FMA, baseline) and one is chosen at run
time; FASTLSTM_ISA forces a lower one, so each path the CPU can run goes through the parity,
cell and determinism suites here, in a subprocess with the variable set."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastlstm

TESTS = Path(__file__).resolve().parent
SUITES = ["test_lstm_parity.py", "test_gru_parity.py", "test_cell_parity.py",
          "test_determinism.py"]
SUITES += ["test_gru_extensions.py"]  # the extended GRU kernels (layer norm, recurrent mask)
SUITES += ["test_stream.py"]  # streams: the sequence kernels' bits on every instruction set
LEVELS = ["generic", "avx2", "avx512"]


def _run(isa: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FASTLSTM_ISA=isa)
    return subprocess.run([sys.executable, "-c", code], cwd=TESTS, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_lower_isa_passes_the_kernel_suites(isa):
    have = LEVELS.index(fastlstm.isa())
    if LEVELS.index(isa) > have:
        pytest.skip(f"this CPU runs {fastlstm.isa()}, not {isa}")
    chosen = _run(isa, "import fastlstm; print(fastlstm.isa())")
    assert chosen.stdout.strip() == isa, chosen.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        *SUITES], cwd=TESTS, env=dict(os.environ, FASTLSTM_ISA=isa),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout.splitlines()[-1]
