"""aigc_jax: VAEs, GANs and diffusion models in JAX/Flax (README.md)."""

from aigc_jax import entry as _entry

__version__ = "0.1.0"

# The commands (experiments/*.py, python -m aigc_jax.sample, ...) handle Ctrl-C and SIGTERM from
# here on, before their heavy imports; a plain `import aigc_jax` changes nothing.
_entry.begin_if_entry_point()
