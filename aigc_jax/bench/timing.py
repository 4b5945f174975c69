"""Times an experiment's real train step in JAX: the training loop's own path over synthetic data.

The JAX side is the family's `train_step` under `parallel.make_train_loop` over a synthetic uint8
dataset on the device; one step is a full train step (for a GAN, its n_critic D updates and the
G update). `benchmark` returns one result: the keys `python -m aigc_jax.bench --json` prints.
JAX and PyTorch are timed alike: calls of steps_per_call steps, one sync per call, the per-step
time a call's time / steps_per_call (`torch_timing.call_counts` calls each). A row's % of peak
divides by the peak of what it ran (`peak_kind`), measured in the same process.
"""

from __future__ import annotations

import functools
import math
import statistics
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import backend
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import parallel
from aigc_jax import state as state_lib
from aigc_jax.bench import presets
from aigc_jax.bench import step_profile
from aigc_jax.bench import torch_timing
from aigc_jax.bench.presets import BenchmarkError

NUM_IMAGES = 60_000  # synthetic training set, as large as Fashion-MNIST's
MIN_CALLS = 5  # timed calls at least, so a many-steps-per-call model has a spread too

# The matmul each peak times: (its name, the input dtype, the precision). A row divides by the
# peak of what it ran (`peak_kind`): float32 at its matmul_precision, or bfloat16.
PEAKS = {
    "float32/highest": (jnp.float32, jax.lax.Precision.HIGHEST),
    "float32/high": (jnp.float32, jax.lax.Precision.HIGH),
    "float32/default": (jnp.float32, jax.lax.Precision.DEFAULT),  # TF32 on recent NVIDIA
    "bfloat16": (jnp.bfloat16, jax.lax.Precision.DEFAULT)
}


def peak_kind(config) -> str:
  """The PEAKS entry a run of `config` is judged against: 'bfloat16', else float32 at the
  config's matmul_precision."""
  if config.compute_dtype == "bfloat16":
    return "bfloat16"
  return f"float32/{config.matmul_precision}"


def peak_matmul(a, b, precision=jax.lax.Precision.HIGHEST):
  """The peak's matmul at `precision` (float32 HIGHEST by default: no TF32 rate)."""
  return jnp.dot(a, b, precision=precision)


@functools.cache
def peak_gflops(size: int = 4096, repeats: int = 3, kind: str = "float32/highest") -> float:
  """This machine's matmul rate in GFLOP/s for PEAKS[kind]: the best of `repeats` jitted
  (size x size) @ (size x size) `peak_matmul`s, after one compiling call. Cached."""
  dtype, precision = PEAKS[kind]
  a, b = jax.random.normal(jax.random.PRNGKey(0), (2, size, size), jnp.float32).astype(dtype)
  dot = jax.jit(functools.partial(peak_matmul, precision=precision))
  dot(a, b).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best / 1e9


def images_for(per_step: int, steps_per_call: int) -> int:
  """The synthetic set's size: NUM_IMAGES, or one call's images where a call needs more."""
  return max(NUM_IMAGES, per_step * steps_per_call)


