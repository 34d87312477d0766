// Fused dequantize + matrix-vector kernels, one warp per weight row, reading the GGUF blocks
// directly (layouts in quant/quant.h). Lane l of a warp takes the row's 32-element chunks l, l+32,
// ...; a chunk is unpacked into registers once and dotted with up to kTokTile tokens, so a batch
// of T tokens reads each weight block ceil(T / kTokTile) times (from L2 after the first).
//
// Integer types: the per-type chunk unpacking and __dp4a dot live in chunk_dot.h (host-testable);
// the float scales are applied per chunk.
#include <cuda_fp16.h>

#include "compute/cuda/chunk_dot.h"
#include "compute/cuda/kernels.h"

namespace flea::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 4;  // warps (rows) per 128-thread block
constexpr int kTokTile = 8;
using chunk::kQk0;
using chunk::kQkK;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float bf16_bits_to_f32(uint32_t bits16) { return __uint_as_float(bits16 << 16); }

using chunk::ActQ8;

// Activation words of chunk c of token t, and the scale of its Q8_0 / Q8_K block.
__device__ __forceinline__ ActQ8 load_act_q8(const Activations& act, int64_t t, int64_t c, int block) {
  ActQ8 r;
  const int4* p = reinterpret_cast<const int4*>(static_cast<const int8_t*>(act.q) + t * act.cols + c * 32);
  const int4 lo = p[0], hi = p[1];
  r.a[0] = lo.x; r.a[1] = lo.y; r.a[2] = lo.z; r.a[3] = lo.w;
  r.a[4] = hi.x; r.a[5] = hi.y; r.a[6] = hi.z; r.a[7] = hi.w;
  r.d = act.d[(t * act.cols + c * 32) / block];
  return r;
}

// Float types: 32 weights against 32 activations of the same width, accumulated in float.
struct HalfChunk {
  uint4 v[4];  // 32 × 16-bit
};

template <bool kBf16>
struct TF16 {
  using Chunk = HalfChunk;
  __device__ static Chunk load(const uint8_t* row, int64_t c) {
    const uint4* p = reinterpret_cast<const uint4*>(row + c * 64);
    Chunk r;
#pragma unroll
    for (int k = 0; k < 4; ++k) r.v[k] = p[k];
    return r;
  }
  __device__ static float to_f32(uint32_t bits16) {
    if (kBf16) return bf16_bits_to_f32(bits16);
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits16)));
  }
  __device__ static float dot_word(uint32_t w, uint32_t a, float s) {
    s += to_f32(w & 0xffffu) * to_f32(a & 0xffffu);
    s += to_f32(w >> 16) * to_f32(a >> 16);
    return s;
  }
  __device__ static float dot(const Chunk& w, const Activations& act, int64_t t, int64_t c) {
    const uint4* p = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(act.q) + t * act.cols + c * 32);
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint4 a = p[k];
      s = dot_word(w.v[k].x, a.x, s);
      s = dot_word(w.v[k].y, a.y, s);
      s = dot_word(w.v[k].z, a.z, s);
      s = dot_word(w.v[k].w, a.w, s);
    }
    return s;
  }
};

struct TF32 {
  struct Chunk {
    float4 v[8];
  };
  __device__ static Chunk load(const uint8_t* row, int64_t c) {
    const float4* p = reinterpret_cast<const float4*>(row + c * 128);
    Chunk r;
#pragma unroll
    for (int k = 0; k < 8; ++k) r.v[k] = p[k];
    return r;
  }
  __device__ static float dot(const Chunk& w, const Activations& act, int64_t t, int64_t c) {
    const float4* p = reinterpret_cast<const float4*>(act.x + t * act.cols + c * 32);
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float4 a = p[k];
      s += w.v[k].x * a.x + w.v[k].y * a.y + w.v[k].z * a.z + w.v[k].w * a.w;
    }
    return s;
  }
};

// Integer-type adaptor: loads the token's Q8 activation words, then the type's dot.
template <class Tr>
struct IntTraits {
  using Chunk = typename Tr::Chunk;
  __device__ static Chunk load(const uint8_t* row, int64_t c) { return Tr::load(row, c); }
  __device__ static float dot(const Chunk& w, const Activations& act, int64_t t, int64_t c) {
    return Tr::dot(w, load_act_q8(act, t, c, Tr::kActBlock));
  }
};

template <class Tr, int NT>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp)
    matmul_kernel(const uint8_t* __restrict__ w, int64_t rows, int64_t cols, size_t row_bytes, Activations act,
                  float* __restrict__ out) {
  const int lane = static_cast<int>(threadIdx.x) & (kWarp - 1);
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x / kWarp);
  if (row >= rows) return;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * NT;
  const int64_t left = act.n_tokens - t0;
  const int nt = left < NT ? static_cast<int>(left) : NT;
  const uint8_t* wr = w + row * static_cast<int64_t>(row_bytes);
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.f;
  const int64_t n_chunks = cols / 32;
  for (int64_t c = lane; c < n_chunks; c += kWarp) {
    const typename Tr::Chunk wc = Tr::load(wr, c);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      if (t < nt) acc[t] += Tr::dot(wc, act, t0 + t, c);
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float v = warp_sum(acc[t]);
    if (lane == 0 && t < nt) out[(t0 + t) * rows + row] = v;
  }
}

