// `gemmapod demo`: the main job until trained weights are at hand (then `generate` is). A small
// RANDOM-WEIGHT model — a stack of Gemma-style blocks x += W_down(gelu(W_gate n(x)) * W_up n(x)),
// n = RMSNorm with (1 + w) — runs sharded over the pod as the Gemma models do: gate/up
// column-parallel and down row-parallel with one all-reduce per block (Megatron), blocks split
// into pipeline stages that pass activations on, replicas on different inputs. World rank 0 then
// runs the same model on one rank and checks every replica's output against it.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include "launch/commands.h"
#include "launch/rank_runner.h"
#include "launch/sharded_model.h"
#include "runtime/cpu/matmul.h"
#include "runtime/cpu/ops.h"
#include "sharding/pod_topology.h"
#include "sharding/process_grid.h"

namespace gemmapod {
namespace {

// Counter-based weights: element `index` of tensor `id` is a pure function of (seed, id, index),
// so every rank makes exactly its own slice and the one-rank reference makes the same numbers.
float RandomUniform(uint64_t seed, uint64_t id, uint64_t index) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + id * 0xbf58476d1ce4e5b9ull + index;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(static_cast<double>(z >> 11) * 0x1p-53 * 2.0 - 1.0);
}

enum TensorId : uint64_t { kNorm = 0, kGate = 1, kUp = 2, kDown = 3, kIdsPerLayer = 4 };
constexpr uint64_t kInputId = 1ull << 40;

// Fills t[i, j] (shape [rows, cols]) with element (row0 + i, col0 + j) of a [*, full_cols] tensor.
Tensor MakeSlice(const DemoOptions& o, uint64_t id, int64_t rows, int64_t cols, int64_t row0,
                 int64_t col0, int64_t full_cols, float scale, DType dtype) {
  Tensor t = Tensor::Empty({rows, cols}, DType::kF32);
  float* p = t.data<float>();
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      p[i * cols + j] =
          scale *
          RandomUniform(o.seed, id, static_cast<uint64_t>((row0 + i) * full_cols + col0 + j));
    }
  }
  return dtype == DType::kF32 ? t : t.To(dtype);
}

struct Block {
  Tensor norm;  // f32 [hidden]
  Tensor gate;  // [ffn / tp, hidden]: rows of the full gate projection
  Tensor up;    // [ffn / tp, hidden]
  Tensor down;  // [hidden, ffn / tp]: columns of the full down projection
};

Block MakeBlock(const DemoOptions& o, int layer, int tp_rank, int tp_size, DType dtype) {
  const int64_t h = o.hidden, f = o.ffn, fs = o.ffn / tp_size, id = layer * kIdsPerLayer;
  Block b;
  b.norm = MakeSlice(o, id + kNorm, 1, h, 0, 0, h, 0.1f, DType::kF32).Reshape({h});
  b.gate = MakeSlice(o, id + kGate, fs, h, tp_rank * fs, 0, h, 1.0f / std::sqrt(h), dtype);
  b.up = MakeSlice(o, id + kUp, fs, h, tp_rank * fs, 0, h, 1.0f / std::sqrt(h), dtype);
  b.down = MakeSlice(o, id + kDown, h, fs, 0, tp_rank * fs, f, 1.0f / std::sqrt(f), dtype);
  return b;
}

