"""Stopping a run cleanly on SIGTERM or SIGINT (what SLURM, Kubernetes and preemptible VMs send,
and Ctrl-C): the training loop saves its state at the end of the chunk it is in, then stops.
Outside the loop, a command's signals end it at once (`entry`)."""

from __future__ import annotations

import logging
import os
import signal
import threading

import jax
import numpy as np

from aigc_jax import entry

log = logging.getLogger(__name__)


class Stopped(Exception):
  """Training stopped on a signal after saving its state; the run resumes where it stopped."""

  def __init__(self, step: int, signum: int, finished: bool = False):
    name = signal.Signals(signum).name
    super().__init__(f"stopped by {name} after training ended at step {step}: its checkpoint "
                     "and evaluation are saved; run the same command to finish (it does not "
                     "train again)" if finished else
                     f"stopped by {name} at step {step}: its checkpoint is saved; run the same "
                     "command to resume")
    self.step, self.exit_code = step, 128 + signum


class StopSignals:
  """While active, SIGTERM and SIGINT only set `signum`: training saves and stops at the end of
  its chunk. A second signal exits at once (code 128 + signal). Inactive off the main thread."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum, self._old = None, {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      entry.undo_all()
      entry.say(f"error: second {signal.Signals(signum).name}: exiting without saving")
      os._exit(128 + signum)
    self.signum = signum
    log.warning("%s: saving at the end of this chunk (send it again to exit at once)",
                signal.Signals(signum).name)

  def agreed(self) -> int | None:
    """The signal every process stops on at this boundary; None when none did. With several
    processes (`jax.distributed`) every process calls it at the same boundaries and gets the
    same answer (the first process's signal that had arrived), so they all save the same step
    and stop together; a signal that arrives during the call counts at the next boundary."""
    signum = self.signum  # read once: the handler may set it while the processes gather
    if jax.process_count() == 1:
      return signum
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    got = np.ravel(multihost_utils.process_allgather(np.int32(signum or 0)))
    return next((int(s) for s in got if s), None)

  def __enter__(self) -> "StopSignals":
    entry.training_started()  # a signal now saves a checkpoint: the workdir is no longer undone
    if threading.current_thread() is threading.main_thread():
      self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._old.items():
      signal.signal(s, handler)
