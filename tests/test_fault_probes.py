"""The quickest of the fault probes (tests/faults/probes.py runs them all, a fault script of about
15 minutes): a link planted as the workdir's lock, an IDX header whose dimensions overflow int64,
a samples file whose CRC fails, a cut-short sweep.json, a classifier cache that cannot be
written, a workdir path too long for the system. Each command must end with its one `error:`
line and exit status 2, and leave every file outside its own folders as it was."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "faults"))

import probe_lab  # noqa: E402
import probes  # noqa: E402

QUICK = ("symlink_lock", "idx_dims_overflow_to_payload", "samples_crc_corrupt_npz",
         "sweep_json_cut_short", "cache_under_a_file", "workdir_path_of_4032_chars")


@pytest.fixture(name="lab", scope="module")
def fixture_lab(tmp_path_factory):
  lab = probe_lab.Lab(str(tmp_path_factory.mktemp("probes")))
  yield lab
  lab.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", QUICK)
def test_a_quick_fault_probe_is_ok(lab, name):
  [probe] = [p for p in probe_lab.PROBES if p.name == name]
  assert probe.fast
  result = probes.run_probe(lab, probe)
  assert result.verdict == "OK", f"{name}: {result.verdict}: {result.observed}"
