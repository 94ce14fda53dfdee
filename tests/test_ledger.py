"""Durable deletion requests: the ledger, crash recovery, idempotence and the run lock."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sisakit
from sisakit.cli import main
from sisakit.engine import SISA, parameters_equal
from sisakit.ledger import DeletionLedger, RunLock

CFG = dict(n_shards=2, n_slices=2, epochs=2, model_params={"factors": 4}, progress=False,
           device="cpu")
U1, U2 = 7, 23  # raw user ids of synthetic(n_users=60): 1..60

# A child process: load the run, optionally die (SIGKILL) at a named point, forget one user.
CHILD = r"""
import os, signal, sys, time
from pathlib import Path
import sisakit.ledger
from sisakit.engine import SISA
from sisakit.store import RunStore

run, user, point = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if point == "after-ledger-append":      # received line written, nothing retrained yet
    SISA._forget_request = die
elif point == "before-manifest-swap":   # shards retrained and staged, manifest not swapped
    RunStore.write_manifest = die
elif point == "before-applied-line":    # manifest swapped, ledger not yet told
    sisakit.ledger.DeletionLedger.mark_applied = die
elif point == "slow-commit":            # hold the lock a while, so two processes overlap
    swap = RunStore.write_manifest
    def slow(self, manifest):
        time.sleep(0.5)
        swap(self, manifest)
    RunStore.write_manifest = slow
model = SISA.load(run, device="cpu", progress=False, lock_timeout=30)
if len(sys.argv) > 4:  # wait for the parent's go, so both processes forget at once
    Path(sys.argv[4] + ".ready-" + str(user)).touch()
    while not os.path.exists(sys.argv[4]):
        time.sleep(0.01)
