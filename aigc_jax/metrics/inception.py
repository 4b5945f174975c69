"""Inception-V3 as pytorch-fid computes FID with it: the Flax network and its PyTorch weights.

`FIDInceptionV3` is a port of pytorch-fid's `fid_inception_v3()`: torchvision's Inception-V3 with
the FIDInceptionA/C/E_1/E_2 blocks of TensorFlow's FID graph. BatchNorm epsilon is 1e-3; the
pool branches of the A, C and E_1 blocks average without counting the zero padding
(`count_include_pad=False`), E_2's takes a 3x3 max. It maps (N, 299, 299, 3) float32 images in
[-1, 1] (NHWC) to the 2048-d pool3 features (the final average pool) and the 1008 logits (IS).

`variables_from_state_dict` maps pytorch-fid's state dict (the `.pth` file
pt_inception-2015-12-05-6726825d.pth, or any state dict of the same network) onto its variables;
`Inception` extracts the features and logits of uint8 images, jitted, in batches.
`inception_weights` finds and reads the file; `inception_resize` prepares the images.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from aigc_jax.metrics import inception_resize

BN_EPSILON = 1e-3  # TensorFlow's, as torchvision's BasicConv2d sets it
PRECISION = "highest"  # float32 convolutions on every platform (no TF32 on recent GPUs)
NUM_CLASSES = 1008
FEATURES = 2048
BATCH = 100  # images per forward pass; a smaller N runs as one batch of N


class BasicConv(nn.Module):
  """torchvision's BasicConv2d: convolution without bias, BatchNorm (running statistics), ReLU."""

  features: int
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: tuple[int, int] = (0, 0)
  epsilon: float = BN_EPSILON
  precision: Any = PRECISION

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (ph, pw), s = self.padding, self.stride
    x = nn.Conv(self.features, self.kernel, (s, s), [(ph, ph), (pw, pw)], use_bias=False,
                precision=self.precision, name="conv")(x)
    return nn.relu(nn.BatchNorm(use_running_average=True, epsilon=self.epsilon, name="bn")(x))


def _pair(n: int | tuple[int, int]) -> tuple[int, int]:
  return (n, n) if isinstance(n, int) else tuple(n)


class _Block(nn.Module):
  """What every mixed block shares: its convolutions' options and its padded 3x3 pools."""

  epsilon: float = BN_EPSILON
  pool_counts_padding: bool = False  # torchvision's InceptionA/C/E count it; TF's graph does not
  precision: Any = PRECISION

  def conv(self, name: str, features: int, kernel=1, stride: int = 1, padding=0) -> BasicConv:
    return BasicConv(features, _pair(kernel), stride, _pair(padding), self.epsilon, self.precision,
                     name=name)

  def avg_pool(self, x: jax.Array) -> jax.Array:
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)),
                       count_include_pad=self.pool_counts_padding)


def _max_pool_2(x: jax.Array) -> jax.Array:
  """MaxPool2d(3, stride=2) without padding."""
  return nn.max_pool(x, (3, 3), (2, 2), "VALID")


class FIDInceptionA(_Block):
  pool_features: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.conv("branch1x1", 64)(x)
    b5 = self.conv("branch5x5_2", 64, 5, padding=2)(self.conv("branch5x5_1", 48)(x))
    b3 = self.conv("branch3x3dbl_1", 64)(x)
    b3 = self.conv("branch3x3dbl_2", 96, 3, padding=1)(b3)
    b3 = self.conv("branch3x3dbl_3", 96, 3, padding=1)(b3)
    pool = self.conv("branch_pool", self.pool_features)(self.avg_pool(x))
    return jnp.concatenate([b1, b5, b3, pool], axis=-1)


class InceptionB(_Block):

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv("branch3x3", 384, 3, stride=2)(x)
    dbl = self.conv("branch3x3dbl_1", 64)(x)
    dbl = self.conv("branch3x3dbl_2", 96, 3, padding=1)(dbl)
    dbl = self.conv("branch3x3dbl_3", 96, 3, stride=2)(dbl)
    return jnp.concatenate([b3, dbl, _max_pool_2(x)], axis=-1)


