"""Balanced k-means pseudo-labels: the greedy capacity assignment and the recovered clusters."""

import numpy as np
import pytest

from aigc_jax import clusters


def test_balanced_assign_by_hand():
  """Every row is nearest to cluster 0, which has room for two: the two nearest rows (3 and 1)
  get it and the others go to cluster 1."""
  distances = np.array([[1.0, 9.0], [0.5, 2.0], [3.0, 4.0], [0.1, 8.0]])
  np.testing.assert_array_equal(clusters.balanced_assign(distances, np.array([2, 2])), [1, 0, 1, 0])
  with pytest.raises(ValueError, match="sum to 3"):
    clusters.balanced_assign(distances, np.array([2, 1]))


def test_balanced_kmeans_recovers_equal_blobs_and_balances_unequal_ones():
  rng = np.random.default_rng(0)
  means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  truth = np.repeat(np.arange(3), 40)
  x = means[truth] + rng.normal(size=(120, 2))
  ids = clusters.balanced_kmeans(x, 3)
  assert ids.dtype == np.int32 and sorted(np.bincount(ids)) == [40, 40, 40]
  for j in range(3):  # each found cluster is one blob, whatever its number
    assert len(set(truth[ids == j])) == 1
  # 60 / 30 / 30 points into 3 clusters: still 40 each (the big blob is split)
  lopsided = means[np.repeat([0, 1, 2], [60, 30, 30])] + rng.normal(size=(120, 2))
  assert sorted(np.bincount(clusters.balanced_kmeans(lopsided, 3))) == [40, 40, 40]
  with pytest.raises(ValueError, match="1 <= k"):
    clusters.balanced_kmeans(x, 0)


def test_pixel_clusters_are_deterministic_and_uneven_counts_differ_by_one():
  images = np.random.default_rng(1).integers(0, 256, (23, 4, 4, 1), dtype=np.uint8)
  ids = clusters.pixel_clusters(images, 5, seed=3)
  np.testing.assert_array_equal(ids, clusters.pixel_clusters(images, 5, seed=3))
  assert sorted(np.bincount(ids, minlength=5)) == [4, 4, 5, 5, 5]


def test_workdir_clusters_are_saved_once_and_read_back(tmp_path):
  images = np.random.default_rng(2).integers(0, 256, (12, 4, 4, 1), dtype=np.uint8)
  ids = clusters.workdir_clusters(str(tmp_path), images, 3)
  saved = tmp_path / clusters.FILENAME
  np.testing.assert_array_equal(np.load(saved), ids)
  np.save(saved, (ids + 1) % 3)  # a resumed run takes the saved ids, not a new clustering
  np.testing.assert_array_equal(clusters.workdir_clusters(str(tmp_path), images, 3), (ids + 1) % 3)
  with pytest.raises(clusters.DataError, match="use a new workdir"):
    clusters.workdir_clusters(str(tmp_path), images[:10], 3)
  other = tmp_path / "other"
  clusters.workdir_clusters(str(other), images, 3, write=False)
  assert not other.exists()


def test_kmeans_plus_plus_seeding_survives_identical_rows():
  ids = clusters.balanced_kmeans(np.ones((6, 2)), 3)
  assert sorted(np.bincount(ids)) == [2, 2, 2]
