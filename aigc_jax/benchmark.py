"""Times an experiment's real train step on this machine, optionally against PyTorch eager.

  python -m aigc_jax.benchmark --model gan_mlp --batch 64 [256 ...] [--steps-per-call K] [--torch]
      [--torch-compile] [--json]
  python -m aigc_jax.benchmark --torch --table benchmarks/RESULTS.md    # what `make bench` runs

A model is an experiment preset, `experiments/NAME_fashion_mnist.py`'s `get_config()`, with the
batch size and steps per call overridden. The JAX side is the training loop's own path: the
family's `train_step` under `parallel.make_train_loop` over a synthetic uint8 dataset on the
device; one step is a full train step (for a GAN, its n_critic D updates and the G update).
Reported: compile time (the first call less a steady call), the median, min and max of the step
time over the timed calls (call time / steps per call), images/s, XLA's FLOP count of one step,
the GFLOP/s that makes and its fraction of this machine's fp32 matmul peak (a large float32
`jnp.dot` at HIGHEST precision timed here, so no TF32 rate), the backend and device kind, and
with --torch the same model and step in PyTorch eager (`aigc_jax.torch_reference`, on CUDA when
PyTorch sees a GPU, else the CPU) timed in the same process, step by step, and the ratio; with
--torch-compile the same with its modules `torch.compile`d. Several --batch values sweep.
With --epoch, one whole epoch of the synthetic set run the way train.py runs it (chunks of
log_every_steps steps, the state read back and the metric sums fetched after every chunk; no
evaluation or checkpoints), against steps x the median step time. With --profile N, the N ops
of the compiled step that take the most time (`aigc_jax.step_profile`).
"""

from __future__ import annotations

import argparse
import datetime
import ast
import functools
import importlib.util
import json
import math
import operator
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import aigc_jax
from aigc_jax import backend
from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import parallel
from aigc_jax import state as state_lib
from aigc_jax import step_profile

EXPERIMENTS_DIR = Path(aigc_jax.__file__).resolve().parents[1] / "experiments"
EXPERIMENT_SUFFIX = "_fashion_mnist.py"
ALIASES = {"mlp_gan": "gan_mlp"}  # the issue's spelling
NUM_IMAGES = 60_000  # synthetic training set, as large as Fashion-MNIST's
MIN_CALLS = 5  # timed calls at least, so a many-steps-per-call model has a spread too
PARALLEL_MODES = ("none", "pmap", "shard_map")
# What `make bench` measures: (model, batch), the experiments' batches plus MLP GAN at 256.
TABLE_RUNS = ("gan_mlp:64", "gan_mlp:256", "dcgan:64", "cgan:64", "wgan_gp:64", "sngan_hinge:64",
              "vae_mlp:128", "vae_conv:64", "cvae:128")
# Issue 5's targets: (model, batch, result key, comparison, threshold, what it says).
TARGETS = (("gan_mlp", 64, "speedup_vs_torch", operator.ge, 3.0, "MLP GAN b64: >= 3x PyTorch"),
           ("vae_mlp", 128, "speedup_vs_torch", operator.ge, 2.2, "MLP VAE b128: >= 2.2x PyTorch"),
           ("dcgan", 64, "speedup_vs_torch", operator.gt, 1.0, "DCGAN b64: > 1x PyTorch (1.5x aim)"),
           ("gan_mlp", 256, "fraction_of_peak", operator.ge, 0.8,
            "MLP GAN b256: >= 80% of the matmul peak"))
MAX_COMPILE_S = 10.0


class BenchmarkError(ValueError):
  """A benchmark that cannot run as asked; the message says why."""


def model_names() -> list[str]:
  """The experiment presets: NAME for every experiments/NAME_fashion_mnist.py."""
  return sorted(p.name[:-len(EXPERIMENT_SUFFIX)]
                for p in EXPERIMENTS_DIR.glob(f"*{EXPERIMENT_SUFFIX}"))


