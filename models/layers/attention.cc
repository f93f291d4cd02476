#include "models/layers/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/cpu/ops.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

inline float Dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

}  // namespace

void CachedSelfAttention(const AttentionShape& s, const float* q, const float* k_new,
                         const float* v_new, int64_t n, int64_t start, LayerKv cache, float* out) {
  GEMMAPOD_CHECK(s.num_kv_heads > 0 && s.num_heads % s.num_kv_heads == 0,
                 "attention: ", s.num_heads, " query heads do not group over ", s.num_kv_heads,
                 " key/value heads");
  const int64_t H = s.num_heads, KV = s.num_kv_heads, hd = s.head_dim;
  const int64_t group = H / KV;
  const int64_t cap = cache.capacity;
  // The oldest position a query of this chunk may need must still be in the ring.
  GEMMAPOD_CHECK(s.window > 0 ? s.window <= cap || start + n <= cap : start + n <= cap,
                 "attention: cache capacity ", cap, " cannot hold the keys positions up to ",
                 start + n, " need");

  auto key_row = [&](int64_t j, int64_t kvh) {
    return j < start ? cache.keys + ((j % cap) * KV + kvh) * hd
                     : k_new + ((j - start) * KV + kvh) * hd;
  };
  auto value_row = [&](int64_t j, int64_t kvh) {
    return j < start ? cache.values + ((j % cap) * KV + kvh) * hd
                     : v_new + ((j - start) * KV + kvh) * hd;
  };

#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t p = start + i;
        const int64_t first = s.window > 0 ? std::max<int64_t>(0, p - s.window + 1) : 0;
        const int64_t count = p - first + 1;
        const int64_t kvh = h / group;
        const float* qr = q + (i * H + h) * hd;
        scores.resize(static_cast<size_t>(count));
        float max_score = -INFINITY;
        for (int64_t j = first; j <= p; ++j) {
          scores[static_cast<size_t>(j - first)] = Dot(qr, key_row(j, kvh), hd) * s.scale;
        }
        // Soft-cap before the mask (the mask is the window bounds above), softmax in f32.
        if (s.softcap > 0) cpu::SoftCap(scores.data(), s.softcap, scores.data(), count);
        for (int64_t j = 0; j < count; ++j) max_score = std::max(max_score, scores[j]);
        const float inv = 1.0f / cpu::ExpShiftedSum(scores.data(), max_score, count);
        float* o = out + (i * H + h) * hd;
        std::fill(o, o + hd, 0.0f);
        for (int64_t j = first; j <= p; ++j) {
          const float w = scores[static_cast<size_t>(j - first)] * inv;
          const float* vr = value_row(j, kvh);
#pragma omp simd
          for (int64_t e = 0; e < hd; ++e) o[e] += w * vr[e];
        }
      }
    }
  }

  // Store the new keys and values; a chunk longer than a sliding ring keeps only its tail.
  const size_t row = static_cast<size_t>(KV * hd);
  for (int64_t i = std::max<int64_t>(0, n - cap); i < n; ++i) {
    const int64_t slot = (start + i) % cap;
    std::memcpy(cache.keys + slot * KV * hd, k_new + i * KV * hd, row * sizeof(float));
    std::memcpy(cache.values + slot * KV * hd, v_new + i * KV * hd, row * sizeof(float));
  }
}

void FullAttention(const AttentionShape& s, const float* q, int64_t n, const float* k,
                   const float* v, int64_t m, const uint8_t* key_valid, float* out) {
  GEMMAPOD_CHECK(s.num_kv_heads > 0 && s.num_heads % s.num_kv_heads == 0,
                 "attention: ", s.num_heads, " query heads do not group over ", s.num_kv_heads,
                 " key/value heads");
  const int64_t H = s.num_heads, KV = s.num_kv_heads, hd = s.head_dim;
  const int64_t group = H / KV;
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < H; ++h) {
        // Keys [first, end) are inside the window; padding among them is skipped.
        const int64_t first = s.window > 0 ? std::max<int64_t>(0, i - s.window + 1) : 0;
        const int64_t end = s.window > 0 ? std::min<int64_t>(m, i + s.window) : m;
        const int64_t kvh = h / group;
        const float* qr = q + (i * H + h) * hd;
        float* o = out + (i * H + h) * hd;
        std::fill(o, o + hd, 0.0f);
        scores.clear();
        for (int64_t j = first; j < end; ++j) {
          if (key_valid[j] == 0) continue;
          scores.push_back(Dot(qr, k + (j * KV + kvh) * hd, hd) * s.scale);
        }
        const int64_t count = static_cast<int64_t>(scores.size());
        if (count == 0) continue;  // nothing to attend to: zeros
        // Soft-cap before the mask (masked keys were left out above), softmax in f32.
        if (s.softcap > 0) cpu::SoftCap(scores.data(), s.softcap, scores.data(), count);
        float max_score = -INFINITY;
        for (int64_t j = 0; j < count; ++j) max_score = std::max(max_score, scores[j]);
        const float inv = 1.0f / cpu::ExpShiftedSum(scores.data(), max_score, count);
        size_t next = 0;
        for (int64_t j = first; j < end; ++j) {
          if (key_valid[j] == 0) continue;
          const float w = scores[next++] * inv;
          const float* vr = v + (j * KV + kvh) * hd;
#pragma omp simd
          for (int64_t e = 0; e < hd; ++e) o[e] += w * vr[e];
        }
      }
    }
  }
}

}  // namespace gemmapod
