#include <cstdio>

#include "launch/commands.h"
#include "launch/rank_map.h"
#include "launch/sharded_model.h"
#include "models/model_config.h"
#include "runtime/error.h"
#include "serving/gemma_layout.h"
#include "sharding/pod_topology.h"

namespace gemmapod {
namespace {

bool EndsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string Bytes(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

int PrintModelPlan(const PodTopology& pod, const PlanOptions& o) {
  CheckpointModel model;
  if (EndsWith(o.model_path, ".yaml") || EndsWith(o.model_path, ".yml")) {
    model.config = LoadModelConfigYaml(o.model_path);
    model.matrix_bytes = o.dtype == "f32" ? 4 : o.dtype == "int8" ? 1 : 2;
    if (o.dtype == "int8") model.config.quantization = WeightQuantization::kInt8;
  } else {
    model = ReadCheckpointModel(o.model_path);
  }
  const ModelConfig& c = model.config;
  const int64_t context = o.context > 0 ? o.context : c.max_position_embeddings;
  const GemmaPodPlan plan = PlanGemmaOnPod(pod, c, model.matrix_bytes, o.batch, context);
  std::printf(
      "\nmodel %s (%s): %lld layers, %lld parameters, weights %s per element; KV cache "
      "for %lld sequence(s) x %lld tokens per replica (f32)\n",
      c.name.c_str(), o.model_path.c_str(), static_cast<long long>(c.num_layers),
      static_cast<long long>(c.ParameterCount()),
      model.matrix_bytes == 1   ? "int8 (+ f32 row scales)"
      : model.matrix_bytes == 2 ? "bf16"
                                : "f32",
      static_cast<long long>(o.batch), static_cast<long long>(context));
  if (!plan.ranks.empty()) {
    std::printf("%-5s %-16s %-10s %-9s %-6s %12s %12s %12s\n", "rank", "host", "(dp,pp,tp)",
                "layers", "parts", "weights", "kv-cache", "total");
    for (const RankPlan& r : plan.ranks) {
      const std::string coords = StrCat("(", r.at.dp, ",", r.at.pp, ",", r.at.tp, ")");
      const std::string layers = StrCat(r.layers.first, "-", r.layers.end - 1);
      const std::string parts = StrCat(r.embedding ? "E" : "", r.head ? "H" : "");
      std::printf("%-5d %-16s %-10s %-9s %-6s %12s %12s %12s\n", r.rank,
                  pod.nodes[static_cast<size_t>(r.node)].host.c_str(), coords.c_str(),
                  layers.c_str(), parts.empty() ? "-" : parts.c_str(),
                  Bytes(r.weight_bytes).c_str(), Bytes(r.kv_bytes).c_str(),
                  Bytes(r.weight_bytes + r.kv_bytes).c_str());
    }
    std::printf("parts: E embedding (first stage), H final norm + output head (last stage)\n");
  }
  if (!plan.problems.empty()) {
    std::fprintf(stderr, "gemmapod: plan: %s cannot run %s on %s:\n", pod.source.c_str(),
                 c.name.c_str(), pod.name.c_str());
    for (const std::string& p : plan.problems) std::fprintf(stderr, "  %s\n", p.c_str());
    return 1;
  }
  std::printf("fits: every rank's weights and KV cache are within its memory\n");
  return 0;
}

}  // namespace

int RunPlan(const PlanOptions& options) {
  const PodTopology pod = LoadPodTopology(options.pod_path);
  std::fputs(RenderPodSummary(pod).c_str(), stdout);
  std::fputs(RenderRankMap(pod).c_str(), stdout);
  if (options.model_path.empty()) return 0;
  return PrintModelPlan(pod, options);
}

}  // namespace gemmapod
