#include "serving/engine/kv_block_manager.h"

#include <algorithm>

#include "runtime/error.h"

namespace gemmapod {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

const char* GroupName(int g) { return g == kGlobalKv ? "global" : "sliding"; }

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t KvBlockHash(uint64_t parent, std::span<const int32_t> tokens) {
  uint64_t h = Mix(parent + 0x9e3779b97f4a7c15ull);
  for (int32_t t : tokens) h = Mix(h ^ static_cast<uint32_t>(t));
  return h == 0 ? 1 : h;  // 0 means "not registered"
}

KvBlockManager::KvBlockManager(const KvPool& pool, int64_t slots, int64_t max_chunk,
                               bool prefix_caching)
    : block_tokens_(pool.block_tokens),
      window_(pool.sliding_window),
      max_chunk_(max_chunk),
      prefix_caching_(prefix_caching) {
  GEMMAPOD_CHECK(block_tokens_ > 0 && slots > 0 && max_chunk > 0, "KV pool: blocks of ",
                 block_tokens_, " tokens for ", slots, " slots, chunks of ", max_chunk);
  GEMMAPOD_CHECK(pool.blocks[kSlidingKv] == 0 || window_ > 0,
                 "KV pool: sliding blocks without a window");
  for (int g = 0; g < kKvGroups; ++g) {
    Group& G = groups_[g];
    G.blocks = pool.blocks[g];
    GEMMAPOD_CHECK(G.blocks >= 0 && G.blocks < (int64_t{1} << 31), "KV pool: ", G.blocks, " ",
                   GroupName(g), " blocks");
    G.block.resize(static_cast<size_t>(G.blocks));
    // Taken from the back: block 0 first.
    for (int64_t b = G.blocks - 1; b >= 0; --b) G.free.push_back(static_cast<int32_t>(b));
  }
  sequences_.resize(static_cast<size_t>(slots));
}

int64_t KvBlockManager::Need(int g, int64_t tokens) const {
  if (groups_[g].blocks == 0) return 0;
  const int64_t whole = CeilDiv(tokens, block_tokens_);
  if (g == kGlobalKv) return whole;
  // The window behind a chunk and the chunk, which may straddle one more block boundary.
  return std::min(whole, CeilDiv(window_ - 1 + max_chunk_, block_tokens_) + 1);
}

bool KvBlockManager::EverFits(int64_t tokens, int64_t count) const {
  for (int g = 0; g < kKvGroups; ++g) {
    if (count * Need(g, tokens) > groups_[g].blocks) return false;
  }
  return true;
}

int64_t KvBlockManager::capacity_tokens() const {
  const int g = groups_[kGlobalKv].blocks > 0 ? kGlobalKv : kSlidingKv;
  return groups_[g].blocks * block_tokens_;
}

int32_t KvBlockManager::Take(int g, int64_t slot) {
  Group& G = groups_[g];
  int32_t id;
  if (!G.free.empty()) {
    id = G.free.back();
    G.free.pop_back();
  } else {
    // Admission promised this block: the pool holds at least what was promised.
    GEMMAPOD_CHECK(!G.lru.empty(), "KV pool: no ", GroupName(g), " block left for sequence slot ",
                   slot, " (a promise was broken)");
    id = G.lru.front();
    G.lru.pop_front();
    Block& old = G.block[static_cast<size_t>(id)];
    old.in_lru = false;
    G.registered.erase(old.hash);  // the oldest cached prefix block is overwritten
    old.hash = 0;
    old.tokens.clear();
  }
  G.block[static_cast<size_t>(id)].holders.assign(1, slot);
  ++sequences_[static_cast<size_t>(slot)].charged[g];
  --G.promised;
  return id;
}

void KvBlockManager::Hold(int g, int32_t id, int64_t slot) {
  Group& G = groups_[g];
  Block& b = G.block[static_cast<size_t>(id)];
  if (b.holders.empty()) {  // cached, held by nobody: it leaves the pool, paid for by slot
    G.lru.erase(b.lru_at);
    b.in_lru = false;
    ++sequences_[static_cast<size_t>(slot)].charged[g];
    --G.promised;
  }
  b.holders.push_back(slot);
}

void KvBlockManager::Let(int g, int32_t id, int64_t slot) {
  Group& G = groups_[g];
  Block& b = G.block[static_cast<size_t>(id)];
  const auto it = std::find(b.holders.begin(), b.holders.end(), slot);
  GEMMAPOD_CHECK(it != b.holders.end(), "KV pool: slot ", slot, " lets go of ", GroupName(g),
                 " block ", id, " it does not hold");
  const bool paid = it == b.holders.begin();
  b.holders.erase(it);
  if (paid) {
    --sequences_[static_cast<size_t>(slot)].charged[g];
    ++G.promised;
    if (!b.holders.empty()) {  // the next holder pays
      ++sequences_[static_cast<size_t>(b.holders.front())].charged[g];
      --G.promised;
    }
  }
  if (!b.holders.empty()) return;
  if (b.hash != 0) {
    b.lru_at = G.lru.insert(G.lru.end(), id);
    b.in_lru = true;
  } else {
    G.free.push_back(id);
  }
}

int32_t KvBlockManager::Find(int g, uint64_t parent, uint64_t hash,
                             std::span<const int32_t> tokens) const {
  const Group& G = groups_[g];
  const auto it = G.registered.find(hash);
  if (it == G.registered.end()) return -1;
  const Block& b = G.block[static_cast<size_t>(it->second)];
  // A hash is 64 bits of a chain: the block's own tokens and its parent confirm the match.
  if (b.parent != parent ||
      !std::equal(tokens.begin(), tokens.end(), b.tokens.begin(), b.tokens.end())) {
    return -1;
  }
  return it->second;
}

void KvBlockManager::Register(int g, int32_t id, uint64_t parent, uint64_t hash,
                              std::span<const int32_t> tokens) {
  Group& G = groups_[g];
  Block& b = G.block[static_cast<size_t>(id)];
  if (b.hash != 0 || !G.registered.emplace(hash, id).second) return;  // one block per prefix
  b.hash = hash;
  b.parent = parent;
  b.tokens.assign(tokens.begin(), tokens.end());
}

bool KvBlockManager::Admit(int64_t slot, std::span<const int32_t> prompt, int64_t tokens,
                           int64_t& cached) {
  GEMMAPOD_CHECK(slot >= 0 && slot < static_cast<int64_t>(sequences_.size()) &&
                     !sequences_[static_cast<size_t>(slot)].live,
                 "KV pool: slot ", slot, " is not free");
  GEMMAPOD_CHECK(!prompt.empty() && static_cast<int64_t>(prompt.size()) <= tokens,
                 "KV pool: a prompt of ", prompt.size(), " tokens in a sequence of ", tokens);
  for (int g = 0; g < kKvGroups; ++g) {
    const Group& G = groups_[g];
    if (Need(g, tokens) > G.available() - G.promised) return false;
  }
  Sequence& s = sequences_[static_cast<size_t>(slot)];
  s = Sequence{};
  s.live = true;
  for (int g = 0; g < kKvGroups; ++g) {
    s.need[g] = Need(g, tokens);
    groups_[g].promised += s.need[g];
  }
  prompt_tokens_ += static_cast<int64_t>(prompt.size());
  cached = 0;
  if (!prefix_caching_) return true;

  // The longest run of prompt blocks found in the global group (at least the last prompt token
  // is computed: it gives the logits), then the longest of those whose sliding layers' window
  // is cached too.
  const int64_t B = block_tokens_;
  const bool global = groups_[kGlobalKv].blocks > 0, sliding = groups_[kSlidingKv].blocks > 0;
  const int64_t most = (static_cast<int64_t>(prompt.size()) - 1) / B;
  std::vector<uint64_t> parents, hashes;
  std::vector<int32_t> global_ids;
  uint64_t parent = 0;
  for (int64_t b = 0; b < most; ++b) {
    const std::span<const int32_t> t =
        prompt.subspan(static_cast<size_t>(b * B), static_cast<size_t>(B));
    const uint64_t hash = KvBlockHash(parent, t);
    const int32_t id = global ? Find(kGlobalKv, parent, hash, t) : -1;
    if (global && id < 0) break;
    parents.push_back(parent);
    hashes.push_back(hash);
    global_ids.push_back(id);
    parent = hash;
  }
  int64_t k = static_cast<int64_t>(hashes.size());
  std::vector<int32_t> sliding_ids;
  for (; k > 0 && sliding; --k) {
    const int64_t lo = std::max<int64_t>(0, k * B - window_ + 1) / B;
    sliding_ids.assign(static_cast<size_t>(lo), -1);
    for (int64_t b = lo; b < k; ++b) {
      const std::span<const int32_t> t =
          prompt.subspan(static_cast<size_t>(b * B), static_cast<size_t>(B));
      const int32_t id =
          Find(kSlidingKv, parents[static_cast<size_t>(b)], hashes[static_cast<size_t>(b)], t);
      if (id < 0) break;
      sliding_ids.push_back(id);
    }
    if (static_cast<int64_t>(sliding_ids.size()) == k) break;
  }
  if (k == 0) return true;
  for (int64_t b = 0; b < k; ++b) {
    if (global) {
      Hold(kGlobalKv, global_ids[static_cast<size_t>(b)], slot);
      s.table[kGlobalKv].push_back(global_ids[static_cast<size_t>(b)]);
    }
    if (sliding) {
      const int32_t id = sliding_ids[static_cast<size_t>(b)];
      if (id >= 0) Hold(kSlidingKv, id, slot);
      s.table[kSlidingKv].push_back(id);
    }
  }
  s.hash = hashes[static_cast<size_t>(k - 1)];
  s.hashed_blocks = k;
  s.cached = k * B;
  prefix_hits_ += s.cached;
  cached = s.cached;
  return true;
}

void KvBlockManager::Grow(int64_t slot, std::span<const int32_t> prompt, int64_t start, int64_t n,
                          WireChunk& chunk) {
  GEMMAPOD_CHECK(slot >= 0 && slot < static_cast<int64_t>(sequences_.size()) &&
                     sequences_[static_cast<size_t>(slot)].live,
                 "KV pool: slot ", slot, " holds no sequence");
  Sequence& s = sequences_[static_cast<size_t>(slot)];
  GEMMAPOD_CHECK(n > 0 && n <= max_chunk_, "KV pool: a chunk of ", n, " positions (at most ",
                 max_chunk_, ")");
  const int64_t B = block_tokens_;
  // Sliding blocks no query from `start` on can see go back first, so the chunk's new ones fit
  // the promise.
  if (groups_[kSlidingKv].blocks > 0) {
    auto& table = s.table[kSlidingKv];
    const int64_t keep_from = std::max<int64_t>(0, start - window_ + 1);
    // From where the last chunk stopped: each step looks at the blocks it frees, not the table.
    for (int64_t& b = s.sliding_kept;
         (b + 1) * B <= keep_from && b < static_cast<int64_t>(table.size()); ++b) {
      if (table[static_cast<size_t>(b)] < 0) continue;
      Let(kSlidingKv, table[static_cast<size_t>(b)], slot);
      table[static_cast<size_t>(b)] = -1;
    }
  }
  for (int g = 0; g < kKvGroups; ++g) {
    if (groups_[g].blocks == 0) continue;
    auto& table = s.table[g];
    while (static_cast<int64_t>(table.size()) * B < start + n) table.push_back(Take(g, slot));
  }
  if (prefix_caching_) {
    const int64_t written = std::min<int64_t>(start + n, static_cast<int64_t>(prompt.size()));
    for (; (s.hashed_blocks + 1) * B <= written; ++s.hashed_blocks) {
      const int64_t b = s.hashed_blocks;
      const std::span<const int32_t> t =
          prompt.subspan(static_cast<size_t>(b * B), static_cast<size_t>(B));
      const uint64_t hash = KvBlockHash(s.hash, t);
      for (int g = 0; g < kKvGroups; ++g) {
        if (groups_[g].blocks == 0) continue;
        const int32_t id = s.table[g][static_cast<size_t>(b)];
        if (id >= 0) Register(g, id, s.hash, hash, t);
      }
      s.hash = hash;
    }
  }
  for (int g = 0; g < kKvGroups; ++g) {
    const auto& table = s.table[g];
    chunk.kv_first[g] = s.sent[g];
    chunk.kv_blocks[g].assign(table.begin() + s.sent[g], table.end());
    s.sent[g] = static_cast<int64_t>(table.size());
  }
  chunk.cached.clear();
  if (s.first_chunk && s.cached > 0) {
    chunk.cached.assign(prompt.begin(), prompt.begin() + s.cached);
  }
  s.first_chunk = false;
}

void KvBlockManager::Release(int64_t slot, bool failed) {
  GEMMAPOD_CHECK(slot >= 0 && slot < static_cast<int64_t>(sequences_.size()) &&
                     sequences_[static_cast<size_t>(slot)].live,
                 "KV pool: slot ", slot, " holds no sequence");
  Sequence& s = sequences_[static_cast<size_t>(slot)];
  for (int g = 0; g < kKvGroups; ++g) {
    for (int32_t id : s.table[g]) {
      if (id < 0) continue;
      Block& b = groups_[g].block[static_cast<size_t>(id)];
      if (failed && b.hash != 0) {
        groups_[g].registered.erase(b.hash);
        b.hash = 0;
        b.tokens.clear();
      }
      Let(g, id, slot);
    }
    groups_[g].promised -= s.need[g] - s.charged[g];
  }
  s = Sequence{};
}

KvUsage KvBlockManager::usage() const {
  KvUsage u;
  u.block_tokens = block_tokens_;
  u.capacity_tokens = capacity_tokens();
  for (const Group& G : groups_) {
    u.blocks += G.blocks;
    u.used += G.blocks - G.available();
    u.cached += static_cast<int64_t>(G.lru.size());
  }
  u.prefix_hits = prefix_hits_;
  u.prompt_tokens = prompt_tokens_;
  return u;
}

}  // namespace gemmapod
