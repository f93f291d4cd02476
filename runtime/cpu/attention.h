// Attention on the CPU: one kernel family for every attention of the Gemma models (causal
// self-attention over a KV cache, sliding windows, bidirectional encoders, cross-attention,
// Griffin's local MQA over its ring). Flash-attention's scheme: keys are visited in blocks of 16
// with an online softmax, so no query ever holds a row of scores; a key/value block is read once
// for every query head that shares it (GQA/MQA).
//
// Keys are named by position. The caller describes where each position's key and value rows live
// (runs of consecutive positions, so a ring buffer is two runs and the chunk's new keys a third)
// and which positions each query sees: [lo, hi), minus the rows a run marks invalid (padding).
//
// The result of a query head depends only on its own query, its visible keys and values, and the
// problem's scale and soft-cap: never on the number of heads, queries or threads. Keys are summed
// in blocks fixed by absolute position (16 keys, merged per 512), so a tensor-parallel rank
// holding some of the heads, a batch of one sequence or of many, and any OMP_NUM_THREADS give the
// same bits.
#pragma once

#include <cstdint>

#include "runtime/attention_problem.h"

namespace gemmapod::cpu {

// The problem's shape (runtime/attention_problem.h); the CPU kernel takes raw key rows, so its
// first_kv_head must be 0 (the caller points the runs at the first head read).
using AttentionProblem = gemmapod::AttentionProblem;

// Positions [first, first + count): the key of position p and key/value head g starts at
// keys + (p - first) * kv_row_stride + g * head_dim, its value likewise in `values`.
// valid, when not null, has `count` entries; a 0 hides that position from every query.
struct KeyRun {
  const float* keys = nullptr;
  const float* values = nullptr;
  int64_t first = 0;
  int64_t count = 0;
  const uint8_t* valid = nullptr;
};

// out[i, h, :] = softmax_j(score(q[i, h], k[j])) . v[j] over the positions j that query i sees:
// lo[i] <= j < hi[i], held by a run, and valid there. q and out: [n, H, hd] dense. Runs must not
// overlap (any order). A query that sees no key outputs zeros. Throws gemmapod::Error on a
// malformed problem. Parallel over heads, queries and (long contexts) key ranges with OpenMP.
void Attention(const AttentionProblem& problem, const float* q, int64_t n, const KeyRun* runs,
               int64_t num_runs, const int64_t* lo, const int64_t* hi, float* out);

}  // namespace gemmapod::cpu
