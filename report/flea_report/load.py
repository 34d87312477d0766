"""Load a results file and check it against results/FORMAT.md (schema_version 1).

Only what the report, gate and PR attachment rely on is checked, so a file that passes here can be
read without further type checks. Optional figures may be missing or null; a value of the wrong type
is an error. Every error is one line: `<file>: <where>: <what is wrong>`.
"""
import json
import math
import os

from .fields import is_number

SCHEMA_VERSION = 1
RUN_STATUSES = ("ok", "failed", "skipped")

# Declarative type table for one run: dotted path -> expected kind. Missing or null is always
# allowed here; required keys are listed separately. Parent dicts, when present, must be dicts.
NUM, STR, BOOL, DICT, NUM_LIST, DICT_LIST = "number", "string", "boolean", "object", \
    "list of numbers", "list of objects"
RUN_REQUIRED = ("id", "point", "status")
RUN_FIELDS = {
    "id": STR, "point": DICT, "status": STR, "error": STR, "engine": STR,
    "model": DICT, "model.path": STR, "model.file_bytes": NUM, "model.file_type": STR,
    "model.n_layer": NUM,
    "samples_ns": DICT, "samples_ns.pp": NUM_LIST, "samples_ns.tg": NUM_LIST,
    "summary": DICT, "summary.tg_ms_per_token": DICT,
    "summary.tg_ms_per_token.median": NUM, "summary.tg_ms_per_token.p95": NUM,
    "summary.tg_ms_per_token.p99": NUM, "summary.tg_ms_per_token.min": NUM,
    "summary.tg_ms_per_token.max": NUM, "summary.tg_ms_per_token.mad": NUM,
    "summary.pp_tok_s": NUM, "summary.tg_tok_s": NUM,
    "io": DICT, "io.read_bytes": NUM, "io.read_bytes_per_token": NUM, "io.read_gb_s": NUM,
    "io.fraction_of_fio": NUM, "io.stall_ns": NUM, "io.stall_fraction": NUM,
    "io.prefetch_hits": NUM, "io.prefetch_misses": NUM,
    "memory": DICT, "memory.peak_rss_mb": NUM, "memory.peak_vram_mb": NUM,
    "layers": DICT_LIST,
    "predicted": DICT, "predicted.ms_per_token": NUM, "predicted.floor_ms_per_token": NUM,
    "predicted.bound": STR,
    "vs_floor": DICT, "vs_floor.ratio": NUM, "vs_floor.below_floor": BOOL,
    "baseline": DICT, "baseline.engine": STR, "baseline.tg_tok_s": NUM, "baseline.ratio": NUM,
    "correctness": DICT, "correctness.reference": STR, "correctness.reference_commit": STR,
    "correctness.nmse": NUM, "correctness.max_abs": NUM, "correctness.top1_agreement": NUM,
    "correctness.kl": NUM, "correctness.tolerance": DICT, "correctness.tolerance.nmse": NUM,
    "correctness.tolerance.top1": NUM, "correctness.passed": BOOL,
    # Mixture-of-experts residency: the engine's figures and the plan's (null for dense models).
    "model.expert_skew": NUM,
    "experts": DICT, "experts.residency": STR, "experts.policy": STR, "experts.layers": NUM,
    "experts.cache_per_layer": NUM, "experts.predicted_hit_rate": NUM, "experts.hits": NUM,
    "experts.misses": NUM, "experts.hit_rate": NUM, "experts.expert_read_bytes": NUM,
    "experts.experts_read_per_token": NUM, "experts.expert_bytes_per_token": NUM,
    "experts.per_layer": DICT_LIST,
    "plan": DICT, "plan.streamed_bytes_per_token": NUM, "plan.experts": DICT,
    "plan.experts.residency": STR, "plan.experts.policy": STR, "plan.experts.n_expert": NUM,
    "plan.experts.n_expert_used": NUM, "plan.experts.layers": NUM,
    "plan.experts.cache_per_layer": NUM, "plan.experts.dense_bytes_per_token": NUM,
    "plan.experts.expert_bytes_per_token": NUM, "plan.experts.predicted_hit_rate": NUM,
}
CONTEXT_FIELDS = {
    "schema_version": NUM, "run_id": STR, "time": STR, "scenario": DICT, "scenario.name": STR,
    "host": DICT, "host.hostname": STR, "gpu": DICT, "build": DICT, "build.git_rev": STR,
    "build.git_dirty": BOOL, "build.build_type": STR, "profile": DICT, "profile.name": STR,
    "warnings": "list of strings", "reference_commit": STR,
}
CEILING_FIO_FIELDS = {"path": STR, "io": STR, "read_gb_s": NUM, "samples_gb_s": NUM_LIST,
                      "cache_dropped": BOOL, "block_bytes": NUM, "iodepth": NUM}


class ResultsError(Exception):
    """Bad input: the message is one line naming the file and what is wrong."""


def _kind_ok(value, kind):
    if kind == NUM:
        return is_number(value)
    if kind == STR:
        return isinstance(value, str)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == DICT:
        return isinstance(value, dict)
    if kind == NUM_LIST:
        return isinstance(value, list) and all(is_number(v) for v in value)
    if kind == DICT_LIST:
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    if kind == "list of strings":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    raise ValueError(kind)


