// `gemmapod serve`: the OpenAI-compatible server (serving/server/) over a sharded model.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "launch/families.h"
#include "launch/model_files.h"
#include "launch/rank_runner.h"
#include "launch/serve_engine.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "serving/engine/batch_scheduler.h"
#include "serving/engine/engine_driver.h"
#include "serving/engine/pipeline_engine.h"
#include "serving/engine/replica_router.h"
#include "serving/server/server_metrics.h"

namespace gemmapod {
namespace {

std::atomic<bool> g_stop_requested{false};

void OnStopSignal(int) { g_stop_requested.store(true); }

// Rank 0 drains on SIGTERM or SIGINT. The other ranks ignore them (mpirun passes a signal to every
// rank): they stop when rank 0 finishes the pipeline, not half-way through a step.
void InstallSignalHandlers(bool leader) {
  std::signal(SIGPIPE, SIG_IGN);  // a vanished client is a failed write, not a dead server
  if (leader) {
    std::signal(SIGTERM, OnStopSignal);
    std::signal(SIGINT, OnStopSignal);
  } else {
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);
  }
}

std::string ApiKey(const ServeOptions& o) {
  if (!o.api_key_file.empty()) {
    std::ifstream in(o.api_key_file);
    GEMMAPOD_CHECK(in.good(), "serve: cannot read --api-key-file ", o.api_key_file);
    std::stringstream text;
    text << in.rdbuf();
    std::string key = text.str();
    while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ')) {
      key.pop_back();
    }
    GEMMAPOD_CHECK(!key.empty(), "serve: --api-key-file ", o.api_key_file, " is empty");
    return key;
  }
  const char* env = std::getenv("GEMMAPOD_API_KEY");
  return env == nullptr ? "" : env;
}

void CheckServeOptions(const ServeOptions& o) {
  GEMMAPOD_CHECK(o.port >= 0 && o.port <= 65535, "serve: --port must be in [0, 65535], got ",
                 o.port);
  GEMMAPOD_CHECK(o.parallel >= 1 && o.parallel <= 4096,
                 "serve: --parallel must be in [1, 4096], got ", o.parallel);
  GEMMAPOD_CHECK(o.context >= 2, "serve: --context must be at least 2 tokens, got ", o.context);
  GEMMAPOD_CHECK(o.prefill_chunk >= 1, "serve: --prefill-chunk must be positive, got ",
                 o.prefill_chunk);
  GEMMAPOD_CHECK(o.max_queue >= 0, "serve: --max-queue must be >= 0, got ", o.max_queue);
  GEMMAPOD_CHECK(o.kv_block >= 1 && o.kv_block <= 1024,
                 "serve: --kv-block must be in [1, 1024], got ", o.kv_block);
  GEMMAPOD_CHECK(o.kv_tokens >= 0 && o.kv_tokens <= (int64_t{1} << 31),
                 "serve: --kv-tokens must be in [0, 2^31], got ", o.kv_tokens);
  GEMMAPOD_CHECK(o.timeout > 0, "serve: --timeout must be positive, got ", o.timeout);
  GEMMAPOD_CHECK(o.max_body_kib >= 1 && o.max_body_kib <= (1 << 20),
                 "serve: --max-body-kib must be in [1, 1048576], got ", o.max_body_kib);
}

}  // namespace

void RefuseKvPoolFlags(const ServeOptions& o, const std::string& family) {
  GEMMAPOD_CHECK(o.kv_tokens == 0 && o.kv_block == kDefaultKvBlockTokens, "serve: --kv-tokens and ",
                 "--kv-block size the paged KV cache of Gemma models; a ", family,
                 " server keeps a fixed state slot per sequence (size it with --parallel and "
                 "--context)");
}

std::string ServedModelName(const ServeOptions& o) {
  if (!o.model_name.empty()) return o.model_name;
  return std::filesystem::path(o.files.model_path).stem().string();
}

