#include "runtime/cuda/nccl_communicator.h"

#include <exception>

#include "runtime/comm/mpi_communicator.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace gemmapod {

// The stream is a blocking one (cudaStreamCreate): NCCL calls on it start only after the work
// callers enqueued on the default stream (kernels, copies that produced the tensor) is done.
struct NcclCommunicator::Handles {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
};

namespace {

ncclDataType_t NcclType(DType t) {
  switch (t) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI8:
      return ncclInt8;
  }
  return ncclFloat32;
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  return ncclSum;
}

}  // namespace

NcclCommunicator::NcclCommunicator(std::unique_ptr<Handles> handles, int device)
    : handles_(std::move(handles)), device_(device) {
  GEMMAPOD_NCCL_CHECK(ncclCommUserRank(handles_->comm, &rank_));
  GEMMAPOD_NCCL_CHECK(ncclCommCount(handles_->comm, &size_));
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::Create(MpiCommunicator& bootstrap, int device) {
  // Device tensors need the CUDA allocator: whoever makes a NCCL communicator will make them.
  cuda::RegisterCudaBackend();
  ncclUniqueId id;
  if (bootstrap.rank() == 0) GEMMAPOD_NCCL_CHECK(ncclGetUniqueId(&id));
  Tensor id_bytes = Tensor::Borrow(&id, {static_cast<int64_t>(sizeof id)}, DType::kI8);
  bootstrap.Broadcast(id_bytes, 0);
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(device));
  auto handles = std::make_unique<Handles>();
  GEMMAPOD_NCCL_CHECK(ncclCommInitRank(&handles->comm, bootstrap.size(), id, bootstrap.rank()));
  GEMMAPOD_CUDA_CHECK(cudaStreamCreate(&handles->stream));
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(handles), device));
}

NcclCommunicator::~NcclCommunicator() {
  if (!handles_) return;
  cudaSetDevice(device_);
  if (handles_->stream) cudaStreamDestroy(handles_->stream);
  if (handles_->comm) ncclCommDestroy(handles_->comm);
}

namespace {

void CheckOnDevice(const Tensor& t, int device, const char* what) {
  GEMMAPOD_CHECK(t.device() == Device::Cuda(device), what,
                 ": the NCCL communicator moves memory of cuda:", device, ", got ", t.Describe());
}

}  // namespace

void NcclCommunicator::AllReduce(Tensor& tensor, ReduceOp op) {
  CheckOnDevice(tensor, device_, "AllReduce");
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(device_));
  GEMMAPOD_NCCL_CHECK(ncclAllReduce(tensor.raw(), tensor.raw(), tensor.numel(),
                                    NcclType(tensor.dtype()), NcclOp(op), handles_->comm,
                                    handles_->stream));
  GEMMAPOD_CUDA_CHECK(cudaStreamSynchronize(handles_->stream));
}

void NcclCommunicator::AllGather(const Tensor& in, Tensor& out) {
  CheckOnDevice(in, device_, "AllGather");
  CheckOnDevice(out, device_, "AllGather");
  CheckAllGatherShapes(in, out, size_);
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(device_));
  GEMMAPOD_NCCL_CHECK(ncclAllGather(in.raw(), out.raw(), in.numel(), NcclType(in.dtype()),
                                    handles_->comm, handles_->stream));
  GEMMAPOD_CUDA_CHECK(cudaStreamSynchronize(handles_->stream));
}

void NcclCommunicator::ReduceScatter(const Tensor& in, Tensor& out, ReduceOp op) {
  CheckOnDevice(in, device_, "ReduceScatter");
  CheckOnDevice(out, device_, "ReduceScatter");
  CheckReduceScatterShapes(in, out, size_);
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(device_));
  GEMMAPOD_NCCL_CHECK(ncclReduceScatter(in.raw(), out.raw(), out.numel(), NcclType(in.dtype()),
                                        NcclOp(op), handles_->comm, handles_->stream));
  GEMMAPOD_CUDA_CHECK(cudaStreamSynchronize(handles_->stream));
}

void NcclCommunicator::Broadcast(Tensor& tensor, int root) {
  CheckOnDevice(tensor, device_, "Broadcast");
  GEMMAPOD_CHECK(root >= 0 && root < size_, "Broadcast: root ", root, " outside a group of ",
                 size_);
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(device_));
  GEMMAPOD_NCCL_CHECK(ncclBroadcast(tensor.raw(), tensor.raw(), tensor.numel(),
                                    NcclType(tensor.dtype()), root, handles_->comm,
                                    handles_->stream));
  GEMMAPOD_CUDA_CHECK(cudaStreamSynchronize(handles_->stream));
}

