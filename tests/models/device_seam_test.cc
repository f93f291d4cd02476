// Every family's forward runs on a device through the seam alone. A simulated device stands in
// for a GPU: its memory is host memory the model code must never touch (each allocation's
// "device" bytes are NaN, and the real values live in a shadow buffer only its backend reads and
// writes), and its backend runs the CPU kernels on the shadows. Weights, KV cache, recurrent
// state and every activation then live on that device; a host loop anywhere in models/ would read
// NaN or write where no kernel looks, and the logits would differ from the CPU's. They must be
// bitwise the same.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <string>

#include "models/gemma/gemma_decoder.h"
#include "models/gemma/gemma_random.h"
#include "models/gemma/model_config_yaml.h"
#include "models/recurrent_gemma/recurrent_gemma.h"
#include "models/t5gemma/t5gemma.h"
#include "models/t5gemma/t5gemma_random.h"
#include "runtime/ops/backend.h"
#include "runtime/ops/cpu_backend.h"

namespace gemmapod {
namespace {

constexpr Device kDevice = {DeviceKind::kCuda, 0};

class SimulatedDevice final : public DeviceAllocator, public ops::Backend {
 public:
  void* Allocate(Device, size_t bytes) override {
    const size_t size = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    auto* device = static_cast<float*>(std::aligned_alloc(64, size));
    auto* shadow = static_cast<char*>(std::aligned_alloc(64, size));
    for (size_t i = 0; i < size / sizeof(float); ++i) {
      device[i] = std::numeric_limits<float>::quiet_NaN();
    }
    std::memset(shadow, 0x7f, size);  // uninitialised device memory is garbage
    std::lock_guard<std::mutex> lock(mutex_);
    blocks_[reinterpret_cast<uintptr_t>(device)] = {size, shadow};
    return device;
  }
  void Free(Device, void* p) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = blocks_.find(reinterpret_cast<uintptr_t>(p));
    std::free(it->second.shadow);
    blocks_.erase(it);
    std::free(p);
  }

  // The host copy of a device address (views point inside an allocation).
  void* Shadow(const void* p) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto at = reinterpret_cast<uintptr_t>(p);
    auto it = blocks_.upper_bound(at);
    if (it == blocks_.begin()) throw Error("simulated device: a pointer it never gave out");
    --it;
    if (at > it->first + it->second.size) throw Error("simulated device: past an allocation");
    return it->second.shadow + (at - it->first);
  }
  Tensor Host(const Tensor& t) {
    if (t.device() != kDevice) throw Error("simulated device: got " + t.Describe());
    return Tensor::Borrow(Shadow(t.raw()), t.shape(), t.dtype(), Device::Cpu());
  }
  Tensor Upload(const Tensor& host) {
    Tensor t = Tensor::Empty(host.shape(), host.dtype(), kDevice);
    std::memcpy(Shadow(t.raw()), host.raw(), host.nbytes());
    return t;
  }
  Tensor Download(const Tensor& t) {
    Tensor host = Tensor::Empty(t.shape(), t.dtype());
    std::memcpy(host.raw(), Shadow(t.raw()), t.nbytes());
    return host;
  }
  int calls(const std::string& op) const {
    const auto it = calls_.find(op);
    return it == calls_.end() ? 0 : it->second;
  }

