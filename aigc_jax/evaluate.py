"""Evaluate a trained workdir, or a file of samples, on the test split; print one JSON object.

python -m aigc_jax.evaluate --workdir DIR [--checkpoint best|latest | --step N] [--iwae_samples K]
    [--iwae_examples N] [--num_samples N] [--sampler S --sample_steps K --guidance_scale W]
python -m aigc_jax.evaluate --samples FILE.npz [--dataset fashion_mnist] [--num_samples N]

For a VAE: test_neg_elbo, test_recon, test_kl (nats per image over the whole test split) and
nll_iwae (-log p(x) estimated with K importance samples on the first N test images; the JSON
says K and N, and gives the K-sample ELBO on the same images as nll_iwae_subset_neg_elbo).

For a GAN: fid, kid, precision, recall, is (and label_acc when conditional) of N samples of the
EMA generator against the first N test images (N = num_samples, 10000 by default), each followed
by its floor, e.g. fid_floor: the same metric of N real train images against the same test
images, so a reader knows the scale; then kid_std, is_std and raw_* (the raw generator's).

For a diffusion model: test_loss (the denoising loss on the test split, fixed noise), then the
GAN's metrics and floors of N samples of its EMA parameters, drawn with the config's sampler,
steps and guidance unless --sampler, --sample_steps, --guidance_scale choose others.

For a samples file (from any model, e.g. `python -m aigc_jax.sample` or a PyTorch one): the same
metrics and floors of its first N images (N = num_samples, by default all, at most 10000).
The file holds `images`, uint8 (N, H, W) or (N, H, W, C) of the dataset's image size, and
optionally `labels` (N,), the classes the images were asked to show (adds label_acc).

--metric_net inception (GAN, diffusion or samples file) scores the same metrics on pytorch-fid's
Inception-V3 (no label_acc), each key naming it (fid[inception], fid_floor[inception], ...), with
--resize bilinear (pytorch-fid's) or clean (clean-fid's); --ref_stats FILE.npz (`mu`, `sigma`:
python -m aigc_jax.fid_stats, pytorch-fid or clean-fid) is FID's reference instead of the test
images. docs/metrics.md says where the weights come from and what each number's protocol is.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import zipfile
import zlib

import numpy as np
from absl import flags

from aigc_jax import backend
from aigc_jax import command_line
from aigc_jax import data as data_lib
from aigc_jax import progress as progress_lib
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax.families import sample_eval
from aigc_jax.metrics import classifier as classifier_lib
from aigc_jax.metrics import fid as fid_lib
from aigc_jax.metrics import inception
from aigc_jax.metrics import inception_resize
from aigc_jax.metrics import inception_weights

FLAGS = command_line.new_flags()
flags.DEFINE_string("workdir", None, "A training run's directory.", flag_values=FLAGS)
flags.DEFINE_string("samples", None, "Instead of --workdir: an .npz of uint8 `images` to score.",
                    flag_values=FLAGS)
flags.DEFINE_string("dataset", "fashion_mnist", "--samples: the dataset they are scored against.",
                    flag_values=FLAGS)
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to evaluate.",
                  flag_values=FLAGS)
flags.DEFINE_integer("step", None, "Evaluate this checkpoint step instead.", flag_values=FLAGS)
flags.DEFINE_integer("iwae_samples", 0, "Importance samples per image (0: the config's).",
                     flag_values=FLAGS)
flags.DEFINE_integer("iwae_examples", 0, "Test images for nll_iwae (0: the config's).",
                     flag_values=FLAGS)
flags.DEFINE_integer(
    "num_samples", 0, "GAN, diffusion or --samples: images per metric (0: "
    "10000, or all the file's).", flag_values=FLAGS)
flags.DEFINE_string("sampler", None, "Diffusion: ddim or ddpm (eps/v), euler or heun (flow).",
                    flag_values=FLAGS)
flags.DEFINE_integer("sample_steps", None, "Diffusion: the sampler's steps.", flag_values=FLAGS)
flags.DEFINE_float("guidance_scale", None, "Class-conditional diffusion: the guidance scale.",
                   flag_values=FLAGS)
flags.DEFINE_enum(
    "metric_net", "classifier", list(sample_eval.METRIC_NETS), "GAN, diffusion "
    "or --samples: the sample metrics' network (inception: pytorch-fid's).", flag_values=FLAGS)
flags.DEFINE_enum(
    "resize", "bilinear", list(inception_resize.MODES), "--metric_net inception: "
    "pytorch-fid's bilinear resize to 299, or clean-fid's 'clean' bicubic one.", flag_values=FLAGS)
flags.DEFINE_string(
    "ref_stats", None, "--metric_net inception: FID against these statistics "
    "(.npz of mu, sigma) instead of the test images'.", flag_values=FLAGS)
OPTIONS = ("iwae_samples", "iwae_examples", "num_samples", "sampler", "sample_steps",
           "guidance_scale")
log = logging.getLogger("aigc_jax.evaluate")  # not __name__: "__main__" under python -m


class UsageError(ValueError):
  """A flag or input file the command cannot use; the message names the fix."""


def evaluate_workdir(workdir: str, which: str | int = "best", progress: bool = False,
                     scoring: dict | None = None, **options) -> dict:
  """`scoring`: `sample_eval.using_metric_net`'s arguments (default: the classifier)."""
  run = workdir_lib.load_trained(workdir, which)
  workdir_lib.check_tool_options(run.config, options)
  scoring = scoring or {}
  if scoring.get("metric_net", "classifier") != "classifier" and ("eval_num_samples"
                                                                  not in run.config):
    raise UsageError(f"--metric_net scores samples: it applies to GAN and diffusion runs and "
                     f"--samples files, not to model '{run.config.model}'; drop it")
  test = workdir_lib.load_test_data(run.config)
  log.info("%s", backend.describe_devices())
  bar = functools.partial(progress_lib.progress, desc="nll_iwae") if progress else None
  with sample_eval.using_metric_net(**scoring):
    metrics = run.trainable.full_evaluate(run.state, test, progress=bar, **options)
  return {
      "model": run.config.model, "dataset": run.config.dataset, "step": run.step,
      "checkpoint": which, **metrics
  }


