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

import jax
import jax.numpy as jnp

from aigc_jax import backend
from aigc_jax import data as data_lib
from aigc_jax import eval_split
from aigc_jax import noise_processes
from aigc_jax import state as state_lib
from aigc_jax import writers
from aigc_jax.families import Trainable
from aigc_jax.families import dataset_labels
from aigc_jax.families import eval_params
from aigc_jax.families import one_batch_per_step
from aigc_jax.families import sample_eval
from aigc_jax.families import single_player_step
from aigc_jax.families.diffusion_sampling import Net
from aigc_jax.families.diffusion_sampling import default_sampler
from aigc_jax.families.diffusion_sampling import sample_images
from aigc_jax.families.diffusion_sampling import sampling
from aigc_jax.models import unet
from aigc_jax.models.layers import IMAGE_SIDES
from aigc_jax.models.layers import resolution_stages
from aigc_jax.noise import batch_noise
from aigc_jax.state import EVAL_STREAM
from aigc_jax.state import SAMPLE_STREAM
from aigc_jax.state import Player
from aigc_jax.state import TrainState
from aigc_jax.state import step_rng
from aigc_jax.state import stream_rng
from aigc_jax.suggest import unknown_choice_message

SAMPLE_LOOPS = ("python", "scan")
GROUPS = 8  # GroupNorm groups: every width must divide by it
# Float keys whose value chooses the step's program (0 turns label dropout or the min-SNR
# weighting off), so a sweep cannot vary them.
PROGRAM_KEYS = ("label_dropout", "min_snr_gamma")


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
      # A resolution level per entry, width base_features * multiplier (64-pixel images get one
      # more level in front, of the first multiplier: unet_multipliers)
      multipliers=(1, 2, 2),
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
  need(config.objective in noise_processes.OBJECTIVES,
       unknown_choice_message("objective", config.objective, noise_processes.OBJECTIVES))
  need(config.schedule in noise_processes.SCHEDULES,
       unknown_choice_message("schedule", config.schedule, noise_processes.SCHEDULES))
  samplers = noise_processes.SAMPLERS[config.objective]
  need(
      config.sampler in ("",) + samplers,
      f"sampler '{config.sampler}' does not fit objective '{config.objective}'; choose one of "
      f"{samplers} (or '' for {default_sampler(config.objective)})")
  need(config.sample_steps >= 1, f"sample_steps must be >= 1, got {config.sample_steps}")
  need(config.guidance_scale >= 0, f"guidance_scale must be >= 0, got {config.guidance_scale}")
  need(
      config.guidance_scale == 1.0 or config.conditional,
      f"guidance_scale {config.guidance_scale} needs a class-conditional model "
      "(conditional=True); an unconditional one samples with 1")
  need(0.0 <= config.label_dropout < 1.0,
       f"label_dropout must be in [0, 1), got {config.label_dropout}")
  need(config.min_snr_gamma >= 0 and (config.min_snr_gamma == 0 or config.objective != "flow"),
       f"min_snr_gamma must be >= 0, and 0 for objective 'flow', got {config.min_snr_gamma}")
  need(0.0 <= config.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {config.ema_decay}")
  need(config.sample_loop in ("auto",) + SAMPLE_LOOPS,
       f"sample_loop '{config.sample_loop}' is unknown; choose 'auto' or one of {SAMPLE_LOOPS}")
  need(
      config.eval_num_samples == 0 or config.eval_num_samples >= sample_eval.MIN_SAMPLES,
      f"eval_num_samples must be 0 (off) or >= {sample_eval.MIN_SAMPLES}, got "
      f"{config.eval_num_samples}")
  _validate_shapes(config, need)


def _validate_shapes(config, need) -> None:
  widths = [config.base_features * m for m in config.multipliers]
  need(
      len(widths) >= 1 and all(w > 0 and w % GROUPS == 0 for w in widths + [config.base_features]),
      f"base_features * each multiplier must be a positive multiple of {GROUPS} (GroupNorm's "
      f"groups), got base_features={config.base_features}, multipliers={config.multipliers}")
  need(
      widths[-1] % config.attention_heads == 0,
      f"the lowest level's width {widths[-1]} must divide by attention_heads "
      f"{config.attention_heads}")
  need(config.patch >= 1, f"patch must be >= 1, got {config.patch}")
  height, width, _ = shape = data_lib.config_info(config).image_shape
  need(
      height == width and height in IMAGE_SIDES,
      f"the U-Net builds for square images of side {', '.join(map(str, IMAGE_SIDES))} pixels, "
      f"got {config.dataset}'s {height}x{width}: set image_size")
  factor = config.patch * 2**(len(unet_multipliers(config.multipliers, shape)) - 1)
  need(
      height % factor == 0 and width % factor == 0,
      f"{config.dataset}'s {height}x{width} images must divide by patch * 2^(levels - 1) = "
      f"{factor}: use fewer multipliers or a smaller patch")


def unet_multipliers(multipliers, image_shape) -> tuple[int, ...]:
  """The U-Net's level multipliers for (H, W, C) images: the config's at sides 28 and 32; at
  side 64 one more level in front, at full resolution, of the first multiplier (the levels of
  the 32-pixel network follow at 32, 16, ...). Other sides raise ValueError (IMAGE_SIDES)."""
  extra = resolution_stages(image_shape, "the U-Net") - IMAGE_SIDES[32]
  return (multipliers[0],) * extra + tuple(multipliers)


batches_per_step = one_batch_per_step
train_labels = dataset_labels  # read by conditional models only


def build_model(config, info: data_lib.DatasetInfo) -> unet.UNet:
  """The U-Net for `info`'s images (ValueError for a side it does not build for)."""
  multipliers = unet_multipliers(config.multipliers, info.image_shape)
  return unet.UNet(out_channels=info.image_shape[-1], base_features=config.base_features,
                   multipliers=multipliers, num_res_blocks=config.num_res_blocks,
                   num_classes=info.num_classes if config.conditional else 0, patch=config.patch,
                   groups=GROUPS, heads=config.attention_heads, dtype=backend.compute_dtype(config))


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
      sample=sample, log_images=functools.partial(log_images, net=net, config=config),
      best_metric="fid" if config.eval_num_samples else "loss", best_mode="min",
      optimizers=(("unet", tx),))


