"""The cached feature classifier: `load_or_train`, its cache entry (`cache_path`, `save`, `load`).

Cache: ``$AIGC_JAX_CACHE`` (default ``~/.cache/aigc_jax``) ``/classifier/<dataset>-<key>/`` holds
``params.npz`` (the variables flattened with '/') and ``info.json`` (recipe, key, test accuracy,
the sha256 of params.npz's arrays), each written to a temporary file and renamed; ``info.json``
is written last, so it marks a complete entry. An entry whose arrays do not match their sha256
is retrained. A cache where no file can be written is refused before the classifier is trained
(`CacheError`: it would be lost); an entry that cannot be saved after training is a warning, and
the classifier is used all the same. Beside them, ``floors-<hash>.json`` caches the real-vs-real
floors with their own sha256 (`sample_metrics.floors`). The network and recipe are in
`classifier_net`, the training in `classifier_train`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from aigc_jax.metrics import classifier_net
from aigc_jax.metrics import classifier_train

log = logging.getLogger(__name__)

CACHE_ENV = "AIGC_JAX_CACHE"
PARAMS_SHA256 = "params_sha256"  # info.json's key for `params_digest` of params.npz


class CacheError(RuntimeError):
  """A cached classifier is missing, corrupt or was trained by another recipe."""


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> str:
  """The cache directory: the argument, else $AIGC_JAX_CACHE, else ~/.cache/aigc_jax."""
  root = cache_dir or os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "aigc_jax")
  return os.path.expanduser(os.fspath(root))


def cache_path(recipe: Mapping[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> str:
  """``<cache>/classifier/<dataset>-<key>``; cache from the argument, $AIGC_JAX_CACHE or ~. A
  user dataset's name ('folder:PATH', 'tfds:NAME') is written with '_' for its punctuation."""
  recipe = classifier_net.resolve_recipe(recipe)
  kind, _, where = recipe["dataset"].partition(":")
  name = f"{kind}_{os.path.basename(where.rstrip('/')) or where}" if where else kind
  name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
  return os.path.join(cache_root(cache_dir), "classifier",
                      f"{name}-{classifier_net.recipe_key(recipe)}")


def check_writable(path: str, cache_dir: str | os.PathLike[str] | None = None) -> None:
  """Raises CacheError unless a file can be made in the cache entry `path` (created if missing)
  of the cache `cache_dir` (`cache_root`)."""
  try:
    os.makedirs(path, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=path, prefix=".tmp-")
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise CacheError(
        f"the classifier cache {cache_root(cache_dir)} is not writable ({e.strerror or e}), so "
        f"the classifier the metrics need (about 2 minutes of training) would be lost; set "
        f"{CACHE_ENV} to a directory you can write, e.g. {CACHE_ENV}=/tmp/aigc_jax_cache") from None


def atomic_write(path: str, write: Callable[[Any], None]) -> None:
  """Calls `write` on a temporary binary file beside `path`, then renames it to `path`."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def params_digest(variables: Mapping[str, Any]) -> str:
  """The sha256 of variables (nested, or flattened with '/'): every leaf's name, dtype, shape
  and bytes, by name."""
  flat = traverse_util.flatten_dict(variables, sep="/")
  digest = hashlib.sha256()
  for name in sorted(flat):
    array = np.ascontiguousarray(np.asarray(flat[name]))
    digest.update(f"{name}:{array.dtype.str}{array.shape}:".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def save(path: str, variables: Any, info: Mapping[str, Any]) -> None:
  """Writes params.npz then info.json (`info` with params.npz's `params_digest`) into `path`,
  each atomically."""
  os.makedirs(path, exist_ok=True)
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables, sep="/").items()}
  atomic_write(os.path.join(path, "params.npz"), lambda f: np.savez(f, **flat))
  info = {**info, PARAMS_SHA256: params_digest(flat)}
  text = json.dumps(info, indent=2, sort_keys=True).encode()
  atomic_write(os.path.join(path, "info.json"), lambda f: f.write(text))


def _check_params(flat: Mapping[str, np.ndarray], model: classifier_net.CNN,
                  image_shape: tuple[int, ...]) -> None:
  """Raises ValueError unless `flat` has exactly the model's leaves, shapes, dtypes, finite."""
  expected = traverse_util.flatten_dict(
      jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image_shape))), sep="/")
  if set(flat) != set(expected):
    raise ValueError(f"params.npz holds {sorted(flat)}, expected {sorted(expected)}")
  for k, want in expected.items():
    if flat[k].shape != want.shape or flat[k].dtype != want.dtype:
      raise ValueError(f"params.npz '{k}' is {flat[k].dtype}{flat[k].shape}, expected "
                       f"{want.dtype}{want.shape}")
    if not np.isfinite(flat[k]).all():
      raise ValueError(f"params.npz '{k}' is not finite")


