// I/O backend throughput: GB/s reading a temp file sequentially, by backend, request size and
// (io_uring) queue depth, with the page cache dropped before every pass where the kernel allows
// it (counter `cold` = fraction of passes that started cold). Environment:
//   FLEA_IO_BENCH_FILE  read this file instead of creating one (kept)
//   FLEA_IO_BENCH_MB    size of the created temp file (default 256)
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "io/aligned_buffer.h"
#include "io/io_backend.h"
#include "io/page_cache.h"
#include "residency/provider.h"

namespace {

using flea::io::AlignedBuffer;

struct BenchFile {
  std::string path;
  uint64_t bytes = 0;
  bool owned = false;
  BenchFile() {
    if (const char* p = std::getenv("FLEA_IO_BENCH_FILE")) {
      path = p;
      FILE* f = std::fopen(p, "rb");
      if (f != nullptr) {
        std::fseek(f, 0, SEEK_END);
        bytes = static_cast<uint64_t>(std::ftell(f));
        std::fclose(f);
      }
      return;
    }
    const char* mb = std::getenv("FLEA_IO_BENCH_MB");
    bytes = static_cast<uint64_t>(mb != nullptr ? std::atoll(mb) : 256) << 20;
    const char* tmp = std::getenv("TMPDIR");
    path = std::string(tmp != nullptr ? tmp : "/tmp") + "/flea-io-bench-" + std::to_string(getpid()) + ".bin";
    owned = true;
    FILE* f = std::fopen(path.c_str(), "wb");
    std::vector<uint8_t> chunk(1 << 20);
    for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<uint8_t>(i * 131 + 7);
    for (uint64_t p = 0; p < bytes; p += chunk.size()) std::fwrite(chunk.data(), 1, chunk.size(), f);
    std::fclose(f);
  }
  ~BenchFile() {
    if (owned) std::remove(path.c_str());
  }
};

BenchFile& bench_file() {
  static BenchFile f;
  return f;
}

// A fresh backend per pass (a live mapping would keep its pages from being dropped), opened on the
// bench file just after dropping it from the page cache (counted in *cold). Null after
// SkipWithError. Call with timing paused.
std::unique_ptr<flea::io::IoBackend> open_cold(benchmark::State& state, const std::string& backend,
                                               const flea::io::IoBackendOptions& o, int* cold) {
  auto b = flea::io::make_io_backend(backend, o);
  if (!b.ok()) {
    state.SkipWithError(b.status().message().c_str());
    return nullptr;
  }
  *cold += flea::io::drop_page_cache(bench_file().path) ? 1 : 0;
  if (auto st = (*b)->open(bench_file().path); !st.ok()) {
    state.SkipWithError(st.message().c_str());
    return nullptr;
  }
  return std::move(*b);
}

// args: block KiB, queue depth
void run(benchmark::State& state, const std::string& backend) {
  BenchFile& file = bench_file();
  const uint64_t block = static_cast<uint64_t>(state.range(0)) * 1024;
  flea::io::IoBackendOptions o;
  o.block_bytes = block;
  o.queue_depth = static_cast<int>(state.range(1));
  if (auto b = flea::io::make_io_backend(backend, o); !b.ok()) {
    state.SkipWithError(b.status().message().c_str());
    return;
  }
  // io_uring gets the whole file as one request so its queue keeps `qd` chunks in flight; the
  // synchronous backends are called once per block (what their I/O thread does per span).
  const bool whole = backend == "io_uring";
  AlignedBuffer buf(whole ? flea::io::align_up(file.bytes) : block);
  int cold = 0, passes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto b = open_cold(state, backend, o, &cold);
    ++passes;
    if (b == nullptr) break;
    state.ResumeTiming();
    if (whole) {
      auto got = b->read({0, flea::io::align_up(file.bytes), buf.data(), 0});
      if (!got.ok()) state.SkipWithError(got.status().message().c_str());
    } else {
      for (uint64_t off = 0; off < file.bytes; off += block) {
        auto got = b->read({off, block, buf.data(), 0});
        if (!got.ok()) {
          state.SkipWithError(got.status().message().c_str());
          break;
        }
      }
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * file.bytes));
  state.counters["cold"] = passes > 0 ? static_cast<double>(cold) / passes : 0;
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(state.iterations() * file.bytes) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// Where the bytes land matters to O_DIRECT: 1 MiB reads cycling through a destination ring of
// `ring_mb`, on 4 KiB pages or transparent huge pages (prefaulted, as the streamer's slots are).
// A ring of a few MiB stays in the CPU cache (fio's buffer is one of those); a streaming engine's
// slots are a layer each. args: ring MiB, huge (0/1).
void run_ring(benchmark::State& state) {
  BenchFile& file = bench_file();
  constexpr uint64_t kBlock = 1u << 20;
  const uint64_t ring = static_cast<uint64_t>(state.range(0)) << 20;
  const bool huge = state.range(1) != 0;
  flea::io::IoBackendOptions o;
  o.block_bytes = kBlock;
  AlignedBuffer buf;
  if (!AlignedBuffer::try_allocate(ring, &buf, 4096, huge)) {
    state.SkipWithError("cannot allocate the ring");
    return;
  }
  buf.prefault();
  int cold = 0, passes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto b = open_cold(state, "odirect", o, &cold);
    ++passes;
    if (b == nullptr) break;
    state.ResumeTiming();
    for (uint64_t off = 0; off + kBlock <= file.bytes; off += kBlock) {
      auto got = b->read({off, kBlock, buf.data() + off % ring, 0});
      if (!got.ok()) {
        state.SkipWithError(got.status().message().c_str());
        break;
      }
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * file.bytes));
  state.counters["cold"] = passes > 0 ? static_cast<double>(cold) / passes : 0;
  state.counters["huge_advised"] = buf.huge_advised() ? 1 : 0;
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(state.iterations() * file.bytes) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// The streamer's own path (plan spans, staging ring, I/O thread, prefetch) over the bench file seen
// as a 32-layer model: what `flea bench --compute none` measures. args: block KiB, qd, prefetch.
struct FakeModel {
  flea::gguf::File file;
  flea::ModelLayout layout;
};

FakeModel* fake_model() {
  static FakeModel* m = [] {
    auto* fm = new FakeModel;
    BenchFile& bf = bench_file();
    constexpr int kLayers = 32;
    const uint64_t region = bf.bytes / (kLayers + 2) / 4096 * 4096;
    const uint64_t matrix = (region - 2 * 4096) / 7 / 4096 * 4096;
    fm->file.path = bf.path;
    fm->file.file_size = bf.bytes;
    fm->file.tensors.reserve(3 + kLayers * flea::kLayerTensorCount);
    uint64_t off = 0;
    auto add = [&](uint64_t n) {
      flea::gguf::TensorInfo t;
      t.name = "t" + std::to_string(fm->file.tensors.size());
      t.file_offset = off;
      t.n_bytes = n;
      fm->file.tensors.push_back(t);
      off += n;
      return &fm->file.tensors.back();
    };
    fm->layout.globals = {add(region), add(4096), add(region - 4096), nullptr};
    fm->layout.layers.resize(kLayers);
    for (int il = 0; il < kLayers; ++il)
      for (int t = 0; t < flea::kLayerTensorCount; ++t)
        if (t <= static_cast<int>(flea::LayerTensor::kFfnDown))  // a dense layer without biases
          fm->layout.layers[il][t] = add(flea::is_resident_vector(t) ? 4096 : matrix);
    return fm;
  }();
  return m;
}

void run_streamer(benchmark::State& state, const std::string& backend) {
  FakeModel* m = fake_model();
  flea::ResidencyOptions o;
  o.residency = "transient";
  o.io = backend;
  o.io_block_kb = state.range(0);
  o.queue_depth = static_cast<int>(state.range(1));
  o.prefetch = static_cast<int>(state.range(2));
  auto plan = flea::plan_residency(m->file, m->layout, o, nullptr);
  if (!plan.ok()) {
    state.SkipWithError(plan.status().message().c_str());
    return;
  }
  uint64_t bytes = 0;
  int cold = 0, passes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    cold += flea::io::drop_page_cache(m->file.path) ? 1 : 0;
    ++passes;
    state.ResumeTiming();
    auto r = flea::run_io_only(m->file.path, m->file, m->layout, *plan, o, 1, nullptr);
    if (!r.ok()) {
      state.SkipWithError(r.status().message().c_str());
      break;
    }
    bytes += r->read_bytes;
    state.SetIterationTime(static_cast<double>(r->elapsed_ns) / 1e9);  // token reads only, not start-up
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["cold"] = passes > 0 ? static_cast<double>(cold) / passes : 0;
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) / 1e9, benchmark::Counter::kIsRate);
}

