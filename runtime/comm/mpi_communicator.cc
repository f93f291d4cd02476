#include "runtime/comm/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>

namespace gemmapod {

namespace {

void CheckMpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(StrCat(what, " failed: ", std::string(text, len)));
}

// bf16 combine functions for MPI_Op_create: inout[i] = inout[i] (op) in[i], in f32.
template <typename Combine>
void CombineBF16(void* in, void* inout, int* len, Combine combine) {
  const auto* a = static_cast<const BF16*>(in);
  auto* b = static_cast<BF16*>(inout);
  for (int i = 0; i < *len; ++i) {
    b[i] = FloatToBF16(combine(BF16ToFloat(a[i]), BF16ToFloat(b[i])));
  }
}
void SumBF16(void* in, void* inout, int* len, MPI_Datatype*) {
  CombineBF16(in, inout, len, [](float x, float y) { return x + y; });
}
void MaxBF16(void* in, void* inout, int* len, MPI_Datatype*) {
  CombineBF16(in, inout, len, [](float x, float y) { return std::max(x, y); });
}
void MinBF16(void* in, void* inout, int* len, MPI_Datatype*) {
  CombineBF16(in, inout, len, [](float x, float y) { return std::min(x, y); });
}

MPI_Datatype MpiType(DType t) {
  switch (t) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kBF16:
      return MPI_UINT16_T;  // reductions go through the bf16 user operations below
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI8:
      return MPI_INT8_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op MpiOp(DType t, ReduceOp op) {
  if (t != DType::kBF16) {
    switch (op) {
      case ReduceOp::kSum:
        return MPI_SUM;
      case ReduceOp::kMax:
        return MPI_MAX;
      case ReduceOp::kMin:
        return MPI_MIN;
    }
  }
  // Created once, on first use, after MPI_Init; freed by MPI_Finalize.
  static MPI_Op ops[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
  static MPI_User_function* fns[3] = {SumBF16, MaxBF16, MinBF16};
  const int i = static_cast<int>(op);
  if (ops[i] == MPI_OP_NULL)
    CheckMpi(MPI_Op_create(fns[i], /*commute=*/1, &ops[i]), "MPI_Op_create");
  return ops[i];
}

void CheckHost(const Tensor& t, const char* what) {
  GEMMAPOD_CHECK(t.device().is_cpu(), what, ": the MPI communicator moves host memory, got ",
                 t.Describe(), " (use the NCCL communicator for device tensors)");
}

int CountOf(int64_t n, const char* what) {
  GEMMAPOD_CHECK(n <= INT_MAX, what, ": ", n, " elements exceed MPI's int count");
  return static_cast<int>(n);
}

// MPI counts are ints: walk a large buffer in pieces of at most 2^30 elements.
template <typename Fn>
void InChunks(const Tensor& t, Fn fn) {
  constexpr int64_t kChunk = int64_t{1} << 30;
  const int64_t n = t.numel();
  const size_t elem = DTypeSize(t.dtype());
  char* base = static_cast<char*>(const_cast<void*>(t.raw()));
  for (int64_t off = 0; off < n; off += kChunk) {
    fn(base + off * elem, static_cast<int>(std::min(kChunk, n - off)));
  }
}

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    CheckMpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  }
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int MpiSession::world_rank() const {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int MpiSession::world_size() const {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

void MpiSession::Abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::World() {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  CheckMpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  CheckMpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

void MpiCommunicator::AllReduce(Tensor& tensor, ReduceOp op) {
  CheckHost(tensor, "AllReduce");
  const MPI_Datatype type = MpiType(tensor.dtype());
  const MPI_Op mpi_op = MpiOp(tensor.dtype(), op);
  InChunks(tensor, [&](void* p, int n) {
    CheckMpi(MPI_Allreduce(MPI_IN_PLACE, p, n, type, mpi_op, comm_), "MPI_Allreduce");
  });
}

void MpiCommunicator::AllGather(const Tensor& in, Tensor& out) {
  CheckHost(in, "AllGather");
  CheckHost(out, "AllGather");
  CheckAllGatherShapes(in, out, size_);
  const int n = CountOf(in.numel(), "AllGather");
  const MPI_Datatype type = MpiType(in.dtype());
  CheckMpi(MPI_Allgather(in.raw(), n, type, out.raw(), n, type, comm_), "MPI_Allgather");
}

void MpiCommunicator::ReduceScatter(const Tensor& in, Tensor& out, ReduceOp op) {
  CheckHost(in, "ReduceScatter");
  CheckHost(out, "ReduceScatter");
  CheckReduceScatterShapes(in, out, size_);
  const int n = CountOf(out.numel(), "ReduceScatter");
  CheckMpi(MPI_Reduce_scatter_block(in.raw(), out.raw(), n, MpiType(in.dtype()),
                                    MpiOp(in.dtype(), op), comm_),
           "MPI_Reduce_scatter_block");
}

void MpiCommunicator::Broadcast(Tensor& tensor, int root) {
  CheckHost(tensor, "Broadcast");
  GEMMAPOD_CHECK(root >= 0 && root < size_, "Broadcast: root ", root, " outside a group of ",
                 size_);
  const MPI_Datatype type = MpiType(tensor.dtype());
  InChunks(tensor,
           [&](void* p, int n) { CheckMpi(MPI_Bcast(p, n, type, root, comm_), "MPI_Bcast"); });
}

void MpiCommunicator::Send(const Tensor& tensor, int dst, int tag) {
  CheckHost(tensor, "Send");
  GEMMAPOD_CHECK(dst >= 0 && dst < size_ && dst != rank_, "Send: bad destination ", dst,
                 " from rank ", rank_, " of ", size_);
  const MPI_Datatype type = MpiType(tensor.dtype());
  InChunks(tensor,
           [&](void* p, int n) { CheckMpi(MPI_Send(p, n, type, dst, tag, comm_), "MPI_Send"); });
}

void MpiCommunicator::Recv(Tensor& tensor, int src, int tag) {
  CheckHost(tensor, "Recv");
  GEMMAPOD_CHECK(src >= 0 && src < size_ && src != rank_, "Recv: bad source ", src, " at rank ",
                 rank_, " of ", size_);
  const MPI_Datatype type = MpiType(tensor.dtype());
  InChunks(tensor, [&](void* p, int n) {
    MPI_Status status;
    CheckMpi(MPI_Recv(p, n, type, src, tag, comm_, &status), "MPI_Recv");
    int got = 0;
    MPI_Get_count(&status, type, &got);
    GEMMAPOD_CHECK(got == n, "Recv: expected ", n, " elements of ", tensor.Describe(),
                   " from rank ", src, ", got ", got);
  });
}

void MpiCommunicator::Barrier() { CheckMpi(MPI_Barrier(comm_), "MPI_Barrier"); }

std::unique_ptr<Communicator> MpiCommunicator::Split(int color, int key) {
  MPI_Comm sub = MPI_COMM_NULL;
  CheckMpi(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(sub);
}

}  // namespace gemmapod
