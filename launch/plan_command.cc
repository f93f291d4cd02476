#include <cstdio>
#include <filesystem>
#include <fstream>

#include "launch/commands.h"
#include "launch/families.h"
#include "launch/model_files.h"
#include "launch/rank_map.h"
#include "launch/recurrent_commands.h"
#include "launch/sharded_model.h"
#include "launch/t5gemma_commands.h"
#include "models/gemma/model_config.h"
#include "models/recurrent_gemma/recurrent_gemma.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/error.h"
#include "sharding/gemma_layout.h"
#include "sharding/pod_topology.h"
#include "sharding/recurrent_gemma_layout.h"
#include "sharding/t5gemma_layout.h"

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

}  // namespace

// RecurrentGemma: per rank its layers, weights and decode state, whose size does not depend on
// the context; layers split evenly over the stages.
int PrintRecurrentPlan(const PodTopology& pod, const PlanOptions& o) {
  RecurrentGemmaConfig c;
  int64_t matrix_bytes = o.dtype == "f32" ? 4 : 2;
  if (EndsWith(o.model_path, ".yaml") || EndsWith(o.model_path, ".yml")) {
    GEMMAPOD_CHECK(o.dtype != "int8", "plan: --dtype int8 is not available for RecurrentGemma");
    c = LoadRecurrentGemmaConfigYaml(o.model_path);
  } else {
    const Hdf5CheckpointReader& reader = CheckpointFile(o.model_path);
    c = RecurrentGemmaFromAttributes(reader.config(), o.model_path);
    matrix_bytes = static_cast<int64_t>(DTypeSize(reader.Info("model.embed_tokens.weight").dtype));
  }
  std::vector<std::string> problems;
  if (auto p = RecurrentTensorParallelProblem(c, pod.tp)) problems.push_back(*p);
  if (pod.pp > c.num_layers) {
    problems.push_back(StrCat(pod.pp, " pipeline stages for ", c.num_layers, " layers"));
  }
  if (!pod.pipeline.automatic) {
    problems.push_back("explicit pipeline.stages: RecurrentGemma splits its layers evenly (auto)");
  }
  std::printf(
      "\nmodel %s (%s): %lld layers, %lld parameters, weights %s per element; decode "
      "state for %lld sequence(s) (f32, whatever the context)\n",
      c.name.c_str(), o.model_path.c_str(), static_cast<long long>(c.num_layers),
      static_cast<long long>(c.ParameterCount()), matrix_bytes == 2 ? "bf16" : "f32",
      static_cast<long long>(o.batch));
  if (problems.empty()) {
    std::printf("%-5s %-16s %-10s %-9s %12s %12s %12s\n", "rank", "host", "(dp,pp,tp)", "layers",
                "weights", "state", "total");
    const auto stages = RecurrentStageLayers(c.num_layers, pod.pp);
    const GridShape shape{pod.tp, pod.pp, pod.dp};
    std::vector<int64_t> rank_bytes;
    for (int rank = 0; rank < shape.world_size(); ++rank) {
      const int node = pod.node_of_rank(rank);
      const GridCoords at = shape.CoordsOf(rank);
      const auto& [first, end] = stages[static_cast<size_t>(at.pp)];
      const RecurrentGemmaShard shard =
          MakeRecurrentGemmaShard(c, pod.tp, at.tp, first, end, at.pp == 0, at.pp == pod.pp - 1);
      const int64_t weights = RecurrentGemmaShardWeightBytes(c, shard, matrix_bytes);
      const int64_t state = RecurrentGemmaState::BytesFor(c, o.batch, shard);
      rank_bytes.push_back(weights + state);
      std::printf("%-5d %-16s %-10s %-9s %12s %12s %12s\n", rank,
                  pod.nodes[static_cast<size_t>(node)].host.c_str(),
                  StrCat("(", at.dp, ",", at.pp, ",", at.tp, ")").c_str(),
                  StrCat(first, "-", end - 1).c_str(), Bytes(weights).c_str(), Bytes(state).c_str(),
                  Bytes(weights + state).c_str());
    }
    for (std::string& p : MemoryProblems(pod, rank_bytes)) problems.push_back(std::move(p));
  }
  if (!problems.empty()) {
    std::fprintf(stderr, "gemmapod: plan: %s cannot run %s on %s:\n", pod.source.c_str(),
                 c.name.c_str(), pod.name.c_str());
    for (const std::string& p : problems) std::fprintf(stderr, "  %s\n", p.c_str());
    return 1;
  }
  std::printf("fits: every rank's weights and decode state are within its memory\n");
  return 0;
}

