// gemmapod train: one rank fine-tunes a decoder-only Gemma as its job file says.
#include <cstdio>
#include <cstdlib>

#include "launch/commands.h"
#include "launch/families.h"
#include "models/gemma/model_config.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/error.h"
#include "training/job_config.h"
#include "training/memory_plan.h"
#include "training/trainable_model.h"
#include "training/trainer.h"

namespace gemmapod {

int PrintTrainingPlan(const std::string& job_path) {
  const TrainingJob job = ReadTrainingJob(job_path);
  const TrainingPlan plan = PlanTraining(*Hdf5CheckpointReader::Open(job.model), job);
  std::printf("training %s (%s, %s) on one rank: %s%s\n", plan.name.c_str(), job.model.c_str(),
              plan.family.c_str(), job.lora ? "LoRA adapters" : "every parameter",
              job.weights_dtype == "bf16" ? ", bf16 weights with f32 masters" : ", f32 weights");
  std::printf("%s\n", RenderTrainingMemory(plan.memory).c_str());
  const int64_t available = AvailableMemoryBytes();
  if (available >= 0) {
    std::printf("this machine has %lld MiB available: %s\n",
                static_cast<long long>(available >> 20),
                plan.memory.total() <= available ? "fits" : "does NOT fit");
  }
  return available < 0 || plan.memory.total() <= available ? 0 : 1;
}

int RunTrain(const TrainCommandOptions& options) {
  if (const char* size = std::getenv("OMPI_COMM_WORLD_SIZE"); size && std::atoi(size) > 1) {
    throw Error(StrCat("train: started as one of ", size,
                       " ranks; fine-tuning runs on one rank for now (sharded training is not "
                       "built yet): run `gemmapod train` without mpirun"));
  }
  const TrainingJob job = ReadTrainingJob(options.config_path);
  if (!options.resume && options.resume_from.empty()) {
    const ModelFamily& family = FamilyOf(job.model);
    GEMMAPOD_CHECK(
        family.name == "gemma" || family.name == "recurrent_gemma" || family.name == "t5gemma",
        job.source, ": model ", job.model, " is a ", family.name,
        " model, which gemmapod does not train");
  }
  TrainRunOptions run;
  run.resume = options.resume || !options.resume_from.empty();
  run.resume_from = options.resume_from;
  run.kill_during_save_at_step = options.inject_kill_during_save;
  RunTrainingJob(job, run, stderr);
  return 0;
}

}  // namespace gemmapod
