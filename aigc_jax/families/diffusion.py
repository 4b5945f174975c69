"""The diffusion family: a U-Net trained as a DDPM (eps- or v-prediction, linear or cosine
schedule) or as a rectified flow, optionally class-conditional with classifier-free guidance.

Images are in [-1, 1] (scale='minus_one_one'). Sampling starts from Gaussian noise and takes
`sample_steps` steps of a sampler (DDIM or DDPM ancestral for eps/v, Euler or Heun for flow),
all chosen at sampling time; the config's values are the defaults. Evaluation and sampling use
the moving average of the parameters when the run keeps one (ema_decay > 0). The periodic
evaluation reports the denoising loss on the test split with fixed noise and, when
eval_num_samples > 0, the sample metrics of that many samples (the best checkpoint is then the
lowest FID, else the lowest test loss).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import backend
from aigc_jax import data as data_lib
from aigc_jax import diffusion
from aigc_jax import state as state_lib
from aigc_jax import writers
from aigc_jax.families import Trainable
from aigc_jax.families import dataset_labels
from aigc_jax.families import one_batch_per_step
from aigc_jax.families import sample_eval
from aigc_jax.models import unet
from aigc_jax.noise import batch_noise
from aigc_jax.state import Player
from aigc_jax.state import TrainState
from aigc_jax.state import step_rng
from aigc_jax.state import with_ema
from aigc_jax.suggest import unknown_choice_message

EVAL_STREAM = 1  # fold_in constants that keep eval and sampling noise apart from training noise
SAMPLE_STREAM = 2
CHUNK = 1000  # images per sampling call
SAMPLE_LOOPS = ("python", "scan")
GROUPS = 8  # GroupNorm groups: every width must divide by it


def default_config(model: str) -> dict:
  del model
  return dict(
      scale="minus_one_one",
      batch_size=128,
      learning_rate=1e-3,
      steps_per_call=0,  # 0 = auto: 1 on CPU, where convolutions in loop bodies are slow
      objective="eps",  # 'eps' or 'v' (DDPM), or 'flow' (rectified flow)
      schedule="cosine",  # the DDPM noise schedule: 'linear' or 'cosine' (unused by flow)
      base_features=32,  # the U-Net's first width
      multipliers=(1, 2, 2),  # a resolution level per entry, width base_features * multiplier
      num_res_blocks=1,  # residual blocks per level going down (one more coming up)
      patch=1,  # > 1: patch x patch pixels folded into channels (the U-Net runs at 1/patch)
      attention_heads=4,  # self-attention at the lowest resolution
      conditional=False,  # class-conditional, trained with label dropout for guidance
      label_dropout=0.1,  # conditional: the fraction of labels replaced by the null label
      min_snr_gamma=0.0,  # eps/v: > 0 weights the loss by min(SNR, gamma) / SNR (v: SNR + 1)
      ema_decay=0.999,  # warmed up: step t uses min(ema_decay, (1 + t) / (10 + t)); 0 = off
      # Sampling defaults (each can be chosen again when sampling or evaluating): the sampler
      # ('' = ddim for eps/v, heun for flow), its steps, the guidance scale of a conditional
      # model (1 = conditional alone, > 1 pushes away from the unconditional prediction), and
      # whether the predicted data is clipped to [-1, 1] at each DDPM step.
      sampler="",
      sample_steps=50,
      guidance_scale=1.0,
      clip_denoised=True,
      # How a sampler's steps run: 'python' (a jitted step per call; XLA:CPU runs convolutions
      # inside loop bodies slowly), 'scan' (all steps in one program) or 'auto' (python on CPU).
      sample_loop="auto",
      # Every eval_every_steps, FID, KID, precision/recall and IS of eval_num_samples EMA samples
      # vs as many test images (0 = the test loss only).
      eval_num_samples=1000,
  )


def validate_config(config, need) -> None:
  need(config.scale == "minus_one_one", "diffusion models noise data in [-1, 1]: set "
       "scale='minus_one_one'")
  need(config.objective in diffusion.OBJECTIVES,
       unknown_choice_message("objective", config.objective, diffusion.OBJECTIVES))
  need(config.schedule in diffusion.SCHEDULES,
       unknown_choice_message("schedule", config.schedule, diffusion.SCHEDULES))
  samplers = diffusion.SAMPLERS[config.objective]
  need(config.sampler in ("",) + samplers,
       f"sampler '{config.sampler}' does not fit objective '{config.objective}'; choose one of "
       f"{samplers} (or '' for {default_sampler(config.objective)})")
  need(config.sample_steps >= 1, f"sample_steps must be >= 1, got {config.sample_steps}")
  need(config.guidance_scale >= 0, f"guidance_scale must be >= 0, got {config.guidance_scale}")
  need(config.guidance_scale == 1.0 or config.conditional,
       f"guidance_scale {config.guidance_scale} needs a class-conditional model "
       "(conditional=True); an unconditional one samples with 1")
  need(0.0 <= config.label_dropout < 1.0,
       f"label_dropout must be in [0, 1), got {config.label_dropout}")
  need(config.min_snr_gamma >= 0 and (config.min_snr_gamma == 0 or config.objective != "flow"),
       f"min_snr_gamma must be >= 0, and 0 for objective 'flow', got {config.min_snr_gamma}")
  need(0.0 <= config.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {config.ema_decay}")
  need(config.sample_loop in ("auto",) + SAMPLE_LOOPS,
       f"sample_loop '{config.sample_loop}' is unknown; choose 'auto' or one of {SAMPLE_LOOPS}")
  need(config.eval_num_samples == 0 or config.eval_num_samples >= sample_eval.MIN_SAMPLES,
       f"eval_num_samples must be 0 (off) or >= {sample_eval.MIN_SAMPLES}, got "
       f"{config.eval_num_samples}")
  _validate_shapes(config, need)


def _validate_shapes(config, need) -> None:
  widths = [config.base_features * m for m in config.multipliers]
  need(len(widths) >= 1 and all(w > 0 and w % GROUPS == 0 for w in widths + [config.base_features]),
       f"base_features * each multiplier must be a positive multiple of {GROUPS} (GroupNorm's "
       f"groups), got base_features={config.base_features}, multipliers={config.multipliers}")
  need(widths[-1] % config.attention_heads == 0,
       f"the lowest level's width {widths[-1]} must divide by attention_heads "
       f"{config.attention_heads}")
  need(config.patch >= 1, f"patch must be >= 1, got {config.patch}")
  height, width, _ = data_lib.DATASETS[config.dataset].image_shape
  factor = config.patch * 2 ** (len(widths) - 1)
  need(height % factor == 0 and width % factor == 0,
       f"{config.dataset}'s {height}x{width} images must divide by patch * 2^(levels - 1) = "
       f"{factor}: use fewer multipliers or a smaller patch")


def default_sampler(objective: str) -> str:
  return "heun" if objective == "flow" else "ddim"


batches_per_step = one_batch_per_step
train_labels = dataset_labels  # read by conditional models only


class Net(NamedTuple):
  """The U-Net and the static choices its functions are traced with (hashable: a jit static)."""

  model: unet.UNet
  objective: str
  schedule: str
  num_classes: int  # 0: unconditional

  def labels(self, batch):
    return batch["label"] if self.num_classes else None


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


def build_model(config, info: data_lib.DatasetInfo) -> unet.UNet:
  return unet.UNet(out_channels=info.image_shape[-1], base_features=config.base_features,
                   multipliers=tuple(config.multipliers), num_res_blocks=config.num_res_blocks,
                   num_classes=info.num_classes if config.conditional else 0, patch=config.patch,
                   groups=GROUPS, heads=config.attention_heads,
                   dtype=backend.compute_dtype(config))


def sampling(config, sampler: str | None = None, sample_steps: int | None = None,
             guidance_scale: float | None = None) -> Sampling:
  """The config's sampling choices, each replaced by the argument given."""
  name = sampler or config.sampler or default_sampler(config.objective)
  if name not in diffusion.SAMPLERS[config.objective]:
    raise ValueError(f"sampler '{name}' does not fit objective '{config.objective}'; choose one "
                     f"of {diffusion.SAMPLERS[config.objective]}")
  steps = int(sample_steps or config.sample_steps)
  scale = config.guidance_scale if guidance_scale is None else float(guidance_scale)
  if steps < 1 or scale < 0:
    raise ValueError(f"sample_steps must be >= 1 and guidance_scale >= 0, got {steps} and "
                     f"{scale}")
  return Sampling(name, steps, scale, bool(config.clip_denoised),
                  backend.resolve("sample_loop", config.sample_loop))


