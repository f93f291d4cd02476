#!/usr/bin/env python3
"""Gradient fixtures for RecurrentGemma training: PyTorch autograd on google-deepmind/
recurrentgemma's torch Griffin (the reference; transformers' no-cache forward applies no attention
window, see make_recurrentgemma_fixtures.py), loaded from the tiny fixture's DeepMind state dict
tests/fixtures/models/recurrentgemma/dm.safetensors in float32.

Pinned: tools/golden/requirements-recurrentgemma.txt (checked at start by the fixture module).

Computes the next-token cross-entropy of two documents packed in one row (24 and 14 tokens,
longer than the window of 8 and the convolution; the second starts at position 0, which resets
the recurrence, the convolution and the attention; the first three targets of document 0 are not
learned) as the mean over the learned targets, and every parameter's gradient, renamed to the
Hugging Face names (make_recurrentgemma_fixtures.dm_to_hf: the convolution taps transposed, the
MLP's stacked up-projection split into gate and up). Writes
tests/fixtures/models/recurrentgemma/training/:
- grads.safetensors: f32 gradient per parameter under its Hugging Face name (the tied embedding's
  gradient is the sum of both uses);
- reference.json: the sequences, the mask, the loss and the largest gradient.

tests/training/recurrent_gemma_lm_test.cc packs the same documents and compares.
Run from the repository root:
    /tmp/rg-venv/bin/python tools/golden/make_recurrentgemma_grad_fixtures.py
"""
import json
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from safetensors.torch import save_file

import make_recurrentgemma_fixtures as fixtures  # checks the pinned versions

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests" / "fixtures" / "models" / "recurrentgemma" / "dm.safetensors"
OUT = ROOT / "tests" / "fixtures" / "models" / "recurrentgemma" / "training"
LENGTHS = (24, 14)
MASKED_PREFIX = 3


def main():
    torch.manual_seed(0)
    model = fixtures.rgt.Griffin(fixtures.griffin_config(), gradient_checkpointing=False,
                                 dtype=torch.float32)
    loaded = safetensors.torch.load_file(str(MODEL))
    model.load_state_dict({k: v.float() for k, v in loaded.items()}, strict=True)
    g = np.random.default_rng(7)
    seqs = [[2] + g.integers(7, 512, n - 1).tolist() for n in LENGTHS]
    tokens = [t for s in seqs for t in s]
    positions = [p for s in seqs for p in range(len(s))]
    # Token t's target is token t + 1 of its own document; the last token of each has none.
    targets, learned = [], []
    for d, s in enumerate(seqs):
        for i in range(len(s)):
            has = i + 1 < len(s) and not (d == 0 and i + 1 <= MASKED_PREFIX)
            targets.append(s[i + 1] if i + 1 < len(s) else 0)
            learned.append(has)
    logits, _ = model(torch.tensor([tokens]), torch.tensor([positions]), cache=None,
                      return_logits=True, return_cache=False)
    logp = torch.log_softmax(logits[0].float(), dim=-1)
    mask = torch.tensor(learned)
    picked = logp[torch.arange(len(tokens)), torch.tensor(targets)]
    loss = -(picked[mask]).mean()
    loss.backward()
    grads = fixtures.dm_to_hf({n: p.grad.detach().clone().contiguous()
                               for n, p in model.named_parameters()})
    OUT.mkdir(exist_ok=True)
    save_file(grads, OUT / "grads.safetensors")
    reference = {"sequences": seqs, "masked_prefix": MASKED_PREFIX, "loss": loss.item(),
                 "largest_gradient": max(t.abs().max().item() for t in grads.values())}
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"recurrentgemma: loss {loss.item():.6f}, {len(grads)} gradients -> {OUT}")


if __name__ == "__main__":
    main()
