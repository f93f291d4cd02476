#include "runtime/ops/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/cpu/attention.h"
#include "runtime/cpu/attention_backward.h"
#include "runtime/cpu/backward.h"
#include "runtime/cpu/gemm.h"
#include "runtime/cpu/griffin.h"
#include "runtime/cpu/int8_matmul.h"
#include "runtime/cpu/matmul.h"
#include "runtime/cpu/ops.h"

namespace gemmapod::ops {
namespace {

// Rows of a [..., n] tensor.
int64_t Rows(const Tensor& t, int64_t n) { return n == 0 ? 0 : t.numel() / n; }

class Cpu final : public Backend {
 public:
  void MatMul(const Tensor& x, const Tensor& w, Tensor& y, MatmulPrecision precision) override {
    const int64_t k = w.dim(1), n = w.dim(0);
    // The kernels take 2-d operands: [rows, K] x [N, K] -> [rows, N], views of the same bytes.
    Tensor out = y.Reshape({Rows(y, n), n});
    cpu::MatMul(x.Reshape({Rows(x, k), k}), w, out, precision);
  }
  void MatMulInt8(const Tensor& x, const Tensor& w, const Tensor& scale, Tensor& y) override {
    const int64_t k = w.dim(1), n = w.dim(0);
    Tensor out = y.Reshape({Rows(y, n), n});
    cpu::MatMulInt8(x.Reshape({Rows(x, k), k}), w, scale, out);
  }
  void AddRowBias(const Tensor& bias, Tensor& y) override {
    const int64_t n = bias.numel();
    const float* b = bias.data<float>();
    float* out = y.data<float>();
    for (int64_t r = 0; r < Rows(y, n); ++r) cpu::Add(out + r * n, b, out + r * n, n);
  }
  void GatherRows(const Tensor& table, const Tensor* row_scale, std::span<const int64_t> rows,
                  float scale, Tensor& out) override {
    const int64_t k = table.dim(1);
    for (size_t i = 0; i < rows.size(); ++i) {
      float* o = out.data<float>() + static_cast<int64_t>(i) * k;
      const int64_t r = rows[i];
      if (r < 0) {
        std::fill(o, o + k, 0.0f);
        continue;
      }
      switch (table.dtype()) {
        case DType::kI8:
          cpu::DequantizeRowInt8(table.data<int8_t>() + r * k, row_scale->data<float>()[r], o, k);
          break;
        case DType::kBF16:
          ConvertBF16ToF32(table.data<BF16>() + r * k, o, static_cast<size_t>(k));
          break;
        default:
          std::copy_n(table.data<float>() + r * k, k, o);
      }
      cpu::Scale(o, scale, o, k);
    }
  }
  void Attention(const AttentionProblem& problem, const Tensor& q,
                 std::span<const KeyRunTensors> runs, std::span<const int64_t> lo,
                 std::span<const int64_t> hi, Tensor& out) override {
    // The kernel takes raw rows: point each run at the first head the problem reads.
    const int64_t offset = problem.first_kv_head * problem.head_dim;
    std::vector<cpu::KeyRun> raw;
    for (const KeyRunTensors& r : runs) {
      if (r.keys.numel() == 0) continue;
      raw.push_back({r.keys.data<float>() + offset, r.values.data<float>() + offset, r.first,
                     r.keys.dim(0), r.valid});
    }
    AttentionProblem p = problem;
    p.first_kv_head = 0;
    cpu::Attention(p, q.data<float>(), q.dim(0), raw.data(), static_cast<int64_t>(raw.size()),
                   lo.data(), hi.data(), out.data<float>());
  }
  void ScatterRows(const Tensor& src, std::span<const int64_t> rows, Tensor& dst) override {
    const int64_t width = src.dim(1);
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i] < 0) continue;
      std::copy_n(src.data<float>() + static_cast<int64_t>(i) * width, width,
                  dst.data<float>() + rows[i] * width);
    }
  }
  void CopyColumns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                   int64_t width) override {
    const int64_t sw = src.dim(1), dw = dst.dim(1);
    for (int64_t r = 0; r < src.dim(0); ++r) {
      std::copy_n(src.data<float>() + r * sw + src_col, width,
                  dst.data<float>() + r * dw + dst_col);
    }
  }
  void FillColumns(Tensor& x, int64_t begin, int64_t end, float value) override {
    const int64_t w = x.dim(1);
    for (int64_t r = 0; r < x.dim(0); ++r) {
      std::fill(x.data<float>() + r * w + begin, x.data<float>() + r * w + end, value);
    }
  }
  void CausalConv1d(const Tensor& x, const Tensor& taps, const Tensor& bias,
                    std::span<const int32_t> reach, Tensor& history, Tensor& out) override {
    cpu::CausalConv1d(x.data<float>(), x.dim(0), x.dim(1), taps.data<float>(), taps.dim(-1),
                      bias.data<float>(), reach.data(), history.data<float>(), out.data<float>());
  }
  void BlockDiagonalMatMul(const Tensor& x, const Tensor& w, const Tensor& b,
                           Tensor& out) override {
    cpu::BlockDiagonalMatMul(x.data<float>(), x.dim(0), w.dim(0), w.dim(1), w.data<float>(),
                             b.data<float>(), out.data<float>());
  }
  void RgLru(const Tensor& x, const Tensor& gate_x, const Tensor& gate_a, const Tensor& lambda,
             std::span<const int32_t> positions, Tensor& state, Tensor& out) override {
    cpu::RgLru(x.data<float>(), gate_x.data<float>(), gate_a.data<float>(), lambda.data<float>(),
               positions.data(), x.dim(0), x.dim(1), state.data<float>(), out.data<float>());
  }
  void MatMulGradInput(const Tensor& dy, const Tensor& w, Tensor& dx) override {
    const int64_t n = w.dim(0), k = w.dim(1);
    // bf16 weights: their f32 values, as the forward multiplied them.
    if (Rows(dy, n) == 0 || k == 0) return;
    const Tensor wf = w.dtype() == DType::kF32 ? w : w.To(DType::kF32);
    cpu::GemmF32Transposed(dy.data<float>(), false, wf.data<float>(), /*b_stored_kn=*/true,
                           Rows(dy, n), n, k, dx.data<float>(), false);
  }
  void MatMulGradWeight(const Tensor& dy, const Tensor& x, Tensor& dw, bool accumulate) override {
    const int64_t n = dw.dim(0), k = dw.dim(1), rows = Rows(dy, n);
    if (rows == 0) {
      if (!accumulate) std::fill_n(dw.data<float>(), dw.numel(), 0.0f);
      return;
    }
    cpu::GemmF32Transposed(dy.data<float>(), /*a_transposed=*/true, x.data<float>(),
                           /*b_stored_kn=*/true, n, rows, k, dw.data<float>(), accumulate);
  }
  void RowBiasGrad(const Tensor& dy, Tensor& dbias, bool accumulate) override {
    const int64_t n = dbias.numel();
    cpu::SumRows(dy.data<float>(), Rows(dy, n), n, dbias.data<float>(), accumulate);
  }
  void RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& dy, float eps,
                       Tensor& dx, Tensor& dweight) override {
    const int64_t d = weight.numel();
    cpu::RmsNormBackward(x.data<float>(), weight.data<float>(), dy.data<float>(), Rows(x, d), d,
                         eps, dx.data<float>(),
                         dweight.defined() ? dweight.data<float>() : nullptr);
  }
  void GeluTanhBackward(const Tensor& x, const Tensor& dy, Tensor& dx) override {
    cpu::GeluTanhBackward(x.data<float>(), dy.data<float>(), dx.data<float>(), x.numel());
  }
  void SoftCapBackward(const Tensor& y, const Tensor& dy, float cap, Tensor& dx) override {
    cpu::SoftCapBackward(y.data<float>(), dy.data<float>(), cap, dx.data<float>(), y.numel());
  }
  void AttentionBackward(const AttentionProblem& p, const Tensor& q, const Tensor& k,
                         const Tensor& v, const Tensor& dout, std::span<const int64_t> lo,
                         std::span<const int64_t> hi, Tensor& dq, Tensor& dk, Tensor& dv) override {
    cpu::AttentionBackward(p, q.data<float>(), q.dim(0), k.data<float>(), v.data<float>(), k.dim(0),
                           dout.data<float>(), lo.data(), hi.data(), dq.data<float>(),
                           dk.data<float>(), dv.data<float>());
  }
  void ScatterAddRows(const Tensor& dout, std::span<const int64_t> rows, Tensor& dtable) override {
    cpu::ScatterAddRows(dout.data<float>(), rows.data(), static_cast<int64_t>(rows.size()),
                        dout.dim(1), dtable.data<float>());
  }
  void CausalConv1dBackward(const Tensor& x, const Tensor& taps, const Tensor& history,
                            std::span<const int32_t> reach, const Tensor& dout, Tensor& dx,
                            Tensor& dhistory, Tensor& dtaps, Tensor& dbias) override {
    cpu::CausalConv1dBackward(x.data<float>(), x.dim(0), x.dim(1), taps.data<float>(), taps.dim(-1),
                              history.data<float>(), reach.data(), dout.data<float>(),
                              dx.data<float>(), dhistory.data<float>(), dtaps.data<float>(),
                              dbias.data<float>());
  }
  void BlockDiagonalMatMulBackward(const Tensor& x, const Tensor& w, const Tensor& dout, Tensor& dx,
                                   Tensor& dw, Tensor& db) override {
    cpu::BlockDiagonalMatMulBackward(x.data<float>(), x.dim(0), w.dim(0), w.dim(1), w.data<float>(),
                                     dout.data<float>(), dx.data<float>(), dw.data<float>(),
                                     db.data<float>());
  }
  void RgLruBackward(const Tensor& x, const Tensor& gate_x, const Tensor& gate_a,
                     const Tensor& lambda, std::span<const int32_t> positions, const Tensor& state,
                     const Tensor& h, const Tensor& dh, Tensor& dx, Tensor& dgate_x,
                     Tensor& dgate_a, Tensor& dlambda, Tensor& dstate) override {
    cpu::RgLruBackward(x.data<float>(), gate_x.data<float>(), gate_a.data<float>(),
                       lambda.data<float>(), positions.data(), state.data<float>(), h.data<float>(),
                       dh.data<float>(), x.dim(0), x.dim(1), dx.data<float>(),
                       dgate_x.data<float>(), dgate_a.data<float>(), dlambda.data<float>(),
                       dstate.data<float>());
  }
  void RowMax(const Tensor& logits, Tensor& row_max) override {
    cpu::RowMax(logits.data<float>(), logits.dim(0), logits.dim(1), row_max.data<float>());
  }
  void ShardLossTerms(const Tensor& logits, const Tensor& row_max, std::span<const int32_t> targets,
                      int64_t first_id, Tensor& sum_exp, Tensor& target_logit) override {
    cpu::ShardLossTerms(logits.data<float>(), logits.dim(0), logits.dim(1), row_max.data<float>(),
                        targets.data(), first_id, sum_exp.data<float>(),
                        target_logit.data<float>());
  }
  void ShardLossGrad(const Tensor& logits, const Tensor& log_sum_exp,
                     std::span<const int32_t> targets, int64_t first_id, float grad_scale,
                     const Tensor* row_scale, Tensor& dlogits) override {
    cpu::ShardLossGrad(logits.data<float>(), logits.dim(0), logits.dim(1),
                       log_sum_exp.data<float>(), targets.data(), first_id, grad_scale,
                       row_scale != nullptr ? row_scale->data<float>() : nullptr,
                       dlogits.data<float>());
  }
  void CombineLossTerms(const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                        std::span<const int32_t> targets, Tensor& log_sum_exp,
                        Tensor& losses) override {
    for (int64_t r = 0; r < row_max.numel(); ++r) {
      const double lse =
          row_max.data<float>()[r] + std::log(static_cast<double>(sum_exp.data<float>()[r]));
      log_sum_exp.data<float>()[r] = static_cast<float>(lse);
      losses.data<float>()[r] =
          targets[r] < 0 ? 0.0f : static_cast<float>(lse - target_logit.data<float>()[r]);
    }
  }
  void AdamWUpdate(Tensor& master, Tensor& m, Tensor& v, const Tensor& grad,
                   const AdamWStep& s) override {
    cpu::AdamWUpdate(master.data<float>(), m.data<float>(), v.data<float>(), grad.data<float>(),
                     master.numel(), s.lr, s.beta1, s.beta2, s.eps, s.weight_decay, s.step,
                     s.grad_scale);
  }
  double SumOfSquares(const Tensor& t) override {
    return cpu::SumOfSquares(t.data<float>(), t.numel());
  }
  void CastInto(const Tensor& src, Tensor& dst) override {
    if (dst.dtype() == DType::kBF16) {
      ConvertF32ToBF16(src.data<float>(), dst.data<BF16>(), static_cast<size_t>(src.numel()));
    } else {
      std::copy_n(src.data<float>(), src.numel(), dst.data<float>());
    }
  }
  void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    const int64_t d = weight.numel();
    cpu::RmsNorm(x.data<float>(), weight.data<float>(), Rows(x, d), d, eps, out.data<float>());
  }
  void Add(const Tensor& a, const Tensor& b, Tensor& out) override {
    cpu::Add(a.data<float>(), b.data<float>(), out.data<float>(), a.numel());
  }
  void Mul(const Tensor& a, const Tensor& b, Tensor& out) override {
    cpu::Mul(a.data<float>(), b.data<float>(), out.data<float>(), a.numel());
  }
  void Scale(const Tensor& x, float s, Tensor& out) override {
    cpu::Scale(x.data<float>(), s, out.data<float>(), x.numel());
  }
  void GeluTanh(const Tensor& x, Tensor& out) override {
    cpu::GeluTanh(x.data<float>(), out.data<float>(), x.numel());
  }
  void SoftCap(const Tensor& x, float cap, Tensor& out) override {
    cpu::SoftCap(x.data<float>(), cap, out.data<float>(), x.numel());
  }
  void RopeHalfSplit(Tensor& x, int64_t heads, int64_t head_dim, std::span<const int32_t> positions,
                     const Rope& rope) override {
    cpu::RopeHalfSplit(x.data<float>(), static_cast<int64_t>(positions.size()), heads, head_dim,
                       positions.data(), rope.theta, rope.rotary_fraction, rope.position_scale);
  }
};

}  // namespace

Backend& CpuBackend() {
  static Cpu cpu;
  return cpu;
}

}  // namespace gemmapod::ops
