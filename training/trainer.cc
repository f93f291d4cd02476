#include "training/trainer.h"

#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "models/gemma/gemma_checkpoint.h"
#include "models/gemma/gemma_decoder.h"
#include "runtime/checkpoint/crc32.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/comm/communicator.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/tokenizer/tokenizer.h"
#include "training/adamw.h"
#include "training/data.h"
#include "training/data_parallel.h"
#include "training/exact_match.h"
#include "training/gemma_lm.h"
#include "training/grpo_step.h"
#include "training/lora.h"
#include "training/loss_curve.h"
#include "training/memory_plan.h"
#include "training/pipeline_engine.h"
#include "training/preference_objective.h"
#include "training/trainable_model.h"
#include "training/training_checkpoint.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

std::string Duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  if (s >= 3600) return StrCat(s / 3600, "h", (s % 3600) / 60, "m");
  if (s >= 60) return StrCat(s / 60, "m", s % 60, "s");
  return StrCat(s, "s");
}

// A digest of the examples' ids and masks: a resume must read the same data.
int64_t DataDigest(const std::vector<TrainingExample>& examples) {
  uint32_t crc = 0;
  for (const TrainingExample& e : examples) {
    for (const TrainingExample* side : {&e, e.rejected.get()}) {
      if (side == nullptr) continue;
      crc = Crc32Update(crc, side->tokens.data(), side->tokens.size() * sizeof(int32_t));
      crc = Crc32Update(crc, side->learn.data(), side->learn.size());
    }
  }
  return crc;
}

std::string DescribeValue(const AttributeValue& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) return StrCat(*i);
  if (const auto* d = std::get_if<double>(&v)) return StrCat(*d);
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  return "(a list)";
}

// What the run's data order and arithmetic depend on, as the checkpoint keeps it.
Attributes RunIdentity(const TrainingJob& job, int64_t max_length,
                       const std::vector<TrainingExample>& train,
                       const std::vector<TrainingExample>& held_out) {
  return {
      {"train_data_digest", DataDigest(train)},
      {"held_out_data_digest", DataDigest(held_out)},
      {"seed", static_cast<int64_t>(job.seed)},
      {"shuffle", int64_t{job.data.shuffle}},
      {"packing", int64_t{job.data.packing}},
      {"max_length", max_length},
      {"batch_sequences", job.batch_sequences},
      {"micro_batch", job.micro_batch},
      {"weights", job.weights_dtype},
      {"objective", std::string(job.objective == TrainingJob::Objective::kDpo ? "dpo" : "sft")}};
}

// The job's keys behind each identity entry, for the message when a resume disagrees.
const char* JobKeyOf(const std::string& identity) {
  if (identity == "train_data_digest") return "data.train (its examples changed)";
  if (identity == "held_out_data_digest") return "data.held_out / held_out_fraction";
  if (identity == "batch_sequences") return "batch.sequences";
  if (identity == "micro_batch") return "batch.micro_batch";
  if (identity == "objective") return "objective";
  if (identity.rfind("dpo_", 0) == 0) return "dpo.*";
  if (identity == "shuffle" || identity == "packing" || identity == "max_length") return "data.*";
  return "";
}

struct Metrics {
  // The curves: the loss and the held-out loss, or for GRPO the answers' mean reward and the
  // held-out greedy answers' (the keys of metrics.jsonl they come from).
  std::string train_key = "loss", held_out_key = "held_out_loss";
  std::vector<CurvePoint> train, held_out;
  std::string path;
  std::FILE* file = nullptr;  // null on the replicas that do not write (rank > 0)
  ~Metrics() {
    if (file != nullptr) std::fclose(file);
  }
  void Append(const nlohmann::json& line) {
    if (file == nullptr) return;
    const std::string text = line.dump() + "\n";
    GEMMAPOD_CHECK(
        std::fwrite(text.data(), 1, text.size(), file) == text.size() && std::fflush(file) == 0,
        path, ": cannot write the metrics (disk full?)");
  }
};

// Opens the metrics file: fresh for a new run; for a resumed one, the lines up to the resumed
// step kept (a run killed after its last checkpoint logged steps the resume will run again).
void OpenMetrics(const std::string& dir, int64_t resumed_step, bool resume, Metrics& m) {
  m.path = (fs::path(dir) / kMetricsFile).string();
  std::string kept;
  if (resume) {
    std::ifstream in(m.path);
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("step") ||
          !j["step"].is_number_integer() || j["step"].get<int64_t>() > resumed_step) {
        continue;  // a torn last line, or a step that runs again
      }
      const int64_t step = j["step"].get<int64_t>();
      if (j.contains(m.train_key) && j[m.train_key].is_number()) {
        m.train.push_back({step, j[m.train_key]});
      }
      if (j.contains(m.held_out_key) && j[m.held_out_key].is_number()) {
        m.held_out.push_back({step, j[m.held_out_key]});
      }
      kept += line + "\n";
    }
  }
  WriteTextFileAtomically(m.path, kept);
  m.file = std::fopen(m.path.c_str(), "a");
  GEMMAPOD_CHECK(m.file != nullptr, m.path, ": cannot open the metrics file");
}

std::string JoinTargets(const LoraOptions& lora) {
  std::string out;
  for (const std::string& t : lora.targets) out += (out.empty() ? "" : ",") + t;
  return out;
}

// The model's tensors as stored (their crc32s folded together): a LoRA run's frozen base.
int64_t ModelDigest(const Hdf5CheckpointReader& model) {
  uint32_t crc = 0;
  for (const TensorInfo& info : model.List()) {
    const uint32_t stored = model.StoredCrc32(info.name).value_or(0);
    crc = Crc32Update(crc, info.name.data(), info.name.size());
    crc = Crc32Update(crc, &stored, sizeof stored);
  }
  return crc;
}

// This replica's contiguous share of the held-out examples.
std::vector<TrainingExample> ShareOf(const std::vector<TrainingExample>& all,
                                     const DataParallel& dp) {
  const auto [begin, end] = dp.Share(static_cast<int64_t>(all.size()));
  return {all.begin() + begin, all.begin() + end};
}

