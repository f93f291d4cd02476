// Writes the checkpoint read_with_h5py.py checks: each dtype, config attributes, an embedded file.
#include <cstdio>

#include "runtime/checkpoint/hdf5_checkpoint.h"

int main(int argc, char** argv) {
  using namespace gemmapod;
  if (argc != 2) {
    std::fprintf(stderr, "usage: write_sample_checkpoint OUT.h5\n");
    return 2;
  }
  Hdf5CheckpointWriter w = Hdf5CheckpointWriter::Create(argv[1]);
  w.SetConfig({{"architecture", std::string("gemma2")},
               {"hidden_size", int64_t{64}},
               {"rms_norm_eps", 1e-6},
               {"layer_kinds", std::vector<std::string>{"sliding", "global"}}});
  Tensor f = Tensor::Empty({3, 4}, DType::kF32);
  for (int64_t i = 0; i < 12; ++i) f.data<float>()[i] = static_cast<float>(i) * 1.5f - 4;
  w.Write("model.layers.0.mlp.up_proj.weight", f);
  Tensor big = Tensor::Empty({2, 3}, DType::kF32);
  const float values[6] = {100.0f, 1000.0f, -0.15625f, 3.0e38f, 1e-3f, 0.0f};
  for (int i = 0; i < 6; ++i) big.data<float>()[i] = values[i];
  w.Write("model.embed_tokens.weight", big.To(DType::kBF16));
  Tensor ids = Tensor::Empty({3}, DType::kI32);
  for (int i = 0; i < 3; ++i) ids.data<int32_t>()[i] = 2 + 649 * i;
  w.Write("ids", ids);
  w.WriteFile("tokenizer.model", "sentencepiece bytes");
  w.Commit();
  return 0;
}
