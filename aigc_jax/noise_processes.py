"""Diffusion and flow processes: noise schedules, the forward process, training targets and the
samplers' update rules, as pure array functions (the networks come from the caller).

Two kinds of process share one time axis, t in [0, 1] (0: data, 1: noise), the network's time
input:
- variance preserving (DDPM): x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps over NUM_TIMESTEPS
  discrete steps, step i (0-based) at t = i / NUM_TIMESTEPS with abar = ALPHA_BARS[i] of a
  'linear' (Ho et al., 2020) or 'cosine' (Nichol and Dhariwal, 2021) schedule. The network
  predicts eps ('eps') or v = sqrt(abar) eps - sqrt(1 - abar) x_0 ('v', Salimans and Ho, 2022).
- rectified flow ('flow', Liu et al., 2022; Lipman et al., 2022): x_t = (1 - t) x_0 + t eps for
  t uniform in [0, 1]; the network predicts the velocity eps - x_0, and sampling integrates
  dx/dt = v from t = 1 to 0.

A sampling plan is a grid of (network time, level) rows from noise to data: level is abar for
the DDPM processes (1 at the end: the data) and t for flow.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

NUM_TIMESTEPS = 1000
OBJECTIVES = ("eps", "v", "flow")
SCHEDULES = ("linear", "cosine")
SAMPLERS = {"eps": ("ddim", "ddpm"), "v": ("ddim", "ddpm"), "flow": ("euler", "heun")}


def alpha_bars(schedule: str, num_timesteps: int = NUM_TIMESTEPS) -> np.ndarray:
  """abar_i = prod_{j <= i} (1 - beta_j), i = 0 .. T-1, float64, strictly decreasing."""
  if schedule == "linear":
    betas = np.linspace(1e-4, 0.02, num_timesteps, dtype=np.float64)
  elif schedule == "cosine":
    s = 0.008
    f = np.cos((np.arange(num_timesteps + 1) / num_timesteps + s) / (1 + s) * math.pi / 2)**2
    betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
  else:
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
  return np.cumprod(1.0 - betas)


def noisy(objective: str, x0, noise, level):
  """x_t of data `x0` (B, ...) and `noise`, at `level` (B,): abar for eps/v, t for flow."""
  level = level.reshape((-1,) + (1,) * (x0.ndim - 1))
  if objective == "flow":
    return (1.0 - level) * x0 + level * noise
  return jnp.sqrt(level) * x0 + jnp.sqrt(1.0 - level) * noise


def target(objective: str, x0, noise, level):
  """What the network learns to output at x_t = noisy(objective, x0, noise, level)."""
  if objective == "eps":
    return noise
  if objective == "flow":
    return noise - x0
  abar = level.reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.sqrt(abar) * noise - jnp.sqrt(1.0 - abar) * x0


def denoised(objective: str, out, x_t, abar):
  """(x0_hat, eps_hat) of a DDPM network's output `out` at x_t with scalar `abar`."""
  if objective == "eps":
    return (x_t - jnp.sqrt(1.0 - abar) * out) / jnp.sqrt(abar), out
  if objective == "v":
    return (jnp.sqrt(abar) * x_t - jnp.sqrt(1.0 - abar) * out,
            jnp.sqrt(1.0 - abar) * x_t + jnp.sqrt(abar) * out)
  raise ValueError(f"denoised needs objective 'eps' or 'v', got {objective!r}")


def min_snr_weight(objective: str, level, gamma: float):
  """Per-example loss weights min(SNR, gamma) / SNR (eps) or / (SNR + 1) (v), SNR = abar / (1 -
  abar) at `level` = abar (Hang et al., 2023): errors at low noise count up to gamma / SNR."""
  if objective not in ("eps", "v"):
    raise ValueError(f"min-SNR weighting needs objective 'eps' or 'v', got {objective!r}")
  snr = level / (1.0 - level)
  return jnp.minimum(snr, gamma) / (snr if objective == "eps" else snr + 1.0)


def plan(objective: str, schedule: str, sample_steps: int) -> np.ndarray:
  """(sample_steps + 1, 2) float32 rows of (network time, level), from noise to data.

  DDPM: the steps are evenly spaced over the T training steps, from step T-1 down to step 0,
  then the data (level 1). Flow: t evenly spaced from 1 to 0.
  """
  if sample_steps < 1:
    raise ValueError(f"sample_steps must be >= 1, got {sample_steps}")
  if objective == "flow":
    t = np.linspace(1.0, 0.0, sample_steps + 1)
    return np.stack([t, t], axis=1).astype(np.float32)
  steps = np.round(np.linspace(NUM_TIMESTEPS - 1, 0, sample_steps)).astype(np.int64)
  levels = np.append(alpha_bars(schedule)[steps], 1.0)
  times = np.append(steps / NUM_TIMESTEPS, 0.0)
  return np.stack([times, levels], axis=1).astype(np.float32)


def ddim_step(x0_hat, eps_hat, abar_next, sigma, noise):
  """x at abar_next given the predictions at the current level (Song et al., 2021, eq. 12)."""
  direction = jnp.sqrt(jnp.maximum(1.0 - abar_next - sigma**2, 0.0)) * eps_hat
  return jnp.sqrt(abar_next) * x0_hat + direction + sigma * noise


def ddim_sigma(abar, abar_next, eta: float):
  """The step's noise scale: 0 for DDIM (eta 0); eta 1 is DDPM's posterior std (ancestral)."""
  return eta * jnp.sqrt((1.0 - abar_next) / (1.0 - abar) * (1.0 - abar / abar_next))


def euler_step(x, velocity, t, t_next):
  """One Euler step of dx/dt = velocity from t to t_next."""
  return x + (t_next - t) * velocity


def heun_step(x, velocity, velocity_at, t, t_next):
  """One Heun step: Euler, then the average of the slopes at both ends; `velocity_at(x, t)`."""
  x_euler = euler_step(x, velocity, t, t_next)
  return x + (t_next - t) * 0.5 * (velocity + velocity_at(x_euler, t_next))
