"""Stopping a run cleanly on SIGTERM or SIGINT (what SLURM, Kubernetes and preemptible VMs send,
and Ctrl-C): the training loop saves its state at the end of the chunk it is in, then stops."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)


class Stopped(Exception):
  """Training stopped on a signal after saving its state; the run resumes where it stopped."""

  def __init__(self, step: int, signum: int):
    super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}: its checkpoint "
                     "is saved; run the same command to resume")
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
      print(f"error: second {signal.Signals(signum).name}: exiting without saving", flush=True,
            file=sys.stderr)
      os._exit(128 + signum)
    self.signum = signum
    log.warning("%s: saving at the end of this chunk (send it again to exit at once)",
                signal.Signals(signum).name)

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread():
      self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._old.items():
      signal.signal(s, handler)
