// The scheduler's book of the KV pool: admission by the blocks a sequence may need, sliding
// blocks given back, prefix blocks shared and kept after their request (LRU), and the promise
// that taking a block never fails, under random load.
#include "serving/engine/kv_block_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <random>

#include "runtime/error.h"

namespace gemmapod {
namespace {

constexpr int64_t kB = 4;       // positions per block
constexpr int64_t kWindow = 6;  // sliding layers' window
constexpr int64_t kChunk = 8;   // largest chunk

KvPool Pool(int64_t global, int64_t sliding) { return KvPool{kB, {global, sliding}, kWindow}; }

std::vector<int32_t> Tokens(int64_t n, int32_t first) {
  std::vector<int32_t> t;
  for (int64_t i = 0; i < n; ++i) t.push_back(first + static_cast<int32_t>(i));
  return t;
}

// Feeds a sequence's prompt in chunks, then `decode` tokens one at a time; returns the chunks.
std::vector<WireChunk> Feed(KvBlockManager& kv, int64_t slot, const std::vector<int32_t>& prompt,
                            int64_t start, int64_t decode) {
  std::vector<WireChunk> chunks;
  for (int64_t at = start; at < static_cast<int64_t>(prompt.size());) {
    const int64_t n = std::min<int64_t>(kChunk, static_cast<int64_t>(prompt.size()) - at);
    kv.Grow(slot, prompt, at, n, chunks.emplace_back());
    at += n;
  }
  for (int64_t i = 0; i < decode; ++i) {
    kv.Grow(slot, prompt, static_cast<int64_t>(prompt.size()) + i, 1, chunks.emplace_back());
  }
  return chunks;
}

TEST(KvBlockManagerTest, AdmitsWhatThePoolCanPromiseAndNoMore) {
  KvBlockManager kv(Pool(10, 100), 8, kChunk, false);
  EXPECT_EQ(kv.capacity_tokens(), 40);
  EXPECT_EQ(kv.Need(kGlobalKv, 17), 5);
  EXPECT_EQ(kv.Need(kSlidingKv, 17), 5);
  EXPECT_EQ(kv.Need(kSlidingKv, 100), 5);  // (window - 1 + chunk) / B, rounded up, + 1
  EXPECT_TRUE(kv.EverFits(40, 1));
  EXPECT_FALSE(kv.EverFits(41, 1));
  EXPECT_FALSE(kv.EverFits(24, 2));
  int64_t cached = -1;
  ASSERT_TRUE(kv.Admit(0, Tokens(5, 10), 24, cached));  // promised 6 of 10 blocks
  EXPECT_EQ(cached, 0);
  EXPECT_FALSE(kv.Admit(1, Tokens(5, 10), 24, cached));  // 6 more: not now
  ASSERT_TRUE(kv.Admit(1, Tokens(5, 10), 16, cached));   // 4 more: yes
  EXPECT_EQ(kv.usage().used, 0);                         // promised, not taken yet
  Feed(kv, 0, Tokens(5, 10), 0, 19);                     // grows to its 24 positions
  Feed(kv, 1, Tokens(5, 10), 0, 11);
  // Every global block, and each sequence's last window in sliding blocks (positions 18..23 and
  // 10..15: two blocks each).
  EXPECT_EQ(kv.usage().used, 10 + 2 + 2);
  kv.Release(0);
  EXPECT_EQ(kv.usage().used, 4 + 2);
  ASSERT_TRUE(kv.Admit(0, Tokens(5, 10), 24, cached));
  kv.Release(0);
  kv.Release(1);
  EXPECT_EQ(kv.usage().used, 0);
}

TEST(KvBlockManagerTest, SlidingBlocksOutOfTheWindowGoBackAndTheTablesSaySo) {
  KvBlockManager kv(Pool(64, 64), 2, kChunk, false);
  int64_t cached = 0;
  const std::vector<int32_t> prompt = Tokens(20, 3);
  ASSERT_TRUE(kv.Admit(0, prompt, 200, cached));
  std::vector<WireChunk> chunks = Feed(kv, 0, prompt, 0, 100);
  // What the stages were told, replayed: every position a chunk reads or writes has a block.
  std::vector<int32_t> table[2];
  int64_t at = 0;
  for (const WireChunk& c : chunks) {
    for (int g = 0; g < 2; ++g) {
      ASSERT_EQ(c.kv_first[g], static_cast<int64_t>(table[g].size()));
      table[g].insert(table[g].end(), c.kv_blocks[g].begin(), c.kv_blocks[g].end());
    }
    const int64_t len = at < 20 ? std::min<int64_t>(kChunk, 20 - at) : 1;
    for (int64_t p = 0; p < at + len; ++p) {
      ASSERT_GE(table[kGlobalKv][static_cast<size_t>(p / kB)], 0);
      if (p > at - kWindow) {
        ASSERT_GE(table[kSlidingKv][static_cast<size_t>(p / kB)], 0) << "position " << p;
      }
    }
    at += len;
  }
  EXPECT_EQ(at, 120);
  // 120 positions: 30 global blocks; the sliding ones of the last window only.
  EXPECT_EQ(kv.usage().used, 30 + 2);
}

TEST(KvBlockManagerTest, APromptSharesTheBlocksOfAnEarlierIdenticalPrefix) {
  KvBlockManager kv(Pool(64, 64), 4, kChunk, true);
  std::vector<int32_t> a = Tokens(30, 100);
  int64_t cached = -1;
  ASSERT_TRUE(kv.Admit(0, a, 40, cached));
  EXPECT_EQ(cached, 0);
  std::vector<int32_t> a_global;  // a's global table, as the stages were told it
  for (const WireChunk& w : Feed(kv, 0, a, 0, 2)) {
    a_global.insert(a_global.end(), w.kv_blocks[kGlobalKv].begin(), w.kv_blocks[kGlobalKv].end());
  }

  // The same first 21 tokens: five full blocks (20 positions) are cached, and so is the window
  // before position 20 in the sliding group (positions 15..19: blocks 3 and 4, which a gave back
  // when they fell out of its window but which nobody has needed since).
  std::vector<int32_t> b(a.begin(), a.begin() + 21);
  b.push_back(7);
  ASSERT_TRUE(kv.Admit(1, b, 30, cached));
  EXPECT_EQ(cached, 20);
  const std::vector<WireChunk> cb = Feed(kv, 1, b, 20, 1);
  EXPECT_EQ(cb[0].cached, std::vector<int32_t>(a.begin(), a.begin() + 20));
  EXPECT_EQ(cb[0].kv_first[kGlobalKv], 0);
  ASSERT_EQ(cb[0].kv_blocks[kGlobalKv].size(), 6u);
  EXPECT_TRUE(std::equal(cb[0].kv_blocks[kGlobalKv].begin(), cb[0].kv_blocks[kGlobalKv].begin() + 5,
                         a_global.begin()));
  EXPECT_NE(cb[0].kv_blocks[kGlobalKv][5], a_global[5]);  // its own from there
  EXPECT_EQ(cb[0].kv_blocks[kSlidingKv][0], -1);          // out of the window: not shared
  EXPECT_TRUE(cb[1].cached.empty());                      // only the first chunk carries them

  // A whole prompt is never all cached: its last token gives the logits.
  ASSERT_TRUE(kv.Admit(2, std::vector<int32_t>(a.begin(), a.begin() + 20), 30, cached));
  EXPECT_EQ(cached, 16);
  kv.Release(2);
  // A prompt that differs inside the first block shares nothing.
  std::vector<int32_t> c = a;
  c[2] = 5;
  ASSERT_TRUE(kv.Admit(2, c, 40, cached));
  EXPECT_EQ(cached, 0);
  kv.Release(2);

  // After both sequences end, their prompt blocks stay cached for the next request; a prefix
  // whose sliding window was given back (a's first blocks) is found only where the window is.
  kv.Release(0);
  kv.Release(1);
  EXPECT_EQ(kv.usage().used, 0);
  EXPECT_GT(kv.usage().cached, 0);
  ASSERT_TRUE(kv.Admit(3, a, 40, cached));
  EXPECT_EQ(cached, 28);  // 7 blocks; its sliding window (blocks 5, 6) survived
  EXPECT_EQ(kv.usage().prefix_hits, 20 + 16 + 28);
  kv.Release(3);
}

TEST(KvBlockManagerTest, CachedBlocksAreReusedOldestFirstWhenThePoolRunsOut) {
  KvBlockManager kv(Pool(8, 8), 2, kChunk, true);
  int64_t cached = 0;
  const std::vector<int32_t> a = Tokens(13, 100), b = Tokens(13, 200);
  ASSERT_TRUE(kv.Admit(0, a, 16, cached));
  Feed(kv, 0, a, 0, 0);
  kv.Release(0);                            // a's three full blocks stay cached
  ASSERT_TRUE(kv.Admit(0, b, 32, cached));  // needs all 8: the cached ones are taken back
  EXPECT_EQ(cached, 0);
  Feed(kv, 0, b, 0, 19);
  kv.Release(0);
  ASSERT_TRUE(kv.Admit(1, a, 16, cached));
  EXPECT_EQ(cached, 0);  // a's prefix is gone
  kv.Release(1);
  ASSERT_TRUE(kv.Admit(1, b, 16, cached));
  EXPECT_EQ(cached, 12);  // b's is there
  kv.Release(1);
}

// When the sequence that paid for shared blocks ends, the one still holding them pays: the pool
// promises exactly what is left, so a newcomer fits.
TEST(KvBlockManagerTest, SharedBlocksPassTheirChargeToTheNextHolder) {
  KvBlockManager kv(Pool(8, 16), 3, kChunk, true);
  int64_t cached = 0;
  const std::vector<int32_t> a = Tokens(13, 100);
  ASSERT_TRUE(kv.Admit(0, a, 16, cached));
  Feed(kv, 0, a, 0, 0);  // takes 4 blocks, registers 3
  ASSERT_TRUE(kv.Admit(1, a, 16, cached));
  EXPECT_EQ(cached, 12);
  kv.Release(0);  // b now pays for the three it shares and may take one more
  ASSERT_TRUE(kv.Admit(2, Tokens(9, 500), 16, cached));  // 4 of the 5 blocks not promised to b
  Feed(kv, 1, a, 12, 3);
  Feed(kv, 2, Tokens(9, 500), 0, 7);
  EXPECT_EQ(kv.usage().used, 8 + 2 + 2);  // the global pool full; two windows
  kv.Release(1);
  kv.Release(2);
}

TEST(KvBlockManagerTest, AFailedSequencesBlocksAreNeverShared) {
  KvBlockManager kv(Pool(16, 16), 2, kChunk, true);
  int64_t cached = 0;
  const std::vector<int32_t> a = Tokens(13, 100);
  ASSERT_TRUE(kv.Admit(0, a, 16, cached));
  Feed(kv, 0, a, 0, 0);
  kv.Release(0, /*failed=*/true);
  ASSERT_TRUE(kv.Admit(1, a, 16, cached));
  EXPECT_EQ(cached, 0);
  kv.Release(1);
}

// Random prompts from a few shared stems, admitted, grown and released in random order: taking a
// block never breaks a promise (it would throw), and at the end every block is free.
TEST(KvBlockManagerTest, PromisesHoldUnderRandomLoad) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t slots = 6;
    KvBlockManager kv(Pool(40 + trial, 30 + trial), slots, kChunk, trial % 2 == 0);
    struct Live {
      std::vector<int32_t> prompt;
      int64_t at = 0, end = 0;
    };
    std::vector<std::optional<Live>> live(static_cast<size_t>(slots));
    for (int step = 0; step < 600; ++step) {
      const int64_t slot = static_cast<int64_t>(rng() % slots);
      auto& l = live[static_cast<size_t>(slot)];
      if (!l) {
        Live n;
        n.prompt = Tokens(4 * (rng() % 4), static_cast<int32_t>(1000 * (rng() % 3)));
        const int64_t extra = 1 + static_cast<int64_t>(rng() % 20);
        for (int64_t i = 0; i < extra; ++i) n.prompt.push_back(static_cast<int32_t>(rng() % 50));
        n.end = static_cast<int64_t>(n.prompt.size()) + static_cast<int64_t>(rng() % 40);
        int64_t cached = 0;
        if (!kv.Admit(slot, n.prompt, n.end, cached)) continue;
        ASSERT_LT(cached, static_cast<int64_t>(n.prompt.size()));
        n.at = cached;
        l = std::move(n);
        continue;
      }
      if (l->at >= l->end || rng() % 10 == 0) {
        kv.Release(slot, rng() % 7 == 0);
        l.reset();
        continue;
      }
      const int64_t p = static_cast<int64_t>(l->prompt.size());
      const int64_t n = l->at < p ? std::min<int64_t>(kChunk, p - l->at) : 1;
      WireChunk chunk;
      ASSERT_NO_THROW(kv.Grow(slot, l->prompt, l->at, n, chunk)) << "trial " << trial;
      l->at += n;
    }
    for (int64_t s = 0; s < slots; ++s) {
      if (live[static_cast<size_t>(s)]) kv.Release(s);
    }
    EXPECT_EQ(kv.usage().used, 0);
    // Nothing promised any more: the whole pool can be promised again.
    int64_t cached = 0;
    EXPECT_TRUE(kv.Admit(0, Tokens(3, 1), (40 + trial) * kB, cached)) << "trial " << trial;
  }
}

TEST(KvBlockManagerTest, MisuseIsAnError) {
  KvBlockManager kv(Pool(8, 8), 2, kChunk, true);
  WireChunk c;
  EXPECT_THROW(kv.Grow(0, Tokens(3, 1), 0, 3, c), Error);  // nothing admitted
  EXPECT_THROW(kv.Release(1), Error);
  int64_t cached = 0;
  ASSERT_TRUE(kv.Admit(0, Tokens(3, 1), 8, cached));
  EXPECT_THROW(kv.Admit(0, Tokens(3, 1), 8, cached), Error);  // slot taken
  EXPECT_THROW(kv.Grow(0, Tokens(3, 1), 0, kChunk + 1, c), Error);
  EXPECT_THROW(kv.Admit(1, {}, 8, cached), Error);
}

}  // namespace
}  // namespace gemmapod
