// libFuzzer target: scenario and hardware-profile YAML as people write it by hand. Any input must
// end in a parsed document or a Status error, never a crash, hang or exception.
#include <cstdint>
#include <string>

#include "profile.h"
#include "scenario.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto doc = flea::harness::parse_yaml_doc("fuzz.yaml", text, flea::harness::scenario_keys());
    (void)doc;
    auto prof = flea::harness::parse_profile("fuzz.yaml", text);
    (void)prof;
  } catch (...) {
    __builtin_trap();  // the parsers promise a Status, not an exception
  }
  return 0;
}
