"""Progress of long work done in chunks, and log lines that keep out of its way.

`progress` (over chunks) and `bar` (a count) show a tqdm bar on a terminal; outside one (a log
file), a plain log line at most every PLAIN_EVERY_S seconds and at the end, with no carriage
return. `LogHandler`
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
  chunks = list(chunks)
  counter = PlainBar(len(chunks), desc, "chunk", line="{desc}: chunk {n}/{total} done ({s:.0f} s)")
  for chunk in chunks:
    yield chunk
    counter.update()


class PlainBar:
  """tqdm's bar interface (update, set_postfix, close; a context manager) as plain log lines: one
  at most every PLAIN_EVERY_S seconds and one when the count reaches the total, each `line`
  formatted with desc, n, total, unit, s (seconds so far) and rate (units per second since the
  start), followed by the postfix."""

  def __init__(self, total: int, desc: str, unit: str, initial: int = 0,
               line: str = "{desc}: {n}/{total} {unit} ({s:.0f} s)"):
    self.total, self.desc, self.unit, self.n, self.line = total, desc, unit, initial, line
    self.initial, self.postfix, self._start = initial, "", time.perf_counter()
    self._said = self._start

  def update(self, n: int = 1) -> None:
    self.n += n
    now = time.perf_counter()
    if self.n >= self.total or now - self._said >= PLAIN_EVERY_S:
      self._said, s = now, now - self._start
      text = self.line.format(desc=self.desc, n=self.n, total=self.total, unit=self.unit, s=s,
                              rate=(self.n - self.initial) / max(s, 1e-9))
      log.info("%s", f"{text} {self.postfix}" if self.postfix else text)

  def write(self, text: str) -> None:
    print(text, flush=True)  # as tqdm.write: to stdout

  def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values) -> None:
    del refresh  # tqdm's signature: the postfix shows in the next line
    values = {**(ordered_dict or {}), **values}
    self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

  def close(self) -> None:
    pass

  def __enter__(self) -> PlainBar:
    return self

  def __exit__(self, *unused) -> None:
    self.close()


def bar(total: int, desc: str, unit: str = "step", initial: int = 0, shown: bool = True,
        leave: bool = True, line: str | None = None):
  """A progress bar of `total` units: tqdm's on a terminal, a `PlainBar` (with its `line`, if
  given) outside one, nothing (a disabled tqdm) when not `shown`."""
  if shown and not sys.stderr.isatty():
    return PlainBar(total, desc, unit, initial, **({"line": line} if line else {}))
  return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
              disable=not shown, leave=leave, file=sys.stderr)


class LogHandler(logging.Handler):
  """Writes each record to stderr (the stream of the moment) through `tqdm.write`, so that a
  progress bar being shown is cleared first and drawn again below the line."""

  def emit(self, record: logging.LogRecord) -> None:
    try:
      tqdm.write(self.format(record), file=sys.stderr)
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)
