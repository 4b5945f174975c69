"""The commands' one command line: absl flags of each command's own, --help exiting 0, bad
input as one `error:` line with exit status 2, config overrides, and one log format."""

import logging
import re
import sys

import pytest
from absl import flags

from aigc_jax import command_line
from aigc_jax import evaluate
from aigc_jax import progress
from aigc_jax import sample
from aigc_jax.bench import cli as bench_cli

DOC = """Does a thing.

python -m thing --workdir DIR [--steps_per_call K]
"""


def thing_flags() -> flags.FlagValues:
  flag_values = command_line.new_flags()
  flags.DEFINE_string("workdir", None, "A run's directory.", flag_values=flag_values)
  flags.DEFINE_integer("steps_per_call", 1, "Steps per call.", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_boolean("json", False, "Print JSON.", flag_values=flag_values)
  flags.DEFINE_multi_string("vary", [], "KEY=SPEC to vary.", flag_values=flag_values)
  return flag_values


def parse(argv, **kwargs):
  return command_line.parse(thing_flags(), argv, DOC, "python -m thing", **kwargs)


def exit_of(argv, capsys, **kwargs):
  """(exit status, stdout, stderr) of parsing `argv`."""
  with pytest.raises(SystemExit) as e:
    parse(argv, **kwargs)
  out, err = capsys.readouterr()
  return e.value.code, out, err


@pytest.mark.parametrize("help_arg", ["-h", "--help", "--helpfull"])
def test_help_prints_the_docstring_and_every_flag_and_exits_0(help_arg, capsys):
  code, out, err = exit_of(["--workdir", "w", help_arg], capsys)
  assert code == 0 and err == ""
  assert out.startswith("Does a thing.\n\npython -m thing --workdir DIR")
  assert "--workdir: A run's directory." in out
  assert "--steps_per_call: Steps per call. (a positive integer; default: 1)" in out
  assert "--[no]json: Print JSON. (default: false)" in out
  assert "--vary: KEY=SPEC to vary. (repeatable)" in out


@pytest.mark.parametrize("argv, message", [
    (["--steps-per-call=2"], "unknown flag --steps-per-call (did you mean --steps_per_call?)"),
    (["--steps_per_call=0"], "flag --steps_per_call=0: 0 is not a positive integer"),
    (["--workdir"], "missing value for flag --workdir"),
    (["--workdir", "w", "extra"], "unexpected arguments ['extra']"),
    (["--config.seed=1"], "unknown flag --config.seed"),
])
def test_bad_input_is_one_error_line_and_exit_status_2(argv, message, capsys):
  code, out, err = exit_of(argv, capsys)
  assert code == 2 and out == ""
  assert err == f"error: {message}; see python -m thing --help\n"


def test_an_unknown_flag_is_refused_beside_config_overrides(capsys):
  code, _, err = exit_of(["--config.seed=1", "--steps-per-call=2"], capsys, overrides=True)
  assert code == 2 and "unknown flag --steps-per-call (did you mean" in err


def test_positional_arguments_and_overrides_come_back_in_order():
  argv = ["exp.py", "--config.seed", "3", "--workdir=w", "--config.lr=0.1", "--json"]
  assert parse(argv, positional=True,
               overrides=True) == (["exp.py"], ["--config.seed", "3", "--config.lr=0.1"])


def test_every_parse_starts_from_the_defaults():
  flag_values = thing_flags()
  command_line.parse(flag_values, ["--json", "--steps_per_call=4"], DOC, "thing")
  assert flag_values.json and flag_values.steps_per_call == 4
  command_line.parse(flag_values, [], DOC, "thing")
  assert not flag_values.json and flag_values.steps_per_call == 1


def test_commands_have_flags_of_their_own():
  """sample and evaluate, both imported here, define --workdir each in their own FlagValues."""
  assert sample.FLAGS is not evaluate.FLAGS and flags.FLAGS not in (sample.FLAGS, evaluate.FLAGS)
  assert "workdir" in sample.FLAGS and "workdir" in evaluate.FLAGS
  assert "workdir" not in flags.FLAGS and "steps_per_call" in bench_cli.FLAGS


def test_a_command_logs_one_format_and_drops_python_s_default_handler(monkeypatch, capsys):
  monkeypatch.setattr(logging.root, "handlers", [logging.StreamHandler(sys.stderr)])
  command_line.use_one_log_format("aigc_jax.sample")  # called from Python: the handlers stay
  assert [type(h) for h in logging.root.handlers] == [logging.StreamHandler]
  command_line.use_one_log_format("__main__")
  command_line.use_one_log_format("__main__")  # once only
  assert [type(h) for h in logging.root.handlers] == [progress.LogHandler]
  logging.getLogger("aigc_jax.sample").info("sampled %d images", 4)
  err = capsys.readouterr().err
  assert re.fullmatch(
      r"I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ test_command_line\.py:\d+\] "
      r"sampled 4 images\n", err), err
