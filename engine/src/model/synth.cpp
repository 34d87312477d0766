#include "model/synth.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <future>
#include <map>

#include "gguf/writer.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace flea::synth {
namespace {

constexpr size_t kChunkBytes = size_t{4} << 20;  // generation / write unit
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr int64_t kQkK = 256;

// ---- shapes and file types ----------------------------------------------------------------------

SynthShape make_shape(const char* name, int64_t embd, int64_t ff, int64_t layers, int64_t heads,
                      int64_t heads_kv, int64_t vocab, int64_t ctx, double rope_base = 10000.0) {
  SynthShape s;
  s.name = name;
  s.n_embd = embd;
  s.n_ff = ff;
  s.n_layer = layers;
  s.n_head = heads;
  s.n_head_kv = heads_kv;
  s.n_vocab = vocab;
  s.n_ctx = ctx;
  s.rope_freq_base = rope_base;
  return s;
}

const std::vector<SynthShape>& presets() {
  static const std::vector<SynthShape> kPresets = {
      // tiny: a few MB, GQA, for tests.
      make_shape("tiny", 256, 768, 4, 4, 2, 1024, 2048),
      // pub: the shape of the llama.cpp reference models in ../shared/reference.
      make_shape("pub", 256, 512, 2, 4, 4, 1024, 2048),
      // 1b: TinyLlama-1.1B.
      make_shape("1b", 2048, 5632, 16, 32, 4, 32000, 2048),
      make_shape("7b", 4096, 11008, 32, 32, 32, 32000, 4096),    // Llama-2-7B
      make_shape("13b", 5120, 13824, 40, 40, 40, 32000, 4096),   // Llama-2-13B
      make_shape("70b", 8192, 28672, 80, 64, 8, 32000, 4096),    // Llama-2-70B
      make_shape("llama3-8b", 4096, 14336, 32, 32, 8, 128256, 8192, 500000.0),  // Llama-3.1-8B
      make_shape("llama3-70b", 8192, 28672, 80, 64, 8, 128256, 8192, 500000.0),  // Llama-3.1-70B
      make_shape("qwen2.5-7b", 3584, 18944, 28, 28, 4, 152064, 32768, 1000000.0),  // Qwen2.5-7B
      // moe-tiny: the shape of ../shared/reference/arch/moe (4 experts, top-2).
      make_shape("moe-tiny", 256, 256, 2, 8, 2, 320, 4096, 1000000.0),
      make_shape("mixtral-8x7b", 4096, 14336, 32, 32, 8, 32000, 32768, 1000000.0),  // Mixtral-8x7B
      // llama4-tiny: the shape of ../shared/reference/arch/l4 (MoE every 2nd layer, 4 experts, top-1).
      make_shape("llama4-tiny", 256, 256, 4, 8, 2, 320, 8192, 500000.0),
      // Llama-4-Scout-17B-16E: 48 MoE layers, 16 experts + a shared one, top-1.
      make_shape("llama4-scout", 5120, 16384, 48, 40, 8, 202048, 10485760, 500000.0),
  };
  static const std::vector<SynthShape> kWithArch = [] {
    std::vector<SynthShape> v = kPresets;
    for (SynthShape& s : v) {
      if (s.name.rfind("llama3-", 0) == 0) {
        s.rope_scaling_factor = 8.0;  // Llama 3.1: factor 8, low/high 1/4, original context 8192
      } else if (s.name.rfind("qwen2", 0) == 0) {
        s.arch = "qwen2";
        s.qkv_bias = true;
        s.rms_eps = 1e-6;
      } else if (s.name == "moe-tiny" || s.name == "mixtral-8x7b") {
        s.n_expert = s.name == "moe-tiny" ? 4 : 8;
        s.n_expert_used = 2;
        s.n_ff_exp = s.n_ff;
      } else if (s.name.rfind("llama4-", 0) == 0) {
        s.arch = "llama4";
        s.shared_expert = true;
        s.n_expert_used = 1;
        if (s.name == "llama4-tiny") {  // as the l4 reference: rope scaling factor 8, low/high 1/4, context 64
          s.n_expert = 4;
          s.n_ff_exp = 128;
          s.moe_every = 2;
          s.rope_scaling_factor = 8.0;
          s.rope_original_ctx = 64;
        } else {  // Scout: every layer MoE; rope scaling factor 16 over an 8192 original context
          s.n_expert = 16;
          s.n_ff_exp = 8192;
          s.rope_scaling_factor = 16.0;
          s.rope_high_freq_factor = 1.0;
        }
      }
    }
    return v;
  }();
  return kWithArch;
}

struct FileTypeInfo {
  FileType type;
  const char* name;
  uint32_t llama_ftype;  // LLAMA_FTYPE_MOSTLY_*
  GgmlType default_type;
  bool quantized;
};

constexpr FileTypeInfo kFileTypes[] = {
    {FileType::F16, "F16", 1, GgmlType::F16, false},
    {FileType::BF16, "BF16", 32, GgmlType::BF16, false},
    {FileType::Q8_0, "Q8_0", 7, GgmlType::Q8_0, true},
    {FileType::Q4_0, "Q4_0", 2, GgmlType::Q4_0, true},
    {FileType::Q4_1, "Q4_1", 3, GgmlType::Q4_1, true},
    {FileType::Q5_0, "Q5_0", 8, GgmlType::Q5_0, true},
    {FileType::Q5_1, "Q5_1", 9, GgmlType::Q5_1, true},
    {FileType::Q2_K, "Q2_K", 10, GgmlType::Q2_K, true},
    {FileType::Q3_K_S, "Q3_K_S", 11, GgmlType::Q3_K, true},
    {FileType::Q3_K_M, "Q3_K_M", 12, GgmlType::Q3_K, true},
    {FileType::Q3_K_L, "Q3_K_L", 13, GgmlType::Q3_K, true},
    {FileType::Q4_K_S, "Q4_K_S", 14, GgmlType::Q4_K, true},
    {FileType::Q4_K_M, "Q4_K_M", 15, GgmlType::Q4_K, true},
    {FileType::Q5_K_S, "Q5_K_S", 16, GgmlType::Q5_K, true},
    {FileType::Q5_K_M, "Q5_K_M", 17, GgmlType::Q5_K, true},
    {FileType::Q6_K, "Q6_K", 18, GgmlType::Q6_K, true},
    {FileType::IQ4_NL, "IQ4_NL", 25, GgmlType::IQ4_NL, true},
    {FileType::IQ4_XS, "IQ4_XS", 30, GgmlType::IQ4_XS, true},
};

const FileTypeInfo& ft_info(FileType t) {
  for (const auto& f : kFileTypes) {
    if (f.type == t) return f;
  }
  FLEA_CHECK(false, "unknown FileType");
  return kFileTypes[0];
}

// ---- llama.cpp's per-tensor type choice (llama_tensor_get_type) ---------------------------------

enum class Role {
  kTokenEmbd, kOutput, kNorm, kBias, kRopeFreqs, kRouter, kAttnQ, kAttnK, kAttnV, kAttnOut, kFfnGate, kFfnUp, kFfnDown
};

// Layers that get more bits in the _M mixes: the first and last eighth and every third in between.
bool use_more_bits(int64_t i_layer, int64_t n_layer) {
  return i_layer < n_layer / 8 || i_layer >= 7 * n_layer / 8 || (i_layer - n_layer / 8) % 3 == 2;
}

int64_t block_size(GgmlType t) { return type_info(t).block_size; }

// llama.cpp's rules (llama_tensor_get_type, models without an importance matrix) for the tensors
// whose type differs from the file type's default. The attn_v counter equals the layer index (one per
// layer); ffn_down rules see the layer index against the number of ffn_down tensors `n_down` (with
// experts llama.cpp reads the layer from the name and counts every *ffn_down* tensor).
GgmlType mixed_type(const SynthShape& s, FileType ft, Role role, int64_t il, int64_t n_down, GgmlType t) {
  const int64_t n = role == Role::kFfnDown ? n_down : s.n_layer;
  const bool eight_experts = s.n_expert == 8;
  const bool gqa4 = s.n_head / s.n_head_kv >= 4;
  // llama.cpp classifies an 80-layer LLaMA with grouped-query attention as 70B.
  const bool is_70b = s.n_layer == 80 && s.n_head_kv != s.n_head;
  using F = FileType;
  if (role == Role::kAttnV) {
    switch (ft) {
      case F::Q2_K: t = gqa4 ? GgmlType::Q4_K : GgmlType::Q3_K; break;
      case F::Q3_K_M: t = il < 2 ? GgmlType::Q5_K : GgmlType::Q4_K; break;
      case F::Q3_K_L: t = GgmlType::Q5_K; break;
      case F::IQ4_NL: case F::IQ4_XS: if (gqa4) t = GgmlType::Q5_K; break;
      case F::Q4_K_M: case F::Q5_K_M: if (use_more_bits(il, n)) t = GgmlType::Q6_K; break;
      case F::Q4_K_S: if (il < 4) t = GgmlType::Q5_K; break;
      default: break;
    }
    if (is_70b && (t == GgmlType::Q3_K || t == GgmlType::Q4_K)) t = GgmlType::Q5_K;
    if (eight_experts) t = GgmlType::Q8_0;  // Mixtral-8x7B: "trades just ~128MB"
  } else if (role == Role::kAttnK) {
    if (eight_experts) t = GgmlType::Q8_0;
  } else if (role == Role::kFfnDown) {
    switch (ft) {
      case F::Q2_K: t = GgmlType::Q3_K; break;
      case F::Q3_K_M: t = il < n / 16 ? GgmlType::Q5_K : GgmlType::Q4_K; break;
      case F::Q3_K_L: t = GgmlType::Q5_K; break;
      case F::Q4_K_M: case F::Q5_K_M: if (use_more_bits(il, n)) t = GgmlType::Q6_K; break;
      case F::IQ4_NL: case F::IQ4_XS: case F::Q4_K_S: if (il < n / 8) t = GgmlType::Q5_K; break;
      default: break;
    }
  } else if (role == Role::kAttnOut) {
    if (eight_experts) {
      switch (ft) {
        case F::Q2_K: case F::Q3_K_S: case F::Q3_K_M: case F::IQ4_NL: case F::Q4_K_S: case F::Q4_K_M: case F::IQ4_XS:
          t = GgmlType::Q5_K;
          break;
        default: break;
      }
    } else {
      switch (ft) {
        case F::Q2_K: t = GgmlType::Q3_K; break;
        case F::Q3_K_M: t = GgmlType::Q4_K; break;
        case F::Q3_K_L: t = GgmlType::Q5_K; break;
        default: break;
      }
    }
  }
  return t;
}

StatusOr<GgmlType> choose_type(const SynthShape& s, FileType ft, Role role, int64_t i_layer, int64_t n_down,
                               int64_t ne0) {
  // 1-D tensors and the router (llama.cpp never quantizes ffn_gate_inp) stay F32.
  if (role == Role::kNorm || role == Role::kBias || role == Role::kRopeFreqs || role == Role::kRouter) return GgmlType::F32;
  const FileTypeInfo& fi = ft_info(ft);
  GgmlType t = fi.default_type;
  if (!fi.quantized) return t;
  if (role == Role::kOutput || (s.tied && role == Role::kTokenEmbd)) {
    if (ne0 % block_size(t) != 0) {
      t = GgmlType::Q8_0;
    } else if (t != GgmlType::Q8_0) {
      t = GgmlType::Q6_K;
    }
  } else {
    t = mixed_type(s, ft, role, i_layer, n_down, t);
  }
  // Rows that do not fill a k-quant super-block fall back to a 32-element type.
  if (ne0 % block_size(t) != 0) {
    switch (t) {
      case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::IQ4_XS: t = GgmlType::IQ4_NL; break;
      case GgmlType::Q4_K: t = GgmlType::Q5_0; break;
      case GgmlType::Q5_K: t = GgmlType::Q5_1; break;
      case GgmlType::Q6_K: t = GgmlType::Q8_0; break;
      default:
        return invalid_argument(std::string("no fallback type for ") + type_info(t).name +
                                " with a row of " + std::to_string(ne0) + " elements");
    }
    if (ne0 % block_size(t) != 0) t = GgmlType::F16;
  }
  return t;
}

// ---- deterministic counter-based randomness ------------------------------------------------------

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t tensor_key(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return mix64(mix64(seed + kGolden) ^ h);
}

// Word j of unit u: a pure function of (key, u, j), so any chunking gives the same bytes.
struct UnitRng {
  uint64_t base;
  uint64_t j = 0;
  UnitRng(uint64_t key, uint64_t unit) : base(key + unit * 64 * kGolden) {}
  uint64_t next() { return mix64(base + (++j) * kGolden); }
  // n bytes of bulk quant bits: an xorshift64 stream seeded from this unit's next word (no
  // multiplies, so generation stays well ahead of the disk).
  void fill(uint8_t* p, size_t n) {
    uint64_t x = next() | 1;
    while (n > 0) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      const size_t k = n < 8 ? n : 8;
      std::memcpy(p, &x, k);
      p += k;
      n -= k;
    }
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
};

// Approximately standard normal (Irwin–Hall of four 16-bit uniforms, rescaled to unit variance).
inline float normal_from(uint64_t w) {
  const float sum = static_cast<float>((w & 0xFFFF) + ((w >> 16) & 0xFFFF) + ((w >> 32) & 0xFFFF) +
                                       (w >> 48) + 2) * (1.0f / 65536.0f);
  return (sum - 2.0f) * 1.7320508f;
}

// A norm weight from its normal draw z.
inline float norm_from(float z) { return 1.0f + 0.1f * z; }

inline void put_f16(uint8_t* p, float v) {
  const uint16_t h = fp32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// Rms of the integer quant factor of each format with uniformly random bits (see gen_unit).
constexpr double kRmsQ8 = 73.9020;       // sqrt(E[q^2]), q uniform in -128..127
constexpr double kRmsQ4 = 4.6368;        // q - 8, q in 0..15
constexpr double kRmsQ5 = 9.2466;        // q - 16, q in 0..31
constexpr double kRmsQ4Centred = 4.6098; // q - 7.5
constexpr double kRmsQ5Centred = 9.2331; // q - 15.5
constexpr double kRmsQ6 = 18.4797;       // q - 32, q in 0..63
constexpr double kRmsKScale = 48.3865;   // 6-bit sub-block scales uniform in 32..63
constexpr double kRmsQ6Scale = 97.2703;  // |int8 scale| uniform in 64..127
constexpr double kRmsJitter = 1.0104;    // block scale jitter uniform in [0.75, 1.25)
constexpr double kRmsIq4 = 67.4389;      // kIq4nlValues[q], q in 0..15
constexpr double kRmsQ2Centred = 1.1180; // q - 1.5, q in 0..3
constexpr double kRmsQ3 = 2.3452;        // q - 4, q in 0..7
constexpr double kRmsQ2Scale = 11.7260;  // 4-bit sub-block scales uniform in 8..15
constexpr double kRmsSignedScale = 23.9479;  // 6-bit scale - 32, uniform in 16..31

// Block scale jitter, uniform in [0.75, 1.25) from the top bits of w (its rms is kRmsJitter).
inline double jitter(uint64_t w) { return 0.75 + 0.5 * static_cast<double>(w >> 11) * 0x1.0p-53; }

// A block scale of random sign (centres formats whose integer levels are lopsided) with jitter.
inline double signed_scale(uint64_t w, double sd, double rms) {
  return (w & 1 ? -1.0 : 1.0) * sd / (rms * kRmsJitter) * jitter(w);
}

struct TensorGen {
  const SynthTensor* t = nullptr;
  uint64_t key = 0;
  size_t unit_bytes = 0;   // bytes per generation unit (one block, or one element)
  uint64_t n_units = 0;

  void init(const SynthTensor& tensor, uint64_t seed) {
    t = &tensor;
    key = tensor_key(seed, tensor.name);
    const TypeInfo& ti = type_info(tensor.type);
    unit_bytes = ti.block_bytes;
    uint64_t n = 1;
    for (int64_t d : tensor.ne) n *= static_cast<uint64_t>(d);
    n_units = n / static_cast<uint64_t>(ti.block_size);
  }

  void gen_unit(uint64_t u, uint8_t* out) const {
    UnitRng rng(key, u);
    const double sd = t->stddev;
    switch (t->type) {
      case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: {
        const float z = normal_from(rng.next());
        float v = !t->values.empty() ? t->values[u] : t->is_norm ? norm_from(z) : static_cast<float>(sd) * z;
        if (!t->offset.empty()) v += t->offset[u % t->offset.size()];
        if (t->type == GgmlType::F32) {
          std::memcpy(out, &v, 4);
        } else {
          const uint16_t h = t->type == GgmlType::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
          std::memcpy(out, &h, 2);
        }
        break;
      }
      case GgmlType::Q8_0:    // d, qs[32]: value = d * q
      case GgmlType::Q4_0:    // d, qs[16]: value = d * (q - 8)
      case GgmlType::Q5_0:    // d, qh[4], qs[16]: value = d * (q - 16)
      case GgmlType::IQ4_NL: {  // d, qs[16]: value = d * kIq4nlValues[q]
        const double rms = t->type == GgmlType::Q8_0   ? kRmsQ8
                           : t->type == GgmlType::Q4_0 ? kRmsQ4
                           : t->type == GgmlType::Q5_0 ? kRmsQ5
                                                       : kRmsIq4;
        put_f16(out, static_cast<float>(signed_scale(rng.next(), sd, rms)));
        rng.fill(out + 2, unit_bytes - 2);
        break;
      }
      case GgmlType::Q4_1:    // d, m, qs[16]: value = d * q + m, m = -7.5 d
      case GgmlType::Q5_1: {  // d, m, qh[4], qs[16]: value = d * q + m, m = -15.5 d
        const bool q5 = t->type == GgmlType::Q5_1;
        const float d = fp16_to_fp32(fp32_to_fp16(
            static_cast<float>(sd / ((q5 ? kRmsQ5Centred : kRmsQ4Centred) * kRmsJitter) * jitter(rng.next()))));
        put_f16(out, d);
        put_f16(out + 2, (q5 ? -15.5f : -7.5f) * d);
        rng.fill(out + 4, unit_bytes - 4);
        break;
      }
      case GgmlType::IQ4_XS: {  // d, scales_h, scales_l[4], qs[128]: value = d * (ls - 32) * kIq4nlValues[q]
        const double d = signed_scale(rng.next(), sd, kRmsSignedScale * kRmsIq4);
        put_f16(out, static_cast<float>(d));
        const uint16_t scales_h = 0xFFFF;  // ls = 48..63: both high bits set in all 8 sub-blocks
        std::memcpy(out + 2, &scales_h, 2);
        const uint64_t w = rng.next();
        for (int j = 0; j < 4; ++j) out[4 + j] = static_cast<uint8_t>(w >> (8 * j));  // low nibbles: ls & 15
        rng.fill(out + 8, unit_bytes - 8);
        break;
      }
      case GgmlType::Q2_K: {  // scales[16], qs[64], d, dmin: value = d * sc * q - dmin * m
        // sc in 8..15, m = sc and dmin = 1.5 d: each sub-block is d * sc * (q - 1.5).
        uint64_t w = rng.next();
        for (int j = 0; j < 16; ++j, w >>= 3) {
          const uint8_t sc = static_cast<uint8_t>(8 + (w & 7));
          out[j] = static_cast<uint8_t>(sc | (sc << 4));
        }
        rng.fill(out + 16, 64);
        const float d = fp16_to_fp32(fp32_to_fp16(static_cast<float>(sd / (kRmsQ2Scale * kRmsQ2Centred))));
        put_f16(out + 80, d);
        put_f16(out + 82, 1.5f * d);
        break;
      }
      case GgmlType::Q3_K: {  // hmask[32], qs[64], scales[12], d: value = d * (s - 32) * (q - 4)
        rng.fill(out, 96);
        const uint64_t w = rng.next();
        uint8_t* sc = out + 96;
        // s = 48..63: low nibbles random, both high bits set for all 16 sub-blocks.
        for (int j = 0; j < 8; ++j) sc[j] = static_cast<uint8_t>(w >> (8 * j));
        for (int j = 8; j < 12; ++j) sc[j] = 0xFF;
        put_f16(out + 108, static_cast<float>(signed_scale(rng.next(), sd, kRmsSignedScale * kRmsQ3)));
        break;
      }
      case GgmlType::Q4_K:    // d, dmin, scales[12], qs[128]
      case GgmlType::Q5_K: {  // d, dmin, scales[12], qh[32], qs[128]
        // value = d*sc*q - dmin*m; with m = sc and dmin = c*d the sub-block is d*sc*(q - c).
        const bool q5 = t->type == GgmlType::Q5_K;
        const double centre = q5 ? 15.5 : 7.5;
        const float d = fp16_to_fp32(fp32_to_fp16(
            static_cast<float>(sd / (kRmsKScale * (q5 ? kRmsQ5Centred : kRmsQ4Centred)))));
        put_f16(out, d);
        put_f16(out + 2, static_cast<float>(centre) * d);
        uint64_t w = rng.next();
        uint8_t sc[8];
        for (int j = 0; j < 8; ++j, w >>= 5) sc[j] = static_cast<uint8_t>(32 + (w & 31));
        uint8_t* s = out + 4;
        for (int j = 0; j < 4; ++j) {
          s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
          s[j + 4] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));  // mins equal scales
          s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((sc[j + 4] & 0xF) << 4));
        }
        rng.fill(out + 16, unit_bytes - 16);
        break;
      }
      case GgmlType::Q6_K: {  // ql[128], qh[64], scales[16] int8, d: value = d*sc*(q - 32)
        rng.fill(out, 192);
        int8_t* s = reinterpret_cast<int8_t*>(out + 192);
        uint64_t w = rng.next();
        for (int j = 0; j < 16; ++j) {
          if (j == 8) w = rng.next();
          const int mag = 64 + static_cast<int>(w & 63);
          s[j] = static_cast<int8_t>((w >> 6) & 1 ? -mag : mag);
          w >>= 7;
        }
        put_f16(out + 208, static_cast<float>(sd / (kRmsQ6Scale * kRmsQ6)));
        break;
      }
      default:
        FLEA_CHECK(false, std::string("synth cannot generate type ") + type_info(t->type).name);
    }
    if (!t->offset.empty() && type_info(t->type).block_size > 1) add_offset(u, out);
  }

  // Quantized blocks with an offset: the noise block's values plus the offset, requantized.
  void add_offset(uint64_t u, uint8_t* out) const {
    const quant::QuantOps* q = quant::ops(t->type);
    FLEA_CHECK(q != nullptr, std::string("synth cannot requantize ") + type_info(t->type).name);
    const int64_t bs = type_info(t->type).block_size;
    float v[kQkK];
    q->dequantize(out, v, bs);
    const size_t first = static_cast<size_t>(u * static_cast<uint64_t>(bs) % t->offset.size());
    for (int64_t j = 0; j < bs; ++j) v[j] += t->offset[first + static_cast<size_t>(j)];
    q->quantize(v, out, bs);
  }

  void fill(uint64_t first, uint64_t n, uint8_t* out) const {
    for (uint64_t u = 0; u < n; ++u) gen_unit(first + u, out + u * unit_bytes);
  }
};