// T5Gemma: per rank its stack, layers, weights, decoder KV cache and cross-attention keys and
// values, the stages as T5GemmaLayoutFromPod places them.
int PrintT5GemmaPlan(const PodTopology& pod, const PlanOptions& o) {
  const std::string ext = std::filesystem::path(o.model_path).extension().string();
  T5GemmaConfig c;
  int64_t matrix_bytes = o.dtype == "f32" ? 4 : o.dtype == "int8" ? 1 : 2;
  if (ext == ".yaml" || ext == ".yml") {
    c = LoadT5GemmaConfigYaml(o.model_path);
    if (o.dtype == "int8") {
      c.encoder.quantization = c.decoder.quantization = WeightQuantization::kInt8;
    }
  } else {
    const Hdf5CheckpointReader& reader = CheckpointFile(o.model_path);
    c = T5GemmaFromAttributes(reader.config(), o.model_path);
    matrix_bytes =
        static_cast<int64_t>(DTypeSize(reader.Info("model.decoder.embed_tokens.weight").dtype));
  }
  const int64_t context = o.context > 0 ? o.context : c.decoder.max_position_embeddings;
  std::printf(
      "\nmodel %s (%s): encoder %lld layers, decoder %lld layers, %lld parameters, weights %s per "
      "element; for %lld sequence(s) of %lld encoder and %lld decoder tokens: decoder KV cache and "
      "cross-attention keys/values (f32)\n",
      c.name.c_str(), o.model_path.c_str(), static_cast<long long>(c.encoder.num_layers),
      static_cast<long long>(c.decoder.num_layers), static_cast<long long>(c.ParameterCount()),
      matrix_bytes == 1   ? "int8 (+ f32 row scales)"
      : matrix_bytes == 2 ? "bf16"
                          : "f32",
      static_cast<long long>(o.batch), static_cast<long long>(context),
      static_cast<long long>(context));
  T5GemmaLayout layout;
  try {
    layout = T5GemmaLayoutFromPod(pod, c);
    const int needed = layout.world_size() * pod.dp;
    GEMMAPOD_CHECK(needed == pod.world_size(), "the layout (", layout.Describe(),
                   pod.dp > 1 ? StrCat(") x dp ", pod.dp) : std::string(")"), " needs ", needed,
                   " ranks, the pod has ", pod.world_size(), " devices");
  } catch (const Error& e) {
    std::fprintf(stderr, "gemmapod: plan: %s cannot run %s on %s:\n  %s\n", pod.source.c_str(),
                 c.name.c_str(), pod.name.c_str(), e.what());
    return 1;
  }
  std::printf("layout: %s%s\n", layout.Describe().c_str(),
              pod.dp > 1 ? StrCat(" (one replica of ", pod.dp,
                                  ": stage s of each replica on the "
                                  "same node)")
                               .c_str()
                         : "");
  std::printf("%-5s %-16s %-5s %-8s %-9s %-6s %12s %12s %12s %12s\n", "rank", "host", "stage",
              "stack", "layers", "parts", "weights", "kv-cache", "cross-kv", "total");
  std::vector<int64_t> rank_bytes;
  for (int rank = 0; rank < pod.world_size(); ++rank) {
    const int local = T5GemmaReplicaOf(&pod, rank).rank;  // its rank within its replica
    const int stage = layout.StageOf(local);
    const T5GemmaShard shard = T5GemmaShardOf(c, layout, local);
    const int64_t weights = T5GemmaShardWeightBytes(c, shard, matrix_bytes);
    int64_t kv = 0, cross = 0;
    std::string stack, layers, parts;
    if (shard.has_encoder) {
      stack = "enc";
      layers = StrCat(shard.encoder.first_layer, "-", shard.encoder.end_layer - 1);
      parts += shard.encoder.has_embedding ? "E" : "";
      parts += shard.encoder.has_head ? "N" : "";
    }
    if (shard.has_decoder) {
      const GemmaShard& d = shard.decoder;
      stack += stack.empty() ? "dec" : "+dec";
      layers += StrCat(layers.empty() ? "" : ",", d.first_layer, "-", d.end_layer - 1);
      parts += d.has_embedding ? "e" : "";
      parts += d.has_head ? "H" : "";
      kv = static_cast<int64_t>(
          KvCache::BytesFor(c.decoder, o.batch, context, d.kv_heads, d.first_layer, d.end_layer));
      cross = 2 * o.batch * context * d.kv_heads * c.decoder.head_dim *
              (d.end_layer - d.first_layer) * static_cast<int64_t>(sizeof(float));
    }
    const int node = pod.node_of_rank(rank);
    rank_bytes.push_back(weights + kv + cross);
    std::printf("%-5d %-16s %-5d %-8s %-9s %-6s %12s %12s %12s %12s\n", rank,
                pod.nodes[static_cast<size_t>(node)].host.c_str(), stage, stack.c_str(),
                layers.c_str(), parts.empty() ? "-" : parts.c_str(), Bytes(weights).c_str(),
                Bytes(kv).c_str(), Bytes(cross).c_str(), Bytes(weights + kv + cross).c_str());
  }
  std::printf(
      "parts: E encoder embedding, N encoder final norm (last encoder stage), e decoder "
      "embedding, H decoder final norm + tied output head\n");
  const std::vector<std::string> problems = MemoryProblems(pod, rank_bytes);
  if (!problems.empty()) {
    std::fprintf(stderr, "gemmapod: plan: %s cannot run %s on %s:\n", pod.source.c_str(),
                 c.name.c_str(), pod.name.c_str());
    for (const std::string& p : problems) std::fprintf(stderr, "  %s\n", p.c_str());
    return 1;
  }
  std::printf("fits: every rank's weights and caches are within its memory\n");
  return 0;
}

int PrintGemmaPlan(const PodTopology& pod, const PlanOptions& o) {
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

int RunPlan(const PlanOptions& options) {
  if (!options.train_job.empty()) return PrintTrainingPlan(options.train_job, options.pod_path);
  GEMMAPOD_CHECK(!options.pod_path.empty(), "plan: give --pod (a pod file), or --train (a job)");
  const PodTopology pod = LoadPodTopology(options.pod_path);
  std::fputs(RenderPodSummary(pod).c_str(), stdout);
  std::fputs(RenderRankMap(pod).c_str(), stdout);
  if (options.model_path.empty()) return 0;
  return FamilyOf(options.model_path).plan(pod, options);
}

}  // namespace gemmapod
