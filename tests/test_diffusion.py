"""The diffusion family: the processes against their closed forms, samplers against their
formulas, learning, guidance, the tools' options and exact resume, on a tiny U-Net."""

import functools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import noise_processes
from aigc_jax import train
from aigc_jax import workdir as workdir_lib
from aigc_jax.families import diffusion as family
from aigc_jax.families import diffusion_sampling as sampling

INFO = data_lib.DATASETS["fashion_mnist"]
# One resolution level keeps compilation short; the runs below use two (down- and upsampling).
TINY = dict(base_features=8, multipliers=(1,), patch=2, attention_heads=2, batch_size=16,
            eval_num_samples=0, sample_steps=4, progress_bar=False)


@functools.cache
def tiny(**overrides):
  values = dict(TINY)
  values.update(overrides)
  config = config_lib.validate(config_lib.get_config("unet", **values))
  return config, family.build(config, INFO, 100)


@functools.cache
def perturbed_state(trainable, scale=0.05, seed=0):
  """An initial state whose zero-initialised output layers are not zero: a non-trivial net."""
  state = jax.jit(trainable.init)(jax.random.PRNGKey(seed))
  leaves, tree = jax.tree_util.tree_flatten(state.ema_params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  noisy = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return state.replace(ema_params=jax.tree_util.tree_unflatten(tree, noisy))


def net_of(trainable) -> sampling.Net:
  return trainable.train_step.keywords["net"]


@pytest.mark.parametrize("objective,level,mean,var", [("eps", 0.36, 0.6, 0.64),
                                                      ("v", 0.36, 0.6, 0.64),
                                                      ("flow", 0.25, 0.75, 0.0625)])
def test_forward_process_has_its_closed_form_mean_and_variance(objective, level, mean, var):
  """x_t | x_0 = 2: DDPM N(sqrt(abar) x_0, 1 - abar); flow N((1 - t) x_0, t^2)."""
  noise = jax.random.normal(jax.random.PRNGKey(0), (200_000, 1))
  x_t = noise_processes.noisy(objective, jnp.full((200_000, 1), 2.0), noise,
                              jnp.full((200_000,), level))
  assert float(jnp.mean(x_t)) == pytest.approx(2.0 * mean, abs=0.01)
  assert float(jnp.var(x_t)) == pytest.approx(var, rel=0.02)


def test_schedules():
  linear, cosine = noise_processes.alpha_bars("linear"), noise_processes.alpha_bars("cosine")
  beta_1 = 1e-4 + 0.0199 / 999  # betas: 1e-4 to 0.02 in 1000 even steps
  assert linear[0] == pytest.approx(1 - 1e-4) and linear[1] == pytest.approx(
      (1 - 1e-4) * (1 - beta_1))
  assert np.all(np.diff(linear) < 0) and np.all(np.diff(cosine) < 0)
  s, t = 0.008, 500 / 1000  # cosine: abar(t) = f(t) / f(0)
  f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2)**2  # noqa: E731
  assert cosine[499] == pytest.approx(f(t) / f(0), rel=1e-6)


def test_targets_and_predictions_by_hand():
  x0, noise, abar = jnp.array([[1.0]]), jnp.array([[2.0]]), jnp.array([0.36])
  assert float(noise_processes.target("eps", x0, noise, abar)[0, 0]) == 2.0
  assert float(noise_processes.target("flow", x0, noise, abar)[0, 0]) == 1.0
  v = noise_processes.target("v", x0, noise, abar)
  assert float(v[0, 0]) == pytest.approx(0.6 * 2.0 - 0.8 * 1.0)
  x_t = noise_processes.noisy("v", x0, noise, abar)  # 0.6 + 1.6 = 2.2
  for objective, out in (("v", v), ("eps", noise)):
    x0_hat, eps_hat = noise_processes.denoised(objective, out, x_t, 0.36)
    assert float(x0_hat[0, 0]) == pytest.approx(1.0) and float(eps_hat[0, 0]) == pytest.approx(2.0)