// ---- vocab and metadata -------------------------------------------------------------------------

constexpr const char* kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's word-start marker

gguf::Value array_i32(const std::vector<int64_t>& v) {
  return gguf::value_array_int(gguf::ValueType::INT32, v);
}

// The synthetic SentencePiece vocabulary's tokenizer.* keys.
Status add_synthetic_vocab(int64_t n_vocab, gguf::Writer* w) {
  const std::vector<std::string> vocab = synth_vocab(n_vocab);
  std::vector<float> scores(vocab.size(), 0.0f);
  std::vector<int64_t> token_type(vocab.size(), 1);  // 1 normal, 2 unknown, 3 control, 6 byte
  token_type[0] = 2;
  token_type[1] = token_type[2] = 3;
  for (size_t i = 3; i < 259 && i < vocab.size(); ++i) token_type[i] = 6;
  for (size_t i = 259; i < vocab.size(); ++i) scores[i] = -static_cast<float>(i - 258);
  auto u32 = [](int64_t v) { return gguf::value_u32(static_cast<uint32_t>(v)); };
  FLEA_RETURN_IF_ERROR(w->add_kv("tokenizer.ggml.model", gguf::value_string("llama")));
  FLEA_RETURN_IF_ERROR(w->add_kv("tokenizer.ggml.tokens", gguf::value_array_string(vocab)));
  FLEA_RETURN_IF_ERROR(w->add_kv("tokenizer.ggml.scores", gguf::value_array_f32(scores)));
  FLEA_RETURN_IF_ERROR(w->add_kv("tokenizer.ggml.token_type", array_i32(token_type)));
  FLEA_RETURN_IF_ERROR(w->add_kv("tokenizer.ggml.bos_token_id", u32(1)));
  FLEA_RETURN_IF_ERROR(w->add_kv("tokenizer.ggml.eos_token_id", u32(2)));
  FLEA_RETURN_IF_ERROR(w->add_kv("tokenizer.ggml.unknown_token_id", u32(0)));
  FLEA_RETURN_IF_ERROR(w->add_kv("tokenizer.ggml.add_bos_token", gguf::value_bool(true)));
  FLEA_RETURN_IF_ERROR(w->add_kv("tokenizer.ggml.add_eos_token", gguf::value_bool(false)));
  return ok_status();
}

