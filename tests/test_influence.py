"""Tests of sisakit.influence: compare(), the built-in measures, estimate() and SISA.copy()."""

from __future__ import annotations

import csv
import gc
import json

import numpy as np
import pytest

import sisakit
from sisakit import influence, plugins
from sisakit.engine import parameters_equal
from sisakit.influence.base import match_positions
from sisakit.testing import make_interactions

CONFIG = dict(n_shards=3, n_slices=3, epochs=3, seed=0, progress=False, device="cpu",
              model_params={"factors": 4, "batch_size": 64})


def random_lists(n=40, k=8, m=30, seed=0):
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((n, m)), axis=1)[:, :k]


def perturbed(before, m=30, seed=1):
    """Re-order each row and swap a random share of items for items outside the catalogue."""
    rng = np.random.default_rng(seed)
    after = np.take_along_axis(before, np.argsort(rng.random(before.shape), axis=1), axis=1)
    swap = rng.random(before.shape) < rng.random((len(before), 1))
    return np.where(swap, m + np.arange(before.shape[1])[None, :], after)


# ---------------------------------------------------------------------------------- reference
def brute(before, after):
    """Per-user Jaccard, normalised footrule and ndcg-delta, computed one user at a time."""
    k = before.shape[1]
    jac, foot, ndcg = [], [], []
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for b, a in zip(before.tolist(), after.tolist(), strict=True):
        jac.append(len(set(b) & set(a)) / len(set(b) | set(a)))
        rb = {x: i for i, x in enumerate(b)}
        ra = {x: i for i, x in enumerate(a)}
        foot.append(sum(abs(rb.get(x, k) - ra.get(x, k)) for x in set(a) | set(b)) / (k * (k + 1)))
        gain = {x: (k - i) / k for i, x in enumerate(b)}
        dcg = sum(gain.get(x, 0.0) * disc[i] for i, x in enumerate(a))
        idcg = sum((k - i) / k * disc[i] for i in range(k))
        ndcg.append(1 - dcg / idcg)
    return np.array(jac), np.array(foot), np.array(ndcg)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measures_match_per_user_reference(seed):
    before = random_lists(seed=seed)
    after = perturbed(before, seed=seed + 10)
    jac, foot, ndcg = brute(before, after)
    r = influence.compare(before, after, k=before.shape[1])
    assert np.allclose(r["jaccard"], jac) and np.allclose(r.jaccard, jac)
    assert np.allclose(r["rank-change"], foot)
    assert np.allclose(r["ndcg-delta"], ndcg, atol=1e-12)


def test_match_positions_reference():
    a = random_lists(seed=3)
    b = perturbed(a, seed=4)
    pos = match_positions(a, b)
    k = a.shape[1]
    for u in range(len(a)):
        row = b[u].tolist()
        expect = [row.index(x) if x in row else k for x in a[u].tolist()]
        assert pos[u].tolist() == expect


def test_reordering_is_seen_by_rank_measures_only():
    before = random_lists()
    after = before[:, ::-1].copy()
    r = influence.compare(before, after, k=before.shape[1])
    assert np.allclose(r.jaccard, 1.0)
    assert (r["rank-change"] > 0).all() and (r["ndcg-delta"] > 0).all()
    assert r.changed.all() and not r.dropped.any()
    # Swapping only the last two items costs less than swapping the first two.
    tail = before.copy()
    tail[:, [-2, -1]] = tail[:, [-1, -2]]
    head = before.copy()
    head[:, [0, 1]] = head[:, [1, 0]]
    assert (influence.compare(before, head, k=8)["ndcg-delta"]
            > influence.compare(before, tail, k=8)["ndcg-delta"]).all()