int ServeOnRanks(const ServeOptions& o, Communicator& world,
                 const std::function<void(ServePlan&)>& check,
                 const std::function<ShardedRun()>& load) {
  bool leader = false;
  ServerMetrics metrics;
  std::unique_ptr<OpenAiServer> server;
  ServePlan plan;
  int port = 0;
  CheckOnEveryRank(world, [&] {
    CheckServeOptions(o);
    check(plan);
    leader = world.rank() == plan.leader_rank;
    plan.model.name = ServedModelName(o);
    plan.model.created = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
    if (leader) {
      // Listening before the model loads: /health answers "loading" meanwhile.
      ServerOptions http;
      http.host = o.host;
      http.port = o.port;
      http.api_key = ApiKey(o);
      http.max_body_bytes = static_cast<size_t>(o.max_body_kib) * 1024;
      http.request_timeout_seconds = o.timeout;
      server = std::make_unique<OpenAiServer>(http, metrics);
      port = server->Start();
    }
  });
  InstallSignalHandlers(leader);
  if (leader) {
    std::fprintf(stderr, "serve: listening on http://%s:%d (pid %d; loading %s)\n", o.host.c_str(),
                 port, static_cast<int>(getpid()), o.files.model_path.c_str());
  }
  ShardedRun run = load();
  PipelineEngine* const engine_here = run.pipeline ? run.pipeline.get() : run.engine;
  if (engine_here == nullptr) {  // a rank outside the engine (T5Gemma's encoder)
    run.serve_outside_engine();
    return 0;
  }
  PipelineEngine& engine = *engine_here;
  if (!engine.is_driver()) {
    engine.Serve();
    return 0;
  }
  EngineDriver driver(engine, run.grid ? &run.grid->tp() : run.stage_tp);
  if (!driver.leads()) {
    driver.Follow();
    return 0;
  }
  BatchScheduler scheduler(driver, *plan.tokenizer,
                           SchedulerOptions{o.prefill_chunk, o.max_queue, o.prefix_caching});
  const GridShape shape = run.grid ? run.grid->shape() : GridShape{1, 1, 1};
  if (!leader) {
    // Another replica's leader: rank 0 deals it jobs.
    ServeReplica(world, scheduler);
    return 0;
  }
  std::unique_ptr<ReplicaRouter> router;
  JobQueue* queue = &scheduler;
  if (shape.dp > 1) {
    std::vector<int> leaders;
    for (int r = 0; r < shape.dp; ++r) leaders.push_back(shape.RankOf({r, 0, 0}));
    router = std::make_unique<ReplicaRouter>(world, leaders, scheduler, o.parallel + o.max_queue);
    queue = router.get();
  }
  server->SetReady(queue, *plan.tokenizer, plan.model);
  const KvPool pool = driver.kv_pool();
  const std::string kv =
      pool.block_tokens > 0
          ? StrCat(scheduler.kv_capacity_tokens(), " tokens of KV cache in blocks of ",
                   pool.block_tokens, o.prefix_caching ? ", prefix caching" : "")
          : StrCat(driver.max_sequences() * plan.model.context, " tokens of state slots");
  std::fprintf(stderr,
               "serve: ready: model '%s', %lld sequences x %lld tokens of context (%s)%s, %s over "
               "%d rank(s)\n",
               plan.model.name.c_str(), static_cast<long long>(driver.max_sequences()),
               static_cast<long long>(plan.model.context), kv.c_str(),
               shape.dp > 1 ? StrCat(" per replica, ", shape.dp, " replicas").c_str() : "",
               run.grid ? LayoutName(*run.grid).c_str() : run.layout.c_str(), world.size());
  std::atomic<bool> finished{false};
  std::thread watcher([&] {
    while (!finished.load() && !g_stop_requested.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (finished.load()) return;
    std::fprintf(stderr, "serve: stopping: finishing the requests in flight\n");
    server->StopAdmitting();
    queue->Drain();
  });
  const std::function<bool()> pump =
      router ? std::function<bool()>([&] { return router->Pump(); }) : nullptr;
  try {
    scheduler.Run(pump);
  } catch (const std::exception& e) {
    // The job ends with this error (RunOnRanks); the requests still waiting end first, with it.
    finished.store(true);
    watcher.join();
    server->Abort(e.what());
    server->Stop();
    throw;
  }
  finished.store(true);
  watcher.join();
  server->Stop();
  if (router) {
    const std::vector<int64_t> dealt = router->dealt();
    for (size_t r = 0; r < dealt.size(); ++r) {
      std::fprintf(stderr, "serve: replica %zu ran %lld sequences\n", r,
                   static_cast<long long>(dealt[r]));
    }
  }
  std::fprintf(stderr, "serve: stopped\n");
  return 0;
}

int ServeGemmaOnRanks(const ServeOptions& o, Communicator& world) {
  ShardedGemmaPlan sharded;
  return ServeOnRanks(
      o, world,
      [&](ServePlan& plan) {
        plan.tokenizer = LoadTokenizer(o.files);
        const CheckpointModel model = ReadCheckpointModel(o.files.model_path);
        CheckTokenizerFits(*plan.tokenizer, model.config, o.files);
        std::optional<PodTopology> pod = LoadPodIfGiven(o.pod_path);
        const int64_t context = std::min<int64_t>(o.context, model.config.max_position_embeddings);
        const int64_t sampled =
            std::min<int64_t>(model.config.vocab_size, plan.tokenizer->vocab_size());
        sharded =
            PlanShardedGemma(world.size(), std::move(pod), o.files, o.parallel, context, sampled);
        // The pool holds what fixed slots would unless told otherwise; a request longer than
        // it is refused when it arrives.
        GEMMAPOD_CHECK(o.kv_tokens == 0 || o.kv_tokens >= context, "serve: --kv-tokens ",
                       o.kv_tokens, " cannot hold one sequence of the context's ", context,
                       " tokens");
        const int64_t kv_tokens = o.kv_tokens > 0 ? o.kv_tokens : o.parallel * context;
        sharded.kv_pool = KvCache::PoolFor(model.config, kv_tokens, o.parallel, context,
                                           o.prefill_chunk, o.kv_block);
        plan.model.context = context;
        plan.model.eos_id = model.config.eos_id;
        plan.model.sampled_vocab = sampled;
      },
      [&] { return LoadShardedGemma(world, sharded, o.files); });
}

int RunServe(const ServeOptions& options, int* argc, char*** argv) {
  return RunOnRanks(argc, argv, [&](Communicator& world) {
    CheckSameCheckpoint(world, options.files.model_path);
    const ModelFamily& family = FamilyOf(options.files.model_path);
    if (family.serve == nullptr) {
      throw Error(StrCat("serve: ", options.files.model_path, " is a ", family.name,
                         " model, which the server cannot run yet (generate and logits can)"));
    }
    return family.serve(options, world);
  });
}

}  // namespace gemmapod
