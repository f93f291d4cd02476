#include "models/layers/kv_cache.h"

#include <algorithm>

#include "models/layers/device_tensors.h"
#include "runtime/error.h"

namespace gemmapod {

namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

KvGroup GroupOfLayer(const ModelConfig& config, int64_t layer) {
  return config.layer_kinds[static_cast<size_t>(layer)] == AttentionKind::kSliding ? kSlidingKv
                                                                                   : kGlobalKv;
}

// Fixed slots: blocks one sequence owns in `group`. A sliding ring of R rows reuses a row every R
// positions; a chunk at `start` reads back to start - window + 1 before it writes, so R needs
// window - 1 rows (rounded up to blocks).
int64_t FixedBlocksPerSequence(const ModelConfig& config, KvGroup group, int64_t block_tokens,
                               int64_t max_context) {
  const int64_t whole = CeilDiv(max_context, block_tokens);
  if (group == kGlobalKv) return whole;
  return std::min(whole, std::max<int64_t>(1, CeilDiv(config.sliding_window - 1, block_tokens)));
}

}  // namespace

size_t KvCache::BlockBytes(const ModelConfig& config, KvGroup group, int64_t block_tokens,
                           int64_t kv_heads, int64_t first_layer, int64_t end_layer) {
  size_t layers = 0;
  for (int64_t l = first_layer; l < end_layer; ++l) layers += GroupOfLayer(config, l) == group;
  return layers * 2 * static_cast<size_t>(block_tokens * kv_heads * config.head_dim) *
         sizeof(float);
}

int64_t KvCache::BlocksFor(const ModelConfig& config, KvGroup group, int64_t block_tokens,
                           int64_t tokens, int64_t chunk) {
  const int64_t whole = CeilDiv(tokens, block_tokens);
  if (group == kGlobalKv) return whole;
  // The window behind a chunk and the chunk, which may straddle one more block boundary.
  return std::min(whole, CeilDiv(config.sliding_window - 1 + chunk, block_tokens) + 1);
}

KvPool KvCache::PoolFor(const ModelConfig& config, int64_t tokens, int64_t sequences,
                        int64_t context, int64_t chunk, int64_t block_tokens) {
  GEMMAPOD_CHECK(tokens > 0 && sequences > 0 && context > 0 && chunk > 0 && block_tokens > 0,
                 "KV pool: ", tokens, " tokens for ", sequences, " sequences of ", context,
                 " (chunks of ", chunk, ", blocks of ", block_tokens, ")");
  KvPool pool;
  pool.block_tokens = block_tokens;
  pool.sliding_window = config.sliding_window;
  bool has[kKvGroups] = {false, false};
  for (int64_t l = 0; l < config.num_layers; ++l) has[GroupOfLayer(config, l)] = true;
  const int64_t global = CeilDiv(tokens, block_tokens);
  if (has[kGlobalKv]) pool.blocks[kGlobalKv] = global;
  if (has[kSlidingKv]) {
    pool.blocks[kSlidingKv] =
        std::min(global, sequences * BlocksFor(config, kSlidingKv, block_tokens, context, chunk));
  }
  return pool;
}

size_t KvCache::PoolBytes(const ModelConfig& config, const KvPool& pool, int64_t kv_heads,
                          int64_t first_layer, int64_t end_layer) {
  size_t bytes = 0;
  for (KvGroup g : {kGlobalKv, kSlidingKv}) {
    bytes += BlockBytes(config, g, pool.block_tokens, kv_heads, first_layer, end_layer) *
             static_cast<size_t>(pool.blocks[g]);
  }
  return bytes;
}

size_t KvCache::BytesFor(const ModelConfig& config, int64_t num_sequences, int64_t max_context,
                         int64_t kv_heads, int64_t first_layer, int64_t end_layer,
                         int64_t block_tokens) {
  size_t bytes = 0;
  for (KvGroup g : {kGlobalKv, kSlidingKv}) {
    bytes += BlockBytes(config, g, block_tokens, kv_heads, first_layer, end_layer) *
             static_cast<size_t>(FixedBlocksPerSequence(config, g, block_tokens, max_context));
  }
  return bytes * static_cast<size_t>(num_sequences);
}

KvCache::KvCache(const ModelConfig& config, int64_t num_sequences, int64_t max_context,
                 int64_t kv_heads, int64_t first_layer, int64_t end_layer, Device device,
                 int64_t block_tokens)
    : max_context_(max_context),
      kv_heads_(kv_heads),
      first_layer_(first_layer),
      end_layer_(end_layer),
      head_dim_(config.head_dim),
      block_tokens_(block_tokens) {
  Init(config, num_sequences, max_context, first_layer, end_layer, nullptr, device);
}

