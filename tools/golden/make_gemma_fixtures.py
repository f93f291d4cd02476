#!/usr/bin/env python3
"""Golden fixtures for the decoder-only Gemma models (Gemma 1, 2 and 3 text).

Pinned: torch 2.9.1, transformers 4.57.1, safetensors 0.8.0, numpy 2.4.6, sentencepiece 0.2.3
(tools/golden/requirements.txt; the script refuses to run with other versions).

Builds three tiny random models with Hugging Face transformers (the reference implementation),
saves each as a Hugging Face model directory under tests/fixtures/models/<name>/, and records the
reference logits of three token sequences longer than the sliding window, plus a greedy
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
from importlib.metadata import version
from pathlib import Path

import numpy as np
import safetensors
import sentencepiece
import torch
import transformers
from safetensors import safe_open
from transformers import (AutoModelForCausalLM, Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM,
                          Gemma3TextConfig, GemmaConfig, GemmaForCausalLM)
from transformers.models.gemma2 import modeling_gemma2

PINNED = {"torch": "2.9.1", "transformers": "4.57.1", "safetensors": "0.8.0", "numpy": "2.4.6",
          "sentencepiece": "0.2.3"}
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "models"
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer" / "tiny_gemma.model"
VOCAB = 512
PAD, EOS, BOS = 0, 1, 2
FIRST_ORDINARY_ID = 7  # 0-6 are <pad> <eos> <bos> <unk> <mask> <start_of_turn> <end_of_turn>
SEQUENCE_LENGTHS = (24, 17, 9)  # all longer than the sliding window of 8
GREEDY_PROMPT = 10
GREEDY_NEW = 16
INCREMENTAL_TOLERANCE = 2e-5  # HF cached decode vs HF full forward, absolute, f32


def check_versions():
    have = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__,
            "sentencepiece": version("sentencepiece")}
    if have != PINNED:
        raise SystemExit(f"pinned versions {PINNED}, found {have}: install "
                         "tools/golden/requirements.txt (other versions may compute differently)")


COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, max_position_embeddings=256,
              rms_norm_eps=1e-6, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS,
              tie_word_embeddings=True, attention_bias=False,
              hidden_activation="gelu_pytorch_tanh")


class Fixture:
    def __init__(self, name, config, model_class, dtype, max_shard_size=None, final_norm_mean=0.0):
        self.name = name
        self.config = config
        self.model_class = model_class
        self.dtype = dtype  # what the saved safetensors hold
        self.max_shard_size = max_shard_size
        # Mean of the final RMSNorm weight w (the norm multiplies by 1 + w): a way to scale the
        # logits without growing the embedding, whose share of the residual stream would otherwise
        # make every model predict the token it was just fed.
        self.final_norm_mean = final_norm_mean


def fixtures():
    return [
        # MQA, and heads * head_dim (96) != hidden (64).
        Fixture("gemma1",
                GemmaConfig(**COMMON, num_hidden_layers=3, num_attention_heads=4,
                            num_key_value_heads=1, head_dim=24, rope_theta=10000.0),
                GemmaForCausalLM, torch.float32),
        # GQA; a query_pre_attn_scalar that differs from head_dim; both soft-caps low enough to
        # bite (the caps are also in configs/models/tiny-gemma2.yaml, which must stay its twin).
        # bf16 weights in several shards. Final norm weights around 1 (a gain of about 2) push
        # the raw logits well past the final cap.
        Fixture("gemma2",
                Gemma2Config(**COMMON, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=20,
                             sliding_window=8, attn_logit_softcapping=2.0,
                             final_logit_softcapping=10.0, rope_theta=10000.0),
                Gemma2ForCausalLM, torch.bfloat16, max_shard_size="150KB", final_norm_mean=1.0),
        # 7 layers: layer 5 is the one global layer (pattern of 6), qk-norm, two RoPE bases, MQA.
        Fixture("gemma3",
                Gemma3TextConfig(**COMMON, num_hidden_layers=7, num_attention_heads=4,
                                 num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                                 sliding_window=8, rope_theta=1e6, rope_local_base_freq=1e4,
                                 rope_scaling=None, final_logit_softcapping=None,
                                 attn_logit_softcapping=None),
                Gemma3ForCausalLM, torch.float32),
    ]


EMBEDDING_STD = 0.25
NORM_STD = 0.3
# o_proj and down_proj write into the residual stream; in Gemma 1 (no post-norms) their scale is
# what keeps the input embedding from dominating it. Gemma 2/3 re-normalise those outputs.
RESIDUAL_WRITER_GAIN = 3.0


def randomize(model, fixture, seed):
    """Every parameter random, the RMSNorm weights too (transformers initialises them to 0, which
    would hide a missing `1 +`)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # RMSNorm weights, including qk-norm and the post-norms
                mean = fixture.final_norm_mean if name == "model.norm.weight" else 0.0
                p.copy_(mean + NORM_STD * torch.randn(p.shape, generator=g))
            elif name == "model.embed_tokens.weight":
                p.copy_(EMBEDDING_STD * torch.randn(p.shape, generator=g))
            else:  # nn.Linear weight [out, in]
                gain = RESIDUAL_WRITER_GAIN if name.endswith(("o_proj.weight",
                                                              "down_proj.weight")) else 1.0
                p.copy_(gain / p.shape[1] ** 0.5 * torch.randn(p.shape, generator=g))


