// run_lab_harness under faults: SIGTERM mid-sweep (partial file, --resume keeps every finished
// run as it was), two signals in quick succession, and a full disk while writing results (the
// previous file stays intact, no temp file is left, one error line, non-zero exit). The full disk
// is a 256 KiB tmpfs mounted for the test (needs root; skipped with the reason otherwise).
#include <gtest/gtest.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "results.h"
#include "test_util.h"

using Json = nlohmann::json;

namespace {

using flea::test::count_lines;
using flea::test::fake_flea;
using flea::test::harness_bin;
using flea::test::read_text;
using flea::test::schema_errors;
using flea::test::write_text;



std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    closedir(d);
  }
  return names;
}
// Temp files write_file_atomic leaves behind when it fails to clean up ("<path>.tmp.<pid>").
std::vector<std::string> temp_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& n : list_dir(dir))
    if (n.find(".tmp.") != std::string::npos) out.push_back(n);
  return out;
}
std::string results_file(const std::string& dir) {
  for (const auto& n : list_dir(dir))
    if (n.size() > 5 && n.substr(n.size() - 5) == ".json" && n.find(".trace.") == std::string::npos &&
        n.find(".tmp.") == std::string::npos)
      return dir + "/" + n;
  return "";
}
// Number of runs in the results file, -1 while there is none; a file that does not parse is a
// test failure (the writes must be atomic).
int runs_on_disk(const std::string& dir) {
  const std::string f = results_file(dir);
  if (f.empty()) return -1;
  try {
    return static_cast<int>(Json::parse(read_text(f))["runs"].size());
  } catch (const std::exception& e) {
    ADD_FAILURE() << f << " is not valid JSON mid-sweep: " << e.what();
    return -1;
  }
}

// The harness in the background, stdout+stderr to `log`.
pid_t spawn_harness(const std::vector<std::string>& env, const std::vector<std::string>& args, const std::string& log) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  for (const auto& e : env) putenv(strdup(e.c_str()));
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fd, 1);
  dup2(fd, 2);
  std::vector<char*> argv = {const_cast<char*>("run_lab_harness"), const_cast<char*>("--flea"), strdup(fake_flea().c_str())};
  for (const auto& a : args) argv.push_back(strdup(a.c_str()));
  argv.push_back(nullptr);
  execv(harness_bin().c_str(), argv.data());
  _exit(127);
}

