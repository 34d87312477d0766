// AMX detection and the switch; the tile code itself is in matmul_amx.cpp (the only file compiled
// with -mamx-*), called only after available() said yes.
#include "compute/cpu/amx.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "flea/status.h"
#include "quant/quant.h"

namespace flea::cpu::amx {
namespace internal {
// matmul_amx.cpp (AMX/AVX-512 code: call only when available())
void matmul_tiles(const WeightView& w, const uint8_t* act, size_t act_row_bytes, int64_t n_tokens, float* out,
                  ThreadPool* pool);
}  // namespace internal

namespace {

constexpr int kArchReqXcompPerm = 0x1023;  // arch_prctl: request permission for an xstate component
constexpr int kXfeatureXtileData = 18;     // the tile data registers

struct Probe {
  bool ok = false;
  std::string why;
};

Probe probe() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !((edx >> 24) & 1u) || !((edx >> 25) & 1u)) {
    return {false, "no amx_tile/amx_int8 in CPUID"};
  }
  if (std::strcmp(quant::best_simd_level(), "avx512") != 0) return {false, "no AVX-512 (the tile epilogue uses it)"};
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtileData) != 0) {
    return {false, std::string("arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA): ") + std::strerror(errno)};
  }
  return {true, "granted"};
}

const Probe& probed() {
  static const Probe p = probe();
  return p;
}

bool env_allows() {
  const char* v = std::getenv("FLEA_AMX");
  return v == nullptr || !(std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0);
}

std::atomic<bool>& switch_state() {
  static std::atomic<bool> on{env_allows()};
  return on;
}

}  // namespace

bool available() { return probed().ok; }
const char* availability() { return probed().why.c_str(); }
// A SIMD level forced below AVX-512 (quant::force_simd_level) turns the tiles off too.
bool enabled() {
  return switch_state().load(std::memory_order_relaxed) && available() &&
         std::strcmp(quant::simd_level(), "avx512") == 0;
}
bool set_enabled(bool on) { return switch_state().exchange(on, std::memory_order_relaxed); }
int64_t min_tokens(GgmlType t) { return t == GgmlType::Q4_K || t == GgmlType::Q6_K ? 12 : kMinTokens; }

bool supports(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0: case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1:
    case GgmlType::IQ4_NL: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K: case GgmlType::IQ4_XS:
      return true;
    default:
      return false;
  }
}

void matmul(const WeightView& w, const uint8_t* act, size_t act_row_bytes, int64_t n_tokens, float* out,
            ThreadPool* pool) {
  FLEA_CHECK(enabled(), "amx::matmul without tile permission");
  FLEA_CHECK(supports(w.type), std::string("amx::matmul: no tile kernel for ") + type_info(w.type).name);
  internal::matmul_tiles(w, act, act_row_bytes, n_tokens, out, pool);
}

}  // namespace flea::cpu::amx
