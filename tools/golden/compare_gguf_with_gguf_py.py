#!/usr/bin/env python3
"""Compares gemmapod's dequantization of every tensor of a real GGUF file with gguf-py's.

Pinned like make_gguf_fixtures.py: gguf 0.19.0, numpy 2.4.6. Not run in CI (it needs a model);
the committed fixtures under tests/fixtures/gguf/ cover the same code in the C++ tests.

Runs build/tests/runtime/checkpoint/dump_gguf_f32, which writes the tensors gemmapod can
dequantize as raw f32 in file order, and compares them tensor by tensor with
gguf.quants.dequantize on the bytes gguf-py's GGUFReader reads, without holding the model in
memory more than one tensor at a time. Prints, per ggml type, the tensors, elements, the largest
absolute difference and how many elements differ in their bits; exits 1 if any differ.

    /tmp/gv/bin/python tools/golden/compare_gguf_with_gguf_py.py /tmp/gg/model.gguf \\
        --dump build/tests/runtime/checkpoint/dump_gguf_f32
"""
import argparse
import subprocess
import sys
from collections import defaultdict
from importlib.metadata import version

import numpy as np

import gguf

PINNED = {"gguf": "0.19.0", "numpy": "2.4.6"}
DEQUANTIZED = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
               "Q5_K", "Q6_K"}


def main():
    have = {"gguf": version("gguf"), "numpy": np.__version__}
    if have != PINNED:
        raise SystemExit(f"pinned versions {PINNED}, found {have}")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--dump", default="build/tests/runtime/checkpoint/dump_gguf_f32")
    args = parser.parse_args()

    reader = gguf.GGUFReader(args.model)
    dump = subprocess.Popen([args.dump, args.model], stdout=subprocess.PIPE)
    stats = defaultdict(lambda: {"tensors": 0, "elements": 0, "max_abs_diff": 0.0, "differ": 0})
    for t in reader.tensors:
        name = t.tensor_type.name
        if name not in DEQUANTIZED:
            print(f"skipping {t.name}: {name}", file=sys.stderr)
            continue
        want = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        raw = dump.stdout.read(want.size * 4)
        if len(raw) != want.size * 4:
            raise SystemExit(f"{t.name}: dump_gguf_f32 ended early")
        got = np.frombuffer(raw, dtype=np.float32).reshape(want.shape)
        s = stats[name]
        s["tensors"] += 1
        s["elements"] += want.size
        s["differ"] += int(np.count_nonzero(got.view(np.uint32) != want.view(np.uint32)))
        with np.errstate(invalid="ignore"):
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        s["max_abs_diff"] = max(s["max_abs_diff"], float(np.nanmax(diff)) if diff.size else 0.0)
    if dump.stdout.read(1):
        raise SystemExit("dump_gguf_f32 wrote more tensors than gguf-py reads")
    if dump.wait() != 0:
        raise SystemExit("dump_gguf_f32 failed")

    print(f"{'type':6} {'tensors':>8} {'elements':>12} {'max |diff|':>11} {'bits differ':>12}")
    for name, s in sorted(stats.items()):
        print(f"{name:6} {s['tensors']:8} {s['elements']:12} {s['max_abs_diff']:11.3g} "
              f"{s['differ']:12}")
    return 1 if any(s["differ"] for s in stats.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
