// Fine-tuning data: JSONL files of examples turned into token ids with a loss mask, a held-out
// split, and the stream of batches a run consumes (seeded shuffling per epoch, optional packing),
// with a cursor a checkpoint saves so a resumed run reads exactly what the uninterrupted one would.
//
// One example per line, in one of three forms (docs/training.md):
//   {"text": "..."}                              every token is learned
//   {"prompt": "...", "completion": "..."}       only the completion (and <eos>) is learned
//   {"messages": [{"role": ..., "content": ...}]} the Gemma chat template; only the model's turns
//                                                (their text and <end_of_turn>) are learned
//   {"input": "...", "target": "..."}            encoder-decoder models (T5Gemma): the input is the
//                                                encoder's, the target (and <eos>) is learned
// and, for preference objectives (DPO, IPO, reward models), pairs:
//   {"prompt": "...", "chosen": "...", "rejected": "..."}   two completions of one prompt
//   {"chosen": [messages], "rejected": [messages]}          two conversations (the chat template)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "training/gemma_lm.h"

namespace gemmapod {

class Tokenizer;

struct TrainingExample {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> learn;  // per token: whether predicting it counts in the loss
  int64_t line = 0;            // 1-based line of its file, for messages
  // Prompt/completion and chat examples: the ids generation is given (tokens' first
  // prompt_length) and the text it should answer (the completion, or the last model turn), for
  // held-out exact match. 0 for plain text.
  int64_t prompt_length = 0;
  std::string answer;
  // Encoder-decoder models: the encoder's ids (<bos> and the input); `tokens` is then the
  // decoder's (<bos>, the target, <eos>).
  std::vector<int32_t> encoder_tokens;
  // Preference pairs: this example is the chosen answer and `rejected` the other one, each with
  // its own ids and learned tokens (the answer's).
  std::shared_ptr<const TrainingExample> rejected;
};

// How many of an example's tokens are predicted in the loss (its targets).
int64_t LearnedTargets(const TrainingExample& example);

struct DataReadOptions {
  int64_t max_length = 1024;   // tokens per example, <bos> and <eos> included
  bool skip_too_long = false;  // false: a longer example is an error naming its line
  bool skip_invalid = false;   // false: a line that is not a valid example is an error
  // An encoder-decoder model: lines are {"input", "target"} pairs (and only those).
  bool seq2seq = false;
  // Lines are preference pairs (and only those); each becomes a chosen example with its
  // rejected one, both within max_length.
  bool preference = false;
};

struct TrainingData {
  std::vector<TrainingExample> examples;
  int64_t skipped_too_long = 0;
  int64_t skipped_invalid = 0;
};

// Reads every non-blank line of `path`. Errors name "<path>:<line>:" and what is wrong (not JSON,
// no known form, a field of the wrong type, turns out of order, nothing to learn, too long).
TrainingData ReadJsonlExamples(const std::string& path, const Tokenizer& tokenizer,
                               const DataReadOptions& options);

// A seeded split: `fraction` of the examples (at least one when fraction > 0) held out, the rest
// kept in their file order. Errors when either part would be empty.
struct SplitData {
  std::vector<TrainingExample> train, held_out;
};
SplitData SplitHeldOut(std::vector<TrainingExample> examples, double fraction, uint64_t seed);

// Where the stream stands: the epoch, and how many examples of that epoch's order were consumed.
struct DataCursor {
  int64_t epoch = 0;
  int64_t position = 0;
};

// The order examples are read in: each epoch a seeded permutation (the same on every machine:
// SplitMix64 and Fisher-Yates, not the standard library's unspecified distributions), or the file
// order when shuffling is off. A row is one example or, packing, as many consecutive examples as
// fit in `max_length` tokens (whole examples only; each keeps its own positions and attends only
// to itself).
class BatchStream {
 public:
  BatchStream(const std::vector<TrainingExample>& examples, uint64_t seed, bool shuffle,
              bool packing, int64_t max_length, DataCursor start = {});
  std::vector<const TrainingExample*> NextRow();
  DataCursor cursor() const { return cursor_; }

 private:
  const TrainingExample& Peek();
  void Advance();

  const std::vector<TrainingExample>& examples_;
  uint64_t seed_;
  bool shuffle_, packing_;
  int64_t max_length_;
  DataCursor cursor_;
  std::vector<int64_t> order_;  // the current epoch's permutation
  int64_t order_epoch_ = -1;
};

// The rows' examples as one packed batch (each example its own sequence) and how many targets it
// has to learn.
PackedBatch PackExamples(const std::vector<const TrainingExample*>& examples);

// A seeded permutation of [0, n), identical on every platform.
std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed);

}  // namespace gemmapod
