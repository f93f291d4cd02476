#!/usr/bin/env python3
"""Golden fixtures for RecurrentGemma (Griffin) from google-deepmind/recurrentgemma's PyTorch code.

Pinned (tools/golden/requirements-recurrentgemma.txt; the script refuses other versions):
recurrentgemma 1.0.1, torch 2.9.1, transformers 4.57.1, numpy 2.3.5, safetensors 0.8.0,
sentencepiece 0.2.3, einops 0.8.2, jaxtyping 0.3.11, typeguard 2.13.3, absl-py 1.4.0.

The reference is DeepMind's `recurrentgemma.torch` (`Griffin`, `GriffinConfig`, `Sampler`), not
Hugging Face's port (MODEL_SPEC §4.7 lists where they differ). The script builds a tiny random
Griffin in float32 on CPU and writes tests/fixtures/models/recurrentgemma/:

- hf/                 a Hugging Face RecurrentGemma directory (config.json with model_type
                      "recurrent_gemma", model.safetensors with HF names, f32, tied embedding and
                      no lm_head; tokenizer.model = tests/fixtures/tokenizer/tiny_gemma.model);
                      loaded back with transformers' RecurrentGemmaForCausalLM and checked
                      against DM's logits where the two agree (a single document of <= W+1
                      tokens: HF's no-cache forward applies no attention window);
- dm.safetensors      the same parameters under `Griffin.state_dict()` names and shapes, stored
                      as bf16 (every parameter is drawn and then rounded to a bf16 value, so the
                      f32 and bf16 files hold the same numbers), the GriffinConfig in the
                      safetensors metadata;
- prefill_0.npy       f32 logits [24, 512], full forward of a 24-token document (window 8);
- prefill_1.npy       f32 logits [30, 512], full forward of 30 tokens holding two documents
                      (segment_pos restarts at 0 at index 13, where a second <bos> is);
- decode_0.npy        f32 logits [24, 512] of prefill_0's sequence through the package's decode
                      cache: a prefill of the first token (cache=None, return_cache=True), then
                      one token per call with the cache (the attention ring of 8 wraps twice);
- reference.json      sequences, segment positions, config (DM and HF), max |logit|, greedy
                      continuation (the package's Sampler, greedy), every measured difference,
                      versions, and the semantics notes, each with the package line it rests on
                      (the script checks that each cited line still says what it is cited for).

Run from the repository root (not in CI; see tools/golden/README.md); CPU only, ~5 s:
    python3 -m venv /tmp/rgvenv
    /tmp/rgvenv/bin/pip install -r tools/golden/requirements-recurrentgemma.txt
    /tmp/rgvenv/bin/python tools/golden/make_recurrentgemma_fixtures.py

Deterministic: fixed seeds, one CPU thread; a rerun with the pinned versions rewrites the same
bytes.

Shape (all from constants below): vocab 512, width 48, 6 layers (recurrent, recurrent,
attention) x 2, 3 heads of head_dim 16 (width = heads * head_dim, as DM requires), 1 KV head,
lru_width 72 (!= width; RG-LRU block width 24 != head_dim), MLP 144 = 3 * width per branch,
conv1d width 4, attention window 8, final soft-cap 30. Width 48 rather than 64: sqrt(64) = 8 is a
bf16 value already, so a width of 64 could not tell the bf16-rounded embedding scale (6.9375 for
48, not 6.928203) from the exact one; the smaller width also keeps the fixture near 1.5 MB.

Semantics confirmed in the package code (each is also in reference.json with its source line):
- RMSNorm: x * rsqrt(mean(x^2) + 1e-6) * (1 + scale), in the input dtype (no f32 upcast).
- Embedding: E[id] * bf16(sqrt(width)) (f32 tensor times a 0-d bf16 tensor stays f32). Tied
  output: logits = final_norm(h) @ E^T, then 30 * tanh(logits / 30).
- Residual block: h += temporal(temporal_pre_norm(h)); h += mlp(channel_pre_norm(h)).
- RoPE: positions = segment_pos (restart at 0 at a document start); only the first half of each
  head (8 of 16 dims) rotates, within it pairs (j, j + 4); inv_freq[i] = 10000^(-2i/8), i < 4;
  angles in f32; on q (all heads) and k, never v.
- Attention: q = Wq x, k = Wk x, v = Wv x (no biases, one KV head); scores (q.k) * head_dim^-0.5,
  no soft-cap; masked with -2.3819763e38, softmax in f32; output Wfinal with bias. Key k is
  visible to query q iff same segment, k <= q and q - k <= W (W + 1 = 9 keys including self);
  mask positions are absolute indices 0..T-1, segments are cumsum(segment_pos == 0).
- Decode cache: attention keeps W = 8 keys/values (slot = position % W) and num_tokens; a step
  attends to the 8 cached keys plus the current one (9). Recurrent layers keep the last 3
  pre-conv inputs (linear_x outputs, zero-padded on the left) and the RG-LRU state in f32.
- Conv1D: w [4, lru], c_t = b + sum_{s=0..3} w[3 - s] * u_{t-s} (w[3] multiplies the current
  token; HF conv_1d.weight[c, 0, k] = w[k, c]); zeros before the start. In a full forward
  (cache=None) it does not read across a document start; in a decode step it has no mask.
- RG-LRU: gate_x = sigmoid(BD_in(c)), gate_a = sigmoid(BD_a(c)) with c the conv output and
  BD(c)[h, j] = sum_i c[h, i] W[h, i, j] + b[h, j] (W[h] is [in, out], blocks of lru / heads);
  log_a = -8 * gate_a * softplus(a_param); a = exp(log_a); mult = sqrt(1 - exp(2 * log_a));
  x~ = c * gate_x * mult; h_t = a_t * h_{t-1} + x~_t accumulated in f32; where segment_pos == 0:
  a = 0 and mult = 1. Output linear_out(h * gelu_tanh(linear_y(x))), all linears with biases.
- MLP: ffw_up.w [2, d, D]: gelu_tanh(x @ w[0] + b[0]) * (x @ w[1] + b[1]), then ffw_down with
  bias; branch 0 is HF's gate_proj.
"""
import importlib.util
import json
import math
import shutil
import sys
import types
from importlib.metadata import version
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import sentencepiece
import torch


PINNED = {"recurrentgemma": "1.0.1", "torch": "2.9.1", "transformers": "4.57.1",
          "numpy": "2.3.5", "safetensors": "0.8.0", "sentencepiece": "0.2.3", "einops": "0.8.2",
          "jaxtyping": "0.3.11", "typeguard": "2.13.3", "absl-py": "1.4.0"}


def check_versions():
    have = {name: version(name) for name in PINNED}
    have["torch"] = have["torch"].split("+")[0]
    if have != PINNED:
        raise SystemExit(f"pinned versions {PINNED}, found {have}: install "
                         "tools/golden/requirements-recurrentgemma.txt")


