#include "runtime/comm/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <vector>

#include "runtime/comm/comm_watchdog.h"

namespace gemmapod {

namespace {

void CheckMpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(StrCat(what, " failed: ", std::string(text, len)));
}

MPI_Datatype MpiType(DType t) {
  switch (t) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kBF16:
      return MPI_UINT16_T;  // moved as bits; reduced in f32 (see AllReduce)
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI8:
      return MPI_INT8_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op MpiOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_OP_NULL;
}

void CheckHost(const Tensor& t, const char* what) {
  GEMMAPOD_CHECK(t.device().is_cpu(), what, ": the MPI communicator moves host memory, got ",
                 t.Describe(), " (use the NCCL communicator for device tensors)");
}

int CountOf(int64_t n, const char* what) {
  GEMMAPOD_CHECK(n <= INT_MAX, what, ": ", n, " elements exceed MPI's int count");
  return static_cast<int>(n);
}

// Large buffers move in pieces of 1 Mi elements: MPI counts are ints, and pieces that stay in
// cache reduce about twice as fast as one 64 MiB all-reduce here (bench/comm_bench).
constexpr int64_t kChunkElements = int64_t{1} << 20;

template <typename Fn>
void InChunks(const Tensor& t, Fn fn) {
  const int64_t n = t.numel();
  const size_t elem = DTypeSize(t.dtype());
  char* base = static_cast<char*>(const_cast<void*>(t.raw()));
  for (int64_t off = 0; off < n; off += kChunkElements) {
    fn(base + off * elem, static_cast<int>(std::min(kChunkElements, n - off)));
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
  if (world_size() > 1) StartCommWatchdog(world_rank());
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
  // World ranks of this group's ranks, for the watchdog's message.
  MPI_Group group = MPI_GROUP_NULL, world = MPI_GROUP_NULL;
  MPI_Comm_group(comm_, &group);
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  std::vector<int> ranks(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) ranks[static_cast<size_t>(r)] = r;
  world_ranks_.assign(static_cast<size_t>(size_), -1);
  MPI_Group_translate_ranks(group, size_, ranks.data(), world, world_ranks_.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

void MpiCommunicator::AllReduce(Tensor& tensor, ReduceOp op) {
  CheckHost(tensor, "AllReduce");
  const CommWait wait("MPI_Allreduce", -1, -1, size_);
  if (tensor.dtype() == DType::kBF16) {
    // MPI has no bf16: reduce in f32 and round once, so the result is the bf16 rounding of the
    // f32 reduction (and MPI keeps its tuned algorithms, which user-defined ops would lose).
    // One chunk at a time through a small f32 buffer that stays in cache.
    Tensor wide = Tensor::Empty({std::min(tensor.numel(), kChunkElements)}, DType::kF32);
    float* w = wide.data<float>();
    InChunks(tensor, [&](void* p, int n) {
      ConvertBF16ToF32(static_cast<const BF16*>(p), w, n);
      CheckMpi(MPI_Allreduce(MPI_IN_PLACE, w, n, MPI_FLOAT, MpiOp(op), comm_), "MPI_Allreduce");
      ConvertF32ToBF16(w, static_cast<BF16*>(p), n);
    });
    return;
  }
  const MPI_Datatype type = MpiType(tensor.dtype());
  InChunks(tensor, [&](void* p, int n) {
    CheckMpi(MPI_Allreduce(MPI_IN_PLACE, p, n, type, MpiOp(op), comm_), "MPI_Allreduce");
  });
}

void MpiCommunicator::AllGather(const Tensor& in, Tensor& out) {
  CheckHost(in, "AllGather");
  CheckHost(out, "AllGather");
  CheckAllGatherShapes(in, out, size_);
  const int n = CountOf(in.numel(), "AllGather");
  const MPI_Datatype type = MpiType(in.dtype());
  const CommWait wait("MPI_Allgather", -1, -1, size_);
  CheckMpi(MPI_Allgather(in.raw(), n, type, out.raw(), n, type, comm_), "MPI_Allgather");
}

void MpiCommunicator::ReduceScatter(const Tensor& in, Tensor& out, ReduceOp op) {
  CheckHost(in, "ReduceScatter");
  CheckHost(out, "ReduceScatter");
  CheckReduceScatterShapes(in, out, size_);
  if (in.dtype() == DType::kBF16) {  // reduce in f32, round once (as AllReduce)
    Tensor wide_out = Tensor::Empty(out.shape(), DType::kF32);
    ReduceScatter(in.To(DType::kF32), wide_out, op);
    ConvertF32ToBF16(wide_out.data<float>(), out.data<BF16>(), static_cast<size_t>(out.numel()));
    return;
  }
  const int n = CountOf(out.numel(), "ReduceScatter");
  const CommWait wait("MPI_Reduce_scatter_block", -1, -1, size_);
  CheckMpi(MPI_Reduce_scatter_block(in.raw(), out.raw(), n, MpiType(in.dtype()), MpiOp(op), comm_),
           "MPI_Reduce_scatter_block");
}

void MpiCommunicator::Broadcast(Tensor& tensor, int root) {
  CheckHost(tensor, "Broadcast");
  GEMMAPOD_CHECK(root >= 0 && root < size_, "Broadcast: root ", root, " outside a group of ",
                 size_);
  const MPI_Datatype type = MpiType(tensor.dtype());
  const CommWait wait("MPI_Bcast", WorldRank(root), -1, size_);
  InChunks(tensor,
           [&](void* p, int n) { CheckMpi(MPI_Bcast(p, n, type, root, comm_), "MPI_Bcast"); });
}

void MpiCommunicator::Send(const Tensor& tensor, int dst, int tag) {
  CheckHost(tensor, "Send");
  GEMMAPOD_CHECK(dst >= 0 && dst < size_ && dst != rank_, "Send: bad destination ", dst,
                 " from rank ", rank_, " of ", size_);
  const MPI_Datatype type = MpiType(tensor.dtype());
  const CommWait wait("MPI_Send", WorldRank(dst), tag, size_);
  InChunks(tensor,
           [&](void* p, int n) { CheckMpi(MPI_Send(p, n, type, dst, tag, comm_), "MPI_Send"); });
}

namespace {

class MpiPendingTransfer final : public PendingTransfer {
 public:
  // `what` names the wait for the watchdog; peer and tag are -1 for a collective.
  MpiPendingTransfer(Tensor tensor, int peer, int tag, const char* what)
      : tensor_(std::move(tensor)), peer_(peer), tag_(tag), what_(what) {}
  ~MpiPendingTransfer() override {
    if (requests_.empty()) return;
    if (std::uncaught_exceptions() > 0) {
      // Unwinding towards MPI_Abort: the receiver may itself be blocked on this rank, so waiting
      // could hang the job. Let the sends go and keep their buffer alive until the abort.
      for (MPI_Request& r : requests_) MPI_Request_free(&r);
      new Tensor(std::move(tensor_));  // deliberately leaked
      return;
    }
    // A destructor must not throw: an error here means the job is already failing.
    const CommWait wait(what_, peer_, tag_, 0);
    MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
  }
  void Wait() override {
    if (requests_.empty()) return;
    const CommWait wait(what_, peer_, tag_, 0);
    CheckMpi(MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE),
             "MPI_Waitall");
    requests_.clear();
  }
  bool Done() override {
    if (requests_.empty()) return true;
    int done = 0;
    CheckMpi(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done,
                         MPI_STATUSES_IGNORE),
             "MPI_Testall");
    if (done) requests_.clear();
    return done != 0;
  }
  const Tensor& tensor() const { return tensor_; }
  std::vector<MPI_Request>& requests() { return requests_; }

 private:
  Tensor tensor_;   // keeps the buffer alive until the send completes
  int peer_, tag_;  // for the watchdog's message
  const char* what_;
  std::vector<MPI_Request> requests_;
};

}  // namespace

std::unique_ptr<PendingTransfer> MpiCommunicator::AllReduceAsync(Tensor& tensor, ReduceOp op) {
  CheckHost(tensor, "AllReduceAsync");
  if (tensor.dtype() == DType::kBF16 || size_ == 1) return Communicator::AllReduceAsync(tensor, op);
  auto pending =
      std::make_unique<MpiPendingTransfer>(tensor, -1, -1, "MPI_Waitall (an all-reduce)");
  const MPI_Datatype type = MpiType(tensor.dtype());
  InChunks(pending->tensor(), [&](void* p, int n) {
    MPI_Request request;
    CheckMpi(MPI_Iallreduce(MPI_IN_PLACE, p, n, type, MpiOp(op), comm_, &request),
             "MPI_Iallreduce");
    pending->requests().push_back(request);
  });
  return pending;
}

std::unique_ptr<PendingTransfer> MpiCommunicator::SendAsync(const Tensor& tensor, int dst,
                                                            int tag) {
  CheckHost(tensor, "SendAsync");
  GEMMAPOD_CHECK(dst >= 0 && dst < size_ && dst != rank_, "SendAsync: bad destination ", dst,
                 " from rank ", rank_, " of ", size_);
  auto pending =
      std::make_unique<MpiPendingTransfer>(tensor, WorldRank(dst), tag, "MPI_Waitall (a send)");
  const MPI_Datatype type = MpiType(tensor.dtype());
  InChunks(pending->tensor(), [&](void* p, int n) {
    MPI_Request request;
    CheckMpi(MPI_Isend(p, n, type, dst, tag, comm_, &request), "MPI_Isend");
    pending->requests().push_back(request);
  });
  return pending;
}

void MpiCommunicator::Recv(Tensor& tensor, int src, int tag) {
  CheckHost(tensor, "Recv");
  GEMMAPOD_CHECK(src >= 0 && src < size_ && src != rank_, "Recv: bad source ", src, " at rank ",
                 rank_, " of ", size_);
  const MPI_Datatype type = MpiType(tensor.dtype());
  const CommWait wait("MPI_Recv", WorldRank(src), tag, size_);
  InChunks(tensor, [&](void* p, int n) {
    MPI_Status status;
    CheckMpi(MPI_Recv(p, n, type, src, tag, comm_, &status), "MPI_Recv");
    int got = 0;
    MPI_Get_count(&status, type, &got);
    GEMMAPOD_CHECK(got == n, "Recv: expected ", n, " elements of ", tensor.Describe(),
                   " from rank ", src, ", got ", got);
  });
}

bool MpiCommunicator::Probe(int src, int tag) {
  GEMMAPOD_CHECK(src >= 0 && src < size_ && src != rank_, "Probe: bad source ", src, " at rank ",
                 rank_, " of ", size_);
  int flag = 0;
  CheckMpi(MPI_Iprobe(src, tag, comm_, &flag, MPI_STATUS_IGNORE), "MPI_Iprobe");
  return flag != 0;
}

void MpiCommunicator::Barrier() {
  const CommWait wait("MPI_Barrier", -1, -1, size_);
  CheckMpi(MPI_Barrier(comm_), "MPI_Barrier");
}

int MpiCommunicator::WorldRank(int rank) const {
  return rank >= 0 && rank < size_ ? world_ranks_[static_cast<size_t>(rank)] : -1;
}

std::unique_ptr<Communicator> MpiCommunicator::Split(int color, int key) {
  MPI_Comm sub = MPI_COMM_NULL;
  CheckMpi(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(sub);
}

}  // namespace gemmapod