model.forget(users=[user])
print("acknowledged")
"""


def child(run: Path, user: int, point: str, go: Path | None = None) -> subprocess.Popen:
    args = [sys.executable, "-c", CHILD, str(run), str(user), point]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args + ([str(go)] if go else []), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(n_users=60, n_items=40, seed=0)


@pytest.fixture(scope="module")
def base(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("base") / "run"
    SISA(workdir=run, **CFG).fit(data)
    return run


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory) -> dict[str, SISA]:
    """Uninterrupted runs: U1 forgotten; U1 then U2 forgotten (one process)."""
    root = tmp_path_factory.mktemp("reference")
    one = SISA.load(clone(base, root / "one"))
    one.forget(users=[U1])
    both = SISA.load(clone(base, root / "both"))
    both.forget(users=[U1])
    both.forget(users=[U2])
    return {"one": one, "both": both}


def clone(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]


def run_bytes(run: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file())


# ---------------------------------------------------------------------------- the ledger
def test_request_is_ledgered_before_processing_and_applied_after(base, tmp_path, monkeypatch):
    run = clone(base, tmp_path / "run")
    model = SISA.load(run)
    seen = {}
    apply = SISA._forget_request

    def spy(self, request, request_id=None, **kwargs):
        seen["lines"] = lines(run)
        seen["pending"] = json.loads((run / "pending" / f"{request_id}.json").read_text())
        seen["manifest_generation"] = sisakit.store.RunStore(run).read_manifest()["generation"]
        return apply(self, request, request_id, **kwargs)

    monkeypatch.setattr(SISA, "_forget_request", spy)
    report = model.forget(users=[U1], items=[3], interactions=[(U2, 5)], request_id="ticket-1")
    (received,) = seen["lines"]
    assert received["request"] == "ticket-1" and received["state"] == "received"
    assert received["kinds"] == ["users", "items", "interactions"]
    assert received["counts"] == {"users": 1, "items": 1, "interactions": 1}
    assert received["ids"] == {"users": [model._state.digest("users", U1)],
                               "items": [model._state.digest("items", 3)],
                               "interactions": [model._state.digest("interactions", (U2, 5))]}
    assert seen["pending"] == {"request": "ticket-1", "users": [U1], "items": [3],
                               "interactions": [[U2, 5]]}
    assert seen["manifest_generation"] == 0  # nothing was committed before the ledger line
    after = lines(run)
    assert [e["state"] for e in after] == ["received", "applied"]
    assert after[1]["generation"] == 1 and after[1]["records_removed"] == report.records_removed
    assert not (run / "pending").exists()  # raw ids are gone once the request is applied
    assert model.history[-1]["request"] == "ticket-1"
    assert model.pending_requests() == []


def test_no_raw_id_in_the_run_dir_once_applied(tmp_path):
    rng = np.random.default_rng(0)
    users = np.array([f"person-{k:03d}" for k in rng.integers(0, 30, 400)])
    d = sisakit.Interactions.from_arrays(users, [f"item-{k}" for k in rng.integers(0, 20, 400)])
    run = tmp_path / "run"
    model = SISA(workdir=run, **CFG).fit(d)
    secret = "person-007"
    assert secret in d.user_ids
    row = int(np.flatnonzero(d.user_ids[d.user_idx] != secret)[0])
    pair = (str(d.user_ids[d.user_idx[row]]), str(d.item_ids[d.item_idx[row]]))
    model.forget(users=[secret])
    model.forget(interactions=[pair])
    with pytest.raises(sisakit.UnknownIdError):
        model.forget(users=["person-nobody"])  # refused before it is received: nothing written
    blob = run_bytes(run)
    for text in (secret, "person-nobody"):
        assert text.encode("utf-8") not in blob and text.encode("utf-32-le") not in blob
    assert pair[0].encode("utf-32-le") in blob  # still an active user (the search works)
    assert [e["state"] for e in lines(run)] == ["received", "applied"] * 2
    assert not (run / "pending").exists()


def test_same_request_id_is_applied_once(base, tmp_path):
    run = clone(base, tmp_path / "run")
    model = SISA.load(run)
    first = model.forget(users=[U1], request_id="gdpr-42")
    generation = model.generation
    again = SISA.load(run).forget(users=[U1], request_id="gdpr-42")
    assert first.records_removed > 0
    assert again.noop and again.already_forgotten == {"users": 1}
    assert SISA.load(run).generation == generation  # nothing was retrained or committed
    assert [e["state"] for e in lines(run)] == ["received", "applied"]
    with pytest.raises(sisakit.ValidationError, match="request_id"):
        model.forget(users=[U2], request_id="not a valid id!")


# ---------------------------------------------------------------------------- crash recovery
@pytest.mark.parametrize("point", ["after-ledger-append", "before-manifest-swap",
                                   "before-applied-line"])
def test_killed_forget_is_finished_by_load(base, reference, tmp_path, point, caplog):
    run = clone(base, tmp_path / "run")
    proc = child(run, U1, point)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert "acknowledged" not in out  # never acknowledged
    (pending,) = DeletionLedger(run).pending()
    assert json.loads((run / "pending" / f"{pending['request']}.json").read_text())["users"] == [U1]
    with caplog.at_level(logging.WARNING, logger="sisakit.engine"):
        model = SISA.load(run)
    assert "finished 1 deletion request" in caplog.text
    assert model.is_forgotten(U1) and model.pending_requests() == []
    assert [e["state"] for e in lines(run)] == ["received", "applied"]
    assert not (run / "pending").exists()
    assert [h.get("request") for h in model.history] == [pending["request"]]  # applied once
    assert model.generation == 1
    equal, n = parameters_equal(model, reference["one"])
    assert equal and n > 0
    users = reference["one"].user_ids  # (a tombstone is no user id)
    assert np.array_equal(model.recommend(users, k=5), reference["one"].recommend(users, k=5))
    assert parameters_equal(SISA.load(run), reference["one"])[0]  # and on disk


def test_interrupted_forget_waits_for_resume_and_cli_finishes_it(base, reference, tmp_path,
                                                                 monkeypatch, caplog, capsys):
    run = clone(base, tmp_path / "run")
    model = SISA.load(run)

    def crash(self, request, request_id=None, **kwargs):
        raise KeyboardInterrupt

    def disk_full(self, request_id, error):
        raise OSError("disk full")

    monkeypatch.setattr(SISA, "_forget_request", crash)
    monkeypatch.setattr(DeletionLedger, "mark_failed", disk_full)
    with pytest.raises(KeyboardInterrupt):
        model.forget(users=[U1], request_id="req-1")
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger="sisakit.engine"):
        held = SISA.load(run, resume=False)
    assert "1 pending deletion request(s)" in caplog.text and "req-1" in caplog.text
    (entry,) = held.pending_requests()
    assert entry["request"] == "req-1" and entry["counts"] == {"users": 1}
    assert not held.is_forgotten(U1)
    assert main(["resume", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (done,) = out["finished"]
    assert done["request"] == "req-1" and done["state"] == "applied" and out["pending"] == []
    assert done["generation"] == 1 and done["report"]["records_removed"] > 0
    assert parameters_equal(SISA.load(run), reference["one"])[0]
    assert main(["resume", str(run)]) == 0
    assert "no pending deletion requests" in capsys.readouterr().out
    # A refit must not drop pending requests: fit refuses until they are finished.
    monkeypatch.setattr(SISA, "_forget_request", crash)
    monkeypatch.setattr(DeletionLedger, "mark_failed", disk_full)
    with pytest.raises(KeyboardInterrupt):
        held.forget(users=[U2])
    monkeypatch.undo()
    with pytest.raises(sisakit.CheckpointError, match="pending deletion request"):
        SISA(workdir=run, overwrite=True, **CFG).fit(held.data)


# ---------------------------------------------------------------------------- the run lock
def test_two_processes_forgetting_at_once_lose_no_update(base, reference, tmp_path):
    run = clone(base, tmp_path / "run")
    go = tmp_path / "go"
    procs = [child(run, user, "slow-commit", go) for user in (U1, U2)]
    deadline = time.monotonic() + 120
    while not all(Path(f"{go}.ready-{u}").exists() for u in (U1, U2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.02)
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and "acknowledged" in out, err
    entries = lines(run)
    assert [e["state"] for e in entries] == ["received", "applied"] * 2  # serialised
    assert entries[0]["request"] == entries[1]["request"]
    assert entries[2]["request"] == entries[3]["request"]
    model = SISA.load(run)
    assert model.is_forgotten(U1) and model.is_forgotten(U2)
    assert model.generation == 2
    equal, n = parameters_equal(model, reference["both"])
    assert equal and n > 0


def test_lock_timeout_is_a_clear_error(base, tmp_path):
    run = clone(base, tmp_path / "run")
    model = SISA.load(run, lock_timeout=0.2)
    assert model.lock_timeout == 0.2
    with RunLock(run, timeout=1):  # another holder (a separate open file: flock conflicts)
        t0 = time.monotonic()
        with pytest.raises(sisakit.CheckpointError, match="locked by another process"):
            model.forget(users=[U1])
        assert time.monotonic() - t0 < 5
    assert not model.is_forgotten(U1)
    assert model.forget(users=[U1]).records_removed > 0  # released: it works
    with pytest.raises(sisakit.ValidationError, match="lock_timeout"):
        model.lock_timeout = -1


def test_stale_object_reloads_what_another_writer_committed(base, reference, tmp_path):
    run = clone(base, tmp_path / "run")
    stale, other = SISA.load(run), SISA.load(run)
    other.forget(users=[U1])
    stale.forget(users=[U2])  # must not overwrite U1's forget with its stale state
    assert stale.is_forgotten(U1) and stale.generation == 2
    assert parameters_equal(SISA.load(run), reference["both"])[0]


# ---------------------------------------------------------------------------- compatibility
def test_newer_format_version_is_refused(base, tmp_path, capsys):
    run = clone(base, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["format_version"] = sisakit.store.FORMAT_VERSION + 1
    sisakit.store.RunStore(run).write_manifest(manifest)
    with pytest.raises(sisakit.CheckpointError, match=r"newer than this sisakit.*upgrade"):
        SISA.load(run)
    assert main(["resume", str(run)]) == 2
    assert "upgrade sisakit" in capsys.readouterr().err


def test_run_without_ledger_loads_and_forgets(base, tmp_path):
    run = clone(base, tmp_path / "run")  # fitted runs made before the ledger had none of its files
    assert not (run / "ledger.jsonl").exists() and not (run / "pending").exists()
    model = SISA.load(run)
    assert model.pending_requests() == []
    assert model.forget(users=[U1]).records_removed > 0
    assert [e["state"] for e in lines(run)] == ["received", "applied"]


def test_torn_ledger_line_and_orphan_pending_files_are_handled(base, tmp_path, caplog):
    run = clone(base, tmp_path / "run")
    SISA.load(run).forget(users=[U1], request_id="first")
    with open(run / "ledger.jsonl", "ab") as fh:  # a crash in the middle of an append
        fh.write(b'{"request": "torn", "sta')
    (run / "pending").mkdir()
    (run / "pending" / "orphan.json").write_text(json.dumps({"request": "orphan", "users": [U2]}))
    (run / "pending" / ".orphan.json.x1.tmp").write_text("[23")  # a torn atomic write
    with caplog.at_level(logging.WARNING, logger="sisakit.ledger"):
        model = SISA.load(run)
    assert "not valid JSON" in caplog.text
    assert not (run / "pending").exists()  # never received: its raw ids are deleted
    assert not model.is_forgotten(U2)
    model.forget(users=[U2], request_id="second")
    assert [(e["request"], e["state"]) for e in lines_lenient(run)] == [
        ("first", "received"), ("first", "applied"), ("second", "received"), ("second", "applied")]


def lines_lenient(run: Path) -> list[dict]:
    return DeletionLedger(run).entries()
