// `gemmapod generate`, `logits` and `plan` sharded over pods, as users run them: under mpirun
// directly and through `gemmapod launch`. Sharded logits and greedy text must equal one rank's;
// `plan` must show what each rank holds and refuse layouts that cannot work; a rank killed
// mid-run must end the job within seconds.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/npy.h"
#include "tests/launch/npy_relative_error.h"
#include "tests/launch/run_gemmapod.h"

namespace {

namespace fs = std::filesystem;

using gemmapod::Contains;
using gemmapod::FindRank;
using gemmapod::Gemmapod;
using gemmapod::MpirunGemmapod;
using Result = gemmapod::CliResult;

class ShardedCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("sharded-cli-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    // Gemma 3 (one key/value head, seven layers, qk-norm) with its fixture's tokenizer.
    model_ = (dir_ / "gemma3.h5").string();
    convert_ = Gemmapod("convert tests/fixtures/models/gemma3 " + model_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static double RelativeError(const std::string& got_path, const std::string& want_path) {
    return gemmapod::NpyRelativeError(got_path, want_path);
  }

  static inline fs::path dir_;
  static inline std::string model_;
  static inline Result convert_;
};

size_t Count(const std::string& text, const std::string& what);

constexpr const char* kTokens = "2,17,300,45,9,128,77,5,300,211,64";

TEST_F(ShardedCli, LogitsOfEveryPodEqualOneRank) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const std::string args = "logits --model " + model_ + " --tokens " + kTokens + " --out ";
  const std::string one = (dir_ / "one.npy").string();
  const Result r1 = Gemmapod(args + one);
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  // mpirun directly: tp = 2.
  const std::string tp2 = (dir_ / "tp2.npy").string();
  const Result r2 = MpirunGemmapod(2, args + tp2 + " --pod configs/pods/local.yaml");
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  EXPECT_TRUE(Contains(r2.output, "tp=2 pp=1 dp=1 over 2 rank")) << r2.output;
  EXPECT_LE(RelativeError(tp2, one), 1e-5);
  // Through launch: tp = 2 x pp = 2, four stages, and two replicas of tp = 2.
  for (const char* pod : {"configs/pods/local-4.yaml", "tests/launch/pods/pp4.yaml",
                          "tests/launch/pods/tp2-dp2.yaml"}) {
    const std::string out = (dir_ / "launched.npy").string();
    const Result r = Gemmapod(std::string("launch --pod ") + pod + " -- " + args + out, 120);
    ASSERT_EQ(r.exit_code, 0) << pod << "\n" << r.output;
    EXPECT_LE(RelativeError(out, one), 1e-5) << pod;
  }
}

// Several sequences: one batch [sequences, tokens, vocab], spread over the data-parallel
// replicas; each block is that sequence's logits alone.
TEST_F(ShardedCli, ABatchOfSequencesIsScoredAcrossReplicas) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const std::string batch = "logits --model " + model_ +
                            " --tokens 2,17,300,45 --tokens 2,9,128,77 --tokens 2,5,300,211 --out ";
  const std::string one = (dir_ / "batch-one.npy").string();
  const Result r1 = Gemmapod(batch + one);
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  EXPECT_TRUE(Contains(r1.output, "f32 \\[3, 4, 512\\]")) << r1.output;
  const std::string dp = (dir_ / "batch-dp.npy").string();
  const Result r2 = Gemmapod("launch --pod tests/launch/pods/tp2-dp2.yaml -- " + batch + dp, 120);
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  EXPECT_LE(RelativeError(dp, one), 1e-5);
  const std::string alone = (dir_ / "alone.npy").string();
  ASSERT_EQ(Gemmapod("logits --model " + model_ + " --tokens 2,9,128,77 --out " + alone).exit_code,
            0);
  const gemmapod::Tensor all = gemmapod::ReadNpy(dp), single = gemmapod::ReadNpy(alone);
  ASSERT_EQ(all.numel(), 3 * single.numel());
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < single.numel(); ++i) {
    const float got = all.data<float>()[single.numel() + i], want = single.data<float>()[i];
    diff = std::max(diff, double{std::fabs(got - want)});
    scale = std::max(scale, double{std::fabs(want)});
  }
  EXPECT_LE(diff / scale, 1e-5);
  const Result bad = Gemmapod("logits --model " + model_ + " --tokens 2,3,4 --tokens 5,6 --out " +
                              (dir_ / "never.npy").string());
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_TRUE(Contains(bad.output, "--tokens #2: 2 tokens, but the first sequence has 3"))
      << bad.output;
}

