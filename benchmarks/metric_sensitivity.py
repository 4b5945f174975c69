"""How the sample metrics respond to small, known damage of real images: a scale to read them on.

  python benchmarks/metric_sensitivity.py [--dataset fashion_mnist] [--num 10000]

`--num` real train images, as they are and after a Gaussian blur, additive Gaussian pixel noise,
2x2 block averaging and a brightness change, are scored like a generator's samples against as
many test images (`sample_metrics.evaluate_samples`, the evaluation CLI's classifier and
features).
The first row is the real-vs-real floor. Prints one line per variant: FID, precision, recall.
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.ndimage

from aigc_jax import data as data_lib
from aigc_jax.metrics import classifier as classifier_lib
from aigc_jax.metrics import sample_metrics


def variants(images: np.ndarray, seed: int = 1) -> dict[str, np.ndarray]:
  """Float copies of uint8 (N, H, W, C) `images`, each damaged in one known way."""
  x = images.astype(np.float32)
  n, h, w, c = x.shape
  noise = np.random.default_rng(seed).normal(size=x.shape).astype(np.float32)
  blocks = x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
  return {
      "real train images (the floor)": x,
      "gaussian blur, sigma 0.5 px": scipy.ndimage.gaussian_filter(x, (0, 0.5, 0.5, 0)),
      "gaussian blur, sigma 0.8 px": scipy.ndimage.gaussian_filter(x, (0, 0.8, 0.8, 0)),
      "pixel noise, std 5/255": x + 5 * noise,
      "pixel noise, std 10/255": x + 10 * noise,
      "pixel noise, std 20/255": x + 20 * noise,
      "2x2 block average": blocks.repeat(2, axis=1).repeat(2, axis=2),
      "brightness x 0.9": 0.9 * x,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="fashion_mnist")
  parser.add_argument("--num", type=int, default=10_000)
  args = parser.parse_args()
  classifier = classifier_lib.load_or_train(args.dataset)
  test, _ = data_lib.load_split(args.dataset, "test")
  train, _ = data_lib.load_split(args.dataset, "train")
  real = classifier.features(np.asarray(test)[:args.num])
  rows = sample_metrics.floor_rows(len(train), args.num)  # the evaluation CLI's floor subset
  print(f"{args.num} images each vs {args.num} test images; classifier {classifier.path}")
  for name, images in variants(np.asarray(train)[rows]).items():
    fakes = np.clip(np.round(images), 0, 255).astype(np.uint8)
    m = sample_metrics.evaluate_samples(classifier, fakes, real)
    print(f"{name:32s} fid {m['fid']:6.2f}  precision {m['precision']:.3f}  "
          f"recall {m['recall']:.3f}")


if __name__ == "__main__":
  main()
