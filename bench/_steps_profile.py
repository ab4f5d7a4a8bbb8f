"""Where a compiled step spends its time: XLA:CPU op timings from a `jax.profiler` trace.

`top_ops(step, n)` traces `n` calls of a blocking step and returns the slowest HLO ops
(fusions, dots) with their per-call milliseconds; `describe` adds each op's shape and
the JAX operation it came from, read from the compiled HLO text.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from collections.abc import Callable

import jax

_NOT_OPS = re.compile(r"^\$|Thunk|Pjit|PjRt|Execute|block_until_ready|Handle inputs|Allocate")


def top_ops(step: Callable[[], object], n: int = 3, top: int = 12) -> tuple[list[tuple[str, float]], float]:
    """(op name, ms per call) of the `top` slowest ops, and the ms per call of all ops."""
    step()
    with tempfile.TemporaryDirectory() as where:
        jax.profiler.start_trace(where, create_perfetto_trace=True)
        for _ in range(n):
            step()
        jax.profiler.stop_trace()
        traces = glob.glob(os.path.join(where, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(max(traces, key=os.path.getmtime)) as f:
            events = json.load(f)["traceEvents"]
    spent: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not _NOT_OPS.search(event["name"]):
            spent[event["name"]] += event.get("dur", 0)
    per_call = {name: us / n / 1e3 for name, us in spent.items()}
    return sorted(per_call.items(), key=lambda kv: -kv[1])[:top], sum(per_call.values())


def describe(op: str, hlo_text: str) -> str:
    """`shape  jax-op` of HLO instruction `op`, from the compiled module's text."""
    found = re.search(r"%" + re.escape(op) + r" = (\S+) .*?op_name=\"([^\"]*)\"", hlo_text)
    return f"{found.group(1)}  {found.group(2)}" if found else ""