TEST_F(ShardedCli, BadInputIsNamed) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  Result r = Gemmapod("random-checkpoint --config configs/models/tiny-gemma.yaml --out " + model_);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "gemma3.h5 exists; pass --force to replace it")) << r.output;
  r = Gemmapod("random-checkpoint --config /nonexistent/m.yaml --out " +
               (dir_ / "never.h5").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "/nonexistent/m.yaml")) << r.output;
  EXPECT_FALSE(fs::exists(dir_ / "never.h5"));
  r = Gemmapod("plan --pod configs/pods/local.yaml --model /nonexistent/m.h5");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "/nonexistent/m.h5: no such file")) << r.output;
  // A pod of 2 devices run as 1 rank, and 3 ranks without a pod over 4 heads.
  r = Gemmapod("generate --pod configs/pods/local.yaml --model " + model_ + " --prompt hi");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "the pod has 2 devices \\(one rank each\\) but this job has 1"))
      << r.output;
  r = MpirunGemmapod(3, "generate --model " + model_ + " --prompt hi");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "tp 3 does not divide the 4 query heads .*3 ranks without --pod"))
      << r.output;
}

TEST_F(ShardedCli, AGpuPodSaysTheModelRunsOnTheHost) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const Result r =
      Gemmapod("launch --pod tests/launch/pods/local-gpu.yaml -- logits --model " + model_ +
                   " --tokens " + kTokens + " --out " + (dir_ / "gpu.npy").string(),
               120);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "host CPU; the pod's gpu devices are not used yet")) << r.output;
}

TEST_F(ShardedCli, GreedyTextOfEveryPodEqualsOneRank) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const std::string args = "generate --model " + model_ + " --prompt 'The license' --max-tokens 16";
  const Result one = Gemmapod(args);
  ASSERT_EQ(one.exit_code, 0) << one.output;
  ASSERT_GT(one.output.size(), 1u);
  const Result tp2 = MpirunGemmapod(2, args + " --pod configs/pods/local.yaml");
  ASSERT_EQ(tp2.exit_code, 0) << tp2.output;
  EXPECT_EQ(tp2.output, one.output);
  // Without --stats: mpirun forwards stdout and stderr separately, so their order is not kept.
  const Result pp = Gemmapod("launch --pod configs/pods/local-4.yaml -- " + args, 120);
  ASSERT_EQ(pp.exit_code, 0) << pp.output;
  // launch prints its mpirun command line first; the text follows on a line of its own.
  EXPECT_NE(pp.output.find("\n" + one.output), std::string::npos) << pp.output;
  // Several prompts: one batch on one rank; over two tp = 2 replicas, each replica takes its
  // share and rank 0 prints all in prompt order.
  const std::string batch = "generate --model " + model_ +
                            " --prompt 'The license' --prompt 'Hello world' --prompt abc "
                            "--max-tokens 8";
  const Result batch_one = Gemmapod(batch);
  ASSERT_EQ(batch_one.exit_code, 0) << batch_one.output;
  EXPECT_TRUE(Contains(batch_one.output, "--- prompt 2 ---")) << batch_one.output;
  const Result batch_dp = Gemmapod("launch --pod tests/launch/pods/tp2-dp2.yaml -- " + batch, 120);
  ASSERT_EQ(batch_dp.exit_code, 0) << batch_dp.output;
  EXPECT_NE(batch_dp.output.find("\n" + batch_one.output), std::string::npos) << batch_dp.output;
  // Sampling on the vocabulary shards (top-k exchanges candidates, top-p alone gathers rows)
  // draws what one rank draws with the same seed.
  for (const char* sampling : {" --temperature 3 --top-k 20 --seed 4",
                               " --temperature 4 --top-p 0.9 --repetition-penalty 1.3 --seed 9"}) {
    const Result one_sampled = Gemmapod(args + sampling);
    ASSERT_EQ(one_sampled.exit_code, 0) << one_sampled.output;
    const Result sharded = MpirunGemmapod(2, args + " --pod configs/pods/local.yaml" + sampling);
    EXPECT_EQ(sharded.exit_code, 0) << sharded.output;
    EXPECT_EQ(sharded.output, one_sampled.output) << sampling;
    EXPECT_NE(one_sampled.output, one.output) << "sampling changed nothing: " << sampling;
  }
}