# ---------------------------------------------------------------------------------- compare
def test_compare_arrays_summary_is_consistent():
    before = random_lists(n=60)
    after = perturbed(before)
    after[:10] = before[:10]  # ten users keep their list
    r = influence.compare(before, after, k=8)
    s = r.summary(jaccard_threshold=0.5, bins=5)
    assert s["n_users"] == 60 and s["k"] == 8
    assert s["n_changed"] == int((before != after).any(axis=1).sum()) == int(r.changed.sum())
    assert not r.changed[:10].any()
    assert s["n_below_jaccard_threshold"] == int((r.jaccard < 0.5).sum())
    assert s["fraction_below_jaccard_threshold"] == pytest.approx(s["n_below_jaccard_threshold"] / 60)
    assert set(s["measures"]) == set(influence.DEFAULT_MEASURES)
    for name, m in s["measures"].items():
        assert sum(m["histogram"]["counts"]) == 60
        assert len(m["histogram"]["edges"]) == 6
        assert m["histogram"]["edges"][0] == 0.0 and m["histogram"]["edges"][-1] == 1.0
        qs = list(m["quantiles"].values())
        assert qs == sorted(qs) and m["min"] <= qs[0] and qs[-1] <= m["max"]
        assert m["mean"] == pytest.approx(float(r[name].mean()))
    assert np.array_equal(r.rank_change[:10], np.zeros((10, 8), dtype=np.int64))
    assert s["mean_abs_rank_change"] == pytest.approx(np.abs(r.rank_change).mean())
    json.dumps(s)  # JSON-ready


def test_compare_truncates_to_k_and_uses_string_ids():
    before = random_lists()
    after = perturbed(before)
    full = influence.compare(before, after, k=3)
    cut = influence.compare(before[:, :3], after[:, :3], k=3)
    for name in influence.DEFAULT_MEASURES:
        assert np.array_equal(full[name], cut[name])
    as_str = np.char.add("i", before.astype(str)), np.char.add("i", after.astype(str))
    named = influence.compare(*as_str, users=[f"u{i}" for i in range(len(before))], k=8)
    plain = influence.compare(before, after, k=8)
    assert np.array_equal(named["ndcg-delta"], plain["ndcg-delta"])
    assert named.users[0] == "u0" and np.array_equal(plain.users, np.arange(len(before)))


def test_compare_selected_measures_and_plugin_measure():
    before = random_lists()
    after = perturbed(before)
    only = influence.compare(before, after, k=8, measures=["jaccard"])
    assert list(only.measures) == ["jaccard"]
    with pytest.raises(sisakit.ValidationError, match="not computed"):
        only["ndcg-delta"]

    class TopItemKept(sisakit.InfluenceMeasure):
        """1 when the best item is gone from the after list."""

        def __init__(self):
            pass

        def compute(self, before_topk, after_topk, k):
            return (match_positions(before_topk[:, :1], after_topk)[:, 0] == k).astype(float)

    class Plugin:
        @sisakit.hookimpl
        def register_influence(self, register):
            register("top-item-lost", TopItemKept)

    plugins.register_plugin(Plugin(), name="test-influence-plugin")
    try:
        assert "top-item-lost" in plugins.names("influence")
        r = influence.compare(before, after, k=8, measures=["top-item-lost", "jaccard"])
        lost = np.array([b[0] not in a for b, a in zip(before.tolist(), after.tolist(), strict=True)])
        assert np.array_equal(r["top-item-lost"], lost.astype(float))
    finally:
        plugins.unregister_plugin("test-influence-plugin")
    assert "top-item-lost" not in plugins.names("influence")


def test_result_exports(tmp_path):
    before = random_lists(n=12)
    r = influence.compare(before, perturbed(before), k=8, users=[f"u{i}" for i in range(12)])
    path = r.to_csv(tmp_path / "influence.csv")
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["user", "changed", "overlap", *influence.DEFAULT_MEASURES]
    assert len(rows) == 13 and rows[1][0] == "u0"
    assert [float(row[3]) for row in rows[1:]] == pytest.approx(r["jaccard"].tolist())
    d = json.loads(json.dumps(r.as_dict()))
    assert d["users"][0] == "u0" and len(d["measures"]["rank-change"]) == 12
    assert d["summary"]["n_users"] == 12
    assert "users" not in r.as_dict(per_user=False)


