"""pytorch-fid's Inception weights file: where it is found, its download, and reading it safely.

`load` returns the `inception.Inception` of the file found first:

1. the `path` argument;
2. ``$AIGC_JAX_INCEPTION_WEIGHTS``;
3. ``<cache>/inception/pt_inception-2015-12-05-6726825d.pth``, the cache being the classifier's
   (`classifier.cache_root`: ``$AIGC_JAX_CACHE``, default ``~/.cache/aigc_jax``).

When none is there, the file is downloaded once into the cache from pytorch-fid's release
(``$AIGC_JAX_INCEPTION_URL`` names a mirror) and kept only if its SHA-256 starts with the prefix
in its name (6726825d); offline, `WeightsError` says where to put it, in one line. A file in the
cache must match that prefix; a file named by path or variable is used as it is (e.g. other
weights in tests) and its SHA-256 is reported (`Inception.weights_sha256`). The file is read by
``torch.load(weights_only=True)``, which builds tensors and refuses pickled code; PyTorch is
imported only then.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request

from aigc_jax.metrics import classifier as classifier_lib
from aigc_jax.metrics import inception

WEIGHTS_ENV = "AIGC_JAX_INCEPTION_WEIGHTS"
URL_ENV = "AIGC_JAX_INCEPTION_URL"
FILENAME = "pt_inception-2015-12-05-6726825d.pth"
URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FILENAME}"
SHA256_PREFIX = "6726825d"
TIMEOUT_S = 60.0


class WeightsError(RuntimeError):
  """The Inception weights are missing, unreadable or not the expected file; one line that says
  what to do."""


def cache_dir(root: str | os.PathLike[str] | None = None) -> str:
  """``<cache>/inception``: the downloaded file, and the floors of Inception features."""
  return os.path.join(classifier_lib.cache_root(root), "inception")


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _fix(dest: str) -> str:
  return (f"put {FILENAME} (from {URL}) at {dest}, or set {WEIGHTS_ENV}=FILE to a copy of it")


def _reason(e: Exception) -> str:
  """What went wrong, on one line."""
  if isinstance(e, urllib.error.URLError):
    e = e.reason
  text = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
  return " ".join(text.split()) or type(e).__name__


def download(dest: str, url: str | None = None) -> None:
  """Fetches `url` (default: $AIGC_JAX_INCEPTION_URL, else pytorch-fid's release) into `dest`
  through a temporary file beside it; raises WeightsError, leaving nothing, when it cannot be
  fetched or its SHA-256 does not start with SHA256_PREFIX."""
  url = url or os.environ.get(URL_ENV) or URL
  try:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".tmp-")
  except OSError as e:
    raise WeightsError(f"no Inception weights, and the cache {os.path.dirname(dest)} is not "
                       f"writable ({_reason(e)}): set {classifier_lib.CACHE_ENV} to a directory "
                       f"you can write, or {_fix(dest)}") from None
  try:
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
      for block in iter(lambda: response.read(1 << 20), b""):
        digest.update(block)
        out.write(block)
    if not digest.hexdigest().startswith(SHA256_PREFIX):
      raise WeightsError(f"the file downloaded from {url} has SHA-256 "
                         f"{digest.hexdigest()[:16]}..., not {SHA256_PREFIX}...: it is not "
                         f"pytorch-fid's; {_fix(dest)}")
    os.replace(tmp, dest)
  except (urllib.error.URLError, OSError, ValueError) as e:
    raise WeightsError(f"no Inception weights, and downloading them from {url} failed "
                       f"({_reason(e)}): {_fix(dest)}") from None
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def find(path: str | None = None, root: str | os.PathLike[str] | None = None,
         allow_download: bool = True) -> str:
  """The weights file: `path`, else $AIGC_JAX_INCEPTION_WEIGHTS, else the cached file,
  downloaded first when missing (`allow_download`); WeightsError when there is none."""
  for given, where in ((path, "the weights file"), (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
    if given:
      if not os.path.isfile(given):
        raise WeightsError(f"{where} {given}: no such file; {_fix(cache_file(root))}")
      return given
  cached = cache_file(root)
  if not os.path.isfile(cached):
    if not allow_download:
      raise WeightsError(f"no Inception weights in {cached}: {_fix(cached)}")
    download(cached)
  return cached


def cache_file(root: str | os.PathLike[str] | None = None) -> str:
  return os.path.join(cache_dir(root), FILENAME)


def read_state_dict(path: str) -> dict:
  """The state dict in the .pth file `path` as numpy arrays, read with
  ``torch.load(weights_only=True)``; WeightsError when PyTorch is missing or the file is not a
  state dict of tensors."""
  try:
    import torch  # pylint: disable=g-import-not-at-top  # optional: only to read the file
  except ImportError:
    raise WeightsError(f"reading {path} needs PyTorch: pip install torch (or this project's "
                       "bench extra: pip install -e '.[bench]')") from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  # pickle, zip and format errors alike
    first = (str(e).strip().splitlines() or [""])[0]
    raise WeightsError(f"cannot read {path} as a PyTorch state dict ({type(e).__name__}: "
                       f"{first})") from None
  if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
  return {k: v.detach().cpu().float().numpy() for k, v in state.items()}


def load(path: str | None = None, root: str | os.PathLike[str] | None = None,
         resize: str = "bilinear", batch_size: int = inception.BATCH,
         allow_download: bool = True) -> inception.Inception:
  """The `inception.Inception` of the weights file `find` returns (`root`: the cache root);
  its floors are cached in `cache_dir(root)`. WeightsError, one line, for every problem with the
  file."""
  found = find(path, root, allow_download)
  sha256 = file_sha256(found)
  if found == cache_file(root) and not sha256.startswith(SHA256_PREFIX):
    raise WeightsError(f"{found} has SHA-256 {sha256[:16]}..., not {SHA256_PREFIX}...: it is "
                       f"not pytorch-fid's file; delete it (it is downloaded again) or "
                       f"{_fix(found)}")
  try:
    variables = inception.variables_from_state_dict(read_state_dict(found))
  except ValueError as e:
    raise WeightsError(f"{found}: {e}") from None
  floors = cache_dir(root)
  try:
    os.makedirs(floors, exist_ok=True)
  except OSError:
    floors = None
  return inception.Inception(variables, resize=resize, batch_size=batch_size, path=floors,
                             weights_sha256=sha256)
