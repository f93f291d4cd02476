// T5Gemma decode latency on one rank: an unbalanced pair (a 9B-shaped encoder, a 2B-shaped
// decoder) against a balanced one (2B-2B) and the decoder-only Gemma 2 2B. The claim measured:
// once the prompt is encoded and each decoder layer's cross-attention keys and values are
// projected from it (once per request), a decode step runs the decoder alone, so 9B-2B decodes at
// nearly the speed of its 2B decoder, whatever the encoder's size.
//
//   build/bench/t5gemma_decode_bench [--scale 2] [--vocab 0] [--prompt 256] [--decode 32]
//       [--warmup 4] [--rounds 3] [--models 9b-2b,2b-2b,2b] [--dtype bf16]
//
// The published shapes (configs/models/gemma2-9b.yaml, gemma2-2b.yaml) do not fit this machine
// together (9B-2B alone is 24.6 GB in bf16), so every stack is scaled down by --scale: hidden
// size, MLP width and query and key/value head counts divided by it (head_dim stays 256, layer
// counts stay 42 and 26), and the vocabulary divided by it too unless --vocab says otherwise
// (--vocab 0). Every matrix then has 1/scale^2 of its elements, so the bytes a decode step reads
// keep the published models' ratios (at --scale 2: 6.15 + 2.80 + 1.31 GB of the published
// 24.6 + 11.2 + 5.2 GB, all resident at once).
//
// Random bf16 weights (RandomT5GemmaWeights, RandomGemmaWeights). Each model encodes (T5Gemma) or
// prefills (Gemma) the prompt three times, the first a warm-up, and keeps the best; then the
// decode steps run in --rounds rounds, in each round every model's --warmup untimed and --decode
// timed steps in turn, so that a change in this shared machine's speed falls on all models alike.
// The decoder's context grows through the rounds (T5Gemma's from 0, decoder-only Gemma's from the
// prompt); T5Gemma's cross-attention reads the prompt's keys and values at every step. Prints
// markdown: median and min over all timed steps, and the weight bytes a step reads against the
// STREAM triad bandwidth measured before each round and at the end.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "models/gemma/gemma_decoder.h"
#include "models/gemma/gemma_random.h"
#include "models/gemma/model_config_yaml.h"
#include "models/t5gemma/t5gemma.h"
#include "models/t5gemma/t5gemma_random.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

using bench::Now;

std::vector<std::string> ParseNames(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

// A published stack with hidden size, MLP width and head counts divided by `scale`, and
// `vocab` tokens.
ModelConfig Scaled(ModelConfig c, int64_t scale, int64_t vocab) {
  for (const auto& [what, value] : {std::pair<const char*, int64_t>{"hidden_size", c.hidden_size},
                                    {"intermediate_size", c.intermediate_size},
                                    {"num_heads", c.num_heads},
                                    {"num_kv_heads", c.num_kv_heads}}) {
    GEMMAPOD_CHECK(value % scale == 0, c.name, ": ", what, " ", value,
                   " is not divisible by --scale ", scale);
  }
  c.hidden_size /= scale;
  c.intermediate_size /= scale;
  c.num_heads /= scale;
  c.num_kv_heads /= scale;
  c.vocab_size = vocab;
  if (scale > 1) c.name = StrCat(c.name, "/", scale);
  Validate(c, c.name);
  return c;
}

std::string Shape(const ModelConfig& c) {
  return StrCat(c.num_layers, "L d", c.hidden_size, " ffn", c.intermediate_size, " ", c.num_heads,
                "h/", c.num_kv_heads, "kv");
}

int32_t Argmax(const Tensor& logits) {
  const float* v = logits.data<float>();
  const int64_t n = logits.dim(1);
  return static_cast<int32_t>(std::max_element(v, v + n) - v);
}

// The prompt: bos, then deterministic tokens; never the pad id (a padded key is masked).
std::vector<int32_t> Prompt(int64_t length, const ModelConfig& c) {
  std::vector<int32_t> tokens = bench::PromptTokens(length, 0, c.vocab_size);
  for (int32_t& t : tokens) {
    if (t == c.pad_id) t = 3;
  }
  tokens[0] = c.bos_id;
  return tokens;
}

struct Result {
  std::string model, shape;
  double total_gb = 0;        // every weight of the model
  double prefill_s = 0;       // encoder (T5Gemma) or decoder prefill (Gemma) of the prompt, best
  double kv_project_ms = 0;   // T5Gemma: the cross-attention keys and values, once per request
  double step_weight_gb = 0;  // weights a decode step reads (the tied head included)
  double step_cache_mb = 0;   // caches the last step read (f32)
  std::vector<double> times;  // seconds per timed decode step, all rounds
  double median_ms = 0, min_ms = 0;
};

void Summarise(Result& r) {
  std::vector<double> times = r.times;
  std::sort(times.begin(), times.end());
  const size_t n = times.size();
  r.median_ms = 1e3 * (n % 2 == 1 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]));
  r.min_ms = 1e3 * times.front();
}

