"""Tests of sisakit.fairness: user groups, per-group metrics, before/after deltas, per shard."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sisakit
from sisakit import fairness
from sisakit.testing import make_interactions

CONFIG = dict(n_shards=3, n_slices=2, epochs=3, seed=0, progress=False, device="cpu",
              model_params={"factors": 4, "batch_size": 64})


class Oracle:
    """Scores every test item of a ``good`` user above everything else, and below everything
    else for the other users: NDCG@K is 1 for good users and 0 for the rest."""

    def __init__(self, train, test, good):
        self.n_users, self.n_items = train.n_users, train.n_items
        rel = torch.from_numpy(test.to_csr().toarray() > 0).float()
        sign = torch.from_numpy(np.where(good, 1.0, -1.0)).float()[:, None]
        self._scores = sign * rel + 0.001 * torch.arange(self.n_items).float()[None, :] / self.n_items

    def scores(self, user_idx):
        return self._scores[torch.from_numpy(np.asarray(user_idx))]


@pytest.fixture(scope="module")
def split():
    data = sisakit.datasets.synthetic(n_users=120, n_items=60, mean_interactions=12, seed=3)
    return sisakit.split.holdout(data, test_fraction=0.25, seed=0)


# ---------------------------------------------------------------------------------- groups
def test_activity_groups_are_balanced_and_ordered(split):
    train, _ = split
    counts = train.user_counts()
    for n_groups in (1, 3, 4, 7):
        g = fairness.activity_groups(train, n_groups)
        sizes = np.bincount(g, minlength=n_groups)
        assert sizes.max() - sizes.min() <= 1 and sizes.sum() == train.n_users
        for a in range(n_groups - 1):  # every user of a group is at most as active as the next
            assert counts[g == a].max() <= counts[g == a + 1].min()
    with pytest.raises(sisakit.ValidationError, match="n_groups"):
        fairness.activity_groups(train, 0)
    with pytest.raises(sisakit.ValidationError, match="n_groups"):
        fairness.activity_groups(train, train.n_users + 1)


def test_active_mask_is_the_most_active_share(split):
    train, _ = split
    counts = train.user_counts()
    for top in (0.1, 0.2, 0.5):
        m = fairness.active_mask(train, top)
        assert m.sum() == round(top * train.n_users)
        assert counts[m].min() >= counts[~m].max()
    for bad in (0, 1, 1.5, -0.2, True):
        with pytest.raises(sisakit.ValidationError, match="top"):
            fairness.active_mask(train, bad)


def test_user_groups_from_attributes_and_labels(split):
    train, _ = split
    codes, labels = fairness.user_groups(train, "gender")
    assert labels.tolist() == [0, 1]
    assert np.array_equal(labels[codes], train.user_attributes["gender"])
    raw = np.where(np.arange(train.n_users) % 3 == 0, "", np.where(np.arange(train.n_users) % 2,
                                                                  "b", "a"))
    codes, labels = fairness.user_groups(train, raw)
    assert labels.tolist() == ["a", "b"]
    assert (codes[raw == ""] == -1).all() and (labels[codes[raw != ""]] == raw[raw != ""]).all()
    with pytest.raises(sisakit.ValidationError, match="attribute columns"):
        fairness.user_groups(train, "height")
    with pytest.raises(sisakit.ValidationError, match="one entry per user"):
        fairness.user_groups(train, np.zeros(3))
    with pytest.raises(sisakit.ValidationError, match="no user has a group label"):
        fairness.user_groups(train, np.full(train.n_users, ""))


# ---------------------------------------------------------------------------------- metrics
def test_planted_group_difference_is_recovered(split):
    train, test = split
    gender = train.user_attributes["gender"]
    model = Oracle(train, test, good=gender == 1)
    gm = fairness.group_metrics(model, train, test, by="gender", k=(5, 10))
    assert gm.groups.tolist() == [0, 1]
    assert np.allclose(gm.values["ndcg@10"], [0.0, 1.0]) and np.allclose(gm.values["hr@5"], [0, 1])
    assert gm.gap("ndcg@10", 1, 0) == pytest.approx(1.0)
    evaluated = sisakit.metrics.evaluate(model, train, test, k=10)
    assert gm.n_users.sum() == evaluated["n_users"]
    assert gm.overall["ndcg@10"] == pytest.approx(evaluated["ndcg@10"])
    json.dumps(gm.as_dict())
    with pytest.raises(sisakit.ValidationError, match="unknown group"):
        gm.gap("ndcg@10", 2, 0)


def test_active_gap_on_planted_difference(split):
    train, test = split
    active = fairness.active_mask(train, 0.25)
    gap = fairness.active_gap(Oracle(train, test, good=active), train, test, k=10, top=0.25)
    assert gap["metric"] == "ndcg@10"
    assert gap["active"] == pytest.approx(1.0) and gap["inactive"] == pytest.approx(0.0)
    assert gap["gap"] == pytest.approx(1.0) and np.isnan(gap["relative_gap"])
    assert gap["n_active"] + gap["n_inactive"] > 0 and gap["n_active"] <= active.sum()
    reverse = fairness.active_gap(Oracle(train, test, good=~active), train, test, top=0.25,
                                  metric="recall")
    assert reverse["gap"] == pytest.approx(-1.0) and reverse["relative_gap"] == pytest.approx(-1.0)
    with pytest.raises(sisakit.ValidationError, match="unknown metric"):
        fairness.active_gap(Oracle(train, test, good=active), train, test, metric="auc")


def test_group_deltas_isolate_the_degraded_group(split):
    train, test = split
    groups = fairness.activity_groups(train, 3)
    before = Oracle(train, test, good=np.ones(train.n_users, bool))
    after = Oracle(train, test, good=groups != 0)  # unlearning hurt only the least active
    d = fairness.group_deltas(before, after, train, test, by="activity", n_groups=3)
    assert d.groups.tolist() == ["q1", "q2", "q3"]
    assert np.allclose(d.before["ndcg@10"], 1.0)
    assert np.allclose(d.delta["ndcg@10"], [-1.0, 0.0, 0.0])
    assert np.allclose(d.after["ndcg@10"] - d.before["ndcg@10"], d.delta["ndcg@10"])
    json.dumps(d.as_dict())

    class Elsewhere:
        n_users, n_items = train.n_users, train.n_items + 1

    with pytest.raises(sisakit.ValidationError, match="different id spaces"):
        fairness.group_deltas(before, Elsewhere(), train, test)


# ---------------------------------------------------------------------------------- per shard
@pytest.fixture(scope="module")
def small():
    data = make_interactions(n_users=45, n_items=30, n=500, seed=4)
    train, test = sisakit.split.holdout(data, test_fraction=0.25, seed=0)
    return sisakit.SISA(**CONFIG).fit(train), train, test


def test_per_shard_ensemble_is_consistent_with_group_metrics(small):
    sisa, train, test = small
    cells = fairness.per_shard_metrics(sisa, train, test, by="activity", n_groups=2, k=5)
    assert cells.values.shape == cells.n_users.shape == (3, 2)
    assert cells.metric == "ndcg@5" and cells.groups.tolist() == ["q1", "q2"]
    gm = fairness.group_metrics(sisa, train, test, by="activity", n_groups=2, k=5)
    assert np.array_equal(cells.n_users.sum(axis=0), gm.n_users)
    pooled = np.nansum(cells.values * cells.n_users, axis=0) / cells.n_users.sum(axis=0)
    assert np.allclose(pooled, gm.values["ndcg@5"])
    json.dumps(cells.as_dict())


def test_per_shard_models_alone(small):
    sisa, train, test = small
    cells = fairness.per_shard_metrics(sisa, train, test, by="active", source="shard",
                                       metric="recall", k=5)
    assert cells.values.shape == (3, 2) and cells.source == "shard"
    finite = ~np.isnan(cells.values)
    assert finite.any() and ((cells.values[finite] >= 0) & (cells.values[finite] <= 1)).all()
    assert (cells.n_users[~finite] == 0).all()
    with pytest.raises(sisakit.ValidationError, match="source"):
        fairness.per_shard_metrics(sisa, train, test, source="both")
    with pytest.raises(sisakit.ValidationError, match="fitted sisakit"):
        fairness.per_shard_metrics(object(), train, test)
