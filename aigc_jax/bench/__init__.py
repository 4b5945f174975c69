"""The tools apart from the library: the train-step benchmark, its PyTorch references and the
step profiler.

Modules here may import the library; the library (every module of aigc_jax outside bench/) never
imports this package. `python -m aigc_jax.bench` runs `cli.main`.
"""
