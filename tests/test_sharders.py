"""Data-aware sharders: stratification and balance properties, exact unlearning with a stored
data-dependent assignment, and ``SISA.repartition``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sisakit
from sisakit import plugins
from sisakit.engine import parameters_equal
from sisakit.sharders.receraser import balanced_assign
from sisakit.sharders.stratified import deal_strata
from sisakit.testing import assert_exact, make_interactions, scratch_fit

FAST = {"model_params": {"factors": 8, "batch_size": 256, "device": "cpu"}, "epochs": 3,
        "max_iter": 10}
NEW = ["activity-stratified", "attribute-stratified", "receraser-user", "receraser-item",
       "receraser-interaction"]
PARAMS = {"activity-stratified": {"n_bins": 4}, "attribute-stratified": {"attribute": "age_group"},
          "receraser-user": FAST, "receraser-item": FAST, "receraser-interaction": FAST}
SMALL = dict(model_params=dict(factors=8, batch_size=64, device="cpu"), epochs=2, progress=False,
             device="cpu")


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(n_users=90, n_items=40, mean_interactions=10, seed=5)


@pytest.fixture(scope="module")
def big() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(n_users=400, n_items=120, mean_interactions=15, seed=2)


def sharder(name: str) -> sisakit.Sharder:
    return plugins.build("sharder", name, **PARAMS[name])


def per_user_shard(d: sisakit.Interactions, shard: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    users = np.flatnonzero(d.user_counts())
    per_user = np.full(d.n_users, -1)
    per_user[d.user_idx] = shard
    return users, per_user[users]


def assert_strata_balanced(stratum: np.ndarray, shard: np.ndarray, n_shards: int) -> None:
    """Every stratum (and the whole) is spread over the shards within +-1."""
    table = np.zeros((stratum.max() + 1, n_shards), dtype=np.int64)
    np.add.at(table, (stratum, shard), 1)
    spread = table.max(1) - table.min(1)
    assert (spread <= 1).all(), f"stratum counts per shard:\n{table}"
    totals = table.sum(0)
    assert totals.max() - totals.min() <= 1, f"users per shard {totals}"


# ------------------------------------------------------------------------- stratification
@pytest.mark.parametrize("n_shards", [2, 3, 7])
def test_activity_stratified_spreads_every_bin_evenly(big, n_shards):
    sh = plugins.build("sharder", "activity-stratified", n_bins=5)
    shard = sh.assign(big, n_shards, seed=4)
    users, ushard = per_user_shard(big, shard)
    users_b, bins = sh.strata(big)
    assert np.array_equal(users, users_b)
    assert len(np.unique(bins)) == 5
    assert_strata_balanced(bins, ushard, n_shards)
    # Bins are activity quantiles: ordered and never overlapping.
    act = big.user_counts()[users]
    for b in range(4):
        assert act[bins == b].max() <= act[bins == b + 1].min()
    sizes = np.bincount(bins)
    assert sizes.min() >= len(users) / 5 * 0.5, f"bins far from quantiles: {sizes}"


def test_activity_stratified_beats_random_on_activity_balance(big):
    """Mean activity per shard is far more even than under the random user sharder."""
    def spread(name, **kw):
        out = []
        for seed in range(5):
            shard = plugins.build("sharder", name, **kw).assign(big, 8, seed=seed)
            recs = np.bincount(shard, minlength=8)
            out.append(recs.max() - recs.min())
        return float(np.mean(out))

    assert spread("activity-stratified", n_bins=5) < 0.6 * spread("random-user")


def test_attribute_stratified_balances_values_and_missing(big):
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array(["a", "b", "c", ""], dtype=object), big.n_users,
                        p=[0.5, 0.3, 0.1, 0.1])
    labels[rng.choice(big.n_users, 10, replace=False)] = None
    d = big.with_user_attributes(big.user_ids, city=labels)
    sh = plugins.build("sharder", "attribute-stratified", attribute="city")
    users, stratum = sh.strata(d)
    assert len(np.unique(stratum)) == 4  # a, b, c and one stratum for every missing label
    missing = np.isin(labels[users].astype(str), ["", "None"])
    assert len(np.unique(stratum[missing])) == 1 and stratum[missing][0] == 3
    for n_shards in (2, 5):
        _, ushard = per_user_shard(d, sh.assign(d, n_shards, seed=1))
        assert_strata_balanced(stratum, ushard, n_shards)


def test_attribute_stratified_missing_column_names_the_available_ones(data):
    sh = plugins.build("sharder", "attribute-stratified", attribute="income")
    with pytest.raises(sisakit.ValidationError, match=r"'income'.*\['age_group', 'gender'\]"):
        sh.assign(data, 3, seed=0)
    with pytest.raises(sisakit.ValidationError, match="no user attribute"):
        sisakit.SISA(sharder="attribute-stratified", n_shards=2, **SMALL).fit(
            make_interactions())


@given(strata=st.lists(st.integers(0, 4), min_size=1, max_size=60), n_shards=st.integers(1, 9),
       seed=st.integers(0, 3))
@settings(max_examples=40, deadline=None)
def test_deal_strata_is_balanced_within_one(strata, n_shards, seed):
    strata = np.asarray(strata)
    shard = deal_strata(strata, np.arange(100, 100 + len(strata)), n_shards, seed, "t")
    assert shard.min() >= 0 and shard.max() < n_shards
    table = np.zeros((5, n_shards), dtype=np.int64)
    np.add.at(table, (strata, shard), 1)
    assert ((table.max(1) - table.min(1)) <= 1).all()
    totals = table.sum(0)
    assert totals.max() - totals.min() <= 1


# ------------------------------------------------------------------------- balanced k-means
def greedy_reference(dist: np.ndarray) -> np.ndarray:
    """The sequential definition: walk (unit, anchor) pairs by increasing distance."""
    n, k = dist.shape
    q, r = divmod(n, k)
    labels = np.full(n, -1)
    count = np.zeros(k, dtype=int)
    big_used = 0
    for p in np.argsort(dist.ravel(), kind="stable"):
        u, a = divmod(int(p), k)
        room = q + 1 if big_used < r else q
        if labels[u] >= 0 or count[a] >= room:
            continue
        labels[u] = a
        count[a] += 1
        big_used += count[a] == q + 1
    return labels


@given(n=st.integers(1, 40), k=st.integers(1, 8), ties=st.booleans(), seed=st.integers(0, 99))
@settings(max_examples=80, deadline=None)
def test_balanced_assign_equals_the_sequential_greedy_walk(n, k, ties, seed):
    k = min(k, n)
    rng = np.random.default_rng(seed)
    dist = rng.integers(0, 4, (n, k)).astype(float) if ties else rng.random((n, k))
    labels = balanced_assign(dist)
    assert np.array_equal(labels, greedy_reference(dist))
    sizes = np.bincount(labels, minlength=k)
    assert sizes.min() >= 1 and sizes.max() <= math.ceil(n / k)


@pytest.mark.parametrize("name", ["receraser-user", "receraser-item", "receraser-interaction"])
@pytest.mark.parametrize("n_shards", [3, 7])
def test_receraser_shards_are_balanced(big, name, n_shards):
    sh = sharder(name)
    shard = sh.assign(big, n_shards, seed=0)
    _, first, inverse = np.unique(sh.unit_keys(big), return_index=True, return_inverse=True)
    # One shard per unit, and every shard holds floor or ceil of n_units / n_shards units.
    assert np.array_equal(shard, shard[first][inverse.reshape(-1)])
    sizes = np.bincount(shard[first], minlength=n_shards)
    n_units = sh.n_units(big)
    assert sizes.sum() == n_units
    assert sizes.min() >= 1 and sizes.max() <= math.ceil(n_units / n_shards), sizes


def _within_shard_spread(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean squared distance of each unit to its shard's mean (the k-means objective)."""
    means = np.stack([x[labels == s].mean(0) for s in range(k)])
    return float(((x - means[labels]) ** 2).sum(1).mean())


