"""The training loop: `train_and_evaluate(config, workdir)`; its commands are in train_cli.

The host decides chunk boundaries (log, eval, checkpoint, epoch end); each chunk of steps runs
on the device in one call. A run resumes from the latest checkpoint in its workdir and continues
exactly: per-step noise is fold_in(rng, step) and the data order depends only on (seed, epoch).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time

import jax
import numpy as np

from aigc_jax import backend
from aigc_jax import checkpoint_verify
from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import entry
from aigc_jax import lock
from aigc_jax import progress
from aigc_jax import run_setup
from aigc_jax import schedule as schedule_lib
from aigc_jax import signals as signals_lib
from aigc_jax import workdir as workdir_lib
from aigc_jax import writers

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. the loss became NaN)."""


# What to lower when a phase runs out of memory.
TRAIN_SIZES = "batch_size (--config.batch_size=N), or steps_per_call"
EVAL_SIZES = "eval_batch_size, eval_num_samples or num_sample_images"


def train_and_evaluate(config, workdir: str, step: int | None = None) -> dict:
  """Trains (or resumes) `config` in `workdir`; returns the last evaluation's metrics.

  A run resumes from its newest checkpoint that verifies, or from `step` when given; the
  checkpoints after the one it resumes from are deleted."""
  config = config_lib.validate(config)
  run_setup.initialize_distributed(config)
  with backend.matmul_precision(config):  # every function of the run traces inside it
    return _train_and_evaluate(config, workdir, step)


def evaluate_and_record(run: run_setup.Run, state, step: int, bar) -> dict:
  """Evaluates: metrics to metrics.jsonl, TensorBoard, plots/; grids to samples/, TensorBoard.
  A line says what it evaluates before it starts, another its numbers and time when done."""
  start = time.perf_counter()
  bar.write(f"step {step}: evaluating ({evaluation_of(run.config)})...")
  metrics = run.trainable.evaluate(state, run.test_data)
  run.writer.write(step, "test", metrics)
  if jax.process_index() == 0:
    for name, (images, ncols) in run.trainable.log_images(state, run.test_data).items():
      samples = os.path.join(run.workdir, "samples")
      path = writers.save_png(os.path.join(samples, f"{name}_{step:07d}.png"), images, ncols)
      writers.save_png(os.path.join(samples, f"{name}_latest.png"), images, ncols)
      run.writer.write_images(step, name, writers.image_grid(images, ncols))
      log.info("wrote %s", path)
    run.writer.draw_curves()  # plots/*.png on a background thread; close() waits
  bar.write(f"step {step}: {summary(metrics, 3)} ({time.perf_counter() - start:.1f} s)")
  return metrics


def evaluation_of(config) -> str:
  """What the periodic evaluation computes, in words."""
  num = config.get("eval_num_samples", 0)
  return (f"FID and sample metrics of {num} samples"
          if num else "the test split") + (", then the sample grids")


def show(value: float, digits: int) -> str:
  """`value` with `digits` decimals; 0 when it is at the level of float rounding noise."""
  return "0" if abs(value) < 1e-9 else f"{value:.{digits}f}"


def summary(metrics: dict, digits: int) -> str:
  """The one-line summary of test `metrics`: their spreads (`*_std`) stay in metrics.jsonl."""
  return " ".join(
      f"test_{k}={show(v, digits)}" for k, v in metrics.items() if not k.endswith("_std"))


def record_train(run: run_setup.Run, step: int, meter: schedule_lib.TrainMeter, bar) -> None:
  """Writes the mean train metrics since the last log and resets `meter`; stops on a non-finite
  one."""
  means = {k: float(v) / meter.steps for k, v in jax.device_get(meter.sums).items()}
  if not all(np.isfinite(v) for v in means.values()):
    raise TrainingError(f"training diverged before step {step} (train metrics {means}); lower "
                        "learning_rate or resume from an earlier checkpoint in a new workdir")
  means["steps_per_second"] = meter.steps / (time.perf_counter() - meter.start)
  means["learning_rate"] = learning_rate(run.config, step, run.schedule.total)
  run.writer.write(step, "train", means)
  shown = {k: f"{means[k]:.2f}" for k in ("g_loss", "d_loss") if k in means
          } or {"loss": f"{means['loss']:.2f}"}
  bar.set_postfix(shown)
  meter.reset()


