"""The feature classifier: recipe keys, the cache (hit, corrupt -> retrain), metrics, floors.

Trains a tiny recipe on synthetic 28x28 images (class = a fixed random template plus noise), so
these tests need no dataset and never train the real recipe.
"""

import json
import os

import jax
import numpy as np
import pytest
from flax import traverse_util

from aigc_jax import data as data_lib
from aigc_jax.metrics import classifier as clf_lib
from aigc_jax.metrics import classifier_net as net_lib
from aigc_jax.metrics import classifier_train as train_lib
from aigc_jax.metrics import sample_metrics as sm_lib

TINY = net_lib.resolve_recipe(conv_features=(4, 8), dense_features=16, epochs=1, batch_size=50,
                              dropout=0.0)


def synthetic_split(name, split, **unused):
  assert name == "fashion_mnist"
  rng = np.random.default_rng(0 if split == "train" else 1)
  templates = np.random.default_rng(42).random((10, 28, 28, 1)) > 0.5
  labels = rng.integers(0, 10, 2000 if split == "train" else 500).astype(np.int32)
  noise = rng.integers(0, 80, (len(labels), 28, 28, 1))
  return (templates[labels] * 170 + noise).astype(np.uint8), labels


def eval_images(n=30):
  return synthetic_split("fashion_mnist", "test")[0][:n]


@pytest.fixture(name="fake_data")
def fixture_fake_data(monkeypatch):
  monkeypatch.setattr(data_lib, "load_split", synthetic_split)


def count_trainings(monkeypatch):
  calls = []
  real_train = train_lib.train

  def counting_train(*args, **kwargs):
    calls.append(1)
    return real_train(*args, **kwargs)

  monkeypatch.setattr(train_lib, "train", counting_train)
  return calls


def no_training(*args, **kwargs):
  raise AssertionError("trained although the cache holds this recipe")


@pytest.fixture(name="trained", scope="module")
def fixture_trained(tmp_path_factory):
  """(cache_dir, classifier, features of `eval_images()`): one tiny training for the module."""
  cache = tmp_path_factory.mktemp("cache")
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(data_lib, "load_split", synthetic_split)
    clf = clf_lib.load_or_train(cache_dir=cache, recipe=TINY, progress=False)
  return cache, clf, clf.features(eval_images())


def test_recipe_key_tracks_the_recipe():
  key = net_lib.recipe_key(net_lib.RECIPE)
  assert len(key) == 12 and key == net_lib.recipe_key(dict(net_lib.RECIPE))
  assert net_lib.recipe_key(net_lib.resolve_recipe(conv_features=[32, 64, 128])) == key
  for change in [
      dict(epochs=5),
      dict(learning_rate=1e-4),
      dict(conv_features=(32, 32)),
      dict(seed=1),
      dict(dataset="mnist")
  ]:
    assert net_lib.recipe_key(net_lib.resolve_recipe(**change)) != key, change
  with pytest.raises(ValueError, match="unknown classifier recipe key 'epoch'"):
    net_lib.resolve_recipe(epoch=3)


def test_cache_path_from_argument_env_and_home(monkeypatch, tmp_path):
  key = net_lib.recipe_key(TINY)
  assert clf_lib.cache_path(TINY, tmp_path) == os.path.join(tmp_path, "classifier",
                                                            f"fashion_mnist-{key}")
  monkeypatch.setenv(clf_lib.CACHE_ENV, str(tmp_path / "env"))
  assert clf_lib.cache_path(TINY).startswith(str(tmp_path / "env"))
  monkeypatch.delenv(clf_lib.CACHE_ENV)
  assert clf_lib.cache_path(TINY).startswith(os.path.expanduser("~/.cache/aigc_jax/"))


