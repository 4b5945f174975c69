"""`python -m aigc_jax.bench`: the train-step benchmark's command (`aigc_jax.bench.cli`)."""

from aigc_jax.bench import cli

if __name__ == "__main__":
  cli.main()
