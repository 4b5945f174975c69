"""Tests for aigc_jax.data: IDX parsing, sources, and jit-friendly batching."""

from __future__ import annotations

import dataclasses
import gzip
import os
import socket
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import data
from aigc_jax import idx
from aigc_jax import tfds_split
from aigc_jax.data import DataError

DEBIAN_DIR = data.DATASETS["fashion_mnist"].debian_dir


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
  """Hand-built IDX file: 00 00 code ndim, big-endian dims, big-endian payload."""
  dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
  header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
  return header + arr.astype(dtype).tobytes()


def write(path, payload: bytes, gz: bool = False):
  path.write_bytes(gzip.compress(payload) if gz else payload)
  return path


def make_split_dir(directory, n=5, hw=(28, 28), split="train", gz=True, labels=None,
                   dot_variant=False):
  """Writes a tiny split; returns (images (N,H,W), labels)."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, *hw), dtype=np.uint8)
  labels = np.arange(n, dtype=np.uint8) % 10 if labels is None else labels
  prefix = {"train": "train", "test": "t10k"}[split]
  sep = "." if dot_variant else "-"
  ext = ".gz" if gz else ""
  write(directory / f"{prefix}-images{sep}idx3-ubyte{ext}", idx_bytes(images), gz)
  write(directory / f"{prefix}-labels{sep}idx1-ubyte{ext}", idx_bytes(labels), gz)
  return images, labels


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
  monkeypatch.delenv(data.IDX_DIR_ENV, raising=False)


# ------------------------------------------------------------------ read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_1d_and_3d(tmp_path, gz):
  labels = np.array([0, 3, 255, 7], np.uint8)
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  out1 = idx.read_idx(write(tmp_path / "l", idx_bytes(labels), gz))
  out3 = idx.read_idx(write(tmp_path / "i", idx_bytes(images), gz))
  assert out1.dtype == np.uint8 and out1.shape == (4,)
  np.testing.assert_array_equal(out1, labels)
  assert out3.dtype == np.uint8 and out3.shape == (2, 3, 4)
  np.testing.assert_array_equal(out3, images)


def test_read_idx_gzip_detected_by_magic_not_suffix(tmp_path):
  arr = np.array([1, 2, 3], np.uint8)
  gz_named_plain = write(tmp_path / "x.gz", idx_bytes(arr))
  plain_named_gz = write(tmp_path / "y", idx_bytes(arr), gz=True)
  np.testing.assert_array_equal(idx.read_idx(gz_named_plain), arr)
  np.testing.assert_array_equal(idx.read_idx(plain_named_gz), arr)


@pytest.mark.parametrize("code,dtype", [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
                                        (0x0D, np.float32), (0x0E, np.float64)])
def test_read_idx_big_endian_types(tmp_path, code, dtype):
  arr = np.array([[-2, 1], [300 if code != 0x09 else 100, -7]]).astype(dtype)
  out = idx.read_idx(write(tmp_path / "f", idx_bytes(arr, code)))
  assert out.dtype == np.dtype(dtype) and out.dtype.isnative
  np.testing.assert_array_equal(out, arr)


def _good() -> bytes:
  return idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3))


@pytest.mark.parametrize("payload,match", [
    (b"\x01\x00" + _good()[2:], r"bad IDX magic .*got 01 00"),
    (b"\x00\x00\x07" + _good()[3:], r"unknown IDX type code .*got 0x07"),
    (b"\x00\x00\x08\x05" + _good()[4:], r"number of dimensions .*got 5"),
    (idx_bytes(np.zeros(
        (2, 3), np.uint8))[:8] + struct.pack(">I", 0), r"zero-sized dimension .*\(2, 0\)"),
    (_good()[:-1], r"truncated payload \(expected 18 bytes .*got 17\)"),
    (_good() + b"junk", r"trailing bytes after payload \(expected 18 .*got 22\)"),
    (b"\x00\x00", r"too short"),
    (b"\x00\x00\x08\x02\x00\x00", r"truncated header"),
])
def test_read_idx_rejects_corrupt(tmp_path, payload, match):
  path = write(tmp_path / "bad-idx", payload)
  with pytest.raises(DataError, match=match) as e:
    idx.read_idx(path)
  assert str(path) in str(e.value) and "idx_dir" in str(e.value)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated_inside_gzip(tmp_path, gz):
  path = write(tmp_path / "t.gz", _good()[:-3], gz=gz)
  with pytest.raises(DataError, match=f"{path}: truncated payload"):
    idx.read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
  blob = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8) % 7))
  for name, bad in [("cut.gz", blob[:len(blob) // 2]),
                    ("flip.gz", blob[:12] + bytes(b ^ 0xFF for b in blob[12:30]) + blob[30:])]:
    path = write(tmp_path / name, bad)
    with pytest.raises(DataError, match=r"corrupt gzip stream") as e:
      idx.read_idx(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rows_are_those_rows_of_the_whole_file(tmp_path, gz):
  arr = np.random.default_rng(1).integers(-30000, 30000, (7, 3, 2)).astype(np.int16)
  path = write(tmp_path / "rows", idx_bytes(arr, 0x0B), gz)
  for rows in [(0, 7), (2, 5), (6, 7), (3, 3)]:
    got = idx.read_idx(path, rows)
    assert got.dtype == np.int16 and got.shape == (rows[1] - rows[0], 3, 2)
    np.testing.assert_array_equal(got, arr[rows[0]:rows[1]])
  assert idx.count(path) == 7
  with pytest.raises(DataError, match=r"rows \[5, 9\) are outside its 7 rows"):
    idx.read_idx(path, (5, 9))


def test_counting_a_gzipped_file_reads_its_header_and_trailer_only(tmp_path, monkeypatch):
  arr = np.arange(7 * 5 * 3, dtype=np.uint8).reshape(7, 5, 3)
  path = write(tmp_path / "gz", idx_bytes(arr), gz=True)
  whole = gzip.compress(idx_bytes(arr))
  write(tmp_path / "short", whole[:-20])  # its trailer is gone: the whole file is checked
  write(tmp_path / "long", gzip.compress(idx_bytes(arr) + b"\x00"))  # the trailer disagrees

  def no_gunzip(raw, unused_path):
    raise AssertionError("decompressed whole")

  with monkeypatch.context() as m:
    m.setattr(idx, "_gunzip", no_gunzip)
    assert idx.count(path) == 7
  with pytest.raises(DataError, match="corrupt gzip stream"):
    idx.count(tmp_path / "short")
  with pytest.raises(DataError, match="trailing bytes after payload"):
    idx.count(tmp_path / "long")


@pytest.mark.parametrize("dims", [(2**16,) * 4, (2**32 - 1,) * 4, (2**32 - 1, 2**32 - 1)])
def test_read_idx_header_dims_that_overflow_int64_are_a_size_error(tmp_path, dims):
  # 2**64 bytes wraps to 0 in int64: such a header "matches" an empty payload there
  head = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
  path = write(tmp_path / "huge", head + b"\x00" * 16)
  expected = len(head) + int(np.prod(np.array(dims, dtype=object)))
  with pytest.raises(DataError, match=rf"truncated payload \(expected {expected} bytes"):
    idx.read_idx(path)
  with pytest.raises(DataError, match="truncated payload"):
    idx.count(path)


def test_load_split_rows_read_only_those_rows(tmp_path):
  images, labels = make_split_dir(tmp_path, n=9, gz=False)
  assert data.split_size("fashion_mnist", "train", idx_dir=tmp_path) == 9
  x, y = data.load_split("fashion_mnist", "train", idx_dir=tmp_path, rows=(4, 9))
  np.testing.assert_array_equal(x[..., 0], images[4:])
  np.testing.assert_array_equal(y, labels[4:])


def test_read_idx_missing_file(tmp_path):
  with pytest.raises(DataError, match=r"nope.*cannot read file"):
    idx.read_idx(tmp_path / "nope")


# ------------------------------------------------------------ read_idx_split


@pytest.mark.parametrize("gz,dot", [(True, False), (False, False), (False, True), (True, True)])
def test_read_idx_split(tmp_path, gz, dot):
  images, labels = make_split_dir(tmp_path, n=6, hw=(4, 5), split="test", gz=gz, dot_variant=dot)
  x, y = idx.read_split(tmp_path, "test")
  assert x.dtype == np.uint8 and x.shape == (6, 4, 5, 1)
  assert y.dtype == np.int32 and y.shape == (6,)
  np.testing.assert_array_equal(x[..., 0], images)
  np.testing.assert_array_equal(y, labels)


def test_read_idx_split_count_mismatch(tmp_path):
  make_split_dir(tmp_path, n=5, labels=np.arange(4, dtype=np.uint8))
  with pytest.raises(
      DataError, match=r"train-labels-idx1-ubyte.gz: label count does not match "
      r".*\(expected 5, got 4\)"):
    idx.read_split(tmp_path, "train")


def test_read_idx_split_label_out_of_range(tmp_path):
  make_split_dir(tmp_path, n=3, labels=np.array([0, 10, 2], np.uint8))
  with pytest.raises(
      DataError, match=r"train-labels-idx1-ubyte.gz: label out of range "
      r"\(expected \[0, 10\), got max 10\)"):
    idx.read_split(tmp_path, "train", num_classes=10)
  _, y = idx.read_split(tmp_path, "train")  # unknown num_classes: no range check
  assert y.max() == 10


def test_read_idx_split_wrong_kinds(tmp_path):
  make_split_dir(tmp_path, n=3)
  write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros((3, 2), np.uint8)), gz=True)
  with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: not a label file"):
    idx.read_split(tmp_path, "train")
  write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(np.zeros(3, np.uint8)), gz=True)
  with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: not an image file"):
    idx.read_split(tmp_path, "train")


def test_read_idx_split_missing_files(tmp_path):
  make_split_dir(tmp_path, split="train")
  with pytest.raises(
      DataError, match=r"missing IDX files for split 'test' \(looked for "
      r"t10k-images-idx3-ubyte, t10k-images-idx3-ubyte.gz"):
    idx.read_split(tmp_path, "test")
  (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz"):
    idx.read_split(tmp_path, "train")
  with pytest.raises(DataError, match=r"unknown IDX split 'valid'"):
    idx.read_split(tmp_path, "valid")


# ---------------------------------------------------------------- load_split


def test_load_split_idx_dir_and_env(tmp_path, monkeypatch):
  images, labels = make_split_dir(tmp_path, n=4, split="test")
  x, y = data.load_split("fashion_mnist", "test", idx_dir=str(tmp_path))
  np.testing.assert_array_equal(x[..., 0], images)
  np.testing.assert_array_equal(y, labels)
  monkeypatch.setenv(data.IDX_DIR_ENV, str(tmp_path))
  x2, y2 = data.load_split("mnist", "test", idx_dir="")  # '' = unset, as in the config
  np.testing.assert_array_equal(x2, x)
  np.testing.assert_array_equal(y2, y)


def test_load_split_explicit_dir_never_falls_through(tmp_path, monkeypatch):
  with pytest.raises(DataError, match=r"missing IDX files for split 'train'"):
    data.load_split("fashion_mnist", "train", idx_dir=tmp_path)
  with pytest.raises(DataError, match=r"does not exist"):
    data.load_split("fashion_mnist", "train", idx_dir=tmp_path / "absent")
  monkeypatch.setenv(data.IDX_DIR_ENV, str(tmp_path / "absent"))
  with pytest.raises(DataError, match=rf"from \${data.IDX_DIR_ENV}"):
    data.load_split("fashion_mnist", "train")


def test_load_split_wrong_shape(tmp_path):
  make_split_dir(tmp_path, n=2, hw=(32, 32))
  with pytest.raises(DataError, match=r"wrong image shape .*\(28, 28, 1\), got \(32, 32, 1\)"):
    data.load_split("fashion_mnist", "train", idx_dir=tmp_path)


def test_load_split_unknown_name():
  with pytest.raises(DataError, match=r"unknown dataset 'svhn'.*cifar10.*fashion_mnist.*mnist"):
    data.load_split("svhn", "train")


@pytest.mark.skipif(not os.path.isdir(DEBIAN_DIR), reason=f"{DEBIAN_DIR} absent")
def test_load_split_debian_fashion_mnist():
  x, y = data.load_split("fashion_mnist", "test")
  assert x.shape == (10000, 28, 28, 1) and x.dtype == np.uint8
  assert y.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(y), np.full(10, 1000))
  assert 0 < x.mean() < 255


@pytest.fixture
def no_network(monkeypatch):

  def refuse(*args, **kwargs):
    raise AssertionError(f"test tried to open a network connection: {args}")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)),
                                        ("fashion_mnist", (28, 28, 1))])
def test_load_split_tfds_mock(tmp_path, monkeypatch, no_network, name, shape):
  tfds = pytest.importorskip("tensorflow_datasets")
  info = data.DATASETS[name]
  monkeypatch.setitem(data.DATASETS, name,
                      dataclasses.replace(info, debian_dir=str(tmp_path / "no-debian")))
  with tfds.testing.mock_data(num_examples=37, policy=tfds.testing.MockPolicy.USE_CODE):
    x, y = data.load_split(name, "train", tfds_data_dir=str(tmp_path / "tfds"))
  assert x.shape == (37, *shape) and x.dtype == np.uint8
  assert y.shape == (37,) and y.dtype == np.int32
  assert 0 <= y.min() and y.max() < 10
  assert x.std() > 0
  with tfds.testing.mock_data(num_examples=37, policy=tfds.testing.MockPolicy.USE_CODE):
    assert data.split_size(name, "train", tfds_data_dir=str(tmp_path / "tfds")) == 37
    rows = data.load_split(name, "train", tfds_data_dir=str(tmp_path / "tfds"), rows=(30, 37))
  np.testing.assert_array_equal(rows[0], x[30:])
  np.testing.assert_array_equal(rows[1], y[30:])


class FakeSource:
  """A random-access source like `tfds.data_source`'s, optionally batched."""

  def __init__(self, n, batched):
    rng = np.random.default_rng(3)
    self.images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    self.labels = rng.integers(0, 10, n)
    self.batch_calls = 0
    if batched:
      self.__getitems__ = self._getitems

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    return {"image": self.images[i], "label": np.int64(self.labels[i])}

  def _getitems(self, keys):
    self.batch_calls += 1
    return [self[k] for k in keys]


