"""Crash recovery for real: processes doing fit, forget and repartition are killed with SIGKILL at
named fault points (and, in the slow variant, at random moments); after resuming, no acknowledged
request is lost, every checkpoint verifies, no stray file is left, and the model equals an
uninterrupted run bit for bit.

The processes are forked from one "zygote" that imported sisakit once, so each fault point costs
a fork and a small fit, not an interpreter start: the whole fast test stays well under 90 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sisakit
from sisakit.cli import main
from sisakit.engine import SISA, parameters_equal
from sisakit.executors import JoblibExecutor
from sisakit.ledger import DeletionLedger
from sisakit.store import RunStore

CFG = dict(n_shards=2, n_slices=3, epochs=3, aggregator="fold-in", model_params={"factors": 4},
           progress=False, device="cpu")
DATA = dict(n_users=60, n_items=40, seed=0)
U1, U2 = 7, 23

# The zygote: import once, then fork one child per case. A child installs its fault point (a
# function wrapped to SIGKILL the process before or after its n-th call, or an atomic write
# torn half-way), runs its workload, and reports through its exit status and an output file.
ZYGOTE = r"""
import json, os, random, signal, sys, tempfile, threading, time
import numpy as np
import sisakit, sisakit._training, sisakit.ledger, sisakit.store
from sisakit.aggregators.foldin import FoldInAggregator
from sisakit.engine import SISA
from sisakit.ledger import DeletionLedger
from sisakit.store import RunStore

CFG, DATA, U1, U2 = (json.loads(a) for a in sys.argv[1:5])
cases = json.loads(sys.stdin.read())
data = sisakit.datasets.synthetic(**DATA)

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def call(owner, attr, n, when, pred=lambda *a: True):
    real, seen = getattr(owner, attr), [0]
    def wrapped(*a, **k):
        hit = False
        if pred(*a):
            seen[0] += 1
            hit = seen[0] == n
        if hit and when == "before":
            die()
        out = real(*a, **k)
        if hit:
            die()
        return out
    setattr(owner, attr, wrapped)

