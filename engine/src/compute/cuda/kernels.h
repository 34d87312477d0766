// CUDA kernels of the forward pass, behind plain launch functions (host C++ may include this).
// Every pointer is device memory unless named `host_`; every launch goes on `stream` and reports
// errors through cudaGetLastError(), which the caller checks once per layer.
//
// The matrix-vector products follow the CPU backend's arithmetic: activations are first quantized
// to the weight type's dot format (Q8_0 for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/IQ4_NL, Q8_K for the k-quants
// and IQ4_XS, F16/BF16 for the float types) with the same rounding, so the integer part of every
// dot product is exact and only the order of float accumulation differs from the CPU.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "quant/types.h"

namespace flea::cuda {

// Activations of a batch in a weight type's dot format:
//   Q8_0 / Q8_K: q = int8 [n_tokens × cols], d = float [n_tokens × cols / 32 or / 256]
//   F16 / BF16:  q = uint16 bits [n_tokens × cols] (2 bytes each), d unused
//   F32:         x is used as is.
struct Activations {
  GgmlType format = GgmlType::F32;
  int64_t cols = 0;
  int64_t n_tokens = 0;
  void* q = nullptr;
  float* d = nullptr;
  const float* x = nullptr;  // the F32 source (F32 weights read it directly)
};

// The activation format a weight type's kernel consumes (as quant::ops(type)->vec_dot_type).
GgmlType activation_format(GgmlType weight_type);
// Bytes of `q` and of `d` for n_tokens × cols (cols a multiple of 256 or of 32 for Q8_0 formats).
size_t activation_q_bytes(GgmlType format, int64_t n_tokens, int64_t cols);
size_t activation_d_bytes(GgmlType format, int64_t n_tokens, int64_t cols);
// x: (n_tokens, cols) floats -> act (act.q and act.d must be sized by the functions above).
void quantize_activations(const float* x, Activations* act, cudaStream_t stream);

// Device pointers need 16-byte alignment (row starts follow from the block geometry).
struct DeviceMatrix {
  GgmlType type = GgmlType::F32;
  int64_t cols = 0;
  int64_t rows = 0;
  const uint8_t* data = nullptr;
};

// Whether the CUDA backend has kernels for this type (F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL
// Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_XS).
bool supported(GgmlType type);

// out[t * rows + r] = dot(W row r, activation row t) for t < act.n_tokens. Each weight block is
// loaded once per tile of up to 8 tokens.
void matmul(const DeviceMatrix& w, const Activations& act, float* out, cudaStream_t stream);

// out[i * cols ..] = dequantized row ids[i] of w, i < n (ids is device memory).
void dequantize_rows(const DeviceMatrix& w, const int32_t* ids, int64_t n, float* out, cudaStream_t stream);

// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w, t < n_tokens rows of n floats (double sum, as the CPU).
void rmsnorm(const float* x, const float* w, float* out, int64_t n_tokens, int64_t n, float eps,
             cudaStream_t stream);

// Rotates pair i < n_rot / 2 of every head of every token by the angle whose cosine and sine are
// cos_sin[(t * n_rot / 2 + i) * 2 + {0, 1}] (computed on the host, as the CPU does). The pair is
// (x[2i], x[2i+1]) (normal rope) or (x[i], x[i + n_rot/2]) with `neox`.
void rope(float* x, const float* cos_sin, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t n_rot,
          bool neox, cudaStream_t stream);

// rows (n_tokens, n) += bias (n) broadcast over the rows (qwen2's q/k/v biases).
void add_bias(float* rows, const float* bias, int64_t n_tokens, int64_t n, cudaStream_t stream);

// Causal GQA attention for tokens at positions n_past .. n_past + n_tokens - 1 against the cache:
// q (n_tokens, n_head * D), k_cache / v_cache (n_ctx, n_head_kv * D) already holding the batch,
// out (n_tokens, n_head * D).
void attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t n_tokens,
               int64_t n_past, int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale,
               cudaStream_t stream);
// The largest number of cached positions attention() can handle on `device` (shared memory bound).
int64_t attention_max_positions(int device, int64_t head_dim);

// gate[i] = silu(gate[i]) * up[i].
void swiglu(float* gate, const float* up, int64_t n, cudaStream_t stream);
// x[i] += y[i].
void add_inplace(float* x, const float* y, int64_t n, cudaStream_t stream);

}  // namespace flea::cuda
