"""Draw samples from a trained workdir into an .npz file.

python -m aigc_jax.sample --workdir DIR --num N --out FILE.npz [--seed S]
    [--checkpoint best|latest | --step N] [--sampler S --sample_steps K --guidance_scale W]

The file holds `images`, uint8 of shape (N, H, W) for one channel ((N, H, W, C) otherwise), and
`labels` (int32) for conditional models, the class each image was asked to show (for a
self-conditioned GAN, `clusters` instead: the pixel cluster id each image was drawn from).
`python -m aigc_jax.evaluate --samples FILE.npz` scores such a file. A diffusion model samples
with its config's sampler, steps and guidance unless the flags choose others.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import resource
import sys
import time

import jax
import numpy as np
from absl import flags

from aigc_jax import backend
from aigc_jax import command_line
from aigc_jax import data as data_lib
from aigc_jax import entry
from aigc_jax import progress as progress_lib
from aigc_jax import safe_files
from aigc_jax import workdir as workdir_lib

FLAGS = command_line.new_flags()
flags.DEFINE_string("workdir", None, "A training run's directory.", flag_values=FLAGS)
flags.DEFINE_integer("num", 64, "How many images to draw.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Output .npz path.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Sampling seed (same seed, same images).", flag_values=FLAGS)
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to sample from.",
                  flag_values=FLAGS)
flags.DEFINE_integer("step", None, "Sample from this checkpoint step instead.", flag_values=FLAGS)
flags.DEFINE_string("sampler", None, "Diffusion: ddim or ddpm (eps/v), euler or heun (flow).",
                    flag_values=FLAGS)
flags.DEFINE_integer("sample_steps", None, "Diffusion: the sampler's steps.", flag_values=FLAGS)
flags.DEFINE_float("guidance_scale", None, "Class-conditional diffusion: the guidance scale.",
                   flag_values=FLAGS)
PROGRAM = "python -m aigc_jax.sample"
log = logging.getLogger("aigc_jax.sample")  # not __name__: "__main__" under python -m

LOWER_NUM = "--num (write several files of fewer images)"
CONVERT_ROWS = 4096  # images converted to uint8 at once (no full-size float temporaries)


def available_memory() -> int | None:
  """Bytes this process can still allocate: the least of the host's available memory, its
  cgroup's room and its address-space limit (ulimit -v) less what it maps; None if unknown."""
  room = []
  with contextlib.suppress(OSError, ValueError, IndexError):
    with open("/proc/meminfo") as f:
      room += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
  with contextlib.suppress(OSError, ValueError):
    with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
      room.append(int(f.read()) - int(g.read()))
  limit = resource.getrlimit(resource.RLIMIT_AS)[0]
  with contextlib.suppress(OSError, ValueError, IndexError):
    with open("/proc/self/status") as f:
      mapped = [int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")][0]
    if limit != resource.RLIM_INFINITY:
      room.append(limit - mapped)
  return min(room) if room else None


def check_memory(num: int, image_shape) -> None:
  """Raises OutOfMemory before sampling when `num` images of `image_shape` (the model's float32
  output, its host copy and the uint8 file's array, at once) cannot fit in the memory left."""
  need = num * (int(np.prod(image_shape)) * 9 + 16)
  room = available_memory()
  if room is not None and need > room:
    raise entry.OutOfMemory(
        f"--num {num} needs about {need / 2**30:.1f} GiB of memory at once ({num} images of "
        f"{tuple(image_shape)}), more than the {max(room, 0) / 2**30:.1f} GiB available; lower "
        f"{LOWER_NUM}")


def to_uint8(images) -> np.ndarray:
  """[0, 1] images as uint8, a block of rows at a time."""
  images = np.asarray(images)
  out = np.empty(images.shape, np.uint8)
  for start in range(0, len(images), CONVERT_ROWS):
    block = images[start:start + CONVERT_ROWS]
    out[start:start + CONVERT_ROWS] = np.clip(np.round(block * 255.0), 0, 255)
  return out


def sample_to_file(workdir: str, num: int, out: str, seed: int = 0, which: str | int = "best",
                   **options) -> dict:
  """Writes `num` samples of `workdir` to `out`; `options` are a diffusion model's sampler,
  sample_steps and guidance_scale (ConfigError for an option the model lacks; OutOfMemory
  before sampling when `num` images cannot fit in memory)."""
  run = workdir_lib.load_trained(workdir, which)
  workdir_lib.check_tool_options(run.config, options)
  check_memory(num, data_lib.config_info(run.config).image_shape)
  log.info("%s", backend.describe_devices())
  start = time.perf_counter()
  log.info("sampling %d images from step %d...", num, run.step)
  if "progress" in inspect.signature(run.trainable.sample).parameters:  # drawn in chunks
    options = {**options, "progress": progress_lib.progress}
  with entry.doing("sampling", lower=LOWER_NUM):
    images, labels = run.trainable.sample(run.state, jax.random.PRNGKey(seed), num, **options)
    images = to_uint8(images)
  log.info("sampled %d images in %.1f s", num, time.perf_counter() - start)
  if images.shape[-1] == 1:
    images = images[..., 0]
  arrays = {"images": images}
  if labels is not None:  # cluster ids are no classes: evaluate must not score them as labels
    key = "clusters" if run.config.get("pixel_clusters", 0) else "labels"
    arrays[key] = np.asarray(labels, np.int32)
  try:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  except OSError as e:
    raise safe_files.write_error(out, e, target="--out") from None
  safe_files.atomic_write(out, lambda f: np.savez_compressed(f, **arrays), target="--out")
  return {"out": out, "step": run.step, "images": list(images.shape)}


def check_flags() -> None:
  """Exits with one error line for flags that cannot be used."""
  if not FLAGS.workdir or not FLAGS.out:
    print(
        "error: --workdir and --out are required, e.g. python -m aigc_jax.sample "
        "--workdir runs/vae --num 64 --out samples.npz", file=sys.stderr)
    sys.exit(2)
  if FLAGS.num <= 0:
    print(f"error: --num must be positive, got {FLAGS.num}", file=sys.stderr)
    sys.exit(2)
  if os.path.isdir(FLAGS.out) or FLAGS.out.endswith(("/", os.sep)):
    print(
        f"error: --out {FLAGS.out} is a directory; name a file in it, e.g. --out "
        f"{os.path.join(FLAGS.out, 'samples.npz')}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
  """The command, on its arguments `argv` (default sys.argv[1:])."""
  entry.begin("sampling", module=__name__)
  command_line.parse(FLAGS, argv, __doc__, PROGRAM)
  command_line.use_one_log_format(__name__)
  with entry.command():
    check_flags()
    try:
      which = FLAGS.checkpoint if FLAGS.step is None else FLAGS.step
      options = {
          name: FLAGS[name].value for name in ("sampler", "sample_steps", "guidance_scale")
          if FLAGS[name].value is not None
      }
      info = sample_to_file(FLAGS.workdir, FLAGS.num, FLAGS.out, FLAGS.seed, which, **options)
    except (workdir_lib.CheckpointError, workdir_lib.config_lib.ConfigError,
            safe_files.WorkdirError, entry.OutOfMemory) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except OSError as e:
      print(f"error: {entry.os_error_message(e, FLAGS.out, 'cannot write', '--out')}",
            file=sys.stderr)
      sys.exit(2)
    print(f"wrote {info['images']} images from step {info['step']} to {info['out']}")


if __name__ == "__main__":
  main()