NPZ_HELP = "write one with np.savez(path, images=uint8 array) or python -m aigc_jax.sample"
# What a bad file raises while it is read: a zip that is truncated, corrupt (CRC, deflate) or
# encrypted, an .npy header that does not parse, a payload shorter than its header declares.
READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, ValueError,
               NotImplementedError, RuntimeError)


def _npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
  """(shape, fortran_order, dtype) of the .npy member open as `f`, which is left at its data."""
  version = np.lib.format.read_magic(f)
  if version == (1, 0):
    return np.lib.format.read_array_header_1_0(f)
  return np.lib.format.read_array_header_2_0(f)


def _member(zf: zipfile.ZipFile, path: str, key: str):
  """(zip member name, shape, dtype) of the array `key` of an .npz, None when it has none; the
  header is checked against the member's size, so nothing is read that is not there."""
  name = next((n for n in (f"{key}.npy", key) if n in zf.namelist()), None)
  if name is None:
    return None
  with zf.open(name) as f:
    shape, _, dtype = _npy_header(f)
    held = zf.getinfo(name).file_size - f.tell()
  declared = math.prod(shape) * dtype.itemsize
  if declared > held:
    raise UsageError(f"{path}: `{key}` declares {dtype}{shape} ({declared:,} bytes) but holds "
                     f"{held:,} bytes: the file is truncated or was edited; write it again "
                     f"({NPZ_HELP})")
  return name, shape, dtype


