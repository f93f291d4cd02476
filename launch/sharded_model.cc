#include "launch/sharded_model.h"

#include "launch/commands.h"
#include "launch/model_files.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/error.h"
#include "serving/engine/gemma_stage_model.h"
#include "sharding/gemma_layout.h"

namespace gemmapod {

CheckpointModel ReadCheckpointModel(const std::string& path) {
  const Hdf5CheckpointReader& reader = CheckpointFile(path);
  CheckpointModel m{FromAttributes(reader.config(), path), 2};
  const std::string embed = "model.embed_tokens.weight";
  GEMMAPOD_CHECK(reader.Has(embed), path, ": tensor '", embed,
                 "' is missing (the model config needs it)");
  m.matrix_bytes = static_cast<int64_t>(DTypeSize(reader.Info(embed).dtype));
  return m;
}

std::optional<PodTopology> LoadPodIfGiven(const std::string& pod_path) {
  if (pod_path.empty()) return std::nullopt;
  return LoadPodTopology(pod_path);
}

ShardedGemmaPlan PlanShardedGemma(int world_size, std::optional<PodTopology> pod_file,
                                  const ModelFiles& files, int64_t max_sequences,
                                  int64_t max_context, int64_t sampled_vocab) {
  ParsePrecision(files);
  const CheckpointModel model = ReadCheckpointModel(files.model_path);
  ShardedGemmaPlan plan;
  plan.world_size = world_size;
  plan.config = model.config;
  plan.max_sequences = max_sequences;
  plan.max_context = max_context;
  plan.sampled_vocab = sampled_vocab;
  if (!pod_file) {
    if (auto problem = TensorParallelProblem(model.config, world_size)) {
      throw Error(StrCat(*problem, " (", world_size,
                         " ranks without --pod form one tensor-parallel group)"));
    }
    plan.stages = GemmaStageLayers(model.config, world_size, 1, model.matrix_bytes, nullptr);
    return plan;
  }
  plan.pod = std::move(pod_file);
  const PodTopology& pod = *plan.pod;
  CheckPodFitsJob(pod, world_size);
  // Refuse a layout that cannot work before any rank reads a byte of weights.
  const GemmaPodPlan layout =
      PlanGemmaOnPod(pod, model.config, model.matrix_bytes, max_sequences, max_context);
  if (!layout.problems.empty()) {
    std::string reasons;
    for (const std::string& p : layout.problems) reasons += "\n  " + p;
    throw Error(StrCat(pod.source, ": cannot run ", model.config.name, " (", files.model_path,
                       ") on this pod:", reasons));
  }
  plan.stages = layout.stages;
  return plan;
}

std::string HostComputeNotice(const PodTopology* pod) {
  if (pod == nullptr || pod->device_type() == DeviceType::kCpu) return "";
  return StrCat("gemmapod: note: the model computes on each rank's host CPU; the pod's ",
                DeviceTypeName(pod->device_type()), " devices are not used yet\n");
}

ShardedRun LoadShardedGemma(Communicator& world, const ShardedGemmaPlan& plan,
                            const ModelFiles& files) {
  ShardedRun run;
  run.grid = std::make_unique<ProcessGrid>(
      plan.pod ? ProcessGrid::Create(world, *plan.pod)
               : ProcessGrid::Create(world, GridShape{plan.world_size}));
  const GemmaShard shard =
      GemmaShardAt(plan.config, run.grid->shape(), run.grid->coords(), plan.stages);
  const Hdf5CheckpointReader& reader = CheckpointFile(files.model_path);
  GemmaStage stage(plan.config, shard, LoadGemmaShard(plan.config, shard, reader, &run.grid->tp()),
                   &run.grid->tp());
  stage.set_matmul_precision(ParsePrecision(files));
  run.pipeline = std::make_unique<PipelineEngine>(
      *run.grid,
      MakeGemmaStageModel(*run.grid, std::move(stage), plan.max_sequences, plan.max_context,
                          plan.kv_pool),
      PipelineOptions{plan.sampled_vocab});
  return run;
}

}  // namespace gemmapod
