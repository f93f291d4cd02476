#include "sharding/stage_plan.h"

#include <algorithm>
#include <limits>

#include "runtime/error.h"

namespace gemmapod {

std::vector<LayerRange> BalanceStages(std::span<const int64_t> layer_bytes, int stages,
                                      int64_t first_extra, int64_t last_extra) {
  const int64_t L = static_cast<int64_t>(layer_bytes.size());
  GEMMAPOD_CHECK(stages >= 1, "pipeline: needs at least one stage, got ", stages);
  GEMMAPOD_CHECK(stages <= L, "pipeline: ", stages, " stages but the model has only ", L,
                 " layers (each stage needs one)");
  std::vector<int64_t> prefix(static_cast<size_t>(L) + 1, 0);
  for (int64_t i = 0; i < L; ++i) prefix[i + 1] = prefix[i] + layer_bytes[static_cast<size_t>(i)];
  auto cost = [&](int64_t s, int64_t first, int64_t end) {
    int64_t c = prefix[end] - prefix[first];
    if (s == 0) c += first_extra;
    if (s == stages - 1) c += last_extra;
    return c;
  };
  // best[s][e]: the lightest heaviest stage when stages 0..s cover layers [0, e).
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  const size_t S = static_cast<size_t>(stages), E = static_cast<size_t>(L) + 1;
  std::vector<int64_t> best(S * E, kNone), cut(S * E, 0);
  for (int64_t e = 1; e <= L; ++e) best[e] = cost(0, 0, e);
  for (int64_t s = 1; s < stages; ++s) {
    for (int64_t e = s + 1; e <= L; ++e) {
      for (int64_t b = s; b < e; ++b) {
        const int64_t prev = best[(s - 1) * E + b];
        if (prev == kNone) continue;
        const int64_t worst = std::max(prev, cost(s, b, e));
        // Ties go to the later cut: earlier stages take the extra layer, as Megatron's uneven
        // split gives the remainder to the first stages.
        if (worst <= best[s * E + e]) {
          best[s * E + e] = worst;
          cut[s * E + e] = b;
        }
      }
    }
  }
  std::vector<LayerRange> ranges(S);
  int64_t end = L;
  for (int64_t s = stages - 1; s >= 0; --s) {
    const int64_t first = s == 0 ? 0 : cut[s * E + end];
    ranges[static_cast<size_t>(s)] = {first, end};
    end = first;
  }
  return ranges;
}

std::vector<LayerRange> DecoderStages(const PodTopology& pod, const std::string& model_name,
                                      std::span<const int64_t> layer_bytes, int64_t first_extra,
                                      int64_t last_extra) {
  const int64_t L = static_cast<int64_t>(layer_bytes.size());
  GEMMAPOD_CHECK(pod.pipeline.encoder_stages == 0, pod.source, ": pipeline: the pod lays out ",
                 pod.pipeline.encoder_stages, " encoder stage(s) but ", model_name,
                 " is decoder-only");
  if (pod.pipeline.automatic) {
    GEMMAPOD_CHECK(pod.pp <= L, pod.source, ": parallelism.pp: ", pod.pp, " stages but ",
                   model_name, " has only ", L, " layers (each stage needs one)");
    return BalanceStages(layer_bytes, pod.pp, first_extra, last_extra);
  }
  std::vector<LayerRange> ranges;
  for (size_t i = 0; i < pod.pipeline.stages.size(); ++i) {
    const StageLayout& s = pod.pipeline.stages[i];
    GEMMAPOD_CHECK(s.last_layer < L, pod.source, ": pipeline.stages[", i, "]: layers [",
                   s.first_layer, ", ", s.last_layer, "] but ", model_name, " has layers 0..",
                   L - 1);
    ranges.push_back({s.first_layer, s.last_layer + 1});
  }
  GEMMAPOD_CHECK(!ranges.empty() && ranges.back().end == L, pod.source,
                 ": pipeline.stages: the last stage ends at layer ",
                 ranges.empty() ? -1 : ranges.back().end - 1, " but ", model_name,
                 " has layers 0..", L - 1, " (every layer needs a stage)");
  return ranges;
}

}  // namespace gemmapod
