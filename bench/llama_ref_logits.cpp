// llama_ref_logits: llama.cpp's logits for a list of token ids, the way ../shared/reference made its
// oracle (one llama_decode batch over the whole prompt, F32 K/V cache, flash attention off, CPU),
// writing the last `--rows` rows as float32 — for cases the shared reference does not cover (e.g. a
// Llama 4 prompt longer than one attention chunk). Built against a llama.cpp build of the 2025-09+
// API (flash_attn_type), e.g. the 2026 snapshot scripts/build_baselines.sh builds:
//
//   D=~/.cache/flea-baselines/llama.cpp-d32676d77426-noamx
//   g++ -O2 -std=c++17 bench/llama_ref_logits.cpp -I$D/include -I$D/ggml/include -L$D/build/bin \
//       -lllama -lggml -lggml-base -Wl,-rpath,$D/build/bin -o build/llama_ref_logits
//   build/llama_ref_logits MODEL.gguf IDS.txt OUT.f32 [--rows N] [--threads N]
//
// IDS.txt: token ids separated by commas or whitespace. Exit 2 on bad arguments, 1 on llama.cpp errors.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

namespace {

int usage(const char* why) {
  std::fprintf(stderr, "llama_ref_logits: %s\nusage: llama_ref_logits MODEL.gguf IDS.txt OUT.f32 [--rows N] [--threads N]\n", why);
  return 2;
}

bool read_ids(const std::string& path, std::vector<llama_token>* ids) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  for (char& c : text)
    if (c == ',') c = ' ';
  std::istringstream is(text);
  long v;
  while (is >> v) ids->push_back(static_cast<llama_token>(v));
  return is.eof() && !ids->empty();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage("three arguments needed");
  const std::string model_path = argv[1], ids_path = argv[2], out_path = argv[3];
  int rows = 1, threads = 1;
  for (int i = 4; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--rows" || a == "--threads") && i + 1 < argc) {
      const int v = std::atoi(argv[++i]);
      if (v < 1) return usage((a + " must be >= 1").c_str());
      (a == "--rows" ? rows : threads) = v;
    } else {
      return usage(("unknown argument '" + a + "'").c_str());
    }
  }
  std::vector<llama_token> ids;
  if (!read_ids(ids_path, &ids)) return usage(("cannot read token ids from '" + ids_path + "'").c_str());
  if (rows > static_cast<int>(ids.size())) rows = static_cast<int>(ids.size());

  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(model_path.c_str(), mp);
  if (model == nullptr) {
    std::fprintf(stderr, "llama_ref_logits: cannot load '%s'\n", model_path.c_str());
    return 1;
  }
  const int n = static_cast<int>(ids.size());
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(n);
  cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(n);
  cp.n_seq_max = 1;
  cp.n_threads = cp.n_threads_batch = threads;
  cp.type_k = cp.type_v = GGML_TYPE_F32;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.swa_full = true;  // every position kept: the chunked mask alone decides what a query sees
  llama_context* ctx = llama_init_from_model(model, cp);
  if (ctx == nullptr) {
    std::fprintf(stderr, "llama_ref_logits: cannot create a context of %d positions\n", n);
    return 1;
  }
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  llama_batch batch = llama_batch_init(n, 0, 1);
  for (int i = 0; i < n; ++i) {
    batch.token[i] = ids[static_cast<size_t>(i)];
    batch.pos[i] = i;
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = i >= n - rows;
  }
  batch.n_tokens = n;
  if (llama_decode(ctx, batch) != 0) {
    std::fprintf(stderr, "llama_ref_logits: llama_decode failed\n");
    return 1;
  }
  std::vector<float> out;
  for (int i = n - rows; i < n; ++i) {
    const float* l = llama_get_logits_ith(ctx, i);
    out.insert(out.end(), l, l + n_vocab);
  }
  std::FILE* f = std::fopen(out_path.c_str(), "wb");
  if (f == nullptr || std::fwrite(out.data(), sizeof(float), out.size(), f) != out.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "llama_ref_logits: cannot write '%s'\n", out_path.c_str());
    return 1;
  }
  std::printf("{\"tokens\": %d, \"rows\": %d, \"n_vocab\": %d}\n", n, rows, n_vocab);
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
