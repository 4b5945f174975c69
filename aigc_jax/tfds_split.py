"""Reading a split through TFDS's random-access `data_source`, without TFDS's minutes of retries
where there is no network."""

from __future__ import annotations

import socket
from typing import Any

from aigc_jax import idx

TFDS_HOST = "storage.googleapis.com"  # where TFDS downloads from
_TQDM_MIN_RECORDS = 10_000


def network_reachable(host: str = TFDS_HOST, timeout: float = 3.0) -> bool:
  """Whether a TCP connection to `host`:443 opens within `timeout` seconds."""
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def open_split(tfds_name: str, split: str, data_dir: str | None) -> Any:
  """`tfds.data_source` of a prepared split (random access, nothing read yet); downloads and
  prepares it only when the network is reachable (without one, TFDS would retry for minutes and
  leave partial downloads)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
  except Exception:  # pylint: disable=broad-except  # not prepared in data_dir
    if not network_reachable():
      raise idx.DataError(f"TFDS has not prepared {tfds_name!r} in its data_dir and there is "
                          f"no network to download it ({TFDS_HOST} is unreachable)") from None
  return tfds.data_source(tfds_name, split=split, data_dir=data_dir)


def read_rows(source: Any, keys: list[int]) -> list[Any]:
  """The records at `keys`, in order: one batched `__getitems__` where the source has one."""
  try:
    return list(source.__getitems__(keys))
  except (AttributeError, TypeError):  # e.g. tfds.testing.mock_data sources
    return [source[k] for k in keys]


def read_records(source: Any, rows: idx.Rows, chunk: int = 1024) -> list[Any]:
  """Reads records [start, stop), `chunk` keys at a time."""
  from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
  start, stop = rows
  records: list[Any] = []
  with tqdm.tqdm(total=stop - start, disable=stop - start < _TQDM_MIN_RECORDS, desc="tfds",
                 unit="ex") as bar:
    for first in range(start, stop, chunk):
      keys = list(range(first, min(stop, first + chunk)))
      records.extend(read_rows(source, keys))
      bar.update(len(keys))
  return records