def sequences(seed):
    g = torch.Generator().manual_seed(seed)
    return [[BOS] + torch.randint(FIRST_ORDINARY_ID, VOCAB, (n - 1,), generator=g).tolist()
            for n in SEQUENCE_LENGTHS]


def gemma2_cap_fractions(model, tokens):
    """Fractions of raw attention scores (unmasked ones) and raw final logits beyond cap / 2:
    evidence that both soft-caps change the result. Reads the scores by wrapping the eager
    attention function for one forward."""
    cfg = model.config
    raw_scores = []
    original = modeling_gemma2.eager_attention_forward

    def recording(module, query, key, value, attention_mask, scaling=None, **kwargs):
        keys = modeling_gemma2.repeat_kv(key, module.num_key_value_groups)
        scores = torch.matmul(query, keys.transpose(2, 3)) * scaling
        visible = (attention_mask[:, :, :, :keys.shape[-2]] == 0).expand_as(scores)
        raw_scores.append(scores[visible])
        return original(module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    final_cap = cfg.final_logit_softcapping
    modeling_gemma2.eager_attention_forward = recording
    cfg.final_logit_softcapping = None
    try:
        raw_logits = model(torch.tensor([tokens]), use_cache=False).logits
    finally:
        modeling_gemma2.eager_attention_forward = original
        cfg.final_logit_softcapping = final_cap
    scores = torch.cat(raw_scores)
    assert scores.numel() > 0, "the eager attention spy saw no scores"
    attn_cap = cfg.attn_logit_softcapping
    return {
        "attn_scores_beyond_half_cap": float((scores.abs() > attn_cap / 2).float().mean()),
        "attn_score_max_abs_raw": float(scores.abs().max()),
        "final_logits_beyond_half_cap": float((raw_logits.abs() > final_cap / 2).float().mean()),
        "final_logit_max_abs_raw": float(raw_logits.abs().max()),
    }


def incremental_vs_full(model, tokens):
    """transformers' own cached decode (one token at a time) against its full forward."""
    full = model(torch.tensor([tokens]), use_cache=False).logits[0]
    out = model(torch.tensor([tokens[:1]]), use_cache=True)
    past, rows = out.past_key_values, [out.logits[0, -1]]
    for t in tokens[1:]:
        out = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        rows.append(out.logits[0, -1])
    return float((torch.stack(rows) - full).abs().max()), type(past).__name__


def saved_tensor_names(directory):
    names = []
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            names += list(st.keys())
    return names


def check_saved_files(directory, fixture, model):
    names = saved_tensor_names(directory)
    assert not any("lm_head" in n for n in names), f"{directory}: lm_head saved despite tying"
    assert sorted(names) == sorted(n for n, _ in model.named_parameters()), directory
    shards = sorted(directory.glob("*.safetensors"))
    if fixture.max_shard_size:
        index = json.loads((directory / "model.safetensors.index.json").read_text())
        assert len(shards) >= 2 and len(set(index["weight_map"].values())) == len(shards), shards
        assert not any("lm_head" in n for n in index["weight_map"]), directory
    else:
        assert [s.name for s in shards] == ["model.safetensors"], shards
    want = {torch.float32: "F32", torch.bfloat16: "BF16"}[fixture.dtype]
    for f in shards:
        header_len = int.from_bytes(f.read_bytes()[:8], "little")
        header = json.loads(f.read_bytes()[8:8 + header_len])
        dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
        assert dtypes == {want}, f"{f}: {dtypes}"


def check_tokenizer(path):
    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    assert sp.get_piece_size() == VOCAB, sp.get_piece_size()
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id()) == (PAD, EOS, BOS)


