// MemoryCgroup against the real kernel: a child joins before exec, its peak (page cache included)
// is read back, a child over the limit is OOM-killed and said to be. Needs writable memory cgroups
// (root, or $FLEA_CGROUP_PARENT delegated to the user); those cases skip with the reason elsewhere.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "cgroup.h"
#include "env.h"
#include "runner.h"
#include "test_util.h"

namespace fh = flea::harness;

namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// This binary doubles as the child that allocates: with FLEA_TEST_TOUCH_MB=N it writes one byte in
// every page of N MiB and exits before GoogleTest starts.
const int kTouchHelper = [] {
  const char* mb = std::getenv("FLEA_TEST_TOUCH_MB");
  if (mb == nullptr) return 0;
  const size_t bytes = static_cast<size_t>(std::atoll(mb)) << 20;
  volatile char* p = static_cast<volatile char*>(std::malloc(bytes));
  if (p == nullptr) _exit(3);
  for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
  _exit(p[bytes / 2] == 1 ? 0 : 4);
}();

// Runs this binary as the helper, touching `mb` MiB, in `cg`.
fh::ChildResult touch(int64_t mb, const fh::MemoryCgroup* cg) {
  setenv("FLEA_TEST_TOUCH_MB", std::to_string(mb).c_str(), 1);
  fh::ChildResult r = fh::run_child({"/proc/self/exe"}, 60, cg);
  unsetenv("FLEA_TEST_TOUCH_MB");
  return r;
}

class Cgroup : public ::testing::Test {
 protected:
  // A fresh cgroup, or null with why_ saying what stood in the way.
  std::unique_ptr<fh::MemoryCgroup> make(const std::string& what, int64_t limit_bytes) {
    auto cg = fh::MemoryCgroup::create("test-" + std::to_string(getpid()) + "-" + what, limit_bytes);
    if (!cg.ok()) {
      why_ = cg.status().message();
      return nullptr;
    }
    return std::move(*cg);
  }
  std::string why_;
};

#define MAKE_OR_SKIP(var, what, limit)                                               \
  auto var = make(what, limit);                                                      \
  if (var == nullptr) GTEST_SKIP() << "memory cgroups are not writable here: " << why_

}  // namespace

TEST_F(Cgroup, ChildJoinsBeforeExecAndTheCgroupIsRemovedAfter) {
  MAKE_OR_SKIP(cg, "join", 256 * kMiB);
  const std::string path = cg->path();
  const std::string name = path.substr(path.rfind('/'));
  const fh::ChildResult r = fh::run_child({"/bin/sh", "-c", "cat /proc/self/cgroup"}, 30, cg.get());
  ASSERT_TRUE(r.started) << r.start_error;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // v1: "N:memory:/flea-lab/<name>"; v2: "0::/flea-lab/<name>".
  EXPECT_NE(r.out.find(name + "\n"), std::string::npos) << r.out;
  EXPECT_EQ(cg->usage().limit_bytes, 256 * kMiB);
  ASSERT_TRUE(cg->remove().ok());
  EXPECT_NE(access(path.c_str(), F_OK), 0) << path << " is still there";
}

TEST_F(Cgroup, PeakCountsWhatTheChildTouched) {
  MAKE_OR_SKIP(cg, "peak", 256 * kMiB);
  const fh::ChildResult r = touch(48, cg.get());
  ASSERT_TRUE(r.started) << r.start_error;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const fh::CgroupUsage u = cg->usage();
  EXPECT_EQ(u.version, cg->version());
  EXPECT_EQ(u.oom_kills, 0);
  if (u.peak_bytes < 0) GTEST_SKIP() << "this kernel reports no peak (cgroup v2 before Linux 5.19)";
  EXPECT_GE(u.peak_bytes, 48 * kMiB);
  EXPECT_LE(u.peak_bytes, 256 * kMiB);
}

