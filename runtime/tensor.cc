#include "runtime/tensor.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace gemmapod {

std::string ShapeToString(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t NumElements(const Shape& shape) {
  // Shapes come from files (checkpoint headers): a product that overflows must be an error, not
  // a small allocation that later reads are checked against.
  int64_t n = 1;
  bool overflow = false, empty = false;
  for (int64_t d : shape) {
    GEMMAPOD_CHECK(d >= 0, "negative dimension in shape ", ShapeToString(shape));
    overflow |= __builtin_mul_overflow(n, d, &n);
    empty |= d == 0;
  }
  if (empty) return 0;
  GEMMAPOD_CHECK(!overflow, "shape ", ShapeToString(shape),
                 " has more elements than fit in 64 bits");
  return n;
}

Tensor Tensor::Empty(Shape shape, DType dtype, Device device) {
  for (int64_t d : shape) {
    GEMMAPOD_CHECK(d >= 0, "negative dimension in shape ", ShapeToString(shape));
  }
  size_t bytes = 0;
  GEMMAPOD_CHECK(
      !__builtin_mul_overflow(static_cast<size_t>(NumElements(shape)), DTypeSize(dtype), &bytes),
      "shape ", ShapeToString(shape), " of ", DTypeName(dtype), " is too large");
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  DeviceAllocator& alloc = AllocatorFor(device.kind);
  void* p = alloc.Allocate(device, t.nbytes());
  t.storage_ = std::shared_ptr<void>(p, [&alloc, device](void* q) { alloc.Free(device, q); });
  t.data_ = p;
  return t;
}

Tensor Tensor::Zeros(Shape shape, DType dtype) {
  Tensor t = Empty(std::move(shape), dtype);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::FromVector(Shape shape, const std::vector<float>& values) {
  GEMMAPOD_CHECK(NumElements(shape) == static_cast<int64_t>(values.size()), "shape ",
                 ShapeToString(shape), " holds ", NumElements(shape), " elements, got ",
                 values.size());
  Tensor t = Empty(std::move(shape), DType::kF32);
  std::memcpy(t.data_, values.data(), t.nbytes());
  return t;
}

Tensor Tensor::Borrow(void* data, Shape shape, DType dtype, Device device) {
  NumElements(shape);  // rejects negative dimensions and overflow
  Tensor t;
  t.data_ = data;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

int64_t Tensor::dim(int i) const {
  const int r = rank();
  const int k = i < 0 ? i + r : i;
  GEMMAPOD_CHECK(k >= 0 && k < r, "dimension ", i, " out of range for ", Describe());
  return shape_[k];
}

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  GEMMAPOD_CHECK(rank() >= 1, "cannot slice a scalar ", Describe());
  GEMMAPOD_CHECK(0 <= begin && begin <= end && end <= shape_[0], "slice [", begin, ", ", end,
                 ") out of range for ", Describe());
  Tensor t = *this;
  const int64_t row = numel() / (shape_[0] == 0 ? 1 : shape_[0]);
  t.data_ = static_cast<char*>(data_) + begin * row * static_cast<int64_t>(DTypeSize(dtype_));
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::Reshape(Shape shape) const {
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      GEMMAPOD_CHECK(infer < 0, "reshape to ", ShapeToString(shape), ": more than one -1");
      infer = static_cast<int>(i);
    } else {
      GEMMAPOD_CHECK(shape[i] >= 0, "reshape to ", ShapeToString(shape), ": negative dimension");
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    GEMMAPOD_CHECK(known > 0 && numel() % known == 0, "cannot reshape ", Describe(), " to ",
                   ShapeToString(shape));
    shape[infer] = numel() / known;
  }
  GEMMAPOD_CHECK(NumElements(shape) == numel(), "cannot reshape ", Describe(), " to ",
                 ShapeToString(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::Clone() const {
  GEMMAPOD_CHECK(device_.is_cpu(), "Clone of a device tensor: copy it with its backend");
  Tensor t = Empty(shape_, dtype_);
  std::memcpy(t.data_, data_, nbytes());
  return t;
}

Tensor Tensor::To(DType dtype) const {
  if (dtype == dtype_) return Clone();
  GEMMAPOD_CHECK(device_.is_cpu(), "dtype conversion of a device tensor: use its backend");
  Tensor t = Empty(shape_, dtype);
  const size_t n = static_cast<size_t>(numel());
  if (dtype_ == DType::kF32 && dtype == DType::kBF16) {
    ConvertF32ToBF16(data<float>(), t.data<BF16>(), n);
  } else if (dtype_ == DType::kBF16 && dtype == DType::kF32) {
    ConvertBF16ToF32(data<BF16>(), t.data<float>(), n);
  } else {
    throw Error(StrCat("no conversion from ", DTypeName(dtype_), " to ", DTypeName(dtype), " for ",
                       Describe()));
  }
  return t;
}

std::string Tensor::Describe() const {
  return StrCat(DTypeName(dtype_), ShapeToString(shape_), " on ", device_.ToString());
}

void Tensor::CheckType(DType want) const {
  GEMMAPOD_CHECK(want == dtype_, "tensor ", Describe(), " accessed as ", DTypeName(want));
}

}  // namespace gemmapod

namespace gemmapod {

int64_t FirstNonFinite(const Tensor& t) {
  GEMMAPOD_CHECK(t.device().is_cpu(), "FirstNonFinite: ", t.Describe(), " is not on the host");
  if (t.dtype() == DType::kF32) {
    const float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (!std::isfinite(p[i])) return i;
    }
  } else if (t.dtype() == DType::kBF16) {
    // bf16 is the upper half of an f32: all-ones exponent bits mean NaN or infinity.
    const auto* p = static_cast<const uint16_t*>(t.raw());
    for (int64_t i = 0; i < t.numel(); ++i) {
      if ((p[i] & 0x7F80u) == 0x7F80u) return i;
    }
  }
  return -1;
}

}  // namespace gemmapod
