"""Sample grids: a row per class, capped columns, and the unconditional square."""

import numpy as np

from aigc_jax import writers


def labelled_sampler(num_classes):
  """Each image is filled with the label it was asked for (arange(num) % num_classes)."""
  def sample(num):
    labels = np.arange(num) % num_classes
    return np.broadcast_to(labels[:, None, None, None], (num, 2, 2, 1)).astype(np.float32), labels
  return sample


def test_conditional_grid_has_a_row_per_class_and_at_most_max_columns():
  for num_classes, columns in ((3, 3), (25, 10)):
    images, ncols = writers.sample_grid(labelled_sampler(num_classes), 64, num_classes)
    assert ncols == columns and images.shape == (num_classes * columns, 2, 2, 1)
    rows = images[:, 0, 0, 0].reshape(num_classes, columns)
    np.testing.assert_array_equal(rows, np.repeat(np.arange(num_classes)[:, None], columns, 1))


def test_unconditional_grid_is_about_square():
  images, ncols = writers.sample_grid(labelled_sampler(1), 10)
  assert images.shape[0] == 10 and ncols == 4
