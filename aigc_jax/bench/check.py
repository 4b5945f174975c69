"""The accelerator check's rows (benchmarks/accelerator_check.py): what it measures, in order of
value, run within a time budget, every row written to JSON and Markdown as soon as it ends.

A row is a step benchmark (`BenchRow`: model, batch, precision, PyTorch beside it or not), the
DCGAN training ("train") or the accelerator tests ("tests"). A row that raises is recorded as
failed with its error and the next one runs; rows the budget leaves out are recorded as skipped.
The rows run in a worker process that `supervise` stops when the budget runs out, so that a slow
row cannot overrun it: that row is recorded as cut.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Callable, NamedTuple

from aigc_jax import safe_files
from aigc_jax.bench import presets
from aigc_jax.bench import report
from aigc_jax.bench import timing
from aigc_jax.bench import torch_reference

# precision -> (compute_dtype, JAX matmul_precision); PyTorch runs TF32 off for 'highest', on
# for 'tf32' (`torch_timing.uses_tf32`), and has no bfloat16 reference.
PRECISIONS = {
    "highest": ("float32", "highest"), "tf32": ("float32", "default"),
    "bfloat16": ("bfloat16", "default")
}
MAIN = ("dcgan", "gan_mlp", "vae_mlp")  # the models of the speed goals
TINY_DCGAN = ("--config.g_base_features=16", "--config.d_base_features=8")


class BenchRow(NamedTuple):
  model: str
  batch: int
  precision: str  # a PRECISIONS key
  torch: bool = False  # PyTorch eager beside it (float32 rows of models with a reference)
  compiled: bool = False  # torch.compile too
  max_steps_per_call: int = 0  # > 0: at most this many (a --tiny row's shorter calls)
  overrides: tuple[str, ...] = ()  # --config.KEY=VALUE (a --tiny row's narrower networks)

  @property
  def label(self) -> str:
    return f"{self.model} b{self.batch} {self.precision}"


class Row(NamedTuple):
  label: str
  group: int  # 1 is worth most; rows run in list order
  kind: str  # 'bench', 'train' or 'tests'
  run: Callable[[], dict]  # the row's result; an "error" key in it marks the row failed


def float32_pair(model: str, batch: int, compiled: bool) -> list[BenchRow]:
  """JAX 'highest' against PyTorch with TF32 off, and JAX 'default' against PyTorch TF32."""
  torch = model in torch_reference.MODELS
  return [BenchRow(model, batch, p, torch, compiled and torch) for p in ("highest", "tf32")]


def plan(tiny: bool) -> list[tuple[int, object]]:
  """(group, BenchRow | 'train' | 'tests') in order of value: (1) DCGAN b64 against PyTorch eager
  and compiled; (2) the MLP GAN and MLP VAE likewise; (3) bfloat16 against float32 at batch
  1024; (4) the DCGAN training; then the accelerator tests and (5) the rest. --tiny: the MLP VAE
  and DCGAN at batch 8 in calls of at most 2 steps, and the MLP VAE at 1024 in the platform's
  calls (100 steps on a GPU or TPU), with PyTorch eager but no torch.compile (minutes on a CPU;
  `python -m aigc_jax.bench --torch_compile` times it)."""
  if tiny:  # a GPU's DCGAN formulations are slow on a CPU: short calls, narrow networks
    short = {"max_steps_per_call": 2}
    first = [
        (1, r._replace(overrides=TINY_DCGAN, **short)) for r in float32_pair("dcgan", 8, False)
    ]
    second = [(2, r._replace(**short)) for r in float32_pair("vae_mlp", 8, False)]
    wide = [(3, BenchRow("vae_mlp", 1024, "bfloat16")),
            (3, BenchRow("vae_mlp", 1024, "highest", True))]
    rest = [(5, BenchRow("dcgan", 8, "bfloat16", overrides=TINY_DCGAN, **short)),
            (5, BenchRow("vae_mlp", 8, "bfloat16", **short))]
    return first + second + wide + [(4, "train"), (4, "tests")] + rest
  rows = [(1, r) for r in float32_pair("dcgan", 64, True)]
  rows += [(2, r) for m in ("gan_mlp", "vae_mlp") for r in float32_pair(m, 64, True)]
  for m in MAIN:
    rows += [(3, BenchRow(m, 1024, "bfloat16")), *((3, r) for r in float32_pair(m, 1024, False))]
  rows += [(4, "train"), (4, "tests")] + [(5, BenchRow(m, 64, "bfloat16")) for m in MAIN]
  for m in (m for m in presets.model_names() if m not in MAIN):
    for batch in (64, 1024):
      rows += [(5, BenchRow(m, batch, "bfloat16"))
              ] + [(5, r) for r in float32_pair(m, batch, False)]
  return rows


def bench(spec: BenchRow, part: dict, with_torch: bool) -> dict:
  """`timing.benchmark` of one BenchRow with `part`'s steps, warm-up, calls and peak size."""
  dtype, precision = PRECISIONS[spec.precision]
  config = presets.bench_config(
      spec.model, spec.batch, overrides=[
          f"--config.compute_dtype={dtype}", f"--config.matmul_precision={precision}",
          *spec.overrides
      ])
  if spec.max_steps_per_call:
    config.steps_per_call = min(config.steps_per_call, spec.max_steps_per_call)
  torch = with_torch and spec.torch and dtype == "float32"
  return timing.benchmark(spec.model, config, torch=torch, torch_compile=torch and spec.compiled,
                          steps=part["steps"], warmup=part["warmup"], peak_size=part["peak_size"],
                          min_calls=part["min_calls"])


