"""Wall time of a sweep of N members against one member trained alone, whole processes.

  python benchmarks/sweep_speed.py experiments/NAME.py --members 8
      [--vary learning_rate=loguniform:3e-4:3e-3] [--halve_every K] [--config.KEY=VALUE ...]

Runs, one after the other in fresh processes (start-up, data loading and compilation counted):
the experiment file alone with its own config, then `python -m aigc_jax.sweep` of N members
varying --vary (default: seed=seeds). Prints both wall times, their ratio against N runs in a
row, the alone run's final line and the sweep's summary table. Workdirs go under --root and are
removed first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time


def timed(command: list[str]) -> tuple[float, str]:
  start = time.perf_counter()
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if result.returncode:
    sys.exit(f"error: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
  return seconds, result.stdout


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("experiment")
  parser.add_argument("--members", type=int, default=8)
  parser.add_argument("--vary", action="append", default=[])
  parser.add_argument("--halve_every", type=int, default=0)
  parser.add_argument("--root", default="runs/sweep_speed")
  parser.add_argument("--member_map", default="auto")
  parser.add_argument("--skip_alone", action="store_true", help="time the sweep only")
  args, overrides = parser.parse_known_args()
  overrides = overrides + ["--config.progress_bar=False"]
  alone_dir, sweep_dir = os.path.join(args.root, "alone"), os.path.join(args.root, "sweep")
  for directory in (alone_dir, sweep_dir):
    shutil.rmtree(directory, ignore_errors=True)
  alone = None
  if not args.skip_alone:
    alone, out = timed([sys.executable, args.experiment, "--workdir", alone_dir, *overrides])
    print(f"alone: {alone:.1f} s; {out.strip().splitlines()[0]}", flush=True)
  varies = [f"--vary={v}" for v in args.vary or ["seed=seeds"]]
  seconds, table = timed([
      sys.executable, "-m", "aigc_jax.sweep", args.experiment, "--workdir", sweep_dir, "--members",
      str(args.members), *varies, "--halve_every",
      str(args.halve_every), "--member_map", args.member_map, *overrides
  ])
  print(f"sweep of {args.members}: {seconds:.1f} s" +
        ("" if alone is None else f" = {seconds / alone:.2f}x one run alone, "
         f"{seconds / (args.members * alone):.2f}x {args.members} runs in a row"))
  print(table.strip())


if __name__ == "__main__":
  main()
