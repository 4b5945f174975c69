"""The Inception-V3 port against pytorch-fid and clean-fid (on the CPU, random weights), the
weights file, and `evaluate --metric_net inception` and `fid_stats` end to end.

Random weights give features that hardly depend on the image (their spread is ~1e-7 of their
mean), so the reference's BatchNorm statistics are first calibrated: a train-mode pass with
cumulative averages (momentum None), then eval mode. The BatchNorm biases are drawn around +0.5
(most ReLUs pass): float32 rounding differences then grow ~10x less through the 94 layers than
with biases around 0, while the features of different images still differ by ~15%.
"""

import importlib
import json
import os
import subprocess
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.metrics import classifier as clf_lib
from aigc_jax.metrics import fid as fid_lib
from aigc_jax.metrics import inception
from aigc_jax.metrics import inception_resize
from aigc_jax.metrics import inception_weights
from conftest import needs_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4  # relative: max |ours - reference| / max |reference|
NUM = 6  # images compared at 299x299
RESIZE_TOL = 2e-6  # absolute, in [0, 1]: float32 rounding, measured up to 3e-7 of 1
_torchvision_ops = []  # the operator declarations made for torchvision (`import_torchvision`)


def import_torchvision():
  """torchvision, or a skip. PyPI's torchvision wheel beside a CPU build of torch cannot load its
  C++ operators and then fails at import on two operators it declares 'fake' implementations
  for; they are declared first (pytorch-fid's network uses none of them)."""
  torch = pytest.importorskip("torch")
  try:
    return importlib.import_module("torchvision")
  except ImportError:
    pytest.skip("torchvision is not installed")
  except RuntimeError as e:
    if "torchvision::" not in str(e):
      raise
  for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
    del sys.modules[name]
  library = torch.library.Library("torchvision", "DEF")
  for op in ("nms", "qnms"):
    library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
  _torchvision_ops.append(library)
  return importlib.import_module("torchvision")


def make_images(seed: int, n: int, size=(32, 32), channels: int = 3) -> np.ndarray:
  """uint8 (n, H, W, C): random 4x4 colour fields upsampled (smooth), plus pixel noise."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (n, 4, 4, channels))
  rows = inception_resize.bilinear_matrix(4, size[0])
  cols = inception_resize.bilinear_matrix(4, size[1])
  smooth = np.einsum("hi,niwc,jw->nhjc", rows, coarse, cols)
  noise = rng.normal(0, 20, smooth.shape)
  return np.clip(smooth + noise, 0, 255).round().astype(np.uint8)


def torch_input(torch, images: np.ndarray):
  """uint8 (N, H, W, C) -> pytorch-fid's network input: float NCHW in [0, 1]."""
  return torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def random_state_dict(torch, torchvision) -> dict:
  """A state dict of pytorch-fid's network: torchvision's default initialisation (seeded), with
  BatchNorm scales in [0.5, 1.5) and biases N(0.5, 0.1)."""
  torch.manual_seed(0)
  model = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                          init_weights=False)
  state = model.state_dict()
  generator = torch.Generator().manual_seed(1)
  for key, value in state.items():
    if key.endswith("bn.weight"):
      state[key] = 0.5 + torch.rand(value.shape, generator=generator)
    elif key.endswith("bn.bias"):
      state[key] = 0.5 + 0.1 * torch.randn(value.shape, generator=generator)
  return state


def calibrate(torch, net, x) -> None:
  """BatchNorm running statistics of `net` := the cumulative averages over the batch `x`."""
  for module in net.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.reset_running_stats()
      module.momentum = None
  net.train()
  with torch.no_grad():
    net(x)
  net.eval()


