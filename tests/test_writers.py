"""Sample grids: a row per class, capped columns, the unconditional square; upscaled PNGs."""

import glob
import struct

import numpy as np
import pytest
from PIL import Image

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


def test_image_grid_keeps_its_shape_contract_at_scale_one():
  images = np.zeros((5, 3, 4, 1), np.float32)
  grid = writers.image_grid(images, 3, pad=1)
  assert grid.shape == (2 * (3 + 1) + 1, 3 * (4 + 1) + 1, 1) and grid.dtype == np.uint8
  assert grid[0, 0, 0] == 255 and grid[1, 1, 0] == 0  # white border, then the first image


def test_image_grid_upscales_by_nearest_neighbour_with_a_border_between():
  images = np.array([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]], np.float32)[..., None]
  grid = writers.image_grid(images, 2, pad=1, scale=3, border=0.5)
  assert grid.shape == (1 * (6 + 1) + 1, 2 * (6 + 1) + 1, 1)
  first = grid[1:7, 1:7, 0]
  np.testing.assert_array_equal(first, np.kron([[0, 255], [255, 0]], np.ones((3, 3), int)))
  assert set(np.unique(grid[:, 7, 0])) == {128}  # the column between the two images
  assert set(np.unique(grid[0, :, 0])) == {128}


@pytest.mark.parametrize("scale", [0, 1.5])
def test_image_grid_rejects_a_bad_scale(scale):
  with pytest.raises(ValueError, match="scale"):
    writers.image_grid(np.zeros((1, 2, 2, 1)), 1, scale=scale)


def test_saved_png_is_upscaled_at_least_twice(tmp_path):
  images = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
  path = writers.save_png(str(tmp_path / "sub" / "grid.png"), images, 2)
  with Image.open(path) as png:
    assert png.size == (2 * (56 + 2) + 2, 2 * (56 + 2) + 2) and png.mode == "L"
  rgb = writers.save_png(str(tmp_path / "rgb.png"), np.ones((3, 8, 8, 3)), 3, scale=4)
  with Image.open(rgb) as png:
    assert png.size == (3 * (32 + 2) + 2, 32 + 2 + 2) and png.mode == "RGB"


def test_a_line_cut_short_is_skipped_and_dropped_on_resume(tmp_path, caplog):
  writer = writers.MetricWriter(str(tmp_path), enabled=True)
  writer.write(4, "train", {"loss": 1.0})
  writer.write(8, "train", {"loss": 0.5})
  with open(writer.path, "a") as f:
    f.write('{"step": 12, "split": "tr')  # a crash mid-write
  assert writer.truncate_after(8) == [{"step": 4, "split": "train", "loss": 1.0},
                                      {"step": 8, "split": "train", "loss": 0.5}]
  assert "skipped 1 line" in caplog.text
  with open(writer.path) as f:
    assert f.read().count("\n") == 2  # rewritten without it
  writer.close()


def read_events(path):
  """The Event protos of a TensorBoard event file, each record's two CRCs checked."""
  from tensorboardX.proto import event_pb2
  from tensorboardX.record_writer import masked_crc32c
  events, data = [], open(path, "rb").read()
  while data:
    header, (header_crc,) = data[:8], struct.unpack("<I", data[8:12])
    (length,) = struct.unpack("<Q", header)
    body, (body_crc,) = data[12:12 + length], struct.unpack("<I", data[12 + length:16 + length])
    assert header_crc == masked_crc32c(header) and body_crc == masked_crc32c(body)
    events.append(event_pb2.Event.FromString(body))
    data = data[16 + length:]
  return events


def test_tensorboard_events_are_framed_as_tensorboard_reads_them(tmp_path):
  writer = writers.MetricWriter(str(tmp_path), tensorboard=True)
  writer.write(4, "train", {"loss": 1.5, "kl": 0.25})
  writer.write_images(8, "samples", np.zeros((4, 6, 3), np.uint8))
  writer.close()
  (path,) = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  events = read_events(path)
  assert events[0].file_version == "brain.Event:2"
  scalars = {(e.step, v.tag): v.simple_value for e in events[1:] for v in e.summary.value
             if v.HasField("simple_value")}
  assert scalars == {(4, "train/loss"): 1.5, (4, "train/kl"): 0.25}
  (image,) = [v.image for e in events if e.step == 8 for v in e.summary.value]
  assert (image.height, image.width) == (4, 6) and image.encoded_image_string[:4] == b"\x89PNG"
