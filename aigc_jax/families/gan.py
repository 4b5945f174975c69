"""The GAN family: MLP GAN and DCGAN, class-conditional or self-conditioned on pixel clusters,
four losses, GP / R1 / consistency penalties, SS-GAN rotation loss, top-k G updates, EMA G.

One jitted step does `n_critic` discriminator updates, each on its own real batch, and one
generator update; so an epoch has 1/n_critic as many steps. Images are in [-1, 1]
(scale='minus_one_one'). Sampling and evaluation use the EMA generator.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import backend
from aigc_jax import clusters
from aigc_jax import data as data_lib
from aigc_jax import gan_losses
from aigc_jax import state as state_lib
from aigc_jax import writers
from aigc_jax.families import Trainable
from aigc_jax.families import gan_step
from aigc_jax.families import sample_eval
from aigc_jax.models import gan as gan_models
from aigc_jax.models.layers import TRANSPOSE_IMPLS
from aigc_jax.models.layers import resolution_stages
from aigc_jax.state import SAMPLE_STREAM
from aigc_jax.state import Player
from aigc_jax.state import TrainState
from aigc_jax.state import stream_rng

CRITIC_LOOPS = ("unroll", "scan")
# Float keys whose value chooses the step's program, so a sweep cannot vary them: a weight of 0
# turns its term off, d_learning_rate <= 0 means the generator's, g_topk 1 keeps every fake.
PROGRAM_KEYS = ("d_learning_rate", "g_topk", "gp_weight", "r1_gamma", "cr_weight",
                "rotation_d_weight", "rotation_g_weight", "mode_seeking_weight")


def default_config(model: str) -> dict:
  return dict(
      scale="minus_one_one",
      batch_size=64,
      learning_rate=2e-4,  # the generator's; d_learning_rate <= 0 means the same
      d_learning_rate=-1.0,  # two-timescale updates when set
      adam_b1=0.5,
      adam_b2=0.999,
      steps_per_call=100 if model == "gan_mlp" else 0,  # conv nets: 0 = auto (1 on CPU)
      latent_dim=100,
      gan_loss="non_saturating",  # 'minimax', 'hinge' or 'wasserstein'
      n_critic=1,  # discriminator updates per generator update
      gp_weight=0.0,  # WGAN-GP's lambda (10 for wgan-gp)
      r1_gamma=0.0,  # R1 penalty weight gamma (adds gamma/2 * R1)
      spectral_norm=False,  # spectral normalization of every discriminator layer
      d_batchnorm=True,  # DCGAN D: BatchNorm after its second conv (never with spectral_norm)
      conditional=False,  # labels into G (embedding) and D (projection, or ACGAN's head)
      aux_classifier=False,  # ACGAN: D predicts the class instead of a projection
      label_mode="multiply",  # conditional G: z * embed(y) ('multiply') or [z, embed(y)] ('concat')
      # > 0: self-conditioned. G and D are conditioned as with labels, but on that many balanced
      # k-means clusters of the train images' pixels (`clusters.py`), sampled uniformly; no label
      # is read, and evaluation is unconditional.
      pixel_clusters=0,
      # SS-GAN (DCGAN only): D also predicts the rotation (0/90/180/270) of real images, weighted
      # rotation_d_weight (beta, 1.0 in Chen et al., 2019), and G is rewarded by
      # rotation_g_weight (alpha, 0.2) when D can tell the rotation of its turned fakes.
      rotation_d_weight=0.0,
      rotation_g_weight=0.0,
      cr_weight=0.0,  # CR-GAN's consistency penalty on reals, flipped and shifted (10 in the paper)
      # < 1: G's loss uses only that fraction of the fakes D rates most real, a constant fraction
      # from the first step (Sinha et al., 2020, anneal it from 1). Per device under pmap or
      # shard_map, so the kept fakes depend on the device count; g_loss is that subset's mean.
      g_topk=1.0,
      # > 0: MSGAN's mode-seeking term (Mao et al., 2019; 1 in the paper) in G's loss: over pairs
      # of G's fakes with the same label (or cluster), G is charged that weight over how far
      # apart their images are per unit of noise, against near-copies within a label.
      mode_seeking_weight=0.0,
      ema_decay=0.999,  # warmed up: step t uses min(ema_decay, (1 + t) / (10 + t))
      # Every eval_every_steps, FID, KID, precision/recall and IS of eval_num_samples EMA samples
      # vs as many test images go to metrics.jsonl and TensorBoard (evaluate CLI: --num_samples).
      eval_num_samples=2000,
      **_network_defaults(),
  )


def _network_defaults() -> dict:
  """The networks' shapes, inits and formulations."""
  return dict(
      upsample="subpixel",  # DCGAN generator: 'subpixel', 'resize_conv' or 'transpose'
      g_final_features=0,  # DCGAN generator: > 0 adds a full-resolution stage of that width
      d_base_features=64,  # DCGAN discriminator: its first conv's channels (each next has 2x)
      # DCGAN generator: channels at 7x7 (8x8 at sides 32 and 64), halved by each upsampling
      g_base_features=128,
      # DCGAN: conv and dense layers initialised like PyTorch's (kernels and biases
      # U(+-1/sqrt(fan_in))), else flax's defaults (lecun normal kernels, zero biases)
      torch_init=False,
      # Formulations of one function, for the backend ('auto': the CPU one on XLA:CPU, the plain
      # one elsewhere). d_conv: DCGAN D's convolutions, 'custom_vjp' (derivatives of every order
      # on XLA:CPU's fast paths) or 'lax'. upsample_impl: upsample='transpose' as 'subpixel'
      # convolutions or 'conv_transpose'. critic_loop: n_critic > 1 updates 'unroll'ed (XLA:CPU
      # runs convolutions in loop bodies slowly) or in a lax.'scan'.
      d_conv="auto",
      upsample_impl="auto",
      critic_loop="auto",
  )


