"""Sample metrics of a generative family: FID, KID, precision/recall and IS (and label accuracy
when conditional) of generated images against the test split, beside real-vs-real floors.

The metrics' classifier is loaded (or trained, once per recipe) at the first evaluation; the test
features are extracted once per test split and size.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np

from aigc_jax import data as data_lib
from aigc_jax.metrics import classifier as classifier_lib
from aigc_jax.metrics import sample_metrics

FLOOR_METRICS = ("fid", "kid", "precision", "recall", "is", "label_acc")  # the CLI's *_floor keys
CHUNK = 1000  # images generated per sampling call


class SampleEvaluator:
  """Scores `sample(state, rng, num, use_ema=True) -> (images in [0, 1] (N,H,W,C), labels)`."""

  def __init__(self, config, sample: Callable, conditional: bool):
    self.config, self.sample, self.conditional = config, sample, conditional
    self._real = {}  # num -> (test images, their features)

  @functools.cached_property
  def classifier(self):
    return classifier_lib.load_or_train(self.config.dataset, progress=False)

  def real_features(self, test: data_lib.DeviceData, num: int):
    """The classifier's features of the first `num` test images, extracted once and reused."""
    images, features = self._real.get(num, (None, None))
    if images is not test.images:
      images, features = test.images, self.classifier.features(np.asarray(test.images[:num]))
      self._real[num] = images, features
    return features

  def sample_metrics(self, state, real, num: int, use_ema: bool = True) -> dict:
    """The metrics of `num` generated images (fixed seeds) against `real` (test features)."""
    fakes, labels = [], []
    for i, start in enumerate(range(0, num, CHUNK)):
      images, lab = self.sample(state, jax.random.PRNGKey(1000 + i), min(CHUNK, num - start),
                                use_ema)
      fakes.append(np.round(images * 255).astype(np.uint8))
      labels.append(lab)
    requested = np.concatenate(labels) if self.conditional else None
    return sample_metrics.evaluate_samples(self.classifier, np.concatenate(fakes), real,
                                           requested)

  def floors(self, real, num: int) -> dict:
    """The same metrics of `num` real train images vs the same test features (cached)."""
    images, labels = data_lib.load_config_split(self.config, "train")
    return sample_metrics.floors(self.classifier, images, real,
                                 labels if self.conditional else None, num_train=num)

  def evaluate(self, state, test: data_lib.DeviceData) -> dict:
    """The periodic evaluation: the metrics of config.eval_num_samples EMA samples."""
    num = min(self.config.eval_num_samples, int(test.labels.shape[0]))
    return self.sample_metrics(state, self.real_features(test, num), num)

  def full_evaluate(self, state, test: data_lib.DeviceData, *, num_samples=10_000, progress=None,
                    **unused) -> dict:
    """EMA metrics, each followed by its real-train-vs-real-test `<name>_floor`; raw_* metrics.

    num_samples generated images per generator against as many test images; the floors use as
    many train images. The test features are extracted once for all three.
    """
    del progress, unused
    num = min(num_samples, int(test.labels.shape[0]))
    real = self.real_features(test, num)
    ema, floor = self.sample_metrics(state, real, num), self.floors(real, num)
    raw = self.sample_metrics(state, real, num, use_ema=False)
    out = {}
    for name, value in ema.items():
      out[name] = value
      if name in FLOOR_METRICS:
        out[f"{name}_floor"] = floor[name]
    return {**out, **{f"raw_{k}": v for k, v in raw.items()}, "num_samples": num}