def _describe(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number" if is_number(value) else f"non-finite number {value}"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__ if not isinstance(value, str) else f"string {value!r:.40}"


def _lookup(obj, dotted):
    """(found, value) for a dotted path; found is False when a step is missing or null."""
    cur = obj
    for key in dotted.split("."):
        if not isinstance(cur, dict) or cur.get(key) is None:
            return False, None
        cur = cur[key]
    return True, cur


def check_fields(obj, table, where):
    """First type error in obj per the table as 'where.path: expected K, got V', else None."""
    for path, kind in table.items():
        found, value = _lookup(obj, path)
        if found and not _kind_ok(value, kind):
            return f"{where}{path}: expected {kind}, got {_describe(value)}"
    return None


def _check_run(run, index):
    where = f"runs[{index}]"
    if not isinstance(run, dict):
        return f"{where}: expected object, got {_describe(run)}"
    for key in RUN_REQUIRED:
        if run.get(key) is None:
            return f"{where}: missing required key '{key}'"
    where = f"runs[{index}] (id {run['id']!r:.40})." if isinstance(run["id"], str) else where + "."
    problem = check_fields(run, RUN_FIELDS, where)
    if problem:
        return problem
    if run["status"] not in RUN_STATUSES:
        return f"{where}status: {run['status']!r} is not one of {', '.join(RUN_STATUSES)}"
    if run["status"] == "failed" and not isinstance(run.get("error"), str):
        return f"{where}error: a failed run needs an error string"
    return None


def _check_top(doc):
    if not isinstance(doc, dict):
        return f"top level: expected object, got {_describe(doc)}"
    for key in ("context", "runs"):
        if key not in doc:
            return f"missing top-level key '{key}' (file incomplete or not a results file)"
    if not isinstance(doc["context"], dict):
        return f"context: expected object, got {_describe(doc['context'])}"
    version = doc["context"].get("schema_version")
    if version is None:
        return "context.schema_version: missing"
    if version != SCHEMA_VERSION:
        return f"context.schema_version: {version!r} is not supported (this tool reads {SCHEMA_VERSION})"
    problem = check_fields(doc["context"], CONTEXT_FIELDS, "context.")
    if problem:
        return problem
    if not isinstance(doc["runs"], list):
        return f"runs: expected list, got {_describe(doc['runs'])}"
    ceilings = doc.get("ceilings")
    if ceilings is not None:
        if not isinstance(ceilings, dict):
            return f"ceilings: expected object, got {_describe(ceilings)}"
        fio = ceilings.get("fio")
        if fio is not None and not _kind_ok(fio, DICT_LIST):
            return "ceilings.fio: expected list of objects"
        for i, entry in enumerate(fio or []):
            problem = check_fields(entry, CEILING_FIO_FIELDS, f"ceilings.fio[{i}].")
            if problem:
                return problem
        for key in ("memory_bw_gb_s",):
            if ceilings.get(key) is not None and not is_number(ceilings[key]):
                return f"ceilings.{key}: expected number, got {_describe(ceilings[key])}"
    status = doc.get("status")
    if status is not None and not isinstance(status, dict):
        return f"status: expected object, got {_describe(status)}"
    return None


def _json_error_message(err, text):
    truncated = not text.rstrip().endswith(("}", "]"))
    hint = " (the document ends early: truncated or partial write?)" if truncated else ""
    return f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}{hint}"


class _BadNumber(ValueError):
    """A number no results file can hold: raised from the JSON parser's hooks."""


# Integers beyond float range cannot be compared or plotted (math.isfinite raises on them), and
# Python refuses to parse integers of more than ~4300 digits at all.
_MAX_INT_DIGITS = 308


def _parse_int(literal):
    digits = literal.lstrip("-")
    if len(digits) > _MAX_INT_DIGITS:
        raise _BadNumber(f"integer {literal[:12]}... ({len(digits)} digits) is out of range")
    return int(literal)


def _parse_float(literal):
    value = float(literal)
    if not math.isfinite(value):
        raise _BadNumber(f"number {literal[:24]} is out of range (overflows to infinity)")
    return value


def _parse_constant(literal):
    raise _BadNumber(f"{literal} is not valid JSON (non-finite numbers are written as null)")


def parse_results(text, name):
    """Parse and check results JSON text; raises ResultsError('<name>: ...')."""
    if not text.strip():
        raise ResultsError(f"{name}: empty file")
    try:
        doc = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                         parse_constant=_parse_constant)
    except json.JSONDecodeError as err:
        raise ResultsError(f"{name}: {_json_error_message(err, text)}") from None
    except _BadNumber as err:
        raise ResultsError(f"{name}: invalid JSON: {err}") from None
    except RecursionError:
        raise ResultsError(f"{name}: invalid JSON: nested too deeply to be a results file") from None
    problem = _check_top(doc)
    if problem is None:
        for i, run in enumerate(doc["runs"]):
            problem = _check_run(run, i)
            if problem:
                break
    if problem:
        raise ResultsError(f"{name}: {problem}")
    return doc


def load_results(path):
    """Read and check one results file. The dict gains '_path' (the file it came from)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ResultsError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not UTF-8 text (binary file?)") from None
    doc = parse_results(text, path)
    doc["_path"] = path
    return doc


def load_all(paths):
    """Load every file; raises one ResultsError listing every bad file, one per line."""
    docs, errors = [], []
    for path in paths:
        try:
            docs.append(load_results(path))
        except ResultsError as err:
            errors.append(str(err))
    if errors:
        raise ResultsError("\n".join(errors))
    return docs


def is_partial(doc):
    status = doc.get("status")
    if not isinstance(status, dict):
        return True
    return bool(status.get("partial")) or status.get("complete") is False


def trace_path(doc):
    """<dir>/<run-id>.trace.json next to the results file (None when run_id is unknown)."""
    run_id = doc["context"].get("run_id")
    if not run_id or "_path" not in doc:
        return None
    return os.path.join(os.path.dirname(doc["_path"]), f"{run_id}.trace.json")
