"""Sampling the diffusion family's U-Net: the sampler's plan (DDIM or DDPM ancestral for eps/v,
Euler or Heun for flow), classifier-free guidance, and the loop over the plan (one jitted call
per step, or every step in one scanned program)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import backend
from aigc_jax import data as data_lib
from aigc_jax import noise_processes
from aigc_jax.families import SAMPLE_CHUNK
from aigc_jax.families import eval_params
from aigc_jax.models import unet
from aigc_jax.state import TrainState


class Net(NamedTuple):
  """The U-Net and the static choices its functions are traced with (hashable: a jit static)."""

  model: unet.UNet
  objective: str
  schedule: str
  num_classes: int  # 0: unconditional

  def labels(self, batch):
    return batch["label"] if self.num_classes else None


def default_sampler(objective: str) -> str:
  return "heun" if objective == "flow" else "ddim"


class Sampling(NamedTuple):
  """How to sample: the sampler, its steps, the guidance scale, clipping, the loop's form."""

  sampler: str
  steps: int
  guidance_scale: float
  clip: bool
  loop: str

  @property
  def guided(self) -> bool:
    """Whether a conditional model mixes in its unconditional output (scale other than 1)."""
    return self.guidance_scale != 1.0


# Network evaluations per image in one step of each sampler (Heun's method corrects with a second).
EVALUATIONS_PER_STEP = {"ddim": 1, "ddpm": 1, "euler": 1, "heun": 2}


def network_evaluations(how: Sampling, conditional: bool) -> int:
  """Network evaluations per image over the whole plan; guidance runs the network twice."""
  return how.steps * EVALUATIONS_PER_STEP[how.sampler] * (2 if conditional and how.guided else 1)


def sampling(config, sampler: str | None = None, sample_steps: int | None = None,
             guidance_scale: float | None = None) -> Sampling:
  """The config's sampling choices, each replaced by the argument given."""
  name = sampler or config.sampler or default_sampler(config.objective)
  if name not in noise_processes.SAMPLERS[config.objective]:
    raise ValueError(f"sampler '{name}' does not fit objective '{config.objective}'; choose one "
                     f"of {noise_processes.SAMPLERS[config.objective]}")
  steps = int(sample_steps or config.sample_steps)
  scale = config.guidance_scale if guidance_scale is None else float(guidance_scale)
  if steps < 1 or scale < 0:
    raise ValueError(f"sample_steps must be >= 1 and guidance_scale >= 0, got {steps} and "
                     f"{scale}")
  return Sampling(name, steps, scale, bool(config.clip_denoised),
                  backend.resolve("sample_loop", config.sample_loop))


def predict(net: Net, params, x, time, labels, guidance):
  """The network's output at (x, scalar time); with a guidance scale w (not None) the
  classifier-free mix uncond + w * (cond - uncond)."""
  times = jnp.full((x.shape[0],), time)
  if guidance is None or labels is None:
    return net.model.apply(params, x, times, labels)
  both = jnp.concatenate([labels, jnp.full_like(labels, net.num_classes)])
  out = net.model.apply(params, jnp.concatenate([x, x]), jnp.concatenate([times, times]), both)
  cond, uncond = jnp.split(out, 2)
  return uncond + guidance * (cond - uncond)


def sampler_step(net: Net, how: Sampling, params, x, rows, rng, labels, guidance):
  """x at the next row of the plan; `rows` (2, 2): this row and the next (time, level)."""
  (time, level), (_, level_next) = rows[0], rows[1]
  out = predict(net, params, x, time, labels, guidance)
  if net.objective == "flow":
    if how.sampler == "euler":
      return noise_processes.euler_step(x, out, level, level_next)
    velocity_at = lambda y, t: predict(net, params, y, t, labels, guidance)  # noqa: E731
    return noise_processes.heun_step(x, out, velocity_at, level, level_next)
  x0, eps = noise_processes.denoised(net.objective, out, x, level)
  if how.clip:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = (x - jnp.sqrt(level) * x0) / jnp.sqrt(1.0 - level)
  sigma = noise_processes.ddim_sigma(level, level_next, 1.0 if how.sampler == "ddpm" else 0.0)
  return noise_processes.ddim_step(x0, eps, level_next, sigma, jax.random.normal(rng, x.shape))


@functools.partial(jax.jit, static_argnames=("net", "how"))
def jitted_step(params, x, rows, rng, labels, guidance, *, net: Net, how: Sampling):
  return sampler_step(net, how, params, x, rows, rng, labels, guidance)


@functools.partial(jax.jit, static_argnames=("net", "how"))
def scanned_steps(params, x, grid, rng, labels, guidance, *, net: Net, how: Sampling):
  """Every step of the plan `grid` in one program."""

  def body(i, x):
    rows = jax.lax.dynamic_slice_in_dim(grid, i, 2)
    return sampler_step(net, how, params, x, rows, jax.random.fold_in(rng, i), labels, guidance)

  return jax.lax.fori_loop(0, grid.shape[0] - 1, body, x)


def denoise(params, x, rng, labels, *, net: Net, how: Sampling):
  """Data in [-1, 1] from the noise `x` along the sampler's plan."""
  grid = jnp.asarray(noise_processes.plan(net.objective, net.schedule, how.steps))
  guidance = jnp.float32(how.guidance_scale) if how.guided else None
  if how.loop == "scan":
    return scanned_steps(params, x, grid, rng, labels, guidance, net=net, how=how)
  for i in range(how.steps):
    x = jitted_step(params, x, grid[i:i + 2], jax.random.fold_in(rng, i), labels, guidance, net=net,
                    how=how)
  return x


def sample_images(state: TrainState, rng, num: int, use_ema: bool = True, *, net: Net, config,
                  progress=None, **sample_options):
  """(num images in [0, 1] (N,H,W,C) np, their labels (class i % num_classes) or None).

  Drawn SAMPLE_CHUNK at a time, chunk c from fold_in(rng, c): the first images do not depend on num.
  `progress(chunk starts)`, when given, wraps the chunks (e.g. a tqdm bar).
  """
  how = sampling(config, **sample_options)
  params = eval_params(state, "unet") if use_ema else state.players["unet"].params
  images, labels = [], None
  if net.num_classes:
    labels = np.arange(num, dtype=np.int32) % net.num_classes
  image_shape = data_lib.config_info(config).image_shape
  starts = range(0, num, SAMPLE_CHUNK)
  for c, start in enumerate(starts if progress is None else progress(starts)):
    n = min(SAMPLE_CHUNK, num - start)
    k_noise, k_steps = jax.random.split(jax.random.fold_in(rng, c))
    x = jax.random.normal(k_noise, (n,) + tuple(image_shape))
    chunk_labels = None if labels is None else jnp.asarray(labels[start:start + n])
    x = denoise(params, x, k_steps, chunk_labels, net=net, how=how)
    images.append(np.asarray(jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)))
  return np.concatenate(images), labels
