"""The LSTM and GRU layers of a Keras 3 file (``.keras`` or ``.weights.h5``), in PyTorch's layout.

    from fastlstm.keras_io import read_keras
    from fastlstm import convert
    layers = read_keras("model.keras")          # one record per LSTM/GRU layer
    gru = fastlstm.GRU(I, H, num_layers=len(layers), bidirectional=..., batch_first=True,
                       linear_before_reset=layers[0]["reset_after"])
    gru.load_state_dict(convert.state_dict([rec["directions"] for rec in layers]))

Needs h5py (``pip install "fastlstm[keras]"``), imported only when a file is read; Keras itself
is not needed. Files are untrusted: the zip directory, ``config.json`` and every dataset's
shape and dtype are checked before anything is read, HDF5 external links, external storage
and virtual datasets are refused, and each problem is a one-line :class:`KerasFileError`.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import convert

__all__ = ["read_keras", "KerasFileError"]

_MAX_CONFIG_BYTES = 64 * 2**20
_MAX_WEIGHTS_BYTES = 8 * 2**30
_MAX_ELEMENTS = 2**31 - 1
_RNN_CLASSES = {"LSTM": "lstm", "GRU": "gru"}


class KerasFileError(ValueError):
    """The file is not a Keras 3 model/weights file fastlstm can read, or is malformed."""


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Keras files needs h5py: pip install 'fastlstm[keras]'"
                          ) from None
    return h5py


def _natural(path: str) -> List[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


# ----------------------------------------------------------------------------------------------
# config.json of a .keras archive: LSTM/GRU layer configs by name, in model order
# ----------------------------------------------------------------------------------------------

def _layer_configs(cfg: Any, out: List[Tuple[str, str, dict]]) -> None:
    """(name, class_name, config) of every layer, depth first, in the order of the config."""
    if isinstance(cfg, dict):
        cls, conf = cfg.get("class_name"), cfg.get("config")
        if isinstance(cls, str) and isinstance(conf, dict):
            name = conf.get("name")
            if isinstance(name, str) and cls not in ("Functional", "Sequential", "Model"):
                out.append((name, cls, conf))
            if cls == "Bidirectional":
                return
            layers = conf.get("layers")
            if isinstance(layers, list):
                for sub in layers:
                    _layer_configs(sub, out)
                return
            for v in conf.values():
                if isinstance(v, dict) and "class_name" in v:
                    _layer_configs(v, out)
    elif isinstance(cfg, list):
        for sub in cfg:
            _layer_configs(sub, out)


def _check_rnn_config(where: str, cls: str, conf: dict) -> Dict[str, Any]:
    """The settings that decide the equations; anything fastlstm cannot run is an error."""
    if cls not in _RNN_CLASSES:
        raise KerasFileError(f"{where}: layer class {cls!r} is not LSTM or GRU")
    act, rec = conf.get("activation", "tanh"), conf.get("recurrent_activation", "sigmoid")
    if act != "tanh" or rec != "sigmoid":
        raise KerasFileError(f"{where}: activation {act!r}/{rec!r}: fastlstm runs tanh/sigmoid "
                             f"only")
    out = {"cell": _RNN_CLASSES[cls], "go_backwards": bool(conf.get("go_backwards", False))}
    if cls == "GRU":
        out["reset_after"] = bool(conf.get("reset_after", True))
    return out


# ----------------------------------------------------------------------------------------------
# The weights file
# ----------------------------------------------------------------------------------------------

def _dataset(h5py, path: str, group, key: str) -> Optional[np.ndarray]:
    link = group.get(key, getlink=True)
    if link is None:
        return None
    where = f"{path}: {group.name}/{key}"
    if not isinstance(link, h5py.HardLink):
        raise KerasFileError(f"{where} is a {type(link).__name__}, not a stored array")
    d = group[key]
    if not isinstance(d, h5py.Dataset):
        raise KerasFileError(f"{where} is not an array")
    if d.is_virtual or d.external:
        raise KerasFileError(f"{where} refers to data outside the file")
    if d.dtype.kind != "f" or d.dtype.itemsize not in (2, 4, 8):
        raise KerasFileError(f"{where} has dtype {d.dtype}, expected float")
    if d.ndim not in (1, 2) or d.size > _MAX_ELEMENTS:
        raise KerasFileError(f"{where} has shape {d.shape}, expected a vector or a matrix")
    a = d[()]
    if a.shape != d.shape:
        raise KerasFileError(f"{where}: read {a.shape}, header says {d.shape}")
    return np.asarray(a, np.float64 if a.dtype == np.float64 else np.float32)


def _cells(h5py, path: str, f) -> List[Tuple[str, Any]]:
    """(layer path, cell vars group) of every recurrent cell, following hard links only."""
    found: List[Tuple[str, Any]] = []

    def walk(group, depth: int) -> None:
        if depth > 16:
            raise KerasFileError(f"{path}: groups nested too deep")
        for key in group.keys():
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                continue
            sub = group[key]
            if not isinstance(sub, h5py.Group):
                continue
            if key == "cell" and "vars" in sub and isinstance(sub["vars"], h5py.Group):
                found.append((group.name.strip("/"), sub["vars"]))
            else:
                walk(sub, depth + 1)

    walk(f, 0)
    return found


def _attr_name(group) -> Optional[str]:
    v = group.attrs.get("name") if group is not None else None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return v if isinstance(v, str) else None


def _guess_cell(vars_name: Optional[str], kernel: np.ndarray, recurrent: np.ndarray
                ) -> Optional[str]:
    if vars_name:
        for cell in ("lstm", "gru"):
            if vars_name.lower().startswith(cell):
                return cell
    if recurrent.ndim == 2 and recurrent.shape[0] >= 1:
        ratio, rem = divmod(recurrent.shape[1], recurrent.shape[0])
        if rem == 0 and ratio in (4, 3):
            return "lstm" if ratio == 4 else "gru"
    return None


def _read_h5(path: str, source, configs: Optional[Dict[str, Tuple[str, dict]]],
             order: Optional[List[str]], reset_after: Optional[bool]) -> List[Dict[str, Any]]:
    h5py = _h5py()
    try:
        f = h5py.File(source, "r")
    except OSError as e:
        raise KerasFileError(f"{path}: not an HDF5 file ({str(e).splitlines()[0]})") from None
    with f:
        if "layers" not in f:
            raise KerasFileError(f"{path}: no 'layers' group: not a Keras 3 weights file "
                                 f"(Keras 2 .h5 files are not supported)")
        groups: Dict[str, Dict[str, Any]] = {}
        for layer_path, vars_group in _cells(h5py, path, f):
            parts = layer_path.split("/")
            direction = 0
            if parts[-1] in ("forward_layer", "backward_layer"):
                direction = 0 if parts[-1] == "forward_layer" else 1
                owner = "/".join(parts[:-1])
            else:
                owner = layer_path
            owner_group = f[owner]
            name = _attr_name(owner_group.get("vars")) or owner
            kernel = _dataset(h5py, path, vars_group, "0")
            recurrent = _dataset(h5py, path, vars_group, "1")
            bias = _dataset(h5py, path, vars_group, "2")
            if kernel is None or recurrent is None or kernel.ndim != 2 or recurrent.ndim != 2:
                continue                              # not an LSTM/GRU cell (kernel, recurrent)
            settings: Dict[str, Any] = {}
            if configs is not None:
                if name not in configs:
                    raise KerasFileError(f"{path}: layer {name!r} has weights but no config")
                cls, conf = configs[name]
                if cls == "Bidirectional":
                    sub = conf.get("layer") if direction == 0 else \
                        (conf.get("backward_layer") or conf.get("layer"))
                    if not isinstance(sub, dict) or not isinstance(sub.get("config"), dict):
                        raise KerasFileError(f"{path}: layer {name!r}: no wrapped layer config")
                    if sub.get("class_name") not in _RNN_CLASSES:
                        continue
                    settings = _check_rnn_config(f"{path}: layer {name!r}", sub["class_name"],
                                                 sub["config"])
                    settings["go_backwards"] = False   # the wrapper sets it on the copy
                    settings["merge_mode"] = conf.get("merge_mode", "concat")
                elif cls in _RNN_CLASSES:
                    settings = _check_rnn_config(f"{path}: layer {name!r}", cls, conf)
                else:
                    continue                          # SimpleRNN, ConvLSTM, ...
                cell = settings["cell"]
            else:
                cell = _guess_cell(_attr_name(vars_group), kernel, recurrent)
                if cell is None:
                    continue
            if cell == "gru":
                ra = settings.get("reset_after")
                if ra is None:
                    if bias is not None:
                        ra = bias.ndim == 2
                    elif reset_after is not None:
                        ra = bool(reset_after)
                    else:
                        raise KerasFileError(
                            f"{path}: GRU layer {name!r} has no bias, so the file does not say "
                            f"whether reset_after is set; pass reset_after=True or False")
                settings["reset_after"] = ra
            try:
                params = convert.from_keras(kernel, recurrent, bias, cell=cell,
                                            reset_after=settings.get("reset_after", True))
            except (ValueError, TypeError) as e:
                raise KerasFileError(f"{path}: layer {name!r}: {e}") from None
            rec = groups.setdefault(owner, {"name": name, "path": owner, "cell": cell,
                                            "dirs": {}, "settings": settings})
            if rec["cell"] != cell:
                raise KerasFileError(f"{path}: layer {name!r} mixes LSTM and GRU directions")
            rec["dirs"][direction] = params
        out = []
        for owner, rec in groups.items():
            dirs = [rec["dirs"][d] for d in sorted(rec["dirs"])]
            if sorted(rec["dirs"]) not in ([0], [0, 1]):
                raise KerasFileError(f"{path}: layer {rec['name']!r} has a backward layer "
                                     f"without a forward one")
            shapes = {(p["weight_ih"].shape[1], p["weight_hh"].shape[1]) for p in dirs}
            if len(shapes) != 1:
                raise KerasFileError(f"{path}: layer {rec['name']!r}: the two directions "
                                     f"differ in size")
            (I, H), = shapes
            item = {"name": rec["name"], "path": owner, "cell": rec["cell"],
                    "input_size": I, "hidden_size": H, "bidirectional": len(dirs) == 2,
                    "directions": dirs}
            s = rec["settings"]
            if rec["cell"] == "gru":
                item["reset_after"] = s["reset_after"]
            if "go_backwards" in s:
                item["go_backwards"] = s["go_backwards"]
            if "merge_mode" in s:
                item["merge_mode"] = s["merge_mode"]
            out.append(item)
    if order is not None:
        rank = {n: k for k, n in enumerate(order)}
        out.sort(key=lambda r: rank.get(r["name"], len(rank)))
    else:
        out.sort(key=lambda r: _natural(r["path"]))
    return out


def read_keras(path: "os.PathLike[str] | str", *, reset_after: Optional[bool] = None
               ) -> List[Dict[str, Any]]:
    """The LSTM and GRU layers of a Keras 3 ``.keras`` archive or ``.weights.h5`` file.

    Returns one dict per layer: ``name`` (the Keras layer name), ``path`` (its group in the
    HDF5 file), ``cell`` ("lstm"/"gru"), ``input_size``, ``hidden_size``, ``bidirectional``
    (a ``Bidirectional`` wrapper), ``directions`` (one or two dicts in PyTorch's layout from
    :func:`fastlstm.convert.from_keras`: forward, then backward), and for a GRU
    ``reset_after`` (= ``linear_before_reset``). From a ``.keras`` archive the layers come in
    the model's order and also carry ``go_backwards`` (and ``merge_mode`` for a wrapper);
    layers with other activations than tanh/sigmoid are an error. A ``.weights.h5`` file does
    not record the order of layers or their settings: the layers are sorted by group path,
    the cell is read from the cell's name and shapes, and a GRU's ``reset_after`` from its
    bias shape ((2, 3H): True), or from ``reset_after`` here for a GRU without bias.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK"):
        return _read_keras_archive(path, reset_after)
    if head != b"\x89HDF\r\n\x1a\n":
        raise KerasFileError(f"{path}: neither a .keras archive (zip) nor an HDF5 weights file")
    return _read_h5(path, path, None, None, reset_after)


