"""Deployed weights stored at their bit width: RUN_DIR/deployed_packed.zip and its loader.

Codes are packed LSB first into a little-endian bit stream: code i occupies bits
[i*b, (i+1)*b) of the stream, so at b = 1, 2, 4 and 8 every byte holds 8/b whole codes (the
usual "two 4-bit codes per byte, low nibble first") and any other width is packed densely
(a code may straddle two bytes). ``pack_codes``/``unpack_codes`` are exact inverses.

The file is a zip archive (stdlib zipfile; reading it never runs code) of two members:

    meta.json     deflated JSON: format, config, config_hash, num_classes, in_channels,
                  image_size, input (the input contract, harness.deploy.contract); per
                  layer {"bits", "shape", "code_dtype"} (quantized) or {}
                  (a full-precision weight); and the index of every array in data.bin
                  ({"key", "dtype", "shape", "offset", "nbytes"}, little-endian, C order)
    data.bin      stored (not compressed) concatenation of the arrays:
                    codes:NAME    the packed codes of layer NAME (uint8)
                    levels:NAME   its levels ([L] or [C_out, L], as exported)
                    scale:NAME    its scale (0-d or [C_out])
                    weight:NAME   a full-precision layer's weight (the fp method's layers)
                    state:KEY     every other tensor of the deployed network (batch-norm
                                  statistics and affine parameters, biases, PACT clip values,
                                  the full-precision first and last layers)

data.bin holds exactly the payload harness.costs.opcount counts as the model size (plus the
batch-norm batch counters, 8 bytes each); the rest of the file is the header.

:func:`read_packed` returns the same dictionary as ``deployed.pt`` (``harness.deploy.export``), so
``export.rebuild_model`` rebuilds the network bit for bit from either file.
:func:`file_sizes` writes the packed file and, for comparison, the same network with every
weight as float32 into the same container, and returns both sizes in bytes.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import files
from methods.base import UserError, decode

FORMAT = "slbench-packed/1"
FILENAME = "deployed_packed.zip"


def pack_codes(codes: torch.Tensor, bits: int) -> np.ndarray:
    """Codes (integers in [0, 2^bits)) as a uint8 bit stream, ceil(numel * bits / 8) bytes."""
    c = codes.detach().reshape(-1).to(torch.int64).cpu().numpy()
    if c.size and (c.min() < 0 or c.max() >= 2 ** bits):
        raise ValueError(f"codes outside [0, {2 ** bits}) cannot be packed at {bits} bits")
    if bits == 8:
        return c.astype(np.uint8)
    planes = ((c[:, None] >> np.arange(bits)) & 1).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_codes(buf: np.ndarray, bits: int, shape: tuple[int, ...],
                 dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """The inverse of :func:`pack_codes`."""
    n = int(np.prod(shape, dtype=np.int64))
    if bits == 8:
        flat = buf[:n].astype(np.int64)
    else:
        planes = np.unpackbits(buf, count=n * bits, bitorder="little").reshape(n, bits)
        flat = (planes.astype(np.int64) << np.arange(bits)).sum(axis=1)
    return torch.from_numpy(flat).reshape(shape).to(dtype)


def packed_bytes(numel: int, bits: int) -> int:
    return (numel * bits + 7) // 8


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def _arrays(blob: dict[str, Any], pack: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and the arrays of a deployed.pt dictionary; ``pack=False`` stores every
    quantized layer as its decoded float32 weight instead (the fp32 comparison)."""
    layers_meta: dict[str, dict[str, Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, e in blob["layers"].items():
        if "codes" in e and pack:
            bits = int(e["bits"])
            layers_meta[name] = {"bits": bits, "shape": list(e["codes"].shape),
                                 "code_dtype": str(e["codes"].dtype).removeprefix("torch.")}
            arrays[f"codes:{name}"] = pack_codes(e["codes"], bits)
            arrays[f"levels:{name}"] = _np(e["levels"])
            arrays[f"scale:{name}"] = _np(e["scale"])
        else:
            w = decode(e["codes"], e["levels"], e["scale"]) if "codes" in e else e["weight"]
            layers_meta[name] = {}
            arrays[f"weight:{name}"] = _np(w if pack else w.float())
    for key, t in blob["state"].items():
        arrays[f"state:{key}"] = _np(t)
    meta = {"format": FORMAT, "config": blob["config"], "config_hash": blob["config_hash"],
            "num_classes": blob["num_classes"], "in_channels": blob["in_channels"],
            "image_size": list(blob["image_size"]), "layers": layers_meta,
            "state_keys": list(blob["state"]), "input": blob.get("input")}
    return meta, arrays


def _zip(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    index, parts, offset = [], [], 0
    for key, a in arrays.items():
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        index.append({"key": key, "dtype": a.dtype.str.lstrip("<>|="), "shape": list(a.shape),
                      "offset": offset, "nbytes": len(raw)})
        parts.append(raw)
        offset += len(raw)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("meta.json", json.dumps({**meta, "arrays": index}, sort_keys=True),
                   compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("data.bin", b"".join(parts), compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def write_packed(path: Path, blob: dict[str, Any]) -> int:
    """Write ``blob`` (a deployed.pt dictionary) packed to ``path`` atomically; its size."""
    data = _zip(*_arrays(blob, pack=True))
    files.atomic_write_bytes(Path(path), data)
    return len(data)


def file_sizes(blob: dict[str, Any]) -> dict[str, int]:
    """Bytes of the packed file, of its data.bin payload, and of the same network with
    float32 weights in the same container."""
    meta, arrays = _arrays(blob, pack=True)
    return {"packed_bytes": len(_zip(meta, arrays)),
            "payload_bytes": sum(a.nbytes for a in arrays.values()),
            "fp32_bytes": len(_zip(*_arrays(blob, pack=False)))}


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("meta.json").decode())
            data = z.read("data.bin")
        arrays = {}
        for a in meta["arrays"]:
            raw = data[a["offset"]: a["offset"] + a["nbytes"]]
            arrays[a["key"]] = np.frombuffer(raw, dtype=np.dtype(a["dtype"]).newbyteorder(
                "<")).reshape(a["shape"]).astype(np.dtype(a["dtype"]))
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise UserError("packed file", f"{path} is not a readable {FORMAT} file "
                        f"({type(e).__name__}); re-run `python -m harness export`") from None
    if meta.get("format") != FORMAT:
        raise UserError("packed file", f"{path} is not a {FORMAT} file")
    return meta, arrays


def read_packed(path: Path) -> dict[str, Any]:
    """The deployed.pt dictionary stored in a packed file (codes unpacked)."""
    meta, z = _read(Path(path))
    t = torch.from_numpy
    layers: dict[str, dict[str, Any]] = {}
    for name, m in meta["layers"].items():
        if m:
            dtype = getattr(torch, m["code_dtype"])
            layers[name] = {"codes": unpack_codes(z[f"codes:{name}"], m["bits"],
                                                  tuple(m["shape"]), dtype),
                            "levels": t(z[f"levels:{name}"]), "scale": t(z[f"scale:{name}"]),
                            "bits": m["bits"]}
        else:
            layers[name] = {"weight": t(z[f"weight:{name}"])}
    state = {k: t(z[f"state:{k}"]) for k in meta["state_keys"]}
    return {"format": meta["format"], "config": meta["config"],
            "config_hash": meta["config_hash"], "num_classes": meta["num_classes"],
            "in_channels": meta["in_channels"], "image_size": meta["image_size"],
            "layers": layers, "state": state, "input": meta.get("input")}
