"""The training loop: `train_and_evaluate(config, workdir)` and the experiments' `main`.

The host decides chunk boundaries (log, eval, checkpoint, epoch end); each chunk of steps runs
on the device in one call. A run resumes from the latest checkpoint in its workdir and continues
exactly: per-step noise is fold_in(rng, step) and the data order depends only on (seed, epoch).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from aigc_jax import backend
from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import parallel
from aigc_jax import state as state_lib
from aigc_jax import workdir as workdir_lib
from aigc_jax import writers

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. the loss became NaN)."""


def improved(value: float, best: float | None, mode: str) -> bool:
  """Whether `value` beats `best` (None: nothing yet) when `mode` ('min' or 'max') is better."""
  return best is None or (value < best if mode == "min" else value > best)


class EarlyStop:
  """The best evaluation so far and how many evaluations since; stopped after `patience` (> 0)
  evaluations without improvement."""

  def __init__(self, metric: str, mode: str, patience: int, history: list[dict] = ()):
    self.metric, self.mode, self.patience = metric, mode, patience
    self.best, self.since = None, 0
    for record in history:  # the eval records of metrics.jsonl
      if record.get("split") == "test" and metric in record:
        self.update(record[metric])

  def update(self, value: float) -> None:
    if improved(value, self.best, self.mode):
      self.best, self.since = value, 0
    else:
      self.since += 1

  @property
  def stopped(self) -> bool:
    return bool(self.patience) and self.best is not None and self.since >= self.patience


class Schedule(NamedTuple):
  """When the host stops the device: step counts of the run and of its boundaries."""

  total: int
  steps_per_epoch: int
  log_every: int
  eval_every: int
  checkpoint_every: int

  def next_boundary(self, step: int) -> int:
    """The first log, eval or checkpoint step, epoch end or the end after `step`."""
    epoch = step // self.steps_per_epoch
    return min(self.total, (epoch + 1) * self.steps_per_epoch,
               *((step // n + 1) * n for n in (self.log_every, self.eval_every,
                                               self.checkpoint_every)))


def make_schedule(config, num_train: int, batches_per_step: int) -> Schedule:
  """The run's Schedule: eval every epoch and checkpoint at every eval unless set (> 0)."""
  steps_per_epoch = data_lib.steps_per_epoch(num_train, config.batch_size * batches_per_step)
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  return Schedule(state_lib.total_train_steps(config, num_train, batches_per_step),
                  steps_per_epoch, config.log_every_steps, eval_every,
                  config.checkpoint_every_steps if config.checkpoint_every_steps > 0
                  else eval_every)


def initialize_distributed(config) -> None:
  """`jax.distributed.initialize` when the config or the environment asks for several processes.

  A coordinator address (config or JAX_COORDINATOR_ADDRESS) is passed on; without one, a job of
  several processes (`backend.cluster_environment`) lets jax read the cluster. num_processes and
  process_id, when set, win over the cluster's. Call before JAX runs anything. Every process
  runs the same command; process 0 writes the logs, samples and metrics.jsonl, all of them take
  part in checkpointing. Raises ConfigError when jax cannot tell the job's processes.
  """
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
  log.info("process %d of %d (coordinator %s): %d local / %d global devices",
           jax.process_index(), jax.process_count(), address or f"from {cluster}",
           jax.local_device_count(), jax.device_count())


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) `config` in `workdir`; returns the last evaluation's metrics."""
  config = config_lib.validate(config)
  initialize_distributed(config)
  with backend.matmul_precision(config):  # every function of the run traces inside it
    return _train_and_evaluate(config, workdir)


class Run(NamedTuple):
  """What one training run is made of, once set up."""

  config: Any
  workdir: str
  trainable: families.Trainable
  loop: parallel.TrainLoop
  schedule: Schedule
  train_data: data_lib.DeviceData
  test_data: data_lib.DeviceData
  checkpoints: Any
  writer: writers.MetricWriter


