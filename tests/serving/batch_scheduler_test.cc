// The continuous-batching scheduler against generation alone: many requests of different prompt
// lengths, joining while others decode, with prompts prefilled in pieces, give each the tokens it
// gets alone (greedy and seeded sampling); cancelled jobs leave and free their slots; a full queue
// refuses; and over two ranks (tp = 2 with the first stage's follower, pp = 2 with two lanes) the
// tokens equal one rank's. Run under mpiexec with 1 and 2 ranks.
#include "serving/engine/batch_scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <thread>

#include "models/gemma/gemma_random.h"
#include "models/gemma/model_config_yaml.h"
#include "runtime/comm/mpi_communicator.h"
#include "serving/engine/engine_driver.h"
#include "serving/engine/gemma_stage_model.h"
#include "serving/engine/generate.h"
#include "serving/engine/pipeline_engine.h"
#include "sharding/gemma_layout.h"

namespace gemmapod {
namespace {

constexpr uint64_t kWeightSeed = 11;

ModelConfig TestConfig() {
  // Gemma 2: sliding-window and global layers, soft-caps; four layers so pp = 2 splits them.
  ModelConfig c = LoadModelConfigYaml("configs/models/tiny-gemma2.yaml");
  c.num_layers = 4;
  c.layer_kinds = DefaultLayerKinds(c.architecture, c.num_layers);
  Validate(c, "tiny-gemma2");
  return c;
}

const Tokenizer& TestTokenizer() {
  static const Tokenizer t = Tokenizer::FromFile("tests/fixtures/tokenizer/tiny_gemma.model");
  return t;
}

// This rank's part of the model for `shape` over `comm`, in an engine of `slots` sequences.
struct Engine {
  // `poisoned`: the final norm's first weight is NaN, so every logit is.
  Engine(Communicator& comm, GridShape shape, int64_t slots, bool poisoned = false)
      : grid(ProcessGrid::Create(comm, shape)) {
    const ModelConfig config = TestConfig();
    const std::vector<LayerRange> stages = GemmaStageLayers(config, shape.tp, shape.pp, 4, nullptr);
    const GemmaShard shard = GemmaShardAt(config, grid.shape(), grid.coords(), stages);
    GemmaWeights weights = RandomGemmaShard(config, shard, DType::kF32, kWeightSeed);
    if (poisoned) weights.final_norm.data<float>()[0] = std::nanf("");
    GemmaStage stage(config, shard, std::move(weights), &grid.tp());
    const int64_t sampled = std::min<int64_t>(config.vocab_size, TestTokenizer().vocab_size());
    pipeline = std::make_unique<PipelineEngine>(
        grid, MakeGemmaStageModel(grid, std::move(stage), slots, 200), PipelineOptions{sampled});
  }
  ProcessGrid grid;
  std::unique_ptr<PipelineEngine> pipeline;
};

std::vector<int32_t> Prompt(size_t length, int salt) {
  std::vector<int32_t> p{2};
  for (size_t i = 1; i < length; ++i) {
    p.push_back(static_cast<int32_t>(3 + (i * 31 + static_cast<size_t>(salt) * 17) % 250));
  }
  return p;
}

std::vector<GenerationRequest> Requests() {
  std::vector<GenerationRequest> out;
  const size_t lengths[] = {3, 40, 7, 90, 1, 25, 60, 12, 33, 5, 71, 18};
  for (int i = 0; i < 12; ++i) {
    GenerationRequest r;
    r.prompt = Prompt(lengths[i], i);
    r.max_new_tokens = 6 + (i * 5) % 17;
    if (i % 3 == 1) {  // seeded sampling: the random stream must not see prompt pieces
      r.sampling.temperature = 0.9f;
      r.sampling.top_k = 40;
      r.sampling.seed = 100 + static_cast<uint64_t>(i);
    }
    if (i % 4 == 2) {
      r.sampling.presence_penalty = 0.7f;
      r.sampling.frequency_penalty = 0.4f;
    }
    out.push_back(r);
  }
  return out;
}

// Each request alone, on a one-rank engine over `self` (a group of this rank alone).
std::vector<std::vector<int32_t>> AloneTokens(Communicator& self,
                                              const std::vector<GenerationRequest>& requests) {
  std::vector<std::vector<int32_t>> out;
  for (const GenerationRequest& r : requests) {
    Engine e(self, GridShape{1, 1, 1}, 1);
    const auto results =
        GeneratePipelined(*e.pipeline, TestTokenizer(), {&r, 1}, [](size_t, std::string_view) {});
    out.push_back(results[0].tokens);
  }
  return out;
}

struct Outcome {
  std::vector<int32_t> tokens;
  std::string text;
  std::optional<FinishReason> finish;
  int finished_events = 0;
  std::string error;  // kFailed
};

std::vector<std::shared_ptr<ServeJob>> Jobs(const std::vector<GenerationRequest>& requests,
                                            std::vector<Outcome>& outcomes) {
  outcomes.assign(requests.size(), {});
  std::vector<std::shared_ptr<ServeJob>> jobs;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto job = std::make_shared<ServeJob>();
    job->request = requests[i];
    Outcome* o = &outcomes[i];
    job->on_event = [o](const JobEvent& e) {
      if (e.kind == JobEvent::Kind::kToken) {
        if (e.token >= 0) o->tokens.push_back(e.token);
        o->text += e.text;
      } else if (e.kind == JobEvent::Kind::kFinished) {
        o->finish = e.result->finish;
        ++o->finished_events;
      } else {
        o->error = std::string(e.error);
      }
    };
    jobs.push_back(std::move(job));
  }
  return jobs;
}

TEST(BatchScheduler, EveryRequestGetsWhatItGetsAloneWhileOthersJoinAndLeave) {
  auto world = MpiCommunicator::World();
  if (world->size() != 1) GTEST_SKIP() << "one-rank test";
  const std::vector<GenerationRequest> requests = Requests();
  const auto alone = AloneTokens(*world, requests);
  // 5 slots for 12 requests: most wait and join as others finish; pieces of 16 prompt tokens
  // per step, so the long prompts go in several pieces beside other sequences' decode steps.
  Engine e(*world, GridShape{1, 1, 1}, 5);
  EngineDriver driver(*e.pipeline, nullptr);
  BatchScheduler scheduler(driver, TestTokenizer(), SchedulerOptions{16, 100});
  std::vector<Outcome> outcomes;
  auto jobs = Jobs(requests, outcomes);
  // Half now, half while the first are running.
  ASSERT_EQ(scheduler.Enqueue({jobs.begin(), jobs.begin() + 6}),
            BatchScheduler::Admission::kAccepted);
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_EQ(scheduler.Enqueue({jobs.begin() + 6, jobs.end()}),
              BatchScheduler::Admission::kAccepted);
    scheduler.Drain();
  });
  scheduler.Run();
  late.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "request " << i);
    EXPECT_EQ(outcomes[i].tokens, alone[i]);
    EXPECT_EQ(outcomes[i].finished_events, 1);
    EXPECT_EQ(outcomes[i].text, TestTokenizer().Decode(alone[i]));
  }
  const SchedulerLoad load = scheduler.load();
  EXPECT_EQ(load.running, 0);
  EXPECT_EQ(load.waiting, 0);
  // Refused once drained.
  std::vector<Outcome> more;
  EXPECT_EQ(scheduler.Enqueue(Jobs(requests, more)), BatchScheduler::Admission::kDraining);
}