template <class Tr>
void launch_matmul(const DeviceMatrix& w, const Activations& act, float* out, cudaStream_t stream) {
  const size_t rb = row_bytes(type_info(w.type), w.cols);
  const unsigned gx = static_cast<unsigned>((w.rows + kRowsPerBlock - 1) / kRowsPerBlock);
  if (act.n_tokens == 1) {
    matmul_kernel<Tr, 1><<<dim3(gx, 1), kRowsPerBlock * kWarp, 0, stream>>>(w.data, w.rows, w.cols, rb, act, out);
  } else {
    const unsigned gy = static_cast<unsigned>((act.n_tokens + kTokTile - 1) / kTokTile);
    matmul_kernel<Tr, kTokTile><<<dim3(gx, gy), kRowsPerBlock * kWarp, 0, stream>>>(w.data, w.rows, w.cols, rb,
                                                                                    act, out);
  }
}

// ---- activation quantizers: the CPU's rounding (quant.cpp), one warp per block

__global__ void quantize_q8_0_kernel(const float* __restrict__ x, int64_t n_blocks, int8_t* __restrict__ q,
                                     float* __restrict__ d) {
  const int64_t b = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = static_cast<int>(threadIdx.x) & (kWarp - 1);
  if (b >= n_blocks) return;
  const float v = x[b * kQk0 + lane];
  float amax = fabsf(v);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float id = amax != 0.f ? 127.f / amax : 0.f;
  q[b * kQk0 + lane] = static_cast<int8_t>(__float2int_rn(v * id));
  if (lane == 0) d[b] = __half2float(__float2half_rn(amax / 127.f));
}

// Q8_K: the signed value of largest magnitude (first one on ties) maps to -127.
__global__ void quantize_q8_k_kernel(const float* __restrict__ x, int64_t n_blocks, int8_t* __restrict__ q,
                                     float* __restrict__ d) {
  const int64_t b = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = static_cast<int>(threadIdx.x) & (kWarp - 1);
  if (b >= n_blocks) return;
  const float4* p = reinterpret_cast<const float4*>(x + b * kQkK + lane * 8);
  const float4 p0 = p[0], p1 = p[1];
  const float v[8] = {p0.x, p0.y, p0.z, p0.w, p1.x, p1.y, p1.z, p1.w};
  float best_abs = -1.f, best_val = 0.f;
  int best_idx = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    if (fabsf(v[i]) > best_abs) { best_abs = fabsf(v[i]); best_val = v[i]; best_idx = lane * 8 + i; }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float oa = __shfl_xor_sync(0xffffffffu, best_abs, o);
    const float ov = __shfl_xor_sync(0xffffffffu, best_val, o);
    const int oi = __shfl_xor_sync(0xffffffffu, best_idx, o);
    if (oa > best_abs || (oa == best_abs && oi < best_idx)) { best_abs = oa; best_val = ov; best_idx = oi; }
  }
  int8_t* qb = q + b * kQkK + lane * 8;
  if (best_abs == 0.f) {
#pragma unroll
    for (int i = 0; i < 8; ++i) qb[i] = 0;
    if (lane == 0) d[b] = 0.f;
    return;
  }
  const float iscale = -127.f / best_val;
#pragma unroll
  for (int i = 0; i < 8; ++i) qb[i] = static_cast<int8_t>(min(127, __float2int_rn(iscale * v[i])));
  if (lane == 0) d[b] = 1.f / iscale;
}

__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {  // as fp32_to_bf16 in quant/fp16.h
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64);
  return static_cast<uint16_t>((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

__global__ void quantize_half_kernel(const float* __restrict__ x, int64_t n, uint16_t* __restrict__ q, bool bf16) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  q[i] = bf16 ? f32_to_bf16_bits(x[i]) : __half_as_ushort(__float2half_rn(x[i]));
}

// ---- dequantization of single elements (token embedding lookup): chunk::dequant_element

__global__ void dequantize_rows_kernel(GgmlType type, const uint8_t* __restrict__ w, int64_t cols, size_t row_bytes,
                                       const int32_t* __restrict__ ids, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= cols) return;
  const int64_t r = blockIdx.y;
  out[r * cols + i] = chunk::dequant_element(type, w + static_cast<int64_t>(ids[r]) * static_cast<int64_t>(row_bytes), i);
}

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace

