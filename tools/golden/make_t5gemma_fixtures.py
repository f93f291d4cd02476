#!/usr/bin/env python3
"""Golden fixtures for T5Gemma (the Gemma 2 based encoder-decoder).

Pinned: torch 2.9.1, transformers 4.57.1, safetensors 0.8.0, numpy 2.4.6, sentencepiece 0.2.3
(tools/golden/requirements.txt; the script refuses to run with other versions).

Builds two tiny random T5GemmaForConditionalGeneration models with Hugging Face transformers (the
reference implementation): `balanced` (encoder and decoder of one shape) and `unbalanced` (an
encoder wider and deeper than the decoder, like 9B-2B, so the decoder's cross-attention reads a
width other than its own). Each is saved as a Hugging Face model directory under
tests/fixtures/models/t5gemma/<name>/ with the reference logits of teacher-forced decoding
(unpadded and as a right-padded batch), transformers' own token-by-token cached decode and a
greedy continuation by its generate().

Run from the repository root (not in CI; see tools/golden/README.md):
    python3 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install -r tools/golden/requirements.txt
    /tmp/golden-venv/bin/python tools/golden/make_t5gemma_fixtures.py
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
from transformers import (AutoModelForSeq2SeqLM, DynamicCache, EncoderDecoderCache, T5GemmaConfig,
                          T5GemmaForConditionalGeneration)
from transformers.models.t5gemma import modeling_t5gemma
from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

PINNED = {"torch": "2.9.1", "transformers": "4.57.1", "safetensors": "0.8.0", "numpy": "2.4.6",
          "sentencepiece": "0.2.3"}
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "models" / "t5gemma"
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer" / "tiny_gemma.model"
VOCAB = 512
PAD, EOS, BOS = 0, 1, 2
FIRST_ORDINARY_ID = 7  # 0-6 are <pad> <eos> <bos> <unk> <mask> <start_of_turn> <end_of_turn>
# Lengths include the leading <bos>; all longer than the sliding windows (4 and 5).
ENCODER_LENGTHS = (11, 6)
DECODER_LENGTHS = (9, 7)
PADDED_DECODER_LENGTH = 7  # the padded batch's decoder ids: the first 7 of each case's
GREEDY_NEW = 12
# transformers' cached decode and its padded batch against its own teacher-forced forward, as a
# fraction of the case's largest |logit|, f32.
TOLERANCE = 2e-5
ATTN_SOFTCAP, FINAL_SOFTCAP = 2.0, 10.0


def check_versions():
    have = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__,
            "sentencepiece": version("sentencepiece")}
    if have != PINNED:
        raise SystemExit(f"pinned versions {PINNED}, found {have}: install "
                         "tools/golden/requirements.txt (other versions may compute differently)")


def stack(hidden, layers, heads, kv_heads, head_dim, intermediate, window, scalar):
    """The fields set on one T5GemmaModuleConfig (recorded as such in reference.json)."""
    return dict(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                intermediate_size=intermediate, sliding_window=window,
                layer_types=["sliding_attention" if i % 2 == 0 else "full_attention"
                             for i in range(layers)],
                query_pre_attn_scalar=scalar, attn_logit_softcapping=ATTN_SOFTCAP,
                final_logit_softcapping=FINAL_SOFTCAP, rope_theta=10000.0,
                max_position_embeddings=256, rms_norm_eps=1e-6,
                hidden_activation="gelu_pytorch_tanh", attention_bias=False,
                pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS, tie_word_embeddings=True)


FIXTURES = {
    # GQA; query_pre_attn_scalar 20 != head_dim 16.
    "balanced": (stack(64, 4, 4, 2, 16, 128, window=4, scalar=20),
                 stack(64, 4, 4, 2, 16, 128, window=4, scalar=20)),
    # Encoder 96 wide, 5 layers, GQA; decoder 64 wide, 3 layers, MQA with heads x head_dim (96)
    # != hidden (64); its cross-attention k/v read the encoder's 96; different windows.
    "unbalanced": (stack(96, 5, 6, 2, 16, 192, window=4, scalar=16),
                   stack(64, 3, 4, 1, 24, 128, window=5, scalar=24)),
}


def make_config(encoder, decoder):
    return T5GemmaConfig(encoder=T5GemmaModuleConfig(**encoder),
                         decoder=T5GemmaModuleConfig(**decoder), vocab_size=VOCAB,
                         tie_word_embeddings=True, pad_token_id=PAD, eos_token_id=EOS,
                         bos_token_id=BOS)


ENCODER_EMBEDDING_STD = 0.25
# The decoder's embedding is also its output projection (tied). At 0.25 its share of the residual
# stream makes every position predict the token it was fed (greedy decoding then repeats <bos>
# forever); at 0.04 the fed token is the argmax at 1 of 16 positions and the greedy continuation
# changes token several times.
DECODER_EMBEDDING_STD = 0.04
NORM_STD = 0.3
# Mean of the decoder's final RMSNorm weight (applied as 1 + w): a gain of about 13 brings the
# small logits of that small tied embedding back up, past the final soft-cap (raw max |logit|
# about 15, a fifth of them beyond cap / 2).
DECODER_FINAL_NORM_MEAN = 12.0
# o_proj and down_proj write into the residual stream (kept from make_gemma_fixtures.py; the
# post-norms re-normalise their outputs, so this changes little here).
RESIDUAL_WRITER_GAIN = 3.0


def randomize(model, seed):
    """Every parameter random, the RMSNorm weights too (transformers initialises them to 0, which
    would hide a missing `1 +`)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # RMSNorm weights: pre/post self-attn, cross-attn, ffw; final norms
                mean = DECODER_FINAL_NORM_MEAN if name == "model.decoder.norm.weight" else 0.0
                p.copy_(mean + NORM_STD * torch.randn(p.shape, generator=g))
            elif name == "model.encoder.embed_tokens.weight":
                p.copy_(ENCODER_EMBEDDING_STD * torch.randn(p.shape, generator=g))
            elif name == "model.decoder.embed_tokens.weight":
                p.copy_(DECODER_EMBEDDING_STD * torch.randn(p.shape, generator=g))
            else:  # nn.Linear weight [out, in]
                gain = RESIDUAL_WRITER_GAIN if name.endswith(("o_proj.weight",
                                                              "down_proj.weight")) else 1.0
                p.copy_(gain / p.shape[1] ** 0.5 * torch.randn(p.shape, generator=g))