def learning_rate(config, step: int, total: int) -> float:
  """The learning rate (G's for a GAN) of `step` under config.lr_schedule."""
  if config.lr_schedule != "cosine":
    return float(config.learning_rate)
  return float(
      config.learning_rate) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def progress_bar(config, initial: int, total: int):
  """The run's bar: tqdm's on a terminal; outside one (a log file) a line at most every
  progress.PLAIN_EVERY_S seconds and at the end, with the last logged losses."""
  shown = bool(config.progress_bar) and jax.process_index() == 0
  return progress.bar(total, config.model, "step", initial, shown,
                      line="step {n}/{total} ({rate:.1f} steps/s)")


def save(run: run_setup.Run, step: int, state, eval_metrics: dict | None) -> None:
  """Checkpoints `state` as `step` unless it is not finite (then nothing is saved and training
  stops: the checkpoints keep the last good state)."""
  # Host (numpy) copies: with several processes every one holds the same replicated state, and
  # orbax writes numpy arrays from process 0 only.
  host = jax.device_get(state)
  if not checkpoint_verify.all_finite(host):
    raise TrainingError(f"training diverged before step {step}: the state is not finite, so it "
                        f"was not saved; lower learning_rate, and resume from the last good "
                        f"checkpoint (steps {run.checkpoints.all_steps()}) or a new workdir")
  run.checkpoints.save(
      step, host,
      None if eval_metrics is None else {f"test_{k}": v for k, v in eval_metrics.items()})


def train_loop(run: run_setup.Run, state, bar):
  """Trains from `state` to the end (or an early stop): (the last state, the last evaluation).
  Raises Stopped after saving when SIGTERM or SIGINT arrives. A run stopped in its last chunk
  does its final evaluation here."""
  step = int(state.step)
  history = run.writer.truncate_after(step)
  stop = schedule_lib.EarlyStop(run.trainable.best_metric, run.trainable.best_mode,
                                run.config.early_stopping_patience, history)
  with signals_lib.StopSignals() as signals:
    final = {}
    if schedule_lib.final_pending(run.schedule, step, history) and not stop.stopped:
      with entry.doing("evaluating", EVAL_SIZES):  # a stop signal in the last chunk skipped it
        final = evaluate_and_record(run, state, step, bar)
    return _loop(run, state, step, stop, signals, bar, final)


class TrainChunks:
  """The device side of training: the placed state, data and epoch permutation (or, for a
  streamed split, each chunk's rows in order), a chunk at a time (`train`), and the single copy
  of the state (`state`)."""

  def __init__(self, run: run_setup.Run, state):
    self.run, self.meter, self.first = run, schedule_lib.TrainMeter(), True
    self.epoch, self.perm = None, None
    self.placed = run.loop.place.put_state(state)  # `state`: host
    if run.stream is None:
      self.data = run.loop.place.put_data(run.train_data, first_row=run.train_rows[0],
                                          num_examples=run.num_train)
    else:  # each chunk is read in order, from its first row
      self.perm = run.loop.place.put_state(run.stream.order())
    self.permutation = jax.jit(data_lib.epoch_permutation, static_argnums=(0, 2))

  def train(self, step: int, end: int) -> None:
    run, loop = self.run, self.run.loop
    if run.stream is not None:
      for start in range(step, end, loop.steps_per_call):
        num = min(loop.steps_per_call, end - start)
        chunk = run.stream.placed(loop.place, start, num)
        self.placed, sums = loop(self.placed, chunk, self.perm, 0, num)
        self._trained(sums, num)
      return
    epoch, index = divmod(step, run.schedule.steps_per_epoch)
    if epoch != self.epoch:
      self.epoch, self.perm = epoch, loop.place.put_state(
          self.permutation(run.config.seed, epoch, run.num_train))
    self.placed, sums = loop(self.placed, self.data, self.perm, index, end - step)
    self._trained(sums, end - step)

  def _trained(self, sums, num_steps: int) -> None:
    if self.first:  # its failure (out of memory) is raised here, not by the next evaluation
      jax.block_until_ready(sums)
      self.first = False
    self.meter.add(sums, num_steps)

  def state(self):
    return self.run.loop.place.get_state(self.placed)


