// `gemmapod generate`: every rank of the job runs it, sharded by the pod file. Rank 0 streams one
// prompt's text, or prints a batch's texts in prompt order, gathered from the data-parallel
// replicas.
#include <algorithm>
#include <cstdio>
#include <optional>

#include "launch/commands.h"
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
namespace {}  // namespace

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

namespace {

// Replica r's results reach world rank 0 as the texts' lengths, then their bytes.
void SendTexts(Communicator& world, const std::vector<GenerationResult>& results) {
  Tensor lengths = Tensor::Empty({static_cast<int64_t>(results.size())}, DType::kI32);
  std::string bytes;
  for (size_t i = 0; i < results.size(); ++i) {
    lengths.data<int32_t>()[i] = static_cast<int32_t>(results[i].text.size());
    bytes += results[i].text;
  }
  world.Send(lengths, 0, 1);
  if (!bytes.empty()) {
    world.Send(Tensor::Borrow(bytes.data(), {static_cast<int64_t>(bytes.size())}, DType::kI8), 0,
               2);
  }
}

std::vector<std::string> ReceiveTexts(Communicator& world, int from, size_t count) {
  Tensor lengths = Tensor::Empty({static_cast<int64_t>(count)}, DType::kI32);
  world.Recv(lengths, from, 1);
  int64_t total = 0;
  for (size_t i = 0; i < count; ++i) total += lengths.data<int32_t>()[i];
  std::string bytes(static_cast<size_t>(total), '\0');
  if (total > 0) {
    Tensor view = Tensor::Borrow(bytes.data(), {total}, DType::kI8);
    world.Recv(view, from, 2);
  }
  std::vector<std::string> texts;
  size_t at = 0;
  for (size_t i = 0; i < count; ++i) {
    const size_t n = static_cast<size_t>(lengths.data<int32_t>()[i]);
    texts.push_back(bytes.substr(at, n));
    at += n;
  }
  return texts;
}

int GenerateOnRanks(const GenerateOptions& o, Communicator& world) {
  if (IsRecurrentGemmaCheckpoint(o.files.model_path)) return GenerateRecurrentOnRanks(o, world);
  if (IsT5GemmaCheckpoint(o.files.model_path)) return GenerateT5GemmaOnRanks(o, world);
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
    const int dp = o.pod_path.empty() ? 1 : LoadPodTopology(o.pod_path).dp;
    const int64_t per_replica = (static_cast<int64_t>(requests.size()) + dp - 1) / dp;
    const int64_t sampled = std::min<int64_t>(model.config.vocab_size, tokenizer->vocab_size());
    plan = PlanShardedGemma(world.size(), o.pod_path, o.files, std::max<int64_t>(per_replica, 1),
                            context, sampled);
  });
  const int dp = plan.pod ? plan.pod->dp : 1;
  if (world.rank() == 0)
    std::fputs(HostComputeNotice(plan.pod ? &*plan.pod : nullptr).c_str(), stderr);
  ShardedGemma run = LoadShardedGemma(world, plan, o.files);

  PipelineEngine& pipeline = *run.pipeline;
  if (!pipeline.is_driver()) {
    pipeline.Serve();
    return 0;
  }
  // Replica r takes prompts r, r + dp, r + 2 dp, ...
  const GridCoords at = run.grid->coords();
  std::vector<GenerationRequest> mine;
  for (size_t i = static_cast<size_t>(at.dp); i < requests.size(); i += static_cast<size_t>(dp)) {
    mine.push_back(requests[i]);
  }
  const bool streams = world.rank() == 0 && requests.size() == 1;
  const std::vector<GenerationResult> results =
      GeneratePipelined(pipeline, *tokenizer, mine, [&](size_t, std::string_view text) {
        if (!streams) return;
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      });
  if (world.rank() != 0) {
    // The first rank of another replica reports to rank 0 (one prompt streamed there already).
    if (at.tp == 0 && requests.size() > 1) SendTexts(world, results);
    return 0;
  }
  if (streams) {
    std::printf("\n");
  } else {
    // Gather every replica's texts and print them in prompt order.
    std::vector<std::vector<std::string>> texts(static_cast<size_t>(dp));
    for (const GenerationResult& r : results) texts[0].push_back(r.text);
    for (int r = 1; r < dp; ++r) {
      const size_t count = (requests.size() - static_cast<size_t>(r) + dp - 1) / dp;
      texts[static_cast<size_t>(r)] =
          ReceiveTexts(world, run.grid->shape().RankOf({r, 0, 0}), count);
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      std::printf("--- prompt %zu ---\n%s\n", i,
                  texts[i % static_cast<size_t>(dp)][i / static_cast<size_t>(dp)].c_str());
    }
  }
  std::fflush(stdout);  // the statistics go to stderr: keep them after the text
  if (o.stats) {
    for (size_t i = 0; i < results.size(); ++i) {
      const GenerationResult& r = results[i];
      const double decode_rate = r.decode_seconds > 0 && r.tokens.size() > 1
                                     ? static_cast<double>(r.tokens.size() - 1) / r.decode_seconds
                                     : 0.0;
      // Rank 0 times the prompts of its own replica: prompts 0, dp, 2 dp, ...
      const std::string which =
          requests.size() > 1 ? StrCat("[prompt ", i * static_cast<size_t>(dp), "] ") : "";
      std::fprintf(stderr,
                   "%sprompt %zu tokens in %.3f s; generated %zu tokens in %.3f s (%.1f "
                   "tokens/s); finish: %s; %s over %d rank(s)\n",
                   which.c_str(), mine[i].prompt.size(), r.prefill_seconds, r.tokens.size(),
                   r.decode_seconds, decode_rate, FinishReasonName(r.finish),
                   LayoutName(*run.grid).c_str(), world.size());
    }
  }
  return 0;
}

}  // namespace

int RunGenerate(const GenerateOptions& options, int* argc, char*** argv) {
  return RunOnRanks(argc, argv,
                    [&](Communicator& world) { return GenerateOnRanks(options, world); });
}

}  // namespace gemmapod