def random_ids(g, lengths):
    return [[BOS] + torch.randint(FIRST_ORDINARY_ID, VOCAB, (n - 1,), generator=g).tolist()
            for n in lengths]


def saved_tensors(directory):
    """{name: (dtype, shape)} from the safetensors header."""
    f = directory / "model.safetensors"
    raw = f.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    return {k: (v["dtype"], v["shape"]) for k, v in sorted(header.items()) if k != "__metadata__"}


def check_saved_files(directory, model, encoder, decoder):
    assert sorted(p.name for p in directory.glob("*.safetensors")) == ["model.safetensors"]
    tensors = saved_tensors(directory)
    assert {d for d, _ in tensors.values()} == {"F32"}, directory
    # named_parameters() lists a tied parameter once: lm_head.out_proj.weight is the decoder's
    # embed_tokens.weight; the encoder's embedding is a parameter of its own.
    assert sorted(tensors) == sorted(n for n, _ in model.named_parameters()), directory
    assert model.lm_head.out_proj.weight is model.model.decoder.embed_tokens.weight
    for i in range(decoder["num_hidden_layers"]):
        for proj in ("k_proj", "v_proj"):
            shape = tensors[f"model.decoder.layers.{i}.cross_attn.{proj}.weight"][1]
            assert shape == [decoder["num_key_value_heads"] * decoder["head_dim"],
                             encoder["hidden_size"]], shape
    return tensors


def check_tokenizer(path):
    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    assert sp.get_piece_size() == VOCAB, sp.get_piece_size()
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id()) == (PAD, EOS, BOS)


