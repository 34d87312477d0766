// Scenario files: one declarative key table drives YAML parsing, `--help-keys` and every error
// message (`scenarios/x.yaml:12:3: unknown key 'prefech' (did you mean 'prefetch'?)`).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "flea/status.h"

namespace flea::harness {

using Json = nlohmann::ordered_json;

enum class KeyType { kString, kInt, kFloat, kBool, kEnum, kPath, kMapList, kMap, kPointList };

struct KeySpec {
  std::string name;
  KeyType type = KeyType::kString;
  Json default_value;              // null = no default (optional)
  std::vector<std::string> allowed;  // kEnum
  double min = 0, max = 0;         // kInt / kFloat, inclusive
  bool sweepable = false;          // a list of values expands the sweep
  std::string help;
  const std::vector<KeySpec>* children = nullptr;  // kMapList / kMap entries
};

// The tables (top level, one `baselines:` entry, one `claims:` entry, `ceilings:`, profile files, `serve:`).
const std::vector<KeySpec>& scenario_keys();
const std::vector<KeySpec>& baseline_keys();
const std::vector<KeySpec>& claim_keys();
const std::vector<KeySpec>& ceiling_keys();
const std::vector<KeySpec>& profile_keys();
const std::vector<KeySpec>& serve_keys();

// `--help-keys`: every key with its type, default, allowed values and help.
std::string help_keys_text();

// Levenshtein distance, for "did you mean".
int edit_distance(const std::string& a, const std::string& b);
// The closest name within distance 2 (or a prefix match), "" if none.
std::string suggest(const std::string& word, const std::vector<KeySpec>& table);

// A YAML document parsed against a table: `value` has every key of the table (defaults filled in;
// sweepable keys are arrays when written as lists), `requested` what the file said.
struct ParsedDoc {
  Json value;
  Json requested;
};

// Parses `text` (named `file` in errors) against `table`. Every problem is one line
// `file:line:col: message`; all of them are returned joined by '\n' in one kInvalidArgument.
StatusOr<ParsedDoc> parse_yaml_doc(const std::string& file, const std::string& text,
                                   const std::vector<KeySpec>& table);

struct Scenario {
  std::string path;       // as given
  std::string dir;        // directory of the file: relative paths in it resolve against this
  std::string name;
  std::string sha256;
  Json requested;         // as written
  Json settings;          // every key, defaults filled in
};

StatusOr<Scenario> load_scenario(const std::string& path);

// `${VAR}`, `${VAR:-default}` and `$VAR` expansion; then relative → joined onto base_dir.
std::string expand_path(const std::string& text, const std::string& base_dir);

// Keys that describe one run point (sweepable), in table order.
std::vector<std::string> point_keys();

}  // namespace flea::harness
