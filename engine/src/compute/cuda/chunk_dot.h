// Per-type unpacking of one 32-element chunk of a GGUF weight row and its dot product with the
// matching 32 int8 activations, for the CUDA matmul (matmul.cu) and the embedding dequantizer.
// Everything here compiles for the device and for the host: the host build (plain C++, no GPU)
// is what tests/cuda_chunk_test.cpp checks against the CPU quant code and the format definitions.
//
// Chunk c of a row is elements [32c, 32c + 32). Its levels are packed four to a 32-bit word in
// element order (q[k] holds elements 4k..4k+3), so the integer dot with the activations is
// __dp4a; float scales are applied once per chunk, as the CPU applies them once per block.
//
// Alignment: a block's loads are at most as wide as the alignment its size guarantees (rows
// start at multiples of the row's byte size from a 16-byte aligned base): 18/22/34/110/210-byte
// blocks (Q4_0 IQ4_NL Q5_0 Q8_0 Q3_K Q6_K) read 2-byte halves, 20/24/84/136-byte blocks (Q4_1
// Q5_1 Q2_K IQ4_XS) 4-byte words, 144/176-byte blocks (Q4_K Q5_K) 16-byte vectors.
#pragma once

#include <vector_types.h>

#include <cstdint>

#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/types.h"

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define FLEA_HD __host__ __device__ __forceinline__
#else
#define FLEA_HD inline
#endif
#ifdef __CUDA_ARCH__
#define FLEA_UNROLL _Pragma("unroll")
#else
#define FLEA_UNROLL
#endif

namespace flea::cuda::chunk {

constexpr int kQk0 = 32, kQkK = 256;

// ---- primitives (device intrinsics, with plain-C++ equivalents for the host build)

FLEA_HD int dp4a(int a, int b, int c) {  // c + sum of the four signed byte products
#ifdef __CUDA_ARCH__
  return __dp4a(a, b, c);
#else
  for (int i = 0; i < 4; ++i) {
    const int8_t ai = static_cast<int8_t>(static_cast<uint32_t>(a) >> (8 * i));
    const int8_t bi = static_cast<int8_t>(static_cast<uint32_t>(b) >> (8 * i));
    c += ai * bi;
  }
  return c;
#endif
}

// Byte i of the result is byte (s >> 4i) & 7 of the 8 bytes {y:x} (x = bytes 0-3). Selector
// nibbles must have bit 3 clear (PRMT's sign-replicate mode is not emulated).
FLEA_HD uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#ifdef __CUDA_ARCH__
  return __byte_perm(x, y, s);
#else
  const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xffu) << (8 * i);
  return r;
#endif
}

// Float ops that must not be contracted into FMAs (the CPU rounds the product first).
FLEA_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
FLEA_HD float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
FLEA_HD float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

FLEA_HD float f16_bits(uint32_t bits16) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits16)));
#else
  return fp16_to_fp32(static_cast<uint16_t>(bits16));
#endif
}

FLEA_HD float f32_bits(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  return fp32_from_bits(bits);
#endif
}

FLEA_HD uint32_t u16_at(const uint8_t* p) { return *reinterpret_cast<const unsigned short*>(p); }  // 2-aligned
FLEA_HD float f16_at(const uint8_t* p) { return f16_bits(u16_at(p)); }                            // 2-aligned
FLEA_HD uint32_t u32_at(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }        // 4-aligned
FLEA_HD uint32_t u32_at_a2(const uint8_t* p) {  // 2-byte aligned little-endian word
  return u16_at(p) | (u16_at(p + 2) << 16);
}

// Four bits b0..b3 of v to bit 4 of bytes 0..3 (the fifth bit of four Q5_0/Q5_1 levels).
FLEA_HD uint32_t spread4_to_bit4(uint32_t v) {
  return ((v & 1u) << 4) | ((v & 2u) << 11) | ((v & 4u) << 18) | ((v & 8u) << 25);
}

