"""The benchmark command (aigc_jax.bench) on the compared models, and the PyTorch references
against the JAX models.

The tests that need PyTorch (the bench extra) take the `torch` or `torch_reference` fixture and
are skipped where it is not installed; the rest run without it. The references cover
`torch_reference.MODELS` only: a preset outside it needs none.
"""

import functools
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from aigc_jax import data as data_lib
from aigc_jax import families
from aigc_jax import state as state_lib
from aigc_jax.bench import cli
from aigc_jax.bench import presets
from aigc_jax.bench import report
from aigc_jax.bench import step_profile
from aigc_jax.bench import timing
from aigc_jax.bench import torch_reference as reference_lib
from aigc_jax.bench import torch_timing
from aigc_jax.models import gan as gan_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = reference_lib.MODELS  # the presets with a PyTorch reference
TORCH_KEYS = {"torch_step_ms", "speedup_vs_torch", "torch_device", "torch_tf32"}
KEYS = {
    "model", "batch", "devices", "backend", "device_kind", "dtype", "matmul_precision",
    "steps_per_call", "compile_s", "step_ms", "step_ms_min", "step_ms_max", "images_per_s",
    "gflop_per_step", "gflops", "peak_kind", "peak_gflops", "fraction_of_peak", *TORCH_KEYS
}
TINY = ["--batch", "4", "--steps", "2", "--warmup", "1", "--peak_size", "1024"]


@pytest.fixture(name="torch")
def torch_module():
  """PyTorch, or a skip where the bench extra is not installed."""
  return pytest.importorskip("torch")


@pytest.fixture(name="torch_reference")
def torch_reference_module(torch):  # pylint: disable=unused-argument
  """aigc_jax.bench.torch_reference, whose `build` needs PyTorch."""
  return reference_lib


def assert_cpu_machine(result):
  assert result["backend"] == "cpu"
  assert result["device_kind"] == jax.devices()[0].device_kind
  assert result["dtype"] == "float32"


def test_the_compared_models_are_presets_with_a_reference():
  assert {"gan_mlp", "dcgan", "cgan", "wgan_gp", "sngan_hinge", "vae_mlp", "vae_conv", "cvae"
         } <= set(MODELS) <= set(presets.model_names())
  assert {cli.parse_run(run)[0] for run in cli.TABLE_RUNS} <= set(MODELS)  # `make bench` --torch


def test_mlp_gan_is_gan_mlp():
  assert presets.bench_config("mlp_gan").to_dict() == presets.bench_config("gan_mlp").to_dict()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.slow
def test_command_prints_json_with_the_required_keys(model, capsys, torch_reference):
  cli.main(["--model", model, "--torch", "--json", "--steps_per_call", "1", *TINY])
  result = json.loads(capsys.readouterr().out)
  assert set(result) == KEYS
  assert result["model"] == model
  assert_cpu_machine(result)
  assert result["torch_device"] == "cpu"
  assert result["batch"] == 4 and result["devices"] == 1
  assert 0 < result["step_ms_min"] <= result["step_ms"] <= result["step_ms_max"]
  assert result["gflop_per_step"] > 0 and result["torch_step_ms"] > 0
  assert 0 < result["fraction_of_peak"] < 1.5
  config = presets.bench_config(model)  # real images per step: 4 per batch, n batches
  per_step = 4 * families.get(config.model).batches_per_step(config)
  step_ms = result["step_ms"]  # rounded to 1e-3 ms, which is coarse for a fast step
  assert (per_step * 1e3 / (step_ms + 5e-4) - 0.05 <= result["images_per_s"] <= per_step * 1e3 /
          (step_ms - 5e-4) + 0.05)
  assert (result["torch_step_ms"] - 5e-4) / (step_ms + 5e-4) - 5e-3 <= result["speedup_vs_torch"]
  assert result["speedup_vs_torch"] <= (result["torch_step_ms"] + 5e-4) / (step_ms - 5e-4) + 5e-3
  assert result["compile_s"] >= 0


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
@pytest.mark.slow
def test_data_parallel_modes_use_every_device(mode, capsys):
  cli.main([
      "--model", "vae_mlp", "--json", "--parallel", mode, "--batch", "8", "--steps", "2",
      "--warmup", "1", "--peak_size", "256"
  ])
  result = json.loads(capsys.readouterr().out)
  assert result["devices"] == 4 and result["batch"] == 8  # the global batch, 2 per device
  assert result["step_ms"] > 0


