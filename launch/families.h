// The model families the CLI knows, in one table: how a model file is recognised, and each
// command's entry for the family. The commands look a file's family up once and call its row; a
// new family adds one row here (beside its folder under models/ and its StageModel).
#pragma once

#include <string>
#include <string_view>

#include "launch/commands.h"

namespace gemmapod {

class Communicator;
struct PodTopology;

// What `random-checkpoint` reports of the model it wrote.
struct RandomCheckpointReport {
  std::string name;
  int64_t parameters = 0;
};

struct ModelFamily {
  std::string_view name;         // "gemma", "recurrent_gemma", "t5gemma"
  bool encoder_decoder = false;  // takes --encoder-tokens
  int (*generate)(const GenerateOptions&, Communicator&) = nullptr;
  int (*logits)(const LogitsOptions&, Communicator&) = nullptr;
  int (*plan)(const PodTopology&, const PlanOptions&) = nullptr;
  // Null where the family cannot be served yet.
  int (*serve)(const ServeOptions&, Communicator&) = nullptr;
  // Null where the family has no random checkpoints yet.
  RandomCheckpointReport (*random_checkpoint)(const RandomCheckpointOptions&) = nullptr;
};

// The family of a .h5 checkpoint (its config attributes: one open) or of a YAML model config.
// Gemma when no other family claims the file, or when it cannot be read: Gemma's own loaders
// then name what is wrong with it.
const ModelFamily& FamilyOf(const std::string& path);

// The families' entries (defined beside each command).
int GenerateGemmaOnRanks(const GenerateOptions& options, Communicator& world);
int LogitsGemmaOnRanks(const LogitsOptions& options, Communicator& world);
int ServeGemmaOnRanks(const ServeOptions& options, Communicator& world);
int ServeRecurrentOnRanks(const ServeOptions& options, Communicator& world);
int PrintGemmaPlan(const PodTopology& pod, const PlanOptions& options);
int PrintRecurrentPlan(const PodTopology& pod, const PlanOptions& options);
int PrintT5GemmaPlan(const PodTopology& pod, const PlanOptions& options);
RandomCheckpointReport RandomGemmaCheckpoint(const RandomCheckpointOptions& options);
RandomCheckpointReport RandomT5GemmaCheckpoint(const RandomCheckpointOptions& options);
RandomCheckpointReport RandomRecurrentGemmaCheckpoint(const RandomCheckpointOptions& options);
// `plan --train job.yaml` (launch/train_command.cc).
int PrintTrainingPlan(const std::string& job_path, const std::string& pod_path = "");

}  // namespace gemmapod