TEST(BatchScheduler, CancelledJobsLeaveAndFreeTheirSlots) {
  auto world = MpiCommunicator::World();
  if (world->size() != 1) GTEST_SKIP() << "one-rank test";
  std::vector<GenerationRequest> requests = Requests();
  for (auto& r : requests) r.max_new_tokens = 40;
  Engine e(*world, GridShape{1, 1, 1}, 3);
  EngineDriver driver(*e.pipeline, nullptr);
  BatchScheduler scheduler(driver, TestTokenizer(), SchedulerOptions{64, 100});
  std::vector<Outcome> outcomes;
  auto jobs = Jobs(requests, outcomes);
  // Job 0 cancels itself after 3 tokens; job 5 is cancelled while it waits.
  jobs[5]->cancelled = true;
  auto report = jobs[0]->on_event;
  ServeJob* first = jobs[0].get();
  jobs[0]->on_event = [report, first, count = 0](const JobEvent& ev) mutable {
    report(ev);
    if (ev.kind == JobEvent::Kind::kToken && ++count == 3) first->cancelled = true;
  };
  ASSERT_EQ(scheduler.Enqueue(jobs), BatchScheduler::Admission::kAccepted);
  scheduler.Drain();
  scheduler.Run();
  EXPECT_EQ(outcomes[0].finish, FinishReason::kCancelled);
  EXPECT_LE(outcomes[0].tokens.size(), 4u);  // one more may be in flight when it is noticed
  EXPECT_EQ(outcomes[5].finish, FinishReason::kCancelled);
  EXPECT_TRUE(outcomes[5].tokens.empty());
  for (size_t i = 0; i < outcomes.size(); ++i) {
    EXPECT_EQ(outcomes[i].finished_events, 1) << "request " << i;
    if (i != 0 && i != 5) {
      EXPECT_NE(outcomes[i].finish, FinishReason::kCancelled) << "request " << i;
    }
  }
  EXPECT_EQ(scheduler.load().running, 0);
}