@pytest.mark.slow
def test_table_and_human_readable_output(tmp_path, capsys):
  out = tmp_path / "RESULTS.md"
  cli.main(["--table", str(out), "--models", "vae_mlp:8", "--steps_per_call", "2", *TINY[2:]])
  text = out.read_text()
  assert "| vae_mlp | 8 |" in text and "cores; jax" in text
  machine = next(line for line in text.splitlines() if "Machine:" in line)
  assert f"Machine: {report.cpu_model()}, {os.cpu_count()} cores; jax" in machine
  assert "on XLA:cpu" in machine
  assert "MLP GAN b64: >= 3x PyTorch: not measured" in text
  printed = capsys.readouterr().out
  kind = jax.devices()[0].device_kind
  assert f"vae_mlp batch 8 on 1 device(s) (cpu, {kind}), 2 step(s) per call" in printed
  assert "GFLOP/s" in printed and "PyTorch" not in printed


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope"], "unknown model 'nope'; choose one of cgan, cvae, dcgan"),
    (["--model", "dcgan", "--batch", "0"], "--batch: expected a positive integer, got '0'"),
    (["--model", "dcgan", "--batch", "8,x"], "--batch: expected a positive integer, got 'x'"),
    (["--table", "t.md", "--models", "dcgan:0"], "--models: expected a positive integer"),
    (["--model", "dcgan", "--steps-per-call", "2"], "unknown flag --steps-per-call (did you mean "
     "--steps_per_call?)"),
    (["--model", "dcgan", "--warmup", "-1"], "flag --warmup=-1: -1 is not a non-negative integer"),
    (["--model", "dcgan", "--batch", "6", "--parallel", "pmap"
     ], "batch_size 6 is not divisible by the 4 devices"),
    ([], "--model is required"),
])
def test_bad_arguments_exit_2_with_one_error_line(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert message in err and len([line for line in err.splitlines() if "error:" in line]) == 1


@pytest.mark.parametrize("argv, message", [
    (["--model", "dcgan", "--torch"], "error: no PyTorch reference for model dcgan; --torch"),
    (["--table", "unused.md", "--models", "gan_mlp:4,dcgan:4", "--torch_compile"
     ], "error: no PyTorch reference for model dcgan; "),
    (["--model", "mlp_gan", "--torch", "--config.r1_gamma=1.0"
     ], "error: no PyTorch reference for model gan_mlp with this config: "),
])
def test_torch_without_a_reference_exits_2_before_timing(argv, message, monkeypatch, capsys):
  """Needs no torch: the reference's coverage is checked before anything is timed."""
  monkeypatch.setattr(reference_lib, "MODELS", ("gan_mlp",))
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == "" and message in captured.err
  assert len([line for line in captured.err.splitlines() if "error:" in line]) == 1


def test_runs_as_a_module():
  proc = subprocess.run([sys.executable, "-m", "aigc_jax.bench", "--model", "vae_gan"], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stdout == ""
  assert proc.stderr.splitlines()[-1].startswith("error: unknown model 'vae_gan'")


def jax_param_count(config) -> int:
  info = data_lib.DATASETS[config.dataset]
  state = jax.eval_shape(families.get(config.model).build(config, info).init, jax.random.PRNGKey(0))
  return sum(state_lib.count_params(player.params) for player in state.players.values())


@pytest.mark.parametrize("model", MODELS)
def test_torch_reference_has_the_jax_models_parameter_count(model, torch_reference):
  config = presets.experiment_config(model)
  reference = torch_reference.build(config, data_lib.DATASETS[config.dataset])
  assert torch_reference.count_params(reference) == jax_param_count(config)


@pytest.mark.parametrize("model", MODELS)
def test_torch_reference_is_made_on_the_default_device(model, torch, torch_reference):
  """The benchmark puts the reference on a GPU by making it under `torch.device`: every module,
  the EMA copy included, must take its tensors from that default."""
  config = presets.experiment_config(model)
  with torch.device("meta"):
    reference = torch_reference.build(config, data_lib.DATASETS[config.dataset])
  modules = [*reference.modules, *([reference.ema] if reference.ema is not None else [])]
  tensors = [t for m in modules for t in [*m.parameters(), *m.buffers()]]
  assert tensors and {t.device.type for t in tensors} == {"meta"}


@pytest.mark.parametrize("final_features, d_features", [(0, 64), (32, 16)])
@pytest.mark.parametrize("mode", gan_models.UPSAMPLE_MODES)
def test_torch_dcgan_has_the_jax_parameter_count_per_upsample_mode(mode, final_features, d_features,
                                                                   torch, torch_reference):
  config = presets.experiment_config("dcgan")
  config.upsample, config.g_final_features = mode, final_features
  config.d_base_features = d_features
  reference = torch_reference.build(config, data_lib.DATASETS[config.dataset])
  assert torch_reference.count_params(reference) == jax_param_count(config)
  assert tuple(reference.g(torch.randn(3, config.latent_dim)).shape) == (3, 1, 28, 28)


def torch_bounds(torch, module) -> dict:
  """numel -> 1/sqrt(fan_in) of each weight and bias of `module`'s non-BatchNorm layers."""
  bounds = {}
  for layer in module.modules():
    if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) or "weight" not in dict(
        layer.named_parameters(recurse=False)):
      continue
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
    for p in layer.parameters(recurse=False):
      bounds[p.numel()] = 1.0 / math.sqrt(fan_in)
  return bounds


@pytest.mark.slow
@pytest.mark.parametrize("mode", gan_models.UPSAMPLE_MODES)
def test_dcgan_torch_init_draws_each_layer_as_pytorch_does(mode, torch, torch_reference):
  """torch_init=True: each kernel and bias is U(+-b) with b = PyTorch's 1/sqrt(fan_in) for the
  same layer (the transposed conv's fan-in counted as PyTorch counts it: 16 x out)."""
  config = presets.experiment_config("dcgan")
  config.upsample, config.torch_init = mode, True
  info = data_lib.DATASETS[config.dataset]
  reference = torch_reference.build(config, info)
  state = families.get("dcgan").build(config, info).init(jax.random.PRNGKey(0))
  for module, player in zip(reference.modules, ("g", "d")):
    bounds = torch_bounds(torch, module)
    leaves = jax.tree_util.tree_flatten_with_path(state.players[player].params)[0]
    drawn = {x.size: float(abs(x).max()) for path, x in leaves if "BatchNorm" not in str(path)}
    assert sorted(drawn) == sorted(bounds), player
    for numel, top in drawn.items():  # the max of >= 64 uniform draws nears the bound
      assert top <= bounds[numel] * (1 + 1e-6) and (numel < 64 or top > 0.8 * bounds[numel])


@pytest.mark.parametrize("model", ["cgan", "gan_mlp"])
@pytest.mark.parametrize("label_mode", gan_models.LABEL_MODES)
def test_torch_conditional_generators_have_the_jax_parameter_count_per_label_mode(
    model, label_mode, torch, torch_reference):
  config = presets.experiment_config(model)
  config.conditional, config.label_mode = True, label_mode
  reference = torch_reference.build(config, data_lib.DATASETS[config.dataset])
  assert torch_reference.count_params(reference) == jax_param_count(config)
  z = torch.randn(3, config.latent_dim)
  assert tuple(reference.g(z, torch.tensor([0, 1, 2])).shape) == (3, 1, 28, 28)


@pytest.mark.parametrize("model", MODELS)
def test_torch_step_trains_every_module(model, torch, torch_reference):
  torch.manual_seed(0)
  config = presets.experiment_config(model)
  info = data_lib.DATASETS[config.dataset]
  reference = torch_reference.build(config, info, total_steps=10)
  before = [[p.detach().clone() for p in m.parameters()] for m in reference.modules]
  images, labels = timing.synthetic_split(info, 8)
  loss = reference.step(
      torch.from_numpy(images).permute(0, 3, 1, 2),
      torch.from_numpy(labels).long())
  assert math.isfinite(loss)
  for module, old in zip(reference.modules, before):
    assert any(not torch.equal(p, q) for p, q in zip(module.parameters(), old)), type(module)


@pytest.mark.slow
def test_epoch_timing_keys(capsys):
  cli.main(
      ["--model", "vae_mlp", "--json", "--steps_per_call", "2", "--epoch", "--images", "64", *TINY])
  result = json.loads(capsys.readouterr().out)
  assert set(result) == KEYS - TORCH_KEYS | {"epoch_s", "epoch_steps", "epoch_vs_steps"}
  assert_cpu_machine(result)
  assert result["epoch_steps"] == 16  # 64 images / batch 4
  # The printed values are rounded (epoch_s to 1e-6 s, step_ms to 1e-3 ms, the ratio to 1e-3):
  # the ratio must lie within what those roundings allow.
  epoch_ms, step_ms = result["epoch_s"] * 1e3, result["step_ms"]
  low = (epoch_ms - 5e-4) / (step_ms + 5e-4) / 16 - 5e-4
  high = (epoch_ms + 5e-4) / (step_ms - 5e-4) / 16 + 5e-4
  assert low <= result["epoch_vs_steps"] <= high
  with pytest.raises(SystemExit):
    cli.main(["--model", "vae_mlp", "--steps_per_call", "20", "--images", "64", *TINY])
  assert "--images 64 is less than one call's 4 x 20 images" in capsys.readouterr().err


@pytest.mark.parametrize("kind, dtype, precision", [("float32/highest", "f32", "HIGHEST"),
                                                    ("float32/default", "f32", None),
                                                    ("bfloat16", "bf16", None)])
def test_each_peak_is_measured_in_its_dtype_and_precision(kind, dtype, precision, monkeypatch):
  measured, calls = timing.peak_matmul, []

  def recording(x, y, precision):
    calls.append((x.dtype, x.shape, precision))
    return measured(x, y, precision)

  monkeypatch.setattr(timing, "peak_matmul", recording)
  assert timing.peak_gflops.__wrapped__(64, 1, kind) > 0  # not the cached value
  assert calls == [(jax.numpy.dtype(timing.PEAKS[kind][0]), (64, 64), timing.PEAKS[kind][1])]
  a = jax.numpy.ones((8, 8), timing.PEAKS[kind][0])
  text = jax.jit(lambda x: measured(x, x, timing.PEAKS[kind][1])).lower(a).as_text()
  assert f"tensor<8x8x{dtype}>" in text and ("HIGHEST" in text) == (precision == "HIGHEST")


def test_a_row_is_judged_against_the_peak_of_what_it_ran():
  kinds = [
      timing.peak_kind(
          presets.bench_config(
              "vae_mlp", overrides=[
                  f"--config.compute_dtype={dtype}", f"--config.matmul_precision={precision}"
              ]))
      for dtype, precision in [("float32", "highest"), ("float32",
                                                        "default"), ("bfloat16", "highest")]
  ]
  assert kinds == ["float32/highest", "float32/default", "bfloat16"]


def test_synthetic_set_holds_at_least_one_call():
  assert timing.images_for(64, 1) == timing.NUM_IMAGES
  assert timing.images_for(1024, 100) == 102_400  # a GPU's call at batch 1024
  assert torch_timing.call_counts(50, 5, 100, 5) == (5, 1)
  assert torch_timing.call_counts(50, 5, 1, 5) == (50, 5)


@pytest.mark.parametrize("precision, tf32", [("highest", False), ("default", True)])
def test_torch_is_timed_in_jaxs_calls_with_its_tf32(precision, tf32, torch, monkeypatch):
  config = presets.bench_config("vae_mlp", 4, steps_per_call=3,
                                overrides=[f"--config.matmul_precision={precision}"])
  seen, before = [], (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)

  class Reference:

    def step(self, x, y):
      seen.append((x.shape[0], y.shape[0], torch.backends.cuda.matmul.allow_tf32,
                   torch.backends.cudnn.allow_tf32))

  monkeypatch.setattr(reference_lib, "build", lambda *args: Reference())
  images, labels = timing.synthetic_split(data_lib.DATASETS[config.dataset], 40)
  samples, device = torch_timing.time_torch(config, images, labels, (2, 1))
  assert device == "cpu" and len(samples) == 2  # one sample per timed call of 3 steps
  assert seen == [(4, 4, tf32, tf32)] * 9  # 1 warm-up call and 2 timed calls
  assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_machine_line_names_the_accelerator_off_cpu(monkeypatch):
  device = type("FakeDevice", (), {"device_kind": "NVIDIA H200", "platform": "gpu"})()
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(jax, "devices", lambda *args: [device])
  monkeypatch.setattr(jax, "device_count", lambda *args: 1)
  line = report.machine_line(0.0)
  assert line.startswith(f"1 x NVIDIA H200, {os.cpu_count()} host cores; jax ")
  assert "on XLA:gpu" in line and report.cpu_model() not in line


def test_step_profile_names_the_ops_of_the_compiled_step():
  """A step dominated by a big matmul: the profile's top op is that dot (or the fusion holding
  it), with the dot's result shape, and its time is most of the call's."""
  a = jax.numpy.ones((1024, 1024))
  ops = step_profile.op_times(lambda a: (a @ a, jax.numpy.cos(a[0])), a, calls=3)
  assert ops and all(op.ms >= 0 and op.count >= 1 for op in ops)
  assert "f32[1024,1024]" in ops[0].hlo and ops[0].ms == max(op.ms for op in ops)
  assert ops[0].ms > 0.5 * sum(op.ms for op in ops)
  text = step_profile.describe(ops, 2, step_ms=10.0)
  assert text.startswith(f"top {min(2, len(ops))} of {len(ops)} ops") and ops[0].name in text


@pytest.mark.slow
def test_benchmark_profile_flag(capsys):
  cli.main(["--model", "gan_mlp", "--json", "--steps_per_call", "1", "--profile", "3", *TINY])
  captured = capsys.readouterr()
  assert json.loads(captured.out)["model"] == "gan_mlp"
  assert "top 3 of" in captured.err and "ms" in captured.err


def test_config_overrides_reach_the_benchmarked_config():
  config = presets.bench_config(
      "dcgan", overrides=[
          "--config.upsample=transpose", "--config.spectral_norm=true", "--config.n_critic=3"
      ])
  assert (config.upsample, config.spectral_norm, config.n_critic) == ("transpose", True, 3)
  for bad, message in [("--config.upsampel=x", "did you mean 'upsample'"),
                       ("--config.n_critic=abc", "not a int"), ("--bogus", "--config.KEY=VALUE")]:
    with pytest.raises(presets.BenchmarkError, match=message):
      presets.bench_config("dcgan", overrides=[bad])


@pytest.mark.slow
def test_batch_sweep_runs_every_batch(capsys):
  cli.main(["--model", "vae_mlp", "--json", "--batch", "4,8", "--steps_per_call", "1", *TINY[2:]])
  results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r["batch"] for r in results] == [4, 8]
  assert results[1]["gflop_per_step"] > results[0]["gflop_per_step"]


