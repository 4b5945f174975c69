"""`python -m aigc_jax.evaluate --samples FILE.npz` scores any uint8 sample file like the GAN
evaluation; bad files and flag values of evaluate and sample are one `error:` line, exit 2.

The classifier is the conftest's stand-in (`cache_dir`), loaded as the real one is.
"""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from aigc_jax import data as data_lib
from aigc_jax import demo_summary
from aigc_jax import evaluate
from aigc_jax.families import sample_eval
from aigc_jax.metrics import classifier as clf_lib
from aigc_jax.metrics import sample_metrics as sm_lib
from conftest import needs_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM = 200
FLOORED = ("fid", "kid", "precision", "recall", "is")


def run_module(module, *args, cache=None):
  env = dict(os.environ, **({clf_lib.CACHE_ENV: cache} if cache else {}))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env=env)


def one_error_line(done):
  assert done.returncode == 2, done.stderr[-2000:]
  [line] = done.stderr.strip().splitlines()
  assert line.startswith("error: "), line
  return line


def floor_subset(num, with_labels=False):
  """The train images (and labels) that `floors` scores for `num` samples."""
  images, labels = data_lib.load_split("fashion_mnist", "train")
  rows = sm_lib.floor_rows(len(images), num)
  return images[rows], labels[rows] if with_labels else None


@needs_fashion_mnist
@pytest.mark.slow
def test_samples_command_scores_a_file_with_the_floors(cache_dir, tmp_path):
  """A file of exactly the floors' train images scores its floors: same metrics, same inputs."""
  images, labels = floor_subset(NUM, with_labels=True)
  path = str(tmp_path / "real.npz")
  np.savez(path, images=images[..., 0], labels=labels)  # (N, H, W): one channel
  done = run_module("aigc_jax.evaluate", "--samples", path, "--num_samples", str(NUM),
                    cache=cache_dir)
  assert done.returncode == 0, done.stderr[-2000:]
  [line] = done.stdout.strip().splitlines()
  result = json.loads(line)
  assert result["num_samples"] == NUM and result["samples"] == path
  for name in FLOORED + ("label_acc",):
    assert result[name] == pytest.approx(result[f"{name}_floor"], rel=1e-6), name
  assert list(result).index("fid_floor") == list(result).index("fid") + 1


@pytest.mark.slow
@needs_fashion_mnist
def test_score_images_matches_the_gan_metrics(cache_dir, monkeypatch):
  """The file's numbers are `evaluate_samples` against the first test images, as a GAN's are."""
  monkeypatch.setenv(clf_lib.CACHE_ENV, cache_dir)
  rng = np.random.default_rng(0)
  fakes = rng.integers(0, 256, (NUM, 28, 28, 1), dtype=np.uint8)
  result = sample_eval.score_images("fashion_mnist", fakes)
  clf = clf_lib.load_or_train(progress=False)
  test_images = data_lib.load_split("fashion_mnist", "test")[0][:NUM]
  direct = sm_lib.evaluate_samples(clf, fakes, clf.features(test_images))
  for name, value in direct.items():
    assert result[name] == pytest.approx(value, rel=1e-6), name
  assert set(f"{name}_floor" for name in FLOORED) <= set(result) and "label_acc" not in result
  assert result["fid"] > 10 * result["fid_floor"]  # noise is far from real images


def test_load_samples_reads_both_layouts_and_caps_at_num(tmp_path):
  images = np.zeros((30, 28, 28, 1), np.uint8)
  np.savez(tmp_path / "a.npz", images=images)
  np.savez(tmp_path / "b.npz", images=images[..., 0], labels=np.arange(30) % 10)
  got, labels = evaluate.load_samples(str(tmp_path / "a.npz"), "fashion_mnist")
  assert got.shape == (30, 28, 28, 1) and labels is None
  got, labels = evaluate.load_samples(str(tmp_path / "b.npz"), "fashion_mnist", 12)
  assert got.shape == (12, 28, 28, 1) and labels.tolist() == (np.arange(12) % 10).tolist()


BAD_FILES = {
    "float_images": dict(images=np.zeros((20, 28, 28), np.float32)),
    "wrong_shape": dict(images=np.zeros((20, 32, 32, 3), np.uint8)),
    "no_images": dict(pictures=np.zeros((20, 28, 28), np.uint8)),
    "too_few": dict(images=np.zeros((5, 28, 28), np.uint8)),
    "bad_labels": dict(images=np.zeros((20, 28, 28), np.uint8), labels=np.full(20, 12)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_FILES) + ["missing", "not_npz", "more_than_held"])
def test_bad_samples_file_is_one_error_line(tmp_path, case):
  path = tmp_path / "s.npz"
  args = []
  if case in BAD_FILES:
    np.savez(path, **BAD_FILES[case])
  elif case == "not_npz":
    path.write_text("not a zip")
  elif case == "more_than_held":
    np.savez(path, images=np.zeros((20, 28, 28), np.uint8))
    args = ["--num_samples", "50"]
  line = one_error_line(run_module("aigc_jax.evaluate", "--samples", str(path), *args))
  assert str(path) in line or "--samples" in line


@pytest.mark.slow
@pytest.mark.parametrize("args, fix", [
    (["--num_samples", "3"], "--num_samples must be >= 10"),
    (["--num_samples", "-5"], "--num_samples must be >= 10"),
    (["--iwae_samples", "-3"], "--iwae_samples must be >= 1"),
    (["--iwae_examples", "-1"], "--iwae_examples must be >= 1"),
])
def test_evaluate_bad_flag_values_are_one_error_line(tmp_path, args, fix):
  line = one_error_line(run_module("aigc_jax.evaluate", "--workdir", str(tmp_path), *args))
  assert fix in line