Status build_layout(const SynthOptions& o, const std::vector<SynthTensor>& plan, gguf::Writer* w) {
  const SynthShape& s = o.shape;
  const std::string name = o.model_name.empty() ? "flea-synth-" + s.name : o.model_name;
  auto u32 = [](int64_t v) { return gguf::value_u32(static_cast<uint32_t>(v)); };
  const std::string k = s.arch + ".";  // hyperparameters live under the architecture's name
  FLEA_RETURN_IF_ERROR(w->add_kv("general.architecture", gguf::value_string(s.arch)));
  FLEA_RETURN_IF_ERROR(w->add_kv("general.name", gguf::value_string(name)));
  FLEA_RETURN_IF_ERROR(w->add_kv(k + "context_length", u32(s.n_ctx)));
  FLEA_RETURN_IF_ERROR(w->add_kv(k + "embedding_length", u32(s.n_embd)));
  FLEA_RETURN_IF_ERROR(w->add_kv(k + "block_count", u32(s.n_layer)));
  FLEA_RETURN_IF_ERROR(w->add_kv(k + "feed_forward_length", u32(s.n_ff)));
  FLEA_RETURN_IF_ERROR(w->add_kv(k + "attention.head_count", u32(s.n_head)));
  FLEA_RETURN_IF_ERROR(w->add_kv(k + "attention.head_count_kv", u32(s.n_head_kv)));
  FLEA_RETURN_IF_ERROR(w->add_kv(k + "attention.layer_norm_rms_epsilon",
                                 gguf::value_f32(static_cast<float>(s.rms_eps))));
  FLEA_RETURN_IF_ERROR(w->add_kv(k + "rope.freq_base", gguf::value_f32(static_cast<float>(s.rope_freq_base))));
  if (s.n_expert > 0) {
    FLEA_RETURN_IF_ERROR(w->add_kv(k + "expert_count", u32(s.n_expert)));
    FLEA_RETURN_IF_ERROR(w->add_kv(k + "expert_used_count", u32(s.n_expert_used)));
  }
  if (s.arch == "llama4") {
    FLEA_RETURN_IF_ERROR(w->add_kv(k + "attention.key_length", u32(s.head_dim())));
    FLEA_RETURN_IF_ERROR(w->add_kv(k + "attention.value_length", u32(s.head_dim())));
    FLEA_RETURN_IF_ERROR(w->add_kv(k + "interleave_moe_layer_step", u32(s.moe_every)));
    FLEA_RETURN_IF_ERROR(w->add_kv(k + "expert_feed_forward_length", u32(s.n_ff_exp)));
  }
  if (s.arch != "qwen2") {  // real Qwen2 files carry neither key
    FLEA_RETURN_IF_ERROR(w->add_kv(k + "rope.dimension_count", u32(s.head_dim())));
    FLEA_RETURN_IF_ERROR(w->add_kv(k + "vocab_size", u32(s.n_vocab)));
  }
  if (o.vocab != nullptr) {
    if (o.vocab->n_tokens != s.n_vocab) {
      return invalid_argument("--vocab " + o.vocab->path + " has " + std::to_string(o.vocab->n_tokens) +
                              " tokens but shape " + s.name + " has n_vocab " + std::to_string(s.n_vocab) +
                              " (use --n-vocab " + std::to_string(o.vocab->n_tokens) + " or a matching shape)");
    }
    for (const auto& [key, value] : o.vocab->kvs) FLEA_RETURN_IF_ERROR(w->add_kv(key, value));
  } else {
    FLEA_RETURN_IF_ERROR(add_synthetic_vocab(s.n_vocab, w));
  }
  FLEA_RETURN_IF_ERROR(w->add_kv("general.quantization_version", u32(2)));
  FLEA_RETURN_IF_ERROR(w->add_kv("general.file_type", u32(llama_ftype_id(o.file_type))));
  if (o.expert_skew > 0) {
    FLEA_RETURN_IF_ERROR(w->add_kv(kExpertSkewKey, gguf::value_f32(static_cast<float>(o.expert_skew))));
  }
  for (const auto& t : plan) FLEA_RETURN_IF_ERROR(w->add_tensor({t.name, t.type, t.ne}));
  return ok_status();
}

