#include "training/tensor_parallel.h"

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

Tensor GatherWhole(Communicator& tp, const Tensor& mine, const Shape& shape,
                   const std::vector<ParameterSlice>& slices) {
  GEMMAPOD_CHECK(tp.rank() == 0 && static_cast<int>(slices.size()) == tp.size(),
                 "GatherWhole: called on rank ", tp.rank(), " with ", slices.size(), " slices");
  if (slices[0].dim < 0) return mine;  // replicated: rank 0's copy is the tensor
  Tensor whole = Tensor::Empty(shape, mine.dtype());
  for (int r = 0; r < tp.size(); ++r) {
    const ParameterSlice& s = slices[static_cast<size_t>(r)];
    if (r == 0) {
      Place(mine, s, whole);
      continue;
    }
    Shape part_shape = shape;
    part_shape[static_cast<size_t>(s.dim)] = s.padded_end - s.begin;
    Tensor part = Tensor::Empty(part_shape, mine.dtype());
    tp.Recv(part, r, kPartTag);
    Place(part, s, whole);
  }
  return whole;
}

void SendPart(Communicator& tp, const Tensor& mine, const ParameterSlice& slice) {
  if (slice.dim >= 0) tp.Send(mine, 0, kPartTag);
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

TensorParallelParameters::TensorParallelParameters(Communicator* tp, const Visit& visit) : tp_(tp) {
  for (int r = 0; r < tp->size(); ++r) {
    size_t i = 0;
    visit(r, [&](const std::string& name, const Shape& shape, const ParameterSlice& slice) {
      if (r == 0) {
        index_[name] = names_.size();
        names_.push_back(name);
        shapes_.push_back(shape);
        slices_.emplace_back();
      }
      GEMMAPOD_CHECK(i < names_.size() && names_[i] == name, "tensor parallelism: rank ", r,
                     " holds '", name, "' where rank 0 holds ",
                     i < names_.size() ? "'" + names_[i] + "'" : std::string("nothing"));
      slices_[i++].push_back(slice);
    });
    GEMMAPOD_CHECK(i == names_.size(), "tensor parallelism: rank ", r, " holds ", i,
                   " parameters, rank 0 ", names_.size());
  }
}

size_t TensorParallelParameters::Index(const std::string& name) const {
  const auto it = index_.find(name);
  GEMMAPOD_CHECK(it != index_.end(), "tensor parallelism: no parameter '", name, "'");
  return it->second;
}

Tensor TensorParallelParameters::Whole(const std::string& name, const Tensor& mine) const {
  const size_t i = Index(name);
  return GatherWhole(*tp_, mine, shapes_[i], slices_[i]);
}

void TensorParallelParameters::Send(const std::string& name, const Tensor& mine) const {
  SendPart(*tp_, mine, slices_[Index(name)][static_cast<size_t>(tp_->rank())]);
}

Tensor TensorParallelParameters::PartOf(const std::string& name, const Tensor& whole) const {
  return CutPart(whole, slices_[Index(name)][static_cast<size_t>(tp_->rank())]);
}

bool TensorParallelParameters::Replicated(const std::string& name) const {
  return slices_[Index(name)][0].dim < 0;
}

void TensorParallelParameters::CountReplicatedOnce(AdamW& optimizer) const {
  if (tp_->rank() == 0) return;
  for (const std::string& name : optimizer.names()) {
    if (index_.count(name) > 0 && Replicated(name)) optimizer.LeaveOutOfNorm(name);
  }
}

}  // namespace gemmapod