// kIq4nlValues as four little-endian words of four int8 each (device code reads no host arrays).
constexpr uint32_t iq4nl_word(int k) {
  return static_cast<uint32_t>(static_cast<uint8_t>(quant::kIq4nlValues[4 * k])) |
         (static_cast<uint32_t>(static_cast<uint8_t>(quant::kIq4nlValues[4 * k + 1])) << 8) |
         (static_cast<uint32_t>(static_cast<uint8_t>(quant::kIq4nlValues[4 * k + 2])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(quant::kIq4nlValues[4 * k + 3])) << 24);
}
constexpr uint32_t kIq4W0 = iq4nl_word(0), kIq4W1 = iq4nl_word(1), kIq4W2 = iq4nl_word(2), kIq4W3 = iq4nl_word(3);
static_assert(kIq4W0 == 0xbfad9881u && kIq4W3 == 0x71594535u, "kIq4nlValues packing");

// Four indices 0..15 (one per byte) -> the four int8 IQ4_NL levels, packed the same way.
FLEA_HD int iq4nl_lookup4(uint32_t idx) {
  const uint32_t sel = (idx & 0x7u) | ((idx >> 4) & 0x70u) | ((idx >> 8) & 0x700u) | ((idx >> 12) & 0x7000u);
  const uint32_t lo = byte_perm(kIq4W0, kIq4W1, sel);  // levels 0-7
  const uint32_t hi = byte_perm(kIq4W2, kIq4W3, sel);  // levels 8-15
  const uint32_t upper = ((idx >> 3) & 0x01010101u) * 0xffu;  // 0xff in bytes whose index is >= 8
  return static_cast<int>((lo & ~upper) | (hi & upper));
}
FLEA_HD int iq4nl_value(int q) {  // one level, q in 0..15
  const uint32_t w = q < 4 ? kIq4W0 : q < 8 ? kIq4W1 : q < 12 ? kIq4W2 : kIq4W3;
  return static_cast<int8_t>(w >> (8 * (q & 3)));
}

// ---- activations and chunks

// Activation words of one chunk of one token: 8 words of 4 int8 each, and the scale of the
// Q8_0 / Q8_K block the chunk lies in.
struct ActQ8 {
  int a[8];
  float d;
};

// Sum of the activation int8s of words [k0, k0 + n).
FLEA_HD int act_sum(const ActQ8& x, int k0, int n) {
  int s = 0;
FLEA_UNROLL
  for (int k = 0; k < 8; ++k) if (k >= k0 && k < k0 + n) s = dp4a(0x01010101, x.a[k], s);
  return s;
}

struct IntChunk {
  int q[8];     // 32 levels, four per word, element order
  float scale;  // d, or d * sub-block scale (Q4_K/Q5_K)
  float min;    // Q4_1/Q5_1: m; Q4_K/Q5_K: dmin * m; Q2_K: dmin
  int sc0;      // integer scale of the chunk (IQ4_XS) or of its first 16-element group
  int sc1;      // integer scale of the second 16-element group (Q6_K, Q2_K, Q3_K)
  int m0, m1;   // Q2_K: integer mins of the two 16-element groups
};

FLEA_HD int dot8(const int* q, const ActQ8& x) {
  int s = 0;
FLEA_UNROLL
  for (int k = 0; k < 8; ++k) s = dp4a(q[k], x.a[k], s);
  return s;
}
FLEA_HD int dot4(const int* q, const ActQ8& x, int k0) {  // words k0..k0+3: one 16-element group
  int s = 0;
FLEA_UNROLL
  for (int k = 0; k < 4; ++k) s = dp4a(q[k0 + k], x.a[k0 + k], s);
  return s;
}

