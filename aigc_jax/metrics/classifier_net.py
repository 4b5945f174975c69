"""The feature classifier's network (`CNN`), its training recipe and a trained `Classifier`.

By default FID, KID, precision/recall and IS use this classifier: Inception weights are not always
available offline and ImageNet features fit 28x28 grayscale images poorly (the Inception-V3 path
is `inception`, `python -m aigc_jax.evaluate --metric_net inception`). Its features are the
`dense_features` pre-activations of the penultimate dense layer, batch-normalized with the running
statistics of the training images and no learned affine: about zero mean and unit variance per
unit on real data (docs/metrics.md says why).

Input convention: float32 images in [0, 1] (uint8 / 255), shape (N, H, W, C); `to_input` maps
uint8 images there. Numbers are comparable only between classifiers of the same `recipe_key`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
import scipy.special

from aigc_jax import data as data_lib

RECIPE: dict[str, Any] = {
    "version": 1,  # bump when the model or training code changes what a recipe produces
    "dataset": "fashion_mnist",
    "conv_features": (32, 64, 128),  # 3x3 stride-2 convs, each followed by BatchNorm and ReLU
    "dense_features": 128,  # the penultimate layer: the features
    "dropout": 0.3,  # on ReLU(affine(features)) during training
    "epochs": 6,
    "batch_size": 128,
    "learning_rate": 2e-3,  # Adam, cosine-decayed to 0 over training
    "seed": 0,
    "train_examples": 0,  # 0: the whole train split; else the first n (for tests)
    # The dataset's images as the run fits them (`data.dataset_info`): a folder's or a TFDS
    # dataset's side, channels, resize filter and TFDS data dir (0, 0, 'area', '': its own).
    "image_size": 0,
    "channels": 0,
    "resize": "area",
    "tfds_data_dir": "",
}
# Keys added after caches existed: they enter a recipe's key only where they differ from these.
_LATER_KEYS = {"image_size": 0, "channels": 0, "resize": "area", "tfds_data_dir": ""}
EVAL_BATCH = 500  # fixed forward batch (padded), so any N compiles once


class CNN(nn.Module):
  """Stride-2 conv-BN-ReLU blocks; dense-BN 'features', affine, ReLU, dropout; dense logits.

  `__call__(x, train)` maps (N, H, W, C) float32 images to ((N, dense_features) features,
  (N, num_classes) logits). With `train`, BatchNorm uses batch statistics (mutable
  'batch_stats') and dropout needs a 'dropout' rng.
  """

  conv_features: Sequence[int] = (32, 64, 128)
  dense_features: int = 128
  num_classes: int = 10
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    for width in self.conv_features:
      x = nn.Conv(width, (3, 3), strides=(2, 2), padding="SAME", use_bias=False)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    x = nn.Dense(self.dense_features, use_bias=False, name="features")(x.reshape(x.shape[0], -1))
    # The features: batch-normalized pre-activations, about N(0, 1) per unit on training images.
    features = nn.BatchNorm(use_running_average=not train, momentum=0.9, use_bias=False,
                            use_scale=False, name="features_bn")(x)
    scale = self.param("features_scale", nn.initializers.ones, (self.dense_features,))
    bias = self.param("features_bias", nn.initializers.zeros, (self.dense_features,))
    h = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(features * scale + bias))
    return features, nn.Dense(self.num_classes, name="logits")(h)


def resolve_recipe(recipe: Mapping[str, Any] | None = None, **overrides) -> dict[str, Any]:
  """`RECIPE` updated by `recipe` and `overrides`; unknown keys raise."""
  out = dict(RECIPE)
  for key, value in {**(recipe or {}), **overrides}.items():
    if key not in RECIPE:
      raise ValueError(f"unknown classifier recipe key {key!r} (known: {sorted(RECIPE)})")
    out[key] = value
  out["conv_features"] = tuple(int(w) for w in out["conv_features"])
  return out


def recipe_key(recipe: Mapping[str, Any]) -> str:
  """A short stable hash of the resolved recipe (12 hex digits)."""
  resolved = resolve_recipe(recipe)
  kept = {k: v for k, v in resolved.items() if k not in _LATER_KEYS or v != _LATER_KEYS[k]}
  text = json.dumps(kept, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_model(recipe: Mapping[str, Any]) -> CNN:
  """The (untrained) `CNN` of a resolved recipe, with its dataset's number of classes."""
  info = dataset_info(recipe)
  return CNN(recipe["conv_features"], recipe["dense_features"], info.num_classes, recipe["dropout"])


