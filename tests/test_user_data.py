"""Datasets the user names: 'folder:PATH' and 'tfds:NAME[:SPLIT]', fitted to image_size and
channels, through the same calls as the built-in ones."""

import os

import numpy as np
import pytest
from PIL import Image

from aigc_jax import config as config_lib
from aigc_jax import data


def make_folder(root, n=20, size=(12, 20)):
  """`n` images in each of two class folders, plus one file that is not an image."""
  for c, value in (("a", 40), ("b", 200)):
    os.makedirs(root / c, exist_ok=True)
    for i in range(n):
      Image.fromarray(np.full(size + (3,), value + i, np.uint8)).save(root / c / f"{i:02d}.png")
  (root / "b" / "zz.png").write_bytes(b"not a png")
  return f"folder:{root}"


def test_a_folder_is_a_dataset_of_its_classes_at_the_asked_shape(tmp_path):
  name = make_folder(tmp_path)
  info = data.dataset_info(name, 8, 1)
  assert info.image_shape == (8, 8, 1) and info.num_classes == 2
  assert data.dataset_info(name).image_shape == (64, 64, 3)  # a folder's defaults
  kwargs = dict(image_size=8, channels=1, resize="area")
  assert data.split_size(name, "train", **kwargs) == 36  # 41 files: 37 train, one unusable
  assert data.split_size(name, "test", **kwargs) == 4  # every tenth file
  images, labels = data.load_split(name, "train", **kwargs)
  assert images.shape == (36, 8, 8, 1) and images.dtype == np.uint8
  assert list(labels) == [0] * 18 + [1] * 18
  assert [int(x.mean()) for x in images[:3]] == [40, 41, 42]  # flat images keep their value
  rows, _ = data.load_split(name, "train", rows=(18, 20), **kwargs)
  np.testing.assert_array_equal(rows, images[18:20])


def test_the_config_keys_choose_the_folder_and_its_shape(tmp_path):
  name = make_folder(tmp_path)
  config = config_lib.get_config("vae_mlp", dataset=name, image_size=8, channels=3)
  assert data.config_info(config).image_shape == (8, 8, 3)
  images, _ = data.load_config_split(config, "test")
  assert images.shape == (4, 8, 8, 3)


@pytest.mark.parametrize("overrides, message", [
    (dict(dataset="imagenet"), "dataset 'imagenet' is unknown;.*'folder:PATH'"),
    (dict(channels=2), "channels must be 1, 3 or 0"),
    (dict(resize="nearest"), "resize 'nearest' is unknown"),
    (dict(image_size=-1), "image_size must be >= 0"),
])
def test_bad_data_keys_are_one_line(overrides, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(config_lib.get_config("vae_mlp", **overrides))


def test_resizing_a_built_in_dataset_points_to_tfds():
  with pytest.raises(data.DataError, match="'tfds:cifar10'"):
    data.dataset_info("cifar10", 64, 3)
  assert data.dataset_info("cifar10", 32, 3) is data.DATASETS["cifar10"]


def test_a_folder_that_is_missing_or_has_no_images_is_one_line(tmp_path):
  with pytest.raises(data.DataError, match="is not a directory"):
    data.dataset_info(f"folder:{tmp_path / 'nope'}")
  (tmp_path / "x.png").write_bytes(b"")
  with pytest.raises(data.DataError, match=r"no usable image among 1 files \(unreadable"):
    data.split_size(f"folder:{tmp_path}", "train", image_size=8, channels=1)


def test_a_tfds_dataset_by_name_is_fitted_to_image_size(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    info = data.dataset_info("tfds:cifar10", 16, 1)
    assert info.image_shape == (16, 16, 1) and info.num_classes == 10
    kwargs = dict(tfds_data_dir=str(tmp_path), image_size=16, channels=1, resize="bicubic")
    images, labels = data.load_split("tfds:cifar10", "train", **kwargs)
    own, own_labels = data.load_split("cifar10", "train", tfds_data_dir=str(tmp_path))
    assert data.split_size("tfds:cifar10", "test", **kwargs) == 6
  assert images.shape == (6, 16, 16, 1) and images.std() > 0
  np.testing.assert_array_equal(labels, own_labels)
  expected = Image.fromarray(own[0]).convert("L").resize((16, 16), Image.Resampling.BICUBIC,
                                                         reducing_gap=None)
  np.testing.assert_array_equal(images[0, ..., 0], np.asarray(expected))
  with pytest.raises(data.DataError, match="TFDS has no dataset 'no_such_set'"):
    data.dataset_info("tfds:no_such_set")
