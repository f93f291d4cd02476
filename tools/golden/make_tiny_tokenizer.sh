#!/usr/bin/env bash
# Rebuilds tests/fixtures/tokenizer/tiny_gemma.model: a 512-piece SentencePiece BPE model laid out
# like Gemma's tokenizer (<pad>=0, <eos>=1, <bos>=2, <unk>=3, then <mask>, <start_of_turn>,
# <end_of_turn> as user-defined pieces 4-6, byte fallback, no dummy prefix, identity
# normalisation, digits split), trained with Debian's spm_train (package sentencepiece 0.1.97) on
# the licence texts every Debian system has. The tests hard-code ids this model produces.
#
# The model records its training input path and model prefix. The committed file was trained with
# --input=/tmp/corpus.txt --model_prefix=/tmp/tiny_gemma_tokenizer; with those two paths the
# command below reproduces it byte for byte. This script trains in a private temporary directory
# instead, so its output differs from the committed file in those two strings only: it compares
# the pieces and scores (spm_export_vocab) and keeps the committed file when they agree.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat /usr/share/common-licenses/{GPL-3,Apache-2.0,MPL-2.0} >"$work/corpus.txt"
spm_train --input="$work/corpus.txt" --model_prefix="$work/tiny_gemma_tokenizer" --model_type=bpe \
  --vocab_size=512 --byte_fallback=true --character_coverage=1.0 --split_digits=true \
  --normalization_rule_name=identity --add_dummy_prefix=false --remove_extra_whitespaces=false \
  --allow_whitespace_only_pieces=true --num_threads=2 --pad_id=0 --eos_id=1 --bos_id=2 --unk_id=3 \
  --pad_piece='<pad>' --eos_piece='<eos>' --bos_piece='<bos>' --unk_piece='<unk>' \
  --user_defined_symbols='<mask>,<start_of_turn>,<end_of_turn>' 2>"$work/train.log"

fixture=tests/fixtures/tokenizer/tiny_gemma.model
spm_export_vocab --model="$work/tiny_gemma_tokenizer.model" >"$work/new.vocab"
if [[ -f $fixture ]] && spm_export_vocab --model="$fixture" | cmp -s - "$work/new.vocab"; then
  echo "$fixture: same pieces and scores as a fresh training run; kept"
else
  cp "$work/tiny_gemma_tokenizer.model" "$fixture"
  echo "$fixture: REPLACED with different pieces; token ids in the tests and fixtures change" >&2
fi
