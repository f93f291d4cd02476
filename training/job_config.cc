#include "training/job_config.h"

#include <filesystem>

#include "runtime/config/yaml_reader.h"
#include "runtime/error.h"
#include "training/rewards.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

// A path from the job file, made relative to the file's directory.
std::string PathFrom(const YamlValue& v, const fs::path& base) {
  const std::string text = v.AsString();
  if (text.empty()) v.Fail("expected a path, got an empty string");
  const fs::path p(text);
  return p.is_absolute() ? p.string() : (base / p).lexically_normal().string();
}

int64_t PositiveInt(const YamlValue& v, int64_t min) {
  const int64_t n = v.AsInt();
  if (n < min) v.Fail(StrCat("must be at least ", min, ", got ", n));
  return n;
}

double NumberIn(const YamlValue& v, double lo, double hi, bool hi_open) {
  const double x = v.AsNumber();
  if (x < lo || x > hi || (hi_open && x == hi)) {
    v.Fail(StrCat("must be in [", lo, ", ", hi, hi_open ? ")" : "]", ", got ", x));
  }
  return x;
}

void ReadData(const YamlValue& value, const fs::path& base, TrainingJob::Data& d) {
  const YamlMap map = value.AsMap({"train", "held_out", "held_out_fraction", "max_length",
                                   "too_long", "invalid", "shuffle", "packing"});
  d.train = PathFrom(map.Require("train"), base);
  if (auto v = map.Find("held_out")) d.held_out = PathFrom(*v, base);
  if (auto v = map.Find("held_out_fraction")) {
    d.held_out_fraction = NumberIn(*v, 0.0, 1.0, true);
    if (!d.held_out.empty()) {
      v->Fail("give held_out (a file) or held_out_fraction (a share of train), not both");
    }
  }
  if (auto v = map.Find("max_length")) d.max_length = PositiveInt(*v, 2);
  if (auto v = map.Find("too_long")) d.skip_too_long = v->AsChoice({"error", "skip"}) == "skip";
  if (auto v = map.Find("invalid")) d.skip_invalid = v->AsChoice({"error", "skip"}) == "skip";
  if (auto v = map.Find("shuffle")) d.shuffle = v->AsBool();
  if (auto v = map.Find("packing")) d.packing = v->AsBool();
}

void ReadOptimizer(const YamlValue& value, TrainingJob& job) {
  const YamlMap map =
      value.AsMap({"lr", "beta1", "beta2", "eps", "weight_decay", "max_grad_norm", "zero"});
  if (auto v = map.Find("lr")) {
    job.schedule.peak = v->AsNumber();
    if (job.schedule.peak <= 0 || job.schedule.peak > 1) {
      v->Fail(StrCat("must be in (0, 1], got ", job.schedule.peak));
    }
  }
  if (auto v = map.Find("beta1"))
    job.optimizer.beta1 = static_cast<float>(NumberIn(*v, 0, 1, true));
  if (auto v = map.Find("beta2"))
    job.optimizer.beta2 = static_cast<float>(NumberIn(*v, 0, 1, true));
  if (auto v = map.Find("eps")) {
    job.optimizer.eps = static_cast<float>(v->AsNumber());
    if (!(job.optimizer.eps > 0)) v->Fail("must be above 0");
  }
  if (auto v = map.Find("weight_decay")) {
    job.optimizer.weight_decay = static_cast<float>(NumberIn(*v, 0, 1, false));
  }
  if (auto v = map.Find("zero")) {
    job.zero_stage = PositiveInt(*v, 0);
    if (job.zero_stage > 1) {
      v->Fail(StrCat("ZeRO stage ", job.zero_stage,
                     " is not built; 0 (replicated optimizer state) or 1 (sharded)"));
    }
  }
  if (auto v = map.Find("max_grad_norm")) {
    job.max_grad_norm = v->AsNumber();
    if (job.max_grad_norm < 0) v->Fail("must be 0 (no clipping) or above");
  }
}

