"""A population of one model's variants trained as one program: the members' train states
stacked on a leading axis and the family's own `train_step` vmapped over it.

Members share what fixes shapes or the program (the model and its sizes, loss kinds, batch size,
schedule); they differ in numeric config values that enter the step as values (learning rates,
Adam betas, loss weights, a beta-VAE's beta, EMA decay) and in their seed. A member draws its
init, its noise and its data order from its own config's seed, so it trains like the same config
run alone.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import config as config_lib
from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax.suggest import unknown_key_message

SEED = "seed"
RANGES = ("loguniform", "uniform")
SPEC_HELP = ("a list 'a,b,c', a range 'loguniform:LO:HI' or 'uniform:LO:HI' (sampled with the "
             "sweep's seed), or 'seeds' (for seed: one per member)")


class Member(flax.struct.PyTreeNode):
  """A member's train state and its varied config values ({key: float32 scalar}); stacked, every
  leaf has a leading member axis. `rng` and `step` are the train state's (the loop reads them)."""

  state: Any
  values: dict

  @property
  def rng(self):
    return self.state.rng

  @property
  def step(self):
    return self.state.step


def parse_vary(text: str) -> tuple[str, str]:
  key, has_spec, spec = text.partition("=")
  if not (has_spec and key and spec):
    raise config_lib.ConfigError(f"--vary {text}: write KEY=SPEC, with SPEC {SPEC_HELP}")
  return key, spec


def check_key(config, key: str) -> None:
  """Raises ConfigError unless `key` may differ between members: a float key, or the seed."""
  if key not in config:
    raise config_lib.ConfigError(f"--vary: {unknown_key_message(key, config.keys())}")
  value = config[key]
  if key in families.get(config.model).PROGRAM_KEYS:
    raise config_lib.ConfigError(
        f"--vary {key}: its value chooses the step's program (e.g. 0 turns a term off), which "
        f"the members of one sweep share; run separate experiments for {key}, or vary a key "
        "that enters the step as a value (learning rates, Adam betas, active loss weights, "
        "ema_decay, seed)")
  if key != SEED and (isinstance(value, bool) or not isinstance(value, float)):
    raise config_lib.ConfigError(
        f"--vary {key}: a {type(value).__name__} key sets shapes or the program, which the "
        "members of one sweep share; vary numeric keys that enter the step as values (learning "
        "rates, Adam betas, loss weights, ema_decay, seed), and run separate experiments for "
        f"{key}")


def spec_values(key: str, spec: str, num: int | None, rng: np.random.Generator,
                base_seed: int) -> list:
  """The members' values of `key` from SPEC (see SPEC_HELP); a range or 'seeds' needs `num`."""
  kind, _, bounds = spec.partition(":")
  if spec == "seeds" or kind in RANGES:
    if num is None:
      raise config_lib.ConfigError(f"--vary {key}={spec} needs --members N (how many to draw)")
    if spec == "seeds":
      if key != SEED:
        raise config_lib.ConfigError(f"--vary {key}=seeds: 'seeds' is for the key seed")
      return [base_seed + i for i in range(num)]
    try:
      low, high = (float(b) for b in bounds.split(":"))
    except ValueError:
      raise config_lib.ConfigError(f"--vary {key}={spec}: write {kind}:LOW:HIGH") from None
    if not 0 < low < high if kind == "loguniform" else not low < high:
      raise config_lib.ConfigError(f"--vary {key}={spec}: need {'0 < ' * (kind == 'loguniform')}"
                                   "LOW < HIGH")
    if kind == "loguniform":
      return [float(v) for v in np.exp(rng.uniform(math.log(low), math.log(high), num))]
    return [float(v) for v in rng.uniform(low, high, num)]
  try:
    values = [config_lib.parse_value(key, t, 0 if key == SEED else 0.0) for t in spec.split(",")]
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f"--vary {key}={spec}: {e}; SPEC is {SPEC_HELP}") from None
  if num is not None and len(values) != num:
    raise config_lib.ConfigError(f"--vary {key}={spec} lists {len(values)} values for "
                                 f"--members {num}; list one per member")
  return values


def member_values(config, varies: Sequence[str], num: int | None) -> dict[str, list]:
  """{key: one value per member} of the --vary arguments; raises ConfigError on a bad one."""
  rng = np.random.default_rng(config.seed)
  values = {}
  for text in varies:
    key, spec = parse_vary(text)
    check_key(config, key)
    if key in values:
      raise config_lib.ConfigError(f"--vary {key} is given twice; give it once")
    values[key] = spec_values(key, spec, num, rng, int(config.seed))
    num = len(values[key])
  if not values:
    raise config_lib.ConfigError("a sweep needs at least one --vary KEY=SPEC, e.g. --vary "
                                 "learning_rate=loguniform:1e-4:1e-2 --members 8")
  if num < 2:
    raise config_lib.ConfigError(f"a sweep needs at least 2 members, got {num}")
  return values


