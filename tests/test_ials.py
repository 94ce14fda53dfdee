"""The ``ials`` model: correctness of the solver, exact unlearning, validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import sisakit
from sisakit.engine import parameters_equal
from sisakit.models.ials import IALS, _csr, _Side, _solve


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(n_users=150, n_items=60, mean_interactions=12, seed=5)


def test_conjugate_gradient_reaches_the_normal_equation_solution():
    rng = np.random.default_rng(0)
    n_u, n_i, d, alpha, reg = 12, 9, 4, 2.0, 0.1
    dense = (rng.random((n_u, n_i)) < 0.4) * rng.integers(1, 4, (n_u, n_i))
    dense[:, 0] = 1  # every user has data
    rows, cols = np.nonzero(dense)
    r = torch.tensor(dense[rows, cols], dtype=torch.float64)
    pattern = _csr(torch.from_numpy(rows), torch.from_numpy(cols), r, (n_u, n_i),
                   torch.device("cpu"))
    y = torch.from_numpy(rng.normal(size=(n_i, d)))
    x = _solve(_Side(pattern, alpha), y, torch.zeros(n_u, d, dtype=torch.float64), reg, steps=30)
    for u in range(n_u):
        c = 1 + alpha * dense[u]
        p = (dense[u] > 0).astype(float)
        a = y.numpy().T @ np.diag(c) @ y.numpy() + reg * np.eye(d)
        b = y.numpy().T @ (c * p)
        np.testing.assert_allclose(x[u].numpy(), np.linalg.solve(a, b), rtol=1e-6, atol=1e-8)


def test_duplicate_records_add_their_weights():
    rows = torch.tensor([0, 0, 1])
    cols = torch.tensor([1, 1, 0])
    m = _csr(rows, cols, torch.tensor([1.0, 2.0, 1.0]), (2, 2), torch.device("cpu"))
    assert m.to_dense().tolist() == [[0.0, 3.0], [1.0, 0.0]]


def test_training_lowers_the_weighted_loss(data):
    m = IALS(factors=8, device="cpu")
    m.setup(data, seed=0)
    csr = data.to_csr()
    pref = (csr.toarray() > 0).astype(np.float32)
    conf = 1 + csr.toarray()

    def loss() -> float:
        pred = (m.user_embeddings() @ m.item_embeddings().T).numpy()
        return float((conf * (pref - pred) ** 2).sum())

    losses = [loss()]
    for e in range(4):
        m.partial_fit(data, epoch_seeds=[e])
        losses.append(loss())
    assert all(b < a for a, b in itertools.pairwise(losses))


def test_users_and_items_without_data_keep_zero_factors(data):
    item = data.item_ids[3]
    user = data.user_ids[7]
    rest = data.without(items=[item], users=[user])
    m = IALS(factors=8, device="cpu").fit(rest, epochs=3)
    assert torch.count_nonzero(m.item_embeddings()[3]) == 0
    assert torch.count_nonzero(m.user_embeddings()[7]) == 0
    seen = np.bincount(rest.item_idx, minlength=rest.n_items) > 0
    assert (torch.count_nonzero(m.item_embeddings(), dim=1).numpy() > 0).tolist() == seen.tolist()


def test_ials_recovers_block_structure_that_popularity_cannot():
    # Two user groups with disjoint tastes: popularity mixes them, a factor model separates them.
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(60):
        block = 0 if u < 30 else 10
        for i in rng.choice(10, size=7, replace=False):
            users.append(u)
            items.append(block + int(i))
    data = sisakit.Interactions.from_arrays(users, items)
    als = IALS(factors=4, reg=0.1, device="cpu").fit(data, epochs=10)
    pop = sisakit.models.Popularity().fit(data)
    own_block = (np.arange(60) >= 30)[:, None]

    def in_block_share(model) -> float:
        scores = model.scores(np.arange(60)).numpy().copy()
        scores[data.user_idx, data.item_idx] = -np.inf  # recommend unseen items only
        top = np.argsort(-scores, axis=1, kind="stable")[:, :3]
        return float(((data.item_ids[top] >= 10) == own_block).mean())

    assert in_block_share(als) > 0.95
    assert in_block_share(pop) < 0.75


@pytest.mark.parametrize("request_kind", ["users", "interactions", "items"])
@pytest.mark.parametrize("sharder", ["random-user", "random-interaction"])
def test_sisa_with_ials_forgets_exactly(data, request_kind, sharder):
    cfg = dict(model="ials", sharder=sharder, n_shards=3, n_slices=3, epochs=6, seed=1,
               model_params={"factors": 8}, progress=False, device="cpu")
    model = sisakit.SISA(**cfg).fit(data)
    r = 11
    request = {
        "users": [data.user_ids[[2, 40]].tolist()],
        "interactions": [[(int(data.user_ids[data.user_idx[r]]),
                           int(data.item_ids[data.item_idx[r]]))]],
        "items": [[data.item_ids[5]]],
    }[request_kind][0]
    model.forget(**{request_kind: request})
    ref = sisakit.SISA(**cfg).fit(data.without(**{request_kind: request}))
    equal, n = parameters_equal(model, ref)
    assert equal and n > 0
    users = data.user_ids
    assert np.array_equal(model.recommend(users, k=5), ref.recommend(users, k=5))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (dict(alpha=0), "alpha"),
        (dict(alpha=-1.0), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(factors=0), "factors"),
        (dict(reg=-0.1), "reg"),
        (dict(cg_steps=0), "cg_steps"),
    ],
)
def test_bad_parameters_are_rejected(data, params, match):
    with pytest.raises(sisakit.ValidationError, match=match):
        IALS(device="cpu", **params).fit(data, epochs=1)


def test_negative_or_nan_confidences_are_rejected(data):
    w = np.ones(len(data), np.float32)
    w[3] = -1.0
    with pytest.raises(sisakit.DataError, match="non-negative"):
        IALS(factors=4, device="cpu").fit(data.replace(weight=w), epochs=1)
    with pytest.raises(sisakit.DataError, match="NaN"):
        data.replace(weight=np.where(np.arange(len(data)) == 0, np.nan, 1.0))


def test_weights_raise_confidence(data):
    heavy = data.replace(weight=np.full(len(data), 5.0, np.float32))
    a = IALS(factors=8, device="cpu").fit(data, epochs=2, seed=0)
    b = IALS(factors=8, device="cpu").fit(heavy, epochs=2, seed=0)
    assert not torch.equal(a.user_embeddings(), b.user_embeddings())