void ReadSchedule(const YamlValue& value, LrSchedule& s) {
  const YamlMap map = value.AsMap({"warmup_steps", "decay", "min_lr_ratio"});
  if (auto v = map.Find("warmup_steps")) s.warmup_steps = PositiveInt(*v, 0);
  if (auto v = map.Find("decay")) {
    const std::string d = v->AsChoice({"cosine", "linear", "constant"});
    s.decay = d == "cosine"   ? LrSchedule::Decay::kCosine
              : d == "linear" ? LrSchedule::Decay::kLinear
                              : LrSchedule::Decay::kConstant;
  }
  if (auto v = map.Find("min_lr_ratio")) s.min_ratio = NumberIn(*v, 0, 1, false);
}

void ReadDpo(const YamlValue& value, const fs::path& base, TrainingJob::Dpo& dpo) {
  const YamlMap map =
      value.AsMap({"beta", "loss", "label_smoothing", "reference", "precompute_reference"});
  if (auto v = map.Find("beta")) {
    dpo.options.beta = v->AsNumber();
    if (!(dpo.options.beta > 0)) v->Fail("must be above 0");
  }
  if (auto v = map.Find("loss"))
    dpo.options.loss = ParsePreferenceLoss(v->AsChoice({"dpo", "ipo"}));
  if (auto v = map.Find("label_smoothing")) {
    dpo.options.label_smoothing = NumberIn(*v, 0, 0.5, true);
    if (dpo.options.loss != PreferenceLoss::kDpo && dpo.options.label_smoothing > 0) {
      v->Fail("label smoothing is DPO's (loss: dpo)");
    }
  }
  if (auto v = map.Find("reference")) dpo.reference = PathFrom(*v, base);
  if (auto v = map.Find("precompute_reference")) dpo.precompute_reference = v->AsBool();
}

void ReadGrpo(const YamlValue& value, const fs::path& base, GrpoOptions& grpo) {
  const YamlMap map =
      value.AsMap({"group_size", "epochs", "clip", "beta", "kl", "loss_normalization",
                   "max_new_tokens", "stop", "reward", "reward_argument", "reward_model"});
  if (auto v = map.Find("group_size")) grpo.group_size = PositiveInt(*v, 2);
  if (auto v = map.Find("epochs")) grpo.epochs = PositiveInt(*v, 1);
  if (auto v = map.Find("clip")) grpo.clip = NumberIn(*v, 0, 1, true);
  if (auto v = map.Find("beta")) {
    grpo.beta = v->AsNumber();
    if (grpo.beta < 0) v->Fail("must be 0 (no KL term) or above");
  }
  if (auto v = map.Find("kl")) grpo.kl = ParseKlEstimator(v->AsChoice({"k1", "k2", "k3"}));
  if (auto v = map.Find("loss_normalization")) {
    grpo.normalization = ParseLossNormalization(v->AsChoice({"sequence", "token", "constant"}));
  }
  if (auto v = map.Find("max_new_tokens")) grpo.rollout.max_new_tokens = PositiveInt(*v, 1);
  if (auto v = map.Find("stop")) {
    for (const YamlValue& item : v->AsList()) {
      grpo.rollout.stop_strings.push_back(item.AsString());
      if (grpo.rollout.stop_strings.back().empty()) item.Fail("a stop string cannot be empty");
    }
  }
  if (auto v = map.Find("reward")) {
    grpo.reward = v->AsString();
    try {
      if (grpo.reward != "model") FindReward(grpo.reward);
    } catch (const Error& e) {
      v->Fail(StrCat(e.what(), ", or model (a reward model's scores, grpo.reward_model)"));
    }
  }
  if (auto v = map.Find("reward_model")) {
    grpo.reward_model = PathFrom(*v, base);
    if (grpo.reward != "model") v->Fail("a reward model scores answers with reward: model");
  }
  if (grpo.reward == "model" && grpo.reward_model.empty()) {
    value.Fail("reward: model needs reward_model: (a checkpoint written by objective: reward)");
  }
  if (auto v = map.Find("reward_argument")) grpo.reward_argument = v->AsString();
  try {
    CheckRewardArgument(grpo.reward, grpo.reward_argument);
  } catch (const Error& e) {
    value.Fail(e.what());
  }
}

}  // namespace