// ---- expert skew (see synth.h) ------------------------------------------------------------------

// Rms of the embedding rows' shared component relative to their noise. Small: the shared part also
// biases the output logits, and at 0.4 greedy decoding of a 16-layer model falls into a loop of a few
// tokens; at 0.1 it varies as much as without the skew. The router gain below makes up for it (the
// price is per-token noise on the bias of relative size ~1 / (0.1 sqrt(n_embd))).
constexpr double kSkewEmbdShare = 0.1;

// The rms of the residual stream at layer il's FFN input, in embedding rms, is ~1 + 0.14 il in these
// synthetic models (measured at widths 256..1024: each block adds ~0.14, much of it a component all
// tokens share), so m's share of xn falls as 1 / (1 + 0.14 il); the router gain grows to match.
constexpr double kResidualGrowthPerLayer = 0.14;

Status validate_options(const SynthOptions& o) {
  char skew[32];
  std::snprintf(skew, sizeof skew, "%g", o.expert_skew);
  if (!std::isfinite(o.expert_skew) || o.expert_skew < 0) {
    return invalid_argument(std::string("expert skew ") + skew + ": must be a finite number >= 0");
  }
  if (o.expert_skew > 0 && o.shape.n_expert == 0) {
    return invalid_argument(std::string("expert skew ") + skew + " needs a mixture-of-experts shape (moe-tiny, "
                            "mixtral-8x7b, llama4-tiny, llama4-scout); shape " + o.shape.name + " is dense");
  }
  return ok_status();
}