// x += block(x); `tp` is null on the one-rank reference.
void Forward(const Block& b, Tensor& x, Communicator* tp) {
  const int64_t rows = x.dim(0), h = x.dim(1), fs = b.gate.dim(0);
  Tensor normed = Tensor::Empty({rows, h}, DType::kF32);
  cpu::RmsNorm(x.data<float>(), b.norm.data<float>(), rows, h, 1e-6f, normed.data<float>());
  Tensor gate = Tensor::Empty({rows, fs}, DType::kF32);
  Tensor up = Tensor::Empty({rows, fs}, DType::kF32);
  cpu::MatMul(normed, b.gate, gate);
  cpu::MatMul(normed, b.up, up);
  cpu::GeluTanh(gate.data<float>(), gate.data<float>(), gate.numel());
  cpu::Mul(gate.data<float>(), up.data<float>(), gate.data<float>(), gate.numel());
  Tensor out = Tensor::Empty({rows, h}, DType::kF32);
  cpu::MatMul(gate, b.down, out);
  if (tp != nullptr && tp->size() > 1) tp->AllReduce(out, ReduceOp::kSum);
  cpu::Add(x.data<float>(), out.data<float>(), x.data<float>(), x.numel());
}

// The layers [first, last] that pipeline stage `stage` runs.
std::pair<int, int> StageLayers(const DemoOptions& o, const PodTopology* pod, int stage, int pp) {
  if (pod != nullptr && !pod->pipeline.automatic) {
    const StageLayout& s = pod->pipeline.stages.at(stage);
    GEMMAPOD_CHECK(s.part == StackPart::kDecoder, pod->source,
                   ": the demo model is decoder-only; stage ", stage, " asks for encoder layers");
    return {s.first_layer, s.last_layer};
  }
  const int base = o.layers / pp, extra = o.layers % pp;
  const int first = stage * base + std::min(stage, extra);
  return {first, first + base + (stage < extra ? 1 : 0) - 1};
}

Tensor MakeInput(const DemoOptions& o, int replica) {
  return MakeSlice(o, kInputId + replica, o.rows, o.hidden, 0, 0, o.hidden, 1.0f, DType::kF32);
}