TrainingJob ReadTrainingJob(const std::string& path) {
  const std::string text = ReadConfigText(path, "training job file");
  const YamlValue doc = ParseYamlDocument(text, path);
  const fs::path base = fs::path(path).parent_path();
  const YamlMap map = doc.AsMap({"model", "tokenizer", "weights", "data", "steps", "seed", "batch",
                                 "optimizer", "schedule", "checkpoint", "eval", "log", "lora",
                                 "recompute", "parallel", "objective", "dpo", "grpo", "reward"});
  TrainingJob job;
  job.source = path;
  job.model = PathFrom(map.Require("model"), base);
  if (auto v = map.Find("tokenizer")) job.tokenizer = PathFrom(*v, base);
  if (auto v = map.Find("weights")) job.weights_dtype = v->AsChoice({"f32", "bf16"});
  ReadData(map.Require("data"), base, job.data);
  const YamlValue steps = map.Require("steps");
  job.steps = PositiveInt(steps, 1);
  if (auto v = map.Find("seed")) job.seed = static_cast<uint64_t>(PositiveInt(*v, 0));
  if (auto v = map.Find("batch")) {
    const YamlMap batch = v->AsMap({"sequences", "micro_batch"});
    if (auto s = batch.Find("sequences")) job.batch_sequences = PositiveInt(*s, 1);
    if (auto m = batch.Find("micro_batch")) {
      job.micro_batch = PositiveInt(*m, 1);
      if (job.batch_sequences % job.micro_batch != 0) {
        m->Fail(StrCat("must divide batch.sequences (", job.batch_sequences, ")"));
      }
    }
  }
  if (job.micro_batch == 0) job.micro_batch = job.batch_sequences;
  if (auto v = map.Find("lora")) {
    const YamlMap lora = v->AsMap({"rank", "alpha", "targets"});
    LoraOptions options;
    if (auto r = lora.Find("rank")) options.rank = PositiveInt(*r, 1);
    if (auto a = lora.Find("alpha")) {
      options.alpha = a->AsNumber();
      if (options.alpha <= 0) a->Fail("must be above 0");
    }
    if (auto t = lora.Find("targets")) {
      options.targets.clear();
      for (const YamlValue& item : t->AsList()) options.targets.push_back(item.AsString());
      try {
        ValidateLoraTargets(options.targets);
      } catch (const Error& e) {
        std::string message = e.what();
        const std::string prefix = "lora.targets: ";
        if (message.rfind(prefix, 0) == 0) message = message.substr(prefix.size());
        t->Fail(message);
      }
    }
    job.lora = options;
  }
  if (auto v = map.Find("recompute")) job.recompute = v->AsBool();
  if (auto v = map.Find("parallel")) {
    const YamlMap parallel = v->AsMap({"tp", "pp", "schedule", "overlap"});
    if (auto tp = parallel.Find("tp")) job.tensor_parallel = PositiveInt(*tp, 1);
    if (auto pp = parallel.Find("pp")) job.pipeline_parallel = PositiveInt(*pp, 1);
    if (auto schedule = parallel.Find("schedule")) {
      ParsePipelineSchedule(schedule->AsChoice({"1f1b", "gpipe"}), job.pipeline_schedule);
    }
    if (auto overlap = parallel.Find("overlap")) job.overlap_gradients = overlap->AsBool();
  }
  if (auto v = map.Find("optimizer")) ReadOptimizer(*v, job);
  if (auto v = map.Find("schedule")) ReadSchedule(*v, job.schedule);
  job.schedule.total_steps = job.steps;
  if (job.schedule.warmup_steps > job.steps) {
    map.Find("schedule")
        ->Fail(StrCat("warmup_steps (", job.schedule.warmup_steps,
                      ") is longer than the run (steps: ", job.steps, ")"));
  }
  const YamlMap ckpt = map.Require("checkpoint").AsMap({"dir", "interval", "keep"});
  job.checkpoint.dir = PathFrom(ckpt.Require("dir"), base);
  if (auto v = ckpt.Find("interval")) job.checkpoint.interval = PositiveInt(*v, 0);
  if (auto v = ckpt.Find("keep")) job.checkpoint.keep = PositiveInt(*v, 1);
  if (auto v = map.Find("eval")) {
    const YamlMap eval = v->AsMap({"interval", "exact_match", "max_new_tokens"});
    if (auto i = eval.Find("interval")) job.eval_interval = PositiveInt(*i, 0);
    if (auto e = eval.Find("exact_match")) job.eval_exact_match = e->AsBool();
    if (auto m = eval.Find("max_new_tokens")) job.eval_max_new_tokens = PositiveInt(*m, 1);
  }
  if (auto v = map.Find("log")) {
    const YamlMap log = v->AsMap({"interval"});
    if (auto i = log.Find("interval")) job.log_interval = PositiveInt(*i, 1);
  }
  if (auto v = map.Find("objective")) {
    const std::string objective = v->AsChoice({"sft", "dpo", "grpo", "reward"});
    job.objective = objective == "dpo"      ? TrainingJob::Objective::kDpo
                    : objective == "grpo"   ? TrainingJob::Objective::kGrpo
                    : objective == "reward" ? TrainingJob::Objective::kReward
                                            : TrainingJob::Objective::kSft;
  }
  // Each objective's settings, which only it reads, and what its rows rule out.
  const auto settings = [&](const char* key, TrainingJob::Objective objective, const auto& read) {
    if (auto v = map.Find(key)) {
      if (job.objective != objective)
        v->Fail(StrCat("the ", key, ": settings need objective: ", key));
      read(*v);
    }
    if (job.objective != objective) return;
    if (job.data.packing) {
      map.Require("data").Fail(StrCat(
          "packing: true does not apply to objective: ", key, " (each row is ",
          objective == TrainingJob::Objective::kDpo ? "a chosen/rejected pair)" : "a prompt)"));
    }
    if (job.eval_exact_match) {
      map.Require("eval").Fail(StrCat("exact_match does not apply to objective: ", key, " (",
                                      objective == TrainingJob::Objective::kGrpo
                                          ? "the held-out mean reward of greedy answers"
                                          : "the held-out preference accuracy",
                                      " is reported)"));
    }
  };
  settings("dpo", TrainingJob::Objective::kDpo,
           [&](const YamlValue& v) { ReadDpo(v, base, job.dpo); });
  settings("grpo", TrainingJob::Objective::kGrpo,
           [&](const YamlValue& v) { ReadGrpo(v, base, job.grpo); });
  settings("reward", TrainingJob::Objective::kReward, [&](const YamlValue& v) {
    const YamlMap reward = v.AsMap({"margin"});
    if (auto m = reward.Find("margin")) job.reward_margin = m->AsNumber();
  });
  if (job.objective == TrainingJob::Objective::kGrpo) {
    job.grpo.rollout.sampling.temperature = 1.0f;  // sampling from the policy itself
  }
  if (job.objective == TrainingJob::Objective::kReward && job.lora) {
    map.Require("lora").Fail(
        "a reward model's scoring head trains in full (adapters would leave it at zero); remove "
        "lora: or train with another objective");
  }
  job.schedule.Validate();
  return job;
}

}  // namespace gemmapod
