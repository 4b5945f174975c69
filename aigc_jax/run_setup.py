"""A training run's parts, set up from its config and workdir: the processes of a multi-host
job, the data (this process's train rows), the family's trainable, its loop and schedule, the
checkpoints and the metric writer; and the state it starts from, restored or new."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, NamedTuple

import jax
import numpy as np

from aigc_jax import backend
from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import eval_split
from aigc_jax import families
from aigc_jax import parallel
from aigc_jax import schedule as schedule_lib
from aigc_jax import streaming
from aigc_jax import workdir as workdir_lib
from aigc_jax import writers

log = logging.getLogger("aigc_jax.train")


def initialize_distributed(config) -> None:
  """`jax.distributed.initialize` when the config or the environment asks for several processes:
  with the coordinator address (config or JAX_COORDINATOR_ADDRESS), else from the cluster
  (`backend.cluster_environment`); num_processes and process_id, when set, win. Call before JAX
  runs anything. Process 0 writes the logs, samples and metrics.jsonl; all of them checkpoint.
  Raises ConfigError when jax cannot tell the job's processes."""
  address = config.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  cluster = None if address else backend.cluster_environment()
  if not (address or cluster) or jax.distributed.is_initialized():
    return
  try:
    jax.distributed.initialize(address or None, num_processes=config.num_processes or None,
                               process_id=None if config.process_id < 0 else config.process_id)
  except ValueError as e:  # jax found no coordinator or process count
    raise config_lib.ConfigError(
        f"cannot start the processes of this {cluster or 'multi-host'} job ({e}); set "
        "coordinator_address (process 0's host:port), num_processes and process_id") from None
  log.info("process %d of %d (coordinator %s): %d local / %d global devices", jax.process_index(),
           jax.process_count(), address or f"from {cluster}", jax.local_device_count(),
           jax.device_count())


class Run(NamedTuple):
  """What one training run is made of, once set up."""

  config: Any
  workdir: str
  trainable: families.Trainable
  loop: parallel.TrainLoop
  schedule: schedule_lib.Schedule
  train_data: data_lib.DeviceData | None  # this process's train rows, `train_rows`; None: streamed
  train_rows: data_lib.Rows
  num_train: int
  test_data: eval_split.EvalData  # this process's rows of the test split
  checkpoints: Any
  writer: writers.MetricWriter
  stream: streaming.ChunkStream | None = None  # the train split, when it is streamed


def setup(config, workdir: str, population_step=None, member_map: str = "vmap",
          member_devices: int = 1) -> Run:
  """Loads the data, builds the family and its train loop, opens the checkpoints and metrics.

  With `population_step(members, batch, *, total_steps, axis_name=None)`, the loop runs that step
  over a stacked population (`parallel.TrainLoop(members=member_map, member_devices=...)`) and
  metrics.jsonl gets no TensorBoard run."""
  family, info = families.get(config.model), data_lib.config_info(config)
  source = streaming.train_source(config, info)
  num_train = len(source) if source else data_lib.config_split_size(config, "train")
  test_data = load_test(config)
  batches_per_step = family.batches_per_step(config)
  schedule = schedule_lib.make_schedule(config, num_train, batches_per_step)
  trainable = family.build(config, info, schedule.total)
  step = (trainable.train_step if population_step is None else functools.partial(
      population_step, total_steps=schedule.total))
  population = population_step is not None
  try:  # a CPU fallback beside a GPU plugin, a batch the devices do not divide: ConfigError
    backend.check_no_fallback()
    loop = parallel.make_train_loop(step, batch_size=config.batch_size, scale=config.scale,
                                    binarize=config.binarize, steps_per_call=config.steps_per_call,
                                    mode=backend.parallel_mode(config.parallel, population),
                                    batches_per_step=batches_per_step,
                                    member_devices=member_devices,
                                    members="" if population_step is None else member_map)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  if source is None:
    rows = loop.place.local_rows(num_train)  # all this process's devices read
    images, labels = data_lib.load_config_split(config, "train", rows)
    train_data = data_lib.to_host(images,
                                  family.train_labels(config, images, labels, workdir, rows=rows))
    stream = None
  else:
    train_data, rows, stream = None, (0, 0), _stream(config, source, loop, schedule, population)
  log.info("%s on %s: %d train / %d test images, %d steps (%d per epoch), %d device(s); %s; %s",
           config.model, config.dataset, num_train, test_data.size, schedule.total,
           schedule.steps_per_epoch, loop.place.num_devices, backend.describe_devices(),
           " ".join(f"{k}={v}" for k, v in backend.choices(config, population).items()))
  checkpoints = workdir_lib.open_checkpoints(workdir, config, trainable)
  writer = writers.MetricWriter(workdir, enabled=jax.process_index() == 0,
                                tensorboard=population_step is None)
  return Run(config, workdir, trainable, loop, schedule, train_data, rows, num_train, test_data,
             checkpoints, writer, stream)


def _stream(config, source: streaming.RowSource, loop: parallel.TrainLoop,
            schedule: schedule_lib.Schedule, population: bool) -> streaming.ChunkStream:
  """The streamed train split of a run whose split is more than max_device_bytes."""
  if population or config.get("pixel_clusters"):
    raise config_lib.ConfigError(
        f"the train split is more than max_device_bytes={config.max_device_bytes} bytes, so it "
        f"would stream, but {'a sweep' if population else 'pixel_clusters'} needs it in memory; "
        "raise --config.max_device_bytes")
  per_step = config.batch_size * families.get(config.model).batches_per_step(config)
  log.info("streaming the train split (%d rows, more than max_device_bytes=%d bytes)", len(source),
           config.max_device_bytes)
  return streaming.ChunkStream.for_loop(source, loop, seed=config.seed,
                                        steps_per_epoch=schedule.steps_per_epoch,
                                        rows_per_step=per_step)


def load_test(config) -> eval_split.EvalData:
  """This process's rows of the test split (`eval_split.process_rows`: all of them when it is
  the only one), on its first device."""
  if jax.process_count() == 1:
    images, labels = data_lib.load_config_split(config, "test")
    return eval_split.EvalData(*data_lib.to_device(images, labels), 0, len(labels))
  size = data_lib.config_split_size(config, "test")
  rows = eval_split.process_rows(size, config.eval_batch_size)
  if rows[0] < rows[1]:
    images, labels = data_lib.load_config_split(config, "test", rows)
  else:  # more processes than batches: nothing to evaluate here
    images = np.zeros((0,) + data_lib.config_info(config).image_shape, np.uint8)
    labels = np.zeros((0,), np.int32)
  return eval_split.EvalData(*data_lib.to_device(images, labels), rows[0], size)


def restore_or_init(run: Run, step: int | None = None):
  """The state of the newest checkpoint that verifies (at most `step`), or a new one from the
  config's seed. Newer checkpoints are deleted: training goes on from the restored one."""
  rng = jax.random.PRNGKey(run.config.seed)
  if run.checkpoints.latest_step() is None:
    if step is not None:
      raise workdir_lib.CheckpointError(f"--step {step}: {run.workdir} has no checkpoint; "
                                        "leave --step out to start training")
    return jax.jit(run.trainable.init)(rng)
  template = jax.eval_shape(run.trainable.init, rng)
  if step is not None and step not in run.checkpoints.all_steps():
    run.checkpoints.restore(template, step)  # raises the error that names the steps there
  state, restored = run.checkpoints.restore_verified(template, step)
  run.checkpoints.delete_after(restored)
  log.info("resuming from the checkpoint at step %d in %s", restored, run.workdir)
  return state
