"""Run directories never reach outside themselves; deletion requests are never dropped (#17).

* A manifest, fit journal or ledger that names a file outside the run (``../victim``, an
  absolute path, a symbolic link out) is refused with :class:`CheckpointError`, and no file
  outside the run is read, written or deleted by load, forget, copy or resume.
* A request id reused for other ids raises :class:`ValidationError` (the same ids stay a no-op).
* A tombstone (the id that replaces a forgotten user's raw id) is no user id.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import sisakit
from sisakit import Interactions
from sisakit.cli import main
from sisakit.engine import SISA
from sisakit.errors import CheckpointError, UnknownIdError, ValidationError
from sisakit.store import RunStore, _manifest_digest

CFG = dict(model="bpr-mf", model_params={"factors": 4}, epochs=2, n_shards=3, n_slices=2,
           device="cpu", progress=False)
GHOST = 10**9 + 7


@pytest.fixture(scope="module")
def data() -> Interactions:
    return sisakit.datasets.synthetic(n_users=60, n_items=40, seed=0)


@pytest.fixture(scope="module")
def base_run(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("safety") / "run"
    SISA(workdir=run, **CFG).fit(data)
    return run


@pytest.fixture
def sandbox(base_run, tmp_path):
    """A copy of the run and a victim file beside it (what a hostile manifest aims at)."""
    run = tmp_path / "box" / "run"
    shutil.copytree(base_run, run)
    victim = tmp_path / "box" / "victim.txt"
    victim.write_bytes(b"precious bytes")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.bin").write_bytes(b"do not touch")
    return run, victim, outside


def outside_bytes(victim: Path, outside: Path) -> dict[str, bytes]:
    return {"victim": victim.read_bytes(),
            **{p.name: p.read_bytes() for p in sorted(outside.iterdir())}}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def resign(run: Path, change) -> None:
    """Edit the manifest and give it a valid self-checksum (what an attacker can do)."""
    manifest = json.loads((run / "manifest.json").read_text())
    change(manifest)
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    body["manifest_sha256"] = _manifest_digest(body)
    (run / "manifest.json").write_text(json.dumps(body))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _list_victim(run: Path, victim: Path, how: str):
    def change(m: dict) -> None:
        name = "../victim.txt" if how == "dotdot" else str(victim)
        if how == "dotdot-in-checkpoints":
            name = "checkpoints/../../victim.txt"
        m["files"][name] = _sha(victim)
        if how == "as-checkpoint":
            m["files"]["../victim.txt"] = _sha(victim)
            m["checkpoints"][0][-1] = "../victim.txt"
        if how == "as-data-file":
            m["data_files"]["space"] = str(victim)
            m["files"][str(victim)] = _sha(victim)
    return change


@pytest.mark.parametrize("how", ["dotdot", "absolute", "dotdot-in-checkpoints", "as-checkpoint",
                                 "as-data-file"])
def test_manifest_naming_a_file_outside_is_refused(sandbox, how):
    run, victim, outside = sandbox
    resign(run, _list_victim(run, victim, how))
    before = outside_bytes(victim, outside)
    with pytest.raises(CheckpointError, match=r"(outside|absolute|relative).*restore"):
        SISA.load(run, device="cpu", progress=False)
    with pytest.raises(CheckpointError):
        SISA.load(run, device="cpu", progress=False, resume=False)
    assert main(["resume", str(run)]) == 2
    assert outside_bytes(victim, outside) == before


def test_forget_and_copy_of_a_loaded_run_never_touch_a_listed_outside_file(sandbox, data):
    """The manifest is re-signed to list the victim *after* the run was loaded: the copy and
    the forget (which re-reads the manifest under the run lock) refuse it."""
    run, victim, outside = sandbox
    model = SISA.load(run, device="cpu", progress=False)
    resign(run, _list_victim(run, victim, "dotdot"))
    before = outside_bytes(victim, outside)
    with pytest.raises(CheckpointError, match="victim"):  # the copy's manifest is checked too
        model.copy(run.parent / "copy")
    assert not any(p.name == "victim.txt" for p in (run.parent / "copy").rglob("*"))
    with pytest.raises(CheckpointError, match="victim"):  # re-read under the lock: refused
        model.forget(users=[data.user_ids[0]])
    assert outside_bytes(victim, outside) == before
    assert not model.is_forgotten(data.user_ids[0])


def test_checkpoint_folder_linked_outside_is_refused_and_never_swept(sandbox):
    run, _victim, outside = sandbox
    shutil.copytree(run / "checkpoints", outside / "checkpoints")
    (outside / "checkpoints" / "stray.g99.pt").write_bytes(b"unlisted: a sweep would delete it")
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(outside / "checkpoints", target_is_directory=True)
    snap = tree(outside / "checkpoints")
    with pytest.raises(CheckpointError, match="symbolic link"):
        SISA.load(run, device="cpu", progress=False)
    assert tree(outside / "checkpoints") == snap
    RunStore(run).remove_unlisted([])  # the sweep itself never follows the link
    assert tree(outside / "checkpoints") == snap


def test_a_copy_refuses_a_checkpoint_folder_linked_outside_after_load(sandbox):
    run, _victim, outside = sandbox
    model = SISA.load(run, device="cpu", progress=False)
    shutil.move(str(run / "checkpoints"), str(outside / "checkpoints"))
    (run / "checkpoints").symlink_to(outside / "checkpoints", target_is_directory=True)
    with pytest.raises(CheckpointError, match="symbolic link"):
        model.copy(run.parent / "copy")


def test_pending_folder_linked_outside_is_refused(sandbox):
    run, victim, outside = sandbox
    (run / "pending").symlink_to(outside, target_is_directory=True)
    before = outside_bytes(victim, outside)
    with pytest.raises(CheckpointError, match="outside the run directory"):
        SISA.load(run, device="cpu", progress=False)
    model = SISA.load(run, device="cpu", progress=False, resume=False)
    with pytest.raises(CheckpointError, match="outside the run directory"):
        model.forget(users=[1])
    assert outside_bytes(victim, outside) == before


def test_ledger_linked_outside_is_never_appended_to(sandbox):
    run, victim, outside = sandbox
    model = SISA.load(run, device="cpu", progress=False)
    (run / "ledger.jsonl").symlink_to(victim)
    before = outside_bytes(victim, outside)
    with pytest.raises(CheckpointError, match="outside the run directory"):
        model.forget(users=[1])
    assert outside_bytes(victim, outside) == before


def test_ledger_naming_a_path_as_request_id_is_refused(sandbox):
    run, victim, outside = sandbox
    line = {"request": "../../victim", "state": "received", "time": "2026-01-01T00:00:00Z",
            "kinds": ["users"], "counts": {"users": 1}, "ids": {"users": ["0" * 64]}}
    (run / "ledger.jsonl").write_text(json.dumps(line) + "\n")
    before = outside_bytes(victim, outside)
    with pytest.raises(CheckpointError, match="tampered"):
        SISA.load(run, device="cpu", progress=False)
    assert outside_bytes(victim, outside) == before


def test_fit_journal_naming_a_file_outside_is_refused(data, tmp_path):
    """A fit killed before its commit leaves a journal; one re-signed to list the victim is
    refused by load (resume) and by ``sisakit resume``, and the victim is kept."""
    from sisakit._fitjournal import FitJournal

    run = tmp_path / "box" / "run"
    victim = tmp_path / "box" / "victim.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    model = SISA(workdir=run, **CFG).fit(data)
    journal = FitJournal(run)
    manifest = RunStore(run).read_manifest()
    journal.start({"format_version": 1, "config": manifest["config"], "seed": 0,
                   "generation": manifest["generation"] + 1, "salt": "s" * 32,
                   "data_files": {"space": "../victim.txt", "shards": ["../victim.txt"] * 3},
                   "files": {"../victim.txt": _sha(victim)}, "started": "x"})
    with pytest.raises(CheckpointError, match=r"fit journal.*victim"):
        SISA.load(run, device="cpu", progress=False)
    assert main(["resume", str(run)]) == 2
    assert victim.read_bytes() == b"precious"
    del model


# ============================================================================ request ids
def _run_bytes(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file()}


def test_reused_request_id_with_other_ids_raises_and_changes_nothing(sandbox):
    run, _, _ = sandbox
    model = SISA.load(run, device="cpu", progress=False)
    model.forget(users=[3], request_id="T-1")
    before = _run_bytes(run)
    with pytest.raises(ValidationError, match=r"'T-1'.*different ids.*new request_id"):
        model.forget(users=[4], request_id="T-1")
    assert _run_bytes(run) == before
    assert not model.is_forgotten(4) and model.is_forgotten(3)
    with pytest.raises(ValidationError, match=r"'T-1'.*different ids"):
        model.receive(users=[4], request_id="T-1")
    with pytest.raises(ValidationError, match=r"'T-1'"):
        model.forget(users=[3, 4], request_id="T-1")  # a superset is another request too
    assert _run_bytes(run) == before
    # The same id with the same ids is the documented no-op, counting only what was forgotten.
    report = model.forget(users=[3], request_id="T-1")
    assert report.already_forgotten == {"users": 1} and report.records_removed == 0
    assert _run_bytes(run) == before
    # And user 4 can still be forgotten under a new id.
    model.forget(users=[4], request_id="T-2")
    assert model.is_forgotten(4)


def test_received_request_id_reused_with_other_ids_raises(sandbox):
    run, _, _ = sandbox
    model = SISA.load(run, device="cpu", progress=False)
    model.receive(users=[5], request_id="R-1")
    assert model.receive(users=[5], request_id="R-1") == "R-1"  # same ids: not received twice
    with pytest.raises(ValidationError, match="'R-1'"):
        model.receive(users=[6], request_id="R-1")
    with pytest.raises(ValidationError, match="'R-1'"):
        model.forget(users=[6], request_id="R-1")  # the pending R-1 is applied first
    assert model.is_forgotten(5) and not model.is_forgotten(6)


def test_request_id_reused_after_a_refit_is_refused(data, tmp_path):
    run = tmp_path / "run"
    SISA(workdir=run, **CFG).fit(data).forget(users=[3], request_id="T-9")
    fresh = SISA(workdir=run, overwrite=True, **CFG).fit(data)  # a new run: user 3 is back
    with pytest.raises(ValidationError, match=r"'T-9'.*earlier fit"):
        fresh.forget(users=[3], request_id="T-9")
    assert not fresh.is_forgotten(3)


# ============================================================================ tombstones
def test_tombstone_is_not_a_user_id(sandbox):
    run, _, _ = sandbox
    model = SISA.load(run, device="cpu", progress=False)
    model.forget(users=[3])
    (stone,) = np.setdiff1d(model.data.user_ids, np.arange(1, 61)).tolist()
    assert stone < 0  # synthetic ids are 1..60: the tombstone replaced 3
    before = _run_bytes(run)
    for call in (lambda: model.recommend([stone], k=3), lambda: model.forget(users=[stone]),
                 lambda: model.forget(interactions=[(stone, 1)]),
                 lambda: model.receive(users=[stone]), lambda: model.is_forgotten(stone)):
        with pytest.raises(UnknownIdError, match=str(stone)):
            call()
    assert _run_bytes(run) == before
    assert model.recommend([3], k=3).shape == (1, 3)  # the forgotten user's own id still works
    assert model.is_forgotten(3) and not model.is_forgotten(4)
    assert stone not in model.user_ids.tolist() and 3 not in model.user_ids.tolist()
    assert len(model.user_ids) == 59
    reloaded = SISA.load(run, device="cpu", progress=False)
    with pytest.raises(UnknownIdError):
        reloaded.recommend([stone], k=3)


@pytest.mark.parametrize("call", ["recommend", "forget", "receive", "is_forgotten"])
def test_an_id_that_never_existed_is_unknown_everywhere(sandbox, call):
    run, _, _ = sandbox
    model = SISA.load(run, device="cpu", progress=False)
    model.forget(users=[3])
    before = _run_bytes(run)
    fn = {"recommend": lambda: model.recommend([GHOST], k=3),
          "forget": lambda: model.forget(users=[GHOST]),
          "receive": lambda: model.receive(users=[GHOST]),
          "is_forgotten": lambda: model.is_forgotten(GHOST)}[call]
    with pytest.raises(UnknownIdError, match=str(GHOST)):
        fn()
    assert _run_bytes(run) == before


def test_negative_raw_ids_never_collide_with_tombstones(tmp_path):
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(-6, 14), 6)  # real users -6..13, several of them negative
    items = rng.integers(0, 30, len(users))
    data = Interactions.from_arrays(users, items)
    model = SISA(workdir=tmp_path / "run", **{**CFG, "n_shards": 2}).fit(data)
    model.forget(users=[-6])
    model.forget(users=[-5])
    ids = model.data.user_ids
    assert len(set(ids.tolist())) == len(ids) and {-1, -2}.issubset(set(ids.tolist()))
    assert not model.is_forgotten(-1) and model.is_forgotten(-6) and model.is_forgotten(-5)
    assert model.recommend([-1, -2], k=4).shape == (2, 4)
    model.forget(users=[-1])  # a real negative id is a user, not a tombstone
    assert model.is_forgotten(-1)
    for u in (-7, -8):  # the tombstones of -6 and -5 are below every real id
        with pytest.raises(UnknownIdError):
            model.recommend([u], k=3)


def test_tombstones_fit_when_ids_fill_the_int64_range(tmp_path):
    info = np.iinfo(np.int64)
    raw = np.array([info.min, info.min + 1, -1, 0, 5, info.max - 1, info.max], dtype=np.int64)
    users = np.repeat(raw, 5)
    items = np.tile(np.arange(5), len(raw))
    data = Interactions.from_arrays(users, items)
    model = SISA(workdir=tmp_path / "run", **{**CFG, "n_shards": 2}).fit(data)
    model.forget(users=[int(info.min), int(info.max)])
    ids = model.data.user_ids
    assert len(set(ids.tolist())) == len(ids)
    assert model.is_forgotten(int(info.min)) and model.is_forgotten(int(info.max))
    assert sorted(model.user_ids.tolist()) == sorted(raw[1:-1].tolist())
    assert os.path.isdir(tmp_path / "run")
