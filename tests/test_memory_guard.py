"""The "buffers cannot fit in memory" guard: separate inference and training estimates, and a
limit that is the smallest of physical memory, the cgroup limit and RLIMIT_AS."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from testkit import child_env

from fastlstm import _checks as chk
from fastlstm import rnn

GiB = 2**30




class _Stop(Exception):
    pass


def _estimate(monkeypatch, training, T=2000, B=3441, I=28, H=128, cell="lstm"):
    """The byte count the guard is asked about (nothing is allocated: x is a broadcast view)."""
    seen = []

    def fake(nbytes, what):
        seen.append(nbytes)
        raise _Stop

    monkeypatch.setattr(chk, "memory", fake)
    G = 4 if cell == "lstm" else 3
    x = np.broadcast_to(np.float32(0), (B, T, I))
    w_ih, w_hh = np.zeros((G * H, I), np.float32), np.zeros((G * H, H), np.float32)
    b = np.zeros(G * H, np.float32)
    with pytest.raises(_Stop):
        getattr(rnn, cell)(x, w_ih, w_hh, b, b, batch_first=True, training=training)
    return seen[0]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_inference_has_its_own_smaller_estimate(monkeypatch, cell):
    # T=2000, 3441 sequences, I=28, H=128, float32: inference needs the x copy (0.72 GiB) and
    # the output (3.28 GiB), and the GRU also its input projection X W_ih^T (9.84 GiB), which
    # its scratch holds for all steps; training ~55 GiB.
    inf = _estimate(monkeypatch, False, cell=cell)
    train = _estimate(monkeypatch, True, cell=cell)
    need = (3.9, 4.2) if cell == "lstm" else (13.8, 14.1)
    assert need[0] * GiB < inf < need[1] * GiB
    assert train > 3 * inf


def _limits(monkeypatch, phys=None, cgroup=None, rlimit=None):
    monkeypatch.setattr(chk, "_physical_memory", lambda: phys)
    monkeypatch.setattr(chk, "_cgroup_limit", lambda: cgroup)
    monkeypatch.setattr(chk, "_address_space_limit", lambda: rlimit)


def test_a_4_gib_inference_passes_on_a_23_gib_machine_training_does_not(monkeypatch):
    _limits(monkeypatch, phys=int(23.5 * GiB))
    chk.memory(4.01 * GiB, "inference")
    with pytest.raises(MemoryError, match=r"55\.0 GiB of buffers, more than this machine's "
                                          r"memory \(23\.5 GiB\)"):
        chk.memory(55 * GiB, "training")


@pytest.mark.parametrize("phys,cgroup,rlimit,source", [
    (64 * GiB, 2 * GiB, None, "the cgroup memory limit"),
    (64 * GiB, None, 2 * GiB, r"the address-space limit \(RLIMIT_AS\)"),
    (2 * GiB, 8 * GiB, 16 * GiB, "this machine's memory"),
    (None, 3 * GiB, 2 * GiB, r"the address-space limit \(RLIMIT_AS\)")])
def test_the_smallest_limit_wins_and_is_named(monkeypatch, phys, cgroup, rlimit, source):
    _limits(monkeypatch, phys, cgroup, rlimit)
    assert chk.memory_limit()[0] == 2 * GiB
    chk.memory(1.5 * GiB, "x")
    with pytest.raises(MemoryError, match=rf"more than {source} \(2\.0 GiB\)"):
        chk.memory(2.5 * GiB, "x")


def test_no_known_limit_only_refuses_impossible_sizes(monkeypatch):
    _limits(monkeypatch)
    assert chk.memory_limit() == (None, "")
    chk.memory(2.0**50, "x")
    with pytest.raises(ValueError, match="too large"):
        chk.memory(2.0**63, "x")


@pytest.mark.parametrize("files,expected", [
    ({"/sys/fs/cgroup/memory.max": "max\n"}, None),
    ({"/sys/fs/cgroup/memory.max": "1073741824\n"}, GiB),
    ({"/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n"}, GiB // 2),
    ({"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),
    ({"/sys/fs/cgroup/memory.max": "garbage"}, None),
    ({"/sys/fs/cgroup/memory.max": "\u00e9\u00e9"}, None),
    ({}, None)])
def test_cgroup_reader(monkeypatch, tmp_path, files, expected):
    mapping = {}
    for i, (path, text) in enumerate(files.items()):
        f = tmp_path / f"f{i}"
        f.write_text(text)
        mapping[path] = f
    monkeypatch.setattr(chk, "_CGROUP_FILES", tuple(str(mapping.get(p, tmp_path / "absent"))
                                                    for p in chk._CGROUP_FILES))
    assert chk._cgroup_limit() == expected


def test_rlimit_as_is_honoured_in_a_subprocess():
    code = textwrap.dedent("""
        import resource, numpy as np
        from fastlstm import rnn, _checks
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        limit = vm + 768 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        assert _checks.memory_limit() == (limit, "the address-space limit (RLIMIT_AS)")
        H, I = 64, 28
        w, wh, b = (np.zeros((4 * H, I), np.float32), np.zeros((4 * H, H), np.float32),
                    np.zeros(4 * H, np.float32))
        small = np.broadcast_to(np.float32(0), (200, 400, I))   # ~0.03 GiB: fine
        rnn.lstm(small, w, wh, b, b, batch_first=True, training=False)
        big = np.broadcast_to(np.float32(0), (8000, 400, I))  # ~1.1 GiB: over the limit
        try:
            rnn.lstm(big, w, wh, b, b, batch_first=True, training=False)
        except MemoryError as e:
            print("refused:", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd="/",
                       env=child_env())
    assert r.returncode == 0, r.stderr
    assert "refused:" in r.stdout and "RLIMIT_AS" in r.stdout, r.stdout