// One model, built and its prompt prefilled; Step() decodes one token (greedy) and returns its
// seconds.
class Runner {
 public:
  virtual ~Runner() = default;
  virtual double Step() = 0;
  virtual double CacheMegabytes() const = 0;
  Result result;
};

class T5GemmaRunner : public Runner {
 public:
  T5GemmaRunner(const std::string& label, const T5GemmaConfig& config, DType dtype, int64_t prompt,
                int64_t max_steps) {
    Result& r = result;
    r.model = label;
    r.shape = StrCat("enc ", Shape(config.encoder), " → dec ", Shape(config.decoder));
    const int64_t matrix_bytes = static_cast<int64_t>(DTypeSize(dtype));
    r.total_gb =
        static_cast<double>(T5GemmaShardWeightBytes(config, WholeT5Gemma(config), matrix_bytes)) /
        1e9;
    // A step reads the decoder stack, its embedding as the head, and the cross-attention blocks
    // but their key/value projections (applied once per request, in SetEncoderMemory).
    T5GemmaShard decoder_only = WholeT5Gemma(config);
    decoder_only.has_encoder = false;
    T5GemmaWeights scratch;
    int64_t bytes = 0;
    ForEachT5GemmaShardParameter(
        config, decoder_only, scratch,
        [&](const GemmaParameter& p, const ParameterSlice& slice, Tensor&) {
          if (p.name.find("cross_attn.k_proj") != std::string::npos ||
              p.name.find("cross_attn.v_proj") != std::string::npos) {
            return;
          }
          bytes += NumElements(SliceShape(p, slice)) * (p.is_norm ? int64_t{4} : matrix_bytes);
        });
    r.step_weight_gb = static_cast<double>(bytes) / 1e9;

    const double t_build = Now();
    model_.emplace(config, RandomT5GemmaWeights(config, dtype, 1));
    std::fprintf(stderr, "t5gemma_decode_bench: %s (%.2f GB) built in %.1f s\n", label.c_str(),
                 r.total_gb, Now() - t_build);

    const EncoderBatch batch =
        LayOutEncoderBatch({Prompt(prompt, config.encoder)}, config.encoder.pad_id, tokens_);
    state_ = model_->NewDecodeState(1, max_steps + 1);
    // Three times, the first a warm-up (oneDNN builds its kernels for each new shape on first
    // use, and buffers are touched for the first time); the best of the other two.
    r.prefill_s = r.kv_project_ms = 1e30;
    for (int run = 0; run < 3; ++run) {
      const double t0 = Now();
      Tensor e = model_->EmbedEncoder(tokens_);
      model_->RunEncoderLayers(e, batch);
      const Tensor memory = model_->FinishEncoder(e);
      const double t1 = Now();
      model_->SetEncoderMemory(memory, batch, state_);
      const double t2 = Now();
      if (run == 0) continue;
      r.prefill_s = std::min(r.prefill_s, t1 - t0);
      r.kv_project_ms = std::min(r.kv_project_ms, 1e3 * (t2 - t1));
    }
    token_ = config.decoder.bos_id;
  }

  double Step() override {
    const double t0 = Now();
    const std::vector<SequenceChunk> chunk{{0, {token_}}};
    const BatchLayout layout = LayOutBatch(chunk, *state_.self, tokens_);
    Tensor h = model_->EmbedDecoder(tokens_);
    model_->RunDecoderLayers(h, layout, state_);
    state_.self->Advance(0, 1);
    token_ = Argmax(model_->Logits(h));
    return Now() - t0;
  }

