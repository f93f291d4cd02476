#include "runtime/ops/ops.h"

#include <array>
#include <mutex>

#include "runtime/error.h"
#include "runtime/ops/backend.h"
#include "runtime/ops/checks.h"
#include "runtime/ops/cpu_backend.h"

namespace gemmapod::ops {
namespace {

std::mutex registry_mutex;
std::array<Backend*, 2> registry = {nullptr, nullptr};  // by DeviceKind

}  // namespace

using internal::CheckF32;
using internal::CheckProduct;
using internal::CheckSameShape;
using internal::On;

void RegisterBackend(DeviceKind kind, Backend* backend) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  registry[static_cast<size_t>(kind)] = backend;
}

Backend* BackendFor(DeviceKind kind) {
  if (kind == DeviceKind::kCpu) return &CpuBackend();
  std::lock_guard<std::mutex> lock(registry_mutex);
  return registry[static_cast<size_t>(kind)];
}

void MatMul(const Tensor& x, const Tensor& w, Tensor& y, MatmulPrecision precision) {
  Backend& b = On("MatMul", {&x, &w, &y});
  CheckProduct("MatMul", x, w, y);
  GEMMAPOD_CHECK(w.dtype() == DType::kF32 || w.dtype() == DType::kBF16, "MatMul: weights ",
                 w.Describe(), " are neither f32 nor bf16");
  b.MatMul(x, w, y, precision);
}

void MatMulInt8(const Tensor& x, const Tensor& w, const Tensor& scale, Tensor& y) {
  Backend& b = On("MatMulInt8", {&x, &w, &scale, &y});
  CheckProduct("MatMulInt8", x, w, y);
  GEMMAPOD_CHECK(
      w.dtype() == DType::kI8 && scale.dtype() == DType::kF32 && scale.numel() == w.dim(0),
      "MatMulInt8: weights ", w.Describe(), " with scales ", scale.Describe());
  b.MatMulInt8(x, w, scale, y);
}

void AddRowBias(const Tensor& bias, Tensor& y) {
  Backend& b = On("AddRowBias", {&bias, &y});
  CheckF32("AddRowBias", {&bias, &y});
  GEMMAPOD_CHECK(y.rank() >= 1 && y.dim(-1) == bias.numel(), "AddRowBias: bias ", bias.Describe(),
                 " for output ", y.Describe());
  b.AddRowBias(bias, y);
}

void GatherRows(const Tensor& table, const Tensor* row_scale, std::span<const int64_t> rows,
                float scale, Tensor& out) {
  Backend& b = row_scale != nullptr ? On("GatherRows", {&table, row_scale, &out})
                                    : On("GatherRows", {&table, &out});
  CheckF32("GatherRows", {&out});
  GEMMAPOD_CHECK(table.rank() == 2 && out.rank() == 2 &&
                     out.dim(0) == static_cast<int64_t>(rows.size()) && out.dim(1) == table.dim(1),
                 "GatherRows: ", rows.size(), " rows of ", table.Describe(), " into ",
                 out.Describe());
  const bool quantized = table.dtype() == DType::kI8;
  GEMMAPOD_CHECK(table.dtype() == DType::kF32 || table.dtype() == DType::kBF16 ||
                     (quantized && row_scale != nullptr && row_scale->dtype() == DType::kF32 &&
                      row_scale->numel() == table.dim(0)),
                 "GatherRows: table ", table.Describe(),
                 quantized ? " needs one f32 scale per row" : " is not f32, bf16 or int8");
  for (size_t i = 0; i < rows.size(); ++i) {
    GEMMAPOD_CHECK(rows[i] >= -1 && rows[i] < table.dim(0), "GatherRows: row ", rows[i], " (entry ",
                   i, ") of ", table.Describe());
  }
  b.GatherRows(table, row_scale, rows, scale, out);
}

