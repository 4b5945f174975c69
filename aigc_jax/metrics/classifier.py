"""The project's own feature extractor: a small CNN trained by a fixed recipe, cached on disk.

Inception weights are not available offline and do not fit 28x28 grayscale images, so FID, KID,
precision/recall and IS use this classifier instead. Its features are the 128 pre-activations of
the penultimate dense layer, batch-normalized (running statistics of the training images, no
learned affine): about zero mean and unit variance per unit on real data, so no dead ReLU makes
the covariance singular, FID's scale is set by a total variance of ~128, and KID's cubic kernel
sees x.y / d = O(1), as with Inception pool features (raw pre-activations, |x|^2 / d ~ 20, made
KID's subset spread larger than any difference it should detect).

Input convention: float32 images in [0, 1] (uint8 / 255), shape (N, 28, 28, 1); `to_input` maps
uint8 images there. Numbers are comparable only between runs that use the same recipe key.

Cache: ``$AIGC_JAX_CACHE`` (default ``~/.cache/aigc_jax``) ``/classifier/<dataset>-<key>/`` holds
``params.npz`` (the flattened variables) and ``info.json`` (recipe, test accuracy), each written
to a temporary file and renamed; ``info.json`` is written last, so it marks a complete entry.
Beside them, ``floors-<key>.json`` caches the metrics' real-vs-real floors (see `floors`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.special
from flax import traverse_util

from aigc_jax import data as data_lib
from aigc_jax import parallel
from aigc_jax import state as state_lib
from aigc_jax.metrics import fid as fid_lib

log = logging.getLogger(__name__)

CACHE_ENV = "AIGC_JAX_CACHE"
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
}
_EVAL_BATCH = 500  # fixed forward batch (padded), so any N compiles once
_LOG_EVERY = 25  # steps per training dispatch chunk / progress-bar update


class CacheError(RuntimeError):
  """A cached classifier is missing, corrupt or was trained by another recipe."""


class CNN(nn.Module):
  """Stride-2 conv-BN-ReLU blocks; dense-BN 'features', affine, ReLU, dropout; dense logits.

  Strided convolutions instead of full-resolution convolutions and max-pooling: a train step is
  about 6x faster on XLA:CPU (57 vs 343 ms at batch 128) for a similar accuracy.
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
  """A short stable hash of the recipe (12 hex digits)."""
  text = json.dumps(resolve_recipe(recipe), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_path(recipe: Mapping[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> str:
  """``<cache>/classifier/<dataset>-<key>``; cache from the argument, $AIGC_JAX_CACHE or ~."""
  recipe = resolve_recipe(recipe)
  root = cache_dir or os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "aigc_jax")
  return os.path.join(os.path.expanduser(os.fspath(root)), "classifier",
                      f"{recipe['dataset']}-{recipe_key(recipe)}")


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


def _model(recipe: Mapping[str, Any]) -> CNN:
  info = data_lib.DATASETS[recipe["dataset"]]
  return CNN(recipe["conv_features"], recipe["dense_features"], info.num_classes,
             recipe["dropout"])


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
  """A trained classifier: `features`, `logits` and `probs` of images, plus its test accuracy."""

  model: CNN
  variables: Any
  test_accuracy: float
  recipe: dict[str, Any]
  path: str | None = None

  @functools.cached_property
  def _apply(self) -> Callable:
    return jax.jit(functools.partial(self.model.apply, train=False))

  def features_and_logits(self, images) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) features and (N, C) logits, float32, in batches of a fixed size."""
    x = to_input(images)
    shape = data_lib.DATASETS[self.recipe["dataset"]].image_shape
    if x.shape[1:] != shape:
      raise ValueError(f"the {self.recipe['dataset']} classifier takes {shape} images, got "
                       f"{x.shape[1:]}")
    feats, logits = [], []
    for start in range(0, len(x), _EVAL_BATCH):
      chunk = x[start:start + _EVAL_BATCH]
      pad = _EVAL_BATCH - len(chunk)
      f, l = self._apply(self.variables, np.pad(chunk, ((0, pad), (0, 0), (0, 0), (0, 0))))
      feats.append(np.asarray(f)[:len(chunk)])
      logits.append(np.asarray(l)[:len(chunk)])
    if not feats:
      raise ValueError("no images")
    return np.concatenate(feats).astype(np.float32), np.concatenate(logits).astype(np.float32)

  def features(self, images) -> np.ndarray:
    return self.features_and_logits(images)[0]

  def logits(self, images) -> np.ndarray:
    return self.features_and_logits(images)[1]

  def probs(self, images) -> np.ndarray:
    """(N, C) class probabilities in float64."""
    return scipy.special.softmax(self.logits(images).astype(np.float64), axis=-1)


# -------------------------------------------------------------------- training


def _train_step(model: CNN, state: state_lib.TrainState, batch) -> tuple[Any, dict]:
  dropout_rng = state_lib.step_rng(state)

  def loss_fn(params):
    (_, logits), updates = model.apply({"params": params, **state.model_state}, batch["image"],
                                       train=True, rngs={"dropout": dropout_rng},
                                       mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  accuracy = (logits.argmax(-1) == batch["label"]).mean()
  return state.apply_gradients(grads, model_state=dict(updates)), {
      "loss": loss, "accuracy": accuracy}


def train(recipe: Mapping[str, Any], progress: bool = True) -> tuple[Any, dict[str, Any]]:
  """Trains the recipe's classifier from scratch: (variables, info with test_accuracy)."""
  recipe = resolve_recipe(recipe)
  start_time = time.time()
  images, labels = data_lib.load_split(recipe["dataset"], "train")
  if recipe["train_examples"]:
    images, labels = images[:recipe["train_examples"]], labels[:recipe["train_examples"]]
  model, batch_size = _model(recipe), recipe["batch_size"]
  steps = data_lib.steps_per_epoch(len(images), batch_size)
  total = steps * recipe["epochs"]
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(recipe["seed"]))
  variables = model.init(init_rng, jnp.zeros((1, *images.shape[1:]), jnp.float32))
  tx = optax.adam(optax.cosine_decay_schedule(recipe["learning_rate"], max(1, total)))
  state = state_lib.TrainState.create(
      apply_fn=model.apply, params=variables["params"], tx=tx, rng=state_rng,
      model_state={"batch_stats": variables["batch_stats"]})
  # One jitted step per dispatch: XLA:CPU runs convolutions inside loops slowly (jax#12868).
  run = parallel.make_train_loop(functools.partial(_train_step, model), batch_size=batch_size,
                                 scale="zero_one", steps_per_call=1)
  data = data_lib.to_device(images, labels)
  from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
  with tqdm.tqdm(total=total, disable=not progress, desc="classifier", unit="step") as bar:
    for epoch in range(recipe["epochs"]):
      perm = data_lib.epoch_permutation(recipe["seed"], epoch, len(images))
      for chunk_start in range(0, steps, _LOG_EVERY):
        n = min(_LOG_EVERY, steps - chunk_start)
        state, sums = run(state, data, perm, chunk_start, n)
        bar.update(n)
        bar.set_postfix(epoch=epoch, loss=f"{float(sums['loss']) / n:.3f}",
                        acc=f"{float(sums['accuracy']) / n:.3f}")
  variables = {"params": state.params, **state.model_state}
  variables = jax.tree.map(np.asarray, variables)
  test_images, test_labels = data_lib.load_split(recipe["dataset"], "test")
  clf = Classifier(model, variables, float("nan"), recipe)
  test_accuracy = fid_lib.label_accuracy(clf.logits(test_images), test_labels)
  info = dict(recipe=recipe, key=recipe_key(recipe), test_accuracy=test_accuracy,
              train_seconds=round(time.time() - start_time, 1), jax_version=jax.__version__)
  return variables, info


