// The non-matmul steps of the forward pass: RMSNorm, RoPE, attention over the VRAM KV cache,
// SwiGLU and residual adds. Where the CPU's rounding is cheap to reproduce (double sums in the
// norm and softmax, products that must not be fused in RoPE) the kernels reproduce it.
#include <cfloat>

#include "compute/cuda/kernels.h"

namespace flea::cuda {
namespace {

constexpr int kWarp = 32;

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
template <class T>
__device__ T block_sum(T v, T* shared /* [32] */) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, n_warps = blockDim.x / kWarp;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < n_warps; ++w) total += shared[w];
  return total;
}

__device__ float block_max(float v, float* shared /* [32] */) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, n_warps = blockDim.x / kWarp;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < n_warps; ++w) m = fmaxf(m, shared[w]);
  return m;
}

__global__ void rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
                               int64_t n, float eps) {
  __shared__ double partial[32];
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * n;
  float* o = out + static_cast<int64_t>(blockIdx.x) * n;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
  ss = block_sum(ss, partial);
  const float scale = 1.0f / sqrtf(static_cast<float>(ss / static_cast<double>(n)) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
}

// One thread per (token, head, pair). Pair i is (x[2i], x[2i+1]) (normal rope) or (x[i], x[i + n_pairs])
// (NeoX rope).
__global__ void rope_kernel(float* __restrict__ x, const float* __restrict__ cos_sin, int64_t n_tokens,
                            int64_t n_heads, int64_t head_dim, int64_t n_pairs, bool neox) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_tokens * n_heads * n_pairs) return;
  const int64_t i = idx % n_pairs, h = (idx / n_pairs) % n_heads, t = idx / (n_pairs * n_heads);
  const float c = cos_sin[(t * n_pairs + i) * 2], s = cos_sin[(t * n_pairs + i) * 2 + 1];
  float* p = x + (t * n_heads + h) * head_dim + (neox ? i : 2 * i);
  const int64_t partner = neox ? n_pairs : 1;
  const float x0 = p[0], x1 = p[partner];
  p[0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
  p[partner] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

// rows[t * n + i] += bias[i].
__global__ void add_bias_kernel(float* __restrict__ rows, const float* __restrict__ bias, int64_t n_tokens, int64_t n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_tokens * n) return;
  rows[idx] = __fadd_rn(rows[idx], bias[idx % n]);
}

// One block per (token, head). Dynamic shared memory: head_dim floats of q, then one score per
// cached position 0..pos.
__global__ void attention_kernel(const float* __restrict__ q, const float* __restrict__ k_cache,
                                 const float* __restrict__ v_cache, float* __restrict__ out, int64_t n_past,
                                 int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale) {
  extern __shared__ float smem[];
  __shared__ float red_f[32];
  __shared__ double red_d[32];
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int64_t E = n_head * head_dim, KV = n_head_kv * head_dim;
  const int64_t kvh = h / (n_head / n_head_kv);
  const int64_t pos = n_past + t;  // causal: positions 0..pos
  float* qs = smem;
  float* score = smem + head_dim;
  const float* qh = q + t * E + h * head_dim;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) qs[d] = qh[d];
  __syncthreads();

  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, n_warps = blockDim.x / kWarp;
  for (int64_t p = warp; p <= pos; p += n_warps) {
    const float* kp = k_cache + p * KV + kvh * head_dim;
    float s = 0.f;
    for (int64_t d = lane; d < head_dim; d += kWarp) s += qs[d] * kp[d];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) score[p] = s * scale;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t p = threadIdx.x; p <= pos; p += blockDim.x) mx = fmaxf(mx, score[p]);
  mx = block_max(mx, red_f);
  double sum = 0.0;
  for (int64_t p = threadIdx.x; p <= pos; p += blockDim.x) {
    const float e = expf(score[p] - mx);
    score[p] = e;
    sum += e;
  }
  sum = block_sum(sum, red_d);  // its barriers also publish the exponentials
  const float inv = static_cast<float>(1.0 / sum);
  float* o = out + t * E + h * head_dim;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float acc = 0.f;
    const float* vp = v_cache + kvh * head_dim + d;
    for (int64_t p = 0; p <= pos; ++p) acc += (score[p] * inv) * vp[p * KV];
    o[d] = acc;
  }
}

__global__ void swiglu_kernel(float* __restrict__ gate, const float* __restrict__ up, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  gate[i] = (g / (1.0f + expf(-g))) * up[i];
}

__global__ void add_kernel(float* __restrict__ x, const float* __restrict__ y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

constexpr int kAttnThreads = 128;

size_t attention_smem_bytes(int64_t n_positions, int64_t head_dim) {
  return static_cast<size_t>(n_positions + head_dim) * sizeof(float);
}

}  // namespace

void rmsnorm(const float* x, const float* w, float* out, int64_t n_tokens, int64_t n, float eps,
             cudaStream_t stream) {
  if (n_tokens <= 0) return;
  rmsnorm_kernel<<<static_cast<unsigned>(n_tokens), 256, 0, stream>>>(x, w, out, n, eps);
}

void rope(float* x, const float* cos_sin, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t n_rot,
          bool neox, cudaStream_t stream) {
  const int64_t n = n_tokens * n_heads * (n_rot / 2);
  if (n <= 0) return;
  rope_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, cos_sin, n_tokens, n_heads, head_dim, n_rot / 2, neox);
}

void add_bias(float* rows, const float* bias, int64_t n_tokens, int64_t n, cudaStream_t stream) {
  if (n_tokens * n <= 0) return;
  add_bias_kernel<<<blocks_for(n_tokens * n, 256), 256, 0, stream>>>(rows, bias, n_tokens, n);
}

int64_t attention_max_positions(int device, int64_t head_dim) {
  int optin = 0;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) optin = 48 * 1024;
  // Static shared memory of the kernel: 32 floats + 32 doubles.
  const int64_t avail = static_cast<int64_t>(optin) - 32 * 4 - 32 * 8;
  return avail / static_cast<int64_t>(sizeof(float)) - head_dim;
}

void attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n_tokens,
               int64_t n_past, int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale,
               cudaStream_t stream) {
  if (n_tokens <= 0) return;
  const size_t smem = attention_smem_bytes(n_past + n_tokens, head_dim);
  if (smem > 48 * 1024) {
    cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  }
  attention_kernel<<<dim3(static_cast<unsigned>(n_tokens), static_cast<unsigned>(n_head)), kAttnThreads, smem,
                     stream>>>(q, k_cache, v_cache, out, n_past, n_head, n_head_kv, head_dim, scale);
}

void swiglu(float* gate, const float* up, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  swiglu_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(gate, up, n);
}

void add_inplace(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, y, n);
}

}  // namespace flea::cuda
