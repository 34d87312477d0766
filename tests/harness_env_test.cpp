// Ceilings: what fio is asked to do (block size, depth, direct, buffers) and what the harness
// records, with a fake fio that logs its arguments; the hugetlb pool is given back afterwards.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "env.h"
#include "test_util.h"

namespace fh = flea::harness;

namespace {

// Answers like fio (a note, then JSON): 2.5 GB/s with malloc buffers, 6 GB/s with --mem=mmaphuge;
// with `refuse_huge` it exits 1 on --mem=mmaphuge instead (an fio, or a pool, without huge pages).
std::string write_fake_fio(const flea::test::TempDir& dir, const std::string& log, bool refuse_huge) {
  const std::string path = dir.file(refuse_huge ? "fio_nohuge" : "fio");
  std::string body = "#!/bin/sh\necho \"$@\" >> '" + log + "'\nbw=2500000000\n";
  body += refuse_huge ? "case \"$*\" in *--mem=mmaphuge*) echo 'fio: Bad address' >&2; exit 1;; esac\n"
                      : "case \"$*\" in *--mem=mmaphuge*) bw=6000000000;; esac\n";
  body += "echo 'note: before the JSON'\n"
          "echo '{\"jobs\": [{\"error\": 0, \"read\": {\"io_bytes\": 1000, \"bw_bytes\": '$bw'}}]}'\n";
  flea::test::write_text(path, body);
  chmod(path.c_str(), 0755);
  return path;
}

int64_t nr_hugepages() {
  std::ifstream f("/proc/sys/vm/nr_hugepages");
  int64_t n = -1;
  f >> n;
  return n;
}

class FioCeilingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = dir_.file("m.bin");
    flea::test::write_text(model_, std::string(3 << 20, 'x'));
    log_ = dir_.file("fio.log");
    o_.samples = 2;
    o_.block_bytes = 1 << 20;
    o_.iodepth = 4;
  }
  std::string log_lines() { return flea::test::read_text(log_); }
  // fio_ceiling on odirect with `mem`, the log holding only this call's fio invocations; checks
  // that every pool page added for fio was given back.
  fh::Json ceiling_on_a_fresh_log(const std::string& mem, bool refuse_huge) {
    flea::test::write_text(log_, "");
    const int64_t before = nr_hugepages();
    o_.mem = mem;
    fh::Json e = fh::fio_ceiling(write_fake_fio(dir_, log_, refuse_huge), model_, "odirect", o_);
    EXPECT_EQ(nr_hugepages(), before) << "pool pages added for fio are given back";
    return e;
  }
  void both_keeps_the_default_figure_and_takes_the_better_as_the_ceiling();
  void a_hugetlb_failure_is_recorded_and_the_malloc_ceiling_stands();
  void hugetlb_only_is_an_error_without_the_pool();
  flea::test::TempDir dir_;
  std::string model_, log_;
  fh::FioOptions o_;
};

TEST_F(FioCeilingTest, MallocOnlyIsFiosDefaultBufferAndTheCeiling) {
  o_.mem = "malloc";
  const fh::Json e = fh::fio_ceiling(write_fake_fio(dir_, log_, false), model_, "io_uring", o_);
  EXPECT_TRUE(e["error"].is_null()) << e.dump();
  EXPECT_EQ(e["buffer"], "malloc");
  EXPECT_FALSE(e.contains("hugetlb"));
  EXPECT_EQ(e["samples_gb_s"].size(), 2u);
  EXPECT_DOUBLE_EQ(e["read_gb_s"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(e["ceiling_gb_s"].get<double>(), 2.5);
  const std::string log = log_lines();
  for (const char* want : {"--mem=malloc", "--ioengine=io_uring", "--iodepth=4", "--direct=1", "--bs=1048576"})
    EXPECT_NE(log.find(want), std::string::npos) << want << " in " << log;
  EXPECT_EQ(log.find("mmaphuge"), std::string::npos);
}

// The hugetlb pool is machine-wide: the cases that may touch it run one after another in one test
// (ctest -j runs separate tests at once, and each would see the other's pages in nr_hugepages).
void FioCeilingTest::both_keeps_the_default_figure_and_takes_the_better_as_the_ceiling() {
  const fh::Json e = ceiling_on_a_fresh_log("both", /*refuse_huge=*/false);
  EXPECT_TRUE(e["error"].is_null()) << e.dump();
  EXPECT_EQ(e["buffer"], "malloc");
  EXPECT_DOUBLE_EQ(e["read_gb_s"].get<double>(), 2.5) << "fraction_of_fio stays against fio's default";
  ASSERT_TRUE(e["hugetlb"].is_object()) << e.dump();
  if (e["hugetlb"]["read_gb_s"].is_null()) {
    // Not root, no pool, or fragmented memory: said so, and the ceiling is the malloc figure.
    EXPECT_NE(e["hugetlb"]["error"].get<std::string>().find("no hugetlb pages"), std::string::npos) << e.dump();
    EXPECT_DOUBLE_EQ(e["ceiling_gb_s"].get<double>(), 2.5);
    return;  // nothing more to check without the pool
  }
  EXPECT_DOUBLE_EQ(e["hugetlb"]["read_gb_s"].get<double>(), 6.0);
  EXPECT_DOUBLE_EQ(e["ceiling_gb_s"].get<double>(), 6.0);
  EXPECT_NE(log_lines().find("--mem=mmaphuge"), std::string::npos);
}

void FioCeilingTest::a_hugetlb_failure_is_recorded_and_the_malloc_ceiling_stands() {
  const fh::Json e = ceiling_on_a_fresh_log("both", /*refuse_huge=*/true);
  EXPECT_TRUE(e["error"].is_null()) << e.dump();
  EXPECT_DOUBLE_EQ(e["read_gb_s"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(e["ceiling_gb_s"].get<double>(), 2.5);
  EXPECT_TRUE(e["hugetlb"]["read_gb_s"].is_null());
  EXPECT_TRUE(e["hugetlb"]["error"].is_string()) << e.dump();
  EXPECT_EQ(e["samples_gb_s"].size(), 2u);
}

void FioCeilingTest::hugetlb_only_is_an_error_without_the_pool() {
  const fh::Json e = ceiling_on_a_fresh_log("hugetlb", /*refuse_huge=*/false);
  EXPECT_EQ(e["buffer"], "hugetlb");
  if (e["error"].is_string()) {
    EXPECT_NE(e["error"].get<std::string>().find("no hugetlb pages"), std::string::npos) << e.dump();
    EXPECT_TRUE(e["read_gb_s"].is_null());
    EXPECT_TRUE(e["ceiling_gb_s"].is_null());
    return;
  }
  EXPECT_DOUBLE_EQ(e["read_gb_s"].get<double>(), 6.0);
  EXPECT_EQ(log_lines().find("--mem=malloc"), std::string::npos);
}

TEST_F(FioCeilingTest, HugetlbBuffersWhenThePoolCanBeHadAndThePoolIsGivenBack) {
  {
    SCOPED_TRACE("fio_mem both");
    both_keeps_the_default_figure_and_takes_the_better_as_the_ceiling();
  }
  {
    SCOPED_TRACE("fio_mem both, an fio that refuses huge pages");
    a_hugetlb_failure_is_recorded_and_the_malloc_ceiling_stands();
  }
  {
    SCOPED_TRACE("fio_mem hugetlb");
    hugetlb_only_is_an_error_without_the_pool();
  }
}

}  // namespace