# ----------------------------------------------------------------------- cache


def _atomic_write(path: str, write: Callable[[Any], None]) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def save(path: str, variables: Any, info: Mapping[str, Any]) -> None:
  """Writes params.npz then info.json into `path`, each atomically."""
  os.makedirs(path, exist_ok=True)
  flat = traverse_util.flatten_dict(variables, sep="/")
  _atomic_write(os.path.join(path, "params.npz"), lambda f: np.savez(f, **flat))
  text = json.dumps(dict(info), indent=2, sort_keys=True).encode()
  _atomic_write(os.path.join(path, "info.json"), lambda f: f.write(text))


def load(path: str, recipe: Mapping[str, Any]) -> Classifier:
  """Reads a cache entry; raises `CacheError` if it is missing, corrupt or another recipe's."""
  recipe = resolve_recipe(recipe)
  try:
    with open(os.path.join(path, "info.json"), encoding="utf-8") as f:
      info = json.load(f)
    if info.get("key") != recipe_key(recipe):
      raise ValueError(f"info.json has key {info.get('key')!r}, expected {recipe_key(recipe)!r}")
    test_accuracy = float(info["test_accuracy"])
    with np.load(os.path.join(path, "params.npz"), allow_pickle=False) as npz:
      flat = {k: npz[k] for k in npz.files}
    model = _model(recipe)
    shape = (1, *data_lib.DATASETS[recipe["dataset"]].image_shape)
    expected = traverse_util.flatten_dict(
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape)), sep="/")
    if set(flat) != set(expected):
      raise ValueError(f"params.npz holds {sorted(flat)}, expected {sorted(expected)}")
    for k, want in expected.items():
      if flat[k].shape != want.shape or flat[k].dtype != want.dtype:
        raise ValueError(f"params.npz '{k}' is {flat[k].dtype}{flat[k].shape}, expected "
                         f"{want.dtype}{want.shape}")
      if not np.isfinite(flat[k]).all():
        raise ValueError(f"params.npz '{k}' is not finite")
  except Exception as e:  # pylint: disable=broad-except
    raise CacheError(f"classifier cache {path} is unreadable ({type(e).__name__}: {e})") from e
  variables = traverse_util.unflatten_dict(flat, sep="/")
  return Classifier(model, variables, test_accuracy, recipe, path)