def _read_rows(zf: zipfile.ZipFile, name: str, rows: int) -> np.ndarray:
  """The first `rows` rows of the .npy member `name`; its rest is read through (not kept), so
  that a corrupt member fails its CRC check."""
  with zf.open(name) as f:
    shape, fortran, dtype = _npy_header(f)
    if fortran and len(shape) > 1:  # rows are not contiguous: read it whole (size checked)
      with zf.open(name) as whole:
        return np.lib.format.read_array(whole, allow_pickle=False)[:rows]
    data = bytearray(rows * math.prod(shape[1:]) * dtype.itemsize)
    if f.readinto(data) != len(data):
      raise EOFError(f"`{name}` ends before its {rows} rows")
    while f.read(1 << 20):
      pass
  return np.frombuffer(data, dtype).reshape((rows,) + tuple(shape[1:]))


def _check_headers(path: str, dataset: str, images, labels) -> None:
  """Raises UsageError unless the headers of `images` and `labels` ((name, shape, dtype) or
  None) are those of `dataset`'s uint8 images and integer classes."""
  info = data_lib.DATASETS[dataset]
  shape = info.image_shape
  if images is None or images[2] != np.uint8 or not len(
      images[1]) or not (images[1][1:] == shape or (shape[-1] == 1 and images[1][1:] == shape[:2])):
    got = "no `images`" if images is None else f"`images` {images[2]}{images[1]}"
    want = "(N, H, W) or " * (shape[-1] == 1) + "(N, H, W, C)"
    raise UsageError(f"{path} holds {got}; {dataset} needs uint8 {want} with (H, W, C) = "
                     f"{shape}: scale floats in [0, 1] by 255, round and cast to uint8")
  if labels is not None and (labels[1] != images[1][:1] or labels[2].kind not in "iu"):
    raise UsageError(f"{path}: `labels` must be (N,) integer classes in [0, {info.num_classes}), "
                     f"got {labels[2]}{labels[1]}; drop them or fix them")


def _open_npz(path: str) -> zipfile.ZipFile:
  with open(path, "rb") as f:
    magic = f.read(len(np.lib.format.MAGIC_PREFIX))
  if magic == np.lib.format.MAGIC_PREFIX:
    raise UsageError(f"{path} is an .npy file (one array), not an .npz; save the images with "
                     "np.savez(path, images=uint8 array)")
  return zipfile.ZipFile(path)


def load_samples(path: str, dataset: str, num_samples: int = 0):
  """(images uint8 (n, H, W, C), labels (n,) or None) of a samples file; UsageError if unfit.
  Only the first n images are read (n = num_samples, or all of them up to 10000)."""
  if dataset not in data_lib.DATASETS:
    raise UsageError(f"unknown --dataset {dataset!r}; use one of {sorted(data_lib.DATASETS)}")
  info, num = data_lib.DATASETS[dataset], num_samples
  try:
    with _open_npz(path) as zf:
      images, labels = (_member(zf, path, key) for key in ("images", "labels"))
      _check_headers(path, dataset, images, labels)
      held = images[1][0]
      num = num_samples or min(held, 10_000)
      if held < sample_eval.MIN_SAMPLES:
        raise UsageError(f"{path} holds {held} images; the metrics need at least "
                         f"{sample_eval.MIN_SAMPLES}: draw more")
      if held < num:
        raise UsageError(f"{path} holds {held} images, fewer than --num_samples {num}; draw "
                         f"more, or pass --num_samples {held} or less")
      images = _read_rows(zf, images[0], num).reshape((num,) + info.image_shape)
      labels = None if labels is None else _read_rows(zf, labels[0], num)
  except UsageError:
    raise
  except MemoryError:
    raise UsageError(f"{path}: its first {num} images do not fit in this machine's memory; "
                     "pass a smaller --num_samples") from None
  except READ_ERRORS as e:
    raise UsageError(f"cannot read {path} as an .npz file ({type(e).__name__}: {e}); it is "
                     f"truncated, corrupt or of another format: {NPZ_HELP}") from None
  if labels is not None and num and not 0 <= int(labels.min()) <= int(
      labels.max()) < (info.num_classes):
    raise UsageError(f"{path}: `labels` must be (N,) integer classes in [0, {info.num_classes}), "
                     f"got values {int(labels.min())} to {int(labels.max())}; drop them or fix "
                     "them")
  return images, labels


