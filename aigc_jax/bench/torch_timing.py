"""Times the PyTorch reference of a config (`bench.torch_reference`) on the benchmark's data.

Eager, or with its networks `torch.compile`d; on CUDA when PyTorch sees a GPU, else the CPU; in
the same process as the JAX timing, step by step.
"""

from __future__ import annotations

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
    raise BenchmarkError(f"no PyTorch reference for model {name}; --torch and --torch-compile "
                         f"take one of {', '.join(torch_reference.MODELS)}")
  reason = torch_reference.unsupported(config)
  if reason:
    raise BenchmarkError(f"no PyTorch reference for model {name} with this config: {reason}")


def torch_device(torch) -> str:
  """Where the PyTorch reference runs: 'cuda' when PyTorch sees a GPU, else 'cpu'."""
  return "cuda" if torch.cuda.is_available() else "cpu"


def time_torch(config, images, labels, steps: int, warmup: int,
               compiled: bool = False) -> tuple[list[float], str]:
  """Per-step times in ms of the PyTorch reference on the same data, batch and config, and its
  device (`torch_device`): model, optimizer state, data and noise all live there. Eager: `steps`
  samples after `warmup` steps. With `compiled` its networks `torch.compile`d
  (`reference.compile()`; the optimizer stays eager): the first sample is the compiling step, the
  `steps` others follow `warmup` more steps. BenchmarkError where torch is not installed."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise BenchmarkError(torch_reference.MISSING_TORCH) from None
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
                  compiled: bool = False) -> dict:
  """The PyTorch keys of a result, given the JAX median `step_ms`: eager (torch_step_ms,
  speedup_vs_torch, torch_device) or compiled (torch_compile_step_ms, speedup_vs_torch_compile,
  torch_compile_s: the first step; torch_compile_error instead where torch.compile fails)."""
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
