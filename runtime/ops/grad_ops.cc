#include "runtime/ops/grad_ops.h"

#include <vector>

#include "runtime/ops/checks.h"

namespace gemmapod::ops {
namespace {

using internal::CheckF32;
using internal::CheckSameShape;
using internal::On;

[[noreturn]] void Missing(const char* op, const Tensor& t) {
  throw Error(StrCat(op, ": the backend of ", t.device().ToString(), " has no backward yet"));
}

// Rows of a [..., n] tensor.
int64_t Rows(const Tensor& t) { return t.dim(-1) == 0 ? 0 : t.numel() / t.dim(-1); }

}  // namespace

void Backend::MatMulGradInput(const Tensor& dy, const Tensor&, Tensor&) {
  Missing("MatMulGradInput", dy);
}
void Backend::MatMulGradWeight(const Tensor& dy, const Tensor&, Tensor&, bool) {
  Missing("MatMulGradWeight", dy);
}
void Backend::RowBiasGrad(const Tensor& dy, Tensor&, bool) { Missing("RowBiasGrad", dy); }
void Backend::RmsNormBackward(const Tensor& x, const Tensor&, const Tensor&, float, Tensor&,
                              Tensor&) {
  Missing("RmsNormBackward", x);
}
void Backend::GeluTanhBackward(const Tensor& x, const Tensor&, Tensor&) {
  Missing("GeluTanhBackward", x);
}
void Backend::SoftCapBackward(const Tensor& y, const Tensor&, float, Tensor&) {
  Missing("SoftCapBackward", y);
}
void Backend::AttentionBackward(const AttentionProblem&, const Tensor& q, const Tensor&,
                                const Tensor&, const Tensor&, std::span<const int64_t>,
                                std::span<const int64_t>, Tensor&, Tensor&, Tensor&) {
  Missing("AttentionBackward", q);
}
void Backend::ScatterAddRows(const Tensor& dout, std::span<const int64_t>, Tensor&) {
  Missing("ScatterAddRows", dout);
}

void Backend::AdamWUpdate(Tensor& master, Tensor&, Tensor&, const Tensor&, const AdamWStep&) {
  Missing("AdamWUpdate", master);
}
void Backend::CausalConv1dBackward(const Tensor& x, const Tensor&, const Tensor&,
                                   std::span<const int32_t>, const Tensor&, Tensor&, Tensor&,
                                   Tensor&, Tensor&) {
  Missing("CausalConv1dBackward", x);
}
void Backend::BlockDiagonalMatMulBackward(const Tensor& x, const Tensor&, const Tensor&, Tensor&,
                                          Tensor&, Tensor&) {
  Missing("BlockDiagonalMatMulBackward", x);
}
void Backend::RgLruBackward(const Tensor& x, const Tensor&, const Tensor&, const Tensor&,
                            std::span<const int32_t>, const Tensor&, const Tensor&, const Tensor&,
                            Tensor&, Tensor&, Tensor&, Tensor&, Tensor&) {
  Missing("RgLruBackward", x);
}
void Backend::RowMax(const Tensor& logits, Tensor&) { Missing("RowMax", logits); }
void Backend::ShardLossTerms(const Tensor& logits, const Tensor&, std::span<const int32_t>, int64_t,
                             Tensor&, Tensor&) {
  Missing("ShardLossTerms", logits);
}
void Backend::ShardLossGrad(const Tensor& logits, const Tensor&, std::span<const int32_t>, int64_t,
                            float, const Tensor*, Tensor&) {
  Missing("ShardLossGrad", logits);
}
void Backend::CombineLossTerms(const Tensor& row_max, const Tensor&, const Tensor&,
                               std::span<const int32_t>, Tensor&, Tensor&) {
  Missing("CombineLossTerms", row_max);
}
double Backend::SumOfSquares(const Tensor& t) { Missing("SumOfSquares", t); }
void Backend::CastInto(const Tensor& src, Tensor&) { Missing("CastInto", src); }

void MatMulGradInput(const Tensor& dy, const Tensor& w, Tensor& dx) {
  Backend& b = On("MatMulGradInput", {&dy, &w, &dx});
  CheckF32("MatMulGradInput", {&dy, &dx});
  GEMMAPOD_CHECK(w.rank() == 2 && dy.rank() >= 1 && dx.rank() == dy.rank() &&
                     dy.dim(-1) == w.dim(0) && dx.dim(-1) == w.dim(1) && Rows(dy) == Rows(dx),
                 "MatMulGradInput: ", dy.Describe(), " x ", w.Describe(), " does not fit ",
                 dx.Describe());
  GEMMAPOD_CHECK(w.dtype() == DType::kF32 || w.dtype() == DType::kBF16, "MatMulGradInput: weights ",
                 w.Describe(), " are neither f32 nor bf16");
  b.MatMulGradInput(dy, w, dx);
}

void MatMulGradWeight(const Tensor& dy, const Tensor& x, Tensor& dw, bool accumulate) {
  Backend& b = On("MatMulGradWeight", {&dy, &x, &dw});
  CheckF32("MatMulGradWeight", {&dy, &x, &dw});
  GEMMAPOD_CHECK(
      dw.rank() == 2 && dy.dim(-1) == dw.dim(0) && x.dim(-1) == dw.dim(1) && Rows(dy) == Rows(x),
      "MatMulGradWeight: ", dy.Describe(), "^T x ", x.Describe(), " does not fit ", dw.Describe());
  b.MatMulGradWeight(dy, x, dw, accumulate);
}

void RowBiasGrad(const Tensor& dy, Tensor& dbias, bool accumulate) {
  Backend& b = On("RowBiasGrad", {&dy, &dbias});
  CheckF32("RowBiasGrad", {&dy, &dbias});
  GEMMAPOD_CHECK(dbias.numel() == dy.dim(-1), "RowBiasGrad: ", dbias.Describe(), " for ",
                 dy.Describe());
  b.RowBiasGrad(dy, dbias, accumulate);
}

void RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& dy, float eps, Tensor& dx,
                     Tensor& dweight) {
  // An undefined dweight is a frozen weight (adapter fine-tuning): only dx is computed.
  const bool frozen = !dweight.defined();
  Backend& b = frozen ? On("RmsNormBackward", {&x, &weight, &dy, &dx})
                      : On("RmsNormBackward", {&x, &weight, &dy, &dx, &dweight});
  CheckF32("RmsNormBackward", {&x, &weight, &dy, &dx});
  if (!frozen) CheckF32("RmsNormBackward", {&dweight});
  CheckSameShape("RmsNormBackward", x, dy);
  CheckSameShape("RmsNormBackward", x, dx);
  GEMMAPOD_CHECK(
      x.rank() >= 1 && weight.numel() == x.dim(-1) && (frozen || dweight.numel() == x.dim(-1)),
      "RmsNormBackward: weight ", weight.Describe(), " and its gradient ", dweight.Describe(),
      " for ", x.Describe());
  b.RmsNormBackward(x, weight, dy, eps, dx, dweight);
}

