// A checkpoint corrupted anywhere, one byte at a time (every byte inverted, every third byte's low
// bit flipped), is either read whole and right or refused
// with an error: never a crash, a hang or a wrong value inside libhdf5 (the files use HDF5's 1.10
// format, whose metadata is checksummed, and no variable-length strings, whose global heap is
// not). Each corrupted copy is opened and read in a child process, so a crash or a hang (an
// alarm) is reported with its offset instead of ending the test.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <type_traits>
#include <variant>
#include <vector>

#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

void WriteSample(const std::string& path) {
  Hdf5CheckpointWriter w = Hdf5CheckpointWriter::Create(path);
  w.SetConfig({{"architecture", std::string("gemma2")},
               {"hidden_size", int64_t{64}},
               {"rms_norm_eps", 1e-6},
               {"layer_kinds", std::vector<std::string>{"sliding", "global"}},
               {"dims", std::vector<int64_t>{3, 4}}});
  Tensor f = Tensor::Empty({3, 4}, DType::kF32);
  for (int64_t i = 0; i < 12; ++i) f.data<float>()[i] = static_cast<float>(i) * 1.5f - 4;
  w.Write("model.layers.0.mlp.up_proj.weight", f);
  w.Write("model.embed_tokens.weight", f.To(DType::kBF16));
  Tensor ids = Tensor::Empty({3}, DType::kI32);
  for (int i = 0; i < 3; ++i) ids.data<int32_t>()[i] = 2 + 649 * i;
  w.Write("ids", ids);
  w.WriteFile("tokenizer.model", "sentencepiece bytes");
  w.Commit();
}

std::string Text(const AttributeValue& v) {
  std::ostringstream out;
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, double> ||
                      std::is_same_v<T, std::string>) {
          out << x;
        } else {
          for (const auto& item : x) out << item << ",";
        }
      },
      v);
  return out.str();
}

// Everything a command reads from a checkpoint, as one string (tensor bytes included).
std::string ReadEverything(const std::string& path) {
  auto r = Hdf5CheckpointReader::Open(path);
  std::ostringstream out;
  for (const auto& [key, value] : r->config()) {
    out << key << "=" << Text(value) << ";";
  }
  for (const TensorInfo& t : r->List()) {
    const Tensor x = r->Read(t.name);
    out << t.name << ":" << std::string(static_cast<const char*>(x.raw()), x.nbytes()) << ";";
  }
  out << r->ReadFile("tokenizer.model");
  return out.str();
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(Hdf5CorruptionTest, EveryCorruptedByteIsReadRightOrRefused) {
  const fs::path dir = fs::temp_directory_path() / ("h5-corrupt-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string good = (dir / "good.h5").string(), bad = (dir / "bad.h5").string();
  WriteSample(good);
  const std::string want = ReadEverything(good);
  const std::string bytes = Slurp(good);
  ASSERT_GT(bytes.size(), 1000u);
  std::vector<std::string> failures;
  int refused = 0, unchanged = 0;
  for (size_t at = 0; at < bytes.size(); ++at) {
    for (const unsigned char flip : {0xffu, 0x01u}) {
      if (flip == 0x01u && at % 3 != 0) continue;  // the low bit on every third byte: less time
      std::string copy = bytes;
      copy[at] = static_cast<char>(static_cast<unsigned char>(copy[at]) ^ flip);
      std::ofstream(bad, std::ios::binary | std::ios::trunc) << copy;
      const pid_t child = fork();
      ASSERT_GE(child, 0);
      if (child == 0) {
        alarm(10);  // a hang ends the child with SIGALRM
        try {
          _exit(ReadEverything(bad) == want ? 0 : 4);
        } catch (const Error&) {
          _exit(1);
        } catch (...) {
          _exit(3);  // an error that is not ours: not named
        }
      }
      int status = 0;
      waitpid(child, &status, 0);
      const std::string where = "byte " + std::to_string(at) + " ^ " + std::to_string(flip);
      if (WIFSIGNALED(status)) {
        failures.push_back(where + ": " + strsignal(WTERMSIG(status)));
      } else if (WEXITSTATUS(status) == 1) {
        ++refused;
      } else if (WEXITSTATUS(status) == 0) {
        ++unchanged;
      } else {
        failures.push_back(
            where + (WEXITSTATUS(status) == 4 ? ": read different values" : ": an error not ours"));
      }
    }
  }
  fs::remove_all(dir);
  std::string list;
  for (size_t i = 0; i < failures.size() && i < 20; ++i) list += "\n  " + failures[i];
  EXPECT_TRUE(failures.empty()) << failures.size() << " of " << refused + unchanged
                                << " corruptions:" << list;
  // Most bytes matter; those that do not (padding, unused space) read back unchanged.
  EXPECT_GT(refused, static_cast<int>(bytes.size()) / 2);
  std::printf("%zu bytes corrupted: %d copies refused, %d read unchanged\n", bytes.size(), refused,
              unchanged);
}

}  // namespace
}  // namespace gemmapod
