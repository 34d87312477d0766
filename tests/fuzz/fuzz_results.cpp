// libFuzzer target: results files handed to `run_lab_harness merge`. Any input must end in a
// parsed shard or a Status error, and merging what parsed in a Status or a merged document that
// serializes, never a crash, hang or exception. A NUL byte splits the input into two files, so
// the cross-file checks (scenario, fingerprint, revision, duplicate index, run overlap) run too.
#include <cstdint>
#include <string>
#include <vector>

#include "merge.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> texts;
  const size_t nul = input.find('\0');
  if (nul == std::string::npos) {
    texts.push_back(input);
  } else {
    texts.push_back(input.substr(0, nul));
    texts.push_back(input.substr(nul + 1));
  }
  try {
    std::vector<flea::harness::ShardFile> shards;
    for (size_t i = 0; i < texts.size(); ++i) {
      auto s = flea::harness::parse_shard_file("in" + std::to_string(i) + ".json", texts[i]);
      if (s.ok()) shards.push_back(std::move(*s));
    }
    if (shards.empty()) return 0;
    for (bool allow : {false, true}) {
      auto m = flea::harness::merge_shards(shards, {allow, "20260101T000000Z"});
      if (m.ok()) (void)m->merged.dump(1);
    }
    // One file twice: the duplicate-index error path.
    shards.push_back(shards.front());
    auto dup = flea::harness::merge_shards(shards, {false, "20260101T000000Z"});
    if (dup.ok()) __builtin_trap();
  } catch (...) {
    __builtin_trap();  // parse and merge promise a Status, not an exception
  }
  return 0;
}
