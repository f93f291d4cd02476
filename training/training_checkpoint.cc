#include "training/training_checkpoint.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/error.h"
#include "training/adamw.h"
#include "training/trainable_model.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMasters = "optimizer/master";
constexpr const char* kFirstMoments = "optimizer/exp_avg";
constexpr const char* kSecondMoments = "optimizer/exp_avg_sq";
constexpr const char* kOptimizer = "optimizer";
constexpr const char* kTrainer = "trainer";

int64_t IntAttribute(const Attributes& a, const std::string& key, const std::string& where) {
  const auto it = a.find(key);
  GEMMAPOD_CHECK(it != a.end(), where, ": attribute '", key, "' is missing");
  const auto* v = std::get_if<int64_t>(&it->second);
  GEMMAPOD_CHECK(v != nullptr, where, ": attribute '", key, "' is not an integer");
  return *v;
}

double NumberAttribute(const Attributes& a, const std::string& key, const std::string& where) {
  const auto it = a.find(key);
  GEMMAPOD_CHECK(it != a.end(), where, ": attribute '", key, "' is missing");
  if (const auto* d = std::get_if<double>(&it->second)) return *d;
  if (const auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  throw Error(StrCat(where, ": attribute '", key, "' is not a number"));
}

const std::regex& CheckpointName() {
  static const std::regex name(R"(step-(\d{8,})\.h5)");
  return name;
}

}  // namespace

void SaveTrainingCheckpoint(const std::string& path, TrainableModel& model,
                            const std::string& tokenizer, const AdamW& optimizer,
                            const TrainerState& state, const SaveProgress& progress,
                            const OptimizerStateOf& state_of) {
  Hdf5CheckpointWriter writer = Hdf5CheckpointWriter::Create(path);
  int64_t written = 0;
  const auto wrote = [&] {
    ++written;
    if (progress) progress(written);
  };
  // The dtype of every model tensor written: an f32 weight is its own master.
  std::map<std::string, DType> in_params;
  model.WriteModel(writer, [&](const std::string& name, DType dtype) {
    in_params[name] = dtype;
    wrote();
  });
  writer.WriteFile("tokenizer.model", tokenizer);
  // Every parameter of the model, also those that other pipeline stages hold (state_of gathers
  // them).
  for (const std::string& name : model.ParameterNames(optimizer)) {
    for (const AdamWPart part : kAdamWParts) {
      // One whole tensor at a time: rank 0 of a sharded run holds no more than that.
      const Tensor t = state_of ? state_of(name, part) : optimizer.state(name, part);
      if (part == AdamWPart::kMaster) {
        // An f32 weight in /params is its own master; a bf16 weight, or a parameter that is not
        // a model tensor (a LoRA adapter: /params then holds the merged matrices), gets one.
        const auto it = in_params.find(name);
        if (it != in_params.end() && it->second == DType::kF32) continue;
        writer.WriteToGroup(kMasters, name, t);
      } else {
        writer.WriteToGroup(part == AdamWPart::kFirstMoment ? kFirstMoments : kSecondMoments, name,
                            t);
      }
      wrote();
    }
  }
  writer.SetGroupAttributes(kOptimizer,
                            {{"algorithm", std::string("adamw")},
                             {"steps", optimizer.steps()},
                             {"beta1", double{optimizer.options().beta1}},
                             {"beta2", double{optimizer.options().beta2}},
                             {"eps", double{optimizer.options().eps}},
                             {"weight_decay", double{optimizer.options().weight_decay}}});
  Attributes trainer = state.run_identity;
  trainer["step"] = state.step;
  trainer["data_epoch"] = state.cursor.epoch;
  trainer["data_position"] = state.cursor.position;
  trainer["tokens_seen"] = state.tokens_seen;
  trainer["elapsed_s"] = state.elapsed_s;
  writer.SetGroupAttributes(kTrainer, trainer);
  writer.Commit();
}

