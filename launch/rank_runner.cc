#include "launch/rank_runner.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "launch/model_files.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

// The ranks of a job must run one command: mpirun's `:` syntax can start them with different
// arguments, and they would then wait on each other in different calls or mix their outputs.
// Checked first, with one all-gather of a hash of each rank's arguments.
void CheckOneCommand(Communicator& world, int argc, char** argv) {
  if (world.size() == 1) return;
  std::string command;
  for (int i = 1; i < argc; ++i) {
    if (!command.empty()) command += ' ';
    command += argv[i];
  }
  uint64_t hash = 1469598103934665603ull;  // FNV-1a
  for (const unsigned char c : command) hash = (hash ^ c) * 1099511628211ull;
  Tensor mine = Tensor::Empty({2}, DType::kI32);
  mine.data<int32_t>()[0] = static_cast<int32_t>(hash & 0xffffffffu);
  mine.data<int32_t>()[1] = static_cast<int32_t>(hash >> 32);
  Tensor all = Tensor::Empty({2 * world.size()}, DType::kI32);
  world.AllGather(mine, all);
  const int32_t* h = all.data<int32_t>();
  std::string differ;
  for (int r = 1; r < world.size(); ++r) {
    if (h[2 * r] != h[0] || h[2 * r + 1] != h[1])
      differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  }
  if (differ.empty()) return;
  if (world.rank() == 0) {
    std::fprintf(stderr,
                 "gemmapod: error: the job's ranks were started with different commands: rank(s) "
                 "%s differ from rank 0's `gemmapod %s` (every rank must run the same command)\n",
                 differ.c_str(), command.c_str());
    std::fflush(stderr);
  }
  throw JobFailed{};
}

// Ranks on one host share its cores. OpenMP's default (a thread per core the process may run
// on) gives each of them every core, and their spinning threads then fight for the cores: four
// training ranks on two cores took 13 s for what one thread each does in under 1 s. Unless
// OMP_NUM_THREADS says otherwise, or mpirun bound the rank to fewer cores than the host has
// (OpenMP already follows that), each rank takes its share of the cores.
void ShareCoresWithTheHostsRanks() {
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return;
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks = local != nullptr ? std::atoi(local) : 0;
  if (ranks <= 1) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (sched_getaffinity(0, sizeof set, &set) != 0 || online <= 0 || CPU_COUNT(&set) < online) {
    return;
  }
  omp_set_num_threads(std::max(1, static_cast<int>(online) / ranks));
}

// FNV-1a over bytes, continued from `hash`.
uint64_t Fnv(uint64_t hash, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
  return hash;
}
constexpr uint64_t kFnvStart = 1469598103934665603ull;

uint64_t HashOfFileEnds(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;  // a path this rank cannot read: the job's own check names it
  in.seekg(0, std::ios::end);
  const auto size = static_cast<int64_t>(in.tellg());
  uint64_t hash = Fnv(kFnvStart, &size, sizeof size);
  constexpr int64_t kEnd = int64_t{1} << 20;
  std::string buf(static_cast<size_t>(std::min(size, kEnd)), '\0');
  for (const int64_t at : {int64_t{0}, std::max<int64_t>(0, size - kEnd)}) {
    in.seekg(at);
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    hash = Fnv(hash, buf.data(), static_cast<size_t>(in.gcount()));
  }
  return hash;
}

uint64_t HashOfCheckpoint(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    std::vector<std::pair<std::string, uintmax_t>> files;
    for (const auto& e : fs::directory_iterator(path, ec)) {
      if (e.is_regular_file(ec)) files.emplace_back(e.path().filename().string(), e.file_size(ec));
    }
    std::sort(files.begin(), files.end());
    uint64_t hash = kFnvStart;
    for (const auto& [name, size] : files) {
      hash = Fnv(hash, name.data(), name.size());
      hash = Fnv(hash, &size, sizeof size);
    }
    return Fnv(hash, "config", 6) ^ HashOfFileEnds((fs::path(path) / "config.json").string());
  }
  char signature[8] = {};
  std::ifstream(path, std::ios::binary).read(signature, sizeof signature);
  if (std::memcmp(signature, "\x89HDF\r\n\x1a\n", 8) != 0) return HashOfFileEnds(path);
  try {
    const Hdf5CheckpointReader& reader = CheckpointFile(path);
    uint64_t hash = kFnvStart;
    for (const TensorInfo& info : reader.List()) {
      const uint32_t stored = reader.StoredCrc32(info.name).value_or(0);
      hash = Fnv(hash, info.name.data(), info.name.size());
      hash = Fnv(hash, &stored, sizeof stored);
    }
    return hash;
  } catch (const std::exception&) {
    return HashOfFileEnds(path);  // unreadable here: the job's own loading names the problem
  }
}

