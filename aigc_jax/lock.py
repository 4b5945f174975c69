"""One training process per run directory: an exclusive lock on `<workdir>/.lock`.

The lock is an `flock` on the file, so the kernel drops it when its process dies: a lock left by
a killed run is taken over by the next one. The file names the holder (host, pid, start time).
A sweep holds its members' folders too and marks each (`.sweep_member`): a plain run refuses a
marked folder, also once the sweep has stopped. A folder that `hold` made is removed again when
a stop signal ends the process before its training loop starts: nothing half-made is left.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import os
import shutil
import socket
from typing import Iterator

from aigc_jax import entry
from aigc_jax import safe_files
from aigc_jax.safe_files import WorkdirError

LOCK_FILE = ".lock"
MEMBER_FILE = ".sweep_member"  # in a sweep's member folder; holds the sweep's directory
# How much longer than the workdir's the paths of a run's files get (checkpoints' temporary
# folders and array files, the temporary files of whole writes).
RUN_PATH_ROOM = 256


def check_path_length(workdir: str) -> None:
  """Raises WorkdirError when the paths of the run's files would exceed the system's limit."""
  path = os.path.abspath(workdir)
  existing = path
  while not os.path.isdir(existing):
    existing = os.path.dirname(existing)
  try:
    limit = os.pathconf(existing, "PC_PATH_MAX")
  except (OSError, ValueError):
    limit = 4096
  if len(os.fsencode(path)) + RUN_PATH_ROOM > limit:
    shown = path if len(path) <= 80 else f"{path[:40]}...{path[-30:]}"
    raise WorkdirError(f"--workdir {shown} is {len(os.fsencode(path))} bytes long; the files of a "
                       f"run need up to {RUN_PATH_ROOM} more, beyond this system's limit of "
                       f"{limit}: choose a shorter --workdir")


def make_workdir(workdir: str) -> str | None:
  """Creates `workdir` if needed; returns the topmost directory it created (None when `workdir`
  existed). Raises WorkdirError."""
  check_path_length(workdir)
  top, path = None, os.path.abspath(workdir)
  while not os.path.lexists(path):
    top, path = path, os.path.dirname(path)
  try:
    os.makedirs(workdir, exist_ok=True)
  except FileExistsError:
    raise WorkdirError(f"{workdir} is a file, not a directory; choose another --workdir") from None
  except OSError as e:
    raise WorkdirError(entry.os_error_message(e, workdir, "cannot create")) from None
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
  try:
    os.ftruncate(fd, 0)
    os.write(
        fd, f"host {socket.gethostname()}, pid {os.getpid()}, since "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}".encode())
  except OSError as e:
    raise safe_files.write_error(os.path.join(workdir, LOCK_FILE), e) from None
  if member_of is not None:
    safe_files.write_text(marker, os.path.abspath(member_of) + "\n")


def _held(fd: int) -> bool:
  """Whether this process holds (or now takes) the lock on `fd`."""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    return False
  return True


def _remove_unused(workdir: str, top: str | None) -> None:
  """Removes `workdir` when it holds only the lock's files, and the empty folders above it up to
  `top`, the first one `make_workdir` created (nothing when it created none)."""
  if top is None or set(os.listdir(workdir)) - {LOCK_FILE, MEMBER_FILE}:
    return
  for name in os.listdir(workdir):
    os.remove(os.path.join(workdir, name))
  _remove_folders(workdir, top)


def _remove_folders(workdir: str, top: str) -> None:
  """Removes the empty `workdir` and the empty folders above it up to `top`."""
  path = os.path.abspath(workdir)
  while path.startswith(top):
    try:
      os.rmdir(path)
    except OSError:
      return
    path = os.path.dirname(path)


def _remove_made(workdir: str, top: str) -> None:
  """Removes `workdir` and all in it, then the folders up to `top` that it leaves empty: what a
  run made before its training loop (undone when a stop signal ends it there)."""
  shutil.rmtree(workdir, ignore_errors=True)
  _remove_folders(os.path.dirname(os.path.abspath(workdir)), top)


@contextlib.contextmanager
def hold(workdir: str, member_of: str | None = None) -> Iterator[None]:
  """Holds the workdir's lock while the block runs. Raises WorkdirError naming the holder when
  another process has it, naming the link when `.lock` is one, and `member_error` for a sweep's
  member folder unless `member_of` (the sweep's directory: the folder is marked its member) is
  given. A directory this call created and that the block left unused (a run that failed before
  writing anything) is removed again, and so is one that a stop signal ended before its training
  loop started (`entry.undone_on_signal`). A link at a member's folder's parent is refused."""
  members = os.path.dirname(os.path.abspath(workdir))
  if member_of is not None and os.path.islink(members):
    raise WorkdirError(f"{members} is a symbolic link, where the sweep keeps its members' "
                       "folders; a run never writes through it: remove it, or choose another "
                       "--workdir")
  top = make_workdir(workdir)
  with contextlib.ExitStack() as undo:
    if top is not None:
      undo.enter_context(
          entry.undone_on_signal(functools.partial(_remove_made, workdir, top),
                                 until_training=True))
    try:
      fd = safe_files.open_in_place(os.path.join(workdir, LOCK_FILE), os.O_RDWR)
    except WorkdirError:
      _remove_unused(workdir, top)
      raise
    try:
      _claim(fd, workdir, member_of)
    except BaseException:
      if _held(fd):  # not another process's: a folder made here is removed again
        _remove_unused(workdir, top)
      os.close(fd)
      raise
    try:
      yield
    finally:
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)
      _remove_unused(workdir, top)
