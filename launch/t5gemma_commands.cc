#include "launch/t5gemma_commands.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>

#include "launch/engine_commands.h"
#include "launch/model_files.h"
#include "launch/rank_runner.h"
#include "launch/recurrent_commands.h"
#include "launch/serve_engine.h"
#include "launch/sharded_model.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "serving/t5gemma_pipeline.h"
#include "sharding/pod_topology.h"
#include "sharding/process_grid.h"

namespace gemmapod {
namespace {

// One data-parallel replica's layout, how many replicas the job has, and where this rank sits.
struct T5GemmaJob {
  T5GemmaLayout layout;
  int dp = 1;
  std::optional<PodTopology> pod;
  T5GemmaReplicaRank me;

  // The world rank of rank `local` of replica `replica`.
  int WorldRank(int replica, int local) const {
    if (dp == 1) return local;
    const GridShape shape{pod->tp, pod->pp, pod->dp};
    return shape.RankOf({replica, local / pod->tp, local % pod->tp});
  }
  // Items r, r + dp, r + 2 dp, ... of `count` belong to replica r.
  size_t CountOf(int replica, size_t count) const {
    return count > static_cast<size_t>(replica)
               ? (count - static_cast<size_t>(replica) + dp - 1) / static_cast<size_t>(dp)
               : 0;
  }
};

// Checks on every rank before any collective, so bad input is reported once.
T5GemmaJob CheckT5GemmaJob(Communicator& world, const ModelFiles& files,
                           const std::string& pod_path, T5GemmaConfig& config) {
  ParsePrecision(files);
  config = T5GemmaFromAttributes(CheckpointFile(files.model_path).config(), files.model_path);
  T5GemmaJob job;
  if (!pod_path.empty()) job.pod = LoadPodTopology(pod_path);
  const PodTopology* pod = job.pod ? &*job.pod : nullptr;
  job.layout = pod ? T5GemmaLayoutFromPod(*pod, config)
                   : MakeT5GemmaLayout(config, world.size(), 0, world.size(), 1);
  job.dp = pod ? pod->dp : 1;
  if (world.rank() == 0) std::fputs(HostComputeNotice(pod).c_str(), stderr);
  const int needed = job.layout.world_size() * job.dp;
  GEMMAPOD_CHECK(needed == world.size(), "the layout (", job.layout.Describe(),
                 job.dp > 1 ? StrCat(") x dp ", job.dp) : std::string(")"), " needs ", needed,
                 " ranks, the job has ", world.size());
  job.me = T5GemmaReplicaOf(pod, world.rank());
  return job;
}

// This rank's replica: the world itself with one replica, else its own group.
Communicator& ReplicaGroup(Communicator& world, const T5GemmaJob& job,
                           std::unique_ptr<Communicator>& holder) {
  if (job.dp == 1) return world;
  holder = world.Split(job.me.replica, job.me.rank);
  return *holder;
}

void CheckIds(const std::vector<int32_t>& ids, int64_t vocab, const std::string& what) {
  for (size_t i = 0; i < ids.size(); ++i) {
    GEMMAPOD_CHECK(ids[i] >= 0 && ids[i] < vocab, what, ": entry ", i, " (", ids[i],
                   ") is outside the vocabulary of ", vocab);
  }
}

}  // namespace

int GenerateT5GemmaOnRanks(const GenerateOptions& o, Communicator& world) {
  std::optional<Tokenizer> tokenizer;
  std::vector<GenerationRequest> requests;
  std::vector<std::vector<int32_t>> prompts;
  T5GemmaConfig config;
  T5GemmaJob job;
  CheckOnEveryRank(world, [&] {
    tokenizer = LoadTokenizer(o.files);
    job = CheckT5GemmaJob(world, o.files, o.pod_path, config);
    CheckTokenizerFits(*tokenizer, config.decoder, o.files);
    CheckTokenizerFits(*tokenizer, config.encoder, o.files);
    for (const std::string& prompt : o.prompts) {
      // The prompt (chat-templated) is the encoder's input; the decoder's context starts at BOS.
      GenerationRequest request =
          BuildGenerationRequest(o, prompt, *tokenizer, config.decoder.eos_id);
      GEMMAPOD_CHECK(
          static_cast<int64_t>(request.prompt.size()) <= config.encoder.max_position_embeddings,
          "generate: the prompt has ", request.prompt.size(),
          " tokens, more than the encoder's max_position_embeddings ",
          config.encoder.max_position_embeddings);
      prompts.push_back(request.prompt);
      request.prompt = {config.decoder.bos_id};
      CheckRequest(request, config.decoder);
      requests.push_back(std::move(request));
    }
  });
  const int64_t sampled = std::min<int64_t>(config.decoder.vocab_size, tokenizer->vocab_size());
  const size_t B = requests.size();
  int64_t longest = 1;
  for (const GenerationRequest& request : requests) {
    longest = std::max<int64_t>(longest, 1 + request.max_new_tokens);
  }
  // Replica r takes prompts r, r + dp, ...
  std::vector<std::vector<int32_t>> my_prompts;
  std::vector<GenerationRequest> mine;
  for (size_t i = static_cast<size_t>(job.me.replica); i < B; i += static_cast<size_t>(job.dp)) {
    my_prompts.push_back(prompts[i]);
    mine.push_back(requests[i]);
  }
  std::unique_ptr<Communicator> holder;
  Communicator& replica = ReplicaGroup(world, job, holder);
  T5GemmaPipeline pipeline(replica, job.layout, config, CheckpointFile(o.files.model_path),
                           std::max<int64_t>(1, static_cast<int64_t>(mine.size())), longest,
                           PipelineOptions{sampled});
  pipeline.set_matmul_precision(ParsePrecision(o.files));
  using Clock = std::chrono::steady_clock;
  // Each replica encodes its prompts together; then its decoder stages generate them through
  // the engine, as micro-batches in flight, with tokens sampled on the vocabulary shards. One
  // prompt streams its text: printed by rank 0 as it comes, sent there piece by piece when
  // another rank drives the decoder (rank 0 is then an encoder rank, idle while the decoder
  // runs). Several prompts go from each replica's driver to rank 0, which prints them in order.
  const auto t0 = Clock::now();
  std::vector<GenerationResult> results;
  const int driver = job.WorldRank(job.me.replica, pipeline.driver_rank());
  const bool stream = B == 1;
  const int stream_driver = job.WorldRank(0, pipeline.driver_rank());
  auto t1 = t0;
  if (!mine.empty()) {
    pipeline.Encode(my_prompts);
    t1 = Clock::now();
    results = pipeline.Generate(*tokenizer, mine, [&](size_t, std::string_view text) {
      if (!stream) return;
      if (world.rank() == 0) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      } else {
        SendTextPiece(world, text);
      }
    });
    if (stream && world.rank() == stream_driver && stream_driver != 0) EndTextStream(world);
    if (stream && world.rank() == 0 && stream_driver != 0) PrintTextStream(world, stream_driver);
  }
  const auto t2 = Clock::now();
  if (world.rank() == driver && driver != 0 && !mine.empty()) SendTexts(world, results);
  if (world.rank() != 0) return 0;
  std::vector<std::vector<std::string>> texts(static_cast<size_t>(job.dp));
  for (int r = 0; r < job.dp; ++r) {
    const size_t count = job.CountOf(r, B);
    const int from = job.WorldRank(r, pipeline.driver_rank());
    if (count == 0) continue;
    if (from == 0) {
      for (const GenerationResult& g : results) texts[0].push_back(g.text);
    } else {
      texts[static_cast<size_t>(r)] = ReceiveTexts(world, from, count);
    }
  }
  for (size_t b = 0; b < B; ++b) {
    if (B > 1) std::printf("--- prompt %zu ---\n", b);
    if (!stream) {
      std::fputs(texts[b % static_cast<size_t>(job.dp)][b / static_cast<size_t>(job.dp)].c_str(),
                 stdout);
    }
    std::printf("\n");
  }
  std::fflush(stdout);
  if (o.stats) {
    size_t generated = 0;
    for (const GenerationResult& r : results) generated += r.tokens.size();
    const double decode = std::chrono::duration<double>(t2 - t1).count();
    std::fprintf(
        stderr, "%zu prompt(s) encoded in %.3f s; decoded in %.3f s (%s); %s%s over %d rank(s)\n",
        B, std::chrono::duration<double>(t1 - t0).count(), decode,
        results.empty()
            ? "token counts are on the driver rank"
            : StrCat(generated, " tokens, ", generated / std::max(decode, 1e-9), " tokens/s")
                  .c_str(),
        pipeline.layout().Describe().c_str(), job.dp > 1 ? StrCat(" x dp ", job.dp).c_str() : "",
        world.size());
  }
  return 0;
}

