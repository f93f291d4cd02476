#include "training/model_parallel.h"

#include <cstring>

#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "training/adamw.h"

namespace gemmapod {
namespace {

constexpr int kPartTag = 7302;

// Rows and row length (in bytes) of a tensor seen as [dim 0, everything else].
struct Rows {
  int64_t rows, row_bytes;
};
Rows RowsOf(const Tensor& t) {
  const int64_t rows = t.shape().empty() ? 1 : t.dim(0);
  return {rows, rows > 0 ? static_cast<int64_t>(t.nbytes()) / rows : 0};
}

// Copies `part` (rank's slice) into `whole`: rows [begin, end) of dim 0, or columns [begin, end)
// of dim 1 of a matrix.
void Place(const Tensor& part, const ParameterSlice& slice, Tensor& whole) {
  auto* to = static_cast<char*>(whole.raw());
  const auto* from = static_cast<const char*>(part.raw());
  if (slice.dim == 0) {
    const int64_t row_bytes = RowsOf(whole).row_bytes;
    std::memcpy(to + slice.begin * row_bytes, from,
                static_cast<size_t>((slice.end - slice.begin) * row_bytes));
    return;
  }
  GEMMAPOD_CHECK(slice.dim == 1 && whole.shape().size() == 2,
                 "tensor parallelism: a part split "
                 "along dimension ",
                 slice.dim, " of ", whole.Describe());
  const int64_t elem = static_cast<int64_t>(DTypeSize(whole.dtype()));
  const int64_t cols = whole.dim(1), width = slice.end - slice.begin;
  for (int64_t r = 0; r < whole.dim(0); ++r) {
    std::memcpy(to + (r * cols + slice.begin) * elem, from + r * width * elem,
                static_cast<size_t>(width * elem));
  }
}

}  // namespace

Tensor GatherWhole(Communicator& group, const Tensor& mine, const Shape& shape, DType dtype,
                   const std::vector<int>& sources, const std::vector<ParameterSlice>& slices) {
  GEMMAPOD_CHECK(group.rank() == 0 && !sources.empty() && slices.size() == sources.size(),
                 "GatherWhole: called on rank ", group.rank(), " with ", sources.size(),
                 " sources");
  if (slices[0].dim < 0 && sources[0] == 0) return mine;  // replicated: rank 0's copy is it
  Tensor whole = Tensor::Empty(shape, dtype);
  for (size_t i = 0; i < sources.size(); ++i) {
    const ParameterSlice& s = slices[i];
    if (sources[i] == 0) {
      Place(mine, s, whole);
      continue;
    }
    if (s.dim < 0) {
      group.Recv(whole, sources[i], kPartTag);
      continue;
    }
    Shape part_shape = shape;
    part_shape[static_cast<size_t>(s.dim)] = s.padded_end - s.begin;
    Tensor part = Tensor::Empty(part_shape, dtype);
    group.Recv(part, sources[i], kPartTag);
    Place(part, s, whole);
  }
  return whole;
}

Tensor CutPart(const Tensor& whole, const ParameterSlice& slice) {
  if (slice.dim < 0) return whole;
  Shape shape = whole.shape();
  shape[static_cast<size_t>(slice.dim)] = slice.padded_end - slice.begin;
  Tensor part = Tensor::Zeros(shape, whole.dtype());
  auto* to = static_cast<char*>(part.raw());
  const auto* from = static_cast<const char*>(whole.raw());
  if (slice.dim == 0) {
    const int64_t row_bytes = RowsOf(whole).row_bytes;
    std::memcpy(to, from + slice.begin * row_bytes,
                static_cast<size_t>((slice.end - slice.begin) * row_bytes));
    return part;
  }
  const int64_t elem = static_cast<int64_t>(DTypeSize(whole.dtype()));
  const int64_t cols = whole.dim(1), width = slice.end - slice.begin;
  for (int64_t r = 0; r < whole.dim(0); ++r) {
    std::memcpy(to + r * width * elem, from + (r * cols + slice.begin) * elem,
                static_cast<size_t>(width * elem));
  }
  return part;
}

namespace {

bool SameSlice(const ParameterSlice& a, const ParameterSlice& b) {
  return a.dim == b.dim && (a.dim < 0 || (a.begin == b.begin && a.end == b.end));
}

}  // namespace

ModelParallelParameters::ModelParallelParameters(Communicator* group, const Visit& visit)
    : group_(group) {
  for (int r = 0; r < group->size(); ++r) {
    visit(r, [&](const std::string& name, const Shape& shape, const ParameterSlice& slice) {
      auto it = index_.find(name);
      if (it == index_.end()) {
        it = index_.emplace(name, parameters_.size()).first;
        names_.push_back(name);
        parameters_.push_back({name, shape, {}, {}, {}, {}});
      }
      Parameter& p = parameters_[it->second];
      GEMMAPOD_CHECK(p.shape == shape, "model parallelism: rank ", r, " sees '", name, "' as ",
                     ShapeToString(shape), " and an earlier rank as ", ShapeToString(p.shape));
      p.holders.push_back(r);
      p.slices.push_back(slice);
      // The first holder of each distinct slice is its source.
      for (const ParameterSlice& s : p.source_slices) {
        if (SameSlice(s, slice)) return;
      }
      p.sources.push_back(r);
      p.source_slices.push_back(slice);
    });
  }
}

const ModelParallelParameters::Parameter& ModelParallelParameters::Find(
    const std::string& name) const {
  const auto it = index_.find(name);
  GEMMAPOD_CHECK(it != index_.end(), "model parallelism: no parameter '", name, "'");
  return parameters_[it->second];
}

bool ModelParallelParameters::IsSource(const Parameter& p, int rank) const {
  for (const int s : p.sources) {
    if (s == rank) return true;
  }
  return false;
}

Tensor ModelParallelParameters::Whole(const std::string& name, const Tensor* mine,
                                      DType dtype) const {
  const Parameter& p = Find(name);
  GEMMAPOD_CHECK(mine != nullptr || !IsSource(p, 0), "model parallelism: rank 0 holds '", name,
                 "' and did not pass it");
  return GatherWhole(*group_, mine != nullptr ? *mine : Tensor(), p.shape, dtype, p.sources,
                     p.source_slices);
}

void ModelParallelParameters::Send(const std::string& name, const Tensor& mine) const {
  const int rank = group_->rank();
  if (rank != 0 && IsSource(Find(name), rank)) group_->Send(mine, 0, kPartTag);
}

Tensor ModelParallelParameters::PartOf(const std::string& name, const Tensor& whole) const {
  const Parameter& p = Find(name);
  const int rank = group_->rank();
  for (size_t i = 0; i < p.holders.size(); ++i) {
    if (p.holders[i] == rank) return CutPart(whole, p.slices[i]);
  }
  throw Error(StrCat("model parallelism: rank ", rank, " holds no part of '", name, "'"));
}

void ModelParallelParameters::CountEachElementOnce(AdamW& optimizer) const {
  const int rank = group_->rank();
  for (const std::string& name : optimizer.names()) {
    const auto it = index_.find(name);
    if (it != index_.end() && !IsSource(parameters_[it->second], rank)) {
      optimizer.LeaveOutOfNorm(name);
    }
  }
}

}  // namespace gemmapod