// The processes on this host (Open MPI's local size): they share its memory.
int64_t RanksOnThisHost() {
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  return local != nullptr && std::atoi(local) > 0 ? std::atoi(local) : 1;
}

// This replica's held-out loss; with pipeline stages (`pp`), the batches flow through them as
// the micro-batches of one forward-only schedule, and the last stage's loss is summed to all.
// Preference pairs (`pairs`) go as their chosen and rejected rows.
LossSum HeldOutLoss(TrainableModel& model, const std::vector<TrainingExample>& held_out,
                    int64_t rows_per_batch, Communicator* pp, bool pairs) {
  std::vector<std::vector<const TrainingExample*>> batches;
  for (size_t begin = 0; begin < held_out.size(); begin += static_cast<size_t>(rows_per_batch)) {
    std::vector<const TrainingExample*> rows;
    for (size_t i = begin; i < std::min(held_out.size(), begin + rows_per_batch); ++i) {
      rows.push_back(&held_out[i]);
    }
    batches.push_back(pairs ? PreferenceRows(rows) : std::move(rows));
  }
  LossSum total;
  if (pp != nullptr) {
    if (batches.empty()) return total;
    total = RunPipelineInstructions(
                ForwardInstructions(pp->size(), pp->rank(), static_cast<int64_t>(batches.size())),
                *pp, model, batches, nullptr)
                .loss;
    return DataParallel(pp).Sum(total);
  }
  for (const auto& rows : batches) {
    const LossSum part = model.Loss(rows);
    total.sum += part.sum;
    total.targets += part.targets;
  }
  return total;
}

// Each sequence's log-probability under `model` (no gradient), written into `out`: `batches` of
// rows split over the replicas of `dp` (each scores its share and the replicas exchange them),
// through the pipeline stages of `pp` (the last stage scores; the stages exchange them).
void ScoreSequences(TrainableModel& model,
                    const std::vector<std::vector<const TrainingExample*>>& batches, bool mean,
                    Communicator* pp, const DataParallel& dp, ReferenceLogProbs& out) {
  const auto [begin, end] = dp.Share(static_cast<int64_t>(batches.size()));
  const std::vector<std::vector<const TrainingExample*>> mine(batches.begin() + begin,
                                                              batches.begin() + end);
  ReferenceLogProbs scored;
  model.SetObjective([&](const std::vector<const TrainingExample*>& rows) {
    return SequenceLogProbObjective(rows, mean, scored);
  });
  if (pp != nullptr) {
    if (!mine.empty()) {
      RunPipelineInstructions(
          ForwardInstructions(pp->size(), pp->rank(), static_cast<int64_t>(mine.size())), *pp,
          model, mine, nullptr);
    }
  } else {
    for (const auto& rows : mine) model.Loss(rows);
  }
  model.SetObjective(nullptr);
  std::vector<double> values;
  for (const auto& rows : batches) {
    for (const TrainingExample* e : rows) {
      const auto it = scored.find(e);
      values.push_back(it != scored.end() ? it->second : 0.0);  // another stage's or replica's
    }
  }
  if (pp != nullptr) values = DataParallel(pp).Sum(values);
  values = dp.Sum(values);
  size_t i = 0;
  for (const auto& rows : batches) {
    for (const TrainingExample* e : rows) out[e] = values[i++];
  }
}

// The pairs of `examples` in batches of `pairs_per_batch`, as rows.
std::vector<std::vector<const TrainingExample*>> PairBatches(
    const std::vector<TrainingExample>& examples, int64_t pairs_per_batch) {
  std::vector<std::vector<const TrainingExample*>> batches;
  for (size_t begin = 0; begin < examples.size(); begin += static_cast<size_t>(pairs_per_batch)) {
    std::vector<const TrainingExample*> chosen;
    for (size_t i = begin; i < std::min(examples.size(), begin + pairs_per_batch); ++i) {
      chosen.push_back(&examples[i]);
    }
    batches.push_back(PreferenceRows(chosen));
  }
  return batches;
}

// A preference step's or evaluation's stats, added over the pipeline's stages (the last one has
// them) and the replicas.
PreferenceStats SumStats(const PreferenceStats& mine, Communicator* pp, const DataParallel& dp) {
  std::vector<double> v = {static_cast<double>(mine.pairs),
                           static_cast<double>(mine.correct),
                           static_cast<double>(mine.ranked),
                           mine.loss,
                           mine.chosen_reward,
                           mine.rejected_reward};
  if (pp != nullptr) v = DataParallel(pp).Sum(v);
  v = dp.Sum(v);
  return {static_cast<int64_t>(v[0]),
          static_cast<int64_t>(v[1]),
          static_cast<int64_t>(v[2]),
          v[3],
          v[4],
          v[5]};
}

}  // namespace

// What a run checkpointed before these identity keys existed had: the defaults.
const std::map<std::string, AttributeValue> kAddedLater = {{"objective", std::string("sft")},
                                                           {"grpo_epochs", int64_t{1}}};

void CheckSameRun(const Attributes& saved, const Attributes& job, const std::string& checkpoint,
                  const std::string& job_file) {
  std::string differences;
  for (const auto& [key, value] : job) {
    auto it = saved.find(key);
    // Keys added after a run began were their defaults in it.
    const auto earlier = kAddedLater.find(key);
    const AttributeValue* was = it != saved.end()              ? &it->second
                                : earlier != kAddedLater.end() ? &earlier->second
                                                               : nullptr;
    GEMMAPOD_CHECK(was != nullptr, checkpoint, ": trainer attribute '", key,
                   "' is missing; was it written by another version of gemmapod?");
    if (*was == value) continue;
    differences += StrCat(differences.empty() ? "" : "; ", key, " was ", DescribeValue(*was),
                          " and is now ", DescribeValue(value));
    if (*JobKeyOf(key) != '\0') differences += StrCat(" (", JobKeyOf(key), ")");
  }
  GEMMAPOD_CHECK(differences.empty(), "resume: ", job_file, " differs from the run in ", checkpoint,
                 ": ", differences,
                 "; a resumed run continues the same run, so start a new checkpoint.dir to "
                 "change these");
}

