"""Regression tests for engine guarantees: privacy on disk, id canonicalisation, durability."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sisakit
from sisakit.aggregators.base import Aggregator
from sisakit.engine import parameters_equal

SMALL = dict(model_params=dict(factors=8, batch_size=64), epochs=4, progress=False, device="cpu")


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(n_users=120, n_items=50, mean_interactions=12, seed=3)


def make(n_shards=3, n_slices=3, **kw):
    return sisakit.SISA(n_shards=n_shards, n_slices=n_slices, **{**SMALL, **kw})


def _all_bytes(run) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file())


def test_forgotten_user_leaves_no_raw_id_or_attribute_on_disk(tmp_path):
    rng = np.random.default_rng(0)
    users = np.array([f"person-{k:03d}" for k in rng.integers(0, 40, 600)])
    items = rng.integers(0, 25, 600)
    d = sisakit.Interactions.from_arrays(users, items)
    ids = d.user_ids
    d = d.with_user_attributes(ids, city=np.array([f"city-of-{u}" for u in ids]))
    run = tmp_path / "run"
    model = make(2, 2, workdir=run).fit(d)
    secret = "person-007"
    blob = _all_bytes(run)
    assert secret.encode("utf-32-le") in blob  # the raw id is stored while the user is active
    model.forget(users=[secret])
    blob = _all_bytes(run)
    for text in (secret, f"city-of-{secret}"):
        assert text.encode("utf-8") not in blob
        assert text.encode("utf-32-le") not in blob
    assert model.is_forgotten(secret)
    # A forgotten user can still be served (popularity) and forgetting again is a no-op.
    assert model.recommend([secret], k=3).shape == (1, 3)
    assert model.forget(users=[secret]).already_forgotten == {"users": 1}
    reloaded = sisakit.SISA.load(run)
    assert reloaded.is_forgotten(secret)
    assert np.array_equal(reloaded.recommend([secret], k=3), model.recommend([secret], k=3))
    assert "person-008" in reloaded.data.user_ids


def test_forgotten_int_user_is_tombstoned_and_served_like_the_reference(data):
    model = make().fit(data)
    user = int(data.user_ids[4])
    model.forget(users=[user])
    assert user not in model.data.user_ids.tolist()
    ref = make().fit(data.without(users=[user]))
    assert parameters_equal(model, ref)[0]
    assert np.array_equal(model.recommend(data.user_ids, k=5), ref.recommend(data.user_ids, k=5))


def test_ids_are_canonical_whatever_their_container(data):
    model = make().fit(data)
    u = data.user_ids[3]
    model.forget(users=np.array([u]))
    assert model.is_forgotten(int(u)) and model.is_forgotten(np.int64(u))
    r = int(np.flatnonzero(data.user_idx == 9)[0])
    pair = (data.user_ids[data.user_idx[r]], data.item_ids[data.item_idx[r]])
    model.forget(interactions=[np.array(pair)])
    again = model.forget(interactions=[(int(pair[0]), int(pair[1]))])
    assert again.already_forgotten == {"interactions": 1}
    with pytest.raises(sisakit.ValidationError, match="single id"):
        model.forget(users=np.int64(5))
    with pytest.raises(sisakit.ValidationError, match="list of raw ids"):
        model.recommend(5)
    with pytest.raises(sisakit.UnknownIdError) as err:
        model.recommend([int(data.user_ids[0]), "x"], k=2)
    assert err.value.ids == ["x"]


def test_recommend_fills_with_seen_items_and_never_forgotten_ones():
    users = [1] * 9 + [2]
    items = [*range(10, 19), 19]
    d = sisakit.Interactions.from_arrays(users, items)
    model = sisakit.SISA(n_shards=1, n_slices=1, **SMALL).fit(d)
    model.forget(items=[19])
    recs = model.recommend([1], k=3)[0]
    assert 19 not in recs  # forgotten
    full = model.recommend([1], k=9)[0]
    assert sorted(full.tolist()) == list(range(10, 19))
    seen_free = model.recommend([2], k=3)[0]
    assert 19 not in seen_free


def test_cleanup_failure_after_commit_keeps_the_forget(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    model = make(workdir=run).fit(data)
    user = data.user_ids[5]

    def broken(self, names):
        raise OSError("busy")

    monkeypatch.setattr(sisakit.store.RunStore, "remove_files", broken)
    report = model.forget(users=[user])
    monkeypatch.undo()
    assert report.records_removed > 0 and model.is_forgotten(user)
    reloaded = sisakit.SISA.load(run)
    assert reloaded.is_forgotten(user) and parameters_equal(model, reloaded)[0]
    model.forget(users=[data.user_ids[6]])  # the next commit sweeps the leftovers
    manifest = json.loads((run / "manifest.json").read_text())
    on_disk = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert on_disk == set(manifest["files"]) | {"manifest.json", "ledger.jsonl", "run.lock"}


class FittedMean(Aggregator):
    """A test aggregator with fitted state (the number of records it was fitted on)."""

    requires_fit = True

    def __init__(self) -> None:
        self.n = torch.zeros(())

    def fit(self, ensemble, data):
        self.n = torch.tensor(float(len(data)))
        return self

    def weights(self, counts):
        return (counts > 0).float()

    def state_dict(self):
        return {"n": self.n.clone()}

    def load_state_dict(self, state):
        self.n = state["n"].clone()


def test_fitted_aggregator_is_refitted_and_rolled_back(data, tmp_path, monkeypatch):
    model = make(aggregator=FittedMean(), workdir=tmp_path / "run").fit(data)
    assert float(model.aggregator.n) == len(data)

    def boom(self, manifest):
        raise OSError("disk full")

    monkeypatch.setattr(sisakit.store.RunStore, "write_manifest", boom)
    with pytest.raises(OSError):
        model.forget(users=[data.user_ids[0]])
    monkeypatch.undo()
    assert float(model.aggregator.n) == len(data)
    report = model.forget(users=[data.user_ids[0]])
    assert float(model.aggregator.n) == len(data) - report.records_removed
    # Unregistered components work in-process but a run using them cannot be reopened.
    with pytest.raises(sisakit.CheckpointError, match="unregistered aggregator"):
        sisakit.SISA.load(tmp_path / "run")


def test_failed_overwrite_keeps_the_old_run(data, tmp_path):
    run = tmp_path / "run"
    make(workdir=run).fit(data)
    with pytest.raises(sisakit.ValidationError):
        make(n_shards=100_000, workdir=run, overwrite=True).fit(data)
    assert sisakit.SISA.load(run).n_shards == 3


def test_load_uses_the_callers_device(data, tmp_path):
    run = tmp_path / "run"
    make(workdir=run).fit(data)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["model"]["params"]["device"] = "cuda"  # as if fitted on a GPU
    sisakit.store.RunStore(run).write_manifest(manifest)
    loaded = sisakit.SISA.load(run, device="cpu")
    assert loaded.model.device == "cpu"
    assert loaded.recommend(data.user_ids[:2], k=3).shape == (2, 3)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(st.integers(0, 49), min_size=1, max_size=3, unique=True),
    sharder=st.sampled_from(["random-user", "random-interaction"]),
    aggregator=st.sampled_from(["mean", "weighted"]),
)
def test_forget_items_property(data, items, sharder, aggregator):
    raw = data.item_ids[items].tolist()
    model = make(2, 2, sharder=sharder, aggregator=aggregator).fit(data)
    model.forget(items=raw)
    ref = make(2, 2, sharder=sharder, aggregator=aggregator).fit(data.without(items=raw))
    assert parameters_equal(model, ref)[0]
    users = data.user_ids
    recs = model.recommend(users, k=5)
    assert np.array_equal(recs, ref.recommend(users, k=5))
    assert not np.isin(recs, raw).any()


class StackedMax(Aggregator):
    """Overrides ``aggregate`` (the engine's stacked path): max over the scoring shards."""

    def __init__(self) -> None:
        pass

    def weights(self, counts):
        return (counts > 0).float()

    def aggregate(self, scores, mask, counts):
        masked = torch.where(mask, scores, torch.full_like(scores, -torch.inf))
        return masked.max(0).values, mask.any(0)


def test_custom_aggregate_path_is_exact(data):
    model = make(3, 2, sharder="random-interaction", aggregator=StackedMax()).fit(data)
    user = data.user_ids[8]
    model.forget(users=[user])
    ref = make(3, 2, sharder="random-interaction", aggregator=StackedMax()).fit(
        data.without(users=[user]))
    assert parameters_equal(model, ref)[0]
    assert np.array_equal(model.recommend(data.user_ids, k=4), ref.recommend(data.user_ids, k=4))


@pytest.mark.parametrize("target", [0, 1, 2])
def test_record_level_slices_restart_where_the_record_was(data, target):
    model = make(2, 3, sharder="random-interaction").fit(data)
    r = int(np.flatnonzero(model.assignment[1] == target)[0])
    pair = (data.user_ids[data.user_idx[r]], data.item_ids[data.item_idx[r]])
    same = np.flatnonzero((data.user_idx == data.user_idx[r]) & (data.item_idx == data.item_idx[r]))
    expected: dict[int, int] = {}
    for k in same:  # every record of the pair (duplicates included)
        s = int(model.assignment[0][k])
        expected[s] = min(expected.get(s, 3), int(model.assignment[1][k]))
    shard_of_r = int(model.assignment[0][r])
    report = model.forget(interactions=[pair])
    assert report.earliest_slice == expected
    assert expected[shard_of_r] <= target
    ref = make(2, 3, sharder="random-interaction").fit(data.without(interactions=[pair]))
    assert parameters_equal(model, ref)[0]
    assert report.records_removed == len(same)


def test_refit_of_a_private_run_is_allowed(data):
    model = make().fit(data)
    model.fit(data.without(users=[data.user_ids[0]]))
    assert len(model.data) < len(data)
    assert parameters_equal(model, make().fit(data.without(users=[data.user_ids[0]])))[0]


# ------------------------------------------------------- the commit point (review of #18)
def test_numpy_integer_counts_are_accepted(data):
    run = make(n_shards=np.int64(2), n_slices=np.int32(2), seed=np.int64(1)).fit(data)
    assert type(run.n_shards) is int and run.config["n_slices"] == 2 and run.seed == 1


def _interrupt_after_the_swap(monkeypatch):
    from sisakit.store import RunStore

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "remove_files", interrupt)
    monkeypatch.setattr(RunStore, "remove_unlisted", interrupt)