// Element i of the norm weight `name` as TensorGen writes it (F32, one element per unit).
float norm_weight(uint64_t seed, const std::string& name, uint64_t i) {
  UnitRng rng(tensor_key(seed, name), i);
  return norm_from(normal_from(rng.next()));
}

// Sets the offsets of token_embd and of every MoE layer's router.
void add_expert_skew(const SynthOptions& o, std::vector<SynthTensor>* plan) {
  const SynthShape& s = o.shape;
  const int64_t E = s.n_embd, X = s.n_expert;
  auto tensor = [&](const std::string& name) -> SynthTensor& {
    auto it = std::find_if(plan->begin(), plan->end(), [&](const SynthTensor& t) { return t.name == name; });
    FLEA_CHECK(it != plan->end(), "no tensor " + name);
    return *it;
  };
  // The shared direction m, (E,), rms exactly 1.
  std::vector<double> m(static_cast<size_t>(E));
  const uint64_t m_key = tensor_key(o.seed, "flea.synth.skew_direction");
  double ss = 0;
  for (int64_t i = 0; i < E; ++i) {
    UnitRng rng(m_key, static_cast<uint64_t>(i));
    m[i] = normal_from(rng.next());
    ss += m[i] * m[i];
  }
  for (double& v : m) v *= std::sqrt(static_cast<double>(E) / ss);

  SynthTensor& embd = tensor("token_embd.weight");  // (n_vocab, E): every row + share * its rms * m
  embd.offset.resize(static_cast<size_t>(E));
  for (int64_t i = 0; i < E; ++i) embd.offset[i] = static_cast<float>(kSkewEmbdShare * embd.stddev * m[i]);

  double mean_log_rank = 0;  // centres z: the sigmoid gating of llama4 sees logits of the usual size
  for (int64_t k = 1; k <= X; ++k) mean_log_rank += std::log(static_cast<double>(k)) / static_cast<double>(X);
  for (int64_t il = 0; il < s.n_layer; ++il) {
    if (!s.is_moe_layer(il)) continue;
    const std::string p = "blk." + std::to_string(il) + ".";
    // v = (m * g) / |m * g|^2 for this layer's ffn_norm weight g, times 1 / (m's share of xn): the
    // shared part of xn then gives v . xn ~= 1, so expert e's logit moves by ~S * z_e.
    std::vector<double> v(static_cast<size_t>(E));
    double uu = 0;
    for (int64_t i = 0; i < E; ++i) {
      v[i] = m[i] * norm_weight(o.seed, p + "ffn_norm.weight", static_cast<uint64_t>(i));
      uu += v[i] * v[i];
    }
    const double inv_share = std::sqrt(1 + kSkewEmbdShare * kSkewEmbdShare) / kSkewEmbdShare *
                             (1 + kResidualGrowthPerLayer * static_cast<double>(il));
    // Expert e has popularity rank rank[e] + 1: a seeded permutation per layer.
    std::vector<int64_t> rank(static_cast<size_t>(X));
    for (int64_t e = 0; e < X; ++e) rank[e] = e;
    UnitRng rng(tensor_key(o.seed, p + "expert_rank"), 0);
    for (int64_t k = X - 1; k > 0; --k) std::swap(rank[k], rank[rng.next() % static_cast<uint64_t>(k + 1)]);
    SynthTensor& router = tensor(p + "ffn_gate_inp.weight");  // (X, E): row e scores expert e
    router.offset.resize(static_cast<size_t>(E * X));
    for (int64_t e = 0; e < X; ++e) {
      const double z = mean_log_rank - std::log(static_cast<double>(rank[e] + 1));
      for (int64_t i = 0; i < E; ++i) {
        router.offset[e * E + i] = static_cast<float>(o.expert_skew * z * inv_share * v[i] / uu);
      }
    }
  }
}

}  // namespace