@pytest.mark.slow
def test_evaluate_needs_one_of_workdir_or_samples(tmp_path):
  assert "--workdir" in one_error_line(run_module("aigc_jax.evaluate"))
  both = run_module("aigc_jax.evaluate", "--workdir", str(tmp_path), "--samples", "x.npz")
  assert "one of --workdir" in one_error_line(both)


@pytest.mark.slow
def test_sample_out_naming_a_directory_is_one_error_line(tmp_path):
  for out in (str(tmp_path), str(tmp_path / "new") + "/"):
    line = one_error_line(run_module("aigc_jax.sample", "--workdir", str(tmp_path), "--out", out))
    assert "is a directory" in line and "samples.npz" in line


def test_demo_summary_shows_a_vae_row_with_its_pictures(tmp_path):
  workdir = tmp_path / "vae_conv"
  (workdir / "samples").mkdir(parents=True)
  (workdir / "samples" / "samples_latest.png").write_bytes(b"")
  (workdir / "config.json").write_text(json.dumps({"model": "vae_conv"}))
  (workdir / "metrics.jsonl").write_text(
      json.dumps({"step": 500, "split": "test", "neg_elbo": 260.0}) + "\n" +
      json.dumps({"step": 1000, "split": "test", "neg_elbo": 250.5}) + "\n")
  row = demo_summary.summarize(str(workdir), 100)
  assert (row["model"], row["steps"], row["metric"], row["value"]) == ("vae_conv", 1000,
                                                                       "test_neg_elbo", 250.5)
  lines = demo_summary.table([row]).splitlines()
  assert lines[0].split() == ["model", "steps", "metric", "value", "floor"]
  assert lines[1].split() == ["vae_conv", "1000", "test_neg_elbo", "250.50", "-"]
  assert lines[2].strip().endswith("samples_latest.png")


def test_demo_summary_shows_a_gans_precision_and_recall_under_its_fid():
  row = {
      "model": "dcgan", "steps": 600, "metric": "fid (1000 samples)", "value": 28.16, "floor": 2.17,
      "more": [("precision", 0.935, 0.912), ("recall", 0.114, 0.915)], "pictures": ["s.png"]
  }
  lines = demo_summary.table([row]).splitlines()
  assert [line.split() for line in lines[1:4]
         ] == [["dcgan", "600", "fid", "(1000", "samples)", "28.16", "2.17"],
               ["precision", "0.935", "0.912"], ["recall", "0.114", "0.915"]]
  assert lines[4].strip() == "s.png"  # the pictures after the run's last metric


def npy_bytes(array, shape=None) -> bytes:
  """`array` as an .npy file; with `shape`, its header declares that shape instead."""
  buffer = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      buffer, {"descr": array.dtype.str, "fortran_order": False, "shape": shape or array.shape})
  return buffer.getvalue() + array.tobytes()


def corrupt_payload(data: bytes) -> bytes:
  """An .npz whose `images` has one byte flipped: its zip CRC no longer matches."""
  data = bytearray(data)
  data[data.index(b"\x93NUMPY") + 500] ^= 0xFF
  return bytes(data)


def good_npz(path) -> bytes:
  np.savez(path, images=np.arange(20 * 28 * 28).astype(np.uint8).reshape(20, 28, 28))
  return path.read_bytes()


@pytest.mark.parametrize("case, message", [
    ("npy", r"is an \.npy file \(one array\), not an \.npz; save the images with np\.savez"),
    ("truncated", r"\(BadZipFile: File is not a zip file\); it is truncated, corrupt"),
    ("corrupt", r"\(BadZipFile: Bad CRC-32 for file 'images\.npy'\); it is truncated, corrupt"),
    ("declared_10gb", r"`images` declares uint8\(12755102, 28, 28\) \(9,999,999,968 bytes\) but "
     r"holds 15,680 bytes: the file is truncated or was edited"),
    ("labels_declared_more", r"`labels` declares int64\(10000000,\)"),
])
def test_an_unreadable_samples_file_is_one_usage_error(tmp_path, case, message):
  """Each is refused before anything the file does not hold is allocated."""
  path = tmp_path / "s.npz"
  data = good_npz(path)
  images = np.zeros((20, 28, 28), np.uint8)
  if case == "npy":
    path.write_bytes(npy_bytes(images))
  elif case == "truncated":
    path.write_bytes(data[:len(data) // 2])
  elif case == "corrupt":
    path.write_bytes(corrupt_payload(data))
  else:
    with zipfile.ZipFile(path, "w") as zf:
      big = case == "declared_10gb"
      zf.writestr("images.npy", npy_bytes(images, (12_755_102, 28, 28) if big else None))
      if not big:
        zf.writestr("labels.npy", npy_bytes(np.zeros(20, np.int64), (10_000_000,)))
  with pytest.raises(evaluate.UsageError, match=message) as raised:
    evaluate.load_samples(str(path), "fashion_mnist")
  assert str(path) in str(raised.value) and len(str(raised.value).splitlines()) == 1


def test_only_the_images_scored_are_read_and_memory_errors_are_one_line(tmp_path, monkeypatch):
  path = tmp_path / "s.npz"
  good_npz(path)
  got, _ = evaluate.load_samples(str(path), "fashion_mnist", 12)
  expected = np.arange(20 * 28 * 28).astype(np.uint8).reshape(20, 28, 28, 1)[:12]
  np.testing.assert_array_equal(got, expected)
  assert got.flags.writeable

  def out_of_memory(*args):
    raise MemoryError

  monkeypatch.setattr(evaluate, "_read_rows", out_of_memory)
  with pytest.raises(
      evaluate.UsageError, match=r"first 12 images do not fit in this machine's "
      r"memory; pass a smaller --num_samples"):
    evaluate.load_samples(str(path), "fashion_mnist", 12)
