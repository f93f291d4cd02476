// convert, generate, logits, tokenize: the one-rank model subcommands.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "launch/commands.h"
#include "models/convert.h"
#include "models/gemma_checkpoint.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/error.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"
#include "serving/generator.h"

namespace gemmapod {
namespace {

Tokenizer LoadTokenizer(const ModelFiles& files) {
  if (!files.tokenizer_path.empty()) return Tokenizer::FromFile(files.tokenizer_path);
  std::optional<std::string> embedded = ReadEmbeddedTokenizer(files.model_path);
  GEMMAPOD_CHECK(embedded.has_value(), files.model_path,
                 ": the checkpoint carries no tokenizer; pass --tokenizer tokenizer.model");
  return Tokenizer::FromBytes(std::move(*embedded), files.model_path + ":/files/tokenizer.model");
}

GemmaDecoder LoadModel(const ModelFiles& files) {
  GemmaDecoder model = LoadGemmaCheckpoint(files.model_path);
  GEMMAPOD_CHECK(files.precision == "exact" || files.precision == "fast",
                 "--precision must be exact or fast, got '", files.precision, "'");
  model.set_matmul_precision(files.precision == "fast" ? cpu::MatmulPrecision::kFastBF16
                                                       : cpu::MatmulPrecision::kExact);
  return model;
}

void CheckTokenizerFits(const Tokenizer& tokenizer, const ModelConfig& config,
                        const ModelFiles& files) {
  GEMMAPOD_CHECK(tokenizer.vocab_size() <= config.vocab_size, "the tokenizer (",
                 files.tokenizer_path.empty() ? files.model_path : files.tokenizer_path, ") has ",
                 tokenizer.vocab_size(), " pieces but the model's vocabulary has ",
                 config.vocab_size);
}

}  // namespace

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

int RunConvert(const ConvertCommandOptions& o) {
  GEMMAPOD_CHECK(o.max_shard_mib > 0, "--max-shard-mib must be positive");
  ConvertOptions options;
  options.dtype = o.dtype;
  options.max_shard_bytes = o.max_shard_mib << 20;
  options.overwrite = o.force;
  const ConvertReport r = Convert(o.source, o.destination, options);
  std::printf("converted %s (%s): %lld tensors, %lld parameters, %.1f MiB%s -> %s\n",
              o.source.c_str(), r.model_type.c_str(), static_cast<long long>(r.tensors),
              static_cast<long long>(r.parameters), r.bytes_written / 1048576.0,
              r.tokenizer_copied ? ", tokenizer" : "", o.destination.c_str());
  return 0;
}

int RunGenerate(const GenerateOptions& o) {
  Tokenizer tokenizer = LoadTokenizer(o.files);
  GemmaDecoder model = LoadModel(o.files);
  CheckTokenizerFits(tokenizer, model.config(), o.files);

  GenerationRequest request;
  if (o.chat) {
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", o.prompt});
    request.prompt = EncodeGemmaChat(tokenizer, messages, /*add_generation_prompt=*/true);
    request.stop_tokens = GemmaStopTokens(tokenizer);
  } else {
    GEMMAPOD_CHECK(o.system.empty(), "--system needs --chat");
    request.prompt = tokenizer.Encode(o.prompt, /*add_bos=*/true);
    request.stop_tokens = {model.config().eos_id};
  }
  request.max_new_tokens = o.max_tokens;
  request.sampling.temperature = o.temperature;
  request.sampling.top_k = o.top_k;
  request.sampling.top_p = o.top_p;
  request.sampling.min_p = o.min_p;
  request.sampling.repetition_penalty = o.repetition_penalty;
  request.sampling.seed = o.seed;
  request.stop_strings = o.stop;

  const GenerationResult r = Generate(model, tokenizer, request, [](std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  std::printf("\n");
  std::fflush(stdout);  // the statistics go to stderr: keep them after the text
  if (o.stats) {
    const double decode_rate =
        r.decode_seconds > 0 ? static_cast<double>(r.tokens.size()) / r.decode_seconds : 0.0;
    std::fprintf(stderr,
                 "prompt %zu tokens in %.3f s; generated %zu tokens in %.3f s (%.1f tokens/s); "
                 "finish: %s\n",
                 request.prompt.size(), r.prefill_seconds, r.tokens.size(), r.decode_seconds,
                 decode_rate, FinishReasonName(r.finish));
  }
  return 0;
}

int RunLogits(const LogitsOptions& o) {
  const std::vector<int32_t> tokens = ParseTokenList(o.tokens);
  GemmaDecoder model = LoadModel(o.files);
  const int64_t n = static_cast<int64_t>(tokens.size());
  GEMMAPOD_CHECK(n <= model.config().max_position_embeddings, "--tokens: ", n,
                 " tokens exceed the model's context of ", model.config().max_position_embeddings);
  for (size_t i = 0; i < tokens.size(); ++i) {
    GEMMAPOD_CHECK(tokens[i] < model.config().vocab_size, "--tokens: entry ", i, " (", tokens[i],
                   ") is outside the vocabulary of ", model.config().vocab_size);
  }
  KvCache cache(model.config(), 1, n);
  const Tensor logits = model.Forward({{SequenceChunk{0, tokens}}}, cache, LogitRows::kAllTokens);
  WriteNpy(o.out, logits);
  std::printf("wrote %s: f32 [%lld, %lld]\n", o.out.c_str(), static_cast<long long>(n),
              static_cast<long long>(model.config().vocab_size));
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
