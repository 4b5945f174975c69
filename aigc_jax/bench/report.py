"""What the benchmark prints and writes: a result's lines, the machine, the Markdown table with
its goals, and the busy-machine probe."""

from __future__ import annotations

import datetime
import operator
import os
import platform

import jax

from aigc_jax.bench import torch_timing

# The speed goals the table judges: (model, batch, result key, comparison, threshold, its line).
GOALS = (("gan_mlp", 64, "speedup_vs_torch", operator.ge, 3.0, "MLP GAN b64: >= 3x PyTorch"),
         ("vae_mlp", 128, "speedup_vs_torch", operator.ge, 2.2, "MLP VAE b128: >= 2.2x PyTorch"),
         ("dcgan", 64, "speedup_vs_torch", operator.gt, 1.0,
          "DCGAN b64: > 1x PyTorch (1.5x aim)"), ("gan_mlp", 256, "fraction_of_peak", operator.ge,
                                                  0.8, "MLP GAN b256: >= 80% of the matmul peak"))
MAX_COMPILE_S = 10.0  # the compile-time goal, for every model


def describe(result: dict, steps_per_call: int) -> str:
  """A few human-readable lines of one result (`timing.benchmark`'s keys)."""
  r = result
  lines = [
      f"{r['model']} batch {r['batch']} on {r['devices']} device(s) ({r['backend']}, "
      f"{r['device_kind']}), {steps_per_call} "
      f"step(s) per call: {r['step_ms']:.2f} ms/step (min {r['step_ms_min']:.2f}, max "
      f"{r['step_ms_max']:.2f}), {r['images_per_s']:.0f} images/s, compile "
      f"{r['compile_s']:.2f} s",
      f"{r['gflop_per_step']:.3f} GFLOP/step -> {r['gflops']:.1f} GFLOP/s = "
      f"{100 * r['fraction_of_peak']:.0f}% of the measured {r['peak_kind']} matmul peak "
      f"({r['peak_gflops']:.1f} GFLOP/s)"
  ]
  if "epoch_s" in r:
    lines.append(f"one epoch ({r['epoch_steps']} steps, as train.py runs it): {r['epoch_s']:.2f} s "
                 f"= {r['epoch_vs_steps']:.3f} x steps x the median step time")
  if "torch_step_ms" in r:
    lines.append(f"PyTorch eager on {r['torch_device']}: {r['torch_step_ms']:.2f} ms/step; JAX is "
                 f"{r['speedup_vs_torch']:.2f}x its speed")
  if "torch_compile_step_ms" in r:
    lines.append(f"PyTorch torch.compile: {r['torch_compile_step_ms']:.2f} ms/step (first step "
                 f"{r['torch_compile_s']:.1f} s); JAX is {r['speedup_vs_torch_compile']:.2f}x its "
                 "speed")
  if "torch_compile_error" in r:
    lines.append(f"PyTorch torch.compile failed: {r['torch_compile_error']}")
  return "\n".join(lines)


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (or what `platform` knows)."""
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def torch_part() -> str:
  """PyTorch's version, device and CPU threads for the machine line, or 'no torch'."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return "no torch"
  return (f"torch {torch.__version__} on {torch_timing.torch_device(torch)} "
          f"({torch.get_num_threads()} CPU threads, its default)")


def machine_line(load_before: float) -> str:
  """The processor that ran JAX (the CPU's model on the cpu backend, else the device kind), cores,
  library versions and thread counts or devices, date, load average before the run."""
  name = jax.default_backend()
  if name == "cpu":
    jax_part = (f"{cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__} on XLA:cpu (its "
                "default thread pool, one thread per core)")
  else:
    jax_part = (f"{jax.device_count()} x {jax.devices()[0].device_kind}, {os.cpu_count()} host "
                f"cores; jax {jax.__version__} on XLA:{name}")
  return (f"{jax_part}; {torch_part()}; {datetime.datetime.now():%Y-%m-%d %H:%M}; load average "
          f"{load_before:.2f} before the run")


def is_busy(load: float) -> bool:
  """Whether other processes were running: a 1-minute load average over half the cores."""
  return load > 0.5 * (os.cpu_count() or 1)


