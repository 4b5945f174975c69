"""The backend JAX runs on: what `auto` config values mean there, its devices, its cluster.

XLA:CPU runs some formulations on slow paths (transposed-convolution and strided-convolution
derivatives, convolutions inside loop bodies), so the project computes those differently there.
On GPUs and TPUs the plain formulation is the default. Every such choice is a config value
whose `auto` resolves here, from one table (`AUTO`); the alternatives compute the same function.

The platform whose choices `auto` takes is JAX's default backend, or the one named by
$AIGC_JAX_PLATFORM_DEFAULTS (`cpu`, `gpu` or `tpu`): with `gpu` a CPU computes what a GPU run
would (its formulations, steps per call and parallel mode), which is how CI runs the accelerator
paths without an accelerator.
"""

from __future__ import annotations

import collections
import importlib.metadata
import os

import jax
import jax.numpy as jnp

PLATFORM_ENV = "AIGC_JAX_PLATFORM_DEFAULTS"
PLATFORMS = ("cpu", "gpu", "tpu")
AUTO_STEPS_PER_CALL = 100  # steps_per_call=0 off the CPU: one dispatch per 100 steps
MATMUL_PRECISIONS = ("default", "high", "highest")
COMPUTE_DTYPES = ("float32", "bfloat16")
PARALLEL_MODES = ("none", "pmap", "shard_map")
AUTO_PARALLEL = "shard_map"  # parallel='auto' on several devices; beat pmap (benchmarks/README.md)

# Config key -> (its value for 'auto' on CPU, on GPUs and TPUs). Every key a family resolves.
AUTO = {
    "upsample_impl": ("subpixel", "conv_transpose"),  # GAN G's transposed convolutions
    "d_conv": ("custom_vjp", "lax"),  # DCGAN D's strided convolutions
    "critic_loop": ("unroll", "scan"),  # the n_critic D updates of one step
    "sample_loop": ("python", "scan"),  # the diffusion sampler's steps
}

# jax's accelerator plugins (distribution -> the platform name they register).
ACCELERATOR_PLUGINS = {
    "jax-cuda12-plugin": "cuda", "jax-cuda13-plugin": "cuda", "jax-rocm6-plugin": "rocm",
    "jax-rocm7-plugin": "rocm", "libtpu": "tpu"
}


class PlatformError(ValueError):
  """$AIGC_JAX_PLATFORM_DEFAULTS names no platform, or JAX fell back to the CPU."""


def at_least_float32(x) -> jnp.ndarray:
  """x as an array of at least float32 precision (bfloat16 -> float32; float32 unchanged)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def forced_platform() -> str:
  """$AIGC_JAX_PLATFORM_DEFAULTS checked ('' when unset); starts no JAX backend."""
  forced = os.environ.get(PLATFORM_ENV, "").strip().lower()
  if forced and forced not in PLATFORMS:
    raise PlatformError(f"{PLATFORM_ENV}='{forced}' is unknown; use one of {PLATFORMS} "
                        "(or leave it unset for the backend JAX runs on)")
  return forced


def computing_platform() -> str:
  """JAX's default backend as 'cpu', 'gpu' (CUDA and ROCm too) or 'tpu'."""
  name = jax.default_backend()
  return "gpu" if name in ("cuda", "rocm") else name


def platform() -> str:
  """'cpu', 'gpu' or 'tpu': whose defaults `auto` values take ($AIGC_JAX_PLATFORM_DEFAULTS when
  set, else `computing_platform`)."""
  return forced_platform() or computing_platform()


def requested_platforms() -> str:
  """The platforms JAX was told to use (JAX_PLATFORMS or jax_platforms); '' when left to jax."""
  return os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""


def check_no_fallback() -> None:
  """Raises PlatformError when a GPU or TPU plugin of jax is installed but JAX runs on the CPU
  without being asked to (JAX_PLATFORMS): a broken driver would otherwise train on the CPU."""
  if jax.default_backend() != "cpu" or requested_platforms():
    return
  for dist, name in ACCELERATOR_PLUGINS.items():
    try:
      importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
      continue
    try:
      jax.devices(name)
      reason = f"its '{name}' backend started but is not the default"
    except RuntimeError as e:
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise PlatformError(f"{dist} is installed but JAX fell back to the CPU ({reason}); fix the "
                        "driver or the plugin, or set JAX_PLATFORMS=cpu to run on the CPU on "
                        "purpose")


def is_cpu() -> bool:
  """Whether `auto` values take the CPU's choices (see `platform`)."""
  return platform() == "cpu"


def emulated() -> bool:
  """Whether the defaults are another platform's than the backend's that computes."""
  return platform() != computing_platform()