int LogitsT5GemmaOnRanks(const LogitsOptions& o, Communicator& world) {
  std::vector<std::vector<int32_t>> encoder, decoder;
  T5GemmaConfig config;
  T5GemmaJob job;
  CheckOnEveryRank(world, [&] {
    job = CheckT5GemmaJob(world, o.files, o.pod_path, config);
    GEMMAPOD_CHECK(!o.encoder_tokens.empty(), o.files.model_path,
                   " is an encoder-decoder model (T5Gemma): give the encoder's ids with "
                   "--encoder-tokens and the decoder's (from BOS) with --tokens");
    GEMMAPOD_CHECK(o.encoder_tokens.size() == o.tokens.size(), "logits: ", o.encoder_tokens.size(),
                   " --encoder-tokens sequence(s) for ", o.tokens.size(),
                   " --tokens sequence(s); give one of each per sequence");
    for (size_t s = 0; s < o.tokens.size(); ++s) {
      const std::string which = o.tokens.size() > 1 ? StrCat(" #", s + 1) : "";
      encoder.push_back(ParseTokenList(o.encoder_tokens[s]));
      CheckIds(encoder.back(), config.encoder.vocab_size, "--encoder-tokens" + which);
      GEMMAPOD_CHECK(
          static_cast<int64_t>(encoder.back().size()) <= config.encoder.max_position_embeddings,
          "--encoder-tokens", which, ": ", encoder.back().size(),
          " ids, more than the encoder's max_position_embeddings ",
          config.encoder.max_position_embeddings);
      decoder.push_back(ParseTokenList(o.tokens[s]));
      CheckIds(decoder.back(), config.decoder.vocab_size, "--tokens" + which);
      GEMMAPOD_CHECK(decoder.back().front() == config.decoder.bos_id, "--tokens", which,
                     ": the decoder's ids must start with BOS (", config.decoder.bos_id,
                     "), as the decoder always starts from it; got ", decoder.back().front());
      GEMMAPOD_CHECK(decoder.back().size() == decoder.front().size(), "--tokens", which, ": ",
                     decoder.back().size(), " ids, but the first sequence has ",
                     decoder.front().size(), "; a batch's decoder sequences share one length");
      GEMMAPOD_CHECK(
          static_cast<int64_t>(decoder.back().size()) <= config.decoder.max_position_embeddings,
          "--tokens", which, ": longer than the decoder's max_position_embeddings");
    }
  });
  const int64_t B = static_cast<int64_t>(decoder.size());
  const int64_t T = static_cast<int64_t>(decoder.front().size());
  const int64_t V = config.decoder.vocab_size;
  // Replica r scores sequences r, r + dp, ...; each of its ranks ends up with their logits.
  std::vector<std::vector<int32_t>> my_encoder;
  std::vector<SequenceChunk> chunks;
  for (int64_t b = job.me.replica; b < B; b += job.dp) {
    my_encoder.push_back(encoder[static_cast<size_t>(b)]);
    chunks.push_back({static_cast<int64_t>(chunks.size()), decoder[static_cast<size_t>(b)]});
  }
  std::unique_ptr<Communicator> holder;
  Communicator& replica = ReplicaGroup(world, job, holder);
  T5GemmaPipeline pipeline(replica, job.layout, config, CheckpointFile(o.files.model_path),
                           std::max<int64_t>(1, static_cast<int64_t>(chunks.size())), T);
  pipeline.set_matmul_precision(ParsePrecision(o.files));
  Tensor logits;  // [mine * T, V]
  if (!chunks.empty()) {
    pipeline.Encode(my_encoder);
    logits = pipeline.Decode(chunks, true);
  }
  constexpr int kLogitsTag = 21;
  if (world.rank() != 0) {
    if (job.me.rank == 0 && !chunks.empty()) world.Send(logits, 0, kLogitsTag);
    return 0;
  }
  // Rank 0 puts every replica's rows in sequence order.
  Tensor all = Tensor::Empty(B > 1 ? Shape{B, T, V} : Shape{T, V}, DType::kF32);
  for (int r = 0; r < job.dp; ++r) {
    const int64_t rows = static_cast<int64_t>(job.CountOf(r, static_cast<size_t>(B)));
    if (rows == 0) continue;
    Tensor part = logits;
    if (r > 0) {
      part = Tensor::Empty({rows * T, V}, DType::kF32);
      world.Recv(part, job.WorldRank(r, 0), kLogitsTag);
    }
    for (int64_t j = 0; j < rows; ++j) {
      std::memcpy(all.data<float>() + (r + j * job.dp) * T * V, part.data<float>() + j * T * V,
                  static_cast<size_t>(T * V) * sizeof(float));
    }
  }
  WriteNpy(o.out, all);
  std::printf("wrote %s: f32 %s (%s%s, %d rank(s))\n", o.out.c_str(),
              ShapeToString(all.shape()).c_str(), pipeline.layout().Describe().c_str(),
              job.dp > 1 ? StrCat(" x dp ", job.dp).c_str() : "", world.size());
  return 0;
}

}  // namespace gemmapod

