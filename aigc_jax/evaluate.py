"""Evaluate a trained workdir on the test split and print one JSON object of metrics.

python -m aigc_jax.evaluate --workdir DIR [--checkpoint best|latest] [--iwae_samples K]
    [--iwae_examples N] [--num_samples N]

For a VAE: test_neg_elbo, test_recon, test_kl (nats per image over the whole test split) and
nll_iwae (-log p(x) estimated with K importance samples on the first N test images; the JSON
says K and N, and gives the K-sample ELBO on the same images as nll_iwae_subset_neg_elbo).

For a GAN: fid, kid, precision, recall, is (and label_acc when conditional) of N samples of the
EMA generator against the first N test images (N = num_samples, 10000 by default), each followed
by its floor, e.g. fid_floor: the same metric of N real train images against the same test
images, so a reader knows the scale; then kid_std, is_std and raw_* (the raw generator's).
"""

from __future__ import annotations

import json
import logging
import sys

from absl import app, flags
from tqdm import tqdm

from aigc_jax import backend
from aigc_jax import data as data_lib
from aigc_jax import train
from aigc_jax import workdir as workdir_lib

flags.DEFINE_string("workdir", None, "A training run's directory.")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to evaluate.")
flags.DEFINE_integer("iwae_samples", 0, "Importance samples per image (0: the config's).")
flags.DEFINE_integer("iwae_examples", 0, "Test images for nll_iwae (0: the config's).")
flags.DEFINE_integer("num_samples", 0, "GAN: generated images per metric (0: 10000).")
FLAGS = flags.FLAGS
log = logging.getLogger("aigc_jax.evaluate")  # not __name__: "__main__" under python -m


def evaluate_workdir(workdir: str, which: str = "best", progress: bool = False, **options) -> dict:
  run = workdir_lib.load_trained(workdir, which)
  test = workdir_lib.load_test_data(run.config)
  log.info("%s", backend.describe_devices())
  bar = (lambda xs: tqdm(xs, desc="nll_iwae", unit="batch", file=sys.stderr)) if progress else None
  metrics = run.trainable.full_evaluate(run.state, test, progress=bar, **options)
  return {"model": run.config.model, "dataset": run.config.dataset, "step": run.step,
          "checkpoint": which, **metrics}


def main(argv):
  del argv
  train.quiet_dependencies()
  if not FLAGS.workdir:
    print("error: --workdir is required, e.g. python -m aigc_jax.evaluate --workdir runs/vae",
          file=sys.stderr)
    sys.exit(2)
  try:
    options = {name: FLAGS[name].value for name in ("iwae_samples", "iwae_examples",
                                                    "num_samples") if FLAGS[name].value}
    result = evaluate_workdir(FLAGS.workdir, FLAGS.checkpoint, progress=True, **options)
  except (workdir_lib.CheckpointError, workdir_lib.config_lib.ConfigError,
          data_lib.DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