@pytest.mark.parametrize(("before", "after", "kwargs", "match"), [
    (np.zeros((3, 4), int), np.zeros((4, 4), int), {"k": 4}, "same users"),
    (random_lists(n=3, k=4), random_lists(n=3, k=4), {"k": 5}, "exceeds the 4 columns"),
    (random_lists(n=3, k=4), random_lists(n=3, k=4), {"k": 4, "users": []}, "empty"),
    (random_lists(n=3, k=4), random_lists(n=3, k=4), {"k": 4, "users": [1, 2]}, "one user id"),
    (np.array([[1, 1, 2]]), np.array([[1, 2, 3]]), {"k": 3}, "repeats an item"),
    (np.array([[1, 2]]), np.array([["a", "b"]]), {"k": 2}, "same catalogue"),
    (np.array([1, 2]), np.array([1, 2]), {"k": 2}, "2-D"),
    (np.zeros((0, 3), int), np.zeros((0, 3), int), {"k": 3}, "no rows"),
    (np.array([[1.5, 2.0]]), np.array([[1.0, 2.0]]), {"k": 2}, "dtype"),
    (random_lists(n=3, k=4), random_lists(n=3, k=4), {"k": 0}, r"k must be an integer >= 1, got 0"),
    (random_lists(n=3, k=4), random_lists(n=3, k=4), {"k": 4, "measures": []}, "empty"),
])
def test_compare_rejects_bad_input(before, after, kwargs, match):
    with pytest.raises(sisakit.ValidationError, match=match):
        influence.compare(before, after, **kwargs)


def test_compare_rejects_unknown_and_broken_measures():
    lists = random_lists(n=3, k=4)
    with pytest.raises(sisakit.PluginError, match="no influence named"):
        influence.compare(lists, lists, k=4, measures=["no-such-measure"])

    class Broken(sisakit.InfluenceMeasure):
        def __init__(self):
            pass

        def compute(self, before_topk, after_topk, k):
            return np.zeros(1)

    with pytest.raises(sisakit.PluginError, match="shape"):
        influence.compare(lists, lists, k=4, measures=[Broken()])


# ---------------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def data():
    return make_interactions(n_users=45, n_items=40, n=600, seed=2)


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    return sisakit.SISA(workdir=tmp_path_factory.mktemp("run"), **CONFIG).fit(data)


def test_copy_is_independent(fitted, data, tmp_path):
    users = data.user_ids
    top = fitted.recommend(users, 5)
    params = fitted.parameters()
    twin = fitted.copy(tmp_path / "twin")
    assert twin.workdir == tmp_path / "twin" and twin.workdir != fitted.workdir
    assert parameters_equal(fitted, twin)[0]
    assert np.array_equal(twin.recommend(users, 5), top)
    report = twin.forget(users=[users[4]])
    assert report.shards_retrained
    assert not parameters_equal(fitted, twin)[0]
    # The original, in memory and on disk, is untouched by the copy's forget.
    for a, b in zip(params, fitted.parameters(), strict=True):
        assert all(np.array_equal(a[key].numpy(), b[key].numpy()) for key in a)
    assert np.array_equal(fitted.recommend(users, 5), top)
    assert not fitted.is_forgotten(users[4]) and twin.is_forgotten(users[4])
    reloaded = sisakit.SISA.load(fitted.workdir, device="cpu")
    assert parameters_equal(fitted, reloaded)[0]
    assert np.array_equal(sisakit.SISA.load(twin.workdir, device="cpu").recommend(users, 5),
                          twin.recommend(users, 5))


def test_temporary_copy_is_removed_and_target_checked(fitted, tmp_path):
    twin = fitted.copy()
    where = twin.workdir
    assert where.is_dir() and (where / "manifest.json").is_file()
    del twin
    gc.collect()
    assert not where.exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(sisakit.CheckpointError, match="not an empty directory"):
        fitted.copy(tmp_path / "busy")
    with pytest.raises(sisakit.ValidationError, match="not fitted"):
        sisakit.SISA(**CONFIG).copy()


