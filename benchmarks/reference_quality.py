"""A classic GAN experiment beside the PyTorch original it reproduces: same budget, same metrics.

  python benchmarks/reference_quality.py experiments/dcgan_fashion_mnist.py --workdir W \\
      [--seeds 0 1 2] [--epochs 5] [--num 10000] [--sides reference project] \\
      [--reference_upsample transpose] [--config.KEY=VALUE ...]

For each seed, two sides train for `--epochs` epochs at the experiment's batch size:
- `reference`: the PyTorch original written plainly (`torch_reference.gan.GANReference`: the
  experiment file's networks, loss and Adam, without the `--config` overrides, with PyTorch's
  default initialisation; the DCGAN's upsampling as `--reference_upsample`, the original's
  transposed convolution by default). Its raw generator draws the samples in train mode (batch
  statistics), as the original scripts do.
- `project`: the experiment itself (`train.train_and_evaluate` in W/project/seedS, with the
  `--config` overrides), sampled from its last checkpoint with the EMA generator (`project`, as
  `python -m aigc_jax.sample` does) and with the raw one (`project_raw`).

Each side's `--num` samples are scored with the evaluation CLI's metrics (FID, precision,
recall, IS against as many test images) and by the independent PyTorch MLP of
`independent_score.py`. Scores go to W/scores.json as they come, so a rerun only does what is
missing; the table gives each side's mean and standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import independent_score
import jax
import numpy as np
import torch

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax.bench import torch_reference
from aigc_jax.bench.torch_reference import common as torch_common
from aigc_jax.bench.torch_reference import vae as torch_vae
from aigc_jax.families import sample_eval

GAN_COLUMNS = ("fid", "precision", "recall", "is", "mean_top_prob", "share_above_0.9",
               "class_entropy_bits")
VAE_COLUMNS = ("test_neg_elbo",)


def nchw(images: np.ndarray):
  return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def train_reference(config, seed: int, epochs: int, images: np.ndarray):
  """The PyTorch original of `config` after `epochs` shuffled passes over uint8 NHWC `images`."""
  torch.manual_seed(seed)
  x = nchw(images)
  steps = len(x) // config.batch_size
  ref = torch_reference.build(config, data_lib.config_info(config), epochs * steps)
  for epoch in range(epochs):
    start, order = time.time(), torch.randperm(len(x))
    for i in range(steps):
      loss = ref.step(x[order[i * config.batch_size:(i + 1) * config.batch_size]], None)
    print(
        f"  reference seed {seed} epoch {epoch + 1}: {time.time() - start:.0f} s, "
        f"last loss {loss:.3f}", flush=True)
  return ref


def reference_test_neg_elbo(ref, images: np.ndarray, seed: int, batch: int = 1000) -> float:
  """The VAE original's mean test neg-ELBO (nats per image; one z per image, raw parameters)."""
  torch.manual_seed(seed)
  total = 0.0
  with torch.no_grad():
    for start in range(0, len(images), batch):
      x = torch_common.preprocess(nchw(images[start:start + batch]), ref.config)
      recon, kl = torch_vae.elbo_terms(ref.vae, x, None)
      total += float((recon + kl).sum())
  return total / len(images)


def reference_samples(ref, num: int, batch: int) -> np.ndarray:
  """uint8 (num, H, W, C) samples of the raw generator in train mode, `batch` at a time."""
  ref.g.train()
  out = []
  with torch.no_grad():
    for start in range(0, num, batch):
      x = ref.g(torch.randn(min(batch, num - start), ref.config.latent_dim))
      out.append(x.permute(0, 2, 3, 1).numpy() * 0.5 + 0.5)
  return to_uint8(np.concatenate(out))


def to_uint8(images01) -> np.ndarray:
  return np.clip(np.round(np.asarray(images01) * 255.0), 0, 255).astype(np.uint8)


def train_project(config, seed: int, epochs: int, workdir: str) -> workdir_lib.TrainedRun:
  """The experiment trained (or resumed) in `workdir`, loaded from its last checkpoint."""
  config = copy.deepcopy(config)
  config.seed, config.num_epochs = seed, epochs
  train.train_and_evaluate(config, workdir)
  return workdir_lib.load_trained(workdir, "latest")


def project_samples(run: workdir_lib.TrainedRun, seed: int, num: int) -> dict:
  """{'project': EMA, 'project_raw': raw generator}: uint8 (num, H, W, C) samples of a GAN."""
  rng = jax.random.PRNGKey(seed)
  return {
      side: to_uint8(run.trainable.sample(run.state, rng, num, use_ema=use_ema)[0])
      for side, use_ema in (("project", True), ("project_raw", False))
  }


