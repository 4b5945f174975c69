"""Probes of what a user may hand-edit or damage: IDX data files, --samples files, a run's
config.json, a sweep's sweep.json, checkpoints and the classifier cache (see probes.py)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import zipfile

import numpy as np
from helpers import write_idx
from probe_lab import BASE_STEPS
from probe_lab import Lab
from probe_lab import Result
from probe_lab import judge
from probe_lab import probe
from probe_lab import refused_fresh
from probe_lab import worst

# -- malformed IDX files: a training run on a copy of the data with one file replaced ----------


def idx_header(dims: tuple[int, ...], payload: int, code: int = 8) -> bytes:
  return (bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) +
          bytes(payload))


IDX_FILES = {  # probe -> (train-images' content, what the one line names)
    # 2^16 * 65537 * 4294901761 = 2^64 + 2^16: wraps to the 65,536 bytes there in int64.
    "idx_dims_overflow_to_payload": (idx_header((65536, 65537, 4294901761), 65536), "images"),
    "idx_dims_all_ffffffff": (idx_header((0xFFFFFFFF,) * 3, 4096), "images"),
    "idx_zero_bytes": (b"", "images"),
    "idx_images_of_32x32": (idx_header((256, 32, 32), 256 * 1024), "shape"),
    "idx_gzip_garbage": (b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4, "images"),
}
for _name, (_content, _says) in IDX_FILES.items():

  def _idx_probe(lab: Lab, content: bytes = _content, says: str = _says) -> Result:
    bad = shutil.copytree(lab.idx, lab.path("idx"))
    with open(os.path.join(bad, "train-images-idx3-ubyte"), "wb") as f:
      f.write(content)
    return refused_fresh(lab, lambda w: lab.train_args(w, 8, f"--config.idx_dir={bad}"),
                         says=(says,))

  probe(_name, "exit 2, one line naming the problem; no workdir left", fast=True)(_idx_probe)


@probe("idx_labels_fewer_than_images", "exit 2, one line; no workdir left", fast=True)
def _labels_short(lab: Lab) -> Result:
  bad = shutil.copytree(lab.idx, lab.path("idx"))
  write_idx(os.path.join(bad, "train-labels-idx1-ubyte"), np.zeros(100))
  return refused_fresh(lab, lambda w: lab.train_args(w, 8, f"--config.idx_dir={bad}"))


# -- --samples files that evaluate cannot score ---------------------------------------------------


def _npy_as_npz(lab: Lab, path: str) -> None:
  with open(path, "wb") as f:
    np.save(f, np.zeros((64, 28, 28), np.uint8))


def _cut(lab: Lab, path: str, keep: float = 0.5, flip: bool = False) -> None:
  data = bytearray(open(lab.samples(), "rb").read())
  if flip:  # inside the stored (uncompressed) array: only its CRC tells
    data[len(data) // 2:len(data) // 2 + 64] = bytes(
        255 - b for b in data[len(data) // 2:len(data) // 2 + 64])
  with open(path, "wb") as f:
    f.write(bytes(data[:int(len(data) * keep)]))


def _declared_10gb(lab: Lab, path: str) -> None:
  header = {"descr": "|u1", "fortran_order": False, "shape": (12_755_102, 28, 28)}
  with zipfile.ZipFile(path, "w") as zf, zf.open("images.npy", "w") as f:
    np.lib.format.write_array_header_1_0(f, header)
    f.write(bytes(784 * 16))


SAMPLES_FILES = {
    "samples_npy_named_npz":
        _npy_as_npz,
    "samples_truncated_npz":
        _cut,
    "samples_crc_corrupt_npz":
        lambda lab, path: _cut(lab, path, keep=1.0, flip=True),
    "samples_declares_10gb_under_ulimit":
        _declared_10gb,
    "samples_zero_bytes":
        lambda lab, path: open(path, "wb").close(),
    "samples_float_images":
        lambda lab, path: np.savez(path, images=np.zeros((64, 28, 28))),
    "samples_labels_out_of_range":
        lambda lab, path: np.savez(path, images=np.zeros(
            (64, 28, 28), np.uint8), labels=np.full(64, 12)),
    "samples_is_a_folder":
        lambda lab, path: os.makedirs(path),
}
for _name, _write in SAMPLES_FILES.items():

  def _samples_probe(lab: Lab, write=_write, name=_name) -> Result:
    path = os.path.join(lab.folder(name), "s.npz")
    write(lab, path)
    memory = 3_000_000_000 if "ulimit" in name else None
    return judge(lab.run(lab.module_args("evaluate", "--samples", path), memory=memory))

  probe(_name, "exit 2, one error line", fast=True)(_samples_probe)

# -- a run's config.json and a sweep's sweep.json, edited by hand ---------------------------------


def _edit_config(workdir: str, change) -> None:
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    values = json.load(f)
  text = change(values)
  with open(path, "w") as f:
    f.write(text if isinstance(text, str) else json.dumps(values))


CONFIG_EDITS = {  # probe -> (change of the saved values, the key the line names, command)
    "config_learning_rate_abc": (lambda v: v.update(learning_rate="abc"), "learning_rate",
                                 "sample"),
    "config_batch_size_list": (lambda v: v.update(batch_size=[1, 2]), "batch_size", "evaluate"),
    "config_latent_dim_1e308": (lambda v: v.update(latent_dim=1e308), "latent_dim", "sample"),
    "config_learning_rate_nan": (lambda v: v.update(learning_rate=float("nan")), "learning_rate",
                                 "sample"),
    "config_is_a_list": (lambda v: "[1, 2]", "config.json", "sample"),
    "config_is_empty": (lambda v: "", "config.json", "evaluate"),
    "config_model_unknown": (lambda v: v.update(model="vae_nope"), "model", "sample"),
    "config_batch_size_string_then_resume": (lambda v: v.update(batch_size="32"), "batch_size",
                                             "train"),
}
for _name, (_change, _key, _command) in CONFIG_EDITS.items():

  def _config_probe(lab: Lab, change=_change, key=_key, command=_command) -> Result:
    workdir = lab.copy_base("edited")
    _edit_config(workdir, change)
    args = (lab.train_args(workdir, BASE_STEPS + 8) if command == "train" else lab.module_args(
        command, "--workdir", workdir,
        *(["--num", "4", "--out", os.path.join(workdir, "s.npz")] * (command == "sample"))))
    return judge(lab.run(args), says=(key,))

  probe(_name, "exit 2, one line naming config.json's key", fast=True)(_config_probe)


def _sweep_spec(lab: Lab, values) -> str:
  with open(os.path.join(lab.trained("base", BASE_STEPS), "config.json")) as f:
    config = json.load(f)
  return json.dumps({"config": config, "values": values, "halve_every": 0, "stops": []})


SWEEP_FILES = {
    "sweep_json_cut_short": lambda lab: "{x",
    "sweep_json_is_a_list": lambda lab: "[1, 2]",
    "sweep_json_value_abc": lambda lab: _sweep_spec(lab, {"learning_rate": ["abc", 1e-3]}),
    "sweep_json_no_members": lambda lab: _sweep_spec(lab, {"learning_rate": []}),
}
for _name, _text in SWEEP_FILES.items():

  def _sweep_probe(lab: Lab, text=_text) -> Result:
    workdir = lab.folder("sweep")
    with open(os.path.join(workdir, "sweep.json"), "w") as f:
      f.write(text(lab))
    return judge(lab.run(lab.module_args("sweep", "--workdir", workdir)), says=("sweep.json",))

  probe(_name, "exit 2, one line naming sweep.json", fast=True)(_sweep_probe)


@probe("sweep_json_links_outside", "exit 2, one line; the link's target untouched", fast=True)
def _sweep_link(lab: Lab) -> Result:
  workdir = lab.folder("sweep")
  os.symlink(lab.victim, os.path.join(workdir, "sweep.json"))
  return judge(lab.run(lab.module_args("sweep", "--workdir", workdir)), says=("sweep.json",))


# -- checkpoints damaged or moved: sampling "latest" must not take them for what they claim -----


def _sample_latest(lab: Lab, workdir: str, bad: int | None) -> Result:
  """Samples `workdir`'s latest checkpoint: SILENT-WRONG when it claims step `bad`."""
  out = os.path.join(workdir, "s.npz")
  done = lab.run(
      lab.module_args("sample", "--workdir", workdir, "--num", "4", "--out", out, "--checkpoint",
                      "latest"))
  if done.code == 0 and f"from step {bad} " in done.out and not done.noise():
    return Result("SILENT-WRONG", f"sampled the damaged checkpoint {bad}; {done.summary()}")
  return judge(done, 0) if done.code == 0 else judge(done)