def build(name, encoder, decoder, seed):
    """Random model saved under tests/fixtures/models/t5gemma/<name>, then loaded back in f32 from
    disk with eager attention: the references come from exactly the saved weights."""
    torch.manual_seed(seed)
    model = T5GemmaForConditionalGeneration(make_config(encoder, decoder))
    model.eval()
    randomize(model, 100 + seed)
    directory = OUT / name
    if directory.exists():
        shutil.rmtree(directory)
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "generation_config.json").unlink(missing_ok=True)  # nothing reads it
    shutil.copy(TOKENIZER, directory / "tokenizer.model")
    check_tokenizer(directory / "tokenizer.model")
    tensors = check_saved_files(directory, model, encoder, decoder)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(directory, dtype=torch.float32,
                                                   attn_implementation="eager")
    loaded.eval()
    assert type(loaded) is T5GemmaForConditionalGeneration, type(loaded)
    for cfg in (loaded.config, loaded.config.encoder, loaded.config.decoder):
        assert cfg._attn_implementation == "eager", cfg._attn_implementation
    with torch.no_grad():
        for (pname, mine), (_, theirs) in zip(model.named_parameters(),
                                              loaded.named_parameters()):
            assert torch.equal(mine, theirs), f"{pname} changed on the way through disk"
    assert loaded.lm_head.out_proj.weight is loaded.model.decoder.embed_tokens.weight
    return directory, loaded, tensors


def forward(model, enc_ids, dec_ids, enc_mask=None, **kwargs):
    enc = torch.tensor(enc_ids)
    dec = torch.tensor(dec_ids)
    if enc_mask is None:
        enc_mask = torch.ones_like(enc)
    return model(input_ids=enc, attention_mask=torch.as_tensor(enc_mask),
                 decoder_input_ids=dec, decoder_attention_mask=torch.ones_like(dec),
                 use_cache=False, **kwargs).logits


def new_cache(model):
    """The self-attention cache with the decoder's sliding layers, the cross-attention cache all
    full layers. transformers 4.57.1 builds both from the decoder config (T5GemmaDecoder when
    given no cache, and generate()): the cross-attention cache of a sliding layer then keeps only
    the last sliding_window - 1 encoder positions after the first step (huggingface/transformers
    issue 41875, fixed after 4.57.1 by pull request 41890 the way this function does)."""
    return EncoderDecoderCache(DynamicCache(config=model.config.decoder), DynamicCache())


