#!/usr/bin/python3
"""Reads a checkpoint written by gemmapod with h5py, as a user of the ecosystem would.

usage: read_with_h5py.py WRITER OUT.h5   (runs WRITER OUT.h5 first). Exit 77: h5py missing."""
import subprocess
import sys
import zlib

try:
    import h5py
    import numpy as np
except ImportError:
    print("h5py/numpy not importable from", sys.executable)
    sys.exit(77)

writer, path = sys.argv[1], sys.argv[2]
subprocess.run([writer, path], check=True)
def text(value):
    """Strings are stored fixed-length (UTF-8, null-padded): h5py gives them as bytes."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


with h5py.File(path, "r") as f:
    assert text(f.attrs["format"]) == "gemmapod-checkpoint", dict(f.attrs)
    assert f.attrs["format_version"] == 1
    cfg = f["config"].attrs
    assert text(cfg["architecture"]) == "gemma2" and cfg["hidden_size"] == 64
    assert abs(cfg["rms_norm_eps"] - 1e-6) < 1e-18
    assert [text(s) for s in cfg["layer_kinds"]] == ["sliding", "global"]
    params = f["params"]
    assert sorted(params) == ["ids", "model.embed_tokens.weight",
                              "model.layers.0.mlp.up_proj.weight"], list(params)
    up = params["model.layers.0.mlp.up_proj.weight"]
    assert up.shape == (3, 4) and up.dtype == np.float32
    assert np.array_equal(up[...], np.arange(12, dtype=np.float32).reshape(3, 4) * 1.5 - 4)
    emb = params["model.embed_tokens.weight"]
    assert emb.shape == (2, 3) and emb.dtype.itemsize == 4 and emb.id.get_type().get_size() == 2
    values = emb.astype("f4")[...]
    bits = np.array([100.0, 1000.0, -0.15625, 3.0e38, 1e-3, 0.0], dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)
    assert np.array_equal(values.ravel(), rounded), (values, rounded)
    ids = params["ids"]
    assert ids.dtype == np.int32 and list(ids[...]) == [2, 651, 1300]
    for name, ds in list(params.items()) + [("tokenizer.model", f["files"]["tokenizer.model"])]:
        raw = np.empty(ds.shape, dtype=np.dtype("u%d" % ds.id.get_type().get_size()))
        ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, raw, mtype=ds.id.get_type())
        assert zlib.crc32(raw.tobytes()) == ds.attrs["crc32"], name
    assert f["files"]["tokenizer.model"][...].tobytes() == b"sentencepiece bytes"
print("h5py read", path, "ok")
