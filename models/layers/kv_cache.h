// KvCache: the keys and values of every sequence's past tokens, per layer, sized by what each
// layer kind can ever look at. A global layer keeps the whole context (up to max_context); a
// sliding layer keeps only its window, as a ring buffer, so its memory never grows past
// window x kv_heads x head_dim however long the sequence gets.
#pragma once

#include <cstdint>
#include <vector>

#include "models/gemma/model_config.h"
#include "runtime/tensor.h"

namespace gemmapod {

// One layer's store for one sequence. Position p lives in slot p % capacity.
struct LayerKv {
  Tensor keys;    // [capacity, kv_heads * head_dim], a view of the cache's storage
  Tensor values;  // [capacity, kv_heads * head_dim]
  int64_t capacity = 0;
};

class KvCache {
 public:
  // `kv_heads` is the number of key/value heads this rank holds (all of them on one rank);
  // layers [first_layer, end_layer) are the ones this rank runs (a pipeline stage's). Layer()
  // takes the model's layer index.
  // The keys and values live on `device`.
  KvCache(const ModelConfig& config, int64_t num_sequences, int64_t max_context, int64_t kv_heads,
          int64_t first_layer, int64_t end_layer, Device device = Device::Cpu());
  KvCache(const ModelConfig& config, int64_t num_sequences, int64_t max_context)
      : KvCache(config, num_sequences, max_context, config.num_kv_heads, 0, config.num_layers) {}

  // Bytes the cache of this shape would hold, without allocating it (for `gemmapod plan`).
  static size_t BytesFor(const ModelConfig& config, int64_t num_sequences, int64_t max_context,
                         int64_t kv_heads, int64_t first_layer, int64_t end_layer);

  int64_t num_sequences() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t max_context() const { return max_context_; }
  int64_t kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return head_dim_; }

  // Tokens of `sequence` already stored (the position of its next token).
  int64_t length(int64_t sequence) const;
  // Checks that `count` more tokens fit in the context of `sequence` (message names both).
  void CheckRoom(int64_t sequence, int64_t count) const;
  // Marks `count` more tokens as stored, once every layer has written them.
  void Advance(int64_t sequence, int64_t count);
  // Forgets a sequence so its slot can hold a new one.
  void Reset(int64_t sequence);

  LayerKv Layer(int64_t sequence, int64_t layer);
  int64_t LayerCapacity(int64_t layer) const;

  // Bytes of keys and values held, for all sequences and layers (fixed at construction).
  size_t bytes() const { return storage_.nbytes(); }
  // Bytes one sequence's layer holds.
  size_t LayerBytes(int64_t layer) const;

 private:
  size_t LocalLayer(int64_t layer) const;  // index into capacity_/offset_; checks the range

  int64_t max_context_;
  int64_t kv_heads_;
  int64_t first_layer_;
  int64_t head_dim_;
  std::vector<int64_t> capacity_;  // per layer held
  std::vector<size_t> offset_;     // per layer: start of sequence 0's keys in storage_
  size_t per_sequence_ = 0;        // floats one sequence holds over all layers
  std::vector<int64_t> lengths_;
  Tensor storage_;  // f32, every sequence's layers one after another
};

}  // namespace gemmapod
