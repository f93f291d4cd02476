// gemmapod train: fine-tunes a model as its job file says, on one rank or on data-parallel
// replicas started by mpirun.
#include <cstdio>
#include <memory>

#include "launch/commands.h"
#include "launch/families.h"
#include "launch/rank_runner.h"
#include "models/gemma/model_config.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "sharding/pod_topology.h"
#include "sharding/process_grid.h"
#include "training/job_config.h"
#include "training/memory_plan.h"
#include "training/trainable_model.h"
#include "training/trainer.h"
#include "training/training_checkpoint.h"

namespace gemmapod {

int PrintTrainingPlan(const std::string& job_path, const std::string& pod_path) {
  TrainingJob job = ReadTrainingJob(job_path);
  const std::unique_ptr<Hdf5CheckpointReader> reader = Hdf5CheckpointReader::Open(job.model);
  const TrainingPlan plan = PlanTraining(*reader, job);
  // The layout: the pod's (its tp and pp, its other ranks replicas), or the job's alone.
  int64_t replicas = 1, ranks_per_host = job.tensor_parallel * job.pipeline_parallel;
  if (!pod_path.empty()) {
    const PodTopology pod = LoadPodTopology(pod_path);
    GEMMAPOD_CHECK(job.tensor_parallel == 1 || job.tensor_parallel == pod.tp, job.source,
                   ": parallel.tp ", job.tensor_parallel, " disagrees with tp ", pod.tp, " of ",
                   pod_path);
    GEMMAPOD_CHECK(job.pipeline_parallel == 1 || job.pipeline_parallel == pod.pp, job.source,
                   ": parallel.pp ", job.pipeline_parallel, " disagrees with pp ", pod.pp, " of ",
                   pod_path);
    job.tensor_parallel = pod.tp;
    job.pipeline_parallel = pod.pp;
    replicas = pod.world_size() / (pod.tp * pod.pp);
    ranks_per_host = 0;
    for (const PodNode& node : pod.nodes)
      ranks_per_host = std::max<int64_t>(ranks_per_host, node.devices);
  }
  const int64_t tp = job.tensor_parallel, pp = job.pipeline_parallel;
  const int64_t ranks = tp * pp * replicas;
  const std::string layout =
      ranks == 1 ? "one rank"
                 : StrCat("each of ", ranks, " ranks (tp ", tp, pp > 1 ? StrCat(" x pp ", pp) : "",
                          " x ", replicas, " replica(s)",
                          job.zero_stage == 1 && replicas > 1 ? ", ZeRO-1" : "", ")");
  std::printf("training %s (%s, %s) on %s: %s%s\n", plan.name.c_str(), job.model.c_str(),
              plan.family.c_str(), layout.c_str(), job.lora ? "LoRA adapters" : "every parameter",
              job.weights_dtype == "bf16" ? ", bf16 weights with f32 masters" : ", f32 weights");
  // Each pipeline stage holds its own part; the largest decides whether the job fits.
  const int64_t micro_batches = job.batch_sequences / job.micro_batch / replicas;
  const std::vector<PipelineStageShare> stages =
      PipelineStageShares(*reader, job, std::max<int64_t>(1, micro_batches));
  int64_t largest = 0;
  for (size_t s = 0; s < stages.size(); ++s) {
    const TrainingMemory memory =
        PerRankTrainingMemory(plan.memory, tp, replicas, job.zero_stage == 1, stages[s]);
    largest = std::max(largest, memory.total());
    std::printf("%s%s\n", pp > 1 ? StrCat("stage ", s, " ").c_str() : "",
                RenderTrainingMemory(memory).c_str());
  }
  const int64_t available = AvailableMemoryBytes();
  const int64_t host_total = largest * std::max<int64_t>(1, ranks_per_host);
  if (available >= 0) {
    std::printf("this machine has %lld MiB available%s: %s\n",
                static_cast<long long>(available >> 20),
                ranks_per_host > 1 ? StrCat(" for its ", ranks_per_host, " ranks").c_str() : "",
                host_total <= available ? "fits" : "does NOT fit");
  }
  return available < 0 || host_total <= available ? 0 : 1;
}

int RunTrain(const TrainCommandOptions& options, int* argc, char*** argv) {
  return RunOnRanks(argc, argv, [&](Communicator& world) {
    TrainingJob job;
    // Checked on every rank, reported once: a bad job file is one message, not one per rank.
    CheckOnEveryRank(world, [&] {
      job = ReadTrainingJob(options.config_path);
      if (!options.resume && options.resume_from.empty()) {
        const ModelFamily& family = FamilyOf(job.model);
        GEMMAPOD_CHECK(
            family.name == "gemma" || family.name == "recurrent_gemma" || family.name == "t5gemma",
            job.source, ": model ", job.model, " is a ", family.name,
            " model, which gemmapod does not train");
      }
      if (!options.pod_path.empty()) {
        // The pod's layout: its tp splits the model, its pp into stages, its ranks / (tp x pp)
        // are the replicas.
        const PodTopology pod = LoadPodTopology(options.pod_path);
        GEMMAPOD_CHECK(pod.world_size() == world.size(), options.pod_path, ": ", pod.world_size(),
                       " ranks, but the job was started with ", world.size(),
                       " (run it with gemmapod launch --pod ", options.pod_path, ")");
        GEMMAPOD_CHECK(job.tensor_parallel == 1 || job.tensor_parallel == pod.tp, job.source,
                       ": parallel.tp ", job.tensor_parallel, " disagrees with tp ", pod.tp, " of ",
                       options.pod_path, "; remove one of them");
        GEMMAPOD_CHECK(job.pipeline_parallel == 1 || job.pipeline_parallel == pod.pp, job.source,
                       ": parallel.pp ", job.pipeline_parallel, " disagrees with pp ", pod.pp,
                       " of ", options.pod_path, "; remove one of them");
        job.tensor_parallel = pod.tp;
        job.pipeline_parallel = pod.pp;
      }
      CheckModelParallelJob(job, world.size());
      CheckDataParallelBatch(
          job, world.size() / static_cast<int>(job.tensor_parallel * job.pipeline_parallel));
    });
    // Every rank must read the same model (and checkpoint to resume from).
    CheckSameCheckpoint(world, job.model);
    if (!options.resume_from.empty()) {
      CheckSameCheckpoint(world, options.resume_from);
    } else if (options.resume) {
      // --resume takes the newest checkpoint of the directory each rank sees.
      const std::vector<CheckpointEntry> saved = ListTrainingCheckpoints(job.checkpoint.dir);
      if (!saved.empty()) CheckSameCheckpoint(world, saved.back().path);
    }
    // The process grid's order (sharding/process_grid.h): tensor-parallel groups of consecutive
    // ranks (the innermost, most talkative split), then the replicas, then the stages.
    const int tp = static_cast<int>(job.tensor_parallel);
    const int pp = static_cast<int>(job.pipeline_parallel);
    const GridShape grid{tp, pp, world.size() / (tp * pp)};
    const GridCoords at = grid.CoordsOf(world.rank());
    const std::unique_ptr<Communicator> tp_group =
        world.Split(at.dp + grid.dp * at.pp, world.rank());
    const std::unique_ptr<Communicator> dp_group = world.Split(at.tp + tp * at.pp, world.rank());
    const std::unique_ptr<Communicator> pp_group = world.Split(at.tp + tp * at.dp, world.rank());
    // A replica's ranks, stage-major (its rank at.tp + tp at.pp).
    const std::unique_ptr<Communicator> model_group = world.Split(at.dp, at.tp + tp * at.pp);
    TrainRunOptions run;
    run.resume = options.resume || !options.resume_from.empty();
    run.resume_from = options.resume_from;
    run.kill_during_save_at_step = options.inject_kill_during_save;
    RunTrainingJob(job, run, stderr,
                   {&world, tp_group.get(), dp_group.get(), pp_group.get(), model_group.get()});
    return 0;
  });
}

}  // namespace gemmapod