// NCCL point-to-point has no tags: messages between a pair of ranks arrive in order, which is
// what the pipeline schedules rely on. `tag` is accepted for interface parity and ignored.
void NcclCommunicator::Send(const Tensor& tensor, int dst, int /*tag*/) {
  CheckOnDevice(tensor, device_, "Send");
  GEMMAPOD_CHECK(dst >= 0 && dst < size_ && dst != rank_, "Send: bad destination ", dst);
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(device_));
  GEMMAPOD_NCCL_CHECK(ncclSend(tensor.raw(), tensor.numel(), NcclType(tensor.dtype()), dst,
                               handles_->comm, handles_->stream));
  GEMMAPOD_CUDA_CHECK(cudaStreamSynchronize(handles_->stream));
}

namespace {

// Completes when the communicator's stream has run the send and everything enqueued before it.
class NcclPendingTransfer final : public PendingTransfer {
 public:
  NcclPendingTransfer(Tensor tensor, cudaStream_t stream, int device)
      : tensor_(std::move(tensor)), stream_(stream), device_(device) {}
  ~NcclPendingTransfer() override {
    if (done_) return;
    if (std::uncaught_exceptions() > 0) {
      // Unwinding towards MPI_Abort: the peer may be blocked on this rank, so waiting could hang
      // the job. Keep the buffer alive until the abort instead.
      new Tensor(std::move(tensor_));  // deliberately leaked
      return;
    }
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
  }
  void Wait() override {
    if (done_) return;
    GEMMAPOD_CUDA_CHECK(cudaSetDevice(device_));
    GEMMAPOD_CUDA_CHECK(cudaStreamSynchronize(stream_));
    done_ = true;
  }
  bool Done() override {
    if (done_) return true;
    GEMMAPOD_CUDA_CHECK(cudaSetDevice(device_));
    const cudaError_t status = cudaStreamQuery(stream_);
    if (status == cudaErrorNotReady) return false;
    GEMMAPOD_CUDA_CHECK(status);
    done_ = true;
    return true;
  }

 private:
  Tensor tensor_;
  cudaStream_t stream_;
  int device_;
  bool done_ = false;
};

}  // namespace

// Enqueued on the communicator's one stream: later calls on this communicator run after the send
// is matched, so a caller that needs to receive meanwhile uses a second communicator.
std::unique_ptr<PendingTransfer> NcclCommunicator::SendAsync(const Tensor& tensor, int dst,
                                                             int /*tag*/) {
  CheckOnDevice(tensor, device_, "SendAsync");
  GEMMAPOD_CHECK(dst >= 0 && dst < size_ && dst != rank_, "SendAsync: bad destination ", dst);
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(device_));
  GEMMAPOD_NCCL_CHECK(ncclSend(tensor.raw(), tensor.numel(), NcclType(tensor.dtype()), dst,
                               handles_->comm, handles_->stream));
  return std::make_unique<NcclPendingTransfer>(tensor, handles_->stream, device_);
}

void NcclCommunicator::Recv(Tensor& tensor, int src, int /*tag*/) {
  CheckOnDevice(tensor, device_, "Recv");
  GEMMAPOD_CHECK(src >= 0 && src < size_ && src != rank_, "Recv: bad source ", src);
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(device_));
  GEMMAPOD_NCCL_CHECK(ncclRecv(tensor.raw(), tensor.numel(), NcclType(tensor.dtype()), src,
                               handles_->comm, handles_->stream));
  GEMMAPOD_CUDA_CHECK(cudaStreamSynchronize(handles_->stream));
}

void NcclCommunicator::Barrier() {
  Tensor token = Tensor::Empty({1}, DType::kF32, Device::Cuda(device_));
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(device_));
  GEMMAPOD_CUDA_CHECK(cudaMemsetAsync(token.raw(), 0, sizeof(float), handles_->stream));
  AllReduce(token, ReduceOp::kSum);
}

std::unique_ptr<Communicator> NcclCommunicator::Split(int color, int key) {
  auto handles = std::make_unique<Handles>();
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(device_));
  // A negative color is NCCL's "no color": this rank still takes part in the collective split (so
  // the others do not hang), gets no communicator, and reports the misuse.
  GEMMAPOD_NCCL_CHECK(ncclCommSplit(handles_->comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key,
                                    &handles->comm, nullptr));
  GEMMAPOD_CHECK(color >= 0 && handles->comm != nullptr,
                 "NcclCommunicator::Split: color must be >= 0, got ", color);
  GEMMAPOD_CUDA_CHECK(cudaStreamCreate(&handles->stream));
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(handles), device_));
}

}  // namespace gemmapod