void Attention(const AttentionProblem& p, const Tensor& q, std::span<const KeyRunTensors> runs,
               std::span<const int64_t> lo, std::span<const int64_t> hi, Tensor& out) {
  Backend& b = On("Attention", {&q, &out});
  CheckF32("Attention", {&q, &out});
  const int64_t n = q.rank() >= 1 ? q.dim(0) : 0;
  GEMMAPOD_CHECK(q.rank() == 2 && q.dim(1) == p.num_heads * p.head_dim && out.shape() == q.shape(),
                 "Attention: queries ", q.Describe(), " and output ", out.Describe(),
                 " are not [n, ", p.num_heads, " heads x ", p.head_dim, "]");
  GEMMAPOD_CHECK(static_cast<int64_t>(lo.size()) == n && static_cast<int64_t>(hi.size()) == n,
                 "Attention: ", lo.size(), " and ", hi.size(), " visible ranges for ", n,
                 " queries");
  for (size_t i = 0; i < runs.size(); ++i) {
    const KeyRunTensors& r = runs[i];
    if (r.keys.numel() == 0) continue;
    On("Attention", {&q, &r.keys, &r.values});
    CheckF32("Attention", {&r.keys, &r.values});
    GEMMAPOD_CHECK(r.keys.rank() == 2 && r.values.shape() == r.keys.shape() &&
                       r.keys.dim(1) == p.kv_row_stride &&
                       (p.first_kv_head + p.num_kv_heads) * p.head_dim <= p.kv_row_stride,
                   "Attention: key run ", i, " (", r.keys.Describe(), ", values ",
                   r.values.Describe(), ") does not hold heads [", p.first_kv_head, ", ",
                   p.first_kv_head + p.num_kv_heads, ") of ", p.head_dim, " in rows of ",
                   p.kv_row_stride);
  }
  b.Attention(p, q, runs, lo, hi, out);
}

void ScatterRows(const Tensor& src, std::span<const int64_t> rows, Tensor& dst) {
  Backend& b = On("ScatterRows", {&src, &dst});
  CheckF32("ScatterRows", {&src, &dst});
  GEMMAPOD_CHECK(src.rank() == 2 && dst.rank() == 2 && src.dim(1) == dst.dim(1) &&
                     src.dim(0) == static_cast<int64_t>(rows.size()),
                 "ScatterRows: ", rows.size(), " rows of ", src.Describe(), " into ",
                 dst.Describe());
  for (size_t i = 0; i < rows.size(); ++i) {
    GEMMAPOD_CHECK(rows[i] >= -1 && rows[i] < dst.dim(0), "ScatterRows: row ", rows[i], " (entry ",
                   i, ") of ", dst.Describe());
  }
  b.ScatterRows(src, rows, dst);
}

void CopyColumns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t width) {
  Backend& b = On("CopyColumns", {&src, &dst});
  CheckF32("CopyColumns", {&src, &dst});
  GEMMAPOD_CHECK(src.rank() == 2 && dst.rank() == 2 && src.dim(0) == dst.dim(0) && width >= 0 &&
                     src_col >= 0 && src_col + width <= src.dim(1) && dst_col >= 0 &&
                     dst_col + width <= dst.dim(1),
                 "CopyColumns: ", width, " columns from ", src_col, " of ", src.Describe(), " to ",
                 dst_col, " of ", dst.Describe());
  if (width > 0 && src.dim(0) > 0) b.CopyColumns(src, src_col, dst, dst_col, width);
}

void FillColumns(Tensor& x, int64_t begin, int64_t end, float value) {
  Backend& b = On("FillColumns", {&x});
  CheckF32("FillColumns", {&x});
  GEMMAPOD_CHECK(x.rank() == 2 && 0 <= begin && begin <= end && end <= x.dim(1), "FillColumns: [",
                 begin, ", ", end, ") of ", x.Describe());
  if (begin < end && x.dim(0) > 0) b.FillColumns(x, begin, end, value);
}

void CausalConv1d(const Tensor& x, const Tensor& taps, const Tensor& bias,
                  std::span<const int32_t> reach, Tensor& history, Tensor& out) {
  Backend& b = On("CausalConv1d", {&x, &taps, &bias, &history, &out});
  CheckF32("CausalConv1d", {&x, &taps, &bias, &history, &out});
  CheckSameShape("CausalConv1d", x, out);
  GEMMAPOD_CHECK(x.rank() == 2 && x.dim(0) == static_cast<int64_t>(reach.size()),
                 "CausalConv1d: ", x.Describe(), " is not [", reach.size(), " tokens, channels]");
  const int64_t C = x.dim(1), width = taps.dim(-1);
  GEMMAPOD_CHECK(taps.rank() >= 2 && taps.dim(0) == C && taps.numel() == C * width && width >= 1,
                 "CausalConv1d: taps ", taps.Describe(), " are not [", C, ", 1, width]");
  GEMMAPOD_CHECK(bias.numel() == C, "CausalConv1d: bias ", bias.Describe(), " for ", C,
                 " channels");
  GEMMAPOD_CHECK(history.numel() == (width - 1) * C && history.dim(-1) == C,
                 "CausalConv1d: history ", history.Describe(), " is not [", width - 1, ", ", C,
                 "]");
  for (size_t t = 0; t < reach.size(); ++t) {
    GEMMAPOD_CHECK(reach[t] >= 0 && reach[t] < width, "CausalConv1d: token ", t, " reaches ",
                   reach[t], " tokens back with ", width, " taps");
  }
  b.CausalConv1d(x, taps, bias, reach, history, out);
}

