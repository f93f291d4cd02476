// The backward of attention (runtime/cpu/attention.h's forward) over one run of keys at positions
// [0, m), the case training has: a sequence attending to itself (causal or a sliding window, by
// lo/hi) or a decoder attending to its encoder's output. It recomputes each query's softmax from
// q and k (flash-attention's backward keeps no score matrix), then
//   dv_j += p_j dout_i,  dp_j = dout_i . v_j,  dz_j = p_j (dp_j - sum_l p_l dp_l),
//   ds_j = dz_j (1 - tanh^2(s_j / cap)) with a soft-cap,  dq_i = scale sum_j ds_j k_j,
//   dk_j += scale ds_j q_i.
// Threads split the query heads: each writes its own rows of dq and its own partial dk and dv,
// and the partials of a key/value head's group are added in head order afterwards, so the result
// is the same bits for any thread count (and MQA, one key/value head, still uses every thread).
#pragma once

#include <cstdint>

#include "runtime/attention_problem.h"

namespace gemmapod::cpu {

// q, dout, dq: [n, H * hd]; k, v: [m rows of kv_row_stride floats], key/value head g at
// (first_kv_head + g) * hd within a row; dk, dv: [m, KV * hd] (this problem's heads only).
// Query i sees positions [lo[i], hi[i]); a query that sees none contributes nothing. dq, dk and
// dv are overwritten.
void AttentionBackward(const AttentionProblem& p, const float* q, int64_t n, const float* k,
                       const float* v, int64_t m, const float* dout, const int64_t* lo,
                       const int64_t* hi, float* dq, float* dk, float* dv);

}  // namespace gemmapod::cpu