bool wait_for_runs(const std::string& dir, int n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (runs_on_disk(dir) >= n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// A small tmpfs, unmounted (lazily) when the object dies.
class Tmpfs {
 public:
  explicit Tmpfs(const std::string& dir, const std::string& size) : dir_(dir) {
    mkdir(dir.c_str(), 0755);
    mounted_ = mount("tmpfs", dir.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
    if (!mounted_) why_ = std::string("cannot mount a tmpfs to simulate a full disk (") + std::strerror(errno) + "; needs root)";
  }
  ~Tmpfs() {
    if (mounted_) umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }
  // Writes a filler file until the filesystem is full; returns the bytes written.
  size_t fill() const {
    const int fd = open((dir_ + "/filler").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    std::vector<char> block(4096, 'f');
    size_t total = 0;
    for (size_t chunk : {size_t(4096), size_t(512), size_t(64), size_t(1)}) {
      while (true) {
        const ssize_t n = ::write(fd, block.data(), chunk);
        if (n <= 0) break;
        total += static_cast<size_t>(n);
      }
    }
    close(fd);
    return total;
  }

 private:
  std::string dir_, why_;
  bool mounted_ = false;
};

class HarnessFault : public ::testing::Test {
 protected:
  void SetUp() override {
    write_text(dir_.file("m.gguf"), std::string(8192, 'x'));
    log_ = dir_.file("engine.log");
    out_ = dir_.file("out");
    env_ = {"FAKE_FLEA_LOG=" + log_, "FLEA_CACHE_DIR=" + dir_.file("cache")};
  }
  std::string scenario(const std::string& body) {
    const std::string p = dir_.file("s.yaml");
    write_text(p, "model: m.gguf\nthreads: 1\nwarmup: 0\nceilings: {fio: false, memory: false}\n" + body);
    return p;
  }
  int run_sync(const std::vector<std::string>& args, std::string* output) {
    const std::string log = dir_.file("harness.log");
    pid_t pid = spawn_harness(env_, args, log);
    int status = 0;
    waitpid(pid, &status, 0);
    *output = read_text(log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  flea::test::TempDir dir_;
  std::string log_, out_;
  std::vector<std::string> env_;
};

constexpr const char* kSixPoints = "gen: 2\nprompt: 0\nreps: 1\nprefetch: [0, 1, 2, 3, 4, 5]\n";

}  // namespace

TEST_F(HarnessFault, SigtermWritesPartialAndResumeKeepsEveryFinishedRun) {
  const std::string s = scenario(kSixPoints);
  std::vector<std::string> env = env_;
  env.push_back("FAKE_FLEA_SLEEP=0.3");
  pid_t pid = spawn_harness(env, {"--config", s, "--out", out_}, dir_.file("harness.log"));
  ASSERT_TRUE(wait_for_runs(out_, 2));
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 143) << read_text(dir_.file("harness.log"));
  EXPECT_NE(read_text(dir_.file("harness.log")).find("continue with --resume"), std::string::npos);
  const std::string f = results_file(out_);
  ASSERT_FALSE(f.empty());
  const Json before = Json::parse(read_text(f));
  EXPECT_EQ(before["status"]["partial"], true);
  EXPECT_EQ(before["status"]["complete"], false);
  const size_t done = before["runs"].size();
  ASSERT_GE(done, 2u);
  ASSERT_LT(done, 6u);
  for (const auto& r : before["runs"]) EXPECT_EQ(r["status"], "ok");
  bool warned = false;
  for (const auto& w : before["context"]["warnings"]) warned |= w.get<std::string>().find("interrupted by SIGTERM") != std::string::npos;
  EXPECT_TRUE(warned) << before["context"]["warnings"].dump();
  EXPECT_EQ(temp_files(out_), std::vector<std::string>{});
  const int first_invocations = count_lines(read_text(log_), "bench ");

  std::string output;
  ASSERT_EQ(run_sync({"--resume", f}, &output), 0) << output;
  const Json after = Json::parse(read_text(f));
  EXPECT_EQ(after["status"]["complete"], true);
  EXPECT_EQ(after["status"]["partial"], false);
  ASSERT_EQ(after["runs"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(after["runs"][i]["point"]["prefetch"], static_cast<int>(i));
  // Every run finished before the signal is kept exactly (id, samples, timings), not re-run.
  for (size_t i = 0; i < done; ++i) {
    EXPECT_EQ(after["runs"][i]["id"], before["runs"][i]["id"]);
    EXPECT_EQ(after["runs"][i]["samples_ns"], before["runs"][i]["samples_ns"]);
    EXPECT_EQ(after["runs"][i], before["runs"][i]) << "run " << i << " changed on resume";
  }
  EXPECT_EQ(count_lines(read_text(log_), "bench ") - first_invocations, static_cast<int>(6 - done));
  EXPECT_EQ(temp_files(out_), std::vector<std::string>{});
}

// Two signals back to back (or the second while the first's partial file is being written):
// the harness still exits through its own path (not killed), and the file is whole and partial.
TEST_F(HarnessFault, TwoSignalsInQuickSuccessionDoNotCorruptTheFile) {
  const std::string s = scenario(kSixPoints);
  std::vector<std::string> env = env_;
  env.push_back("FAKE_FLEA_SLEEP=0.2");
  struct Case {
    int first, second, gap_ms;
  };
  for (const Case c : {Case{SIGTERM, SIGTERM, 0}, Case{SIGINT, SIGTERM, 0}, Case{SIGTERM, SIGINT, 2},
                       Case{SIGTERM, SIGTERM, 20}}) {
    const std::string out = dir_.file("out" + std::to_string(c.first) + "_" + std::to_string(c.second) + "_" + std::to_string(c.gap_ms));
    pid_t pid = spawn_harness(env, {"--config", s, "--out", out}, dir_.file("harness.log"));
    ASSERT_TRUE(wait_for_runs(out, 1));
    kill(pid, c.first);
    if (c.gap_ms) std::this_thread::sleep_for(std::chrono::milliseconds(c.gap_ms));
    kill(pid, c.second);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
    const int rc = WEXITSTATUS(status);
    EXPECT_TRUE(rc == 128 + c.first || rc == 128 + c.second) << rc;
    const std::string f = results_file(out);
    ASSERT_FALSE(f.empty());
    Json j;
    ASSERT_NO_THROW(j = Json::parse(read_text(f))) << "results file corrupted by the second signal";
    EXPECT_EQ(j["status"]["partial"], true);
    EXPECT_GE(j["runs"].size(), 1u);
    EXPECT_LT(j["runs"].size(), 6u);
    for (const auto& r : j["runs"]) EXPECT_EQ(r["status"], "ok");
    EXPECT_EQ(temp_files(out), std::vector<std::string>{});
  }
}

// write_file_atomic itself on a full filesystem: an error naming the path and errno text, the
// previous file untouched, its temp file removed; it works again once there is room.
TEST(WriteFileAtomic, FullDiskKeepsThePreviousFileAndRemovesTheTemp) {
  flea::test::TempDir dir;
  Tmpfs fs(dir.file("full"), "256k");
  if (!fs.mounted()) GTEST_SKIP() << fs.why();
  const std::string path = dir.file("full/results.json");
  const std::string old_text = "{\"runs\": [1, 2, 3]}\n";
  ASSERT_TRUE(flea::harness::write_file_atomic(path, old_text).ok());
  ASSERT_GT(fs.fill(), 0u);
  for (size_t bytes : {size_t(100), size_t(300000)}) {  // fits in a page / larger than the whole fs
    flea::Status st = flea::harness::write_file_atomic(path, std::string(bytes, 'n'));
    ASSERT_FALSE(st.ok()) << bytes;
    EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(std::strerror(ENOSPC)), std::string::npos) << st.message();
    EXPECT_EQ(st.message().find('\n'), std::string::npos) << st.message();
    EXPECT_EQ(read_text(path), old_text);
    EXPECT_EQ(temp_files(dir.file("full")), std::vector<std::string>{});
  }
  ASSERT_EQ(unlink(dir.file("full/filler").c_str()), 0);
  ASSERT_TRUE(flea::harness::write_file_atomic(path, "new\n").ok());
  EXPECT_EQ(read_text(path), "new\n");
  EXPECT_EQ(temp_files(dir.file("full")), std::vector<std::string>{});
}

// The disk fills up in the middle of a sweep: the last results file that was written stays whole,
// no temp file is left, the harness says so once (path + errno text) and exits non-zero.
TEST_F(HarnessFault, DiskFullMidSweepKeepsLastGoodResultsAndExitsNonZero) {
  Tmpfs fs(dir_.file("full"), "256k");
  if (!fs.mounted()) GTEST_SKIP() << fs.why();
  const std::string out = dir_.file("full");
  const std::string s = scenario(kSixPoints + std::string("trace: false\n"));
  std::vector<std::string> env = env_;
  env.push_back("FAKE_FLEA_SLEEP=0.3");
  const std::string log = dir_.file("harness.log");
  pid_t pid = spawn_harness(env, {"--config", s, "--out", out}, log);
  ASSERT_TRUE(wait_for_runs(out, 1));
  ASSERT_GT(fs.fill(), 0u);
  const int seen = runs_on_disk(out);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  const std::string output = read_text(log);
  EXPECT_NE(WEXITSTATUS(status), 0) << output;
  const std::string f = results_file(out);
  ASSERT_FALSE(f.empty());
  Json j;
  ASSERT_NO_THROW(j = Json::parse(read_text(f))) << "the last good results file was damaged";
  EXPECT_EQ(j["status"]["partial"], true);
  EXPECT_GE(static_cast<int>(j["runs"].size()), seen);  // a write in flight while filling may have landed
  EXPECT_LT(j["runs"].size(), 6u);
  EXPECT_EQ(temp_files(out), std::vector<std::string>{});
  EXPECT_EQ(count_lines(output, std::strerror(ENOSPC)), 1) << output;
  EXPECT_EQ(count_lines(output, f), count_lines(output, std::strerror(ENOSPC))) << output;  // the line names the file
}

// Resuming into a full disk: nothing can be written, the file being resumed is left byte for
// byte as it was.
TEST_F(HarnessFault, DiskFullOnResumeLeavesTheFileUnchanged) {
  Tmpfs fs(dir_.file("full"), "256k");
  if (!fs.mounted()) GTEST_SKIP() << fs.why();
  const std::string out = dir_.file("full");
  const std::string s = scenario("gen: 2\nprompt: 0\nreps: 1\nprefetch: [0, 1]\ntrace: false\n");
  std::string output;
  ASSERT_EQ(run_sync({"--config", s, "--out", out}, &output), 0) << output;
  const std::string f = results_file(out);
  ASSERT_FALSE(f.empty());
  const std::string before = read_text(f);
  ASSERT_GT(fs.fill(), 0u);
  const int rc = run_sync({"--resume", f}, &output);
  EXPECT_NE(rc, 0) << output;
  EXPECT_EQ(read_text(f), before);
  EXPECT_EQ(temp_files(out), std::vector<std::string>{});
  EXPECT_EQ(count_lines(output, std::strerror(ENOSPC)), 1) << output;
  EXPECT_NE(output.find(f), std::string::npos) << output;
}
