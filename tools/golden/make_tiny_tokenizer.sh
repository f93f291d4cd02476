#!/usr/bin/env bash
# Rebuilds tests/fixtures/tokenizer/tiny_gemma.model: a 512-piece SentencePiece BPE model laid out
# like Gemma's tokenizer (<pad>=0, <eos>=1, <bos>=2, <unk>=3, then <mask>, <start_of_turn>,
# <end_of_turn> as user-defined pieces 4-6, byte fallback, no dummy prefix, identity
# normalisation, digits split), trained with Debian's spm_train (sentencepiece 0.1.97) on the
# licence texts every Debian system has. The tests hard-code ids this model produces: rebuilding
# it changes them.
set -euo pipefail
cd "$(dirname "$0")/../.."
corpus=$(mktemp)
trap 'rm -f "$corpus"' EXIT
cat /usr/share/common-licenses/{GPL-3,Apache-2.0,MPL-2.0} >"$corpus"
spm_train --input="$corpus" --model_prefix=/tmp/tiny_gemma_tokenizer --model_type=bpe \
  --vocab_size=512 --byte_fallback=true --character_coverage=1.0 --split_digits=true \
  --normalization_rule_name=identity --add_dummy_prefix=false --remove_extra_whitespaces=false \
  --allow_whitespace_only_pieces=true --num_threads=2 --pad_id=0 --eos_id=1 --bos_id=2 --unk_id=3 \
  --pad_piece='<pad>' --eos_piece='<eos>' --bos_piece='<bos>' --unk_piece='<unk>' \
  --user_defined_symbols='<mask>,<start_of_turn>,<end_of_turn>'
mv /tmp/tiny_gemma_tokenizer.model tests/fixtures/tokenizer/tiny_gemma.model
rm -f /tmp/tiny_gemma_tokenizer.vocab
