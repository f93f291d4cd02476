// Backward kernels of the layers' elementwise and reduction operations, on dense f32 arrays: the
// gradient of each forward in runtime/cpu/ops.h with respect to its inputs (and weights), the
// steps of the cross-entropy loss, and the optimizer's update. Rows are independent and threaded;
// per-row sums run in one order whatever the thread count.
#pragma once

#include <cstdint>

namespace gemmapod::cpu {

// Gemma's RMSNorm y = x * r * (1 + w), r = 1 / sqrt(mean(x^2) + eps), over rows of x [rows, d]:
// dx = r * (g - n * mean(g * n)) with g = dy * (1 + w) and n = x * r; dweight += sum_rows dy * n.
void RmsNormBackward(const float* x, const float* weight, const float* dy, int64_t rows,
                     int64_t dim, float eps, float* dx, float* dweight);

// dx = dy * gelu_tanh'(x).
void GeluTanhBackward(const float* x, const float* dy, float* dx, int64_t n);

// y = cap * tanh(x / cap) given as its output y: dx = dy * (1 - (y / cap)^2).
void SoftCapBackward(const float* y, const float* dy, float cap, float* dx, int64_t n);

// dst[rows[i], :] += src[i, :] for every i (rows of -1 skipped), in order of i: the embedding
// lookup's gradient, where a token may repeat.
void ScatterAddRows(const float* src, const int64_t* rows, int64_t count, int64_t width,
                    float* dst);

// out[j] (+)= sum_r x[r, j] over rows of x [rows, n] (a bias gradient).
void SumRows(const float* x, int64_t rows, int64_t n, float* out, bool accumulate);

// Two of the three steps of vocabulary-parallel cross-entropy over a shard of logits [rows, shard]
// holding ids [first_id, first_id + shard) (runtime/ops/grad_ops.h says what each computes; the
// row maxima are runtime/cpu/ops.h's RowMax).
void ShardLossTerms(const float* logits, int64_t rows, int64_t shard, const float* row_max,
                    const int32_t* targets, int64_t first_id, float* sum_exp, float* target_logit);
// Row r's gradient is scaled by grad_scale * row_scale[r] (row_scale null: grad_scale alone).
void ShardLossGrad(const float* logits, int64_t rows, int64_t shard, const float* log_sum_exp,
                   const int32_t* targets, int64_t first_id, float grad_scale,
                   const float* row_scale, float* dlogits);

// One AdamW step over n parameters (runtime/ops/grad_ops.h, AdamWStep, has the formula).
void AdamWUpdate(float* master, float* m, float* v, const float* grad, int64_t n, float lr,
                 float beta1, float beta2, float eps, float weight_decay, int64_t step,
                 float grad_scale);

// sum of x[i]^2 in double, in one order whatever the thread count (blocks summed in order).
double SumOfSquares(const float* x, int64_t n);

}  // namespace gemmapod::cpu