@pytest.mark.slow
def test_loss_is_the_squared_error_to_the_target():
  config, trainable = tiny(objective="v")
  net, state = net_of(trainable), perturbed_state(trainable)
  batch = {
      "image": jax.random.uniform(jax.random.PRNGKey(3), (4, 28, 28, 1)) * 2 - 1,
      "label": jnp.arange(4)
  }
  rng = jax.random.PRNGKey(4)
  loss_of = jax.jit(family.per_example_loss, static_argnums=0, static_argnames="min_snr_gamma")
  loss = loss_of(net, state.ema_params, batch, rng)
  x_t, time, level, goal = jax.jit(family.noised_batch, static_argnums=0)(net, batch["image"],
                                                                          jax.random.split(rng)[0])
  out = jax.jit(net.model.apply)(state.ema_params, x_t, time)
  squared = np.mean((out - goal)**2, axis=(1, 2, 3))
  np.testing.assert_allclose(loss, squared, rtol=1e-5)
  assert np.all((time >= 0) & (time < 1)) and config.objective == "v"
  snr = level / (1 - level)  # v-prediction: min(SNR, 2) / (SNR + 1)
  np.testing.assert_allclose(loss_of(net, state.ema_params, batch, rng, min_snr_gamma=2.0),
                             squared * np.minimum(snr, 2.0) / (snr + 1), rtol=1e-5)


def test_min_snr_weights_by_hand():
  levels = jnp.asarray([0.5, 0.9, 0.1])  # SNR 1, 9, 1/9
  np.testing.assert_allclose(noise_processes.min_snr_weight("eps", levels, 5.0), [1.0, 5 / 9, 1.0],
                             rtol=1e-6)
  np.testing.assert_allclose(noise_processes.min_snr_weight("v", levels, 5.0), [0.5, 0.5, 0.1],
                             rtol=1e-5)
  with pytest.raises(ValueError, match="objective 'eps' or 'v'"):
    noise_processes.min_snr_weight("flow", levels, 5.0)


def sample_from(trainable, how, x, labels=None):
  return sampling.denoise(trainable_params(trainable), x, jax.random.PRNGKey(7), labels,
                          net=net_of(trainable), how=how)


def trainable_params(trainable, scale=0.05):
  return perturbed_state(trainable, scale).ema_params


@pytest.mark.slow
@pytest.mark.parametrize("objective,sampler", [("eps", "ddim"), ("v", "ddpm"), ("flow", "euler")])
def test_a_one_step_sampler_is_its_formula(objective, sampler):
  _, trainable = tiny(objective=objective)
  net, params = net_of(trainable), trainable_params(trainable)
  x = jax.random.normal(jax.random.PRNGKey(5), (3, 28, 28, 1))
  got = sample_from(trainable, sampling.Sampling(sampler, 1, 1.0, False, "python"), x)
  time, level = noise_processes.plan(objective, "cosine", 1)[0]
  out = jax.jit(net.model.apply)(params, x, jnp.full((3,), time))
  if objective == "flow":
    want = x - out  # t: 1 -> 0
  else:  # to the data (abar 1): the predicted x_0, with no noise even for DDPM
    want = noise_processes.denoised(objective, out, x, level)[0]
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * float(jnp.max(jnp.abs(want))))


@pytest.mark.slow
def test_ddim_is_deterministic_and_inverts_to_its_noise():
  _, trainable = tiny(objective="eps")
  net, params = net_of(trainable), trainable_params(trainable, scale=0.01)  # a smooth net
  how = sampling.Sampling("ddim", 100, 1.0, False, "python")
  noise = jax.random.normal(jax.random.PRNGKey(8), (2, 28, 28, 1))
  x0 = sampling.denoise(params, noise, jax.random.PRNGKey(7), None, net=net, how=how)
  other_rng = sampling.denoise(params, noise, jax.random.PRNGKey(9), None, net=net, how=how)
  np.testing.assert_array_equal(x0, other_rng)  # eta 0: the step rng is not read
  grid = noise_processes.plan("eps", "cosine", 100)[::-1]  # data -> noise
  x, apply = x0, jax.jit(net.model.apply)
  for (time, level), (_, level_next) in zip(grid[:-1], grid[1:]):  # the same ODE, backwards
    out = apply(params, x, jnp.full((2,), time))
    x0_hat, eps_hat = noise_processes.denoised("eps", out, x, level)
    x = noise_processes.ddim_step(x0_hat, eps_hat, level_next, 0.0, 0.0)
  assert float(jnp.max(jnp.abs(x - noise))) < 0.05 * float(jnp.max(jnp.abs(noise)))