def validate_config(config, need) -> None:
  need(config.gan_loss in gan_losses.LOSSES,
       f"gan_loss '{config.gan_loss}' is unknown; choose one of {sorted(gan_losses.LOSSES)}")
  need(config.scale == "minus_one_one", "GANs generate with tanh: set scale='minus_one_one'")
  need(config.n_critic >= 1, f"n_critic must be >= 1, got {config.n_critic}")
  need(config.gp_weight >= 0 and config.r1_gamma >= 0, "gp_weight and r1_gamma must be >= 0")
  need(0.0 <= config.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {config.ema_decay}")
  need(not config.aux_classifier or config.conditional,
       "aux_classifier=True needs conditional=True")
  need(config.pixel_clusters == 0 or config.pixel_clusters >= 2,
       f"pixel_clusters must be 0 (off) or >= 2 clusters, got {config.pixel_clusters}")
  need(not (config.pixel_clusters and config.conditional),
       "pixel_clusters replaces the labels of conditional=True: set one of them")
  need(config.label_mode in gan_models.LABEL_MODES,
       f"label_mode '{config.label_mode}' is unknown; choose one of {gan_models.LABEL_MODES}")
  need(
      config.eval_num_samples >= sample_eval.MIN_SAMPLES,
      f"eval_num_samples must be >= {sample_eval.MIN_SAMPLES} (the inception score's splits), "
      f"got {config.eval_num_samples}")
  need(config.rotation_d_weight >= 0 and config.rotation_g_weight >= 0,
       "rotation_d_weight and rotation_g_weight must be >= 0 (0 = no SS-GAN rotation loss)")
  need(
      not config.rotation_g_weight or config.rotation_d_weight,
      "rotation_g_weight > 0 needs rotation_d_weight > 0: only D's rotation loss trains the "
      "rotation head that G's term is measured by")
  need(config.model == "dcgan" or not uses_rotation(config),
       f"the SS-GAN rotation loss needs the DCGAN discriminator, not model '{config.model}'")
  for key in ("cr_weight", "mode_seeking_weight"):
    need(config[key] >= 0, f"{key} must be >= 0 (0 = off), got {config[key]}")
  need(
      0.0 < config.g_topk <= 1.0,
      f"g_topk must be in (0, 1] (the fraction of fakes in G's loss; 1 = all), got "
      f"{config.g_topk}")
  _validate_networks(config, need)
  d_batchnorm = config.model == "dcgan" and config.d_batchnorm and not config.spectral_norm
  need(
      not (d_batchnorm and (config.gp_weight or config.r1_gamma)),
      "a gradient penalty (gp_weight, r1_gamma) needs a critic that treats examples "
      "independently, and the DCGAN discriminator's BatchNorm mixes them: set "
      "d_batchnorm=False or spectral_norm=True")


def _validate_networks(config, need) -> None:
  """The keys of `_network_defaults`."""
  need(config.upsample in gan_models.UPSAMPLE_MODES,
       f"upsample '{config.upsample}' is unknown; choose one of {gan_models.UPSAMPLE_MODES}")
  for key, choices in (("d_conv", gan_models.D_CONVS), ("upsample_impl", TRANSPOSE_IMPLS),
                       ("critic_loop", CRITIC_LOOPS)):
    need(config[key] in ("auto",) + choices,
         f"{key} '{config[key]}' is unknown; choose 'auto' or one of {choices}")
  for key in ("d_base_features", "g_base_features"):
    need(config[key] >= 1, f"{key} must be a positive channel count, got {config[key]}")
  need(
      config.g_final_features >= 0,
      f"g_final_features must be >= 0 (0 = no full-resolution stage), got "
      f"{config.g_final_features}")


def batches_per_step(config) -> int:
  """Every critic update trains on a fresh real batch (Gulrajani et al.'s WGAN-GP algorithm)."""
  return int(config.n_critic)


def train_labels(config, images: np.ndarray, labels: np.ndarray, workdir: str | None = None,
                 rows: data_lib.Rows | None = None) -> np.ndarray:
  """The labels the train step sees for `images` (the train split's `rows`, by default all of
  it): the dataset's, or balanced pixel k-means cluster ids of the whole split (kept in
  `workdir` by its first run, process 0 writing, and read back on resume)."""
  if not config.pixel_clusters:
    return labels
  if rows is not None and rows[1] - rows[0] < data_lib.config_split_size(config, "train"):
    whole = data_lib.load_config_split(config, "train")[0]  # the clusters are the split's
    return train_labels(config, whole, labels, workdir)[rows[0]:rows[1]]
  if workdir is None:
    return clusters.pixel_clusters(images, config.pixel_clusters, seed=config.seed)
  return clusters.workdir_clusters(workdir, images, config.pixel_clusters, seed=config.seed,
                                   write=jax.process_index() == 0)


def uses_rotation(config) -> bool:
  """Whether SS-GAN's rotation loss is on (D then has a rotation head)."""
  return bool(config.rotation_d_weight or config.rotation_g_weight)


def num_labels(config, info: data_lib.DatasetInfo) -> int:
  """Classes G and D are conditioned on: the dataset's, the pixel clusters' or 0."""
  return info.num_classes if config.conditional else int(config.pixel_clusters)


def build_models(config, info: data_lib.DatasetInfo):
  """(generator, discriminator) of `config`, with its `auto` formulations resolved."""
  num_classes = num_labels(config, info)
  dtype = backend.compute_dtype(config)
  if config.model == "gan_mlp":
    generator = gan_models.MLPGenerator(info.image_shape, num_classes=num_classes,
                                        label_mode=config.label_mode, dtype=dtype)
    discriminator = gan_models.MLPDiscriminator(
        num_classes=0 if config.aux_classifier else num_classes, spectral_norm=config.spectral_norm,
        dtype=dtype)
  else:
    resolution_stages(info.image_shape, f"model 'dcgan' (dataset {info.name})")
    generator = gan_models.DCGANGenerator(
        info.image_shape, num_classes=num_classes, label_mode=config.label_mode,
        upsample=config.upsample, base_features=config.g_base_features,
        final_features=config.g_final_features,
        transpose_impl=backend.resolve("upsample_impl", config.upsample_impl),
        torch_init=config.torch_init, dtype=dtype)
    discriminator = gan_models.DCGANDiscriminator(
        base_features=config.d_base_features, num_classes=num_classes,
        spectral_norm=config.spectral_norm, aux_classifier=config.aux_classifier,
        batch_norm=config.d_batchnorm, rotation_head=uses_rotation(config),
        conv=backend.resolve("d_conv", config.d_conv), torch_init=config.torch_init, dtype=dtype)
  return generator, discriminator


def build(config, info: data_lib.DatasetInfo, total_steps: int = 1) -> Trainable:
  """The GAN `Trainable`: `gan_step.train_step` wired to the config's networks and optimizers."""
  generator, discriminator = build_models(config, info)
  num_classes = num_labels(config, info)  # conditional (evaluated against labels) or clusters
  nets = gan_step.Nets(generator, discriminator, labeled=num_classes > 0,
                       aux=bool(config.aux_classifier), rotation=uses_rotation(config),
                       critic_loop=backend.resolve("critic_loop", config.critic_loop))
  d_lr = config.d_learning_rate if config.d_learning_rate > 0 else config.learning_rate
  txs = (
      state_lib.adam(config, total_steps),  # n_critic D updates a step
      state_lib.adam(config, total_steps * config.n_critic, d_lr))

  def sample(state: TrainState, rng, num: int, use_ema: bool = True):
    labels = jnp.arange(num, dtype=jnp.int32) % num_classes if nets.labeled else None
    images = np.asarray(generate01(state, rng, labels, nets, config.latent_dim, num, use_ema))
    return images, (None if labels is None else np.asarray(labels))

  def log_images(state: TrainState, test: data_lib.DeviceData) -> dict:
    """Fixed-noise grid from the EMA generator (a class or pixel cluster per row)."""
    del test
    rng = stream_rng(state, SAMPLE_STREAM)
    return {
        "samples":
            writers.sample_grid(lambda num: sample(state, rng, num), config.num_sample_images,
                                num_classes)
    }

  scores = sample_eval.SampleEvaluator(config, sample, conditional=bool(config.conditional))
  return Trainable(init=functools.partial(init, nets=nets, txs=txs, info=info, config=config),
                   train_step=functools.partial(gan_step.train_step, nets=nets,
                                                config=config), evaluate=scores.evaluate,
                   full_evaluate=scores.full_evaluate, sample=sample, log_images=log_images,
                   best_metric="fid", best_mode="min", optimizers=(("g", txs[0]), ("d", txs[1])))


def init(rng, *, nets: gan_step.Nets, txs, info: data_lib.DatasetInfo, config) -> TrainState:
  """G and D initialised from `rng` (folds 0 and 1), each with its optimizer; EMA = G's params."""
  z = jnp.zeros((2, config.latent_dim))
  x = jnp.zeros((2,) + tuple(info.image_shape))
  label = jnp.zeros((2,), jnp.int32) if nets.labeled else None
  g_vars = nets.generator.init(jax.random.fold_in(rng, 0), z, label, train=False)
  d_vars = nets.discriminator.init(jax.random.fold_in(rng, 1), x, None if nets.aux else label,
                                   train=False)
  g = Player.create(g_vars["params"], txs[0], g_vars.get("batch_stats", {}))
  d = Player.create(d_vars["params"], txs[1], d_vars.get("batch_stats", {}))
  return TrainState.create(rng, ema_params=g.params, g=g, d=d)


@functools.partial(jax.jit, static_argnames=("nets", "latent_dim", "num", "use_ema"))
def generate01(state: TrainState, rng, labels, nets: gan_step.Nets, latent_dim: int, num: int,
               use_ema: bool = True):
  """`num` images in [0, 1] from the EMA (or the trained) generator in eval mode."""
  z = jax.random.normal(rng, (num, latent_dim))
  g = state.players["g"]
  params = state.ema_params if use_ema else g.params
  images, _ = gan_step.generate(nets, params, g.model_state, z, labels, False)
  return (images + 1.0) / 2.0
