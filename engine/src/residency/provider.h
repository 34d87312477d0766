// WeightProviders over a residency plan: resident layers read once at start, streamed layers read
// through a ring of aligned staging buffers by dedicated I/O threads N layers ahead of compute
// (or, with --io mmap, faulted in ahead and dropped behind), cached layers kept after first use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flea/status.h"
#include "gguf/gguf.h"
#include "model/weights.h"
#include "residency/options.h"
#include "residency/plan.h"
#include "residency/telemetry.h"

namespace flea {

// The forward pass visits layers 0..L-1 and wraps to 0 for the next token, so prefetch predicts
// that order cyclically; any other order still works (a misprediction costs a prefetch miss).
// `telemetry` may be null; it must outlive the provider otherwise. release(il) must follow a
// successful acquire(il) (FLEA_CHECK); at most ring_slots streamed layers can be held at once
// (more is a ResourceExhausted error from acquire).
StatusOr<std::unique_ptr<WeightProvider>> make_provider(const std::string& path, const gguf::File& file,
                                                        const ModelLayout& layout, const Plan& plan,
                                                        const ResidencyOptions& opts, Telemetry* telemetry);

// The host buffers a streaming provider allocated (globals, resident and cached layers, staging
// slots) and how many of those bytes were advised MADV_HUGEPAGE (--huge-pages on, buffers of at
// least 2 MiB), with the process's huge-page-backed bytes sampled at that moment. With --io mmap
// the layers are not copied, so only the globals count.
struct ProviderBuffers {
  uint64_t bytes = 0;
  uint64_t huge_advised_bytes = 0;
  uint64_t anon_huge_bytes = 0;  // the process's AnonHugePages when this was taken (provider alive)
};

// `flea bench --compute none`: exactly the plan's reads for n_tokens tokens (acquire + release
// of every layer in order), without computing. Layers that read experts after routing route each
// token to n_expert_used distinct experts drawn uniformly at random (fixed seed).
struct IoOnlyResult {
  int n_tokens = 0;
  uint64_t read_bytes = 0;  // during the timed tokens (not the resident set read at start-up)
  int64_t elapsed_ns = 0;
  double read_gb_s = 0;     // read_bytes / elapsed (1 GB = 1e9 bytes)
  ProviderBuffers buffers;
};
StatusOr<IoOnlyResult> run_io_only(const std::string& path, const gguf::File& file, const ModelLayout& layout,
                                   const Plan& plan, const ResidencyOptions& opts, int n_tokens,
                                   Telemetry* telemetry);

// See io/page_cache.h.
bool drop_page_cache(const std::string& path);

// What the user should be told about a provider's I/O (e.g. "O_DIRECT refused, buffered reads").
std::vector<std::string> provider_warnings(const WeightProvider* p);
// Zeros for anything but the streaming provider (e.g. the in-memory provider of --residency full).
ProviderBuffers provider_buffers(const WeightProvider* p);

}  // namespace flea
