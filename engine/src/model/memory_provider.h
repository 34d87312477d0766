// The simplest WeightProvider: the whole file in one host buffer (tests, fuzzing, tiny models).
// Real runs go through residency/ (full, transient, auto over the I/O backends).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/llama.h"

namespace flea {

class MemoryProvider : public WeightProvider {
 public:
  // Reads every byte of model.file.path into memory.
  static StatusOr<std::unique_ptr<MemoryProvider>> load(const Model& model);

  const uint8_t* global(GlobalTensor t) override;
  StatusOr<LayerWeights> acquire(int il) override;
  void release(int) override {}
  std::string name() const override { return "memory"; }

 private:
  MemoryProvider(const Model& model) : model_(model) {}
  const Model& model_;
  std::unique_ptr<uint8_t, void (*)(void*)> bytes_{nullptr, nullptr};
};

}  // namespace flea
