#!/usr/bin/env python3
"""Gradient fixtures for decoder-only Gemma training: PyTorch autograd on transformers' models.

Pinned: the versions of tools/golden/requirements.txt (checked at start).

For each of the tiny models of tests/fixtures/models/{gemma1,gemma2,gemma3} (written by
make_gemma_fixtures.py), loads the Hugging Face directory in float32 with eager attention and
computes the next-token cross-entropy of a two-sequence batch (right-padded, the padding and the
first tokens of sequence 0 masked with -100: the mean is over the remaining targets, as
transformers computes it), then every parameter's gradient by autograd. For gemma3 it also takes
one torch.optim.AdamW step (clip_grad_norm_ first) and records the parameters after it. Writes,
per model, tests/fixtures/models/<name>/training/:

- grads.safetensors: f32 gradient of every parameter under its Hugging Face name (the tied
  embedding's gradient is the sum of its uses);
- after_adamw.safetensors (gemma3 only): every parameter after the AdamW step;
- reference.json: the batch, the mask, the loss, the AdamW settings.

The C++ test tests/training/gemma_lm_reference_test.cc packs the same sequences with the same
mask and compares (1e-4 of the largest gradient). Run from the repository root:
    /tmp/golden-venv/bin/python tools/golden/make_gemma_grad_fixtures.py
"""
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from make_gemma_fixtures import check_versions

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / "fixtures" / "models"
LENGTHS = (19, 12)  # longer than the sliding window of 8
MASKED_PREFIX = 4   # sequence 0's first targets are not learned (a prompt)
ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
CLIP = 1.0


def batch(seed):
    g = np.random.default_rng(seed)
    seqs = [[2] + g.integers(7, 512, n - 1).tolist() for n in LENGTHS]
    width = max(LENGTHS)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    attention = torch.zeros(len(seqs), width, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        attention[i, :len(s)] = 1
        labels[i, :len(s)] = torch.tensor(s)
    # transformers shifts labels inside the loss: label j is the target of position j - 1, so
    # masking labels 1..MASKED_PREFIX drops the first MASKED_PREFIX targets of sequence 0.
    labels[0, 1:MASKED_PREFIX + 1] = -100
    return seqs, ids, attention, labels


def main():
    check_versions()
    torch.manual_seed(0)
    for index, name in enumerate(("gemma1", "gemma2", "gemma3")):
        model = AutoModelForCausalLM.from_pretrained(
            MODELS / name, dtype=torch.float32, attn_implementation="eager")
        model.train()  # no dropout in these configs (attention_dropout 0): train == eval
        seqs, ids, attention, labels = batch(100 + index)
        out = model(input_ids=ids, attention_mask=attention, labels=labels)
        out.loss.backward()
        # Tied: lm_head.weight is model.embed_tokens.weight, one parameter, one summed gradient.
        grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}
        out_dir = MODELS / name / "training"
        out_dir.mkdir(exist_ok=True)
        save_file(grads, out_dir / "grads.safetensors")
        reference = {
            "sequences": seqs,
            "masked_prefix": MASKED_PREFIX,
            "loss": out.loss.item(),
            "largest_gradient": max(g.abs().max().item() for g in grads.values()),
        }
        if name == "gemma3":
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP).item()
            no_decay = [p for n, p in model.named_parameters() if n.endswith("norm.weight")]
            decay = [p for n, p in model.named_parameters() if not n.endswith("norm.weight")]
            opt = torch.optim.AdamW([{"params": decay},
                                     {"params": no_decay, "weight_decay": 0.0}], **ADAMW)
            opt.step()
            after = {n: p.detach().clone().contiguous() for n, p in model.named_parameters()}
            save_file(after, out_dir / "after_adamw.safetensors")
            reference["adamw"] = {"lr": ADAMW["lr"], "beta1": ADAMW["betas"][0],
                                  "beta2": ADAMW["betas"][1], "eps": ADAMW["eps"],
                                  "weight_decay": ADAMW["weight_decay"], "max_grad_norm": CLIP,
                                  "grad_norm_before_clip": norm}
        (out_dir / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
        print(f"{name}: loss {out.loss.item():.6f}, {len(grads)} gradients -> {out_dir}")


if __name__ == "__main__":
    main()
