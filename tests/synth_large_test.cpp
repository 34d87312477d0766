// `flea synth --shape 7b --type Q4_K_M` end to end: the ~3.8 GB file has exactly the planned size,
// reads back as a valid LLaMA model, and the writer's peak RSS stays bounded (it streams).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "gguf/gguf.h"
#include "model/llama.h"
#include "model/synth.h"
#include "test_util.h"

namespace flea::synth {
namespace {

constexpr uint64_t kMinFreeBytes = uint64_t{10} << 30;
constexpr long kMaxRssKb = 512 * 1024;

TEST(SynthLarge, Llama2_7bQ4KMHasPlannedSizeAndBoundedMemory) {
  test::TempDir dir;
  struct statvfs vfs {};
  ASSERT_EQ(statvfs(dir.path().c_str(), &vfs), 0);
  const uint64_t free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  if (free_bytes < kMinFreeBytes) {
    GTEST_SKIP() << "only " << free_bytes / (1 << 20) << " MiB free under " << dir.path()
                 << "; the 7b file needs ~3.8 GB (10 GiB free required)";
  }
  SynthOptions o;
  o.shape = *synth_preset("7b");
  o.file_type = FileType::Q4_K_M;
  auto planned = synth_planned_bytes(o);
  ASSERT_TRUE(planned.ok());

  const std::string flea = test::bin_dir() + "/flea";
  const std::string out = dir.file("7b-Q4_K_M.gguf");
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl(flea.c_str(), flea.c_str(), "synth", "--shape", "7b", "--type", "Q4_K_M", "--quiet", "--out",
          out.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  struct rusage ru {};
  ASSERT_EQ(wait4(pid, &status, 0, &ru), pid);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "flea synth failed, status " << status;

  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(out, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(size, *planned);
  std::printf("7b Q4_K_M: %llu bytes in %.1f s (%.0f MB/s incl. fsync), peak RSS %ld KiB\n",
              static_cast<unsigned long long>(size), secs, static_cast<double>(size) / 1e6 / secs, ru.ru_maxrss);
  EXPECT_LT(ru.ru_maxrss, kMaxRssKb) << "peak RSS " << ru.ru_maxrss << " KiB: the writer must stream";

  auto f = gguf::read_file(out);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->tensors.size(), 291u);
  auto hp = llama_hparams(*f);
  ASSERT_TRUE(hp.ok()) << hp.status().message();
  EXPECT_EQ(hp->n_embd, 4096);
  EXPECT_EQ(hp->n_layer, 32);
  // The last tensor ends exactly at the end of the file (its padding included).
  const gguf::TensorInfo& last = f->tensors.back();
  EXPECT_LE(last.file_offset + last.n_bytes, size);
  EXPECT_GT(last.file_offset + last.n_bytes + f->alignment, size);
  std::filesystem::remove(out, ec);
}

}  // namespace
}  // namespace flea::synth