def incremental(model, enc_ids, dec_ids, past):
    """transformers' own cached decode: the encoder once, then the decoder one token at a time
    through `past` (None: the cache T5GemmaDecoder makes itself)."""
    enc = torch.tensor([enc_ids])
    mask = torch.ones_like(enc)
    encoder_outputs = model.get_encoder()(input_ids=enc, attention_mask=mask)
    rows = []
    for t in dec_ids:
        out = model(encoder_outputs=encoder_outputs, attention_mask=mask,
                    decoder_input_ids=torch.tensor([[t]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        rows.append(out.logits[0, -1])
    return torch.stack(rows), type(past).__name__


def cap_fractions(model, enc_ids, dec_ids):
    """Fractions of raw attention scores (unmasked ones; encoder self, decoder self and cross
    attention) and raw final logits beyond cap / 2: evidence that both soft-caps change the
    result. Reads the scores by wrapping the eager attention function for one forward."""
    raw = {"encoder": [], "decoder_self": [], "cross": []}
    original = modeling_t5gemma.eager_attention_forward

    def recording(module, query, key, value, attention_mask, scaling=None, **kwargs):
        keys = modeling_t5gemma.repeat_kv(key, module.num_key_value_groups)
        scores = torch.matmul(query, keys.transpose(2, 3)) * scaling
        visible = (attention_mask[:, :, :, :keys.shape[-2]] == 0).expand_as(scores)
        if isinstance(module, modeling_t5gemma.T5GemmaCrossAttention):
            kind = "cross"
        else:
            kind = "decoder_self" if module.is_causal else "encoder"
        raw[kind].append(scores[visible])
        return original(module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    dec_cfg = model.config.decoder
    modeling_t5gemma.eager_attention_forward = recording
    dec_cfg.final_logit_softcapping = None
    try:
        raw_logits = forward(model, [enc_ids], [dec_ids])
    finally:
        modeling_t5gemma.eager_attention_forward = original
        dec_cfg.final_logit_softcapping = FINAL_SOFTCAP
    out = {}
    for kind, parts in raw.items():
        scores = torch.cat(parts)
        assert scores.numel() > 0, f"the eager attention spy saw no {kind} scores"
        out[f"{kind}_attn_scores_beyond_half_cap"] = float((scores.abs() > ATTN_SOFTCAP / 2)
                                                           .float().mean())
        out[f"{kind}_attn_score_max_abs_raw"] = float(scores.abs().max())
    out["final_logits_beyond_half_cap"] = float((raw_logits.abs() > FINAL_SOFTCAP / 2)
                                                .float().mean())
    out["final_logit_max_abs_raw"] = float(raw_logits.abs().max())
    return out


def main():
    check_versions()
    torch.set_num_threads(1)  # one reduction order, so reruns write the same bytes
    OUT.mkdir(parents=True, exist_ok=True)
    failures = []
    for seed, (name, (encoder, decoder)) in enumerate(FIXTURES.items()):
        directory, model, tensors = build(name, encoder, decoder, seed)
        g = torch.Generator().manual_seed(200 + seed)
        enc_seqs = random_ids(g, ENCODER_LENGTHS)
        dec_seqs = random_ids(g, DECODER_LENGTHS)
        record = {"model": name, "architecture": "T5GemmaForConditionalGeneration",
                  "versions": {"torch": torch.__version__,
                               "transformers": transformers.__version__,
                               "safetensors": safetensors.__version__,
                               "numpy": np.__version__,
                               "sentencepiece": version("sentencepiece")},
                  "config": {"encoder": encoder, "decoder": decoder, "vocab_size": VOCAB,
                             "tie_word_embeddings": True, "pad_token_id": PAD,
                             "eos_token_id": EOS, "bos_token_id": BOS},
                  "cases": []}
        with torch.no_grad():
            full = []
            for i, (e, d) in enumerate(zip(enc_seqs, dec_seqs)):
                logits = forward(model, [e], [d])[0]
                full.append(logits)
                np.save(directory / f"case_{i}_logits.npy", logits.numpy().astype(np.float32))
                record["cases"].append({"encoder_ids": e, "decoder_ids": d,
                                        "logits": f"case_{i}_logits.npy",
                                        "shape": list(logits.shape),
                                        "max_abs_logit": float(logits.abs().max())})

            # A right-padded batch: the encoder padded with <pad> and masked, the decoder not.
            width = max(ENCODER_LENGTHS)
            enc_padded = [e + [PAD] * (width - len(e)) for e in enc_seqs]
            enc_mask = [[1] * len(e) + [0] * (width - len(e)) for e in enc_seqs]
            dec_batch = [d[:PADDED_DECODER_LENGTH] for d in dec_seqs]
            padded = forward(model, enc_padded, dec_batch, enc_mask)
            np.save(directory / "padded_logits.npy", padded.numpy().astype(np.float32))
            padded_diff = [float((padded[b] - full[b][:PADDED_DECODER_LENGTH]).abs().max())
                           for b in range(len(enc_seqs))]
            # What the pads hold must not matter: the same batch with the pads replaced by an
            # ordinary id, the mask unchanged.
            enc_other = [e + [FIRST_ORDINARY_ID] * (width - len(e)) for e in enc_seqs]
            pad_content_diff = float((forward(model, enc_other, dec_batch, enc_mask) - padded)
                                     .abs().max())
            # Without attention_mask the encoder masks ids == pad by itself, but the decoder's
            # cross-attention then sees every encoder position, pads included.
            no_mask = model(input_ids=torch.tensor(enc_padded),
                            decoder_input_ids=torch.tensor(dec_batch), use_cache=False).logits
            no_mask_diff = float((no_mask - padded).abs().max())
            record["padded"] = {"encoder_ids": enc_padded, "attention_mask": enc_mask,
                                "decoder_ids": dec_batch, "decoder_attention_mask": "all ones",
                                "logits": "padded_logits.npy", "shape": list(padded.shape),
                                "max_abs_diff_vs_cases": padded_diff,
                                "max_abs_diff_pads_replaced_by_id_7": pad_content_diff,
                                "max_abs_diff_if_attention_mask_omitted": no_mask_diff}
            for b, diff in enumerate(padded_diff):
                if diff > TOLERANCE * record["cases"][b]["max_abs_logit"]:
                    failures.append(f"{name}: padded row {b} differs from case {b} by {diff:.3g}")
            if pad_content_diff > TOLERANCE * float(padded.abs().max()):
                failures.append(f"{name}: the pads' ids change the logits by "
                                f"{pad_content_diff:.3g}")

            steps, cache_class = incremental(model, enc_seqs[0], dec_seqs[0], new_cache(model))
            np.save(directory / "decode_0_logits.npy", steps.numpy().astype(np.float32))
            decode_diff = float((steps - full[0]).abs().max())
            default_steps, _ = incremental(model, enc_seqs[0], dec_seqs[0], None)
            record["decode"] = {"case": 0, "logits": "decode_0_logits.npy",
                                "shape": list(steps.shape), "cache_class": cache_class,
                                "cache": "EncoderDecoderCache(DynamicCache(config=decoder), "
                                         "DynamicCache())",
                                "max_abs_diff_vs_teacher_forced": decode_diff,
                                "transformers_default_cache_max_abs_diff_vs_teacher_forced":
                                    float((default_steps - full[0]).abs().max())}
            if decode_diff > TOLERANCE * record["cases"][0]["max_abs_logit"]:
                failures.append(f"{name}: transformers' cached decode differs from its "
                                f"teacher-forced forward by {decode_diff:.3g}")

            # eos_token_id=None: always 12 new tokens, even if <eos> comes out on the way.
            enc0 = torch.tensor([enc_seqs[0]])
            generated = model.generate(input_ids=enc0, max_new_tokens=GREEDY_NEW,
                                       do_sample=False, eos_token_id=None,
                                       past_key_values=new_cache(model))[0].tolist()
            start = model.generation_config.decoder_start_token_id
            start = BOS if start is None else start  # generate() falls back to bos_token_id
            assert generated[0] == start and len(generated) == GREEDY_NEW + 1, generated
            # The same greedy decode without any cache: a teacher-forced forward per token.
            uncached = [start]
            for _ in range(GREEDY_NEW):
                uncached.append(int(forward(model, [enc_seqs[0]], [uncached])[0, -1].argmax()))
            if uncached != generated:
                failures.append(f"{name}: generate() {generated} != uncached greedy {uncached}")
            default = model.generate(input_ids=enc0, max_new_tokens=GREEDY_NEW,
                                     do_sample=False, eos_token_id=None)[0].tolist()
            record["greedy"] = {"encoder_ids": enc_seqs[0], "decoder_start_token_id": start,
                                "generate_returned": generated,
                                "continuation": generated[1:],
                                "call": f"generate(input_ids=[encoder ids of case 0], "
                                        f"max_new_tokens={GREEDY_NEW}, do_sample=False, "
                                        "eos_token_id=None, past_key_values=EncoderDecoderCache("
                                        "DynamicCache(config=decoder), DynamicCache()))",
                                "equals_uncached_greedy": uncached == generated,
                                "transformers_default_cache_returned": default}
            record["softcap"] = cap_fractions(model, enc_seqs[0], dec_seqs[0])

        record["lm_head_in_file"] = any("lm_head" in t for t in tensors)
        record["tensors"] = {k: {"dtype": d, "shape": s} for k, (d, s) in tensors.items()}
        record["notes"] = [
            "logits: teacher-forced forward (use_cache=False), eager attention, f32 weights "
            "loaded from this directory; attention_mask and decoder_attention_mask passed "
            "explicitly (all ones except the padded batch's encoder pads)",
            f"init: encoder embedding N(0, {ENCODER_EMBEDDING_STD}), decoder embedding (tied "
            f"to the output) N(0, {DECODER_EMBEDDING_STD}); "
            f"RMSNorm w N(0, {NORM_STD}) (applied as 1 + w), the decoder's final norm w mean "
            f"{DECODER_FINAL_NORM_MEAN}; linear N(0, 1/in), o_proj and down_proj "
            f"N(0, ({RESIDUAL_WRITER_GAIN})^2/in)",
            "embedding scale: the encoder multiplies its embeddings by sqrt(encoder hidden), the "
            "decoder by sqrt(decoder hidden), each as an f32 scalar "
            "(torch.tensor(hidden ** 0.5, dtype=float32))",
            "lm_head.out_proj.weight is tied to model.decoder.embed_tokens.weight and absent from "
            "model.safetensors; the encoder's model.encoder.embed_tokens.weight is separate",
            "encoder sliding layers are bidirectional: query i sees keys j with |i - j| < "
            "sliding_window (2 * window - 1 keys), and-ed with the padding mask; encoder full "
            "layers see every unpadded key",
            "decoder self-attention: causal; sliding layers see keys j with i - window < j <= i",
            "cross-attention: no RoPE, no window, the attention soft-cap and the decoder's "
            "query_pre_attn_scalar; keys masked only by the attention_mask argument",
            "padded batch: row b equals case b's first 7 rows; the pads' ids do not matter "
            "(pad query rows of the encoder are never read: cross-attention masks them as keys)",
            "decode: encoder once, then the decoder one token at a time with "
            "EncoderDecoderCache(DynamicCache(config=decoder), DynamicCache()); the cache "
            "transformers 4.57.1 makes itself (both from the decoder config) keeps only the last "
            "sliding_window - 1 encoder positions for the cross-attention of sliding layers "
            "(transformers issue 41875, fixed by pull request 41890): the *_default_cache_* "
            "entries show what that gets wrong; the C++ runtime must match the teacher-forced "
            "logits, not those",
            f"greedy: decoder starts from decoder_start_token_id {start} (<bos>, generate()'s "
            "fallback: the config sets none); generate_returned includes it; checked against an "
            "uncached greedy loop of teacher-forced forwards",
        ]
        (directory / "reference.json").write_text(json.dumps(record, indent=1) + "\n")
        files = {p.name: p.stat().st_size for p in sorted(directory.iterdir())}
        sc = record["softcap"]
        print(f"{name}: max|logit| {[round(c['max_abs_logit'], 3) for c in record['cases']]}, "
              f"decode diff {decode_diff:.3g} ({cache_class}), padded diff "
              f"{[f'{d:.3g}' for d in padded_diff]}, pads' ids {pad_content_diff:.3g}, "
              f"no attention_mask {no_mask_diff:.3g}")
        default_diff = record["decode"]["transformers_default_cache_max_abs_diff_vs_teacher_forced"]
        print(f"  greedy {record['greedy']['generate_returned']} (transformers' default cache: "
              f"{record['greedy']['transformers_default_cache_returned']}, decode diff "
              f"{default_diff:.3g})")
        print("  beyond cap/2: " + ", ".join(
            f"{k} {sc[f'{k}_attn_scores_beyond_half_cap']:.3f} "
            f"(raw max {sc[f'{k}_attn_score_max_abs_raw']:.2f})"
            for k in ("encoder", "decoder_self", "cross"))
            + f", final logits {sc['final_logits_beyond_half_cap']:.3f} "
              f"(raw max {sc['final_logit_max_abs_raw']:.2f})")
        print(f"  files {files}, total {sum(files.values())} bytes")
    if failures:
        raise SystemExit("\n".join(failures))


if __name__ == "__main__":
    main()