def test_to_input():
  x = np.array([[[0, 255], [51, 102]]], np.uint8)
  out = net_lib.to_input(x)
  assert out.shape == (1, 2, 2, 1) and out.dtype == np.float32
  np.testing.assert_allclose(out[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
  np.testing.assert_array_equal(net_lib.to_input(out), out)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    net_lib.to_input(out * 2 - 1)


@pytest.mark.slow
def test_train_then_features_shapes_and_cache_files(trained):
  cache, clf, feats = trained
  assert feats.shape == (30, 16) and feats.dtype == np.float32 and np.isfinite(feats).all()
  logits = clf.logits(eval_images())
  assert logits.shape == (30, 10) and logits.dtype == np.float32
  assert clf.test_accuracy > 0.5  # easy synthetic classes: far above chance after one epoch
  path = clf_lib.cache_path(TINY, cache)
  assert clf.path == path and sorted(os.listdir(path)) == ["info.json", "params.npz"]
  with open(os.path.join(path, "info.json")) as f:
    info = json.load(f)
  assert info["key"] == net_lib.recipe_key(TINY) and info["test_accuracy"] == clf.test_accuracy
  assert info[clf_lib.PARAMS_SHA256] == clf_lib.params_digest(clf.variables)
  # Padded fixed-size batches: a prefix alone gives the same features.
  np.testing.assert_allclose(clf.features(eval_images(3)), feats[:3], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"takes \(28, 28, 1\) images"):
    clf.features(np.zeros((2, 32, 32, 1), np.uint8))
  probs = clf.probs(eval_images())
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-9)


def test_second_call_loads_from_the_cache(trained, monkeypatch):
  cache, clf, feats = trained
  monkeypatch.setattr(train_lib, "train", no_training)
  again = clf_lib.load_or_train(cache_dir=cache, recipe=TINY, progress=False)  # no_training: cached
  assert again.test_accuracy == clf.test_accuracy
  np.testing.assert_array_equal(again.features(eval_images()), feats)


def write_corrupt_cache(path, variables, corrupt):
  clf_lib.save(path, variables, {"key": net_lib.recipe_key(TINY), "test_accuracy": 0.5})
  params, info = os.path.join(path, "params.npz"), os.path.join(path, "info.json")
  if corrupt == "truncated_params":
    with open(params, "r+b") as f:
      f.truncate(os.path.getsize(params) // 2)
  elif corrupt == "garbage_info":
    with open(info, "w") as f:
      f.write("{not json")
  elif corrupt == "other_recipe_info":
    clf_lib.save(path, variables, {"key": "0123456789ab", "test_accuracy": 0.5})
  elif corrupt == "other_widths_params":
    other = net_lib.CNN((4, 8), dense_features=8).init(jax.random.PRNGKey(0),
                                                       np.zeros((1, 28, 28, 1)))
    clf_lib.save(path, other, {"key": net_lib.recipe_key(TINY), "test_accuracy": 0.5})
  elif corrupt == "nan_params":
    bad = jax.tree.map(lambda x: np.full_like(x, np.nan), variables)
    clf_lib.save(path, bad, {"key": net_lib.recipe_key(TINY), "test_accuracy": 0.5})


@pytest.mark.parametrize(
    "corrupt",
    ["truncated_params", "garbage_info", "other_recipe_info", "other_widths_params", "nan_params"])
def test_load_rejects_a_corrupt_cache(trained, tmp_path, corrupt):
  _, clf, feats = trained
  path = str(tmp_path / "entry")
  write_corrupt_cache(path, clf.variables, "none")
  np.testing.assert_array_equal(clf_lib.load(path, TINY).features(eval_images()), feats)
  write_corrupt_cache(path, clf.variables, corrupt)
  with pytest.raises(clf_lib.CacheError, match="unreadable"):
    clf_lib.load(path, TINY)


def test_corrupt_cache_retrains_with_a_warning(trained, tmp_path, monkeypatch, fake_data):
  _, clf, feats = trained
  write_corrupt_cache(clf_lib.cache_path(TINY, tmp_path), clf.variables, "truncated_params")
  calls = count_trainings(monkeypatch)
  with pytest.warns(RuntimeWarning, match="unreadable"):
    retrained = clf_lib.load_or_train(cache_dir=tmp_path, recipe=TINY, progress=False)
  assert calls == [1]
  # Training is deterministic: the retrained classifier is the one trained before.
  np.testing.assert_allclose(retrained.features(eval_images()), feats, rtol=1e-5, atol=1e-5)
  monkeypatch.setattr(train_lib, "train", no_training)  # and the repaired cache now loads
  assert clf_lib.load_or_train(cache_dir=tmp_path, recipe=TINY,
                               progress=False).test_accuracy == retrained.test_accuracy


def test_evaluate_samples_and_floors(trained):
  _, clf, _ = trained
  images, labels = synthetic_split("fashion_mnist", "test")
  kwargs = dict(kid_subsets=5, kid_subset_size=100, is_splits=2)
  same = sm_lib.evaluate_samples(clf, images[:250], clf.features(images[:250]), labels[:250],
                                 **kwargs)
  assert set(same) == {"fid", "kid", "kid_std", "precision", "recall", "is", "is_std", "label_acc"}
  assert abs(same["fid"]) < 1e-3 and same["precision"] == same["recall"] == 1.0
  assert same["label_acc"] == pytest.approx(
      np.mean(clf.logits(images[:250]).argmax(1) == labels[:250]))
  assert 1.0 <= same["is"] <= 10.0
  # Real vs noise: every distance is far worse than the floor of real vs real.
  real = clf.features(images[250:])
  noise = np.random.default_rng(0).integers(0, 256, (250, 28, 28, 1)).astype(np.uint8)
  bad = sm_lib.evaluate_samples(clf, noise, real, **kwargs)
  assert "label_acc" not in bad
  floor = sm_lib.floors(clf, images[:250], real, labels[:250], num_train=200, **kwargs)
  assert bad["fid"] > 5 * floor["fid"] and bad["kid"] > 5 * floor["kid"]
  assert bad["precision"] < floor["precision"]
  with pytest.raises(ValueError, match=r"classifier.features\(real_images\)"):
    sm_lib.evaluate_samples(clf, noise, images[250:], **kwargs)  # images, not features


def test_floors_are_cached_beside_the_classifier(trained, tmp_path, monkeypatch):
  _, clf, _ = trained
  images, labels = synthetic_split("fashion_mnist", "test")
  train_images, real = images[:300], clf.features(images[300:])
  kwargs = dict(kid_subsets=5, kid_subset_size=100, is_splits=2)
  local = net_lib.Classifier(clf.model, clf.variables, clf.test_accuracy, clf.recipe, str(tmp_path))
  first = sm_lib.floors(local, train_images, real, labels[:300], num_train=200, **kwargs)
  # Computed exactly as a model's metrics: evaluate_samples of the same-size train subset.
  idx = np.sort(np.random.default_rng(0).choice(300, 200, replace=False))
  assert first == sm_lib.evaluate_samples(clf, train_images[idx], real, labels[idx], **kwargs)
  [cached] = [name for name in os.listdir(tmp_path) if name.startswith("floors-")]

  def no_features(*args, **kwargs):
    raise AssertionError("recomputed floors that are cached")

  with monkeypatch.context() as mp:
    mp.setattr(net_lib.Classifier, "features_and_logits", no_features)
    assert sm_lib.floors(local, train_images, real, labels[:300], num_train=200, **kwargs) == first
  # Another size, other real features or other options: other entries, other values.
  fewer = sm_lib.floors(local, train_images, real, labels[:300], num_train=100, **kwargs)
  assert fewer != first
  sm_lib.floors(local, train_images, real[:150], labels[:300], num_train=200, **kwargs)
  sm_lib.floors(local, train_images, real, num_train=200, **kwargs)
  assert len([n for n in os.listdir(tmp_path) if n.startswith("floors-")]) == 4
  # A corrupt entry is recomputed with a warning.
  with open(tmp_path / cached, "w") as f:
    f.write("{not json")
  with pytest.warns(RuntimeWarning, match="unreadable"):
    assert sm_lib.floors(local, train_images, real, labels[:300], num_train=200, **kwargs) == first


def scaled_mean(variables, factor=1.5):
  """`variables` with the first BatchNorm mean times `factor`, flattened with '/'."""
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables, sep="/").items()}
  mean = next(k for k in sorted(flat) if k.startswith("batch_stats/") and k.endswith("/mean"))
  return {**flat, mean: flat[mean] * factor}


