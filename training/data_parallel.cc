#include "training/data_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "runtime/checkpoint/crc32.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "runtime/ops/grad_ops.h"

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

// Tensors laid end to end: calls fn(tensor, first, last, at) for each piece of the elements
// [begin, end), where the piece is the tensor's (flattened) elements [first, last) and starts
// `at` elements after begin.
template <typename T, typename Fn>
void ForEachPiece(const std::vector<T*>& tensors, int64_t begin, int64_t end, Fn fn) {
  int64_t start = 0;  // the first element of the tensor in the flat order
  for (T* t : tensors) {
    const int64_t n = t->numel();
    const int64_t first = std::max<int64_t>(begin - start, 0);
    const int64_t last = std::min<int64_t>(end - start, n);
    if (first < last) fn(*t, first, last, start + first - begin);
    start += n;
    if (start >= end) break;
  }
}

Tensor Elements(const Tensor& t, int64_t first, int64_t last) {
  return t.Reshape({t.numel()}).Slice(first, last);
}

// Copies elements [begin, end) of f32 tensors laid end to end into dst.
template <typename T>
void CopyOut(const std::vector<T*>& tensors, int64_t begin, int64_t end, float* dst) {
  ForEachPiece(tensors, begin, end, [&](const Tensor& t, int64_t first, int64_t last, int64_t at) {
    std::memcpy(dst + at, t.data<float>() + first, static_cast<size_t>(last - first) * 4);
  });
}

// Writes f32 values into elements [begin, end) of tensors laid end to end (bf16 ones rounded
// as the optimizer rounds its masters into them).
void CopyIn(const std::vector<Tensor*>& tensors, int64_t begin, int64_t end, const float* src) {
  ForEachPiece(tensors, begin, end, [&](Tensor& t, int64_t first, int64_t last, int64_t at) {
    const Tensor values = Tensor::Borrow(const_cast<float*>(src + at), {last - first}, DType::kF32);
    Tensor into = Elements(t, first, last);
    ops::CastInto(values, into);
  });
}

constexpr int kStateTag = 7301;

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

std::vector<std::vector<Tensor*>> GradientBuckets(AdamW& optimizer, int64_t bucket_bytes) {
  std::vector<std::vector<Tensor*>> buckets;
  std::vector<Tensor*> pending;
  int64_t pending_bytes = 0;
  const auto flush = [&] {
    if (!pending.empty()) buckets.push_back(std::move(pending));
    pending.clear();
    pending_bytes = 0;
  };
  // Last registered first: the order a backward pass finishes them in.
  const std::vector<Tensor*> grads = optimizer.gradients();
  for (auto it = grads.rbegin(); it != grads.rend(); ++it) {
    Tensor& g = **it;
    GEMMAPOD_CHECK(g.dtype() == DType::kF32 && g.device().is_cpu(),
                   "data parallelism: gradients are summed from host f32 tensors; this one is ",
                   g.Describe());
    const auto bytes = static_cast<int64_t>(g.nbytes());
    if (bytes >= bucket_bytes) {
      flush();
      buckets.push_back({&g});
      continue;
    }
    if (pending_bytes + bytes > bucket_bytes) flush();
    pending.push_back(&g);
    pending_bytes += bytes;
  }
  flush();
  return buckets;
}

namespace {

// A bucket's tensors as one tensor to all-reduce: the tensor itself when alone, else a packed
// copy (Unpack puts the sums back).
Tensor Pack(const std::vector<Tensor*>& bucket) {
  if (bucket.size() == 1) return *bucket.front();
  int64_t n = 0;
  for (const Tensor* g : bucket) n += g->numel();
  Tensor packed = Tensor::Empty({n}, DType::kF32);
  char* at = static_cast<char*>(packed.raw());
  for (const Tensor* g : bucket) {
    std::memcpy(at, g->raw(), g->nbytes());
    at += g->nbytes();
  }
  return packed;
}

void Unpack(const Tensor& packed, const std::vector<Tensor*>& bucket) {
  if (bucket.size() == 1) return;
  const char* at = static_cast<const char*>(packed.raw());
  for (Tensor* g : bucket) {
    std::memcpy(g->raw(), at, g->nbytes());
    at += g->nbytes();
  }
}

}  // namespace

void DataParallel::SumGradients(AdamW& optimizer, int64_t bucket_bytes) const {
  if (size_ == 1) return;
  for (const std::vector<Tensor*>& bucket : GradientBuckets(optimizer, bucket_bytes)) {
    Tensor packed = Pack(bucket);
    world_->AllReduce(packed, ReduceOp::kSum);
    Unpack(packed, bucket);
  }
}

