// The engine's half of `generate` and `logits`, shared by every family: once a family has checked
// the request on every rank and loaded its engine, the data-parallel replicas split the prompts
// (or sequences), each replica runs them through its pipeline, and rank 0 prints or writes the
// results in order.
#include "launch/engine_commands.h"

#include <cstdio>
#include <cstring>

#include "launch/model_files.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "serving/engine/generate.h"

namespace gemmapod {
// Replica r's results reach world rank 0 as the texts' lengths, then their bytes.
void SendTexts(Communicator& world, const std::vector<GenerationResult>& results) {
  Tensor lengths = Tensor::Empty({static_cast<int64_t>(results.size())}, DType::kI32);
  std::string bytes;
  for (size_t i = 0; i < results.size(); ++i) {
    lengths.data<int32_t>()[i] = static_cast<int32_t>(results[i].text.size());
    bytes += results[i].text;
  }
  world.Send(lengths, 0, 1);
  if (!bytes.empty()) {
    world.Send(Tensor::Borrow(bytes.data(), {static_cast<int64_t>(bytes.size())}, DType::kI8), 0,
               2);
  }
}

std::vector<std::string> ReceiveTexts(Communicator& world, int from, size_t count) {
  Tensor lengths = Tensor::Empty({static_cast<int64_t>(count)}, DType::kI32);
  world.Recv(lengths, from, 1);
  int64_t total = 0;
  for (size_t i = 0; i < count; ++i) total += lengths.data<int32_t>()[i];
  std::string bytes(static_cast<size_t>(total), '\0');
  if (total > 0) {
    Tensor view = Tensor::Borrow(bytes.data(), {total}, DType::kI8);
    world.Recv(view, from, 2);
  }
  std::vector<std::string> texts;
  size_t at = 0;
  for (size_t i = 0; i < count; ++i) {
    const size_t n = static_cast<size_t>(lengths.data<int32_t>()[i]);
    texts.push_back(bytes.substr(at, n));
    at += n;
  }
  return texts;
}

namespace {
constexpr int kTagStreamLength = 3;
constexpr int kTagStreamBytes = 4;

void SendStreamLength(Communicator& world, int32_t length) {
  Tensor n = Tensor::Empty({1}, DType::kI32);
  n.data<int32_t>()[0] = length;
  world.Send(n, 0, kTagStreamLength);
}
}  // namespace

void SendTextPiece(Communicator& world, std::string_view text) {
  if (text.empty()) return;
  SendStreamLength(world, static_cast<int32_t>(text.size()));
  world.Send(Tensor::Borrow(const_cast<char*>(text.data()), {static_cast<int64_t>(text.size())},
                            DType::kI8),
             0, kTagStreamBytes);
}

void EndTextStream(Communicator& world) { SendStreamLength(world, -1); }

void PrintTextStream(Communicator& world, int from) {
  Tensor n = Tensor::Empty({1}, DType::kI32);
  while (true) {
    world.Recv(n, from, kTagStreamLength);
    const int32_t length = n.data<int32_t>()[0];
    if (length < 0) return;
    std::string piece(static_cast<size_t>(length), '\0');
    Tensor view = Tensor::Borrow(piece.data(), {length}, DType::kI8);
    world.Recv(view, from, kTagStreamBytes);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  }
}

int GenerateOnEngine(const GenerateOptions& o, Communicator& world, const Tokenizer& tokenizer,
                     const std::vector<GenerationRequest>& requests, ShardedRun& run) {
  const int dp = run.grid->shape().dp;

  PipelineEngine& pipeline = *run.pipeline;
  if (!pipeline.is_driver()) {
    pipeline.Serve();
    return 0;
  }
  // Replica r takes prompts r, r + dp, r + 2 dp, ...
  const GridCoords at = run.grid->coords();
  std::vector<GenerationRequest> mine;
  for (size_t i = static_cast<size_t>(at.dp); i < requests.size(); i += static_cast<size_t>(dp)) {
    mine.push_back(requests[i]);
  }
  const bool streams = world.rank() == 0 && requests.size() == 1;
  const std::vector<GenerationResult> results =
      GeneratePipelined(pipeline, tokenizer, mine, [&](size_t, std::string_view text) {
        if (!streams) return;
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      });
  if (world.rank() != 0) {
    // The first rank of another replica reports to rank 0 (one prompt streamed there already).
    if (at.tp == 0 && requests.size() > 1) SendTexts(world, results);
    return 0;
  }
  if (streams) {
    std::printf("\n");
  } else {
    // Gather every replica's texts and print them in prompt order.
    std::vector<std::vector<std::string>> texts(static_cast<size_t>(dp));
    for (const GenerationResult& r : results) texts[0].push_back(r.text);
    for (int r = 1; r < dp; ++r) {
      const size_t count = (requests.size() - static_cast<size_t>(r) + dp - 1) / dp;
      texts[static_cast<size_t>(r)] =
          ReceiveTexts(world, run.grid->shape().RankOf({r, 0, 0}), count);
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      std::printf("--- prompt %zu ---\n%s\n", i,
                  texts[i % static_cast<size_t>(dp)][i / static_cast<size_t>(dp)].c_str());
    }
  }
  std::fflush(stdout);  // the statistics go to stderr: keep them after the text
  if (o.stats) {
    for (size_t i = 0; i < results.size(); ++i) {
      const GenerationResult& r = results[i];
      const double decode_rate = r.decode_seconds > 0 && r.tokens.size() > 1
                                     ? static_cast<double>(r.tokens.size() - 1) / r.decode_seconds
                                     : 0.0;
      // Rank 0 times the prompts of its own replica: prompts 0, dp, 2 dp, ...
      const std::string which =
          requests.size() > 1 ? StrCat("[prompt ", i * static_cast<size_t>(dp), "] ") : "";
      std::fprintf(stderr,
                   "%sprompt %zu tokens in %.3f s; generated %zu tokens in %.3f s (%.1f "
                   "tokens/s); finish: %s; %s over %d rank(s)\n",
                   which.c_str(), mine[i].prompt.size(), r.prefill_seconds, r.tokens.size(),
                   r.decode_seconds, decode_rate, FinishReasonName(r.finish),
                   LayoutName(*run.grid).c_str(), world.size());
    }
  }
  return 0;
}

int LogitsOnEngine(const LogitsOptions& o, Communicator& world,
                   const std::vector<std::vector<int32_t>>& sequences, ShardedRun& run) {
  PipelineEngine& pipeline = *run.pipeline;
  const int64_t V = pipeline.vocab_size(), n = static_cast<int64_t>(sequences.front().size());
  const int64_t count = static_cast<int64_t>(sequences.size());
  const int dp = run.grid->shape().dp;

  // Replica r scores sequences r, r + dp, ...; its first stage ends up with their logits.
  const GridCoords at = run.grid->coords();
  std::vector<SequenceChunk> mine;
  for (int64_t s = at.dp; s < count; s += dp) {
    mine.push_back({static_cast<int64_t>(mine.size()), sequences[static_cast<size_t>(s)]});
  }
  Tensor logits;  // [mine * n, V] on the replica's first stage
  if (!mine.empty()) {
    logits = pipeline.Forward(mine, /*all_tokens=*/true);
  } else if (pipeline.is_driver()) {
    pipeline.Finish();
  } else {
    pipeline.Serve();
  }
  constexpr int kLogitsTag = 11;
  if (world.rank() != 0) {
    if (pipeline.is_driver() && at.tp == 0 && !mine.empty()) world.Send(logits, 0, kLogitsTag);
    return 0;
  }
  // Rank 0 puts every replica's rows in sequence order.
  Tensor all = Tensor::Empty(count > 1 ? Shape{count, n, V} : Shape{n, V}, DType::kF32);
  for (int r = 0; r < dp; ++r) {
    Tensor part = logits;
    const int64_t rows = (count - r + dp - 1) / dp;
    if (rows == 0) continue;
    if (r > 0) {
      part = Tensor::Empty({rows * n, V}, DType::kF32);
      world.Recv(part, run.grid->shape().RankOf({r, 0, 0}), kLogitsTag);
    }
    for (int64_t j = 0; j < rows; ++j) {
      std::memcpy(all.data<float>() + (r + j * dp) * n * V, part.data<float>() + j * n * V,
                  static_cast<size_t>(n * V) * sizeof(float));
    }
  }
  // A NaN or infinity in the logits means the model cannot compute (non-finite weights, an
  // overflow): an error naming where, not a file of NaN and exit 0.
  if (const int64_t at = FirstNonFinite(all); at >= 0) {
    throw Error(
        StrCat("logits: sequence ", at / (n * V), ", position ", (at / V) % n,
               ", vocabulary entry ", at % V, " is ", all.data<float>()[at],
               ": the model computes non-finite values (a NaN or infinity in its weights?); ",
               o.out, " was not written"));
  }
  WriteNpy(o.out, all);
  std::printf("wrote %s: f32 %s (%s over %d rank(s))\n", o.out.c_str(),
              ShapeToString(all.shape()).c_str(), LayoutName(*run.grid).c_str(), world.size());
  return 0;
}

}  // namespace gemmapod