@pytest.mark.parametrize("edit", ["batchnorm_mean_resaved", "digest_dropped"])
def test_params_that_do_not_match_their_digest_are_retrained(trained, tmp_path, monkeypatch, edit):
  _, clf, feats = trained
  path = clf_lib.cache_path(TINY, tmp_path)
  clf_lib.save(path, clf.variables, {"key": net_lib.recipe_key(TINY), "test_accuracy": 0.5})
  if edit == "batchnorm_mean_resaved":  # a well-formed npz: only the digest tells
    np.savez(os.path.join(path, "params.npz"), **scaled_mean(clf.variables))
  else:  # as an entry cached before entries had a digest
    with open(os.path.join(path, "info.json")) as f:
      info = json.load(f)
    del info[clf_lib.PARAMS_SHA256]
    with open(os.path.join(path, "info.json"), "w") as f:
      json.dump(info, f)
  with pytest.raises(clf_lib.CacheError, match="params.npz does not match the params_sha256"):
    clf_lib.load(path, TINY)
  calls = []

  def stub_train(recipe, progress=True):
    calls.append(recipe)
    return clf.variables, {
        "key": net_lib.recipe_key(TINY), "test_accuracy": 0.75, "train_seconds": 0.0
    }

  monkeypatch.setattr(train_lib, "train", stub_train)
  with pytest.warns(RuntimeWarning, match="does not match the params_sha256.*; retraining"):
    retrained = clf_lib.load_or_train(cache_dir=tmp_path, recipe=TINY, progress=False)
  assert len(calls) == 1 and retrained.test_accuracy == 0.75
  reloaded = clf_lib.load(path, TINY)  # the rewritten entry verifies
  assert reloaded.test_accuracy == 0.75
  np.testing.assert_array_equal(reloaded.features(eval_images()), feats)


