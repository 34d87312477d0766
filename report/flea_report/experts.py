"""Mixture-of-experts residency figures of a run: the engine's `experts` block, the plan's
`plan.experts`, and the plan's bytes per token re-predicted at the measured expert hit rate."""
from .fields import get, is_number, run_engine, sort_value

# measured / predicted bytes per token outside this band is flagged: the plan mispredicts the reads.
BYTES_RATIO_BAND = (0.9, 1.1)
BASELINE_ENGINE = "llama-bench"


def has_experts(run):
    return isinstance(run.get("experts"), dict) or isinstance(get(run, "plan.experts"), dict)


def asked_for_experts(run):
    """A point that set an expert_* key (present only when not the default): kept even when it failed."""
    return any(str(k).startswith("expert_") for k in (run.get("point") or {}))


def expert_setting(run, key):
    """residency / policy / cache_per_layer / predicted_hit_rate / layers as the engine ran them:
    the run's `experts` block, else the plan's."""
    value = get(run, f"experts.{key}")
    return value if value is not None else get(run, f"plan.experts.{key}")


def n_expert(run):
    """Experts per MoE layer: the plan's n_expert, else cache_per_layer / predicted_hit_rate."""
    n = get(run, "plan.experts.n_expert")
    if is_number(n) and n > 0:
        return n
    cache, rate = expert_setting(run, "cache_per_layer"), expert_setting(run, "predicted_hit_rate")
    if is_number(cache) and is_number(rate) and rate > 0:
        return cache / rate
    return None


def predicted_bytes_per_token(run):
    """The plan's bytes per token at the measured hit rate: dense + (1 - hit rate) * expert bytes.

    The plan's own `streamed_bytes_per_token` uses the uniform-routing hit rate; this one isolates
    the I/O path from the routing. With no expert bytes to stream (layer residency, or all experts
    resident) it is the dense bytes whatever the hit rate; None when a figure is missing."""
    dense = get(run, "plan.experts.dense_bytes_per_token")
    expert_bytes = get(run, "plan.experts.expert_bytes_per_token")
    if not (is_number(dense) and is_number(expert_bytes)):
        return None
    if expert_bytes == 0:
        return float(dense)
    hit_rate = get(run, "experts.hit_rate")
    if not is_number(hit_rate):
        return None
    return dense + (1.0 - hit_rate) * expert_bytes


def bytes_ratio(run):
    """Measured io.read_bytes_per_token over predicted_bytes_per_token (None when either is unknown or 0)."""
    measured, predicted = get(run, "io.read_bytes_per_token"), predicted_bytes_per_token(run)
    if not is_number(measured) or predicted is None or predicted <= 0:
        return None
    return measured / predicted


def off_plan(ratio):
    lo, hi = BYTES_RATIO_BAND
    return is_number(ratio) and not lo <= ratio <= hi


def routing_skew(run):
    """The synthetic model's routing skew (flea.synth.expert_skew; 0 = uniform), None when unstated."""
    return get(run, "model.expert_skew")


def expert_entries(docs):
    """[(file index, doc, run)]: runs with expert figures (or expert point keys), and the baseline
    engine's runs of the same models in the same file, for comparing tok/s."""
    out = []
    for i, doc in enumerate(docs):
        runs = doc["runs"]
        moe = [r for r in runs if has_experts(r) or (asked_for_experts(r) and run_engine(r) != BASELINE_ENGINE)]
        models, chosen = {get(r, "point.model") for r in moe}, {id(r) for r in moe}
        out += [(i, doc, r) for r in runs if id(r) in chosen
                or (run_engine(r) == BASELINE_ENGINE and get(r, "point.model") in models)]
    return out


def any_experts(docs):
    return any(has_experts(r) for d in docs for r in d["runs"])


def entry_order(entry, keys):
    """Sort key: model, the baseline engine first, then skew, residency, policy, cache size."""
    i, _, run = entry
    point = run.get("point") or {}
    return (sort_value(point.get("model")), run_engine(run) != BASELINE_ENGINE,
            sort_value(routing_skew(run)), sort_value(expert_setting(run, "residency")),
            sort_value(expert_setting(run, "policy")), sort_value(expert_setting(run, "cache_per_layer")),
            [sort_value(point.get(k)) for k in keys], i, str(run.get("id")))