def setup(config, workdir: str) -> Run:
  """Loads the data, builds the family and its train loop, opens the checkpoints and metrics."""
  os.makedirs(workdir, exist_ok=True)
  family = families.get(config.model)
  images, labels = data_lib.load_config_split(config, "train")
  train_data = data_lib.to_device(images, family.train_labels(config, images, labels, workdir))
  test_data = data_lib.to_device(*data_lib.load_config_split(config, "test"))
  batches_per_step = family.batches_per_step(config)
  schedule = make_schedule(config, len(labels), batches_per_step)
  trainable = family.build(config, data_lib.DATASETS[config.dataset], schedule.total)
  try:
    loop = parallel.make_train_loop(trainable.train_step, batch_size=config.batch_size,
                                    scale=config.scale, binarize=config.binarize,
                                    steps_per_call=config.steps_per_call, mode=config.parallel,
                                    batches_per_step=batches_per_step)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  log.info("%s", backend.describe_devices())
  log.info("%s on %s: %d train / %d test images, %d steps (%d per epoch), parallel=%s on %d "
           "device(s)", config.model, config.dataset, len(labels), len(test_data.labels),
           schedule.total, schedule.steps_per_epoch, config.parallel, loop.num_devices)
  checkpoints = workdir_lib.open_checkpoints(workdir, config, trainable)
  writer = writers.MetricWriter(workdir, enabled=jax.process_index() == 0)
  return Run(config, workdir, trainable, loop, schedule, train_data, test_data, checkpoints,
             writer)


def restore_or_init(run: Run):
  """The state of the latest checkpoint in the workdir, or a new one from the config's seed."""
  rng = jax.random.PRNGKey(run.config.seed)
  latest = run.checkpoints.latest_step()
  if latest is None:
    return jax.jit(run.trainable.init)(rng)
  log.info("resuming from the checkpoint at step %d in %s", latest, run.workdir)
  return run.checkpoints.restore(jax.eval_shape(run.trainable.init, rng), latest)


def evaluate_and_record(run: Run, state, step: int, bar) -> dict:
  """The periodic evaluation: metrics to metrics.jsonl and TensorBoard, sample grids to
  samples/*.png and TensorBoard."""
  metrics = run.trainable.evaluate(state, run.test_data)
  run.writer.write(step, "test", metrics)
  if jax.process_index() == 0:
    for name, (images, ncols) in run.trainable.log_images(state, run.test_data).items():
      samples = os.path.join(run.workdir, "samples")
      path = writers.save_png(os.path.join(samples, f"{name}_{step:07d}.png"), images, ncols)
      writers.save_png(os.path.join(samples, f"{name}_latest.png"), images, ncols)
      run.writer.write_images(step, name, writers.image_grid(images, ncols))
      log.info("wrote %s", path)
  bar.write(f"step {step}: " + ", ".join(f"test_{k}={v:.3f}" for k, v in metrics.items()))
  return metrics


def record_train(run: Run, step: int, meter: "TrainMeter", bar) -> None:
  """Writes the mean train metrics since the last log and resets `meter`; stops on a non-finite
  one."""
  means = {k: float(v) / meter.steps for k, v in jax.device_get(meter.sums).items()}
  if not all(np.isfinite(v) for v in means.values()):
    raise TrainingError(f"training diverged before step {step} (train metrics {means}); lower "
                        "learning_rate or resume from an earlier checkpoint in a new workdir")
  means["steps_per_second"] = meter.steps / (time.perf_counter() - meter.start)
  run.writer.write(step, "train", means)
  bar.set_postfix(loss=f"{means['loss']:.2f}")
  meter.reset()


class TrainMeter:
  """Sums of the train metrics since the last log, their step count and wall time."""

  def __init__(self):
    self.sums, self.steps, self.start = None, 0, time.perf_counter()

  def add(self, sums, steps: int) -> None:
    self.sums = sums if self.sums is None else jax.tree_util.tree_map(jnp.add, self.sums, sums)
    self.steps += steps

  def reset(self) -> None:
    self.sums, self.steps, self.start = None, 0, time.perf_counter()


