"""Times the PyTorch reference of a config (`bench.torch_reference`) on the benchmark's data.

Eager, or with its networks `torch.compile`d; on CUDA when PyTorch sees a GPU, else the CPU; in
the same process as the JAX timing and like it: calls of the config's steps_per_call steps with
one sync per call, TF32 on where JAX's matmul_precision lets XLA use it, off for 'highest'.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import statistics
import time

from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import state as state_lib
from aigc_jax.bench import presets
from aigc_jax.bench import torch_reference
from aigc_jax.bench.presets import BenchmarkError


def check_reference(name: str, config) -> None:
  """Raises BenchmarkError unless preset `name` (an alias allowed) with `config` has a PyTorch
  reference: the preset is in `torch_reference.MODELS` and uses only the options it reproduces.
  Needs no torch."""
  name = presets.canonical_name(name)
  if name not in torch_reference.MODELS:
    raise BenchmarkError(f"no PyTorch reference for model {name}; --torch and --torch_compile "
                         f"take one of {', '.join(torch_reference.MODELS)}")
  reason = torch_reference.unsupported(config)
  if reason:
    raise BenchmarkError(f"no PyTorch reference for model {name} with this config: {reason}")


def torch_device(torch) -> str:
  """Where the PyTorch reference runs: 'cuda' when PyTorch sees a GPU, else 'cpu'."""
  return "cuda" if torch.cuda.is_available() else "cpu"


def call_counts(steps: int, warmup: int, steps_per_call: int, min_calls: int) -> tuple[int, int]:
  """(timed calls, warm-up calls) of `steps_per_call` steps each: enough calls for `steps` timed
  steps and at least `min_calls` (so a many-steps-per-call model has a spread too), and enough
  for `warmup` steps. JAX and PyTorch both run these counts."""
  k = steps_per_call
  return max(min_calls, math.ceil(steps / k)), math.ceil(warmup / k)


@contextlib.contextmanager
def tf32(torch, enabled: bool):
  """PyTorch's CUDA matmuls and cuDNN convolutions with TF32 `enabled` or not (no-ops on a CPU);
  the previous flags restored on exit."""
  old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
  try:
    yield
  finally:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def uses_tf32(config) -> bool:
  """Whether PyTorch runs `config` with TF32: where JAX's matmul_precision is not 'highest'."""
  return config.compute_dtype == "float32" and config.matmul_precision != "highest"


def time_torch(config, images, labels, counts: tuple[int, int],
               compiled: bool = False) -> tuple[list[float], str]:
  """Per-step times in ms of the PyTorch reference on the same data, batch and config, and its
  device (`torch_device`): model, optimizer state, data and noise all live there. Timed as JAX
  is: `counts` = (timed, warm-up) calls of config.steps_per_call steps with one sync per call,
  one sample (call ms / steps) per timed call; TF32 as `uses_tf32`. With `compiled` its networks
  `torch.compile`d (`reference.compile()`; the optimizer stays eager) and a first sample, the
  compiling step alone. BenchmarkError where torch is not installed."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise BenchmarkError(torch_reference.MISSING_TORCH) from None
  torch.manual_seed(config.seed)
  info = data_lib.config_info(config)
  n = families.get(config.model).batches_per_step(config)
  batch, num, k = config.batch_size * n, len(labels), config.steps_per_call
  device = torch_device(torch)
  sync = torch.cuda.synchronize if device == "cuda" else lambda: None
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW, as PyTorch users keep it
  x, y = x.to(device), torch.from_numpy(labels).long().to(device)
  per_epoch = data_lib.steps_per_epoch(num, batch)
  steps, samples = itertools.count(), []  # the step index runs on across calls

  def call(num_steps: int) -> float:
    sync()
    start = time.perf_counter()
    for i in itertools.islice(steps, num_steps):
      idx = perm[(i % per_epoch) * batch:(i % per_epoch + 1) * batch]
      reference.step(x[idx], y[idx])
    sync()
    return 1e3 * (time.perf_counter() - start) / num_steps

  with torch.device(device), tf32(torch, uses_tf32(config)):  # where modules, state, noise live
    reference = torch_reference.build(config, info, state_lib.total_train_steps(config, num, n))
    perm = torch.randperm(num)
    if compiled:
      reference.compile()
      samples.append(call(1))
    for _ in range(counts[1]):
      call(k)
    samples += [call(k) for _ in range(counts[0])]
  return samples, device


def torch_results(config, images, labels, counts: tuple[int, int], step_ms: float,
                  compiled: bool = False) -> dict:
  """The PyTorch keys of a result, given the JAX median `step_ms` (`time_torch`'s `counts`):
  eager (torch_step_ms, speedup_vs_torch, torch_device, torch_tf32) or compiled
  (torch_compile_step_ms, speedup_vs_torch_compile, torch_compile_s: the first step;
  torch_compile_error instead where torch.compile fails)."""
  if not compiled:
    samples, device = time_torch(config, images, labels, counts)
    torch_ms = statistics.median(samples)
    return {
        "torch_step_ms": round(torch_ms, 3), "speedup_vs_torch": round(torch_ms / step_ms, 3),
        "torch_device": device, "torch_tf32": uses_tf32(config)
    }
  try:
    samples, _ = time_torch(config, images, labels, counts, compiled=True)
  except Exception as e:  # pylint: disable=broad-except  # e.g. no double backward (WGAN-GP)
    return {"torch_compile_error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
  torch_ms = statistics.median(samples[1:])
  return {
      "torch_compile_step_ms": round(torch_ms,
                                     3), "speedup_vs_torch_compile": round(torch_ms / step_ms, 3),
      "torch_compile_s": round(samples[0] / 1e3, 3)
  }