@pytest.mark.parametrize("name", ["receraser-user", "receraser-item", "receraser-interaction"])
def test_receraser_groups_similar_units_better_than_random(big, name):
    sh, k, seed = sharder(name), 6, 3
    users, items = sh.embeddings(big, seed=seed)
    shard = sh.assign(big, k, seed=seed)
    if name == "receraser-user":
        units = np.flatnonzero(big.user_counts())
        x, labels = users[units], per_user_shard(big, shard)[1]
    elif name == "receraser-item":
        units = np.flatnonzero(big.item_counts())
        x = items[units]
        per_item = np.zeros(big.n_items, dtype=np.int64)
        per_item[big.item_idx] = shard
        labels = per_item[units]
    else:
        x, labels = np.hstack([users[big.user_idx], items[big.item_idx]]), shard
    ours = _within_shard_spread(x, labels, k)
    rng = np.random.default_rng(0)
    rand = [_within_shard_spread(x, rng.permutation(np.arange(len(x)) % k), k) for _ in range(5)]
    assert ours < 0.9 * min(rand), (ours, rand)


def test_receraser_keeps_no_embeddings_and_is_seeded(data):
    sh = sharder("receraser-user")
    a = sh.assign(data, 4, seed=1)
    assert set(vars(sh)) == set(sh.get_params()), "the sharder kept state from assign()"
    assert np.array_equal(a, sharder("receraser-user").assign(data, 4, seed=1))
    assert not np.array_equal(a, sh.assign(data, 4, seed=2))