// Overlap: a throttled disk (pread from the page cache, capped at 2 GB/s) against a "compute" that
// sleeps for as long as each layer's read takes. Perfect overlap gives ms/token ~ max(io, compute)
// (ratio_to_max ~ 1); prefetch 0 gives their sum (ratio ~ 2). args: prefetch.
void run_overlap(benchmark::State& state) {
  constexpr double kGbS = 2.0;
  FakeModel* m = fake_model();
  flea::ResidencyOptions o;
  o.residency = "transient";
  o.io = "pread";
  o.throttle_gb_s = kGbS;
  o.prefetch = static_cast<int>(state.range(0));
  auto plan = flea::plan_residency(m->file, m->layout, o, nullptr);
  if (!plan.ok()) {
    state.SkipWithError(plan.status().message().c_str());
    return;
  }
  flea::Telemetry tel;
  auto p = flea::make_provider(m->file.path, m->file, m->layout, *plan, o, &tel);
  if (!p.ok()) {
    state.SkipWithError(p.status().message().c_str());
    return;
  }
  const int n_layer = static_cast<int>(m->layout.layers.size());
  const double io_ns_per_token = static_cast<double>(plan->streamed_bytes_per_token) / kGbS;
  const auto compute = std::chrono::nanoseconds(static_cast<int64_t>(io_ns_per_token / n_layer));
  tel.reset();  // start-up reads (globals, first prefetch) are not part of any token
  int64_t total_ns = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int il = 0; il < n_layer; ++il) {
      auto w = (*p)->acquire(il);
      if (!w.ok()) {
        state.SkipWithError(w.status().message().c_str());
        return;
      }
      // Sleep, not spin: on a shared 2-core box a spinning "compute" steals the I/O thread's
      // core; sleeping models a GPU computing while the host waits.
      std::this_thread::sleep_for(compute);
      (*p)->release(il);
    }
    const auto dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    total_ns += static_cast<int64_t>(dt * 1e9);
    state.SetIterationTime(dt);
  }
  const double n = static_cast<double>(state.iterations());
  const double per_token_ms = static_cast<double>(total_ns) / n / 1e6;
  double load_ns = 0, compute_ns = 0;  // measured: I/O thread busy time, acquire->release time
  for (const flea::LayerStats& ls : tel.layers()) {
    load_ns += static_cast<double>(ls.load_ns);
    compute_ns += static_cast<double>(ls.compute_ns);
  }
  const double io_ms = load_ns / n / 1e6, compute_ms = compute_ns / n / 1e6;
  state.counters["ms_per_token"] = per_token_ms;
  state.counters["io_ms_nominal"] = io_ns_per_token / 1e6;
  state.counters["io_ms"] = io_ms;
  state.counters["compute_ms"] = compute_ms;
  state.counters["ratio_to_max"] = per_token_ms / std::max(io_ms, compute_ms);
  state.counters["ratio_to_sum"] = per_token_ms / (io_ms + compute_ms);
  state.counters["stall_fraction"] = static_cast<double>(tel.stall_ns()) / static_cast<double>(total_ns);
}