def dataset_info(recipe: Mapping[str, Any]) -> data_lib.DatasetInfo:
  """The recipe's dataset, fitted as its run fits it."""
  return data_lib.dataset_info(recipe["dataset"], recipe["image_size"], recipe["channels"],
                               recipe["tfds_data_dir"] or None)


def data_options(recipe: Mapping[str, Any]) -> dict[str, Any]:
  """`data.load_split`'s keyword arguments for the recipe's dataset."""
  return dict(image_size=recipe["image_size"], channels=recipe["channels"], resize=recipe["resize"],
              tfds_data_dir=recipe["tfds_data_dir"] or None)


def config_recipe(config) -> dict[str, Any]:
  """The default recipe on a run's dataset, fitted as the run's config fits it."""
  return resolve_recipe(dataset=config.dataset, image_size=config.get("image_size", 0),
                        channels=config.get("channels", 0), resize=config.get("resize", "area"),
                        tfds_data_dir=config.get("tfds_data_dir", ""))


def to_input(images) -> np.ndarray:
  """uint8 (N, H, W[, 1]) -> float32 in [0, 1]; floats must already be in [0, 1]."""
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f"expected images (N, H, W) or (N, H, W, C), got shape {x.shape}")
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  x = x.astype(np.float32)
  if x.size and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
    raise ValueError(f"float images must be in [0, 1] (got [{x.min():.3g}, {x.max():.3g}]); "
                     "clip them, map [-1, 1] with (x + 1) / 2, or pass uint8")
  return x


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
  """A trained classifier: `features`, `logits` and `probs` of images, plus its test accuracy.

  `variables` are the model's {'params', 'batch_stats'}; `path` is its cache entry (None when
  not cached, e.g. right after training): floors are cached there.
  """

  model: CNN
  variables: Any
  test_accuracy: float
  recipe: dict[str, Any]
  path: str | None = None

  @functools.cached_property
  def _apply(self) -> Callable:
    return jax.jit(functools.partial(self.model.apply, train=False))

  def features_and_logits(self, images) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) features and (N, C) logits, float32, in padded batches of `EVAL_BATCH`."""
    x = to_input(images)
    shape = dataset_info(self.recipe).image_shape
    if x.shape[1:] != shape:
      raise ValueError(f"the {self.recipe['dataset']} classifier takes {shape} images, got "
                       f"{x.shape[1:]}")
    feats, logits = [], []
    for start in range(0, len(x), EVAL_BATCH):
      chunk = x[start:start + EVAL_BATCH]
      pad = EVAL_BATCH - len(chunk)
      feat, logit = self._apply(self.variables, np.pad(chunk, ((0, pad), (0, 0), (0, 0), (0, 0))))
      feats.append(np.asarray(feat)[:len(chunk)])
      logits.append(np.asarray(logit)[:len(chunk)])
    if not feats:
      raise ValueError("no images")
    return np.concatenate(feats).astype(np.float32), np.concatenate(logits).astype(np.float32)

  def features(self, images) -> np.ndarray:
    """(N, F) float32 features of (N, H, W[, C]) images (see `to_input`)."""
    return self.features_and_logits(images)[0]

  def logits(self, images) -> np.ndarray:
    """(N, C) float32 logits of (N, H, W[, C]) images (see `to_input`)."""
    return self.features_and_logits(images)[1]

  def probs(self, images) -> np.ndarray:
    """(N, C) class probabilities in float64."""
    return scipy.special.softmax(self.logits(images).astype(np.float64), axis=-1)