// ---- public API ---------------------------------------------------------------------------------

std::vector<std::string> synth_preset_names() {
  std::vector<std::string> names;
  for (const auto& p : presets()) names.push_back(p.name);
  return names;
}

StatusOr<SynthShape> synth_preset(const std::string& name) {
  for (const auto& p : presets()) {
    if (p.name == name) return p;
  }
  std::string list;
  for (const auto& n : synth_preset_names()) list += (list.empty() ? "" : ", ") + n;
  return not_found("unknown shape '" + name + "' (presets: " + list + ")");
}

Status validate_shape(const SynthShape& s) {
  auto bad = [&](const char* field, int64_t v, const std::string& allowed) {
    return invalid_argument("shape " + s.name + ": " + field + " = " + std::to_string(v) + ", must be " + allowed);
  };
  if (s.n_embd <= 0 || s.n_embd % 32 != 0) return bad("n_embd", s.n_embd, "a positive multiple of 32");
  if (s.n_ff <= 0 || s.n_ff % 32 != 0) return bad("n_ff", s.n_ff, "a positive multiple of 32");
  if (s.n_layer <= 0 || s.n_layer > 4096) return bad("n_layer", s.n_layer, "in 1..4096");
  if (s.n_head <= 0 || s.n_embd % s.n_head != 0) return bad("n_head", s.n_head, "> 0 and divide n_embd");
  if (s.head_dim() % 2 != 0) return bad("head_dim", s.head_dim(), "even (RoPE rotates pairs)");
  if (s.n_head_kv <= 0 || s.n_head % s.n_head_kv != 0) {
    return bad("n_head_kv", s.n_head_kv, "> 0 and divide n_head");
  }
  if (s.n_vocab < 260 || s.n_vocab > (int64_t{1} << 24)) {
    return bad("n_vocab", s.n_vocab, "in 260..16777216 (3 special + 256 byte tokens + pieces)");
  }
  if (s.n_ctx <= 0 || s.n_ctx > (int64_t{1} << 24)) return bad("n_ctx", s.n_ctx, "in 1..16777216");
  if (!(s.rope_freq_base > 0.0) || !std::isfinite(s.rope_freq_base)) {
    return invalid_argument("shape " + s.name + ": rope_freq_base must be a positive number");
  }
  if (!(s.rms_eps > 0.0) || !(s.rms_eps < 1.0)) {
    return invalid_argument("shape " + s.name + ": rms_eps must be in (0, 1)");
  }
  if (s.n_expert < 0 || s.n_expert > 1024) return bad("n_expert", s.n_expert, "in 0..1024");
  if (s.n_expert > 0) {
    if (s.n_expert_used < 1 || s.n_expert_used > s.n_expert) return bad("n_expert_used", s.n_expert_used, "in 1..n_expert");
    if (s.n_ff_exp <= 0 || s.n_ff_exp % 32 != 0) return bad("n_ff_exp", s.n_ff_exp, "a positive multiple of 32");
    if (s.moe_every < 1) return bad("moe_every", s.moe_every, ">= 1");
    // A llama file has one feed_forward_length: Mixtral-style experts are that size.
    if (s.arch != "llama4" && s.n_ff_exp != s.n_ff) return bad("n_ff_exp", s.n_ff_exp, "n_ff for a llama MoE");
  }
  return ok_status();
}

StatusOr<FileType> parse_file_type(const std::string& name) {
  for (const auto& f : kFileTypes) {
    if (name == f.name) return f.type;
  }
  std::string list;
  for (const auto& n : file_type_names()) list += (list.empty() ? "" : ", ") + n;
  return invalid_argument("unknown file type '" + name + "' (allowed: " + list + ")");
}