def build(config, info: data_lib.DatasetInfo, total_steps: int = 1) -> Trainable:
  """The diffusion `Trainable`: `train_step` wired to the config's U-Net and optimizer."""
  net = Net(build_model(config, info), config.objective, config.schedule,
            info.num_classes if config.conditional else 0)
  tx = state_lib.adam(config, total_steps)
  sample = functools.partial(sample_images, net=net, config=config)
  scores = sample_eval.SampleEvaluator(config, sample, conditional=bool(config.conditional),
                                       raw=False)
  return Trainable(
      init=functools.partial(init, net=net, tx=tx, info=info, config=config),
      train_step=functools.partial(train_step, net=net, config=config),
      evaluate=functools.partial(evaluate, net=net, config=config, scores=scores),
      full_evaluate=functools.partial(full_evaluate, net=net, config=config, scores=scores),
      sample=sample,
      log_images=functools.partial(log_images, net=net, config=config),
      best_metric="fid" if config.eval_num_samples else "loss", best_mode="min",
      optimizers=(("unet", tx),))


def init(rng, *, net: Net, tx, info: data_lib.DatasetInfo, config) -> TrainState:
  """The U-Net's params from `rng` (fold 0) with its optimizer; EMA = params when kept."""
  x = jnp.zeros((1,) + tuple(info.image_shape), jnp.float32)
  labels = jnp.zeros((1,), jnp.int32) if net.num_classes else None
  params = net.model.init(jax.random.fold_in(rng, 0), x, jnp.zeros((1,)), labels)
  return TrainState.create(rng, ema_params=params if config.ema_decay > 0 else None,
                           unet=Player.create(params, tx))