int RunDemoOnRanks(const DemoOptions& o, Communicator& world) {
  // Every rank checks the pod and the options alike; a problem is reported once.
  std::optional<PodTopology> pod;
  CheckOnEveryRank(world, [&] {
    if (!o.pod_path.empty()) {
      pod = LoadPodTopology(o.pod_path);
      CheckPodFitsJob(*pod, world.size());
    }
    const GridShape shape = pod ? GridShape{pod->tp, pod->pp, pod->dp} : GridShape{world.size()};
    GEMMAPOD_CHECK(o.ffn % shape.tp == 0, "demo: --ffn ", o.ffn,
                   " is not divisible by tp=", shape.tp);
    GEMMAPOD_CHECK(o.layers >= shape.pp, "demo: ", o.layers, " layers cannot fill ", shape.pp,
                   " pipeline stages");
    GEMMAPOD_CHECK(!pod || pod->pipeline.encoder_stages == 0, pod->source,
                   ": the demo model is decoder-only; the pod lays out ",
                   pod->pipeline.encoder_stages, " encoder stage(s)");
    if (pod && !pod->pipeline.automatic) {
      GEMMAPOD_CHECK(pod->pipeline.stages.back().last_layer == o.layers - 1, pod->source,
                     ": the pipeline stages cover layers 0-",
                     pod->pipeline.stages.back().last_layer, " but the demo model has --layers ",
                     o.layers);
    }
  });
  ProcessGrid grid = pod ? ProcessGrid::Create(world, *pod)
                         : ProcessGrid::Create(world, GridShape{world.size(), 1, 1});
  const GridShape& shape = grid.shape();
  const GridCoords& me = grid.coords();
  const DType dtype = ParseDType(o.weight_dtype);

  const auto [first, last] = StageLayers(o, pod ? &*pod : nullptr, me.pp, shape.pp);
  std::vector<Block> blocks;
  for (int l = first; l <= last; ++l) blocks.push_back(MakeBlock(o, l, me.tp, shape.tp, dtype));

  const Tensor input = MakeInput(o, me.dp);
  Tensor x = Tensor::Empty({o.rows, o.hidden}, DType::kF32);
  auto step = [&](int s) {
    if (grid.is_first_stage()) {
      x = input.Clone();
    } else {
      grid.pp().Recv(x, me.pp - 1, s);
    }
    for (const Block& b : blocks) Forward(b, x, &grid.tp());
    if (!grid.is_last_stage()) grid.pp().Send(x, me.pp + 1, s);
  };

  step(0);  // warm-up: first-touch of buffers, oneDNN primitive creation
  world.Barrier();
  const auto start = std::chrono::steady_clock::now();
  for (int s = 1; s <= o.steps; ++s) {
    if (s == 2 && world.rank() == o.inject_failure_rank) {
      throw Error("injected failure (--inject-failure-rank) while peers wait in a collective");
    }
    step(s);
  }
  world.Barrier();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Every replica's output, from its last stage's first TP rank, to world rank 0.
  const int kResultTag = 1 << 20;
  std::vector<Tensor> outputs(shape.dp);
  for (int d = 0; d < shape.dp; ++d) {
    const int src = shape.RankOf({d, shape.pp - 1, 0});
    if (world.rank() == src && src == 0)
      outputs[d] = x.Clone();
    else if (world.rank() == src)
      world.Send(x, 0, kResultTag);
    else if (world.rank() == 0) {
      outputs[d] = Tensor::Empty({o.rows, o.hidden}, DType::kF32);
      world.Recv(outputs[d], src, kResultTag);
    }
  }
  if (world.rank() != 0) return 0;

  double max_diff = 0, max_ref = 0;
  for (int d = 0; d < shape.dp; ++d) {
    Tensor ref = MakeInput(o, d);
    for (int l = 0; l < o.layers; ++l) Forward(MakeBlock(o, l, 0, 1, dtype), ref, nullptr);
    const float* a = outputs[d].data<float>();
    const float* r = ref.data<float>();
    for (int64_t i = 0; i < ref.numel(); ++i) {
      // A NaN anywhere is a failure: std::max would silently drop it.
      const double diff = std::fabs(double{a[i]} - r[i]);
      max_diff = std::isfinite(diff) ? std::max(max_diff, diff) : INFINITY;
      max_ref = std::max(max_ref, std::fabs(double{r[i]}));
    }
  }
  const double weight_bytes_per_rank =
      double(last - first + 1) * 3.0 * o.hidden * (o.ffn / shape.tp) * DTypeSize(dtype);
  const double ms_per_step = 1e3 * seconds / o.steps;
  std::printf(
      "gemmapod demo: RANDOM WEIGHTS, not a trained model: %d blocks of RMSNorm + GeGLU MLP "
      "(hidden %d, ffn %d, %s weights)\n",
      o.layers, o.hidden, o.ffn, o.weight_dtype.c_str());
  std::printf("job: %d rank(s) as tp=%d pp=%d dp=%d%s%s\n", world.size(), shape.tp, shape.pp,
              shape.dp, pod ? ", pod " : "", pod ? pod->source.c_str() : "");
  std::fputs(HostComputeNotice(pod ? &*pod : nullptr).c_str(), stdout);
  std::printf(
      "forward: %d tokens x %d steps per replica: %.3f ms/step, %.0f tokens/s per replica, "
      "rank 0 streams %.1f MB of weights per step\n",
      o.rows, o.steps, ms_per_step, o.rows * o.steps / seconds, weight_bytes_per_rank / 1e6);
  const double tolerance = 1e-5;
  const double relative = max_ref > 0 ? max_diff / max_ref : max_diff;
  const bool ok = std::isfinite(relative) && relative <= tolerance;
  std::printf("check: sharded output %s one rank: max |diff| %.3g (relative %.3g, tolerance %g)\n",
              ok ? "matches" : "DIFFERS from", max_diff, relative, tolerance);
  return ok ? 0 : 2;
}

}  // namespace

int RunDemo(const DemoOptions& options, int* argc, char*** argv) {
  return RunOnRanks(argc, argv,
                    [&](Communicator& world) { return RunDemoOnRanks(options, world); });
}

}  // namespace gemmapod
