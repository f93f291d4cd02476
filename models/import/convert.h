// Checkpoint conversion between Hugging Face model directories (config.json + safetensors) and
// our HDF5 checkpoints, in both directions, and from GGUF files (llama.cpp's format, quantized
// tensors dequantized), one tensor at a time so a model larger than memory converts too. Both
// directions validate everything against the model config before anything is final, and write
// through atomic writers: a failed conversion leaves no output behind.
#pragma once

#include <cstdint>
#include <string>

namespace gemmapod {

struct ConvertOptions {
  // Element type of the written weights: "keep" (as read), "bf16" or "f32". Norm weights follow
  // the same rule (the runtime widens them to f32 when loading).
  std::string dtype = "keep";
  // "int8": write every matrix (the embedding too) as symmetric int8 with one f32 scale per row,
  // quantized from the source's values; norms follow `dtype`. "none": as `dtype` says.
  std::string quantize = "none";
  // A model config (.yaml) for sources that carry none (DeepMind's RecurrentGemma state dict):
  // the tensors are checked against it. Empty: read from the tensor shapes and the published
  // models' settings.
  std::string config_path;
  // Safetensors shard size limit when writing a Hugging Face directory.
  int64_t max_shard_bytes = int64_t{2} << 30;
  // Replace an existing .h5 destination (atomically, when the new file is complete). A Hugging
  // Face destination directory must always be new or empty.
  bool overwrite = false;
};

struct ConvertReport {
  std::string model_type;
  int64_t tensors = 0;
  int64_t parameters = 0;
  int64_t bytes_written = 0;
  bool tokenizer_copied = false;
};

// A directory holding config.json is a Hugging Face model; a path ending in .gguf is GGUF (read
// only); a path ending in .h5 is ours.
// Throws gemmapod::Error naming the file and tensor when the input is bad.
ConvertReport Convert(const std::string& source, const std::string& destination,
                      const ConvertOptions& options);

}  // namespace gemmapod