@pytest.fixture(name="reference", scope="module")
def fixture_reference():
  """pytorch-fid's network (its own classes, the weight download replaced by a random state
  dict, BatchNorm calibrated): its calibrated state dict and its pool features and logits of
  `images`."""
  torch = pytest.importorskip("torch")
  torchvision = import_torchvision()
  pf = pytest.importorskip("pytorch_fid.inception")
  nn_f = torch.nn.functional
  state = random_state_dict(torch, torchvision)
  images = make_images(0, NUM)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(pf, "load_state_dict_from_url", lambda *args, **kwargs: state)
    net = pf.fid_inception_v3()
    x = nn_f.interpolate(torch_input(torch, make_images(1, 8)), size=(299, 299), mode="bilinear",
                         align_corners=False)
    calibrate(torch, net, 2 * x - 1)
    calibrated = net.state_dict()
    patch.setattr(pf, "load_state_dict_from_url", lambda *args, **kwargs: calibrated)
    model = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
  with torch.no_grad():
    features = model(torch_input(torch, images))[0][:, :, 0, 0].numpy()
    x = nn_f.interpolate(torch_input(torch, images), size=(299, 299), mode="bilinear",
                         align_corners=False)
    logits = net(2 * x - 1).numpy()
  return types.SimpleNamespace(torch=torch, state=calibrated, images=images, features=features,
                               logits=logits,
                               variables=inception.variables_from_state_dict(calibrated))


@pytest.fixture(name="ours", scope="module")
def fixture_ours(reference):
  """The port's (features, logits) of the reference's images, from the converted state dict."""
  return inception.Inception(reference.variables,
                             batch_size=NUM).features_and_logits(reference.images)


def relative_error(ours, reference) -> float:
  return float(np.abs(np.asarray(ours) - reference).max() / np.abs(reference).max())


def test_calibrated_features_differ_between_images_far_beyond_the_tolerance(reference):
  feats = reference.features
  spread = np.abs(feats - feats.mean(axis=0)).mean() / np.abs(feats).mean()
  assert spread > 1000 * TOL, spread


def test_pool_features_and_logits_match_pytorch_fid(reference, ours):
  features, logits = ours
  assert features.shape == (NUM, 2048) and logits.shape == (NUM, 1008)
  assert relative_error(features, reference.features) < TOL
  assert relative_error(logits, reference.logits) < TOL


