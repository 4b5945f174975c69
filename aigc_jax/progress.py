"""Progress of long work done in chunks: a tqdm bar on a terminal; outside one (a log file), a
plain log line after each chunk, with no carriage return."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)
T = TypeVar("T")


def progress(chunks: Iterable[T], desc: str = "sampling") -> Iterator[T]:
  """Yields `chunks`, showing how many are done (see the module's docstring)."""
  if sys.stderr.isatty():
    yield from tqdm(chunks, desc=desc, unit="chunk", dynamic_ncols=True)
    return
  chunks, start = list(chunks), time.perf_counter()
  for i, chunk in enumerate(chunks):
    yield chunk
    log.info("%s: chunk %d/%d done (%.0f s)", desc, i + 1, len(chunks), time.perf_counter() - start)
