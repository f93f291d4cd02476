#!/usr/bin/env python3
"""Golden fixtures for the GGUF reader (runtime/checkpoint/gguf.h) and ggml dequantization.

Pinned: gguf 0.19.0 (gguf-py, llama.cpp's own Python package), numpy 2.4.6; the script refuses to
run with other versions.

Writes tests/fixtures/gguf/sample.gguf with gguf-py's GGUFWriter: metadata of every value type
(arrays of each kind, an array of arrays, UTF-8 strings), alignment 64 (not the default 32, so a
reader that ignores general.alignment misplaces every tensor), and small tensors of 1 to 4
dimensions in every type gemmapod dequantizes:

- F32, F16 (with infinities, NaN, -0 and subnormals), and BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
  quantized from seeded random data by gguf.quants.quantize;
- Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, which gguf-py cannot quantize: blocks of seeded random bytes
  (every bit pattern is a valid block) with their f16 scales set to finite values, one of them
  subnormal;
- real blocks of the Q4_K, Q6_K, Q5_0, Q8_0 and F32 tensors of a Gemma 3 270M Q4_K_M GGUF
  (--model; rows named in provenance.json);
- one IQ4_NL tensor, which gemmapod lists but refuses to read.

For each readable tensor, <name>.npy holds gguf.quants.dequantize of the bytes as gguf-py's
GGUFReader reads them back from the written file (row-major, the ggml dims reversed). The C++
test (tests/runtime/checkpoint/gguf_test.cc) must reproduce them bit for bit: every value is an
f16 scale times a small integer, less an f16 min times a small integer, rounded once per
operation in f32 in the same order.

Run from the repository root (not in CI):
    python3 -m venv /tmp/gv && /tmp/gv/bin/pip install gguf==0.19.0 numpy==2.4.6
    /tmp/gv/bin/python tools/golden/make_gguf_fixtures.py --model /tmp/gg/model.gguf
Deterministic: a rerun with the pinned versions and the same model rewrites identical bytes.
"""
import argparse
import hashlib
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

PINNED = {"gguf": "0.19.0", "numpy": "2.4.6"}
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "gguf"
ALIGNMENT = 64

# Where the f16 scales sit in each K-quant block (bytes), per ggml's block_* structs.
K_SCALE_OFFSETS = {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2),
                   T.Q6_K: (208,)}
# Real tensors to take rows from, and which rows: (type, tensor, rows).
REAL_ROWS = [
    (T.Q4_K, "blk.0.attn_output.weight", [0, 639]),
    (T.Q6_K, "blk.0.ffn_down.weight", [0, 321]),
    (T.Q5_0, "blk.0.attn_k.weight", [0, 255]),
    (T.Q8_0, "blk.0.attn_v.weight", [7, 200]),
    (T.F32, "blk.0.attn_q_norm.weight", None),
]


def check_versions():
    have = {"gguf": version("gguf"), "numpy": np.__version__}
    if have != PINNED:
        raise SystemExit(f"pinned versions {PINNED}, found {have}: other versions may write or "
                         "dequantize differently")


