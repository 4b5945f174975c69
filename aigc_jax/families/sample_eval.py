"""Sample metrics of a generative family: FID, KID, precision/recall and IS (and label accuracy
when conditional) of generated images against the test split, beside real-vs-real floors.

The metrics' classifier is loaded (or trained, once per recipe) at the first evaluation; the test
features are extracted once per test split and size. With metric net 'inception' (an argument of
`score_images`, or `using_metric_net` around a family's `full_evaluate`) the same metrics use
pytorch-fid's Inception-V3 (`metrics.inception`), each key naming it: fid[inception], ...
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from aigc_jax import data as data_lib
from aigc_jax import eval_split
from aigc_jax.families import SAMPLE_CHUNK
from aigc_jax.metrics import classifier as classifier_lib
from aigc_jax.metrics import classifier_net
from aigc_jax.metrics import fid as fid_lib
from aigc_jax.metrics import inception_weights
from aigc_jax.metrics import sample_metrics

FLOOR_METRICS = ("fid", "kid", "precision", "recall", "is", "label_acc")  # the CLI's *_floor keys
# The fewest images the metrics take: inception_score's 10 splits (precision/recall's k + 1 = 6,
# FID's and KID's 2 are fewer).
MIN_SAMPLES = 10
METRIC_NETS = ("classifier", "inception")
log = logging.getLogger(__name__)
# (metric net, resize, reference statistics or None) for `SampleEvaluator.full_evaluate`
_METRIC_NET = contextvars.ContextVar("aigc_jax_metric_net", default=("classifier", None, None))


def load_metric_net(name: str, dataset: str, resize: str = "bilinear", progress: bool = True):
  """The network the metrics use: the dataset's classifier (loaded, or trained once) or
  pytorch-fid's Inception-V3 (`inception_weights.load`, WeightsError when it has no weights)."""
  if name == "inception":
    return inception_weights.load(resize=resize)
  if name != "classifier":
    raise ValueError(f"metric net must be one of {METRIC_NETS}, got {name!r}")
  return classifier_lib.load_or_train(dataset, progress=progress)


def named(metrics: dict, net: str) -> dict:
  """The classifier's metrics as they are; another net's with it in each key: fid[inception]."""
  return metrics if net == "classifier" else {f"{k}[{net}]": v for k, v in metrics.items()}


@contextlib.contextmanager
def using_metric_net(metric_net: str = "classifier", resize: str = "bilinear",
                     ref_stats=None) -> Iterator[None]:
  """Inside the block, `SampleEvaluator.full_evaluate` (what `python -m aigc_jax.evaluate`
  prints) scores with the network `metric_net` (one of METRIC_NETS), images resized by `resize`
  (`inception_resize.MODES`); `ref_stats` (mean, covariance) replace the test features'
  statistics in FID. The periodic evaluation keeps the classifier."""
  token = _METRIC_NET.set((metric_net, resize, ref_stats))
  try:
    yield
  finally:
    _METRIC_NET.reset(token)


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
                 num: int | None = None, idx_dir: str | None = None, metric_net: str = "classifier",
                 resize: str = "bilinear", ref_stats=None) -> dict:
  """The metrics of uint8 (N, H, W, C) images against the first `num` test images, with floors.

  The same numbers as a GAN's `full_evaluate` of as many samples: the dataset's cached
  classifier (trained once if absent), `num` images (default: all, at most the test split's
  size) against as many test images, floors from as many train images. `labels` (N,), the
  classes the images were asked to show, add label_acc (the classifier's only). `metric_net`,
  `resize` and `ref_stats` as in `using_metric_net`; keys as `named` gives them. With
  `ref_stats`, FID alone scores all the images (`fid_num_samples`, e.g. 50,000 against a train
  split's statistics); the other metrics and the floors stay at `num`.
  """
  scoring = _scoring(metric_net, load_metric_net(metric_net, dataset, resize), ref_stats)
  test_images, _ = data_lib.load_split(dataset, "test", idx_dir=idx_dir)
  num = min(len(images) if num is None else num, len(images), len(test_images))
  log.info("%s features of %d test images", metric_net, num)
  real = scoring.net.features(np.asarray(test_images[:num]))
  log.info("metrics of %d samples", num)
  labels = labels if scoring.labels else None
  metrics = sample_metrics.evaluate_samples(scoring.net, np.asarray(images[:num]), real,
                                            None if labels is None else labels[:num],
                                            **scoring.options)
  extra = {}
  if ref_stats is not None:
    if len(images) > num:
      log.info("FID of all %d samples against the reference statistics", len(images))
      feats = scoring.net.features(np.asarray(images))
      metrics["fid"] = fid_lib.frechet_distance(*fid_lib.feature_stats(feats), *ref_stats)
    extra["fid_num_samples"] = max(len(images), num)
  train_images, train_labels = data_lib.load_split(dataset, "train", idx_dir=idx_dir)
  log.info("floors: %d train images (cached beside the network after the first time)", num)
  floor = sample_metrics.floors(scoring.net, train_images, real,
                                None if labels is None else train_labels, num_train=num,
                                **scoring.options)
  return {
      **named(with_floors(metrics, floor), metric_net), "num_samples": num, **extra,
      **_provenance(scoring)
  }


class _Scoring(NamedTuple):
  name: str  # one of METRIC_NETS
  net: Any  # the classifier or `inception.Inception`
  labels: bool  # whether label_acc applies (the classifier's classes are the dataset's)
  options: dict  # for evaluate_samples and floors: the reference statistics, if any


