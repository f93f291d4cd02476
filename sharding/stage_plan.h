// Which layers each pipeline stage runs: the pod file's explicit ranges, checked against the
// model, or ranges balanced by parameter bytes ("auto").
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "sharding/pod_topology.h"

namespace gemmapod {

struct LayerRange {
  int64_t first = 0;  // [first, end)
  int64_t end = 0;
  bool operator==(const LayerRange&) const = default;
};

// Cuts layers (with the given bytes each) into `stages` contiguous ranges of at least one layer,
// so that the heaviest stage is as light as it can be. The first stage also holds `first_extra`
// bytes and the last `last_extra` (the embedding and the output head). Throws gemmapod::Error
// when there are more stages than layers.
std::vector<LayerRange> BalanceStages(std::span<const int64_t> layer_bytes, int stages,
                                      int64_t first_extra, int64_t last_extra);

// The decoder stages of `pod` for a decoder-only model whose layers have these bytes: its
// explicit list, checked to cover exactly the model's layers, or BalanceStages for "auto". Errors
// name the pod file and the model.
std::vector<LayerRange> DecoderStages(const PodTopology& pod, const std::string& model_name,
                                      std::span<const int64_t> layer_bytes, int64_t first_extra,
                                      int64_t last_extra);

}  // namespace gemmapod