@pytest.mark.slow
def test_torch_compile_times_the_compiled_reference(capsys, torch, monkeypatch):
  """The compiled reference's column, compiled by dynamo and AOTAutograd without inductor's C++
  code generation (minutes on 2 cold cores; `--torch_compile` itself uses inductor)."""
  monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
  torch._dynamo.reset()  # pylint: disable=protected-access
  cli.main(["--model", "vae_mlp", "--json", "--torch_compile", *TINY])
  result = json.loads(capsys.readouterr().out)
  counters = torch._dynamo.utils.counters  # pylint: disable=protected-access
  graphs = counters["stats"]["unique_graphs"]
  assert graphs >= 2  # encode and decode were compiled
  assert set(result) == KEYS - TORCH_KEYS | {
      "torch_compile_step_ms", "speedup_vs_torch_compile", "torch_compile_s"
  }
  assert result["torch_compile_step_ms"] > 0 and result["torch_compile_s"] > 0
  ratio = result["torch_compile_step_ms"] / result["step_ms"]
  assert abs(result["speedup_vs_torch_compile"] - ratio) <= 1e-3 * ratio + 2e-3


@pytest.mark.parametrize("model,d_compiled", [("dcgan", True), ("wgan_gp", False)])
def test_torch_compile_leaves_d_eager_only_under_a_gradient_penalty(model, d_compiled,
                                                                    torch_reference):
  config = presets.experiment_config(model)
  reference = torch_reference.build(config, data_lib.DATASETS[config.dataset])
  reference.compile()
  # pylint: disable=protected-access
  assert reference.g._compiled_call_impl is not None
  assert (reference.d._compiled_call_impl is not None) == d_compiled


