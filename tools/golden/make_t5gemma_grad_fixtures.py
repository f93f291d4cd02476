#!/usr/bin/env python3
"""Gradient fixtures for T5Gemma training: PyTorch autograd on transformers'
T5GemmaForConditionalGeneration, loaded from the tiny fixtures of make_t5gemma_fixtures.py
(tests/fixtures/models/t5gemma/{balanced,unbalanced}) in float32 with eager attention.

Pinned: tools/golden/requirements.txt (the versions make_gemma_fixtures.check_versions checks).

Two (input, target) pairs of different lengths (the inputs longer than the encoder's sliding
window), right-padded on both sides with attention masks; the decoder is teacher-forced on the
target ids and label t is target id t + 1 (-100 on padding, on the last position of each target
and on one masked target of pair 0), so the loss is the mean next-token cross-entropy over the
learned targets, as gemmapod's Seq2SeqBatch computes it. Writes, per fixture,
tests/fixtures/models/t5gemma/<name>/training/: grads.safetensors (f32, Hugging Face names; the
decoder's tied embedding summed over both uses) and reference.json (pairs, mask, loss, largest
gradient).
    /tmp/golden-venv/bin/python tools/golden/make_t5gemma_grad_fixtures.py
"""
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import T5GemmaForConditionalGeneration

from make_gemma_fixtures import check_versions

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "models" / "t5gemma"
INPUT_LENGTHS = (11, 6)
TARGET_LENGTHS = (7, 9)
MASKED_TARGET = 2  # pair 0's target at this position is not learned


def main():
    check_versions()
    for index, name in enumerate(("balanced", "unbalanced")):
        model = T5GemmaForConditionalGeneration.from_pretrained(
            FIXTURES / name, dtype=torch.float32, attn_implementation="eager")
        model.train()  # dropout rates are 0 in these configs
        g = np.random.default_rng(300 + index)
        inputs = [g.integers(7, 512, n).tolist() for n in INPUT_LENGTHS]
        targets = [[2] + g.integers(7, 512, n - 1).tolist() for n in TARGET_LENGTHS]
        enc = torch.zeros(2, max(INPUT_LENGTHS), dtype=torch.long)
        enc_mask = torch.zeros_like(enc)
        dec = torch.zeros(2, max(TARGET_LENGTHS), dtype=torch.long)
        dec_mask = torch.zeros_like(dec)
        labels = torch.full_like(dec, -100)
        for i in range(2):
            enc[i, :len(inputs[i])] = torch.tensor(inputs[i])
            enc_mask[i, :len(inputs[i])] = 1
            dec[i, :len(targets[i])] = torch.tensor(targets[i])
            dec_mask[i, :len(targets[i])] = 1
            labels[i, :len(targets[i]) - 1] = torch.tensor(targets[i][1:])
        labels[0, MASKED_TARGET - 1] = -100  # position MASKED_TARGET - 1 predicts that target
        out = model(input_ids=enc, attention_mask=enc_mask, decoder_input_ids=dec,
                    decoder_attention_mask=dec_mask, labels=labels)
        out.loss.backward()
        grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()
                 if p.grad is not None}
        out_dir = FIXTURES / name / "training"
        out_dir.mkdir(exist_ok=True)
        save_file(grads, out_dir / "grads.safetensors")
        reference = {"inputs": inputs, "targets": targets, "masked_target": MASKED_TARGET,
                     "loss": out.loss.item(),
                     "largest_gradient": max(t.abs().max().item() for t in grads.values())}
        (out_dir / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
        print(f"t5gemma {name}: loss {out.loss.item():.6f}, {len(grads)} gradients -> {out_dir}")


if __name__ == "__main__":
    main()