def load_or_train(dataset: str = "fashion_mnist",
                  cache_dir: str | os.PathLike[str] | None = None,
                  recipe: Mapping[str, Any] = RECIPE,
                  progress: bool = True) -> Classifier:
  """The cached classifier for `recipe` on `dataset`; trains and caches it if absent or corrupt."""
  recipe = resolve_recipe(recipe, dataset=dataset)
  path = cache_path(recipe, cache_dir)
  if os.path.exists(os.path.join(path, "info.json")):
    try:
      clf = load(path, recipe)
      log.info("loaded classifier from %s (test accuracy %.4f)", path, clf.test_accuracy)
      return clf
    except CacheError as e:
      warnings.warn(f"{e}; retraining", RuntimeWarning, stacklevel=2)
  log.info("training the %s classifier (recipe %s) into %s", dataset, recipe_key(recipe), path)
  variables, info = train(recipe, progress=progress)
  save(path, variables, info)
  log.info("saved classifier to %s (test accuracy %.4f, %.0f s)", path, info["test_accuracy"],
           info["train_seconds"])
  return Classifier(_model(recipe), variables, info["test_accuracy"], recipe, path)


# ------------------------------------------------------------------ evaluation


def evaluate_samples(classifier: Classifier,
                     fake_images_uint8,
                     real_features,
                     fake_requested_labels=None,
                     *,
                     kid_subsets: int = 100,
                     kid_subset_size: int = 1000,
                     k: int = 5,
                     is_splits: int = 10,
                     seed: int = 0) -> dict[str, float]:
  """fid, kid (and kid_std), precision, recall, is (and is_std), label_acc when labels are given.

  All on the classifier's features of the fake images vs `real_features`, the same classifier's
  features of the real images (`classifier.features(real_images)`: extract them once per real
  set and reuse them for every model, checkpoint and floor); IS on the fake images' class
  probabilities. Use equal set sizes (e.g. 10k each): FID and KID depend on them.
  """
  real_features = np.asarray(real_features)
  if real_features.ndim != 2:
    raise ValueError(f"real_features must be (N, D) features, got shape {real_features.shape}; "
                     "pass classifier.features(real_images)")
  fake_feats, fake_logits = classifier.features_and_logits(fake_images_uint8)
  kid_mean, kid_std = fid_lib.kid(fake_feats, real_features, kid_subsets, kid_subset_size, seed)
  precision, recall = fid_lib.precision_recall(real_features, fake_feats, k=k)
  probs = scipy.special.softmax(fake_logits.astype(np.float64), axis=-1)
  is_mean, is_std = fid_lib.inception_score(probs, is_splits)
  out = {"fid": fid_lib.fid(fake_feats, real_features), "kid": kid_mean, "kid_std": kid_std,
         "precision": precision, "recall": recall, "is": is_mean, "is_std": is_std}
  if fake_requested_labels is not None:
    out["label_acc"] = fid_lib.label_accuracy(fake_logits, fake_requested_labels)
  return out