void CheckDataParallelBatch(const TrainingJob& job, int replicas) {
  const int64_t micro_batches = job.batch_sequences / job.micro_batch;
  GEMMAPOD_CHECK(micro_batches % replicas == 0, job.source, ": batch.sequences ",
                 job.batch_sequences, " in micro-batches of ", job.micro_batch,
                 " (batch.micro_batch) ", "makes ", micro_batches,
                 " micro-batch(es) a step, which ", replicas,
                 " data-parallel ranks cannot share evenly; make batch.sequences a multiple of ",
                 replicas * job.micro_batch);
}

void CheckModelParallelJob(const TrainingJob& job, int ranks) {
  const int64_t tp = job.tensor_parallel, pp = job.pipeline_parallel;
  if (tp * pp == 1) return;
  GEMMAPOD_CHECK(ranks % (tp * pp) == 0, job.source, ": parallel.tp ", tp, " x parallel.pp ", pp,
                 " does not divide the job's ", ranks,
                 " ranks (the ranks are tp x pp x data-parallel replicas)");
  GEMMAPOD_CHECK(!job.lora, job.source,
                 ": lora: adapters are built for one rank per replica so far; remove lora: "
                 "or parallel.tp / parallel.pp");
  GEMMAPOD_CHECK(
      job.objective != TrainingJob::Objective::kGrpo, job.source,
      ": objective: grpo: rollouts over a model-parallel training group are not built "
      "yet; remove parallel.tp / parallel.pp (data-parallel replicas share the prompts)");
  GEMMAPOD_CHECK(!job.eval_exact_match, job.source,
                 ": eval.exact_match: generation over a model-parallel training group is not "
                 "built yet; remove it (the held-out loss is reported) or parallel.tp / "
                 "parallel.pp");
}

