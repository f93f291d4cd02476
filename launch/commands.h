// The subcommands of the `gemmapod` binary as plain functions over option structs, so the CLI
// parser (CLI11, a heavy header) stays in main.cc alone. Each returns the process exit code and
// reports user errors by throwing gemmapod::Error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gemmapod {

inline constexpr const char* kGemmapodVersion = "0.1.0";

// Build and machine facts: version, CPU kernel family, threads, MPI library, CUDA devices.
int RunInfo();

struct PlanOptions {
  std::string pod_path;
  // With a model (a .h5 checkpoint or a config .yaml): per-rank weight and KV-cache bytes, and
  // the layout refused when it cannot work.
  std::string model_path;
  std::string dtype = "bf16";  // matrix storage for a .yaml model (a .h5 says its own)
  int64_t batch = 1;           // sequences per replica
  int64_t context = 0;         // tokens per sequence; 0: the model's max_position_embeddings
  // A training job file: print what fine-tuning it holds in memory (one rank; no pod needed).
  std::string train_job;
};
int RunPlan(const PlanOptions& options);

struct LaunchCommandOptions {
  std::string pod_path;
  std::vector<std::string> command;
  std::string hostfile;  // write the pod's nodes here and pass it to mpirun as --hostfile
  bool dry_run = false;
};
int RunLaunch(const LaunchCommandOptions& options, const std::string& self_exe);

// A small random-weight model: a stack of Gemma-style
// RMSNorm + GeGLU MLP blocks, sharded by the pod's tp/pp/dp, checked against the same model on one
// rank.
struct DemoOptions {
  std::string pod_path;  // empty: every rank of the job is one TP group
  int layers = 4;
  int hidden = 512;
  int ffn = 2048;
  int rows = 8;  // tokens per forward pass (per data-parallel replica)
  int steps = 20;
  uint64_t seed = 1;
  std::string weight_dtype = "bf16";
  int inject_failure_rank = -1;  // testing: this world rank fails on the second step
};
int RunDemo(const DemoOptions& options, int* argc, char*** argv);

// gemmapod convert SRC DST: Hugging Face directory <-> our .h5 checkpoint.
struct ConvertCommandOptions {
  std::string source;
  std::string destination;
  std::string dtype = "keep";     // keep, bf16, f32
  std::string quantize = "none";  // none, int8
  std::string config_path;        // for state dicts without a config
  int64_t max_shard_mib = 2048;
  bool force = false;  // replace an existing .h5 destination
};
int RunConvert(const ConvertCommandOptions& options);

// Where the model and its tokenizer come from: a .h5 checkpoint, whose embedded tokenizer is used
// unless --tokenizer names a SentencePiece model file.
struct ModelFiles {
  std::string model_path;
  std::string tokenizer_path;
  std::string precision = "exact";  // exact (f32-grade products) or fast (bf16 activations)
};

struct GenerateOptions {
  ModelFiles files;
  std::string pod_path;  // empty: the job's ranks form one tensor-parallel group
  // One prompt streams its text. Several run as one batch (pipelined over the stages, spread over
  // the data-parallel replicas) and print in order once all are done.
  std::vector<std::string> prompts;
  std::string system;  // chat only: folded into the first user turn
  bool chat = false;
  int64_t max_tokens = 128;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
  std::vector<std::string> stop;  // stop strings
  bool stats = false;             // print timing to stderr
};
int RunGenerate(const GenerateOptions& options, int* argc, char*** argv);

// gemmapod serve: an OpenAI-compatible HTTP server over the model, sharded by the pod file
// (docs/serving.md).
struct ServeOptions {
  ModelFiles files;
  std::string pod_path;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key_file;     // else $GEMMAPOD_API_KEY; neither: no key asked
  std::string model_name;       // the id clients name; default: the checkpoint's file stem
  int64_t parallel = 16;        // sequences decoded together (KV cache slots)
  int64_t context = 4096;       // tokens per sequence, prompt and completion together
  int64_t prefill_chunk = 256;  // docs/performance.md "Serving": the CPU trade-off measured
  int64_t max_queue = 256;      // requests waiting beyond the running ones; more get 503
  // The KV cache as a pool of blocks (models with attention): positions it holds in all (0:
  // parallel x context, what fixed slots would hold), positions per block, prefix caching.
  int64_t kv_tokens = 0;
  int64_t kv_block = 16;
  bool prefix_caching = true;
  double timeout = 600;  // seconds a request may take
  int64_t max_body_kib = 1024;
};
int RunServe(const ServeOptions& options, int* argc, char*** argv);

struct LogitsOptions {
  ModelFiles files;
  std::string pod_path;
  // "2,651,..." per sequence. Several sequences (of one length) make a batch spread over the
  // data-parallel replicas, written as [sequences, tokens, vocab].
  std::vector<std::string> tokens;
  // Encoder-decoder models: the encoder's ids, one sequence per --tokens sequence.
  std::vector<std::string> encoder_tokens;
  std::string out;  // .npy path
};
int RunLogits(const LogitsOptions& options, int* argc, char*** argv);

// gemmapod random-checkpoint: a checkpoint of a config with RANDOM weights (tests, benchmarks,
// trying a layout without real weights).
struct RandomCheckpointOptions {
  std::string config_path;
  std::string out;
  std::string dtype = "bf16";
  uint64_t seed = 1;
  std::string tokenizer_path;  // embedded when given
  bool force = false;
};
int RunRandomCheckpoint(const RandomCheckpointOptions& options);

struct TokenizeOptions {
  ModelFiles files;
  std::string text;
  bool no_bos = false;
};
int RunTokenize(const TokenizeOptions& options);

// gemmapod train --config job.yaml: fine-tuning on one rank (docs/training.md).
struct TrainCommandOptions {
  std::string config_path;
  bool resume = false;      // continue from the newest checkpoint of the job's checkpoint.dir
  std::string resume_from;  // or from this checkpoint
  int64_t inject_kill_during_save = -1;  // testing: SIGKILL half-way through this step's save
  std::string pod_path;  // a pod file (gemmapod launch passes it): its tp splits the model
};
// One rank, or data-parallel replicas under mpirun (training/trainer.h).
int RunTrain(const TrainCommandOptions& options, int* argc, char*** argv);

// "2,651,7" -> ids; errors name the bad entry. Exposed for tests.
std::vector<int32_t> ParseTokenList(const std::string& text);
// Every --tokens list of a decoder-only `logits` batch: one length, ids below `vocab_size`, at
// most `max_tokens` each; errors name the list ("--tokens #2: ...") and the entry.
std::vector<std::vector<int32_t>> ParseTokenBatch(const std::vector<std::string>& lists,
                                                  int64_t vocab_size, int64_t max_tokens);

}  // namespace gemmapod