def test_heun_is_exact_for_a_velocity_linear_in_time():
  """dx/dt = t has x(0) = x(1) - 1/2; Euler from t = 1 in one step is off by 1/2, Heun is not."""
  x, velocity_at = jnp.ones(()), lambda y, t: t  # noqa: E731
  assert float(noise_processes.heun_step(x, velocity_at(x, 1.0), velocity_at, 1.0, 0.0)) == 0.5
  assert float(noise_processes.euler_step(x, velocity_at(x, 1.0), 1.0, 0.0)) == 0.0


@pytest.mark.slow
def test_python_and_scanned_sampling_loops_agree():
  _, trainable = tiny(objective="v")
  x = jax.random.normal(jax.random.PRNGKey(5), (2, 28, 28, 1))
  a = sample_from(trainable, sampling.Sampling("ddpm", 3, 1.0, True, "python"), x)
  b = sample_from(trainable, sampling.Sampling("ddpm", 3, 1.0, True, "scan"), x)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_network_evaluations_count_heuns_correction_and_guidance():

  def count(sampler, scale, conditional):
    return sampling.network_evaluations(sampling.Sampling(sampler, 10, scale, True, "python"),
                                        conditional)

  assert count("ddim", 1.0, True) == 10
  assert count("ddpm", 3.0, True) == 20
  assert count("heun", 2.0, True) == 40
  assert count("heun", 2.0, False) == 20  # an unconditional model ignores the scale
  assert count("euler", 1.0, False) == 10


@pytest.mark.slow
def test_guidance_mixes_the_conditional_and_null_predictions():
  _, trainable = tiny(conditional=True)
  net, params = net_of(trainable), trainable_params(trainable)
  x, labels = jax.random.normal(jax.random.PRNGKey(5), (4, 28, 28, 1)), jnp.arange(4)
  cond = sampling.predict(net, params, x, 0.5, labels, None)
  null = sampling.predict(net, params, x, 0.5, jnp.full((4,), 10), None)
  guided = sampling.predict(net, params, x, 0.5, labels, jnp.float32(3.0))
  assert float(jnp.max(jnp.abs(cond - null))) > 1e-3
  np.testing.assert_allclose(guided, null + 3.0 * (cond - null), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["eps", "flow"])
def test_the_loss_falls_on_a_small_batch(objective):
  config, trainable = tiny(objective=objective, learning_rate=3e-3, ema_decay=0.0)
  state = jax.jit(trainable.init)(jax.random.PRNGKey(0))
  images = np.zeros((16, 28, 28, 1), np.float32)
  images[:, 8:20, 8:20] = 1.0  # a square: easy to learn
  batch = {"image": jnp.asarray(images * 2 - 1), "label": jnp.zeros((16,), jnp.int32)}
  step = jax.jit(trainable.train_step)
  losses = []
  for _ in range(40):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses


@pytest.mark.slow
def test_sample_chunks_do_not_depend_on_the_count(monkeypatch):
  monkeypatch.setattr(sampling, "SAMPLE_CHUNK", 3)
  config, trainable = tiny(conditional=True, sample_steps=2)
  state = perturbed_state(trainable)
  five, labels = trainable.sample(state, jax.random.PRNGKey(1), 5)
  two, _ = trainable.sample(state, jax.random.PRNGKey(1), 2)
  assert five.shape == (5, 28, 28, 1) and 0.0 <= five.min() and five.max() <= 1.0
  np.testing.assert_allclose(five[:2], two, atol=1e-6)
  assert labels.tolist() == [0, 1, 2, 3, 4] and config.conditional


