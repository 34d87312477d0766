// flea inspect M.gguf: metadata, tensor table and per-layer byte totals; --json for tools.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "gguf/gguf.h"
#include "model/llama.h"

namespace {

std::string layer_of(const std::string& name) {
  int il = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &il) == 1) return "blk." + std::to_string(il);
  return "global";
}

nlohmann::json value_json(const flea::gguf::Value& v) {
  using flea::gguf::ValueType;
  switch (v.type) {
    case ValueType::STRING: return v.s;
    case ValueType::FLOAT32: case ValueType::FLOAT64: return v.f;
    case ValueType::BOOL: return v.i != 0;
    case ValueType::UINT64: return v.u;
    case ValueType::ARRAY: {
      if (v.array_type == ValueType::STRING) return v.arr_str;
      if (v.array_type == ValueType::FLOAT32 || v.array_type == ValueType::FLOAT64) return v.arr_float;
      return v.arr_int;
    }
    default: return v.i;
  }
}

int cmd_inspect(int argc, char** argv) {
  CLI::App app("Print a GGUF file's metadata, tensor table and per-layer byte totals.", "flea inspect");
  std::string path;
  bool json = false, full_arrays = false;
  app.add_option("model", path, "GGUF file")->required();
  app.add_flag("--json", json, "machine-readable output (metadata, tensors, layers)");
  app.add_flag("--full-arrays", full_arrays, "with --json: print whole metadata arrays (vocabularies)");
  if (int rc = flea::cli::parse_or_exit(app, argc, argv); rc >= 0) return rc;
  auto file = flea::gguf::read_file(path);
  if (!file.ok()) {
    std::fprintf(stderr, "flea inspect: %s\n", file.status().message().c_str());
    return flea::cli::kExitUsage;
  }
  const auto& f = *file;
  std::map<std::string, uint64_t> layer_bytes;
  for (const auto& t : f.tensors) layer_bytes[layer_of(t.name)] += t.n_bytes;
  auto hp = flea::llama_hparams(f);

  if (json) {
    nlohmann::json j;
    j["path"] = f.path;
    j["version"] = f.version;
    j["file_bytes"] = f.file_size;
    j["alignment"] = f.alignment;
    j["data_offset"] = f.data_offset;
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& kv : f.kv) {
      if (kv.value.type == flea::gguf::ValueType::ARRAY && !full_arrays) {
        meta[kv.key] = {{"array_type", flea::gguf::value_type_name(kv.value.array_type)},
                        {"length", kv.value.array_size()}};
      } else {
        meta[kv.key] = value_json(kv.value);
      }
    }
    j["metadata"] = meta;
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : f.tensors) {
      std::vector<int64_t> shape(t.ne.begin(), t.ne.begin() + t.n_dims);
      tensors.push_back({{"name", t.name}, {"type", flea::type_info(t.type).name}, {"shape", shape},
                         {"n_bytes", t.n_bytes}, {"file_offset", t.file_offset}});
    }
    j["tensors"] = tensors;
    j["layers"] = layer_bytes;
    j["llama"] = hp.ok() ? nlohmann::json(flea::describe(*hp)) : nlohmann::json(nullptr);
    if (!hp.ok()) j["llama_error"] = hp.status().message();
    std::printf("%s\n", j.dump(1).c_str());
    return flea::cli::kExitOk;
  }

  std::printf("file:        %s\n", f.path.c_str());
  std::printf("gguf:        v%u, %llu bytes, alignment %llu, data at %llu\n", f.version,
              (unsigned long long)f.file_size, (unsigned long long)f.alignment,
              (unsigned long long)f.data_offset);
  std::printf("llama:       %s\n", hp.ok() ? flea::describe(*hp).c_str() : hp.status().message().c_str());
  std::printf("\nmetadata (%zu keys):\n", f.kv.size());
  for (const auto& kv : f.kv) {
    std::printf("  %-44s %-8s %s\n", kv.key.c_str(), flea::gguf::value_type_name(kv.value.type),
                kv.value.to_display_string().c_str());
  }
  std::printf("\ntensors (%zu):\n  %-32s %-6s %-22s %14s %12s\n", f.tensors.size(), "name", "type",
              "shape", "offset", "bytes");
  for (const auto& t : f.tensors) {
    std::string shape;
    for (uint32_t d = 0; d < t.n_dims; ++d) shape += (d ? " x " : "") + std::to_string(t.ne[d]);
    std::printf("  %-32s %-6s %-22s %14llu %12llu\n", t.name.c_str(), flea::type_info(t.type).name,
                shape.c_str(), (unsigned long long)t.file_offset, (unsigned long long)t.n_bytes);
  }
  std::printf("\nbytes per layer:\n");
  uint64_t total = 0;
  for (const auto& [name, bytes] : layer_bytes) {
    std::printf("  %-10s %14llu (%.2f MiB)\n", name.c_str(), (unsigned long long)bytes, bytes / 1048576.0);
    total += bytes;
  }
  std::printf("  %-10s %14llu (%.2f MiB)\n", "total", (unsigned long long)total, total / 1048576.0);
  return flea::cli::kExitOk;
}

}  // namespace

FLEA_REGISTER_COMMAND(inspect, "print a GGUF file's metadata, tensor table and per-layer bytes", cmd_inspect);
