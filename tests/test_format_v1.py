"""A run directory written by an earlier sisakit (on-disk format 1, ``tests/fixtures/run_v1``,
see ``tests/fixtures/make_run_v1.py``) loads, serves and forgets as it did."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

import sisakit
from sisakit.store import RunStore
from sisakit.testing import assert_exact

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "run_v1.json").read_text())
SAME_MACHINE = EXPECTED["machine"] == {"torch": torch.__version__,
                                       "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _digests(run: sisakit.SISA) -> list[dict[str, str]]:
    return [{k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
             for k, v in sorted(state.items())} for state in run.parameters()]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    target = tmp_path / "run_v1"
    shutil.copytree(FIXTURES / "run_v1", target)  # never change the committed fixture
    return target


def test_fixture_loads_with_its_stored_bits(run_dir):
    run = sisakit.SISA.load(run_dir, device="cpu", progress=False)
    assert RunStore(run_dir).read_manifest()["format_version"] == 1
    assert _digests(run) == EXPECTED["parameters"]  # read from disk: machine-independent
    assert run.is_forgotten(1003) and not run.is_forgotten(1010)
    assert [h.get("request") for h in run.history] == ["fixture-1"]


def test_fixture_recommends_as_before(run_dir):
    run = sisakit.SISA.load(run_dir, device="cpu", progress=False)
    assert run.recommend(EXPECTED["users"], k=5).tolist() == EXPECTED["recommend"]


def test_fixture_forgets_exactly(run_dir):
    run = sisakit.SISA.load(run_dir, device="cpu", progress=False)
    remaining = run.data.without(users=[EXPECTED["after_forget"]["user"]])
    report = run.forget(users=[EXPECTED["after_forget"]["user"]])
    assert report.records_removed > 0
    assert_exact(run, remaining)  # equals a scratch fit of the remaining data, bit for bit
    if SAME_MACHINE:  # and the very bits the old engine computed, where they are comparable
        assert _digests(run) == EXPECTED["after_forget"]["parameters"]
        assert run.recommend(EXPECTED["users"], k=5).tolist() == \
            EXPECTED["after_forget"]["recommend"]
    again = sisakit.SISA.load(run_dir, device="cpu", progress=False)
    assert _digests(again) == _digests(run)
    assert RunStore(run_dir).read_manifest()["format_version"] == 1