@pytest.mark.parametrize(("params", "match"), [
    ({"epochs": 0}, "epochs"), ({"max_iter": 0}, "max_iter"),
    ({"model": "popularity", "model_params": None}, "no user/item embeddings"),
    ({"model": "no-such-model"}, "no model named"),
])
def test_receraser_rejects_bad_parameters(data, params, match):
    with pytest.raises(sisakit.SisakitError, match=match):  # at construction or at assign
        plugins.build("sharder", "receraser-user", **{**FAST, **params}).assign(data, 3, seed=0)


@pytest.mark.parametrize("name", NEW)
def test_more_shards_than_units_is_rejected(name):
    d = make_interactions(n_users=4, n_items=3, n=6)
    d = d.with_user_attributes(d.user_ids, age_group=np.zeros(4, dtype=int))
    sh = sharder(name)
    with pytest.raises(sisakit.ValidationError, match="use at most"):
        sh.assign(d, sh.n_units(d) + 1, seed=0)
    shard = sh.assign(d, sh.n_units(d), seed=0)  # one unit per shard: no shard is empty
    assert (np.bincount(shard, minlength=sh.n_units(d)) > 0).all()


def test_activity_stratified_rejects_bad_bins(data):
    with pytest.raises(sisakit.ValidationError, match="n_bins"):
        plugins.build("sharder", "activity-stratified", n_bins=0).assign(data, 2, seed=0)


# ------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", NEW)
def test_forget_equals_scratch_fit_with_the_stored_assignment(data, name):
    model = sisakit.SISA(sharder=name, sharder_params=PARAMS[name], n_shards=3, n_slices=2,
                         **SMALL).fit(data)
    user = data.user_ids[7]
    r = int(np.flatnonzero(data.user_idx != 7)[11])
    pair = (data.user_ids[data.user_idx[r]], data.item_ids[data.item_idx[r]])
    stored_shards = np.unique(model.assignment[0][data.user_idx == 7])
    report = model.forget(users=[user], interactions=[pair])
    assert report.records_removed == int((data.user_idx == 7).sum()) + 1
    # Every shard that held a record of the user was retrained.
    assert set(stored_shards.tolist()) <= set(report.shards_retrained)
    assert_exact(model, data.without(users=[user], interactions=[pair]))
    assert model.is_forgotten(user)