def torn(module, pattern, n=1):
    real, seen = module.atomic_write, [0]
    def write(path, payload):
        if pattern in str(path):
            seen[0] += 1
            if seen[0] == n:  # as atomic_write would, but killed half-way through the bytes
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                os.write(fd, payload[: len(payload) // 2])
                os.fsync(fd)
                die()
        return real(path, payload)
    module.atomic_write = write

CKPT = lambda self, rel, *a: rel.startswith("checkpoints/")
POINTS = {
    "torn-checkpoint": lambda n: torn(sisakit.store, "checkpoints/", n),
    "torn-manifest": lambda n: torn(sisakit.store, "manifest.json", n),
    "torn-pending": lambda n: torn(sisakit.ledger, "pending", n),
    "before-record": lambda n: call(sisakit._training, "record_checkpoint", n, "before"),
    "after-record": lambda n: call(sisakit._training, "record_checkpoint", n, "after"),
    "after-checkpoint": lambda n: call(RunStore, "save_tensors", n, "after", CKPT),
    "mid-aggregator": lambda n: call(FoldInAggregator, "fit", n, "before"),
    "before-swap": lambda n: call(RunStore, "write_manifest", n, "before"),
    "after-swap": lambda n: call(RunStore, "remove_unlisted", n, "before"),
    "after-ledger-append": lambda n: call(SISA, "_forget_request", n, "before"),
    "before-applied-line": lambda n: call(DeletionLedger, "mark_applied", n, "before"),
}

def say(out, text):
    out.write(text + "\n")
    out.flush()
    os.fsync(out.fileno())

def workload(op, run, out):
    if op == "fit":
        SISA(workdir=run, **CFG).fit(data)
    elif op == "refit":
        SISA(workdir=run, overwrite=True, **CFG).fit(data)
    elif op == "forget":
        SISA.load(run).forget(users=[U1], request_id="r1")
        say(out, "acknowledged r1")
    elif op == "repartition":
        SISA.load(run).repartition(seed=5)
    elif op == "all":  # the slow variant: fit, then two forgets
        SISA(workdir=run, **CFG).fit(data)
        model = SISA.load(run)
        model.forget(users=[U1], request_id="r1")
        say(out, "acknowledged r1")
        model.forget(users=[U2], request_id="r2")
        say(out, "acknowledged r2")
    say(out, "done")

results = {}
for case in cases:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with open(case["run"] + ".out", "w") as out:
                if case.get("point"):
                    POINTS[case["point"]](case.get("n", 1))
                if case.get("delay") is not None:
                    threading.Timer(case["delay"], die).start()
                t0 = time.perf_counter()
                workload(case["op"], case["run"], out)
                say(out, f"seconds {time.perf_counter() - t0}")
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    results[case["id"]] = {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                           "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
print(json.dumps(results))
"""


def run_zygote(cases: list[dict]) -> dict[str, dict]:
    args = [sys.executable, "-c", ZYGOTE, *(json.dumps(x) for x in (CFG, DATA, U1, U2))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(args, input=json.dumps(cases), capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for case in cases:
        out = Path(case["run"] + ".out")
        results[case["id"]]["out"] = out.read_text() if out.exists() else ""
    return results


# (id, workload, fault point, its n-th occurrence, resumed by, expected result, slice
# checkpoints a resumed fit reuses). A fit records 6 checkpoints (2 shards x 3 slices).
CASES = [
    ("fit-torn-checkpoint-write", "fit", "torn-checkpoint", 3, "load", "fit", 2),
    ("fit-checkpoint-written-not-recorded", "fit", "before-record", 2, "load", "fit", 1),
    ("fit-after-4th-slice-checkpoint", "fit", "after-record", 4, "cli", "fit", 4),
    ("fit-recorded-checkpoint-corrupted", "fit", "after-record", 4, "load", "fit", 1),
    ("fit-after-last-slice-checkpoint", "fit", "after-record", 6, "load", "fit", 6),
    ("fit-mid-aggregator-fit", "fit", "mid-aggregator", 1, "load", "fit", 6),
    ("fit-torn-manifest-write", "fit", "torn-manifest", 1, "cli", "fit", 6),
    ("fit-before-manifest-swap", "fit", "before-swap", 1, "load", "fit", 6),
    ("fit-after-swap-before-cleanup", "fit", "after-swap", 1, "load", "fit", None),
    ("refit-overwrite-mid-training", "refit", "after-record", 3, "load", "fit", 3),
    ("refit-overwrite-after-swap", "refit", "after-swap", 1, "cli", "fit", None),
    ("forget-torn-pending-file", "forget", "torn-pending", 1, "load", "base", None),
    ("forget-after-ledger-append", "forget", "after-ledger-append", 1, "load", "one", None),
    ("forget-mid-retrain", "forget", "after-checkpoint", 1, "cli", "one", None),
    ("forget-torn-manifest-write", "forget", "torn-manifest", 1, "load", "one", None),
    ("forget-before-applied-line", "forget", "before-applied-line", 1, "load", "one", None),
    ("repartition-mid-retrain", "repartition", "after-checkpoint", 2, "load", "base", None),
]
CORRUPT = {"fit-recorded-checkpoint-corrupted"}  # its first recorded checkpoint is truncated


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(**DATA)


@pytest.fixture(scope="module")
def refs(data, tmp_path_factory) -> dict:
    """Uninterrupted reference runs, in this process."""
    root = tmp_path_factory.mktemp("refs")
    fit = SISA(workdir=root / "fit", **CFG).fit(data)
    one = SISA.load(_copy(root / "fit", root / "one"))
    one.forget(users=[U1], request_id="r1")
    both = SISA.load(_copy(root / "one", root / "both"))
    both.forget(users=[U2], request_id="r2")
    old = SISA(workdir=root / "old", **{**CFG, "seed": 1}).fit(data)  # what a refit replaces
    return {"root": root, "fit": fit, "base": fit, "one": one, "both": both, "old": old}


@pytest.fixture(scope="module")
def killed(refs, tmp_path_factory) -> dict:
    """Run every fault-point case in forked children; their run directories and reports."""
    root = tmp_path_factory.mktemp("killed")
    cases = []
    for cid, op, point, n, *_ in CASES:
        run = root / cid
        if op in ("forget", "repartition"):
            _copy(refs["root"] / "fit", run)
        elif op == "refit":
            _copy(refs["root"] / "old", run)
        cases.append({"id": cid, "run": str(run), "op": op, "point": point, "n": n})
    return {"results": run_zygote(cases), "root": root}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def check_recovered(run: Path, model: SISA, expected: SISA, acknowledged: list[str]) -> None:
    """The properties every recovery must have."""
    # No acknowledged request lost: each is applied, and nothing is left pending.
    ledger = DeletionLedger(run)
    states = ledger.states()
    assert all(states.get(r) == "applied" for r in acknowledged), states
    assert ledger.pending() == [] and not (run / "pending").exists()
    # Every file the manifest lists verifies; nothing else (staged, torn, journal) is left.
    manifest = RunStore(run).read_manifest()
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((run / name).read_bytes()).hexdigest() == digest, name
    assert all(len(c) == model.n_slices for c in manifest["checkpoints"])
    stray = [p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()
             and p.relative_to(run).as_posix() not in manifest["files"]
             and p.name not in ("manifest.json", "ledger.jsonl", "run.lock")]
    assert not stray, stray
    assert not (run / "fit").exists()
    # Bit for bit the uninterrupted run, in memory and reloaded from disk.
    for m in (model, SISA.load(run)):
        equal, n = parameters_equal(m, expected)
        assert equal and n > 0
    users = expected.user_ids[:20]
    assert np.array_equal(model.recommend(users, k=5), expected.recommend(users, k=5))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_killed_at_fault_point_resumes_exactly(case, killed, refs, capsys):
    cid, op, point, _, how, expect, reused = case
    run = killed["root"] / cid
    res = killed["results"][cid]
    assert res["signal"] == signal.SIGKILL, res  # the fault point was reached
    assert "done" not in res["out"] and "acknowledged" not in res["out"]  # killed before ack
    if op == "refit" and point != "after-swap":
        # The run that overwrite=True replaces is intact and loadable until the new one commits,
        # but it cannot be changed until the refit is finished.
        old = SISA.load(run, resume=False)
        assert parameters_equal(old, refs["old"])[0]
        with pytest.raises(sisakit.CheckpointError, match="sisakit resume"):
            old.forget(users=[U1])
    if op == "fit" and point != "after-swap":
        with pytest.raises(sisakit.CheckpointError, match="sisakit resume"):
            SISA.load(run, resume=False)  # no run was committed: it says how to finish it
    if cid in CORRUPT:  # a recorded checkpoint whose bytes changed is retrained
        first = sorted(run.glob("checkpoints/shard-0000/slice-0000.*"))[0]
        first.write_bytes(first.read_bytes()[:-7])
    fit = None
    if how == "cli":
        capsys.readouterr()
        assert main(["resume", str(run), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["pending"] == []
        fit = out["fit"]
    model = SISA.load(run)
    if how == "load":
        fit = getattr(model, "fit_resumed", None)
    if reused is None:
        assert fit is None  # nothing to train: a committed fit, or no fit at all
    else:
        assert fit["reused"] == reused and fit["reused"] + fit["trained"] == 6, fit
    must_apply = []
    if expect == "one":  # the request was received before the kill: it is finished
        must_apply = ["r1"]
        assert model.is_forgotten(U1)
        assert [h.get("request") for h in model.history] == ["r1"]  # applied exactly once
    elif op == "forget":  # killed while its raw ids were written: never received
        assert not model.is_forgotten(U1) and model.history == []
        assert DeletionLedger(run).entries() == []
    if op == "repartition":
        assert model.history == [] and model.seed == 0  # the old run, intact
    check_recovered(run, model, refs[expect], must_apply)


def test_fit_takes_the_run_lock(refs, data, tmp_path):
    run = tmp_path / "run"
    _copy(refs["root"] / "fit", run)
    with sisakit.ledger.RunLock(run, timeout=1):
        model = SISA(workdir=run, overwrite=True, **CFG)
        model.lock_timeout = 0.2
        with pytest.raises(sisakit.CheckpointError, match="locked by another process"):
            model.fit(data)
    assert parameters_equal(SISA.load(run), refs["fit"])[0]


def test_failed_refit_keeps_the_old_run(refs, data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _copy(refs["root"] / "old", run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.lock"}
    model = SISA(workdir=run, overwrite=True, **CFG)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sisakit._training, "record_checkpoint", boom)
    with pytest.raises(OSError, match="disk full"):
        model.fit(data)
    monkeypatch.undo()
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.lock"}
    assert after == before  # the old run is untouched; nothing of the failed fit is left
    assert parameters_equal(SISA.load(run), refs["old"])[0]
    assert model.fit(data) is model  # the same object can fit again
    assert parameters_equal(SISA.load(run), refs["fit"])[0]


def test_forget_cost_does_not_reread_the_ledger(refs, tmp_path, monkeypatch):
    """The ledger is parsed incrementally: a forget reads what was appended since, not the
    whole file (another process's appends are still seen)."""
    run = _copy(refs["root"] / "fit", tmp_path / "run")
    model = SISA.load(run)
    model.forget(users=[U1], request_id="a")
    ledger = model._durable.ledger
    assert ledger is model._durable.ledger and ledger.state("a") == "applied"
    assert ledger._offset == (run / "ledger.jsonl").stat().st_size
    SISA.load(run).forget(users=[U2], request_id="b")  # another writer appends
    parsed = []
    real = json.loads
    monkeypatch.setattr(sisakit.ledger.json, "loads",
                        lambda text, *a, **k: parsed.append(text) or real(text, *a, **k))
    assert ledger.state("b") == "applied" and ledger.state("a") == "applied"
    assert len(parsed) == 2  # only b's two lines
    monkeypatch.undo()
    replaced = tmp_path / "ledger.new"  # a replaced (restored) ledger is parsed again
    replaced.write_text((run / "ledger.jsonl").read_text().replace('"a"', '"x"'))
    os.replace(replaced, run / "ledger.jsonl")
    assert ledger.state("x") == "applied" and ledger.state("a") is None
    with open(run / "ledger.jsonl", "r+b") as fh:  # truncated: parsed again
        fh.truncate(10)
    assert ledger.states() == {} and ledger.pending() == []


@pytest.mark.slow
def test_killed_at_random_moments_resumes_exactly(refs, data, tmp_path):
    """Fit, then two forgets, killed at 20 seeded random moments; resume and finish the
    workload, which must then equal the uninterrupted run bit for bit."""
    clean = {"id": "clean", "run": str(tmp_path / "clean"), "op": "all"}
    (res,) = run_zygote([clean]).values()
    assert res["exit"] == 0 and "done" in res["out"], res
    total = float(res["out"].split("seconds ")[1].split()[0])
    rng = np.random.default_rng(20)
    cases = [{"id": f"kill-{k}", "run": str(tmp_path / f"kill-{k}"), "op": "all",
              "delay": float(d)} for k, d in enumerate(rng.uniform(0, 0.9 * total, 20))]
    results = run_zygote(cases)
    killed, phases = 0, set()
    for case in cases:
        run, res = Path(case["run"]), results[case["id"]]
        killed += res["signal"] == signal.SIGKILL
        acknowledged = [w.split()[1] for w in res["out"].splitlines()
                        if w.startswith("acknowledged")]
        # Resume, then finish the workload (idempotent: request ids are applied once).
        try:
            model = SISA.load(run)
        except sisakit.CheckpointError:  # killed before the fit's journal existed
            assert not (run / "manifest.json").exists()
            assert not (run / "fit" / "journal.json").exists()
            model = SISA(workdir=run, **CFG).fit(data)
        for rid in acknowledged:
            assert DeletionLedger(run).state(rid) == "applied", (case, rid)
        phases.add(len(acknowledged) if getattr(model, "fit_resumed", None) is None else "fit")
        model.forget(users=[U1], request_id="r1")
        model.forget(users=[U2], request_id="r2")
        assert [h.get("request") for h in model.history] == ["r1", "r2"]
        check_recovered(run, model, refs["both"], ["r1", "r2"])
    assert killed >= 10 and len(phases) >= 2, phases  # the moments fall inside the workload


def test_checkpoints_trained_in_worker_processes_are_recorded(refs, data, tmp_path, monkeypatch):
    """Out-of-process executors record progress too: a fit through joblib that dies before its
    manifest swap resumes (here on the serial executor) without retraining anything."""
    run = tmp_path / "run"

    def crash(self, manifest):
        raise KeyboardInterrupt  # the in-process stand-in for a kill: nothing is cleaned up

    monkeypatch.setattr(RunStore, "write_manifest", crash)
    monkeypatch.setattr(RunStore, "remove_files", lambda self, names: None)
    monkeypatch.setattr(sisakit._fitjournal.FitJournal, "remove", lambda self: None)
    with pytest.raises(KeyboardInterrupt):
        SISA(workdir=run, executor=JoblibExecutor(n_jobs=2), **CFG).fit(data)
    monkeypatch.undo()
    progress = (run / "fit" / "progress.jsonl").read_text().split("\n")
    progress = [json.loads(x)["name"] for x in progress if x]
    assert len(set(progress)) == len(progress) == CFG["n_shards"] * CFG["n_slices"]
    model = SISA.load(run)
    assert model.fit_resumed["reused"] == 6 and model.fit_resumed["trained"] == 0
    check_recovered(run, model, refs["fit"], [])


def test_interrupted_fit_is_refused_as_a_workdir_until_resumed_or_overwritten(refs, data, tmp_path,
                                                                             monkeypatch):
    run = tmp_path / "run"

    def crash(self, manifest):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "write_manifest", crash)
    monkeypatch.setattr(RunStore, "remove_files", lambda self, names: None)
    monkeypatch.setattr(sisakit._fitjournal.FitJournal, "remove", lambda self: None)
    with pytest.raises(KeyboardInterrupt):
        SISA(workdir=run, **CFG).fit(data)
    monkeypatch.undo()
    with pytest.raises(sisakit.CheckpointError, match=r"interrupted fit.*overwrite=True"):
        SISA(workdir=run, **CFG).fit(data)
    with pytest.raises(sisakit.CheckpointError, match="sisakit resume"):
        SISA.load(run, resume=False)
    model = SISA(workdir=run, overwrite=True, **CFG).fit(data)  # starts over
    assert model.fit_resumed == {"generation": 1, "reused": 0, "trained": 6}
    check_recovered(run, model, refs["fit"], [])
