"""Checkpoints are read as untrusted files: everything is validated from the zip directory and
the .npy headers before any allocation, every failure is one line; saves are atomic."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib

import numpy as np
import pytest
from testkit import child_env

from fastlstm import model as model_mod
from fastlstm.__main__ import main
from fastlstm.model import (CheckpointError, SequenceClassifier, ensure_writable, load,
                            load_with_state, parameter_shapes, read_header, save)

GiB = 2**30




def _header(**over):
    cfg = {"cell": "lstm", "input_size": 4, "hidden_size": 3, "num_classes": 2,
           "num_layers": 1, "bidirectional": False, "dtype": "float32"}
    cfg.update(over.pop("config", {}))
    h = {"format": "fastlstm.SequenceClassifier", "version": 1, "config": cfg,
         "metadata": {"normalize": {"mean": 0.1, "std": 0.3}}}
    h.update(over)
    return h


def _npy(array=None, *, descr="<f4", shape=None, data=b""):
    """.npy bytes: a real array, or a crafted header followed by ``data``."""
    buf = io.BytesIO()
    if array is not None:
        np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    else:
        np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                                   "shape": shape})
        buf.write(data)
    return buf.getvalue()


def _craft(path, header, members=None, *, small=True, compress=zipfile.ZIP_DEFLATED):
    """A zip with ``__fastlstm__`` = ``header`` (JSON text or object), the parameters of a
    small model (unless ``small=False``) and extra ``members`` (name -> .npy bytes)."""
    text = header if isinstance(header, str) else json.dumps(header)
    with zipfile.ZipFile(path, "w", compress) as zf:
        zf.writestr("__fastlstm__.npy", _npy(np.array(text)))
        if small:
            m = SequenceClassifier(4, 3, 2, seed=0)
            for k, v in m.parameters().items():
                zf.writestr(k + ".npy", _npy(v))
        for name, data in (members or {}).items():
            zf.writestr(name + ".npy", data)
    return path


def _refused(path, match):
    with pytest.raises(CheckpointError, match=match) as exc:
        load(path)
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_the_crafted_base_file_is_a_valid_checkpoint(tmp_path):
    m = load(_craft(tmp_path / "ok.npz", _header()))
    assert m.config()["hidden_size"] == 3 and m.metadata["normalize"]["std"] == 0.3


def test_parameter_shapes_match_the_real_models():
    for cell, layers, bi in (("lstm", 1, False), ("gru", 3, True), ("lstm", 2, True)):
        m = SequenceClassifier(5, 7, 3, cell=cell, num_layers=layers, bidirectional=bi)
        shapes = parameter_shapes(m.config())
        assert list(shapes) == list(m.parameters())
        assert shapes == {k: v.shape for k, v in m.parameters().items()}


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM (Linux)")
def test_16kb_file_declaring_a_huge_model_is_refused_with_little_memory(tmp_path):
    path = _craft(tmp_path / "huge.npz", _header(config={"hidden_size": 12000}))
    assert path.stat().st_size < 16 * 1024
    code = textwrap.dedent(f"""
        import resource, sys
        from fastlstm.model import load, CheckpointError

        def peak_kib():
            # VmHWM: this process image's own peak (ru_maxrss would carry the parent's over
            # exec, and a parent that imported torch is already near the limit below)
            with open("/proc/self/status") as f:
                return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])

        before = peak_kib()
        try:
            load({str(path)!r})
        except CheckpointError as e:
            print("refused:", e)
        after = peak_kib()
        print("rss_kib", before, after)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=child_env(), cwd=os.path.dirname(str(path)))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("refused:") and "(48000, 4)" in lines[0], r.stdout
    before, after = map(int, lines[1].split()[1:])
    print(r.stdout)
    assert after < 256 * 1024 and after - before < 32 * 1024    # KiB: well under 1 GiB


def test_huge_declared_shapes_with_lying_sizes_are_refused(tmp_path):
    # Headers that match a hidden_size=12000 model, but the members hold no such data.
    shapes = parameter_shapes(_header(config={"hidden_size": 12000})["config"])
    members = {k: _npy(shape=s, data=b"\0" * 64) for k, s in shapes.items()}
    path = _craft(tmp_path / "lying.npz", _header(config={"hidden_size": 12000}), members,
                  small=False)
    _refused(path, r"header implies \d+ bytes, the archive says \d+")


def test_npy_header_declaring_10_12_elements(tmp_path):
    big = _npy(shape=(10**12,), data=b"\0" * 16)
    path = _craft(tmp_path / "p.npz", _header(), {"fc.bias": big}, small=False)
    with zipfile.ZipFile(path, "a") as zf:  # the other parameters, small and valid
        for k, v in SequenceClassifier(4, 3, 2, seed=0).parameters().items():
            if k != "fc.bias":
                zf.writestr(k + ".npy", _npy(v))
    _refused(path, r"'fc.bias': its .npy header implies 4000000000128 bytes, the archive "
                  r"says 144")
    # ... as the header member, too
    path2 = tmp_path / "h.npz"
    with zipfile.ZipFile(path2, "w") as zf:
        zf.writestr("__fastlstm__.npy", _npy(descr="<U10", shape=(10**12,), data=b"x" * 40))
    _refused(path2, r"__fastlstm__.: its .npy header implies 40000000000128 bytes")