OverlappedGradientSum::OverlappedGradientSum(Communicator* world, AdamW& optimizer,
                                             int64_t bucket_bytes)
    : world_(world) {
  std::map<const Tensor*, std::string> layer_of;
  const std::vector<std::string> names = optimizer.names();
  const std::vector<Tensor*> grads = optimizer.gradients();
  for (size_t i = 0; i < names.size(); ++i) {
    // "model.layers.3.mlp..." (or "model.decoder.layers.3..."): its layer's prefix.
    const size_t at = names[i].find("layers.");
    if (at == std::string::npos) continue;
    const size_t dot = names[i].find('.', at + 7);
    if (dot == std::string::npos) continue;
    layer_of[grads[i]] = names[i].substr(0, dot + 1);
  }
  for (std::vector<Tensor*>& tensors : GradientBuckets(optimizer, bucket_bytes)) {
    Bucket bucket;
    for (Tensor* g : tensors) {
      const auto it = layer_of.find(g);
      // A gradient outside the layers (embedding, final norm) is final only at Finish.
      if (it != layer_of.end()) layer_tensors_[it->second].push_back(buckets_.size());
    }
    bucket.grads = std::move(tensors);
    buckets_.push_back(std::move(bucket));
  }
}

OverlappedGradientSum::~OverlappedGradientSum() = default;

void OverlappedGradientSum::LayerDone(const std::string& prefix) {
  const auto it = layer_tensors_.find(prefix);
  if (it == layer_tensors_.end() || !layers_done_.insert(prefix).second) return;
  // A bucket is final once every one of its gradients is (one outside the layers never is).
  for (const size_t b : it->second) ++buckets_[b].done;
  // Start, in bucket order (every rank the same), each bucket whose gradients are all final.
  while (next_ < buckets_.size() && buckets_[next_].done == buckets_[next_].grads.size()) {
    Start(buckets_[next_++]);
  }
  // MPI moves nonblocking collectives on inside its calls: give the started ones a turn.
  for (size_t b = 0; b < next_; ++b) {
    if (buckets_[b].transfer) buckets_[b].transfer->Done();
  }
}

void OverlappedGradientSum::Start(Bucket& bucket) {
  bucket.packed = Pack(bucket.grads);
  bucket.transfer = world_->AllReduceAsync(bucket.packed, ReduceOp::kSum);
}

void OverlappedGradientSum::Finish() {
  // The buckets the backward did not finish early (the embedding's, the final norm's) go as
  // blocking all-reduces after the started ones: nothing is left to overlap them with, and
  // MPI's blocking algorithms are the faster ones.
  const size_t started = next_;
  for (size_t b = 0; b < started; ++b) {
    Bucket& bucket = buckets_[b];
    bucket.transfer->Wait();
    Unpack(bucket.packed, bucket.grads);
    bucket.transfer.reset();
    bucket.packed = Tensor();
  }
  for (size_t b = started; b < buckets_.size(); ++b) {
    Tensor packed = Pack(buckets_[b].grads);
    world_->AllReduce(packed, ReduceOp::kSum);
    Unpack(packed, buckets_[b].grads);
  }
  for (Bucket& bucket : buckets_) bucket.done = 0;
  next_ = 0;
  layers_done_.clear();
}

std::pair<int64_t, int64_t> DataParallel::RangeOf(int r, int64_t total) const {
  return {total * r / size_, total * (r + 1) / size_};
}

void DataParallel::Shard(AdamW& optimizer) {
  int64_t total = 0;
  for (const Tensor* w : optimizer.weights()) total += w->numel();
  const auto [begin, end] = RangeOf(rank_, total);
  optimizer.KeepStateOf(begin, end);
  sharded_ = true;
}

// ZeRO-1 works in rounds of `chunk` elements of every replica's range (the ranges' lengths,
// which differ by at most one, padded with zeros): one collective of a bucket per round.
void DataParallel::ReduceScatterGradients(AdamW& optimizer, int64_t bucket_bytes) const {
  GEMMAPOD_CHECK(sharded_, "ReduceScatterGradients: the optimizer state is not sharded");
  std::vector<Tensor*> grads = optimizer.gradients();
  int64_t total = 0;
  for (const Tensor* g : grads) {
    GEMMAPOD_CHECK(g->dtype() == DType::kF32 && g->device().is_cpu(),
                   "ZeRO-1: gradients are summed from host f32 tensors; this one is ",
                   g->Describe());
    total += g->numel();
  }
  const int64_t chunk = std::max<int64_t>(1, bucket_bytes / 4 / size_);
  const int64_t rounds = ((total + size_ - 1) / size_ + chunk - 1) / chunk;
  Tensor blocks = Tensor::Empty({chunk * size_}, DType::kF32);
  Tensor mine = Tensor::Empty({chunk}, DType::kF32);
  for (int64_t round = 0; round < rounds; ++round) {
    float* out = blocks.data<float>();
    std::fill(out, out + chunk * size_, 0.0f);
    for (int r = 0; r < size_; ++r) {
      const auto [first, last] = Piece(r, round, chunk, total);
      CopyOut(grads, first, last, out + r * chunk);
    }
    world_->ReduceScatter(blocks, mine, ReduceOp::kSum);
    const auto [first, last] = Piece(rank_, round, chunk, total);
    CopyIn(grads, first, last, mine.data<float>());
  }
}

