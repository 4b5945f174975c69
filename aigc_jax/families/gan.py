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
import optax

from aigc_jax import backend
from aigc_jax import clusters
from aigc_jax import data as data_lib
from aigc_jax import gan_losses
from aigc_jax import writers
from aigc_jax.families import Trainable
from aigc_jax.metrics import classifier as classifier_lib
from aigc_jax.models import gan as gan_models
from aigc_jax.models.layers import TRANSPOSE_IMPLS
from aigc_jax import state as state_lib
from aigc_jax.state import GANState, batch_noise, step_rng

SAMPLE_STREAM = 2
CRITIC_LOOPS = ("unroll", "scan")
FLOOR_METRICS = ("fid", "kid", "precision", "recall", "is", "label_acc")  # the CLI's *_floor keys


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
      ema_decay=0.999,  # warmed up: step t uses min(ema_decay, (1 + t) / (10 + t))
      upsample="subpixel",  # DCGAN generator: 'subpixel', 'resize_conv' or 'transpose'
      g_final_features=0,  # DCGAN generator: > 0 adds a full-resolution stage of that width
      d_base_features=64,  # DCGAN discriminator: its first conv's channels (the second has 2x)
      # Formulations of one function, for the backend ('auto': the CPU one on XLA:CPU, the plain
      # one elsewhere). d_conv: DCGAN D's convolutions, 'custom_vjp' (derivatives of every order
      # on XLA:CPU's fast paths) or 'lax'. upsample_impl: upsample='transpose' as 'subpixel'
      # convolutions or 'conv_transpose'. critic_loop: n_critic > 1 updates 'unroll'ed (XLA:CPU
      # runs convolutions in loop bodies slowly) or in a lax.'scan'.
      d_conv="auto",
      upsample_impl="auto",
      critic_loop="auto",
      # Every eval_every_steps, FID, KID, precision/recall and IS of eval_num_samples EMA samples
      # vs as many test images go to metrics.jsonl and TensorBoard (evaluate CLI: --num_samples).
      eval_num_samples=2000,
  )


