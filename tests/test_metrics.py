"""Tests of sisakit.metrics: full-ranking top-K evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sisakit.data import Interactions
from sisakit.errors import ValidationError
from sisakit.metrics import METRIC_NAMES, Scorer, evaluate, ranking_metrics, topk_items


class MatrixScorer:
    """Scores are rows of a fixed (n_users, n_items) matrix."""

    def __init__(self, matrix: np.ndarray | torch.Tensor, as_numpy: bool = False) -> None:
        self.matrix = matrix
        self.n_users, self.n_items = matrix.shape
        self.as_numpy = as_numpy
        self.calls: list[int] = []

    def scores(self, user_idx: np.ndarray) -> torch.Tensor | np.ndarray:
        self.calls.append(len(user_idx))
        if isinstance(self.matrix, np.ndarray):
            out = self.matrix[user_idx]
            return out if self.as_numpy else torch.from_numpy(out)
        return self.matrix[torch.from_numpy(np.asarray(user_idx))]


def split(users, items, is_test, n_users, n_items):
    """(train, test) Interactions in one id space 0..n_users-1 × 0..n_items-1."""
    data = Interactions.from_arrays(
        np.asarray(users), np.asarray(items), user_ids=np.arange(n_users),
        item_ids=np.arange(n_items),
    )
    is_test = np.asarray(is_test, dtype=bool)
    return data.take(~is_test), data.take(is_test)


def random_split(seed, n_users=60, n_items=40, n_train=6, n_test=3):
    """Every user gets n_train train items and n_test disjoint test items."""
    rng = np.random.default_rng(seed)
    users, items, is_test = [], [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, n_train + n_test, replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
        is_test += [False] * n_train + [True] * n_test
    return split(users, items, is_test, n_users, n_items)


# -------------------------------------------------------------------------- hand-checked
# 2 users, 5 items (0..4). Train: u0 -> {0}, u1 -> {4}. Test: u0 -> {1, 3}, u1 -> {2}.
# Scores u0 = [.9 .8 .7 .6 .5]; item 0 masked -> ranking 1, 2, 3, 4.
#   K=1: [1]      hits 1  P=1    R=1/2  NDCG=1/1                          HR=1
#   K=2: [1,2]    hits 1  P=1/2  R=1/2  NDCG=1/(1+1/log2 3)               HR=1
#   K=3: [1,2,3]  hits 2  P=2/3  R=1    NDCG=(1+1/log2 4)/(1+1/log2 3)    HR=1
# Scores u1 = [.1 .2 .3 .4 .5]; item 4 masked -> ranking 3, 2, 1, 0. Relevant {2}.
#   K=1: [3]      hits 0  P=0    R=0    NDCG=0                            HR=0
#   K=2: [3,2]    hits 1  P=1/2  R=1    NDCG=(1/log2 3)/1                 HR=1
#   K=3: [3,2,1]  hits 1  P=1/3  R=1    NDCG=1/log2 3                     HR=1
L3 = math.log2(3)
HAND = {
    "precision@1": (1 + 0) / 2,
    "precision@2": (0.5 + 0.5) / 2,
    "precision@3": (2 / 3 + 1 / 3) / 2,
    "recall@1": (0.5 + 0) / 2,
    "recall@2": (0.5 + 1) / 2,
    "recall@3": (1 + 1) / 2,
    "ndcg@1": (1 + 0) / 2,
    "ndcg@2": (1 / (1 + 1 / L3) + 1 / L3) / 2,
    "ndcg@3": ((1 + 1 / 2) / (1 + 1 / L3) + 1 / L3) / 2,
    "hr@1": (1 + 0) / 2,
    "hr@2": 1.0,
    "hr@3": 1.0,
}
HAND_SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]], dtype=np.float32)


@pytest.fixture
def hand():
    train, test = split(
        [0, 1, 0, 0, 1], [0, 4, 1, 3, 2], [False, False, True, True, True], 2, 5
    )
    return train, test, MatrixScorer(HAND_SCORES.copy())


def test_hand_checked_values(hand):
    train, test, model = hand
    res = evaluate(model, train, test, k=(1, 2, 3))
    assert res["n_users"] == 2
    assert set(res) == set(HAND) | {"n_users"}
    for key, expected in HAND.items():
        assert isinstance(res[key], float)
        assert res[key] == pytest.approx(expected, abs=1e-9), key


def test_hand_checked_per_user(hand):
    train, test, model = hand
    per = evaluate(model, train, test, k=(1, 2, 3), per_user=True)["per_user"]
    np.testing.assert_array_equal(per["user_idx"], [0, 1])
    np.testing.assert_allclose(per["ndcg@3"], [1.5 / (1 + 1 / L3), 1 / L3])
    np.testing.assert_allclose(per["precision@3"], [2 / 3, 1 / 3])
    np.testing.assert_allclose(per["hr@1"], [1.0, 0.0])


def test_int_k_and_numpy_scores_give_same_numbers(hand):
    train, test, _ = hand
    res = evaluate(MatrixScorer(HAND_SCORES.copy(), as_numpy=True), train, test, k=2)
    assert set(res) == {"precision@2", "recall@2", "ndcg@2", "hr@2", "n_users"}
    assert res["ndcg@2"] == pytest.approx(HAND["ndcg@2"])


def test_without_excluding_train_items(hand):
    # u0 ranking 0,1,2,...: item 0 (train) is first and not relevant -> P@1 = 0.
    # u1 ranking 4,3,2,...: item 2 at rank 3 -> P@1 = 0, R@3 = 1.
    train, test, model = hand
    res = evaluate(model, train, test, k=(1, 3), exclude_train=False)
    assert res["precision@1"] == 0.0
    assert res["recall@3"] == pytest.approx((0.5 + 1.0) / 2)


def test_model_output_is_not_modified(hand):
    train, test, _ = hand
    cache = torch.from_numpy(HAND_SCORES.copy())
    model = MatrixScorer(cache)
    evaluate(model, train, test, k=2)
    assert torch.equal(cache, torch.from_numpy(HAND_SCORES))
    readonly = HAND_SCORES.copy()
    readonly.flags.writeable = False
    res = evaluate(MatrixScorer(readonly, as_numpy=True), train, test, k=2)
    assert res["ndcg@2"] == pytest.approx(HAND["ndcg@2"])


# -------------------------------------------------------------------------- exclusions
def test_training_items_scored_highest_are_excluded():
    train, test = random_split(0, n_users=30, n_items=25, n_train=5, n_test=3)
    tr, te = train.to_csr().toarray() > 0, test.to_csr().toarray() > 0
    # training items best, then test items, then the rest
    scores = np.where(tr, 10.0, np.where(te, 5.0, 0.0)).astype(np.float32)
    res = evaluate(MatrixScorer(scores), train, test, k=(3, 10))
    assert res["precision@3"] == 1.0
    assert res["recall@3"] == 1.0
    assert res["ndcg@3"] == pytest.approx(1.0)
    assert res["ndcg@10"] == pytest.approx(1.0)
    assert res["precision@10"] == pytest.approx(0.3)
    # without exclusion the same model ranks the training items first: no hit in the top 3
    assert evaluate(MatrixScorer(scores), train, test, k=3, exclude_train=False)["hr@3"] == 0.0


def test_inactive_items_are_never_ranked_nor_relevant():
    # 2 users, 6 items. Train: u0 -> {0}, u1 -> {1}. Test: u0 -> {2, 5}, u1 -> {3}.
    train, test = split(
        [0, 1, 0, 0, 1], [0, 1, 2, 5, 3], [False, False, True, True, True], 2, 6
    )
    # item 4 is the best for everyone but forgotten; item 5 (a test item of u0) is forgotten too
    active = np.ones(6, bool)
    active[[4, 5]] = False
    train_forgot = train.replace(item_active=active)
    scores = np.array(
        [[0, 0, 2, 1, 9, 3], [0, 0, 1, 2, 9, 3]], dtype=np.float32
    )
    res = evaluate(MatrixScorer(scores), train_forgot, test, k=1, per_user=True)
    # u0: candidates 1, 2, 3 -> top 2, relevant {2} (5 inactive) -> P=R=1
    # u1: candidates 0, 2, 3 -> top 3, relevant {3} -> P=R=1
    assert res["precision@1"] == 1.0
    assert res["recall@1"] == 1.0
    # with all items active, item 4 would take rank 1 for both users
    assert evaluate(MatrixScorer(scores), train, test, k=1)["precision@1"] == 0.0


def test_user_whose_test_items_are_all_excluded_is_skipped():
    # u1's only test item (1) is also one of its training items -> not evaluated
    train, test = split([0, 0, 1, 1], [0, 1, 1, 1], [False, True, False, True], 2, 3)
    res = evaluate(MatrixScorer(np.ones((2, 3), np.float32)), train, test, k=1, per_user=True)
    assert res["n_users"] == 1
    np.testing.assert_array_equal(res["per_user"]["user_idx"], [0])


def test_neg_inf_in_top_k_is_not_a_hit():
    # only one finite score; k=3 must take two -inf items, one of which is relevant
    scores = torch.tensor([[float("-inf"), 1.0, float("-inf"), float("-inf")]])
    test = torch.tensor([[True, False, False, False]])
    m = ranking_metrics(scores, test, 3)
    assert m["hr@3"].item() == 0.0
    assert m["recall@3"].item() == 0.0


# -------------------------------------------------------------------------- consistency
def test_batch_size_invariance():
    train, test = random_split(1, n_users=53, n_items=30)
    rng = np.random.default_rng(1)
    model = MatrixScorer(rng.random((53, 30)).astype(np.float32))
    a = evaluate(model, train, test, k=(1, 5, 10), batch_size=1, per_user=True)
    b = evaluate(model, train, test, k=(1, 5, 10), batch_size=7, per_user=True)
    c = evaluate(model, train, test, k=(1, 5, 10), batch_size=1000, per_user=True)
    assert max(model.calls[: a["n_users"]]) == 1
    assert model.calls[a["n_users"] :] == [7] * 7 + [4] + [53]
    for other in (b, c):
        assert {k: v for k, v in a.items() if k != "per_user"} == {
            k: v for k, v in other.items() if k != "per_user"
        }
        for key, arr in a["per_user"].items():
            np.testing.assert_array_equal(arr, other["per_user"][key])


def test_per_user_arrays_average_to_means():
    train, test = random_split(2, n_users=40, n_items=35)
    model = MatrixScorer(np.random.default_rng(2).random((40, 35)).astype(np.float32))
    res = evaluate(model, train, test, per_user=True)
    per = res["per_user"]
    assert len(per["user_idx"]) == res["n_users"] == 40
    names = [f"{n}@{k}" for n in METRIC_NAMES for k in (5, 10, 20)]
    assert set(per) == {"user_idx", *names}
    for name in names:
        assert per[name].shape == (40,)
        assert res[name] == pytest.approx(float(np.mean(per[name])), abs=1e-12)
    # recall never exceeds 1, precision@K * K == hits == recall * n_test (3 per user)
    assert np.all(per["recall@20"] <= 1.0)
    np.testing.assert_allclose(per["precision@5"] * 5, per["recall@5"] * 3)


def test_users_restriction():
    train, test = random_split(3, n_users=30, n_items=20)
    model = MatrixScorer(np.random.default_rng(3).random((30, 20)).astype(np.float32))
    full = evaluate(model, train, test, k=5, per_user=True)["per_user"]
    pick = np.array([7, 3, 3, 25])
    sub = evaluate(model, train, test, k=5, users=pick, per_user=True)
    np.testing.assert_array_equal(sub["per_user"]["user_idx"], [3, 7, 25])
    assert sub["n_users"] == 3
    assert sub["ndcg@5"] == pytest.approx(full["ndcg@5"][[3, 7, 25]].mean())
    mask = np.zeros(30, bool)
    mask[[3, 7, 25]] = True
    assert evaluate(model, train, test, k=5, users=mask)["ndcg@5"] == sub["ndcg@5"]


def test_random_scorer_matches_analytic_expectation():
    # every user: 10 train items, 5 test items, 100 items -> 90 candidates, 5 relevant
    n_users, n_items, r, m, k = 3000, 100, 5, 90, 10
    train, test = random_split(4, n_users=n_users, n_items=n_items, n_train=10, n_test=r)
    scores = np.random.default_rng(5).random((n_users, n_items)).astype(np.float32)
    res = evaluate(MatrixScorer(scores), train, test, k=k, per_user=True)
    # a random ranking puts a relevant item at each position with probability r / m
    expected_dcg = sum((r / m) / math.log2(i + 2) for i in range(k))
    idcg = sum(1 / math.log2(i + 2) for i in range(min(r, k)))
    expected_ndcg = expected_dcg / idcg
    se = res["per_user"]["ndcg@10"].std() / math.sqrt(n_users)
    assert abs(res["ndcg@10"] - expected_ndcg) < 4 * se
    se_p = res["per_user"]["precision@10"].std() / math.sqrt(n_users)
    assert abs(res["precision@10"] - r / m) < 4 * se_p
    # and the scorer is really uninformative: far below a perfect ranking
    assert res["ndcg@10"] < 0.2


def _reference(scores, train_sets, test_sets, active, ks):
    """Slow per-user reference implementation of the documented protocol."""
    out = {f"{n}@{k}": [] for n in METRIC_NAMES for k in ks}
    users = []
    for u in range(scores.shape[0]):
        cand = [i for i in range(scores.shape[1]) if active[i] and i not in train_sets[u]]
        rel = {i for i in test_sets[u] if i in cand}
        if not rel:
            continue
        users.append(u)
        ranking = sorted(cand, key=lambda i: -scores[u, i])
        for k in ks:
            top = ranking[:k]
            gains = [1.0 if i in rel else 0.0 for i in top]
            hits = sum(gains)
            dcg = sum(g / math.log2(p + 2) for p, g in enumerate(gains))
            idcg = sum(1 / math.log2(p + 2) for p in range(min(len(rel), k)))
            out[f"precision@{k}"].append(hits / k)
            out[f"recall@{k}"].append(hits / len(rel))
            out[f"ndcg@{k}"].append(dcg / idcg)
            out[f"hr@{k}"].append(float(hits > 0))
    return users, out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_items=st.integers(4, 15), density=st.floats(0.1, 0.6))
def test_matches_slow_reference(seed, n_items, density):
    rng = np.random.default_rng(seed)
    n_users = 6
    dense = rng.random((n_users, n_items)) < density
    dense[0, 0] = True  # at least one record
    users, items = np.nonzero(dense)
    is_test = rng.random(len(users)) < 0.4
    is_test[0] = True
    train, test = split(users, items, is_test, n_users, n_items)
    active = rng.random(n_items) < 0.8
    active[0] = True
    train = train.replace(item_active=active)
    # distinct scores (a permutation per user) so the ranking has no ties
    scores = np.argsort(rng.random((n_users, n_items)), axis=1).astype(np.float32)
    train_sets = [set(items[~is_test][users[~is_test] == u]) for u in range(n_users)]
    test_sets = [set(items[is_test][users[is_test] == u]) for u in range(n_users)]
    ks = sorted({1, min(3, n_items), n_items})
    ref_users, ref = _reference(scores, train_sets, test_sets, active, ks)
    if not ref_users:
        with pytest.raises(ValidationError, match="no user to evaluate"):
            evaluate(MatrixScorer(scores), train, test, k=ks)
        return
    res = evaluate(MatrixScorer(scores), train, test, k=ks, per_user=True, batch_size=4)
    np.testing.assert_array_equal(res["per_user"]["user_idx"], ref_users)
    for name, values in ref.items():
        np.testing.assert_allclose(res["per_user"][name], values, atol=1e-12, err_msg=name)


# -------------------------------------------------------------------------- helpers
def test_topk_items_order():
    s = torch.tensor([[0.1, 0.9, 0.5, float("-inf")], [3.0, 2.0, 1.0, 0.0]])
    np.testing.assert_array_equal(topk_items(s, 3).numpy(), [[1, 2, 0], [0, 1, 2]])
    assert topk_items(s.numpy(), 1).tolist() == [[1], [0]]
    with pytest.raises(ValidationError, match="k must be"):
        topk_items(s, 5)


def test_ranking_metrics_row_without_relevant_items_is_zero():
    scores = torch.tensor([[1.0, 0.5, 0.2], [1.0, 0.5, 0.2]])
    test = torch.tensor([[False, True, False], [False, False, False]])
    m = ranking_metrics(scores, test, (1, 2))
    assert m["ndcg@2"].tolist() == pytest.approx([1 / L3, 0.0])
    assert m["recall@2"].tolist() == [1.0, 0.0]
    assert m["precision@1"].dtype == torch.float64


def test_scorer_protocol():
    assert isinstance(MatrixScorer(HAND_SCORES), Scorer)
    assert not isinstance(object(), Scorer)


# -------------------------------------------------------------------------- errors
def test_error_mismatched_spaces(hand):
    train, _, model = hand
    other = Interactions.from_arrays([0, 1], [0, 1], user_ids=[0, 1], item_ids=[0, 1, 2, 3, 9])
    with pytest.raises(ValidationError, match="index users/items differently"):
        evaluate(model, train, other)


def test_error_model_size_mismatch(hand):
    train, test, _ = hand
    with pytest.raises(ValidationError, match="fitted on 2 users × 4 items"):
        evaluate(MatrixScorer(np.zeros((2, 4), np.float32)), train, test, k=1)


def test_error_k_too_large(hand):
    train, test, model = hand
    with pytest.raises(ValidationError, match="exceeds the number of items"):
        evaluate(model, train, test, k=(1, 6))
    for bad in (0, -1, 2.5, True, ()):
        with pytest.raises(ValidationError, match="k"):
            evaluate(model, train, test, k=bad)


def test_error_empty_test(hand):
    train, test, model = hand
    empty = test.take(np.zeros(len(test), dtype=bool))
    assert len(empty) == 0
    with pytest.raises(ValidationError, match="test has no records"):
        evaluate(model, train, empty, k=1)


def test_error_bad_scores_and_arguments(hand):
    train, test, _ = hand
    nan = HAND_SCORES.copy()
    nan[1, 2] = np.nan
    with pytest.raises(ValidationError, match="NaN"):
        evaluate(MatrixScorer(nan), train, test, k=1)

    class WrongShape(MatrixScorer):
        def scores(self, user_idx):
            return torch.zeros(len(user_idx), 3)

    with pytest.raises(ValidationError, match="shape"):
        evaluate(WrongShape(HAND_SCORES), train, test, k=1)
    with pytest.raises(ValidationError, match="not a scorer"):
        evaluate(object(), train, test, k=1)  # type: ignore[arg-type]
    model = MatrixScorer(HAND_SCORES)
    with pytest.raises(ValidationError, match="batch_size"):
        evaluate(model, train, test, k=1, batch_size=0)
    with pytest.raises(ValidationError, match="outside"):
        evaluate(model, train, test, k=1, users=np.array([5]))
    with pytest.raises(ValidationError, match="no user to evaluate"):
        evaluate(model, train, test.take(np.array([2])), k=1, users=np.array([0]))


def test_sampled_leave_one_out_protocol():
    import sisakit

    data = sisakit.datasets.synthetic(n_users=200, n_items=150, seed=1)
    train, test = sisakit.split.leave_last_out(data)

    class Oracle:  # scores every test item highest: HR@1 = 1
        n_users, n_items = data.n_users, data.n_items

        def scores(self, idx):
            s = torch.zeros(len(idx), data.n_items)
            rows = {int(u): int(i) for u, i in zip(test.user_idx, test.item_idx, strict=True)}
            for r, u in enumerate(np.asarray(idx).tolist()):
                s[r, rows[u]] = 1.0
            return s

    class Constant:  # every candidate ties: ties count against the target, so no hits
        n_users, n_items = data.n_users, data.n_items

        def scores(self, idx):
            return torch.zeros(len(idx), data.n_items)

    perfect = sisakit.metrics.evaluate_sampled(Oracle(), train, test, k=(1, 10))
    assert perfect["hr@1"] == 1.0 and perfect["ndcg@10"] == 1.0
    assert perfect["n_records"] == len(test)
    assert sisakit.metrics.evaluate_sampled(Constant(), train, test, k=(10,))["hr@10"] == 0.0
    rng = np.random.default_rng(0)

    class Random:
        n_users, n_items = data.n_users, data.n_items

        def scores(self, idx):
            return torch.from_numpy(rng.random((len(idx), data.n_items)))

    hr = sisakit.metrics.evaluate_sampled(Random(), train, test, k=(10,), n_negatives=99)["hr@10"]
    assert abs(hr - 0.10) < 0.07  # 10 of 100 candidates
    with pytest.raises(ValidationError, match="n_negatives"):
        sisakit.metrics.evaluate_sampled(Random(), train, test, n_negatives=10_000)
