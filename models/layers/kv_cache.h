// KvCache: the keys and values of every sequence's past tokens, in fixed-size blocks of
// `block_tokens` positions, and a block table per sequence that says which block holds each run of
// its positions (vLLM's paged attention, on the CPU as on devices).
//
// Layers fall in two groups, each with its own blocks and tables: global layers, which keep every
// position up to the context, and sliding layers, which only ever look back `sliding_window`
// positions, so a sequence needs only its last window's blocks there.
//
// Two ways to own the blocks:
// - Fixed slots (the default): sequence s owns its own blocks, the whole context's in the global
//   group and a ring of the window's in the sliding group, mapped at construction. The one-rank
//   generate, T5Gemma's decoder and the benchmarks use this; it needs nothing from outside.
// - A shared pool (KvPool): the tables start empty and a scheduler assigns blocks from the pool
//   as sequences grow (Assign), shares identical prompt blocks between sequences, and gives
//   sliding blocks that fell out of the window to others. The cache then only stores and reads.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/gemma/model_config.h"
#include "runtime/tensor.h"

namespace gemmapod {

// The two groups of layers (index into per-group arrays).
enum KvGroup : int { kGlobalKv = 0, kSlidingKv = 1 };
inline constexpr int kKvGroups = 2;

// Positions per block when nobody says otherwise: vLLM's default.
inline constexpr int64_t kDefaultKvBlockTokens = 16;

// One layer's keys and values for one sequence: the group's pool of rows and the sequence's table.
// Position p lives in row blocks[p / block_tokens] * block_tokens + p % block_tokens; a table entry
// of -1 holds nothing (not assigned yet, or a sliding block given back).
struct LayerKv {
  Tensor keys;    // [pool rows, kv_heads * head_dim]: the group's rows of this layer
  Tensor values;  // [pool rows, kv_heads * head_dim]
  int64_t block_tokens = 0;
  std::span<const int32_t> blocks;
  // Fixed slots' sliding ring: a position's row is reused by the position ring_tokens later, so a
  // chunk longer than the ring keeps only its tail. 0: rows are never reused within a sequence.
  int64_t ring_tokens = 0;
};

// A pool shared by all sequences: blocks per group (0 where the model has no such layers), and
// the sliding group's window, for the scheduler that assigns them.
struct KvPool {
  int64_t block_tokens = kDefaultKvBlockTokens;
  int64_t blocks[kKvGroups] = {0, 0};
  int64_t sliding_window = 0;
};

class KvCache {
 public:
  // `kv_heads` is the number of key/value heads this rank holds (all of them on one rank);
  // layers [first_layer, end_layer) are the ones this rank runs (a pipeline stage's). Layer()
  // takes the model's layer index. The keys and values live on `device`. Fixed slots.
  KvCache(const ModelConfig& config, int64_t num_sequences, int64_t max_context, int64_t kv_heads,
          int64_t first_layer, int64_t end_layer, Device device = Device::Cpu(),
          int64_t block_tokens = kDefaultKvBlockTokens);
  KvCache(const ModelConfig& config, int64_t num_sequences, int64_t max_context)
      : KvCache(config, num_sequences, max_context, config.num_kv_heads, 0, config.num_layers) {}
  // A shared pool of `pool.blocks` per group, assigned by the caller (Assign).
  KvCache(const ModelConfig& config, int64_t num_sequences, int64_t max_context, int64_t kv_heads,
          int64_t first_layer, int64_t end_layer, const KvPool& pool,
          Device device = Device::Cpu());

  // Bytes the fixed-slot cache of this shape would hold, without allocating it (`gemmapod plan`).
  static size_t BytesFor(const ModelConfig& config, int64_t num_sequences, int64_t max_context,
                         int64_t kv_heads, int64_t first_layer, int64_t end_layer,
                         int64_t block_tokens = kDefaultKvBlockTokens);
  // Bytes one block of `group` holds over layers [first_layer, end_layer).
  static size_t BlockBytes(const ModelConfig& config, KvGroup group, int64_t block_tokens,
                           int64_t kv_heads, int64_t first_layer, int64_t end_layer);
  // Blocks of `group` one sequence of `tokens` positions needs at most at any moment (sliding:
  // its window plus a chunk of `chunk` new positions).
  static int64_t BlocksFor(const ModelConfig& config, KvGroup group, int64_t block_tokens,
                           int64_t tokens, int64_t chunk);

