"""One training process per run directory: an exclusive lock on `<workdir>/.lock`.

The lock is an `flock` on the file, so the kernel drops it when its process dies: a lock left by
a killed run is taken over by the next one. The file names the holder (host, pid, start time).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
from typing import Iterator

LOCK_FILE = ".lock"


class WorkdirError(RuntimeError):
  """The run directory cannot be used: not creatable, not writable, or in use."""


def make_workdir(workdir: str) -> bool:
  """Creates `workdir` if needed; True when it did not exist. Raises WorkdirError."""
  existed = os.path.isdir(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except FileExistsError:
    raise WorkdirError(f"{workdir} is a file, not a directory; choose another --workdir") from None
  except OSError as e:
    raise WorkdirError(f"cannot create {workdir} ({e.strerror}); choose a --workdir where you "
                       "can write") from None
  if not os.access(workdir, os.W_OK):
    raise WorkdirError(f"{workdir} is not writable; choose a --workdir where you can write, or "
                       "use python -m aigc_jax.evaluate / sample to read a finished run")
  return not existed


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds the workdir's lock while the block runs. Raises WorkdirError naming the holder when
  another process has it. A directory this call created and that the block left empty (a run
  that failed before writing anything) is removed again."""
  created = make_workdir(workdir)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.read(fd, 200).decode(errors="replace").strip() or "an unknown process"
    os.close(fd)
    raise WorkdirError(f"{workdir} is in use by another training process ({holder}); wait for "
                       "it to end or stop it, or choose another --workdir") from None
  os.ftruncate(fd, 0)
  os.write(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since "
               f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}".encode())
  try:
    yield
  finally:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    if created and os.listdir(workdir) == [LOCK_FILE]:
      os.remove(path)
      os.rmdir(workdir)
