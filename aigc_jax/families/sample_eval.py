"""Sample metrics of a generative family: FID, KID, precision/recall and IS (and label accuracy
when conditional) of generated images against the test split, beside real-vs-real floors.

The metrics' classifier is loaded (or trained, once per recipe) at the first evaluation; the test
features are extracted once per test split and size.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from aigc_jax import data as data_lib
from aigc_jax.families import SAMPLE_CHUNK
from aigc_jax.metrics import classifier as classifier_lib
from aigc_jax.metrics import sample_metrics

FLOOR_METRICS = ("fid", "kid", "precision", "recall", "is", "label_acc")  # the CLI's *_floor keys
# The fewest images the metrics take: inception_score's 10 splits (precision/recall's k + 1 = 6,
# FID's and KID's 2 are fewer).
MIN_SAMPLES = 10
log = logging.getLogger(__name__)


def with_floors(metrics: dict, floor: dict) -> dict:
  """The metrics, each of FLOOR_METRICS followed by its `<name>_floor`."""
  out = {}
  for name, value in metrics.items():
    out[name] = value
    if name in FLOOR_METRICS and name in floor:
      out[f"{name}_floor"] = floor[name]
  return out


def from_process_zero(compute: Callable[[], dict]) -> dict:
  """compute()'s {name: number} computed by process 0 alone and handed to every process.

  With one process, just compute(). With several, the others wait in two broadcasts (the
  length, then the JSON bytes) and return the same dict; when process 0's compute() raises,
  it raises there and a RuntimeError here, so no process waits for the others forever.
  """
  if jax.process_count() == 1:
    return compute()
  error, out = None, {}
  if jax.process_index() == 0:
    try:
      out = compute()
    except Exception as e:  # pylint: disable=broad-except  # re-raised after the broadcast
      error, out = e, {"__error__": f"{type(e).__name__}: {e}"}
  text = np.frombuffer(json.dumps(out).encode(), np.uint8)
  size = int(multihost_utils.broadcast_one_to_all(np.int32(len(text))))
  text = text if jax.process_index() == 0 else np.zeros(size, np.uint8)
  out = json.loads(np.asarray(multihost_utils.broadcast_one_to_all(text)).tobytes())
  if error is not None:
    raise error
  if "__error__" in out:
    raise RuntimeError(f"process 0's evaluation failed: {out['__error__']}")
  return out


def score_images(dataset: str, images: np.ndarray, labels: np.ndarray | None = None,
                 num: int | None = None, idx_dir: str | None = None) -> dict:
  """The metrics of uint8 (N, H, W, C) images against the first `num` test images, with floors.

  The same numbers as a GAN's `full_evaluate` of as many samples: the dataset's cached
  classifier (trained once if absent), `num` images (default: all, at most the test split's
  size) against as many test images, floors from as many train images. `labels` (N,), the
  classes the images were asked to show, add label_acc.
  """
  classifier = classifier_lib.load_or_train(dataset)
  test_images, _ = data_lib.load_split(dataset, "test", idx_dir=idx_dir)
  num = min(len(images) if num is None else num, len(images), len(test_images))
  log.info("classifier features of %d test images", num)
  real = classifier.features(np.asarray(test_images[:num]))
  log.info("metrics of %d samples", num)
  metrics = sample_metrics.evaluate_samples(classifier, np.asarray(images[:num]), real,
                                            None if labels is None else labels[:num])
  train_images, train_labels = data_lib.load_split(dataset, "train", idx_dir=idx_dir)
  log.info("floors: %d train images (cached beside the classifier after the first time)", num)
  floor = sample_metrics.floors(classifier, train_images, real,
                                None if labels is None else train_labels, num_train=num)
  return {**with_floors(metrics, floor), "num_samples": num}


class SampleEvaluator:
  """Scores `sample(state, rng, num, use_ema=True, **sample_options) -> (images in [0, 1]
  (N,H,W,C), labels)`. `raw`: whether `full_evaluate` also scores the raw (non-EMA) params."""

  def __init__(self, config, sample: Callable, conditional: bool, raw: bool = True):
    self.config, self.sample, self.conditional, self.raw = config, sample, conditional, raw
    self._real = {}  # num -> (test images, their features)

  @functools.cached_property
  def classifier(self):
    """Loaded, or trained once (a progress bar unless config.progress_bar is off)."""
    show = bool(self.config.get("progress_bar", True)) and jax.process_index() == 0
    return classifier_lib.load_or_train(self.config.dataset, progress=show)

  def real_features(self, test: data_lib.DeviceData, num: int):
    """The classifier's features of the first `num` test images, extracted once and reused."""
    images, features = self._real.get(num, (None, None))
    if images is not test.images:
      images, features = test.images, self.classifier.features(np.asarray(test.images[:num]))
      self._real[num] = images, features
    return features

  def sample_metrics(self, state, real, num: int, use_ema: bool = True, progress=None,
                     **sample_options) -> dict:
    """The metrics of `num` generated images (fixed seeds) against `real` (test features).

    `progress(iterable, desc=...)`, when given, wraps the sampling chunks (e.g. a tqdm bar);
    `sample_options` go to `sample`.
    """
    fakes, labels = [], []
    starts = range(0, num, SAMPLE_CHUNK)
    if progress is not None:
      starts = progress(starts, desc="ema samples" if use_ema else "raw samples")
    for i, start in enumerate(starts):
      images, lab = self.sample(state, jax.random.PRNGKey(1000 + i), min(SAMPLE_CHUNK, num - start),
                                use_ema, **sample_options)
      fakes.append(np.asarray(jnp.round(images * 255).astype(jnp.uint8)))
      labels.append(lab)
    requested = np.concatenate(labels) if self.conditional else None
    return sample_metrics.evaluate_samples(self.classifier, np.concatenate(fakes), real, requested)

  def floors(self, real, num: int) -> dict:
    """The same metrics of `num` real train images vs the same test features (cached)."""
    images, labels = data_lib.load_config_split(self.config, "train")
    return sample_metrics.floors(self.classifier, images, real,
                                 labels if self.conditional else None, num_train=num)

  def evaluate(self, state, test: data_lib.DeviceData) -> dict:
    """The periodic evaluation: the metrics of config.eval_num_samples EMA samples, computed by
    process 0 alone (`from_process_zero`: `state` is each process's own copy)."""
    num = min(self.config.eval_num_samples, int(test.labels.shape[0]))
    return from_process_zero(lambda: self.sample_metrics(state, self.real_features(test, num), num))

  def full_evaluate(self, state, test: data_lib.DeviceData, *, num_samples=10_000, progress=None,
                    **sample_options) -> dict:
    """EMA metrics, each followed by its real-train-vs-real-test `<name>_floor`; raw_* metrics
    when `raw`.

    num_samples generated images per parameter set against as many test images; the floors use
    as many train images. The test features are extracted once for all. `progress` and
    `sample_options` as in `sample_metrics`.
    """
    num = min(num_samples, int(test.labels.shape[0]))
    log.info("classifier features of %d test images", num)
    real = self.real_features(test, num)
    ema = self.sample_metrics(state, real, num, progress=progress, **sample_options)
    log.info("floors: %d train images (cached beside the classifier after the first time)", num)
    floor = self.floors(real, num)
    raw = {}
    if self.raw:
      raw = self.sample_metrics(state, real, num, use_ema=False, progress=progress,
                                **sample_options)
    return {
        **with_floors(ema, floor), **{f"raw_{k}": v for k, v in raw.items()}, "num_samples": num
    }