def _step(workdir: str, step: int, *names: str) -> str:
  return os.path.join(workdir, "checkpoints", str(step), *names)


def _swap_state(workdir: str, source: int = 16, *items: str) -> None:
  """Puts checkpoint `source`'s `items` (default its state) in place of checkpoint 24's."""
  for item in items or ("state",):
    shutil.rmtree(_step(workdir, BASE_STEPS, item))
    shutil.copytree(_step(workdir, source, item), _step(workdir, BASE_STEPS, item))


def _write(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)


def _set_format(workdir: str, value) -> None:
  path = _step(workdir, BASE_STEPS, "_CHECKPOINT_METADATA")
  with open(path) as f:
    meta = json.load(f)
  if value is None:
    meta.pop("custom_metadata", None)
  else:
    meta["custom_metadata"] = {"aigc_jax_checkpoint_format": value}
  _write(path, json.dumps(meta))


CHECKPOINT_DAMAGE = {  # probe -> damage to checkpoint 24 (of 8, 16, 24); * keeps its state
    "ckpt_no_checksums_and_step16_state": lambda w: (
        shutil.rmtree(_step(w, BASE_STEPS, "checksums")), _swap_state(w)),
    "ckpt_empty_checksums_and_step16_state": lambda w: (
        _write(_step(w, BASE_STEPS, "checksums", "metadata"), "{}"), _swap_state(w)),
    "ckpt_step16_state_and_checksums": lambda w: _swap_state(w, 16, "state", "checksums"),
    "ckpt_manifest_deleted": lambda w: os.remove(_step(w, BASE_STEPS, "state", "manifest.ocdbt")),
    "ckpt_step_folder_is_a_file": lambda w: (shutil.rmtree(_step(w, BASE_STEPS)),
                                             _write(_step(w, BASE_STEPS), "x")),
    "ckpt_metadata_cut_short*": lambda w: _write(_step(w, BASE_STEPS, "_CHECKPOINT_METADATA"),
                                                 "{x"),
}
for _name, _damage in CHECKPOINT_DAMAGE.items():

  def _damage_probe(lab: Lab, damage=_damage, state_kept=_name.endswith("*")) -> Result:
    workdir = lab.copy_base("damaged")
    damage(workdir)
    return _sample_latest(lab, workdir, None if state_kept else BASE_STEPS)

  _from = "24 (its state is intact)" if _name.endswith("*") else "16 (24 skipped)"
  probe(_name.rstrip("*"), f"exit 0 from step {_from}, or exit 2, one line",
        fast=True)(_damage_probe)


