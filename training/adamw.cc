#include "training/adamw.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "models/layers/device_tensors.h"
#include "runtime/error.h"
#include "runtime/ops/grad_ops.h"

namespace gemmapod {
namespace {

// Elements [begin, end) of a tensor, flattened (a view).
Tensor Elements(const Tensor& t, int64_t begin, int64_t end) {
  return t.Reshape({t.numel()}).Slice(begin, end);
}

}  // namespace

AdamW::AdamW(AdamWOptions options) : options_(options) {
  GEMMAPOD_CHECK(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 &&
                     options.beta2 < 1 && options.eps > 0 && options.weight_decay >= 0,
                 "AdamW: betas (", options.beta1, ", ", options.beta2, "), eps ", options.eps,
                 " and weight decay ", options.weight_decay,
                 " must be in [0, 1), [0, 1), > 0 and >= 0");
}

void AdamW::Add(const std::string& name, Tensor& weight, Tensor& grad, bool decay) {
  for (const Parameter& p : params_) {
    GEMMAPOD_CHECK(p.name != name, "AdamW: parameter '", name, "' added twice");
  }
  GEMMAPOD_CHECK(weight.dtype() == DType::kF32 || weight.dtype() == DType::kBF16, "AdamW: '", name,
                 "' is ", weight.Describe(), "; only f32 and bf16 weights train");
  GEMMAPOD_CHECK(grad.dtype() == DType::kF32 && grad.shape() == weight.shape(), "AdamW: '", name,
                 "' has gradient ", grad.Describe(), " for weight ", weight.Describe());
  GEMMAPOD_CHECK(weight.dtype() == DType::kF32 || weight.device().is_cpu(), "AdamW: '", name,
                 "': a bf16 master copy is made on the host for now");
  // The moments (and a bf16 weight's master) are allocated at the first step or restore, once
  // it is known which elements this rank keeps (KeepStateOf): a sharded optimizer never holds
  // the whole state, not even for a moment.
  params_.push_back({name, &weight, &grad, Tensor(), Tensor(), Tensor(), decay, 0, weight.numel()});
}

void AdamW::AllocateState() {
  for (Parameter& p : params_) {
    if (p.m.defined()) continue;
    const int64_t owned = p.own_end - p.own_begin;
    const bool whole = !sharded_;
    p.m = ZerosOn(p.weight->device(), whole ? p.weight->shape() : Shape{owned});
    p.v = ZerosOn(p.weight->device(), whole ? p.weight->shape() : Shape{owned});
    const Tensor weight = whole ? *p.weight : Elements(*p.weight, p.own_begin, p.own_end);
    p.master = p.weight->dtype() == DType::kF32 ? weight : weight.To(DType::kF32);
  }
}

double AdamW::OwnedGradSquares() const {
  double squares = 0;
  for (const Parameter& p : params_) {
    if (p.own_end == p.own_begin || !p.in_norm) continue;
    squares += ops::SumOfSquares(sharded_ ? Elements(*p.grad, p.own_begin, p.own_end) : *p.grad);
  }
  return squares;
}

double AdamW::GradNorm() const { return std::sqrt(OwnedGradSquares()); }

double AdamW::Step(float lr, double max_grad_norm) { return Step(lr, max_grad_norm, GradNorm()); }

double AdamW::Step(float lr, double max_grad_norm, double norm) {
  AllocateState();
  GEMMAPOD_CHECK(std::isfinite(norm), "AdamW: the gradient norm is ", norm,
                 " (a NaN or infinity in the gradients); the step is refused");
  ++steps_;
  ops::AdamWStep s;
  s.lr = lr;
  s.beta1 = options_.beta1;
  s.beta2 = options_.beta2;
  s.eps = options_.eps;
  s.step = steps_;
  // PyTorch's clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
  if (max_grad_norm > 0 && norm > max_grad_norm) {
    s.grad_scale = static_cast<float>(max_grad_norm / (norm + 1e-6));
  }
  for (Parameter& p : params_) {
    if (p.own_end == p.own_begin) continue;
    s.weight_decay = p.decay ? options_.weight_decay : 0.0f;
    if (!sharded_) {
      ops::AdamWUpdate(p.master, p.m, p.v, *p.grad, s);
      if (p.weight->dtype() != DType::kF32) ops::CastInto(p.master, *p.weight);
      continue;
    }
    ops::AdamWUpdate(p.master, p.m, p.v, Elements(*p.grad, p.own_begin, p.own_end), s);
    if (p.weight->dtype() != DType::kF32) {
      Tensor weight = Elements(*p.weight, p.own_begin, p.own_end);
      ops::CastInto(p.master, weight);
    }
  }
  return norm;
}

void AdamW::KeepStateOf(int64_t begin, int64_t end) {
  GEMMAPOD_CHECK(steps_ == 0 && !sharded_ && (params_.empty() || !params_[0].m.defined()),
                 "AdamW: the state is sharded once, before any step or restore");
  int64_t at = 0;  // the first element of the parameter in the flat order
  for (Parameter& p : params_) {
    const int64_t n = p.weight->numel();
    p.own_begin = std::clamp<int64_t>(begin - at, 0, n);
    p.own_end = std::clamp<int64_t>(end - at, p.own_begin, n);
    at += n;
  }
  sharded_ = true;
  AllocateState();
}

void AdamW::LeaveOutOfNorm(const std::string& name) {
  const_cast<Parameter&>(Find(name)).in_norm = false;
}

std::pair<int64_t, int64_t> AdamW::owned(const std::string& name) const {
  const Parameter& p = Find(name);
  return {p.own_begin, p.own_end};
}

void AdamW::ZeroGrad() {
  for (Parameter& p : params_) {
    Tensor row = p.grad->Reshape({1, p.grad->numel()});
    ops::FillColumns(row, 0, row.dim(1), 0.0f);
  }
}

std::vector<std::string> AdamW::names() const {
  std::vector<std::string> out;
  for (const Parameter& p : params_) out.push_back(p.name);
  return out;
}

std::vector<Tensor*> AdamW::gradients() {
  std::vector<Tensor*> out;
  for (Parameter& p : params_) out.push_back(p.grad);
  return out;
}

std::vector<Tensor*> AdamW::weights() {
  std::vector<Tensor*> out;
  for (Parameter& p : params_) out.push_back(p.weight);
  return out;
}

std::vector<const Tensor*> AdamW::weights() const {
  std::vector<const Tensor*> out;
  for (const Parameter& p : params_) out.push_back(p.weight);
  return out;
}

void AdamW::Restore(const std::string& name, const Tensor& full_master, const Tensor& full_m,
                    const Tensor& full_v) {
  AllocateState();
  Parameter& p = const_cast<Parameter&>(Find(name));
  for (const auto& [what, saved] :
       {std::pair<const char*, const Tensor*>{"master weights", &full_master},
        {"first moment", &full_m},
        {"second moment", &full_v}}) {
    GEMMAPOD_CHECK(saved->dtype() == DType::kF32 && saved->shape() == p.weight->shape(), "AdamW: '",
                   name, "': the saved ", what, " is ", saved->Describe(), ", expected f32 ",
                   ShapeToString(p.weight->shape()));
  }
  // With sharded state, this rank's elements of each.
  const auto mine = [&](const Tensor& t) {
    return sharded_ ? Elements(t, p.own_begin, p.own_end) : t;
  };
  const Tensor master = mine(full_master), m = mine(full_m), v = mine(full_v);
  for (const auto& [what, saved, into] :
       {std::tuple<const char*, const Tensor*, Tensor*>{"master weights", &master, &p.master},
        {"first moment", &m, &p.m},
        {"second moment", &v, &p.v}}) {
    GEMMAPOD_CHECK(saved->dtype() == DType::kF32 && saved->shape() == into->shape(), "AdamW: '",
                   name, "': the saved ", what, " is ", saved->Describe(), ", expected f32 ",
                   ShapeToString(into->shape()));
    ops::CastInto(*saved, *into);
  }
  if (p.weight->dtype() != DType::kF32) {
    Tensor weight = sharded_ ? Elements(*p.weight, p.own_begin, p.own_end) : *p.weight;
    ops::CastInto(p.master, weight);
  }
}

void AdamW::set_steps(int64_t steps) {
  GEMMAPOD_CHECK(steps >= 0, "AdamW: a step count of ", steps);
  steps_ = steps;
}

const AdamW::Parameter& AdamW::Find(const std::string& name) const {
  for (const Parameter& p : params_) {
    if (p.name == name) return p;
  }
  throw Error(StrCat("AdamW: no parameter '", name, "'"));
}

const Tensor& AdamW::weight(const std::string& name) const { return *Find(name).weight; }
const Tensor& AdamW::grad(const std::string& name) const { return *Find(name).grad; }
// The state is allocated on first use; reading it counts (a checkpoint of a run not yet stepped).
const Tensor& AdamW::master(const std::string& name) const {
  const_cast<AdamW*>(this)->AllocateState();
  return Find(name).master;
}
const Tensor& AdamW::first_moment(const std::string& name) const {
  const_cast<AdamW*>(this)->AllocateState();
  return Find(name).m;
}
const Tensor& AdamW::second_moment(const std::string& name) const {
  const_cast<AdamW*>(this)->AllocateState();
  return Find(name).v;
}
const Tensor& AdamW::state(const std::string& name, AdamWPart part) const {
  return part == AdamWPart::kMaster        ? master(name)
         : part == AdamWPart::kFirstMoment ? first_moment(name)
                                           : second_moment(name);
}

}  // namespace gemmapod
