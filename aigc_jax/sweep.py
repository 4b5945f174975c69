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

import argparse
import os
import shutil
import sys

from aigc_jax import backend
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


def new_spec(args, rest: list[str]) -> dict:
  """sweep.json's content for a new sweep from the command line."""
  config = config_lib.load_experiment(args.experiment)
  argv = config_lib.apply_overrides(config, rest)
  if argv:
    raise config_lib.ConfigError(f"unexpected arguments {argv}; see python -m aigc_jax.sweep "
                                 "--help")
  return make_spec(config_lib.validate(config), args.vary, args.members, args.halve_every)


class _Parser(argparse.ArgumentParser):
  """argparse whose usage errors are one `error:` line and exit status 2."""

  def error(self, message):
    print(f"error: {message}; see python -m aigc_jax.sweep --help", file=sys.stderr)
    sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="python -m aigc_jax.sweep", description=__doc__.split("\n\n")[0],
                   usage=__doc__.split("\n\n")[1], add_help=True)
  parser.add_argument("experiment", nargs="?", help="experiments/NAME.py (omit to resume DIR)")
  parser.add_argument("--workdir", required=True, help="the sweep's directory")
  parser.add_argument("--vary", action="append", default=[], metavar="KEY=SPEC",
                      help="a config key and its members' values")
  parser.add_argument("--members", type=int, help="how many members (for ranges and seeds)")
  parser.add_argument("--halve_every", type=int, default=0, metavar="EVALS",
                      help="stop the worse half every EVALS evaluations (0: never)")
  parser.add_argument(
      "--member_map", choices=("auto", "vmap", "unroll"), default="auto",
      help="the step over the members: vmapped, or one copy per member in one "
      "program (auto: unrolled for convolutional models on CPU)")
  parser.add_argument(
      "--member_devices", type=int, default=0, metavar="N",
      help="shard vmapped members over up to N devices with parallel='none' "
      "(0: all of this process's devices)")
  parser.add_argument("--export", type=int, metavar="MEMBER", help="copy this member's run")
  parser.add_argument("--to", metavar="RUNDIR", help="where --export writes the run")
  return parser


def main(argv: list[str] | None = None) -> int:
  train.entry.begin("running the sweep", "batch_size or the number of members", __name__)
  args, rest = build_parser().parse_known_args(argv)
  train.quiet_dependencies()
  backend.cpu_device_per_core()
  try:
    if args.export is not None:
      if not args.to:
        raise config_lib.ConfigError("--export MEMBER needs --to RUNDIR")
      print(f"wrote {export(args.workdir, args.export, args.to)}")
      return 0
    if args.halve_every < 0 or args.member_devices < 0 or (args.members is not None and
                                                           args.members < 2):
      raise config_lib.ConfigError("--halve_every and --member_devices must be >= 0 and "
                                   "--members >= 2")
    if args.experiment is None:
      spec = read_spec(args.workdir)
      if spec is None:
        raise config_lib.ConfigError(f"{args.workdir} holds no sweep to resume; name an "
                                     "experiment file: python -m aigc_jax.sweep "
                                     "experiments/NAME.py --workdir DIR --vary KEY=SPEC")
    else:
      spec = new_spec(args, rest)
    print(run_sweep(spec, args.workdir, args.member_map, args.member_devices))
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
