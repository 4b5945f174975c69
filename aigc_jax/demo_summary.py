"""A table of what some training runs made: model, steps, main metric beside its floor, pictures.

python -m aigc_jax.demo_summary WORKDIR [WORKDIR ...] [--num_samples N]

A GAN is evaluated (`evaluate.evaluate_workdir`: FID, precision and recall of N samples, each
beside its floor, the same metric of N real train images); a VAE shows its last logged test
neg_elbo (nats per image; no floor: the data's own negative log-likelihood is unknown).
"""

from __future__ import annotations

import glob
import json
import os
import sys

from absl import flags

from aigc_jax import command_line
from aigc_jax import evaluate
from aigc_jax import plot
from aigc_jax import workdir as workdir_lib

PROGRAM = "python -m aigc_jax.demo_summary"
GAN_METRICS = ("precision", "recall")  # shown under a GAN's FID, each beside its floor
FLAGS = command_line.new_flags()
flags.DEFINE_integer("num_samples", 1000, "GAN samples for the FID.", lower_bound=1,
                     flag_values=FLAGS)


def last_eval(workdir: str) -> dict:
  """The last test record of workdir/metrics.jsonl ({} when none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  records = plot.read_records(path) if os.path.exists(path) else []
  tests = [r for r in records if r["split"] == "test"]
  return tests[-1] if tests else {}


def summarize(workdir: str, num_samples: int) -> dict:
  """{model, steps, metric, value, floor, pictures} of one run, and for a GAN `more`: (metric,
  value, floor) of GAN_METRICS."""
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    config = json.load(f)
  record = last_eval(workdir)
  row = {"model": config.get("model", "?"), "steps": record.get("step", 0), "floor": None}
  if config.get("pixel_clusters"):
    row["model"] += f" (self-conditioned, {config['pixel_clusters']} clusters)"
  if "neg_elbo" in record:  # a VAE
    row.update(metric="test_neg_elbo", value=record["neg_elbo"])
  else:
    result = evaluate.evaluate_workdir(workdir, "latest", num_samples=num_samples)
    row.update(steps=result["step"], metric=f"fid ({result['num_samples']} samples)",
               value=result["fid"], floor=result["fid_floor"])
    row["more"] = [
        (name, result[name], result[f"{name}_floor"]) for name in GAN_METRICS if name in result
    ]
  pictures = sorted(glob.glob(os.path.join(workdir, "samples", "*_latest.png")))
  row["pictures"] = pictures + sorted(glob.glob(os.path.join(workdir, "plots", "*.png")))
  return row


def table(rows: list[dict]) -> str:
  """The rows as aligned text: one line per run, then its pictures indented."""
  header = ("model", "steps", "metric", "value", "floor")
  cells, pictures = [header], [[]]
  for r in rows:
    metrics = [(r["metric"], r["value"], r["floor"])] + r.get("more", [])
    cells += [(r["model"] if not i else "", str(r["steps"]) if not i else "", name,
               f"{value:.{2 if i == 0 else 3}f}",
               "-" if floor is None else f"{floor:.{2 if i == 0 else 3}f}")
              for i, (name, value, floor) in enumerate(metrics)]
    pictures += [[]] * (len(metrics) - 1) + [r["pictures"]]
  widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
  lines = []
  for c, shown in zip(cells, pictures):
    lines.append("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())
    lines.extend(f"    {p}" for p in shown)
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  """The command, on its arguments `argv` (default sys.argv[1:]): 0, or 2 after one error line."""
  workdirs, _ = command_line.parse(FLAGS, argv, __doc__, PROGRAM, positional=True)
  command_line.use_one_log_format(__name__)
  if not workdirs:
    print(f"error: name the training runs' directories, e.g. {PROGRAM} runs/demo/vae_mlp",
          file=sys.stderr)
    return 2
  try:
    rows = [summarize(w, FLAGS.num_samples) for w in workdirs]
  except (OSError, ValueError, workdir_lib.CheckpointError) as e:
    print(f"error: {e}; train the runs first (make demo)", file=sys.stderr)
    return 2
  print(table(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
