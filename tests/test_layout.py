"""The package's shape: small functions and modules, and imports that point down the layers."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "aigc_jax"
MAX_FUNCTION_LINES = 50
MAX_MODULE_LINES = 300
# Layers from the bottom: a module may import its own layer and those below, never above.
LAYERS = (
    ("entry", "backend", "noise", "suggest", "safe_files", "writers", "plot", "orbax_logs",
     "progress", "command_line"),
    ("idx", "tfds_split", "image_folder", "user_data", "data", "streaming", "eval_split",
     "clusters", "likelihoods", "gan_losses", "noise_processes", "models", "metrics"),
    ("state",),
    ("families",),
    ("config", "placement", "parallel", "checkpoint", "checkpoint_verify", "population"),
    ("workdir", "lock", "signals", "schedule", "run_setup", "train", "train_cli", "sample",
     "evaluate", "sweep_spec", "sweep_train", "sweep"),
    ("bench", "demo_summary", "fid_stats"),
)
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules():
  return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def top_name(path: pathlib.Path) -> str:
  """aigc_jax/models/gan.py -> 'models'; aigc_jax/train.py -> 'train'."""
  return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def project_imports(tree: ast.AST) -> set[str]:
  """The top-level aigc_jax modules or subpackages a module imports."""
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aigc_jax"):
      parts = node.module.split(".")
      names.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
    elif isinstance(node, ast.Import):
      names.update(
          a.name.split(".")[1] for a in node.names
          if a.name.startswith("aigc_jax.") and "." in a.name)
  return names


def test_every_module_has_a_layer():
  names = {top_name(p) for p in modules()} - {"__init__"}
  assert names <= set(LAYER), sorted(names - set(LAYER))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
  name = top_name(path)
  if name == "__init__":
    return
  tree = ast.parse(path.read_text())
  upward = {m for m in project_imports(tree) if m in LAYER and LAYER[m] > LAYER[name]}
  assert not upward, f"{path.name} ({name}, layer {LAYER[name]}) imports {sorted(upward)}"


def test_functions_and_modules_are_short():
  too_long = []
  for path in modules():
    text = path.read_text()
    if len(text.splitlines()) > MAX_MODULE_LINES:
      too_long.append(f"{path.name}: {len(text.splitlines())} lines")
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES:
          too_long.append(f"{path.name}:{node.lineno} {node.name}: {lines} lines")
  assert not too_long, too_long


def test_the_layout_check_sees_an_upward_import():
  tree = ast.parse("from aigc_jax import train\nimport aigc_jax.families.gan\n")
  assert project_imports(tree) == {"train", "families"}