def eval_params(state: TrainState):
  """The moving average when the run keeps one (ema_decay > 0), else the trained params."""
  return state.ema_params or state.players["unet"].params


def noised_batch(net: Net, x0, rng, axis_name=None):
  """(x_t, network time (B,), level (B,), target) of data `x0` at per-example random times and
  noise."""
  k_time, k_noise = jax.random.split(rng)
  noise = batch_noise(jax.random.normal, k_noise, x0.shape, axis_name)
  if net.objective == "flow":
    time = level = batch_noise(jax.random.uniform, k_time, x0.shape[:1], axis_name)
  else:
    steps = batch_noise(lambda k, s: jax.random.randint(k, s, 0, diffusion.NUM_TIMESTEPS),
                        k_time, x0.shape[:1], axis_name)
    level = jnp.asarray(diffusion.alpha_bars(net.schedule), jnp.float32)[steps]
    time = steps / diffusion.NUM_TIMESTEPS
  x_t = diffusion.noisy(net.objective, x0, noise, level)
  return x_t, time, level, diffusion.target(net.objective, x0, noise, level)


def per_example_loss(net: Net, params, batch, rng, label_dropout: float = 0.0, axis_name=None,
                     min_snr_gamma: float = 0.0):
  """The squared error of the network's output against its target, mean per example (B,),
  weighted by `diffusion.min_snr_weight` when min_snr_gamma > 0."""
  k_noise, k_drop = jax.random.split(rng)
  x_t, time, level, goal = noised_batch(net, batch["image"], k_noise, axis_name)
  labels = net.labels(batch)
  if labels is not None and label_dropout > 0:
    drop = batch_noise(jax.random.uniform, k_drop, labels.shape, axis_name) < label_dropout
    labels = jnp.where(drop, net.num_classes, labels)
  out = net.model.apply(params, x_t, time, labels)
  loss = jnp.mean(jnp.square(out - goal), axis=tuple(range(1, out.ndim)))
  if min_snr_gamma > 0:
    loss = loss * diffusion.min_snr_weight(net.objective, level, min_snr_gamma)
  return loss


def train_step(state: TrainState, batch, *, net: Net, config, axis_name: str | None = None):
  """One Adam step on the denoising loss of `batch` (images in [-1, 1]), and the EMA's."""
  player = state.players["unet"]

  def loss_fn(params):
    loss = jnp.mean(per_example_loss(net, params, batch, step_rng(state), config.label_dropout,
                                     axis_name, config.min_snr_gamma))
    return loss, {"loss": loss}

  grads, metrics = jax.grad(loss_fn, has_aux=True)(player.params)
  if axis_name is not None:
    grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
  player = player.apply_gradients(grads)
  ema = with_ema(state, player.params, config.ema_decay)  # {} when the run keeps no EMA
  return state.replace(step=state.step + 1, players={"unet": player}, ema_params=ema), metrics


@functools.partial(jax.jit, static_argnames="net")
def eval_loss_sums(params, batch, rng, net: Net):
  loss = per_example_loss(net, params, batch, rng)
  return jnp.sum(batch["mask"] * loss), jnp.sum(batch["mask"])