def _loop(run: run_setup.Run, state, step: int, stop: schedule_lib.EarlyStop,
          signals: signals_lib.StopSignals, bar, eval_metrics: dict):
  if stop.stopped:  # a resumed run that had stopped early
    return state, eval_metrics
  chunks = TrainChunks(run, state)

  def at_boundary(boundary: schedule_lib.Boundary) -> tuple[bool, bool]:
    nonlocal eval_metrics
    state, step = chunks.state(), boundary.step
    if boundary.log:
      record_train(run, step, chunks.meter, bar)
    if boundary.evaluate:
      with entry.doing("evaluating", EVAL_SIZES):
        eval_metrics = evaluate_and_record(run, state, step, bar)
      stop.update(eval_metrics[run.trainable.best_metric])
      if stop.stopped:
        bar.write(f"early stopping at step {step}: test_{stop.metric} has not improved for "
                  f"{stop.patience} evaluations (best {stop.best:.4f})")
    saving = boundary.checkpoint or stop.stopped or boundary.signum is not None
    if saving:
      save(run, step, state, eval_metrics if boundary.evaluate else None)
    return saving, not stop.stopped

  schedule_lib.run_chunks(run.schedule, step, chunks.train, at_boundary, signals=signals,
                          meter=chunks.meter, checkpoints=run.checkpoints, bar=bar)
  return chunks.state(), eval_metrics


def _train_and_evaluate(config, workdir: str, step: int | None) -> dict:
  claim = lock.hold(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with claim:
    return _train_locked(config, workdir, step)


def _train_locked(config, workdir: str, step: int | None) -> dict:
  changes = workdir_lib.check_resume_config(workdir, config)
  with entry.doing("loading the data and building the model"):
    run = run_setup.setup(config, workdir)
  bar = None
  try:
    with entry.doing("initialising or restoring the state", "the model's sizes"):
      state = run_setup.restore_or_init(run, step)
    if changes:
      run.writer.write_event(int(state.step), "config_change", {"changes": changes})
    if jax.process_index() == 0:
      workdir_lib.save_config(workdir, config, changes, int(state.step))
    run.writer.write_text(int(state.step), "config", config_table(config))
    bar = progress_bar(config, int(state.step), run.schedule.total)
    with entry.doing("compiling or running the training step", TRAIN_SIZES):
      state, eval_metrics = train_loop(run, state, bar)
    if not eval_metrics:  # resumed a finished run: report its numbers without training
      with entry.doing("evaluating", EVAL_SIZES):
        eval_metrics = run.trainable.evaluate(state, run.test_data)
  finally:
    with entry.doing("writing the last checkpoint and closing the run"):
      if bar is not None:
        bar.close()
      try:
        run.checkpoints.close()
      finally:  # the curves being drawn are finished (or removed), not cut off at the exit
        run.writer.close()
  return eval_metrics


def config_table(config) -> str:
  """The config as a Markdown table (TensorBoard's text dashboard)."""
  return "| key | value |\n|---|---|\n" + "\n".join(
      f"| {k} | `{v!r}` |" for k, v in sorted(config.items()))


quiet_dependencies = entry.quiet_dependencies  # the commands' (aigc_jax.train_cli and others)


def main(get_config) -> None:
  """An experiment file's entry: `python experiments/NAME.py --workdir DIR [--config.K=V]`
  (aigc_jax.train_cli)."""
  from aigc_jax import train_cli  # pylint: disable=g-import-not-at-top  (it imports this module)
  train_cli.main(get_config)


if __name__ == "__main__":  # python -m aigc_jax.train --workdir DIR --config=experiments/NAME.py
  from aigc_jax import train_cli  # pylint: disable=g-import-not-at-top
  train_cli.main_module()