def _read_keras_archive(path: str, reset_after: Optional[bool]) -> List[Dict[str, Any]]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise KerasFileError(f"{path}: not a valid .keras archive ({e})") from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        for need in ("config.json", "model.weights.h5"):
            if need not in infos:
                raise KerasFileError(f"{path}: the archive has no {need} (members: "
                                     f"{sorted(infos)[:8]})")
        cinfo, winfo = infos["config.json"], infos["model.weights.h5"]
        for info, limit in ((cinfo, _MAX_CONFIG_BYTES), (winfo, _MAX_WEIGHTS_BYTES)):
            if info.flag_bits & 0x1:
                raise KerasFileError(f"{path}: {info.filename} is encrypted")
            if info.file_size > limit:
                raise KerasFileError(f"{path}: {info.filename} is {info.file_size} bytes "
                                     f"(limit {limit})")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise KerasFileError(f"{path}: {info.filename} uses an unsupported compression")
            if info.compress_type == zipfile.ZIP_DEFLATED and \
                    info.file_size > max(info.compress_size, 1) * 1100 + 1024:
                raise KerasFileError(f"{path}: {info.filename} claims an impossible size")
        try:
            with zf.open(cinfo) as fh:
                config = json.loads(fh.read(_MAX_CONFIG_BYTES + 1).decode("utf-8"))
            with zf.open(winfo) as fh:
                data = fh.read(_MAX_WEIGHTS_BYTES + 1)
        except (zipfile.BadZipFile, OSError, ValueError, UnicodeDecodeError, EOFError) as e:
            raise KerasFileError(f"{path}: corrupt archive ({str(e).splitlines()[0]})") from None
    if len(data) != winfo.file_size:
        raise KerasFileError(f"{path}: model.weights.h5 is not the size the archive declares")
    found: List[Tuple[str, str, dict]] = []
    _layer_configs(config, found)
    configs = {}
    for name, cls, conf in found:
        if name in configs and configs[name][0] in _RNN_CLASSES:
            raise KerasFileError(f"{path}: two layers are named {name!r}")
        configs[name] = (cls, conf)
    return _read_h5(path, io.BytesIO(data), configs, [n for n, _, _ in found], reset_after)
