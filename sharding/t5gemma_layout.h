// Where T5Gemma's parts go on a job's ranks: encoder stages before decoder stages (Megatron's
// "split rank" scheme), each stage a tensor-parallel group of its own size, so the encoder and the
// decoder may use different tp (an unbalanced pair's wide encoder over more ranks than its small
// decoder). With one stage (no split), every rank holds both stacks at the same tp.
//
//   ranks:  [ encoder stage 0 | encoder stage 1 | ... | decoder stage 0 | decoder stage 1 | ... ]
//           each stage: tp consecutive ranks (its tensor-parallel group)
#pragma once

#include <string>
#include <vector>

#include "models/t5gemma/t5gemma.h"
#include "sharding/stage_plan.h"

namespace gemmapod {

struct PodTopology;

struct T5GemmaStagePlan {
  bool encoder = false;  // runs encoder layers
  bool decoder = false;  // runs decoder layers (both: the one-stage layout)
  LayerRange encoder_layers;
  LayerRange decoder_layers;
  int tp = 1;
  int first_rank = 0;  // its ranks: [first_rank, first_rank + tp)
};

struct T5GemmaLayout {
  std::vector<T5GemmaStagePlan> stages;

  int world_size() const;
  int StageOf(int rank) const;  // throws for a rank outside the layout
  int first_decoder_stage() const;
  std::string Describe() const;  // "encoder tp 2 x 1 stage | decoder tp 1 x 2 stages"
};

// `encoder_stages` stages of `encoder_tp` ranks, then `decoder_stages` of `decoder_tp`, each
// part's layers split as evenly as they go. encoder_stages 0: one stage of decoder_tp ranks
// holding both stacks (encoder_tp must then equal decoder_tp). Errors name the problem (a tp that
// does not divide the heads, more stages than layers).
T5GemmaLayout MakeT5GemmaLayout(const T5GemmaConfig& config, int encoder_tp, int encoder_stages,
                                int decoder_tp, int decoder_stages);
// How many of `pp` stages the encoder takes when nobody says: in proportion to its parameters,
// at least one, leaving at least one to the decoder (0 with one stage: it holds both).
int AutoEncoderStages(const T5GemmaConfig& config, int pp);
// The pod file's layout of one data-parallel replica: parallelism.tp for the decoder,
// parallelism.encoder_tp (default tp) for the encoder, pipeline.encoder_stages (auto) or the
// explicit stages' parts and layer ranges. The pod has dp such replicas (its parser allows dp > 1
// only where encoder_tp equals tp, so a replica is a tp x pp block of the process grid).
T5GemmaLayout T5GemmaLayoutFromPod(const PodTopology& pod, const T5GemmaConfig& config);
// The replica `world_rank` belongs to, and its rank inside it: the process grid's convention
// (tp innermost, then dp, then pp), so stage s of every replica sits on the same node.
struct T5GemmaReplicaRank {
  int replica = 0;
  int rank = 0;
};
T5GemmaReplicaRank T5GemmaReplicaOf(const PodTopology* pod, int world_rank);

// The shard rank `rank` holds.
T5GemmaShard T5GemmaShardOf(const T5GemmaConfig& config, const T5GemmaLayout& layout, int rank);

}  // namespace gemmapod