def _scoring(name: str, net, ref_stats) -> _Scoring:
  options = {} if ref_stats is None else {"real_stats": ref_stats}
  return _Scoring(name, net, name == "classifier", options)


def _provenance(scoring: _Scoring) -> dict:
  """What a result scored by another network than the classifier says about it."""
  if scoring.name == "classifier":
    return {}
  return {
      "metric_net": scoring.name, "resize": scoring.net.resize,
      "inception_weights_sha256": scoring.net.weights_sha256[:16]
  }


def _num_samples(requested: int, test) -> int:
  """min(requested, the test split's size); DataError when that is too few to score."""
  num, size = min(requested, eval_split.split_size(test)), eval_split.split_size(test)
  if num < MIN_SAMPLES:
    raise data_lib.DataError(
        f"the test split has {size} images, and the sample metrics need at least {MIN_SAMPLES} "
        "(10 splits of the inception score, 5 neighbours for precision and recall): give the "
        "dataset more test images (a folder holds out every tenth file) or set "
        "eval_num_samples=0 where the model allows it")
  return num


class SampleEvaluator:
  """Scores `sample(state, rng, num, use_ema=True, **sample_options) -> (images in [0, 1]
  (N,H,W,C), labels)`. `raw`: whether `full_evaluate` also scores the raw (non-EMA) params."""

  def __init__(self, config, sample: Callable, conditional: bool, raw: bool = True):
    self.config, self.sample, self.conditional, self.raw = config, sample, conditional, raw
    self._real = {}  # (id of the network, num) -> (test images, their features)
    self._nets = {}  # (metric net, resize) -> a network other than the classifier

  @functools.cached_property
  def classifier(self):
    """Loaded, or trained once (a progress bar unless config.progress_bar is off)."""
    show = bool(self.config.get("progress_bar", True)) and jax.process_index() == 0
    return classifier_lib.load_or_train(self.config.dataset, progress=show,
                                        recipe=classifier_net.config_recipe(self.config))

  def scoring(self) -> _Scoring:
    """The classifier, or inside `using_metric_net` the network it names (loaded once)."""
    name, resize, ref_stats = _METRIC_NET.get()
    if name == "classifier":
      return _scoring(name, self.classifier, ref_stats)
    if (name, resize) not in self._nets:
      self._nets[name, resize] = load_metric_net(name, self.config.dataset, resize)
    return _scoring(name, self._nets[name, resize], ref_stats)

  def real_features(self, test: data_lib.DeviceData, num: int, scoring: _Scoring | None = None):
    """The features of the first `num` test images (the classifier's unless `scoring` names
    another network), extracted once and reused."""
    net = self.classifier if scoring is None else scoring.net
    key = (id(net), num)
    images, features = self._real.get(key, (None, None))
    if images is not test.images:
      first = np.asarray(test.images[:num])
      if len(first) < num:  # this process holds fewer test rows (several processes)
        first = data_lib.load_config_split(self.config, "test", (0, num))[0]
      images, features = test.images, net.features(first)
      self._real[key] = images, features
    return features

  def sample_metrics(self, state, real, num: int, use_ema: bool = True, progress=None,
                     scoring: _Scoring | None = None, **sample_options) -> dict:
    """The metrics of `num` generated images (fixed seeds) against `real` (test features), with
    the classifier unless `scoring` names another network.

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
    scoring = scoring or _scoring("classifier", self.classifier, None)
    requested = np.concatenate(labels) if self.conditional and scoring.labels else None
    return sample_metrics.evaluate_samples(scoring.net, np.concatenate(fakes), real, requested,
                                           **scoring.options)

  def floors(self, real, num: int, scoring: _Scoring | None = None) -> dict:
    """The same metrics of `num` real train images vs the same test features (cached)."""
    scoring = scoring or _scoring("classifier", self.classifier, None)
    images, labels = data_lib.load_config_split(self.config, "train")
    return sample_metrics.floors(scoring.net, images, real,
                                 labels if self.conditional and scoring.labels else None,
                                 num_train=num, **scoring.options)

  def evaluate(self, state, test: data_lib.DeviceData) -> dict:
    """The periodic evaluation: the metrics of config.eval_num_samples EMA samples, computed by
    process 0 alone (`from_process_zero`: `state` is each process's own copy)."""
    num = _num_samples(self.config.eval_num_samples, test)
    return from_process_zero(lambda: self.sample_metrics(state, self.real_features(test, num), num))

  def full_evaluate(self, state, test: data_lib.DeviceData, *, num_samples=10_000, progress=None,
                    **sample_options) -> dict:
    """EMA metrics, each followed by its real-train-vs-real-test `<name>_floor`; raw_* metrics
    when `raw`; with the network `scoring` returns, keys as `named` gives them.

    num_samples generated images per parameter set against as many test images; the floors use
    as many train images. The test features are extracted once for all. `progress` and
    `sample_options` as in `sample_metrics`.
    """
    scoring = self.scoring()
    num = _num_samples(num_samples, test)
    log.info("%s features of %d test images", scoring.name, num)
    real = self.real_features(test, num, scoring)
    ema = self.sample_metrics(state, real, num, progress=progress, scoring=scoring,
                              **sample_options)
    log.info("floors: %d train images (cached beside the network after the first time)", num)
    floor = self.floors(real, num, scoring)
    raw = {}
    if self.raw:
      raw = self.sample_metrics(state, real, num, use_ema=False, progress=progress, scoring=scoring,
                                **sample_options)
    metrics = {**with_floors(ema, floor), **{f"raw_{k}": v for k, v in raw.items()}}
    return {**named(metrics, scoring.name), "num_samples": num, **_provenance(scoring)}