bool supported(GgmlType type) {
  switch (type) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16:
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::IQ4_NL:
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::IQ4_XS:
      return true;
    default:
      return false;
  }
}

GgmlType activation_format(GgmlType weight_type) {
  switch (weight_type) {
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::IQ4_NL:
      return GgmlType::Q8_0;
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::IQ4_XS:
      return GgmlType::Q8_K;
    case GgmlType::F16: return GgmlType::F16;
    case GgmlType::BF16: return GgmlType::BF16;
    default: return GgmlType::F32;
  }
}

size_t activation_q_bytes(GgmlType format, int64_t n_tokens, int64_t cols) {
  const size_t n = static_cast<size_t>(n_tokens * cols);
  switch (format) {
    case GgmlType::Q8_0: case GgmlType::Q8_K: return n;
    case GgmlType::F16: case GgmlType::BF16: return 2 * n;
    default: return 0;
  }
}

size_t activation_d_bytes(GgmlType format, int64_t n_tokens, int64_t cols) {
  const size_t n = static_cast<size_t>(n_tokens * cols);
  switch (format) {
    case GgmlType::Q8_0: return n / kQk0 * sizeof(float);
    case GgmlType::Q8_K: return n / kQkK * sizeof(float);
    default: return 0;
  }
}

void quantize_activations(const float* x, Activations* act, cudaStream_t stream) {
  act->x = x;
  const int64_t n = act->n_tokens * act->cols;
  constexpr int kThreads = 256;
  switch (act->format) {
    case GgmlType::Q8_0: {
      const int64_t nb = n / kQk0;
      quantize_q8_0_kernel<<<blocks_for(nb * kWarp, kThreads), kThreads, 0, stream>>>(
          x, nb, static_cast<int8_t*>(act->q), act->d);
      break;
    }
    case GgmlType::Q8_K: {
      const int64_t nb = n / kQkK;
      quantize_q8_k_kernel<<<blocks_for(nb * kWarp, kThreads), kThreads, 0, stream>>>(
          x, nb, static_cast<int8_t*>(act->q), act->d);
      break;
    }
    case GgmlType::F16: case GgmlType::BF16:
      quantize_half_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(x, n, static_cast<uint16_t*>(act->q),
                                                                            act->format == GgmlType::BF16);
      break;
    default:
      break;  // F32: the kernel reads x
  }
}

void matmul(const DeviceMatrix& w, const Activations& act, float* out, cudaStream_t stream) {
  if (act.n_tokens <= 0) return;
  switch (w.type) {
    case GgmlType::Q4_0: launch_matmul<IntTraits<chunk::TQ4_0>>(w, act, out, stream); break;
    case GgmlType::Q4_1: launch_matmul<IntTraits<chunk::TQ4_1>>(w, act, out, stream); break;
    case GgmlType::Q5_0: launch_matmul<IntTraits<chunk::TQ5_0>>(w, act, out, stream); break;
    case GgmlType::Q5_1: launch_matmul<IntTraits<chunk::TQ5_1>>(w, act, out, stream); break;
    case GgmlType::Q8_0: launch_matmul<IntTraits<chunk::TQ8_0>>(w, act, out, stream); break;
    case GgmlType::IQ4_NL: launch_matmul<IntTraits<chunk::TIQ4_NL>>(w, act, out, stream); break;
    case GgmlType::Q2_K: launch_matmul<IntTraits<chunk::TQ2_K>>(w, act, out, stream); break;
    case GgmlType::Q3_K: launch_matmul<IntTraits<chunk::TQ3_K>>(w, act, out, stream); break;
    case GgmlType::Q4_K: launch_matmul<IntTraits<chunk::TQ4_K>>(w, act, out, stream); break;
    case GgmlType::Q5_K: launch_matmul<IntTraits<chunk::TQ5_K>>(w, act, out, stream); break;
    case GgmlType::Q6_K: launch_matmul<IntTraits<chunk::TQ6_K>>(w, act, out, stream); break;
    case GgmlType::IQ4_XS: launch_matmul<IntTraits<chunk::TIQ4_XS>>(w, act, out, stream); break;
    case GgmlType::F16: launch_matmul<TF16<false>>(w, act, out, stream); break;
    case GgmlType::BF16: launch_matmul<TF16<true>>(w, act, out, stream); break;
    case GgmlType::F32: launch_matmul<TF32>(w, act, out, stream); break;
    default: break;  // callers check supported() first
  }
}

void dequantize_rows(const DeviceMatrix& w, const int32_t* ids, int64_t n, float* out, cudaStream_t stream) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  dequantize_rows_kernel<<<dim3(blocks_for(w.cols, kThreads), static_cast<unsigned>(n)), kThreads, 0, stream>>>(
      w.type, w.data, w.cols, row_bytes(type_info(w.type), w.cols), ids, out);
}

}  // namespace flea::cuda