def synthetic_split(info: data_lib.DatasetInfo, num: int, seed: int = 0):
  """Random uint8 images (num, H, W, C) and int32 labels in [0, num_classes): what a step costs
  does not depend on the pixels. Deterministic in `seed`."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num,) + tuple(info.image_shape), dtype=np.uint8)
  return images, rng.integers(0, info.num_classes, num).astype(np.int32)


def step_flops(train_step, state, batch) -> float:
  """XLA's count of floating-point operations in one train step (0.0 where XLA gives none).

  The cost analysis of the lowered, not yet optimized, step: it needs no second compilation (see
  benchmarks/README.md, Method, for how it compares with the compiled step's).
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
  info = data_lib.config_info(config)
  family = families.get(config.model)
  n = family.batches_per_step(config)
  trainable = family.build(config, info, state_lib.total_train_steps(config, len(labels), n))
  data = data_lib.to_device(images, labels)
  permutation = jax.jit(data_lib.epoch_permutation, static_argnums=(0, 2))
  perm = permutation(config.seed, 0, len(labels))
  state = jax.jit(trainable.init)(jax.random.PRNGKey(config.seed))
  first_batch = data_lib.get_batch(data, perm, 0, config.batch_size * n, scale=config.scale)
  return StepSetup(trainable, n, data, permutation, perm, state, first_batch)


def make_loop(config, trainable, batches_per_step: int):
  """`parallel.make_train_loop` for the config; BenchmarkError where its mode cannot run."""
  try:
    return parallel.make_train_loop(trainable.train_step, batch_size=config.batch_size,
                                    scale=config.scale, binarize=config.binarize,
                                    steps_per_call=config.steps_per_call, mode=config.parallel,
                                    batches_per_step=batches_per_step)
  except ValueError as e:
    raise BenchmarkError(str(e)) from None


def time_epoch(config, run, state, data, permutation, num: int, steps_per_epoch: int) -> float:
  """Seconds of one epoch (epoch 1's permutation) run as train.py runs it: chunks of
  log_every_steps steps, the state read back and the metric sums fetched after every chunk."""
  start = time.perf_counter()
  perm = run.place.put_state(permutation(config.seed, 1, num))
  for s in range(0, steps_per_epoch, config.log_every_steps):
    state, sums = run(state, data, perm, s, min(config.log_every_steps, steps_per_epoch - s))
    run.place.get_state(state)
    jax.device_get(sums)
  jax.block_until_ready(state)
  return time.perf_counter() - start


def time_jax(config, images, labels, steps: int, warmup: int, epoch: bool = False,
             profile: bool = False, min_calls: int = MIN_CALLS) -> dict:
  """compile_s, samples_ms (per-step ms, one per call, `torch_timing.call_counts` calls), flops,
  devices and ops (with `profile` the step's ops by time, `step_profile.op_times`, profiled before
  the timed calls; else None); with `epoch` also epoch_s and epoch_steps (`time_epoch`)."""
  k, num = config.steps_per_call, len(labels)
  trainable, n, data, permutation, perm, state, first_batch = setup(config, images, labels)
  steps_per_epoch = data_lib.steps_per_epoch(num, config.batch_size * n)
  flops = step_flops(trainable.train_step, state, first_batch)
  ops = step_profile.op_times(trainable.train_step, state, first_batch) if profile else None
  run = make_loop(config, trainable, n)
  place = run.place
  state, data, perm = place.put_state(state), place.put_data(data), place.put_state(perm)
  starts = steps_per_epoch - k + 1  # calls cycle through the epoch's steps

  def call(i: int) -> float:
    nonlocal state
    start = time.perf_counter()
    state, sums = run(state, data, perm, (i * k) % starts, k)
    jax.block_until_ready((state, sums))
    return time.perf_counter() - start

  timed, warmup_calls = torch_timing.call_counts(steps, warmup, k, min_calls)
  first = call(0)
  for i in range(warmup_calls):
    call(1 + i)
  samples = [1e3 * call(i) / k for i in range(timed)]
  compile_s = max(0.0, first - k * statistics.median(samples) / 1e3)
  result = {
      "compile_s": compile_s, "samples_ms": samples, "flops": flops,
      "devices": run.place.num_devices, "ops": ops
  }
  if epoch:
    epoch_s = time_epoch(config, run, state, data, permutation, num, steps_per_epoch)
    result.update(epoch_s=epoch_s, epoch_steps=steps_per_epoch)
  return result


def jax_keys(name: str, config, jax_run: dict, per_step: int, peak: float) -> dict:
  """The JAX keys of a result from `time_jax`'s output; `per_step` real images per step."""
  step_ms = statistics.median(jax_run["samples_ms"])
  gflop = jax_run["flops"] / 1e9
  return {
      "model": presets.canonical_name(name),
      "batch": config.batch_size,
      "devices": jax_run["devices"],
      "backend": jax.default_backend(),
      "device_kind": jax.devices()[0].device_kind,
      "dtype": config.compute_dtype,
      "matmul_precision": config.matmul_precision,
      "steps_per_call": config.steps_per_call,
      "compile_s": round(jax_run["compile_s"], 3),
      "step_ms": round(step_ms, 3),
      "step_ms_min": round(min(jax_run["samples_ms"]), 3),
      "step_ms_max": round(max(jax_run["samples_ms"]), 3),
      "images_per_s": round(per_step * 1e3 / step_ms, 1),  # real images; batch_size is global
      "gflop_per_step": round(gflop, 4),
      "gflops": round(gflop * 1e3 / step_ms, 2),
      "peak_kind": peak_kind(config),
      "peak_gflops": round(peak, 2),
      "fraction_of_peak": round(gflop * 1e3 / step_ms / peak, 4),
  }


def benchmark(name: str, config, *, torch: bool = False, torch_compile: bool = False,
              steps: int = 50, warmup: int = 5, peak_size: int = 4096, epoch: bool = False,
              num_images: int | None = None, profile: int = 0, min_calls: int = MIN_CALLS) -> dict:
  """The result (the command's JSON keys) of preset `name` with its `bench_config`, over
  `num_images` synthetic images (None: `images_for` the call). JAX and PyTorch both timed in
  calls of steps_per_call steps, one sync per call. Raises BenchmarkError, before anything is
  timed, where `num_images` holds less than one call or `torch`/`torch_compile` asks for a
  PyTorch reference the preset does not have."""
  info = data_lib.config_info(config)
  family = families.get(config.model)
  per_step = config.batch_size * family.batches_per_step(config)
  if num_images is None:
    num_images = images_for(per_step, config.steps_per_call)
  if num_images < per_step * config.steps_per_call:
    raise BenchmarkError(f"--images {num_images} is less than one call's {per_step} x "
                         f"{config.steps_per_call} images; use more images or a smaller batch")
  if torch or torch_compile:
    torch_timing.check_reference(name, config)
  images, labels = synthetic_split(info, num_images)
  labels = family.train_labels(config, images, labels)  # as in training
  with backend.matmul_precision(config):
    jax_run = time_jax(config, images, labels, steps, warmup, epoch, bool(profile), min_calls)
  result = jax_keys(name, config, jax_run, per_step, peak_gflops(peak_size, kind=peak_kind(config)))
  step_ms = statistics.median(jax_run["samples_ms"])
  if epoch:
    epoch_vs_steps = jax_run["epoch_s"] * 1e3 / step_ms / jax_run["epoch_steps"]
    result.update(epoch_s=round(jax_run["epoch_s"], 6), epoch_steps=jax_run["epoch_steps"],
                  epoch_vs_steps=round(epoch_vs_steps, 3))
  if profile:
    print(step_profile.describe(jax_run["ops"], profile, step_ms), file=sys.stderr, flush=True)
  counts = torch_timing.call_counts(steps, warmup, config.steps_per_call, min_calls)
  if torch:
    result.update(torch_timing.torch_results(config, images, labels, counts, step_ms))
  if torch_compile:
    result.update(torch_timing.torch_results(config, images, labels, counts, step_ms,
                                             compiled=True))
  return result
