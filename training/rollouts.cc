#include "training/rollouts.h"

#include <cmath>
#include <memory>

#include "models/gemma/gemma_decoder.h"
#include "models/layers/kv_cache.h"
#include "runtime/error.h"
#include "runtime/tokenizer/tokenizer.h"
#include "serving/generator.h"

namespace gemmapod {
namespace {

// log softmax(logits)[id] and the distribution's entropy, in double over every logit.
void LogProbAndEntropy(const float* logits, int64_t n, int32_t id, double& logp, double& entropy) {
  double top = -INFINITY;
  for (int64_t v = 0; v < n; ++v) top = std::max(top, static_cast<double>(logits[v]));
  double sum = 0, weighted = 0;
  for (int64_t v = 0; v < n; ++v) {
    const double z = static_cast<double>(logits[v]) - top;
    const double e = std::exp(z);
    sum += e;
    weighted += e * z;
  }
  const double log_sum = std::log(sum);
  logp = static_cast<double>(logits[id]) - top - log_sum;
  // H = log Z - E[z] with z shifted by the maximum on both sides.
  entropy = log_sum - weighted / sum;
}

}  // namespace

void CheckPolicySampling(const SamplingParams& s) {
  GEMMAPOD_CHECK(s.temperature == 1.0f && s.top_k == 0 && s.top_p == 1.0f && s.min_p == 0.0f &&
                     s.repetition_penalty == 1.0f && s.presence_penalty == 0.0f &&
                     s.frequency_penalty == 0.0f,
                 "rollouts: policy-gradient training samples from the policy itself "
                 "(temperature 1, no top-k, top-p, min-p or penalties), so the recorded "
                 "log-probabilities are the policy's");
}

RolloutDecoder GemmaRollouts(GemmaDecoder& model) {
  RolloutDecoder d;
  d.vocab_size = model.config().vocab_size;
  d.max_context = model.config().max_position_embeddings;
  d.start = [&model](int64_t num_sequences, int64_t max_context) {
    auto cache = std::make_shared<KvCache>(model.config(), num_sequences, max_context);
    return DecodeStep([&model, cache](std::span<const SequenceChunk> chunks) {
      return model.Forward(chunks, *cache, LogitRows::kLastToken);
    });
  };
  return d;
}

std::vector<Rollout> GenerateRollouts(GemmaDecoder& model, const Tokenizer& tokenizer,
                                      const std::vector<std::vector<int32_t>>& prompts,
                                      const std::vector<uint64_t>& seeds,
                                      const RolloutOptions& options) {
  return GenerateRollouts(GemmaRollouts(model), tokenizer, prompts, seeds, options);
}

std::vector<Rollout> GenerateRollouts(const RolloutDecoder& model, const Tokenizer& tokenizer,
                                      const std::vector<std::vector<int32_t>>& prompts,
                                      const std::vector<uint64_t>& seeds,
                                      const RolloutOptions& options) {
  GEMMAPOD_CHECK(prompts.size() == seeds.size(), "rollouts: ", prompts.size(), " prompts and ",
                 seeds.size(), " seeds");
  const auto n = static_cast<int64_t>(prompts.size());
  std::vector<Rollout> out(prompts.size());
  if (n == 0) return out;
  int64_t longest = 0;
  std::vector<GenerationTracker> trackers;
  std::vector<Sampler> samplers;
  for (int64_t i = 0; i < n; ++i) {
    GenerationRequest request;
    request.prompt = prompts[static_cast<size_t>(i)];
    request.max_new_tokens = options.max_new_tokens;
    request.sampling = options.sampling;
    request.sampling.seed = seeds[static_cast<size_t>(i)];
    request.stop_tokens = options.stop_tokens;
    request.stop_strings = options.stop_strings;
    CheckRequest(request, model.max_context, "the model's context");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(request.prompt.size()));
    trackers.emplace_back(tokenizer, request, nullptr);
    samplers.emplace_back(request.sampling);
  }
  const DecodeStep step = model.start(n, longest + options.max_new_tokens);
  std::vector<SequenceChunk> chunks;
  for (int64_t i = 0; i < n; ++i) chunks.push_back({i, prompts[static_cast<size_t>(i)]});
  // Ids past the tokenizer's pieces (a padded embedding) are never sampled; the log-probability
  // is still over every logit, as the trainer's head computes it.
  const int64_t vocab = model.vocab_size;
  const int64_t sampled = std::min<int64_t>(vocab, tokenizer.vocab_size());
  while (!chunks.empty()) {
    const Tensor logits = step(chunks);
    GEMMAPOD_CHECK(logits.rank() == 2 && logits.dim(0) == static_cast<int64_t>(chunks.size()) &&
                       logits.dim(1) == vocab,
                   "rollouts: the decoder gave logits ", logits.Describe(), " for ", chunks.size(),
                   " chunks of a ", vocab, "-word vocabulary");
    std::vector<SequenceChunk> next;
    for (size_t row = 0; row < chunks.size(); ++row) {
      const auto i = static_cast<size_t>(chunks[row].sequence);
      const float* z = logits.data<float>() + static_cast<int64_t>(row) * vocab;
      const int32_t id = samplers[i].Sample(std::span<const float>(z, static_cast<size_t>(sampled)),
                                            trackers[i].context());
      double logp = 0, entropy = 0;
      LogProbAndEntropy(z, vocab, id, logp, entropy);
      Rollout& r = out[i];
      r.tokens.push_back(id);
      r.logp.push_back(logp);
      r.entropy.push_back(entropy);
      if (trackers[i].Accept(id)) {
        next.push_back({static_cast<int64_t>(i), {id}});
        continue;
      }
      const GenerationResult& result = trackers[i].result();
      r.text = result.text;
      r.stopped =
          result.finish == FinishReason::kStopToken || result.finish == FinishReason::kStopString;
    }
    chunks = std::move(next);
  }
  return out;
}

}  // namespace gemmapod