// Six-bit scale and min j of a Q4_K/Q5_K super-block (12 bytes as three words u0 u1 u2).
FLEA_HD void k_scale_min(uint32_t u0, uint32_t u1, uint32_t u2, int j, int* sc, int* m) {
  auto byte = [&](int i) -> int {
    const uint32_t u = i < 4 ? u0 : (i < 8 ? u1 : u2);
    return static_cast<int>((u >> (8 * (i & 3))) & 0xffu);
  };
  if (j < 4) {
    *sc = byte(j) & 63;
    *m = byte(j + 4) & 63;
  } else {
    *sc = (byte(j + 4) & 0x0f) | ((byte(j - 4) >> 6) << 4);
    *m = (byte(j + 4) >> 4) | ((byte(j) >> 6) << 4);
  }
}

// Six-bit scales (0..63, before the -32) of 16-element groups 2j and 2j + 1 of a Q3_K block:
// low nibbles in bytes 0-7 (groups 8-15 in the high nibbles), top 2 bits of group g in bits
// 2(g / 4).. of byte 8 + g % 4.
FLEA_HD void q3k_scale_pair(const uint8_t* scales, int j, int* s0, int* s1) {
  const uint32_t lo = u16_at(scales + ((2 * j) & 7));
  const uint32_t hi = u16_at(scales + 8 + 2 * (j & 1));
  const int lshift = j >= 4 ? 4 : 0, hshift = 2 * (j >> 1);
  *s0 = static_cast<int>(((lo >> lshift) & 0x0fu) | (((hi >> hshift) & 3u) << 4));
  *s1 = static_cast<int>(((lo >> (8 + lshift)) & 0x0fu) | (((hi >> (8 + hshift)) & 3u) << 4));
}

// ---- 32-element-block types (Q8_0 activations)

struct TQ4_0 {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQk0;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + c * 18;
    Chunk r;
    r.scale = f16_at(b);
FLEA_UNROLL
    for (int k = 0; k < 4; ++k) {
      const uint32_t w = u32_at_a2(b + 2 + 4 * k);
      r.q[k] = static_cast<int>(w & 0x0f0f0f0fu);
      r.q[k + 4] = static_cast<int>((w >> 4) & 0x0f0f0f0fu);
    }
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) {
    return w.scale * x.d * static_cast<float>(dot8(w.q, x) - 8 * act_sum(x, 0, 8));
  }
};

// value = d * q + m: the min term is m * d_a * (sum of the activation levels).
struct TQ4_1 {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQk0;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + c * 20;
    Chunk r;
    const uint32_t dm = u32_at(b);
    r.scale = f16_bits(dm & 0xffffu);
    r.min = f16_bits(dm >> 16);
FLEA_UNROLL
    for (int k = 0; k < 4; ++k) {
      const uint32_t w = u32_at(b + 4 + 4 * k);
      r.q[k] = static_cast<int>(w & 0x0f0f0f0fu);
      r.q[k + 4] = static_cast<int>((w >> 4) & 0x0f0f0f0fu);
    }
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) {
    return w.scale * x.d * static_cast<float>(dot8(w.q, x)) + w.min * x.d * static_cast<float>(act_sum(x, 0, 8));
  }
};

struct TQ5_0 {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQk0;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + c * 22;
    Chunk r;
    r.scale = f16_at(b);
    const uint32_t qh = u32_at_a2(b + 2);
FLEA_UNROLL
    for (int k = 0; k < 4; ++k) {
      const uint32_t w = u32_at_a2(b + 6 + 4 * k);
      r.q[k] = static_cast<int>((w & 0x0f0f0f0fu) | spread4_to_bit4(qh >> (4 * k)));
      r.q[k + 4] = static_cast<int>(((w >> 4) & 0x0f0f0f0fu) | spread4_to_bit4(qh >> (16 + 4 * k)));
    }
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) {
    return w.scale * x.d * static_cast<float>(dot8(w.q, x) - 16 * act_sum(x, 0, 8));
  }
};

