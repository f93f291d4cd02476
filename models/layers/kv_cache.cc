#include "models/layers/kv_cache.h"

#include <algorithm>

#include "models/layers/device_tensors.h"
#include "runtime/error.h"

namespace gemmapod {

namespace {

int64_t CapacityOf(const ModelConfig& config, int64_t layer, int64_t max_context) {
  return config.layer_kinds[static_cast<size_t>(layer)] == AttentionKind::kSliding
             ? std::min(config.sliding_window, max_context)
             : max_context;
}

}  // namespace

size_t KvCache::BytesFor(const ModelConfig& config, int64_t num_sequences, int64_t max_context,
                         int64_t kv_heads, int64_t first_layer, int64_t end_layer) {
  size_t per_sequence = 0;
  for (int64_t l = first_layer; l < end_layer; ++l) {
    per_sequence +=
        2 * static_cast<size_t>(CapacityOf(config, l, max_context) * kv_heads * config.head_dim);
  }
  return per_sequence * static_cast<size_t>(num_sequences) * sizeof(float);
}

KvCache::KvCache(const ModelConfig& config, int64_t num_sequences, int64_t max_context,
                 int64_t kv_heads, int64_t first_layer, int64_t end_layer, Device device)
    : max_context_(max_context),
      kv_heads_(kv_heads),
      first_layer_(first_layer),
      head_dim_(config.head_dim) {
  GEMMAPOD_CHECK(num_sequences > 0, "KV cache: needs at least one sequence, got ", num_sequences);
  GEMMAPOD_CHECK(max_context > 0, "KV cache: max_context must be positive, got ", max_context);
  GEMMAPOD_CHECK(max_context <= config.max_position_embeddings, "KV cache: max_context ",
                 max_context, " exceeds the model's max_position_embeddings ",
                 config.max_position_embeddings);
  GEMMAPOD_CHECK(kv_heads > 0, "KV cache: kv_heads must be positive, got ", kv_heads);
  GEMMAPOD_CHECK(0 <= first_layer && first_layer <= end_layer && end_layer <= config.num_layers,
                 "KV cache: layers [", first_layer, ", ", end_layer, ") outside the model's ",
                 config.num_layers);
  const size_t row = static_cast<size_t>(kv_heads_ * head_dim_);
  for (int64_t l = first_layer; l < end_layer; ++l) {
    const int64_t cap = CapacityOf(config, l, max_context);
    capacity_.push_back(cap);
    offset_.push_back(per_sequence_);
    per_sequence_ += 2 * static_cast<size_t>(cap) * row;  // keys then values
  }
  lengths_.assign(static_cast<size_t>(num_sequences), 0);
  storage_ = ZerosOn(device, {static_cast<int64_t>(per_sequence_) * num_sequences});
}

int64_t KvCache::length(int64_t sequence) const {
  GEMMAPOD_CHECK(sequence >= 0 && sequence < num_sequences(), "KV cache: sequence ", sequence,
                 " outside [0, ", num_sequences(), ")");
  return lengths_[static_cast<size_t>(sequence)];
}

void KvCache::CheckRoom(int64_t sequence, int64_t count) const {
  const int64_t have = length(sequence);
  GEMMAPOD_CHECK(have + count <= max_context_, "context full: sequence ", sequence, " holds ", have,
                 " tokens and ", count, " more do not fit in max_context ", max_context_);
}

void KvCache::Advance(int64_t sequence, int64_t count) {
  CheckRoom(sequence, count);
  lengths_[static_cast<size_t>(sequence)] += count;
}

void KvCache::Reset(int64_t sequence) {
  length(sequence);  // range check
  lengths_[static_cast<size_t>(sequence)] = 0;
}

size_t KvCache::LocalLayer(int64_t layer) const {
  const int64_t end = first_layer_ + static_cast<int64_t>(capacity_.size());
  GEMMAPOD_CHECK(layer >= first_layer_ && layer < end, "KV cache: layer ", layer,
                 " is not held here (layers [", first_layer_, ", ", end, "))");
  return static_cast<size_t>(layer - first_layer_);
}

int64_t KvCache::LayerCapacity(int64_t layer) const { return capacity_[LocalLayer(layer)]; }

LayerKv KvCache::Layer(int64_t sequence, int64_t layer) {
  length(sequence);
  const size_t l = LocalLayer(layer);
  const int64_t base =
      sequence * static_cast<int64_t>(per_sequence_) + static_cast<int64_t>(offset_[l]);
  const int64_t row = kv_heads_ * head_dim_, half = capacity_[l] * row;
  return {storage_.Slice(base, base + half).Reshape({capacity_[l], row}),
          storage_.Slice(base + half, base + 2 * half).Reshape({capacity_[l], row}), capacity_[l]};
}

size_t KvCache::LayerBytes(int64_t layer) const {
  return 2 * static_cast<size_t>(capacity_[LocalLayer(layer)] * kv_heads_ * head_dim_) *
         sizeof(float);
}

}  // namespace gemmapod
