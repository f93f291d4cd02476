#include "training/data_parallel.h"

#include <cstring>

#include "runtime/checkpoint/crc32.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "training/adamw.h"

namespace gemmapod {
namespace {

void Append64(std::vector<int32_t>& words, const void* eight_bytes) {
  int32_t two[2];
  std::memcpy(two, eight_bytes, sizeof two);
  words.push_back(two[0]);
  words.push_back(two[1]);
}

template <typename T>
T Read64(const int32_t* words) {
  T value;
  std::memcpy(&value, words, sizeof value);
  return value;
}

}  // namespace

DataParallel::DataParallel(Communicator* world) : world_(world) {
  if (world_ != nullptr) {
    rank_ = world_->rank();
    size_ = world_->size();
  }
}

std::pair<int64_t, int64_t> DataParallel::Share(int64_t count) const {
  const int64_t base = count / size_, extra = count % size_;
  const int64_t begin = rank_ * base + std::min<int64_t>(rank_, extra);
  return {begin, begin + base + (rank_ < extra ? 1 : 0)};
}

void DataParallel::SumGradients(AdamW& optimizer, int64_t bucket_bytes) const {
  if (size_ == 1) return;
  std::vector<Tensor*> grads = optimizer.gradients();
  std::vector<Tensor*> pending;
  int64_t pending_bytes = 0;
  const auto flush = [&] {
    if (pending.empty()) return;
    Tensor bucket = Tensor::Empty({pending_bytes / 4}, DType::kF32);
    char* at = static_cast<char*>(bucket.raw());
    for (const Tensor* g : pending) {
      std::memcpy(at, g->raw(), g->nbytes());
      at += g->nbytes();
    }
    world_->AllReduce(bucket, ReduceOp::kSum);
    at = static_cast<char*>(bucket.raw());
    for (Tensor* g : pending) {
      std::memcpy(g->raw(), at, g->nbytes());
      at += g->nbytes();
    }
    pending.clear();
    pending_bytes = 0;
  };
  // Last registered first: the order a backward pass finishes them in.
  for (auto it = grads.rbegin(); it != grads.rend(); ++it) {
    Tensor& g = **it;
    GEMMAPOD_CHECK(g.dtype() == DType::kF32 && g.device().is_cpu(),
                   "data parallelism: gradients are summed from host f32 tensors; this one is ",
                   g.Describe());
    const auto bytes = static_cast<int64_t>(g.nbytes());
    if (bytes >= bucket_bytes) {
      world_->AllReduce(g, ReduceOp::kSum);
      continue;
    }
    if (pending_bytes + bytes > bucket_bytes) flush();
    pending.push_back(&g);
    pending_bytes += bytes;
  }
  flush();
}

void DataParallel::Wait() const {
  if (size_ > 1) world_->Barrier();
}

std::vector<int32_t> DataParallel::Gather(const std::vector<int32_t>& words) const {
  if (size_ == 1) return words;
  const auto n = static_cast<int64_t>(words.size());
  Tensor mine = Tensor::Empty({n}, DType::kI32);
  std::memcpy(mine.raw(), words.data(), words.size() * sizeof(int32_t));
  Tensor all = Tensor::Empty({n * size_}, DType::kI32);
  world_->AllGather(mine, all);
  const int32_t* a = all.data<int32_t>();
  return std::vector<int32_t>(a, a + n * size_);
}

LossSum DataParallel::Sum(const LossSum& mine) const {
  std::vector<int32_t> words;
  Append64(words, &mine.sum);
  Append64(words, &mine.targets);
  const std::vector<int32_t> all = Gather(words);
  LossSum total;
  for (int r = 0; r < size_; ++r) {
    total.sum += Read64<double>(all.data() + 4 * r);
    total.targets += Read64<int64_t>(all.data() + 4 * r + 2);
  }
  return total;
}

int64_t DataParallel::Sum(int64_t mine) const {
  std::vector<int32_t> words;
  Append64(words, &mine);
  const std::vector<int32_t> all = Gather(words);
  int64_t total = 0;
  for (int r = 0; r < size_; ++r) total += Read64<int64_t>(all.data() + 2 * r);
  return total;
}

void DataParallel::CheckReplicasAgree(const AdamW& optimizer) const {
  if (size_ == 1) return;
  uint32_t crc = 0;
  for (const Tensor* w : optimizer.weights()) crc = Crc32Update(crc, w->raw(), w->nbytes());
  const std::vector<int32_t> all = Gather({static_cast<int32_t>(crc)});
  std::string differ;
  for (int r = 1; r < size_; ++r) {
    if (all[static_cast<size_t>(r)] != all[0]) differ += StrCat(differ.empty() ? "" : ", ", r);
  }
  GEMMAPOD_CHECK(differ.empty(), "data parallelism: the weights of replica(s) ", differ,
                 " differ from rank 0's after the same steps; the replicas no longer train one "
                 "model (stopping before a checkpoint records either)");
}

}  // namespace gemmapod