def load(path: str, recipe: Mapping[str, Any]) -> classifier_net.Classifier:
  """Reads a cache entry; raises `CacheError` if it is missing, corrupt, another recipe's, or
  its params.npz does not match the digest in info.json (edited, or saved without one)."""
  recipe = classifier_net.resolve_recipe(recipe)
  model = classifier_net.build_model(recipe)
  try:
    with open(os.path.join(path, "info.json"), encoding="utf-8") as f:
      info = json.load(f)
    key = classifier_net.recipe_key(recipe)
    if info.get("key") != key:
      raise ValueError(f"info.json has key {info.get('key')!r}, expected {key!r}")
    test_accuracy = float(info["test_accuracy"])
    with np.load(os.path.join(path, "params.npz"), allow_pickle=False) as npz:
      flat = {k: npz[k] for k in npz.files}
    _check_params(flat, model, classifier_net.dataset_info(recipe).image_shape)
  except Exception as e:  # pylint: disable=broad-except
    raise CacheError(f"classifier cache {path} is unreadable ({type(e).__name__}: {e})") from e
  if info.get(PARAMS_SHA256) != params_digest(flat):
    raise CacheError(f"classifier cache {path}: params.npz does not match the {PARAMS_SHA256} "
                     "in info.json (edited, or cached before entries had one)")
  variables = traverse_util.unflatten_dict(flat, sep="/")
  return classifier_net.Classifier(model, variables, test_accuracy, recipe, path)


def load_or_train(dataset: str = "fashion_mnist", cache_dir: str | os.PathLike[str] | None = None,
                  recipe: Mapping[str, Any] = classifier_net.RECIPE,
                  progress: bool = True) -> classifier_net.Classifier:
  """The cached classifier for `recipe` on `dataset`; trains and caches it if absent or corrupt."""
  recipe = classifier_net.resolve_recipe(recipe, dataset=dataset)
  path = cache_path(recipe, cache_dir)
  if os.path.exists(os.path.join(path, "info.json")):
    try:
      clf = load(path, recipe)
      log.info("loaded classifier from %s (test accuracy %.4f)", path, clf.test_accuracy)
      return clf
    except CacheError as e:
      warnings.warn(f"{e}; retraining", RuntimeWarning, stacklevel=2)
  check_writable(path, cache_dir)
  log.info("training the %s classifier (recipe %s) into %s", dataset,
           classifier_net.recipe_key(recipe), path)
  variables, info = classifier_train.train(recipe, progress=progress)
  try:
    save(path, variables, info)
    log.info("saved classifier to %s (test accuracy %.4f, %.0f s)", path, info["test_accuracy"],
             info["train_seconds"])
  except OSError as e:  # the metrics go on with it: only the next run pays for the training
    warnings.warn(
        f"could not save the classifier in {path} ({e.strerror or e}); it is used "
        f"now, and trained again next time: free space there or set {CACHE_ENV} to "
        "another directory", RuntimeWarning, stacklevel=2)
  return classifier_net.Classifier(classifier_net.build_model(recipe), variables,
                                   info["test_accuracy"], recipe, path)