struct TQ5_1 {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQk0;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + c * 24;
    Chunk r;
    const uint32_t dm = u32_at(b);
    r.scale = f16_bits(dm & 0xffffu);
    r.min = f16_bits(dm >> 16);
    const uint32_t qh = u32_at(b + 4);
FLEA_UNROLL
    for (int k = 0; k < 4; ++k) {
      const uint32_t w = u32_at(b + 8 + 4 * k);
      r.q[k] = static_cast<int>((w & 0x0f0f0f0fu) | spread4_to_bit4(qh >> (4 * k)));
      r.q[k + 4] = static_cast<int>(((w >> 4) & 0x0f0f0f0fu) | spread4_to_bit4(qh >> (16 + 4 * k)));
    }
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) { return TQ4_1::dot(w, x); }
};

struct TQ8_0 {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQk0;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + c * 34;
    Chunk r;
    r.scale = f16_at(b);
FLEA_UNROLL
    for (int k = 0; k < 8; ++k) r.q[k] = static_cast<int>(u32_at_a2(b + 2 + 4 * k));
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) {
    return w.scale * x.d * static_cast<float>(dot8(w.q, x));
  }
};

// Levels are the signed table values themselves, so the dot needs no offset term.
struct TIQ4_NL {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQk0;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + c * 18;
    Chunk r;
    r.scale = f16_at(b);
FLEA_UNROLL
    for (int k = 0; k < 4; ++k) {
      const uint32_t w = u32_at_a2(b + 2 + 4 * k);
      r.q[k] = iq4nl_lookup4(w & 0x0f0f0f0fu);
      r.q[k + 4] = iq4nl_lookup4((w >> 4) & 0x0f0f0f0fu);
    }
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) {
    return w.scale * x.d * static_cast<float>(dot8(w.q, x));
  }
};

// ---- 256-element super-block types (Q8_K activations); chunk c is sub-chunk c & 7 of block c >> 3

struct TQ4_K {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQkK;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + (c >> 3) * 144;
    const int j = static_cast<int>(c & 7);
    const uint32_t* u = reinterpret_cast<const uint32_t*>(b + 4);
    int sc, m;
    k_scale_min(u[0], u[1], u[2], j, &sc, &m);
    Chunk r;
    r.scale = f16_at(b) * static_cast<float>(sc);
    r.min = f16_at(b + 2) * static_cast<float>(m);
    const int4* qs = reinterpret_cast<const int4*>(b + 16 + 32 * (j >> 1));
    const int4 lo = qs[0], hi = qs[1];
    const int shift = (j & 1) * 4;
    const int w[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
FLEA_UNROLL
    for (int k = 0; k < 8; ++k) r.q[k] = static_cast<int>((static_cast<uint32_t>(w[k]) >> shift) & 0x0f0f0f0fu);
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) {
    return x.d * (w.scale * static_cast<float>(dot8(w.q, x)) - w.min * static_cast<float>(act_sum(x, 0, 8)));
  }
};

struct TQ5_K {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQkK;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + (c >> 3) * 176;
    const int j = static_cast<int>(c & 7);
    const uint32_t* u = reinterpret_cast<const uint32_t*>(b + 4);
    int sc, m;
    k_scale_min(u[0], u[1], u[2], j, &sc, &m);
    Chunk r;
    r.scale = f16_at(b) * static_cast<float>(sc);
    r.min = f16_at(b + 2) * static_cast<float>(m);
    const int4* qh4 = reinterpret_cast<const int4*>(b + 16);
    const int4* qs4 = reinterpret_cast<const int4*>(b + 48 + 32 * (j >> 1));
    const int4 hl = qh4[0], hh = qh4[1], lo = qs4[0], hi = qs4[1];
    const int h[8] = {hl.x, hl.y, hl.z, hl.w, hh.x, hh.y, hh.z, hh.w};
    const int w[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    const int shift = (j & 1) * 4;
    const int bit = j;  // qh bit 2c (+1 for the high nibble) of chunk pair c = j / 2
FLEA_UNROLL
    for (int k = 0; k < 8; ++k) {
      r.q[k] = static_cast<int>(((static_cast<uint32_t>(w[k]) >> shift) & 0x0f0f0f0fu) |
                                (((static_cast<uint32_t>(h[k]) >> bit) & 0x01010101u) << 4));
    }
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) { return TQ4_K::dot(w, x); }
};

