// convert, logits, tokenize, random-checkpoint: the model subcommands besides generate. logits
// runs on every rank of the job, sharded by the pod file.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>

#include "launch/commands.h"
#include "launch/engine_commands.h"
#include "launch/families.h"
#include "launch/model_files.h"
#include "launch/rank_runner.h"
#include "launch/recurrent_commands.h"
#include "launch/sharded_model.h"
#include "launch/t5gemma_commands.h"
#include "models/gemma/gemma_checkpoint.h"
#include "models/gemma/gemma_random.h"
#include "models/import/convert.h"
#include "models/recurrent_gemma/recurrent_gemma_config.h"
#include "models/recurrent_gemma/recurrent_gemma_weights.h"
#include "models/t5gemma/t5gemma.h"
#include "models/t5gemma/t5gemma_random.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "runtime/tokenizer/tokenizer.h"

namespace gemmapod {

std::vector<int32_t> ParseTokenList(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  int index = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    GEMMAPOD_CHECK(!item.empty() && end == item.c_str() + item.size() && errno == 0 && v >= 0 &&
                       v <= INT32_MAX,
                   "--tokens: entry ", index, " ('", item,
                   "') is not a token id; expected comma-separated non-negative integers");
    ids.push_back(static_cast<int32_t>(v));
    ++index;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

std::vector<std::vector<int32_t>> ParseTokenBatch(const std::vector<std::string>& lists,
                                                  int64_t vocab_size, int64_t max_tokens) {
  std::vector<std::vector<int32_t>> sequences;
  for (size_t s = 0; s < lists.size(); ++s) {
    const std::string which = lists.size() > 1 ? StrCat("--tokens #", s + 1, ": ") : "";
    try {
      sequences.push_back(ParseTokenList(lists[s]));
    } catch (const Error& e) {
      throw Error(which + e.what());
    }
    const std::vector<int32_t>& tokens = sequences.back();
    const int64_t n = static_cast<int64_t>(tokens.size());
    GEMMAPOD_CHECK(n == static_cast<int64_t>(sequences.front().size()), which, n,
                   " tokens, but the first sequence has ", sequences.front().size(),
                   " (a batch's sequences have one length)");
    GEMMAPOD_CHECK(n <= max_tokens, which, "--tokens: ", n,
                   " tokens exceed the model's context of ", max_tokens);
    for (size_t i = 0; i < tokens.size(); ++i) {
      GEMMAPOD_CHECK(tokens[i] < vocab_size, which, "--tokens: entry ", i, " (", tokens[i],
                     ") is outside the vocabulary of ", vocab_size);
    }
  }
  return sequences;
}

int RunConvert(const ConvertCommandOptions& o) {
  GEMMAPOD_CHECK(o.max_shard_mib > 0, "--max-shard-mib must be positive");
  ConvertOptions options;
  options.dtype = o.dtype;
  options.quantize = o.quantize;
  options.config_path = o.config_path;
  options.max_shard_bytes = o.max_shard_mib << 20;
  options.overwrite = o.force;
  const ConvertReport r = Convert(o.source, o.destination, options);
  std::printf("converted %s (%s): %lld tensors, %lld parameters, %.1f MiB%s -> %s\n",
              o.source.c_str(), r.model_type.c_str(), static_cast<long long>(r.tensors),
              static_cast<long long>(r.parameters), r.bytes_written / 1048576.0,
              r.tokenizer_copied ? ", tokenizer" : "", o.destination.c_str());
  return 0;
}

namespace {

int LogitsOnRanks(const LogitsOptions& o, Communicator& world) {
  const ModelFamily& family = FamilyOf(o.files.model_path);
  if (!family.encoder_decoder) {
    CheckOnEveryRank(world, [&] {
      GEMMAPOD_CHECK(o.encoder_tokens.empty(), "--encoder-tokens: ", o.files.model_path,
                     " is a decoder-only model; it takes --tokens alone");
    });
  }
  return family.logits(o, world);
}

}  // namespace

int LogitsGemmaOnRanks(const LogitsOptions& o, Communicator& world) {
  std::vector<std::vector<int32_t>> sequences;
  ShardedGemmaPlan plan;
  int dp = 1;
  CheckOnEveryRank(world, [&] {
    const ModelConfig config = ReadCheckpointModel(o.files.model_path).config;
    sequences = ParseTokenBatch(o.tokens, config.vocab_size, config.max_position_embeddings);
    std::optional<PodTopology> pod = LoadPodIfGiven(o.pod_path);
    dp = pod ? pod->dp : 1;
    const int64_t per_replica = (static_cast<int64_t>(sequences.size()) + dp - 1) / dp;
    plan = PlanShardedGemma(world.size(), std::move(pod), o.files, per_replica,
                            static_cast<int64_t>(sequences.front().size()), config.vocab_size);
  });
  if (world.rank() == 0)
    std::fputs(HostComputeNotice(plan.pod ? &*plan.pod : nullptr).c_str(), stderr);
  ShardedRun run = LoadShardedGemma(world, plan, o.files);
  return LogitsOnEngine(o, world, sequences, run);
}

int RunLogits(const LogitsOptions& options, int* argc, char*** argv) {
  return RunOnRanks(argc, argv, [&](Communicator& world) { return LogitsOnRanks(options, world); });
}

namespace {

std::optional<std::string> TokenizerToEmbed(const RandomCheckpointOptions& o) {
  if (o.tokenizer_path.empty()) return std::nullopt;
  return Tokenizer::FromFile(o.tokenizer_path).serialized();
}

DType RandomDType(const RandomCheckpointOptions& o) {
  return o.dtype == "bf16" ? DType::kBF16 : DType::kF32;
}

}  // namespace

RandomCheckpointReport RandomGemmaCheckpoint(const RandomCheckpointOptions& o) {
  const ModelConfig config = LoadModelConfigYaml(o.config_path);
  GemmaWeights weights = RandomGemmaWeights(config, RandomDType(o), o.seed);
  SaveGemmaCheckpoint(o.out, config, weights, TokenizerToEmbed(o));
  return {config.name, config.ParameterCount()};
}

RandomCheckpointReport RandomT5GemmaCheckpoint(const RandomCheckpointOptions& o) {
  const T5GemmaConfig config = LoadT5GemmaConfigYaml(o.config_path);
  T5GemmaWeights weights = RandomT5GemmaWeights(config, RandomDType(o), o.seed);
  SaveT5GemmaCheckpoint(o.out, config, weights, TokenizerToEmbed(o));
  return {config.name, config.ParameterCount()};
}

RandomCheckpointReport RandomRecurrentGemmaCheckpoint(const RandomCheckpointOptions& o) {
  const RecurrentGemmaConfig config = LoadRecurrentGemmaConfigYaml(o.config_path);
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  Hdf5CheckpointWriter writer = Hdf5CheckpointWriter::Create(o.out);
  writer.SetConfig(ToAttributes(config));
  for (const RecurrentGemmaParameter& p : RecurrentGemmaParameters(config)) {
    Tensor t = Tensor::Empty(p.shape, DType::kF32);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
    writer.Write(p.name, IsRecurrentGemmaMatrix(p) ? t.To(RandomDType(o)) : t);
  }
  if (const std::optional<std::string> tokenizer = TokenizerToEmbed(o)) {
    writer.WriteFile("tokenizer.model", *tokenizer);
  }
  writer.Commit();
  return {config.name, config.ParameterCount()};
}

int RunRandomCheckpoint(const RandomCheckpointOptions& o) {
  GEMMAPOD_CHECK(o.dtype == "bf16" || o.dtype == "f32", "--dtype must be bf16 or f32, got '",
                 o.dtype, "'");
  GEMMAPOD_CHECK(o.force || !std::filesystem::exists(o.out), o.out,
                 " exists; pass --force to replace it");
  const ModelFamily& family = FamilyOf(o.config_path);
  GEMMAPOD_CHECK(family.random_checkpoint != nullptr, "random-checkpoint: ", o.config_path,
                 " is a ", family.name, " config, which has no random checkpoint");
  const RandomCheckpointReport r = family.random_checkpoint(o);
  std::printf("wrote %s: %s with RANDOM weights (seed %llu, %s, %lld parameters)%s\n",
              o.out.c_str(), r.name.c_str(), static_cast<unsigned long long>(o.seed),
              o.dtype.c_str(), static_cast<long long>(r.parameters),
              o.tokenizer_path.empty() ? "" : ", tokenizer embedded");
  return 0;
}

int RunTokenize(const TokenizeOptions& o) {
  const Tokenizer tokenizer = LoadTokenizer(o.files);
  const std::vector<int32_t> ids = tokenizer.Encode(o.text, !o.no_bos);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) line += ',';
    line += std::to_string(ids[i]);
  }
  std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace gemmapod
