#include "serving/engine/generate.h"

#include <chrono>

#include "runtime/error.h"
#include "serving/engine/batch_scheduler.h"
#include "serving/engine/engine_driver.h"

namespace gemmapod {

std::vector<GenerationResult> GeneratePipelined(
    PipelineEngine& pipeline, const Tokenizer& tokenizer,
    std::span<const GenerationRequest> requests,
    const std::function<void(size_t, std::string_view)>& on_text) {
  using Clock = std::chrono::steady_clock;
  const size_t n = requests.size();
  GEMMAPOD_CHECK(static_cast<int64_t>(n) <= pipeline.max_sequences(), "generate: ", n,
                 " requests but the pipeline has ", pipeline.max_sequences(), " sequence slots");
  int64_t prompt_tokens = 0;
  for (const GenerationRequest& r : requests) {
    CheckRequest(r, pipeline.max_context(), "the pipeline's context");
    prompt_tokens += static_cast<int64_t>(r.prompt.size());
  }
  // Every prompt in one step, except a lone prompt on several stages, which goes in pieces
  // (PromptPieces) so that every stage works on it at once.
  int64_t prefill = std::max<int64_t>(prompt_tokens, 1);
  if (n == 1) {
    const auto cuts = pipeline.PromptPieces(prompt_tokens);
    prefill = cuts.front().second - cuts.front().first;
  }
  // No mirroring: every rank of the first stage runs this same schedule, which depends on the
  // requests alone (all queued before it starts, none cancelled).
  EngineDriver driver(pipeline, nullptr);
  BatchScheduler scheduler(driver, tokenizer, SchedulerOptions{prefill, static_cast<int64_t>(n)});

  const auto start = Clock::now();
  std::vector<GenerationResult> results(n);
  std::vector<Clock::time_point> first_token(n, start);
  std::vector<bool> started(n, false);
  std::string failure;  // the first job that failed (non-finite logits): the run fails with it
  std::vector<std::shared_ptr<ServeJob>> jobs;
  for (size_t i = 0; i < n; ++i) {
    auto job = std::make_shared<ServeJob>();
    job->request = requests[i];
    job->on_event = [&, i](const JobEvent& e) {
      if (e.kind == JobEvent::Kind::kToken) {
        if (!started[i]) {
          started[i] = true;
          first_token[i] = Clock::now();
        }
        if (!e.text.empty()) on_text(i, e.text);
      } else if (e.kind == JobEvent::Kind::kFinished) {
        if (!started[i]) first_token[i] = Clock::now();  // a stop token came first
        results[i] = *e.result;
        results[i].prefill_seconds = std::chrono::duration<double>(first_token[i] - start).count();
        results[i].decode_seconds =
            std::chrono::duration<double>(Clock::now() - first_token[i]).count();
      } else if (failure.empty()) {
        failure = StrCat("generate: request ", i, ": ", e.error);
      }
    };
    jobs.push_back(std::move(job));
  }
  GEMMAPOD_CHECK(scheduler.Enqueue(jobs) == BatchScheduler::Admission::kAccepted,
                 "generate: the scheduler refused the requests");
  scheduler.Drain();
  scheduler.Run();  // finishes the pipeline: the other stages return from Serve()
  GEMMAPOD_CHECK(failure.empty(), failure);
  return results;
}

}  // namespace gemmapod