void GeluTanhBackward(const Tensor& x, const Tensor& dy, Tensor& dx) {
  Backend& b = On("GeluTanhBackward", {&x, &dy, &dx});
  CheckF32("GeluTanhBackward", {&x, &dy, &dx});
  CheckSameShape("GeluTanhBackward", x, dy);
  CheckSameShape("GeluTanhBackward", x, dx);
  b.GeluTanhBackward(x, dy, dx);
}

void SoftCapBackward(const Tensor& y, const Tensor& dy, float cap, Tensor& dx) {
  Backend& b = On("SoftCapBackward", {&y, &dy, &dx});
  CheckF32("SoftCapBackward", {&y, &dy, &dx});
  CheckSameShape("SoftCapBackward", y, dy);
  CheckSameShape("SoftCapBackward", y, dx);
  GEMMAPOD_CHECK(cap > 0, "SoftCapBackward: cap ", cap, " must be positive");
  b.SoftCapBackward(y, dy, cap, dx);
}

void RopeHalfSplitBackward(Tensor& dx, int64_t heads, int64_t head_dim,
                           std::span<const int32_t> positions, const Rope& rope) {
  std::vector<int32_t> negated(positions.begin(), positions.end());
  for (int32_t& p : negated) p = -p;
  RopeHalfSplit(dx, heads, head_dim, negated, rope);
}

