// The results record on disk: written atomically (temp file + fsync + rename + directory fsync)
// after every finished run, and the Chrome trace (open in Perfetto) beside it.
#pragma once

#include <string>
#include <vector>

#include "flea/status.h"
#include "scenario.h"

namespace flea::harness {

Status write_file_atomic(const std::string& path, const std::string& data);

// Chrome trace events for one run: the engine's own trace events re-homed under pid = run
// number, else spans synthesized from the run's layers[] (load on tid 1 "io", compute on tid 2).
Json trace_events_for_run(int pid, const Json& rec, const Json& engine_trace);

// "<scenario>-YYYYmmddTHHMMSSZ-<4 hex>"
std::string make_run_id(const std::string& scenario_name);

}  // namespace flea::harness