struct TQ6_K {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQkK;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + (c >> 3) * 210;
    const int j = static_cast<int>(c & 7);
    const int half = j >> 2, k4 = j & 3;
    const uint8_t* ql = b + 64 * half + 32 * (k4 & 1);
    const uint8_t* qh = b + 128 + 32 * half;
    const int lshift = k4 >= 2 ? 4 : 0;
    Chunk r;
FLEA_UNROLL
    for (int k = 0; k < 8; ++k) {
      const uint32_t l = u32_at_a2(ql + 4 * k), h = u32_at_a2(qh + 4 * k);
      r.q[k] = static_cast<int>(((l >> lshift) & 0x0f0f0f0fu) | (((h >> (2 * k4)) & 0x03030303u) << 4));
    }
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192 + 8 * half + 2 * k4);
    r.sc0 = sc[0];
    r.sc1 = sc[1];
    r.scale = f16_at(b + 208);
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) {
    const int s = w.sc0 * (dot4(w.q, x, 0) - 32 * act_sum(x, 0, 4)) + w.sc1 * (dot4(w.q, x, 4) - 32 * act_sum(x, 4, 4));
    return w.scale * x.d * static_cast<float>(s);
  }
};

// Q2_K and Q3_K share the 2-bit layout: sub-chunk j lies in 128-element half j / 4 and takes
// bits 2(j % 4).. of the 32 bytes qs[32(j / 4) ..]; each 16-element group has its own scale.
struct TQ2_K {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQkK;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + (c >> 3) * 84;
    const int j = static_cast<int>(c & 7);
    const int shift = 2 * (j & 3);
    const uint8_t* qs = b + 16 + 32 * (j >> 2);
    Chunk r;
FLEA_UNROLL
    for (int k = 0; k < 8; ++k) r.q[k] = static_cast<int>((u32_at(qs + 4 * k) >> shift) & 0x03030303u);
    const uint32_t sm = u16_at(b + 2 * j);  // scale|min bytes of groups 2j, 2j + 1
    r.sc0 = static_cast<int>(sm & 0x0fu);
    r.m0 = static_cast<int>((sm >> 4) & 0x0fu);
    r.sc1 = static_cast<int>((sm >> 8) & 0x0fu);
    r.m1 = static_cast<int>((sm >> 12) & 0x0fu);
    const uint32_t dd = u32_at(b + 80);
    r.scale = f16_bits(dd & 0xffffu);
    r.min = f16_bits(dd >> 16);
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) {
    const int sq = w.sc0 * dot4(w.q, x, 0) + w.sc1 * dot4(w.q, x, 4);
    const int sm = w.m0 * act_sum(x, 0, 4) + w.m1 * act_sum(x, 4, 4);
    return x.d * (w.scale * static_cast<float>(sq) - w.min * static_cast<float>(sm));
  }
};

// Levels are kept as 0..7 (2 low bits | hmask bit << 2); the format's -4 is applied in the dot.
struct TQ3_K {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQkK;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + (c >> 3) * 110;
    const int j = static_cast<int>(c & 7);
    const int shift = 2 * (j & 3);
    const uint8_t* qs = b + 32 + 32 * (j >> 2);
    Chunk r;
FLEA_UNROLL
    for (int k = 0; k < 8; ++k) {
      const uint32_t lo = (u32_at_a2(qs + 4 * k) >> shift) & 0x03030303u;
      const uint32_t hb = (u32_at_a2(b + 4 * k) >> j) & 0x01010101u;  // hmask bit j of elements 4k..4k+3
      r.q[k] = static_cast<int>(lo | (hb << 2));
    }
    int s0, s1;
    q3k_scale_pair(b + 96, j, &s0, &s1);
    r.sc0 = s0 - 32;
    r.sc1 = s1 - 32;
    r.scale = f16_at(b + 108);
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) {
    const int s = w.sc0 * (dot4(w.q, x, 0) - 4 * act_sum(x, 0, 4)) + w.sc1 * (dot4(w.q, x, 4) - 4 * act_sum(x, 4, 4));
    return w.scale * x.d * static_cast<float>(s);
  }
};

