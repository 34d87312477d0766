// ctest-labels: io_uring
// io_uring specifics: every queue depth and chunk size reads the same bytes, registered (fixed)
// staging buffers are used without changing the result, several threads share one backend.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "io/aligned_buffer.h"
#include "io/io_backend.h"
#include "residency_test_model.h"

namespace flea {
namespace {

class UringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!io::io_uring_available()) GTEST_SKIP() << "the kernel refuses io_uring_setup here";
    ref_ = test::read_bytes(test::reference_model_path());
  }
  std::vector<uint8_t> ref_;
};

TEST_F(UringTest, QueueDepthsAndBlockSizes) {
  for (int qd : {1, 4, 32}) {
    for (uint64_t block : {4096ull, 65536ull, 1ull << 20, 0ull}) {
      io::IoBackendOptions o;
      o.queue_depth = qd;
      o.block_bytes = block;
      StatusOr<std::unique_ptr<io::IoBackend>> b = io::make_io_backend("io_uring", o);
      ASSERT_TRUE(b.ok()) << b.status().to_string();
      ASSERT_TRUE((*b)->open(test::reference_model_path()).ok());
      const uint64_t len = io::align_up(ref_.size());
      io::AlignedBuffer buf(len);
      StatusOr<uint64_t> got = (*b)->read({0, len, buf.data(), 0});
      ASSERT_TRUE(got.ok()) << got.status().to_string();
      ASSERT_EQ(*got, ref_.size()) << "qd " << qd << " block " << block;
      EXPECT_EQ(std::memcmp(buf.data(), ref_.data(), ref_.size()), 0) << "qd " << qd << " block " << block;
    }
  }
}

TEST_F(UringTest, FixedBuffersAndThreads) {
  io::IoBackendOptions o;
  o.queue_depth = 8;
  o.block_bytes = 64 * 1024;
  StatusOr<std::unique_ptr<io::IoBackend>> b = io::make_io_backend("io_uring", o);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->open(test::reference_model_path()).ok());
  const uint64_t len = io::align_up(ref_.size());
  std::vector<io::AlignedBuffer> bufs;
  for (int i = 0; i < 3; ++i) bufs.emplace_back(len);
  (*b)->register_buffers({{bufs[0].data(), len}, {bufs[1].data(), len}, {bufs[2].data(), len}});
  std::vector<std::thread> threads;
  std::vector<uint64_t> got(3, 0);
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] {
      for (int rep = 0; rep < 5; ++rep) {
        StatusOr<uint64_t> r = (*b)->read({0, len, bufs[i].data(), i});
        got[i] = r.ok() ? *r : 0;
      }
    });
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(got[i], ref_.size());
    EXPECT_EQ(std::memcmp(bufs[i].data(), ref_.data(), ref_.size()), 0);
  }
  for (const std::string& w : (*b)->warnings()) std::printf("warning: %s\n", w.c_str());
}

}  // namespace
}  // namespace flea
