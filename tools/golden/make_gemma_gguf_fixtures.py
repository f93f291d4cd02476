#!/usr/bin/env python3
"""Tiny Gemma 1, 2 and 3 GGUF files, written the way llama.cpp's convert_hf_to_gguf.py writes them.

Pinned: gguf 0.19.0 (gguf-py, llama.cpp's own Python package), numpy 2.4.6, sentencepiece 0.2.3;
optionally llama-cpp-python 0.3.36 for the checks at the end. The script refuses other versions.

Reads the tiny Hugging Face fixtures tests/fixtures/models/{gemma1,gemma2,gemma3} (made by
make_gemma_fixtures.py: config.json, safetensors, tokenizer.model) and writes
tests/fixtures/gguf/tiny-{gemma1,gemma2,gemma3}.gguf plus tests/fixtures/gguf/tiny-gemma.json (the
provenance: versions, hashes, which tensors are not F32, the tokenizer choices below, the
llama.cpp checks). tests/models/gguf_convert_test.cc converts each GGUF file and its Hugging Face
directory with `gemmapod convert` and compares the two checkpoints.

What llama.cpp's converter does, and so what this script does (read in the converter's
GemmaModel, Gemma2Model, Gemma3Model, TextModel.prepare_tensors and
_create_vocab_sentencepiece; the tensor names come from gguf-py's own TensorNameMap, which is what
the converter's map_tensor_name uses):

- general.architecture gemma / gemma2 / gemma3; `<arch>.context_length`, embedding_length,
  block_count, feed_forward_length, attention.head_count, attention.head_count_kv,
  attention.layer_norm_rms_epsilon, attention.key_length and attention.value_length (head_dim).
  Gemma 1 and 2 write no rope.freq_base (llama.cpp assumes 10000); Gemma 2 adds
  attn_logit_softcapping, final_logit_softcapping and attention.sliding_window; Gemma 3 adds
  rope.freq_base (the global base; the local 10000 is llama.cpp's constant) and
  attention.sliding_window. No key holds query_pre_attn_scalar: llama.cpp scales attention by
  head_dim^-1/2 (hidden/heads for the 27B sizes). The tiny gemma2 uses 20 != head_dim 16, so its
  GGUF file describes a model with scale 16^-1/2: the C++ test expects exactly that.
- Every tensor whose name ends in "norm.weight" is stored as 1 + w (Gemma's RMSNorm multiplies by
  1 + w, llama.cpp's by the weight), added in f32: the converter widens bf16 to f32 before its
  modify_tensors adds the 1. 1-D tensors and norms are always F32.
- The vocabulary: for each SentencePiece id the piece (spaces as U+2581), its score and a type
  from IsUnknown (2), IsControl (3), IsUnused (5), IsByte (6), else NORMAL (1): user-defined
  pieces come out NORMAL here. Then the added_tokens_decoder of tokenizer_config.json overrides:
  "special" tokens become CONTROL (3), others USER_DEFINED (4, U+2581 written back as spaces),
  both with score -1000. The tiny fixtures have no tokenizer_config.json, so ADDED_SPECIAL below
  stands in for the one a Gemma repository carries, which marks its reserved tokens (<pad>, <eos>,
  <bos>, <unk>, <mask>, <start_of_turn>, <end_of_turn>) special: in the Gemma 3 270M Q4_K_M GGUF
  of tests/models/gemma3_270m_test.cc, <unk> and <start_of_turn> are type 3. gemma1 leaves <unk> out of that list, so its file
  has <unk> as UNKNOWN (2), what the converter writes for a repository that does not list it:
  both spellings must give the same tokenizer.
- tokenizer.ggml.model "llama", pre "default"; bos/eos/unknown/padding ids and add_bos_token True,
  add_sep_token False, add_eos_token False (SpecialVocab, from tokenizer.json and
  tokenizer_config.json in a Gemma repository; that Gemma 3 270M GGUF has exactly these);
  add_space_prefix False. Gemma 1 also gets eot_token_id 107 (the converter hard-codes CodeGemma's
  ids; with gguf-py 0.19.0 only eot has a writer, prefix/suffix/middle/fsep are skipped).

Tensor types: every tensor F32 (exact), except gemma2 blk.0.ffn_up.weight (Q8_0) and
blk.1.attn_k.weight (F16), gemma3 token_embd.weight (Q8_0, as in llama.cpp's Q8_0 and Q4_K_M
files) and blk.5.attn_q.weight (F16), quantized with gguf-py (bit-exact with ggml). gemma2's
weights are bf16, which f16 holds exactly, so only gemma3's F16 tensor is actually rounded. gemma1
is all F32, so its converted logits must match transformers' to f32 rounding.

Run from the repository root (not in CI):
    python3 -m venv /tmp/gv && /tmp/gv/bin/pip install gguf==0.19.0 numpy==2.4.6 \
        sentencepiece==0.2.3
    /tmp/gv/bin/python tools/golden/make_gemma_gguf_fixtures.py
With llama-cpp-python==0.3.36 installed too, the files are also loaded by llama.cpp: its
tokenizer against SentencePiece on tokenizer.model, its logits against the fixtures' transformers
logits (recorded in the provenance; gemma2 differs by design, see above). The committed
provenance was written that way (/tmp/ref in the golden venvs); without llama-cpp-python the
script writes the same .gguf bytes and a provenance without the "llama_cpp" entries.
Deterministic: a rerun with the pinned versions rewrites identical bytes.
"""
import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import sentencepiece

