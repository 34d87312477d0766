"""Context comparison shared by the report, the gate and the PR attachment."""
from .fields import get

# (label, dotted path in context); the first four are the ones a reader must know about.
CONTEXT_KEYS = (
    ("host", "host.hostname"),
    ("git rev", "build.git_rev"),
    ("build type", "build.build_type"),
    ("profile", "profile.name"),
    ("profile mode", "profile.mode"),
    ("git dirty", "build.git_dirty"),
    ("CPU", "host.cpu_model"),
    ("cores", "host.cpu_cores"),
    ("kernel", "host.kernel"),
    ("governor", "host.cpu_governor"),
    ("storage", "host.storage_device"),
    ("GPU", "gpu.name"),
    ("compiler", "build.compiler"),
    ("flags", "build.flags"),
    ("CUDA", "build.cuda"),
    ("io_uring", "build.io_uring"),
    ("scenario", "scenario.name"),
)


def context_value(doc, dotted):
    value = get(doc["context"], dotted)
    if dotted == "gpu.name" and value is None:
        return "none" if doc["context"].get("gpu") is None else None
    return value


def context_differences(docs):
    """[(label, [value per doc])] for context keys whose values are not all equal."""
    diffs = []
    for label, dotted in CONTEXT_KEYS:
        values = [context_value(doc, dotted) for doc in docs]
        if len({repr(v) for v in values}) > 1:
            diffs.append((label, values))
    return diffs