FAULTS = {
    "bn_epsilon_1e-5": dict(model=inception.FIDInceptionV3(bn_epsilon=1e-5)),
    "pool_padding_counted": dict(model=inception.FIDInceptionV3(pool_counts_padding=True)),
    "clean_resize_for_bilinear": dict(resize="clean"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_planted_fault_breaks_the_agreement(reference, fault):
  net = inception.Inception(reference.variables, batch_size=NUM, **FAULTS[fault])
  assert relative_error(net.features(reference.images), reference.features) > 10 * TOL


def test_fid_matches_pytorch_fid(reference, ours):
  """On the first 256 of the 2048 features: pytorch-fid's general matrix square root of a 2048 x
  2048 product takes most of a minute on 2 cores, and the formula is the same at any size."""
  fid_score = pytest.importorskip("pytorch_fid.fid_score")
  half, dims = NUM // 2, 256
  ref = reference.features[:, :dims]
  expected = fid_score.calculate_frechet_distance(ref[:half].mean(0),
                                                  np.cov(ref[:half], rowvar=False),
                                                  ref[half:].mean(0),
                                                  np.cov(ref[half:], rowvar=False))
  got = fid_lib.fid(ours[0][:half, :dims], ours[0][half:, :dims])
  assert got == pytest.approx(expected, rel=1e-3) and expected > 0


SIZES = [(32, 32, 3), (28, 28, 1), (320, 410, 3), (299, 299, 3)]  # up, grey, down, same


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_bilinear_resize_matches_pytorch_fid(size):
  torch = pytest.importorskip("torch")
  images = make_images(2, 2, size[:2], size[2])
  expected = torch.nn.functional.interpolate(torch_input(torch, images), size=(299, 299),
                                             mode="bilinear", align_corners=False).numpy()
  ours = np.asarray(inception_resize.to_unit(jnp.asarray(images), "bilinear"))
  np.testing.assert_allclose(ours, np.broadcast_to(expected.transpose(0, 2, 3, 1), ours.shape),
                             rtol=0, atol=RESIZE_TOL)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_clean_resize_matches_clean_fid(size):
  pytest.importorskip("torch")
  import_torchvision()
  resize = pytest.importorskip("cleanfid.resize").make_resizer("PIL", False, "bicubic", (299, 299))
  images = make_images(3, 2, size[:2], size[2])
  expected = np.stack([resize(np.repeat(image, 3 // size[2], axis=-1)) for image in images])
  ours = 255 * np.asarray(inception_resize.to_unit(jnp.asarray(images), "clean"))
  np.testing.assert_allclose(ours, expected, rtol=0, atol=255 * RESIZE_TOL)


def test_the_two_resizes_differ_far_beyond_the_tolerances_above():
  images = jnp.asarray(make_images(4, 2))
  bilinear, clean = (inception_resize.to_unit(images, mode) for mode in inception_resize.MODES)
  assert float(jnp.abs(bilinear - clean).max()) > 1000 * RESIZE_TOL


def test_a_state_dict_of_another_network_is_refused(reference):
  state = {k: v.numpy() for k, v in reference.state.items()}
  assert inception.variables_from_state_dict(state)["params"]["fc"]["kernel"].shape == (2048, 1008)
  missing = {k: v for k, v in state.items() if k != "Mixed_7c.branch_pool.bn.running_var"}
  with pytest.raises(ValueError, match=r"missing 1 variables \['Mixed_7c.branch_pool.bn.var'\]"):
    inception.variables_from_state_dict(missing)
  with pytest.raises(ValueError, match="AuxLogits.fc.weight"):
    inception.variables_from_state_dict({**state, "AuxLogits.fc.weight": np.zeros((1008, 768))})
  wrong = {**state, "fc.weight": np.zeros((1000, 2048), np.float32)}
  with pytest.raises(ValueError, match=r"fc.kernel has shape \(2048, 1000\)"):
    inception.variables_from_state_dict(wrong)


class _Touch:
  """A pickled object whose unpickling would create a file."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, "w"))


def test_the_weights_file_is_read_without_running_pickled_code(tmp_path, reference):
  torch = reference.torch
  good = tmp_path / "good.pth"
  torch.save(reference.state, good)
  net = inception_weights.load(str(good), root=tmp_path / "cache")
  assert net.weights_sha256 == inception_weights.file_sha256(str(good))
  np.testing.assert_array_equal(net.variables["params"]["fc"]["bias"],
                                reference.state["fc.bias"].numpy())
  evil, marker = tmp_path / "evil.pth", tmp_path / "ran"
  torch.save({"fc.bias": _Touch(str(marker))}, evil)
  with pytest.raises(inception_weights.WeightsError, match="cannot read .* as a PyTorch state"):
    inception_weights.load(str(evil), root=tmp_path / "cache")
  assert not marker.exists()


def test_without_torch_the_error_is_one_line(tmp_path, monkeypatch):
  path = tmp_path / "w.pth"
  path.write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(inception_weights.WeightsError) as raised:
    inception_weights.read_state_dict(str(path))
  assert "needs PyTorch: pip install torch" in str(raised.value)
  assert len(str(raised.value).splitlines()) == 1


def test_the_download_keeps_only_the_published_file(tmp_path, monkeypatch):
  """Fetched once into the cache when its SHA-256 starts with the prefix; else nothing stays."""
  source = tmp_path / "mirror.pth"
  source.write_bytes(b"weights")
  monkeypatch.setenv(inception_weights.URL_ENV, source.as_uri())
  monkeypatch.delenv(inception_weights.WEIGHTS_ENV, raising=False)
  cache = tmp_path / "cache"
  with pytest.raises(inception_weights.WeightsError, match="not 6726825d...: it is not"):
    inception_weights.find(root=cache)
  assert not os.listdir(cache / "inception")
  monkeypatch.setattr(inception_weights, "SHA256_PREFIX",
                      inception_weights.file_sha256(str(source))[:8])
  found = inception_weights.find(root=cache)
  assert found == inception_weights.cache_file(cache) and os.listdir(
      cache / "inception") == [inception_weights.FILENAME]
  source.unlink()  # found in the cache from now on
  assert inception_weights.find(root=cache) == found


def test_weights_are_found_by_argument_then_variable_then_cache(tmp_path, monkeypatch):
  cache, given, env = tmp_path / "cache", tmp_path / "given.pth", tmp_path / "env.pth"
  os.makedirs(cache / "inception")
  for path in (given, env, inception_weights.cache_file(cache)):
    open(path, "wb").close()
  monkeypatch.setenv(inception_weights.WEIGHTS_ENV, str(env))
  assert inception_weights.find(str(given), root=cache) == str(given)
  assert inception_weights.find(root=cache) == str(env)
  monkeypatch.delenv(inception_weights.WEIGHTS_ENV)
  assert inception_weights.find(root=cache) == inception_weights.cache_file(cache)
  monkeypatch.setenv(inception_weights.WEIGHTS_ENV, str(tmp_path / "gone.pth"))
  with pytest.raises(inception_weights.WeightsError, match="AIGC_JAX_INCEPTION_WEIGHTS .*gone"):
    inception_weights.find(root=cache)


def run_module(module, *args, env=None):
  env = {k: v for k, v in os.environ.items() if k != inception_weights.WEIGHTS_ENV} | (env or {})
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=600, env=env)


def test_offline_missing_weights_is_one_error_line(tmp_path):
  path = tmp_path / "s.npz"
  np.savez(path, images=np.zeros((12, 28, 28), np.uint8))
  offline = {
      clf_lib.CACHE_ENV: str(tmp_path / "cache"),
      inception_weights.URL_ENV: (tmp_path / "unreachable.pth").as_uri()
  }
  done = run_module("aigc_jax.evaluate", "--samples", str(path), "--metric_net", "inception",
                    env=offline)
  assert done.returncode == 2, done.stderr[-2000:]
  [line] = done.stderr.strip().splitlines()
  cached = inception_weights.cache_file(tmp_path / "cache")
  assert line.startswith("error: no Inception weights") and f"at {cached}" in line, line
  assert inception_weights.WEIGHTS_ENV in line and inception_weights.URL in line


def test_statistics_files_of_the_references_load_as_they_are(tmp_path):
  from aigc_jax import evaluate  # pylint: disable=g-import-not-at-top  # absl flags
  rng = np.random.default_rng(0)
  mu, sigma = rng.normal(size=2048), np.eye(2048)
  np.savez_compressed(tmp_path / "ref.npz", mu=mu, sigma=sigma)  # as pytorch-fid, clean-fid
  got = evaluate.load_ref_stats(str(tmp_path / "ref.npz"))
  np.testing.assert_array_equal(got[0], mu)
  np.testing.assert_array_equal(got[1], sigma)
  np.savez(tmp_path / "small.npz", mu=mu[:128], sigma=sigma[:128, :128])
  with pytest.raises(evaluate.UsageError, match=r"not \(D,\) and \(D, D\) with D = 2048"):
    evaluate.load_ref_stats(str(tmp_path / "small.npz"))
  np.savez(tmp_path / "other.npz", mean=mu)
  with pytest.raises(evaluate.UsageError, match=r"holds \['mean'\], not `mu` and `sigma`"):
    evaluate.load_ref_stats(str(tmp_path / "other.npz"))


class _StubNet:
  """A stand-in for `inception.Inception`: 16-d features, 7 logits, of the images' pixels."""

  variables, path, resize, weights_sha256 = {}, None, "clean", "ab" * 32

  def features_and_logits(self, images):
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    return x[:, :16] + x[:, 16:32]**2 / 255, x[:, :7]

  def features(self, images):
    return self.features_and_logits(images)[0]


def test_a_workdir_evaluation_scores_with_the_network_it_is_given(monkeypatch):
  """`using_metric_net` around a family's full_evaluate: every metric on that network (the
  classifier is never loaded), keys naming it, no label_acc, FID against the reference."""
  from aigc_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from aigc_jax.families import sample_eval  # pylint: disable=g-import-not-at-top
  from aigc_jax.metrics import sample_metrics  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  test = types.SimpleNamespace(images=rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8),
                               labels=np.arange(40) % 10)
  train = rng.integers(0, 256, (60, 8, 8, 1), dtype=np.uint8), np.arange(60) % 10
  monkeypatch.setattr(data_lib, "load_config_split", lambda config, split: train)
  monkeypatch.setattr(sample_eval, "load_metric_net", lambda name, dataset, resize: _StubNet())
  monkeypatch.setattr(clf_lib, "load_or_train", lambda *a, **k: pytest.fail("classifier loaded"))

  def sample(state, key, num, use_ema=True):
    return rng.uniform(size=(num, 8, 8, 1)), np.zeros(num, np.int32)

  evaluator = sample_eval.SampleEvaluator(types.SimpleNamespace(dataset="fashion_mnist"), sample,
                                          conditional=True)
  stats = (np.zeros(16), np.eye(16))
  with sample_eval.using_metric_net("inception", "clean", stats):
    result = evaluator.full_evaluate(None, test, num_samples=30)
  assert {
      "fid[inception]", "fid_floor[inception]", "raw_fid[inception]", "is[inception]",
      "kid_std[inception]"
  } <= set(result) and not any("label_acc" in k for k in result)
  assert result["metric_net"] == "inception" and result["resize"] == "clean"
  assert result["num_samples"] == 30 and not {"fid", "is", "raw_fid"} & set(result)
  floor = sample_metrics.floors(_StubNet(), *train[:1],
                                _StubNet().features(test.images[:30]), num_train=30,
                                real_stats=stats)
  assert result["fid_floor[inception]"] == pytest.approx(floor["fid"], rel=1e-9)
  assert sample_eval._METRIC_NET.get()[0] == "classifier"  # pylint: disable=protected-access


@pytest.mark.slow
@needs_fashion_mnist
def test_fid_stats_and_evaluate_commands_with_random_weights(tmp_path, reference):
  """fid_stats of the first 10 test images, then evaluate of a file of those same images against
  that file: the same features twice, so FID ~ 0; the keys name the network."""
  from aigc_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  weights = tmp_path / "random.pth"
  reference.torch.save(reference.state, weights)
  env = {inception_weights.WEIGHTS_ENV: str(weights), clf_lib.CACHE_ENV: str(tmp_path / "c")}
  stats = tmp_path / "stats.npz"
  done = run_module("aigc_jax.fid_stats", "--dataset", "fashion_mnist", "--split", "test", "--num",
                    "10", "--out", str(stats), env=env)
  assert done.returncode == 0, done.stderr[-2000:]
  mu, sigma = fid_lib.load_stats(str(stats), dim=2048)
  samples = tmp_path / "s.npz"
  np.savez(samples, images=data_lib.load_split("fashion_mnist", "test")[0][:10, ..., 0])
  done = run_module("aigc_jax.evaluate", "--samples", str(samples), "--metric_net", "inception",
                    "--ref_stats", str(stats), env=env)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert "fid" not in result and "label_acc" not in result and result["num_samples"] == 10
  assert {
      "fid[inception]", "fid_floor[inception]", "kid[inception]", "precision[inception]",
      "is[inception]"
  } <= set(result)
  assert result["metric_net"] == "inception" and result["ref_stats"] == str(stats)
  assert result["fid_num_samples"] == 10 and result["resize"] == "bilinear"
  assert abs(result["fid[inception]"]) < 1e-3 * np.trace(sigma)
  assert result["fid_floor[inception]"] > 100 * abs(result["fid[inception]"])
  assert 1 <= result["is[inception]"] <= 1008 and mu.shape == (2048,)