class FIDInceptionC(_Block):
  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7, row, col = self.channels_7x7, ((1, 7), (0, 3)), ((7, 1), (3, 0))
    b1 = self.conv("branch1x1", 192)(x)
    b7 = self.conv("branch7x7_1", c7)(x)
    b7 = self.conv("branch7x7_2", c7, row[0], padding=row[1])(b7)
    b7 = self.conv("branch7x7_3", 192, col[0], padding=col[1])(b7)
    dbl = self.conv("branch7x7dbl_1", c7)(x)
    for i, (features, (kernel, padding)) in enumerate([(c7, col), (c7, row), (c7, col), (192, row)],
                                                      start=2):
      dbl = self.conv(f"branch7x7dbl_{i}", features, kernel, padding=padding)(dbl)
    pool = self.conv("branch_pool", 192)(self.avg_pool(x))
    return jnp.concatenate([b1, b7, dbl, pool], axis=-1)


class InceptionD(_Block):

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv("branch3x3_2", 320, 3, stride=2)(self.conv("branch3x3_1", 192)(x))
    b7 = self.conv("branch7x7x3_1", 192)(x)
    b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
    b7 = self.conv("branch7x7x3_4", 192, 3, stride=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool_2(x)], axis=-1)


class FIDInceptionE(_Block):
  """FIDInceptionE_1 (`max_pool` False: an average pool) or FIDInceptionE_2 (a max pool)."""

  max_pool: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:

    def split(name: str, y: jax.Array) -> jax.Array:
      return jnp.concatenate([
          self.conv(f"{name}a", 384, (1, 3), padding=(0, 1))(y),
          self.conv(f"{name}b", 384, (3, 1), padding=(1, 0))(y)
      ], axis=-1)

    b1 = self.conv("branch1x1", 320)(x)
    b3 = split("branch3x3_2", self.conv("branch3x3_1", 384)(x))
    dbl = self.conv("branch3x3dbl_2", 384, 3, padding=1)(self.conv("branch3x3dbl_1", 448)(x))
    dbl = split("branch3x3dbl_3", dbl)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    else:
      pooled = self.avg_pool(x)
    pool = self.conv("branch_pool", 192)(pooled)
    return jnp.concatenate([b1, b3, dbl, pool], axis=-1)


