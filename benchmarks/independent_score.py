"""A second opinion on generated images, from a classifier that shares nothing with the metrics.

  python benchmarks/independent_score.py FILE.npz [FILE.npz ...] [--dataset fashion_mnist]
      [--num 1000] [--epochs 3]

Trains a PyTorch MLP (784-512-256-10, ReLU, Adam 1e-3, batch 128, seed 0) on the train split:
another framework, another architecture and another recipe than the CNN behind FID
(`aigc_jax/metrics`). Then, for the first N images of each file (uint8 `images`, as `python -m
aigc_jax.sample` writes them) and for N real test images: how confidently it names a class
(mean top probability, the share above 0.9), how many classes the images spread over (the
entropy of the predicted-class histogram, in bits; log2(10) = 3.32 is an even spread), and, when
the file has `labels`, the share it classifies as the asked class.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from aigc_jax import data as data_lib


def train_classifier(images: np.ndarray, labels: np.ndarray, epochs: int) -> torch.nn.Module:
  torch.manual_seed(0)
  net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(images[0].size, 512),
                            torch.nn.ReLU(), torch.nn.Linear(512, 256), torch.nn.ReLU(),
                            torch.nn.Linear(256, 10))
  opt = torch.optim.Adam(net.parameters(), 1e-3)
  x = torch.from_numpy(images.astype(np.float32) / 255.0)
  y = torch.from_numpy(labels.astype(np.int64))
  for _ in range(epochs):
    for idx in torch.randperm(len(x)).split(128):
      opt.zero_grad()
      torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
      opt.step()
  return net.eval()


def opinion(net: torch.nn.Module, images: np.ndarray, labels=None) -> dict:
  with torch.no_grad():
    probs = torch.softmax(net(torch.from_numpy(images.astype(np.float32) / 255.0)), -1).numpy()
  top, predicted = probs.max(1), probs.argmax(1)
  share = np.bincount(predicted, minlength=probs.shape[1]) / len(predicted)
  result = {
      "mean_top_prob": float(top.mean()), "share_above_0.9": float((top > 0.9).mean()),
      "class_entropy_bits": float(-(share[share > 0] * np.log2(share[share > 0])).sum())
  }
  if labels is not None:
    result["asked_class_acc"] = float((predicted == labels).mean())
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("files", nargs="+")
  parser.add_argument("--dataset", default="fashion_mnist")
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--epochs", type=int, default=3)
  args = parser.parse_args()
  train_images, train_labels = data_lib.load_split(args.dataset, "train")
  test_images, test_labels = data_lib.load_split(args.dataset, "test")
  net = train_classifier(train_images, train_labels, args.epochs)
  accuracy = opinion(net, test_images, test_labels)["asked_class_acc"]
  print(f"independent classifier: test accuracy {accuracy:.4f}")
  print(f"real test images: {opinion(net, test_images[:args.num])}")
  for path in args.files:
    with np.load(path) as f:
      images = f["images"][:args.num]
      labels = f["labels"][:args.num] if "labels" in f else None
    images = images.reshape(images.shape[:3] + (-1,))
    print(f"{path}: {opinion(net, images, labels)}")


if __name__ == "__main__":
  main()