_BOMB_CHUNK = 16 * 2**20
_BOMB_CHUNKS = 96                                   # 1.5 GiB of zeros


@pytest.fixture(scope="module")
def bomb_segment():
    """A byte-aligned deflate segment of 16 MiB of zeros (independent of what precedes it, so
    it can be repeated) and the CRC of 1.5 GiB of zeros."""
    chunk = bytes(_BOMB_CHUNK)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    seg = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    return seg, chunk


def _add_bomb(zf, name, npy_header, bomb_segment):
    """Append member ``name``: ``npy_header`` then 1.5 GiB of zeros, really deflated (the
    archive is a valid zip that unzip would expand), built in ~1 s from one repeated segment."""
    seg, chunk = bomb_segment
    with zf.open(name, "w", force_zip64=True) as w:
        w.write(npy_header)
        head = w._compressor.flush(zlib.Z_FULL_FLUSH)       # byte-align the stream
        w._fileobj.write(head)
        w._compress_size += len(head)
        for _ in range(_BOMB_CHUNKS):
            w._fileobj.write(seg)
            w._compress_size += len(seg)
            w._file_size += len(chunk)
            w._crc = zlib.crc32(chunk, w._crc)


def test_zip_bomb_member_is_refused_before_it_is_read(tmp_path, bomb_segment):
    path = _craft(tmp_path / "bomb.npz", _header())
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        _add_bomb(zf, "junk.npy", _npy(shape=(_BOMB_CHUNK * _BOMB_CHUNKS,), descr="|u1"),
                  bomb_segment)
        info = zf.getinfo("junk.npy")
    assert info.file_size > 1.5 * GiB and path.stat().st_size < 8 * 2**20
    t0 = time.perf_counter()
    _refused(path, r"unexpected \['junk'\]")
    assert time.perf_counter() - t0 < 1.0

    # The same bomb under a real parameter's name: refused from its header alone.
    path2 = _craft(tmp_path / "bomb2.npz", _header(), small=False)
    with zipfile.ZipFile(path2, "a", zipfile.ZIP_DEFLATED) as zf:
        for k, v in SequenceClassifier(4, 3, 2, seed=0).parameters().items():
            if k != "fc.weight":
                zf.writestr(k + ".npy", _npy(v))
        _add_bomb(zf, "fc.weight.npy", _npy(shape=(2, 3)), bomb_segment)
    t0 = time.perf_counter()
    _refused(path2, r"'fc.weight': its .npy header implies 152 bytes, the archive says 16106")
    assert time.perf_counter() - t0 < 1.0


def test_trailing_data_after_a_member_is_refused(tmp_path):
    good = _npy(np.zeros(2, np.float32))
    path = _craft(tmp_path / "t.npz", _header(), small=False)
    with zipfile.ZipFile(path, "a") as zf:
        for k, v in SequenceClassifier(4, 3, 2, seed=0).parameters().items():
            zf.writestr(k + ".npy", good + b"\0" * 8 if k == "fc.bias" else _npy(v))
    _refused(path, "'fc.bias': its .npy header implies 136 bytes, the archive says 144")


def _deep(n):
    return '{"format": "fastlstm.SequenceClassifier", "version": 1, "x": ' + "[" * n + \
        "]" * n + "}"


ODD = [
    ("metadata-list", _header(metadata=[1, 2]), "metadata must be a JSON object"),
    ("std-zero", _header(metadata={"normalize": {"mean": 0, "std": 0}}), "std must be > 0"),
    ("std-negative", _header(metadata={"normalize": {"mean": 0, "std": -1}}), "std must be > 0"),
    ("std-string", _header(metadata={"normalize": {"mean": 0, "std": "1"}}),
     "std must be a finite number"),
    ("std-nan", _header(metadata={"normalize": {"mean": 0, "std": float("nan")}}),
     "std must be a finite number"),
    ("mean-inf", _header(metadata={"normalize": {"mean": float("inf"), "std": 1}}),
     "mean must be a finite number"),
    ("normalize-list", _header(metadata={"normalize": [0, 1]}), "normalize must be an object"),
    ("nested", _deep(10**5), "corrupt checkpoint header"),
    ("not-json", "{not json", "corrupt checkpoint header"),
    ("header-list", "[1, 2]", "not a fastlstm checkpoint"),
    ("config-list", {**_header(), "config": [1]}, "invalid model config"),
    ("hidden-string", _header(config={"hidden_size": "3"}), "hidden_size must be an integer"),
    ("hidden-float", _header(config={"hidden_size": 3.0}), "hidden_size must be an integer"),
    ("hidden-bool", _header(config={"hidden_size": True}), "hidden_size must be an integer"),
    ("hidden-negative", _header(config={"hidden_size": -3}), "hidden_size must be an integer"),
    ("hidden-huge", _header(config={"hidden_size": 10**30}), "hidden_size must be an integer"),
    ("layers-huge", _header(config={"num_layers": 10**7}), "40000002 parameter arrays, the file 6"),
    ("bidir-string", _header(config={"bidirectional": "yes"}), "bidirectional must be"),
    ("dtype-object", _header(config={"dtype": "object"}), "dtype must be"),
    ("cell-other", _header(config={"cell": "rnn"}), "cell must be one of"),
    ("extra-config-key", _header(config={"evil": 1}), r"unknown \['evil'\]"),
    ("train-string", _header(metadata={"train": "x"}), "metadata.train must be"),
    ("version-list", _header(version=[1]), "unsupported checkpoint version"),
]


