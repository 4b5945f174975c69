"""What the commands do first: a stop signal ends them at once with one line, and the errors a
user can act on (out of memory, a full or unwritable disk) are one line instead of a traceback.

`python experiments/NAME.py` and `python -m aigc_jax.{train,sample,evaluate,sweep,plot}` install
this when the package is imported, before the heavy imports (`begin_if_entry_point`); their `main`
calls `begin` to name what it does. SIGINT (Ctrl-C) and SIGTERM then undo what the process left
half-made (`undone_on_signal`) and exit with 128 + the signal; the training loop handles them its
own way while it runs (`signals.StopSignals`: save at the end of the chunk). A program that only
imports aigc_jax (a notebook, a test) keeps Python's handlers.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import signal
import sys
import threading
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
ENTRY_MODULES = ("aigc_jax.train", "aigc_jax.sample", "aigc_jax.evaluate", "aigc_jax.sweep",
                 "aigc_jax.plot")
EXPERIMENTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "experiments")
EXIT_ERROR = 2  # the exit status of every one-line error

_undo: dict[int, tuple[Callable[[], None], bool]] = {}  # key -> (undo, until the loop starts)
_keys = itertools.count()
_doing: list[tuple[str, str]] = [("", "")]  # (what the process does, what to lower), innermost last
_installed = [False]
_ended = [""]  # "done": the command's work is complete; "failed": its error line is out


class OutOfMemory(RuntimeError):
  """The device or the host ran out of memory; the message names the phase and what to lower."""


# -- stop signals ----------------------------------------------------------------------------------


def undo_on_signal(undo: Callable[[], None], until_training: bool = False) -> Callable[[], None]:
  """Calls `undo` (removing something half-made) if a stop signal ends the process, until the
  function returned is called; `until_training`: only until the training loop starts."""
  key = next(_keys)
  _undo[key] = (undo, until_training)
  return lambda: _undo.pop(key, None)


@contextlib.contextmanager
def undone_on_signal(undo: Callable[[], None], until_training: bool = False) -> Iterator[None]:
  """`undo_on_signal` while the block runs."""
  forget = undo_on_signal(undo, until_training)
  try:
    yield
  finally:
    forget()


def training_started() -> None:
  """From here a stop signal saves a checkpoint: what was to be undone until then is kept."""
  for key, (_, until_training) in list(_undo.items()):
    if until_training:
      _undo.pop(key, None)


def undo_all() -> None:
  """Calls every registered undo (newest first); an undo that fails is skipped."""
  for undo, _ in reversed(list(_undo.values())):
    try:
      undo()
    except Exception:  # pylint: disable=broad-except
      pass


def _flush() -> None:
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError, AttributeError):
      pass


def say(line: str) -> None:
  """Writes `line` to stderr on a line of its own (after an unfinished progress bar)."""
  bars = getattr(getattr(sys.modules.get("tqdm"), "tqdm", None), "_instances", None)
  _flush()
  try:
    sys.stderr.write(("\n" if bars else "") + line + "\n")
    sys.stderr.flush()
  except (OSError, ValueError):
    pass


def _exit_on_signal(signum: int, frame) -> None:
  del frame
  undo_all()
  what, name = _doing[-1][0], signal.Signals(signum).name
  if _ended[0] == "done":
    say(f"error: stopped by {name} after the command had finished: its output is complete")
  elif not _ended[0]:
    say(f"error: stopped by {name}{f' while {what}' if what else ''}; nothing half-written is "
        "left: run the same command again")
  _flush()
  os._exit(128 + signum)  # pylint: disable=protected-access  (no teardown of XLA's threads)


@contextlib.contextmanager
def command() -> Iterator[None]:
  """Around a command's work: once it has ended, a stop signal during the interpreter's teardown
  exits with 128 + signal, saying the command had finished, or with no other line after its
  error line (or its stop line)."""
  try:
    yield
  except BaseException as e:
    _ended[0] = "done" if isinstance(e, SystemExit) and not e.code else "failed"
    raise
  _ended[0] = "done"


def finished() -> None:
  """The command's work is complete (only its output is left to print): a stop signal from now
  says so instead of "nothing half-written is left"."""
  _ended[0] = _ended[0] or "done"


def exit_now(code: int) -> None:
  """Ends the command with `code` once its line is written: a failure (code != 0) of an entry
  point exits at once, not waiting for threads that a failed write left running (orbax's);
  otherwise SystemExit."""
  if code and _installed[0]:
    _ended[0] = "failed"
    undo_all()  # what background writes left half-made
    logging.shutdown()
    _flush()
    os._exit(code)  # pylint: disable=protected-access
  sys.exit(code)


def _one_line_hook(exc_type, exc, tb) -> None:
  """sys.excepthook: a known error (`describe`) is one line and exit status 2."""
  line = describe(exc) if isinstance(exc, Exception) else None
  if line is None:
    sys.__excepthook__(exc_type, exc, tb)
    return
  say(f"error: {line}")
  os._exit(EXIT_ERROR)  # pylint: disable=protected-access


def _install() -> None:
  if _installed[0] or threading.current_thread() is not threading.main_thread():
    return
  for signum in STOP_SIGNALS:
    signal.signal(signum, _exit_on_signal)
  sys.excepthook = _one_line_hook
  _installed[0] = True


def started_as_entry_point(argv: list[str] | None = None) -> bool:
  """Whether the interpreter was started (`argv`: sys.orig_argv) on an experiment file or with
  `-m` on one of ENTRY_MODULES."""
  args = list(getattr(sys, "orig_argv", []) if argv is None else argv)[1:]
  while args:
    arg = args.pop(0)
    if arg == "-m" or (arg.startswith("-m") and len(arg) > 2):
      return (arg[2:] or (args[0] if args else "")) in ENTRY_MODULES
    if arg in ("-c", "-"):
      return False
    if arg in ("-W", "-X", "--check-hash-based-pycs"):
      args = args[1:]
    elif not arg.startswith("-"):
      script = os.path.realpath(arg)
      return os.path.dirname(script) == os.path.realpath(EXPERIMENTS_DIR)
  return False


def begin_if_entry_point() -> None:
  """`begin` when the interpreter was started on one of the commands (the package's import)."""
  if started_as_entry_point():
    _doing[0] = ("starting", "")
    _install()


HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")


def exit_on_help(argv: list[str], text: Callable[[], str]) -> None:
  """Prints `text()` and exits 0 when `argv` (a command's, the program first) asks for help
  (`HELP_ARGS`), before any flag is parsed (`command_line.parse`)."""
  if any(a in HELP_ARGS for a in argv[1:]):
    print(text())
    sys.exit(0)


def begin(what: str = "", lower: str = "", module: str = "__main__") -> None:
  """Called first by a command's `main`: names what it does (`what`, e.g. "sampling") and what
  to lower when it runs out of memory (`lower`); when the caller's `module` is the program's
  main module, installs the stop signals' handlers and one-line errors (never for a `main`
  called from Python, e.g. by a test)."""
  _doing[0] = (what, lower)
  if module == "__main__":
    _install()


# -- one-line errors -------------------------------------------------------------------------------


@contextlib.contextmanager
def doing(what: str, lower: str = "") -> Iterator[None]:
  """Names what the block does for the stop signals' line; an out-of-memory error raised in it
  becomes OutOfMemory saying `what` ran out and that `lower` is what to lower."""
  _doing.append((what, lower))
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    if is_out_of_memory(e) and not isinstance(e, OutOfMemory):
      raise OutOfMemory(out_of_memory_message(e, what, lower)) from None
    raise
  finally:
    _doing.pop()


def is_out_of_memory(e: BaseException) -> bool:
  """MemoryError (numpy's too), or XLA's RESOURCE_EXHAUSTED / out-of-memory runtime error."""
  if isinstance(e, MemoryError):
    return True
  text = str(e)
  return type(e).__name__ in ("JaxRuntimeError",
                              "XlaRuntimeError") and ("RESOURCE_EXHAUSTED" in text or
                                                      "out of memory" in text.lower())


def out_of_memory_message(e: BaseException, what: str, lower: str) -> str:
  cause = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
  return (f"ran out of memory while {what or 'running'} ({cause}); lower "
          f"{lower or 'the sizes in the config (batch_size, eval_batch_size, ...)'}, or free "
          "memory on the device")


FIXES = {
    errno.ENOSPC: "free space on its disk or choose another {target}",
    errno.EDQUOT: "free space in your disk quota or choose another {target}",
    errno.EACCES: "another user owns it (or its folder) or it is read-only: ask its owner, fix "
                  "its permissions, or choose another {target}",
    errno.EROFS: "its file system is read-only: choose another {target}",
    errno.ENAMETOOLONG: "the path is too long for the file system: choose a shorter {target}",
}
FIXES[errno.EPERM] = FIXES[errno.EACCES]


def os_error_message(e: OSError, path: str | None = None, verb: str = "cannot write",
                     target: str = "--workdir") -> str:
  """`{verb} {path} ({cause}); {fix}` for an OSError of the file `path` (default its filename)."""
  path = path or e.filename or "a file"
  fix = FIXES.get(e.errno, "fix it or choose another {target}").format(target=target)
  return f"{verb} {path} ({e.strerror or e}); {fix}"


def describe(e: BaseException) -> str | None:
  """The one line of an error a user can act on (out of memory, an OSError of a known cause or
  of a named file), or None for an error that is a bug (its traceback is kept)."""
  if isinstance(e, OutOfMemory):
    return str(e)
  if is_out_of_memory(e):
    return out_of_memory_message(e, *_doing[-1])
  if isinstance(e, OSError) and (e.errno in FIXES or e.filename):
    return os_error_message(e, verb="cannot use") if e.strerror else str(e)
  return None


def quiet_dependencies() -> None:
  """Called by entry points only (`command_line.use_one_log_format`): our INFO lines stay,
  orbax's and absl's INFO chatter goes."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("aigc_jax").setLevel(logging.INFO)