@pytest.mark.parametrize("batched", [True, False])
def test_load_split_tfds_records_in_order(monkeypatch, batched):
  tfds = pytest.importorskip("tensorflow_datasets")
  source = FakeSource(2500, batched)
  calls = []
  monkeypatch.setattr(tfds, "data_source", lambda *a, **k: calls.append((a, k)) or source)
  x, y = data.load_split("mnist", "test", tfds_data_dir="/some/dir")
  assert calls == [(("mnist",), {"split": "test", "data_dir": "/some/dir", "download": False})]
  np.testing.assert_array_equal(x, source.images)
  np.testing.assert_array_equal(y, source.labels)
  assert y.dtype == np.int32
  assert source.batch_calls == (3 if batched else 0)


def test_load_split_tfds_failure_is_data_error(tmp_path, monkeypatch, no_network):
  tfds = pytest.importorskip("tensorflow_datasets")

  def fail(*args, **kwargs):
    raise OSError("no network")

  monkeypatch.setattr(tfds, "data_source", fail)
  monkeypatch.setattr(tfds_split, "network_reachable", lambda *args, **kwargs: True)
  monkeypatch.setitem(data.DATASETS, "fashion_mnist",
                      dataclasses.replace(data.DATASETS["fashion_mnist"], debian_dir=str(tmp_path)))
  with pytest.raises(
      DataError, match=r"no data found \(tried .*AIGC_JAX_IDX_DIR.*Debian dir "
      r".*TFDS 'fashion_mnist'.*no network.*apt-get install "
      r"dataset-fashion-mnist.*idx_dir"):
    data.load_split("fashion_mnist", "train")