void AttentionBackward(const AttentionProblem& p, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& dout, std::span<const int64_t> lo, std::span<const int64_t> hi,
                       Tensor& dq, Tensor& dk, Tensor& dv) {
  Backend& b = On("AttentionBackward", {&q, &k, &v, &dout, &dq, &dk, &dv});
  CheckF32("AttentionBackward", {&q, &k, &v, &dout, &dq, &dk, &dv});
  CheckSameShape("AttentionBackward", q, dout);
  CheckSameShape("AttentionBackward", q, dq);
  GEMMAPOD_CHECK(
      p.num_heads > 0 && p.num_kv_heads > 0 && p.num_heads % p.num_kv_heads == 0 && p.head_dim > 0,
      "AttentionBackward: ", p.num_heads, " query heads over ", p.num_kv_heads,
      " key/value heads of ", p.head_dim);
  const int64_t n = q.rank() == 2 ? q.dim(0) : -1, m = k.rank() == 2 ? k.dim(0) : -1;
  GEMMAPOD_CHECK(q.rank() == 2 && q.dim(1) == p.num_heads * p.head_dim &&
                     static_cast<int64_t>(lo.size()) == n && static_cast<int64_t>(hi.size()) == n,
                 "AttentionBackward: queries ", q.Describe(), " for ", lo.size(), " ranges of ",
                 p.num_heads, " heads x ", p.head_dim);
  GEMMAPOD_CHECK(k.rank() == 2 && v.shape() == k.shape() && k.dim(1) == p.kv_row_stride &&
                     (p.first_kv_head + p.num_kv_heads) * p.head_dim <= p.kv_row_stride,
                 "AttentionBackward: keys ", k.Describe(), " and values ", v.Describe(),
                 " do not hold heads [", p.first_kv_head, ", ", p.first_kv_head + p.num_kv_heads,
                 ") of ", p.head_dim, " in rows of ", p.kv_row_stride);
  GEMMAPOD_CHECK(dk.rank() == 2 && dk.dim(0) == m && dk.dim(1) == p.num_kv_heads * p.head_dim &&
                     dv.shape() == dk.shape(),
                 "AttentionBackward: key and value gradients ", dk.Describe(), ", ", dv.Describe(),
                 " for ", m, " positions of ", p.num_kv_heads, " heads");
  b.AttentionBackward(p, q, k, v, dout, lo, hi, dq, dk, dv);
}

void ScatterAddRows(const Tensor& dout, std::span<const int64_t> rows, Tensor& dtable) {
  Backend& b = On("ScatterAddRows", {&dout, &dtable});
  CheckF32("ScatterAddRows", {&dout, &dtable});
  GEMMAPOD_CHECK(dout.rank() == 2 && dtable.rank() == 2 && dout.dim(1) == dtable.dim(1) &&
                     dout.dim(0) == static_cast<int64_t>(rows.size()),
                 "ScatterAddRows: ", rows.size(), " rows of ", dout.Describe(), " into ",
                 dtable.Describe());
  for (size_t i = 0; i < rows.size(); ++i) {
    GEMMAPOD_CHECK(rows[i] >= -1 && rows[i] < dtable.dim(0), "ScatterAddRows: row ", rows[i],
                   " (entry ", i, ") of ", dtable.Describe());
  }
  b.ScatterAddRows(dout, rows, dtable);
}

namespace {
void CheckRowVector(const char* op, const Tensor& logits, const Tensor& per_row) {
  GEMMAPOD_CHECK(logits.rank() == 2 && per_row.numel() == logits.dim(0), op, ": ",
                 per_row.Describe(), " for the rows of ", logits.Describe());
}
void CheckTargets(const char* op, const Tensor& logits, std::span<const int32_t> targets) {
  GEMMAPOD_CHECK(logits.rank() == 2 && static_cast<int64_t>(targets.size()) == logits.dim(0), op,
                 ": ", targets.size(), " targets for ", logits.Describe());
  for (size_t i = 0; i < targets.size(); ++i) {
    GEMMAPOD_CHECK(targets[i] >= -1, op, ": target ", targets[i], " (row ", i, ")");
  }
}
}  // namespace