const char* file_type_name(FileType t) { return ft_info(t).name; }

std::vector<std::string> file_type_names() {
  std::vector<std::string> names;
  for (const auto& f : kFileTypes) names.push_back(f.name);
  return names;
}

uint32_t llama_ftype_id(FileType t) { return ft_info(t).llama_ftype; }

std::vector<std::string> synth_vocab(int64_t n_vocab) {
  std::vector<std::string> v;
  v.reserve(static_cast<size_t>(std::max<int64_t>(n_vocab, 0)));
  auto push = [&](std::string s) {
    if (static_cast<int64_t>(v.size()) < n_vocab) v.push_back(std::move(s));
    return static_cast<int64_t>(v.size()) < n_vocab;
  };
  push("<unk>");
  push("<s>");
  push("</s>");
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    push(buf);
  }
  const std::string alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  push(kSpace);
  for (char c : alnum) push(std::string(kSpace) + c);
  for (char c : alnum) push(std::string(1, c));
  for (char c : std::string(".,!?'\"-:;()")) push(std::string(1, c));
  // Then every lowercase word of length 2, 3, ...: with the word-start marker, then without.
  for (int len = 2; static_cast<int64_t>(v.size()) < n_vocab; ++len) {
    for (int prefixed = 1; prefixed >= 0 && static_cast<int64_t>(v.size()) < n_vocab; --prefixed) {
      std::vector<int> idx(static_cast<size_t>(len), 0);
      while (true) {
        std::string s = prefixed ? kSpace : "";
        for (int i : idx) s += static_cast<char>('a' + i);
        if (!push(std::move(s))) break;
        int k = len - 1;
        while (k >= 0 && ++idx[static_cast<size_t>(k)] == 26) idx[static_cast<size_t>(k--)] = 0;
        if (k < 0) break;
      }
    }
  }
  return v;
}

StatusOr<std::vector<SynthTensor>> synth_tensor_plan(const SynthShape& s, FileType ft) {
  FLEA_RETURN_IF_ERROR(validate_shape(s));
  std::vector<SynthTensor> plan;
  int64_t n_down = 0;  // tensors llama.cpp's ffn_down rules count
  for (int64_t il = 0; il < s.n_layer; ++il) n_down += s.is_moe_layer(il) ? 1 + (s.shared_expert ? 1 : 0) : 1;
  auto add = [&](std::string name, Role role, int64_t layer, std::vector<int64_t> ne) -> Status {
    FLEA_ASSIGN_OR_RETURN(GgmlType type, choose_type(s, ft, role, layer, n_down, ne[0]));
    SynthTensor t;
    t.name = std::move(name);
    t.type = type;
    t.is_norm = role == Role::kNorm;
    if (role == Role::kTokenEmbd) {
      // Untied: N(0, 1) like the reference models. Tied: the same matrix makes the logits, so it
      // gets the 1/sqrt(fan_in) of an output matrix.
      t.stddev = s.tied ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.n_embd))) : 1.0f;
    } else if (role == Role::kBias) {
      t.stddev = 0.1f;  // small next to the projections they are added to
    } else if (role != Role::kNorm && role != Role::kRopeFreqs) {
      t.stddev = static_cast<float>(1.0 / std::sqrt(static_cast<double>(ne[0])));
    }
    t.ne = std::move(ne);
    plan.push_back(std::move(t));
    return ok_status();
  };
  const int64_t e = s.n_embd, ekv = s.n_embd_kv(), ff = s.n_ff;
  // File order of llama.cpp's files: globals, then each block's tensors, both sorted by name.
  if (!s.tied) FLEA_RETURN_IF_ERROR(add("output.weight", Role::kOutput, -1, {e, s.n_vocab}));
  FLEA_RETURN_IF_ERROR(add("output_norm.weight", Role::kNorm, -1, {e}));
  if (s.rope_scaling_factor > 0) {
    FLEA_RETURN_IF_ERROR(add("rope_freqs.weight", Role::kRopeFreqs, -1, {s.head_dim() / 2}));
    plan.back().values = rope_freq_factors(s);
  }
  FLEA_RETURN_IF_ERROR(add("token_embd.weight", Role::kTokenEmbd, -1, {e, s.n_vocab}));
  for (int64_t il = 0; il < s.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    if (s.qkv_bias) FLEA_RETURN_IF_ERROR(add(p + "attn_k.bias", Role::kBias, il, {ekv}));
    FLEA_RETURN_IF_ERROR(add(p + "attn_k.weight", Role::kAttnK, il, {e, ekv}));
    FLEA_RETURN_IF_ERROR(add(p + "attn_norm.weight", Role::kNorm, il, {e}));
    FLEA_RETURN_IF_ERROR(add(p + "attn_output.weight", Role::kAttnOut, il, {e, e}));
    if (s.qkv_bias) FLEA_RETURN_IF_ERROR(add(p + "attn_q.bias", Role::kBias, il, {e}));
    FLEA_RETURN_IF_ERROR(add(p + "attn_q.weight", Role::kAttnQ, il, {e, e}));
    if (s.qkv_bias) FLEA_RETURN_IF_ERROR(add(p + "attn_v.bias", Role::kBias, il, {ekv}));
    FLEA_RETURN_IF_ERROR(add(p + "attn_v.weight", Role::kAttnV, il, {e, ekv}));
    if (s.is_moe_layer(il)) {  // names sorted: *_exps, *_shexp, ffn_gate_inp among them
      const int64_t fx = s.n_ff_exp, x = s.n_expert;
      FLEA_RETURN_IF_ERROR(add(p + "ffn_down_exps.weight", Role::kFfnDown, il, {fx, e, x}));
      if (s.shared_expert) FLEA_RETURN_IF_ERROR(add(p + "ffn_down_shexp.weight", Role::kFfnDown, il, {fx, e}));
      FLEA_RETURN_IF_ERROR(add(p + "ffn_gate_exps.weight", Role::kFfnGate, il, {e, fx, x}));
      FLEA_RETURN_IF_ERROR(add(p + "ffn_gate_inp.weight", Role::kRouter, il, {e, x}));
      if (s.shared_expert) FLEA_RETURN_IF_ERROR(add(p + "ffn_gate_shexp.weight", Role::kFfnGate, il, {e, fx}));
      FLEA_RETURN_IF_ERROR(add(p + "ffn_norm.weight", Role::kNorm, il, {e}));
      FLEA_RETURN_IF_ERROR(add(p + "ffn_up_exps.weight", Role::kFfnUp, il, {e, fx, x}));
      if (s.shared_expert) FLEA_RETURN_IF_ERROR(add(p + "ffn_up_shexp.weight", Role::kFfnUp, il, {e, fx}));
    } else {
      FLEA_RETURN_IF_ERROR(add(p + "ffn_down.weight", Role::kFfnDown, il, {ff, e}));
      FLEA_RETURN_IF_ERROR(add(p + "ffn_gate.weight", Role::kFfnGate, il, {e, ff}));
      FLEA_RETURN_IF_ERROR(add(p + "ffn_norm.weight", Role::kNorm, il, {e}));
      FLEA_RETURN_IF_ERROR(add(p + "ffn_up.weight", Role::kFfnUp, il, {e, ff}));
    }
  }
  return plan;
}