  // A pool holding `tokens` positions of global layers in all, for `sequences` sequences of up to
  // `context` positions fed in chunks of up to `chunk`: the sliding group gets the blocks every
  // sequence needs at once (its window and a chunk), never more than the global group's.
  static KvPool PoolFor(const ModelConfig& config, int64_t tokens, int64_t sequences,
                        int64_t context, int64_t chunk,
                        int64_t block_tokens = kDefaultKvBlockTokens);
  // Bytes such a pool holds over layers [first_layer, end_layer).
  static size_t PoolBytes(const ModelConfig& config, const KvPool& pool, int64_t kv_heads,
                          int64_t first_layer, int64_t end_layer);

  int64_t num_sequences() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t max_context() const { return max_context_; }
  int64_t kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t block_tokens() const { return block_tokens_; }
  bool pooled() const { return pooled_; }

  // Tokens of `sequence` already stored (the position of its next token).
  int64_t length(int64_t sequence) const;
  // Checks that `count` more tokens fit in the context of `sequence` and, in a pool, that blocks
  // are assigned for them and for the past positions they will read (messages name both).
  void CheckRoom(int64_t sequence, int64_t count) const;
  // Marks `count` more tokens as stored, once every layer has written them.
  void Advance(int64_t sequence, int64_t count);
  // Forgets a sequence so its slot can hold a new one (in a pool, its table empties).
  void Reset(int64_t sequence);

  // --- A shared pool ---
  // Table entries [first, first + blocks.size()) of `sequence` in `group` (ignored when this
  // rank's layers have none of that group).
  void Assign(int64_t sequence, KvGroup group, int64_t first, std::span<const int32_t> blocks);
  // A sequence that starts from a cached prefix: its first `length` positions are already in the
  // blocks its table names.
  void Place(int64_t sequence, int64_t length);

  LayerKv Layer(int64_t sequence, int64_t layer);
  // Rows (positions) one sequence's layer can hold at once.
  int64_t LayerCapacity(int64_t layer) const;

  // Bytes of keys and values held, for all sequences and layers (fixed at construction).
  size_t bytes() const;
  // Bytes one sequence's layer holds (fixed slots).
  size_t LayerBytes(int64_t layer) const;

 private:
  struct Group {
    std::vector<int64_t> layers;      // model layer indices, in order
    int64_t blocks = 0;               // in the pool (all sequences)
    int64_t blocks_per_sequence = 0;  // fixed slots
    Tensor storage;                   // f32 [layers][keys, values][blocks * block_tokens][row]
  };
  void Init(const ModelConfig& config, int64_t num_sequences, int64_t max_context,
            int64_t first_layer, int64_t end_layer, const int64_t* pool_blocks, Device device);
  int GroupOf(int64_t layer) const;  // checks that this rank holds the layer
  // Checks that table entries cover what a chunk at `start` reads and writes up to `to`: every
  // position before `to` in the global group, the window behind `start` onwards in the sliding
  // group (pool only).
  void CheckAssigned(int64_t sequence, int64_t start, int64_t to) const;

  int64_t max_context_;
  int64_t kv_heads_;
  int64_t first_layer_, end_layer_;
  int64_t head_dim_;
  int64_t block_tokens_;
  int64_t window_ = 0;  // sliding layers' window
  bool pooled_ = false;
  std::vector<int> group_of_;   // per layer held
  std::vector<int64_t> index_;  // per layer held: its index within its group
  Group groups_[kKvGroups];
  std::vector<int64_t> lengths_;
  // Per sequence and group: the block of each logical block (position / block_tokens).
  std::vector<std::vector<int32_t>> tables_[kKvGroups];
};

}  // namespace gemmapod
