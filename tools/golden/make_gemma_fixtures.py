#!/usr/bin/env python3
"""Golden fixtures for the decoder-only Gemma models (Gemma 1, 2 and 3 text).

Builds three tiny random models with Hugging Face transformers (the reference implementation),
saves each as a Hugging Face model directory under tests/fixtures/models/<name>/, and records
the reference logits of three token sequences longer than the sliding window, plus a greedy
continuation produced by transformers' own cached generate(). The C++ golden tests
(tests/models/golden_test.cc) convert these directories with `gemmapod convert` and must
reproduce the logits.

Run from the repository root (not in CI; see tools/golden/README.md):
    python3 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install -r tools/golden/requirements.txt
    /tmp/golden-venv/bin/python tools/golden/make_gemma_fixtures.py
"""
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (AutoModelForCausalLM, Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig,
                          GemmaConfig, GemmaForCausalLM)

PINNED = {"torch": "2.9.1", "transformers": "4.57.1"}
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "models"
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer" / "tiny_gemma.model"
VOCAB = 512
SEQUENCE_LENGTHS = (24, 17, 9)  # all longer than the sliding window of 8
GREEDY_PROMPT = 10
GREEDY_NEW = 16


def check_versions():
    have = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    if have != PINNED:
        raise SystemExit(f"pinned versions {PINNED}, found {have}: install "
                         "tools/golden/requirements.txt (other versions may compute differently)")


COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, max_position_embeddings=256,
              rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2,
              tie_word_embeddings=True, attention_bias=False,
              hidden_activation="gelu_pytorch_tanh")


def gemma1():
    # MQA, and heads * head_dim (96) != hidden (64).
    config = GemmaConfig(**COMMON, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=1, head_dim=24, rope_theta=10000.0)
    return GemmaForCausalLM(config), "float32", None


def gemma2():
    # GQA; a query_pre_attn_scalar that differs from head_dim; both soft-caps low enough to bite.
    config = Gemma2Config(**COMMON, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=20,
                          sliding_window=8, attn_logit_softcapping=2.0,
                          final_logit_softcapping=10.0, rope_theta=10000.0)
    return Gemma2ForCausalLM(config), "bfloat16", "150KB"


def gemma3():
    # Layer 5 is the one global layer (pattern of 6), qk-norm, two RoPE bases, MQA.
    config = Gemma3TextConfig(**COMMON, num_hidden_layers=7, num_attention_heads=4,
                              num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                              sliding_window=8, rope_theta=1e6, rope_local_base_freq=1e4,
                              rope_scaling=None, final_logit_softcapping=None,
                              attn_logit_softcapping=None)
    return Gemma3ForCausalLM(config), "float32", None


def randomize(model, seed):
    """Every parameter random, the RMSNorm weights too (HF initialises them to 0, which would
    hide a missing `1 +`). Scales keep the logits in the single digits to tens."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norm weights
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def sequences(seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in SEQUENCE_LENGTHS:
        ids = torch.randint(7, VOCAB, (n - 1,), generator=g).tolist()
        out.append([2] + ids)
    return out


def capped_fraction(model, tokens, cap, which):
    """Fraction of attention scores (or final logits) beyond cap / 2 before capping: evidence
    that the soft-cap changes the result."""
    if which == "final":
        cfg = model.config
        saved = cfg.final_logit_softcapping
        cfg.final_logit_softcapping = None
        logits = model(torch.tensor([tokens])).logits
        cfg.final_logit_softcapping = saved
        return float((logits.abs() > cap / 2).float().mean())
    return None


def main():
    check_versions()
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, build) in enumerate((("gemma1", gemma1), ("gemma2", gemma2),
                                          ("gemma3", gemma3))):
        model, dtype, shard = build()
        model.config._attn_implementation = "eager"  # the eager path is the reference
        model.eval()
        randomize(model, 100 + seed)
        if dtype == "bfloat16":
            # Round the weights to bf16 and compute the reference in f32 from exactly those.
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(torch.bfloat16).to(torch.float32))
        directory = OUT / name
        if directory.exists():
            shutil.rmtree(directory)
        if dtype == "bfloat16":
            model = model.to(torch.bfloat16)
        kwargs = {"safe_serialization": True}
        if shard:
            kwargs["max_shard_size"] = shard
        model.save_pretrained(directory, **kwargs)
        # The references come from the saved directory loaded back in f32, as a user would load
        # it: casting the in-memory model back would keep bf16-rounded RoPE buffers.
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32,
                                                     attn_implementation="eager")
        model.eval()
        shutil.copy(TOKENIZER, directory / "tokenizer.model")
        for extra in ("generation_config.json",):
            (directory / extra).unlink(missing_ok=True)

        seqs = sequences(200 + seed)
        record = {"model": name, "transformers": transformers.__version__,
                  "torch": torch.__version__, "sequences": seqs, "max_abs_logit": [],
                  "layer_types": getattr(model.config, "layer_types", None)}
        with torch.no_grad():
            for i, tokens in enumerate(seqs):
                logits = model(torch.tensor([tokens]), use_cache=False).logits[0].float().numpy()
                np.save(directory / f"logits_{i}.npy", logits.astype(np.float32))
                record["max_abs_logit"].append(float(np.abs(logits).max()))

            # transformers' own incremental path must agree with its full forward.
            tokens = seqs[0]
            full = model(torch.tensor([tokens]), use_cache=False).logits[0]
            out = model(torch.tensor([tokens[:1]]), use_cache=True)
            past, steps = out.past_key_values, [out.logits[0, -1]]
            for t in tokens[1:]:
                out = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
                steps.append(out.logits[0, -1])
            record["hf_incremental_vs_full_max_abs"] = float(
                (torch.stack(steps) - full).abs().max())

            prompt = seqs[0][:GREEDY_PROMPT]
            generated = model.generate(torch.tensor([prompt]), do_sample=False,
                                       max_new_tokens=GREEDY_NEW, min_new_tokens=GREEDY_NEW,
                                       eos_token_id=None, pad_token_id=0)
            record["greedy_prompt"] = prompt
            record["greedy_continuation"] = generated[0, len(prompt):].tolist()
            if name == "gemma2":
                record["final_logits_beyond_half_cap"] = capped_fraction(model, seqs[0], 10.0,
                                                                         "final")
        files = sorted(p.name for p in directory.iterdir())
        assert not any("lm_head" in k for f in directory.glob("*.safetensors")
                       for k in __import__("safetensors").safe_open(str(f), "pt").keys())
        (directory / "reference.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"{name}: {files}; max|logit| {record['max_abs_logit']}; "
              f"hf incremental vs full {record['hf_incremental_vs_full_max_abs']:.2e}; "
              f"{record.get('final_logits_beyond_half_cap', '')}")


if __name__ == "__main__":
    main()
