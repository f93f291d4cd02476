#include "serving/engine/engine_driver.h"

#include <algorithm>

#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "serving/engine/pipeline_engine.h"

namespace gemmapod {
namespace {

constexpr int kCallTag = 401;  // leader -> follower: an engine call (and 402: its words)

// A micro-batch that wants no token at all (pieces of prompts only) goes as kNone: no result
// comes back for it, so the caller may submit the next one at once.
bool SubmitTo(PipelineEngine& engine, std::span<const WireChunk> chunks) {
  const bool any =
      std::any_of(chunks.begin(), chunks.end(), [](const WireChunk& c) { return c.sample; });
  if (!any) {
    std::vector<WireChunk> plain(chunks.begin(), chunks.end());
    for (WireChunk& c : plain) {  // kNone asks nothing of any chunk
      c.sample = true;
      c.top_logprobs = -1;
    }
    engine.Submit(StageOutput::kNone, plain);
    return false;
  }
  engine.Submit(StageOutput::kSample, chunks);
  return true;
}

}  // namespace

EngineDriver::EngineDriver(PipelineEngine& engine, Communicator* stage_tp)
    : engine_(engine), tp_(stage_tp != nullptr && stage_tp->size() > 1 ? stage_tp : nullptr) {
  GEMMAPOD_CHECK(engine_.is_driver(), "serve: the engine driver runs on the first stage");
}

bool EngineDriver::leads() const { return tp_ == nullptr || tp_->rank() == 0; }
bool EngineDriver::alone() const { return tp_ == nullptr && engine_.stages() == 1; }
int EngineDriver::stages() const { return engine_.stages(); }
int64_t EngineDriver::max_sequences() const { return engine_.max_sequences(); }
int64_t EngineDriver::max_context() const { return engine_.max_context(); }
KvPool EngineDriver::kv_pool() const { return engine_.model().kv_pool(); }

// The leader sends each call to every follower (point to point rather than a broadcast, so
// an idle follower can wait for it without spinning: WaitForMessage).
void EngineDriver::SendToFollowers(Op op, int64_t count, std::vector<int32_t> words) {
  if (tp_ == nullptr) return;
  Tensor header = Tensor::Empty({3}, DType::kI32);
  header.data<int32_t>()[0] = op;
  header.data<int32_t>()[1] = static_cast<int32_t>(count);
  header.data<int32_t>()[2] = static_cast<int32_t>(words.size());
  const Tensor payload =
      Tensor::Borrow(words.data(), {static_cast<int64_t>(words.size())}, DType::kI32);
  for (int r = 1; r < tp_->size(); ++r) {
    tp_->Send(header, r, kCallTag);
    if (!words.empty()) tp_->Send(payload, r, kCallTag + 1);
  }
}

void EngineDriver::Reset(int64_t sequence) {
  SendToFollowers(kReset, sequence, {});
  engine_.Reset(sequence);
}

bool EngineDriver::Submit(std::span<const WireChunk> chunks) {
  std::vector<int32_t> words;
  for (const WireChunk& c : chunks) AppendChunkWords(c, words);
  SendToFollowers(kSubmit, static_cast<int64_t>(chunks.size()), std::move(words));
  return SubmitTo(engine_, chunks);
}

std::vector<SampledToken> EngineDriver::TakeSamples() {
  SendToFollowers(kTake, 0, {});
  return engine_.TakeSamples();
}

void EngineDriver::Finish() {
  SendToFollowers(kFinish, 0, {});
  engine_.Finish();
}

void EngineDriver::Follow() {
  GEMMAPOD_CHECK(!leads(), "serve: the leader of the first stage does not follow");
  for (;;) {
    Tensor header = Tensor::Empty({3}, DType::kI32);
    WaitForMessage(*tp_, 0, kCallTag);
    tp_->Recv(header, 0, kCallTag);
    const int32_t op = header.data<int32_t>()[0];
    const int64_t count = header.data<int32_t>()[1], n = header.data<int32_t>()[2];
    GEMMAPOD_CHECK(n >= 0, "serve follower: a call of ", n, " words");
    std::vector<int32_t> words(static_cast<size_t>(n));
    if (n > 0) {
      Tensor payload = Tensor::Borrow(words.data(), {n}, DType::kI32);
      tp_->Recv(payload, 0, kCallTag + 1);
    }
    switch (op) {
      case kReset:
        engine_.Reset(count);
        break;
      case kSubmit: {
        SubmitTo(engine_, ParseChunkWords(words, count, "serve follower"));
        break;
      }
      case kTake:
        engine_.TakeSamples();
        break;
      case kFinish:
        engine_.Finish();
        return;
      default:
        throw Error(StrCat("serve follower: unknown engine call ", op));
    }
  }
}

}  // namespace gemmapod
