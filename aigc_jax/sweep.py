"""Sweeps: many variants of one experiment trained as one compiled program (`population`).

python -m aigc_jax.sweep experiments/NAME.py --workdir DIR --vary KEY=SPEC [--vary ...]
    [--members N] [--halve_every EVALS] [--config.KEY=VALUE ...]
python -m aigc_jax.sweep --workdir DIR --export MEMBER --to RUNDIR

SPEC is a list (`1e-4,3e-4,1e-3`: one value per member), a range sampled with the config's seed
(`loguniform:1e-4:1e-2`, `uniform:0.5:0.9`: --members N values), or `seeds` (`--vary
seed=seeds`: member i trains with seed + i). With --halve_every K the worse half of the members
still training stop at every K-th evaluation; a member whose state stops being finite stops too.
Vmapped members are sharded over this process's devices (--member_devices; on CPU the sweep makes
one XLA device per core, so the members' steps use every core at once).

DIR holds sweep.json (the members' values and when each stopped), checkpoints/ (the stacked
states: the same command resumes an interrupted sweep exactly), metrics.jsonl (records with a
`member` field), members/NN/ (member NN's metrics.jsonl and TensorBoard run; once it stops, its
config.json, final checkpoint and samples: an ordinary run directory for `aigc_jax.sample`,
`aigc_jax.evaluate` and the notebooks; marked as the sweep's, so a plain training run refuses
it: --export it to train it on), plots/members_test.png and members_train.png, and summary.txt,
the members' table.
"""

from __future__ import annotations

import os
import shutil
import sys

from absl import flags

from aigc_jax import backend
from aigc_jax import command_line
from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import lock
from aigc_jax import signals as signals_lib
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax.sweep_spec import SWEEP_FILE
from aigc_jax.sweep_spec import make_spec
from aigc_jax.sweep_spec import member_dir
from aigc_jax.sweep_spec import num_members
from aigc_jax.sweep_spec import read_spec
from aigc_jax.sweep_train import run_sweep

PROGRAM = "python -m aigc_jax.sweep"
FLAGS = command_line.new_flags()
flags.DEFINE_string("workdir", None, "The sweep's directory.", flag_values=FLAGS)
flags.DEFINE_multi_string("vary", [], "KEY=SPEC: a config key and its members' values.",
                          flag_values=FLAGS)
flags.DEFINE_integer("members", None, "How many members (for ranges and seeds).", flag_values=FLAGS)
flags.DEFINE_integer("halve_every", 0, "Stop the worse half every EVALS evaluations (0: never).",
                     flag_values=FLAGS)
flags.DEFINE_enum(
    "member_map", "auto", ["auto", "vmap", "unroll"], "The step over the members: vmapped, or "
    "one copy per member in one program (auto: unrolled for convolutional models on CPU).",
    flag_values=FLAGS)
flags.DEFINE_integer(
    "member_devices", 0, "Shard vmapped members over up to N devices with parallel='none' (0: "
    "all of this process's devices).", flag_values=FLAGS)
flags.DEFINE_integer("export", None, "Copy this member's run (with --to).", flag_values=FLAGS)
flags.DEFINE_string("to", None, "RUNDIR: where --export writes the run.", flag_values=FLAGS)


def export(workdir: str, member: int, to: str) -> str:
  """Copies member `member`'s run directory (written when it stopped) to `to`."""
  spec = read_spec(workdir)
  if spec is None:
    raise workdir_lib.CheckpointError(f"{workdir} holds no sweep ({SWEEP_FILE} is missing)")
  if not 0 <= member < num_members(spec):
    raise config_lib.ConfigError(f"--export {member}: the sweep has members 0 to "
                                 f"{num_members(spec) - 1}")
  source = member_dir(workdir, member)
  if not workdir_lib.has_checkpoints(source):
    raise workdir_lib.CheckpointError(
        f"member {member} is still training (or diverged): its run directory {source} has no "
        f"checkpoint yet; resume the sweep (python -m aigc_jax.sweep --workdir {workdir}) first")
  if os.path.exists(to) and os.listdir(to):
    raise workdir_lib.CheckpointError(f"--to {to} exists and is not empty; name a new directory")
  shutil.copytree(
      source,
      to,
      dirs_exist_ok=True,  # a run of its own: unlocked, not a member
      ignore=shutil.ignore_patterns(lock.LOCK_FILE, lock.MEMBER_FILE))
  return to


def new_spec(experiment: str, overrides: list[str]) -> dict:
  """sweep.json's content for a new sweep of `experiment` from the command line."""
  config = config_lib.load_experiment(experiment)
  config_lib.apply_overrides(config, overrides)
  return make_spec(config_lib.validate(config), FLAGS.vary, FLAGS.members, FLAGS.halve_every)


def check_flags(experiments: list[str]) -> None:
  """ConfigError for flags and arguments the sweep cannot use."""
  if not FLAGS.workdir:
    raise config_lib.ConfigError("--workdir is required: the sweep's directory")
  if len(experiments) > 1:
    raise config_lib.ConfigError(f"one experiment file, not {len(experiments)}: {experiments}")
  if FLAGS.export is not None and not FLAGS.to:
    raise config_lib.ConfigError("--export MEMBER needs --to RUNDIR")
  if FLAGS.halve_every < 0 or FLAGS.member_devices < 0 or (FLAGS.members is not None and
                                                           FLAGS.members < 2):
    raise config_lib.ConfigError("--halve_every and --member_devices must be >= 0 and "
                                 "--members >= 2")


def spec_of(experiments: list[str], overrides: list[str]) -> dict:
  """The sweep to run: a new one of the experiment file, else the one in --workdir."""
  if experiments:
    return new_spec(experiments[0], overrides)
  spec = read_spec(FLAGS.workdir)
  if spec is None:
    raise config_lib.ConfigError(f"{FLAGS.workdir} holds no sweep to resume; name an experiment "
                                 "file: python -m aigc_jax.sweep experiments/NAME.py --workdir DIR "
                                 "--vary KEY=SPEC")
  return spec


def main(argv: list[str] | None = None) -> int:
  """The command, on its arguments `argv` (default sys.argv[1:]): 0, or the exit status after
  one error line."""
  train.entry.begin("running the sweep", "batch_size or the number of members", __name__)
  experiments, overrides = command_line.parse(FLAGS, argv, __doc__, PROGRAM, positional=True,
                                              overrides=True)
  command_line.use_one_log_format(__name__)
  backend.cpu_device_per_core()
  try:
    check_flags(experiments)
    if FLAGS.export is not None:
      print(f"wrote {export(FLAGS.workdir, FLAGS.export, FLAGS.to)}")
      return 0
    spec = spec_of(experiments, overrides)
    print(run_sweep(spec, FLAGS.workdir, FLAGS.member_map, FLAGS.member_devices))
  except signals_lib.Stopped as e:
    print(str(e), file=sys.stderr)
    return e.exit_code
  except (config_lib.ConfigError, data_lib.DataError, train.TrainingError,
          workdir_lib.CheckpointError, lock.WorkdirError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  train.entry.exit_now(main())