TrainerState ReadTrainerState(const Hdf5CheckpointReader& ckpt) {
  const std::string& path = ckpt.origin();
  GEMMAPOD_CHECK(
      ckpt.HasGroup(kTrainer) && ckpt.HasGroup(kFirstMoments) && ckpt.HasGroup(kSecondMoments),
      path, ": a model checkpoint without training state (no /trainer and /optimizer ",
      "groups): it can start a run (model:), not resume one");
  const Attributes t = ckpt.GroupAttributes(kTrainer);
  TrainerState state;
  const std::string at = path + ": /trainer";
  state.step = IntAttribute(t, "step", at);
  state.cursor.epoch = IntAttribute(t, "data_epoch", at);
  state.cursor.position = IntAttribute(t, "data_position", at);
  state.tokens_seen = IntAttribute(t, "tokens_seen", at);
  state.elapsed_s = NumberAttribute(t, "elapsed_s", at);
  for (const auto& [key, value] : t) {
    if (key != "step" && key != "data_epoch" && key != "data_position" && key != "tokens_seen" &&
        key != "elapsed_s") {
      state.run_identity[key] = value;
    }
  }
  return state;
}

void RestoreOptimizerState(const Hdf5CheckpointReader& ckpt, AdamW& optimizer,
                           const PartOf& part_of) {
  const auto part = [&](const std::string& name, const Tensor& whole) {
    return part_of ? part_of(name, whole) : whole;
  };
  const std::string& path = ckpt.origin();
  ReadTrainerState(ckpt);  // names a plain model checkpoint
  const Attributes opt = ckpt.GroupAttributes(kOptimizer);
  const std::string where = path + ": /optimizer";
  const auto check_option = [&](const char* key, double job) {
    const double saved = NumberAttribute(opt, key, where);
    GEMMAPOD_CHECK(static_cast<float>(saved) == static_cast<float>(job), path, ": optimizer.", key,
                   " was ", saved, " in the saved run and is ", job,
                   " in the job; a resumed run keeps its optimizer");
  };
  check_option("beta1", optimizer.options().beta1);
  check_option("beta2", optimizer.options().beta2);
  check_option("eps", optimizer.options().eps);
  std::set<std::string> masters;
  if (ckpt.HasGroup(kMasters)) {
    for (const TensorInfo& info : ckpt.ListGroup(kMasters)) masters.insert(info.name);
  }
  for (const std::string& name : optimizer.names()) {
    Tensor master = optimizer.weight(name);
    if (masters.count(name) > 0) {
      master = part(name, ckpt.ReadFromGroup(kMasters, name));
    } else {
      GEMMAPOD_CHECK(master.dtype() == DType::kF32 && ckpt.Has(name), path, ": no f32 master ",
                     "copy of '", name, "' (/optimizer/master) to resume from");
    }
    optimizer.Restore(name, master, part(name, ckpt.ReadFromGroup(kFirstMoments, name)),
                      part(name, ckpt.ReadFromGroup(kSecondMoments, name)));
  }
  optimizer.set_steps(IntAttribute(opt, "steps", where));
}

std::vector<CheckpointEntry> ListTrainingCheckpoints(const std::string& dir) {
  std::vector<CheckpointEntry> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_regular_file(ec) && std::regex_match(name, m, CheckpointName())) {
      out.push_back({std::stoll(m[1].str()), e.path().string()});
    }
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointEntry& a, const CheckpointEntry& b) { return a.step < b.step; });
  return out;
}

std::string TrainingCheckpointPath(const std::string& dir, int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step-%08lld.h5", static_cast<long long>(step));
  return (fs::path(dir) / name).string();
}

void PruneTrainingCheckpoints(const std::string& dir, int64_t keep) {
  const std::vector<CheckpointEntry> all = ListTrainingCheckpoints(dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) {
    std::error_code ec;
    fs::remove(all[i].path, ec);
    GEMMAPOD_CHECK(!ec, all[i].path, ": cannot remove an old checkpoint: ", ec.message());
  }
}

int RemoveAbandonedSaves(const std::string& dir) {
  static const std::regex temporary(R"(step-\d{8,}\.h5\.tmp-(\d+))");
  int removed = 0;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (!std::regex_match(name, m, temporary)) continue;
    const long pid = std::stol(m[1].str());
    // A live process may still be writing it (another job on this directory); leave that alone.
    if (pid > 0 && kill(static_cast<pid_t>(pid), 0) == -1 && errno == ESRCH) {
      fs::remove(e.path(), ec);
      if (!ec) ++removed;
    }
  }
  return removed;
}

}  // namespace gemmapod