std::string HostName() {
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  return name;
}

}  // namespace

void CheckSameCheckpoint(Communicator& world, const std::string& path) {
  if (world.size() == 1) return;
  const uint64_t hash = HashOfCheckpoint(path);
  // Each rank's hash and host name (64 bytes), gathered.
  constexpr int kWords = 2 + 16;
  Tensor mine = Tensor::Zeros({kWords}, DType::kI32);
  std::memcpy(mine.data<int32_t>(), &hash, sizeof hash);
  const std::string host = HostName();
  std::memcpy(mine.data<int32_t>() + 2, host.data(), std::min<size_t>(host.size(), 63));
  Tensor all = Tensor::Empty({kWords * world.size()}, DType::kI32);
  world.AllGather(mine, all);
  const auto hash_of = [&](int r) {
    uint64_t h = 0;
    std::memcpy(&h, all.data<int32_t>() + r * kWords, sizeof h);
    return h;
  };
  const auto host_of = [&](int r) {
    return std::string(reinterpret_cast<const char*>(all.data<int32_t>() + r * kWords + 2));
  };
  std::string differ;
  for (int r = 1; r < world.size(); ++r) {
    if (hash_of(r) != hash_of(0)) {
      differ += StrCat(differ.empty() ? "" : ", ", r, " (", host_of(r), ")");
    }
  }
  if (differ.empty()) return;
  if (world.rank() == 0) {
    std::fprintf(stderr,
                 "gemmapod: error: the job's ranks read different files at %s: rank(s) %s differ "
                 "from rank 0's (%s); every rank must read the same checkpoint (copy it to every "
                 "host, or put it on a shared filesystem)\n",
                 path.c_str(), differ.c_str(), host_of(0).c_str());
    std::fflush(stderr);
  }
  throw JobFailed{};
}

int RunOnRanks(int* argc, char*** argv, const std::function<int(Communicator& world)>& body) {
  MpiSession session(argc, argv);
  auto world = MpiCommunicator::World();
  ShareCoresWithTheHostsRanks();
  try {
    CheckOneCommand(*world, *argc, *argv);
    return body(*world);
  } catch (const JobFailed&) {
    return 1;  // reported once by CheckOnEveryRank; every rank got here
  } catch (const std::exception& e) {
    if (world->size() == 1) {
      std::fprintf(stderr, "gemmapod: error: %s\n", e.what());
    } else {
      std::fprintf(stderr, "gemmapod: rank %d of %d: error: %s\n", world->rank(), world->size(),
                   e.what());
    }
    std::fflush(stderr);
    // Finalising would wait for ranks that are stuck waiting for this one: abort them all.
    if (world->size() > 1) MpiSession::Abort(1);
    return 1;
  }
}

void CheckOnEveryRank(Communicator& world, const std::function<void()>& check) {
  std::string message;
  bool failed = false;
  try {
    check();
  } catch (const std::exception& e) {
    failed = true;
    message = e.what();
  }
  // failures[0]: how many ranks failed; first[0]: the lowest of them (size() when none).
  Tensor failures = Tensor::Empty({1}, DType::kI32), first = Tensor::Empty({1}, DType::kI32);
  failures.data<int32_t>()[0] = failed ? 1 : 0;
  first.data<int32_t>()[0] = failed ? world.rank() : world.size();
  world.AllReduce(failures, ReduceOp::kSum);
  world.AllReduce(first, ReduceOp::kMin);
  const int count = failures.data<int32_t>()[0];
  if (count == 0) return;
  if (world.rank() == first.data<int32_t>()[0]) {
    if (count == world.size()) {
      std::fprintf(stderr, "gemmapod: error: %s\n", message.c_str());
    } else {
      std::fprintf(stderr, "gemmapod: rank %d of %d: error: %s\n", world.rank(), world.size(),
                   message.c_str());
    }
    std::fflush(stderr);
  }
  throw JobFailed{};
}

}  // namespace gemmapod
