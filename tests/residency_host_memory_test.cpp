// probe_host_memory over fake /proc and cgroup trees (v1, v2, nested limits, none) and the real one.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "residency/host_memory.h"
#include "test_util.h"

namespace flea {
namespace {

constexpr uint64_t kMiB = 1 << 20;

class HostMemoryTest : public ::testing::Test {
 protected:
  void put(const std::string& rel, const std::string& text) {
    for (size_t at = 1; (at = rel.find('/', at)) != std::string::npos; ++at) mkdir((dir_.path() + rel.substr(0, at)).c_str(), 0755);
    test::write_text(dir_.path() + rel, text);
  }
  // /proc with 20 GiB available and the process in `cgroup_line`, the controllers mounted as on
  // this lab's machines (v1 memory at /sys/fs/cgroup/memory, v2 at /sys/fs/cgroup/unified).
  void proc(const std::string& cgroup_lines) {
    put("/proc/meminfo", "MemTotal:       24683772 kB\nMemFree:  1000 kB\nMemAvailable:   20971520 kB\n");
    put("/proc/self/cgroup", cgroup_lines);
    put("/proc/self/mountinfo",
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "36 31 0:33 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n");
  }
  test::TempDir dir_;
};

TEST_F(HostMemoryTest, MemAvailableWithoutACgroupLimit) {
  proc("4:memory:/\n0::/\n");
  put("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  put("/sys/fs/cgroup/memory/memory.usage_in_bytes", "12894023680\n");
  StatusOr<HostMemory> h = probe_host_memory(dir_.path());
  ASSERT_TRUE(h.ok()) << h.status().to_string();
  EXPECT_EQ(h->mem_available_bytes, 20ull << 30);
  EXPECT_EQ(h->cgroup_limit_bytes, 0u);
  EXPECT_EQ(h->available_bytes(), 20ull << 30);
  EXPECT_EQ(h->describe(), "MemAvailable 20.00 GiB");
}

TEST_F(HostMemoryTest, TightestV1LimitOverTheCgroupAndItsParents) {
  proc("4:memory:/lab/run\n0::/\n");
  const std::string m = "/sys/fs/cgroup/memory";
  put(m + "/memory.limit_in_bytes", "9223372036854771712\n");
  put(m + "/memory.usage_in_bytes", "1000\n");
  put(m + "/lab/memory.limit_in_bytes", std::to_string(64 * kMiB) + "\n");  // the parent is tighter
  put(m + "/lab/memory.usage_in_bytes", std::to_string(40 * kMiB) + "\n");
  put(m + "/lab/memory.stat", "cache 100\ninactive_file 0\ntotal_inactive_file " + std::to_string(8 * kMiB) + "\n");
  put(m + "/lab/run/memory.limit_in_bytes", std::to_string(512 * kMiB) + "\n");
  put(m + "/lab/run/memory.usage_in_bytes", std::to_string(10 * kMiB) + "\n");
  StatusOr<HostMemory> h = probe_host_memory(dir_.path());
  ASSERT_TRUE(h.ok()) << h.status().to_string();
  EXPECT_EQ(h->cgroup, "v1 /sys/fs/cgroup/memory/lab");
  EXPECT_EQ(h->cgroup_limit_bytes, 64 * kMiB);
  EXPECT_EQ(h->cgroup_used_bytes, 32 * kMiB);  // inactive file pages are reclaimed first
  EXPECT_EQ(h->available_bytes(), 32 * kMiB);
  EXPECT_EQ(h->describe(), "cgroup v1 /sys/fs/cgroup/memory/lab: limit 64.0 MiB - used 32.0 MiB = 32.0 MiB (MemAvailable 20.00 GiB)");
}

TEST_F(HostMemoryTest, V2MemoryMax) {
  proc("0::/job\n");
  const std::string u = "/sys/fs/cgroup/unified";
  put(u + "/job/memory.max", std::to_string(2048 * kMiB) + "\n");
  put(u + "/job/memory.current", std::to_string(512 * kMiB) + "\n");
  put(u + "/job/memory.stat", "anon 100\nfile 200\ninactive_file " + std::to_string(256 * kMiB) + "\n");
  StatusOr<HostMemory> h = probe_host_memory(dir_.path());
  ASSERT_TRUE(h.ok()) << h.status().to_string();
  EXPECT_EQ(h->cgroup, "v2 /sys/fs/cgroup/unified/job");
  EXPECT_EQ(h->available_bytes(), 1792 * kMiB);
  put(u + "/job/memory.max", "max\n");  // no limit
  h = probe_host_memory(dir_.path());
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->cgroup_limit_bytes, 0u);
  EXPECT_EQ(h->available_bytes(), 20ull << 30);
}

TEST_F(HostMemoryTest, NoMemAvailableIsAnError) {
  put("/proc/meminfo", "MemTotal: 1000 kB\n");
  StatusOr<HostMemory> h = probe_host_memory(dir_.path());
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().message(), dir_.path() + "/proc/meminfo has no MemAvailable line (Linux 3.14+)");
}

TEST(HostMemory, MarginIsTenPercentAtMostOneGiB) {
  EXPECT_EQ(host_memory_margin(100 * kMiB), 10 * kMiB);
  EXPECT_EQ(host_memory_margin(24ull << 30), 1ull << 30);
  EXPECT_EQ(human_bytes(1536 * kMiB), "1.50 GiB");
  EXPECT_EQ(human_bytes(kMiB / 2), "0.5 MiB");
}

TEST(HostMemory, ThisMachine) {
  StatusOr<HostMemory> h = probe_host_memory();
  ASSERT_TRUE(h.ok()) << h.status().to_string();
  EXPECT_GT(h->available_bytes(), 0u);
  EXPECT_LE(h->available_bytes(), h->mem_available_bytes);
}

}  // namespace
}  // namespace flea