KvCache::KvCache(const ModelConfig& config, int64_t num_sequences, int64_t max_context,
                 int64_t kv_heads, int64_t first_layer, int64_t end_layer, const KvPool& pool,
                 Device device)
    : max_context_(max_context),
      kv_heads_(kv_heads),
      first_layer_(first_layer),
      end_layer_(end_layer),
      head_dim_(config.head_dim),
      block_tokens_(pool.block_tokens),
      pooled_(true) {
  Init(config, num_sequences, max_context, first_layer, end_layer, pool.blocks, device);
}

void KvCache::Init(const ModelConfig& config, int64_t num_sequences, int64_t max_context,
                   int64_t first_layer, int64_t end_layer, const int64_t* pool_blocks,
                   Device device) {
  GEMMAPOD_CHECK(num_sequences > 0, "KV cache: needs at least one sequence, got ", num_sequences);
  GEMMAPOD_CHECK(max_context > 0, "KV cache: max_context must be positive, got ", max_context);
  GEMMAPOD_CHECK(max_context <= config.max_position_embeddings, "KV cache: max_context ",
                 max_context, " exceeds the model's max_position_embeddings ",
                 config.max_position_embeddings);
  GEMMAPOD_CHECK(kv_heads_ > 0, "KV cache: kv_heads must be positive, got ", kv_heads_);
  GEMMAPOD_CHECK(block_tokens_ > 0, "KV cache: block_tokens must be positive, got ", block_tokens_);
  GEMMAPOD_CHECK(0 <= first_layer && first_layer <= end_layer && end_layer <= config.num_layers,
                 "KV cache: layers [", first_layer, ", ", end_layer, ") outside the model's ",
                 config.num_layers);
  window_ = config.sliding_window;
  for (int64_t l = first_layer; l < end_layer; ++l) {
    Group& g = groups_[GroupOfLayer(config, l)];
    group_of_.push_back(GroupOfLayer(config, l));
    index_.push_back(static_cast<int64_t>(g.layers.size()));
    g.layers.push_back(l);
  }
  const int64_t row = kv_heads_ * head_dim_;
  for (int gi = 0; gi < kKvGroups; ++gi) {
    Group& g = groups_[gi];
    auto& tables = tables_[gi];
    tables.assign(static_cast<size_t>(num_sequences), {});
    if (pool_blocks != nullptr) {
      g.blocks = pool_blocks[gi];
      GEMMAPOD_CHECK(g.layers.empty() || g.blocks > 0, "KV cache: a pool of ", g.blocks, " ",
                     gi == kGlobalKv ? "global" : "sliding", " blocks for layers that need them");
    } else {
      g.blocks_per_sequence =
          FixedBlocksPerSequence(config, static_cast<KvGroup>(gi), block_tokens_, max_context);
      g.blocks = g.blocks_per_sequence * num_sequences;
      // Sequence s owns blocks [s * k, (s + 1) * k); a sliding ring maps block b to b mod k.
      const int64_t k = g.blocks_per_sequence, whole = CeilDiv(max_context, block_tokens_);
      for (int64_t s = 0; s < num_sequences; ++s) {
        for (int64_t b = 0; b < whole; ++b) {
          tables[static_cast<size_t>(s)].push_back(static_cast<int32_t>(s * k + b % k));
        }
      }
    }
    if (g.layers.empty()) g.blocks = 0;
    const int64_t elements =
        static_cast<int64_t>(g.layers.size()) * 2 * g.blocks * block_tokens_ * row;
    if (elements > 0) g.storage = ZerosOn(device, {elements});
  }
  lengths_.assign(static_cast<size_t>(num_sequences), 0);
}

int64_t KvCache::length(int64_t sequence) const {
  GEMMAPOD_CHECK(sequence >= 0 && sequence < num_sequences(), "KV cache: sequence ", sequence,
                 " outside [0, ", num_sequences(), ")");
  return lengths_[static_cast<size_t>(sequence)];
}

void KvCache::CheckAssigned(int64_t sequence, int64_t start, int64_t to) const {
  for (int gi = 0; gi < kKvGroups; ++gi) {
    if (groups_[gi].layers.empty()) continue;
    const int64_t lo = gi == kSlidingKv ? std::max<int64_t>(0, start - window_ + 1) : 0;
    const auto& table = tables_[gi][static_cast<size_t>(sequence)];
    for (int64_t b = lo / block_tokens_; b * block_tokens_ < to; ++b) {
      GEMMAPOD_CHECK(b < static_cast<int64_t>(table.size()) && table[static_cast<size_t>(b)] >= 0,
                     "KV cache: sequence ", sequence, " has no ",
                     gi == kGlobalKv ? "global" : "sliding", " block for positions ",
                     b * block_tokens_, "..", (b + 1) * block_tokens_ - 1);
    }
  }
}

