#include "launch/sharded_model.h"

#include "launch/commands.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/error.h"
#include "serving/gemma_layout.h"

namespace gemmapod {

CheckpointModel ReadCheckpointModel(const std::string& path) {
  const std::unique_ptr<Hdf5CheckpointReader> reader = Hdf5CheckpointReader::Open(path);
  CheckpointModel m{FromAttributes(reader->config(), path), 2};
  const std::string embed = "model.embed_tokens.weight";
  if (reader->Has(embed))
    m.matrix_bytes = static_cast<int64_t>(DTypeSize(reader->Info(embed).dtype));
  return m;
}

ShardedGemma LoadShardedGemma(Communicator& world, const std::string& pod_path,
                              const ModelFiles& files, int64_t max_sequences, int64_t max_context,
                              int64_t sampled_vocab) {
  GEMMAPOD_CHECK(files.precision == "exact" || files.precision == "fast",
                 "--precision must be exact or fast, got '", files.precision, "'");
  const std::unique_ptr<Hdf5CheckpointReader> reader = Hdf5CheckpointReader::Open(files.model_path);
  const ModelConfig config = FromAttributes(reader->config(), files.model_path);
  const int64_t matrix_bytes =
      static_cast<int64_t>(DTypeSize(reader->Info("model.embed_tokens.weight").dtype));

  ShardedGemma run;
  std::vector<LayerRange> stages;
  if (!pod_path.empty()) {
    const PodTopology pod = LoadPodTopology(pod_path);
    // Refuse a layout that cannot work before any rank reads a byte of weights.
    const GemmaPodPlan plan = PlanGemmaOnPod(pod, config, matrix_bytes, max_sequences, max_context);
    if (!plan.problems.empty()) {
      std::string reasons;
      for (const std::string& p : plan.problems) reasons += "\n  " + p;
      throw Error(StrCat(pod_path, ": cannot run ", config.name, " (", files.model_path,
                         ") on this pod:", reasons));
    }
    run.grid = std::make_unique<ProcessGrid>(ProcessGrid::Create(world, pod));
    stages = plan.stages;
  } else {
    // No pod: every rank of the job in one tensor-parallel group.
    if (auto problem = TensorParallelProblem(config, world.size())) {
      throw Error(StrCat(*problem, " (", world.size(),
                         " ranks without --pod form one tensor-parallel group)"));
    }
    run.grid = std::make_unique<ProcessGrid>(ProcessGrid::Create(world, GridShape{world.size()}));
    stages = GemmaStageLayers(config, world.size(), 1, matrix_bytes, nullptr);
  }
  const GemmaShard shard = GemmaShardAt(config, run.grid->shape(), run.grid->coords(), stages);
  GemmaStage stage(config, shard, LoadGemmaShard(config, shard, *reader), &run.grid->tp());
  stage.set_matmul_precision(files.precision == "fast" ? cpu::MatmulPrecision::kFastBF16
                                                       : cpu::MatmulPrecision::kExact);
  run.pipeline = std::make_unique<GemmaPipeline>(
      *run.grid, std::move(stage), PipelineOptions{max_sequences, max_context, sampled_vocab});
  return run;
}

}  // namespace gemmapod
