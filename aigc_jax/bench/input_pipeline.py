"""The streamed input pipeline's throughput: images per second of the loader alone, and of the
loader feeding the config's real train step (the training loop's streamed path).

  python -m aigc_jax.bench --input_pipeline --model dcgan --dataset folder:PATH
      [--config.image_size=64] [--steps 50]

The train split streams whatever its size (max_device_bytes=1). Both figures are over `steps`
steps after `warmup` steps (the first compiles); the step alone is the training loop's own
images/s from the same steps on a chunk already on the device.
"""

from __future__ import annotations

import time

import jax

from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import streaming
from aigc_jax.bench import timing
from aigc_jax.bench.presets import BenchmarkError


def make_stream(config, loop) -> streaming.ChunkStream:
  """The config's train split as a stream for `loop` (BenchmarkError when it cannot be read)."""
  config.max_device_bytes = 1
  per_step = config.batch_size * families.get(config.model).batches_per_step(config)
  try:
    source = streaming.train_source(config, data_lib.config_info(config))
    steps_per_epoch = data_lib.steps_per_epoch(len(source), per_step)
  except data_lib.DataError as e:
    raise BenchmarkError(str(e)) from None
  return streaming.ChunkStream.for_loop(source, loop, seed=config.seed,
                                        steps_per_epoch=steps_per_epoch, rows_per_step=per_step)


def decoding(source: streaming.RowSource) -> str:
  """How the source's rows are decoded, in words."""
  if isinstance(source, streaming.FolderSource):
    return (f"{source.workers} decode processes"
            if source.workers else f"{source.threads} decode threads")
  if isinstance(source, streaming.RecordSource):
    return "TFDS records read at random, fitted on one thread"
  return "no decoding (arrays in memory)"


def _run(loop, stream, state, perm, steps: int, train: bool):
  """Streams (and with `train` trains on) `steps` steps from step 0; (state, seconds)."""
  start, done = time.perf_counter(), 0
  while done < steps:
    num = min(loop.steps_per_call, steps - done,
              stream.steps_per_epoch - done % stream.steps_per_epoch)
    chunk = stream.placed(loop.place, done, num)
    if train:
      state, sums = loop(state, chunk, perm, 0, num)
      jax.block_until_ready(sums)
    else:
      jax.block_until_ready(chunk)
    done += num
  return state, time.perf_counter() - start


def measure(config, steps: int = 50, warmup: int = 5) -> dict:
  """{loader_images_per_s, loader_and_step_images_per_s, step_images_per_s, rows, ...}."""
  family = families.get(config.model)
  try:
    info = data_lib.config_info(config)
  except data_lib.DataError as e:
    raise BenchmarkError(str(e)) from None
  trainable = family.build(config, info, 10_000)
  loop = timing.make_loop(config, trainable, family.batches_per_step(config))
  stream = make_stream(config, loop)
  per_step = stream.rows_per_step
  perm = loop.place.put_state(stream.order())
  state = loop.place.put_state(jax.jit(trainable.init)(jax.random.PRNGKey(config.seed)))
  state, _ = _run(loop, stream, state, perm, warmup, True)  # compiles
  _, loader_s = _run(loop, stream, None, perm, steps, False)
  state, both_s = _run(loop, stream, state, perm, steps, True)
  chunk = stream.placed(loop.place, 0, loop.steps_per_call)
  start = time.perf_counter()
  for _ in range(-(-steps // loop.steps_per_call)):
    state, sums = loop(state, chunk, perm, 0, loop.steps_per_call)
  jax.block_until_ready(sums)
  step_s = (time.perf_counter() - start) / (-(-steps // loop.steps_per_call) * loop.steps_per_call)
  stream.close()
  return {
      "model": config.model, "dataset": config.dataset, "rows": len(stream.source),
      "image_shape": list(stream.image_shape), "batch": per_step, "steps": steps,
      "decoding": decoding(stream.source), "loader_images_per_s": steps * per_step / loader_s,
      "loader_and_step_images_per_s": steps * per_step / both_s,
      "step_images_per_s": per_step / step_s, "backend": jax.default_backend()
  }


def describe(result: dict) -> str:
  return (f"{result['model']} on {result['dataset']} ({result['rows']} rows of "
          f"{'x'.join(map(str, result['image_shape']))}, batch {result['batch']}, "
          f"{result['decoding']}, {result['backend']}): loader "
          f"{result['loader_images_per_s']:.0f} images/s; loader + step "
          f"{result['loader_and_step_images_per_s']:.0f} images/s; step alone "
          f"{result['step_images_per_s']:.0f} images/s")
