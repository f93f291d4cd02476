// KvBlockManager: the scheduler's book of a shared KV pool (models/layers/kv_cache.h). It decides
// which blocks each sequence's positions go in; the stages only store and read where it says, so
// there is one source of truth however many ranks hold the pool.
//
// - Admission by tokens: a sequence is admitted when the pool can promise it every block it may
//   ever hold at once (the global layers' whole length, the sliding layers' window and a chunk),
//   counting what the running sequences were promised. Blocks are then taken as positions
//   arrive, and taking never fails: no preemption, no recomputation.
// - Sliding layers: blocks whose positions no query can see any more go back to the pool.
// - Prefix caching: a full block of prompt tokens is registered under a hash of the tokens up to
//   its end. A later prompt that starts with the same blocks shares them (reference counted) and
//   starts computing after them. A registered block nobody holds stays in the pool with its
//   contents until it is needed, oldest first (LRU), so a prefix outlives the request that
//   computed it. Only prompt blocks are shared: their keys and values are those a prompt computes,
//   so a shared prefix gives the bits the prompt would have given.
//
// Whoever takes a block from the pool pays for it against its promise; when the payer lets go
// of a block others still hold, the next holder pays. So the promises never exceed the pool.
// Engine thread only.
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

#include "models/layers/kv_cache.h"
#include "serving/engine/chunk_wire.h"

namespace gemmapod {

struct KvUsage {
  int64_t block_tokens = 0;
  int64_t capacity_tokens = 0;  // positions the global group holds (capacity_tokens())
  int64_t blocks = 0;           // in the pool, both groups
  int64_t used = 0;             // held by sequences
  int64_t cached = 0;           // held by nobody, still holding a registered prefix
  int64_t prefix_hits = 0;      // prompt tokens found in the cache, since the start
  int64_t prompt_tokens = 0;    // prompt tokens admitted, since the start
};

class KvBlockManager {
 public:
  // `max_chunk`: the most positions one chunk of a sequence brings. `slots`: sequence slots.
  KvBlockManager(const KvPool& pool, int64_t slots, int64_t max_chunk, bool prefix_caching);

  // Blocks of each group a sequence of up to `tokens` positions may hold at once.
  int64_t Need(int kv_group, int64_t tokens) const;
  // Whether `count` sequences of up to `tokens` positions each could run at once in an idle pool.
  bool EverFits(int64_t tokens, int64_t count) const;
  // Tokens the pool holds in its global group (the context it can hold in all).
  int64_t capacity_tokens() const;

  // Admits the sequence in `slot` with `prompt`, which may grow to `tokens` positions: false
  // when the pool cannot promise its blocks now. On success, the positions returned are already
  // in the cache (a multiple of the block size, below the prompt's length): the sequence starts
  // there.
  bool Admit(int64_t slot, std::span<const int32_t> prompt, int64_t tokens, int64_t& cached);
  // Blocks for positions [start, start + n) of `slot`, taken before the chunk is submitted;
  // sliding blocks out of the window are given back and full prompt blocks registered. The table
  // entries the stages have not been told yet go into `chunk` (and the cached prefix's tokens
  // with the sequence's first chunk).
  void Grow(int64_t slot, std::span<const int32_t> prompt, int64_t start, int64_t n,
            WireChunk& chunk);
  // The sequence in `slot` is done: its blocks go back (registered ones stay cached). A sequence
  // whose micro-batch failed may not have written its blocks: `failed` unregisters every block it
  // held, so no later prompt reads them.
  void Release(int64_t slot, bool failed = false);

  KvUsage usage() const;

 private:
  struct Sequence {
    bool live = false;
    std::vector<int32_t> table[kKvGroups];
    int64_t need[kKvGroups] = {0, 0};
    int64_t charged[kKvGroups] = {0, 0};  // blocks it pays for
    int64_t sent[kKvGroups] = {0, 0};     // table entries the stages know
    int64_t cached = 0;                   // prefix positions it started on
    bool first_chunk = true;
    uint64_t hash = 0;          // chain hash of its registered-or-checked prompt blocks
    int64_t hashed_blocks = 0;  // prompt blocks hashed so far
    int64_t sliding_kept = 0;   // sliding table entries below this one are given back
  };
  struct Block {
    std::vector<int64_t> holders;  // slots; the first pays
    uint64_t hash = 0;             // registered under this hash (0: not registered)
    uint64_t parent = 0;           // the hash before this block's tokens
    std::vector<int32_t> tokens;   // what it was registered with (to confirm a hash match)
    bool in_lru = false;
    std::list<int32_t>::iterator lru_at;
  };
  struct Group {
    int64_t blocks = 0;
    std::vector<Block> block;
    std::vector<int32_t> free;  // unregistered, nobody holds them
    std::list<int32_t> lru;     // registered, nobody holds them: oldest first
    std::unordered_map<uint64_t, int32_t> registered;
    int64_t promised = 0;  // blocks the live sequences may still take
    int64_t available() const { return static_cast<int64_t>(free.size() + lru.size()); }
  };

  int32_t Take(int g, int64_t slot);
  void Hold(int g, int32_t id, int64_t slot);  // a registered block, shared
  void Let(int g, int32_t id, int64_t slot);   // slot lets go of a block
  // The registered block of group g holding `tokens` after the prefix hashed `parent`, or -1.
  int32_t Find(int g, uint64_t parent, uint64_t hash, std::span<const int32_t> tokens) const;
  void Register(int g, int32_t id, uint64_t parent, uint64_t hash, std::span<const int32_t> tokens);

  int64_t block_tokens_;
  int64_t window_;
  int64_t max_chunk_;
  bool prefix_caching_;
  Group groups_[kKvGroups];
  std::vector<Sequence> sequences_;
  int64_t prefix_hits_ = 0, prompt_tokens_ = 0;
};

// The chain hash of a block of tokens after a prefix hashed `parent`.
uint64_t KvBlockHash(uint64_t parent, std::span<const int32_t> tokens);

}  // namespace gemmapod
