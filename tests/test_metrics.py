"""FID, KID, precision/recall, IS and label accuracy against closed forms and brute force."""

import warnings

import numpy as np
import pytest

from aigc_jax.metrics import fid as fid_lib
from aigc_jax.metrics import inception_score as is_lib
from aigc_jax.metrics import kid as kid_lib
from aigc_jax.metrics import precision_recall as pr_lib


def gaussian(n, mean, std, seed):
  rng = np.random.default_rng(seed)
  return np.asarray(mean) + rng.normal(size=(n, len(mean))) * np.asarray(std)


def random_rotation(d, seed):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
  return q


def closed_form_diagonal(mu1, var1, mu2, var2):
  mu1, var1, mu2, var2 = map(np.asarray, (mu1, var1, mu2, var2))
  return np.sum((mu1 - mu2)**2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))


def test_fid_of_a_set_with_itself_is_zero():
  x = gaussian(3000, np.arange(8.0), np.linspace(0.5, 3.0, 8), seed=0) @ random_rotation(8, 1)
  scale = np.trace(np.cov(x, rowvar=False))
  assert abs(fid_lib.fid(x, x)) < 1e-6 * scale


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
  mu1, var1 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 4.0, 0.25])
  mu2, var2 = np.array([1.0, 1.0, 0.0]), np.array([9.0, 1.0, 0.25])
  expected = closed_form_diagonal(mu1, var1, mu2, var2)  # 5 + (1+9-6) + (4+1-4) + 0 = 10
  assert expected == pytest.approx(10.0)
  got = fid_lib.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
  assert got == pytest.approx(expected, rel=1e-10)
  # A common rotation of both Gaussians (non-diagonal covariances) leaves the distance unchanged.
  q = random_rotation(3, 0)
  got = fid_lib.frechet_distance(q @ mu1, q @ np.diag(var1) @ q.T, q @ mu2, q @ np.diag(var2) @ q.T)
  assert got == pytest.approx(expected, rel=1e-8)


def test_fid_of_large_samples_approaches_the_closed_form():
  mu1, std1, mu2, std2 = [0.0, 0.0, 1.0, 2.0], [1.0, 2.0, 1.0, 0.5], [1.0, 0.0, 0.0,
                                                                      2.0], [1.0, 1.0, 3.0, 0.5]
  expected = closed_form_diagonal(mu1, np.square(std1), mu2, np.square(std2))
  got = fid_lib.fid(gaussian(50_000, mu1, std1, 0), gaussian(50_000, mu2, std2, 1))
  assert got == pytest.approx(expected, rel=0.03)


def test_fid_with_a_constant_feature_is_finite():
  x, y = gaussian(500, [0.0] * 4, [1.0] * 4, 0), gaussian(500, [0.5] * 4, [1.0] * 4, 1)
  x[:, 0] = y[:, 0] = 0.0  # a dead feature: singular covariances
  with warnings.catch_warnings():  # scipy: "Matrix is singular"
    warnings.simplefilter("ignore")
    value = fid_lib.fid(x, y)
    same = fid_lib.fid(x, x)
  assert np.isfinite(value) and value > 0.3
  assert abs(same) < 1e-3


def test_fid_rejects_bad_shapes():
  with pytest.raises(ValueError, match="shapes"):
    fid_lib.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
  with pytest.raises(ValueError, match="N >= 2"):
    fid_lib.fid(np.zeros((1, 2)), np.zeros((5, 2)))


def brute_force_mmd2(x, y):
  """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by explicit loops."""
  d, m = x.shape[1], len(x)

  def k(a, b):
    return (a @ b / d + 1.0)**3

  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
  return xx + yy - 2 * xy


def test_kid_matches_a_brute_force_unbiased_mmd():
  x, y = gaussian(12, [0.0] * 3, [1.0] * 3, 0), gaussian(12, [0.5] * 3, [2.0] * 3, 1)
  mean, std = kid_lib.kid(x, y, num_subsets=3, subset_size=12)  # full sets: no sampling noise
  scale = np.abs(kid_lib.cubic_kernel(np.concatenate([x, y]), np.concatenate([x, y]))).mean()
  assert abs(mean - brute_force_mmd2(x, y)) < 1e-6 * scale  # float32 on the device
  assert std == 0.0


