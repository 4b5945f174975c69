"""Backend choices: `auto` formulations, bfloat16 compute, matmul precision."""

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import backend
from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families

INFO = data_lib.DATASETS["fashion_mnist"]
MODELS = ["vae_mlp", "vae_conv", "gan_mlp", "dcgan"]


def jaxprs_in_params(params):
  """The jaxprs nested in an equation's params (jax.extend.core's, public since jax 0.10)."""
  if hasattr(jax.extend.core, "jaxprs_in_params"):
    return jax.extend.core.jaxprs_in_params(params)
  from jax._src import core  # pylint: disable=g-import-not-at-top  (jax < 0.10)
  return core.jaxprs_in_params(params)


def make(model, **overrides):
  config = config_lib.validate(config_lib.get_config(model, batch_size=8, **overrides))
  return families.get(model).build(config, INFO, 100), config


def batch(model, config):
  """Learnable images: stripes whose period is the label, in the config's pixel scale."""
  rows = 8 * families.get(model).batches_per_step(config)
  label = jnp.arange(rows) % 10
  pixel = jnp.arange(28 * 28).reshape(1, 28, 28, 1)
  image = (pixel % (label[:, None, None, None] + 2) == 0).astype(jnp.float32)
  return {"image": 2 * image - 1 if config.scale == "minus_one_one" else image, "label": label}


@pytest.mark.parametrize("on,want", [("cpu", ("custom_vjp", 1)), ("gpu", ("lax", 100)),
                                     ("tpu", ("lax", 100))])
def test_auto_picks_the_cpu_formulation_on_cpu_only(on, want, monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: on)
  assert (backend.choose("auto", "custom_vjp", "lax"), backend.steps_per_call(0)) == want
  assert backend.choose("lax", "custom_vjp", "lax") == "lax"  # an explicit value wins
  assert backend.steps_per_call(7) == 7


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_platform_defaults_take_the_accelerators_choices_on_cpu(platform, monkeypatch):
  config = config_lib.get_config("dcgan", steps_per_call=0, parallel="auto")
  on_cpu = backend.choices(config)
  monkeypatch.setenv(backend.PLATFORM_ENV, platform)
  emulated = backend.choices(config)
  assert on_cpu["platform"] == "cpu" and emulated["platform"] == f"{platform} (emulated on cpu)"
  for key, (cpu, accelerator) in backend.AUTO.items():
    if key in config:
      assert (on_cpu[key], emulated[key]) == (cpu, accelerator)
  assert (on_cpu["steps_per_call"], emulated["steps_per_call"]) == (1, backend.AUTO_STEPS_PER_CALL)
  # the suite's 4 CPU devices: data parallel only where an accelerator's defaults hold
  assert (on_cpu["parallel"], emulated["parallel"]) == ("none", backend.AUTO_PARALLEL)
  assert backend.parallel_mode("auto", population=True) == "none"
  assert backend.parallel_mode("pmap") == "pmap"


def test_an_unknown_platform_default_is_a_config_error(monkeypatch):
  monkeypatch.setenv(backend.PLATFORM_ENV, "gpus")
  with pytest.raises(config_lib.ConfigError, match=r"AIGC_JAX_PLATFORM_DEFAULTS='gpus' is unknown"):
    config_lib.validate(config_lib.get_config("vae_mlp"))


def test_a_cpu_fallback_beside_an_accelerator_plugin_is_an_error(monkeypatch):
  """jax-cuda12-plugin installed, its backend failing: stop, naming the plugin's error."""
  real = backend.importlib.metadata.distribution

  def distribution(name):
    return object() if name == "jax-cuda12-plugin" else real(name)

  def devices(name=None):
    raise RuntimeError("Backend 'cuda' failed to initialize: no CUDA-capable device is detected")

  monkeypatch.setattr(backend.importlib.metadata, "distribution", distribution)
  monkeypatch.setattr(backend, "requested_platforms", lambda: "")
  monkeypatch.setattr(jax, "devices", devices)
  with pytest.raises(
      backend.PlatformError, match=r"jax-cuda12-plugin is installed but JAX fell "
      r"back to the CPU \(Backend 'cuda' failed to initialize: no CUDA-capable .*"
      r"JAX_PLATFORMS=cpu"):
    backend.check_no_fallback()
  monkeypatch.setattr(backend, "requested_platforms", lambda: "cpu")  # on purpose: no error
  backend.check_no_fallback()


