"""The commands' command line, one way for every entry point.

Each command defines absl flags in a `flags.FlagValues` of its own (`new_flags`), so that two
commands can be imported in one process, and `parse`s its arguments with it: `-h` or `--help`
prints the module's docstring and the flags and exits 0; a flag that is unknown or cannot take
its value, or an argument the command does not take, is one `error:` line and exit status 2.
`use_one_log_format` gives every command the same log lines, absl's, written above a progress bar.
"""

from __future__ import annotations

import difflib
import logging
import sys
import textwrap
from typing import NoReturn

from absl import flags
from absl import logging as absl_logging

from aigc_jax import entry
from aigc_jax import progress

WIDTH = 100  # of the help's lines
OVERRIDE = "--config."  # --config.KEY=VALUE (or --config.KEY VALUE): a config override


def new_flags() -> flags.FlagValues:
  """A command's own flags: define them with `flag_values=` it."""
  return flags.FlagValues()


def _default(flag) -> str:
  value = flag.default
  if isinstance(value, bool):
    return str(value).lower()
  return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def flags_help(flag_values: flags.FlagValues) -> str:
  """One entry per flag, in the order they were defined: `--name: help (kind; default: value)`."""
  lines = []
  for name in flag_values:
    flag = flag_values[name]
    if name != flag.name:
      continue  # a short name of a flag already listed
    text, notes = flag.help, [flag.parser.syntactic_help] if flag.parser.syntactic_help else []
    if isinstance(flag, flags.MultiFlag):  # absl's help ends "; repeat this option to ..."
      text, notes = text.rsplit(";", 1)[0], ["repeatable"] + notes
    if flag.default not in (None, "", []):
      notes.append(f"default: {_default(flag)}")
    text = " ".join(f"--{'[no]' if flag.boolean else ''}{name}: {text}".split())
    text += f" ({'; '.join(notes)})" if notes else ""
    lines += textwrap.wrap(text, WIDTH, initial_indent="  ", subsequent_indent="      ")
  return "\n".join(lines)


def help_text(doc: str, flag_values: flags.FlagValues) -> str:
  """The command's help: its module's docstring, then its flags."""
  return f"{doc.strip()}\n\nflags:\n{flags_help(flag_values)}"


def usage_error(message: str, program: str = "") -> NoReturn:
  """The one line of input the command cannot take (naming `program`'s help, if given), and exit
  status 2."""
  print(f"error: {message}" + (f"; see {program} --help" if program else ""), file=sys.stderr)
  sys.exit(entry.EXIT_ERROR)


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
  """(the arguments of `args` that are no override, the --config.KEY=VALUE overrides (a
  --config.KEY with its VALUE next)), each in order."""
  others, overrides, args = [], [], list(args)
  while args:
    arg = args.pop(0)
    if arg.startswith(OVERRIDE):
      overrides += [arg] + ([args.pop(0)] if "=" not in arg and args else [])
    else:
      others.append(arg)
  return others, overrides


def _unknown_flag(arg: str, flag_values: flags.FlagValues) -> str:
  name = arg.lstrip("-").partition("=")[0]
  close = difflib.get_close_matches(name.replace("-", "_"), list(flag_values), 1)
  return f"unknown flag --{name}" + (f" (did you mean --{close[0]}?)" if close else "")


def parse(flag_values: flags.FlagValues, argv: list[str] | None, doc: str, program: str, *,
          positional: bool = False, overrides: bool = False) -> tuple[list[str], list[str]]:
  """Parses the command's arguments `argv` (None: sys.argv[1:]) into `flag_values`, from their
  defaults however often it is called; returns (the positional arguments, which only a
  `positional` command takes; the --config.KEY=VALUE overrides, which only an `overrides` one
  takes). Help and bad input end the process (see the module's docstring); `program` is the
  command as its user types it, e.g. "python -m aigc_jax.sample"."""
  args = sys.argv[1:] if argv is None else list(argv)
  entry.exit_on_help([program] + args, lambda: help_text(doc, flag_values))
  flag_values.unparse_flags()
  try:
    rest = flag_values([program] + args, known_only=overrides)[1:]
  except flags.UnrecognizedFlagError as e:
    usage_error(_unknown_flag(e.flagname, flag_values), program)
  except flags.Error as e:  # e.g. "flag --num=x: invalid literal for int() ..."
    usage_error(str(e)[:1].lower() + str(e)[1:], program)
  others, config_overrides = split_overrides(rest) if overrides else (rest, [])
  for arg in others:
    if arg.startswith("-") and arg != "-":
      usage_error(_unknown_flag(arg, flag_values), program)
  if others and not positional:
    usage_error(f"unexpected arguments {others}", program)
  return others, config_overrides


class AbslFormatter(logging.Formatter):
  """absl's log lines: `I1206 12:34:56.789012 1234 train.py:180] message`."""

  def format(self, record: logging.LogRecord) -> str:
    return absl_logging.get_absl_log_prefix(record) + super().format(record)


def use_one_log_format(module: str) -> None:
  """Called by every command once its flags are parsed: its own INFO lines and its dependencies'
  warnings (`entry.quiet_dependencies`); when the command is the program (its caller's `module`
  is "__main__", not a test calling its `main`), every log line in absl's format and written
  above any progress bar (`progress.LogHandler`), instead of Python's or absl's own handlers."""
  entry.quiet_dependencies()
  if module != "__main__":
    return
  root = logging.getLogger()
  for handler in list(root.handlers):
    if isinstance(handler, (progress.LogHandler, absl_logging.ABSLHandler)) or (
        type(handler) is logging.StreamHandler and  # pylint: disable=unidiomatic-typecheck
        handler.stream in (sys.stderr, sys.__stderr__)):  # logging.basicConfig's
      root.removeHandler(handler)
  handler = progress.LogHandler()
  handler.setFormatter(AbslFormatter())
  root.addHandler(handler)
