"""The training commands: `python experiments/NAME.py --workdir DIR [--config.KEY=VALUE ...]`
(`main`) and `python -m aigc_jax.train --workdir DIR --config=experiments/NAME.py
[--config.KEY=VALUE ...]` (`main_module`, ml_collections' config-file convention); both train
the same config the same way.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys

from absl import flags

from aigc_jax import command_line
from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import entry
from aigc_jax import families
from aigc_jax import lock
from aigc_jax import signals as signals_lib
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax.metrics import classifier as classifier_lib

HELP_ARGS = entry.HELP_ARGS
FLAGS = command_line.new_flags()
flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard events and "
    "samples/*.png; an existing run there is resumed.", flag_values=FLAGS)
flags.DEFINE_integer(
    "step", None, "Resume from this checkpoint step (the later ones are deleted); default: the "
    "newest that verifies.", flag_values=FLAGS)
MODULE_USAGE = ("usage: python -m aigc_jax.train --workdir DIR --config=experiments/NAME.py "
                "[--config.KEY=VALUE ...] [--step N]")


def fail(message: str) -> None:
  """The one-line error of bad input: exit status 2."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(entry.EXIT_ERROR)


def print_help(program: str, config, doc: str = "") -> None:
  """The experiment file's docstring (`doc`, else the main module's), the flags and every config
  key with its value."""
  doc = (doc or sys.modules["__main__"].__doc__ or "").strip()
  print(doc or f"python {program} --workdir DIR [--config.KEY=VALUE ...]")
  print(f"\nflags:\n{command_line.flags_help(FLAGS)}\n  --config.KEY=VALUE: override a config "
        "key:")
  for key, value in sorted(config.items()):
    print(f"      {key} = {value!r}")


def run_command(config, workdir: str, step: int | None) -> dict:
  """`train_and_evaluate` for the command line: a stop signal or an error a user can act on
  exits with its one line (status 128 + signal, or 2); a bug keeps its traceback."""
  try:
    return train.train_and_evaluate(config, workdir, step)
  except signals_lib.Stopped as e:
    print(str(e), file=sys.stderr)
    entry.exit_now(e.exit_code)
  except (config_lib.ConfigError, data_lib.DataError, train.TrainingError,
          workdir_lib.CheckpointError, lock.WorkdirError, classifier_lib.CacheError,
          entry.OutOfMemory) as e:
    print(f"error: {e}", file=sys.stderr)
  except Exception as e:  # pylint: disable=broad-except
    if entry.describe(e) is None:  # a bug: its traceback
      raise
    print(f"error: {entry.describe(e)}", file=sys.stderr)
  entry.exit_now(entry.EXIT_ERROR)


def experiments_of(model: str, dataset: str = "") -> list[str]:
  """The experiment files (experiments/*.py, relative) whose get_config builds `model`: those
  named after it first, then those of `dataset`."""
  found = []
  for name in sorted(os.listdir(entry.EXPERIMENTS_DIR)) if os.path.isdir(
      entry.EXPERIMENTS_DIR) else []:
    try:
      with open(os.path.join(entry.EXPERIMENTS_DIR, name), encoding="utf-8") as f:
        if name.endswith(".py") and f'get_config("{model}"' in f.read():
          found.append(name)
    except OSError:
      continue
  found.sort(key=lambda n: (not n.startswith(f"{model}_"), bool(dataset) and dataset not in n))
  return [f"experiments/{name}" for name in found]


def check_model_change(config, model: str, where: str) -> None:
  """ConfigError when --config.model moved `config` (built by `where` for `model`) to a model
  whose config lacks some of its keys: it names the keys of the file's family and the file (or
  the get_config call) to start from."""
  new = config.get("model", model)
  if new == model or new not in families.MODELS:
    return  # the same model, or an unknown one (validate names the choices)
  if all(k in config_lib.get_config(new) for k in config.keys()):
    return
  family = families.MODELS[model].rsplit(".", 1)[-1]
  own = sorted(set(config_lib.get_config(model).keys()) - set(config_lib.base_config()))
  files = experiments_of(new, config.get("dataset", ""))
  start = f"run {files[0]}, or " if files else ""
  raise config_lib.ConfigError(
      f"--config.model={new} changes the model of {where} from '{model}' ({family} family) to "
      f"another family ({families.MODELS[new].rsplit('.', 1)[-1]}); the file's config holds the "
      f"{family} family's keys ({', '.join(own)}), not {new}'s; to train {new}, {start}start "
      f"from aigc_jax.config.get_config('{new}')")