def numpy_kid(a, b, num_subsets, subset_size, seed=0):
  """KID as computed before it moved to the device: float64 numpy, the same subsets."""
  rng, m, mmds = np.random.default_rng(seed), min(subset_size, len(a), len(b)), []
  for _ in range(num_subsets):
    x = a[rng.choice(len(a), m, replace=False)]
    y = b[rng.choice(len(b), m, replace=False)]
    kxx, kyy, kxy = (kid_lib.cubic_kernel(u, v) for u, v in ((x, x), (y, y), (x, y)))
    mmds.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) -
                2.0 * kxy.mean())
  return np.mean(mmds), np.std(mmds)


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.5])
def test_kid_on_the_device_matches_the_float64_formula(shift):
  a = gaussian(700, [0.0] * 64, [1.0] * 64, 0)
  b = gaussian(500, [shift] * 64, [1.0] * 64, 1)
  expected = numpy_kid(a, b, num_subsets=7, subset_size=300, seed=5)
  got = kid_lib.kid(a, b, num_subsets=7, subset_size=300, seed=5)
  # Kernel values are ~1 here: float32 sums of k - 1 keep ~1e-8 of that scale.
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
  assert got[1] > 1e-4  # different subsets: a real spread, not one subset repeated


def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted_sets():
  data = gaussian(2000, [0.0] * 8, [1.0] * 8, 0)
  same, same_std = kid_lib.kid(data[:1000], data[1000:], num_subsets=20, subset_size=500)
  shifted, shifted_std = kid_lib.kid(data[:1000], data[1000:] + 0.5, num_subsets=20,
                                     subset_size=500)
  assert shifted > 10 * max(abs(same), shifted_std)
  assert abs(same) < 3 * same_std  # unbiased: zero within its spread over subsets
  assert kid_lib.kid(data[:1000], data[1000:], num_subsets=2,
                     seed=3) == kid_lib.kid(data[:1000], data[1000:], num_subsets=2, seed=3)


def brute_force_radii(x, k):
  return np.sort(((x[:, None] - x[None])**2).sum(-1), axis=1)[:, k]


def brute_force_precision_recall(real, fake, k):

  def dist(a, b):
    return np.linalg.norm(a[:, None] - b[None], axis=-1)

  real_r = np.sort(dist(real, real), axis=1)[:, k]
  fake_r = np.sort(dist(fake, fake), axis=1)[:, k]
  d = dist(real, fake)
  return (d <= real_r[:, None]).any(0).mean(), (d <= fake_r[None, :]).any(1).mean()


def test_precision_recall_in_chunks_matches_brute_force(monkeypatch):
  real, fake = gaussian(300, [0.0] * 3, [1.0] * 3, 0), gaussian(200, [0.7] * 3, [1.0] * 3, 1)
  expected = brute_force_precision_recall(real, fake, k=3)
  monkeypatch.setattr(pr_lib, "_CHUNK", 7)  # many ragged chunks
  got = pr_lib.precision_recall(real, fake, k=3)
  np.testing.assert_allclose(got, expected)
  assert 0.5 < got[0] < 0.99 and 0.5 < got[1] < 0.99  # a non-trivial case


def test_kth_smallest_counts_repeated_values_like_a_sort():
  rng = np.random.default_rng(0)
  d = rng.integers(0, 4, size=(50, 9)).astype(np.float32)  # many ties
  d[0] = 0.0
  for k in (0, 3, 5, 8):
    np.testing.assert_array_equal(pr_lib.kth_smallest(d, k), np.sort(d, axis=1)[:, k])


def test_precision_recall_of_repeated_fakes_matches_brute_force():
  real = gaussian(120, [0.0] * 3, [1.0] * 3, 0)
  fake = np.repeat(gaussian(30, [0.3] * 3, [1.0] * 3, 1), 4, axis=0)  # each fake 4 times
  assert np.all(pr_lib.knn_radii(fake, k=3) < 1e-5)  # 3 copies at distance ~0 (rounding)
  np.testing.assert_allclose(pr_lib.knn_radii(fake, k=5), brute_force_radii(fake, 5), rtol=1e-5)
  expected = brute_force_precision_recall(real, fake, k=5)
  np.testing.assert_allclose(pr_lib.precision_recall(real, fake, k=5), expected)
  assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0