def import_recurrentgemma_torch():
    """recurrentgemma/__init__.py imports the jax modules (jax and flax, not installed). Register
    the package without running its __init__, then import the torch subpackage normally."""
    spec = importlib.util.find_spec("recurrentgemma")
    if spec is None:
        raise SystemExit("recurrentgemma is not installed: see tools/golden/"
                         "requirements-recurrentgemma.txt")
    package = types.ModuleType("recurrentgemma")
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    sys.modules["recurrentgemma"] = package
    import recurrentgemma.torch as rgt  # noqa: E402  pylint: disable=import-outside-toplevel
    return rgt, Path(spec.submodule_search_locations[0])


check_versions()  # before importing the packages it pins
rgt, PACKAGE_DIR = import_recurrentgemma_torch()
from recurrentgemma.torch import layers as rg_layers  # noqa: E402
from recurrentgemma.torch import modules as rg_modules  # noqa: E402
from transformers import RecurrentGemmaConfig, RecurrentGemmaForCausalLM  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "models" / "recurrentgemma"
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer" / "tiny_gemma.model"

VOCAB = 512
PAD, EOS, BOS = 0, 1, 2
FIRST_ORDINARY_ID = 7  # 0-6 are <pad> <eos> <bos> <unk> <mask> <start_of_turn> <end_of_turn>
WIDTH = 48
HEADS = 3
HEAD_DIM = WIDTH // HEADS  # DM derives it: LocalAttentionBlock.head_dim = width // num_heads
LRU_WIDTH = 72
MLP_WIDTH = 3 * WIDTH  # per branch
BLOCKS = ("recurrent", "recurrent", "attention") * 2
WINDOW = 8
CONV_WIDTH = 4  # DM's default (ResidualBlock conv1d_temporal_width); not in GriffinConfig
SOFT_CAP = 30.0
RMS_EPS = 1e-6  # DM's RMSNorm default; not in GriffinConfig

SEQ0_LENGTH = 24
SEQ1_LENGTHS = (13, 17)  # two documents; the second starts with <bos> at index 13
GREEDY_PROMPT = 10
GREEDY_NEW = 16
DECODE_PREFILL = 1  # decode_0.npy: tokens given to the cache-less prefill before 1-token steps
EXTRA_DECODE_PREFILLS = (2, 3, 7, 8, 9, 12)  # also measured, not saved
TOLERANCE = 5e-5  # absolute, f32 (logits up to ~17): what must agree (decode, HF, reloads)
SENSITIVITY_MIN = 1e-3  # each deliberate mistake must move some logit by more than this

# Initialisation (every parameter random, drawn from one generator, then rounded to bf16).
SEED = 1234
EMBEDDING_STD = 0.2
NORM_STD = 0.3  # RMSNorm scale, applied as 1 + scale
FINAL_NORM_MEAN = 2.0  # final RMSNorm scale mean: a gain of ~3 puts the raw logits near 19
BIAS_STD = 0.1
GATE_BIAS_STD = 0.5  # RG-LRU input and a gates
CONV_STD = 0.5  # = 1 / sqrt(fan_in 4)
RESIDUAL_WRITER_GAIN = 6.0  # linear_out, proj_final, ffw_down: varied greedy continuations
A_MIN_RAD, A_MAX_RAD = 0.84, 0.9997  # DM uses 0.9, 0.999: a = r^(8 gate_a), r in [min, max]


def cite(path, line, expect):
    """'recurrentgemma/<path>:<line>: <text>' after checking that the line contains `expect`."""
    text = (PACKAGE_DIR / path).read_text().splitlines()[line - 1].strip()
    if expect not in text:
        raise SystemExit(f"recurrentgemma/{path}:{line} reads {text!r}; expected {expect!r}")
    return f"recurrentgemma/{path}:{line}: {text}"


# ------------------------------------------------------------------------------------------------
# Model


def griffin_config():
    kinds = {"recurrent": rgt.TemporalBlockType.RECURRENT,
             "attention": rgt.TemporalBlockType.ATTENTION}
    return rgt.GriffinConfig(vocab_size=VOCAB, width=WIDTH, mlp_expanded_width=MLP_WIDTH,
                             num_heads=HEADS, block_types=tuple(kinds[b] for b in BLOCKS),
                             embeddings_scale_by_sqrt_dim=True, attention_window_size=WINDOW,
                             logits_soft_cap=SOFT_CAP, lru_width=LRU_WIDTH)


def embed_scale():
    """What Embedder.encode multiplies by: sqrt(width) rounded to bf16."""
    return float(torch.tensor(math.sqrt(WIDTH)).to(torch.bfloat16))


def config_record(cfg):
    return {"vocab_size": cfg.vocab_size, "width": cfg.width,
            "mlp_expanded_width": cfg.mlp_expanded_width, "num_heads": cfg.num_heads,
            "head_dim": HEAD_DIM, "num_kv_heads": 1, "lru_width": cfg.lru_width,
            "block_types": [b.name.lower() for b in cfg.block_types],
            "embeddings_scale_by_sqrt_dim": cfg.embeddings_scale_by_sqrt_dim,
            "attention_window_size": cfg.attention_window_size,
            "logits_soft_cap": cfg.logits_soft_cap, "conv1d_temporal_width": CONV_WIDTH,
            "rms_norm_eps": RMS_EPS, "rope_base": 10000, "rope_fraction": 0.5}


def a_param_values(n, g):
    """The package's rnn_param_init formula (layers.py) with a wider ring: r^2 ~ U(min^2, max^2),
    a_param = log(1/r - 1) so that softplus(a_param) = -log r and a = r^(8 * gate_a)."""
    r2 = torch.empty(n).uniform_(A_MIN_RAD ** 2 + 1e-8, A_MAX_RAD ** 2 + 1e-8, generator=g)
    return (-0.5 * r2.log()).exp().sub(1.0).log()


def randomize(model):
    g = torch.Generator().manual_seed(SEED)

    def normal(shape, std):
        return std * torch.randn(shape, generator=g)

    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            if name == "embedder.input_embedding":
                v = normal(p.shape, EMBEDDING_STD)
            elif leaf == "scale":  # RMSNorm
                v = normal(p.shape, NORM_STD) + (FINAL_NORM_MEAN if name == "final_norm.scale"
                                                 else 0.0)
            elif leaf == "a_param":
                v = a_param_values(p.shape[0], g)
            elif name.endswith(("input_gate.w", "a_gate.w")):  # [H, in, out]
                v = normal(p.shape, p.shape[1] ** -0.5)
            elif name.endswith(("input_gate.b", "a_gate.b")):
                v = normal(p.shape, GATE_BIAS_STD)
            elif name.endswith("conv_1d.w"):
                v = normal(p.shape, CONV_STD)
            elif name.endswith("ffw_up.w"):  # [2, d, D]
                v = normal(p.shape, p.shape[1] ** -0.5)
            elif leaf in ("b", "bias"):
                v = normal(p.shape, BIAS_STD)
            elif leaf == "weight":  # nn.Linear [out, in]
                gain = RESIDUAL_WRITER_GAIN if name.endswith(
                    ("linear_out.weight", "proj_final.weight", "ffw_down.weight")) else 1.0
                v = normal(p.shape, gain * p.shape[1] ** -0.5)
            else:
                raise SystemExit(f"no initialisation rule for {name} {tuple(p.shape)}")
            p.copy_(v.to(torch.bfloat16).float())  # bf16 values: the f32 and bf16 files agree