struct TIQ4_XS {
  using Chunk = IntChunk;
  static constexpr int kActBlock = kQkK;
  FLEA_HD static Chunk load(const uint8_t* row, int64_t c) {
    const uint8_t* b = row + (c >> 3) * 136;
    const int j = static_cast<int>(c & 7);
    Chunk r;
    const uint32_t dsh = u32_at(b);  // d, scales_h
    const uint32_t sl = b[4 + j / 2];
    r.sc0 = static_cast<int>(((sl >> (4 * (j & 1))) & 0x0fu) | (((dsh >> (16 + 2 * j)) & 3u) << 4)) - 32;
    r.scale = f16_bits(dsh & 0xffffu);
    const uint8_t* qs = b + 8 + 16 * j;
FLEA_UNROLL
    for (int k = 0; k < 4; ++k) {
      const uint32_t w = u32_at(qs + 4 * k);
      r.q[k] = iq4nl_lookup4(w & 0x0f0f0f0fu);
      r.q[k + 4] = iq4nl_lookup4((w >> 4) & 0x0f0f0f0fu);
    }
    return r;
  }
  FLEA_HD static float dot(const Chunk& w, const ActQ8& x) {
    return w.scale * x.d * static_cast<float>(w.sc0 * dot8(w.q, x));
  }
};

// ---- one element (token embedding lookup): the CPU dequantizers' arithmetic, product rounded
// before the sum, so the result is bit-identical to quant::ops(type)->dequantize.

