// gemmapod train: one rank fine-tunes a decoder-only Gemma as its job file says.
#include <cstdio>
#include <cstdlib>

#include "launch/commands.h"
#include "launch/families.h"
#include "runtime/error.h"
#include "training/job_config.h"
#include "training/trainer.h"

namespace gemmapod {

int RunTrain(const TrainCommandOptions& options) {
  if (const char* size = std::getenv("OMPI_COMM_WORLD_SIZE"); size && std::atoi(size) > 1) {
    throw Error(StrCat("train: started as one of ", size,
                       " ranks; fine-tuning runs on one rank for now (sharded training is not "
                       "built yet): run `gemmapod train` without mpirun"));
  }
  const TrainingJob job = ReadTrainingJob(options.config_path);
  if (!options.resume && options.resume_from.empty()) {
    const ModelFamily& family = FamilyOf(job.model);
    GEMMAPOD_CHECK(family.name == "gemma", job.source, ": model ", job.model, " is a ", family.name,
                   " model; fine-tuning covers decoder-only Gemma 1/2/3 so far (RecurrentGemma "
                   "and T5Gemma training are not built yet)");
  }
  TrainRunOptions run;
  run.resume = options.resume || !options.resume_from.empty();
  run.resume_from = options.resume_from;
  run.kill_during_save_at_step = options.inject_kill_during_save;
  RunTrainingJob(job, run, stderr);
  return 0;
}

}  // namespace gemmapod