def add_metadata(w):
    """Every value type. tests/runtime/checkpoint/gguf_test.cc checks these exact values."""
    w.add_custom_alignment(ALIGNMENT)  # general.alignment, uint32
    w.add_uint8("test.uint8", 200)
    w.add_int8("test.int8", -100)
    w.add_uint16("test.uint16", 60000)
    w.add_int16("test.int16", -30000)
    w.add_uint32("test.uint32", 4000000000)
    w.add_int32("test.int32", -2000000000)
    w.add_float32("test.float32", 1e-6)
    w.add_bool("test.bool_true", True)
    w.add_bool("test.bool_false", False)
    w.add_string("test.string", "h\u00e9llo \u2603 <start_of_turn>")
    w.add_uint64("test.uint64", 1 << 40)
    w.add_uint64("test.uint64_huge", (1 << 63) + 5)  # beyond int64: Int() must refuse it
    w.add_int64("test.int64", -(1 << 62))
    w.add_float64("test.float64", 0.1)
    w.add_array("test.array.string", ["a", "", "\u2581the", "<start_of_turn>", "\u2603"])
    w.add_array("test.array.float32", [0.5, -1.25, 1e-6])
    w.add_array("test.array.int32", [1, -2, 2147483647])
    w.add_array("test.array.bool", [True, False, True])
    w.add_key_value("test.array.uint8", [0, 255, 7], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.array.int16", [-32768, 32767], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("test.array.uint64", [1, (1 << 64) - 1], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("test.array.int64", [-(1 << 63), (1 << 63) - 1], V.ARRAY, sub_type=V.INT64)
    w.add_key_value("test.array.float64", [0.1, -2.5], V.ARRAY, sub_type=V.FLOAT64)
    w.add_array("test.array.nested", [[1, 2], [3]])  # array of arrays of int32


def special_f16():
    """F16 values that exercise every branch of a half -> float conversion."""
    bits = [0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
            0x7E00, 0x3555, 0x8200, 0x0010, 0x5140]
    return np.array(bits, dtype=np.uint16).view(np.float16)


def random_k_blocks(rng, qtype, n_blocks):
    """Random bytes as K-quant blocks, with finite f16 scales (the first block's subnormal)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for i in range(n_blocks):
        for j, off in enumerate(K_SCALE_OFFSETS[qtype]):
            if i == 0 and j == 0:
                scale = np.float16(3e-6)  # subnormal in f16
            else:
                scale = np.float16(rng.uniform(-0.05, 0.05) if j else rng.uniform(1e-4, 0.05))
            blocks[i, off:off + 2] = np.array([scale], dtype=np.float16).view(np.uint8)
    return blocks


def main():
    check_versions()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="/tmp/gg/model.gguf",
                        help="a Gemma 3 270M Q4_K_M GGUF, for real Q4_K/Q6_K/Q5_0/Q8_0 blocks")
    args = parser.parse_args()
    model_path = Path(args.model)
    model = gguf.GGUFReader(model_path)
    model_tensors = {t.name: t for t in model.tensors}

    rng = np.random.default_rng(20250601)
    w = gguf.GGUFWriter(OUT / "sample.gguf", arch="gemmapod-test")
    add_metadata(w)
    tensors = []  # (name, array to write, raw ggml type or None)

    def add(name, array, raw_dtype=None):
        tensors.append((name, array, raw_dtype))

    add("f32.vector", rng.standard_normal(7).astype(np.float32))
    add("f32.cube", rng.standard_normal((2, 3, 5)).astype(np.float32))
    add("f16.special", special_f16().reshape(2, 8))
    add("f16.matrix", rng.standard_normal((3, 10)).astype(np.float16))
    add("bf16.matrix", gguf.quants.quantize(rng.standard_normal((2, 16)).astype(np.float32), T.BF16),
        T.BF16)
    for qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        data = (rng.standard_normal((3, 96)) * rng.uniform(0.01, 2.0, size=(3, 1))).astype(np.float32)
        add(f"{qtype.name.lower()}.matrix", gguf.quants.quantize(data, qtype), qtype)
    add("q8_0.4d", gguf.quants.quantize(rng.standard_normal((2, 1, 3, 32)).astype(np.float32),
                                        T.Q8_0), T.Q8_0)
    for qtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
        blocks = random_k_blocks(rng, qtype, 4)
        add(f"{qtype.name.lower()}.random", blocks.reshape(2, -1), qtype)

    provenance = {"model": str(model_path), "model_sha256": sha256(model_path), "real": {}}
    for qtype, name, rows in REAL_ROWS:
        t = model_tensors[name]
        assert t.tensor_type == qtype, (name, t.tensor_type)
        data = np.asarray(t.data)
        if rows is not None:
            data = data[rows]
        add(f"{qtype.name.lower()}.real", np.ascontiguousarray(data),
            None if qtype == T.F32 else qtype)
        provenance["real"][f"{qtype.name.lower()}.real"] = {"tensor": name, "rows": rows}

    add("iq4_nl.unsupported", np.zeros((1, gguf.GGML_QUANT_SIZES[T.IQ4_NL][1]), dtype=np.uint8),
        T.IQ4_NL)

    for name, array, raw_dtype in tensors:
        w.add_tensor(name, array, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # The expected values come from reading the written file back with gguf-py's own reader.
    for old in OUT.glob("*.npy"):
        old.unlink()
    written = gguf.GGUFReader(OUT / "sample.gguf")
    assert written.alignment == ALIGNMENT
    for t in written.tensors:
        if t.tensor_type == T.IQ4_NL:
            continue
        values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        np.save(OUT / f"{t.name}.npy", values)
    with open(OUT / "provenance.json", "w") as f:
        json.dump(provenance, f, indent=2)
        f.write("\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(written.tensors)} tensors to {OUT / 'sample.gguf'}; {total} bytes in all")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":
    main()