def build_model():
    torch.manual_seed(SEED)  # the constructor's own init; every value is overwritten below
    model = rgt.Griffin(griffin_config(), gradient_checkpointing=False, dtype=torch.float32)
    model.eval()
    randomize(model)
    return model


def forward(model, tokens, positions):
    logits, _ = model(torch.tensor([tokens]), torch.tensor([positions]), cache=None,
                      return_logits=True, return_cache=False)
    return logits[0]


def cached_decode(model, tokens, positions, prefill):
    """Prefill tokens[:prefill] without a cache (return_cache=True), then one token per call."""
    t, p = torch.tensor([tokens]), torch.tensor([positions])
    logits, cache = model(t[:, :prefill], p[:, :prefill], cache=None, return_logits=True,
                          return_cache=True)
    rows = list(logits[0])
    for i in range(prefill, len(tokens)):
        logits, cache = model(t[:, i:i + 1], p[:, i:i + 1], cache=cache, return_logits=True,
                              return_cache=True)
        rows.append(logits[0, 0])
    return torch.stack(rows), cache


def max_abs(a, b):
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


# ------------------------------------------------------------------------------------------------
# Hugging Face form


def hf_config():
    return RecurrentGemmaConfig(
        num_hidden_layers=len(BLOCKS), vocab_size=VOCAB, hidden_size=WIDTH,
        intermediate_size=2 * MLP_WIDTH,  # HF's MLP uses intermediate_size // 2 per branch
        num_attention_heads=HEADS, num_key_value_heads=1, lru_width=LRU_WIDTH,
        attention_window_size=WINDOW, conv1d_width=CONV_WIDTH, logits_soft_cap=SOFT_CAP,
        rms_norm_eps=RMS_EPS, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS,
        hidden_activation="gelu_pytorch_tanh", partial_rotary_factor=0.5, rope_theta=10000.0,
        block_types=list(BLOCKS[:3]), attention_bias=False, tie_word_embeddings=True,
        architectures=["RecurrentGemmaForCausalLM"])


def dm_to_hf(sd):
    """MODEL_SPEC §4.8 (transformers' convert_recurrent_gemma_to_hf.py): DM torch names -> HF."""
    out = {}
    for name, t in sd.items():
        if name == "embedder.input_embedding":
            out["model.embed_tokens.weight"] = t
            continue
        if name == "final_norm.scale":
            out["model.final_norm.weight"] = t
            continue
        parts = name.split(".")
        assert parts[0] == "blocks", name
        prefix = f"model.layers.{parts[1]}."
        rest = ".".join(parts[2:])
        if rest in ("temporal_pre_norm.scale", "channel_pre_norm.scale"):
            out[prefix + rest.replace(".scale", ".weight")] = t
        elif rest.startswith("recurrent_block."):
            sub = rest[len("recurrent_block."):]
            hf = {"conv_1d.b": "conv_1d.bias", "rg_lru.a_param": "rg_lru.recurrent_param",
                  "rg_lru.input_gate.w": "rg_lru.input_gate_weight",
                  "rg_lru.input_gate.b": "rg_lru.input_gate_bias",
                  "rg_lru.a_gate.w": "rg_lru.recurrent_gate_weight",
                  "rg_lru.a_gate.b": "rg_lru.recurrent_gate_bias"}.get(sub, sub)
            if sub == "conv_1d.w":  # [4, lru] -> [lru, 1, 4], same tap order
                out[prefix + "temporal_block.conv_1d.weight"] = t.t().unsqueeze(1).contiguous()
            else:
                out[prefix + "temporal_block." + hf] = t
        elif rest.startswith("attention_block."):
            sub = rest[len("attention_block."):]
            hf = {"proj_q.weight": "q_proj.weight", "proj_k.weight": "k_proj.weight",
                  "proj_v.weight": "v_proj.weight", "proj_final.weight": "o_proj.weight",
                  "proj_final.bias": "o_proj.bias"}[sub]
            out[prefix + "temporal_block." + hf] = t
        elif rest == "mlp_block.ffw_up.w":  # [2, d, D] -> gate/up [D, d]
            out[prefix + "mlp_block.gate_proj.weight"] = t[0].t().contiguous()
            out[prefix + "mlp_block.up_proj.weight"] = t[1].t().contiguous()
        elif rest == "mlp_block.ffw_up.b":  # [2, 1, 1, D]
            out[prefix + "mlp_block.gate_proj.bias"] = t[0, 0, 0].contiguous()
            out[prefix + "mlp_block.up_proj.bias"] = t[1, 0, 0].contiguous()
        elif rest.startswith("mlp_block.ffw_down."):
            out[prefix + rest.replace("ffw_down", "down_proj")] = t
        else:
            raise SystemExit(f"no Hugging Face name for {name}")
    return out


def write_hf(model, directory):
    hf_sd = dm_to_hf({k: v.detach().clone() for k, v in model.state_dict().items()})
    hf = RecurrentGemmaForCausalLM(hf_config())
    hf_sd["lm_head.weight"] = hf_sd["model.embed_tokens.weight"]  # tied: dropped on save
    hf.load_state_dict(hf_sd, strict=True)
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr(), "not tied"
    hf.save_pretrained(directory, safe_serialization=True)
    (directory / "generation_config.json").unlink(missing_ok=True)  # nothing reads it
    shutil.copy(TOKENIZER, directory / "tokenizer.model")
    files = sorted(p.name for p in directory.glob("*.safetensors"))
    assert files == ["model.safetensors"], files
    with safetensors.safe_open(str(directory / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        for k in names:
            assert f.get_tensor(k).dtype == torch.float32, k
    assert names == set(hf_sd) - {"lm_head.weight"}, names ^ set(hf_sd)
    loaded, info = RecurrentGemmaForCausalLM.from_pretrained(
        directory, dtype=torch.float32, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    loaded.eval()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, hf_sd[k]), f"{k} changed on the way through disk"
    return loaded


def write_dm(model, path):
    sd = model.state_dict()
    record = config_record(model.config)
    # One metadata key only: safetensors writes the metadata map in hash order.
    safetensors.torch.save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()},
                                str(path), metadata={"griffin_config": json.dumps(record)})
    loaded = safetensors.torch.load_file(str(path))
    assert list(sd) == [k for k in sd if k in loaded] and set(loaded) == set(sd)
    for k, v in sd.items():
        assert loaded[k].shape == v.shape and torch.equal(loaded[k].float(), v), k
    fresh = rgt.Griffin(griffin_config(), gradient_checkpointing=False, dtype=torch.float32)
    fresh.load_state_dict({k: v.float() for k, v in loaded.items()}, strict=True)
    fresh.eval()
    # What the package infers from the parameters alone.
    inferred = rgt.GriffinConfig.from_torch_params(
        {k: v for k, v in loaded.items()}, embeddings_scale_by_sqrt_dim=True,
        attention_window_size=WINDOW, logits_soft_cap=SOFT_CAP)
    return fresh, {k: list(v.shape) for k, v in sd.items()}, inferred


