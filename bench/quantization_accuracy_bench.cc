// How far a quantized checkpoint's outputs are from a reference checkpoint of the same model
// (e.g. Gemma 3 270M in int8 against bf16 or f32), on one rank:
//
//   build/bench/quantization_accuracy_bench --reference bf16.h5 --candidate int8.h5 --tokens 300
//
// For each prompt the reference greedily generates --tokens tokens. The candidate then reads the
// same text (teacher forcing), and the bench reports how often its greedy choice agrees with the
// reference's at each position, the largest logit difference relative to the largest logit, and
// how many tokens the candidate's own free-running greedy text follows the reference's before the
// first different token. Prints a markdown table for docs/performance.md.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "models/gemma/gemma_checkpoint.h"
#include "runtime/cpu/ops.h"
#include "runtime/error.h"
#include "runtime/tokenizer/tokenizer.h"

namespace gemmapod {
namespace {

const std::vector<std::string>& Prompts() {
  static const std::vector<std::string> prompts = {
      "The Eiffel Tower is located in the city of",
      "Water is made of hydrogen and",
      "In 1969, the first humans landed on",
      "def fibonacci(n):\n",
      "Once upon a time, in a small village by the sea,",
  };
  return prompts;
}

int32_t ArgMax(const float* row, int64_t n) { return static_cast<int32_t>(cpu::ArgMax(row, n)); }

// Greedy continuation of `prompt` by `model`.
std::vector<int32_t> Greedy(GemmaDecoder& model, const std::vector<int32_t>& prompt, int64_t n) {
  KvCache cache(model.config(), 1, static_cast<int64_t>(prompt.size()) + n);
  Tensor logits = model.Forward({{SequenceChunk{0, prompt}}}, cache, LogitRows::kLastToken);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(ArgMax(logits.data<float>(), logits.dim(1)));
    if (i + 1 < n) {
      logits = model.Forward({{SequenceChunk{0, {out.back()}}}}, cache, LogitRows::kLastToken);
    }
  }
  return out;
}

Tensor AllLogits(GemmaDecoder& model, const std::vector<int32_t>& ids) {
  KvCache cache(model.config(), 1, static_cast<int64_t>(ids.size()));
  return model.Forward({{SequenceChunk{0, ids}}}, cache, LogitRows::kAllTokens);
}

int Main(int argc, char** argv) {
  const bench::Flags flags(argc, argv,
                           {{"--reference", ""}, {"--candidate", ""}, {"--tokens", "300"}});
  const std::string ref_path = flags.Get("--reference"), cand_path = flags.Get("--candidate");
  GEMMAPOD_CHECK(!ref_path.empty() && !cand_path.empty(),
                 "quantization_accuracy_bench: give --reference A.h5 --candidate B.h5");
  const int64_t n = flags.Int("--tokens");
  GemmaDecoder reference = LoadGemmaCheckpoint(ref_path);
  GemmaDecoder candidate = LoadGemmaCheckpoint(cand_path);
  const Tokenizer tokenizer = Tokenizer::FromBytes(*ReadEmbeddedTokenizer(ref_path), ref_path);

  std::printf(
      "| prompt | tokens | greedy agreement (teacher-forced) | max logit error / max |logit| "
      "| free-running tokens before the first difference |\n|---|---|---|---|---|\n");
  int64_t agree_all = 0, total_all = 0;
  double worst = 0;
  for (const std::string& text : Prompts()) {
    const std::vector<int32_t> prompt = tokenizer.Encode(text, true);
    const std::vector<int32_t> ref_tokens = Greedy(reference, prompt, n);
    std::vector<int32_t> ids = prompt;
    ids.insert(ids.end(), ref_tokens.begin(), ref_tokens.end() - 1);
    const Tensor a = AllLogits(reference, ids), b = AllLogits(candidate, ids);
    const int64_t vocab = a.dim(1), first = static_cast<int64_t>(prompt.size()) - 1;
    int64_t agree = 0;
    double diff = 0, scale = 0;
    for (int64_t r = first; r < a.dim(0); ++r) {
      const float* x = a.data<float>() + r * vocab;
      const float* y = b.data<float>() + r * vocab;
      agree += ArgMax(x, vocab) == ArgMax(y, vocab) ? 1 : 0;
      for (int64_t v = 0; v < vocab; ++v) {
        scale = std::max<double>(scale, std::abs(x[v]));
        diff = std::max<double>(diff, std::abs(x[v] - y[v]));
      }
    }
    const std::vector<int32_t> cand_tokens = Greedy(candidate, prompt, n);
    int64_t same = 0;
    while (same < n &&
           cand_tokens[static_cast<size_t>(same)] == ref_tokens[static_cast<size_t>(same)]) {
      ++same;
    }
    const int64_t positions = a.dim(0) - first;
    agree_all += agree;
    total_all += positions;
    worst = std::max(worst, diff / scale);
    std::string shown = text;
    for (char& c : shown) c = c == '\n' ? ' ' : c;
    std::printf("| %s | %lld | %.1f %% | %.3g | %lld |\n", shown.c_str(),
                static_cast<long long>(positions), 100.0 * static_cast<double>(agree) / positions,
                diff / scale, static_cast<long long>(same));
    std::fflush(stdout);
  }
  std::printf("| **all** | %lld | **%.1f %%** | %.3g | |\n", static_cast<long long>(total_all),
              100.0 * static_cast<double>(agree_all) / total_all, worst);
  return 0;
}

}  // namespace
}  // namespace gemmapod

int main(int argc, char** argv) {
  try {
    return gemmapod::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quantization_accuracy_bench: %s\n", e.what());
    return 1;
  }
}
