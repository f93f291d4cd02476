#include "training/memory_plan.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "runtime/error.h"

namespace gemmapod {
namespace {

std::string Mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

}  // namespace

TrainingMemory FullTrainingMemory(int64_t params, const TrainingJob& job, int64_t max_length) {
  const bool bf16 = job.weights_dtype == "bf16";
  TrainingMemory m;
  m.trainable_parameters = params;
  m.weights = params * (bf16 ? 2 : 4);
  m.gradients = params * 4;
  m.optimizer = params * (8 + (bf16 ? 4 : 0));
  // A preference row is a pair: two sequences; a GRPO row a prompt with its sampled answers.
  const bool pairs = job.objective == TrainingJob::Objective::kDpo;
  const bool grpo = job.objective == TrainingJob::Objective::kGrpo;
  m.micro_batch_tokens = job.micro_batch * max_length *
                         (pairs  ? 2
                          : grpo ? job.grpo.group_size
                                 : 1);
  // The reference has the policy's shapes, in the training dtype, and nothing trains in it.
  if ((pairs && !job.dpo.precompute_reference) || (grpo && job.grpo.beta > 0)) {
    m.reference = m.weights;
  }
  // A reward model scoring the answers: counted at the policy's size.
  if (grpo && !job.grpo.reward_model.empty()) m.reference += m.weights;
  return m;
}

TrainingMemory PlanTrainingMemory(const ModelConfig& c, const TrainingJob& job,
                                  int64_t max_length) {
  const int64_t d = c.hidden_size, f = c.intermediate_size, V = c.vocab_size;
  const int64_t q = c.q_width(), kv = c.kv_width();
  // Norms are f32 [d] vectors: a rounding error next to the matrices, counted at matrix size.
  TrainingMemory m = FullTrainingMemory(c.ParameterCount(), job, max_length);
  if (job.lora) {  // the frozen weights stay; only the adapters have gradients and moments
    int64_t adapter = 0;
    const auto add = [&](const char* name, int64_t n, int64_t k) {
      for (const std::string& t : job.lora->targets) {
        if (t == name) adapter += job.lora->rank * (n + k);
      }
    };
    add("q_proj", q, d);
    add("k_proj", kv, d);
    add("v_proj", kv, d);
    add("o_proj", d, q);
    add("gate_proj", f, d);
    add("up_proj", f, d);
    add("down_proj", d, f);
    m.trainable_parameters = adapter * c.num_layers;
    m.weights += m.trainable_parameters * 4;
    m.gradients = m.trainable_parameters * 4;
    m.optimizer = m.trainable_parameters * 8;
  }
  // Per token and layer, f32: the layer's input, both norms' outputs, the residual between the
  // blocks, both blocks' outputs (6 d); q, k, v and attention's output (2 q + 2 kv, and q + kv
  // more before Gemma 3's qk-norm); gate, up and their product (3 ffn).
  const int64_t per_token_layer = 4 * (6 * d + 2 * q + 2 * kv + (c.qk_norm ? q + kv : 0) + 3 * f);
  // Recomputing keeps each layer's input (d) and one layer's full set at a time.
  m.activations = job.recompute ? (4 * d * c.num_layers + per_token_layer) * m.micro_batch_tokens
                                : per_token_layer * c.num_layers * m.micro_batch_tokens;
  m.head = 2 * V * 4 * m.micro_batch_tokens;
  m.largest_tensor = V * d;
  if (job.objective == TrainingJob::Objective::kGrpo) {
    // Every answer of the step at once (one replica's share at most all of them): f32 keys and
    // values of each layer for max_length tokens, and the prefill's last-token logits.
    const int64_t answers = job.batch_sequences * job.grpo.group_size;
    m.rollout_cache = answers * (max_length * c.num_layers * 2 * kv * 4 + V * 4);
  }
  return m;
}

std::string RenderTrainingMemory(const TrainingMemory& m) {
  std::ostringstream out;
  out << "memory: weights " << Mib(m.weights) << ", gradients " << Mib(m.gradients)
      << ", optimizer " << Mib(m.optimizer)
      << (m.reference > 0 ? ", frozen models " + Mib(m.reference) : std::string())
      << (m.rollout_cache > 0 ? ", rollout KV cache " + Mib(m.rollout_cache) : std::string())
      << ", activations " << Mib(m.activations) << " and logits " << Mib(m.head)
      << " per micro-batch of " << m.micro_batch_tokens << " tokens at most; total "
      << Mib(m.total()) << " (" << m.trainable_parameters << " trainable parameters)";
  if (m.save_gather > 0) {
    out << "; rank 0 adds up to " << Mib(m.save_gather) << " while it writes a checkpoint";
  }
  return out.str();
}

int64_t AvailableMemoryBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return -1;
}

TrainingMemory PerRankTrainingMemory(TrainingMemory m, int64_t tp, int64_t replicas, bool zero,
                                     const PipelineStageShare& stage) {
  const auto part = [](int64_t bytes, double fraction) {
    return static_cast<int64_t>(std::ceil(static_cast<double>(bytes) * fraction));
  };
  for (int64_t* p : {&m.weights, &m.gradients, &m.optimizer, &m.reference}) {
    *p = part(*p, stage.parameters);
  }
  m.trainable_parameters = part(m.trainable_parameters, stage.parameters);
  m.activations = part(m.activations, stage.layers) * stage.in_flight;
  if (!stage.head) m.head = 0;
  const bool sharded = tp > 1 || stage.parameters < 1 || (zero && replicas > 1);
  if (sharded) m.save_gather = m.largest_tensor * 4 + (m.largest_tensor * 4 + tp - 1) / tp;
  const auto share = [](int64_t bytes, int64_t parts) { return (bytes + parts - 1) / parts; };
  if (zero) m.optimizer = share(m.optimizer, replicas);
  m.rollout_cache = share(m.rollout_cache, replicas);  // each replica answers its prompts
  for (int64_t* part : {&m.weights, &m.gradients, &m.optimizer, &m.reference}) {
    *part = share(*part, tp);
  }
  return m;
}

namespace {

int64_t StatusKib(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string key, unit;
  int64_t kib = 0;
  while (in >> key) {
    if (key == field) {
      in >> kib >> unit;
      return kib * 1024;
    }
    std::getline(in, unit);  // the rest of the line
  }
  return -1;
}

}  // namespace

int64_t ResidentMemoryBytes() { return StatusKib("VmRSS:"); }
int64_t PeakResidentMemoryBytes() { return StatusKib("VmHWM:"); }

}  // namespace gemmapod
