"""Shared fixtures. Tests that need real data skip cleanly where Fashion-MNIST is absent.

The suite runs on CPU devices, also on a machine with a GPU or TPU, and so do the processes it
starts. A run that selects the `accelerator` tests (`-m accelerator`, or the environment variable
AIGC_JAX_TEST_ACCELERATOR=1) keeps JAX's default backend instead; so does an explicit
JAX_PLATFORMS. Tests marked `accelerator` skip unless the default backend is a GPU or TPU.
"""

import os

import jax
import pytest

ACCELERATOR_ENV = "AIGC_JAX_TEST_ACCELERATOR"
ACCELERATOR_BACKENDS = ("gpu", "tpu")

# Four fake CPU devices for the data-parallel tests (set before JAX starts its backend; the other
# tests run on the first device as before).
jax.config.update("jax_num_cpu_devices", 4)

from aigc_jax import data as data_lib  # noqa: E402

FASHION_DIR = data_lib.DATASETS["fashion_mnist"].debian_dir


def has_fashion_mnist() -> bool:
  return os.path.isdir(FASHION_DIR) and any(
      name.startswith("t10k-labels") for name in os.listdir(FASHION_DIR))


@pytest.fixture(name="cache_dir", scope="session")
def fixture_cache_dir(tmp_path_factory):
  """A metrics cache whose default-recipe classifier is a quick stand-in (2 epochs on 2,048
  images): point AIGC_JAX_CACHE here to evaluate GANs without the full classifier."""
  from aigc_jax.metrics import classifier as clf_lib  # pylint: disable=g-import-not-at-top
  cache = str(tmp_path_factory.mktemp("cache"))
  variables, info = clf_lib.train(clf_lib.resolve_recipe(train_examples=2048, epochs=2),
                                  progress=False)
  clf_lib.save(clf_lib.cache_path(clf_lib.RECIPE, cache), variables,
               {**info, "key": clf_lib.recipe_key(clf_lib.RECIPE)})
  return cache


needs_fashion_mnist = pytest.mark.skipif(
    not has_fashion_mnist(),
    reason=f"Fashion-MNIST not in {FASHION_DIR} (make setup installs dataset-fashion-mnist)")


def selects_accelerator(config: pytest.Config) -> bool:
  """True when the run asks for the accelerator tests (env, or `-m` naming the mark un-negated)."""
  if os.environ.get(ACCELERATOR_ENV, "") not in ("", "0"):
    return True
  words = (config.getoption("markexpr", "") or "").replace("(", " ").replace(")", " ").split()
  return any(word == "accelerator" and (i == 0 or words[i - 1] != "not")
             for i, word in enumerate(words))


def pytest_configure(config: pytest.Config) -> None:
  """Pins this process and its subprocesses to CPU before JAX starts a backend."""
  if selects_accelerator(config) or os.environ.get("JAX_PLATFORMS"):
    return
  os.environ["JAX_PLATFORMS"] = "cpu"
  jax.config.update("jax_platforms", "cpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
  """Skips the `accelerator` tests where the default backend is neither GPU nor TPU."""
  marked = [item for item in items if item.get_closest_marker("accelerator")]
  if not marked or jax.default_backend() in ACCELERATOR_BACKENDS:
    return
  skip = pytest.mark.skip(reason=f"needs a GPU or TPU; the default backend is "
                                 f"{jax.default_backend()} (see {ACCELERATOR_ENV} in conftest)")
  for item in marked:
    item.add_marker(skip)