@pytest.fixture(name="reference_quality")
def reference_quality_module(torch, monkeypatch):  # pylint: disable=unused-argument
  """benchmarks/reference_quality.py, imported as its command line runs it."""
  monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
  import reference_quality  # pylint: disable=import-outside-toplevel
  return reference_quality


def test_reference_quality_table_is_mean_and_spread_over_seeds(reference_quality):
  columns = reference_quality.GAN_COLUMNS
  scores = {
      f"{side}/{seed}": {c: value for c in columns}
      for side, seed, value in [("reference", 0, 1.0), ("reference", 1,
                                                        3.0), ("project", 0,
                                                               5.0), ("project", 2, 9.0)]
  }
  lines = reference_quality.table(scores, ("reference", "project", "project_raw"), [0, 1], columns)
  lines = lines.split("\n")
  assert len(lines) == 4  # header, rule, reference over seeds 0 and 1, project over seed 0 only
  assert lines[2].startswith("| reference | 2 | 2.000 +- 1.000 |")
  assert lines[3].startswith("| project | 1 | 5.000 +- 0.000 |")


@pytest.mark.parametrize("argv, message", [
    (["experiments/cgan_fashion_mnist.py", "--workdir", "W"], "not an unconditional classic model"),
    (["experiments/dcgan_fashion_mnist.py"], "the following arguments are required: --workdir"),
    (["experiments/dcgan_fashion_mnist.py", "--workdir", "W", "--config.latent_dims=3"
     ], "did you mean"),
    (["experiments/nope.py", "--workdir", "W"], "is not an experiment file"),
])
def test_reference_quality_refuses_bad_input_with_one_error_line(argv, message, reference_quality,
                                                                 capsys):
  with pytest.raises(SystemExit) as exit_info:
    reference_quality.parse_args(
        [os.path.join(ROOT, a) if a.startswith("exp") else a for a in argv])
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and err.startswith("error: ") and message in err, err