TEST(BatchScheduler, AFullQueueRefusesAllOfARequestsChoices) {
  auto world = MpiCommunicator::World();
  if (world->size() != 1) GTEST_SKIP() << "one-rank test";
  Engine e(*world, GridShape{1, 1, 1}, 2);
  EngineDriver driver(*e.pipeline, nullptr);
  BatchScheduler scheduler(driver, TestTokenizer(), SchedulerOptions{64, 3});
  const std::vector<GenerationRequest> requests = Requests();
  std::vector<Outcome> a, b, c;
  // 2 slots + 3 waiting: 4 fit, then 2 more do not (and neither joins), then 1 does.
  EXPECT_EQ(scheduler.Enqueue(Jobs({requests.begin(), requests.begin() + 4}, a)),
            BatchScheduler::Admission::kAccepted);
  EXPECT_EQ(scheduler.Enqueue(Jobs({requests.begin(), requests.begin() + 2}, b)),
            BatchScheduler::Admission::kQueueFull);
  EXPECT_EQ(scheduler.load().waiting, 4);
  EXPECT_EQ(scheduler.Enqueue(Jobs({requests.begin(), requests.begin() + 1}, c)),
            BatchScheduler::Admission::kAccepted);
  // Six at once could never fit 2 slots and 3 places in the queue.
  std::vector<Outcome> d;
  EXPECT_EQ(scheduler.Enqueue(Jobs({requests.begin(), requests.begin() + 6}, d)),
            BatchScheduler::Admission::kNeverFits);
  scheduler.Drain();
  scheduler.Run();
  for (const auto& o : a) EXPECT_EQ(o.finished_events, 1);
  for (const auto& o : b) EXPECT_EQ(o.finished_events, 0);
  EXPECT_EQ(c[0].finished_events, 1);
}

// A one-rank engine that fails mid-step (non-finite logits met by the sampler) fails the jobs of
// that micro-batch with the message, frees their slots, and the scheduler goes on with the rest.
TEST(BatchScheduler, AnEngineFailureFailsItsJobsAndTheSchedulerGoesOn) {
  auto world = MpiCommunicator::World();
  if (world->size() != 1) GTEST_SKIP() << "one-rank test";
  Engine e(*world, GridShape{1, 1, 1}, 2, /*poisoned=*/true);
  EngineDriver driver(*e.pipeline, nullptr);
  BatchScheduler scheduler(driver, TestTokenizer(), SchedulerOptions{64, 100});
  const std::vector<GenerationRequest> requests = Requests();
  std::vector<Outcome> outcomes;
  ASSERT_EQ(scheduler.Enqueue(Jobs({requests.begin(), requests.begin() + 5}, outcomes)),
            BatchScheduler::Admission::kAccepted);
  scheduler.Drain();
  scheduler.Run();
  for (size_t i = 0; i < outcomes.size(); ++i) {
    EXPECT_THAT(outcomes[i].error, testing::HasSubstr("NaN")) << "request " << i;
    EXPECT_TRUE(outcomes[i].tokens.empty());
  }
  EXPECT_EQ(scheduler.load().running, 0);
  EXPECT_EQ(scheduler.load().waiting, 0);
}

// tp = 2 (the first stage's second rank follows the leader's calls) and pp = 2 (two lanes in
// flight): the tokens of one rank.
TEST(BatchScheduler, ShardedLayoutsGiveOneRanksTokens) {
  auto world = MpiCommunicator::World();
  if (world->size() != 2) GTEST_SKIP() << "two-rank test";
  const std::vector<GenerationRequest> requests = Requests();
  std::unique_ptr<Communicator> self = world->Split(world->rank(), 0);
  std::vector<std::vector<int32_t>> alone;
  if (world->rank() == 0) alone = AloneTokens(*self, requests);
  for (const GridShape shape : {GridShape{2, 1, 1}, GridShape{1, 2, 1}}) {
    SCOPED_TRACE(testing::Message() << "tp=" << shape.tp << " pp=" << shape.pp);
    Engine e(*world, shape, 4);
    if (!e.pipeline->is_driver()) {
      e.pipeline->Serve();
      continue;
    }
    EngineDriver driver(*e.pipeline, &e.grid.tp());
    if (!driver.leads()) {
      driver.Follow();
      continue;
    }
    BatchScheduler scheduler(driver, TestTokenizer(), SchedulerOptions{16, 100});
    std::vector<Outcome> outcomes;
    ASSERT_EQ(scheduler.Enqueue(Jobs(requests, outcomes)), BatchScheduler::Admission::kAccepted);
    scheduler.Drain();
    scheduler.Run();
    for (size_t i = 0; i < requests.size(); ++i) {
      EXPECT_EQ(outcomes[i].tokens, alone[i]) << "request " << i;
    }
  }
}

}  // namespace
}  // namespace gemmapod
