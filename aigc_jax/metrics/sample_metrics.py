"""Every sample metric of generated images at once (`evaluate_samples`) and its real floors.

`evaluate_samples` scores fake images against real features with the classifier (or the
Inception network, `inception.Inception`): fid, kid, precision/recall, is and label_acc (modules
`fid`, `kid`, `precision_recall`, `inception_score`). `floors` scores real train images the same
way: the values a generator that draws real images would get, cached beside the classifier.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import numpy as np
import scipy.special

from aigc_jax.metrics import classifier as classifier_lib
from aigc_jax.metrics import classifier_net
from aigc_jax.metrics import fid as fid_lib
from aigc_jax.metrics import inception
from aigc_jax.metrics import inception_score as is_lib
from aigc_jax.metrics import kid as kid_lib
from aigc_jax.metrics import precision_recall as pr_lib


def evaluate_samples(classifier: classifier_net.Classifier | inception.Inception, fake_images_uint8,
                     real_features, fake_requested_labels=None, *, kid_subsets: int = 100,
                     kid_subset_size: int = 1000, k: int = 5, is_splits: int = 10, seed: int = 0,
                     real_stats: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
  """fid, kid (and kid_std), precision, recall, is (and is_std), label_acc when labels are given.

  All on the classifier's features of the fake images vs `real_features`, the same classifier's
  (N, D) features of the real images (`classifier.features(real_images)`: extract them once per
  real set and reuse them for every model, checkpoint and floor); IS on the fake images' class
  probabilities. Use equal set sizes (e.g. 10k each): FID and KID depend on them. `classifier`
  is the project's classifier or `inception.Inception`. `real_stats`, (mean, covariance) of
  another real set's features (a reference statistics file), replaces `real_features`' for FID
  alone.
  """
  real_features = np.asarray(real_features)
  if real_features.ndim != 2:
    raise ValueError(f"real_features must be (N, D) features, got shape {real_features.shape}; "
                     "pass classifier.features(real_images)")
  fake_feats, fake_logits = classifier.features_and_logits(fake_images_uint8)
  kid_mean, kid_std = kid_lib.kid(fake_feats, real_features, kid_subsets, kid_subset_size, seed)
  precision, recall = pr_lib.precision_recall(real_features, fake_feats, k=k)
  probs = scipy.special.softmax(fake_logits.astype(np.float64), axis=-1)
  is_mean, is_std = is_lib.inception_score(probs, is_splits)
  reference = fid_lib.feature_stats(real_features) if real_stats is None else real_stats
  out = {
      "fid": fid_lib.frechet_distance(*fid_lib.feature_stats(fake_feats),
                                      *reference), "kid": kid_mean, "kid_std": kid_std,
      "precision": precision, "recall": recall, "is": is_mean, "is_std": is_std
  }
  if fake_requested_labels is not None:
    out["label_acc"] = is_lib.label_accuracy(fake_logits, fake_requested_labels)
  return out


def floor_rows(num_images: int, num_train: int, seed: int = 0) -> np.ndarray:
  """The sorted rows of the train subset `floors` scores: `num_train` of `num_images` (at most
  all), drawn without replacement with `np.random.default_rng(seed)`."""
  return np.sort(
      np.random.default_rng(seed).choice(num_images, min(num_train, num_images), replace=False))


def _floors_file(classifier: classifier_net.Classifier | inception.Inception, images: np.ndarray,
                 real: np.ndarray, labels: np.ndarray | None, kwargs: dict) -> str | None:
  """``<classifier.path>/floors-<hash>.json``, the hash of the inputs and of the classifier's
  variables; None when not cached."""
  if not classifier.path:
    return None
  plain = {k: v for k, v in kwargs.items() if k != "real_stats"}
  digest = hashlib.sha256(json.dumps(plain, sort_keys=True).encode())
  digest.update(classifier_lib.params_digest(classifier.variables).encode())
  arrays = [images, real] + ([] if labels is None else [labels])
  if kwargs.get("real_stats") is not None:
    arrays += [np.ascontiguousarray(a, np.float64) for a in kwargs["real_stats"]]
  for array in arrays:
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
  return os.path.join(classifier.path, f"floors-{digest.hexdigest()[:16]}.json")


def _values_digest(values: dict) -> str:
  return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _read_floors(path: str) -> dict[str, float] | None:
  """The floors cached in `path`; None, with a warning, when the file is unreadable or the
  values do not match the sha256 stored with them (edited, or cached before they had one)."""
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    problem = f"is unreadable ({e})"
  else:
    values = saved.get("floors") if isinstance(saved, dict) else None
    if isinstance(values, dict) and saved.get("sha256") == _values_digest(values):
      return values
    problem = "does not match the sha256 stored in it (edited, or cached before it had one)"
  warnings.warn(f"floors cache {path} {problem}; recomputing", RuntimeWarning, stacklevel=3)
  return None


def _write_floors(path: str, out: dict[str, float]) -> None:
  """Writes `out` with its sha256 into `path` atomically; a failure is a warning."""
  values = json.loads(json.dumps(out))  # the floats as they read back
  text = json.dumps({"floors": values, "sha256": _values_digest(values)}, indent=2,
                    sort_keys=True).encode()
  try:
    classifier_lib.atomic_write(path, lambda f: f.write(text))
  except OSError as e:
    warnings.warn(f"could not cache floors in {path} ({e})", RuntimeWarning, stacklevel=3)


def floors(classifier: classifier_net.Classifier | inception.Inception, train_images, real_features,
           train_labels=None, *, num_train: int = 10_000, seed: int = 0,
           **kwargs) -> dict[str, float]:
  """`evaluate_samples` of a real-train subset (as the fakes) vs `real_features`: the floors.

  What a generator that draws real images would score: the scale a model's metrics are read on.
  Compute them exactly as the model's metrics, with as many train images as the model has
  samples (`num_train`) and the same `real_features` and `kwargs`. The subset is `num_train`
  train images chosen by `floor_rows` (`kwargs` go to `evaluate_samples`); with
  `train_labels`, label_acc is the classifier's accuracy on it.

  Cached as ``floors-<hash>.json`` beside a cached classifier (`classifier.path`); the hash
  covers the subset's images and labels, `real_features`, the options and the classifier's
  variables, so other data or another classifier misses. The file holds the floors and their
  sha256: an entry that is unreadable or does not match it is recomputed with a warning.
  """
  idx = floor_rows(len(train_images), num_train, seed)
  images = np.ascontiguousarray(np.asarray(train_images)[idx])
  labels = None if train_labels is None else np.asarray(train_labels, np.int64)[idx]
  real = np.ascontiguousarray(real_features, np.float32)
  path = _floors_file(classifier, images, real, labels, kwargs)
  cached = _read_floors(path) if path and os.path.exists(path) else None
  if cached is not None:
    return cached
  out = evaluate_samples(classifier, images, real, labels, **kwargs)
  if path:
    _write_floors(path, out)
  return out
