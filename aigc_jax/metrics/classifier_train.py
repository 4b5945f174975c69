"""Trains the feature classifier of a recipe: a small self-contained loop (jit, optax, a dict).

The recipe fixes everything that decides the result: the init (`PRNGKey(seed)` split into the
init key and the dropout key), the data order (`data.epoch_permutation(seed, epoch)`, full
batches only), Adam with a cosine decay to 0 over all steps, and dropout drawn from
`fold_in(dropout key, step)`. The same recipe on the same backend gives the same parameters.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from aigc_jax import data as data_lib
from aigc_jax import progress as progress_lib
from aigc_jax.metrics import classifier_net
from aigc_jax.metrics import inception_score as is_lib

LOG_EVERY = 25  # steps per progress-bar update


def init_state(model: nn.Module, tx: optax.GradientTransformation, seed: int,
               image_shape: tuple[int, ...]) -> dict[str, Any]:
  """The train state: {'step', 'params', 'opt_state', 'batch_stats', 'rng'} (a plain pytree)."""
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
  variables = model.init(init_rng, jnp.zeros((1, *image_shape), jnp.float32))
  return {
      "step": jnp.zeros(
          (), jnp.int32), "params": variables["params"], "opt_state": tx.init(variables["params"]),
      "batch_stats": variables["batch_stats"], "rng": dropout_rng
  }


def train_step(model: nn.Module, tx: optax.GradientTransformation, batch_size: int,
               state: dict[str, Any], data: data_lib.DeviceData, perm: jax.Array,
               index: jax.Array) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """One Adam step on batch `index` of the epoch order `perm`: (new state, {loss, accuracy}).

  Images are scaled to [0, 1] as `classifier_net.to_input` does; pure, `index` may be traced.
  """
  batch = data_lib.get_batch(data, perm, index, batch_size, scale="zero_one")
  dropout_rng = jax.random.fold_in(state["rng"], state["step"])

  def loss_fn(params):
    (_, logits), updates = model.apply({"params": params, "batch_stats": state["batch_stats"]},
                                       batch["image"], train=True, rngs={"dropout": dropout_rng},
                                       mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  accuracy = (logits.argmax(-1) == batch["label"]).mean()
  steps, opt_state = tx.update(grads, state["opt_state"], state["params"])
  new_state = {
      "step": state["step"] + 1, "params": optax.apply_updates(state["params"], steps),
      "opt_state": opt_state, "batch_stats": updates["batch_stats"], "rng": state["rng"]
  }
  return new_state, {"loss": loss, "accuracy": accuracy}


def _train_images(recipe: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  images, labels = data_lib.load_split(recipe["dataset"], "train",
                                       **classifier_net.data_options(recipe))
  if recipe["train_examples"]:
    images, labels = images[:recipe["train_examples"]], labels[:recipe["train_examples"]]
  return images, labels


def train(recipe: Mapping[str, Any], progress: bool = True) -> tuple[Any, dict[str, Any]]:
  """Trains the recipe's classifier from scratch on its dataset's train split.

  Returns (variables, info): numpy {'params', 'batch_stats'} of `classifier_net.build_model`,
  and {recipe, key, test_accuracy (on the test split), train_seconds, jax_version}.
  """
  recipe = classifier_net.resolve_recipe(recipe)
  start_time = time.time()
  images, labels = _train_images(recipe)
  # A split smaller than a batch (a small folder) trains on batches of the whole split.
  model, batch_size = classifier_net.build_model(recipe), min(recipe["batch_size"], len(images))
  steps = data_lib.steps_per_epoch(len(images), batch_size)
  total = steps * recipe["epochs"]
  tx = optax.adam(optax.cosine_decay_schedule(recipe["learning_rate"], max(1, total)))
  state = init_state(model, tx, recipe["seed"], images.shape[1:])
  # One jitted step per dispatch: XLA:CPU runs convolutions inside loop bodies slowly.
  step = jax.jit(functools.partial(train_step, model, tx, batch_size), donate_argnums=0)
  data = data_lib.to_device(images, labels)
  with progress_lib.bar(total, "classifier", shown=progress) as bar:
    for epoch in range(recipe["epochs"]):
      perm = data_lib.epoch_permutation(recipe["seed"], epoch, len(images))
      for index in range(steps):
        state, metrics = step(state, data, perm, np.int32(index))
        if (index + 1) % LOG_EVERY == 0 or index + 1 == steps:
          bar.update((index % LOG_EVERY) + 1)
          bar.set_postfix(epoch=epoch, loss=f"{float(metrics['loss']):.3f}",
                          acc=f"{float(metrics['accuracy']):.3f}")
  variables = jax.tree.map(np.asarray,
                           {"params": state["params"], "batch_stats": state["batch_stats"]})
  test_images, test_labels = data_lib.load_split(recipe["dataset"], "test",
                                                 **classifier_net.data_options(recipe))
  clf = classifier_net.Classifier(model, variables, float("nan"), recipe)
  info = dict(recipe=recipe, key=classifier_net.recipe_key(recipe),
              test_accuracy=is_lib.label_accuracy(clf.logits(test_images), test_labels),
              train_seconds=round(time.time() - start_time, 1), jax_version=jax.__version__)
  return variables, info