@pytest.mark.parametrize("name,header,match", ODD, ids=[c[0] for c in ODD])
def test_odd_headers_are_one_line_errors(tmp_path, capsys, name, header, match):
    path = _craft(tmp_path / f"{name}.npz", header)
    _refused(path, match)
    assert main(["evaluate", "--load", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastlstm: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_other_malformed_archives(tmp_path):
    ok = _craft(tmp_path / "ok.npz", _header())
    data = ok.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[:len(data) // 2])
    _refused(tmp_path / "trunc.npz", "not a fastlstm checkpoint")
    with pytest.warns(UserWarning, match="Duplicate name"):
        dup = _craft(tmp_path / "dup.npz", _header(),
                     {"fc.bias": _npy(np.zeros(2, np.float32))})
    _refused(dup, "twice")
    obj = _craft(tmp_path / "obj.npz", _header(), {"optim.m.fc.bias": _npy(
        descr="|O", shape=(2,), data=b"\0" * 16)})
    _refused(obj, "dtype object")
    f64 = _craft(tmp_path / "f64.npz", _header(), {"optim.m.fc.bias": _npy(
        np.zeros(2, np.float64))})
    _refused(f64, "optim.m.fc.bias must have dtype float32, got float64")
    other = _craft(tmp_path / "other.npz", _header(), {"optim.v.fc.bias": b"hi"})
    _refused(other, "no valid .npy header")


def test_round_trip_with_optimizer_state_and_header_only_read(tmp_path):
    m = SequenceClassifier(4, 3, 2, seed=1)
    state = {"m": {k: np.full_like(v, 0.5) for k, v in m.parameters().items()},
             "v": {k: np.full_like(v, 0.25) for k, v in m.parameters().items()}}
    m.metadata = {"resume": {"epoch": 2}}
    save(m, tmp_path / "s.npz", optimizer_state=state)
    assert read_header(tmp_path / "s.npz")["metadata"]["resume"]["epoch"] == 2
    r = load(tmp_path / "s.npz")
    assert all(np.array_equal(r.parameters()[k], v) for k, v in m.parameters().items())
    r2, st = load_with_state(tmp_path / "s.npz")
    assert set(st) == {"m", "v"}
    assert all(np.array_equal(st[s][k], state[s][k]) for s in state for k in state[s])


# -- writing ------------------------------------------------------------------------------------

def test_ensure_writable(tmp_path):
    ensure_writable(tmp_path / "new.npz")
    assert list(tmp_path.iterdir()) == []                       # the probe is gone
    with pytest.raises(IsADirectoryError, match="is a folder"):
        ensure_writable(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ensure_writable(tmp_path / "missing" / "x.npz")
    if os.geteuid() != 0:                                       # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="cannot create files"):
            ensure_writable(ro / "x.npz")


def test_save_is_atomic_and_cleans_up(tmp_path, monkeypatch):
    m = SequenceClassifier(4, 3, 2, seed=0)
    path = tmp_path / "m.npz"
    save(m, path)
    before = path.read_bytes()
    # A stale temporary from a killed earlier write (dead pid) and one of another target.
    stale = tmp_path / ".fastlstm-m.npz.999999999.abc.npz.tmp"
    stale.write_bytes(b"half")
    other = tmp_path / ".fastlstm-other.npz.999999999.abc.npz.tmp"
    other.write_bytes(b"half")

    def boom(f, arrays):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_mod, "_write_npz", boom)
    with pytest.raises(OSError, match="No space"):
        save(m, path)
    assert path.read_bytes() == before                          # old checkpoint intact
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "m.npz"]
    monkeypatch.undo()
    save(m, path)
    assert load(path).config() == m.config()
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "m.npz"]


def test_the_same_model_saves_to_the_same_bytes(tmp_path):
    """No timestamps in the file: reruns and the ranks of a distributed run compare as files."""
    import time
    m = SequenceClassifier(5, 7, 3, cell="gru", num_layers=2, bidirectional=True)
    m.metadata["normalize"] = {"mean": 0.5, "std": 0.25}
    save(m, tmp_path / "a.npz")
    time.sleep(2.1)  # a zip timestamp has a resolution of 2 s
    save(m, tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = load(tmp_path / "b.npz")
    for name, a in m.parameters().items():
        np.testing.assert_array_equal(back.parameters()[name], a)
    assert back.metadata["normalize"] == {"mean": 0.5, "std": 0.25}