namespace gemmapod {

int ServeT5GemmaOnRanks(const ServeOptions& o, Communicator& world) {
  T5GemmaConfig config;
  T5GemmaJob job;
  int64_t context = 0, sampled = 0;
  return ServeOnRanks(
      o, world,
      [&](ServePlan& plan) {
        RefuseKvPoolFlags(o, "T5Gemma");
        plan.tokenizer = LoadTokenizer(o.files);
        job = CheckT5GemmaJob(world, o.files, o.pod_path, config);
        CheckTokenizerFits(*plan.tokenizer, config.decoder, o.files);
        CheckTokenizerFits(*plan.tokenizer, config.encoder, o.files);
        GEMMAPOD_CHECK(job.dp == 1, "serve: the pod file ", o.pod_path, " asks for dp = ", job.dp,
                       "; a T5Gemma server runs one replica (tensor and pipeline parallelism, "
                       "encoder and decoder stages) for now");
        // The decoder's context: its start token and the completion. The prompt feeds the
        // encoder, up to its own max_position_embeddings.
        context = std::min<int64_t>(o.context, config.decoder.max_position_embeddings);
        sampled = std::min<int64_t>(config.decoder.vocab_size, plan.tokenizer->vocab_size());
        plan.model.context = context;
        plan.model.eos_id = config.decoder.eos_id;
        plan.model.sampled_vocab = sampled;
        plan.model.decoder_start = config.decoder.bos_id;
        plan.model.encoder_context = config.encoder.max_position_embeddings;
        plan.leader_rank =
            job.layout.stages[static_cast<size_t>(job.layout.first_decoder_stage())].first_rank;
      },
      [&] {
        auto pipeline = std::make_shared<T5GemmaPipeline>(
            world, job.layout, config, CheckpointFile(o.files.model_path), o.parallel, context,
            PipelineOptions{sampled});
        pipeline->set_matmul_precision(ParsePrecision(o.files));
        pipeline->EnableServing();
        ShardedRun run;
        run.engine = pipeline->engine();
        run.stage_tp = &pipeline->stage_tp();
        run.layout = pipeline->layout().Describe();
        T5GemmaPipeline* encoder = pipeline.get();
        run.serve_outside_engine = [encoder] { encoder->ServeEncoder(); };
        run.owner = std::move(pipeline);
        return run;
      });
}

}  // namespace gemmapod
