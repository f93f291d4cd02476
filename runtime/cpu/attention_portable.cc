// Attention microkernels in plain C++ for baseline x86-64 (and any head_dim).
#include "runtime/cpu/attention_kernels.h"

namespace gemmapod::cpu::internal {

void AttentionScoresPortable(const float* const* q_rows, int rows, const float* const* keys,
                             int64_t head_dim, float* scores) {
  constexpr int kLanes = 8;  // independent partial sums, which g++ keeps in SSE registers
  for (int r = 0; r < rows; ++r) {
    const float* q = q_rows[r];
    for (int j = 0; j < kAttentionKeyBlock; ++j) {
      const float* k = keys[j];
      float part[kLanes] = {};
      int64_t e = 0;
      for (; e + kLanes <= head_dim; e += kLanes) {
        for (int l = 0; l < kLanes; ++l) part[l] += q[e + l] * k[e + l];
      }
      float sum = 0;
      for (; e < head_dim; ++e) sum += q[e] * k[e];
      for (int l = 0; l < kLanes; ++l) sum += part[l];
      scores[r * kAttentionKeyBlock + j] = sum;
    }
  }
}

void AttentionAccumulatePortable(float* acc, int rows, const float* rescale, const float* p,
                                 const float* const* values, int64_t head_dim) {
  for (int r = 0; r < rows; ++r) {
    float* o = acc + r * head_dim;
    const float c = rescale[r];
    if (c != 1.0f) {
      for (int64_t e = 0; e < head_dim; ++e) o[e] *= c;
    }
    for (int j = 0; j < kAttentionKeyBlock; ++j) {
      const float w = p[r * kAttentionKeyBlock + j];
      if (w == 0.0f) continue;
      const float* v = values[j];
      for (int64_t e = 0; e < head_dim; ++e) o[e] += w * v[e];
    }
  }
}

}  // namespace gemmapod::cpu::internal
