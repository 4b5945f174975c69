"""Writing the files of a run directory without ever writing through a link planted there.

Files written in place (the lock, metrics.jsonl) are opened with O_NOFOLLOW and must be regular
files with one link; files written whole go to a new temporary file beside them (mkstemp:
O_EXCL) renamed over the path, which replaces a link there, never its target. A write that fails
(a full disk, another user's file) is a WriteError naming the file, the cause and the fix, and
leaves no part of what it wrote: an appended record is cut off again, a temporary file removed
(also when a stop signal ends the process: `entry.undone_on_signal`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import stat
import tempfile
from typing import BinaryIO, Callable

from aigc_jax import entry


class WorkdirError(RuntimeError):
  """The run directory cannot be used: not creatable, not writable, in use, or holding a link
  or something else where a run's file or folder belongs."""


class WriteError(WorkdirError, OSError):
  """A file could not be written (its `errno` is the cause's); nothing half-written is left."""


def write_error(path: str, e: OSError, target: str = "--workdir") -> WriteError:
  """The WriteError of `e`, raised writing `path`: the file, the cause and the fix (`target`:
  what to choose instead, e.g. --out)."""
  if isinstance(e, WriteError):
    return e
  error = WriteError(entry.os_error_message(e, path, "cannot write", target))
  error.errno = e.errno
  return error


def _refuse(path: str, what: str) -> WorkdirError:
  return WorkdirError(f"{path} is {what}, where this run keeps its own files; a run "
                      "never writes through it: remove it, or choose another --workdir")


def open_in_place(path: str, flags: int) -> int:
  """A descriptor of `path` (created 0o644 when missing) opened with `flags` | O_CREAT, never
  following a symbolic link. Raises WorkdirError when `path` is a link, is not a regular file,
  has other hard links, or cannot be opened."""
  try:
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise _refuse(path, "a symbolic link") from None
    raise WorkdirError(entry.os_error_message(e, path, "cannot open")) from None
  info = os.fstat(fd)
  if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
    os.close(fd)
    raise _refuse(
        path, "not a regular file"
        if not stat.S_ISREG(info.st_mode) else f"a file with {info.st_nlink} hard links")
  return fd


def append_bytes(fd: int, data: bytes, path: str) -> None:
  """Appends all of `data` to the file `fd` (of `path`, opened O_APPEND), or none of it: after a
  failed or short write the file is cut back to its size before, and WriteError is raised."""
  size = os.fstat(fd).st_size
  try:
    view = memoryview(data)
    while view:
      view = view[os.write(fd, view):]
  except OSError as e:
    with contextlib.suppress(OSError):
      os.ftruncate(fd, size)
    raise write_error(path, e) from None


def append_text(path: str, text: str) -> None:
  """Appends `text` to `path` whole or not at all (`open_in_place`: WorkdirError for a link
  there; `append_bytes`: WriteError when it cannot be written, and a file it made is removed)."""
  new = not os.path.lexists(path)
  fd = open_in_place(path, os.O_WRONLY | os.O_APPEND)
  try:
    append_bytes(fd, text.encode("utf-8"), path)
  except WriteError:
    if new:
      remove(path)
    raise
  finally:
    os.close(fd)


def make_dir(path: str) -> str:
  """Creates the directory `path` (and its parents) when missing; returns it. Raises
  WorkdirError when `path` is a symbolic link or a file, or cannot be created."""
  if os.path.islink(path):
    raise _refuse(path, "a symbolic link")
  try:
    os.makedirs(path, exist_ok=True)
  except FileExistsError:
    raise _refuse(path, "not a directory") from None
  except OSError as e:
    raise WorkdirError(entry.os_error_message(e, path, "cannot create")) from None
  return path


def atomic_write(path: str, write: Callable[[BinaryIO], None], target: str = "--workdir") -> str:
  """Calls `write` on a new temporary file beside `path` (0o644), then renames it to `path`:
  a reader never sees half a file, and a link at `path` is replaced, its target untouched.
  The temporary file is removed when `write` fails, or a stop signal ends the process; an
  OSError with a cause (errno) is a WriteError whose fix is to choose another `target`.
  Returns `path`."""
  directory, name = os.path.split(path)
  try:
    fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.", suffix=".tmp")
  except OSError as e:
    raise write_error(path, e, target) from None
  try:
    with entry.undone_on_signal(functools.partial(remove, tmp)):
      with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o644)
        write(f)
      os.replace(tmp, path)
  except BaseException as e:
    remove(tmp)
    if isinstance(e, OSError) and e.errno is not None:
      raise write_error(path, e, target) from None
    raise
  return path


def remove(path: str) -> None:
  """Removes the file `path` if it is there."""
  with contextlib.suppress(FileNotFoundError):
    os.unlink(path)


def write_text(path: str, text: str) -> str:
  """`atomic_write` of `text` (UTF-8) to `path`."""
  return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def remove_leftovers(directory: str, pattern: str) -> list[str]:
  """Removes the entries of `directory` whose whole names match `pattern` (what writes cut
  short left: temporary files or folders), a link itself, never its target; their names."""
  try:
    names = [n for n in os.listdir(directory) if re.fullmatch(pattern, n)]
  except OSError:
    return []
  for name in names:
    path = os.path.join(directory, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      with contextlib.suppress(OSError):
        os.unlink(path)
  return names