@pytest.mark.slow
def test_cpu_and_accelerator_formulations_train_the_same():
  """The classic DCGAN with two critic updates (transposed upsampling, D convolutions, critic
  loop) as XLA:CPU's formulations and as the plain ones: one step from the same state agrees to
  rounding (Adam's eps 1e-3 keeps ~0 gradients from turning rounding into +-lr steps)."""
  common = dict(upsample="transpose", n_critic=2, adam_eps=1e-3)
  cpu, config = make("dcgan", d_conv="custom_vjp", upsample_impl="subpixel", critic_loop="unroll",
                     **common)
  plain, _ = make("dcgan", d_conv="lax", upsample_impl="conv_transpose", critic_loop="scan",
                  **common)
  state = cpu.init(jax.random.PRNGKey(0))
  data = batch("dcgan", config)
  want, want_metrics = jax.jit(cpu.train_step)(state, data)
  got, got_metrics = jax.jit(plain.train_step)(state, data)
  for name in ("g", "d"):
    for field in ("params", "model_state"):
      chex.assert_trees_all_close(getattr(got.players[name], field),
                                  getattr(want.players[name], field), rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(got_metrics, want_metrics, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_gradient_penalty_is_the_same_with_both_d_convolutions():
  """WGAN-GP differentiates the critic's input gradient: second derivatives of both kinds."""
  states = []
  for d_conv in ("custom_vjp", "lax"):
    trainable, config = make("dcgan", gan_loss="wasserstein", gp_weight=10.0, d_batchnorm=False,
                             d_conv=d_conv, adam_eps=1e-3)
    states.append(
        jax.jit(trainable.train_step)(trainable.init(jax.random.PRNGKey(0)), batch("dcgan",
                                                                                   config)))
  (a, a_metrics), (b, b_metrics) = states
  assert float(a_metrics["gp"]) > 0
  chex.assert_trees_all_close(a.players["d"].params, b.players["d"].params, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(a_metrics, b_metrics, rtol=1e-4, atol=1e-5)


def dtypes_of_products(fn, *args):
  """The operand dtypes of every dot and convolution in fn's jaxpr (sub-jaxprs included)."""
  found = set()

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
        found.update(str(v.aval.dtype) for v in eqn.invars)
      for sub in jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.slow
def test_bfloat16_step_computes_in_bfloat16_and_keeps_float32_state(model):
  products = {}
  for dtype in ("float32", "bfloat16"):
    trainable, config = make(model, compute_dtype=dtype)
    state = trainable.init(jax.random.PRNGKey(0))
    products[dtype] = dtypes_of_products(trainable.train_step, state, batch(model, config))
    new, metrics = jax.jit(trainable.train_step)(state, batch(model, config))
    for leaf in jax.tree_util.tree_leaves(new):
      assert leaf.dtype in (jnp.float32, jnp.int32, jnp.uint32), leaf.dtype
    for value in metrics.values():
      assert value.dtype == jnp.float32 and np.isfinite(value)
  assert products["float32"] == {"float32"}
  assert "bfloat16" in products["bfloat16"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.slow
def test_bfloat16_training_learns(model):
  """VAEs: the loss on a fixed batch falls. GANs, G frozen: D learns to tell reals from fakes."""
  gan = model in ("gan_mlp", "dcgan")
  overrides = dict(learning_rate=1e-30, d_learning_rate=1e-3) if gan else {}
  trainable, config = make(model, compute_dtype="bfloat16", **overrides)
  state, data = trainable.init(jax.random.PRNGKey(0)), batch(model, config)
  step = jax.jit(trainable.train_step)
  name = "d_loss" if gan else "loss"
  losses = []
  for _ in range(30):
    state, metrics = step(state, data)
    losses.append(float(metrics[name]))
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_matmul_precision_is_the_context_of_the_run():
  config = config_lib.get_config("vae_mlp", matmul_precision="highest")
  with backend.matmul_precision(config):
    assert jax.config.jax_default_matmul_precision == "highest"
  assert jax.config.jax_default_matmul_precision != "highest"


@pytest.mark.parametrize("key,value,match", [
    ("compute_dtype", "float16", "compute_dtype 'float16' is unknown"),
    ("matmul_precision", "fast", "matmul_precision 'fast' is unknown"),
    ("steps_per_call", -1, "steps_per_call must be >= 0"),
    ("d_conv", "winograd", "d_conv 'winograd' is unknown"),
    ("critic_loop", "while", "critic_loop 'while' is unknown"),
])
def test_backend_keys_reject_bad_values(key, value, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(config_lib.get_config("dcgan", **{key: value}))
