// Error paths: injected short reads / EINTR / EAGAIN are retried into the right bytes; EIO names
// file, offset, length, layer and backend; truncation and modification during a run are detected
// (injected and real), a file replaced by rename keeps being read from the inode that was opened,
// and no acquire ever hands out wrong bytes.
#include <gtest/gtest.h>
#include <thread>
#include <chrono>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "compute/cpu/thread_pool.h"
#include "io/aligned_buffer.h"
#include "io/io_backend.h"
#include "model/llama.h"
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
      if (ti == nullptr) continue;
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
  const std::vector<uint8_t> ref = test::read_bytes(test::reference_model_path());
  for (const char* change : {"truncate", "modify"}) {
    test::TempDir dir;
    const std::string path = dir.file("m.gguf");
    test::write_bytes(path, ref);
    auto m = test::open_reference_model(path);  // the header of the file that is streamed
    ASSERT_NE(m, nullptr);
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
          if (ti == nullptr) continue;
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

// A new file renamed over the model path mid-run (how tools update files atomically) does not
// touch the inode the backend opened: every backend keeps reading the original bytes, the
// size/mtime/inode check (on the open fd) still passes, and the logits are bit-identical to a run
// where nothing happened. The replacement's weights are all different (every data byte flipped),
// so reading a single byte of it would change the logits.
class ReplacedFileTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReplacedFileTest, RenameOverPathKeepsReadingTheOpenedInode) {
  if (GetParam() == "io_uring" && !io::io_uring_available()) GTEST_SKIP() << "io_uring unavailable";
  const std::vector<uint8_t> ref = test::read_bytes(test::reference_model_path());
  ASSERT_FALSE(ref.empty());
  const std::vector<int32_t> prompt = {1, 450, 49, 173};  // n_vocab is 1024
  const std::vector<int32_t> more = {29, 338};
  cpu::ThreadPool pool(2);
  // Logits of `prompt` (all rows), then of `more` (all rows), then one token more: the last eval
  // makes the streamer wrap around to layer 0 after the replacement.
  auto flipped = [&](uint64_t data_offset) {
    std::vector<uint8_t> other = ref;
    for (uint64_t i = data_offset; i < other.size(); ++i) other[i] ^= 0xA5;
    return other;
  };
  uint64_t data_offset = 0;
  {
    StatusOr<std::unique_ptr<Model>> m = Model::open(test::reference_model_path());
    ASSERT_TRUE(m.ok());
    data_offset = (*m)->file.data_offset;
  }
  // replace: the new file is renamed over the path after the first eval; start_flipped: the run
  // reads the replacement from the start (to prove its logits differ).
  auto run = [&](bool replace, int prefetch, std::vector<float>* first, std::vector<float>* second,
                 std::vector<float>* third, bool start_flipped = false) -> Status {
    test::TempDir dir;
    const std::string path = dir.file("m.gguf");
    test::write_bytes(path, start_flipped ? flipped(data_offset) : ref);
    FLEA_ASSIGN_OR_RETURN(std::unique_ptr<Model> m, Model::open(path));
    ResidencyOptions o;
    o.residency = "transient";
    o.io = GetParam();
    o.prefetch = prefetch;
    FLEA_ASSIGN_OR_RETURN(Plan plan, plan_residency(m->file, m->layout, o, nullptr));
    FLEA_ASSIGN_OR_RETURN(std::unique_ptr<WeightProvider> p, make_provider(path, m->file, m->layout, plan, o, nullptr));
    Session s(*m, p.get(), &pool, 16);
    FLEA_RETURN_IF_ERROR(s.eval(prompt, first, true));
    if (replace) {
      const std::vector<uint8_t> other = flipped(data_offset);
      const std::string tmp = dir.file("m.gguf.new");
      test::write_bytes(tmp, other);
      EXPECT_EQ(std::rename(tmp.c_str(), path.c_str()), 0);
      EXPECT_EQ(test::read_bytes(path), other);  // the path now names the new file
    }
    FLEA_RETURN_IF_ERROR(s.eval(more, second, true));
    return s.eval({more.back()}, third, false);
  };
  for (int prefetch : {0, 1}) {
    std::vector<float> w1, w2, w3, g1, g2, g3;
    Status want = run(false, prefetch, &w1, &w2, &w3);
    ASSERT_TRUE(want.ok()) << want.to_string();
    Status got = run(true, prefetch, &g1, &g2, &g3);
    ASSERT_TRUE(got.ok()) << GetParam() << " prefetch " << prefetch << ": " << got.to_string();
    ASSERT_EQ(g1.size(), w1.size());
    ASSERT_EQ(g2.size(), w2.size());
    ASSERT_EQ(g3.size(), w3.size());
    EXPECT_EQ(std::memcmp(g1.data(), w1.data(), w1.size() * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(g2.data(), w2.data(), w2.size() * sizeof(float)), 0) << GetParam() << " prefetch " << prefetch;
    EXPECT_EQ(std::memcmp(g3.data(), w3.data(), w3.size() * sizeof(float)), 0) << GetParam() << " prefetch " << prefetch;
  }
  // Reading even part of the replacement would show: its logits are not the original's.
  std::vector<float> f1, f2, f3, w1, w2, w3;
  ASSERT_TRUE(run(false, 0, &w1, &w2, &w3).ok());
  Status st = run(false, 0, &f1, &f2, &f3, true);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(f2.size(), w2.size());
  EXPECT_NE(std::memcmp(f2.data(), w2.data(), w2.size() * sizeof(float)), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, ReplacedFileTest, ::testing::Values("pread", "odirect", "mmap", "io_uring"));

// Between reading the header and opening the file for streaming, the path gets a same-size file
// with other bytes (renamed over it), or the file is rewritten in place: streaming must refuse,
// since the header's tensor offsets describe the old bytes. Only the size was compared before.
TEST(HeaderThenOpen, SameSizeReplacementOrRewriteIsRefused) {
  const std::vector<uint8_t> ref = test::read_bytes(test::reference_model_path());
  ASSERT_FALSE(ref.empty());
  for (const std::string change : {"rename", "rewrite"}) {
    for (const bool io_only : {false, true}) {
      test::TempDir dir;
      const std::string path = dir.file("m.gguf");
      test::write_bytes(path, ref);
      StatusOr<std::unique_ptr<Model>> m = Model::open(path);
      ASSERT_TRUE(m.ok()) << m.status().to_string();
      std::vector<uint8_t> other = ref;
      other.back() ^= 0x5A;  // same size, other bytes
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a distinct mtime on coarse clocks
      if (change == "rename") {
        test::write_bytes(path + ".new", other);
        ASSERT_EQ(std::rename((path + ".new").c_str(), path.c_str()), 0);
      } else {
        test::write_bytes(path, other);
      }
      ResidencyOptions o;
      o.residency = "transient";
      StatusOr<Plan> plan = plan_residency((*m)->file, (*m)->layout, o, nullptr);
      ASSERT_TRUE(plan.ok());
      const Status st = io_only ? run_io_only(path, (*m)->file, (*m)->layout, *plan, o, 1, nullptr).status()
                                : make_provider(path, (*m)->file, (*m)->layout, *plan, o, nullptr).status();
      ASSERT_FALSE(st.ok()) << change << (io_only ? " io-only" : "");
      EXPECT_NE(st.message().find(change == "rename" ? "replaced by another file" : "modified"), std::string::npos)
          << st.message();
    }
  }
}

}  // namespace
}  // namespace flea
