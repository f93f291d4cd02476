// Data parallelism's gradient sum overlapped with the backward, under mpirun: a bucket starts as
// soon as the layers it holds report done (and not before, nor out of bucket order; one holding a
// gradient outside the layers waits for Finish), and the sums are SumGradients's to the bit.
#include "training/data_parallel.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "runtime/checkpoint/crc32.h"
#include "runtime/comm/mpi_communicator.h"

namespace gemmapod {
namespace {

// Parameters registered in checkpoint order; the backward finishes the last first.
struct Model {
  std::vector<std::string> names = {"model.embed_tokens.weight", "model.layers.0.a.weight",
                                    "model.layers.0.b.weight",   "model.layers.1.a.weight",
                                    "model.layers.1.b.weight",   "model.layers.2.a.weight"};
  std::vector<Tensor> weights, grads;
  AdamW optimizer{AdamWOptions{}};
  // f32 elements: 28, 8, 12, 16, 20 and 24 KB.
  std::vector<int64_t> sizes = {7000, 2000, 3000, 4000, 5000, 6000};
  explicit Model(int rank) {
    for (size_t p = 0; p < names.size(); ++p) {
      const int64_t n = sizes[p];
      weights.push_back(Tensor::Zeros({n}, DType::kF32));
      Tensor g = Tensor::Empty({n}, DType::kF32);
      for (int64_t i = 0; i < n; ++i) {
        g.data<float>()[i] = 0.1f * static_cast<float>((rank * 31 + i * 7 + p) % 97) - 4.0f;
      }
      grads.push_back(g);
    }
    for (size_t p = 0; p < names.size(); ++p) optimizer.Add(names[p], weights[p], grads[p], true);
  }
};

TEST(OverlappedGradientSum, BucketsStartAsTheirLayersFinishAndSumAsSumGradients) {
  std::unique_ptr<MpiCommunicator> world = MpiCommunicator::World();
  // 24 KB buckets, last parameter first: layer 2's (24 KB) alone, layer 1's b (20 KB) and a
  // (16 KB) each alone (together they are too large), layer 0's b and a together (12 + 8 KB),
  // and the embedding (28 KB) alone.
  constexpr int64_t kBucket = 24000;
  Model overlapped(world->rank()), blocking(world->rank());
  const std::vector<std::vector<Tensor*>> buckets = GradientBuckets(overlapped.optimizer, kBucket);
  ASSERT_EQ(buckets.size(), 5u);
  OverlappedGradientSum sum(world.get(), overlapped.optimizer, kBucket);
  EXPECT_EQ(sum.started(), 0u);
  sum.LayerDone("model.layers.1.");  // not the first bucket's layer: nothing may start yet
  EXPECT_EQ(sum.started(), 0u);
  sum.LayerDone("model.layers.2.");  // layer 2's bucket, then layer 1's two
  EXPECT_EQ(sum.started(), 3u);
  sum.LayerDone("model.layers.2.");  // again: ignored
  sum.LayerDone("model.layers.0.");
  EXPECT_EQ(sum.started(), 4u);  // the embedding's bucket waits for Finish
  sum.Finish();
  DataParallel(world.get()).SumGradients(blocking.optimizer, kBucket);
  for (size_t p = 0; p < overlapped.grads.size(); ++p) {
    const Tensor& a = overlapped.grads[p];
    const Tensor& b = blocking.grads[p];
    if (world->size() == 2) {  // a + b has one rounding: the same bits whatever the algorithm
      EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << overlapped.names[p];
      continue;
    }
    // More ranks: MPI's nonblocking and blocking algorithms may add in different orders.
    for (int64_t i = 0; i < a.numel(); ++i) {
      ASSERT_NEAR(a.data<float>()[i], b.data<float>()[i], 1e-5) << overlapped.names[p] << " " << i;
    }
  }
  // Every replica holds the same bits (they take the same step from them).
  Tensor crc = Tensor::Empty({2}, DType::kI32);
  crc.data<int32_t>()[0] =
      static_cast<int32_t>(Crc32Update(0, overlapped.grads[3].raw(), overlapped.grads[3].nbytes()));
  crc.data<int32_t>()[1] = -crc.data<int32_t>()[0];
  world->AllReduce(crc, ReduceOp::kMax);
  EXPECT_EQ(crc.data<int32_t>()[0], -crc.data<int32_t>()[1]) << "the replicas' sums differ";
  // A second step starts from nothing again.
  EXPECT_EQ(sum.started(), 0u);
  sum.LayerDone("model.layers.2.");
  EXPECT_EQ(sum.started(), 1u);
  sum.Finish();
}

}  // namespace
}  // namespace gemmapod
