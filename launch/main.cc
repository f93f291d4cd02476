// gemmapod: one binary, one subcommand per job. Run alone it is a one-rank job; under mpirun
// (or `gemmapod launch`) every rank runs the same subcommand.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "launch/commands.h"
#include "runtime/error.h"

namespace {

std::string SelfExecutable(const char* argv0) {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) return std::string(buf, static_cast<size_t>(n));
  return argv0;
}

// The rank, when this process was started by Open MPI's launcher; -1 otherwise.
int LauncherRank() {
  const char* r = std::getenv("OMPI_COMM_WORLD_RANK");
  return r ? std::atoi(r) : -1;
}

// A seed: a decimal integer in [0, 2^64). CLI11 alone would wrap "-1" to 2^64 - 1 and clamp
// larger values, so two different command lines would silently draw the same numbers.
const CLI::Validator kSeed(
    [](std::string& text) -> std::string {
      if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) {
        return "a seed is a non-negative decimal integer, got '" + text + "'";
      }
      errno = 0;
      std::strtoull(text.c_str(), nullptr, 10);
      if (errno == ERANGE) return "a seed is below 2^64, got " + text;
      return "";
    },
    "SEED");

}  // namespace

int main(int argc, char** argv) {
  using namespace gemmapod;
  CLI::App app{"gemmapod: a distributed runtime for the Gemma model family"};
  app.set_version_flag("--version", std::string("gemmapod ") + kGemmapodVersion);
  app.require_subcommand(1);
  // Also after the subcommand's name (`gemmapod generate --timeout 60 ...`).
  app.fallthrough();
  double timeout = -1;
  app.add_option("--timeout", timeout,
                 "Seconds a rank may wait in one collective or transfer before the job ends with "
                 "a message naming it (default 600, or GEMMAPOD_COMM_TIMEOUT; 0: no deadline)")
      ->check(CLI::NonNegativeNumber);

  CLI::App* info_cmd =
      app.add_subcommand("info", "Print what this build and machine offer (kernels, MPI, CUDA)");

  PlanOptions plan;
  CLI::App* plan_cmd = app.add_subcommand(
      "plan",
      "Print the rank -> host/device/(dp,pp,tp) map of a pod; with --model, what each rank holds "
      "and whether the layout fits");
  plan_cmd->add_option("--pod", plan.pod_path, "Pod file (YAML)");
  plan_cmd->add_option("--train", plan.train_job,
                       "Training job file: the memory fine-tuning it needs (weights, gradients, "
                       "optimizer state, activations per micro-batch)");
  plan_cmd->add_option("--model", plan.model_path,
                       "Checkpoint (.h5) or model config (.yaml) to lay out over the pod");
  plan_cmd->add_option("--dtype", plan.dtype, "Weight storage of a .yaml model: bf16, f32 or int8")
      ->check(CLI::IsMember({"bf16", "f32", "int8"}));
  plan_cmd->add_option("--batch", plan.batch, "Sequences per data-parallel replica")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  plan_cmd
      ->add_option("--context", plan.context, "Tokens per sequence (default: the model's maximum)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));

  LaunchCommandOptions launch;
  CLI::App* launch_cmd = app.add_subcommand(
      "launch", "Run a subcommand on every rank of a pod through mpirun: launch --pod P -- CMD...");
  launch_cmd->add_option("--pod", launch.pod_path, "Pod file (YAML)")->required();
  launch_cmd->add_option("--hostfile", launch.hostfile,
                         "Write the pod's nodes to this Open MPI hostfile and launch with it");
  launch_cmd->add_flag("--dry-run", launch.dry_run,
                       "Print the mpirun command instead of running it");
  launch_cmd->add_option("command", launch.command, "The gemmapod subcommand and its arguments")
      ->required();

  DemoOptions demo;
  CLI::App* demo_cmd = app.add_subcommand("demo",
                                          "Run a small RANDOM-WEIGHT stack of Gemma MLP blocks "
                                          "sharded over the pod and check it against one rank");
  demo_cmd->add_option("--pod", demo.pod_path, "Pod file; default: all ranks form one TP group");
  demo_cmd->add_option("--layers", demo.layers, "MLP blocks")->check(CLI::Range(1, 4096));
  demo_cmd->add_option("--hidden", demo.hidden, "Model width")->check(CLI::Range(1, 1 << 16));
  demo_cmd->add_option("--ffn", demo.ffn, "MLP width")->check(CLI::Range(1, 1 << 18));
  demo_cmd->add_option("--rows", demo.rows, "Tokens per forward pass")
      ->check(CLI::Range(1, 1 << 16));
  demo_cmd->add_option("--steps", demo.steps, "Timed forward passes")
      ->check(CLI::Range(1, 1 << 20));
  demo_cmd->add_option("--seed", demo.seed, "Weight and input seed")->check(kSeed);
  demo_cmd->add_option("--weight-dtype", demo.weight_dtype, "bf16 or f32")
      ->check(CLI::IsMember({"bf16", "f32"}));
  demo_cmd
      ->add_option("--inject-failure-rank", demo.inject_failure_rank,
                   "Testing: this rank fails mid-run, to check the whole job ends")
      ->group("");  // hidden from --help

  ConvertCommandOptions convert;
  CLI::App* convert_cmd = app.add_subcommand(
      "convert",
      "Convert a checkpoint: a Hugging Face directory (config.json + safetensors) <-> a .h5 file, "
      "or a GGUF file -> a .h5 file");
  convert_cmd
      ->add_option("source", convert.source,
                   "Hugging Face model directory, .gguf, DeepMind .safetensors or .h5 file")
      ->required();
  convert_cmd->add_option("destination", convert.destination, ".h5 file or new directory")
      ->required();
  convert_cmd->add_option("--dtype", convert.dtype, "Weights written as: keep, bf16 or f32")
      ->check(CLI::IsMember({"keep", "bf16", "f32"}));
  convert_cmd
      ->add_option("--quantize", convert.quantize,
                   "int8: matrices as int8 with one f32 scale per row (weight-only); none")
      ->check(CLI::IsMember({"none", "int8"}));
  convert_cmd->add_option("--config", convert.config_path,
                          "Model config (.yaml) of a state dict that carries none (DeepMind's "
                          "RecurrentGemma .safetensors)");
  convert_cmd
      ->add_option("--max-shard-mib", convert.max_shard_mib,
                   "Safetensors shard size limit when writing a Hugging Face directory")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));  // 1 MiB to 1 PiB: no overflow in bytes
  convert_cmd->add_flag("--force", convert.force,
                        "Replace an existing .h5 destination (once the new one is complete)");

  auto add_model_files = [](CLI::App* cmd, ModelFiles& files) {
    cmd->add_option("--model", files.model_path, "Checkpoint (.h5, from gemmapod convert)")
        ->required();
    cmd->add_option("--tokenizer", files.tokenizer_path,
                    "SentencePiece model; default: the one embedded in the checkpoint");
    cmd->add_option("--precision", files.precision,
                    "exact: f32-grade matrix products; fast: activations rounded to bf16")
        ->check(CLI::IsMember({"exact", "fast"}));
  };

  GenerateOptions generate;
  CLI::App* generate_cmd =
      app.add_subcommand("generate", "Generate text from a prompt, streaming it as it comes");
  add_model_files(generate_cmd, generate.files);
  generate_cmd->add_option("--pod", generate.pod_path,
                           "Pod file: run sharded by its tp/pp/dp (under mpirun or launch)");
  generate_cmd
      ->add_option("--prompt", generate.prompts,
                   "The prompt text; repeat for a batch (spread over data-parallel replicas)")
      ->required();
  generate_cmd->add_flag("--chat", generate.chat,
                         "Wrap the prompt in the Gemma chat template (instruction-tuned models)");
  generate_cmd->add_option("--system", generate.system,
                           "With --chat: a system message, folded into the user turn");
  generate_cmd->add_option("--max-tokens", generate.max_tokens, "Most tokens to generate")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  generate_cmd->add_option("--temperature", generate.temperature, "0: greedy");
  generate_cmd->add_option("--top-k", generate.top_k, "Keep the k most likely tokens (0: off)");
  generate_cmd->add_option("--top-p", generate.top_p, "Nucleus sampling mass (1: off)");
  generate_cmd->add_option("--min-p", generate.min_p,
                           "Drop tokens below min-p x the top probability (0: off)");
  generate_cmd->add_option("--repetition-penalty", generate.repetition_penalty, "1: off");
  generate_cmd->add_option("--seed", generate.seed, "Sampling seed")->check(kSeed);
  generate_cmd->add_option("--stop", generate.stop, "Stop string (repeatable)");
  generate_cmd->add_flag("--stats", generate.stats, "Print prompt and decode timing to stderr");

  LogitsOptions logits;
  CLI::App* logits_cmd = app.add_subcommand(
      "logits", "Write the f32 logits of every position of a token sequence as a .npy file");
  add_model_files(logits_cmd, logits.files);
  logits_cmd->add_option("--pod", logits.pod_path,
                         "Pod file: run sharded by its tp/pp/dp (under mpirun or launch)");
  logits_cmd
      ->add_option("--tokens", logits.tokens,
                   "Token ids, comma-separated: 2,651,...; repeat for a batch of equal lengths")
      ->required();
  logits_cmd->add_option("--encoder-tokens", logits.encoder_tokens,
                         "Encoder-decoder models (T5Gemma): the encoder's token ids, one per "
                         "--tokens (the decoder's, starting with BOS); 0 is padding");
  logits_cmd
      ->add_option("--out", logits.out,
                   "Output .npy file, f32 [tokens, vocab] (a batch: [sequences, tokens, vocab])")
      ->required();

  RandomCheckpointOptions random;
  CLI::App* random_cmd = app.add_subcommand(
      "random-checkpoint", "Write a checkpoint of a model config with RANDOM weights");
  random_cmd->add_option("--config", random.config_path, "Model config (.yaml)")->required();
  random_cmd->add_option("--out", random.out, "Output .h5 file")->required();
  random_cmd->add_option("--dtype", random.dtype, "Weight storage: bf16 or f32")
      ->check(CLI::IsMember({"bf16", "f32"}));
  random_cmd->add_option("--seed", random.seed, "Weight seed")->check(kSeed);
  random_cmd->add_option("--tokenizer", random.tokenizer_path,
                         "SentencePiece model to embed in the checkpoint");
  random_cmd->add_flag("--force", random.force, "Replace an existing output file");

  TokenizeOptions tokenize;
  CLI::App* tokenize_cmd =
      app.add_subcommand("tokenize", "Print the token ids of a text, comma-separated");
  tokenize_cmd->add_option("--model", tokenize.files.model_path,
                           "Checkpoint whose embedded tokenizer to use");
  tokenize_cmd->add_option("--tokenizer", tokenize.files.tokenizer_path,
                           "SentencePiece model file (instead of a checkpoint's)");
  tokenize_cmd->add_option("--text", tokenize.text, "The text")->required();
  tokenize_cmd->add_flag("--no-bos", tokenize.no_bos, "Do not prepend the BOS token");

  ServeOptions serve;
  CLI::App* serve_cmd = app.add_subcommand(
      "serve", "Serve the model over an OpenAI-compatible HTTP API (docs/serving.md)");
  add_model_files(serve_cmd, serve.files);
  serve_cmd->add_option("--pod", serve.pod_path,
                        "Pod file (YAML): tp and pp shard the model, dp replicas share the "
                        "requests; default: every rank in one tensor-parallel group");
  serve_cmd->add_option("--host", serve.host, "Address to listen on")->capture_default_str();
  serve_cmd->add_option("--port", serve.port, "Port to listen on (0: any free port)")
      ->capture_default_str();
  serve_cmd->add_option("--api-key-file", serve.api_key_file,
                        "File holding the API key clients must send as 'Authorization: Bearer "
                        "<key>' (default: $GEMMAPOD_API_KEY; neither: no key)");
  serve_cmd->add_option("--model-name", serve.model_name,
                        "The model id clients send (default: the checkpoint's file stem)");
  serve_cmd
      ->add_option("--parallel", serve.parallel,
                   "Sequences decoded together (KV cache slots); more requests wait")
      ->capture_default_str();
  serve_cmd
      ->add_option("--context", serve.context,
                   "Tokens per sequence, prompt and completion together")
      ->capture_default_str();
  serve_cmd
      ->add_option("--prefill-chunk", serve.prefill_chunk,
                   "Prompt tokens prefilled per step, batched with the decoding sequences")
      ->capture_default_str();
  serve_cmd
      ->add_option("--kv-tokens", serve.kv_tokens,
                   "Positions the KV cache's pool of blocks holds in all, shared by the sequences "
                   "(0: --parallel x --context)")
      ->capture_default_str();
  serve_cmd->add_option("--kv-block", serve.kv_block, "Positions per KV cache block")
      ->capture_default_str();
  serve_cmd->add_flag("!--no-prefix-caching", serve.prefix_caching,
                      "Do not share the KV blocks of identical prompt prefixes between requests");
  serve_cmd
      ->add_option("--max-queue", serve.max_queue,
                   "Requests that may wait for a slot; more are answered 503")
      ->capture_default_str();
  serve_cmd->add_option("--timeout", serve.timeout, "Seconds a request may take")
      ->capture_default_str();
  serve_cmd->add_option("--max-body-kib", serve.max_body_kib, "Largest request body (KiB)")
      ->capture_default_str();

  TrainCommandOptions train;
  CLI::App* train_cmd = app.add_subcommand(
      "train", "Fine-tune a model on JSONL data as a job file describes (docs/training.md)");
  train_cmd->add_option("--config", train.config_path, "Training job file (YAML)")->required();
  train_cmd->add_option("--pod", train.pod_path,
                        "Pod file whose tp splits the model (gemmapod launch passes it; the "
                        "job's parallel.tp, when set, must agree)");
  train_cmd->add_flag("--resume", train.resume,
                      "Continue the run from the newest checkpoint in the job's checkpoint.dir");
  train_cmd->add_option("--resume-from", train.resume_from,
                        "Continue the run from this training checkpoint");
  train_cmd
      ->add_option("--inject-kill-during-save", train.inject_kill_during_save,
                   "Testing: SIGKILL this process half-way through this step's checkpoint")
      ->group("");  // hidden from --help

  CLI11_PARSE(app, argc, argv);
  // The watchdog reads its deadline from the environment, where `launch` also finds it to pass
  // on to the ranks (runtime/comm/comm_watchdog.h).
  if (timeout >= 0) setenv("GEMMAPOD_COMM_TIMEOUT", std::to_string(timeout).c_str(), 1);

  const auto run = [&]() -> int {
    if (*info_cmd) return RunInfo();
    if (*plan_cmd) return RunPlan(plan);
    if (*launch_cmd) return RunLaunch(launch, SelfExecutable(argv[0]));
    if (*demo_cmd) return RunDemo(demo, &argc, &argv);
    if (*convert_cmd) return RunConvert(convert);
    if (*generate_cmd) return RunGenerate(generate, &argc, &argv);
    if (*logits_cmd) return RunLogits(logits, &argc, &argv);
    if (*random_cmd) return RunRandomCheckpoint(random);
    if (*train_cmd) return RunTrain(train, &argc, &argv);
    if (*serve_cmd) return RunServe(serve, &argc, &argv);
    if (*tokenize_cmd) {
      if (tokenize.files.model_path.empty() && tokenize.files.tokenizer_path.empty()) {
        throw Error("tokenize: give --model (a checkpoint with a tokenizer) or --tokenizer");
      }
      return RunTokenize(tokenize);
    }
    return 0;
  };
  int rc = 0;
  try {
    rc = run();
  } catch (const std::exception& e) {
    // gemmapod::Error carries a message for the user; anything else (bad_alloc, a library's
    // exception) is still reported as one line rather than a crash.
    const int rank = LauncherRank();
    if (rank >= 0) {
      std::fprintf(stderr, "gemmapod: rank %d: error: %s\n", rank, e.what());
    } else {
      std::fprintf(stderr, "gemmapod: error: %s\n", e.what());
    }
    return 1;
  }
  // Output that never arrived (a full disk, a closed pipe) is an error, not a quiet success.
  if (rc == 0 && (std::fflush(stdout) != 0 || std::ferror(stdout))) {
    std::fprintf(stderr, "gemmapod: error: cannot write to standard output: %s\n",
                 std::strerror(errno));
    return 1;
  }
  return rc;
}