TrainRunSummary RunTrainingJob(const TrainingJob& job, const TrainRunOptions& options,
                               std::FILE* log, const TrainingGroups& groups) {
  DataParallel dp(groups.dp);
  CheckDataParallelBatch(job, dp.size());
  Communicator* const tp = groups.tp != nullptr && groups.tp->size() > 1 ? groups.tp : nullptr;
  // Pipeline stages: this rank's stage runs its part of every micro-batch as the schedule says.
  Communicator* const pp = groups.pp != nullptr && groups.pp->size() > 1 ? groups.pp : nullptr;
  Communicator* const model_group =
      groups.model != nullptr && groups.model->size() > 1 ? groups.model : nullptr;
  const int stages = pp != nullptr ? pp->size() : 1;
  const int stage = pp != nullptr ? pp->rank() : 0;
  // The job's rank 0 speaks and writes; the others run the same steps silently.
  const bool speaker = groups.world == nullptr || groups.world->rank() == 0;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> quiet(nullptr, &std::fclose);
  if (!speaker) {
    quiet.reset(std::fopen("/dev/null", "w"));
    GEMMAPOD_CHECK(quiet != nullptr, "train: cannot open /dev/null");
    log = quiet.get();
  }
  const std::string& dir = job.checkpoint.dir;
  if (speaker) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    GEMMAPOD_CHECK(!ec && fs::is_directory(dir), job.source, ": checkpoint.dir ", dir,
                   ": cannot create the directory", ec ? ": " + ec.message() : "");
    if (const int removed = RemoveAbandonedSaves(dir)) {
      std::fprintf(log, "train: removed %d unfinished checkpoint file(s) of a killed run in %s\n",
                   removed, dir.c_str());
    }
  }
  if (groups.world != nullptr && groups.world->size() > 1) {
    groups.world->Barrier();  // the directory as rank 0 left it
  }
  GEMMAPOD_CHECK(fs::is_directory(dir), job.source, ": checkpoint.dir ", dir,
                 " is not visible to rank ", dp.rank(),
                 "; data-parallel ranks on several hosts need it on a shared filesystem");
  if (tp != nullptr) {
    std::fprintf(log, "train: tensor parallelism over %d ranks\n", tp->size());
  }
  const int64_t micro_per_replica = job.batch_sequences / job.micro_batch / dp.size();
  if (pp != nullptr) {
    std::fprintf(log, "train: pipeline of %d stages, %s schedule over %lld micro-batch(es)\n",
                 stages, PipelineScheduleName(job.pipeline_schedule),
                 static_cast<long long>(micro_per_replica));
  }
  if (dp.size() > 1) {
    std::fprintf(log, "train: data parallelism over %d ranks (%lld micro-batch(es) each a step)\n",
                 dp.size(),
                 static_cast<long long>(job.batch_sequences / job.micro_batch / dp.size()));
  }
  const std::vector<CheckpointEntry> existing = ListTrainingCheckpoints(dir);
  std::string start = job.model;
  if (options.resume) {
    if (!options.resume_from.empty()) {
      start = options.resume_from;
    } else {
      GEMMAPOD_CHECK(!existing.empty(), "resume: no checkpoint (step-*.h5) in ", dir,
                     " to resume from");
      start = existing.back().path;
    }
  } else {
    GEMMAPOD_CHECK(existing.empty(), job.source, ": checkpoint.dir ", dir,
                   " already holds a run's checkpoints (", existing.back().path,
                   "); pass --resume to continue it, or choose another directory");
  }

  std::unique_ptr<Hdf5CheckpointReader> reader = Hdf5CheckpointReader::Open(start);
  // LoRA checkpoints hold merged matrices: the frozen base comes from the job's model, always,
  // and is checked against the run's digest of it on a resume.
  std::unique_ptr<Hdf5CheckpointReader> base;
  if (job.lora && options.resume) base = Hdf5CheckpointReader::Open(job.model);
  const Hdf5CheckpointReader& weights_source = base ? *base : *reader;
  const TrainingPlan plan = PlanTraining(weights_source, job);
  GEMMAPOD_CHECK(job.data.max_length <= plan.max_context, job.source, ": data.max_length ",
                 job.data.max_length, " is longer than the model's context (", plan.max_context,
                 " tokens)");
  const int64_t max_length = plan.max_length;
  const std::unique_ptr<TrainableModel> model =
      LoadTrainableModel(weights_source, job.weights_dtype == "bf16" ? DType::kBF16 : DType::kF32,
                         ModelParallelism{tp, model_group, stages, stage});
  // A reward model: the scoring head on the last token, added (zero) to a language model.
  if (job.objective == TrainingJob::Objective::kReward) {
    model->AddScoreHead();
  } else {
    model->FreezeScoreHead();  // a reward model tuned as a language model keeps its head
  }
  if (job.lora) {
    model->AttachLora(*job.lora, job.seed);
    std::fprintf(log, "train: LoRA rank %lld, alpha %g on %s\n",
                 static_cast<long long>(job.lora->rank), job.lora->alpha,
                 JoinTargets(*job.lora).c_str());
  }

  std::optional<std::string> embedded = ReadEmbeddedTokenizer(*reader);
  GEMMAPOD_CHECK(!job.tokenizer.empty() || embedded.has_value(), start,
                 " carries no tokenizer; set tokenizer: in ", job.source);
  const Tokenizer tokenizer = job.tokenizer.empty()
                                  ? Tokenizer::FromBytes(*embedded, start + " (embedded tokenizer)")
                                  : Tokenizer::FromFile(job.tokenizer);
  GEMMAPOD_CHECK(tokenizer.vocab_size() <= model->vocab_size(), tokenizer.origin(), ": ",
                 tokenizer.vocab_size(), " pieces, more than the model's vocabulary (",
                 model->vocab_size(), ")");

  const TrainingMemory memory = PerRankTrainingMemory(
      plan.memory, tp != nullptr ? tp->size() : 1, dp.size(), job.zero_stage == 1,
      PipelineStageShares(weights_source, job, micro_per_replica)[static_cast<size_t>(stage)]);
  std::fprintf(log, "train: %s\n", RenderTrainingMemory(memory).c_str());
  // The replicas on one host share its memory: each may count on its part of what is free.
  const int64_t host_ranks = RanksOnThisHost();
  const int64_t available = AvailableMemoryBytes() < 0 ? -1 : AvailableMemoryBytes() / host_ranks;
  // Rank 0 also gathers whole tensors while it saves.
  const int64_t needed = memory.total() + (speaker ? memory.save_gather : 0);
  GEMMAPOD_CHECK(
      available < 0 || needed <= available + memory.weights, job.source, ": the run needs about ",
      needed >> 20, " MiB and this machine has ", available >> 20,
      " MiB free beside the loaded weights",
      host_ranks > 1 ? StrCat(" for each of its ", host_ranks, " ranks") : "",
      "; lower batch.micro_batch or data.max_length, train LoRA adapters, or free memory");
  // DPO and reward models read preference pairs; DPO also needs the reference's log-probabilities.
  const bool dpo = job.objective == TrainingJob::Objective::kDpo;
  const bool reward_model = job.objective == TrainingJob::Objective::kReward;
  const bool preference = dpo || reward_model;
  const bool grpo = job.objective == TrainingJob::Objective::kGrpo;
  GEMMAPOD_CHECK(!grpo || !model->seq2seq(), job.source,
                 ": objective: grpo is built for decoder-only models (Gemma, RecurrentGemma) so "
                 "far; ",
                 start, " is a ", model->family());

  const DataReadOptions read{max_length, job.data.skip_too_long, job.data.skip_invalid,
                             model->seq2seq(), preference};
  TrainingData data = ReadJsonlExamples(job.data.train, tokenizer, read);
  std::fprintf(log, "train: %zu examples from %s (%lld too long, %lld invalid skipped)\n",
               data.examples.size(), job.data.train.c_str(),
               static_cast<long long>(data.skipped_too_long),
               static_cast<long long>(data.skipped_invalid));
  SplitData split;
  if (!job.data.held_out.empty()) {
    split.train = std::move(data.examples);
    split.held_out = ReadJsonlExamples(job.data.held_out, tokenizer, read).examples;
  } else {
    split = SplitHeldOut(std::move(data.examples), job.data.held_out_fraction, job.seed);
  }
  if (!split.held_out.empty()) {
    std::fprintf(log, "train: %zu held-out examples\n", split.held_out.size());
  }
  Attributes identity = RunIdentity(job, max_length, split.train, split.held_out);
  if (job.lora) {
    identity["lora_rank"] = job.lora->rank;
    identity["lora_alpha"] = job.lora->alpha;
    identity["lora_targets"] = JoinTargets(*job.lora);
    identity["base_model_digest"] = ModelDigest(weights_source);
  }
  const std::string reference_path = job.dpo.reference.empty() ? job.model : job.dpo.reference;
  if (grpo) {
    const GrpoOptions& g = job.grpo;
    identity["grpo_group_size"] = g.group_size;
    identity["grpo_epochs"] = g.epochs;
    identity["grpo_clip"] = g.clip;
    identity["grpo_beta"] = g.beta;
    identity["grpo_kl"] = std::string(KlEstimatorName(g.kl));
    identity["grpo_loss_normalization"] = std::string(LossNormalizationName(g.normalization));
    identity["grpo_max_new_tokens"] = g.rollout.max_new_tokens;
    identity["grpo_reward"] = g.reward + ":" + g.reward_argument;
    if (!g.reward_model.empty()) {
      identity["grpo_reward_model_digest"] =
          ModelDigest(*Hdf5CheckpointReader::Open(g.reward_model));
    }
    if (g.beta > 0) {
      identity["grpo_reference_digest"] = ModelDigest(*Hdf5CheckpointReader::Open(job.model));
    }
  }
  if (reward_model) identity["reward_margin"] = job.reward_margin;
  if (dpo) {
    identity["dpo_loss"] =
        std::string(job.dpo.options.loss == PreferenceLoss::kIpo ? "ipo" : "dpo");
    identity["dpo_beta"] = job.dpo.options.beta;
    identity["dpo_label_smoothing"] = job.dpo.options.label_smoothing;
    identity["dpo_reference_digest"] = ModelDigest(*Hdf5CheckpointReader::Open(reference_path));
  }

  AdamW optimizer(job.optimizer);
  model->RegisterParameters(optimizer);
  if (job.zero_stage == 1 && dp.size() > 1) {
    dp.Shard(optimizer);
    std::fprintf(log, "train: ZeRO-1: optimizer state sharded over the %d ranks\n", dp.size());
  }
  // Data-parallel gradients summed while the backward runs, where the model group is one rank
  // (tensor parallelism sums replicated parameters' gradients after the backward) and the
  // optimizer state is whole.
  std::unique_ptr<OverlappedGradientSum> overlapped;
  if (dp.size() > 1 && tp == nullptr && !dp.sharded() && job.overlap_gradients) {
    overlapped = std::make_unique<OverlappedGradientSum>(groups.dp, optimizer);
  }
  const TrainableModel::LayerDone layer_done =
      overlapped ? TrainableModel::LayerDone(
                       [&](const std::string& prefix) { overlapped->LayerDone(prefix); })
                 : nullptr;
  TrainerState state;
  state.run_identity = identity;
  if (options.resume) {
    const TrainerState saved = ReadTrainerState(*reader);
    CheckSameRun(saved.run_identity, identity, start, job.source);
    RestoreOptimizerState(*reader, optimizer, [&](const std::string& name, const Tensor& whole) {
      return model->PartOf(name, whole);
    });
    state.step = saved.step;
    state.cursor = saved.cursor;
    state.tokens_seen = saved.tokens_seen;
    state.elapsed_s = saved.elapsed_s;
    GEMMAPOD_CHECK(state.step < job.steps, "resume: ", start, " is at step ", state.step,
                   " and the job runs ", job.steps, " steps; raise steps: in ", job.source,
                   " to train further");
    std::fprintf(log, "train: resuming from %s at step %lld\n", start.c_str(),
                 static_cast<long long>(state.step));
  }
  const std::string tokenizer_bytes = tokenizer.serialized();
  reader.reset();

  // Preference tuning: the frozen reference's log-probability of every sequence. A new run
  // starts from the reference, so the policy scores them before it trains; otherwise the
  // reference is loaded (and kept, without precomputing, to score each step's pairs).
  // This replica's held-out examples (copies: the reference scores these very ones).
  const std::vector<TrainingExample> held_out_share = ShareOf(split.held_out, dp);
  ReferenceLogProbs reference;
  std::unique_ptr<TrainableModel> reference_model;
  PreferenceStats preference_stats;  // of the step or evaluation running
  const bool mean_log_probs = MeanLogProbs(job.dpo.options);
  if (dpo) {
    const Clock::time_point begin = Clock::now();
    TrainableModel* scorer = model.get();
    if (options.resume || reference_path != job.model || !job.dpo.precompute_reference) {
      reference_model = LoadTrainableModel(*Hdf5CheckpointReader::Open(reference_path),
                                           job.weights_dtype == "bf16" ? DType::kBF16 : DType::kF32,
                                           ModelParallelism{tp, model_group, stages, stage});
      GEMMAPOD_CHECK(reference_model->vocab_size() == model->vocab_size() &&
                         reference_model->family() == model->family(),
                     job.source, ": dpo.reference ", reference_path, " is a ",
                     reference_model->family(), " of ", reference_model->vocab_size(),
                     " tokens and the model a ", model->family(), " of ", model->vocab_size());
      scorer = reference_model.get();
    }
    // Held-out pairs in the evaluation's batches: at step 0 the policy's log-probabilities are
    // then the reference's to the bit (a loss of exactly log 2 for DPO).
    ScoreSequences(*scorer, PairBatches(held_out_share, job.batch_sequences), mean_log_probs, pp,
                   DataParallel(nullptr), reference);
    if (job.dpo.precompute_reference) {
      ScoreSequences(*scorer, PairBatches(split.train, job.micro_batch), mean_log_probs, pp, dp,
                     reference);
      reference_model.reset();
    }
    std::fprintf(
        log, "train: reference log-probabilities of %zu pair(s) in %.1f s (%s)%s\n",
        job.dpo.precompute_reference ? split.train.size() + split.held_out.size()
                                     : split.held_out.size(),
        Seconds(begin), reference_path.c_str(),
        job.dpo.precompute_reference ? "" : "; the training pairs are scored at each step");
    model->SetObjective([&](const std::vector<const TrainingExample*>& rows) {
      return PreferenceObjective(rows, job.dpo.options, reference, &preference_stats);
    });
  }
  if (reward_model) {
    model->SetScoreObjective([&](const std::vector<const TrainingExample*>& rows) {
      return BradleyTerryObjective(rows, job.reward_margin, &preference_stats);
    });
    std::fprintf(log,
                 "train: reward model: a scoring head on each sequence's last token, "
                 "Bradley-Terry loss (margin %g)\n",
                 job.reward_margin);
  }
  // GRPO: the step's sampled answers (kept until its backward), what their tokens did, and the
  // frozen reference of the KL term (the job's model) when beta > 0.
  GrpoRollouts rollouts;
  PolicyStats policy_stats;
  std::unique_ptr<TrainableModel> grpo_reward_model;  // grpo.reward: model
  if (grpo && !job.grpo.reward_model.empty()) {
    grpo_reward_model = LoadTrainableModel(*Hdf5CheckpointReader::Open(job.grpo.reward_model),
                                           job.weights_dtype == "bf16" ? DType::kBF16 : DType::kF32,
                                           ModelParallelism{tp, model_group, stages, stage});
    GEMMAPOD_CHECK(grpo_reward_model->vocab_size() == model->vocab_size(), job.source,
                   ": grpo.reward_model ", job.grpo.reward_model, " reads a vocabulary of ",
                   grpo_reward_model->vocab_size(), " tokens and the model ", model->vocab_size());
  }
  if (grpo) {
    if (job.grpo.beta > 0) {
      reference_model = LoadTrainableModel(*Hdf5CheckpointReader::Open(job.model),
                                           job.weights_dtype == "bf16" ? DType::kBF16 : DType::kF32,
                                           ModelParallelism{tp, model_group, stages, stage});
    }
    model->SetObjective([&](const std::vector<const TrainingExample*>& rows) {
      return GrpoObjective(rows, job.grpo, rollouts.samples, &policy_stats);
    });
    std::fprintf(log,
                 "train: GRPO: %lld answers per prompt, up to %lld tokens each, reward %s, "
                 "%s-normalised loss%s\n",
                 static_cast<long long>(job.grpo.group_size),
                 static_cast<long long>(job.grpo.rollout.max_new_tokens), job.grpo.reward.c_str(),
                 LossNormalizationName(job.grpo.normalization),
                 job.grpo.beta > 0 ? StrCat(", KL ", KlEstimatorName(job.grpo.kl), " x ",
                                            job.grpo.beta, " against the model")
                                         .c_str()
                                   : "");
  }

  Metrics metrics;
  if (grpo) {
    metrics.train_key = "reward_mean";
    metrics.held_out_key = "held_out_reward";
  }
  if (speaker) OpenMetrics(dir, state.step, options.resume, metrics);
  BatchStream stream(split.train, job.seed, job.data.shuffle, job.data.packing, max_length,
                     state.cursor);
  TrainRunSummary summary;
  summary.first_step = state.step + 1;

  const auto evaluate = [&](int64_t step) {
    if (split.held_out.empty()) return;
    if (grpo) {  // greedy answers to the held-out prompts, rewarded
      const double total = dp.Sum(
          HeldOutReward(*model, grpo_reward_model.get(), tokenizer, job.grpo, held_out_share));
      const double mean = total / static_cast<double>(split.held_out.size());
      summary.held_out_reward = mean;
      metrics.held_out.push_back({step, mean});
      metrics.Append(
          {{"step", step}, {"held_out_reward", mean}, {"held_out_prompts", split.held_out.size()}});
      std::fprintf(log, "step %lld/%lld | held-out reward %.4f (greedy answers to %zu prompts)\n",
                   static_cast<long long>(step), static_cast<long long>(job.steps), mean,
                   split.held_out.size());
      std::fflush(log);
      return;
    }
    preference_stats = {};
    const LossSum held =
        dp.Sum(HeldOutLoss(*model, held_out_share, job.batch_sequences, pp, preference));
    summary.held_out_loss = held.mean();
    metrics.held_out.push_back({step, held.mean()});
    nlohmann::json line = {{"step", step},
                           {"held_out_loss", held.mean()},
                           {preference ? "held_out_pairs" : "held_out_tokens", held.targets}};
    std::string match;
    if (preference) {
      const PreferenceStats s = SumStats(preference_stats, pp, dp);
      summary.preference_accuracy = s.accuracy();
      line["held_out_preference_accuracy"] = s.accuracy();
      line["held_out_reward_margin"] = s.margin();
      line["held_out_ranking_accuracy"] = s.ranking_accuracy();
      match = StrCat(" | preference accuracy ", s.correct, "/", s.pairs, " (",
                     std::round(s.accuracy() * 1000) / 10, "%), reward margin ", s.margin(),
                     " | the model ranks ", s.ranked, "/", s.pairs, " (",
                     std::round(s.ranking_accuracy() * 1000) / 10, "%) right");
    }
    if (job.eval_exact_match) {
      const ExactMatch mine =
          model->HeldOutExactMatch(tokenizer, held_out_share, job.eval_max_new_tokens);
      const ExactMatch em{dp.Sum(mine.correct), dp.Sum(mine.total)};
      summary.exact_match = em.rate();
      line["held_out_exact_match"] = em.rate();
      line["held_out_answers"] = em.total;
      match = StrCat(" | exact match ", em.correct, "/", em.total, " (",
                     std::round(em.rate() * 1000) / 10, "%)");
    }
    metrics.Append(line);
    std::fprintf(log, "step %lld/%lld | held-out loss %.4f (%lld %s)%s\n",
                 static_cast<long long>(step), static_cast<long long>(job.steps), held.mean(),
                 static_cast<long long>(held.targets), preference ? "pairs" : "tokens",
                 match.c_str());
    std::fflush(log);
  };
  // The whole optimizer state of a parameter: from the replicas (ZeRO-1), then from the
  // tensor-parallel group. Called by the first replica's ranks.
  const std::vector<std::string> registered = optimizer.names();
  const std::set<std::string> held(registered.begin(), registered.end());
  const auto state_of = [&](const std::string& name, AdamWPart part) {
    // A parameter of another pipeline stage: all of it comes from that stage's ranks.
    return model->WholeOf(name,
                          held.count(name) > 0 ? dp.GatherState(optimizer, name, part) : Tensor());
  };
  const auto save = [&](int64_t step) {
    // Gathered whole tensors and their parts are made once: not kept for later steps.
    const HostBlockCacheSuspension one_off;
    dp.CheckReplicasAgree(optimizer);
    if (!dp.leader()) {
      dp.SendState(optimizer);  // sharded state: the first replica writes it as it receives it
      return;
    }
    if (!speaker) {  // the first replica's other tensor-parallel ranks: their parts to rank 0
      model->SendModel();
      for (const std::string& name : optimizer.names()) {
        for (const AdamWPart part : kAdamWParts) {
          model->SendPartOf(name, dp.GatherState(optimizer, name, part));
        }
      }
      return;
    }
    const Clock::time_point begin = Clock::now();
    const std::string path = TrainingCheckpointPath(dir, step);
    SaveProgress progress;
    if (step == options.kill_during_save_at_step) {
      progress = [](int64_t written) {
        if (written == 3) raise(SIGKILL);
      };
    }
    SaveTrainingCheckpoint(path, *model, tokenizer_bytes, optimizer, state, progress, state_of);
    PruneTrainingCheckpoints(dir, job.checkpoint.keep);
    WriteTextFileAtomically(
        (fs::path(dir) / (grpo ? kRewardCurveFile : kLossCurveFile)).string(),
        LossCurveSvg(metrics.train, metrics.held_out,
                     "gemmapod train: " + fs::path(job.source).filename().string(),
                     grpo ? "reward" : "loss"));
    // The peak so far includes the save's gathering (the plan's save_gather, and what the
    // libraries add to it).
    std::fprintf(log, "step %lld/%lld | saved %s (%.1f s; peak resident memory %lld MiB)\n",
                 static_cast<long long>(step), static_cast<long long>(job.steps), path.c_str(),
                 Seconds(begin), static_cast<long long>(PeakResidentMemoryBytes() >> 20));
  };

  if (!options.resume) evaluate(0);
  const Clock::time_point run_start = Clock::now();
  const int64_t first = state.step + 1;
  int64_t window_tokens = 0;
  Clock::time_point window_start = Clock::now();
  for (int64_t step = first; step <= job.steps; ++step) {
    const Clock::time_point step_start = Clock::now();
    std::vector<std::vector<const TrainingExample*>> rows;
    for (int64_t r = 0; r < job.batch_sequences; ++r) rows.push_back(stream.NextRow());
    // What the step's loss is a mean over: learned tokens, or preference pairs.
    int64_t targets = 0, tokens = 0;
    for (const auto& row : rows) {
      for (const TrainingExample* e : row) {
        tokens += static_cast<int64_t>(e->tokens.size());
        if (e->rejected) tokens += static_cast<int64_t>(e->rejected->tokens.size());
        targets += preference ? 1 : LearnedTargets(*e);
      }
    }
    GEMMAPOD_CHECK(targets > 0, "train: step ", step, " has no token to learn");
    LossSum loss;
    // This replica's micro-batches of the step (all of them on one rank); one with nothing to
    // learn is left out.
    std::vector<std::vector<const TrainingExample*>> micro_batches;
    const auto [first_micro, end_micro] = dp.Share(job.batch_sequences / job.micro_batch);
    for (int64_t begin = first_micro * job.micro_batch; begin < end_micro * job.micro_batch;
         begin += job.micro_batch) {
      std::vector<const TrainingExample*> micro;
      for (int64_t r = begin; r < begin + job.micro_batch; ++r) {
        micro.insert(micro.end(), rows[static_cast<size_t>(r)].begin(),
                     rows[static_cast<size_t>(r)].end());
      }
      if (preference) micro = PreferenceRows(micro);
      int64_t micro_targets = 0;
      for (const TrainingExample* e : micro) micro_targets += LearnedTargets(*e);
      if (micro_targets > 0) micro_batches.push_back(std::move(micro));
    }
    if (grpo) {  // the prompts' answers, sampled with the current weights, become the step's rows
      rollouts = RunGrpoRollouts(*model, reference_model.get(), grpo_reward_model.get(), tokenizer,
                                 job.grpo, micro_batches, first_micro * job.micro_batch,
                                 job.batch_sequences, job.seed, step, dp);
      micro_batches = rollouts.micro_batches;
      tokens = dp.Sum(rollouts.tokens);
      targets = 1;  // the answers' loss weights normalise the step already
    }
    policy_stats = {};
    double reference_s = -1;
    if (reference_model && dpo) {  // the frozen reference scores this step's pairs first
      const Clock::time_point begin = Clock::now();
      ScoreSequences(*reference_model, micro_batches, mean_log_probs, pp, DataParallel(nullptr),
                     reference);
      reference_s = Seconds(begin);
    }
    preference_stats = {};
    // GRPO's epochs are that many optimizer steps over the same answers, the generator's
    // log-probabilities staying the ratio's old policy (so the clip binds from the second); one
    // step otherwise.
    const int64_t updates = grpo ? job.grpo.epochs : 1;
    const double lr = job.schedule.At(step);
    double bubble = -1, grad_norm = 0, loss_total = 0, sampled_gap = 0;
    for (int64_t update = 0; update < updates; ++update) {
      loss = LossSum{};
      if (pp != nullptr && !micro_batches.empty()) {
        const TrainableModel::StageGradient gradient{1.0 / static_cast<double>(targets),
                                                     job.recompute};
        const Clock::time_point begin = Clock::now();
        const PipelineStepResult part =
            RunPipelineInstructions(StageInstructions(job.pipeline_schedule, stages, stage,
                                                      static_cast<int64_t>(micro_batches.size())),
                                    *pp, *model, micro_batches, &gradient, layer_done);
        // The share of the stages' time spent waiting: 1 - their busy time over stages x the
        // pipeline's wall time.
        const DataParallel pipeline(pp);
        const double busy = pipeline.Sum(part.busy_s), wall = pipeline.Sum(Seconds(begin));
        bubble = wall > 0 ? 1.0 - busy / wall : 0.0;
        loss = pipeline.Sum(part.loss);
      } else {
        for (size_t m = 0; m < micro_batches.size(); ++m) {
          // The last micro-batch's backward leaves each layer's gradients final as it goes.
          if (m + 1 == micro_batches.size()) model->SetLayerDone(layer_done);
          const LossSum part = model->LossAndGradients(
              micro_batches[m], 1.0 / static_cast<double>(targets), job.recompute);
          loss.sum += part.sum;
          loss.targets += part.targets;
        }
        model->SetLayerDone(nullptr);
      }
      model->SyncGradients();
      if (dp.sharded()) {
        dp.ReduceScatterGradients(optimizer);
      } else if (overlapped) {
        overlapped->Finish();
      } else {
        dp.SumGradients(optimizer);
      }
      loss = dp.Sum(loss);
      GEMMAPOD_CHECK(std::isfinite(loss.sum), "train: step ", step, ": the loss is ", loss.sum,
                     "; stopping before the weights take it (lower optimizer.lr?)");
      // GRPO's weights make the sum the step's loss; the other objectives are means.
      loss_total += grpo ? loss.sum : loss.mean();
      // The global norm: this rank's share, the replicas' shares (sharded state) and the model
      // group's (each shard's and stage's; a parameter held twice counted once), added in rank
      // order.
      double squares = optimizer.OwnedGradSquares();
      if (dp.sharded()) squares = dp.Sum(squares);
      if (model_group != nullptr) squares = DataParallel(model_group).Sum(squares);
      grad_norm = optimizer.Step(static_cast<float>(lr), job.max_grad_norm, std::sqrt(squares));
      if (dp.sharded()) dp.AllGatherUpdates(optimizer);
      optimizer.ZeroGrad();
      // The generator's record against the trainer's forward of the weights that sampled.
      if (update == 0) sampled_gap = policy_stats.ratio_gap;
    }
    const double step_loss = loss_total / static_cast<double>(updates);
    state.step = step;
    state.cursor = stream.cursor();
    state.tokens_seen += tokens;
    state.elapsed_s += Seconds(step_start);
    window_tokens += tokens;
    summary.last_step = step;
    summary.last_loss = step_loss;
    metrics.train.push_back({step, grpo ? rollouts.reward_mean : step_loss});
    nlohmann::json line = {{"step", step},
                           {"loss", step_loss},
                           {"lr", lr},
                           {"grad_norm", grad_norm},
                           {"tokens", tokens},
                           {"targets", loss.targets},
                           {"elapsed_s", state.elapsed_s}};
    if (bubble >= 0) line["pipeline_bubble"] = bubble;
    std::string preference_text;
    if (preference) {
      const PreferenceStats s = SumStats(preference_stats, pp, dp);
      line["preference_accuracy"] = s.accuracy();
      line["reward_margin"] = s.margin();
      line["ranking_accuracy"] = s.ranking_accuracy();
      line["chosen_reward"] = s.pairs > 0 ? s.chosen_reward / s.pairs : 0.0;
      line["rejected_reward"] = s.pairs > 0 ? s.rejected_reward / s.pairs : 0.0;
      if (reference_s >= 0) line["reference_s"] = reference_s;
      preference_text = StrCat(" | pref-acc ", std::round(s.accuracy() * 1000) / 10, "% | margin ",
                               std::round(s.margin() * 1000) / 1000);
    }
    if (grpo) {
      const std::vector<double> sums =
          dp.Sum(std::vector<double>{static_cast<double>(policy_stats.tokens),
                                     static_cast<double>(policy_stats.clipped), policy_stats.kl});
      const double answer_tokens = std::max(1.0, sums[0]);
      line["reward_mean"] = rollouts.reward_mean;
      line["reward_std"] = rollouts.reward_std;
      line["response_length"] = rollouts.length_mean;
      line["stopped"] = rollouts.stopped;
      line["entropy"] = rollouts.entropy_mean;
      line["clip_fraction"] = sums[1] / answer_tokens;
      if (job.grpo.beta > 0) line["kl"] = sums[2] / answer_tokens;
      // The trainer's recomputed log-probabilities against the generator's, over every token.
      line["logp_gap_max"] = dp.Max(sampled_gap);
      line["generation_s"] = rollouts.generation_s;
      if (job.grpo.beta > 0) line["reference_s"] = rollouts.reference_s;
      line["training_s"] = Seconds(step_start) - rollouts.generation_s - rollouts.reference_s;
      preference_text = StrCat(" | reward ", std::round(rollouts.reward_mean * 1000) / 1000, " +- ",
                               std::round(rollouts.reward_std * 1000) / 1000, " | len ",
                               std::round(rollouts.length_mean * 10) / 10, " | gen ",
                               std::round(rollouts.generation_s * 10) / 10, " s");
    }
    metrics.Append(line);
    if (step % job.log_interval == 0 || step == job.steps) {
      const double rate =
          static_cast<double>(window_tokens) / std::max(1e-9, Seconds(window_start));
      const double per_step = Seconds(run_start) / static_cast<double>(step - first + 1);
      std::fprintf(
          log, "step %lld/%lld | loss %.4f%s | lr %.3g | grad-norm %.3g | %.0f tok/s | eta %s\n",
          static_cast<long long>(step), static_cast<long long>(job.steps), step_loss,
          preference_text.c_str(), lr, grad_norm, rate,
          Duration(per_step * static_cast<double>(job.steps - step)).c_str());
      std::fflush(log);
      window_tokens = 0;
      window_start = Clock::now();
    }
    const bool checkpoint =
        step == job.steps || (job.checkpoint.interval > 0 && step % job.checkpoint.interval == 0);
    const bool eval =
        step == job.steps || checkpoint || (job.eval_interval > 0 && step % job.eval_interval == 0);
    const Clock::time_point pause = Clock::now();
    if (eval) evaluate(step);
    if (checkpoint) save(step);
    // Tokens/s counts training time only (the ETA, wall time, keeps evaluations and saves).
    window_start += Clock::now() - pause;
  }
  summary.exported_model = (fs::path(dir) / kExportedModelFile).string();
  const HostBlockCacheSuspension one_off;  // the export's gathered tensors
  if (dp.leader() && !speaker) model->SendModel();
  if (speaker) {
    Hdf5CheckpointWriter writer = Hdf5CheckpointWriter::Create(summary.exported_model);
    model->WriteModel(writer, nullptr);
    writer.WriteFile("tokenizer.model", tokenizer_bytes);
    writer.Commit();
  }
  std::fprintf(log, "train: done; the model is %s (gemmapod generate --model %s ...)\n",
               summary.exported_model.c_str(), summary.exported_model.c_str());
  return summary;
}

}  // namespace gemmapod