@probe("ckpt_resume_over_a_moved_state", "exit 0; checkpoint 24 trained again from 16, bitwise "
       "the base run's")
def _resume_moved(lab: Lab) -> Result:
  workdir = lab.copy_base("moved")
  _swap_state(workdir, 16, "state", "checksums")
  result = judge(lab.run(lab.train_args(workdir, BASE_STEPS)), 0)
  got = lab.loaded(workdir, "latest")["latest"]
  want = lab.loaded(lab.trained("base", BASE_STEPS), "latest")["latest"]
  if got != want:
    return worst(result, Result("SILENT-WRONG", f"latest is {got}, the base run's {want}"))
  return result


FORMATS = {  # probe -> (checkpoint 24's format, a config.json change that the state no longer fits)
    "ckpt_format_0": (0, None),
    "ckpt_format_99_from_a_newer_version": (99, None),
    "ckpt_format_1_of_another_model": (None, lambda v: v.update(hidden_dim=64)),
}
for _name, (_format, _change) in FORMATS.items():

  def _format_probe(lab: Lab, value=_format, change=_change) -> Result:
    workdir = lab.copy_base("format")
    _set_format(workdir, value)
    if change:
      _edit_config(workdir, change)
    out = os.path.join(workdir, "s.npz")
    done = lab.run(
        lab.module_args("sample", "--workdir", workdir, "--num", "4", "--out", out, "--step",
                        str(BASE_STEPS)))
    return judge(done, says=("format",))

  probe(_name, "exit 2, one line naming the checkpoint's format and this one's",
        fast=True)(_format_probe)

# -- the classifier cache: edited or unwritable ---------------------------------------------------


def _cache_copy(lab: Lab, with_floors: bool = True) -> tuple[str, str]:
  """(a copy of the stand-in cache, its classifier folder); with the floors the baseline wrote."""
  source = lab.once("cache_baseline",
                    lambda: _baseline(lab))[0] if with_floors else (lab.classifier_cache())
  cache = shutil.copytree(source, lab.path("cache"))
  return cache, os.path.dirname(glob.glob(os.path.join(cache, "classifier", "*", "info.json"))[0])