def test_without_a_network_tfds_is_not_asked_to_download(tmp_path, monkeypatch, no_network):
  tfds = pytest.importorskip("tensorflow_datasets")
  calls = []

  def not_prepared(*args, **kwargs):
    calls.append(kwargs)
    raise AssertionError("Dataset mnist: could not find data in " + str(tmp_path))

  monkeypatch.setattr(tfds, "data_source", not_prepared)
  monkeypatch.setattr(tfds_split, "network_reachable", lambda *args, **kwargs: False)
  with pytest.raises(DataError, match=r"no network to download it .*tfds_data_dir"):
    data.load_split("mnist", "train", tfds_data_dir=str(tmp_path))
  assert [c["download"] for c in calls] == [False]  # no download attempt, no partial files
  assert os.listdir(tmp_path) == []


# ------------------------------------------------------------ device / batch


def test_steps_per_epoch():
  assert data.steps_per_epoch(10, 3) == 3
  assert data.steps_per_epoch(10, 10) == 1
  for bad in (0, -1, 11):
    with pytest.raises(DataError, match="batch_size"):
      data.steps_per_epoch(10, bad)


def test_epoch_permutation():
  p = data.epoch_permutation(0, 0, 100)
  assert p.dtype == jnp.int32 and p.shape == (100,)
  np.testing.assert_array_equal(np.sort(p), np.arange(100))
  np.testing.assert_array_equal(p, data.epoch_permutation(0, 0, 100))
  assert not np.array_equal(p, data.epoch_permutation(0, 1, 100))
  assert not np.array_equal(p, data.epoch_permutation(1, 0, 100))
  jitted = jax.jit(data.epoch_permutation, static_argnums=2)
  np.testing.assert_array_equal(jitted(0, jnp.int32(1), 100), data.epoch_permutation(0, 1, 100))


