// libFuzzer target: the GGUF header reader and the LLaMA hyperparameter validation on arbitrary
// bytes. Any crash, sanitizer report, or allocation beyond -rss_limit_mb is a bug.
#include <cstddef>
#include <cstdint>

#include "gguf/gguf.h"
#include "model/llama.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = flea::gguf::read_memory(data, size, "fuzz.gguf");
  if (!f.ok()) return 0;
  // Every accepted tensor lies inside the input and the typed accessors are safe on any key.
  for (const auto& t : f->tensors) {
    if (t.file_offset + t.n_bytes > size) __builtin_trap();
  }
  for (const auto& kv : f->kv) {
    (void)f->get_int(kv.key);
    (void)f->get_float(kv.key);
    (void)kv.value.to_display_string();
  }
  auto hp = flea::llama_hparams(*f);
  if (hp.ok()) {
    auto layout = flea::model_layout(*f, static_cast<int>(hp->n_layer));
    (void)layout;
  }
  return 0;
}