def train_loop(run: Run, state, bar):
  """Trains from `state` to the end (or an early stop): (the last state, the last evaluation)."""
  config, sched, trainable, loop = run.config, run.schedule, run.trainable, run.loop
  step = int(state.step)
  stop = EarlyStop(trainable.best_metric, trainable.best_mode, config.early_stopping_patience,
                   run.writer.truncate_after(step))
  placed, placed_train = loop.put_state(state), loop.put_data(run.train_data)  # `state`: host
  permutation = jax.jit(data_lib.epoch_permutation, static_argnums=(0, 2))
  num_train, perm_epoch, perm = len(run.train_data.labels), None, None
  meter, eval_metrics = TrainMeter(), {}
  while step < sched.total and not stop.stopped:
    epoch, index = divmod(step, sched.steps_per_epoch)
    if epoch != perm_epoch:
      perm_epoch, perm = epoch, loop.put_data(permutation(config.seed, epoch, num_train))
    boundary = sched.next_boundary(step)
    placed, sums = loop(placed, placed_train, perm, index, boundary - step)
    state = loop.get_state(placed)
    meter.add(sums, boundary - step)
    bar.update(boundary - step)
    step = boundary
    if step % sched.log_every == 0 or step == sched.total:
      record_train(run, step, meter, bar)
    evaluated = step % sched.eval_every == 0 or step == sched.total
    if evaluated:
      eval_metrics = evaluate_and_record(run, state, step, bar)
      stop.update(eval_metrics[trainable.best_metric])
      if stop.stopped:
        bar.write(f"early stopping at step {step}: test_{stop.metric} has not improved for "
                  f"{stop.patience} evaluations (best {stop.best:.4f})")
    if step % sched.checkpoint_every == 0 or step == sched.total or stop.stopped:
      # Host (numpy) copies: with several processes every one holds the same replicated state,
      # and orbax writes numpy arrays from process 0 only.
      run.checkpoints.save(step, jax.device_get(state),
                           {f"test_{k}": v for k, v in eval_metrics.items()} if evaluated else None)
      meter.start = time.perf_counter()  # do not count the checkpoint in steps_per_second
  return state, eval_metrics


def _train_and_evaluate(config, workdir: str) -> dict:
  run = setup(config, workdir)
  state = restore_or_init(run)
  if jax.process_index() == 0:
    workdir_lib.save_config(workdir, config)
  bar = tqdm(total=run.schedule.total, initial=int(state.step), desc=config.model, unit="step",
             dynamic_ncols=True, disable=not (config.progress_bar and jax.process_index() == 0))
  state, eval_metrics = train_loop(run, state, bar)
  bar.close()
  if not eval_metrics:  # resumed a finished run: report its numbers without training
    eval_metrics = run.trainable.evaluate(state, run.test_data)
  run.checkpoints.close()
  run.writer.close()
  return eval_metrics


def quiet_dependencies() -> None:
  """Called by entry points only: our INFO lines stay, orbax's and absl's INFO chatter goes."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("aigc_jax").setLevel(logging.INFO)


def print_help(program: str, config) -> None:
  """The experiment file's docstring, the flags and every config key with its value."""
  doc = (sys.modules["__main__"].__doc__ or "").strip()
  print(doc or f"python {program} --workdir DIR [--config.KEY=VALUE ...]")
  print("\nflags:\n  --workdir DIR          checkpoints, metrics.jsonl, tensorboard/, "
        "samples/*.png; an existing run there is resumed\n  --config.KEY=VALUE     override a "
        "config key:")
  for key, value in sorted(config.items()):
    print(f"      {key} = {value!r}")


def main(get_config) -> None:
  """An experiment file's entry: `python experiments/NAME.py --workdir DIR [--config.K=V]`."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top

  config = get_config()
  if any(a in ("-h", "--help", "-help", "--helpshort") for a in sys.argv[1:]):
    print_help(sys.argv[0], config)
    sys.exit(0)
  try:
    argv = sys.argv[:1] + config_lib.apply_overrides(config, sys.argv[1:])
  except config_lib.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard "
                      "events and samples/*.png; an existing one is resumed.")

  def run(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments {argv[1:]}; use --workdir DIR and --config.KEY=VALUE",
            file=sys.stderr)
      sys.exit(2)
    if not flags.FLAGS.workdir:
      print("error: --workdir is required (where checkpoints, metrics and samples go)",
            file=sys.stderr)
      sys.exit(2)
    quiet_dependencies()
    try:
      metrics = train_and_evaluate(config, flags.FLAGS.workdir)
    except (config_lib.ConfigError, data_lib.DataError, TrainingError,
            workdir_lib.CheckpointError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    print(" ".join(f"test_{k}={v:.4f}" for k, v in metrics.items()))

  app.run(run, argv=argv)