std::vector<float> rope_freq_factors(const SynthShape& s) {
  const int64_t hd = s.head_dim();
  const double low_wavelen = static_cast<double>(s.rope_original_ctx) / s.rope_low_freq_factor;
  const double high_wavelen = static_cast<double>(s.rope_original_ctx) / s.rope_high_freq_factor;
  std::vector<float> f;
  for (int64_t i = 0; i < hd / 2; ++i) {
    const double wavelen = 2 * M_PI * std::pow(s.rope_freq_base, static_cast<double>(2 * i) / static_cast<double>(hd));
    double factor;
    if (wavelen < high_wavelen) {
      factor = 1.0;
    } else if (wavelen > low_wavelen) {
      factor = s.rope_scaling_factor;
    } else if (s.rope_high_freq_factor == s.rope_low_freq_factor) {
      factor = s.rope_scaling_factor;  // an empty blending band
    } else {
      const double smooth = (static_cast<double>(s.rope_original_ctx) / wavelen - s.rope_low_freq_factor) /
                            (s.rope_high_freq_factor - s.rope_low_freq_factor);
      factor = 1.0 / ((1 - smooth) / s.rope_scaling_factor + smooth);
    }
    f.push_back(static_cast<float>(factor));
  }
  return f;
}

StatusOr<VocabSource> read_vocab_source(const std::string& path) {
  FLEA_ASSIGN_OR_RETURN(gguf::File f, gguf::read_file(path));
  VocabSource v;
  v.path = path;
  for (const gguf::KeyValue& kv : f.kv)
    if (kv.key.rfind("tokenizer.", 0) == 0) v.kvs.emplace_back(kv.key, kv.value);
  const gguf::Value* tokens = f.find("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->type != gguf::ValueType::ARRAY || tokens->array_type != gguf::ValueType::STRING)
    return invalid_argument(path + ": --vocab file has no tokenizer.ggml.tokens string array");
  v.n_tokens = static_cast<int64_t>(tokens->array_size());
  return v;
}

StatusOr<uint64_t> synth_planned_bytes(const SynthOptions& o) {
  FLEA_RETURN_IF_ERROR(validate_options(o));
  FLEA_ASSIGN_OR_RETURN(std::vector<SynthTensor> plan, synth_tensor_plan(o.shape, o.file_type));
  gguf::Writer w;
  FLEA_RETURN_IF_ERROR(build_layout(o, plan, &w));
  return w.file_bytes();
}

Status synth_model(const SynthOptions& o, const ProgressFn& progress) {
  if (o.out_path.empty()) return invalid_argument("synth: no output path");
  FLEA_RETURN_IF_ERROR(validate_options(o));
  FLEA_ASSIGN_OR_RETURN(std::vector<SynthTensor> plan, synth_tensor_plan(o.shape, o.file_type));
  if (o.expert_skew > 0) add_expert_skew(o, &plan);
  gguf::Writer w;
  FLEA_RETURN_IF_ERROR(build_layout(o, plan, &w));

  std::vector<TensorGen> gens(plan.size());
  struct Chunk { size_t tensor; uint64_t first, n; };
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < plan.size(); ++i) {
    gens[i].init(plan[i], o.seed);
    const uint64_t per = std::max<uint64_t>(1, kChunkBytes / gens[i].unit_bytes);
    for (uint64_t u = 0; u < gens[i].n_units; u += per) {
      chunks.push_back({i, u, std::min(per, gens[i].n_units - u)});
    }
  }
  const uint64_t total = w.file_bytes();
  FLEA_RETURN_IF_ERROR(w.open(o.out_path));

  // Generator threads fill batch b+1 while this thread writes batch b (double buffering).
  const size_t n_gen = static_cast<size_t>(std::max(1, o.threads));
  std::vector<std::vector<uint8_t>> bufs(2 * n_gen, std::vector<uint8_t>(kChunkBytes + 256));
  auto gen_chunk = [&](size_t c, uint8_t* out) {
    const Chunk& ch = chunks[c];
    gens[ch.tensor].fill(ch.first, ch.n, out);
  };
  auto launch = [&](size_t batch) {
    std::vector<std::future<void>> fs;
    const size_t slot = (batch % 2) * n_gen;
    for (size_t k = 0; k < n_gen; ++k) {
      const size_t c = batch * n_gen + k;
      if (c >= chunks.size()) break;
      uint8_t* out = bufs[slot + k].data();
      if (o.threads <= 0) {
        gen_chunk(c, out);
      } else {
        fs.push_back(std::async(std::launch::async, gen_chunk, c, out));
      }
    }
    return fs;
  };
  const auto t0 = std::chrono::steady_clock::now();
  const size_t n_batches = (chunks.size() + n_gen - 1) / n_gen;
  std::vector<std::future<void>> pending = launch(0);
  for (size_t b = 0; b < n_batches; ++b) {
    for (auto& f : pending) f.get();
    if (o.cancel != nullptr && o.cancel->load()) return cancelled("cancelled; " + o.out_path + " not written");
    pending = b + 1 < n_batches ? launch(b + 1) : std::vector<std::future<void>>{};
    const size_t slot = (b % 2) * n_gen;
    for (size_t k = 0; k < n_gen; ++k) {
      const size_t c = b * n_gen + k;
      if (c >= chunks.size()) break;
      const Chunk& ch = chunks[c];
      Status st = w.write(bufs[slot + k].data(), ch.n * gens[ch.tensor].unit_bytes);
      if (!st.ok()) {
        for (auto& f : pending) f.wait();
        return st;
      }
    }
    if (progress) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      progress({w.bytes_written(), total, s});
    }
  }
  FLEA_RETURN_IF_ERROR(w.finish());
  if (progress) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress({total, total, s});
  }
  return ok_status();
}

}  // namespace flea::synth
