#include "sharding/t5gemma_layout.h"

#include <algorithm>

#include "runtime/error.h"
#include "sharding/pod_topology.h"
#include "sharding/process_grid.h"

namespace gemmapod {
namespace {

std::vector<LayerRange> EvenRanges(int64_t layers, int stages, const std::string& what) {
  GEMMAPOD_CHECK(stages >= 1 && stages <= layers, what, ": ", stages, " stage(s) for ", layers,
                 " layers");
  std::vector<LayerRange> out;
  int64_t begin = 0;
  for (int s = 0; s < stages; ++s) {
    const int64_t n = layers / stages + (s < layers % stages ? 1 : 0);
    out.push_back({begin, begin + n});
    begin += n;
  }
  return out;
}

void CheckTp(const ModelConfig& stack, int tp, const std::string& what) {
  if (auto problem = TensorParallelProblem(stack, tp)) throw Error(StrCat(what, ": ", *problem));
}

}  // namespace

int T5GemmaLayout::world_size() const {
  int n = 0;
  for (const T5GemmaStagePlan& s : stages) n += s.tp;
  return n;
}

int T5GemmaLayout::StageOf(int rank) const {
  for (size_t i = 0; i < stages.size(); ++i) {
    if (rank >= stages[i].first_rank && rank < stages[i].first_rank + stages[i].tp) {
      return static_cast<int>(i);
    }
  }
  throw Error(StrCat("T5Gemma layout: rank ", rank, " is outside its ", world_size(), " ranks"));
}

int T5GemmaLayout::first_decoder_stage() const {
  for (size_t i = 0; i < stages.size(); ++i) {
    if (stages[i].decoder) return static_cast<int>(i);
  }
  throw Error("T5Gemma layout: no decoder stage");
}

std::string T5GemmaLayout::Describe() const {
  if (stages.size() == 1) return StrCat("encoder and decoder on one stage, tp ", stages[0].tp);
  const int decoder_stages = static_cast<int>(stages.size()) - first_decoder_stage();
  const int encoder_stages = first_decoder_stage();
  return StrCat("encoder tp ", stages.front().tp, " x ", encoder_stages, " stage(s) | decoder tp ",
                stages.back().tp, " x ", decoder_stages, " stage(s)");
}

T5GemmaLayout MakeT5GemmaLayout(const T5GemmaConfig& config, int encoder_tp, int encoder_stages,
                                int decoder_tp, int decoder_stages) {
  CheckTp(config.decoder, decoder_tp, "decoder tp");
  T5GemmaLayout layout;
  if (encoder_stages == 0) {
    GEMMAPOD_CHECK(decoder_stages == 1, "T5Gemma layout: without encoder stages of their own, ",
                   "one stage holds both stacks; got ", decoder_stages, " decoder stages");
    GEMMAPOD_CHECK(encoder_tp == decoder_tp, "T5Gemma layout: encoder tp ", encoder_tp,
                   " differs from decoder tp ", decoder_tp,
                   " but they share one stage; give the encoder stages of its own");
    CheckTp(config.encoder, encoder_tp, "encoder tp");
    layout.stages.push_back({true,
                             true,
                             {0, config.encoder.num_layers},
                             {0, config.decoder.num_layers},
                             decoder_tp,
                             0});
    return layout;
  }
  CheckTp(config.encoder, encoder_tp, "encoder tp");
  int rank = 0;
  for (const LayerRange& r : EvenRanges(config.encoder.num_layers, encoder_stages, "encoder")) {
    layout.stages.push_back({true, false, r, {}, encoder_tp, rank});
    rank += encoder_tp;
  }
  for (const LayerRange& r : EvenRanges(config.decoder.num_layers, decoder_stages, "decoder")) {
    layout.stages.push_back({false, true, {}, r, decoder_tp, rank});
    rank += decoder_tp;
  }
  return layout;
}

T5GemmaReplicaRank T5GemmaReplicaOf(const PodTopology* pod, int world_rank) {
  if (pod == nullptr || pod->dp == 1) return {0, world_rank};
  const GridShape shape{pod->tp, pod->pp, pod->dp};
  const GridCoords at = shape.CoordsOf(world_rank);
  return {at.dp, at.pp * pod->tp + at.tp};
}

int AutoEncoderStages(const T5GemmaConfig& config, int pp) {
  if (pp <= 1) return 0;
  const double share = static_cast<double>(config.encoder.ParameterCount()) /
                       static_cast<double>(config.ParameterCount());
  return std::clamp(static_cast<int>(share * pp + 0.5), 1, pp - 1);
}

T5GemmaLayout T5GemmaLayoutFromPod(const PodTopology& pod, const T5GemmaConfig& config) {
  const int encoder_tp = pod.encoder_tp > 0 ? pod.encoder_tp : pod.tp;
  const PipelineLayout& p = pod.pipeline;
  if (p.automatic) {
    // Auto: with pp > 1 and no split given, the encoder takes stages in proportion to its
    // bytes (at least one, leaving at least one to the decoder).
    const int encoder_stages =
        p.encoder_stages == 0 ? AutoEncoderStages(config, pod.pp) : p.encoder_stages;
    return MakeT5GemmaLayout(config, encoder_tp, encoder_stages, pod.tp,
                             encoder_stages == 0 ? 1 : pod.pp - encoder_stages);
  }
  // Explicit stages: their parts and inclusive layer ranges, checked to cover each stack.
  T5GemmaLayout layout;
  int rank = 0;
  int64_t next[2] = {0, 0};
  for (size_t i = 0; i < p.stages.size(); ++i) {
    const StageLayout& s = p.stages[i];
    const bool encoder = s.part == StackPart::kEncoder;
    const ModelConfig& stack = encoder ? config.encoder : config.decoder;
    const LayerRange r{s.first_layer, static_cast<int64_t>(s.last_layer) + 1};
    GEMMAPOD_CHECK(r.first == next[encoder] && r.end <= stack.num_layers, pod.source,
                   ": pipeline.stages[", i, "]: layers [", s.first_layer, ", ", s.last_layer,
                   "] of the ", StackPartName(s.part), " (", stack.num_layers,
                   " layers) must start at ", next[encoder]);
    next[encoder] = r.end;
    const int tp = encoder ? encoder_tp : pod.tp;
    layout.stages.push_back(
        {encoder, !encoder, encoder ? r : LayerRange{}, encoder ? LayerRange{} : r, tp, rank});
    rank += tp;
  }
  GEMMAPOD_CHECK(next[1] == config.encoder.num_layers && next[0] == config.decoder.num_layers &&
                     p.encoder_stages >= 1,
                 pod.source, ": pipeline.stages must cover the encoder's ",
                 config.encoder.num_layers, " layers and the decoder's ", config.decoder.num_layers,
                 " layers, encoder stages first");
  CheckTp(config.encoder, encoder_tp, "encoder tp");
  CheckTp(config.decoder, pod.tp, "decoder tp");
  return layout;
}

T5GemmaShard T5GemmaShardOf(const T5GemmaConfig& config, const T5GemmaLayout& layout, int rank) {
  const int index = layout.StageOf(rank);
  const T5GemmaStagePlan& s = layout.stages[static_cast<size_t>(index)];
  const int tp_rank = rank - s.first_rank;
  const int first_decoder = layout.first_decoder_stage();
  const bool first_stage = index == 0;
  const bool last_encoder = s.encoder && (s.decoder || index + 1 == first_decoder);
  const bool first_decoder_stage = index == first_decoder;
  const bool last_stage = index + 1 == static_cast<int>(layout.stages.size());
  T5GemmaShard shard;
  shard.has_encoder = s.encoder;
  shard.has_decoder = s.decoder;
  if (s.encoder) {
    shard.encoder = MakeGemmaShard(config.encoder, s.tp, tp_rank, s.encoder_layers.first,
                                   s.encoder_layers.end, first_stage, last_encoder);
  }
  if (s.decoder) {
    shard.decoder = MakeGemmaShard(config.decoder, s.tp, tp_rank, s.decoder_layers.first,
                                   s.decoder_layers.end, first_decoder_stage, last_stage);
  }
  return shard;
}

}  // namespace gemmapod
