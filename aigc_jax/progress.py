"""Progress of long work done in chunks, and log lines that keep out of its way.

`progress` shows a tqdm bar on a terminal; outside one (a log file), a plain log line at most
every PLAIN_EVERY_S seconds and after the last chunk, with no carriage return. `LogHandler`
writes each log line through `tqdm.write`: a line logged while a bar is shown goes above the
bar, which is drawn again below it, instead of landing in the middle of it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)
T = TypeVar("T")
PLAIN_EVERY_S = 10.0  # outside a terminal, a progress line at most this often (and the last)


def progress(chunks: Iterable[T], desc: str = "sampling") -> Iterator[T]:
  """Yields `chunks`, showing how many are done (see the module's docstring)."""
  if sys.stderr.isatty():
    yield from tqdm(chunks, desc=desc, unit="chunk", dynamic_ncols=True, file=sys.stderr)
    return
  chunks, start = list(chunks), time.perf_counter()
  said = start
  for i, chunk in enumerate(chunks):
    yield chunk
    now = time.perf_counter()
    if i + 1 == len(chunks) or now - said >= PLAIN_EVERY_S:
      said = now
      log.info("%s: chunk %d/%d done (%.0f s)", desc, i + 1, len(chunks), now - start)


class LogHandler(logging.Handler):
  """Writes each record to stderr (the stream of the moment) through `tqdm.write`, so that a
  progress bar being shown is cleared first and drawn again below the line."""

  def emit(self, record: logging.LogRecord) -> None:
    try:
      tqdm.write(self.format(record), file=sys.stderr)
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)
