"""Where a compiled step spends its time: per-op timings of XLA's executable.

`op_times(fn, *args)` compiles `fn`, runs it under `jax.profiler` and returns the ops of the
compiled module by total time per call, each with its line of the optimized HLO (shapes, window,
dimension labels). `python -m aigc_jax.bench --model M --profile N` prints the top N for an
experiment's train step.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
from typing import Callable, NamedTuple

import jax


class OpTime(NamedTuple):
  name: str  # the HLO instruction (or fusion) name
  ms: float  # total milliseconds per call
  count: int  # executions per call
  hlo: str  # its result type, opcode, window and the JAX op it came from (HLO metadata)


def _summary(hlo_line: str) -> str:
  """'f32[16,7,7,256] convolution window={...} <- jit(train_step)/...' from an HLO line."""
  head = re.match(r"(\S+?)(?:\{[\d,]*\})? ([\w\-]+)\(", hlo_line)
  parts = [f"{head.group(1)} {head.group(2)}" if head else hlo_line.split("(")[0]]
  for pattern in (r"window=\{[^}]*\}", r"dim_labels=\S+?(?=,|$)", r"kind=\w+"):
    found = re.search(pattern, hlo_line)
    if found:
      parts.append(found.group(0))
  op_name = re.search(r'op_name="([^"]*)"', hlo_line)
  if op_name:
    parts.append(f"<- {op_name.group(1)}")
  return " ".join(parts)


def _instructions(hlo_text: str) -> dict[str, str]:
  """instruction name -> its summary, for every instruction of every computation."""
  lines = {}
  for line in hlo_text.splitlines():
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (.*)", line)
    if match:
      lines[match.group(1)] = _summary(match.group(2))
  return lines


def op_times(fn: Callable, *args, calls: int = 5, width: int = 160) -> list[OpTime]:
  """Per-op time of `jax.jit(fn)(*args)`, averaged over `calls` profiled calls, largest first.

  Only ops that are instructions of the compiled module are kept (not runtime bookkeeping). On a
  multi-threaded backend ops can overlap, so the times may add up to more than the call.
  """
  jitted = jax.jit(fn)
  compiled = jitted.lower(*args).compile()
  instructions = _instructions(compiled.as_text())
  jax.block_until_ready(compiled(*args))
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(calls):
        jax.block_until_ready(compiled(*args))
    paths = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
    if not paths:
      raise RuntimeError(f"jax.profiler wrote no perfetto trace under {trace_dir}")
    with gzip.open(paths[0]) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  total, count = collections.Counter(), collections.Counter()
  for event in events:
    name = event.get("name")
    if event.get("ph") == "X" and name in instructions:
      total[name] += event.get("dur", 0.0)
      count[name] += 1
  return [
      OpTime(name, us / 1e3 / calls, count[name] // calls, instructions[name][:width])
      for name, us in total.most_common()
  ]


def describe(ops: list[OpTime], top: int, step_ms: float | None = None) -> str:
  """A table of the `top` slowest ops (and their share of `step_ms` when given)."""
  lines = [f"top {min(top, len(ops))} of {len(ops)} ops by time per step:"]
  for op in ops[:top]:
    share = f" {100 * op.ms / step_ms:5.1f}%" if step_ms else ""
    lines.append(f"{op.ms:9.2f} ms{share}  x{op.count}  {op.name}: {op.hlo}")
  return "\n".join(lines)
