// Splitting a batch into attention tasks, and the portable (scalar) kernels.
#include "compute/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "compute/cpu/attention_kernels.h"
#include "compute/cpu/thread_pool.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace flea::cpu {

const char* kv_type_name(KvType t) { return t == KvType::kF16 ? "f16" : "f32"; }

bool parse_kv_type(const std::string& name, KvType* out) {
  if (name == "f16") { *out = KvType::kF16; return true; }
  if (name == "f32") { *out = KvType::kF32; return true; }
  return false;
}

size_t kv_type_bytes(KvType t) { return t == KvType::kF16 ? 2 : 4; }

void store_kv(KvType t, const float* x, int64_t n, void* dst) {
  if (t == KvType::kF32) {
    std::memcpy(dst, x, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  auto* h = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(x[i]);
}

namespace internal {
namespace {

// Element i of a K or V head row.
float kv_element(KvType t, const void* row, int64_t i) {
  return t == KvType::kF16 ? fp16_to_fp32(static_cast<const uint16_t*>(row)[i]) : static_cast<const float*>(row)[i];
}

void single_scalar(const AttentionBatch& b, int64_t row, int64_t kvh) {
  const int64_t D = b.head_dim, G = b.n_head / b.n_head_kv, HD = b.n_head * D;
  const int64_t first = b.first[row], pos = b.pos[row];
  const size_t es = kv_type_bytes(b.cache.type);
  auto head_row = [&](const void* base, int64_t p) {
    const int64_t slot = b.seq[row] * b.cache.slots + p % b.cache.slots;
    return static_cast<const uint8_t*>(base) + static_cast<size_t>((slot * b.n_head_kv + kvh) * D) * es;
  };
  std::vector<float> score(static_cast<size_t>(pos - first + 1));
  for (int64_t g = 0; g < G; ++g) {
    const int64_t h = kvh * G + g;
    const float* qh = b.q + row * HD + h * D;
    float mx = -INFINITY;
    for (int64_t p = first; p <= pos; ++p) {
      const void* kp = head_row(b.cache.k, p);
      float s = 0.0f;
      for (int64_t d = 0; d < D; ++d) s += qh[d] * kv_element(b.cache.type, kp, d);
      score[static_cast<size_t>(p - first)] = s * b.scale;
      mx = std::max(mx, s * b.scale);
    }
    double sum = 0.0;
    for (float& s : score) {
      s = std::exp(s - mx);
      sum += s;
    }
    const float inv = static_cast<float>(1.0 / sum);
    float* out = b.out + row * HD + h * D;
    std::fill(out, out + D, 0.0f);
    for (int64_t p = first; p <= pos; ++p) {
      const float a = score[static_cast<size_t>(p - first)] * inv;
      const void* vp = head_row(b.cache.v, p);
      for (int64_t d = 0; d < D; ++d) out[d] += a * kv_element(b.cache.type, vp, d);
    }
  }
}

void block_scalar(const AttentionBatch& b, const int64_t* rows, int64_t n, int64_t kvh) {
  for (int64_t i = 0; i < n; ++i) single_scalar(b, rows[i], kvh);
}

}  // namespace

const AttentionKernels& attention_scalar() {
  static const AttentionKernels k{block_scalar, single_scalar, 1};
  return k;
}

}  // namespace internal

namespace {

const internal::AttentionKernels& kernels() {
  const std::string level = quant::simd_level();
  if (level == "avx512") return internal::attention_avx512();
  if (level == "avx2") return internal::attention_avx2();
  return internal::attention_scalar();
}

// Rows [begin, begin + n) of `order` (one sequence's rows) for KV head kvh; n == 1 is a single query.
struct Task {
  int64_t begin;
  int64_t n;
  int64_t kvh;
  int64_t cost;  // keys times rows, for scheduling the largest first
};

}  // namespace

void attention(const AttentionBatch& b, ThreadPool* pool) {
  const internal::AttentionKernels& k = kernels();
  const int64_t T = b.n_rows, G = b.n_head / b.n_head_kv;
  // Rows grouped by sequence, each group in batch (= position) order.
  std::vector<int64_t> order(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) order[static_cast<size_t>(t)] = t;
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return b.seq[x] < b.seq[y]; });
  const int64_t block_rows = std::max<int64_t>(1, k.block_queries / G);
  std::vector<Task> tasks;
  for (int64_t s = 0; s < T;) {
    int64_t e = s;
    while (e < T && b.seq[order[static_cast<size_t>(e)]] == b.seq[order[static_cast<size_t>(s)]]) ++e;
    for (int64_t r = s; r < e; r += block_rows) {
      const int64_t n = std::min(block_rows, e - r);
      const int64_t last = order[static_cast<size_t>(r + n - 1)];
      const int64_t cost = (b.pos[last] - b.first[order[static_cast<size_t>(r)]] + 1) * n;
      for (int64_t h = 0; h < b.n_head_kv; ++h) tasks.push_back({r, n, h, cost});
    }
    s = e;
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& x, const Task& y) { return x.cost > y.cost; });
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Task& t = tasks[static_cast<size_t>(i)];
      if (t.n == 1) {
        k.single(b, order[static_cast<size_t>(t.begin)], t.kvh);
      } else {
        k.block(b, &order[static_cast<size_t>(t.begin)], t.n, t.kvh);
      }
    }
  };
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());
  if (pool == nullptr) {
    run(0, n_tasks);
  } else {
    pool->parallel_for(n_tasks, 1, run);
  }
}

}  // namespace flea::cpu
