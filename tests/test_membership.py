"""Membership inference (user and interaction level) and the unlearning audit built on it."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch

import sisakit
from sisakit import membership as M
from sisakit.engine import parameters_equal

CFG: dict = dict(n_shards=1, n_slices=1, epochs=10, seed=0, progress=False, device="cpu",
                 model_params=dict(factors=16, batch_size=256))
KW: dict = dict(k=20, dim=16, seed=0)


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(n_users=400, n_items=120, mean_interactions=20, seed=1)


@pytest.fixture(scope="module")
def split(data) -> M.UserSplit:
    return M.split_users(data, seed=0)


@pytest.fixture(scope="module")
def fitted(data, split):
    """Target and shadow models trained on their members only."""
    target = sisakit.SISA(**CFG).fit(M._only_users(data, data.user_map.index(
        split.target_members, "user")))
    shadow = sisakit.SISA(**CFG).fit(M._only_users(data, data.user_map.index(
        split.shadow_members, "user")))
    return target, shadow


# ---------------------------------------------------------------------------------- splitting
def test_split_users_is_disjoint_complete_matched_and_seeded(data, split):
    groups = [split.target_members, split.target_non_members, split.shadow_members,
              split.shadow_non_members]
    everyone = np.concatenate(groups)
    assert len(np.unique(everyone)) == len(everyone) == data.n_users
    assert all(abs(len(g) - data.n_users / 4) <= 0.05 * data.n_users for g in groups)
    act = data.user_counts()
    means = [act[data.user_map.index(g, "user")].mean() for g in groups]
    assert max(means) - min(means) < 0.1 * np.mean(means), means  # activity-matched
    again = M.split_users(data, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(groups, [
        again.target_members, again.target_non_members, again.shadow_members,
        again.shadow_non_members], strict=True))
    assert not np.array_equal(M.split_users(data, seed=1).target_members, split.target_members)


def test_split_users_fractions_and_min_records(data):
    s = M.split_users(data, seed=0, fractions=(0.4, 0.4, 0.1, 0.1), min_records=10)
    n = int((data.user_counts() >= 10).sum())
    assert sum(s.sizes().values()) == n
    assert abs(s.sizes()["target_members"] - 0.4 * n) <= 0.05 * n


# ---------------------------------------------------------------------------------- features
def test_user_features_are_history_minus_list_centroids():
    d = sisakit.Interactions.from_arrays([1, 1, 2], [10, 11, 12])
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    recs = np.array([[2, 0], [0, 1]])
    x = M.user_features(recs, d, vecs)
    np.testing.assert_allclose(x, [[0.5 - 1.5, 0.5 - 1.0], [2.0 - 0.5, 2.0 - 0.5]])


def test_item_vectors_are_seeded(data):
    a = M.item_vectors(data, 8, seed=0)
    assert a.shape == (data.n_items, 8) and np.isfinite(a).all()
    assert np.array_equal(a, M.item_vectors(data, 8, seed=0))


def test_interaction_features_from_any_scorer(data):
    class Fixed:  # a scorer that ranks items by index: rank and z-score are known
        n_users, n_items = data.n_users, data.n_items

        def scores(self, user_idx):
            return torch.arange(self.n_items, dtype=torch.float32).repeat(len(user_idx), 1)

    recs = data.take(np.arange(50))
    x = M.interaction_features(Fixed(), recs, data, batch_cells=data.n_items * 7)
    n = data.n_items
    np.testing.assert_allclose(x[:, 0], (n - 1 - recs.item_idx) / n)
    z = (recs.item_idx - (n - 1) / 2) / np.arange(n).std()
    np.testing.assert_allclose(x[:, 1], z, rtol=1e-6)
    np.testing.assert_allclose(x[:, 2], np.log1p(data.item_counts()[recs.item_idx]))
    np.testing.assert_allclose(x[:, 3], np.log1p(data.user_counts()[recs.user_idx]))


# ---------------------------------------------------------------------------------- user level
def test_user_attack_beats_chance_on_planted_setting(data, split):
    res = M.membership_inference(data, CFG, split=split, **KW)
    assert res.auc >= 0.7, res
    assert res.advantage > 0.2 and res.accuracy > 0.6
    assert res.n_members == len(split.target_members)
    assert res.as_dict()["auc"] == res.auc
    again = M.membership_inference(data, CFG, split=split, **KW)
    assert again.auc == res.auc and again.advantage == res.advantage  # same seed, same result


def test_user_attack_with_shuffled_labels_is_chance(data, split, fitted):
    target, shadow = fitted
    mia = M.UserMembershipAttack(**KW).fit(shadow, data, split.shadow_members,
                                           split.shadow_non_members)
    users = np.concatenate([split.shadow_members, split.shadow_non_members])
    x = mia.features(shadow, data, users)
    y = np.r_[np.ones(len(split.shadow_members)), np.zeros(len(split.shadow_non_members))]
    rng = np.random.default_rng(5)
    blind = sisakit.plugins.get("attacker", "membership")().fit(x, rng.permutation(y))
    tx = mia.features(target, data, np.concatenate([split.target_members,
                                                    split.target_non_members]))
    ty = np.r_[np.ones(len(split.target_members)), np.zeros(len(split.target_non_members))]
    auc = M.membership_metrics(blind.predict_proba(tx)[:, 1], ty).auc
    assert abs(auc - 0.5) < 0.12, auc
    assert mia.evaluate(target, data, split.target_members, split.target_non_members).auc > 0.7


def test_audit_unlearned_equals_gold_and_beats_no_unlearning(data, split):
    audit = M.unlearning_audit(data, {**CFG, "n_shards": 2, "n_slices": 2}, n_forget=40,
                               split=split, **KW)
    assert audit.identical
    assert np.array_equal(audit.features["unlearned"], audit.features["gold"])
    assert np.array_equal(audit.member_probability["unlearned"], audit.member_probability["gold"])
    auc = audit.as_dict()
    assert set(auc) == {"original", "unlearned", "gold"}
    assert auc["unlearned"] == auc["gold"]
    assert auc["original"] >= 0.7 and auc["original"] - auc["unlearned"] >= 0.1, auc
    assert abs(auc["gold"] - 0.5) < 0.15
    summary = audit.summary()
    assert summary["identical_unlearned_gold"] is True and summary["n_forgotten"] == 40


def test_forgotten_users_look_like_gold_bit_for_bit(data, split, fitted):
    """Features of forgotten users after SISA.forget equal those of a scratch fit."""
    _, shadow = fitted
    members = data.user_map.index(split.target_members, "user")
    model = sisakit.SISA(**{**CFG, "n_shards": 3, "n_slices": 2}).fit(M._only_users(data, members))
    gone = split.target_members[:25]
    model.forget(users=gone.tolist())
    keep = np.setdiff1d(members, data.user_map.index(gone, "user"))
    gold = sisakit.SISA(**{**CFG, "n_shards": 3, "n_slices": 2}).fit(M._only_users(data, keep))
    assert parameters_equal(model, gold)[0]
    mia = M.UserMembershipAttack(**KW).fit(shadow, data, split.shadow_members,
                                           split.shadow_non_members)
    assert np.array_equal(mia.features(model, data, gone), mia.features(gold, data, gone))
    assert np.array_equal(mia.predict_proba(model, data, gone), mia.predict_proba(gold, data, gone))


# ---------------------------------------------------------------------------------- pair level
def test_interaction_attack_beats_chance(data, split):
    res = M.interaction_membership_inference(data, CFG, split=split, seed=0)
    assert res.auc >= 0.65, res
    assert res.n_members == res.n_non_members > 100


def test_interaction_attack_on_shuffled_labels_is_chance(data, split, fitted):
    target, shadow = fitted
    tm = M._only_users(data, data.user_map.index(split.target_members, "user"))
    sm = M._only_users(data, data.user_map.index(split.shadow_members, "user"))
    rng = np.random.default_rng(0)
    # Random labels over pairs the models did train on: nothing separates the two halves.
    half = rng.permutation(len(sm)) < len(sm) // 2
    mia = M.InteractionMembershipAttack().fit(shadow, data, sm.take(half), sm.take(~half))
    half = rng.permutation(len(tm)) < len(tm) // 2
    res = mia.evaluate(target, data, tm.take(half), tm.take(~half))
    assert abs(res.auc - 0.5) < 0.1, res


# ---------------------------------------------------------------------------------- bad input
def test_bad_input_raises_sisakit_errors(data, split, fitted):
    target, shadow = fitted
    with pytest.raises(sisakit.ValidationError, match="empty"):
        M.UserSplit(np.array([1]), np.array([], dtype=np.int64), np.array([3]), np.array([4]))
    with pytest.raises(sisakit.ValidationError, match="share"):
        M.UserSplit(np.array([1, 2]), np.array([2, 3]), np.array([4]), np.array([5]))
    with pytest.raises(sisakit.ValidationError, match="fractions"):
        M.split_users(data, fractions=(0.5, 0.5))
    mia = M.UserMembershipAttack(**KW)
    with pytest.raises(sisakit.ValidationError, match="fit the attack"):
        mia.predict_proba(target, data, split.target_members)
    with pytest.raises(sisakit.ValidationError, match="overlap"):
        mia.fit(shadow, data, split.shadow_members, split.shadow_members[:10])
    with pytest.raises(sisakit.ValidationError, match="empty"):
        mia.fit(shadow, data, split.shadow_members, [])
    with pytest.raises(sisakit.UnknownIdError):
        mia.fit(shadow, data, split.shadow_members, [10**9])
    with pytest.raises(sisakit.ValidationError, match="k must"):
        M.UserMembershipAttack(k=data.n_items + 1, dim=16).fit(
            shadow, data, split.shadow_members, split.shadow_non_members)
    with pytest.raises(sisakit.ValidationError, match="dim"):
        M.item_vectors(data, dim=data.n_items)
    with pytest.raises(sisakit.ValidationError, match="n_forget"):
        M.unlearning_audit(data, CFG, n_forget=len(split.target_members) + 1, split=split, **KW)
    with pytest.raises(sisakit.ValidationError, match="workdir"):
        M.membership_inference(data, {**CFG, "workdir": "/tmp/x"}, split=split, **KW)
    with pytest.raises(sisakit.ValidationError, match="share"):
        M.InteractionMembershipAttack().fit(shadow, data, data.take(np.arange(20)),
                                            data.take(np.arange(10, 30)))
    with pytest.raises(sisakit.ValidationError, match="no interactions"):
        M.user_features(np.zeros((1, 3), np.int64),
                        data.without(users=[data.user_ids[0]]), M.item_vectors(data, 4),
                        users=np.array([0]))
    with pytest.raises(sisakit.ValidationError, match="two classes"):
        sisakit.plugins.get("attacker", "membership")().fit(np.zeros((20, 2)), np.ones(20))


class TestMembershipAttackerDefaults:
    names: ClassVar[tuple[str, ...]] = ("membership", "membership-interaction")

    def test_plugins_registered_as_builtins(self):
        for name in self.names:
            reg = sisakit.plugins.registration("attacker", name)
            assert reg.plugin.startswith("sisakit:")
            assert isinstance(reg.cls(), sisakit.Attacker)
