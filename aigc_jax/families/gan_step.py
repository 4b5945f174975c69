"""The GAN train step: `n_critic` discriminator updates, each on its own real batch, then one
generator update, with an EMA of G. Each loss is a base GAN loss plus the weighted terms of
`D_TERMS` / `G_TERMS` whose config weight is non-zero.

Pure and per device: under a named data axis (`axis_name`) gradients, statistics and metrics are
averaged over it and noise is drawn for the global batch (`noise.batch_noise`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax import gan_losses
from aigc_jax.families import pmean
from aigc_jax.models import gan as gan_models
from aigc_jax.noise import batch_noise
from aigc_jax.state import Player
from aigc_jax.state import TrainState
from aigc_jax.state import step_rng
from aigc_jax.state import with_ema


class Nets(NamedTuple):
  """The networks and the static choices the step is traced with."""

  generator: nn.Module
  discriminator: nn.Module
  labeled: bool  # G and D see labels (classes or pixel clusters)
  aux: bool  # ACGAN: D predicts the class instead of projecting the label
  rotation: bool  # SS-GAN: D has a rotation head
  critic_loop: str  # 'unroll' or 'scan' over the n_critic D updates


class TermInputs(NamedTuple):
  """What a loss term may read. `critic(x) -> logits (B,)` and `rotation_loss(x) -> scalar` use
  D's current params and statistics; `*_cls` are D's class logits (ACGAN) or None."""

  critic: Callable
  rotation_loss: Callable
  real: Any
  fake: Any
  label: Any
  real_cls: Any
  fake_cls: Any
  gp_rng: Any
  cr_rng: Any
  z: Any  # G's noise for `fake`
  axis_name: str | None


# name -> (weight key, scale, term): the loss adds scale * config[key] * term(inputs) when that
# weight is non-zero, in this order, and reports the term as metric `name`.
D_TERMS = {
    "gp": ("gp_weight", 1.0,
           lambda t: gan_losses.gradient_penalty(t.critic, t.real, t.fake, t.gp_rng, t.axis_name)),
    "r1": ("r1_gamma", 0.5, lambda t: gan_losses.r1_penalty(t.critic, t.real)),
    "cr":
        ("cr_weight", 1.0,
         lambda t: gan_losses.consistency_penalty(t.critic, t.real, t.cr_rng, axis_name=t.axis_name)
        ),
    "d_class_loss": ("aux_classifier", 1.0, lambda t: (gan_losses.classifier_loss(
        t.real_cls, t.label) + gan_losses.classifier_loss(t.fake_cls, t.label))),
    # its BatchNorm statistics are not kept
    "d_rotation_loss": ("rotation_d_weight", 1.0, lambda t: t.rotation_loss(t.real)),
}
G_TERMS = {
    "g_class_loss":
        ("aux_classifier", 1.0, lambda t: gan_losses.classifier_loss(t.fake_cls, t.label)),
    "g_rotation_loss": ("rotation_g_weight", 1.0, lambda t: t.rotation_loss(t.fake)),
    "g_mode_seeking":
        ("mode_seeking_weight", 1.0, lambda t: gan_losses.mode_seeking(t.fake, t.z, t.label)),
}


def add_terms(table: dict, config, inputs: TermInputs, loss, metrics: dict):
  """loss + the weighted terms of `table` that the config turns on; metrics gain each term."""
  for name, (key, scale, term) in table.items():
    weight = scale * config[key]
    if weight:
      metrics[name] = term(inputs)
      loss = loss + weight * metrics[name]
  return loss, metrics


def generate(nets: Nets, params, stats, z, label, train: bool, axis_name=None):
  """(G(z, label) in [-1, 1], G's new statistics); in eval mode the statistics are unchanged."""
  variables = {"params": params, "batch_stats": stats}
  if not train:
    return nets.generator.apply(variables, z, label, train=False), stats
  out, updates = nets.generator.apply(variables, z, label, train=True, axis_name=axis_name,
                                      mutable=["batch_stats"])
  return out, updates.get("batch_stats", stats)


def discriminate(nets: Nets, params, stats, x, label, axis_name):
  """((logit, class logits or None, rotation logits or None), D's new statistics), train mode."""
  out, updates = nets.discriminator.apply({"params": params, "batch_stats": stats}, x,
                                          None if nets.aux else label, train=True,
                                          axis_name=axis_name, mutable=["batch_stats"])
  out, rotation_logits = out if nets.rotation else (out, None)
  logit, class_logits = out if nets.aux else (out, None)
  return (logit, class_logits, rotation_logits), updates.get("batch_stats", stats)


def rotation_loss(nets: Nets, params, stats, x, label, axis_name):
  """SS-GAN's cross-entropy of D's rotation head on x turned by 0/90/180/270 degrees."""
  turned, which = gan_models.rotate_quarters(x)
  (_, _, rotation_logits), _ = discriminate(nets, params, stats, turned, label, axis_name)
  return gan_losses.classifier_loss(rotation_logits, which)


def term_inputs(nets: Nets, params, stats, label, axis_name, **fields) -> TermInputs:
  """TermInputs whose critic and rotation loss are D at `params` and `stats`."""
  fields = {
      "real": None, "fake": None, "real_cls": None, "fake_cls": None, "gp_rng": None,
      "cr_rng": None, "z": None, **fields
  }
  return TermInputs(critic=lambda x: discriminate(nets, params, stats, x, label, axis_name)[0][0],
                    rotation_loss=lambda x: rotation_loss(nets, params, stats, x, label, axis_name),
                    label=label, axis_name=axis_name, **fields)


def d_objective(params, stats, real, fake, label, rngs, *, nets: Nets, config, axis_name):
  """D's loss on a real and a fake batch, and (D's new statistics, its metrics)."""
  (real_logit, real_cls, _), stats = discriminate(nets, params, stats, real, label, axis_name)
  (fake_logit, fake_cls, _), stats = discriminate(nets, params, stats, fake, label, axis_name)
  loss = gan_losses.LOSSES[config.gan_loss][0](real_logit, fake_logit)
  metrics = {"d_loss": loss, "d_real": jnp.mean(real_logit), "d_fake": jnp.mean(fake_logit)}
  inputs = term_inputs(nets, params, stats, label, axis_name, real=real, fake=fake,
                       real_cls=real_cls, fake_cls=fake_cls, gp_rng=rngs[0], cr_rng=rngs[1])
  loss, metrics = add_terms(D_TERMS, config, inputs, loss, metrics)
  return loss, (stats, metrics)


def g_objective(fake, d: Player, label, z, *, nets: Nets, config, axis_name):
  """G's loss as a function of its output `fake` = G(z, label) (chained to G's params by the
  caller)."""
  (logit, cls, _), _ = discriminate(nets, d.params, d.model_state, fake, label, axis_name)
  topk = max(1, round(config.g_topk * fake.shape[0]))
  if topk < fake.shape[0]:  # per device under a data axis
    logit = jax.lax.top_k(logit, topk)[0]
  loss = gan_losses.LOSSES[config.gan_loss][1](logit)
  inputs = term_inputs(nets, d.params, d.model_state, label, axis_name, fake=fake, fake_cls=cls,
                       z=z)
  return add_terms(G_TERMS, config, inputs, loss, {"g_loss": loss})


def critic_update(d: Player, i, *, g: Player, reals, labels, fake_g, rng, nets: Nets, config,
                  axis_name):
  """D update `i` on real batch i against stopped-gradient fakes: (new D, its metrics).

  With n_critic == 1 the fakes are G's own update's (`fake_g`), else drawn afresh."""
  n = config.n_critic
  real, label = reals[i], (labels[i] if nets.labeled else None)
  if n == 1:
    fake = fake_g
  else:
    z = batch_noise(jax.random.normal, jax.random.fold_in(rng, 2 * i),
                    fake_g.shape[:1] + (config.latent_dim,), axis_name)
    fake, _ = generate(nets, g.params, g.model_state, z, label, True, axis_name)
  rngs = (jax.random.fold_in(rng, 2 * i + 1), jax.random.fold_in(rng, 2 * n + 1 + i))
  objective = functools.partial(d_objective, nets=nets, config=config, axis_name=axis_name)
  grads, (stats, metrics) = jax.grad(objective, has_aux=True)(d.params, d.model_state, real,
                                                              jax.lax.stop_gradient(fake), label,
                                                              rngs)
  grads, stats = pmean((grads, stats), axis_name)
  return d.apply_gradients(grads, model_state=stats), metrics


def critic_updates(update: Callable, d: Player, nets: Nets, n_critic: int):
  """`n_critic` D updates in a lax.scan or unrolled; (D after them, the last one's metrics).

  Unrolled on XLA:CPU, which runs convolutions inside loop bodies on a slow path."""
  if nets.critic_loop == "scan":
    d, metrics = jax.lax.scan(update, d, jnp.arange(n_critic))
    return d, jax.tree_util.tree_map(lambda m: m[-1], metrics)
  for i in range(n_critic):
    d, metrics = update(d, i)
  return d, metrics


def train_step(state: TrainState, batch, *, nets: Nets, config, axis_name: str | None = None):
  """One GAN step on `n_critic` stacked batches (images (n*B, H, W, C) in [-1, 1], labels)."""
  rng, n = step_rng(state), config.n_critic
  g, d = state.players["g"], state.players["d"]
  reals = batch["image"].reshape((n, -1) + batch["image"].shape[1:])
  labels = batch["label"].reshape(n, -1) if nets.labeled else None
  g_label = labels[-1] if nets.labeled else None
  # G's forward pass for its own update runs once, up front (the D updates leave G unchanged).
  z_g = batch_noise(jax.random.normal, jax.random.fold_in(rng, 0 if n == 1 else 2 * n),
                    (reals.shape[1], config.latent_dim), axis_name)
  fake_g, g_vjp, g_stats = jax.vjp(
      lambda p: generate(nets, p, g.model_state, z_g, g_label, True, axis_name), g.params,
      has_aux=True)
  update = functools.partial(critic_update, g=g, reals=reals, labels=labels, fake_g=fake_g, rng=rng,
                             nets=nets, config=config, axis_name=axis_name)
  d, metrics = critic_updates(update, d, nets, n)
  objective = functools.partial(g_objective, nets=nets, config=config, axis_name=axis_name)
  fake_grad, g_metrics = jax.grad(objective, has_aux=True)(fake_g, d, g_label, z_g)
  (grads,) = g_vjp(fake_grad)
  grads, g_stats = pmean((grads, g_stats), axis_name)
  g = g.apply_gradients(grads, model_state=g_stats)
  metrics = pmean({**metrics, **g_metrics, "loss": metrics["d_loss"] + g_metrics["g_loss"]},
                  axis_name)
  return state.replace(step=state.step + 1, players={"g": g, "d": d},
                       ema_params=with_ema(state, g.params, config.ema_decay)), metrics