def validate_config(config, need) -> None:
  need(config.gan_loss in gan_losses.LOSSES,
       f"gan_loss '{config.gan_loss}' is unknown; choose one of {sorted(gan_losses.LOSSES)}")
  need(config.scale == "minus_one_one", "GANs generate with tanh: set scale='minus_one_one'")
  need(config.n_critic >= 1, f"n_critic must be >= 1, got {config.n_critic}")
  need(config.gp_weight >= 0 and config.r1_gamma >= 0, "gp_weight and r1_gamma must be >= 0")
  need(0.0 <= config.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {config.ema_decay}")
  need(not config.aux_classifier or config.conditional, "aux_classifier=True needs conditional=True")
  need(config.pixel_clusters == 0 or config.pixel_clusters >= 2,
       f"pixel_clusters must be 0 (off) or >= 2 clusters, got {config.pixel_clusters}")
  need(not (config.pixel_clusters and config.conditional),
       "pixel_clusters replaces the labels of conditional=True: set one of them")
  need(config.label_mode in gan_models.LABEL_MODES,
       f"label_mode '{config.label_mode}' is unknown; choose one of {gan_models.LABEL_MODES}")
  need(config.upsample in gan_models.UPSAMPLE_MODES,
       f"upsample '{config.upsample}' is unknown; choose one of {gan_models.UPSAMPLE_MODES}")
  need(config.eval_num_samples > 0, "eval_num_samples must be > 0")
  for key, choices in (("d_conv", gan_models.D_CONVS), ("upsample_impl", TRANSPOSE_IMPLS),
                       ("critic_loop", CRITIC_LOOPS)):
    need(config[key] in ("auto",) + choices,
         f"{key} '{config[key]}' is unknown; choose 'auto' or one of {choices}")
  need(config.rotation_d_weight >= 0 and config.rotation_g_weight >= 0,
       "rotation_d_weight and rotation_g_weight must be >= 0 (0 = no SS-GAN rotation loss)")
  need(not config.rotation_g_weight or config.rotation_d_weight,
       "rotation_g_weight > 0 needs rotation_d_weight > 0: only D's rotation loss trains the "
       "rotation head that G's term is measured by")
  need(config.model == "dcgan" or not uses_rotation(config),
       f"the SS-GAN rotation loss needs the DCGAN discriminator, not model '{config.model}'")
  need(config.cr_weight >= 0, f"cr_weight must be >= 0 (0 = off), got {config.cr_weight}")
  need(0.0 < config.g_topk <= 1.0,
       f"g_topk must be in (0, 1] (the fraction of fakes in G's loss; 1 = all), got {config.g_topk}")
  need(config.d_base_features >= 1,
       f"d_base_features must be a positive channel count, got {config.d_base_features}")
  need(config.g_final_features >= 0,
       f"g_final_features must be >= 0 (0 = no full-resolution stage), got {config.g_final_features}")
  d_batchnorm = config.model == "dcgan" and config.d_batchnorm and not config.spectral_norm
  need(not (d_batchnorm and (config.gp_weight or config.r1_gamma)),
       "a gradient penalty (gp_weight, r1_gamma) needs a critic that treats examples "
       "independently, and the DCGAN discriminator's BatchNorm mixes them: set "
       "d_batchnorm=False or spectral_norm=True")


def batches_per_step(config) -> int:
  """Every critic update trains on a fresh real batch (Gulrajani et al.'s WGAN-GP algorithm)."""
  return int(config.n_critic)


def train_labels(config, images: np.ndarray, labels: np.ndarray,
                 workdir: str | None = None) -> np.ndarray:
  """The labels the train step sees: the dataset's, or balanced pixel k-means cluster ids (kept
  in `workdir` by its first run, process 0 writing, and read back on resume)."""
  if not config.pixel_clusters:
    return labels
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
    generator = gan_models.DCGANGenerator(
        info.image_shape, num_classes=num_classes, label_mode=config.label_mode,
        upsample=config.upsample, final_features=config.g_final_features,
        transpose_impl=backend.choose(config.upsample_impl, "subpixel", "conv_transpose"),
        dtype=dtype)
    discriminator = gan_models.DCGANDiscriminator(
        base_features=config.d_base_features, num_classes=num_classes,
        spectral_norm=config.spectral_norm, aux_classifier=config.aux_classifier,
        batch_norm=config.d_batchnorm, rotation_head=uses_rotation(config),
        conv=backend.choose(config.d_conv, "custom_vjp", "lax"), dtype=dtype)
  return generator, discriminator


def build(config, info: data_lib.DatasetInfo, total_steps: int = 1) -> Trainable:
  generator, discriminator = build_models(config, info)
  conditional, aux = bool(config.conditional), bool(config.aux_classifier)
  num_classes = num_labels(config, info)  # conditional (evaluated against labels) or clusters
  labeled = num_classes > 0
  rotation = uses_rotation(config)
  d_loss_fn, g_loss_fn = gan_losses.LOSSES[config.gan_loss]
  g_tx = state_lib.adam(config, total_steps)
  d_lr = config.d_learning_rate if config.d_learning_rate > 0 else config.learning_rate
  d_tx = state_lib.adam(config, total_steps * config.n_critic, d_lr)  # n_critic D updates a step
  zdim = config.latent_dim
  critic_loop = backend.choose(config.critic_loop, "unroll", "scan")

  def init(rng) -> GANState:
    z = jnp.zeros((2, zdim))
    x = jnp.zeros((2,) + tuple(info.image_shape))
    label = jnp.zeros((2,), jnp.int32) if labeled else None
    g_vars = generator.init(jax.random.fold_in(rng, 0), z, label, train=False)
    d_vars = discriminator.init(jax.random.fold_in(rng, 1), x, None if aux else label, train=False)
    g_params, d_params = g_vars["params"], d_vars["params"]
    return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                    g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params),
                    g_stats=g_vars.get("batch_stats", {}), d_stats=d_vars.get("batch_stats", {}),
                    ema_params=g_params, rng=rng, g_tx=g_tx, d_tx=d_tx)

  def generate(g_params, g_stats, z, label, train, axis_name=None):
    variables = {"params": g_params, "batch_stats": g_stats}
    if not train:
      return generator.apply(variables, z, label, train=False), g_stats
    out, updates = generator.apply(variables, z, label, train=True, axis_name=axis_name,
                                   mutable=["batch_stats"])
    return out, updates.get("batch_stats", g_stats)

  def discriminate(d_params, d_stats, x, label, axis_name):
    """((logit, class logits or None, rotation logits or None), new d_stats), in train mode."""
    out, updates = discriminator.apply({"params": d_params, "batch_stats": d_stats}, x,
                                       None if aux else label, train=True, axis_name=axis_name,
                                       mutable=["batch_stats"])
    out, rotation_logits = out if rotation else (out, None)
    logit, class_logits = out if aux else (out, None)
    return (logit, class_logits, rotation_logits), updates.get("batch_stats", d_stats)

  def rotation_loss(d_params, d_stats, x, label, axis_name):
    """SS-GAN's cross-entropy of D's rotation head on x turned by 0/90/180/270 degrees."""
    turned, which = gan_models.rotate_quarters(x)
    (_, _, rotation_logits), _ = discriminate(d_params, d_stats, turned, label, axis_name)
    return gan_losses.classifier_loss(rotation_logits, which)

  def train_step(state: GANState, batch, axis_name: str | None = None):
    rng = step_rng(state)
    normal = lambda key, shape: batch_noise(jax.random.normal, key, shape, axis_name)  # noqa: E731
    # n_critic real batches, one per D update; G's update takes the last one's labels.
    reals = batch["image"].reshape((config.n_critic, -1) + batch["image"].shape[1:])
    labels = batch["label"].reshape(config.n_critic, -1) if labeled else None
    g_label = labels[-1] if labeled else None
    size = reals.shape[1]
    topk = max(1, round(config.g_topk * size))
    mean = (lambda t: jax.lax.pmean(t, axis_name)) if axis_name else (lambda t: t)
    # The D updates leave G unchanged, so G's forward pass for its own update runs once, up
    # front; with n_critic == 1 the critic trains on those same fakes (as the PyTorch DCGAN
    # example does), which saves a generator forward pass per step.
    z_g = normal(jax.random.fold_in(rng, 0 if config.n_critic == 1 else 2 * config.n_critic),
                 (size, zdim))
    fake_g, g_vjp, g_stats = jax.vjp(
        lambda params: generate(params, state.g_stats, z_g, g_label, True, axis_name), state.g_params,
        has_aux=True)

    def critic_update(carry, i):
      """D update i on real batch i."""
      d_params, d_opt_state, d_stats = carry
      real, label = reals[i], (labels[i] if labeled else None)
      if config.n_critic == 1:
        fake = fake_g
      else:
        z = normal(jax.random.fold_in(rng, 2 * i), (size, zdim))
        fake, _ = generate(state.g_params, state.g_stats, z, label, True, axis_name)
      fake = jax.lax.stop_gradient(fake)

      def d_objective(params):
        (real_logit, real_cls, _), stats = discriminate(params, d_stats, real, label, axis_name)
        (fake_logit, fake_cls, _), stats = discriminate(params, stats, fake, label, axis_name)
        loss = d_loss_fn(real_logit, fake_logit)
        terms = {"d_loss": loss, "d_real": jnp.mean(real_logit), "d_fake": jnp.mean(fake_logit)}
        critic = lambda x: discriminate(params, stats, x, label, axis_name)[0][0]
        if config.gp_weight:
          terms["gp"] = gan_losses.gradient_penalty(critic, real, fake,
                                                    jax.random.fold_in(rng, 2 * i + 1), axis_name)
          loss = loss + config.gp_weight * terms["gp"]
        if config.r1_gamma:
          terms["r1"] = gan_losses.r1_penalty(critic, real)
          loss = loss + 0.5 * config.r1_gamma * terms["r1"]
        if config.cr_weight:
          cr_rng = jax.random.fold_in(rng, 2 * config.n_critic + 1 + i)
          terms["cr"] = gan_losses.consistency_penalty(critic, real, cr_rng, axis_name=axis_name)
          loss = loss + config.cr_weight * terms["cr"]
        if aux:
          terms["d_class_loss"] = (gan_losses.classifier_loss(real_cls, label) +
                                   gan_losses.classifier_loss(fake_cls, label))
          loss = loss + terms["d_class_loss"]
        if config.rotation_d_weight:  # its BatchNorm statistics are not kept
          terms["d_rotation_loss"] = rotation_loss(params, stats, real, label, axis_name)
          loss = loss + config.rotation_d_weight * terms["d_rotation_loss"]
        return loss, (stats, terms)

      grads, (d_stats, terms) = jax.grad(d_objective, has_aux=True)(d_params)
      grads, d_stats = mean((grads, d_stats))
      updates, d_opt_state = state.d_tx.update(grads, d_opt_state, d_params)
      return (optax.apply_updates(d_params, updates), d_opt_state, d_stats), terms

    # Unrolled on CPU: a lax.scan over the updates compiles in half the time, but XLA:CPU runs
    # convolutions inside loop bodies on a slow path (measured: WGAN-GP step 0.66 -> 6.1 s).
    carry = (state.d_params, state.d_opt_state, state.d_stats)
    if critic_loop == "scan":
      carry, metrics = jax.lax.scan(critic_update, carry, jnp.arange(config.n_critic))
      metrics = jax.tree_util.tree_map(lambda m: m[-1], metrics)  # the last update's
    else:
      for i in range(config.n_critic):
        carry, metrics = critic_update(carry, i)  # the metrics are the last update's
    d_params, d_opt_state, d_stats = carry

    def g_objective(fake):  # of G's output; chained to G's parameters by g_vjp
      (logit, cls, _), _ = discriminate(d_params, d_stats, fake, g_label, axis_name)  # stats unused
      if topk < size:  # per device under pmap/shard_map
        logit = jax.lax.top_k(logit, topk)[0]
      loss = g_loss_fn(logit)
      terms = {"g_loss": loss}
      if aux:
        terms["g_class_loss"] = gan_losses.classifier_loss(cls, g_label)
        loss = loss + terms["g_class_loss"]
      if config.rotation_g_weight:
        terms["g_rotation_loss"] = rotation_loss(d_params, d_stats, fake, g_label, axis_name)
        loss = loss + config.rotation_g_weight * terms["g_rotation_loss"]
      return loss, terms

    fake_grad, g_terms = jax.grad(g_objective, has_aux=True)(fake_g)
    (grads,) = g_vjp(fake_grad)
    grads, g_stats = mean((grads, g_stats))
    updates, g_opt_state = state.g_tx.update(grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    metrics = mean({**metrics, **g_terms, "loss": metrics["d_loss"] + g_terms["g_loss"]})
    new_state = state.replace(
        step=state.step + 1, g_params=g_params, d_params=d_params, g_opt_state=g_opt_state,
        d_opt_state=d_opt_state, g_stats=g_stats, d_stats=d_stats,
        ema_params=state_lib.ema_update(state.ema_params, g_params,
                                        state_lib.warmed_up_ema_decay(config.ema_decay, state.step)))
    return new_state, metrics

  @functools.partial(jax.jit, static_argnames=("num", "use_ema"))
  def _generate01(state, rng, labels, num, use_ema=True):
    z = jax.random.normal(rng, (num, zdim))
    params = state.ema_params if use_ema else state.g_params
    images, _ = generate(params, state.g_stats, z, labels, False)
    return (images + 1.0) / 2.0

  def sample(state: GANState, rng, num: int, use_ema: bool = True):
    labels = jnp.arange(num, dtype=jnp.int32) % num_classes if labeled else None
    images = np.asarray(_generate01(state, rng, labels, num, use_ema))
    return images, (None if labels is None else np.asarray(labels))

  @functools.cache
  def classifier():  # loaded (or trained, once per recipe) at the first evaluation only
    return classifier_lib.load_or_train(config.dataset, progress=False)

  real_cache = {}  # num -> (test images, their features): one extraction per test set and size

  def real_features(test: data_lib.DeviceData, num: int):
    """The classifier's features of the first `num` test images, extracted once and reused."""
    images, features = real_cache.get(num, (None, None))
    if images is not test.images:
      images, features = test.images, classifier().features(np.asarray(test.images[:num]))
      real_cache[num] = images, features
    return features

  def _metrics(state, real, num, use_ema=True) -> dict:
    """The sample metrics of `num` generated images against `real` (test features)."""
    fakes, labels = [], []
    for i, start in enumerate(range(0, num, 1000)):
      images, lab = sample(state, jax.random.PRNGKey(1000 + i), min(1000, num - start), use_ema)
      fakes.append(np.round(images * 255).astype(np.uint8))
      labels.append(lab)
    requested = np.concatenate(labels) if conditional else None
    return classifier_lib.evaluate_samples(classifier(), np.concatenate(fakes), real, requested)

  def _floors(real, num) -> dict:
    """The same metrics of `num` real train images vs the same test features (cached)."""
    images, labels = data_lib.load_split(config.dataset, "train", idx_dir=config.idx_dir or None,
                                         tfds_data_dir=config.tfds_data_dir or None)
    return classifier_lib.floors(classifier(), images, real, labels if conditional else None,
                                 num_train=num)

  def evaluate(state: GANState, test: data_lib.DeviceData) -> dict:
    num = min(config.eval_num_samples, int(test.labels.shape[0]))
    return _metrics(state, real_features(test, num), num)

  def full_evaluate(state: GANState, test: data_lib.DeviceData, *, num_samples=10_000,
                    progress=None, **unused) -> dict:
    """EMA metrics, each followed by its real-train-vs-real-test `<name>_floor`; raw_* metrics.

    num_samples generated images per generator against as many test images; the floors use as
    many train images. The test features are extracted once for all three.
    """
    del progress, unused
    num = min(num_samples, int(test.labels.shape[0]))
    real = real_features(test, num)
    ema, floor = _metrics(state, real, num), _floors(real, num)
    raw = _metrics(state, real, num, use_ema=False)
    out = {}
    for name, value in ema.items():
      out[name] = value
      if name in FLOOR_METRICS:
        out[f"{name}_floor"] = floor[name]
    return {**out, **{f"raw_{k}": v for k, v in raw.items()}, "num_samples": num}

  def log_images(state: GANState, test: data_lib.DeviceData) -> dict:
    """Fixed-noise grid from the EMA generator (a class or pixel cluster per row)."""
    rng = jax.random.fold_in(state.rng, SAMPLE_STREAM)
    return {"samples": writers.sample_grid(lambda num: sample(state, rng, num),
                                           config.num_sample_images,
                                           num_classes)}

  return Trainable(init=init, train_step=train_step, evaluate=evaluate,
                   full_evaluate=full_evaluate, sample=sample, log_images=log_images,
                   best_metric="fid", best_mode="min")