def error_text(e: BaseException) -> str:
  """'Type: first line of the message' (at most 300 characters)."""
  lines = str(e).strip().splitlines()
  return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def run_rows(rows: list[Row], budget_s: float, write: Callable[[list[dict]], None],
             clock: Callable[[], float] = time.perf_counter) -> list[dict]:
  """Runs `rows` in order while less than `budget_s` has passed, calling `write(records)` before
  and after every row. A record: row, group, status (pending, running, ok, failed, skipped),
  seconds, and the row's result or its error. Rows not started in time are 'skipped'."""
  start = clock()
  records = [{"row": r.label, "kind": r.kind, "group": r.group, "status": "pending"} for r in rows]
  write(records)
  for row, record in zip(rows, records):
    if clock() - start >= budget_s:
      record.update(status="skipped", reason=f"the budget of {budget_s:g} s was spent")
      continue
    began = clock()
    record["status"] = "running"
    write(records)
    try:
      result = row.run()
      record.update(status="failed" if "error" in result else "ok", **result)
    except Exception as e:  # pylint: disable=broad-except  # recorded; the next row runs
      record.update(status="failed", error=error_text(e))
    record["seconds"] = round(clock() - began, 1)
    write(records)
  write(records)
  return records


def stop(records: list[dict], reason: str) -> None:
  """Records a worker stopped from outside: its running row as 'cut', the rows after as
  'skipped', both with `reason`."""
  for record in records:
    if record["status"] in ("running", "pending"):
      record.update(status="cut" if record["status"] == "running" else "skipped", reason=reason)