  // The cross keys and values of every layer and the self-attention cache so far.
  double CacheMegabytes() const override {
    int64_t bytes = 0;
    const auto& m = state_.cross[0];
    for (size_t l = 0; l < m.keys.size(); ++l) {
      bytes += static_cast<int64_t>(m.keys[l].nbytes() + m.values[l].nbytes());
    }
    const ModelConfig& d = model_->config().decoder;
    bytes += 2 * d.num_layers * state_.self->length(0) * d.kv_width() * 4;
    return static_cast<double>(bytes) / 1e6;
  }

 private:
  std::optional<T5Gemma> model_;
  T5GemmaDecodeState state_;
  std::vector<int32_t> tokens_;
  int32_t token_ = 0;
};

class GemmaRunner : public Runner {
 public:
  GemmaRunner(const ModelConfig& config, DType dtype, int64_t prompt, int64_t max_steps)
      : config_(config) {
    Result& r = result;
    r.model = "gemma2-2b (decoder-only)";
    r.shape = StrCat("dec ", Shape(config));
    const int64_t matrix_bytes = static_cast<int64_t>(DTypeSize(dtype));
    r.total_gb =
        static_cast<double>(GemmaShardWeightBytes(config, WholeGemma(config), matrix_bytes)) / 1e9;
    r.step_weight_gb = r.total_gb;

    const double t_build = Now();
    model_.emplace(config, RandomGemmaWeights(config, dtype, 1));
    std::fprintf(stderr, "t5gemma_decode_bench: %s (%.2f GB) built in %.1f s\n",
                 config.name.c_str(), r.total_gb, Now() - t_build);

    const std::vector<SequenceChunk> prefill{{0, Prompt(prompt, config)}};
    const int64_t max_context = prompt + max_steps + 1;
    // As for T5Gemma: a warm-up prefill, then the best of two (each into a fresh cache).
    r.prefill_s = 1e30;
    for (int run = 0; run < 3; ++run) {
      cache_.emplace(config, 1, max_context);
      const double t0 = Now();
      token_ = Argmax(model_->Forward(prefill, *cache_, LogitRows::kLastToken));
      if (run > 0) r.prefill_s = std::min(r.prefill_s, Now() - t0);
    }
  }

  double Step() override {
    const double t0 = Now();
    const std::vector<SequenceChunk> step{{0, {token_}}};
    token_ = Argmax(model_->Forward(step, *cache_, LogitRows::kLastToken));
    return Now() - t0;
  }

  double CacheMegabytes() const override {
    return static_cast<double>(2 * config_.num_layers * cache_->length(0) * config_.kv_width() *
                               4) /
           1e6;
  }

