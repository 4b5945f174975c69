"""The shared train-state helpers: the parameter moving average and its warm-up."""

import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import state as state_lib


def test_ema_update():
  ema = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(10.0)}}
  params = {"a": jnp.array([3.0, -2.0]), "b": {"c": jnp.array(0.0)}}
  out = state_lib.ema_update(ema, params, 0.9)
  np.testing.assert_allclose(out["a"], [0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * -2], rtol=1e-6)
  np.testing.assert_allclose(out["b"]["c"], 9.0, rtol=1e-6)
  np.testing.assert_allclose(ema["a"], [1.0, 2.0])  # pure: the input is untouched


@pytest.mark.parametrize("step, want", [(0, 0.1), (5, 6 / 15), (10_000, 0.999)])
def test_warmed_up_ema_decay(step, want):
  np.testing.assert_allclose(state_lib.warmed_up_ema_decay(0.999, jnp.int32(step)), want, rtol=1e-6)
