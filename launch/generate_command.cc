// `gemmapod generate`: every rank of the job runs it, sharded by the pod file. Rank 0 streams one
// prompt's text, or prints a batch's texts in prompt order, gathered from the data-parallel
// replicas.
#include <algorithm>
#include <cstdio>
#include <optional>

#include "launch/commands.h"
#include "launch/engine_commands.h"
#include "launch/families.h"
#include "launch/model_files.h"
#include "launch/rank_runner.h"
#include "launch/recurrent_commands.h"
#include "launch/sharded_model.h"
#include "launch/t5gemma_commands.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "runtime/tokenizer/chat_template.h"
#include "serving/engine/generate.h"
#include "serving/generator.h"

namespace gemmapod {

GenerationRequest BuildGenerationRequest(const GenerateOptions& o, const std::string& prompt,
                                         const Tokenizer& tokenizer, int32_t eos_id) {
  GenerationRequest request;
  if (o.chat) {
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", prompt});
    request.prompt = EncodeGemmaChat(tokenizer, messages, /*add_generation_prompt=*/true);
    request.stop_tokens = GemmaStopTokens(tokenizer);
  } else {
    GEMMAPOD_CHECK(o.system.empty(), "--system needs --chat");
    request.prompt = tokenizer.Encode(prompt, /*add_bos=*/true);
    request.stop_tokens = {eos_id};
  }
  request.max_new_tokens = o.max_tokens;
  request.sampling.temperature = o.temperature;
  request.sampling.top_k = o.top_k;
  request.sampling.top_p = o.top_p;
  request.sampling.min_p = o.min_p;
  request.sampling.repetition_penalty = o.repetition_penalty;
  request.sampling.seed = o.seed;
  request.stop_strings = o.stop;
  return request;
}

int GenerateGemmaOnRanks(const GenerateOptions& o, Communicator& world) {
  // Every rank reads the tokenizer and builds the same requests: the first stage feeds the
  // prompts, and the last stage samples only the tokenizer's ids. Bad input is reported once.
  std::optional<Tokenizer> tokenizer;
  std::vector<GenerationRequest> requests;
  ShardedGemmaPlan plan;
  CheckOnEveryRank(world, [&] {
    tokenizer = LoadTokenizer(o.files);
    const CheckpointModel model = ReadCheckpointModel(o.files.model_path);
    CheckTokenizerFits(*tokenizer, model.config, o.files);
    int64_t context = 0;
    for (const std::string& prompt : o.prompts) {
      requests.push_back(BuildGenerationRequest(o, prompt, *tokenizer, model.config.eos_id));
      CheckRequest(requests.back(), model.config);
      context = std::max<int64_t>(
          context, static_cast<int64_t>(requests.back().prompt.size()) + o.max_tokens);
    }
    std::optional<PodTopology> pod = LoadPodIfGiven(o.pod_path);
    const int dp = pod ? pod->dp : 1;
    const int64_t per_replica = (static_cast<int64_t>(requests.size()) + dp - 1) / dp;
    const int64_t sampled = std::min<int64_t>(model.config.vocab_size, tokenizer->vocab_size());
    plan = PlanShardedGemma(world.size(), std::move(pod), o.files,
                            std::max<int64_t>(per_replica, 1), context, sampled);
  });
  if (world.rank() == 0)
    std::fputs(HostComputeNotice(plan.pod ? &*plan.pod : nullptr).c_str(), stderr);
  ShardedRun run = LoadShardedGemma(world, plan, o.files);
  return GenerateOnEngine(o, world, *tokenizer, requests, run);
}

int RunGenerate(const GenerateOptions& options, int* argc, char*** argv) {
  return RunOnRanks(argc, argv, [&](Communicator& world) {
    CheckSameCheckpoint(world, options.files.model_path);
    return FamilyOf(options.files.model_path).generate(options, world);
  });
}

}  // namespace gemmapod