  // The operations: the CPU kernels on the shadows.
  void MatMul(const Tensor& x, const Tensor& w, Tensor& y, MatmulPrecision p) override {
    Tensor out = Count("MatMul", Host(y));
    Cpu().MatMul(Host(x), Host(w), out, p);
  }
  void MatMulInt8(const Tensor& x, const Tensor& w, const Tensor& scale, Tensor& y) override {
    Tensor out = Count("MatMulInt8", Host(y));
    Cpu().MatMulInt8(Host(x), Host(w), Host(scale), out);
  }
  void AddRowBias(const Tensor& bias, Tensor& y) override {
    Tensor out = Count("AddRowBias", Host(y));
    Cpu().AddRowBias(Host(bias), out);
  }
  void GatherRows(const Tensor& table, const Tensor* row_scale, std::span<const int64_t> rows,
                  float scale, Tensor& out) override {
    Tensor o = Count("GatherRows", Host(out));
    const Tensor s = row_scale != nullptr ? Host(*row_scale) : Tensor();
    Cpu().GatherRows(Host(table), row_scale != nullptr ? &s : nullptr, rows, scale, o);
  }
  void ScatterRows(const Tensor& src, std::span<const int64_t> rows, Tensor& dst) override {
    Tensor d = Count("ScatterRows", Host(dst));
    Cpu().ScatterRows(Host(src), rows, d);
  }
  void CopyColumns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                   int64_t width) override {
    Tensor d = Count("CopyColumns", Host(dst));
    Cpu().CopyColumns(Host(src), src_col, d, dst_col, width);
  }
  void FillColumns(Tensor& x, int64_t begin, int64_t end, float value) override {
    Tensor h = Count("FillColumns", Host(x));
    Cpu().FillColumns(h, begin, end, value);
  }
  void CausalConv1d(const Tensor& x, const Tensor& taps, const Tensor& bias,
                    std::span<const int32_t> reach, Tensor& history, Tensor& out) override {
    Tensor h = Host(history), o = Count("CausalConv1d", Host(out));
    Cpu().CausalConv1d(Host(x), Host(taps), Host(bias), reach, h, o);
  }
  void BlockDiagonalMatMul(const Tensor& x, const Tensor& w, const Tensor& b,
                           Tensor& out) override {
    Tensor o = Count("BlockDiagonalMatMul", Host(out));
    Cpu().BlockDiagonalMatMul(Host(x), Host(w), Host(b), o);
  }
  void RgLru(const Tensor& x, const Tensor& gate_x, const Tensor& gate_a, const Tensor& lambda,
             std::span<const int32_t> positions, Tensor& state, Tensor& out) override {
    Tensor s = Host(state), o = Count("RgLru", Host(out));
    Cpu().RgLru(Host(x), Host(gate_x), Host(gate_a), Host(lambda), positions, s, o);
  }
  void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    Tensor o = Count("RmsNorm", Host(out));
    Cpu().RmsNorm(Host(x), Host(weight), eps, o);
  }
  void Attention(const AttentionProblem& problem, const Tensor& q,
                 std::span<const ops::KeyRunTensors> runs, std::span<const int64_t> lo,
                 std::span<const int64_t> hi, Tensor& out) override {
    std::vector<ops::KeyRunTensors> host;
    for (const ops::KeyRunTensors& r : runs) {
      host.push_back({Host(r.keys), Host(r.values), r.first, r.valid});
    }
    Tensor o = Count("Attention", Host(out));
    Cpu().Attention(problem, Host(q), host, lo, hi, o);
  }
  void Add(const Tensor& a, const Tensor& b, Tensor& out) override {
    Tensor o = Count("Add", Host(out));
    Cpu().Add(Host(a), Host(b), o);
  }
  void Mul(const Tensor& a, const Tensor& b, Tensor& out) override {
    Tensor o = Count("Mul", Host(out));
    Cpu().Mul(Host(a), Host(b), o);
  }
  void Scale(const Tensor& x, float s, Tensor& out) override {
    Tensor o = Count("Scale", Host(out));
    Cpu().Scale(Host(x), s, o);
  }
  void GeluTanh(const Tensor& x, Tensor& out) override {
    Tensor o = Count("GeluTanh", Host(out));
    Cpu().GeluTanh(Host(x), o);
  }
  void SoftCap(const Tensor& x, float cap, Tensor& out) override {
    Tensor o = Count("SoftCap", Host(out));
    Cpu().SoftCap(Host(x), cap, o);
  }
  void RopeHalfSplit(Tensor& x, int64_t heads, int64_t head_dim, std::span<const int32_t> positions,
                     const ops::Rope& rope) override {
    Tensor h = Count("RopeHalfSplit", Host(x));
    Cpu().RopeHalfSplit(h, heads, head_dim, positions, rope);
  }

 private:
  struct Block {
    size_t size;
    char* shadow;
  };
  static ops::Backend& Cpu() { return ops::CpuBackend(); }
  Tensor Count(const std::string& op, Tensor t) {
    ++calls_[op];
    return t;
  }
  std::mutex mutex_;
  std::map<uintptr_t, Block> blocks_;
  std::map<std::string, int> calls_;
};