import gguf
from gguf import GGMLQuantizationType as T

PINNED = {"gguf": "0.19.0", "numpy": "2.4.6", "sentencepiece": "0.2.3"}
PINNED_LLAMA_CPP = "0.3.36"
ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / "fixtures" / "models"
OUT = ROOT / "tests" / "fixtures" / "gguf"
PROVENANCE = OUT / "tiny-gemma.json"

ARCH = {"gemma": gguf.MODEL_ARCH.GEMMA, "gemma2": gguf.MODEL_ARCH.GEMMA2,
        "gemma3_text": gguf.MODEL_ARCH.GEMMA3}
# Stand-in for tokenizer_config.json's added_tokens_decoder: the ids marked "special".
ADDED_SPECIAL = {"gemma1": [0, 1, 2, 4, 5, 6], "gemma2": [0, 1, 2, 3, 4, 5, 6],
                 "gemma3": [0, 1, 2, 3, 4, 5, 6]}
# Tensors stored other than F32 (GGUF names).
QUANTIZED = {
    "gemma1": {},
    "gemma2": {"blk.0.ffn_up.weight": T.Q8_0, "blk.1.attn_k.weight": T.F16},
    "gemma3": {"token_embd.weight": T.Q8_0, "blk.5.attn_q.weight": T.F16},
}
# Texts for the llama.cpp tokenizer check: byte fallback, runs of spaces, chat markers.
CHECK_TEXTS = [
    "The license is granted",
    "  two  spaces   three\n\n\ttab",
    "na\u00efve caf\u00e9 \u6771\u4eac \U0001f600",
    "<start_of_turn>user\nHi<end_of_turn>\n<mask>",
    "12345 3.14159",
]


def check_versions():
    have = {"gguf": version("gguf"), "numpy": np.__version__,
            "sentencepiece": version("sentencepiece")}
    if have != PINNED:
        raise SystemExit(f"pinned versions {PINNED}, found {have}: other versions may write "
                         "differently")


def llama_cpp_version():
    try:
        have = version("llama_cpp_python")
    except PackageNotFoundError:
        return None
    if have != PINNED_LLAMA_CPP:
        raise SystemExit(f"llama-cpp-python {PINNED_LLAMA_CPP} pinned for the checks, found {have}")
    return have


def read_safetensors(directory):
    """Every tensor of the directory's safetensors files as f32, by name, in the converter's
    order (files sorted, names sorted within a file). bf16 widens exactly, as the converter's
    `data_torch.to(torch.float32)` does. Read by hand: the format is a JSON header and raw bytes."""
    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        raw = path.read_bytes()
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
        base = 8 + header_len
        for name in sorted(k for k in header if k != "__metadata__"):
            info = header[name]
            begin, end = info["data_offsets"]
            data = raw[base + begin:base + end]
            if info["dtype"] == "F32":
                array = np.frombuffer(data, dtype="<f4")
            elif info["dtype"] == "BF16":
                array = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                raise SystemExit(f"{path}: {name} is {info['dtype']}")
            tensors[name] = array.reshape(info["shape"]).astype(np.float32)
    return tensors