def experiment_config(name: str):
  """The `get_config()` of experiments/NAME_fashion_mnist.py (`mlp_gan` is `gan_mlp`)."""
  name = ALIASES.get(name, name)
  path = EXPERIMENTS_DIR / f"{name}{EXPERIMENT_SUFFIX}"
  if not path.is_file():
    names = model_names()
    if not names:
      raise BenchmarkError(f"no experiments in {EXPERIMENTS_DIR}: run from a checkout of the repo")
    raise BenchmarkError(f"unknown model '{name}'; choose one of {', '.join(names)}")
  spec = importlib.util.spec_from_file_location(f"experiments.{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def override(config, assignment: str) -> None:
  """Applies '--config.KEY=VALUE' (as the experiment files take it) to `config`; VALUE is read as
  a Python literal of the key's type (true/false for booleans), or kept as text for strings."""
  match = re.fullmatch(r"--config\.(\w+)=(.*)", assignment)
  if not match:
    raise BenchmarkError(f"unrecognized argument '{assignment}'; config overrides are "
                         "--config.KEY=VALUE")
  key, text = match.groups()
  if key not in config:
    raise BenchmarkError(config_lib.unknown_key_message(key, config.keys()))
  default = config[key]
  if isinstance(default, bool):
    if text.lower() not in ("true", "false"):
      raise BenchmarkError(f"--config.{key} takes true or false, got '{text}'")
    config[key] = text.lower() == "true"
  elif isinstance(default, str):
    config[key] = text
  else:
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise BenchmarkError(f"--config.{key}={text}: not a {type(default).__name__}") from None
    config[key] = type(default)(value) if isinstance(default, (int, float, tuple)) else value


def bench_config(name: str, batch: int | None = None, steps_per_call: int | None = None,
                 parallel_mode: str = "none", overrides: Sequence[str] = ()):
  """The experiment's config with the benchmark's overrides, validated."""
  config = experiment_config(name)
  for assignment in overrides:
    override(config, assignment)
  if batch is not None:
    config.batch_size = batch
  if steps_per_call is not None:
    config.steps_per_call = steps_per_call
  config.parallel = parallel_mode
  try:
    config = config_lib.validate(config)
  except config_lib.ConfigError as e:
    raise BenchmarkError(str(e)) from None
  config.steps_per_call = backend.steps_per_call(config.steps_per_call)  # 0: auto, resolved
  return config


def peak_matmul(a, b):
  """The peak's matmul: float32 at HIGHEST precision, so a GPU's TF32 rate is not reported."""
  return jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST)


@functools.cache
def peak_gflops(size: int = 4096, repeats: int = 3) -> float:
  """This machine's fp32 matmul rate: the best of `repeats` jitted (size x size) @ (size x size)
  `peak_matmul`s."""
  a, b = jax.random.normal(jax.random.PRNGKey(0), (2, size, size), jnp.float32)
  dot = jax.jit(peak_matmul)
  dot(a, b).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best / 1e9


def synthetic_split(info: data_lib.DatasetInfo, num: int, seed: int = 0):
  """Random uint8 images (num, H, W, C) and int32 labels: what a step costs does not need data."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num,) + tuple(info.image_shape), dtype=np.uint8)
  return images, rng.integers(0, info.num_classes, num).astype(np.int32)


def step_flops(train_step, state, batch) -> float:
  """XLA's count of floating-point operations in one train step.

  The cost analysis of the lowered (not yet optimized) step: it needs no second compilation, and
  it differs from the compiled step's by under 3% (measured: MLP GAN, DCGAN, WGAN-GP), lower.
  """
  analysis = jax.jit(train_step).lower(state, batch).cost_analysis()
  if isinstance(analysis, (list, tuple)):  # one dict per computation in some versions
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


class StepSetup(NamedTuple):
  trainable: Any
  batches_per_step: int
  data: data_lib.DeviceData
  permutation: Callable  # (seed, epoch, num) -> the epoch's permutation, jitted as in train.py
  perm: jax.Array  # epoch 0's
  state: Any  # the initial state
  first_batch: dict  # the images of step 0 (batches_per_step batches)


def setup(config, images, labels) -> StepSetup:
  """The family's Trainable, the data on the device and the initial state of a benchmark run."""
  info = data_lib.DATASETS[config.dataset]
  family = families.get(config.model)
  n = family.batches_per_step(config)
  trainable = family.build(config, info, state_lib.total_train_steps(config, len(labels), n))
  data = data_lib.to_device(images, labels)
  permutation = jax.jit(data_lib.epoch_permutation, static_argnums=(0, 2))
  perm = permutation(config.seed, 0, len(labels))
  state = jax.jit(trainable.init)(jax.random.PRNGKey(config.seed))
  first_batch = data_lib.get_batch(data, perm, 0, config.batch_size * n, scale=config.scale)
  return StepSetup(trainable, n, data, permutation, perm, state, first_batch)


