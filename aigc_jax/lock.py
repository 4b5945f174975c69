"""One training process per run directory: an exclusive lock on `<workdir>/.lock`.

The lock is an `flock` on the file, so the kernel drops it when its process dies: a lock left by
a killed run is taken over by the next one. The file names the holder (host, pid, start time).
A sweep holds its members' folders too and marks each (`.sweep_member`): a plain run refuses a
marked folder, also once the sweep has stopped.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
from typing import Iterator

from aigc_jax import safe_files
from aigc_jax.safe_files import WorkdirError

LOCK_FILE = ".lock"
MEMBER_FILE = ".sweep_member"  # in a sweep's member folder; holds the sweep's directory


def make_workdir(workdir: str) -> str | None:
  """Creates `workdir` if needed; returns the topmost directory it created (None when `workdir`
  existed). Raises WorkdirError."""
  top, path = None, os.path.abspath(workdir)
  while not os.path.lexists(path):
    top, path = path, os.path.dirname(path)
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
  return top


def member_error(workdir: str) -> WorkdirError:
  """The error of a plain run pointed at a sweep's member folder `workdir` (SWEEP/members/NN)."""
  sweep = os.path.dirname(os.path.dirname(os.path.normpath(workdir))) or "."
  name = os.path.basename(os.path.normpath(workdir))
  member = str(int(name)) if name.isdigit() else "N"
  return WorkdirError(
      f"{workdir} is a member of the sweep in {sweep}; resume the sweep with python -m "
      f"aigc_jax.sweep --workdir {sweep}, or train a copy of the member (python -m aigc_jax.sweep "
      f"--workdir {sweep} --export {member} --to RUNDIR); delete "
      f"{os.path.join(workdir, MEMBER_FILE)} only if the sweep is gone")


def _claim(fd: int, workdir: str, member_of: str | None) -> None:
  """Takes the lock on `fd` and names this process in it; marks a member of `member_of`."""
  marker = os.path.join(workdir, MEMBER_FILE)
  if member_of is None and os.path.lexists(marker):
    raise member_error(workdir)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.read(fd, 200).decode(errors="replace").strip() or "an unknown process"
    raise WorkdirError(f"{workdir} is in use by another training process ({holder}); wait for "
                       "it to end or stop it, or choose another --workdir") from None
  os.ftruncate(fd, 0)
  os.write(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since "
               f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}".encode())
  if member_of is not None:
    safe_files.write_text(marker, os.path.abspath(member_of) + "\n")


def _remove_unused(workdir: str, top: str | None) -> None:
  """Removes `workdir` when it holds only the lock's files, and the empty folders above it up to
  `top`, the first one `make_workdir` created (nothing when it created none)."""
  if top is None or set(os.listdir(workdir)) - {LOCK_FILE, MEMBER_FILE}:
    return
  for name in os.listdir(workdir):
    os.remove(os.path.join(workdir, name))
  path = os.path.abspath(workdir)
  while path.startswith(top):
    try:
      os.rmdir(path)
    except OSError:
      return
    path = os.path.dirname(path)


@contextlib.contextmanager
def hold(workdir: str, member_of: str | None = None) -> Iterator[None]:
  """Holds the workdir's lock while the block runs. Raises WorkdirError naming the holder when
  another process has it, naming the link when `.lock` is one, and `member_error` for a sweep's
  member folder unless `member_of` (the sweep's directory: the folder is marked its member) is
  given. A directory this call created and that the block left unused (a run that failed before
  writing anything) is removed again."""
  top = make_workdir(workdir)
  fd = safe_files.open_in_place(os.path.join(workdir, LOCK_FILE), os.O_RDWR)
  try:
    _claim(fd, workdir, member_of)
  except BaseException:
    os.close(fd)
    raise
  try:
    yield
  finally:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    _remove_unused(workdir, top)
