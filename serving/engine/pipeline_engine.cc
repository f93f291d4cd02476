#include "serving/engine/pipeline_engine.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <exception>

#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "runtime/ops/ops.h"
#include "serving/engine/chunk_wire.h"
#include "serving/shard_sampler.h"
#include "sharding/process_grid.h"

namespace gemmapod {
namespace {

// Message tags on the pipeline communicator.
constexpr int kHeaderTag = 101;
constexpr int kPayloadTag = 102;
constexpr int kActivationTag = 103;
constexpr int kResultTag = 104;

constexpr int32_t kEnd = 0;  // header kind: no more work

Tensor Header(int32_t kind, int64_t chunks, int64_t payload_words) {
  Tensor t = Tensor::Empty({3}, DType::kI32);
  t.data<int32_t>()[0] = kind;
  t.data<int32_t>()[1] = static_cast<int32_t>(chunks);
  t.data<int32_t>()[2] = static_cast<int32_t>(payload_words);
  return t;
}

bool ValidOutput(int32_t kind) {
  return kind >= static_cast<int32_t>(StageOutput::kNone) &&
         kind <= static_cast<int32_t>(StageOutput::kSample);
}

}  // namespace

Tensor LastTokenRows(const Tensor& h, std::span<const SequenceChunk> chunks) {
  const int64_t d = h.dim(1);
  Tensor last = Tensor::Empty({static_cast<int64_t>(chunks.size()), d}, DType::kF32, h.device());
  std::vector<int64_t> rows(chunks.size());
  int64_t end = 0;
  for (size_t b = 0; b < chunks.size(); ++b) {
    end += static_cast<int64_t>(chunks[b].tokens.size());
    rows[b] = end - 1;
  }
  ops::GatherRows(h, nullptr, rows, 1.0f, last);
  return last;
}

PipelineEngine::PipelineEngine(const ProcessGrid& grid, std::unique_ptr<StageModel> model,
                               const PipelineOptions& options)
    : PipelineEngine(grid.tp(), grid.pp(), std::move(model), options) {}

PipelineEngine::PipelineEngine(Communicator& tp, Communicator& pp,
                               std::unique_ptr<StageModel> model, const PipelineOptions& options)
    : model_(std::move(model)),
      tp_(tp),
      pp_(pp),
      stages_(pp.size()),
      stage_index_(pp.rank()),
      sampled_vocab_(options.sampled_vocab > 0 ? options.sampled_vocab : model_->vocab_size()) {
  GEMMAPOD_CHECK(sampled_vocab_ <= model_->vocab_size(), "pipeline: ", sampled_vocab_,
                 " sampled ids exceed the vocabulary of ", model_->vocab_size());
}

PipelineEngine::~PipelineEngine() = default;

void PipelineEngine::Reset(int64_t sequence) { model_->Reset(sequence); }

void PipelineEngine::Submit(StageOutput output, std::span<const SequenceChunk> chunks,
                            std::span<const SamplingParams> sampling) {
  GEMMAPOD_CHECK(sampling.empty() || sampling.size() == chunks.size(),
                 "pipeline: ", sampling.size(), " sampling settings for ", chunks.size(),
                 " chunks");
  std::vector<Chunk> work;
  for (size_t i = 0; i < chunks.size(); ++i) {
    Chunk& c = work.emplace_back();
    c.tokens = chunks[i];
    if (!sampling.empty()) c.sampling = sampling[i];
  }
  Submit(output, work);
}

// Words per chunk of a kSample result: the token, then (when some chunk asks) its log-probability
// and k (id, log-probability) pairs, k the most any chunk asks for.
int64_t SampleWidth(std::span<const WireChunk> chunks) {
  int32_t k = -1;
  for (const WireChunk& c : chunks) k = std::max(k, c.sample ? c.top_logprobs : -1);
  return k < 0 ? 1 : 2 + 2 * static_cast<int64_t>(k);
}

void PipelineEngine::Submit(StageOutput output, std::span<const Chunk> chunks) {
  GEMMAPOD_CHECK(is_driver(), "pipeline: only the first stage submits work");
  std::vector<Chunk> work(chunks.begin(), chunks.end());
  int64_t rows = 0;
  for (const Chunk& c : work) {
    GEMMAPOD_CHECK(output == StageOutput::kSample || (c.sample && c.top_logprobs < 0),
                   "pipeline: sample flags and log-probabilities go with kSample only");
    GEMMAPOD_CHECK(c.top_logprobs >= -1 && c.top_logprobs <= kMaxTopLogprobs,
                   "pipeline: top_logprobs ", c.top_logprobs, " outside [-1, ", kMaxTopLogprobs,
                   "]");
    Validate(c.sampling);
    rows += output == StageOutput::kAllLogits ? static_cast<int64_t>(c.tokens.tokens.size()) : 1;
  }
  // Checked (and embedded, which checks the ids) here, before any stage has seen the
  // micro-batch: a bad request fails on the driver without leaving the other stages half-way
  // through it.
  std::vector<SequenceChunk> plain;
  std::vector<int32_t> tokens;
  for (Chunk& c : work) {
    c.start = c.cached.empty() ? model_->length(c.tokens.sequence)
                               : static_cast<int64_t>(c.cached.size());
    Prepare(c);
    plain.push_back(c.tokens);
    tokens.insert(tokens.end(), c.tokens.tokens.begin(), c.tokens.tokens.end());
  }
  model_->Check(plain);
  Tensor h = model_->Embed(tokens);
  if (output != StageOutput::kNone) {
    expected_.push_back({output, rows, output == StageOutput::kSample ? SampleWidth(work) : 0});
  }
  try {
    Process(output, work, std::move(h));
  } catch (...) {
    // A one-stage engine that failed (a non-finite logit met by the sampler) delivers nothing:
    // its caller may go on without a result it would wait for forever.
    if (stages_ == 1 && output != StageOutput::kNone) expected_.pop_back();
    throw;
  }
}

void PipelineEngine::Prepare(const Chunk& c) {
  const int64_t sequence = c.tokens.sequence;
  // A sequence begins: from position 0, or on a cached prefix.
  if (c.start == 0 || !c.cached.empty()) model_->Reset(sequence);
  for (int g = 0; g < kKvGroups; ++g) {
    if (!c.kv_blocks[g].empty()) {
      model_->AssignKv(sequence, static_cast<KvGroup>(g), c.kv_first[g], c.kv_blocks[g]);
    }
  }
  if (!c.cached.empty()) model_->PlaceKv(sequence, c.start);
  if (!c.encoder.empty()) {
    GEMMAPOD_CHECK(c.start == 0, "pipeline stage ", stage_index_, ": encoder input for sequence ",
                   sequence, " at position ", c.start, " (it goes with the first chunk)");
    model_->BeginSequence(sequence, c.encoder);
  }
  GEMMAPOD_CHECK(c.start == model_->length(sequence), "pipeline stage ", stage_index_,
                 ": sequence ", sequence, " arrives at position ", c.start, " but holds ",
                 model_->length(sequence), " tokens");
}

void PipelineEngine::Process(StageOutput output, std::vector<Chunk>& chunks, Tensor h) {
  std::vector<SequenceChunk> plain;
  for (Chunk& c : chunks) {
    if (!is_driver()) Prepare(c);  // the driver prepared them when it submitted
    plain.push_back(c.tokens);
  }
  model_->Forward(h, plain);

  if (stage_index_ + 1 < stages_) {
    std::vector<int32_t> payload;
    for (const Chunk& c : chunks) AppendChunkWords(c, payload);
    const int64_t n = static_cast<int64_t>(payload.size());
    pp_.Send(Header(static_cast<int32_t>(output), static_cast<int64_t>(chunks.size()), n),
             stage_index_ + 1, kHeaderTag);
    pp_.Send(Tensor::Borrow(payload.data(), {n}, DType::kI32), stage_index_ + 1, kPayloadTag);
    pp_.Send(h, stage_index_ + 1, kActivationTag);
    return;
  }
  // The last stage keeps each sequence's tokens for the repetition penalty, and its sampler from
  // the first chunk that asks for a sample (a prompt may arrive in pieces that do not).
  for (const Chunk& c : chunks) {
    SequenceSampling& s = sampling_[c.tokens.sequence];
    if (c.start == 0 || !c.cached.empty()) {
      s.sampler.reset();
      s.context = c.cached;
    }
    s.context.insert(s.context.end(), c.tokens.tokens.begin(), c.tokens.tokens.end());
    if (output == StageOutput::kSample && c.sample && s.sampler == nullptr) {
      s.sampler = std::make_unique<ShardSampler>(c.sampling, &tp_);
    }
  }
  if (output == StageOutput::kNone) return;
  Deliver(Finalise(output, chunks, h));
}

Tensor PipelineEngine::Finalise(StageOutput output, const std::vector<Chunk>& chunks,
                                const Tensor& h) {
  if (output == StageOutput::kAllLogits) return model_->GatherLogits(model_->LogitShard(h));
  std::vector<SequenceChunk> plain;
  for (const Chunk& c : chunks) plain.push_back(c.tokens);
  const Tensor shard = model_->LogitShard(LastTokenRows(h, plain));
  if (output == StageOutput::kLastLogits) return model_->GatherLogits(shard);
  const int64_t width = shard.dim(1);
  const int64_t n = static_cast<int64_t>(chunks.size());
  const int64_t words = SampleWidth(chunks);
  Tensor samples = Tensor::Empty({n, words}, DType::kI32);
  std::fill_n(samples.data<int32_t>(), n * words, -1);
  // Each sequence has its own sampler: on a tensor-parallel group of one they share nothing and
  // draw in parallel (a continuous batch samples a whole vocabulary per sequence per step); over
  // a group they exchange candidates, so every rank goes through them in the same order.
  const bool alone = tp_.size() == 1;
  std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic) if (alone && n > 1)
  for (int64_t i = 0; i < n; ++i) {
    const Chunk& c = chunks[static_cast<size_t>(i)];
    if (!c.sample) continue;
    try {
      SequenceSampling& s = sampling_.at(c.tokens.sequence);
      const std::span<const float> row(shard.data<float>() + i * width, static_cast<size_t>(width));
      int32_t* out = samples.data<int32_t>() + i * words;
      out[0] = s.sampler->Sample(row, model_->vocab_begin(), sampled_vocab_, s.context);
      if (c.top_logprobs >= 0) {
        const TokenLogProbs lp = ShardLogProbs(row, model_->vocab_begin(), sampled_vocab_, out[0],
                                               c.top_logprobs, alone ? nullptr : &tp_);
        out[1] = std::bit_cast<int32_t>(lp.logprob);
        for (size_t j = 0; j < lp.top.size(); ++j) {
          out[2 + 2 * j] = lp.top[j].first;
          out[3 + 2 * j] = std::bit_cast<int32_t>(lp.top[j].second);
        }
      }
    } catch (...) {
#pragma omp critical(gemmapod_sampling_failure)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  return samples;
}

void PipelineEngine::Deliver(Tensor result) {
  if (stages_ == 1) {
    local_results_.push_back(std::move(result));
    return;
  }
  // Finished sends are dropped; unfinished ones wait for the driver to take their results. Never
  // blocking here is what keeps the driver free to send more work while results pile up.
  while (!pending_.empty() && pending_.front()->Done()) pending_.pop_front();
  pending_.push_back(pp_.SendAsync(result, 0, kResultTag));
}

Tensor PipelineEngine::TakeLogits() {
  GEMMAPOD_CHECK(!expected_.empty() && expected_.front().output != StageOutput::kSample,
                 "pipeline: no logits are on their way");
  const Expected e = expected_.front();
  expected_.pop_front();
  if (stages_ == 1) {
    Tensor t = std::move(local_results_.front());
    local_results_.pop_front();
    return t;
  }
  Tensor t = Tensor::Empty({e.rows, model_->vocab_size()}, DType::kF32);
  pp_.Recv(t, stages_ - 1, kResultTag);
  return t;
}

std::vector<SampledToken> PipelineEngine::TakeSamples() {
  GEMMAPOD_CHECK(!expected_.empty() && expected_.front().output == StageOutput::kSample,
                 "pipeline: no sampled tokens are on their way");
  const Expected e = expected_.front();
  expected_.pop_front();
  Tensor t;
  if (stages_ == 1) {
    t = std::move(local_results_.front());
    local_results_.pop_front();
  } else {
    t = Tensor::Empty({e.rows, e.width}, DType::kI32);
    pp_.Recv(t, stages_ - 1, kResultTag);
  }
  std::vector<SampledToken> out(static_cast<size_t>(e.rows));
  for (int64_t i = 0; i < e.rows; ++i) {
    const int32_t* w = t.data<int32_t>() + i * e.width;
    SampledToken& s = out[static_cast<size_t>(i)];
    s.id = w[0];
    if (e.width == 1) continue;
    s.logprob = std::bit_cast<float>(w[1]);
    for (int64_t j = 2; j + 1 < e.width && w[j] >= 0; j += 2) {
      s.top.push_back({w[j], std::bit_cast<float>(w[j + 1])});
    }
  }
  return out;
}

std::vector<int32_t> PipelineEngine::TakeTokens() {
  std::vector<int32_t> ids;
  for (const SampledToken& s : TakeSamples()) ids.push_back(s.id);
  return ids;
}

void PipelineEngine::Finish() {
  GEMMAPOD_CHECK(is_driver(), "pipeline: only the first stage finishes");
  // Results nobody took are still received: the last stage waits for its sends to complete.
  while (!expected_.empty()) {
    if (expected_.front().output == StageOutput::kSample) {
      TakeTokens();
    } else {
      TakeLogits();
    }
  }
  if (stages_ > 1) pp_.Send(Header(kEnd, 0, 0), 1, kHeaderTag);
  model_->Finish();
}

void PipelineEngine::Serve() {
  GEMMAPOD_CHECK(!is_driver(), "pipeline: the first stage drives; it does not serve");
  const int previous = stage_index_ - 1;
  const int64_t d = model_->hidden_size();
  for (;;) {
    Tensor header = Tensor::Empty({3}, DType::kI32);
    WaitForMessage(pp_, previous, kHeaderTag);  // idle between requests without spinning
    pp_.Recv(header, previous, kHeaderTag);
    const int32_t kind = header.data<int32_t>()[0];
    const int64_t n_chunks = header.data<int32_t>()[1], words = header.data<int32_t>()[2];
    if (kind == kEnd) {
      if (stage_index_ + 1 < stages_) pp_.Send(header, stage_index_ + 1, kHeaderTag);
      for (auto& p : pending_) p->Wait();
      pending_.clear();
      return;
    }
    GEMMAPOD_CHECK(ValidOutput(kind) && n_chunks > 0 && words >= n_chunks * kChunkHeaderWords,
                   "pipeline stage ", stage_index_, ": malformed micro-batch header (kind ", kind,
                   ", ", n_chunks, " chunks, ", words, " words)");
    Tensor payload = Tensor::Empty({words}, DType::kI32);
    pp_.Recv(payload, previous, kPayloadTag);
    std::vector<Chunk> chunks =
        ParseChunkWords({payload.data<int32_t>(), static_cast<size_t>(words)}, n_chunks,
                        StrCat("pipeline stage ", stage_index_));
    int64_t total = 0;
    for (const Chunk& c : chunks) total += static_cast<int64_t>(c.tokens.tokens.size());
    Tensor h = Tensor::Empty({total, d}, DType::kF32);
    pp_.Recv(h, previous, kActivationTag);
    Process(static_cast<StageOutput>(kind), chunks, std::move(h));
  }
}

std::vector<std::pair<int64_t, int64_t>> PromptPieces(int64_t tokens, int stages) {
  const int64_t k = stages <= 1 ? 1
                                : std::clamp<int64_t>(tokens / kMinPromptPiece, 1,
                                                      4 * static_cast<int64_t>(stages));
  std::vector<std::pair<int64_t, int64_t>> cuts;
  for (int64_t i = 0; i < k; ++i) cuts.push_back({tokens * i / k, tokens * (i + 1) / k});
  return cuts;
}

std::vector<std::pair<int64_t, int64_t>> PipelineEngine::PromptPieces(int64_t tokens) const {
  return gemmapod::PromptPieces(tokens, stages_);
}

Tensor PipelineEngine::Forward(std::span<const SequenceChunk> batch, bool all_tokens) {
  if (!is_driver()) {
    Serve();
    return {};
  }
  GEMMAPOD_CHECK(!batch.empty(), "forward: empty batch");
  int64_t total = 0;
  for (const SequenceChunk& c : batch) total += static_cast<int64_t>(c.tokens.size());
  // Micro-batches: groups of sequences, or a lone long prompt cut into pieces (PromptPieces).
  struct Piece {
    std::vector<SequenceChunk> chunks;
    StageOutput output;
  };
  std::vector<Piece> pieces;
  const StageOutput rows = all_tokens ? StageOutput::kAllLogits : StageOutput::kLastLogits;
  const std::vector<std::pair<int64_t, int64_t>> cuts = PromptPieces(total);
  if (batch.size() == 1 && cuts.size() > 1) {
    const std::vector<int32_t>& t = batch[0].tokens;
    for (size_t i = 0; i < cuts.size(); ++i) {
      const auto [b, e] = cuts[i];
      const bool last = i + 1 == cuts.size();
      pieces.push_back({{SequenceChunk{batch[0].sequence, {t.begin() + b, t.begin() + e}}},
                        all_tokens || last ? rows : StageOutput::kNone});
    }
  } else {
    const size_t groups = std::min<size_t>(batch.size(), static_cast<size_t>(stages_));
    for (size_t g = 0; g < groups; ++g) {
      const size_t b = batch.size() * g / groups, e = batch.size() * (g + 1) / groups;
      pieces.push_back(
          {{batch.begin() + static_cast<ptrdiff_t>(b), batch.begin() + static_cast<ptrdiff_t>(e)},
           rows});
    }
  }
  for (const Piece& piece : pieces) Submit(piece.output, piece.chunks);
  std::vector<Tensor> parts;
  int64_t out_rows = 0;
  for (const Piece& piece : pieces) {
    if (piece.output == StageOutput::kNone) continue;
    parts.push_back(TakeLogits());
    out_rows += parts.back().dim(0);
  }
  Finish();
  const int64_t V = model_->vocab_size();
  Tensor logits = Tensor::Empty({out_rows, V}, DType::kF32);
  int64_t at = 0;
  for (const Tensor& part : parts) {
    std::memcpy(logits.data<float>() + at * V, part.data<float>(), part.nbytes());
    at += part.dim(0);
  }
  return logits;
}

}  // namespace gemmapod
