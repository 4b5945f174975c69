"""Orbax's noise off stderr: its warnings, its threads' tracebacks and tensorstore's reads that
complete after their event loop closed go to the debug log. The caller reports what failed."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Iterator

_log = logging.getLogger("aigc_jax.checkpoint")


def orbax_report(record: logging.LogRecord) -> bool:
  """An absl logger filter: orbax's warnings and error reports (a failed background read or
  write, with its thread's traceback) go to the debug log; the caller gets one error or warning
  of ours that says what failed and what was done about it."""
  if record.levelno < logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname:
    return True
  _log.debug("orbax: %s", record.getMessage(), exc_info=record.exc_info)
  return False


def _is_closed_loop_callback(unraisable: Any) -> bool:
  """Whether an unraisable exception is tensorstore completing a read for an asyncio loop that
  orbax has closed already (after another read of the same restore or save failed)."""
  if unraisable.object is not None or not isinstance(unraisable.exc_value, RuntimeError):
    return False
  tb = unraisable.exc_traceback
  while tb is not None and tb.tb_frame.f_code.co_name != "call_soon_threadsafe":
    tb = tb.tb_next
  return tb is not None


def quiet_orbax() -> None:
  """Keeps orbax's thread tracebacks off stderr, in the debug log (once per process)."""
  logging.getLogger("absl").addFilter(orbax_report)  # a no-op when it is there already
  previous = sys.unraisablehook
  if getattr(previous, "quiets_orbax", False):
    return

  def hook(unraisable: Any) -> None:
    if _is_closed_loop_callback(unraisable):
      _log.debug("orbax: a read completed after its event loop closed (%s)", unraisable.exc_value)
    else:
      previous(unraisable)

  hook.quiets_orbax = True
  sys.unraisablehook = hook


def _not_metric_warning(record: logging.LogRecord) -> bool:
  return not str(record.msg).startswith("Requested `tracked_metric`")


@contextlib.contextmanager
def metricless_save() -> Iterator[None]:
  """Drops orbax's warning about a save without metrics (fine where only LatestN keeps steps)."""
  absl_logger = logging.getLogger("absl")
  absl_logger.addFilter(_not_metric_warning)
  try:
    yield
  finally:
    absl_logger.removeFilter(_not_metric_warning)