def test_edited_floors_are_recomputed_and_another_classifier_misses_them(trained, tmp_path):
  _, clf, _ = trained
  images, labels = synthetic_split("fashion_mnist", "test")
  args = (images[:300], clf.features(images[300:]), labels[:300])
  kwargs = dict(num_train=200, kid_subsets=5, kid_subset_size=100, is_splits=2)
  local = net_lib.Classifier(clf.model, clf.variables, clf.test_accuracy, clf.recipe, str(tmp_path))
  true = sm_lib.floors(local, *args, **kwargs)
  [entry] = [tmp_path / n for n in os.listdir(tmp_path) if n.startswith("floors-")]
  saved = json.loads(entry.read_text())
  edited_fid = saved["floors"]["fid"] * 1.5 + 1.0
  entry.write_text(json.dumps({**saved, "floors": {**saved["floors"], "fid": edited_fid}}))
  with pytest.warns(RuntimeWarning, match="does not match the sha256.*recomputing"):
    assert sm_lib.floors(local, *args, **kwargs) == true
  assert json.loads(entry.read_text()) == saved  # and written again
  entry.write_text(json.dumps(true))  # as cached before entries had a sha256
  with pytest.warns(RuntimeWarning, match="does not match the sha256"):
    assert sm_lib.floors(local, *args, **kwargs) == true
  # A classifier with one BatchNorm mean x1.5 has its own floors, never these.
  edited = net_lib.Classifier(clf.model,
                              traverse_util.unflatten_dict(scaled_mean(clf.variables), sep="/"),
                              clf.test_accuracy, clf.recipe, str(tmp_path))
  assert sm_lib.floors(edited, *args, **kwargs)["fid"] != true["fid"]
  assert len([n for n in os.listdir(tmp_path) if n.startswith("floors-")]) == 2