def init(rng, *, net: Net, tx, info: data_lib.DatasetInfo, config) -> TrainState:
  """The U-Net's params from `rng` (fold 0) with its optimizer; EMA = params when kept."""
  x = jnp.zeros((1,) + tuple(info.image_shape), jnp.float32)
  labels = jnp.zeros((1,), jnp.int32) if net.num_classes else None
  params = net.model.init(jax.random.fold_in(rng, 0), x, jnp.zeros((1,)), labels)
  return TrainState.create(rng, ema_params=params if config.ema_decay > 0 else None,
                           unet=Player.create(params, tx))


def noised_batch(net: Net, x0, rng, axis_name=None):
  """(x_t, network time (B,), level (B,), target) of data `x0` at per-example random times and
  noise."""
  k_time, k_noise = jax.random.split(rng)
  noise = batch_noise(jax.random.normal, k_noise, x0.shape, axis_name)
  if net.objective == "flow":
    time = level = batch_noise(jax.random.uniform, k_time, x0.shape[:1], axis_name)
  else:
    steps = batch_noise(lambda k, s: jax.random.randint(k, s, 0, noise_processes.NUM_TIMESTEPS),
                        k_time, x0.shape[:1], axis_name)
    level = jnp.asarray(noise_processes.alpha_bars(net.schedule), jnp.float32)[steps]
    time = steps / noise_processes.NUM_TIMESTEPS
  x_t = noise_processes.noisy(net.objective, x0, noise, level)
  return x_t, time, level, noise_processes.target(net.objective, x0, noise, level)


def per_example_loss(net: Net, params, batch, rng, label_dropout: float = 0.0, axis_name=None,
                     min_snr_gamma: float = 0.0):
  """The squared error of the network's output against its target, mean per example (B,),
  weighted by `noise_processes.min_snr_weight` when min_snr_gamma > 0."""
  k_noise, k_drop = jax.random.split(rng)
  x_t, time, level, goal = noised_batch(net, batch["image"], k_noise, axis_name)
  labels = net.labels(batch)
  if labels is not None and label_dropout > 0:
    drop = batch_noise(jax.random.uniform, k_drop, labels.shape, axis_name) < label_dropout
    labels = jnp.where(drop, net.num_classes, labels)
  out = net.model.apply(params, x_t, time, labels)
  loss = jnp.mean(jnp.square(out - goal), axis=tuple(range(1, out.ndim)))
  if min_snr_gamma > 0:
    loss = loss * noise_processes.min_snr_weight(net.objective, level, min_snr_gamma)
  return loss


def train_step(state: TrainState, batch, *, net: Net, config, axis_name: str | None = None):
  """One Adam step on the denoising loss of `batch` (images in [-1, 1]), and the EMA's."""

  def loss_fn(params):
    loss = jnp.mean(
        per_example_loss(net, params, batch, step_rng(state), config.label_dropout, axis_name,
                         config.min_snr_gamma))
    return loss, {"loss": loss}

  return single_player_step(state, "unet", loss_fn, config.ema_decay, axis_name)


@functools.partial(jax.jit, static_argnames="net")
def eval_loss_sums(params, batch, rng, net: Net):
  loss = per_example_loss(net, params, batch, rng)
  return jnp.sum(batch["mask"] * loss), jnp.sum(batch["mask"])


def test_loss(state: TrainState, test: data_lib.DeviceData, *, net: Net, config) -> float:
  """The denoising loss (no label dropout) over the test split with fixed times and noise; with
  several processes, each evaluates its rows (`eval_split`)."""
  rng, params = stream_rng(state, EVAL_STREAM), eval_params(state, "unet")

  def sums(i: int, batch) -> dict:
    loss_sum, count = eval_loss_sums(params, batch, jax.random.fold_in(rng, i), net)
    return {"loss": loss_sum, "count": count}

  totals = eval_split.totals(test, config.eval_batch_size, config.scale, sums, ("loss", "count"))
  return totals["loss"] / totals["count"]


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
  return {
      "test_loss": test_loss(state, test, net=net, config=config), **metrics,
      "sampler": choice.sampler, "sample_steps": choice.steps,
      **({"guidance_scale": choice.guidance_scale} if net.num_classes else {})
  }


def log_images(state: TrainState, test: data_lib.DeviceData, *, net: Net, config) -> dict:
  """A fixed-noise grid of samples (a class per row when conditional)."""
  del test
  rng = stream_rng(state, SAMPLE_STREAM)
  grid = writers.sample_grid(lambda num: sample_images(state, rng, num, net=net, config=config),
                             config.num_sample_images, net.num_classes)
  return {"samples": grid}
