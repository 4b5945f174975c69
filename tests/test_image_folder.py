"""A folder of images as a dataset: splits, class labels, decoding and the files it skips."""

import os

import numpy as np
import pytest
from PIL import Image

from aigc_jax import image_folder


def save(path, array, mode=None, **options):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array, mode).save(path, **options)
  return str(path)


def gradient(height, width, channels=3):
  """uint8 (H, W, C): red rises along x, green along y (a picture whose crop is easy to check)."""
  yy, xx = np.mgrid[:height, :width]
  rgb = np.stack(
      [xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1),
       np.full_like(xx, 128)], -1).astype(np.uint8)
  return rgb[..., :channels] if channels == 3 else rgb[..., 0]


def test_listing_labels_subfolders_and_holds_out_every_tenth_file(tmp_path):
  for cls in ("cat", "dog"):
    for i in range(10):
      save(tmp_path / cls / f"{i}.png", gradient(16, 16))
  (tmp_path / "notes.txt").write_text("not an image")
  train = image_folder.list_split(str(tmp_path), "train")
  test = image_folder.list_split(str(tmp_path), "test")
  assert train.classes == test.classes == ["cat", "dog"]
  assert len(train.paths) == 18 and len(test.paths) == 2 and not set(train.paths) & set(test.paths)
  assert [os.path.basename(p) for p in test.paths] == ["9.png", "9.png"]  # files 10 and 20
  assert list(test.labels) == [0, 1] and list(train.labels) == [0] * 9 + [1] * 9


def test_train_and_test_subfolders_are_the_splits(tmp_path):
  for split, n in (("train", 3), ("test", 2)):
    for i in range(n):
      save(tmp_path / split / f"{i}.jpg", gradient(16, 16), quality=95)
  train = image_folder.list_split(str(tmp_path), "train")
  test = image_folder.list_split(str(tmp_path), "test")
  assert len(train.paths) == 3 and len(test.paths) == 2 and train.classes == ["."]
  assert list(train.labels) == [0, 0, 0]


def test_top_level_images_beside_class_folders_are_a_class_of_their_own(tmp_path):
  save(tmp_path / "a" / "0.png", gradient(8, 8))
  save(tmp_path / "top.png", gradient(8, 8))
  listing = image_folder.list_split(str(tmp_path), "train")
  assert listing.classes == [".", "a"]
  assert dict(zip(map(os.path.basename, listing.paths),
                  listing.labels)) == {"0.png": 1, "top.png": 0}


@pytest.mark.parametrize("resize", ["area", "bicubic"])
def test_decode_resizes_the_shorter_side_and_crops_the_centre(tmp_path, resize):
  wide = gradient(32, 64)  # 2:1: the shorter side goes to 16, then the middle 16 columns of 32
  got = image_folder.decode(save(tmp_path / "w.png", wide), 16, 3, resize)
  assert got.shape == (16, 16, 3) and got.dtype == np.uint8
  reference = Image.fromarray(wide).resize((32, 16), image_folder.RESIZE[resize], reducing_gap=None)
  np.testing.assert_array_equal(got, np.asarray(reference)[:, 8:24])
  gray = image_folder.decode(save(tmp_path / "g.png", gradient(16, 16, 1)), 16, 3)
  assert gray.shape == (16, 16, 3) and (gray[..., 0] == gray[..., 2]).all()  # gray to RGB
  rgb_to_gray = image_folder.decode(str(tmp_path / "w.png"), 16, 1)
  assert rgb_to_gray.shape == (16, 16, 1)


def test_unusable_files_are_skipped_with_their_reason(tmp_path):
  good = save(tmp_path / "good.png", gradient(16, 16))
  rgba = save(tmp_path / "rgba.png", np.dstack([gradient(16, 16), np.full((16, 16), 7, np.uint8)]))
  deep = save(tmp_path / "deep.png", gradient(16, 16, 1).astype(np.uint16) * 257)
  cmyk = tmp_path / "cmyk.jpg"
  Image.fromarray(gradient(16, 16)).convert("CMYK").save(cmyk)
  tiny = save(tmp_path / "tiny.png", gradient(4, 4))
  strip = save(tmp_path / "strip.png", gradient(8, 40))
  whole = (tmp_path / "good.png").read_bytes()
  (tmp_path / "cut.png").write_bytes(whole[:len(whole) // 2])
  (tmp_path / "empty.png").write_bytes(b"")
  listing = image_folder.list_split(str(tmp_path), "train")  # 9 files: one (index 9) is test
  assert len(listing.paths) == 8
  listing = image_folder.Listing(
      sorted([
          good, rgba, deep,
          str(cmyk), tiny, strip,
          str(tmp_path / "cut.png"),
          str(tmp_path / "empty.png")
      ]), np.zeros(8, np.int32), ["."])
  images, labels, skipped = image_folder.load(listing, 8, 3)
  assert images.shape == (2, 8, 8, 3) and labels.shape == (2,)  # good and rgba (alpha dropped)
  reasons = {os.path.basename(p): why for p, why in skipped}
  assert set(reasons) == {"deep.png", "cmyk.jpg", "tiny.png", "strip.png", "cut.png", "empty.png"}
  assert reasons["deep.png"].startswith("16-bit") and reasons["cmyk.jpg"].startswith("CMYK")
  assert reasons["tiny.png"] == "an odd size (4x4)" and reasons["strip.png"] == "an odd size (40x8)"
  assert reasons["cut.png"].startswith("unreadable") and reasons["empty.png"].startswith(
      "unreadable")


def test_load_reads_only_the_rows_asked_for(tmp_path):
  paths = [save(tmp_path / f"{i}.png", np.full((8, 8), 10 * i, np.uint8)) for i in range(5)]
  listing = image_folder.Listing(paths, np.arange(5, dtype=np.int32), ["."])
  images, labels, skipped = image_folder.load(listing, 8, 1, rows=(1, 4))
  assert list(labels) == [1, 2, 3] and not skipped
  assert [int(x.mean()) for x in images] == [10, 20, 30]