# ------------------------------------------------------------------------------------------------
# Measurements


def rglru_statistics(model, tokens, positions):
    """Spread of the decay a = exp(-8 sigmoid(a_gate(c)) softplus(a_param)) actually used."""
    seen = []

    def hook(module, args, kwargs):
        c = kwargs["x"]
        gate_a = torch.sigmoid(module.a_gate(c))
        seen.append(torch.exp(-8.0 * gate_a * torch.nn.functional.softplus(module.a_param)))

    handles = [b.recurrent_block.rg_lru.register_forward_pre_hook(hook, with_kwargs=True)
               for b in model.blocks if hasattr(b, "recurrent_block")]
    try:
        forward(model, tokens, positions)
    finally:
        for h in handles:
            h.remove()
    a = torch.cat([s.flatten() for s in seen])
    q = torch.quantile(a, torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0]))
    return {"min": float(q[0]), "p05": float(q[1]), "median": float(q[2]), "p95": float(q[3]),
            "max": float(q[4]), "fraction_below_0.9": float((a < 0.9).float().mean())}


def raw_logits(model, tokens, positions):
    """Logits before the soft-cap (final_norm output @ E^T)."""
    seen = []
    handle = model.final_norm.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        forward(model, tokens, positions)
    finally:
        handle.remove()
    return seen[0][0] @ model.embedder.input_embedding.T


def sensitivities(model, seq0, pos0, seq1, pos1, logits0, logits1):
    """How far each plausible implementation mistake moves the logits (each must be visible)."""
    out = {}

    # 1. Embedding scale sqrt(width) in f32 instead of bf16-rounded.
    original = rg_modules.Embedder.encode
    rg_modules.Embedder.encode = lambda self, x: self.input_embedding[(x,)] * math.sqrt(WIDTH)
    try:
        out["embed_scale_unrounded_sqrt"] = max_abs(forward(model, seq0, pos0), logits0)
    finally:
        rg_modules.Embedder.encode = original

    # 2. Window q - k < W (Gemma 2/3, HF) instead of DM's q - k <= W.
    blocks = [b.attention_block for b in model.blocks if hasattr(b, "attention_block")]
    for b in blocks:
        b.window_size = WINDOW - 1
    try:
        out["window_q_minus_k_lt_W"] = max_abs(forward(model, seq0, pos0), logits0)
    finally:
        for b in blocks:
            b.window_size = WINDOW

    # 3. Conv1D reading across the document start in the full forward (HF has no such mask).
    original_mask = rg_layers.Conv1D._compute_document_mask
    rg_layers.Conv1D._compute_document_mask = (
        lambda self, *, segment_pos, start_idx, end_idx, max_look_ahead:
        torch.ones((segment_pos.shape[0], end_idx - start_idx)))
    try:
        out["conv_reads_across_document_start"] = max_abs(forward(model, seq1, pos1), logits1)
    finally:
        rg_layers.Conv1D._compute_document_mask = original_mask

    # 4. Attention across the document start (one segment for the whole sequence).
    original_mask_fn = rg_modules._compute_forward_pass_mask  # pylint: disable=protected-access
    rg_modules._compute_forward_pass_mask = lambda segment_pos, window_size: original_mask_fn(
        torch.arange(segment_pos.shape[-1])[None].expand_as(segment_pos), window_size)
    try:
        out["attention_across_document_start"] = max_abs(forward(model, seq1, pos1), logits1)
    finally:
        rg_modules._compute_forward_pass_mask = original_mask_fn

    # 5. RG-LRU state carried across the document start (a not zeroed; multiplier still 1).
    original_scan = rg_layers.rnn_scan
    rg_layers.rnn_scan = lambda x, a, reset, h0, acc_dtype=torch.float32: original_scan(
        x, a, torch.zeros_like(reset), h0, acc_dtype)
    try:
        out["rglru_state_carried_across_reset"] = max_abs(forward(model, seq1, pos1), logits1)
    finally:
        rg_layers.rnn_scan = original_scan

    # 6. RoPE on absolute positions instead of segment_pos: NOT visible (recorded, not required):
    # attention never crosses a segment, and within one the two differ by a constant offset,
    # which RoPE's relative scores cancel up to rounding.
    original_rope = rg_modules._apply_rope  # pylint: disable=protected-access
    absolute = torch.arange(len(seq1))[None]
    rg_modules._apply_rope = lambda inputs, positions, max_wavelength=10_000: original_rope(
        inputs, absolute.expand_as(positions), max_wavelength)
    try:
        rope = max_abs(forward(model, seq1, pos1), logits1)
    finally:
        rg_modules._apply_rope = original_rope

    # 7. Final soft-cap left out.
    out["no_final_soft_cap"] = max_abs(raw_logits(model, seq0, pos0), logits0)
    return out, rope


def greedy_with_sampler(model, prompt):
    """The package's Sampler, greedy, fed token ids (its __call__ takes strings)."""
    vocab = sentencepiece.SentencePieceProcessor(model_file=str(TOKENIZER))
    sampler = rgt.Sampler(model=model, vocab=vocab, greedy_sampling=True)
    tokens = torch.tensor([prompt], dtype=torch.int32)
    lengths = torch.tensor([len(prompt)], dtype=torch.int32)
    state = sampler._prompt_processing_fn(  # pylint: disable=protected-access
        tokens, lengths, GREEDY_NEW, return_logits=True, echo=False)
    state = sampler._sample_fn(  # pylint: disable=protected-access
        state, end_sampling_at_eos_token=False)
    return state.tokens_buffer[0].tolist(), state.logits_buffer[0]


def greedy_by_full_forward(model, prompt):
    tokens, margins = list(prompt), []
    for _ in range(GREEDY_NEW):
        last = forward(model, tokens, list(range(len(tokens))))[-1]
        top = torch.topk(last, 2).values
        margins.append(float(top[0] - top[1]))
        tokens.append(int(last.argmax()))
    return tokens[len(prompt):], margins


