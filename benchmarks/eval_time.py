"""Wall time of one GAN evaluation's metrics (`sample_metrics.evaluate_samples`) and curves.

  python benchmarks/eval_time.py [--num 1000] [--repeats 3]

An untrained classifier of the real recipe (its weights do not change the work) scores `--num`
Fashion-MNIST train images, as the fakes, against as many test images' features: the first call
(it compiles) is reported apart from `--repeats` timed ones. Then the time the training loop
waits for the curves of a 40-evaluation metrics.jsonl: `plot.write_curves` (drawing them) and
`plot.CurveDrawer.request` (handing them to a background thread).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import numpy as np

from aigc_jax import data as data_lib
from aigc_jax import plot
from aigc_jax.metrics import classifier_net
from aigc_jax.metrics import sample_metrics


def untrained_classifier() -> classifier_net.Classifier:
  recipe = classifier_net.resolve_recipe()
  model = classifier_net.build_model(recipe)
  shape = data_lib.DATASETS[recipe["dataset"]].image_shape
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, *shape), np.float32))
  return classifier_net.Classifier(model, variables, 0.0, recipe)


def seconds(fn, repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def curve_times(repeats: int) -> tuple[list[float], list[float]]:
  """(write_curves, CurveDrawer.request) seconds on a run of 40 train and test records."""
  with tempfile.TemporaryDirectory() as workdir:
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      for step in range(1, 41):
        f.write(json.dumps({"step": step, "split": "train", "loss": 1 / step, "d": 1}) + "\n")
        f.write(json.dumps({"step": step, "split": "test", "fid": 9 / step, "kid": 1}) + "\n")
    drawn = seconds(lambda: plot.write_curves(workdir), repeats)
    drawer = plot.CurveDrawer(workdir)
    requested = seconds(drawer.request, repeats)
    drawer.close()
  return drawn, requested


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  clf = untrained_classifier()
  fakes = data_lib.load_split("fashion_mnist", "train")[0][:args.num]
  real = clf.features(data_lib.load_split("fashion_mnist", "test")[0][:args.num])
  start = time.perf_counter()
  first = sample_metrics.evaluate_samples(clf, fakes, real)
  print(f"first call {time.perf_counter() - start:.2f} s: " +
        " ".join(f"{k}={v:.6g}" for k, v in first.items()))
  times = seconds(lambda: sample_metrics.evaluate_samples(clf, fakes, real), args.repeats)
  print(f"evaluate_samples, {args.num} samples, {jax.default_backend()}: " +
        " ".join(f"{t:.2f}" for t in times) + " s")
  if hasattr(plot, "CurveDrawer"):
    drawn, requested = curve_times(args.repeats)
    print("write_curves: " + " ".join(f"{t:.2f}" for t in drawn) + " s; CurveDrawer.request: " +
          " ".join(f"{t * 1e3:.2f}" for t in requested) + " ms")


if __name__ == "__main__":
  main()