void KvCache::CheckRoom(int64_t sequence, int64_t count) const {
  const int64_t have = length(sequence);
  GEMMAPOD_CHECK(have + count <= max_context_, "context full: sequence ", sequence, " holds ", have,
                 " tokens and ", count, " more do not fit in max_context ", max_context_);
  // What the chunk reads and writes: every past position (sliding: the window's).
  if (pooled_) CheckAssigned(sequence, have, have + count);
}

void KvCache::Advance(int64_t sequence, int64_t count) {
  CheckRoom(sequence, count);
  lengths_[static_cast<size_t>(sequence)] += count;
}

void KvCache::Reset(int64_t sequence) {
  length(sequence);  // range check
  lengths_[static_cast<size_t>(sequence)] = 0;
  if (pooled_) {
    for (auto& tables : tables_) tables[static_cast<size_t>(sequence)].clear();
  }
}

void KvCache::Assign(int64_t sequence, KvGroup group, int64_t first,
                     std::span<const int32_t> blocks) {
  length(sequence);
  GEMMAPOD_CHECK(pooled_, "KV cache: blocks are assigned only in a shared pool");
  GEMMAPOD_CHECK(group == kGlobalKv || group == kSlidingKv, "KV cache: no group ", int{group});
  const Group& g = groups_[group];
  if (g.layers.empty()) return;
  const int64_t end = first + static_cast<int64_t>(blocks.size());
  GEMMAPOD_CHECK(first >= 0 && end * block_tokens_ <= max_context_ + block_tokens_ - 1,
                 "KV cache: blocks [", first, ", ", end, ") of sequence ", sequence,
                 " reach past the context of ", max_context_);
  auto& table = tables_[group][static_cast<size_t>(sequence)];
  if (static_cast<int64_t>(table.size()) < end) table.resize(static_cast<size_t>(end), -1);
  for (size_t i = 0; i < blocks.size(); ++i) {
    GEMMAPOD_CHECK(blocks[i] >= -1 && blocks[i] < g.blocks, "KV cache: block ", blocks[i],
                   " outside the pool of ", g.blocks);
    table[static_cast<size_t>(first) + i] = blocks[i];
  }
}

void KvCache::Place(int64_t sequence, int64_t length) {
  this->length(sequence);
  GEMMAPOD_CHECK(pooled_, "KV cache: only a shared pool places a sequence on a cached prefix");
  GEMMAPOD_CHECK(length >= 0 && length <= max_context_, "KV cache: cannot place sequence ",
                 sequence, " at position ", length, " of a context of ", max_context_);
  CheckAssigned(sequence, length, length);
  lengths_[static_cast<size_t>(sequence)] = length;
}

int KvCache::GroupOf(int64_t layer) const {
  GEMMAPOD_CHECK(layer >= first_layer_ && layer < end_layer_, "KV cache: layer ", layer,
                 " is not held here (layers [", first_layer_, ", ", end_layer_, "))");
  return group_of_[static_cast<size_t>(layer - first_layer_)];
}

LayerKv KvCache::Layer(int64_t sequence, int64_t layer) {
  length(sequence);
  const int gi = GroupOf(layer);
  const Group& g = groups_[gi];
  const int64_t row = kv_heads_ * head_dim_, rows = g.blocks * block_tokens_;
  const int64_t base = index_[static_cast<size_t>(layer - first_layer_)] * 2 * rows * row;
  LayerKv kv;
  kv.keys = g.storage.Slice(base, base + rows * row).Reshape({rows, row});
  kv.values = g.storage.Slice(base + rows * row, base + 2 * rows * row).Reshape({rows, row});
  kv.block_tokens = block_tokens_;
  kv.blocks = tables_[gi][static_cast<size_t>(sequence)];
  const int64_t whole = CeilDiv(max_context_, block_tokens_);
  if (!pooled_ && g.blocks_per_sequence < whole) {
    kv.ring_tokens = g.blocks_per_sequence * block_tokens_;
  }
  return kv;
}

int64_t KvCache::LayerCapacity(int64_t layer) const {
  const int gi = GroupOf(layer);
  if (pooled_) return max_context_;
  return std::min(max_context_, groups_[gi].blocks_per_sequence * block_tokens_);
}

size_t KvCache::bytes() const {
  size_t total = 0;
  for (const Group& g : groups_) total += g.storage.nbytes();
  return total;
}

size_t KvCache::LayerBytes(int64_t layer) const {
  const Group& g = groups_[GroupOf(layer)];
  return 2 * static_cast<size_t>(g.blocks_per_sequence * block_tokens_ * kv_heads_ * head_dim_) *
         sizeof(float);
}

}  // namespace gemmapod