void DataParallel::AllGatherUpdates(AdamW& optimizer, int64_t bucket_bytes) const {
  GEMMAPOD_CHECK(sharded_, "AllGatherUpdates: the optimizer state is not sharded");
  std::vector<Tensor*> weights = optimizer.weights();
  int64_t total = 0;
  for (const Tensor* w : weights) total += w->numel();
  // This replica's updated values: its masters (the owned elements) in parameter order.
  std::vector<const Tensor*> masters;
  for (const std::string& name : optimizer.names()) {
    const auto [first, last] = optimizer.owned(name);
    if (first < last) masters.push_back(&optimizer.master(name));
  }
  const int64_t chunk = std::max<int64_t>(1, bucket_bytes / 4 / size_);
  const int64_t rounds = ((total + size_ - 1) / size_ + chunk - 1) / chunk;
  const int64_t my_begin = RangeOf(rank_, total).first;
  Tensor mine = Tensor::Empty({chunk}, DType::kF32);
  Tensor gathered = Tensor::Empty({chunk * size_}, DType::kF32);
  for (int64_t round = 0; round < rounds; ++round) {
    const auto [first, last] = Piece(rank_, round, chunk, total);
    std::fill(mine.data<float>(), mine.data<float>() + chunk, 0.0f);
    CopyOut(masters, first - my_begin, last - my_begin, mine.data<float>());
    world_->AllGather(mine, gathered);
    for (int r = 0; r < size_; ++r) {
      const auto [rf, rl] = Piece(r, round, chunk, total);
      CopyIn(weights, rf, rl, gathered.data<float>() + r * chunk);
    }
  }
}

std::pair<int64_t, int64_t> DataParallel::Piece(int r, int64_t round, int64_t chunk,
                                                int64_t total) const {
  const auto [begin, end] = RangeOf(r, total);
  const int64_t first = std::min(end, begin + round * chunk);
  return {first, std::min(end, first + chunk)};
}

Tensor DataParallel::GatherState(const AdamW& optimizer, const std::string& name,
                                 AdamWPart part) const {
  const Tensor& weight = optimizer.weight(name);
  if (!sharded_) return optimizer.state(name, part);
  int64_t total = 0, at = -1;
  for (const std::string& n : optimizer.names()) {
    if (n == name) at = total;
    total += optimizer.weight(n).numel();
  }
  Tensor whole = Tensor::Empty(weight.shape(), DType::kF32);
  for (int r = 0; r < size_; ++r) {
    const auto [begin, end] = RangeOf(r, total);
    const int64_t first = std::max<int64_t>(begin - at, 0);
    const int64_t last = std::min<int64_t>(end - at, weight.numel());
    if (first >= last) continue;
    Tensor piece = Elements(whole, first, last);
    if (r == rank_) {
      ops::CastInto(optimizer.state(name, part), piece);
    } else {
      world_->Recv(piece, r, kStateTag);
    }
  }
  return whole;
}

void DataParallel::SendState(const AdamW& optimizer) const {
  if (!sharded_) return;
  for (const std::string& name : optimizer.names()) {
    const auto [first, last] = optimizer.owned(name);
    if (first >= last) continue;
    for (const AdamWPart part : kAdamWParts)
      world_->Send(optimizer.state(name, part), 0, kStateTag);
  }
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

template <typename T>
T DataParallel::SumOf(T mine) const {
  std::vector<int32_t> words;
  Append64(words, &mine);
  const std::vector<int32_t> all = Gather(words);
  T total = 0;
  for (int r = 0; r < size_; ++r) total += Read64<T>(all.data() + 2 * r);
  return total;
}

double DataParallel::Sum(double mine) const { return SumOf(mine); }

double DataParallel::Max(double mine) const {
  std::vector<int32_t> words;
  Append64(words, &mine);
  const std::vector<int32_t> all = Gather(words);
  double most = mine;
  for (int r = 0; r < size_; ++r) most = std::max(most, Read64<double>(all.data() + 2 * r));
  return most;
}

std::vector<double> DataParallel::Sum(const std::vector<double>& mine) const {
  if (size_ == 1 || mine.empty()) return mine;
  std::vector<int32_t> words;
  for (const double& v : mine) Append64(words, &v);
  const std::vector<int32_t> all = Gather(words);
  GEMMAPOD_CHECK(all.size() == words.size() * static_cast<size_t>(size_),
                 "data parallelism: replicas summed vectors of different lengths");
  std::vector<double> total(mine.size(), 0.0);
  for (int r = 0; r < size_; ++r) {
    for (size_t i = 0; i < mine.size(); ++i) {
      total[i] += Read64<double>(all.data() + words.size() * static_cast<size_t>(r) + 2 * i);
    }
  }
  return total;
}
int64_t DataParallel::Sum(int64_t mine) const { return SumOf(mine); }

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
