#include "launch/t5gemma_commands.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "launch/engine_commands.h"
#include "launch/model_files.h"
#include "launch/rank_runner.h"
#include "launch/recurrent_commands.h"
#include "launch/sharded_model.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "serving/t5gemma_pipeline.h"
#include "sharding/pod_topology.h"

namespace gemmapod {
namespace {

// Checks on every rank before any collective, so bad input is reported once.
T5GemmaLayout CheckT5GemmaJob(Communicator& world, const ModelFiles& files,
                              const std::string& pod_path, T5GemmaConfig& config) {
  ParsePrecision(files);
  config = T5GemmaFromAttributes(Hdf5CheckpointReader::Open(files.model_path)->config(),
                                 files.model_path);
  std::optional<PodTopology> pod;
  if (!pod_path.empty()) pod = LoadPodTopology(pod_path);
  T5GemmaLayout layout = pod ? T5GemmaLayoutFromPod(*pod, config)
                             : MakeT5GemmaLayout(config, world.size(), 0, world.size(), 1);
  if (world.rank() == 0) std::fputs(HostComputeNotice(pod ? &*pod : nullptr).c_str(), stderr);
  GEMMAPOD_CHECK(layout.world_size() == world.size(), "the layout (", layout.Describe(), ") needs ",
                 layout.world_size(), " ranks, the job has ", world.size());
  return layout;
}

void CheckIds(const std::vector<int32_t>& ids, int64_t vocab, const std::string& what) {
  for (size_t i = 0; i < ids.size(); ++i) {
    GEMMAPOD_CHECK(ids[i] >= 0 && ids[i] < vocab, what, ": entry ", i, " (", ids[i],
                   ") is outside the vocabulary of ", vocab);
  }
}

}  // namespace

bool IsT5GemmaCheckpoint(const std::string& path) {
  try {
    return IsT5GemmaAttributes(Hdf5CheckpointReader::Open(path)->config());
  } catch (const Error&) {
    return false;
  }
}

bool IsT5GemmaModel(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".yaml" || ext == ".yml" ? IsT5GemmaYaml(path) : IsT5GemmaCheckpoint(path);
}

int GenerateT5GemmaOnRanks(const GenerateOptions& o, Communicator& world) {
  std::optional<Tokenizer> tokenizer;
  std::vector<GenerationRequest> requests;
  std::vector<std::vector<int32_t>> prompts;
  T5GemmaConfig config;
  std::optional<T5GemmaLayout> layout;
  CheckOnEveryRank(world, [&] {
    tokenizer = LoadTokenizer(o.files);
    layout = CheckT5GemmaJob(world, o.files, o.pod_path, config);
    CheckTokenizerFits(*tokenizer, config.decoder, o.files);
    CheckTokenizerFits(*tokenizer, config.encoder, o.files);
    for (const std::string& prompt : o.prompts) {
      // The prompt (chat-templated) is the encoder's input; the decoder's context starts at BOS.
      GenerationRequest request =
          BuildGenerationRequest(o, prompt, *tokenizer, config.decoder.eos_id);
      GEMMAPOD_CHECK(
          static_cast<int64_t>(request.prompt.size()) <= config.encoder.max_position_embeddings,
          "generate: the prompt has ", request.prompt.size(),
          " tokens, more than the encoder's max_position_embeddings ",
          config.encoder.max_position_embeddings);
      prompts.push_back(request.prompt);
      request.prompt = {config.decoder.bos_id};
      CheckRequest(request, config.decoder);
      requests.push_back(std::move(request));
    }
  });
  const int64_t sampled = std::min<int64_t>(config.decoder.vocab_size, tokenizer->vocab_size());
  const size_t B = requests.size();
  int64_t longest = 1;
  for (const GenerationRequest& request : requests) {
    longest = std::max<int64_t>(longest, 1 + request.max_new_tokens);
  }
  T5GemmaPipeline pipeline(world, *layout, config, *Hdf5CheckpointReader::Open(o.files.model_path),
                           static_cast<int64_t>(B), longest, PipelineOptions{sampled});
  pipeline.set_matmul_precision(ParsePrecision(o.files));
  using Clock = std::chrono::steady_clock;
  // The prompts are encoded together; then the decoder stages generate them through the engine,
  // as micro-batches in flight, with tokens sampled on the vocabulary shards. One prompt streams
  // its text when rank 0 drives the decoder; otherwise the driver sends the texts to rank 0.
  const auto t0 = Clock::now();
  pipeline.Encode(prompts);
  const auto t1 = Clock::now();
  const int driver = pipeline.driver_rank();
  const bool stream = B == 1 && driver == 0;
  const std::vector<GenerationResult> results =
      pipeline.Generate(*tokenizer, requests, [&](size_t, std::string_view text) {
        if (!stream || world.rank() != 0) return;
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      });
  const auto t2 = Clock::now();
  if (driver != 0 && world.rank() == driver) SendTexts(world, results);
  if (world.rank() != 0) return 0;
  std::vector<std::string> texts;
  for (const GenerationResult& r : results) texts.push_back(r.text);
  if (driver != 0) texts = ReceiveTexts(world, driver, B);
  for (size_t b = 0; b < B; ++b) {
    if (B > 1) std::printf("--- prompt %zu ---\n", b);
    if (!stream) std::fputs(texts[b].c_str(), stdout);
    std::printf("\n");
  }
  std::fflush(stdout);
  if (o.stats) {
    size_t generated = 0;
    for (const GenerationResult& r : results) generated += r.tokens.size();
    const double decode = std::chrono::duration<double>(t2 - t1).count();
    std::fprintf(
        stderr, "%zu prompt(s) encoded in %.3f s; decoded in %.3f s (%s); %s over %d rank(s)\n", B,
        std::chrono::duration<double>(t1 - t0).count(), decode,
        results.empty()
            ? "token counts are on the driver rank"
            : StrCat(generated, " tokens, ", generated / std::max(decode, 1e-9), " tokens/s")
                  .c_str(),
        pipeline.layout().Describe().c_str(), world.size());
  }
  return 0;
}

int LogitsT5GemmaOnRanks(const LogitsOptions& o, Communicator& world) {
  std::vector<std::vector<int32_t>> encoder, decoder;
  T5GemmaConfig config;
  std::optional<T5GemmaLayout> layout;
  CheckOnEveryRank(world, [&] {
    layout = CheckT5GemmaJob(world, o.files, o.pod_path, config);
    GEMMAPOD_CHECK(!o.encoder_tokens.empty(), o.files.model_path,
                   " is an encoder-decoder model (T5Gemma): give the encoder's ids with "
                   "--encoder-tokens and the decoder's (from BOS) with --tokens");
    GEMMAPOD_CHECK(o.encoder_tokens.size() == o.tokens.size(), "logits: ", o.encoder_tokens.size(),
                   " --encoder-tokens sequence(s) for ", o.tokens.size(),
                   " --tokens sequence(s); give one of each per sequence");
    for (size_t s = 0; s < o.tokens.size(); ++s) {
      const std::string which = o.tokens.size() > 1 ? StrCat(" #", s + 1) : "";
      encoder.push_back(ParseTokenList(o.encoder_tokens[s]));
      CheckIds(encoder.back(), config.encoder.vocab_size, "--encoder-tokens" + which);
      GEMMAPOD_CHECK(
          static_cast<int64_t>(encoder.back().size()) <= config.encoder.max_position_embeddings,
          "--encoder-tokens", which, ": ", encoder.back().size(),
          " ids, more than the encoder's max_position_embeddings ",
          config.encoder.max_position_embeddings);
      decoder.push_back(ParseTokenList(o.tokens[s]));
      CheckIds(decoder.back(), config.decoder.vocab_size, "--tokens" + which);
      GEMMAPOD_CHECK(decoder.back().front() == config.decoder.bos_id, "--tokens", which,
                     ": the decoder's ids must start with BOS (", config.decoder.bos_id,
                     "), as the decoder always starts from it; got ", decoder.back().front());
      GEMMAPOD_CHECK(decoder.back().size() == decoder.front().size(), "--tokens", which, ": ",
                     decoder.back().size(), " ids, but the first sequence has ",
                     decoder.front().size(), "; a batch's decoder sequences share one length");
      GEMMAPOD_CHECK(
          static_cast<int64_t>(decoder.back().size()) <= config.decoder.max_position_embeddings,
          "--tokens", which, ": longer than the decoder's max_position_embeddings");
    }
  });
  const int64_t B = static_cast<int64_t>(decoder.size());
  const int64_t T = static_cast<int64_t>(decoder.front().size());
  T5GemmaPipeline pipeline(world, *layout, config, *Hdf5CheckpointReader::Open(o.files.model_path),
                           B, T);
  pipeline.set_matmul_precision(ParsePrecision(o.files));
  pipeline.Encode(encoder);
  std::vector<SequenceChunk> chunks;
  for (int64_t b = 0; b < B; ++b) chunks.push_back({b, decoder[static_cast<size_t>(b)]});
  Tensor logits = pipeline.Decode(chunks, true);
  if (world.rank() != 0) return 0;
  if (B > 1) logits = logits.Reshape({B, T, config.decoder.vocab_size});
  WriteNpy(o.out, logits);
  std::printf("wrote %s: f32 %s (%s, %d rank(s))\n", o.out.c_str(),
              ShapeToString(logits.shape()).c_str(), pipeline.layout().Describe().c_str(),
              world.size());
  return 0;
}

}  // namespace gemmapod