# ------------------------------------------------------------------------------------------------
# Notes: what the package does, each with the lines it was read from.


def semantics_notes(window):
    m, g, lay = "torch/modules.py", "torch/griffin.py", "torch/layers.py"
    return [
        {"statement": "RMSNorm: y = x * rsqrt(mean(x^2, last axis) + 1e-6) * (1 + scale), "
                      "computed in the input dtype (no float32 upcast; f32 throughout here).",
         "source": [cite(lay, 36, "eps: float = 1e-6"), cite(lay, 68, "torch.mean(torch.square(x)"),
                    cite(lay, 69, "torch.rsqrt(var + self.eps)"), cite(lay, 73, "(scale + 1)")]},
        {"statement": f"Embedding: h0 = E[id] * bf16(sqrt(width)) = {embed_scale()} for width "
                      f"{WIDTH} "
                      f"(sqrt = {math.sqrt(WIDTH):.6f}); an f32 tensor times a 0-d bf16 tensor "
                      "stays f32, so only the scale is rounded.",
         "source": [cite(m, 994, "self.input_embedding[(x,)]"),
                    cite(m, 997, "type(torch.bfloat16)")]},
        {"statement": "Residual block: h = h + temporal(temporal_pre_norm(h)); "
                      "h = h + mlp(channel_pre_norm(h)). No post-norms.",
         "source": [cite(m, 899, "self.temporal_pre_norm(raw_x)"), cite(m, 904, "x + raw_x"),
                    cite(m, 906, "self.channel_pre_norm(residual)"), cite(m, 909, "x + residual")]},
        {"statement": "Output: logits = final_norm(h) @ E^T (tied), then "
                      f"logits = tanh(logits / {SOFT_CAP}) * {SOFT_CAP}.",
         "source": [cite(g, 180, "self.final_norm(x)"),
                    cite(m, 1003, "x @ self.input_embedding.T"),
                    cite(g, 185, "nn.functional.tanh(logits / c) * c")]},
        {"statement": "RoPE positions are segment_pos (restart at 0 at each document start), "
                      "applied to q (every head) and k (the one KV head), never v.",
         "source": [cite(m, 433, "_apply_rope(queries, segment_pos)"),
                    cite(m, 434, "_apply_rope(keys, segment_pos)")]},
        {"statement": f"RoPE rotates only the first half of each head ({HEAD_DIM // 2} of "
                      f"{HEAD_DIM} dims); within it element j pairs with j + {HEAD_DIM // 4}: "
                      "out_j = x_j cos - x_{j+r/2} sin, out_{j+r/2} = x_{j+r/2} cos + x_j sin "
                      f"(r = {HEAD_DIM // 2}); inv_freq[i] = 1 / 10000^(2i / r), i < r/2; the "
                      "angle segment_pos * inv_freq is f32; the second half passes through.",
         "source": [cite(m, 69, "torch.chunk(inputs, 2, dim=-1)"),
                    cite(m, 72, "torch.arange(x_rope.shape[-1] // 2"),
                    cite(m, 73, "2 * freq / x_rope.shape[-1]"),
                    cite(m, 74, "max_wavelength**freq_exponents"),
                    cite(m, 81, "torch.chunk(x_rope, 2, dim=-1)"),
                    cite(m, 82, "first_half * cos - second_half * sin"),
                    cite(m, 83, "second_half * cos + first_half * sin"),
                    cite(m, 85, "[first_part, second_part, x]")]},
        {"statement": "Attention: q = proj_q(x) [heads*head_dim], k = proj_k(x) and v = "
                      "proj_v(x) [head_dim] (MQA), no q/k/v biases; scores = (q.k) * "
                      "head_dim^-0.5 (scaled after the dot product); no attention soft-cap; "
                      "masked scores = -2.3819763e38; softmax in f32; output proj_final (with "
                      "bias).",
         "source": [cite(m, 325, "self.proj_q = nn.Linear("), cite(m, 328, "bias=False"),
                    cite(m, 332, "self.proj_k = nn.Linear("), cite(m, 335, "bias=False"),
                    cite(m, 339, "self.proj_v = nn.Linear("), cite(m, 342, "bias=False"),
                    cite(m, 346, "self.proj_final = nn.Linear("), cite(m, 349, "bias=True"),
                    cite(m, 462, "logits * (self.head_dim**-0.5)"),
                    cite(m, 28, "-2.3819763e38"),
                    cite(m, 466, "torch.where(attn_mask, logits, _MIN_LOGITS_VALUE)"),
                    cite(m, 469, "nn.functional.softmax(masked_logits, dim=-1)"),
                    cite(m, 474, "self.proj_final(encoded)")]},
        {"statement": f"Attention mask (full forward): key k is visible to query q iff both are "
                      f"in the same segment (segment id = cumsum(segment_pos == 0)), k <= q, and "
                      f"q <= k + W, i.e. q - k <= W: W + 1 = {window + 1} keys including the "
                      "query itself (not W as in Gemma 2/3). q and k here are absolute indices "
                      "0..T-1 (arange), not segment_pos.",
         "source": [cite(m, 111, "q_segment_ids[..., None] == k_segment_ids[..., None, :]"),
                    cite(m, 116, "q_positions[..., None] >= k_positions[..., None, :]"),
                    cite(m, 119, "window_cond = q_positions[..., None] <= ("),
                    cite(m, 120, "k_positions[..., None, :] + window_size"),
                    cite(m, 143, "torch.cumsum(segment_pos == 0, dim=-1)"),
                    cite(m, 144, "torch.arange(segment_pos.shape[-1]")]},
        {"statement": f"Attention decode cache: keys and values [B, W={window}, 1, head_dim] "
                      "(a ring: position p in slot p % W) and num_tokens [B]. A one-token step "
                      "concatenates the W cached keys with the current key (W + 1 keys), "
                      "rebuilds each slot's absolute position from num_tokens, masks slots "
                      "never written (negative positions, k_pos >= 0) and applies the same "
                      "q - k <= W rule (no segment ids); then it writes the current key into "
                      "slot num_tokens % W. A prefill (cache=None) keeps the last min(W, T) "
                      "keys rolled so that slot = position % W, with num_tokens = "
                      "segment_pos[-1] + 1 (so after a prompt that ends inside a second "
                      "document only that document's keys are visible). Chunks of 2..W-1 "
                      "tokens with a cache raise NotImplementedError.",
         "source": [cite(m, 439, "torch.concatenate([cache.keys, no_cache_keys], dim=-3)"),
                    cite(m, 173, "torch.arange(seq_len, device=device) + cache_num_tokens"),
                    cite(m, 179, "k_positions_now < cache_num_tokens"),
                    cite(m, 113, "(k_positions >= 0)[..., None, :]"),
                    cite(m, 211, "cache.num_tokens % window_size"),
                    cite(m, 275, "num_tokens = segment_pos[:, -1] + 1"),
                    cite(m, 279, "_roll_tensor(keys[:, -w:], shifts, dim=1)"),
                    cite(m, 223, "raise NotImplementedError()")]},
        {"statement": "Recurrent block: y = gelu_tanh(linear_y(x)); u = linear_x(x); "
                      "c = conv1d(u); h = rg_lru(c); out = linear_out(h * y). linear_x, linear_y "
                      "([lru, width]) and linear_out ([width, lru]) all have biases. gelu is "
                      "the tanh approximation.",
         "source": [cite(m, 627, "y = self.linear_y(x)"), cite(m, 628, "y = gelu(y)"),
                    cite(m, 631, "x = self.linear_x(x)"), cite(m, 646, "x = x * y"),
                    cite(m, 647, "x = self.linear_out(x)"),
                    cite(m, 291, 'approximate="tanh"')]},
        {"statement": "Conv1D: w [4, lru], b [lru]; c_t = b + sum_{s=0..3} w[3 - s] * u_{t-s}: "
                      "w[3] multiplies the current token, w[0] the token 3 back; u before the "
                      "start of the sequence is 0. HF conv_1d.weight [lru, 1, 4] has "
                      "weight[ch, 0, k] = w[k, ch] (same tap order).",
         "source": [cite(lay, 410, "[self.temporal_width, self.width]"),
                    cite(lay, 514, "self.w[self.temporal_width - temporal_shift - 1]"),
                    cite(lay, 517, "convolution_output += x_window * w"),
                    cite(lay, 520, "convolution_output += self.b[None, None]"),
                    cite(lay, 622, "torch.concatenate([padding, window], dim=1)")]},
        {"statement": "Conv1D document mask: in a full forward (cache=None) u_{t-s} contributes "
                      "to c_t only if no position in (t-s, t] has segment_pos == 0, so the conv "
                      "never reads across a document start. In a decode step (cache given) "
                      "there is no mask: it reads the 3 cached inputs and the current one.",
         "source": [cite(lay, 499, "if cache is None:"),
                    cite(lay, 502, "window_mask = self._compute_document_mask("),
                    cite(lay, 598, "not_a_document_boundary = (segment_pos != 0)"),
                    cite(lay, 606, "mask *= not_a_document_boundary[:, start_idx + shift"),
                    cite(lay, 472, "x = self._concatenate_with_cache(x, cache)")]},
        {"statement": "Conv1D decode state: the last 3 pre-conv inputs u (outputs of "
                      "linear_x), oldest first, zero-padded on the left after a prompt shorter "
                      "than 3. Quirk: the document mask multiplies views of u in place, so after "
                      "a prompt whose last document started at one of its last 3 positions the "
                      "cached inputs from the earlier document are zeros (which is what a new "
                      "document should see).",
         "source": [cite(lay, 526, "new_cache = x[:, 1 - self.temporal_width :]"),
                    cite(lay, 527, "self._pad_cache(new_cache)"),
                    cite(lay, 508, "x_window *= window_mask")]},
        {"statement": "RG-LRU gates take the conv output c: gate_x = sigmoid(BD_in(c)), "
                      "gate_a = sigmoid(BD_a(c)). BD splits c into `heads` blocks of lru/heads "
                      f"({LRU_WIDTH // HEADS} here): BD(c)[h, j] = sum_i c[h, i] * W[h, i, j] + "
                      "b[h, j]; W [heads, in, out] (the middle index is the input), b [heads, "
                      "out]. HF input_gate_weight / recurrent_gate_weight are the same arrays.",
         "source": [cite(lay, 131, '"... (h i) -> ... h i"'),
                    cite(lay, 134, '"... h i, h i j -> ... h j", x, self.w) + self.b'),
                    cite(lay, 338, "torch.sigmoid(self.input_gate(x))"),
                    cite(lay, 339, "torch.sigmoid(self.a_gate(x))")]},
        {"statement": "RG-LRU recurrence: log_a = -8 * gate_a * softplus(a_param) (torch "
                      "softplus: beta 1, returns its input above 20); a = exp(log_a); "
                      "a^2 = exp(2 * log_a); multiplier = sqrt(1 - a^2); x~ = c * gate_x * "
                      "multiplier; h_t = a_t * h_{t-1} + x~_t, accumulated in f32 from h = 0, "
                      "output cast back to the activation dtype. Where segment_pos == 0 (a "
                      "document start, including position 0): a := 0 and multiplier := 1, so "
                      "h_t = c * gate_x. The decode state is h [B, lru] in f32.",
         "source": [cite(lay, 335, "reset = segment_pos == 0"),
                    cite(lay, 342, "log_a = -8.0 * gate_a * nn.functional.softplus(self.a_param)"),
                    cite(lay, 343, "a = torch.exp(log_a)"),
                    cite(lay, 344, "a_square = torch.exp(2 * log_a)"),
                    cite(lay, 347, "gated_x = x * gate_x"),
                    cite(lay, 351, "SqrtBoundDerivative.apply(1 - a_square)"),
                    cite(lay, 352, "reset[..., None] + ~reset[..., None] * multiplier"),
                    cite(lay, 168, "a = a * ~reset[..., None]"),
                    cite(lay, 188, "h_t = a[:, t].type(acc_dtype) * h_t + x[:, t].type(acc_dtype)"),
                    cite(lay, 376, "dtype=torch.float32")]},
        {"statement": "MLP: ffw_up.w [2, width, D], ffw_up.b [2, 1, 1, D]; out[c] = x @ w[c] + "
                      "b[c]; result = ffw_down(gelu_tanh(out[0]) * out[1]) with ffw_down an "
                      "nn.Linear with bias. Branch 0 (the GELU one) is HF gate_proj = "
                      "w[0]^T, branch 1 is up_proj = w[1]^T.",
         "source": [cite(m, 712, "w_shape=(2, self.width, self.expanded_width)"),
                    cite(m, 714, 'eqn="...td,cdD->c...tD"'),
                    cite(m, 750, "gate_value = gelu(out[0])"),
                    cite(m, 751, "activations = gate_value * out[1]"),
                    cite(m, 752, "return self.ffw_down(activations)")]},
        {"statement": "Initial values (what the package itself would draw; every value here "
                      "is overwritten): RMSNorm scales 0, biases 0, a_param from a ring "
                      "r in [0.9, 0.999] with softplus(a_param) = -log r.",
         "source": [cite(lay, 63, "torch.nn.init.zeros_(self.scale)"),
                    cite(lay, 291, "min_rad=0.9, max_rad=0.999"),
                    cite(lay, 211, "tensor.neg_().exp_().sub_(1.0).log_()")]},
        {"statement": "GriffinConfig.from_torch_params infers num_heads from the LAST block: "
                      "width // proj_k.weight.shape[1] = 1 for an attention block (proj_k.weight "
                      "is [head_dim, width]), a_gate.w.shape[0] for a recurrent one. This "
                      "fixture's last block is attention, so it infers num_heads = 1 (wrong); "
                      "the published 2B/9B end with a recurrent block. Derive heads as width / "
                      "proj_k.weight.shape[0] or a_gate.w.shape[0] instead.",
         "source": [cite("common.py", 386, 'attention_block.proj_k.weight"].shape[1]'),
                    cite("common.py", 387, "num_heads = width // heads_dim"),
                    cite("common.py", 380, "num_heads, head_dim, _ = w.shape")]},
    ]


