"""Writing the files of a run directory without ever writing through a link planted there.

Files written in place (the lock, metrics.jsonl) are opened with O_NOFOLLOW and must be regular
files with one link; files written whole go to a new temporary file beside them (mkstemp:
O_EXCL) renamed over the path, which replaces a link there, never its target.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from typing import BinaryIO, Callable


class WorkdirError(RuntimeError):
  """The run directory cannot be used: not creatable, not writable, in use, or holding a link
  or something else where a run's file or folder belongs."""


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
    raise WorkdirError(f"cannot open {path} ({e.strerror}); fix or remove it, or choose another "
                       "--workdir") from None
  info = os.fstat(fd)
  if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
    os.close(fd)
    raise _refuse(path, "not a regular file" if not stat.S_ISREG(info.st_mode) else
                  f"a file with {info.st_nlink} hard links")
  return fd


def append_text(path: str, text: str) -> None:
  """Appends `text` to `path` (`open_in_place`: WorkdirError for a link there)."""
  with os.fdopen(open_in_place(path, os.O_WRONLY | os.O_APPEND), "a", encoding="utf-8") as f:
    f.write(text)


def make_dir(path: str) -> str:
  """Creates the directory `path` (and its parents) when missing; returns it. Raises
  WorkdirError when `path` is a symbolic link or a file."""
  if os.path.islink(path):
    raise _refuse(path, "a symbolic link")
  try:
    os.makedirs(path, exist_ok=True)
  except FileExistsError:
    raise _refuse(path, "not a directory") from None
  return path


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> str:
  """Calls `write` on a new temporary file beside `path` (0o644), then renames it to `path`:
  a reader never sees half a file, and a link at `path` is replaced, its target untouched.
  The temporary file is removed when `write` fails. Returns `path`."""
  directory, name = os.path.split(path)
  fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      os.fchmod(f.fileno(), 0o644)
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
  return path


def write_text(path: str, text: str) -> str:
  """`atomic_write` of `text` (UTF-8) to `path`."""
  return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