void CausalConv1dBackward(const Tensor& x, const Tensor& taps, const Tensor& history,
                          std::span<const int32_t> reach, const Tensor& dout, Tensor& dx,
                          Tensor& dhistory, Tensor& dtaps, Tensor& dbias) {
  Backend& b =
      On("CausalConv1dBackward", {&x, &taps, &history, &dout, &dx, &dhistory, &dtaps, &dbias});
  CheckF32("CausalConv1dBackward", {&x, &taps, &history, &dout, &dx, &dhistory, &dtaps, &dbias});
  CheckSameShape("CausalConv1dBackward", x, dout);
  CheckSameShape("CausalConv1dBackward", x, dx);
  CheckSameShape("CausalConv1dBackward", taps, dtaps);
  CheckSameShape("CausalConv1dBackward", history, dhistory);
  const int64_t C = x.rank() == 2 ? x.dim(1) : -1, width = taps.dim(-1);
  GEMMAPOD_CHECK(
      x.rank() == 2 && x.dim(0) == static_cast<int64_t>(reach.size()) && taps.dim(0) == C &&
          taps.numel() == C * width && history.numel() == (width - 1) * C && dbias.numel() == C,
      "CausalConv1dBackward: ", x.Describe(), " with taps ", taps.Describe(), ", history ",
      history.Describe(), ", bias gradient ", dbias.Describe(), " and ", reach.size(), " reaches");
  for (size_t t = 0; t < reach.size(); ++t) {
    GEMMAPOD_CHECK(reach[t] >= 0 && reach[t] < width, "CausalConv1dBackward: token ", t,
                   " reaches ", reach[t], " tokens back with ", width, " taps");
  }
  b.CausalConv1dBackward(x, taps, history, reach, dout, dx, dhistory, dtaps, dbias);
}

void BlockDiagonalMatMulBackward(const Tensor& x, const Tensor& w, const Tensor& dout, Tensor& dx,
                                 Tensor& dw, Tensor& db) {
  Backend& b = On("BlockDiagonalMatMulBackward", {&x, &w, &dout, &dx, &dw, &db});
  CheckF32("BlockDiagonalMatMulBackward", {&x, &w, &dout, &dx, &dw, &db});
  CheckSameShape("BlockDiagonalMatMulBackward", x, dout);
  CheckSameShape("BlockDiagonalMatMulBackward", x, dx);
  CheckSameShape("BlockDiagonalMatMulBackward", w, dw);
  GEMMAPOD_CHECK(w.rank() == 3 && w.dim(1) == w.dim(2) && x.rank() == 2 &&
                     x.dim(1) == w.dim(0) * w.dim(1) && db.numel() == x.dim(1),
                 "BlockDiagonalMatMulBackward: ", x.Describe(), " x ", w.Describe(),
                 " with bias gradient ", db.Describe());
  b.BlockDiagonalMatMulBackward(x, w, dout, dx, dw, db);
}

void RgLruBackward(const Tensor& x, const Tensor& gate_x, const Tensor& gate_a,
                   const Tensor& lambda, std::span<const int32_t> positions, const Tensor& state,
                   const Tensor& h, const Tensor& dh, Tensor& dx, Tensor& dgate_x, Tensor& dgate_a,
                   Tensor& dlambda, Tensor& dstate) {
  Backend& b = On("RgLruBackward", {&x, &gate_x, &gate_a, &lambda, &state, &h, &dh, &dx, &dgate_x,
                                    &dgate_a, &dlambda, &dstate});
  CheckF32("RgLruBackward", {&x, &gate_x, &gate_a, &lambda, &state, &h, &dh, &dx, &dgate_x,
                             &dgate_a, &dlambda, &dstate});
  for (const Tensor* t :
       {&gate_x, &gate_a, &h, &dh, const_cast<const Tensor*>(&dx),
        const_cast<const Tensor*>(&dgate_x), const_cast<const Tensor*>(&dgate_a)}) {
    CheckSameShape("RgLruBackward", x, *t);
  }
  GEMMAPOD_CHECK(x.rank() == 2 && x.dim(0) == static_cast<int64_t>(positions.size()) &&
                     lambda.numel() == x.dim(1) && state.numel() == x.dim(1) &&
                     dlambda.numel() == x.dim(1) && dstate.numel() == x.dim(1),
                 "RgLruBackward: ", x.Describe(), " for ", positions.size(), " positions, lambda ",
                 lambda.Describe(), ", state ", state.Describe());
  b.RgLruBackward(x, gate_x, gate_a, lambda, positions, state, h, dh, dx, dgate_x, dgate_a, dlambda,
                  dstate);
}

void RowMax(const Tensor& logits, Tensor& row_max) {
  Backend& b = On("RowMax", {&logits, &row_max});
  CheckF32("RowMax", {&logits, &row_max});
  CheckRowVector("RowMax", logits, row_max);
  b.RowMax(logits, row_max);
}

