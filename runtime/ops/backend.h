// What a device implements to run the operations of runtime/ops/ops.h. The operations have
// checked their operands (one device, dtypes, shapes) before a backend sees them.
#pragma once

#include <cstdint>
#include <span>

#include "runtime/device.h"
#include "runtime/ops/grad_ops.h"
#include "runtime/ops/ops.h"

namespace gemmapod::ops {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual void MatMul(const Tensor& x, const Tensor& w, Tensor& y, MatmulPrecision precision) = 0;
  virtual void MatMulInt8(const Tensor& x, const Tensor& w, const Tensor& scale, Tensor& y) = 0;
  virtual void AddRowBias(const Tensor& bias, Tensor& y) = 0;
  virtual void GatherRows(const Tensor& table, const Tensor* row_scale,
                          std::span<const int64_t> rows, float scale, Tensor& out) = 0;
  virtual void ScatterRows(const Tensor& src, std::span<const int64_t> rows, Tensor& dst) = 0;
  virtual void CopyColumns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                           int64_t width) = 0;
  virtual void FillColumns(Tensor& x, int64_t begin, int64_t end, float value) = 0;
  virtual void CausalConv1d(const Tensor& x, const Tensor& taps, const Tensor& bias,
                            std::span<const int32_t> reach, Tensor& history, Tensor& out) = 0;
  virtual void BlockDiagonalMatMul(const Tensor& x, const Tensor& w, const Tensor& b,
                                   Tensor& out) = 0;
  virtual void RgLru(const Tensor& x, const Tensor& gate_x, const Tensor& gate_a,
                     const Tensor& lambda, std::span<const int32_t> positions, Tensor& state,
                     Tensor& out) = 0;
  virtual void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) = 0;
  virtual void Attention(const AttentionProblem& problem, const Tensor& q,
                         std::span<const KeyRunTensors> runs, std::span<const int64_t> lo,
                         std::span<const int64_t> hi, Tensor& out) = 0;
  virtual void Add(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual void Mul(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual void Scale(const Tensor& x, float s, Tensor& out) = 0;
  virtual void GeluTanh(const Tensor& x, Tensor& out) = 0;
  virtual void SoftCap(const Tensor& x, float cap, Tensor& out) = 0;
  virtual void RopeHalfSplit(Tensor& x, int64_t heads, int64_t head_dim,
                             std::span<const int32_t> positions, const Rope& rope) = 0;

  // Backward operations (runtime/ops/grad_ops.h). A backend that has not implemented them
  // inherits these, which throw naming the operation.
  virtual void MatMulGradInput(const Tensor& dy, const Tensor& w, Tensor& dx);
  virtual void MatMulGradWeight(const Tensor& dy, const Tensor& x, Tensor& dw, bool accumulate);
  virtual void RowBiasGrad(const Tensor& dy, Tensor& dbias, bool accumulate);
  virtual void RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& dy, float eps,
                               Tensor& dx, Tensor& dweight);
  virtual void GeluTanhBackward(const Tensor& x, const Tensor& dy, Tensor& dx);
  virtual void SoftCapBackward(const Tensor& y, const Tensor& dy, float cap, Tensor& dx);
  virtual void AttentionBackward(const AttentionProblem& problem, const Tensor& q, const Tensor& k,
                                 const Tensor& v, const Tensor& dout, std::span<const int64_t> lo,
                                 std::span<const int64_t> hi, Tensor& dq, Tensor& dk, Tensor& dv);
  virtual void ScatterAddRows(const Tensor& dout, std::span<const int64_t> rows, Tensor& dtable);
  virtual void CausalConv1dBackward(const Tensor& x, const Tensor& taps, const Tensor& history,
                                    std::span<const int32_t> reach, const Tensor& dout, Tensor& dx,
                                    Tensor& dhistory, Tensor& dtaps, Tensor& dbias);
  virtual void BlockDiagonalMatMulBackward(const Tensor& x, const Tensor& w, const Tensor& dout,
                                           Tensor& dx, Tensor& dw, Tensor& db);
  virtual void RgLruBackward(const Tensor& x, const Tensor& gate_x, const Tensor& gate_a,
                             const Tensor& lambda, std::span<const int32_t> positions,
                             const Tensor& state, const Tensor& h, const Tensor& dh, Tensor& dx,
                             Tensor& dgate_x, Tensor& dgate_a, Tensor& dlambda, Tensor& dstate);
  virtual void RowMax(const Tensor& logits, Tensor& row_max);
  virtual void ShardLossTerms(const Tensor& logits, const Tensor& row_max,
                              std::span<const int32_t> targets, int64_t first_id, Tensor& sum_exp,
                              Tensor& target_logit);
  virtual void ShardLossGrad(const Tensor& logits, const Tensor& log_sum_exp,
                             std::span<const int32_t> targets, int64_t first_id, float grad_scale,
                             const Tensor* row_scale, Tensor& dlogits);
  virtual void CombineLossTerms(const Tensor& row_max, const Tensor& sum_exp,
                                const Tensor& target_logit, std::span<const int32_t> targets,
                                Tensor& log_sum_exp, Tensor& losses);
  virtual void AdamWUpdate(Tensor& master, Tensor& m, Tensor& v, const Tensor& grad,
                           const AdamWStep& s);
  virtual double SumOfSquares(const Tensor& t);
  virtual void CastInto(const Tensor& src, Tensor& dst);
};

// Called once by a device backend at start-up; the backend must outlive every call. The CPU's is
// built in.
void RegisterBackend(DeviceKind kind, Backend* backend);
// The backend for `kind`, or null when none is registered.
Backend* BackendFor(DeviceKind kind);

}  // namespace gemmapod::ops