def parse(config, program: str, args: list[str], doc: str = "") -> list[str]:
  """`args` with --config.KEY=VALUE applied to `config`: the rest, for absl. --help prints the
  help and exits 0; a bad override or --config=FILE exits 2 with one line."""
  if any(a in HELP_ARGS for a in args):
    print_help(program, config, doc)
    sys.exit(0)
  if any(a == "--config" or a.startswith("--config=") for a in args):
    fail(f"{program} is itself the config: override its keys with --config.KEY=VALUE "
         "(--config=FILE is for python -m aigc_jax.train)")
  model = config.get("model", "")
  try:
    rest = config_lib.apply_overrides(config, args)
    check_model_change(config, model, program)
  except config_lib.ConfigError as e:
    fail(str(e))
  return rest


def main(get_config) -> None:
  """An experiment file's entry: `python experiments/NAME.py --workdir DIR [--config.K=V]`."""
  module = getattr(get_config, "__module__", "")
  entry.begin("starting the run", module=module)
  run(get_config(), sys.argv[0], sys.argv[1:], module=module)


def config_file(args: list[str]) -> tuple[str | None, list[str]]:
  """(the FILE of --config=FILE or --config FILE, the other arguments)."""
  rest, path, args = [], None, list(args)
  while args:
    arg = args.pop(0)
    if arg == "--config":
      if not args:
        fail("--config needs an experiment file: --config=experiments/NAME.py")
      path = args.pop(0)
    elif arg.startswith("--config="):
      path = arg[len("--config="):]
    else:
      rest.append(arg)
  return path, rest


def load_file(path: str):
  """(the config of experiment file `path`, its docstring); exits 2 with one line when it is
  missing, unreadable or has no get_config."""
  if not path.endswith(".py") or not os.path.exists(path):
    fail(f"--config={path}: no such experiment file; name one such as "
         "experiments/vae_mlp_fashion_mnist.py")
  try:
    with open(path, encoding="utf-8") as f:
      doc = ast.get_docstring(ast.parse(f.read(), path)) or ""
  except (OSError, UnicodeDecodeError) as e:
    fail(f"--config={path}: cannot read it ({getattr(e, 'strerror', None) or e}); name an "
         "experiment file such as experiments/vae_mlp_fashion_mnist.py")
  except SyntaxError as e:
    fail(f"--config={path}: not valid Python (line {e.lineno}: {e.msg})")
  try:
    return config_lib.load_experiment(path), doc
  except config_lib.ConfigError as e:
    fail(str(e))


def main_module(argv: list[str] | None = None) -> None:
  """`python -m aigc_jax.train --workdir DIR --config=experiments/NAME.py [--config.KEY=V]`."""
  module = "__main__" if argv is None else __name__
  entry.begin("starting the run", module=module)
  args = sys.argv[1:] if argv is None else list(argv)
  path, rest = config_file(args)
  if path is None:
    helped = any(a in HELP_ARGS for a in rest)
    flag_lines = f"\n\nflags:\n{command_line.flags_help(FLAGS)}" if helped else ""
    print(
        f"{MODULE_USAGE}\n\nTrains the config that experiments/NAME.py's get_config() "
        "returns, as python experiments/NAME.py --workdir DIR does; --config=FILE --help lists "
        f"its keys.{flag_lines}", file=sys.stdout if helped else sys.stderr)
    if not helped and rest:
      print("error: --config=experiments/NAME.py is required", file=sys.stderr)
    sys.exit(0 if helped else entry.EXIT_ERROR)
  config, doc = load_file(path)
  run(config, path, rest, doc, program="python -m aigc_jax.train", module=module)


def run(config, where: str, args: list[str], doc: str = "", program: str = "",
        module: str = "__main__") -> None:
  """Parses the flags and trains `config`, built by `where`; `module`: the caller's (see
  `command_line.use_one_log_format`)."""
  program = program or f"python {where}"
  command_line.parse(FLAGS, parse(config, where, args, doc), doc, program)
  if not FLAGS.workdir:
    fail("--workdir is required (where checkpoints, metrics and samples go)")
  command_line.use_one_log_format(module)
  with entry.command():
    metrics = run_command(config, FLAGS.workdir, FLAGS.step)
    entry.finished()
    print(train.summary(metrics, 4))
    print(outputs_line(FLAGS.workdir))


def outputs_line(workdir: str) -> str:
  """The run's last line: where its outputs are, and how to look at its TensorBoard events."""
  if importlib.util.find_spec("tensorboard") is not None:
    board = f"tensorboard --logdir {workdir}"
  else:
    board = f"event files in {os.path.join(workdir, 'tensorboard')} for any TensorBoard"
  return (f"outputs in {workdir}: samples/*_latest.png, plots/train.png, plots/eval.png, "
          f"metrics.jsonl, checkpoints/, tensorboard/ ({board})")
