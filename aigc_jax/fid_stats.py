"""Reference statistics of a dataset split on pytorch-fid's Inception-V3, for FID.

python -m aigc_jax.fid_stats --dataset cifar10 --split train --out stats.npz [--num N]
    [--resize bilinear|clean] [--weights FILE.pth] [--batch_size B]

Writes the mean `mu` (2048,) and covariance `sigma` (2048, 2048, unbiased) of the pool3
features of the split's first N images (all by default) as pytorch-fid's .npz (float64), then
prints one JSON line saying what it computed. `python -m aigc_jax.evaluate --metric_net
inception --ref_stats FILE` takes this file, or one that pytorch-fid or clean-fid wrote.
The weights come from --weights, else as `metrics.inception_weights` says. The usual standard:
the whole train split (cifar10: 50,000 images) against 50,000 samples (docs/metrics.md).
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from aigc_jax import command_line
from aigc_jax import data as data_lib
from aigc_jax import entry
from aigc_jax.metrics import classifier as classifier_lib
from aigc_jax.metrics import fid as fid_lib
from aigc_jax.metrics import inception
from aigc_jax.metrics import inception_resize
from aigc_jax.metrics import inception_weights

FLAGS = command_line.new_flags()
flags.DEFINE_string("dataset", "cifar10", "One of the project's datasets.", flag_values=FLAGS)
flags.DEFINE_enum("split", "train", ["train", "test"], "The split whose statistics to compute.",
                  flag_values=FLAGS)
flags.DEFINE_string("out", None, "The .npz to write (mu, sigma).", flag_values=FLAGS)
flags.DEFINE_integer("num", 0, "Only the split's first N images (0: all).", flag_values=FLAGS)
flags.DEFINE_enum("resize", "bilinear", list(inception_resize.MODES),
                  "pytorch-fid's bilinear resize to 299, or clean-fid's 'clean' bicubic one.",
                  flag_values=FLAGS)
flags.DEFINE_string("weights", None, "pytorch-fid's Inception .pth (default: see the docs).",
                    flag_values=FLAGS)
flags.DEFINE_integer("batch_size", inception.BATCH, "Images per forward pass.", flag_values=FLAGS)
flags.DEFINE_string("idx_dir", None, "A directory of the dataset's IDX files (MNIST-like sets).",
                    flag_values=FLAGS)
PROGRAM = "python -m aigc_jax.fid_stats"


class UsageError(ValueError):
  """A flag the command cannot use; the message names the fix."""


def reference_stats(dataset: str, split: str, out: str, num: int = 0, resize: str = "bilinear",
                    weights: str | None = None, batch_size: int = inception.BATCH,
                    idx_dir: str | None = None) -> dict:
  """Writes the statistics of the first `num` (0: all) images of `dataset`'s `split` to `out`
  (atomically) and returns what was computed."""
  if dataset not in data_lib.DATASETS:
    raise UsageError(f"unknown --dataset {dataset!r}; use one of {sorted(data_lib.DATASETS)}")
  if num < 0 or batch_size < 1:
    raise UsageError(f"--num must be >= 0 and --batch_size >= 1, got {num} and {batch_size}")
  out_dir = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(out_dir):
    raise UsageError(f"--out {out}: no directory {out_dir}; create it first")
  net = inception_weights.load(weights, resize=resize, batch_size=batch_size)
  images, _ = data_lib.load_split(dataset, split, idx_dir=idx_dir)
  images = images[:num] if num else images
  if len(images) < 2:
    raise UsageError(f"the statistics need at least 2 images, got {len(images)}")
  mu, sigma = fid_lib.feature_stats(net.features(images))
  classifier_lib.atomic_write(os.path.abspath(out), lambda f: fid_lib.save_stats(f, mu, sigma))
  return {
      "out": out, "dataset": dataset, "split": split, "num_images": len(images), "resize": resize,
      "inception_weights_sha256": net.weights_sha256[:16]
  }


def main(argv: list[str] | None = None) -> None:
  """The command, on its arguments `argv` (default sys.argv[1:])."""
  entry.begin("computing reference statistics", "--batch_size", __name__)
  command_line.parse(FLAGS, argv, __doc__, PROGRAM)
  command_line.use_one_log_format(__name__)
  try:
    if not FLAGS.out:
      raise UsageError("give --out FILE.npz, e.g. python -m aigc_jax.fid_stats --dataset cifar10 "
                       "--split train --out cifar10_train_stats.npz")
    result = reference_stats(FLAGS.dataset, FLAGS.split, FLAGS.out, FLAGS.num, FLAGS.resize,
                             FLAGS.weights, FLAGS.batch_size, FLAGS.idx_dir)
  except (UsageError, data_lib.DataError, inception_weights.WeightsError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(entry.EXIT_ERROR)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