// The point of a cgroup over --ram-budget-mb: the page cache a run faults in is charged to it, and
// under the limit it is reclaimed (the run slows down, it is not killed) as on a smaller machine.
TEST_F(Cgroup, PageCacheIsChargedAndReclaimedWithinTheLimit) {
  MAKE_OR_SKIP(roomy, "cache-roomy", 512 * kMiB);
  MAKE_OR_SKIP(tight, "cache-tight", 16 * kMiB);
  flea::test::TempDir dir;
  const std::string file = dir.file("cached.bin");
  flea::test::write_text(file, std::string(64 * kMiB, 'x'));
  double resident = 0;
  std::string why;
  if (!fh::drop_page_cache(file, &resident, &why)) GTEST_SKIP() << "cannot drop " << file << " from the page cache: " << why;
  const std::vector<std::string> cat = {"/bin/sh", "-c", "cat " + file + " > /dev/null"};
  {
    const fh::ChildResult r = fh::run_child(cat, 60, roomy.get());
    ASSERT_TRUE(r.started) << r.start_error;
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const fh::CgroupUsage u = roomy->usage();
    if (u.peak_bytes >= 0) {
      EXPECT_GE(u.peak_bytes, 64 * kMiB);  // the whole file, though the child allocated little
    }
    EXPECT_GE(u.page_cache_bytes, 60 * kMiB);                   // still charged when the child is gone
  }
  ASSERT_TRUE(fh::drop_page_cache(file, &resident, &why)) << why;
  const fh::ChildResult r = fh::run_child(cat, 60, tight.get());
  EXPECT_EQ(r.exit_code, 0) << "reading a 64 MiB file under 16 MiB: " << r.err << " signal " << r.term_signal;
  const fh::CgroupUsage u = tight->usage();
  EXPECT_EQ(u.oom_kills, 0);
  if (u.peak_bytes >= 0) {
    EXPECT_LE(u.peak_bytes, 16 * kMiB);
  }
}

TEST_F(Cgroup, ChildOverTheLimitIsOomKilledAndSaidToBe) {
  MAKE_OR_SKIP(cg, "oom", 32 * kMiB);
  const fh::ChildResult r = touch(128, cg.get());
  ASSERT_TRUE(r.started) << r.start_error;
  EXPECT_EQ(r.term_signal, SIGKILL) << "exit " << r.exit_code;
  const fh::CgroupUsage u = cg->usage();
  EXPECT_GE(u.oom_kills, 1);
  EXPECT_EQ(fh::oom_kill_message(u).rfind("killed by the memory cgroup at its 32 MiB limit (", 0), 0u) << fh::oom_kill_message(u);
}

TEST_F(Cgroup, ChildThatCannotJoinNeverRuns) {
  MAKE_OR_SKIP(cg, "gone", 64 * kMiB);
  // Removed behind the object's back: cgroup.procs stays open, but joining fails.
  ASSERT_EQ(rmdir(cg->path().c_str()), 0);
  flea::test::TempDir dir;
  const std::string marker = dir.file("ran");
  const fh::ChildResult r = fh::run_child({"/bin/sh", "-c", "touch " + marker}, 30, cg.get());
  EXPECT_FALSE(r.started);
  EXPECT_NE(r.start_error.find("cannot join the memory cgroup: write to " + cg->path() + "/cgroup.procs: "), std::string::npos)
      << r.start_error;
  EXPECT_NE(access(marker.c_str(), F_OK), 0) << "the child ran outside its cgroup";
  EXPECT_TRUE(cg->remove().ok());
}

TEST(CgroupRoot, AParentThatIsNoCgroupIsAClearError) {
  flea::test::TempDir dir;
  const char* old = std::getenv("FLEA_CGROUP_PARENT");
  const std::string saved = old != nullptr ? old : "";
  setenv("FLEA_CGROUP_PARENT", dir.file("lab").c_str(), 1);
  auto cg = fh::MemoryCgroup::create("x", 64 * kMiB);
  if (old != nullptr) setenv("FLEA_CGROUP_PARENT", saved.c_str(), 1);
  else unsetenv("FLEA_CGROUP_PARENT");
  ASSERT_FALSE(cg.ok());
  EXPECT_EQ(cg.status().message(), "$FLEA_CGROUP_PARENT=" + dir.file("lab") + " is not in a memory cgroup hierarchy: " +
                                       dir.path() + " has neither cgroup.controllers (v2) nor memory.limit_in_bytes (v1)");
}

TEST(CgroupRoot, OomKillMessage) {
  fh::CgroupUsage u;
  u.limit_bytes = 64 * kMiB;
  u.peak_bytes = 64 * kMiB;
  u.oom_kills = 0;
  EXPECT_EQ(fh::oom_kill_message(u), "");
  u.oom_kills = 1;
  EXPECT_EQ(fh::oom_kill_message(u), "killed by the memory cgroup at its 64 MiB limit (peak 64 MiB, page cache included; 1 OOM kill)");
  u.peak_bytes = -1;
  u.oom_kills = 2;
  EXPECT_EQ(fh::oom_kill_message(u), "killed by the memory cgroup at its 64 MiB limit (2 OOM kills)");
}
