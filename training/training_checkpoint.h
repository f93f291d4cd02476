// Training checkpoints: one HDF5 file per save that is first of all a model (weights under their
// Hugging Face names, config, tokenizer: `generate` and `convert` read it as they read any
// checkpoint) and beside it, in groups of its own, what resuming needs: the optimizer's f32
// masters and moments (/optimizer/...) and the trainer's progress (/trainer attributes: step,
// data cursor, tokens seen, and the facts a resume must agree with). Saved atomically (a temporary
// name, fsync, rename); a directory keeps the last N as step-<8 digits>.h5.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/checkpoint/attributes.h"
#include "training/adamw.h"
#include "training/data.h"

namespace gemmapod {

class Hdf5CheckpointReader;
class TrainableModel;

struct TrainerState {
  int64_t step = 0;
  DataCursor cursor;
  int64_t tokens_seen = 0;  // tokens of the training batches so far
  double elapsed_s = 0;     // training time so far (for tokens/s and ETA after a resume)
  // What the run's data order depends on; a resume refuses a job that differs in any of them.
  Attributes run_identity;
};

// Called after each tensor written (tests stop a save half-way through with it).
using SaveProgress = std::function<void(int64_t tensors_written)>;

// Where the save finds each optimizer tensor of a parameter, whole; null: the optimizer's own.
// With sharded state (ZeRO-1) or tensor parallelism rank 0 gathers them from the other ranks: it
// asks for every part of every parameter in the optimizer's order (kAdamWParts), also a master it
// does not write, so the ranks that send them know the order without being told.
using OptimizerStateOf = std::function<Tensor(const std::string& name, AdamWPart part)>;

void SaveTrainingCheckpoint(const std::string& path, TrainableModel& model,
                            const std::string& tokenizer, const AdamW& optimizer,
                            const TrainerState& state, const SaveProgress& progress = nullptr,
                            const OptimizerStateOf& state_of = nullptr);

// The trainer's state of a training checkpoint (/trainer); errors name the file when it is a
// plain model checkpoint or the state is incomplete.
TrainerState ReadTrainerState(const Hdf5CheckpointReader& checkpoint);
// Restores the optimizer (masters, moments, step count) from a training checkpoint whose weights
// were already loaded into the optimizer's parameters. Errors name the file and what is missing
// or mismatched.
// part_of (when set) cuts this rank's part out of a parameter's whole tensor (tensor
// parallelism).
using PartOf = std::function<Tensor(const std::string& name, const Tensor& whole)>;
void RestoreOptimizerState(const Hdf5CheckpointReader& checkpoint, AdamW& optimizer,
                           const PartOf& part_of = nullptr);

// The checkpoints of a run directory (step-<n>.h5), oldest first.
struct CheckpointEntry {
  int64_t step;
  std::string path;
};
std::vector<CheckpointEntry> ListTrainingCheckpoints(const std::string& dir);
std::string TrainingCheckpointPath(const std::string& dir, int64_t step);
// Deletes all but the `keep` newest checkpoints.
void PruneTrainingCheckpoints(const std::string& dir, int64_t keep);
// Removes temporary files of saves whose process is gone (killed mid-save); returns how many.
int RemoveAbandonedSaves(const std::string& dir);

}  // namespace gemmapod
