// Causal multi-head attention of a batch of rows against a KV cache in F16 or F32, on the CPU:
//
//   out[t, h] = softmax_p(q[t, h] . k[seq(t), p, h / n_gqa] * scale) v[seq(t), p, h / n_gqa]
//               over p in [first[t], pos[t]]
//
// Rows of one sequence are processed a block at a time (flash-attention style: each K/V block is
// loaded once for the block's positions and the n_gqa query heads sharing a KV head, with an online
// softmax); a sequence with a single row (token generation) takes a single-query path. The SIMD level
// follows quant::simd_level() (quant::force_simd_level forces both).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace flea::cpu {

class ThreadPool;

// Element type of the KV cache. F16 is IEEE half, rounded to nearest even when stored (F16C's
// _mm_cvtps_ph with rounding 0, llama.cpp's default cache type).
enum class KvType { kF16, kF32 };
const char* kv_type_name(KvType t);  // "f16", "f32"
// "f16" / "f32"; false for anything else.
bool parse_kv_type(const std::string& name, KvType* out);
size_t kv_type_bytes(KvType t);
// dst[0..n) = x[0..n) converted to the cache's element type.
void store_kv(KvType t, const float* x, int64_t n, void* dst);

// One layer's cache: sequence s, position p, KV head h is the head_dim elements at
//   ((s * slots + p % slots) * n_head_kv + h) * head_dim
// of k (and of v), each element of `type`.
struct KvCacheView {
  KvType type = KvType::kF16;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t slots = 0;
};

struct AttentionBatch {
  int64_t n_rows = 0;     // T
  int64_t n_head = 0;     // query heads; a multiple of n_head_kv
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  float scale = 1.0f;     // applied to q . k (1 / sqrt(head_dim))
  const float* q = nullptr;        // (T, n_head * head_dim)
  const int32_t* seq = nullptr;    // [T] sequence of each row; a sequence's rows in position order
  const int64_t* pos = nullptr;    // [T] position of each row (its keys are already in the cache)
  const int64_t* first = nullptr;  // [T] first position it sees (0, or its chunk's start)
  KvCacheView cache;
  float* out = nullptr;            // (T, n_head * head_dim)
};

// out = attention(batch), split over `pool` (nullptr = the calling thread).
void attention(const AttentionBatch& b, ThreadPool* pool);

}  // namespace flea::cpu