def time_jax(config, images, labels, steps: int, warmup: int, epoch: bool = False,
             profile: bool = False) -> dict:
  """compile_s, per-step samples in ms (one per call), FLOPs of the real training path, with
  `epoch` the seconds and steps of one epoch run as train.py runs it, and with `profile` the
  step's ops by time (`step_profile.op_times`, run before the timed calls)."""
  batch, k, num = config.batch_size, config.steps_per_call, len(labels)
  trainable, n, data, permutation, perm, state, first_batch = setup(config, images, labels)
  steps_per_epoch = data_lib.steps_per_epoch(num, batch * n)
  flops = step_flops(trainable.train_step, state, first_batch)
  ops = step_profile.op_times(trainable.train_step, state, first_batch) if profile else None
  try:
    run = parallel.make_train_loop(trainable.train_step, batch_size=batch, scale=config.scale,
                                   binarize=config.binarize, steps_per_call=k, mode=config.parallel,
                                   batches_per_step=n)
  except ValueError as e:
    raise BenchmarkError(str(e)) from None
  state, data, perm = run.put_state(state), run.put_data(data), run.put_data(perm)
  starts = steps_per_epoch - k + 1  # calls cycle through the epoch's steps

  def call(i: int) -> float:
    nonlocal state
    start = time.perf_counter()
    state, sums = run(state, data, perm, (i * k) % starts, k)
    jax.block_until_ready((state, sums))
    return time.perf_counter() - start

  first = call(0)
  for i in range(math.ceil(warmup / k)):
    call(1 + i)
  samples = [1e3 * call(i) / k for i in range(max(MIN_CALLS, math.ceil(steps / k)))]
  compile_s = max(0.0, first - k * statistics.median(samples) / 1e3)
  result = {"compile_s": compile_s, "samples_ms": samples, "flops": flops,
            "devices": run.num_devices, "ops": ops}
  if epoch:
    start = time.perf_counter()
    perm = run.put_data(permutation(config.seed, 1, num))
    for s in range(0, steps_per_epoch, config.log_every_steps):
      state, sums = run(state, data, perm, s, min(config.log_every_steps, steps_per_epoch - s))
      run.get_state(state)
      jax.device_get(sums)
    jax.block_until_ready(state)
    result.update(epoch_s=time.perf_counter() - start, epoch_steps=steps_per_epoch)
  return result


def torch_device(torch) -> str:
  """Where the PyTorch reference runs: 'cuda' when PyTorch sees a GPU, else 'cpu'."""
  return "cuda" if torch.cuda.is_available() else "cpu"


def time_torch(config, images, labels, steps: int, warmup: int,
               compiled: bool = False) -> tuple[list[float], str]:
  """Per-step times in ms of the PyTorch reference on the same data, batch and config, and its
  device (`torch_device`): model, optimizer state, data and noise all live there. Eager, or with
  `compiled` its networks `torch.compile`d (`reference.compile()`; the optimizer stays eager); the first of the
  returned samples is then the compiling step, the rest follow `warmup` more steps."""
  try:
    from aigc_jax import torch_reference  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise BenchmarkError(str(e)) from None
  import torch  # pylint: disable=g-import-not-at-top

  torch.manual_seed(config.seed)
  info = data_lib.DATASETS[config.dataset]
  n = families.get(config.model).batches_per_step(config)
  batch, num = config.batch_size * n, len(labels)  # the images of one step
  device = torch_device(torch)
  sync = torch.cuda.synchronize if device == "cuda" else lambda: None
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW, as PyTorch users keep it
  x, y = x.to(device), torch.from_numpy(labels).long().to(device)
  per_epoch = data_lib.steps_per_epoch(num, batch)
  samples = []
  with torch.device(device):  # where the modules, the optimizer state and the noise are made
    reference = torch_reference.build(config, info, state_lib.total_train_steps(config, num, n))
    if compiled:
      reference.compile()
    perm = torch.randperm(num)
    for i in range(warmup + steps):
      sync()
      start = time.perf_counter()
      idx = perm[(i % per_epoch) * batch:(i % per_epoch + 1) * batch]
      reference.step(x[idx], y[idx])
      sync()
      samples.append(1e3 * (time.perf_counter() - start))
  return samples[:1] + samples[1 + warmup:] if compiled else samples[warmup:], device