 private:
  ModelConfig config_;
  std::optional<GemmaDecoder> model_;
  std::optional<KvCache> cache_;
  int32_t token_ = 0;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int Main(int argc, char** argv) {
  const bench::Flags flags(argc, argv,
                           {{"--scale", "2"},
                            {"--vocab", "0"},
                            {"--prompt", "256"},
                            {"--decode", "32"},
                            {"--warmup", "4"},
                            {"--rounds", "3"},
                            {"--models", "9b-2b,2b-2b,2b"},
                            {"--dtype", "bf16"},
                            {"--large", "configs/models/gemma2-9b.yaml"},
                            {"--small", "configs/models/gemma2-2b.yaml"}});
  const int64_t scale = flags.Int("--scale"), prompt = flags.Int("--prompt"),
                decode = flags.Int("--decode"), warmup = flags.Int("--warmup"),
                rounds = flags.Int("--rounds");
  const DType dtype = ParseDType(flags.Get("--dtype"));
  GEMMAPOD_CHECK(scale >= 1 && prompt >= 1 && decode >= 1 && warmup >= 0 && rounds >= 1,
                 "--scale, --prompt, --decode and --rounds must be positive, --warmup not "
                 "negative");
  const ModelConfig large_full = LoadModelConfigYaml(flags.Get("--large"));
  const ModelConfig small_full = LoadModelConfigYaml(flags.Get("--small"));
  const int64_t vocab =
      flags.Int("--vocab") > 0 ? flags.Int("--vocab") : small_full.vocab_size / scale;
  const ModelConfig large = Scaled(large_full, scale, vocab);
  const ModelConfig small = Scaled(small_full, scale, vocab);
  auto pair = [&](const ModelConfig& encoder, const std::string& name) {
    T5GemmaConfig c;
    c.name = name;
    c.encoder = encoder;
    c.encoder.name = name + " encoder";
    c.decoder = small;
    c.decoder.name = name + " decoder";
    Validate(c, name);
    return c;
  };

  // Every model is built (and its prompt prefilled) first; the decode steps then run in rounds,
  // each model's block of steps in turn, so that a change in the shared machine's speed falls on
  // all of them alike.
  const int64_t max_steps = rounds * (warmup + decode);
  std::vector<std::unique_ptr<Runner>> runners;
  for (const std::string& which : ParseNames(flags.Get("--models"))) {
    if (which == "9b-2b") {
      runners.push_back(std::make_unique<T5GemmaRunner>(
          "t5gemma 9b-2b", pair(large, "t5gemma-9b-2b"), dtype, prompt, max_steps));
    } else if (which == "2b-2b") {
      runners.push_back(std::make_unique<T5GemmaRunner>(
          "t5gemma 2b-2b", pair(small, "t5gemma-2b-2b"), dtype, prompt, max_steps));
    } else if (which == "2b") {
      runners.push_back(std::make_unique<GemmaRunner>(small, dtype, prompt, max_steps));
    } else {
      throw Error(StrCat("--models: unknown model '", which, "' (9b-2b, 2b-2b, 2b)"));
    }
  }
  std::vector<double> triads;
  for (int64_t round = 0; round < rounds; ++round) {
    triads.push_back(bench::TriadGBs());
    for (auto& runner : runners) {
      for (int64_t i = 0; i < warmup; ++i) runner->Step();
      for (int64_t i = 0; i < decode; ++i) runner->result.times.push_back(runner->Step());
    }
  }
  triads.push_back(bench::TriadGBs());
  const double triad = Median(triads);

  std::printf(
      "OMP threads %d, --scale %lld, vocab %lld, %s weights, prompt %lld tokens; %lld rounds of "
      "%lld decode steps per model after %lld warm-up steps; triad %.1f-%.1f GB/s (%lld runs, "
      "median %.1f)\n\n",
      omp_get_max_threads(), static_cast<long long>(scale), static_cast<long long>(vocab),
      flags.Get("--dtype").c_str(), static_cast<long long>(prompt), static_cast<long long>(rounds),
      static_cast<long long>(decode), static_cast<long long>(warmup),
      *std::min_element(triads.begin(), triads.end()),
      *std::max_element(triads.begin(), triads.end()), static_cast<long long>(triads.size()),
      triad);
  std::printf(
      "| model | shape | weights | prompt prefill | cross K/V projection | decode ms/token "
      "(median) | min | weights read per step | caches read at the last step | GB/s (median) | "
      "of median triad |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::vector<Result> results;
  for (auto& runner : runners) {
    Result& r = runner->result;
    Summarise(r);
    r.step_cache_mb = runner->CacheMegabytes();
    const double gbs = r.step_weight_gb / (r.median_ms * 1e-3);
    const std::string projection =
        r.kv_project_ms > 0 ? StrCat(static_cast<int64_t>(r.kv_project_ms + 0.5), " ms") : "—";
    std::printf(
        "| %s | %s | %.2f GB | %.2f s | %s | %.1f | %.1f | %.3f GB | %.1f MB | %.1f | %.0f %% |\n",
        r.model.c_str(), r.shape.c_str(), r.total_gb, r.prefill_s, projection.c_str(), r.median_ms,
        r.min_ms, r.step_weight_gb, r.step_cache_mb, gbs, 100.0 * gbs / triad);
    results.push_back(r);
  }
  std::printf("\n");
  for (size_t i = 0; i < results.size(); ++i) {
    for (size_t j = i + 1; j < results.size(); ++j) {
      const Result &a = results[i], &b = results[j];
      std::printf(
          "%s / %s: decode %.2f× (median), %.2f× (min); weights read per step %.2f×; total "
          "weights %.2f×\n",
          a.model.c_str(), b.model.c_str(), a.median_ms / b.median_ms, a.min_ms / b.min_ms,
          a.step_weight_gb / b.step_weight_gb, a.total_gb / b.total_gb);
    }
  }
  return 0;
}

}  // namespace
}  // namespace gemmapod

int main(int argc, char** argv) {
  try {
    return gemmapod::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "t5gemma_decode_bench: %s\n", e.what());
    return 1;
  }
}
