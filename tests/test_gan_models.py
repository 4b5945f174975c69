"""GAN models: shapes and ranges, conditioning, a hand-computed MLP generator, spectral norm."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import key
from helpers import numpy_variables
from helpers import top_singular_value

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax.models import gan

B, Z = 3, 6
IMAGE = (28, 28, 1)
LABELS = jnp.array([0, 1, 2])

X64 = data_lib.DatasetInfo("x64", (64, 64, 3), 10, "x64", None)


def z_batch():  # numpy draws: no XLA compilation
  return jnp.asarray(np.random.default_rng(0).normal(size=(B, Z)), jnp.float32)


def images():
  return jnp.asarray(np.random.default_rng(1).uniform(-1.0, 1.0, (B,) + IMAGE), jnp.float32)


def abstract_init_apply(model, *args):
  """Shapes of the variables and of the train-mode output, traced only (nothing runs)."""

  def run(*args):
    variables = model.init(key(), *args, train=False)
    return variables, model.apply(variables, *args, train=True, mutable=["batch_stats"])[0]

  return jax.eval_shape(run, *args)


def small_mlp_g(**kw):
  return gan.MLPGenerator(IMAGE, hidden_dims=(8, 16), **kw)


def small_dcgan_g(**kw):
  return gan.DCGANGenerator(IMAGE, base_features=8, **kw)


MODELS = {
    "mlp_g":
        lambda: small_mlp_g(),
    "mlp_g_no_bn":
        lambda: small_mlp_g(use_bn=False),
    "mlp_g_multiply":
        lambda: small_mlp_g(num_classes=3),
    "mlp_g_concat":
        lambda: small_mlp_g(num_classes=3, label_mode="concat"),
    **{f"dcgan_g_{m}": functools.partial(small_dcgan_g, upsample=m) for m in gan.UPSAMPLE_MODES},
    "dcgan_g_cond":
        lambda: small_dcgan_g(num_classes=3),
    "dcgan_g_final":
        lambda: small_dcgan_g(final_features=2),
    "mlp_d":
        lambda: gan.MLPDiscriminator(hidden_dims=(8, 4)),
    "mlp_d_sn":
        lambda: gan.MLPDiscriminator(hidden_dims=(8, 4), spectral_norm=True),
    "mlp_d_proj":
        lambda: gan.MLPDiscriminator(hidden_dims=(8, 4), num_classes=3),
    "dcgan_d":
        lambda: gan.DCGANDiscriminator(base_features=4),
    "dcgan_d_proj":
        lambda: gan.DCGANDiscriminator(base_features=4, num_classes=3),
    "dcgan_d_proj_sn":
        lambda: gan.DCGANDiscriminator(base_features=4, num_classes=3, spectral_norm=True),
    "acgan_d":
        lambda: gan.DCGANDiscriminator(base_features=4, num_classes=3, aux_classifier=True),
    "acgan_d_sn":
        lambda: gan.DCGANDiscriminator(base_features=4, num_classes=3, aux_classifier=True,
                                       spectral_norm=True),
}
GENERATORS = sorted(name for name in MODELS if name.split("_")[1] == "g")


@functools.lru_cache(maxsize=None)
def outputs(name):
  """A model's (train-mode, eval-mode, eval-mode with other labels) outputs: one compilation.

  The input is z for generators and images for discriminators; the labels are LABELS, then
  LABELS + 1 (mod 3) for the third output (None throughout for unconditional models and ACGAN).
  """
  model = MODELS[name]()
  x = z_batch() if name in GENERATORS else images()
  takes_label = model.num_classes and not getattr(model, "aux_classifier", False)
  labels = (LABELS, (LABELS + 1) % 3) if takes_label else (None, None)

  variables = numpy_variables(model, x, labels[0], train=False)

  @jax.jit
  def run(variables, x, labels):
    out, _ = model.apply(variables, x, labels[0], train=True, mutable=["batch_stats"])
    return (out, model.apply(variables, x, labels[0],
                             train=False), model.apply(variables, x, labels[1], train=False))

  return run(variables, x, labels)


@pytest.mark.slow
@pytest.mark.parametrize("name", GENERATORS)
def test_generator_shape_and_range(name):
  for out in outputs(name)[:2]:
    assert out.shape == (B,) + IMAGE
    assert out.dtype == jnp.float32
    assert bool(jnp.all(jnp.abs(out) <= 1.0)) and float(jnp.std(out)) > 0


@pytest.mark.parametrize(
    "name", ["mlp_d", "mlp_d_sn", "mlp_d_proj", "dcgan_d", "dcgan_d_proj", "dcgan_d_proj_sn"])
def test_discriminator_logit_shape(name):  # (the ACGAN heads are tested below)
  for logit in outputs(name)[:2]:
    assert logit.shape == (B,) and logit.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logit))) and float(jnp.std(logit)) > 0


@pytest.mark.parametrize("name", ["acgan_d", "acgan_d_sn"])
def test_acgan_discriminator_heads(name):
  for logit, class_logits in outputs(name)[:2]:
    assert logit.shape == (B,) and class_logits.shape == (B, 3)
  with pytest.raises(ValueError, match="num_classes"):
    abstract_init_apply(gan.DCGANDiscriminator(base_features=4, aux_classifier=True), images())


@pytest.mark.parametrize("name", [
    "mlp_g_multiply", "mlp_g_concat", "dcgan_g_cond", "mlp_d_proj", "dcgan_d_proj",
    "dcgan_d_proj_sn"
])
def test_conditional_output_depends_on_label(name):
  _, out_a, out_b = outputs(name)
  per_example = jnp.max(jnp.abs(out_a - out_b).reshape(B, -1), axis=1)
  assert float(jnp.min(per_example)) > 1e-4, per_example


def test_dcgan_upsample_modes_same_shape_different_layers():
  shapes, kernels = set(), set()
  for mode in gan.UPSAMPLE_MODES:
    variables, out = abstract_init_apply(small_dcgan_g(upsample=mode), z_batch(), None)
    shapes.add(out.shape)
    up = variables["params"]["up_0"]
    kernels.add(up["kernel"].shape if mode == "resize_conv" else up["Conv_0"]["kernel"].shape)
  assert shapes == {(B,) + IMAGE}
  # subpixel: 3x3 to 4 * 4 channels; resize_conv: 3x3 to 4; transpose: 2x2 to 4 * 4 (no bias).
  assert kernels == {(3, 3, 8, 16), (3, 3, 8, 4), (2, 2, 8, 16)}


def test_dcgan_final_features_adds_a_full_resolution_stage():
  variables, out = abstract_init_apply(small_dcgan_g(final_features=2), z_batch(), None)
  params = variables["params"]
  assert out.shape == (B,) + IMAGE
  assert params["up_1"]["Conv_0"]["kernel"].shape == (3, 3, 4, 4 * 2)  # to 2 channels, 2x
  assert params["out"]["kernel"].shape == (3, 3, 2, IMAGE[-1])  # full-resolution 3x3 conv
  assert "out" not in abstract_init_apply(small_dcgan_g(), z_batch(), None)[0]["params"]


def test_rotate_quarters_turns_example_i_by_i_mod_4_quarter_turns():
  x = jnp.arange(5 * 3 * 3, dtype=jnp.float32).reshape(5, 3, 3, 1)
  turned, rotation = gan.rotate_quarters(x)
  np.testing.assert_array_equal(rotation, [0, 1, 2, 3, 0])
  first = np.arange(9).reshape(3, 3)
  # one quarter turn counter-clockwise: the last column becomes the first row
  np.testing.assert_array_equal(turned[1, ..., 0], np.array([[2, 5, 8], [1, 4, 7], [0, 3, 6]]) + 9)
  np.testing.assert_array_equal(turned[2, ..., 0], first[::-1, ::-1] + 18)
  np.testing.assert_array_equal(turned[0], x[0])
  np.testing.assert_array_equal(turned[4], x[4])
  with pytest.raises(ValueError, match="square"):
    gan.rotate_quarters(jnp.zeros((2, 4, 3, 1)))


@pytest.mark.parametrize("aux", [False, True])
def test_dcgan_discriminator_rotation_head(aux):
  model = gan.DCGANDiscriminator(base_features=4, num_classes=3 if aux else 0, aux_classifier=aux,
                                 rotation_head=True)
  _, (out, rotation_logits) = abstract_init_apply(model, images())
  assert rotation_logits.shape == (B, 4)
  assert (out[0] if aux else out).shape == (B,)


def test_models_reject_bad_config():
  with pytest.raises(ValueError, match="upsample"):
    abstract_init_apply(small_dcgan_g(upsample="bilinear"), z_batch(), None)
  with pytest.raises(ValueError, match="needs a label"):
    abstract_init_apply(small_mlp_g(num_classes=3), z_batch(), None)
  with pytest.raises(ValueError, match="needs a label"):
    abstract_init_apply(gan.DCGANDiscriminator(base_features=4, num_classes=3), images(), None)
  for side in (30, 48):
    with pytest.raises(ValueError,
                       match="DCGANGenerator builds for square images of side 28, 32, 64"):
      abstract_init_apply(gan.DCGANGenerator((side, side, 1), base_features=4), z_batch(), None)
    with pytest.raises(ValueError, match="DCGANDiscriminator builds for .* 28, 32, 64"):
      abstract_init_apply(gan.DCGANDiscriminator(base_features=4), jnp.zeros((B, side, side, 1)))
  with pytest.raises(ValueError, match="square"):
    abstract_init_apply(gan.DCGANGenerator((32, 28, 1), base_features=4), z_batch(), None)


def param_shapes(variables) -> dict:
  """{'layer/.../kernel': shape} of the 'params' collection."""
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  return {"/".join(str(k.key) for k in path): leaf.shape for path, leaf in flat}


@pytest.mark.parametrize("side,channels,start", [(28, 1, 7), (32, 3, 8), (64, 3, 8), (64, 1, 8)])
def test_dcgan_generator_stages_per_image_side(side, channels, start):
  """28 and 32: two 2x stages from 7x7 / 8x8, widths F, F/2 (as before 64 was supported); 64:
  three from 8x8, widths F, F/2, F/4 (F = 8 here, Z = 6)."""
  model = gan.DCGANGenerator((side, side, channels), base_features=8)
  variables, out = abstract_init_apply(model, z_batch(), None)
  assert out.shape == (B, side, side, channels)
  shapes = param_shapes(variables)
  assert shapes["Dense_0/kernel"] == (Z, start * start * 8)
  assert shapes["up_0/Conv_0/kernel"] == (3, 3, 8, 4 * 4)  # sub-pixel: 4x the output channels
  if side < 64:
    assert shapes["up_1/Conv_0/kernel"] == (3, 3, 4, 4 * channels)
    assert {k.split("/")[0] for k in shapes
           } == {"Dense_0", "BatchNorm_0", "BatchNorm_1", "up_0", "up_1"}
  else:
    assert shapes["up_1/Conv_0/kernel"] == (3, 3, 4, 4 * 2)
    assert shapes["up_2/Conv_0/kernel"] == (3, 3, 2, 4 * channels)
    assert shapes["BatchNorm_2/scale"] == (2,)
    assert "up_3" not in variables["params"] and "BatchNorm_3" not in variables["params"]


@pytest.mark.parametrize("side,channels", [(28, 1), (32, 3), (64, 3), (64, 1)])
def test_dcgan_discriminator_stages_per_image_side(side, channels):
  """28 and 32: convs of F and 2F to 7x7 / 8x8 (as before); 64: a third of 4F to 8x8 (F = 4)."""
  model = gan.DCGANDiscriminator(base_features=4)
  x = jnp.zeros((B, side, side, channels))
  variables, logit = abstract_init_apply(model, x)
  assert logit.shape == (B,)
  shapes = param_shapes(variables)
  assert shapes["Conv_0/kernel"] == (4, 4, channels, 4)
  assert shapes["Conv_1/kernel"] == (4, 4, 4, 8)
  if side < 64:
    assert shapes["logit/kernel"] == ((side // 4)**2 * 8, 1)
    assert set(variables["params"]) == {"Conv_0", "Conv_1", "BatchNorm_0", "logit"}
  else:
    assert shapes["Conv_2/kernel"] == (4, 4, 8, 16)
    assert shapes["BatchNorm_1/scale"] == (16,)  # BatchNorm on every conv but the first
    assert shapes["logit/kernel"] == (8 * 8 * 16, 1)
  sn = abstract_init_apply(gan.DCGANDiscriminator(base_features=4, spectral_norm=True), x)[0]
  assert "BatchNorm_0" not in sn["params"] and len(sn["batch_stats"]) == (4 if side == 64 else 3)


def test_the_dcgan_family_refuses_sides_it_cannot_build():
  """(Its training at 64 pixels: tests/test_folder_experiments.py.)"""
  config = config_lib.get_config("dcgan", latent_dim=8, g_base_features=8, d_base_features=4)
  family = families.get("dcgan")
  with pytest.raises(ValueError, match="dataset x48.*28, 32, 64"):
    family.build_models(config, dataclasses.replace(X64, name="x48", image_shape=(48, 48, 3)))


def test_mlp_generator_by_hand():
  """Eval mode: BN with fresh running stats (0, 1) is x / sqrt(1 + eps), eps = 0.8; none first."""
  model = gan.MLPGenerator((2, 2, 1), hidden_dims=(5, 4))
  z = z_batch()
  variables = numpy_variables(model, z, train=False)
  p = jax.tree_util.tree_map(np.asarray, variables["params"])
  assert set(p) == {"Dense_0", "Dense_1", "Dense_2", "BatchNorm_0"}  # one BN: on the 2nd layer
  p["BatchNorm_0"] = {"scale": np.array([1.0, 2.0, 0.5, 1.0]), "bias": np.array([0, 0.1, 0, -1])}
  variables = {**variables, "params": p}

  def leaky(x):
    return np.where(x > 0, x, 0.2 * x)

  h = leaky(np.asarray(z) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  pre_bn = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
  h = leaky(pre_bn / np.sqrt(1.0 + 0.8) * p["BatchNorm_0"]["scale"] + p["BatchNorm_0"]["bias"])
  expected = np.tanh(h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]).reshape(B, 2, 2, 1)

  @jax.jit
  def run(variables):
    train_out, state = model.apply(variables, z, train=True, mutable=["batch_stats"])
    return model.apply(variables, z, train=False), state

  eval_out, state = run(variables)
  np.testing.assert_allclose(eval_out, expected, rtol=1e-5, atol=1e-6)
  # Train mode: torch momentum 0.1 == flax 0.9, the running mean moves 10% to the batch's.
  np.testing.assert_allclose(state["batch_stats"]["BatchNorm_0"]["mean"], 0.1 * pre_bn.mean(axis=0),
                             rtol=1e-5, atol=1e-7)


def test_spectral_norm_discriminator_normalizes_conv_kernels():
  model = gan.DCGANDiscriminator(base_features=4, spectral_norm=True)
  x = images()
  variables = numpy_variables(model, x, train=False)
  assert "BatchNorm_0" not in variables["batch_stats"]
  step = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"])[1])
  for _ in range(20):
    variables = {**variables, **step(variables)}
  stats = variables["batch_stats"]
  for i in range(2):
    kernel = variables["params"][f"Conv_{i}"]["kernel"]
    sigma = stats[f"SpectralNorm_{i}"][f"Conv_{i}/kernel/sigma"]
    assert abs(top_singular_value(kernel / sigma) - 1.0) < 1e-2


def test_spectral_norm_gradients_reach_every_param():
  model = gan.MLPDiscriminator(hidden_dims=(8,), num_classes=3, spectral_norm=True)
  x = images()
  variables = numpy_variables(model, x, LABELS, train=False)

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x, LABELS, train=True,
                         mutable=["batch_stats"])
    return jnp.sum(out**2)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  norms = jax.tree_util.tree_map(lambda g: float(jnp.linalg.norm(g)), grads)
  assert all(n > 0 for n in jax.tree_util.tree_leaves(norms)), norms