void BlockDiagonalMatMul(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out) {
  Backend& b = On("BlockDiagonalMatMul", {&x, &w, &bias, &out});
  CheckF32("BlockDiagonalMatMul", {&x, &w, &bias, &out});
  CheckSameShape("BlockDiagonalMatMul", x, out);
  GEMMAPOD_CHECK(w.rank() == 3 && w.dim(1) == w.dim(2) && x.rank() == 2 &&
                     x.dim(1) == w.dim(0) * w.dim(1) && bias.numel() == x.dim(1),
                 "BlockDiagonalMatMul: ", x.Describe(), " x ", w.Describe(), " + ", bias.Describe(),
                 " is not [T, H * bw] x [H, bw, bw] + [H, bw]");
  b.BlockDiagonalMatMul(x, w, bias, out);
}

void RgLru(const Tensor& x, const Tensor& gate_x, const Tensor& gate_a, const Tensor& lambda,
           std::span<const int32_t> positions, Tensor& state, Tensor& out) {
  Backend& b = On("RgLru", {&x, &gate_x, &gate_a, &lambda, &state, &out});
  CheckF32("RgLru", {&x, &gate_x, &gate_a, &lambda, &state, &out});
  CheckSameShape("RgLru", x, gate_x);
  CheckSameShape("RgLru", x, gate_a);
  CheckSameShape("RgLru", x, out);
  GEMMAPOD_CHECK(x.rank() == 2 && x.dim(0) == static_cast<int64_t>(positions.size()) &&
                     lambda.numel() == x.dim(1) && state.numel() == x.dim(1),
                 "RgLru: ", x.Describe(), " for ", positions.size(), " positions, lambda ",
                 lambda.Describe(), ", state ", state.Describe());
  b.RgLru(x, gate_x, gate_a, lambda, positions, state, out);
}

void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  Backend& b = On("RmsNorm", {&x, &weight, &out});
  CheckF32("RmsNorm", {&x, &weight, &out});
  CheckSameShape("RmsNorm", x, out);
  GEMMAPOD_CHECK(x.rank() >= 1 && x.dim(-1) == weight.numel(), "RmsNorm: weight ",
                 weight.Describe(), " for ", x.Describe());
  b.RmsNorm(x, weight, eps, out);
}

void Add(const Tensor& a, const Tensor& c, Tensor& out) {
  Backend& b = On("Add", {&a, &c, &out});
  CheckF32("Add", {&a, &c, &out});
  CheckSameShape("Add", a, c);
  CheckSameShape("Add", a, out);
  b.Add(a, c, out);
}

void Mul(const Tensor& a, const Tensor& c, Tensor& out) {
  Backend& b = On("Mul", {&a, &c, &out});
  CheckF32("Mul", {&a, &c, &out});
  CheckSameShape("Mul", a, c);
  CheckSameShape("Mul", a, out);
  b.Mul(a, c, out);
}

void Scale(const Tensor& x, float s, Tensor& out) {
  Backend& b = On("Scale", {&x, &out});
  CheckF32("Scale", {&x, &out});
  CheckSameShape("Scale", x, out);
  b.Scale(x, s, out);
}

void GeluTanh(const Tensor& x, Tensor& out) {
  Backend& b = On("GeluTanh", {&x, &out});
  CheckF32("GeluTanh", {&x, &out});
  CheckSameShape("GeluTanh", x, out);
  b.GeluTanh(x, out);
}

void SoftCap(const Tensor& x, float cap, Tensor& out) {
  Backend& b = On("SoftCap", {&x, &out});
  CheckF32("SoftCap", {&x, &out});
  CheckSameShape("SoftCap", x, out);
  GEMMAPOD_CHECK(cap > 0, "SoftCap: cap ", cap, " must be positive");
  b.SoftCap(x, cap, out);
}

void RopeHalfSplit(Tensor& x, int64_t heads, int64_t head_dim, std::span<const int32_t> positions,
                   const Rope& rope) {
  Backend& b = On("RopeHalfSplit", {&x});
  CheckF32("RopeHalfSplit", {&x});
  GEMMAPOD_CHECK(x.rank() == 2 && x.dim(0) == static_cast<int64_t>(positions.size()) &&
                     x.dim(1) == heads * head_dim,
                 "RopeHalfSplit: ", x.Describe(), " is not [", positions.size(), " positions, ",
                 heads, " heads x ", head_dim, "]");
  b.RopeHalfSplit(x, heads, head_dim, positions, rope);
}

}  // namespace gemmapod::ops
