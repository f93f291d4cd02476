// The watchdog ends a job whose rank stopped: rank 0 waits on a stopped rank 1 in an all-reduce,
// a receive and a send, and each time the job ends within a few seconds of the deadline with a
// message naming the waiting rank, its host, the call and the peer. A deadline that is not a
// number is refused by name.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "tests/launch/run_gemmapod.h"

namespace gemmapod {
namespace {

CliResult RunProbe(const std::string& env, const std::string& call) {
  return RunShell(env +
                  " OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                  "OMPI_MCA_btl=self,vader OMPI_MCA_rmaps_base_oversubscribe=1 timeout 60 "
                  "mpirun -np 2 -x GEMMAPOD_COMM_TIMEOUT " COMM_WATCHDOG_PROBE " " +
                  call + " 2>&1");
}

TEST(CommWatchdogTest, AStoppedRankEndsTheJobWithAMessageNamingTheWait) {
  const struct {
    std::string call, says;
  } cases[] = {
      {"allreduce", "in MPI_Allreduce over a group of 2 ranks"},
      {"recv", "in MPI_Recv with rank 1 (tag 7)"},
      {"send-wait", "in MPI_Waitall (a send) with rank 1 (tag 9)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.call);
    const auto t0 = std::chrono::steady_clock::now();
    const CliResult r = RunProbe("GEMMAPOD_COMM_TIMEOUT=2", c.call);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.exit_code, 124) << "the job did not end: " << r.output;
    EXPECT_LT(seconds, 30) << r.output;
    EXPECT_NE(r.output.find("gemmapod: error: rank 0 (host "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("waited 2 s " + c.says + " without an answer"), std::string::npos)
        << r.output;
    EXPECT_EQ(r.output.find("the call returned"), std::string::npos) << r.output;
  }
}

TEST(CommWatchdogTest, ADeadlineThatIsNotANumberIsNamed) {
  const CliResult r = RunProbe("GEMMAPOD_COMM_TIMEOUT=soon", "allreduce");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("GEMMAPOD_COMM_TIMEOUT must be a number of seconds >= 0"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace gemmapod