void register_all() {
  benchmark::RegisterBenchmark("overlap/throttled_2GBs", run_overlap)
      ->ArgName("prefetch")->Arg(0)->Arg(1)->Arg(2)->Iterations(5)->UseManualTime()->Unit(benchmark::kMillisecond);
  for (const char* be : {"pread", "odirect", "io_uring", "mmap"}) {
    if (std::string(be) == "io_uring" && !flea::io::io_uring_available()) continue;
    auto* bm = benchmark::RegisterBenchmark((std::string("streamer/") + be).c_str(),
                                            [be](benchmark::State& s) { run_streamer(s, be); });
    for (int prefetch : {0, 1, 2}) bm->Args({1024, 4, prefetch});
    bm->ArgNames({"block_kb", "qd", "prefetch"})->Iterations(3)->UseManualTime()->Unit(benchmark::kMillisecond);
  }
  for (const char* be : {"pread", "odirect", "mmap"}) {
    auto* bm = benchmark::RegisterBenchmark((std::string("io/") + be).c_str(), [be](benchmark::State& s) { run(s, be); });
    for (int kb : {64, 1024, 4096}) bm->Args({kb, 1});
    bm->ArgNames({"block_kb", "qd"})->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  {
    auto* bm = benchmark::RegisterBenchmark("io/odirect_ring", run_ring);
    for (int mb : {2, 16, 128})
      for (int huge : {0, 1}) bm->Args({mb, huge});
    bm->ArgNames({"ring_mb", "huge"})->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  if (flea::io::io_uring_available()) {
    auto* bm = benchmark::RegisterBenchmark("io/io_uring", [](benchmark::State& s) { run(s, "io_uring"); });
    for (int kb : {64, 1024, 4096})
      for (int qd : {1, 4, 16}) bm->Args({kb, qd});
    bm->ArgNames({"block_kb", "qd"})->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
}

const int kRegistered = (register_all(), 0);

}  // namespace
