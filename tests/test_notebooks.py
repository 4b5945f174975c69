"""The notebooks, run as Jupyter runs them (nbclient, an ipykernel of this interpreter) on tiny
runs made here: each finishes without error and shows what it promises."""

import base64
import io
import json
import os
import sys

import numpy as np
import pytest
from helpers import small_config
from helpers import write_idx
from PIL import Image

from aigc_jax import config as config_lib
from aigc_jax import train
from aigc_jax.metrics import classifier as clf_lib
from conftest import needs_fashion_mnist

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (after the skips)
from jupyter_client.manager import KernelManager  # noqa: E402

pytestmark = pytest.mark.slow  # each starts a kernel that imports JAX and compiles: 10-30 s

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
KERNEL = "aigc_jax_test"


@pytest.fixture(name="kernels", scope="module")
def fixture_kernels(tmp_path_factory):
  """A directory with one kernelspec, KERNEL: an ipykernel of sys.executable (this venv)."""
  kernels = tmp_path_factory.mktemp("kernels")
  os.makedirs(kernels / KERNEL)
  spec = {
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "aigc_jax test", "language": "python"
  }
  (kernels / KERNEL / "kernel.json").write_text(json.dumps(spec))
  return str(kernels)


def execute(name, kernels):
  """notebooks/NAME.ipynb executed in NOTEBOOKS by a fresh kernel that inherits os.environ;
  nbclient raises CellExecutionError at the first cell that fails."""
  nb = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
  km = KernelManager(kernel_name=KERNEL,
                     kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels]))
  nbclient.NotebookClient(nb, km=km, timeout=300,
                          resources={"metadata": {"path": NOTEBOOKS}}).execute()
  return nb


def outputs(nb):
  return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def text(nb) -> str:
  """Printed text and the text/plain of results, all cells."""
  return "".join(
      out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in outputs(nb))


def pictures(nb) -> list:
  """The image/png outputs, as PIL images."""
  return [
      Image.open(io.BytesIO(base64.b64decode(out.data["image/png"]))) for out in outputs(nb)
      if "image/png" in out.get("data", {})
  ]


@pytest.fixture(name="rgb_idx_dir", scope="module")
def fixture_rgb_idx_dir(tmp_path_factory):
  """64 train / 32 test 32x32x3 images (CIFAR-10's shape): a blob whose colour is the label's."""
  directory = tmp_path_factory.mktemp("rgb_idx")
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:32, :32]
  blob = np.exp(-((yy - 16)**2 + (xx - 16)**2) / 60.0)
  for prefix, n in (("train", 64), ("t10k", 32)):
    labels = rng.integers(0, 10, n)
    colour = np.stack([labels % 3 == c for c in range(3)], -1) * 200.0 + 20  # (n, 3)
    images = blob[None, :, :, None] * colour[:, None, None] + rng.uniform(0, 10, (n, 32, 32, 3))
    write_idx(directory / f"{prefix}-images-idx3-ubyte", np.clip(images, 0, 255))
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)
  return str(directory)


@pytest.mark.parametrize("colour", [False, True], ids=["gray", "rgb"])
def test_explore_vae(idx_dir, rgb_idx_dir, kernels, tmp_path, monkeypatch, colour):
  """Gray: a conditional VAE on 28x28x1; rgb: an unconditional one on 32x32x3, shown in colour."""
  workdir = str(tmp_path / "vae")
  if colour:
    config = small_config(rgb_idx_dir, dataset="cifar10", num_train_steps=8, eval_batch_size=32)
  else:
    config = small_config(idx_dir, num_train_steps=8, conditional=True)
  train.train_and_evaluate(config, workdir)
  monkeypatch.setenv("AIGC_JAX_WORKDIR", workdir)
  monkeypatch.setenv("AIGC_JAX_IWAE_SAMPLES", "10")
  monkeypatch.setenv("AIGC_JAX_IWAE_EXAMPLES", "8")
  nb = execute("explore_vae", kernels)
  samples, walk = pictures(nb)
  side = 32 if colour else 28
  assert {samples.mode, walk.mode} == {"RGB" if colour else "L"}
  assert walk.size == (2 * (10 * (side + 2) + 2), 2 * (6 * (side + 2) + 2))  # 6 walks of 10
  if colour:  # not gray stored as RGB
    rgb = np.asarray(samples, np.int32)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() > 0
  printed = text(nb)
  assert f"({side}, {side}, {3 if colour else 1})" in printed
  assert "'nll_iwae_samples': 10" in printed and "'nll_iwae':" in printed


@needs_fashion_mnist  # the metrics classifier's stand-in trains on it
def test_explore_gan(idx_dir, cache_dir, kernels, tmp_path, monkeypatch):
  """A self-conditioned DCGAN (4 pixel clusters, 4 steps), evaluated on 32 samples."""
  monkeypatch.setenv(clf_lib.CACHE_ENV, cache_dir)
  workdir = str(tmp_path / "gan")
  config = config_lib.get_config("dcgan", idx_dir=idx_dir, pixel_clusters=4, label_mode="concat",
                                 latent_dim=8, d_base_features=4, batch_size=16, num_train_steps=4,
                                 log_every_steps=4, eval_every_steps=4, eval_num_samples=32,
                                 num_sample_images=16, steps_per_call=1, progress_bar=False)
  train.train_and_evaluate(config, workdir)
  monkeypatch.setenv("AIGC_JAX_GAN_WORKDIR", workdir)
  monkeypatch.setenv("AIGC_JAX_EVAL_SAMPLES", "32")
  nb = execute("explore_gan", kernels)
  samples, walk, neighbours, histogram = pictures(nb)
  assert samples.size == (2 * (4 * 30 + 2), 2 * (4 * 30 + 2))  # 4 clusters x 4 samples
  assert walk.size == (2 * (10 * 30 + 2), 2 * (6 * 30 + 2))
  assert neighbours.size == (2 * (6 * 30 + 2), 2 * (8 * 30 + 2))  # a sample and 5 neighbours
  assert histogram.mode in ("RGB", "RGBA")  # matplotlib's
  printed = text(nb)
  assert "4 labels, each a pixel cluster" in printed
  assert "median of 64: samples" in printed  # the 64 test images of idx_dir
  assert "'fid':" in printed and "'fid_floor':" in printed and "'num_samples': 32" in printed


def test_benchmark(kernels, monkeypatch):
  """Two batches and two steps-per-call values of the MLP VAE (the quickest), a few steps each."""
  for name, value in (("MODEL", "vae_mlp"), ("BATCHES", "16,32"), ("BATCH_STEPS_PER_CALL", "1"),
                      ("STEPS_PER_CALL", "1,4"), ("BATCH", "16"), ("STEPS", "4"), ("IMAGES",
                                                                                   "512")):
    monkeypatch.setenv(f"AIGC_JAX_BENCH_{name}", value)
  nb = execute("benchmark", kernels)
  assert len(pictures(nb)) == 2  # the two plots
  printed = text(nb)
  assert printed.count("ms/step") == 4 + ("PyTorch eager on" in printed) * 2
  assert "vae_mlp batch 32" in printed and "4 step(s) per call" in printed