def vocabulary(name, tokenizer_path, vocab_size):
    """tokens, scores, types as the converter's _create_vocab_sentencepiece builds them."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_path))
    assert sp.vocab_size() == vocab_size, (sp.vocab_size(), vocab_size)
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        if sp.IsUnknown(i):
            kind = gguf.TokenType.UNKNOWN
        elif sp.IsControl(i):
            kind = gguf.TokenType.CONTROL
        elif sp.IsUnused(i):
            kind = gguf.TokenType.UNUSED
        elif sp.IsByte(i):
            kind = gguf.TokenType.BYTE
        else:
            kind = gguf.TokenType.NORMAL
        tokens.append(sp.IdToPiece(i))
        scores.append(sp.GetScore(i))
        types.append(kind)
    for i in ADDED_SPECIAL[name]:
        types[i] = gguf.TokenType.CONTROL
        scores[i] = -1000.0
    return tokens, scores, types, sp


def write_gguf(name, path):
    directory = MODELS / name
    hp = json.loads((directory / "config.json").read_text())
    arch = ARCH[hp["model_type"]]
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    w = gguf.GGUFWriter(path, arch=arch_name)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"tiny-{name}")
    w.add_context_length(hp["max_position_embeddings"])
    w.add_embedding_length(hp["hidden_size"])
    w.add_block_count(hp["num_hidden_layers"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_head_count(hp["num_attention_heads"])
    w.add_head_count_kv(hp["num_key_value_heads"])
    w.add_layer_norm_rms_eps(hp["rms_norm_eps"])
    w.add_key_length(hp["head_dim"])
    w.add_value_length(hp["head_dim"])
    # Mostly F32; general.file_type names the prevailing type, as llama.cpp's --outtype does.
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if arch == gguf.MODEL_ARCH.GEMMA2:
        w.add_attn_logit_softcapping(hp["attn_logit_softcapping"])
        w.add_final_logit_softcapping(hp["final_logit_softcapping"])
        w.add_sliding_window(hp["sliding_window"])
    if arch == gguf.MODEL_ARCH.GEMMA3:
        w.add_rope_freq_base(hp["rope_theta"])
        assert hp.get("attn_logit_softcapping") is None
        w.add_sliding_window(hp["sliding_window"])
        assert hp.get("rope_scaling") is None  # the converter would write linear scaling keys

    tokens, scores, types, sp = vocabulary(name, directory / "tokenizer.model", hp["vocab_size"])
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(hp["bos_token_id"])
    w.add_eos_token_id(hp["eos_token_id"])
    w.add_unk_token_id(sp.unk_id())
    w.add_pad_token_id(hp["pad_token_id"])
    w.add_add_bos_token(True)
    w.add_add_sep_token(False)
    w.add_add_eos_token(False)
    if arch == gguf.MODEL_ARCH.GEMMA:
        w.add_eot_token_id(107)
    w.add_add_space_prefix(False)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    names = gguf.get_tensor_name_map(arch, hp["num_hidden_layers"])
    stored = {}
    for hf_name, data in read_safetensors(directory).items():
        assert hf_name != "lm_head.weight"  # tied; the converter would skip it
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight",))
        assert gguf_name is not None, hf_name
        if hf_name.endswith("norm.weight"):
            data = data + np.float32(1)
        if arch == gguf.MODEL_ARCH.GEMMA3 and hf_name == "model.embed_tokens.weight":
            data = data[:len(tokens)]  # the converter drops rows past the vocabulary (none here)
        qtype = QUANTIZED[name].get(gguf_name, T.F32)
        assert qtype == T.F32 or (data.ndim == 2 and not gguf_name.endswith("norm.weight"))
        w.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        stored[gguf_name] = {"hf": hf_name, "type": qtype.name, "shape": list(data.shape)}
    assert set(QUANTIZED[name]) <= set(stored), name
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored, types, arch_name


def check_read_back(name, path, stored, arch_name):
    """gguf-py reads back what was meant: F32 tensors bit for bit (norms as 1 + w)."""
    reader = gguf.GGUFReader(path)
    source = read_safetensors(MODELS / name)
    assert reader.fields["general.architecture"].contents() == arch_name, path
    assert len(reader.tensors) == len(stored), path
    for t in reader.tensors:
        want = source[stored[t.name]["hf"]]
        if t.name.endswith("norm.weight"):
            want = want + np.float32(1)
        got = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(want.shape)
        if t.tensor_type == T.F32:
            assert np.array_equal(got, want), t.name
        else:
            assert np.abs(got - want).max() <= np.abs(want).max() / 100, t.name


def llama_cpp_checks(name, path):
    """llama.cpp (an independent reader) loads the file: its tokenizer against SentencePiece on
    tokenizer.model, and its logits against transformers' (the HF fixture's logits_<i>.npy)."""
    import llama_cpp
    result = {"tokenizer": [], "logits_max_error_over_max_logit": []}
    sp = sentencepiece.SentencePieceProcessor(model_file=str(MODELS / name / "tokenizer.model"))
    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    for text in CHECK_TEXTS:
        theirs = vocab.tokenize(text.encode(), add_bos=True, special=True)
        ours = [sp.bos_id()] + sp.encode(text)
        back = vocab.detokenize(theirs[1:], special=True).decode()
        result["tokenizer"].append({"text": text, "same_ids": theirs == ours,
                                    "detokenizes_back": back == text})
    del vocab
    reference = json.loads((MODELS / name / "reference.json").read_text())
    # f32 KV cache and no flash attention, so only the weights' own rounding remains.
    model = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_batch=64, logits_all=True,
                            type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
                            flash_attn=False, n_threads=2, verbose=False)
    for i, tokens in enumerate(reference["sequences"]):
        model.reset()
        model.eval(tokens)
        theirs = np.array(model.scores[:len(tokens)], dtype=np.float32)
        want = np.load(MODELS / name / f"logits_{i}.npy")
        result["logits_max_error_over_max_logit"].append(
            float(np.abs(theirs - want).max() / np.abs(want).max()))
    del model
    return result


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main():
    check_versions()
    llama_cpp = llama_cpp_version()
    provenance = {
        "script": "tools/golden/make_gemma_gguf_fixtures.py",
        "versions": {**PINNED, "llama_cpp_python (checks only)": llama_cpp},
        "notes": [
            "written as llama.cpp's convert_hf_to_gguf.py writes Gemma files; see the script's "
            "docstring for each convention and where it comes from",
            "norm tensors (names ending in norm.weight) hold 1 + w in f32",
            "no GGUF key holds query_pre_attn_scalar: llama.cpp uses head_dim (hidden/heads for "
            "27B), so tiny-gemma2.gguf (HF query_pre_attn_scalar 20, head_dim 16) describes the "
            "model with scale 16^-1/2",
            "token types: <unk> is CONTROL (3) in gemma2/gemma3 (a Gemma tokenizer_config.json "
            "marks it special), UNKNOWN (2) in gemma1 (not listed there)",
            "llama_cpp.logits_max_error_over_max_logit: llama.cpp (f32 KV cache) against the "
            "fixture's transformers logits. gemma1 (all F32) 3e-4: llama.cpp's own arithmetic "
            "(its GELU is an f16 table); gemma3 ~1e-2: plus the Q8_0/F16 tensors (llama.cpp "
            "also quantizes the activations that meet them); gemma2 5e-2 to 9e-2: transformers "
            "scales attention by 20^-1/2, llama.cpp by 16^-1/2 (print_info f_attn_scale 0.25). "
            "Against transformers running the model the file describes (query_pre_attn_scalar "
            "16, the file's rounded Q8_0/F16 values) llama.cpp differs by 5e-3 to 9e-3 (gemma2) "
            "and 4e-3 to 5.5e-3 (gemma3): a one-off check with torch 2.9.1 and transformers "
            "4.57.1, not part of this script",
        ],
        "files": {},
    }
    for name in ("gemma1", "gemma2", "gemma3"):
        path = OUT / f"tiny-{name}.gguf"
        stored, types, arch_name = write_gguf(name, path)
        check_read_back(name, path, stored, arch_name)
        entry = {
            "source": f"tests/fixtures/models/{name}",
            "sha256": sha256(path),
            "bytes": path.stat().st_size,
            "tensors": len(stored),
            "not_f32": {k: v["type"] for k, v in stored.items() if v["type"] != "F32"},
            "token_types_of_ids_0_to_6": [int(t) for t in types[:7]],
        }
        if llama_cpp:
            entry["llama_cpp"] = llama_cpp_checks(name, path)
            bad = [c for c in entry["llama_cpp"]["tokenizer"]
                   if not (c["same_ids"] and c["detokenizes_back"])]
            assert not bad, f"{path.name}: llama.cpp and SentencePiece tokenize differently: {bad}"
        provenance["files"][path.name] = entry
        print(f"{path.name}: {entry['bytes']} bytes, {entry['tensors']} tensors, "
              f"not F32 {entry['not_f32']}")
        if llama_cpp:
            print(f"  llama.cpp: {entry['llama_cpp']}")
    PROVENANCE.write_text(json.dumps(provenance, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