def test_an_interrupt_after_the_manifest_swap_keeps_the_committed_forget(data, tmp_path,
                                                                        monkeypatch):
    run = make(workdir=tmp_path / "run").fit(data)
    user = data.user_ids[5]
    _interrupt_after_the_swap(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run.forget(users=[user], request_id="r-1")
    monkeypatch.undo()
    assert run.is_forgotten(user), "the object must hold the state the manifest committed"
    reopened = sisakit.SISA.load(tmp_path / "run", device="cpu")  # no staged file was removed
    assert reopened.is_forgotten(user) and parameters_equal(reopened, run)[0]
    assert sisakit.ledger.DeletionLedger(tmp_path / "run").state("r-1") == "applied"


def test_an_interrupted_batch_is_marked_applied_with_the_committed_generation(
        data, tmp_path, monkeypatch):
    run = make(workdir=tmp_path / "run").fit(data)
    rids = [run.receive(users=[u]) for u in data.user_ids[:2]]
    _interrupt_after_the_swap(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run.apply_received(rids)
    monkeypatch.undo()
    ledger = sisakit.ledger.DeletionLedger(tmp_path / "run")
    applied = [e for e in ledger.entries() if e["state"] == "applied"]
    on_disk = sisakit.store.RunStore(tmp_path / "run").read_manifest()["generation"]
    assert {e["request"] for e in applied} == set(rids)
    assert {e["generation"] for e in applied} == {on_disk} == {run.generation}
