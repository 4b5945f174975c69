"""When the host stops the device, and what it keeps between stops: the run's `Schedule` of
boundaries (log, evaluation, checkpoint, epoch end, stop check), the host loop over them that
training and sweeps share (`run_chunks`), early stopping on the best evaluation, and the train
metrics summed since the last log."""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from aigc_jax import backend
from aigc_jax import data as data_lib
from aigc_jax import signals as signals_lib
from aigc_jax import state as state_lib


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


# The host hands the device about this many steps (a whole number of calls) at once, so that a
# stop signal is seen, and the run saved, within that many steps.
STOP_CHECK_STEPS = 10


class Schedule(NamedTuple):
  """When the host stops the device: step counts of the run and of its boundaries."""

  total: int
  steps_per_epoch: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  chunk: int  # a multiple of it is a boundary too: where a stop signal is checked

  def next_boundary(self, step: int) -> int:
    """The first log, eval, checkpoint or chunk step, epoch end or the end after `step`."""
    epoch = step // self.steps_per_epoch
    return min(
        self.total, (epoch + 1) * self.steps_per_epoch,
        *((step // n + 1) * n
          for n in (self.log_every, self.eval_every, self.checkpoint_every, self.chunk)))


class Boundary(NamedTuple):
  """What the host does where a chunk ends (`Schedule.at`)."""

  step: int
  log: bool  # the train metrics since the last log
  evaluate: bool
  checkpoint: bool  # the schedule's; a stop signal saves too
  signum: int | None  # the stop signal every process agreed on, if any


def at(schedule: Schedule, step: int, signum: int | None = None) -> Boundary:
  """The boundary at `step`: log, evaluate and checkpoint at their multiples and at the end; a
  stop signal at the end skips the final evaluation (the resumed run does it: `final_pending`)."""
  end = step == schedule.total
  evaluate = (end and signum is None) or (not end and step % schedule.eval_every == 0)
  return Boundary(step, end or step % schedule.log_every == 0, evaluate, end or
                  step % schedule.checkpoint_every == 0, signum)


def final_pending(schedule: Schedule, step: int, history: list[dict]) -> bool:
  """Whether a run resumed at `step` is at its end without the final evaluation in `history`
  (the records of metrics.jsonl): a stop signal in the last chunk skipped it."""
  return step == schedule.total and not any(
      r.get("split") == "test" and r.get("step") == step for r in history)


def run_chunks(schedule: Schedule, step: int, train_chunk: Callable[[int, int], None],
               at_boundary: Callable[[Boundary], tuple[bool, bool]], *, signals,
               meter: "TrainMeter", checkpoints, bar) -> None:
  """The host loop of training and of sweeps, from `step` to the end, chunk by chunk:
  `train_chunk(step, end)` trains steps [step, end) on the device (adding to `meter`), then
  `at_boundary(boundary) -> (saved, go_on)` logs, evaluates and checkpoints as the boundary says.
  A save restarts the meter's clock (steps_per_second counts training only). After a stop signal
  (`signals.agreed()`), which `at_boundary` saves on, raises `signals_lib.Stopped` once
  `checkpoints` has written the save, in the last chunk too (without the final evaluation), and
  after the last boundary (`finished`)."""
  while step < schedule.total:
    end = schedule.next_boundary(step)
    train_chunk(step, end)
    boundary = at(schedule, end, signals.agreed())
    saved, go_on = at_boundary(boundary)  # first, so that the bar's line has its losses
    bar.update(end - step)
    step = end
    if saved:
      meter.start = time.perf_counter()
    if boundary.signum is not None:
      checkpoints.wait()
      raise signals_lib.Stopped(step, boundary.signum)
    if not go_on:
      break
  signum = signals.agreed()  # one that arrived after the last boundary's check
  if signum is not None:
    checkpoints.wait()
    raise signals_lib.Stopped(step, signum, finished=True)


def make_schedule(config, num_train: int, batches_per_step: int) -> Schedule:
  """The run's Schedule: eval every epoch and checkpoint at every eval unless set (> 0)."""
  steps_per_epoch = data_lib.steps_per_epoch(num_train, config.batch_size * batches_per_step)
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  per_call = backend.steps_per_call(config.steps_per_call)
  return Schedule(
      state_lib.total_train_steps(config, num_train, batches_per_step), steps_per_epoch,
      config.log_every_steps, eval_every,
      config.checkpoint_every_steps if config.checkpoint_every_steps > 0 else eval_every,
      per_call * -(-STOP_CHECK_STEPS // per_call))


class TrainMeter:
  """Sums of the train metrics since the last log, their step count and wall time."""

  def __init__(self):
    self.sums, self.steps, self.start = None, 0, time.perf_counter()

  def add(self, sums, steps: int) -> None:
    self.sums = sums if self.sums is None else jax.tree_util.tree_map(jnp.add, self.sums, sums)
    self.steps += steps

  def reset(self) -> None:
    self.sums, self.steps, self.start = None, 0, time.perf_counter()