def _baseline(lab: Lab) -> tuple[str, dict]:
  """A copy of the stand-in cache after one evaluation of the lab's samples, and its result."""
  cache = shutil.copytree(lab.classifier_cache(), os.path.join(lab.root, "cache_with_floors"))
  done = lab.run(lab.module_args("evaluate", "--samples", lab.samples()),
                 env={"AIGC_JAX_CACHE": cache})
  if done.code != 0:
    raise RuntimeError(f"the baseline evaluation failed: {done.err[-3000:]}")
  return cache, json.loads(done.out.strip().splitlines()[-1])


def _evaluate_with(lab: Lab, cache: str, warned: str) -> Result:
  """Evaluates the lab's samples with `cache`: exit 0, a warning containing `warned`, and the
  baseline's numbers unless the classifier was retrained."""
  done = lab.run(lab.module_args("evaluate", "--samples", lab.samples()),
                 env={"AIGC_JAX_CACHE": cache})
  result = judge(done, 0)
  if done.code != 0:
    return result
  got, want = json.loads(done.out.strip().splitlines()[-1]), lab.made["cache_baseline"][1]
  if warned not in done.err:
    same = {k: got.get(k) == v for k, v in want.items()}
    return worst(
        result,
        Result(
            "SILENT-WRONG", f"used without a warning; fid {got.get('fid')} "
            f"(clean: {want.get('fid')}), unchanged: {all(same.values())}"))
  if warned != "retrain" and got != want:
    return worst(result, Result("SILENT-WRONG", f"fid {got.get('fid')}, clean {want.get('fid')}"))
  return result


@probe("cache_floors_edited", "exit 0, a warning, the clean cache's numbers", fast=True)
def _floors_edited(lab: Lab) -> Result:
  cache, folder = _cache_copy(lab)
  for path in glob.glob(os.path.join(folder, "floors-*.json")):
    with open(path) as f:
      saved = json.load(f)
    saved["floors"] = {
        k: v * 1.5 if isinstance(v, float) else v for k, v in saved["floors"].items()
    }
    _write(path, json.dumps(saved))
  return _evaluate_with(lab, cache, "floors")


@probe("cache_params_batchnorm_mean_x1.5", "exit 0, a warning; the classifier retrained")
def _params_edited(lab: Lab) -> Result:
  cache, folder = _cache_copy(lab)
  path = os.path.join(folder, "params.npz")
  with np.load(path) as npz:
    flat = {k: npz[k] for k in npz.files}
  key = next(k for k in sorted(flat) if k.startswith("batch_stats") and k.endswith("mean"))
  flat[key] = flat[key] * np.float32(1.5)
  np.savez(path, **flat)
  return _evaluate_with(lab, cache, "retrain")


@probe("cache_info_json_a_list", "exit 0, a warning; the classifier retrained")
def _info_list(lab: Lab) -> Result:
  cache, folder = _cache_copy(lab)
  _write(os.path.join(folder, "info.json"), "[1]")
  return _evaluate_with(lab, cache, "retrain")


def _unwritable_cache(lab: Lab, cache: str) -> Result:
  done = lab.run(lab.module_args("evaluate", "--samples", lab.samples()),
                 env={"AIGC_JAX_CACHE": cache}, timeout=120)
  result = judge(done, says=("cache",))
  if done.seconds > 60:
    result = worst(result, Result("OTHER", f"refused only after {done.seconds:.0f} s"))
  return result


@probe("cache_under_a_file", "exit 2 within seconds, one line naming the cache", fast=True)
def _cache_under_file(lab: Lab) -> Result:
  blocker = os.path.join(lab.folder("cache"), "a_file")
  _write(blocker, "x")
  return _unwritable_cache(lab, os.path.join(blocker, "cache"))


@probe("cache_immutable_folder", "exit 2 within seconds, one line naming the cache", fast=True)
def _cache_immutable(lab: Lab) -> Result:
  cache = lab.folder("cache")
  if subprocess.run(["chattr", "+i", cache], capture_output=True, check=False).returncode:
    return Result("SKIP", "chattr +i does not work here")
  return _unwritable_cache(lab, cache)


@probe("cache_immutable_classifier_no_floors", "exit 0; floors not cached: a warning, the "
       "clean cache's numbers")
def _cache_read_only(lab: Lab) -> Result:
  cache, folder = _cache_copy(lab, with_floors=False)
  lab.once("cache_baseline", lambda: _baseline(lab))
  if subprocess.run(["chattr", "+i", folder], capture_output=True, check=False).returncode:
    return Result("SKIP", "chattr +i does not work here")
  return _evaluate_with(lab, cache, "floors")
