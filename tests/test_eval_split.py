"""A split evaluated in whole batches, shared out between processes."""

import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import data
from aigc_jax import eval_split
from aigc_jax.families import sample_eval


@pytest.fixture(name="small_data")
def fixture_small_data():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (23, 4, 4, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, 23).astype(np.int32)
  return images, labels, data.to_device(images, labels)


@pytest.mark.parametrize("bs", [1, 5, 23, 40])
def test_batches_cover_everything_once(small_data, bs):
  images, labels, d = small_data
  indexed = list(eval_split.batches(d, bs, scale="minus_one_one"))
  assert [i for i, _ in indexed] == list(range(-(-23 // bs)))
  batches = [b for _, b in indexed]
  for b in batches:
    assert set(b) == {"image", "label", "mask"}
    assert b["image"].shape == (bs, 4, 4, 1) and b["mask"].dtype == jnp.float32
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 23 and set(np.unique(mask)) <= {0.0, 1.0}
  real = mask == 1
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[real], labels)
  imgs = np.concatenate([b["image"] for b in batches])[real]
  np.testing.assert_allclose(imgs, images / 127.5 - 1.0, atol=1e-6)


@pytest.mark.parametrize("size, bs, count", [(23, 5, 2), (23, 5, 3), (100, 50, 2), (7, 5, 4),
                                             (10_000, 1000, 3)])
def test_process_rows_are_whole_batches_in_order_covering_the_split(size, bs, count):
  shares = [eval_split.process_rows(size, bs, p, count) for p in range(count)]
  assert shares[0][0] == 0 and shares[-1][1] == size
  assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))  # contiguous, in process order
  assert all(start % bs == 0 or start == size for start, _ in shares)
  per = -(-(-(-size // bs)) // count) * bs  # an equal share of whole batches
  assert all(stop - start <= per for start, stop in shares)


def test_the_processes_shares_give_the_batches_of_the_whole(small_data):
  images, labels, whole = small_data
  expected = list(eval_split.batches(whole, 5))
  got = []
  for p in range(3):
    start, stop = eval_split.process_rows(23, 5, p, 3)
    part = eval_split.EvalData(*data.to_device(images[start:stop], labels[start:stop]), start, 23)
    assert eval_split.split_size(part) == 23
    got += list(eval_split.batches(part, 5))
  assert [i for i, _ in got] == [i for i, _ in expected]
  for (_, a), (_, b) in zip(got, expected):  # the same rows; padding (mask 0) may differ
    np.testing.assert_array_equal(a["mask"], b["mask"])
    real = np.asarray(a["mask"]) == 1
    for key in ("image", "label"):
      np.testing.assert_array_equal(np.asarray(a[key])[real], np.asarray(b[key])[real])
  with pytest.raises(ValueError, match="do not start a batch"):
    next(eval_split.batches(eval_split.EvalData(images[3:], labels[3:], 3, 23), 5))


def test_totals_add_every_row_once(small_data):
  _, labels, d = small_data

  def sums(index, batch):
    return {
        "labels": jnp.sum(batch["mask"] * batch["label"]), "count": jnp.sum(batch["mask"]),
        "index": index
    }

  totals = eval_split.totals(d, 5, "zero_one", sums, ("labels", "count", "index"))
  assert totals == {"labels": float(labels.sum()), "count": 23.0, "index": 0 + 1 + 2 + 3 + 4}


def test_a_test_split_too_small_to_score_is_one_line():
  small = eval_split.EvalData(np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4, np.int32), 0, 4)
  with pytest.raises(
      data.DataError, match="the test split has 4 images, and the sample "
      "metrics need at least 10"):
    sample_eval._num_samples(2000, small)  # pylint: disable=protected-access
  whole = eval_split.EvalData(np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4, np.int32), 0, 64)
  assert sample_eval._num_samples(2000, whole) == 64  # pylint: disable=protected-access