TEST_F(ShardedCli, PlanShowsEachRanksBytesAndRefusesWhatCannotWork) {
  Result r = Gemmapod(
      "plan --pod configs/pods/local-4.yaml --model configs/models/gemma2-2b.yaml "
      "--context 4096");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // tp = 2 halves the layers' bytes; the two stages split the 26 layers 13/13 (the embedding on
  // the first stage weighs as much as the head on the last).
  EXPECT_TRUE(Contains(r.output, "\\n0 +localhost +\\(0,0,0\\) +0-12 +E +[0-9.]+ MiB")) << r.output;
  EXPECT_TRUE(Contains(r.output, "\\n3 +localhost +\\(0,1,1\\) +13-25 +H ")) << r.output;
  EXPECT_TRUE(Contains(r.output, "fits")) << r.output;

  r = Gemmapod("plan --pod configs/pods/2x8-h100.yaml --model configs/models/gemma3-270m.yaml");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "tp 8 does not divide the 4 query heads of gemma3-270m"))
      << r.output;
  r = Gemmapod("plan --pod tests/launch/pods/pp4.yaml --model configs/models/tiny-gemma.yaml");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "4 stages but tiny-gemma has only 3 layers")) << r.output;
  r = Gemmapod("plan --pod configs/pods/local-4.yaml --model configs/models/gemma2-27b.yaml");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "node localhost needs [0-9.]+ GiB for its 4 ranks but has 24 GiB"))
      << r.output;
  r = Gemmapod("plan --pod tests/launch/pods/uneven-stages.yaml --model " + model_);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output,
                       "uneven-stages.yaml: pipeline.stages: the last stage ends at "
                       "layer 4 but gemma3_text has layers 0..6"))
      << r.output;
  // A run refuses the same layouts before loading anything, on every rank.
  r = Gemmapod("launch --pod tests/launch/pods/uneven-stages.yaml -- generate --model " + model_ +
                   " --prompt hi",
               60);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "cannot run gemma3_text")) << r.output;
  // Every rank found the same problem; it is reported once, not once per rank.
  EXPECT_EQ(Count(r.output, "gemmapod: error:"), 1) << r.output;
  r = MpirunGemmapod(2,
                     "logits --pod configs/pods/local.yaml --model /nonexistent/m.h5 --tokens "
                     "2 --out /tmp/never.npy");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(Count(r.output, "gemmapod: error: /nonexistent/m.h5"), 1) << r.output;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// A flipped byte in a tensor that no rank reads whole (o_proj, split by columns over tp = 2) is
// still caught: the ranks combine their slices' checksums into the whole tensor's.
TEST_F(ShardedCli, ADamagedSlicedTensorIsCaughtByTheGroup) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const std::string name = "model.layers.3.self_attn.o_proj.weight";
  const gemmapod::Tensor o = gemmapod::Hdf5CheckpointReader::Open(model_)->Read(name);
  std::string bytes;
  {
    std::ifstream in(model_, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const size_t at = bytes.find(std::string(static_cast<const char*>(o.raw()), o.nbytes()));
  ASSERT_NE(at, std::string::npos);
  bytes[at + o.nbytes() / 2 + 3] ^= 0x04;
  const std::string damaged = (dir_ / "damaged.h5").string();
  std::ofstream(damaged, std::ios::binary | std::ios::trunc) << bytes;
  const Result r =
      MpirunGemmapod(2, "logits --pod configs/pods/local.yaml --model " + damaged + " --tokens " +
                            kTokens + " --out " + (dir_ / "never.npy").string());
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output,
                       "tensor 'model.layers.3.self_attn.o_proj.weight': checksum "
                       "mismatch .*tensor-parallel group's slices"))
      << r.output;
}