def build(fixture, seed):
    """Random model saved under tests/fixtures/models/<name>, then loaded back in f32 from disk:
    the references are computed from exactly the saved (for gemma2 bf16-rounded) weights."""
    torch.manual_seed(seed)
    model = fixture.model_class(fixture.config)
    model.eval()
    randomize(model, fixture, 100 + seed)
    directory = OUT / fixture.name
    if directory.exists():
        shutil.rmtree(directory)
    kwargs = {"safe_serialization": True}
    if fixture.max_shard_size:
        kwargs["max_shard_size"] = fixture.max_shard_size
    model.to(fixture.dtype).save_pretrained(directory, **kwargs)
    (directory / "generation_config.json").unlink(missing_ok=True)  # nothing reads it
    shutil.copy(TOKENIZER, directory / "tokenizer.model")
    check_tokenizer(directory / "tokenizer.model")
    check_saved_files(directory, fixture, model)
    # Loading the directory (rather than casting the in-memory model back to f32) matters: a
    # bf16 round trip in memory also rounds the RoPE inverse-frequency buffer.
    loaded = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32,
                                                  attn_implementation="eager")
    loaded.eval()
    with torch.no_grad():
        for (name, mine), (_, theirs) in zip(model.named_parameters(), loaded.named_parameters()):
            assert torch.equal(mine.float(), theirs), f"{name} changed on the way through disk"
    return directory, loaded


def main():
    check_versions()
    OUT.mkdir(parents=True, exist_ok=True)
    failures = []
    for seed, fixture in enumerate(fixtures()):
        directory, model = build(fixture, seed)
        seqs = sequences(200 + seed)
        record = {"model": fixture.name, "transformers": transformers.__version__,
                  "torch": torch.__version__, "sequences": seqs, "max_abs_logit": [],
                  "layer_types": getattr(model.config, "layer_types", None)}
        with torch.no_grad():
            for i, tokens in enumerate(seqs):
                logits = model(torch.tensor([tokens]), use_cache=False).logits[0].numpy()
                np.save(directory / f"logits_{i}.npy", logits.astype(np.float32))
                record["max_abs_logit"].append(float(np.abs(logits).max()))

            prompt = seqs[0][:GREEDY_PROMPT]
            # eos_token_id=None: always 16 new tokens, even if <eos> comes out on the way.
            generated = model.generate(torch.tensor([prompt]), do_sample=False,
                                       max_new_tokens=GREEDY_NEW, eos_token_id=None,
                                       pad_token_id=PAD)
            record["greedy_prompt"] = prompt
            record["greedy_continuation"] = generated[0, len(prompt):].tolist()
            assert len(record["greedy_continuation"]) == GREEDY_NEW

            diff, cache_class = incremental_vs_full(model, seqs[0])
            record["hf_incremental_vs_full_max_abs"] = diff
            record["hf_cache_class"] = cache_class
            if diff > INCREMENTAL_TOLERANCE:
                failures.append(f"{fixture.name}: transformers' cached decode differs from its "
                                f"full forward by {diff:.3g} (> {INCREMENTAL_TOLERANCE})")
            if fixture.name == "gemma2":
                record.update(gemma2_cap_fractions(model, seqs[0]))

        record["notes"] = [
            "logits: full forward (use_cache=False), eager attention, f32 weights loaded from "
            "this directory",
            f"init: embedding N(0, {EMBEDDING_STD}); RMSNorm w N(0, {NORM_STD}) (applied as 1 + w)"
            f", final norm w mean {fixture.final_norm_mean}; linear N(0, 1/in), o_proj and "
            f"down_proj N(0, ({RESIDUAL_WRITER_GAIN})^2/in)",
            "sliding window 8: a query at position i sees keys i-7..i (transformers' "
            "kv_idx > q_idx - sliding_window)",
            "greedy: generate(do_sample=False, max_new_tokens=16, eos_token_id=None), KV cache on",
        ]
        (directory / "reference.json").write_text(json.dumps(record, indent=1) + "\n")
        files = {p.name: p.stat().st_size for p in sorted(directory.iterdir())}
        print(f"{fixture.name}: max|logit| {[round(x, 3) for x in record['max_abs_logit']]}, "
              f"HF incremental vs full {diff:.3g} ({cache_class}), "
              f"greedy {record['greedy_continuation']}")
        if fixture.name == "gemma2":
            print(f"  attention scores beyond cap/2: {record['attn_scores_beyond_half_cap']:.3f} "
                  f"(raw max {record['attn_score_max_abs_raw']:.2f}, cap "
                  f"{model.config.attn_logit_softcapping}); final logits beyond cap/2: "
                  f"{record['final_logits_beyond_half_cap']:.3f} (raw max "
                  f"{record['final_logit_max_abs_raw']:.2f}, cap "
                  f"{model.config.final_logit_softcapping})")
        print(f"  layer_types {record['layer_types']}")
        print(f"  files {files}, total {sum(files.values())} bytes")
    if failures:
        raise SystemExit("\n".join(failures))


if __name__ == "__main__":
    main()