def busy_warning(load: float) -> str:
  """Why times taken at 1-minute load average `load` (one `is_busy` flags) cannot be trusted."""
  return (f"busy machine: the load average was {load:.1f} on {os.cpu_count()} cores before the "
          "run, so other processes shared the cores. Every time is inflated, and PyTorch's OpenMP "
          "threads slow down many-fold on oversubscribed cores, so the ratios overstate JAX's "
          "lead. Regenerate with `make bench` on a quiet machine.")


def table_rows(results: list[dict]) -> list[str]:
  """One Markdown row per result; '-' where a PyTorch column was not measured."""

  def cell(r, key, fmt):
    return format(r[key], fmt) if key in r else "-"

  return [
      f"| {r['model']} | {r['batch']} | {r['step_ms']:.2f} "
      f"| {cell(r, 'torch_step_ms', '.2f')} | {cell(r, 'speedup_vs_torch', '.2f')} "
      f"| {cell(r, 'torch_compile_step_ms', '.2f')} "
      f"| {cell(r, 'speedup_vs_torch_compile', '.2f')} | {100 * r['fraction_of_peak']:.1f} "
      f"| {r['compile_s']:.2f} |" for r in results
  ]


def goal_lines(results: list[dict], busy: bool) -> list[str]:
  """One line per GOALS entry and the compile-time goal: the measured value and its verdict
  (met, missed; no verdict on a busy machine), or 'not measured'."""

  def verdict(met: bool) -> str:
    return "no verdict: busy machine" if busy else "met" if met else "missed"

  lines = []
  by_run = {(r["model"], r["batch"]): r for r in results}
  for model, batch, key, compare, threshold, what in GOALS:
    r = by_run.get((model, batch))
    if r is None or key not in r:
      lines.append(f"- {what}: not measured")
    else:
      value = f"{r[key]:.2f}x" if key == "speedup_vs_torch" else f"{100 * r[key]:.0f}%"
      lines.append(f"- {what}: {value} ({verdict(compare(r[key], threshold))})")
  slowest = max(results, key=lambda r: r["compile_s"], default=None)
  if slowest is not None:
    lines.append(f"- compile <= {MAX_COMPILE_S:.0f} s for every model: slowest {slowest['model']} "
                 f"b{slowest['batch']} {slowest['compile_s']:.2f} s "
                 f"({verdict(slowest['compile_s'] <= MAX_COMPILE_S)})")
  return lines


def table(results: list[dict], command: str, load_before: float, steps: int, warmup: int) -> str:
  """benchmarks/RESULTS.md's text: how it was made, the machine, the table, the goals."""
  peak = results[0]["peak_gflops"] if results else 0.0
  kind = results[0]["peak_kind"] if results else "float32/default"
  busy = is_busy(load_before)
  lines = [
      "# Train-step benchmarks", "",
      f"Generated by `{command}` (`make bench`). Machine: {machine_line(load_before)}.", "",
      "One step is a full train step (a GAN's n_critic D updates and its G update). JAX: the "
      "training loop's path (`parallel.make_train_loop`, the experiment's steps_per_call), median "
      f"over >= {steps} steps after {warmup} warm-up steps; PyTorch: the same model, optimizer and "
      "losses in eager mode (`aigc_jax/bench/torch_reference/`), timed the same way (calls of "
      "steps_per_call steps, one sync per call, TF32 as JAX's matmul_precision allows), in the "
      "same process; with --torch_compile also with every module "
      "`torch.compile`d (default mode; its compiling first step not counted). Ratio = PyTorch ms "
      "/ JAX ms. % of peak: XLA's FLOP "
      f"count of the step per second over the measured {kind} matmul peak ({peak:.1f} GFLOP/s, "
      "a 4096x4096 `jnp.dot` of that dtype and precision). Compile s: the first call less a "
      "steady one.", "", *([f"**Warning**, {busy_warning(load_before)}", ""] if busy else []),
      "| model | batch | JAX ms/step | PyTorch ms/step | ratio | torch.compile ms/step | ratio "
      "| % of peak | compile s |", "|---|---|---|---|---|---|---|---|---|", *table_rows(results),
      "", "Goals:", "", *goal_lines(results, busy)
  ]
  return "\n".join(lines) + "\n"
