"""The forget-request coordinator: policies, durability, exactness, the decision log."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sisakit
from sisakit.coordinator import Coordinator, shard_agents
from sisakit.testing import assert_exact, make_interactions

N_REQ = 12


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return make_interactions(n_users=40, n_items=30, n=500, seed=3)


def _fit(data, path) -> sisakit.SISA:
    return sisakit.SISA(n_shards=3, n_slices=3, epochs=3, seed=1, workdir=path,
                        model_params={"factors": 4}, progress=False, device="cpu").fit(data)


def _stream(data, n=N_REQ, seed=0) -> list[tuple[float, list]]:
    rng = np.random.default_rng(seed)
    users = rng.choice(np.unique(data.user_ids), size=n, replace=False)
    times = np.cumsum(rng.exponential(1.0, size=n))
    return [(float(t), [u.item()]) for t, u in zip(times, users, strict=True)]


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    out = {}
    for policy in ("immediate", "batch", "deadline"):
        root = tmp_path_factory.mktemp(policy)
        sisa = _fit(data, root / "run")
        coord = Coordinator(sisa, policy, max_delay=30.0, batch_size=3,
                            budget_seconds=0.05 if policy == "deadline" else None,
                            log=root / "decisions.jsonl")
        result = coord.simulate(_stream(data))
        out[policy] = (sisa, coord, result, root)
    return out


@pytest.mark.parametrize("policy", ["immediate", "batch", "deadline"])
def test_policy_applies_every_acknowledged_request_exactly(policy, runs, data):
    sisa, coord, result, root = runs[policy]
    assert result["n_acknowledged"] == result["n_applied"] == N_REQ
    assert sorted(coord.applied) == sorted(coord.acknowledged) and not coord.pending
    states = sisakit.ledger.DeletionLedger(sisa.workdir).states()
    assert sorted(r for r, s in states.items() if s == "applied") == sorted(coord.acknowledged)
    users = [u for _, us in _stream(data) for u in us]
    assert all(sisa.is_forgotten(u) for u in users)
    # Whatever the order and grouping of forgets, the run equals a scratch fit of what is left.
    assert_exact(sisa, data.without(users=users))
    lines = [json.loads(x) for x in (root / "decisions.jsonl").read_text().splitlines()]
    assert sum(d["action"] == "submit" for d in lines) == N_REQ
    assert sum(len(d["requests"]) for d in lines if d["action"] == "apply") == N_REQ


def test_deadline_never_late_and_batch_cheaper(runs):
    assert runs["deadline"][2]["max_latency"] <= 30.0
    assert runs["batch"][2]["max_latency"] <= 30.0
    assert runs["batch"][2]["n_forgets"] < runs["immediate"][2]["n_forgets"] == N_REQ


def test_timeline_plot(runs, tmp_path):
    pytest.importorskip("matplotlib")
    paths = sisakit.plots.coordinator_timeline(runs["batch"][3] / "decisions.jsonl", tmp_path)
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size for p in paths)


def test_crash_loses_no_acknowledged_request(data, tmp_path):
    sisa = _fit(data, tmp_path / "run")
    users = [u for _, us in _stream(data, n=4, seed=5) for u in us]
    coord = Coordinator(sisa, "batch", max_delay=100.0, batch_size=10)
    rids = [coord.submit([u], at=float(i)) for i, u in enumerate(users[:2])]
    assert coord.tick(1.0) == [] and coord.pending == rids
    del coord  # crash: never flushed
    # A new coordinator on the same (reloaded, not resumed) run adopts and applies them.
    again = sisakit.SISA.load(tmp_path / "run", resume=False, progress=False, device="cpu")
    coord = Coordinator(again, "batch", max_delay=100.0)
    assert coord.pending == rids
    coord.tick(0.0)
    assert not coord.pending and all(again.is_forgotten(u) for u in users[:2])
    # ... and SISA.load alone applies what a crashed coordinator acknowledged.
    coord.submit([users[2]], at=0.0)
    del coord
    loaded = sisakit.SISA.load(tmp_path / "run", progress=False, device="cpu")
    assert loaded.is_forgotten(users[2]) and not loaded.pending_requests()
    assert_exact(loaded, data.without(users=users[:3]))


def test_agents(data, tmp_path):
    sisa = _fit(data, tmp_path / "run")
    agents = shard_agents(sisa)
    assert sum(a.size for a in agents) == len(data)
    assert all(a.val_loss is None and a.retrain_seconds(0) >= a.retrain_seconds(2) > 0
               for a in agents)


def test_bad_input(data, tmp_path):
    sisa = _fit(data, tmp_path / "run")
    with pytest.raises(sisakit.ValidationError, match="choose one of"):
        Coordinator(sisa, "fifo")
    with pytest.raises(sisakit.ValidationError, match="max_delay"):
        Coordinator(sisa, "deadline", max_delay=0)
    coord = Coordinator(sisa, "batch")
    with pytest.raises(sisakit.UnknownIdError, match="check the user ids"):
        coord.submit(["nobody"], at=0.0)
    with pytest.raises(sisakit.ValidationError, match="list of raw ids"):
        coord.submit(1000, at=0.0)
    assert coord.pending == [] and not sisa.pending_requests()


@pytest.fixture(scope="module")
def clock_runs(data, tmp_path_factory):
    """batch and deadline without an early-retrain budget: every start is clock-driven."""
    out = {}
    for policy in ("batch", "deadline"):
        sisa = _fit(data, tmp_path_factory.mktemp(f"clock-{policy}") / "run")
        coord = Coordinator(sisa, policy, max_delay=30.0, batch_size=3)
        coord.simulate(_stream(data))
        out[policy] = coord
    return out


@pytest.mark.parametrize("policy", ["batch", "deadline"])
def test_slack_reserve_bounds_every_start(policy, clock_runs):
    # every forget started by the clock starts within (1 - slack) of max_delay of its oldest
    # request, whatever the estimate: the reserve absorbs retrains slower than estimated
    coord = clock_runs[policy]
    timed = [d for d in coord.decisions
             if d["action"] == "apply" and d["reason"] in ("max_delay", "deadline")]
    assert timed
    for d in timed:
        assert d["time"] - min(d["arrivals"]) <= (1 - coord.slack) * coord.max_delay + 1e-9


@pytest.mark.parametrize("slack", [1.0, -0.1, "0.1", True])
def test_bad_slack_is_refused(slack, data, tmp_path):
    sisa = _fit(data, tmp_path / "run")
    with pytest.raises(sisakit.errors.ValidationError, match="slack"):
        Coordinator(sisa, "deadline", slack=slack)


def test_deadline_plans_merged_forgets_to_end_in_time(data, tmp_path):
    # A merged forget is planned, by its own padded estimate, to end before the deadline of the
    # oldest request it carries, not only the deadline of the request that fell due first. A
    # fixed estimate of 1 s + 0.5 s per request makes merges long enough to tell.
    sisa = _fit(data, tmp_path / "run")
    coord = Coordinator(sisa, "deadline", max_delay=30.0)
    coord.estimate_seconds = lambda rids: 1.0 + 0.5 * len(list(rids))
    coord.simulate(_stream(data))
    planned = [d for d in coord.decisions if d["action"] == "apply" and d["reason"] == "deadline"]
    assert any(len(d["requests"]) > 1 for d in planned)
    for d in planned:
        assert d["time"] + d["estimated_seconds"] <= min(d["arrivals"]) + coord.max_delay + 1e-9
