// Error paths: injected short reads / EINTR / EAGAIN are retried into the right bytes; EIO names
// file, offset, length, layer and backend; truncation and modification during a run are detected
// (injected and real), and no acquire ever hands out wrong bytes.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "io/aligned_buffer.h"
#include "io/io_backend.h"
#include "residency/provider.h"
#include "residency_test_model.h"

namespace flea {
namespace {

TEST(Faulty, ShortReadsEintrEagainAreRetried) {
  const std::vector<uint8_t> ref = test::read_bytes(test::reference_model_path());
  for (const char* inner : {"pread", "odirect"}) {
    const std::string spec = std::string("faulty:") + inner + ":short@400000*3,eintr@400000*2,eagain@400000,short@900000*5";
    io::IoBackendOptions o;
    o.block_bytes = 0;
    StatusOr<std::unique_ptr<io::IoBackend>> b = io::make_io_backend(spec, o);
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    ASSERT_TRUE((*b)->open(test::reference_model_path()).ok());
    const uint64_t off = 4096 * 90, len = 4096 * 190;  // covers both fault offsets, ends before EOF
    io::AlignedBuffer buf(len);
    StatusOr<uint64_t> got = (*b)->read({off, len, buf.data(), 0});
    ASSERT_TRUE(got.ok()) << inner << ": " << got.status().to_string();
    ASSERT_EQ(*got, len);
    EXPECT_EQ(std::memcmp(buf.data(), ref.data() + off, len), 0) << inner;
  }
}

TEST(Faulty, PersistentEagainGivesUp) {
  StatusOr<std::unique_ptr<io::IoBackend>> b = io::make_io_backend("faulty:pread:eagain@0*1000");
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->open(test::reference_model_path()).ok());
  io::AlignedBuffer buf(4096);
  StatusOr<uint64_t> got = (*b)->read({0, 4096, buf.data(), 0});
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("EAGAIN"), std::string::npos);
}

class FaultyStreamTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    m_ = test::open_reference_model();
    ASSERT_NE(m_, nullptr);
    ref_ = test::read_bytes(test::reference_model_path());
    o_.residency = "transient";
    o_.prefetch = GetParam();
    StatusOr<Plan> plan = plan_residency(m_->file, m_->layout, o_, nullptr);
    ASSERT_TRUE(plan.ok());
    plan_ = *plan;
  }
  StatusOr<std::unique_ptr<WeightProvider>> make(const std::string& path) {
    return make_provider(path, m_->file, m_->layout, plan_, o_, nullptr);
  }
  void expect_ok_bytes(int il, const LayerWeights& w) {
    for (int t = 0; t < kLayerTensorCount; ++t) {
      const gguf::TensorInfo* ti = m_->layout.layers[il][t];
      ASSERT_EQ(std::memcmp(w.data[t], ref_.data() + ti->file_offset, ti->n_bytes), 0);
    }
  }
  std::unique_ptr<test::TestModel> m_;
  std::vector<uint8_t> ref_;
  ResidencyOptions o_;
  Plan plan_;
};

TEST_P(FaultyStreamTest, EioNamesFileOffsetLengthLayerBackend) {
  const ReadSpan& s = plan_.layers[1].spans[0];
  o_.fault_plan = "eio@" + std::to_string(s.file_offset + 5000);
  StatusOr<std::unique_ptr<WeightProvider>> p = make(test::reference_model_path());
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  StatusOr<LayerWeights> w0 = (*p)->acquire(0);
  ASSERT_TRUE(w0.ok());
  expect_ok_bytes(0, *w0);
  (*p)->release(0);
  StatusOr<LayerWeights> w1 = (*p)->acquire(1);
  ASSERT_FALSE(w1.ok());
  const std::string& msg = w1.status().message();
  EXPECT_EQ(w1.status().code(), StatusCode::kIoError);
  EXPECT_NE(msg.find("file '" + test::reference_model_path() + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset " + std::to_string(s.file_offset) + " length " + std::to_string(s.length)),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("layer 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("backend faulty(pread)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Input/output error"), std::string::npos) << msg;
  // The fault fired once: asking again reads the layer correctly.
  StatusOr<LayerWeights> again = (*p)->acquire(1);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  expect_ok_bytes(1, *again);
  (*p)->release(1);
}

TEST_P(FaultyStreamTest, EioInGlobalsFailsConstruction) {
  o_.fault_plan = "eio@" + std::to_string(m_->layout.globals[0]->file_offset);
  StatusOr<std::unique_ptr<WeightProvider>> p = make(test::reference_model_path());
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("layer globals"), std::string::npos) << p.status().message();
}