def choose(value: str, cpu: str, accelerator: str) -> str:
  """`value`, or for 'auto' the CPU formulation on XLA:CPU and the plain one elsewhere."""
  if value != "auto":
    return value
  return cpu if is_cpu() else accelerator


def resolve(key: str, value: str) -> str:
  """Config key `key`'s `value`, with 'auto' resolved from `AUTO` for this platform."""
  return choose(value, *AUTO[key])


def parallel_mode(value: str, population: bool = False) -> str:
  """`value`, or for 'auto': `AUTO_PARALLEL` over all devices in a job of several processes, or
  on a GPU or TPU with several devices; 'none' otherwise (one device; CPU devices share the same
  cores, which one program already uses) and for a population, whose members spread over the
  devices instead."""
  if value != "auto":
    return value
  if population:
    return "none"
  several = jax.process_count() > 1 or (not is_cpu() and jax.device_count() > 1)
  return AUTO_PARALLEL if several else "none"


def choices(config, population: bool = False) -> dict:
  """The values a run of `config` takes for each of its platform-dependent keys."""
  out = {
      "platform": platform() + (f" (emulated on {jax.default_backend()})" if emulated() else ""),
      "steps_per_call": steps_per_call(config.steps_per_call),
      "parallel": parallel_mode(config.parallel, population),
      "matmul_precision": config.matmul_precision, "compute_dtype": config.compute_dtype
  }
  out.update({key: resolve(key, config[key]) for key in AUTO if key in config})
  return out


def steps_per_call(value: int) -> int:
  """`value`, or for 0 (auto) 1 on CPU (convolutions inside a loop body are slow there) and
  `AUTO_STEPS_PER_CALL` elsewhere."""
  if value > 0:
    return int(value)
  return 1 if is_cpu() else AUTO_STEPS_PER_CALL


def compute_dtype(config) -> jnp.dtype:
  """The dtype models compute in (`compute_dtype`); parameters and losses stay float32."""
  return jnp.dtype(config.compute_dtype)


def matmul_precision(config):
  """A context for `jax.default_matmul_precision` of the config's `matmul_precision`: trace and
  compile a run's functions inside it ('default' leaves the backend's choice, e.g. TF32 on
  recent NVIDIA GPUs; 'highest' is full float32)."""
  return jax.default_matmul_precision(config.matmul_precision)


def cpu_device_per_core() -> None:
  """Asks XLA:CPU for one device per core the process may use, unless a count is already set
  (`jax_num_cpu_devices`, or --xla_force_host_platform_device_count in XLA_FLAGS). Call it before
  JAX starts a backend; afterwards it changes nothing. Work sharded over the devices (a sweep's
  members) then runs on every core at once; GPU and TPU backends are not affected."""
  if (jax.config.jax_num_cpu_devices > 0 or
      "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")):
    return
  try:
    jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))
  except RuntimeError:  # a backend has started: its devices stay as they are
    pass


def _count(name: str) -> int:
  """The environment variable `name` as a count (0 when unset or not a number)."""
  text = os.environ.get(name, "").strip()
  return int(text) if text.isdigit() else 0


def cluster_environment() -> str | None:
  """'slurm', 'ompi' or 'tpu' when the environment shows a job of several processes that
  `jax.distributed.initialize()` finds by itself; None otherwise (one SLURM task, a lone TPU VM).

  SLURM: the variables jax's own detection reads (srun sets them) and SLURM_NTASKS > 1. Open MPI:
  OMPI_COMM_WORLD_SIZE > 1. TPU pod: several hosts in TPU_PROCESS_ADDRESSES (or
  TPU_WORKER_HOSTNAMES), or MEGASCALE_NUM_SLICES > 1.
  """
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")
  if all(name in os.environ for name in slurm) and _count("SLURM_NTASKS") > 1:
    return "slurm"
  if _count("OMPI_COMM_WORLD_SIZE") > 1:
    return "ompi"
  hosts = os.environ.get("TPU_PROCESS_ADDRESSES", os.environ.get("TPU_WORKER_HOSTNAMES", ""))
  if len([h for h in hosts.split(",") if h.strip()]) > 1 or _count("MEGASCALE_NUM_SLICES") > 1:
    return "tpu"
  return None


def describe_devices() -> str:
  """'backend gpu, 1 x NVIDIA H200 (process 0 of 1)': the backend and this process's devices."""
  kinds = collections.Counter(device.device_kind for device in jax.local_devices())
  devices = ", ".join(f"{count} x {kind}" for kind, count in kinds.items())
  return (f"backend {jax.default_backend()}, {devices} "
          f"(process {jax.process_index()} of {jax.process_count()})")