void ShardLossTerms(const Tensor& logits, const Tensor& row_max, std::span<const int32_t> targets,
                    int64_t first_id, Tensor& sum_exp, Tensor& target_logit) {
  Backend& b = On("ShardLossTerms", {&logits, &row_max, &sum_exp, &target_logit});
  CheckF32("ShardLossTerms", {&logits, &row_max, &sum_exp, &target_logit});
  for (const Tensor* t :
       {&row_max, const_cast<const Tensor*>(&sum_exp), const_cast<const Tensor*>(&target_logit)}) {
    CheckRowVector("ShardLossTerms", logits, *t);
  }
  CheckTargets("ShardLossTerms", logits, targets);
  b.ShardLossTerms(logits, row_max, targets, first_id, sum_exp, target_logit);
}

void ShardLossGrad(const Tensor& logits, const Tensor& log_sum_exp,
                   std::span<const int32_t> targets, int64_t first_id, float grad_scale,
                   const Tensor* row_scale, Tensor& dlogits) {
  Backend& b = row_scale != nullptr
                   ? On("ShardLossGrad", {&logits, &log_sum_exp, row_scale, &dlogits})
                   : On("ShardLossGrad", {&logits, &log_sum_exp, &dlogits});
  CheckF32("ShardLossGrad", {&logits, &log_sum_exp, &dlogits});
  CheckSameShape("ShardLossGrad", logits, dlogits);
  CheckRowVector("ShardLossGrad", logits, log_sum_exp);
  if (row_scale != nullptr) {
    CheckF32("ShardLossGrad", {row_scale});
    CheckRowVector("ShardLossGrad", logits, *row_scale);
  }
  CheckTargets("ShardLossGrad", logits, targets);
  b.ShardLossGrad(logits, log_sum_exp, targets, first_id, grad_scale, row_scale, dlogits);
}

void CombineLossTerms(const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                      std::span<const int32_t> targets, Tensor& log_sum_exp, Tensor& losses) {
  Backend& b = On("CombineLossTerms", {&row_max, &sum_exp, &target_logit, &log_sum_exp, &losses});
  CheckF32("CombineLossTerms", {&row_max, &sum_exp, &target_logit, &log_sum_exp, &losses});
  const int64_t rows = row_max.numel();
  GEMMAPOD_CHECK(sum_exp.numel() == rows && target_logit.numel() == rows &&
                     log_sum_exp.numel() == rows && losses.numel() == rows &&
                     static_cast<int64_t>(targets.size()) == rows,
                 "CombineLossTerms: ", targets.size(), " targets, ", row_max.Describe(), ", ",
                 sum_exp.Describe(), ", ", target_logit.Describe(), " into ",
                 log_sum_exp.Describe(), " and ", losses.Describe());
  b.CombineLossTerms(row_max, sum_exp, target_logit, targets, log_sum_exp, losses);
}

void AdamWUpdate(Tensor& master, Tensor& m, Tensor& v, const Tensor& grad, const AdamWStep& s) {
  Backend& b = On("AdamWUpdate", {&master, &m, &v, &grad});
  CheckF32("AdamWUpdate", {&master, &m, &v, &grad});
  CheckSameShape("AdamWUpdate", master, m);
  CheckSameShape("AdamWUpdate", master, v);
  CheckSameShape("AdamWUpdate", master, grad);
  GEMMAPOD_CHECK(
      s.step >= 1 && s.beta1 >= 0 && s.beta1 < 1 && s.beta2 >= 0 && s.beta2 < 1 && s.eps > 0,
      "AdamWUpdate: step ", s.step, ", betas (", s.beta1, ", ", s.beta2, "), eps ", s.eps);
  b.AdamWUpdate(master, m, v, grad, s);
}

double SumOfSquares(const Tensor& t) {
  Backend& b = On("SumOfSquares", {&t});
  CheckF32("SumOfSquares", {&t});
  return b.SumOfSquares(t);
}

void CastInto(const Tensor& src, Tensor& dst) {
  Backend& b = On("CastInto", {&src, &dst});
  CheckF32("CastInto", {&src});
  GEMMAPOD_CHECK(
      src.numel() == dst.numel() && (dst.dtype() == DType::kF32 || dst.dtype() == DType::kBF16),
      "CastInto: ", src.Describe(), " into ", dst.Describe());
  b.CastInto(src, dst);
}

}  // namespace gemmapod::ops