def floor_rows(num_images: int, num_train: int, seed: int = 0) -> np.ndarray:
  """The sorted rows of the train subset `floors` scores: `num_train` of `num_images` (at most
  all), drawn without replacement with `np.random.default_rng(seed)`."""
  return np.sort(np.random.default_rng(seed).choice(num_images, min(num_train, num_images),
                                                    replace=False))


def floors(classifier: Classifier,
           train_images,
           real_features,
           train_labels=None,
           *,
           num_train: int = 10_000,
           seed: int = 0,
           **kwargs) -> dict[str, float]:
  """`evaluate_samples` of a real-train subset (as the fakes) vs `real_features`: the floors.

  What a generator that draws real images would score: the scale a model's metrics are read on.
  Compute them exactly as the model's metrics, with as many train images as the model has
  samples (`num_train`) and the same `real_features` and `kwargs`. The subset is `num_train`
  train images chosen by `floor_rows` (`kwargs` go to `evaluate_samples`); with
  `train_labels`, label_acc is the classifier's accuracy on it.

  Cached as ``floors-<key>.json`` beside a cached classifier (`classifier.path`); the key hashes
  the subset's images and labels, `real_features` and the options, so other data misses it.
  """
  idx = floor_rows(len(train_images), num_train, seed)
  images = np.ascontiguousarray(np.asarray(train_images)[idx])
  labels = None if train_labels is None else np.asarray(train_labels, np.int64)[idx]
  real = np.ascontiguousarray(real_features, np.float32)
  digest = hashlib.sha256(json.dumps(kwargs, sort_keys=True).encode())
  for array in (images, real) if labels is None else (images, real, labels):
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
  path = classifier.path and os.path.join(classifier.path, f"floors-{digest.hexdigest()[:16]}.json")
  if path and os.path.exists(path):
    try:
      with open(path, encoding="utf-8") as f:
        return json.load(f)
    except (OSError, ValueError) as e:
      warnings.warn(f"floors cache {path} is unreadable ({e}); recomputing", RuntimeWarning,
                    stacklevel=2)
  out = evaluate_samples(classifier, images, real, labels, **kwargs)
  if path:
    text = json.dumps(out, indent=2, sort_keys=True).encode()
    try:
      _atomic_write(path, lambda f: f.write(text))
    except OSError as e:
      warnings.warn(f"could not cache floors in {path} ({e})", RuntimeWarning, stacklevel=2)
  return out