class Scorer:
  """The evaluation CLI's metrics plus the independent MLP's opinion of uint8 NHWC images."""

  def __init__(self, dataset: str):
    self.dataset, self.mlp = dataset, None

  def __call__(self, images: np.ndarray) -> dict:
    if self.mlp is None:
      x, y = data_lib.load_split(self.dataset, "train")
      self.mlp = independent_score.train_classifier(x, y, epochs=3)
    metrics = sample_eval.score_images(self.dataset, images)
    return {
        **{k: float(v) for k, v in metrics.items()}, **independent_score.opinion(self.mlp, images)
    }


def table(scores: dict, sides, seeds, columns) -> str:
  """Markdown: one row per side, each column's mean +- standard deviation over the seeds."""
  lines = ["| side | seeds | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
  for side in sides:
    rows = [scores[f"{side}/{s}"] for s in seeds if f"{side}/{s}" in scores]
    if not rows:
      continue
    cells = [
        f"{np.mean([r[c] for r in rows]):.3f} +- {np.std([r[c] for r in rows]):.3f}"
        for c in columns
    ]
    lines.append(f"| {side} | {len(rows)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def side_names(side: str, config) -> list[str]:
  """The score entries one side's run gives: a GAN project is scored with EMA and raw G."""
  return [side] if side == "reference" or config.model == "vae_mlp" else [side, "project_raw"]


def run_reference(config, seed: int, args, scorer: Scorer) -> dict:
  """The original's scores: a VAE's test neg-ELBO, or a GAN's samples scored."""
  vae = config.model == "vae_mlp"
  if vae:
    config.ema_decay = 0.0  # the original keeps no average of its parameters
  else:
    config.upsample = args.reference_upsample
  images, _ = data_lib.load_config_split(config, "train")
  ref = train_reference(config, seed, args.epochs, np.asarray(images))
  if vae:
    test, _ = data_lib.load_config_split(config, "test")
    return {"test_neg_elbo": reference_test_neg_elbo(ref, np.asarray(test), seed)}
  return scorer(reference_samples(ref, args.num, config.batch_size))


def run_side(side: str, config, seed: int, args, scorer: Scorer) -> dict:
  """{entry name: scores} of one side and seed (`side_names`)."""
  start = time.time()
  if side == "reference":  # the original: the experiment file without the overrides
    out = {side: run_reference(config_lib.load_experiment(args.experiment), seed, args, scorer)}
  else:
    run = train_project(config, seed, args.epochs,
                        os.path.join(args.workdir, "project", f"seed{seed}"))
    if config.model == "vae_mlp":
      test = workdir_lib.load_test_data(run.config)
      out = {side: {"test_neg_elbo": run.trainable.evaluate(run.state, test)["neg_elbo"]}}
    else:
      out = {name: scorer(images) for name, images in project_samples(run, seed, args.num).items()}
  seconds = time.time() - start
  return {name: {**scores, "train_and_sample_s": seconds} for name, scores in out.items()}


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.error = lambda message: parser.exit(2, f"error: {message}\n")  # one line, no usage
  parser.add_argument("experiment")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--epochs", type=int, default=5)
  parser.add_argument("--num", type=int, default=10_000)
  parser.add_argument("--sides", nargs="+", default=["reference", "project"],
                      choices=["reference", "project"])
  parser.add_argument("--reference_upsample", default="transpose",
                      choices=["transpose", "subpixel", "resize_conv"])
  try:
    config = config_lib.load_experiment(argv[0] if argv else "")
    args = parser.parse_args(config_lib.apply_overrides(config, argv))
  except config_lib.ConfigError as e:
    parser.exit(2, f"error: {e}\n")
  if config.model not in ("dcgan", "gan_mlp", "vae_mlp") or config.conditional or config.get(
      "pixel_clusters", 0):
    parser.exit(
        2, f"error: {args.experiment} is not an unconditional classic model; name "
        "experiments/dcgan_fashion_mnist.py, gan_mlp_fashion_mnist.py or "
        "vae_mlp_fashion_mnist.py\n")
  return config, args


def main(argv) -> None:
  config, args = parse_args(argv)
  os.makedirs(args.workdir, exist_ok=True)
  path = os.path.join(args.workdir, "scores.json")
  scores = {}
  if os.path.exists(path):
    with open(path) as f:
      scores = json.load(f)
  scorer = Scorer(config.dataset)
  for seed in args.seeds:
    for side in args.sides:
      if any(f"{name}/{seed}" not in scores for name in side_names(side, config)):
        print(f"{side} seed {seed}: training {args.epochs} epochs", flush=True)
        for name, result in run_side(side, config, seed, args, scorer).items():
          scores[f"{name}/{seed}"] = result
          print(f"{name} seed {seed}: {result}", flush=True)
        with open(path + ".tmp", "w") as f:
          json.dump(scores, f, indent=1)
        os.replace(path + ".tmp", path)
  print(f"{args.experiment}, {args.epochs} epochs, {args.num} samples each")
  columns = VAE_COLUMNS if config.model == "vae_mlp" else GAN_COLUMNS
  print(table(scores, ("reference", "project", "project_raw"), args.seeds, columns))


if __name__ == "__main__":
  main(sys.argv[1:])
