"""Times the DCGAN generator's three upsampling modes on this machine (fp32, train mode).

  python benchmarks/dcgan_upsampling.py [--batch_size 64] [--runs 10]

Per mode: the generator's forward, its forward + backward (grad w.r.t. params of the sum of
squares of the images), and a full non-saturating GAN step (discriminator and generator
gradients, no optimizer). Each is jitted, warmed up, then timed `--runs` times; the table shows
the median and the minimum in ms, and the compile time in s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

from aigc_jax import gan_losses
from aigc_jax.models import gan


def timed(fn, *args, runs: int, warmup: int = 2):
  """(compile s, median ms, min ms) of jitted `fn(*args)`."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(1e3 * (time.perf_counter() - start))
  return compile_s, statistics.median(times), min(times)


def benchmarks(mode: str, batch_size: int, z_dim: int = 100):
  """name -> (fn, args) for one upsampling mode."""
  g = gan.DCGANGenerator(upsample=mode)
  d = gan.DCGANDiscriminator()
  k_g, k_d, k_z, k_x = jax.random.split(jax.random.PRNGKey(0), 4)
  z = jax.random.normal(k_z, (batch_size, z_dim))
  real = jax.random.uniform(k_x, (batch_size, 28, 28, 1), minval=-1.0, maxval=1.0)
  g_vars = g.init(k_g, z, train=False)
  d_vars = d.init(k_d, real, train=False)

  def g_apply(params, stats, z):
    return g.apply({"params": params, "batch_stats": stats}, z, train=True, mutable=["batch_stats"])

  def d_apply(params, stats, x):
    return d.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])

  def forward(g_params, g_stats, z):
    return g_apply(g_params, g_stats, z)

  def forward_backward(g_params, g_stats, z):

    def loss(params):
      images, new_vars = g_apply(params, g_stats, z)
      return jnp.sum(jnp.square(images)), new_vars

    return jax.grad(loss, has_aux=True)(g_params)

  def gan_step(g_params, g_stats, d_params, d_stats, z, real):
    d_loss_fn, g_loss_fn = gan_losses.LOSSES["non_saturating"]
    fake, g_new = g_apply(g_params, g_stats, z)

    def d_loss(params):
      real_logits, new = d_apply(params, d_stats, real)
      fake_logits, new = d_apply(params, new["batch_stats"], jax.lax.stop_gradient(fake))
      return d_loss_fn(real_logits, fake_logits), new

    def g_loss(params):
      images, _ = g_apply(params, g_stats, z)
      fake_logits, _ = d_apply(d_params, d_stats, images)
      return g_loss_fn(fake_logits)

    d_grads, d_new = jax.grad(d_loss, has_aux=True)(d_params)
    return d_grads, jax.grad(g_loss)(g_params), g_new, d_new

  g_args = (g_vars["params"], g_vars["batch_stats"], z)
  return {
      "G forward": (forward, g_args),
      "G fwd+bwd": (forward_backward, g_args),
      "G+D NS step": (gan_step, g_args[:2] + (d_vars["params"], d_vars["batch_stats"], z, real)),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--runs", type=int, default=10)
  parser.add_argument("--modes", nargs="+", default=list(gan.UPSAMPLE_MODES))
  args = parser.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cpus, "
        f"load average {os.getloadavg()[0]:.1f}, batch {args.batch_size}, fp32, "
        f"median of {args.runs} runs")
  print(f"| {'mode':<12}| {'what':<12}| {'median ms':>10} | {'min ms':>8} | {'compile s':>9} |")
  print(f"|{'-' * 13}|{'-' * 13}|{'-' * 12}|{'-' * 10}|{'-' * 11}|")
  for mode in args.modes:
    for name, (fn, fn_args) in benchmarks(mode, args.batch_size).items():
      compile_s, median_ms, min_ms = timed(fn, *fn_args, runs=args.runs)
      print(f"| {mode:<12}| {name:<12}| {median_ms:>10.1f} | {min_ms:>8.1f} | {compile_s:>9.2f} |",
            flush=True)


if __name__ == "__main__":
  main()
