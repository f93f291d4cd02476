#!/usr/bin/env python3
"""Golden fixtures for the real Gemma 3 270M, read from its GGUF file (Q4_K_M).

Pinned: torch 2.9.1, transformers 4.57.1, gguf 0.19.0, accelerate (any), numpy 2.4.6.

Reference: Hugging Face transformers loading the GGUF file itself (`gguf_file=`), which
dequantizes every tensor with gguf-py (llama.cpp's own Python package), subtracts the 1 that
llama.cpp's converter adds to Gemma's RMSNorm weights, and runs Gemma3ForCausalLM in float32 with
eager attention. `gemmapod convert model.gguf model.h5 --dtype f32` must give the same logits
(tests/models/gemma3_270m_test.cc).

The token ids are given, not tokenized here: transformers' GGUF tokenizer rebuilds Gemma's BPE
from the vocabulary and splits words differently from SentencePiece ("Hello, my dog is cute"
becomes 9 tokens instead of the published 7), so it is not a reference for tokenization.

The vocabulary has 262144 entries, so the fixture keeps, per position, the logits of a fixed set
of columns (every 97th id, plus the 32 largest of each position) rather than all of them:
`logits_<i>.npy` [positions, columns] f32 and `columns_<i>.npy` int32.

Run (not in CI):
    python3 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install torch==2.9.1 transformers==4.57.1 gguf==0.19.0 accelerate \
        numpy==2.4.6
    /tmp/golden-venv/bin/python tools/golden/make_gemma3_270m_fixtures.py \
        "$(tools/fetch_gemma3_270m.sh)"
"""
import hashlib
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

PINNED = {"torch": "2.9.1", "transformers": "4.57.1", "gguf": "0.19.0", "numpy": "2.4.6"}
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "gemma3_270m"
# <bos> + "The Eiffel Tower is located in the city of", "Water is made of hydrogen and", and a chat
# prompt (<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n),
# as our tokenizer and llama.cpp's both encode them.
SEQUENCES = [
    [2, 818, 94648, 25822, 563, 5628, 528, 506, 3207, 529],
    [2, 17390, 563, 1603, 529, 13076, 532],
    [2, 105, 2364, 107, 3689, 563, 506, 5279, 529, 7001, 236881, 106, 107, 105, 4368, 107],
]
GREEDY_NEW = 24


def main():
    have = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "gguf": version("gguf"), "numpy": np.__version__}
    if have != PINNED:
        raise SystemExit(f"pinned versions {PINNED}, found {have}")
    gguf_path = Path(sys.argv[1])
    digest = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{gguf_path}: SHA-256 {digest}, expected {SHA256}")
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                 dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    reference = {"gguf_sha256": SHA256, "versions": have, "sequences": [], "dtype": "float32"}
    for i, ids in enumerate(SEQUENCES):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
        every = np.arange(0, logits.shape[1], 97)
        top = np.argsort(-logits, axis=1)[:, :32].reshape(-1)
        columns = np.unique(np.concatenate([every, top])).astype(np.int32)
        np.save(OUT / f"logits_{i}.npy", np.ascontiguousarray(logits[:, columns], dtype=np.float32))
        np.save(OUT / f"columns_{i}.npy", columns)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=GREEDY_NEW, do_sample=False)
        reference["sequences"].append({
            "ids": ids,
            "max_abs_logit": float(np.abs(logits).max()),
            "argmax": [int(a) for a in logits.argmax(axis=1)],
            "greedy": [int(t) for t in out[0, len(ids):]],
        })
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(json.dumps(reference, indent=1))


if __name__ == "__main__":
    main()
