"""Fault probes: the commands run on tiny synthetic data against links planted in the workdir,
locked sweep members, damaged checkpoints and caches, stop signals before and during training,
a full disk, immutable files, memory limits, malformed and hand-edited files, and each outcome
judged (a fault script, not part of the suite: about 15 minutes; --fast: a few).

python tests/faults/probes.py [--fast] [--only NAME ...] [--list] [--keep]

Each probe runs the real entry points (experiments/*.py, python -m aigc_jax.sample, evaluate,
sweep, plot) as subprocesses with SIGINT at its default, and gets a verdict: INSECURE, a file
outside the probe's folders changed; SILENT-WRONG, exit 0 with a wrong result or data left where
it must not be; TRACEBACK, a traceback or more than one `error:` line where one belongs; OTHER,
another exit status or message than expected; OK; SKIP, not possible here (the reason given).
Prints a table (probe | expected | observed | verdict) and the count of each verdict; exits 1
when a verdict is neither OK nor SKIP. The probes' files live in a temporary folder (as root,
tmpfs mounts and `chattr +i` there); --keep leaves it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import probe_faults  # noqa: F401  (registers its probes)
import probe_inputs  # noqa: F401  (registers its probes)
from probe_lab import BASE_STEPS
from probe_lab import PROBES
from probe_lab import VERDICTS
from probe_lab import Lab
from probe_lab import Probe
from probe_lab import Result
from probe_lab import either
from probe_lab import fingerprint
from probe_lab import judge
from probe_lab import probe
from probe_lab import refused_fresh
from probe_lab import worst

# -- links and odd things where the run keeps its files ------------------------------------------

PLANTED = {  # probe -> (what is planted in a new workdir, what the one line names)
    "symlink_lock": (lambda lab, w: os.symlink(lab.victim, os.path.join(w, ".lock")), ".lock"),
    "symlink_config_json_tmp": (lambda lab, w: os.symlink(
        lab.victim, os.path.join(w, "config.json.tmp")), "config.json"),
    "symlink_config_json": (lambda lab, w: os.symlink(lab.victim, os.path.join(w, "config.json")),
                            "config.json"),
    "symlink_metrics_jsonl": (lambda lab, w: os.symlink(
        lab.victim, os.path.join(w, "metrics.jsonl")), "metrics.jsonl"),
    "hardlink_metrics_jsonl": (lambda lab, w: os.link(
        lab.victim, os.path.join(w, "metrics.jsonl")), "metrics.jsonl"),
    "symlink_checkpoints_folder": (lambda lab, w: os.symlink(
        os.path.join(lab.outside, "folder"), os.path.join(w, "checkpoints")), "checkpoints"),
    "symlink_tensorboard_folder": (lambda lab, w: os.symlink(
        os.path.join(lab.outside, "folder"), os.path.join(w, "tensorboard")), "tensorboard"),
    "symlink_sample_png": (lambda lab, w: (os.makedirs(os.path.join(w, "samples")), os.symlink(
        lab.victim, os.path.join(w, "samples", f"samples_{BASE_STEPS:07d}.png"))), "samples"),
    "checkpoints_folder_is_a_file": (lambda lab, w: open(os.path.join(w, "checkpoints"),
                                                         "w").close(), "checkpoints"),
}
for _name, (_plant, _says) in PLANTED.items():

  def _planted(lab: Lab, plant=_plant, says=_says) -> Result:
    workdir = lab.folder("planted")
    plant(lab, workdir)
    return either(lab.run(lab.train_args(workdir)), says=(says,))

  probe(_name, "targets untouched; exit 0, or exit 2, one line naming it",
        fast=_name == "symlink_lock")(_planted)


@probe("workdir_is_a_file", "exit 2, one line", fast=True)
def _workdir_file(lab: Lab) -> Result:
  path = lab.path("file")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  open(path, "w").close()
  return judge(lab.run(lab.train_args(path)), says=("file",))


@probe("workdir_path_of_4032_chars", "exit 2, one line; nothing created", fast=True)
def _long_path(lab: Lab) -> Result:
  base = lab.path("long")
  parts, length = [], len(base)
  while length < 4032:
    parts.append("d" * min(200, 4032 - length - 1))
    length += len(parts[-1]) + 1
  return refused_fresh(lab, lambda w: lab.train_args(os.path.join(w, *parts)))


# -- the command ---------------------------------------------------------------------------------


def run_probe(lab: Lab, p: Probe) -> Result:
  """`p`'s result, INSECURE when a guarded file changed meanwhile."""
  before = {root: fingerprint(root) for root in lab.guarded()}
  try:
    result = p.run(lab)
  except Exception as e:  # pylint: disable=broad-except
    result = Result("OTHER", f"the probe failed: {type(e).__name__}: {str(e)[-300:]}")
  for root, prints in before.items():
    now = fingerprint(root)
    changed = sorted(k for k in set(prints) | set(now) if prints.get(k) != now.get(k))
    if changed:
      result = worst(result, Result("INSECURE", f"changed in {root}: {changed[:4]}"))
  return result


def group(p: Probe) -> int:
  """Input files first, then the workdir's, then the faults around a run."""
  return {"probe_inputs": 0, "probe_faults": 2}.get(p.run.__module__, 1)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--fast", action="store_true", help="only the probes of a few seconds")
  parser.add_argument("--only", action="append", default=[], metavar="NAME",
                      help="only the probes whose name contains NAME (repeatable)")
  parser.add_argument("--list", action="store_true", help="list the probes and exit")
  parser.add_argument("--keep", action="store_true", help="keep the probes' folder")
  args = parser.parse_args()
  chosen = [
      p for p in sorted(PROBES, key=group)
      if (p.fast or not args.fast) and (not args.only or any(o in p.name for o in args.only))
  ]
  if args.list:
    print("\n".join(f"{p.name}{'  (fast)' * p.fast}: {p.expected}" for p in chosen))
    return 0
  lab, rows, began = Lab(tempfile.mkdtemp(prefix="aigc_jax_probes_")), [], time.time()
  try:
    for i, p in enumerate(chosen):
      start = time.time()
      result = run_probe(lab, p)
      rows.append((p, Result(result.verdict, result.observed.replace(lab.root, "$LAB"))))
      print(f"[{i + 1}/{len(chosen)}] {p.name}: {result.verdict} ({time.time() - start:.0f} s)",
            file=sys.stderr, flush=True)
  finally:
    if args.keep:
      print(f"kept {lab.root} ($LAB)", file=sys.stderr)
    else:
      lab.close()
  print("probe | expected | observed | verdict\n---|---|---|---")
  for p, r in rows:
    print(f"{p.name} | {p.expected} | {r.observed.replace('|', '/')} | {r.verdict}")
  counts = {v: sum(r.verdict == v for _, r in rows) for v in VERDICTS}
  print(f"\n{len(rows)} probes in {time.time() - began:.0f} s: " +
        ", ".join(f"{v} {n}" for v, n in counts.items()))
  return int(any(r.verdict not in ("OK", "SKIP") for _, r in rows))


if __name__ == "__main__":
  sys.exit(main())