// mpirun's `:` syntax starts ranks with different commands; the job refuses at once, naming them,
// instead of hanging in mismatched calls or printing text that matches neither.
TEST_F(ShardedCli, RanksStartedWithDifferentCommandsAreRefused) {
  const std::string common = std::string(GEMMAPOD_BIN) + " generate --model " + model_;
  const Result r = gemmapod::RunShell(
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader "
      "OMPI_MCA_rmaps_base_oversubscribe=1 timeout 60 mpirun -np 2 " +
      common + " --prompt one --max-tokens 4 : -np 1 " + common +
      " --prompt two --max-tokens 4 2>&1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output,
                       "the job's ranks were started with different commands: rank\\(s\\) "
                       "2 differ from rank 0's `gemmapod generate --model "))
      << r.output;
}

// Ranks that read different files at the same path (started in different directories here; on a
// cluster, hosts with different copies) are refused before anything loads, naming the ranks and
// hosts; ranks reading copies of one checkpoint run.
TEST_F(ShardedCli, RanksReadingDifferentCheckpointsAreRefused) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  for (const char* d : {"rank-a", "rank-b"}) {
    fs::create_directories(dir_ / d);
    fs::copy_file(model_, dir_ / d / "m.h5", fs::copy_options::overwrite_existing);
  }
  const auto run = [&] {
    const std::string common =
        std::string(GEMMAPOD_BIN) + " generate --model m.h5 --prompt one --max-tokens 2";
    return gemmapod::RunShell(
        "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader "
        "OMPI_MCA_rmaps_base_oversubscribe=1 timeout 60 mpirun -np 1 -wdir " +
        (dir_ / "rank-a").string() + " " + common + " : -np 1 -wdir " + (dir_ / "rank-b").string() +
        " " + common + " 2>&1");
  };
  const Result same = run();
  EXPECT_EQ(same.exit_code, 0) << same.output;
  const Result converted = Gemmapod("convert tests/fixtures/models/gemma2 " +
                                    (dir_ / "rank-b" / "m.h5").string() + " --force");
  ASSERT_EQ(converted.exit_code, 0) << converted.output;
  const Result differ = run();
  EXPECT_EQ(differ.exit_code, 1) << differ.output;
  EXPECT_TRUE(Contains(differ.output,
                       "the job's ranks read different files at m.h5: rank\\(s\\) 1 \\(.+\\) "
                       "differ from rank 0's"))
      << differ.output;
}

TEST_F(ShardedCli, KillingARankEndsTheJobWithinSeconds) {
  const std::string model = (dir_ / "decode-long.h5").string();
  const Result made = Gemmapod(
      "random-checkpoint --config tests/launch/configs/decode-long.yaml "
      "--tokenizer tests/fixtures/tokenizer/tiny_gemma.model --out " +
      model);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  const std::string out = (dir_ / "killed.txt").string();
  auto job = std::async(std::launch::async, [&] {
    return MpirunGemmapod(2,
                          "generate --pod configs/pods/local.yaml --model " + model +
                              " --prompt The --max-tokens 4000 > " + out,
                          120);
  });
  // Wait until text streams (the job is mid-run), then kill rank 1 outright.
  pid_t victim = -1;
  for (int i = 0; i < 600 && victim < 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (fs::exists(out) && fs::file_size(out) > 0) victim = FindRank(model, 1);
  }
  ASSERT_GT(victim, 0) << "rank 1 never started generating";
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  Result r = job.get();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  std::ifstream text(out);
  r.output.assign(std::istreambuf_iterator<char>(text), {});
  std::printf("the job ended %.2f s after rank 1 was killed\n", seconds);
  EXPECT_LT(seconds, 10.0) << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "timed out: the surviving rank hung\n" << r.output;
  EXPECT_TRUE(Contains(r.output, "rank 1 .*(signal 9|Killed)")) << r.output;
  EXPECT_EQ(FindRank(model, 0), -1) << "rank 0 outlived the job";
}

}  // namespace
