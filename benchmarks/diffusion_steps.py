"""Sample quality against sampling steps for a trained diffusion workdir.

  python benchmarks/diffusion_steps.py --workdir runs/flow [--num 1000] [--steps 5 10 25 50]
      [--samplers euler heun] [--guidance_scale W] [--out docs/diffusion_steps.png]

For each sampler and step count: FID, precision and recall of `--num` EMA samples against as many
test images (the evaluation CLI's metrics and seeds; label_acc too for a class-conditional
model, guided at the config's scale or `--guidance_scale`), the network evaluations per image
(twice as many when guided) and the seconds of sampling and scoring. Prints a Markdown table and
draws FID against network evaluations per sampler.
"""

from __future__ import annotations

import argparse
import time

from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg

from aigc_jax import workdir as workdir_lib
from aigc_jax.families import diffusion_sampling
from aigc_jax.families import sample_eval


def sweep(workdir: str, num: int, steps: list[int], samplers: list[str],
          guidance_scale: float | None = None) -> list[dict]:
  run = workdir_lib.load_trained(workdir, "latest")
  test = workdir_lib.load_test_data(run.config)
  conditional = bool(run.config.conditional)
  guided = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
  scores = sample_eval.SampleEvaluator(run.config, run.trainable.sample, conditional, raw=False)
  real = scores.real_features(test, num)
  rows = []
  for sampler in samplers:
    for k in steps:
      start = time.perf_counter()
      metrics = scores.sample_metrics(run.state, real, num, sampler=sampler, sample_steps=k,
                                      **guided)
      seconds = time.perf_counter() - start
      how = diffusion_sampling.sampling(run.config, sampler, k, guidance_scale)
      rows.append(
          dict(sampler=sampler, steps=k,
               nfe=diffusion_sampling.network_evaluations(how, conditional), seconds=seconds,
               label_acc=metrics.get("label_acc"),
               **{m: metrics[m] for m in ("fid", "precision", "recall")}))
      print(rows[-1], flush=True)
  return rows


def table(rows: list[dict], num: int) -> str:
  lines = [
      f"| sampler | steps | network evaluations | FID ({num}) | precision | recall | "
      "label_acc | seconds |", "|---|---|---|---|---|---|---|---|"
  ]
  lines += [
      f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['fid']:.2f} | "
      f"{r['precision']:.3f} | {r['recall']:.3f} | {_maybe(r['label_acc'])} | "
      f"{r['seconds']:.1f} |" for r in rows
  ]
  return "\n".join(lines)


def _maybe(value: float | None) -> str:
  return "-" if value is None else f"{value:.3f}"


def plot(rows: list[dict], path: str) -> None:
  fig = figure_lib.Figure(figsize=(5, 3.5))
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for sampler in dict.fromkeys(r["sampler"] for r in rows):
    mine = [r for r in rows if r["sampler"] == sampler]
    ax.plot([r["nfe"] for r in mine], [r["fid"] for r in mine], "o-", label=sampler)
  ax.set_xscale("log")
  ax.set_xlabel("network evaluations per image")
  ax.set_ylabel("FID")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25, 50])
  parser.add_argument("--samplers", nargs="+", default=["euler", "heun"])
  parser.add_argument("--guidance_scale", type=float, default=None,
                      help="a class-conditional model's guidance (default: its config's)")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  rows = sweep(args.workdir, args.num, args.steps, args.samplers, args.guidance_scale)
  print(table(rows, args.num))
  if args.out:
    plot(rows, args.out)


if __name__ == "__main__":
  main()