SimulatedDevice& Simulated() {
  static SimulatedDevice* device = [] {
    auto* d = new SimulatedDevice();
    RegisterAllocator(DeviceKind::kCuda, d);
    ops::RegisterBackend(DeviceKind::kCuda, d);
    return d;
  }();
  return *device;
}

void ExpectBitwiseEqual(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0) << what;
}

ModelConfig SmallConfig(Architecture arch) {
  ModelConfig c;
  c.name = "seam";
  c.architecture = arch;
  c.vocab_size = 96;
  c.hidden_size = 32;
  c.num_layers = arch == Architecture::kGemma3Text ? 6 : 3;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 48;
  c.query_pre_attn_scalar = 8;
  c.layer_kinds = DefaultLayerKinds(arch, c.num_layers);
  if (arch != Architecture::kGemma) {
    c.sliding_window = 4;
    c.post_norms = true;
  }
  if (arch == Architecture::kGemma2) {
    c.attn_logit_softcap = 2.0;
    c.final_logit_softcap = 4.0;
  }
  if (arch == Architecture::kGemma3Text) c.qk_norm = true;
  c.max_position_embeddings = 64;
  Validate(c, "seam");
  return c;
}

class GemmaOnADevice : public ::testing::TestWithParam<std::pair<Architecture, DType>> {};

// A prompt, then two decode steps through the KV cache (past the sliding window), on the CPU and
// on the simulated device.
TEST_P(GemmaOnADevice, LogitsEqualTheCpusBitwise) {
  SimulatedDevice& device = Simulated();
  const ModelConfig c = SmallConfig(GetParam().first);
  GemmaWeights host = RandomGemmaWeights(c, GetParam().second, 3);
  GemmaWeights on_device = RandomGemmaWeights(c, GetParam().second, 3);
  ForEachGemmaParameter(c, on_device,
                        [&](const GemmaParameter&, Tensor& slot) { slot = device.Upload(slot); });
  GemmaDecoder cpu(c, std::move(host)), gpu(c, std::move(on_device));
  KvCache cpu_cache(c, 1, 16), gpu_cache(c, 1, 16, c.num_kv_heads, 0, c.num_layers, kDevice);
  const std::vector<std::vector<int32_t>> chunks = {{2, 17, 40, 5, 9, 61}, {33}, {70}};
  for (size_t i = 0; i < chunks.size(); ++i) {
    const std::vector<SequenceChunk> batch = {{0, chunks[i]}};
    const Tensor want = cpu.Forward(batch, cpu_cache, LogitRows::kAllTokens);
    const Tensor got = device.Download(gpu.Forward(batch, gpu_cache, LogitRows::kAllTokens));
    ExpectBitwiseEqual(got, want, "chunk " + std::to_string(i));
  }
  EXPECT_GT(device.calls("Attention"), 0);
  EXPECT_GT(device.calls("GatherRows"), 0);
}

INSTANTIATE_TEST_SUITE_P(Families, GemmaOnADevice,
                         ::testing::Values(std::pair{Architecture::kGemma, DType::kF32},
                                           std::pair{Architecture::kGemma2, DType::kBF16},
                                           std::pair{Architecture::kGemma3Text, DType::kF32}),
                         [](const auto& info) {
                           return std::string(ArchitectureName(info.param.first)) + "_" +
                                  std::string(DTypeName(info.param.second));
                         });

