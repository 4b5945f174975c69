"""The U-Net: output shape, its time embedding against the closed form, the time and the labels
reaching the output, and the patch folding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import key
from helpers import numpy_variables

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax.families import diffusion
from aigc_jax.models import layers
from aigc_jax.models import unet


def small(**kwargs):
  return unet.UNet(**{**dict(base_features=8, multipliers=(1, 2), heads=2), **kwargs})


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3)])
@pytest.mark.parametrize("patch", [1, 2])
def test_output_has_the_input_s_shape(size, channels, patch):
  model = small(out_channels=channels, patch=patch, num_classes=10)
  x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
  t, labels = jax.ShapeDtypeStruct((2,), jnp.float32), jax.ShapeDtypeStruct((2,), jnp.int32)

  def init_apply(*args):
    variables = model.init(key(), *args)
    return variables, model.apply(variables, *args)

  variables, out = jax.eval_shape(init_apply, x, t, labels)  # traced only: nothing compiles
  assert out.shape == x.shape and out.dtype == jnp.float32
  assert variables["params"]["Conv_0"]["kernel"].shape == (3, 3, channels * patch**2, 8)
  assert variables["params"]["Embed_0"]["embedding"].shape == (11, 32)  # + the null label


def test_time_embedding_is_sinusoids_of_1000_t():
  """dim 4: frequencies 1 and 10000^(-1/2); angles 1000 t times each."""
  got = unet.time_embedding(jnp.array([0.0, 0.5]), 4)
  want = [[0.0, 0.0, 1.0, 1.0], [math.sin(500), math.sin(5), math.cos(500), math.cos(5)]]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_time_and_the_label_of_each_example_change_its_output():
  """Three copies of one image: the same time and label give the same output; another time, or
  another label, another output (non-zero weights: the output layers start at zero)."""
  model = small(out_channels=1, num_classes=3, multipliers=(1,))
  x = jnp.broadcast_to(
      jnp.asarray(np.random.default_rng(0).uniform(size=(1, 8, 8, 1)), jnp.float32), (4, 8, 8, 1))
  t, labels = jnp.array([0.2, 0.2, 0.7, 0.2]), jnp.array([1, 1, 1, 2])
  variables = numpy_variables(model, x, t, labels)
  out = np.asarray(jax.jit(model.apply)(variables, x, t, labels))
  np.testing.assert_allclose(out[1], out[0], rtol=1e-6, atol=1e-6)
  assert np.abs(out[2] - out[0]).max() > 1e-3 and np.abs(out[3] - out[0]).max() > 1e-3


def test_space_to_depth_is_the_inverse_of_depth_to_space():
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  folded = unet.space_to_depth(x, 2)
  assert folded.shape == (2, 2, 3, 12)
  np.testing.assert_array_equal(folded[0, 0, 0], x[0, :2, :2].reshape(-1))  # one 2x2 patch
  np.testing.assert_array_equal(layers.depth_to_space(folded, 2), x)


@pytest.mark.parametrize("side,channels,multipliers", [(28, 1, (1, 2)), (32, 3, (1, 2)),
                                                       (64, 3, (1, 1, 2)), (64, 1, (1, 1, 2))])
def test_the_family_s_unet_has_one_more_level_at_side_64(side, channels, multipliers):
  """Sides 28 and 32: the config's levels (1, 2); 64: one more, full-resolution, level in front."""
  config = config_lib.get_config("unet", base_features=8, multipliers=(1, 2), attention_heads=2)
  info = data_lib.DatasetInfo(f"x{side}", (side, side, channels), 10, "x", None)
  model = diffusion.build_model(config, info)
  assert model.multipliers == multipliers
  x, t = jnp.zeros((2, side, side, channels)), jnp.zeros((2,))
  variables, out = jax.eval_shape(lambda: (lambda v: (v, model.apply(v, x, t)))
                                  (model.init(key(), x, t)))
  assert out.shape == x.shape
  params, levels = variables["params"], len(multipliers)
  assert sum(name.startswith("ResBlock_") for name in params) == 3 * levels + 2  # 1 down, 2 up
  # the first conv, one after each upsampling (from 2 * 8 channels first, then 8), the last
  assert sorted(name for name in params if name.startswith("Conv_")) == [
      f"Conv_{i}" for i in range(levels + 1)
  ]
  assert params["Conv_1"]["kernel"].shape == (3, 3, 16, 8)
  assert params[f"Conv_{levels}"]["kernel"].shape == (3, 3, 8, channels)


def test_the_family_s_unet_refuses_other_sides():
  config = config_lib.get_config("unet")
  for shape in ((48, 48, 3), (30, 30, 1)):
    with pytest.raises(ValueError, match="U-Net builds for square images of side 28, 32, 64"):
      diffusion.build_model(config, data_lib.DatasetInfo("x", shape, 10, "x", None))