TEST_P(FaultyStreamTest, InjectedTruncationIsDetected) {
  o_.fault_plan = "trunc@" + std::to_string(plan_.layers[1].spans[0].file_offset + 100);
  StatusOr<std::unique_ptr<WeightProvider>> p = make(test::reference_model_path());
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  Status first_error;
  for (int tok = 0; tok < 3 && first_error.ok(); ++tok)
    for (int il = 0; il < 2; ++il) {
      StatusOr<LayerWeights> w = (*p)->acquire(il);
      if (!w.ok()) {
        first_error = w.status();
        break;
      }
      expect_ok_bytes(il, *w);
      (*p)->release(il);
    }
  ASSERT_FALSE(first_error.ok());
  EXPECT_EQ(first_error.code(), StatusCode::kDataLoss);
  EXPECT_NE(first_error.message().find("truncated"), std::string::npos) << first_error.message();
}

INSTANTIATE_TEST_SUITE_P(Prefetch, FaultyStreamTest, ::testing::Values(0, 1));

// Real files changed under a running stream, for every backend.
class ChangedFileTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ChangedFileTest, TruncationAndModificationAreErrorsNotGarbage) {
  if (GetParam() == "io_uring" && !io::io_uring_available()) GTEST_SKIP() << "io_uring unavailable";
  auto m = test::open_reference_model();
  ASSERT_NE(m, nullptr);
  const std::vector<uint8_t> ref = test::read_bytes(test::reference_model_path());
  for (const char* change : {"truncate", "modify"}) {
    test::TempDir dir;
    const std::string path = dir.file("m.gguf");
    test::write_bytes(path, ref);
    ResidencyOptions o;
    o.residency = "transient";
    o.io = GetParam();
    o.prefetch = 0;
    StatusOr<Plan> plan = plan_residency(m->file, m->layout, o, nullptr);
    ASSERT_TRUE(plan.ok());
    StatusOr<std::unique_ptr<WeightProvider>> p = make_provider(path, m->file, m->layout, *plan, o, nullptr);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    Status err;
    for (int tok = 0; tok < 3 && err.ok(); ++tok) {
      if (tok == 1) {
        if (std::string(change) == "truncate") {
          ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(ref.size() / 2)), 0);
        } else {
          // Same size, new mtime (set explicitly: coarse clocks could give the same timestamp).
          struct timespec ts[2] = {{0, UTIME_OMIT}, {1000000000, 0}};
          ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), ts, 0), 0);
        }
      }
      for (int il = 0; il < 2; ++il) {
        StatusOr<LayerWeights> w = (*p)->acquire(il);
        if (!w.ok()) {
          err = w.status();
          break;
        }
        for (int t = 0; t < kLayerTensorCount; ++t) {
          const gguf::TensorInfo* ti = m->layout.layers[il][t];
          ASSERT_EQ(std::memcmp(w->data[t], ref.data() + ti->file_offset, ti->n_bytes), 0);
        }
        (*p)->release(il);
      }
    }
    ASSERT_FALSE(err.ok()) << change;
    EXPECT_EQ(err.code(), StatusCode::kDataLoss) << err.to_string();
    EXPECT_NE(err.message().find(std::string(change) == "truncate" ? "truncated" : "modified"), std::string::npos)
        << err.message();
    EXPECT_NE(err.message().find(path), std::string::npos);
    EXPECT_NE(err.message().find("layer 0"), std::string::npos) << err.message();
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ChangedFileTest, ::testing::Values("pread", "odirect", "mmap", "io_uring"));

}  // namespace
}  // namespace flea