@pytest.mark.parametrize("overrides,words", [
    (dict(objective="flow", sampler="ddim"), "does not fit objective 'flow'"),
    (dict(guidance_scale=2.0), "needs a class-conditional model"),
    (dict(base_features=12), "multiple of 8"),
    (dict(multipliers=(1, 2, 2), patch=2), "must divide by patch * 2^(levels - 1) = 8"),
    (dict(objective="x0"), "objective"),
    (dict(objective="flow", sampler="heun", min_snr_gamma=5.0), "0 for objective 'flow'"),
])
def test_config_errors_name_the_fix(overrides, words):
  with pytest.raises(
      config_lib.ConfigError,
      match=words.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*").replace("^", r"\^")):
    config_lib.validate(config_lib.get_config("unet", **overrides))


def test_config_error_names_the_image_sides_the_u_net_builds_for(monkeypatch):
  shape = {"x48": (48, 48, 3), "x64": (64, 64, 3)}
  monkeypatch.setattr(data_lib, "config_info",
                      lambda config: data_lib.DatasetInfo("x", shape[config.dataset], 1, "x", None))
  config = config_lib.get_config("unet", dataset="x48")
  with pytest.raises(config_lib.ConfigError, match="side 28, 32, 64 pixels, got x48's 48x48"):
    family.validate_config(config, need)
  family.validate_config(config_lib.get_config("unet", dataset="x64"), need)
  # 64: one level more than the six given, so 2 * 2^6 (the same net at 32 would divide by 64)
  with pytest.raises(config_lib.ConfigError, match=r"= 128: use fewer"):
    config = config_lib.get_config("unet", dataset="x64", patch=2, multipliers=(1, 2, 2, 2, 2, 2))
    family.validate_config(config, need)


def need(ok, message):
  if not ok:
    raise config_lib.ConfigError(message)


def test_the_u_net_has_one_level_more_at_64_pixels():
  """(Its training at 64 pixels: tests/test_folder_experiments.py.)"""
  config = config_lib.validate(config_lib.get_config("unet", **TINY))
  trainable = family.build(config, data_lib.DatasetInfo("x64", (64, 64, 3), 10, "x64", None))
  assert net_of(trainable).model.multipliers == (1, 1)  # the config's (1,) and one level more


def run_config(idx_dir, **overrides):
  values = dict(TINY, idx_dir=idx_dir, multipliers=(1, 2), num_train_steps=8, eval_every_steps=4,
                log_every_steps=4, num_sample_images=10, conditional=True, eval_batch_size=32)
  values.update(overrides)
  return config_lib.get_config("unet", **values)


@pytest.mark.slow
def test_resume_is_exact_and_the_tools_take_sampling_options(idx_dir, tmp_path):
  unbroken, resumed = str(tmp_path / "unbroken"), str(tmp_path / "resumed")
  train.train_and_evaluate(run_config(idx_dir), unbroken)
  train.train_and_evaluate(run_config(idx_dir, num_train_steps=4), resumed)
  train.train_and_evaluate(run_config(idx_dir), resumed)
  a = workdir_lib.load_trained(unbroken, "latest").state
  b = workdir_lib.load_trained(resumed, "latest").state
  chex.assert_trees_all_equal((a.players["unet"].params, a.ema_params),
                              (b.players["unet"].params, b.ema_params))
  run = workdir_lib.load_trained(unbroken, "latest")
  options = dict(sample_steps=2, guidance_scale=2.0, sampler="ddpm")
  workdir_lib.check_tool_options(run.config, options)
  images, labels = run.trainable.sample(run.state, jax.random.PRNGKey(0), 12, **options)
  assert images.shape == (12, 28, 28, 1) and labels.tolist()[:3] == [0, 1, 2]
  with pytest.raises(config_lib.ConfigError, match="--iwae_samples does not apply"):
    workdir_lib.check_tool_options(run.config, {"iwae_samples": 5})
  with pytest.raises(config_lib.ConfigError, match="does not fit objective 'eps'"):
    workdir_lib.check_tool_options(run.config, {"sampler": "heun"})
  assert os.path.exists(os.path.join(unbroken, "samples", "samples_latest.png"))