@pytest.fixture
def small_data():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (23, 4, 4, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, 23).astype(np.int32)
  return images, labels, data.to_device(images, labels)


def test_to_device(small_data):
  images, labels, d = small_data
  assert isinstance(d.images, jax.Array) and d.images.dtype == jnp.uint8
  assert d.labels.dtype == jnp.int32
  assert len(jax.tree.leaves(d)) == 2
  with pytest.raises(DataError):
    data.to_device(images.astype(np.float32), labels)


def test_to_host_keeps_checked_numpy_arrays(small_data):
  images, labels, _ = small_data
  host = data.to_host(images, labels.astype(np.uint8))
  assert isinstance(host.images, np.ndarray) and host.images is images
  assert host.labels.dtype == np.int32 and isinstance(host.labels, np.ndarray)
  np.testing.assert_array_equal(host.labels, labels)
  with pytest.raises(DataError, match="expected uint8"):
    data.to_host(images, labels[:-1])


def test_get_batch_jit_traced_index(small_data):
  images, labels, d = small_data
  perm = data.epoch_permutation(3, 0, 23)
  bs = 5

  @jax.jit
  def all_batches(d, perm):

    def body(i, acc):
      return acc.at[i].set(data.get_batch(d, perm, i, bs)["image"])

    return jax.lax.fori_loop(0, 4, body, jnp.zeros((4, bs, 4, 4, 1), jnp.float32))

  out = all_batches(d, perm)
  p = np.asarray(perm)
  for i in range(4):
    idx = p[i * bs:(i + 1) * bs]
    np.testing.assert_allclose(out[i], images[idx].astype(np.float32) / 255.0, rtol=1e-6)
    b = jax.jit(data.get_batch, static_argnums=3)(d, perm, jnp.int32(i), bs)
    assert b["image"].dtype == jnp.float32 and b["image"].shape == (bs, 4, 4, 1)
    assert b["label"].dtype == jnp.int32
    np.testing.assert_array_equal(b["label"], labels[idx])


def test_preprocess_scales_and_binarize():
  x = np.array([0, 1, 127, 128, 255], np.uint8)
  np.testing.assert_allclose(data.preprocess(x), x / 255.0, rtol=1e-6)
  m = data.preprocess(x, scale="minus_one_one")
  assert m.dtype == jnp.float32 and float(m.min()) == -1.0 and float(m.max()) == 1.0
  imgs = np.random.default_rng(2).integers(0, 256, (200, 8, 8, 1), dtype=np.uint8)
  b = jax.jit(lambda im, k: data.preprocess(im, binarize_rng=k))(imgs, jax.random.key(0))
  assert b.dtype == jnp.float32
  assert set(np.unique(np.asarray(b))) <= {0.0, 1.0}
  assert abs(float(b.mean()) - imgs.mean() / 255.0) < 0.01
  with pytest.raises(ValueError, match="zero_one"):
    data.preprocess(x, scale="minus_one_one", binarize_rng=jax.random.key(0))
  with pytest.raises(ValueError, match="unknown scale"):
    data.preprocess(x, scale="bogus")
