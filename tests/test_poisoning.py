"""Fake-user poisoning, exposure, and exact removal of the fake users by SISA."""

from __future__ import annotations

import numpy as np
import pytest

import sisakit
from sisakit import poisoning as P
from sisakit.engine import parameters_equal
from sisakit.testing import make_interactions

CFG: dict = dict(n_slices=2, epochs=10, seed=0, progress=False, device="cpu",
                 model_params=dict(factors=16, batch_size=256))


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(n_users=300, n_items=100, mean_interactions=15, seed=2)


@pytest.fixture(scope="module")
def target(data):
    """An unpopular-ish item (a third of the way up the popularity ranking)."""
    order = np.argsort(data.item_counts(), kind="stable")
    return data.item_ids[order[len(order) // 3]]


@pytest.fixture(scope="module")
def audience(data, target):
    """Real users who never interacted with the target (seen items are never recommended)."""
    t = data.item_map.index([target], "item")[0]
    return data.user_ids[~np.isin(np.arange(data.n_users), data.user_idx[data.item_idx == t])]


def test_injection_appends_fake_users_and_keeps_clean_records(data, target):
    p = P.inject_fake_users(data, target, 12, n_filler=5, seed=3)
    d = p.data
    assert p.n_fake == 12 and len(d) == len(data) + 12 * 6
    assert np.array_equal(d.user_ids[: data.n_users], data.user_ids)
    assert not np.isin(p.fake_users, data.user_ids).any()
    n = len(data)
    for name in ("user_idx", "item_idx", "record_id", "rating", "timestamp"):
        assert np.array_equal(getattr(d, name)[:n], getattr(data, name))
    fake_rows = d.user_idx[n:].reshape(12, 6)
    items = d.item_idx[n:].reshape(12, 6)
    t = data.item_map.index([target], "item")[0]
    assert (items[:, 0] == t).all() and (fake_rows == fake_rows[:, :1]).all()
    assert all(len(set(row)) == 6 for row in items.tolist())  # target + distinct fillers
    pool = np.argsort(-data.item_counts(), kind="stable")
    pool = pool[pool != t][:10]
    assert np.isin(items[:, 1:], pool).all()  # popular fillers come from the top 2·n_filler
    again = P.inject_fake_users(data, target, 12, n_filler=5, seed=3)
    assert np.array_equal(again.data.item_idx, d.item_idx)
    rnd = P.inject_fake_users(data, target, 12, n_filler=5, filler="random", seed=3)
    assert not np.isin(rnd.data.item_idx[n:].reshape(12, 6)[:, 1:], pool).all()
    assert p.as_dict() == {"n_fake": 12, "n_filler": 5, "filler": "popular",
                           "target_item": int(target), "fake_records": 72}


def test_string_ids_get_string_fakes():
    d = make_interactions(str_ids=True)
    p = P.inject_fake_users(d, d.item_ids[0], 3, n_filler=2)
    assert p.fake_users.tolist() == ["fake-0", "fake-1", "fake-2"]
    assert p.data.n_users == d.n_users + 3


@pytest.mark.parametrize("n_shards", [1, 3])
def test_poisoning_raises_exposure_and_forgetting_restores_the_exact_reference(
        data, target, audience, n_shards):
    cfg = {**CFG, "n_shards": n_shards}
    clean = sisakit.SISA(**cfg).fit(data)
    p = P.inject_fake_users(data, target, 30, n_filler=10, seed=0)
    model = sisakit.SISA(**cfg).fit(p.data)
    e_clean, e_attacked = P.exposure(clean, target, audience), P.exposure(model, target, audience)
    assert e_attacked - e_clean >= 0.05, (e_clean, e_attacked)
    model.forget(users=p.fake_users.tolist())
    rest = p.data.without(users=p.fake_users.tolist())
    ref = sisakit.SISA(**cfg).fit(rest, assignment=(model.assignment[0], model.assignment[1]))
    assert parameters_equal(model, ref)[0]
    e_after, e_ref = P.exposure(model, target, audience), P.exposure(ref, target, audience)
    assert e_after == e_ref
    assert e_after < e_attacked
    assert np.array_equal(model.recommend(audience, k=10), ref.recommend(audience, k=10))


def test_exposure_counts_lists_holding_the_item(data, audience):
    model = sisakit.SISA(**{**CFG, "n_shards": 1}).fit(data)
    recs = model.recommend(audience, k=5)
    item = recs[0, 0]
    assert P.exposure(model, item, audience, k=5) == pytest.approx((recs == item).any(1).mean())
    assert P.exposure(model, item, audience, k=data.n_items) >= P.exposure(model, item, audience)


def test_bad_input_raises_sisakit_errors(data, target, audience):
    model = sisakit.SISA(**{**CFG, "n_shards": 1, "epochs": 1}).fit(data)
    with pytest.raises(sisakit.UnknownIdError):
        P.inject_fake_users(data, 10**9, 5)
    with pytest.raises(sisakit.UnknownIdError):
        P.exposure(model, 10**9, audience)
    with pytest.raises(sisakit.ValidationError, match="k must"):
        P.exposure(model, target, audience, k=data.n_items + 1)
    with pytest.raises(sisakit.ValidationError, match="empty"):
        P.exposure(model, target, [])
    with pytest.raises(sisakit.ValidationError, match="n_fake"):
        P.inject_fake_users(data, target, 0)
    with pytest.raises(sisakit.ValidationError, match="filler"):
        P.inject_fake_users(data, target, 5, filler="loud")
    with pytest.raises(sisakit.ValidationError, match="n_filler"):
        P.inject_fake_users(data, target, 5, n_filler=data.n_items, filler="random")
    with pytest.raises(sisakit.ValidationError, match="recommend"):
        P.exposure(object(), target, audience)


def test_profile_fillers_copy_real_histories_of_users_without_the_target(data, target):
    n = len(data)
    p = P.inject_fake_users(data, target, 40, n_filler=6, filler="profile", seed=4)
    items = p.data.item_idx[n:].reshape(40, 7)
    t = data.item_map.index([target], "item")[0]
    assert (items[:, 0] == t).all() and all(len(set(row)) == 7 for row in items.tolist())
    seen = [set(data.item_idx[data.user_idx == u].tolist()) for u in range(data.n_users)]
    sources = [[u for u in range(data.n_users) if t not in seen[u] and set(row[1:]) <= seen[u]]
               for row in items.tolist()]
    assert all(sources)  # every fake's fillers are a subset of one real, target-free history
    again = P.inject_fake_users(data, target, 40, n_filler=6, filler="profile", seed=4)
    assert np.array_equal(again.data.item_idx, p.data.item_idx)
    other = P.inject_fake_users(data, target, 40, n_filler=6, filler="profile", seed=5)
    assert not np.array_equal(other.data.item_idx, p.data.item_idx)
    assert p.as_dict()["filler"] == "profile"
    with pytest.raises(sisakit.ValidationError, match="lower n_filler"):
        P.inject_fake_users(data, target, 5, n_filler=int(data.user_counts().max()) + 1,
                            filler="profile")


def test_sampled_fillers_follow_popularity(data, target):
    n = len(data)
    p = P.inject_fake_users(data, target, 400, n_filler=5, filler="sampled", seed=1)
    fill = p.data.item_idx[n:].reshape(400, 6)[:, 1:]
    t = data.item_map.index([target], "item")[0]
    assert not (fill == t).any() and all(len(set(row)) == 5 for row in fill.tolist())
    counts = data.item_counts()
    drawn = np.bincount(fill.ravel(), minlength=data.n_items)
    top, bottom = np.argsort(-counts)[:10], np.argsort(counts)[:10]
    assert drawn[top].sum() > 2 * drawn[bottom].sum()


def test_profile_attack_raises_exposure_and_forgetting_restores_the_reference(data, target,
                                                                             audience):
    cfg = {**CFG, "n_shards": 2}
    clean = sisakit.SISA(**cfg).fit(data)
    p = P.inject_fake_users(data, target, 60, n_filler=10, filler="profile", seed=0)
    model = sisakit.SISA(**cfg).fit(p.data)
    e_clean, e_attacked = P.exposure(clean, target, audience), P.exposure(model, target, audience)
    assert e_attacked - e_clean >= 0.05, (e_clean, e_attacked)
    model.forget(users=p.fake_users.tolist())
    ref = sisakit.SISA(**cfg).fit(p.data.without(users=p.fake_users.tolist()),
                                  assignment=(model.assignment[0], model.assignment[1]))
    assert P.exposure(model, target, audience) == P.exposure(ref, target, audience)
