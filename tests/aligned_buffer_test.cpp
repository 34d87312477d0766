// Staging buffers: alignment, the huge-page request (2 MiB alignment + MADV_HUGEPAGE for large
// buffers only), prefault, and what the streaming provider reports about its buffers.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "io/aligned_buffer.h"
#include "residency/provider.h"
#include "residency_test_model.h"

namespace flea {
namespace {

bool thp_can_be_advised() {
  const std::string m = io::thp_mode();
  return m == "always" || m == "madvise";
}

TEST(AlignedBuffer, ThpModeIsOneOfTheKernelsWords) {
  const std::string m = io::thp_mode();
  EXPECT_TRUE(m == "always" || m == "madvise" || m == "never" || m == "unavailable") << m;
}

TEST(AlignedBuffer, SmallBuffersKeepPageAlignmentAndAreNeverAdvised) {
  io::AlignedBuffer b;
  ASSERT_TRUE(io::AlignedBuffer::try_allocate(io::kHugePageBytes - 4096, &b, 4096, /*huge_pages=*/true));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 4096, 0u);
  EXPECT_FALSE(b.huge_advised());
}

TEST(AlignedBuffer, LargeBuffersAreHugePageAlignedAndAdvisedOnlyWhenAsked) {
  const size_t n = 3 * io::kHugePageBytes + 12345;  // not a multiple of the huge page
  io::AlignedBuffer on, off;
  ASSERT_TRUE(io::AlignedBuffer::try_allocate(n, &on, 4096, true));
  ASSERT_TRUE(io::AlignedBuffer::try_allocate(n, &off, 4096, false));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(on.data()) % io::kHugePageBytes, 0u);
  EXPECT_EQ(on.size(), n);
  EXPECT_EQ(on.huge_advised(), thp_can_be_advised()) << "THP mode " << io::thp_mode();
  EXPECT_FALSE(off.huge_advised());
  // Moving keeps the flag with the memory.
  io::AlignedBuffer moved = std::move(on);
  EXPECT_EQ(moved.huge_advised(), thp_can_be_advised());
  EXPECT_FALSE(on.huge_advised());
  EXPECT_EQ(on.data(), nullptr);
}

TEST(AlignedBuffer, PrefaultMakesEveryPageResident) {
  const size_t n = 5 * io::kHugePageBytes + 4096 * 3;
  for (bool huge : {false, true}) {
    io::AlignedBuffer b;
    ASSERT_TRUE(io::AlignedBuffer::try_allocate(n, &b, 4096, huge));
    b.prefault();
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> vec((n + page - 1) / page);
    ASSERT_EQ(mincore(b.data(), n, vec.data()), 0) << std::strerror(errno);
    size_t resident = 0;
    for (unsigned char v : vec) resident += v & 1;
    EXPECT_EQ(resident, vec.size()) << "huge " << huge;
  }
}

// A provider over layers of 7 x 512 KiB: every staging slot is over 2 MiB, the globals are not.
class ProviderBuffersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("fake.gguf");
    m_ = test::make_fake_model(path_, 4, 512 * 1024, 1024, 300000, 200000);
  }
  test::TempDir dir_;
  std::string path_;
  std::unique_ptr<test::TestModel> m_;
};

TEST_F(ProviderBuffersTest, ReportsItsBuffersAndWhichWereAdvised) {
  for (const std::string io : {"pread", "odirect"}) {
    for (const std::string huge : {"on", "off"}) {
      ResidencyOptions o;
      o.residency = "transient";
      o.io = io;
      o.prefetch = 1;
      o.huge_pages = huge;
      StatusOr<Plan> plan = plan_residency(m_->file, m_->layout, o, nullptr);
      ASSERT_TRUE(plan.ok()) << plan.status().to_string();
      ASSERT_GE(plan->slot_bytes, io::kHugePageBytes);
      Telemetry tel;
      StatusOr<IoOnlyResult> r = run_io_only(path_, m_->file, m_->layout, *plan, o, 2, &tel);
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      const uint64_t ring = static_cast<uint64_t>(plan->ring_slots) * plan->slot_bytes;
      EXPECT_GT(r->buffers.bytes, ring) << "the ring plus the globals";
      const uint64_t want_advised = huge == "on" && thp_can_be_advised() ? ring : 0;
      EXPECT_EQ(r->buffers.huge_advised_bytes, want_advised) << io << " huge " << huge;
      EXPECT_EQ(r->read_bytes, plan->first_token_bytes + plan->streamed_bytes_per_token);
    }
  }
}

TEST_F(ProviderBuffersTest, MmapCopiesNoLayersSoNoLayerBuffersAreReported) {
  ResidencyOptions o;
  o.residency = "transient";
  o.io = "mmap";
  StatusOr<Plan> plan = plan_residency(m_->file, m_->layout, o, nullptr);
  ASSERT_TRUE(plan.ok());
  Telemetry tel;
  StatusOr<IoOnlyResult> r = run_io_only(path_, m_->file, m_->layout, *plan, o, 1, &tel);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_LT(r->buffers.bytes, io::kHugePageBytes);
  EXPECT_EQ(r->buffers.huge_advised_bytes, 0u);
}

TEST(ResidencyOptionsHugePages, UnknownValueIsRefusedByName) {
  ResidencyOptions o;
  o.huge_pages = "maybe";
  Status st = validate_residency_options(o);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("--huge-pages 'maybe'"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace flea