# ------------------------------------------------------------------------------------------------


def sequences():
    g = torch.Generator().manual_seed(SEED + 1)

    def ordinary(n):
        return torch.randint(FIRST_ORDINARY_ID, VOCAB, (n,), generator=g).tolist()

    seq0 = [BOS] + ordinary(SEQ0_LENGTH - 1)
    seq1, pos1 = [], []
    for n in SEQ1_LENGTHS:
        seq1 += [BOS] + ordinary(n - 1)
        pos1 += list(range(n))
    return seq0, list(range(SEQ0_LENGTH)), seq1, pos1


def main():
    torch.set_num_threads(1)  # one reduction order, so reruns write the same bytes
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "hf").mkdir(parents=True)
    failures = []

    def expect_close(what, value, tolerance=TOLERANCE):
        if not value <= tolerance:
            failures.append(f"{what}: {value:.3g} > {tolerance}")

    model = build_model()
    seq0, pos0, seq1, pos1 = sequences()
    boundary = SEQ1_LENGTHS[0]
    record = {"reference": "google-deepmind/recurrentgemma (PyPI recurrentgemma==1.0.1), "
                           "recurrentgemma.torch.Griffin, float32, CPU",
              "versions": {**{k: version(k) for k in PINNED}, "python": sys.version.split()[0]},
              "config": config_record(model.config),
              "embed_scale": embed_scale(),
              "sequences": [seq0, seq1], "segment_pos": [pos0, pos1]}

    with torch.no_grad():
        dm_model, dm_shapes, inferred = write_dm(model, OUT / "dm.safetensors")
        record["dm_state_dict_shapes"] = dm_shapes
        record["dm_safetensors_dtype"] = "bf16 (values identical to the f32 model: every "\
            "parameter was rounded to bf16 when drawn)"
        record["from_torch_params_infers"] = {"num_heads": inferred.num_heads,
                                              "lru_width": inferred.lru_width,
                                              "width": inferred.width,
                                              "mlp_expanded_width": inferred.mlp_expanded_width}

        logits0 = forward(model, seq0, pos0)
        logits1 = forward(model, seq1, pos1)
        expect_close("dm.safetensors reloaded vs in-memory model, prefill_0",
                     max_abs(forward(dm_model, seq0, pos0), logits0), 0.0)
        np.save(OUT / "prefill_0.npy", logits0.numpy().astype(np.float32))
        np.save(OUT / "prefill_1.npy", logits1.numpy().astype(np.float32))
        record["max_abs_logit"] = [float(logits0.abs().max()), float(logits1.abs().max())]
        raw0 = raw_logits(model, seq0, pos0)
        record["prefill_0_raw_logits"] = {
            "max_abs": float(raw0.abs().max()),
            "fraction_beyond_half_cap": float((raw0.abs() > SOFT_CAP / 2).float().mean())}
        record["rglru_decay_a_over_prefill_0"] = rglru_statistics(model, seq0, pos0)

        # Document reset: each document of sequence 1 on its own.
        alone_first = forward(model, seq1[:boundary], pos1[:boundary])
        alone_second = forward(model, seq1[boundary:], pos1[boundary:])
        diffs = {"first_document_vs_alone": max_abs(logits1[:boundary], alone_first),
                 "second_document_vs_alone": max_abs(logits1[boundary:], alone_second)}
        for k, v in diffs.items():
            expect_close(f"prefill_1 {k}", v)
        record["prefill_1_documents_vs_alone_max_abs"] = diffs

        # Cached decode.
        decode0, _ = cached_decode(model, seq0, pos0, DECODE_PREFILL)
        np.save(OUT / "decode_0.npy", decode0.numpy().astype(np.float32))
        decode_diffs = {DECODE_PREFILL: max_abs(decode0, logits0)}
        for n in EXTRA_DECODE_PREFILLS:
            decode_diffs[n] = max_abs(cached_decode(model, seq0, pos0, n)[0], logits0)
        for n, v in decode_diffs.items():
            expect_close(f"cached decode after a prefill of {n} vs prefill_0", v)
        record["decode_0"] = {
            "how": f"prefill of the first {DECODE_PREFILL} token(s) with cache=None and "
                   "return_cache=True, then one token per call with the returned cache and "
                   "segment_pos = its index; row i = logits after token i",
            "max_abs_vs_prefill_0": decode_diffs[DECODE_PREFILL],
            "max_abs_vs_prefill_0_by_prefill_length": {str(k): v for k, v in
                                                        decode_diffs.items()}}
        # Cached decode over sequence 1: through the reset step by step, and from a prefill that
        # already holds the reset.
        through, _ = cached_decode(model, seq1, pos1, boundary)
        after, _ = cached_decode(model, seq1, pos1, boundary + 1)
        record["decode_sequence_1"] = {
            "prefill_13_then_decode_through_reset_vs_prefill_1_max_abs":
                max_abs(through, logits1),
            "prefill_14_(includes_reset)_then_decode_vs_prefill_1_max_abs":
                max_abs(after, logits1),
            "note": "A decode step at segment_pos 0 resets the RG-LRU but its conv reads the "
                    "previous document's last 3 inputs and its attention sees the previous "
                    "document's keys (the cache mask has no segments), so the package's own "
                    "decode across a reset differs from its full forward. A prefill that "
                    "contains the reset builds a cache that matches."}
        zero_rows = {}
        for n in (boundary + 1, boundary + 2, boundary + 3):
            _, cache = model(torch.tensor([seq1[:n]]), torch.tensor([pos1[:n]]), cache=None,
                             return_logits=False, return_cache=True)
            state = cache["blocks.0"].conv1d_state[0]
            zero_rows[str(n)] = [int(i) for i in range(state.shape[0])
                                 if not state[i].any()]
        record["decode_sequence_1"]["conv1d_state_zero_rows_after_prefill_of"] = zero_rows
        record["decode_sequence_1"]["conv1d_state_note"] = (
            "rows of blocks.0's conv1d_state [3, lru] (oldest first) that are all zero after a "
            "cache-less prefill of n tokens of sequence 1: the in-place document mask zeroes "
            "the first document's inputs, so the cache holds only the second document's.")
        if zero_rows != {str(boundary + 1): [0, 1], str(boundary + 2): [0],
                         str(boundary + 3): []}:
            failures.append(f"conv1d_state after a prefill through the reset: {zero_rows}")
        expect_close("prefill of 14 (through the reset) then decode vs prefill_1",
                     record["decode_sequence_1"][
                         "prefill_14_(includes_reset)_then_decode_vs_prefill_1_max_abs"])

        # Greedy continuation: the package's Sampler, cross-checked by full forwards.
        prompt = seq0[:GREEDY_PROMPT]
        continuation, sampler_logits = greedy_with_sampler(model, prompt)
        by_forward, margins = greedy_by_full_forward(model, prompt)
        if continuation != by_forward:
            failures.append(f"Sampler greedy {continuation} != full-forward greedy {by_forward}")
        last_prompt = forward(model, prompt, list(range(GREEDY_PROMPT)))[-1]
        expect_close("Sampler's first-step logits vs full forward",
                     max_abs(sampler_logits[0], last_prompt))
        record["greedy"] = {
            "prompt": prompt, "continuation": continuation,
            "how": "recurrentgemma.torch.Sampler(greedy_sampling=True): _prompt_processing_fn "
                   "(prefill of prompt[:-1] with cache=None, then prompt[-1] with the cache), "
                   "then _sample_fn with end_sampling_at_eos_token=False; 16 new tokens; equal "
                   "to argmax of repeated full forwards",
            "min_top1_top2_margin": min(margins)}

        # Hugging Face form.
        hf = write_hf(model, OUT / "hf")
        hf_diffs = {}
        for n in (WINDOW, WINDOW + 1, WINDOW + 2, SEQ0_LENGTH):
            hf_logits = hf(torch.tensor([seq0[:n]]), use_cache=False).logits[0]
            hf_diffs[str(n)] = max_abs(hf_logits, forward(model, seq0[:n], pos0[:n]))
        expect_close("HF vs DM, 8 tokens", hf_diffs[str(WINDOW)])
        expect_close("HF vs DM, 9 tokens", hf_diffs[str(WINDOW + 1)])
        if hf_diffs[str(WINDOW + 2)] < SENSITIVITY_MIN:
            failures.append("HF (no window) and DM agree on 10 tokens: the window does not bite")
        record["hf_vs_dm_max_abs_by_length"] = hf_diffs
        hf_greedy = hf.generate(torch.tensor([prompt]), do_sample=False,
                                max_new_tokens=GREEDY_NEW, eos_token_id=None, pad_token_id=PAD)
        record["hf_generate_greedy_continuation"] = hf_greedy[0, GREEDY_PROMPT:].tolist()
        record["hf_generate_note"] = (
            "transformers' generate() (greedy, its own cache) from the same prompt, for "
            "information only: HF's decode cache holds W keys including the current one "
            "(DM attends to W + 1), so it leaves DM's continuation once the window is full.")
        record["hf_vs_dm_note"] = (
            "transformers RecurrentGemmaForCausalLM loaded from hf/ (f32), use_cache=False, on "
            "the first n tokens of sequence 0 vs DM's full forward. HF's no-cache forward "
            "applies no attention window (causal only, MODEL_SPEC 4.7), DM lets a query see "
            f"q - k <= {WINDOW}: they agree up to {WINDOW + 1} tokens and differ from "
            f"{WINDOW + 2} on.")

        sens, rope = sensitivities(model, seq0, pos0, seq1, pos1, logits0, logits1)
        for k, v in sens.items():
            if v < SENSITIVITY_MIN:
                failures.append(f"the fixture does not see the mistake {k}: {v:.3g}")
        record["mistake_sensitivity_max_abs"] = sens
        record["rope_absolute_instead_of_segment_pos_max_abs"] = rope
        record["rope_absolute_note"] = (
            "RoPE on absolute indices instead of segment_pos changes prefill_1 only by rounding: "
            "attention never crosses a segment and RoPE scores depend on q - k only. The "
            "fixture cannot check which one an implementation uses; the package uses "
            "segment_pos.")

    record["semantics"] = semantics_notes(WINDOW)
    record["reset_summary"] = [
        f"sequence 1 holds two documents: segment_pos restarts at 0 at index {boundary}, where "
        "token <bos> starts the second one.",
        "full forward (the package's segment_pos input, cache=None): the RG-LRU uses a = 0 and "
        "multiplier 1 at the reset; the conv does not read across the boundary (document mask, "
        "inference included whenever no cache is passed); attention is masked to the same "
        "segment (segment id = cumsum(segment_pos == 0)); RoPE restarts at 0. So each "
        "document's logits equal those of the document run alone "
        f"(max diffs {diffs}).",
        "cached decode: see decode_sequence_1.",
    ]
    record["init"] = [
        f"seed {SEED}; every parameter drawn from one torch.Generator and rounded to bf16",
        f"embedding N(0, {EMBEDDING_STD}); RMSNorm scales N(0, {NORM_STD}) (applied as 1 + s), "
        f"the final norm's N({FINAL_NORM_MEAN}, {NORM_STD}) so the raw logits reach ~19 and the "
        "soft-cap of 30 changes them visibly",
        "linear and einsum weights N(0, 1/fan_in) (ffw_up.w [2, d, D]: fan_in d; gates "
        f"[H, in, out]: fan_in in); linear_out, proj_final, ffw_down x{RESIDUAL_WRITER_GAIN}",
        f"every bias N(0, {BIAS_STD}), RG-LRU gate biases N(0, {GATE_BIAS_STD}); conv w "
        f"N(0, {CONV_STD})",
        f"a_param: the package's rnn_param_init formula with r in [{A_MIN_RAD}, {A_MAX_RAD}] "
        "(DM: [0.9, 0.999]), so a = r^(8 gate_a) spreads over ~[0.3, 1)",
    ]
    record["hf_config"] = json.loads((OUT / "hf" / "config.json").read_text())
    (OUT / "reference.json").write_text(json.dumps(record, indent=1) + "\n")

    files = {str(p.relative_to(OUT)): p.stat().st_size for p in sorted(OUT.rglob("*"))
             if p.is_file()}
    print(f"max|logit| {[round(x, 3) for x in record['max_abs_logit']]}, raw max "
          f"{record['prefill_0_raw_logits']['max_abs']:.2f}")
    print(f"a spread {record['rglru_decay_a_over_prefill_0']}")
    print(f"decode vs prefill {decode_diffs}")
    print(f"sequence 1: {diffs}; decode {record['decode_sequence_1']}")
    print(f"HF vs DM {hf_diffs}")
    print(f"sensitivities {sens}")
    print(f"greedy {continuation} (min margin {min(margins):.3f})")
    print(f"from_torch_params infers {record['from_torch_params_infers']}")
    print(f"files {files}, total {sum(files.values())} bytes")
    if failures:
        raise SystemExit("\n".join(failures))


if __name__ == "__main__":
    main()