# ------------------------------------------------------------------------- repartition
def test_repartition_equals_a_fresh_fit_and_keeps_the_forget_ledger(data, tmp_path):
    run = tmp_path / "run"
    model = sisakit.SISA(sharder="receraser-user", sharder_params=FAST, n_shards=3, n_slices=2,
                         workdir=run, **SMALL).fit(data)
    gone = data.user_ids[[2, 30]].tolist()
    model.forget(users=gone)
    before = model.assignment[0].copy()
    assert model.repartition() is model
    remaining = data.without(users=gone)
    # A fresh fit of the remaining data draws its own partition: the same as repartition's.
    assert_exact(model, remaining, use_stored_assignment=False)
    assert not np.array_equal(before, model.assignment[0]), "the partition was not recomputed"
    assert all(model.is_forgotten(u) for u in gone)
    assert model.history[-1]["event"] == "repartition"
    assert len(model.history) == 2
    report = model.forget(users=gone)  # still remembered: a reported no-op
    assert report.records_removed == 0 and report.already_forgotten == {"users": 2}
    # The saved run is the repartitioned one, with the ledger.
    loaded = sisakit.SISA.load(run, device="cpu", progress=False)
    assert parameters_equal(model, loaded)[0]
    assert all(loaded.is_forgotten(u) for u in gone)
    assert sorted(p.name for p in (run / "checkpoints").rglob("*.pt")) == sorted(
        name.rsplit("/", 1)[1] for names in model.view().checkpoints for name in names)
    # Later forgets stay exact against the new stored assignment.
    more = data.user_ids[5]
    model.forget(users=[more])
    assert_exact(model, data.without(users=[*gone, more]))


def test_repartition_with_a_new_seed_equals_a_fit_with_that_seed(data):
    model = sisakit.SISA(sharder="activity-stratified", n_shards=3, n_slices=2, **SMALL).fit(data)
    model.forget(users=[data.user_ids[0]])
    model.repartition(seed=11)
    assert model.seed == 11 and model.config["seed"] == 11
    ref = scratch_fit(model, data.without(users=[data.user_ids[0]]), use_stored_assignment=False)
    assert ref.seed == 11 and parameters_equal(model, ref)[0]


def test_failed_repartition_leaves_the_run_intact(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    model = sisakit.SISA(sharder="activity-stratified", n_shards=3, n_slices=2, workdir=run,
                         **SMALL).fit(data)
    model.forget(users=[data.user_ids[1]])
    manifest = (run / "manifest.json").read_bytes()
    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    params = model.parameters()

    def boom(self, manifest):
        raise OSError("disk full")

    monkeypatch.setattr(sisakit.store.RunStore, "write_manifest", boom)
    with pytest.raises(OSError, match="disk full"):
        model.repartition(seed=5)
    monkeypatch.undo()
    assert (run / "manifest.json").read_bytes() == manifest
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == files
    assert model.seed == 0 and len(model.history) == 1
    assert all(torch.equal(a[k], b[k]) for a, b in zip(params, model.parameters(), strict=True)
               for k in a)
    assert_exact(model, data.without(users=[data.user_ids[1]]))


def test_repartition_refuses_too_few_remaining_users_and_changes_nothing():
    d = make_interactions(n_users=5, n_items=6, n=20)
    model = sisakit.SISA(sharder="activity-stratified", n_shards=4, n_slices=1, **SMALL).fit(d)
    model.forget(users=d.user_ids[:2].tolist())
    params = model.parameters()
    with pytest.raises(sisakit.ValidationError, match="use at most 3 shards"):
        model.repartition()
    assert model.history[-1].get("event") != "repartition"
    assert all(torch.equal(a[k], b[k]) for a, b in zip(params, model.parameters(), strict=True)
               for k in a)