FLEA_HD float dequant_element(GgmlType type, const uint8_t* row, int64_t i) {
  switch (type) {
    case GgmlType::F32: return reinterpret_cast<const float*>(row)[i];
    case GgmlType::F16: return f16_at(row + 2 * i);
    case GgmlType::BF16: return f32_bits(u16_at(row + 2 * i) << 16);
    case GgmlType::Q4_0: {
      const uint8_t* b = row + (i / kQk0) * 18;
      const int j = static_cast<int>(i % kQk0);
      const int q = j < 16 ? (b[2 + j] & 0x0f) : (b[2 + j - 16] >> 4);
      return f16_at(b) * static_cast<float>(q - 8);
    }
    case GgmlType::Q4_1: {  // q * d + m
      const uint8_t* b = row + (i / kQk0) * 20;
      const int j = static_cast<int>(i % kQk0);
      const int q = j < 16 ? (b[4 + j] & 0x0f) : (b[4 + j - 16] >> 4);
      return add_rn(mul_rn(static_cast<float>(q), f16_at(b)), f16_at(b + 2));
    }
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool q51 = type == GgmlType::Q5_1;
      const uint8_t* b = row + (i / kQk0) * (q51 ? 24 : 22);
      const uint8_t* qh = b + (q51 ? 4 : 2);
      const uint8_t* qs = qh + 4;
      const int j = static_cast<int>(i % kQk0);
      const int low = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
      const int q = low | (((qh[j / 8] >> (j % 8)) & 1) << 4);
      if (!q51) return mul_rn(static_cast<float>(q - 16), f16_at(b));
      return add_rn(mul_rn(static_cast<float>(q), f16_at(b)), f16_at(b + 2));
    }
    case GgmlType::Q8_0: {
      const uint8_t* b = row + (i / kQk0) * 34;
      return f16_at(b) * static_cast<float>(static_cast<int8_t>(b[2 + i % kQk0]));
    }
    case GgmlType::IQ4_NL: {
      const uint8_t* b = row + (i / kQk0) * 18;
      const int j = static_cast<int>(i % kQk0);
      const int q = j < 16 ? (b[2 + j] & 0x0f) : (b[2 + j - 16] >> 4);
      return mul_rn(f16_at(b), static_cast<float>(iq4nl_value(q)));
    }
    case GgmlType::Q2_K: {  // (d * sc) * q - dmin * m
      const uint8_t* b = row + (i / kQkK) * 84;
      const int e = static_cast<int>(i % kQkK), s = (e % 128) / 32;
      const int q = (b[16 + 32 * (e / 128) + e % 32] >> (2 * s)) & 3;
      const int sm = b[e / 16];
      const float dl = mul_rn(f16_at(b + 80), static_cast<float>(sm & 0x0f));
      const float ml = mul_rn(f16_at(b + 82), static_cast<float>(sm >> 4));
      return sub_rn(mul_rn(dl, static_cast<float>(q)), ml);
    }
    case GgmlType::Q3_K: {  // (d * (sc - 32)) * (q - 4 * !hbit)
      const uint8_t* b = row + (i / kQkK) * 110;
      const int e = static_cast<int>(i % kQkK), s = (e % 128) / 32, g = e / 16;
      const int low = (b[32 + 32 * (e / 128) + e % 32] >> (2 * s)) & 3;
      const int hbit = (b[e % 32] >> (e / 32)) & 1;
      int s0, s1;
      q3k_scale_pair(b + 96, g / 2, &s0, &s1);
      const float dl = mul_rn(f16_at(b + 108), static_cast<float>((g & 1 ? s1 : s0) - 32));
      return mul_rn(dl, static_cast<float>(low - (hbit ? 0 : 4)));
    }
    case GgmlType::IQ4_XS: {  // (d * (ls - 32)) * level
      const uint8_t* b = row + (i / kQkK) * 136;
      const int e = static_cast<int>(i % kQkK), j = e / 32, l = e % 32;
      const int qb = b[8 + 16 * j + l % 16];
      const int q = l < 16 ? (qb & 0x0f) : (qb >> 4);
      const int ls = ((b[4 + j / 2] >> (4 * (j & 1))) & 0x0f) | (((u16_at(b + 2) >> (2 * j)) & 3) << 4);
      const float dl = mul_rn(f16_at(b), static_cast<float>(ls - 32));
      return mul_rn(dl, static_cast<float>(iq4nl_value(q)));
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool q5 = type == GgmlType::Q5_K;
      const uint8_t* b = row + (i / kQkK) * (q5 ? 176 : 144);
      const int e = static_cast<int>(i % kQkK), c = e / 64, l = e % 64, j = 2 * c + (l >= 32 ? 1 : 0);
      const uint32_t* u = reinterpret_cast<const uint32_t*>(b + 4);
      int sc, m;
      k_scale_min(u[0], u[1], u[2], j, &sc, &m);
      const uint8_t* qs = b + (q5 ? 48 : 16) + 32 * c;
      int q = l < 32 ? (qs[l] & 0x0f) : (qs[l - 32] >> 4);
      if (q5) q += ((b[16 + l % 32] >> j) & 1) << 4;
      const float d1 = mul_rn(f16_at(b), static_cast<float>(sc));
      const float m1 = mul_rn(f16_at(b + 2), static_cast<float>(m));
      return sub_rn(mul_rn(d1, static_cast<float>(q)), m1);
    }
    case GgmlType::Q6_K: {
      const uint8_t* b = row + (i / kQkK) * 210;
      const int e = static_cast<int>(i % kQkK), half = e / 128, k = (e % 128) / 32, l = e % 32;
      const uint8_t lbyte = b[64 * half + (k & 1) * 32 + l];
      const int low = k < 2 ? (lbyte & 0x0f) : (lbyte >> 4);
      const int high = (b[128 + 32 * half + l] >> (2 * k)) & 3;
      const int sc = static_cast<int8_t>(b[192 + 8 * half + 2 * k + l / 16]);
      return mul_rn(mul_rn(f16_at(b + 208), static_cast<float>(sc)), static_cast<float>((low | (high << 4)) - 32));
    }
    default: return 0.f;
  }
}

}  // namespace flea::cuda::chunk