def test_precision_recall_identical_and_disjoint_sets():
  x = gaussian(500, [0.0] * 8, [1.0] * 8, 0)
  assert pr_lib.precision_recall(x, x) == (1.0, 1.0)
  assert pr_lib.precision_recall(x, x + 100.0) == (0.0, 0.0)


def test_precision_recall_when_the_fakes_cover_half_the_modes():
  centers = 50.0 * np.eye(4)  # 4 well-separated modes in 4-d
  real = np.concatenate([gaussian(500, c, [1.0] * 4, i) for i, c in enumerate(centers)])
  fake = np.concatenate([gaussian(500, c, [1.0] * 4, 10 + i) for i, c in enumerate(centers[:2])])
  precision, recall = pr_lib.precision_recall(real, fake, k=5)
  assert precision > 0.95
  assert 0.45 < recall <= 0.5


def one_hot_probs(labels, num_classes, smooth=0.0):
  p = np.full((len(labels), num_classes), smooth / num_classes)
  p[np.arange(len(labels)), labels] += 1.0 - smooth
  return p


def test_inception_score_of_confident_uniform_and_single_class_predictions():
  labels = np.arange(1000) % 10  # every split sees all classes equally often
  mean, std = is_lib.inception_score(one_hot_probs(labels, 10), num_splits=10)
  assert mean == pytest.approx(10.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
  assert is_lib.inception_score(one_hot_probs(labels, 10,
                                              smooth=0.01))[0] == pytest.approx(10.0, rel=0.1)
  mean, _ = is_lib.inception_score(one_hot_probs(np.zeros(1000, int), 10, smooth=0.01))
  assert mean == pytest.approx(1.0, abs=1e-9)
  uniform = np.full((100, 10), 0.1)  # unsure about everything: also 1
  assert is_lib.inception_score(uniform, num_splits=2)[0] == pytest.approx(1.0)


def test_inception_score_rejects_logits():
  with pytest.raises(ValueError, match="probabilities"):
    is_lib.inception_score(np.random.default_rng(0).normal(size=(100, 10)))


def test_label_accuracy():
  logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.0, 1.0]])
  assert is_lib.label_accuracy(logits, [0, 1, 1, 1]) == 0.75
  with pytest.raises(ValueError):
    is_lib.label_accuracy(logits, [0, 1])


def test_metric_sensitivity_variants_by_hand():
  """benchmarks/metric_sensitivity.py damages real images in the ways its table names."""
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).parent.parent / "benchmarks" / "metric_sensitivity.py"
  spec = importlib.util.spec_from_file_location("metric_sensitivity", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  images = np.zeros((2000, 4, 4, 1), np.uint8)
  images[:, 0, 0] = 40  # one bright pixel in each top-left 2x2 block
  out = module.variants(images)
  assert all(v.shape == images.shape for v in out.values())
  np.testing.assert_array_equal(out["real train images (the floor)"], images)
  np.testing.assert_allclose(out["2x2 block average"][0, :2, :2, 0], 10.0)
  np.testing.assert_allclose(out["2x2 block average"][0, 2:, 2:, 0], 0.0)
  np.testing.assert_allclose(out["brightness x 0.9"][0, 0, 0, 0], 36.0)
  noise = out["pixel noise, std 10/255"] - images
  assert abs(noise.std() - 10.0) < 0.2 and abs(noise.mean()) < 0.2
  blurred = out["gaussian blur, sigma 0.5 px"]
  assert blurred[0, 0, 0, 0] < 40 and blurred[0, 0, 1, 0] > 0  # the bright pixel spreads
  np.testing.assert_allclose(blurred.sum(axis=(1, 2, 3)), 40.0, rtol=0.05)  # ~mass-preserving


def test_metrics_import_only_the_data_module_of_the_project():
  """aigc_jax.metrics sits below the training loop: it imports aigc_jax.data, aigc_jax.progress
  (which imports nothing of the project) and itself only."""
  import ast
  import pathlib
  package = pathlib.Path(fid_lib.__file__).parent
  for path in sorted(package.glob("*.py")):
    imported = []
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        imported += [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        imported += [f"{node.module}.{alias.name}" for alias in node.names]
    for name in imported:
      if name.startswith("aigc_jax"):
        assert name.startswith(
            ("aigc_jax.data", "aigc_jax.progress", "aigc_jax.metrics")), (path.name, name)
