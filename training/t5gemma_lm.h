// The sequence-to-sequence loss of a whole T5Gemma on one rank and its gradient with respect to
// every parameter: packed (input, target) pairs in; the encoder runs each input bidirectionally
// (its sliding layers within their window), the decoder each target causally with cross-attention
// to its own input's encoder output, and the loss is the decoder's next-token cross-entropy. The
// gradient flows from every decoder layer's cross-attention back into the encoder.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/t5gemma/t5gemma_weights.h"
#include "training/gemma_lm.h"

namespace gemmapod {

// Pairs packed one after another on both sides; decoder token t belongs to pair
// pair_of_decoder_token[t], whose encoder rows are [encoder_begin[pair], encoder_end[pair]).
struct Seq2SeqBatch {
  PackedBatch encoder;  // its targets are unused
  PackedBatch decoder;
  std::vector<int64_t> encoder_begin, encoder_end;  // per pair
  std::vector<int64_t> pair_of_decoder_token;
};
// `decoder_learn` as PackSequences' loss mask (empty: every target).
Seq2SeqBatch PackSeq2Seq(const std::vector<std::vector<int32_t>>& inputs,
                         const std::vector<std::vector<int32_t>>& targets,
                         const std::vector<std::vector<uint8_t>>& decoder_learn = {});

struct CrossAttentionGrads {
  Tensor pre_norm, post_norm;
  LinearGrad q_proj, k_proj, v_proj, o_proj;
};

struct T5GemmaGrads {
  GemmaGrads encoder, decoder;
  std::vector<CrossAttentionGrads> cross;
  static T5GemmaGrads ZerosFor(const T5GemmaConfig& config, const T5GemmaWeights& weights);
};

class AdamW;
// Registers every parameter under its Hugging Face name (decay on matrices, not on norms).
// `shard`: the part of the model `weights` holds (null: all of it).
void AddT5GemmaParameters(AdamW& optimizer, const T5GemmaConfig& config, T5GemmaWeights& weights,
                          T5GemmaGrads& grads, const T5GemmaShard* shard = nullptr);

// Tensor parallelism: the group (null: one rank) and each stack's vocabulary rows on this rank
// (vocab_size 0: all of them). Gradients of parameters the ranks hold in part are partial, as in
// GemmaLossAndGradients.
struct T5GemmaParallelism {
  Communicator* tp = nullptr;
  VocabSlice encoder_vocab, decoder_vocab;
};

// One pipeline stage's part of the loss, micro-batch by micro-batch (see GemmaStageLoss): encoder
// stages before decoder stages (models/t5gemma/t5gemma_weights.h's T5GemmaShard; one stage may
// hold both, as the whole model does). The encoder's last stage sends the encoder's output; the
// first decoder stage receives it alone and every later decoder stage receives it with the
// decoder's stream (one flat f32 tensor: the stream's rows, then the memory's), so each decoder
// layer's cross-attention reads it. Backwards, each decoder stage adds its layers' share of the
// memory's gradient to what the next stage sent and passes the sum on, and the first decoder
// stage returns the total to the encoder's last stage: the sum of every cross-attention's share,
// in the order of the one-rank backward.
class T5GemmaStageLoss {
 public:
  T5GemmaStageLoss(const T5GemmaConfig& config, const T5GemmaWeights& weights, T5GemmaGrads& grads,
                   const T5GemmaShard& shard, const T5GemmaParallelism& parallel);
  ~T5GemmaStageLoss();
  Tensor Forward(int64_t micro, Seq2SeqBatch batch, const Tensor& input,
                 const GemmaStageLoss::GradientScale* backward, LossSum& loss);
  Tensor Backward(int64_t micro, const Tensor& doutput);

  // Called with a layer's checkpoint prefix ("model.layers.3.") as its backward ends: its
  // gradients are final for the micro-batch (data parallelism starts summing them).
  std::function<void(const std::string& prefix)> layer_done;

 private:
  struct InFlight;
  const T5GemmaConfig& c_;
  const T5GemmaWeights& w_;
  T5GemmaGrads& grads_;
  T5GemmaShard shard_;
  T5GemmaParallelism parallel_;
  InFlightMicroBatches<InFlight> in_flight_;
};

LossSum T5GemmaLossAndGradients(const T5GemmaConfig& config, const T5GemmaWeights& weights,
                                const Seq2SeqBatch& batch, double scale, T5GemmaGrads& grads,
                                const T5GemmaParallelism& parallel = {});
LossSum T5GemmaLoss(const T5GemmaConfig& config, const T5GemmaWeights& weights,
                    const Seq2SeqBatch& batch, const T5GemmaParallelism& parallel = {});

}  // namespace gemmapod