def torch_results(config, images, labels, steps: int, warmup: int, step_ms: float,
                  compiled: bool) -> dict:
  """The PyTorch keys of a result: eager (torch_step_ms, speedup_vs_torch, torch_device) or
  compiled (torch_compile_step_ms, speedup_vs_torch_compile, torch_compile_s: the first step;
  torch_compile_error instead where torch.compile fails on the model)."""
  if not compiled:
    samples, device = time_torch(config, images, labels, steps, warmup)
    torch_ms = statistics.median(samples)
    return {"torch_step_ms": round(torch_ms, 3), "speedup_vs_torch": round(torch_ms / step_ms, 3),
            "torch_device": device}
  try:
    samples, _ = time_torch(config, images, labels, steps, warmup, compiled=True)
  except Exception as e:  # pylint: disable=broad-except  # e.g. no double backward (WGAN-GP)
    return {"torch_compile_error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
  torch_ms = statistics.median(samples[1:])
  return {"torch_compile_step_ms": round(torch_ms, 3),
          "speedup_vs_torch_compile": round(torch_ms / step_ms, 3),
          "torch_compile_s": round(samples[0] / 1e3, 3)}


def benchmark(name: str, config, *, torch: bool = False, torch_compile: bool = False,
              steps: int = 50, warmup: int = 5, peak_size: int = 4096, epoch: bool = False,
              num_images: int = NUM_IMAGES, profile: int = 0) -> dict:
  """The result (the command's JSON keys) of preset `name` with its `bench_config`."""
  info = data_lib.DATASETS[config.dataset]
  per_step = config.batch_size * families.get(config.model).batches_per_step(config)
  if num_images < per_step * config.steps_per_call:
    raise BenchmarkError(f"--images {num_images} is less than one call's {per_step} x "
                         f"{config.steps_per_call} images; use more images or a smaller batch")
  images, labels = synthetic_split(info, num_images)
  labels = families.get(config.model).train_labels(config, images, labels)  # as in training
  with backend.matmul_precision(config):
    jax_run = time_jax(config, images, labels, steps, warmup, epoch, bool(profile))
  step_ms = statistics.median(jax_run["samples_ms"])
  devices = jax_run["devices"]
  gflop = jax_run["flops"] / 1e9
  peak = peak_gflops(peak_size)
  result = {
      "model": ALIASES.get(name, name), "batch": config.batch_size, "devices": devices,
      "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
      "dtype": config.compute_dtype,
      "compile_s": round(jax_run["compile_s"], 3), "step_ms": round(step_ms, 3),
      "step_ms_min": round(min(jax_run["samples_ms"]), 3),
      "step_ms_max": round(max(jax_run["samples_ms"]), 3),
      "images_per_s": round(per_step * 1e3 / step_ms, 1),  # real images; batch_size is global
      "gflop_per_step": round(gflop, 4), "gflops": round(gflop * 1e3 / step_ms, 2),
      "peak_gflops": round(peak, 2), "fraction_of_peak": round(gflop * 1e3 / step_ms / peak, 4),
  }
  if epoch:
    result.update(epoch_s=round(jax_run["epoch_s"], 6), epoch_steps=jax_run["epoch_steps"],
                  epoch_vs_steps=round(jax_run["epoch_s"] * 1e3 / step_ms / jax_run["epoch_steps"], 3))
  if profile:
    print(step_profile.describe(jax_run["ops"], profile, step_ms), file=sys.stderr, flush=True)
  if torch:
    result.update(torch_results(config, images, labels, steps, warmup, step_ms, False))
  if torch_compile:
    result.update(torch_results(config, images, labels, steps, warmup, step_ms, True))
  return result


def describe(result: dict, steps_per_call: int) -> str:
  """A few human-readable lines of one result."""
  r = result
  lines = [f"{r['model']} batch {r['batch']} on {r['devices']} device(s) ({r['backend']}, "
           f"{r['device_kind']}), {steps_per_call} "
           f"step(s) per call: {r['step_ms']:.2f} ms/step (min {r['step_ms_min']:.2f}, max "
           f"{r['step_ms_max']:.2f}), {r['images_per_s']:.0f} images/s, compile "
           f"{r['compile_s']:.2f} s",
           f"{r['gflop_per_step']:.3f} GFLOP/step -> {r['gflops']:.1f} GFLOP/s = "
           f"{100 * r['fraction_of_peak']:.0f}% of the measured fp32 matmul peak "
           f"({r['peak_gflops']:.1f} GFLOP/s)"]
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


def machine_line(load_before: float) -> str:
  """The processor that ran JAX (the CPU's model on the cpu backend, else the device kind), cores,
  library versions and thread counts or devices, date, load average before the run."""
  name = jax.default_backend()  # not `backend`: that is the aigc_jax module here
  if name == "cpu":
    jax_part = (f"{cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__} on XLA:cpu (its "
                "default thread pool, one thread per core)")
  else:
    jax_part = (f"{jax.device_count()} x {jax.devices()[0].device_kind}, {os.cpu_count()} host "
                f"cores; jax {jax.__version__} on XLA:{name}")
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch_part = (f"torch {torch.__version__} on {torch_device(torch)} "
                  f"({torch.get_num_threads()} CPU threads, its default)")
  except ImportError:
    torch_part = "no torch"
  return (f"{jax_part}; {torch_part}; {datetime.datetime.now():%Y-%m-%d %H:%M}; load average "
          f"{load_before:.2f} before the run")


def is_busy(load: float) -> bool:
  """Whether other processes were running: a 1-minute load average over half the cores."""
  return load > 0.5 * (os.cpu_count() or 1)


def busy_warning(load: float) -> str:
  return (f"busy machine: the load average was {load:.1f} on {os.cpu_count()} cores before the "
          "run, so other processes shared the cores. Every time is inflated, and PyTorch's OpenMP "
          "threads slow down many-fold on oversubscribed cores, so the ratios overstate JAX's "
          "lead. Regenerate with `make bench` on a quiet machine.")


def table(results: list[dict], command: str, load_before: float, steps: int, warmup: int) -> str:
  """benchmarks/RESULTS.md: the table, the machine, the targets."""
  def cell(r, key, fmt):
    return format(r[key], fmt) if key in r else "-"

  rows = [f"| {r['model']} | {r['batch']} | {r['step_ms']:.2f} | {cell(r, 'torch_step_ms', '.2f')} "
          f"| {cell(r, 'speedup_vs_torch', '.2f')} | {cell(r, 'torch_compile_step_ms', '.2f')} "
          f"| {cell(r, 'speedup_vs_torch_compile', '.2f')} | {100 * r['fraction_of_peak']:.1f} "
          f"| {r['compile_s']:.2f} |" for r in results]
  peak = results[0]["peak_gflops"] if results else 0.0
  lines = [
      "# Train-step benchmarks", "",
      f"Generated by `{command}` (`make bench`). Machine: {machine_line(load_before)}.", "",
      "One step is a full train step (a GAN's n_critic D updates and its G update). JAX: the "
      "training loop's path (`parallel.make_train_loop`, the experiment's steps_per_call), median "
      f"over >= {steps} steps after {warmup} warm-up steps; PyTorch: the same model, optimizer and "
      "losses in eager mode (`aigc_jax/torch_reference.py`), median of "
      f"{steps} steps, in the same process; with --torch-compile also with every module "
      "`torch.compile`d (default mode; its compiling first step not counted). Ratio = PyTorch ms "
      "/ JAX ms. % of peak: XLA's FLOP "
      f"count of the step per second over the measured fp32 matmul peak ({peak:.1f} GFLOP/s, "
      "a 4096x4096 float32 `jnp.dot` at HIGHEST precision). Compile s: the first call less a "
      "steady one.", "",
      *([f"**Warning**, {busy_warning(load_before)}", ""] if is_busy(load_before) else []),
      "| model | batch | JAX ms/step | PyTorch ms/step | ratio | torch.compile ms/step | ratio "
      "| % of peak | compile s |",
      "|---|---|---|---|---|---|---|---|---|", *rows, "", "Targets (issue 5):", ""]
  def verdict(met: bool) -> str:
    return "no verdict: busy machine" if is_busy(load_before) else "met" if met else "missed"

  by_run = {(r["model"], r["batch"]): r for r in results}
  for model, batch, key, compare, threshold, what in TARGETS:
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
  return "\n".join(lines) + "\n"


def positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value <= 0:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
  return value


def parse_run(text: str) -> tuple[str, int | None]:
  """NAME or NAME:BATCH."""
  name, _, batch = text.partition(":")
  return name, positive_int(batch) if batch else None


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m aigc_jax.benchmark",
      description="Time an experiment's train step (JAX, optionally vs PyTorch eager).",
      epilog="--config.KEY=VALUE (repeatable) changes a key of the experiment's config, as the "
      "experiment files take it, e.g. --config.upsample=transpose.")
  parser.add_argument("--model", metavar="NAME", help=f"an experiment preset: {', '.join(model_names())} "
                      "(mlp_gan = gan_mlp)")
  parser.add_argument("--batch", type=positive_int, nargs="+", metavar="B",
                      help="batch size, or several to sweep (default: the experiment's)")
  parser.add_argument("--parallel", default="none", choices=PARALLEL_MODES, metavar="MODE",
                      help=f"data-parallel mode: {', '.join(PARALLEL_MODES)} (default none: one "
                      "device)")
  parser.add_argument("--steps-per-call", type=positive_int, metavar="K",
                      help="train steps per dispatch (default: the experiment's)")
  parser.add_argument("--torch", action="store_true", help="also time the PyTorch eager reference")
  parser.add_argument("--torch-compile", action="store_true", help="also time the PyTorch "
                      "reference with its modules torch.compile'd")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--epoch", action="store_true", help="also time one epoch as train.py runs it "
                      "(keys epoch_s, epoch_steps, epoch_vs_steps)")
  parser.add_argument("--profile", type=positive_int, metavar="N", help="also print the N ops of "
                      "the compiled step that take the most time (jax.profiler; to stderr)")
  parser.add_argument("--images", type=positive_int, default=NUM_IMAGES, metavar="N",
                      help=f"size of the synthetic training set (default {NUM_IMAGES:,}, as "
                      "Fashion-MNIST's)")
  parser.add_argument("--steps", type=positive_int, default=50, metavar="N", help="timed steps (default 50)")
  parser.add_argument("--warmup", type=int, default=5, metavar="N", help="warm-up steps after the compiling "
                      "first call (default 5)")
  parser.add_argument("--peak-size", type=positive_int, default=4096, metavar="N",
                      help="side of the square matmul that measures the peak (default 4096)")
  parser.add_argument("--table", metavar="OUT.md", help="run --models and write a markdown table")
  parser.add_argument("--models", nargs="+", metavar="NAME[:BATCH]", type=parse_run,
                      help="with --table (default: every experiment at its reference batch)")
  args, overrides = parser.parse_known_args(argv)
  if args.table is None and not args.model:
    parser.error("--model is required (or --table OUT.md)")
  if args.warmup < 0:
    parser.error(f"--warmup must be >= 0, got {args.warmup}")
  runs = [(args.model, None)]
  if args.table is not None and not args.model:
    runs = args.models or [parse_run(run) for run in TABLE_RUNS]
  if args.batch:  # a sweep: every model at every batch
    runs = [(name, batch) for name in dict.fromkeys(name for name, _ in runs)
            for batch in args.batch]
  load_before = os.getloadavg()[0]
  results = []
  try:  # every run's config is checked before anything is timed
    configs = [(name, bench_config(name, batch, args.steps_per_call, args.parallel, overrides))
               for name, batch in runs]
    if is_busy(load_before):
      print(f"warning, {busy_warning(load_before)}", file=sys.stderr)
    for name, config in configs:
      result = benchmark(name, config, torch=args.torch, torch_compile=args.torch_compile,
                         steps=args.steps, warmup=args.warmup,
                         peak_size=args.peak_size, epoch=args.epoch, num_images=args.images,
                         profile=args.profile or 0)
      results.append(result)
      print(json.dumps(result) if args.json else describe(result, config.steps_per_call),
            flush=True)
  except BenchmarkError as e:
    parser.error(str(e))
  if args.table is not None:
    command = "python -m aigc_jax.benchmark " + " ".join(sys.argv[1:] if argv is None else argv)
    Path(args.table).write_text(table(results, command, load_before, args.steps, args.warmup))
    print(f"wrote {args.table}", file=sys.stderr)


if __name__ == "__main__":
  main()