def evaluate_samples_file(path: str, dataset: str = "fashion_mnist", num_samples: int = 0,
                          scoring: dict | None = None, **unused) -> dict:
  """The GAN evaluation's metrics and floors of a samples file (see the module's docstring);
  `scoring` as in `evaluate_workdir`."""
  del unused
  images, labels = load_samples(path, dataset, num_samples)
  metrics = sample_eval.score_images(dataset, images, labels, **(scoring or {}))
  return {"samples": path, "dataset": dataset, **metrics}


def load_ref_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
  """--ref_stats: (mu, sigma) of 2048-d Inception features; UsageError when unfit."""
  try:
    return fid_lib.load_stats(path, dim=inception.FEATURES)
  except ValueError as e:
    raise UsageError(f"--ref_stats {path}: {e}; write one with python -m aigc_jax.fid_stats "
                     "--dataset NAME --split train --out FILE.npz") from None


def check_flags() -> None:
  """Raises UsageError for flag values the evaluation cannot use."""
  if bool(FLAGS.workdir) == bool(FLAGS.samples):
    raise UsageError("give one of --workdir (a training run) or --samples (an .npz), e.g. "
                     "python -m aigc_jax.evaluate --workdir runs/vae")
  if FLAGS.num_samples and FLAGS.num_samples < sample_eval.MIN_SAMPLES:
    raise UsageError(f"--num_samples must be >= {sample_eval.MIN_SAMPLES} (the inception "
                     f"score's splits), got {FLAGS.num_samples}; or 0 for the default")
  for name in ("iwae_samples", "iwae_examples"):
    if FLAGS[name].value < 0:
      raise UsageError(f"--{name} must be >= 1, got {FLAGS[name].value}; or 0 for the config's")
  if FLAGS.metric_net == "classifier" and (FLAGS.ref_stats or FLAGS.resize != "bilinear"):
    raise UsageError("--ref_stats and --resize apply to --metric_net inception only")
  if FLAGS.ref_stats and not os.path.isfile(FLAGS.ref_stats):
    raise UsageError(f"--ref_stats {FLAGS.ref_stats}: no such file; write one with python -m "
                     "aigc_jax.fid_stats --dataset NAME --split train --out FILE.npz")
  if FLAGS.samples and not os.path.isfile(FLAGS.samples):
    raise UsageError(f"--samples {FLAGS.samples}: no such file; write one with "
                     "python -m aigc_jax.sample --workdir DIR --num 10000 --out FILE.npz")


def main(argv: list[str] | None = None) -> None:
  """The command, on its arguments `argv` (default sys.argv[1:])."""
  train.entry.begin("evaluating", "--num_samples, --iwae_examples or --iwae_samples", __name__)
  command_line.parse(FLAGS, argv, __doc__, "python -m aigc_jax.evaluate")
  command_line.use_one_log_format(__name__)
  try:
    check_flags()
    options = {
        name: FLAGS[name].value for name in OPTIONS
        if FLAGS[name].value is not None and (FLAGS[name].value != 0 or name == "guidance_scale")
    }  # 0: the config's
    scoring = {}
    if FLAGS.metric_net != "classifier":
      scoring = {
          "metric_net": FLAGS.metric_net, "resize": FLAGS.resize,
          "ref_stats": load_ref_stats(FLAGS.ref_stats) if FLAGS.ref_stats else None
      }
    if FLAGS.samples:
      result = evaluate_samples_file(FLAGS.samples, FLAGS.dataset, scoring=scoring, **options)
    else:
      which = FLAGS.checkpoint if FLAGS.step is None else FLAGS.step
      result = evaluate_workdir(FLAGS.workdir, which, progress=True, scoring=scoring, **options)
    if FLAGS.ref_stats:
      result["ref_stats"] = FLAGS.ref_stats
  except (UsageError, workdir_lib.CheckpointError, workdir_lib.config_lib.ConfigError,
          data_lib.DataError, classifier_lib.CacheError, inception_weights.WeightsError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
