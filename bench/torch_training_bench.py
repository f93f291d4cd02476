#!/usr/bin/env python3
"""PyTorch's side of bench/training_bench.cc: full training steps (forward, backward with the
mean next-token loss over every token, torch.optim.AdamW) of the same Gemma shape, built by
transformers from configs/models/<name>.yaml with random f32 weights, eager attention, on the
same tokens, with the same thread count. Prints the median step like training_bench.

    /tmp/golden-venv/bin/python bench/torch_training_bench.py --config configs/models/gemma3-270m.yaml \\
        [--layers N] [--sequences 4] [--length 128] [--steps 4] [--threads 2]

Needs torch and transformers (tools/golden/requirements.txt pins the versions measured).
"""
import argparse
import statistics
import time

import torch
import yaml
from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig


def model_from_yaml(path, layers):
    c = yaml.safe_load(open(path))
    n = layers or c["num_layers"]
    pattern = c.get("layer_pattern") or c.get("layer_kinds")
    if pattern is None:
        raise SystemExit(f"{path}: give layer_pattern or layer_kinds")
    kinds = [("sliding_attention" if pattern[i % len(pattern)] == "sliding" else "full_attention")
             for i in range(n)]
    common = dict(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                  intermediate_size=c["intermediate_size"], num_hidden_layers=n,
                  num_attention_heads=c["num_heads"], num_key_value_heads=c["num_kv_heads"],
                  head_dim=c["head_dim"], rms_norm_eps=c.get("rms_norm_eps", 1e-6),
                  query_pre_attn_scalar=c["query_pre_attn_scalar"],
                  sliding_window=c["sliding_window"], max_position_embeddings=4096,
                  hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                  attention_dropout=0.0, layer_types=kinds)
    if c["architecture"] == "gemma3_text":
        config = Gemma3TextConfig(**common, rope_theta=c["rope_theta"]["global"],
                                  rope_local_base_freq=c["rope_theta"]["local"],
                                  attn_logit_softcapping=c.get("attn_logit_softcap") or None,
                                  final_logit_softcapping=c.get("final_logit_softcap") or None)
        model = Gemma3ForCausalLM(config)
    else:
        config = Gemma2Config(**common, rope_theta=c["rope_theta"]["global"],
                              attn_logit_softcapping=c["attn_logit_softcap"],
                              final_logit_softcapping=c["final_logit_softcap"])
        model = Gemma2ForCausalLM(config)
    config._attn_implementation = "eager"
    return c["name"], model.float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/models/gemma3-270m.yaml")
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name, model = model_from_yaml(args.config, args.layers)
    model.train()
    vocab = model.config.vocab_size
    # The tokens of bench::PromptTokens.
    ids = torch.tensor([[(i * 7919 + s * 104729) % vocab for i in range(args.length)]
                        for s in range(args.sequences)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)
    steps, fb = [], []
    for step in range(args.steps + 1):  # step 0 warms up
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        t1 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        t2 = time.perf_counter()
        if step > 0:
            steps.append(t2 - t0)
            fb.append(t1 - t0)
    step_s, fb_s = statistics.median(steps), statistics.median(fb)
    tokens = args.sequences * args.length
    params = sum(p.numel() for p in model.parameters())
    print(f"torch_training_bench: {name}, {model.config.num_hidden_layers} layers, {params} "
          f"parameters, f32, torch {torch.__version__}, {args.threads} threads, {args.sequences} x "
          f"{args.length} tokens: step {step_s:.3f} s (forward+backward {fb_s:.3f} s, "
          f"optimizer {step_s - fb_s:.3f} s), {tokens / step_s:.1f} tokens/s "
          f"(median of {args.steps})")


if __name__ == "__main__":
    main()