def test_compare_models_localises_the_change(fitted, data):
    users = data.user_ids
    twin = fitted.copy()
    same = influence.compare(fitted, twin, k=5)
    assert not same.changed.any() and np.allclose(same["rank-change"], 0)
    assert np.array_equal(same.users, users)
    before = fitted.recommend(users, 5)
    gone = users[7]
    report = twin.forget(users=[gone])
    r = influence.compare(before, twin, users=users, k=5)
    # With user-level shards and the mean aggregator a user's list depends only on their shard.
    home = fitted.view().user_counts.numpy().argmax(axis=0)
    untouched = ~np.isin(home, report.shards_retrained)
    assert untouched.any() and not r.changed[untouched].any()
    assert r.changed[~untouched].any()
    # The same comparison with the "before" as a model, and with users=None.
    m = influence.compare(fitted, twin, k=5)
    assert np.array_equal(m["jaccard"], r["jaccard"])


def test_compare_models_validates(fitted, data):
    other = sisakit.SISA(**CONFIG).fit(make_interactions(n_users=45, n_items=41, n=600, seed=2))
    with pytest.raises(sisakit.ValidationError, match="different item sets"):
        influence.compare(fitted, other, k=5)
    with pytest.raises(sisakit.ValidationError, match="exceeds the catalogue"):
        influence.compare(fitted, fitted, k=41)
    with pytest.raises(sisakit.UnknownIdError):
        influence.compare(fitted, fitted, users=[-12345], k=5)

    class NoData:
        def recommend(self, users, k):
            return np.zeros((len(users), k), dtype=int)

    with pytest.raises(sisakit.ValidationError, match="users="):
        influence.compare(NoData(), NoData(), k=3)


# ---------------------------------------------------------------------------------- estimate
def test_estimate_components_match_the_forget_report(fitted, data):
    users = data.user_ids[:12]
    comp = influence.estimate_components(fitted, users)
    for i in (0, 5, 11):
        report = fitted.copy().forget(users=[users[i]])
        assert comp["work_fraction"][i] == pytest.approx(report.work_fraction)
    assert np.array_equal(comp["activity"], data.user_counts()[:12].astype(float))


def test_estimate_properties(fitted, data):
    every = influence.estimate(fitted)
    assert every.shape == (data.n_users,) and every.dtype == np.float64
    assert (every >= 0).all() and (every > 0).any()
    assert np.array_equal(every, influence.estimate(fitted))  # deterministic
    some = [data.user_ids[9], data.user_ids[2]]
    assert np.array_equal(influence.estimate(fitted, some), every[[9, 2]])
    # Within a shard, a user whose records sit in an earlier slice forces more retraining.
    first = np.full(data.n_users, fitted.n_slices)
    np.minimum.at(first, data.user_idx, fitted.assignment[1])
    home = fitted.view().user_counts.numpy().argmax(axis=0)
    for s in range(fitted.n_shards):
        lo = every[(home == s) & (first == first[home == s].min())]
        hi = every[(home == s) & (first == first[home == s].max())]
        assert lo.min() >= hi.max()
    with pytest.raises(sisakit.UnknownIdError):
        influence.estimate(fitted, [-1])
    with pytest.raises(sisakit.ValidationError, match="empty"):
        influence.estimate(fitted, [])
    with pytest.raises(sisakit.ValidationError, match=r"fitted sisakit\.SISA"):
        influence.estimate(object())


def test_estimate_of_forgotten_user_is_zero(fitted, data):
    twin = fitted.copy()
    gone = data.user_ids[3]
    twin.forget(users=[gone])
    assert influence.estimate(twin, [gone])[0] == 0.0
    assert influence.estimate(twin, [data.user_ids[4]])[0] > 0.0