class FIDInceptionV3(nn.Module):
  """(N, 299, 299, 3) images in [-1, 1] -> ((N, 2048) pool3 features, (N, 1008) logits).

  Module and variable names follow the PyTorch state dict (`variables_from_state_dict`).
  `bn_epsilon` and `pool_counts_padding` are pytorch-fid's network at their defaults.
  """

  bn_epsilon: float = BN_EPSILON
  pool_counts_padding: bool = False
  precision: Any = PRECISION
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    conv = functools.partial(BasicConv, epsilon=self.bn_epsilon, precision=self.precision)
    block = dict(epsilon=self.bn_epsilon, pool_counts_padding=self.pool_counts_padding,
                 precision=self.precision)
    x = conv(32, (3, 3), 2, name="Conv2d_1a_3x3")(x)
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = _max_pool_2(conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x))
    x = conv(80, name="Conv2d_3b_1x1")(x)
    x = _max_pool_2(conv(192, (3, 3), name="Conv2d_4a_3x3")(x))
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = FIDInceptionA(pool_features=pool_features, name=name, **block)(x)
    x = InceptionB(name="Mixed_6a", **block)(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = FIDInceptionC(channels_7x7=c7, name=name, **block)(x)
    x = InceptionD(name="Mixed_7a", **block)(x)
    x = FIDInceptionE(max_pool=False, name="Mixed_7b", **block)(x)
    x = FIDInceptionE(max_pool=True, name="Mixed_7c", **block)(x)
    features = x.mean(axis=(1, 2))
    return features, nn.Dense(self.num_classes, precision=self.precision, name="fc")(features)


@functools.lru_cache(maxsize=None)
def _expected(num_classes: int = NUM_CLASSES) -> dict[tuple[str, ...], tuple[int, ...]]:
  """The network's variables as {(collection, *path): shape}."""
  shapes = jax.eval_shape(
      FIDInceptionV3(num_classes=num_classes).init, jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
  return {k: v.shape for k, v in traverse_util.flatten_dict(shapes).items()}


# (last module, PyTorch leaf) -> (collection, Flax leaf, how the array is laid out)
_LEAVES = {
    ("conv", "weight"): ("params", "kernel", (2, 3, 1, 0)),  # OIHW -> HWIO
    ("bn", "weight"): ("params", "scale", None),
    ("bn", "bias"): ("params", "bias", None),
    ("bn", "running_mean"): ("batch_stats", "mean", None),
    ("bn", "running_var"): ("batch_stats", "var", None),
    ("fc", "weight"): ("params", "kernel", (1, 0)),
    ("fc", "bias"): ("params", "bias", None)
}


def variables_from_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """The {'params', 'batch_stats'} of `FIDInceptionV3` from pytorch-fid's state dict.

  Keys are those of `fid_inception_v3().state_dict()` (``Mixed_5b.branch1x1.conv.weight``, ...,
  ``fc.bias``); values are arrays or CPU tensors. BatchNorm's ``num_batches_tracked`` is ignored.
  Raises ValueError unless every variable is filled exactly once with the right shape, and no
  other key is present.
  """
  flat, names = {}, {}
  for key, value in state_dict.items():
    *path, leaf = key.split(".")
    if leaf == "num_batches_tracked":
      continue
    where = _LEAVES.get((path[-1] if path else "", leaf))
    if where is None:
      raise ValueError(f"state dict key {key!r} is not a variable of the FID Inception network")
    collection, name, axes = where
    array = np.asarray(value, np.float32)
    flat[(collection, *path, name)] = array if axes is None else array.transpose(axes)
    names[(collection, *path, name)] = key
  expected = _expected()
  missing, unexpected = sorted(set(expected) - set(flat)), sorted(set(flat) - set(expected))
  if missing or unexpected:
    raise ValueError(f"the state dict is not the FID Inception network's: missing {len(missing)} "
                     f"variables {['.'.join(k[1:]) for k in missing[:3]]} (as Flax), unexpected "
                     f"keys {[names[k] for k in unexpected[:3]]}")
  for k, shape in expected.items():
    if flat[k].shape != shape:
      raise ValueError(f"state dict {'.'.join(k[1:])} has shape {flat[k].shape} (as Flax), "
                       f"expected {shape}")
  return traverse_util.unflatten_dict(flat)


@dataclasses.dataclass(frozen=True, eq=False)
class Inception:
  """Pool3 features and logits of uint8 images; the interface of `classifier_net.Classifier`
  that `sample_metrics` uses (`features_and_logits`, `features`, `variables`, `path`).

  `resize`: one of `inception_resize.MODES` ('bilinear': pytorch-fid's; 'clean': clean-fid's).
  `path`: where floors are cached (None: not cached). `weights_sha256`: of the weights file.
  """

  variables: Any
  model: FIDInceptionV3 = dataclasses.field(default_factory=FIDInceptionV3)
  resize: str = "bilinear"
  batch_size: int = BATCH
  path: str | None = None
  weights_sha256: str = ""

  def __post_init__(self):
    if self.resize not in inception_resize.MODES:
      raise ValueError(f"resize must be one of {inception_resize.MODES}, got {self.resize!r}")

  @functools.cached_property
  def _apply(self) -> Callable:

    def run(variables, images):
      return self.model.apply(variables, inception_resize.preprocess(images, self.resize))

    return jax.jit(run)

  @functools.cached_property
  def _device_variables(self) -> Any:
    return jax.device_put(self.variables)

  def features_and_logits(self, images) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2048) features and (N, 1008) logits, float32, of uint8 images
    (`inception_resize.as_images`), in batches of `batch_size` (the last one padded), or one
    batch of N when N is smaller."""
    x = inception_resize.as_images(images)
    batch = min(self.batch_size, len(x))
    feats, logits = [], []
    for start in range(0, len(x), batch):
      chunk = x[start:start + batch]
      padded = np.pad(chunk, ((0, batch - len(chunk)), (0, 0), (0, 0), (0, 0)))
      feat, logit = self._apply(self._device_variables, padded)
      feats.append(np.asarray(feat)[:len(chunk)])
      logits.append(np.asarray(logit)[:len(chunk)])
    return np.concatenate(feats), np.concatenate(logits)

  def features(self, images) -> np.ndarray:
    """(N, 2048) float32 pool3 features of uint8 images."""
    return self.features_and_logits(images)[0]