RecurrentGemmaConfig SmallRecurrentConfig() {
  RecurrentGemmaConfig c;
  c.name = "seam-recurrent";
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.num_layers = 6;
  c.num_heads = 4;
  c.head_dim = 8;
  c.lru_width = 48;
  c.intermediate_size = 64;
  c.attention_window = 6;
  c.blocks = DefaultTemporalBlocks(c.num_layers);
  return c;
}

RecurrentGemmaWeights RandomRecurrentWeights(const RecurrentGemmaConfig& c) {
  std::mt19937 rng(9);
  RecurrentGemmaWeights w;
  ForEachRecurrentGemmaParameter(c, w, [&](const RecurrentGemmaParameter& p, Tensor& slot) {
    slot = Tensor::Zeros(p.shape, DType::kF32);
    std::normal_distribution<float> normal(0.0f, p.shape.size() == 2 ? 0.2f : 0.3f);
    for (int64_t i = 0; i < slot.numel(); ++i) slot.data<float>()[i] = normal(rng);
  });
  return w;
}

// A prompt with a document start, then decode steps past the attention window: the convolution
// history, the RG-LRU state and the attention ring all live on the device.
TEST(RecurrentGemmaOnADevice, LogitsEqualTheCpusBitwise) {
  SimulatedDevice& device = Simulated();
  const RecurrentGemmaConfig c = SmallRecurrentConfig();
  RecurrentGemmaWeights on_device = RandomRecurrentWeights(c);
  ForEachRecurrentGemmaParameter(c, on_device, [&](const RecurrentGemmaParameter&, Tensor& slot) {
    slot = device.Upload(slot);
  });
  RecurrentGemma cpu(c, RandomRecurrentWeights(c)), gpu(c, std::move(on_device));
  RecurrentGemmaState cpu_state = cpu.NewState(1), gpu_state = gpu.NewState(1);
  EXPECT_EQ(gpu.device(), kDevice);
  std::vector<RecurrentChunk> chunks = {{0, {2, 17, 40, 5, 9}, {0, 1, 2, 0, 1}}};
  for (int32_t t : {33, 70, 12, 8, 90, 4, 51}) chunks.push_back({0, {t}, {}});
  for (size_t i = 0; i < chunks.size(); ++i) {
    const Tensor want = cpu.Forward(chunks[i], cpu_state, true);
    const Tensor got = device.Download(gpu.Forward(chunks[i], gpu_state, true));
    ExpectBitwiseEqual(got, want, "chunk " + std::to_string(i));
  }
  EXPECT_GT(device.calls("RgLru"), 0);
  EXPECT_GT(device.calls("CausalConv1d"), 0);
  EXPECT_GT(device.calls("ScatterRows"), 0);
}

// Encoder, cross-attention memory and decoder on the device: teacher-forced logits of a padded
// batch of two.
TEST(T5GemmaOnADevice, LogitsEqualTheCpusBitwise) {
  SimulatedDevice& device = Simulated();
  const T5GemmaConfig c = LoadT5GemmaConfigYaml("configs/models/tiny-t5gemma.yaml");
  T5GemmaWeights on_device = RandomT5GemmaWeights(c, DType::kBF16, 4);
  ForEachT5GemmaShardParameter(c, WholeT5Gemma(c), on_device,
                               [&](const GemmaParameter&, const ParameterSlice&, Tensor& slot) {
                                 slot = device.Upload(slot);
                               });
  T5Gemma cpu(c, RandomT5GemmaWeights(c, DType::kBF16, 4)), gpu(c, std::move(on_device));
  const std::vector<std::vector<int32_t>> encoder = {{2, 17, 40, 5, 9}, {2, 33, 7}};
  const std::vector<std::vector<int32_t>> decoder = {{2, 11, 12}, {2, 13}};
  ExpectBitwiseEqual(device.Download(gpu.Forward(encoder, decoder)), cpu.Forward(encoder, decoder),
                     "teacher-forced logits");
  EXPECT_GT(device.calls("CopyColumns"), 0);  // the per-request cross-attention memory
}

}  // namespace
}  // namespace gemmapod