def test_loss(state: TrainState, test: data_lib.DeviceData, *, net: Net, config) -> float:
  """The denoising loss (no label dropout) over the test split with fixed times and noise."""
  rng = jax.random.fold_in(state.rng, EVAL_STREAM)
  total, count = 0.0, 0.0
  batches = data_lib.eval_batches(test, config.eval_batch_size, scale=config.scale)
  for i, batch in enumerate(batches):
    loss_sum, n = eval_loss_sums(eval_params(state), batch, jax.random.fold_in(rng, i), net)
    total, count = total + float(loss_sum), count + float(n)
  return total / count


def evaluate(state: TrainState, test: data_lib.DeviceData, *, net: Net, config,
             scores: sample_eval.SampleEvaluator) -> dict:
  """The test loss, and the sample metrics of config.eval_num_samples samples when > 0."""
  metrics = {"loss": test_loss(state, test, net=net, config=config)}
  if config.eval_num_samples:
    metrics.update(scores.evaluate(state, test))
  return metrics


def full_evaluate(state: TrainState, test: data_lib.DeviceData, *, net: Net, config,
                  scores: sample_eval.SampleEvaluator, num_samples: int = 10_000, progress=None,
                  **sample_options) -> dict:
  """The test loss, then the sample metrics with floors of `num_samples` samples drawn with
  `sample_options` (sampler, sample_steps, guidance_scale; the config's where not given)."""
  choice = sampling(config, **sample_options)
  metrics = scores.full_evaluate(state, test, num_samples=num_samples, progress=progress,
                                 **sample_options)
  return {"test_loss": test_loss(state, test, net=net, config=config), **metrics,
          "sampler": choice.sampler, "sample_steps": choice.steps,
          **({"guidance_scale": choice.guidance_scale} if net.num_classes else {})}


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
      return diffusion.euler_step(x, out, level, level_next)
    velocity_at = lambda y, t: predict(net, params, y, t, labels, guidance)  # noqa: E731
    return diffusion.heun_step(x, out, velocity_at, level, level_next)
  x0, eps = diffusion.denoised(net.objective, out, x, level)
  if how.clip:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = (x - jnp.sqrt(level) * x0) / jnp.sqrt(1.0 - level)
  sigma = diffusion.ddim_sigma(level, level_next, 1.0 if how.sampler == "ddpm" else 0.0)
  return diffusion.ddim_step(x0, eps, level_next, sigma, jax.random.normal(rng, x.shape))


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
  grid = jnp.asarray(diffusion.plan(net.objective, net.schedule, how.steps))
  guidance = jnp.float32(how.guidance_scale) if how.guided else None
  if how.loop == "scan":
    return scanned_steps(params, x, grid, rng, labels, guidance, net=net, how=how)
  for i in range(how.steps):
    x = jitted_step(params, x, grid[i:i + 2], jax.random.fold_in(rng, i), labels, guidance,
                    net=net, how=how)
  return x


def sample_images(state: TrainState, rng, num: int, use_ema: bool = True, *, net: Net, config,
                  **sample_options):
  """(num images in [0, 1] (N,H,W,C) np, their labels (class i % num_classes) or None).

  Drawn CHUNK at a time, chunk c from fold_in(rng, c): the first images do not depend on num.
  """
  how = sampling(config, **sample_options)
  params = eval_params(state) if use_ema else state.players["unet"].params
  images, labels = [], None
  if net.num_classes:
    labels = np.arange(num, dtype=np.int32) % net.num_classes
  image_shape = data_lib.DATASETS[config.dataset].image_shape
  for c, start in enumerate(range(0, num, CHUNK)):
    n = min(CHUNK, num - start)
    k_noise, k_steps = jax.random.split(jax.random.fold_in(rng, c))
    x = jax.random.normal(k_noise, (n,) + tuple(image_shape))
    chunk_labels = None if labels is None else jnp.asarray(labels[start:start + n])
    x = denoise(params, x, k_steps, chunk_labels, net=net, how=how)
    images.append(np.asarray(jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)))
  return np.concatenate(images), labels


def log_images(state: TrainState, test: data_lib.DeviceData, *, net: Net, config) -> dict:
  """A fixed-noise grid of samples (a class per row when conditional)."""
  del test
  rng = jax.random.fold_in(state.rng, SAMPLE_STREAM)
  grid = writers.sample_grid(lambda num: sample_images(state, rng, num, net=net, config=config),
                             config.num_sample_images, net.num_classes)
  return {"samples": grid}