def test_reference_quality_trains_the_reference_and_samples_in_range(reference_quality, torch):
  config = presets.experiment_config("dcgan")
  config.batch_size = 8
  images = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
  ref = reference_quality.train_reference(config, seed=0, epochs=1, images=images)
  before = reference_quality.train_reference(config, seed=0, epochs=0, images=images)
  assert any(not torch.equal(p, q) for p, q in zip(ref.g.parameters(), before.g.parameters()))
  samples = reference_quality.reference_samples(ref, num=10, batch=4)
  assert samples.shape == (10, 28, 28, 1) and samples.dtype == np.uint8
  assert samples.min() < 128 < samples.max()  # tanh output mapped onto [0, 255]


def test_reference_quality_vae_original_learns(reference_quality):
  config = presets.experiment_config("vae_mlp")
  config.batch_size, config.ema_decay = 32, 0.0
  images = np.zeros((256, 28, 28, 1), np.uint8)
  images[:, 8:20, 8:20] = 255  # one square: easy to learn
  before = reference_quality.train_reference(config, seed=0, epochs=0, images=images)
  after = reference_quality.train_reference(config, seed=0, epochs=3, images=images)
  neg_elbo = [
      reference_quality.reference_test_neg_elbo(ref, images[:64], seed=0) for ref in (before, after)
  ]
  assert neg_elbo[0] > 400 and neg_elbo[1] < 0.5 * neg_elbo[0]  # 784 pixels near log 2 each