def supervise(command: list[str], out: str, budget_s: float, env: dict | None = None) -> int:
  """Runs the worker `command`, which rewrites OUTDIR's files after every row, in a process group
  of its own, and kills the group (the worker and the processes it started) once `budget_s` has
  passed or on Ctrl-C; its files then record why (`stop`). Returns 1 if a row failed or the
  worker ended without finishing its rows, else 0 (a check cut by the budget included)."""
  start = time.perf_counter()
  worker = subprocess.Popen(command, env=env, start_new_session=True)
  try:
    reason = "" if worker.wait(
        timeout=budget_s) == 0 else (f"the check's process ended with status {worker.returncode}")
  except (subprocess.TimeoutExpired, KeyboardInterrupt) as e:
    reason = "interrupted" if isinstance(
        e, KeyboardInterrupt) else (f"the budget of {budget_s:g} s ran out")
  try:  # the worker, and whatever it started that still runs
    os.killpg(worker.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  worker.wait()
  try:
    with open(os.path.join(out, "accelerator_check.json")) as f:
      header = json.load(f)
  except (OSError, ValueError):
    return 1
  records = header.pop("rows")
  unfinished = any(r["status"] in ("running", "pending") for r in records)
  if unfinished:
    stop(records, reason)
    write_files(out, {**header, "total_s": round(time.perf_counter() - start, 1)}, records)
  failed = any(r["status"] == "failed" for r in records)
  return 1 if failed or (unfinished and "budget" not in reason) else 0


def write_files(out: str, header: dict, records: list[dict]) -> None:
  """OUTDIR/accelerator_check.json and .md, each replaced whole (never left half written)."""
  result = {**header, "rows": records}
  for name, text in (("accelerator_check.json", json.dumps(result,
                                                           indent=1)), ("accelerator_check.md",
                                                                        markdown(header, records))):
    safe_files.write_text(os.path.join(out, name), text)


def cell(record: dict, key: str, scale: float = 1.0) -> str:
  value = record.get(key)
  return "-" if value is None else f"{scale * value:.{1 if scale != 1 else 2}f}"


def bench_line(r: dict) -> str:
  """One Markdown table row of a benchmark record."""
  return (f"| {r['row']} | {r.get('steps_per_call', '-')} | {cell(r, 'step_ms')} "
          f"| {r.get('images_per_s', '-')} | {r.get('peak_kind', '-')} "
          f"| {cell(r, 'fraction_of_peak', 100.0)} | {cell(r, 'torch_step_ms')} "
          f"| {cell(r, 'speedup_vs_torch')} | {cell(r, 'torch_compile_step_ms')} "
          f"| {cell(r, 'speedup_vs_torch_compile')} | {cell(r, 'compile_s')} | {r['status']} |")


def markdown(header: dict, records: list[dict]) -> str:
  """The check's Markdown: the machine, the benchmark table, the training and tests lines, then
  the failed and the skipped rows."""
  lines = [
      f"# Accelerator check: {header['devices']}", "",
      f"platform defaults: {header['platform']}; budget {header['budget_s']:g} s", "",
      *([f"**Warning**, {report.busy_warning(header['load_before'])}", ""] if report.is_busy(
          header.get("load_before", 0.0)) else []),
      "| row | steps/call | JAX ms/step | images/s | peak | % of peak | torch ms | speedup "
      "| torch.compile ms | speedup | compile s | status |", "|---" * 12 + "|"
  ]
  lines += [bench_line(r) for r in records if r["kind"] == "bench"]
  peaks = {r["peak_kind"]: r["peak_gflops"] for r in records if "peak_kind" in r}
  if peaks:
    lines += [
        "", "matmul peaks measured in this run (GFLOP/s): " +
        ", ".join(f"{kind} {gflops:g}" for kind, gflops in sorted(peaks.items()))
    ]
  for r in records:
    if r["kind"] == "train" and r["status"] == "ok":
      lines += [
          "", f"DCGAN training ({r['args']}): {r['train_s']} s of training chunks "
          f"({r['train_steady_s']} s steady + {r['train_compile_s']} s first-call compile, "
          f"{r['steps']} steps, {r['steps_per_s']} steps/s steady); {r['wall_s']} s wall "
          f"with start-up and its last evaluation, {r['eval_wall_s']} s evaluating; FID "
          f"{cell(r, 'fid')} (floor {cell(r, 'fid_floor')}), precision "
          f"{cell(r, 'precision')}, recall {cell(r, 'recall')} of {r.get('num_samples')} "
          "samples"
      ]
    if r["kind"] == "tests" and "tests" in r:
      lines += [
          "", "accelerator tests: " +
          ", ".join(f"{r[k]} {k}" for k in ("tests", "passed", "failures", "errors", "skipped"))
      ]
  failed = [f"- {r['row']}: {r.get('error')}" for r in records if r["status"] == "failed"]
  cut = [f"{r['row']} ({r['reason']})" for r in records if r["status"] == "cut"]
  skipped = [r["row"] for r in records if r["status"] == "skipped"]
  lines += ["", "Failed rows:", "", *failed] if failed else []
  lines += ["", f"Cut short: {', '.join(cut)}"] if cut else []
  lines += ["", f"Skipped by the budget: {', '.join(skipped)}"] if skipped else []
  return "\n".join(lines) + "\n"