def member_configs(config, values: dict[str, list]) -> list[ml_collections.ConfigDict]:
  """Each member's own config (validated); raises ConfigError naming the member."""
  configs = []
  for i in range(len(next(iter(values.values())))):
    member = ml_collections.ConfigDict(config.to_dict())
    for key, column in values.items():
      member[key] = column[i]
    try:
      configs.append(config_lib.validate(member))
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f"member {i} ({describe(values, i)}): {e}") from None
  return configs


def describe(values: dict[str, list], i: int) -> str:
  return ", ".join(
      f"{k}={v[i]:.4g}" if isinstance(v[i], float) else f"{k}={v[i]}" for k, v in values.items())


def stepped_values(values: dict[str, list]) -> dict[str, jax.Array]:
  """The varied values that enter the step (all but the seed), stacked: {key: (N,) float32}."""
  return {k: jnp.asarray(v, jnp.float32) for k, v in values.items() if k != SEED}


def check_shapes(trees: Sequence[Any]) -> None:
  """Raises ConfigError when the members' states (arrays or shapes) differ in shape."""
  first = [x.shape for x in jax.tree_util.tree_leaves(trees[0])]
  for i, tree in enumerate(trees[1:], 1):
    if [x.shape for x in jax.tree_util.tree_leaves(tree)] != first:
      raise config_lib.ConfigError(
          f"member {i}'s train state differs in shape from member 0's (a varied value such as "
          "ema_decay=0 turns a part of the state off); choose values on the same side of 0")


def row(tree, i: int) -> Any:
  """Member `i` of a stacked tree."""
  return jax.tree_util.tree_map(lambda x: x[i], tree)


def take(tree, rows: Sequence[int]) -> Any:
  """The stacked tree of the members at `rows`, in that order."""
  index = np.asarray(rows, dtype=np.int32)
  return jax.tree_util.tree_map(lambda x: x[index], tree)


@jax.jit
def finite_rows(tree) -> jax.Array:
  """(N,) bool: whether every leaf of member i of a stacked tree is finite."""
  rows = [
      jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
      for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(rows), axis=0)


@functools.partial(jax.jit, static_argnums=2)
def permutations(seeds: jax.Array, epoch: int, num_train: int) -> jax.Array:
  """(N, num_train) int32: the data order of `epoch` for each of the N members' `seeds`."""
  return jax.vmap(data_lib.epoch_permutation, in_axes=(0, None, None))(seeds, epoch, num_train)


def traced_config(config, values: dict) -> ml_collections.ConfigDict:
  """`config` with the varied keys set to `values` (tracers inside the vmapped step)."""
  return ml_collections.ConfigDict({**config.to_dict(), **values})


def member_step(member: Member, batch, *, family, config, info, total_steps: int,
                axis_name: str | None = None):
  """The family's train_step for one member, built from its config with the varied values as
  traced values; mapped over the members by `parallel.TrainLoop(members='vmap' or 'unroll')`."""
  trainable = family.build(traced_config(config, member.values), info, total_steps)
  kwargs = {} if axis_name is None else {"axis_name": axis_name}
  state, metrics = trainable.train_step(with_optimizers(member.state, dict(trainable.optimizers)),
                                        batch, **kwargs)
  shared = {name: p.tx for name, p in member.state.players.items()}
  return member.replace(state=with_optimizers(state, shared)), metrics


def with_optimizers(state, optimizers: dict):
  """`state` whose players use `optimizers` ({player name: optax transformation})."""
  return state.replace(
      players={name: p.replace(tx=optimizers[name]) for name, p in state.players.items()})


def survivors(scores: Sequence[float], mode: str) -> list[int]:
  """The positions of the better half (rounded up) of `scores` ('min' or 'max' is better), in
  their original order; a non-finite score ranks last."""
  sign = 1.0 if mode == "min" else -1.0
  keys = [sign * s if np.isfinite(s) else math.inf for s in scores]
  order = sorted(range(len(scores)), key=lambda i: (keys[i], i))
  return sorted(order[:len(scores) - len(scores) // 2])


TRACE_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
                jax.errors.TracerIntegerConversionError, jax.errors.TracerArrayConversionError)


def check_traceable(step, state, batch, keys: Sequence[str]) -> None:
  """Raises ConfigError for a key of `keys` that the step `step(member, batch)` cannot take as
  a traced value (a Python branch or a shape depends on it). `state`, `batch`: one member's
  train state and batch, arrays or shapes."""
  for key in keys:
    if key == SEED:
      continue
    member = Member(state=state, values={key: jax.ShapeDtypeStruct((), jnp.float32)})
    try:
      jax.eval_shape(step, member, batch)
    except TRACE_ERRORS:
      raise config_lib.ConfigError(
          f"--vary {key}: the step decides its structure by {key}'s value (e.g. 0 turns a term "
          "off), so members cannot share one program; run separate experiments for it, or vary "
          "another key") from None
