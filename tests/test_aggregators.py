"""Aggregation strategies: weighted (count / validation), attention and proto.

The contract suites for these live in tests/test_contracts.py; this file checks what is specific
to each: the validation holdout, exact unlearning with fitted aggregators, the zero-influence
rule for embedding aggregators, state round trips through a run directory.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch

import sisakit
from sisakit.aggregators import AttentionAggregator, ProtoAggregator, WeightedAggregator
from sisakit.aggregators.attention import masked_softmax
from sisakit.aggregators.foldin import FoldInAggregator
from sisakit.aggregators.linear import validation_mask
from sisakit.aggregators.proto import kmeans
from sisakit.engine import parameters_equal
from sisakit.testing import engine_threads, make_interactions

MODEL = dict(model_params=dict(factors=8, batch_size=64), progress=False, device="cpu")
AGG = {
    "weighted": {"by": "validation", "validation_fraction": 0.2, "temperature": 0.1},
    "attention": {"dim": 8, "epochs": 2, "batch_size": 256, "device": "cpu"},
    "proto": {"n_prototypes": 4, "device": "cpu"},
    "fold-in": {"batch_size": 16},
}


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(n_users=100, n_items=60, mean_interactions=10, seed=5)


def make(aggregator, sharder: str = "random-interaction", n_shards: int = 3,
         n_slices: int = 2, **kw) -> sisakit.SISA:
    named = isinstance(aggregator, str)
    kw.setdefault("aggregator_params", AGG.get(aggregator) if named else None)
    return sisakit.SISA(n_shards=n_shards, n_slices=n_slices, epochs=2, sharder=sharder,
                        aggregator=aggregator, seed=1, **{**MODEL, **kw})


def assert_same_run(a: sisakit.SISA, b: sisakit.SISA) -> None:
    """Bit-equal shard parameters, aggregator state and scores."""
    equal, n = parameters_equal(a, b)
    assert n > 0 and equal, "shard parameters differ"
    sa, sb = a.aggregator.state_dict(), b.aggregator.state_dict()
    assert set(sa) == set(sb) and sa, "aggregator states differ in keys (or are empty)"
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "aggregator states differ"
    users = np.arange(a.n_users)
    assert torch.equal(a.scores(users), b.scores(users)), "scores differ"


# ---------------------------------------------------------------------------- weighted
def test_count_weighting_is_the_unfitted_default():
    agg = WeightedAggregator()
    assert agg.get_params() == {"by": "count", "temperature": 1.0, "validation_fraction": 0.1,
                                "k": 10}
    assert not agg.requires_fit and agg.holdout_mask(make_interactions(), seed=0) is None
    counts = torch.tensor([[0.0, 3.0], [2.0, 1.0]])
    assert torch.equal(agg.weights(counts), counts)


@pytest.mark.parametrize("params", [
    {"by": "ndcg"}, {"temperature": 0}, {"temperature": True}, {"validation_fraction": 1.0},
    {"validation_fraction": 0}, {"k": 0}, {"k": 2.5},
])
def test_weighted_rejects_bad_parameters(params):
    with pytest.raises(sisakit.ValidationError):
        WeightedAggregator(**params)


def test_validation_mask_is_stable_under_deletion():
    rid = np.arange(20_000)
    mask = validation_mask(rid, 0.1, seed=3)
    assert 0.09 < mask.mean() < 0.11
    keep = np.random.default_rng(0).random(len(rid)) < 0.5
    assert np.array_equal(validation_mask(rid[keep], 0.1, seed=3), mask[keep])
    assert not np.array_equal(validation_mask(rid, 0.1, seed=4), mask)


def test_validation_records_are_held_out_of_training_only(data):
    model = make("weighted", n_slices=1).fit(data)
    held = validation_mask(data.record_id, 0.2, seed=1)
    # The shards equal a fit on the training records alone (same record ids: same shards).
    ref = make("mean", n_slices=1).fit(data.take(~held))
    assert parameters_equal(model, ref)[0]
    users, items = model.shard_counts()
    assert float(users.sum()) == int((~held).sum()) == int(items.sum())
    # ... but the held-out records stay in the run: seen items are never recommended.
    assert len(model.data) == len(data)
    row = int(np.flatnonzero(held)[0])
    recs = model.recommend([data.user_ids[data.user_idx[row]]], k=5)
    assert data.item_ids[data.item_idx[row]] not in recs


def test_validation_weights_are_a_softmax_of_shard_quality(data):
    model = make("weighted", n_slices=1).fit(data)
    w = model.aggregator.state_dict()["shard_weights"]
    assert w.shape == (3,) and torch.isclose(w.sum(), torch.tensor(1.0))
    assert not torch.allclose(w, torch.full((3,), 1 / 3))  # temperature 0.1 separates shards
    hot = model.aggregator.clone(temperature=100.0).fit(model, model.data)
    assert torch.allclose(hot.state_dict()["shard_weights"], torch.full((3,), 1 / 3), atol=1e-3)


def test_shard_without_validation_users_gets_a_neutral_weight():
    data = make_interactions(n_users=40, n_items=30, n=320, seed=2)
    held = validation_mask(data.record_id, 0.2, seed=0)
    clean = np.bincount(data.user_idx[held], minlength=data.n_users) == 0  # no held-out record
    assert 2 <= clean.sum() < data.n_users - 2
    # User-level assignment: shard 2 holds exactly the users without validation records.
    shard = np.where(clean[data.user_idx], 2, data.user_idx % 2)
    model = sisakit.SISA(n_shards=3, n_slices=1, epochs=1, aggregator="weighted",
                         aggregator_params={"by": "validation", "validation_fraction": 0.2},
                         seed=0, **MODEL).fit(data, assignment=(shard, np.zeros_like(shard)))
    w = model.aggregator.state_dict()["shard_weights"].double()
    # softmax weight of the mean NDCG of shards 0 and 1 = geometric mean of their weights.
    assert float(w[2] ** 2) == pytest.approx(float(w[0] * w[1]), rel=1e-5)


def test_no_validation_records_gives_uniform_weights(data):
    model = make("weighted", n_slices=1, n_shards=2).fit(data)
    agg = model.aggregator.clone(validation_fraction=1e-9).fit(model, model.data)
    assert torch.equal(agg.state_dict()["shard_weights"], torch.full((2,), 0.5))


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("aggregator", ["weighted", "attention", "proto", "fold-in"])
@pytest.mark.parametrize("sharder", ["random-user", "random-interaction"])
def test_forget_equals_scratch_fit_with_stored_assignment(data, aggregator, sharder):
    model = make(aggregator, sharder).fit(data)
    assignment = (model.assignment[0].copy(), model.assignment[1].copy())
    users = data.user_ids[[3, 40]].tolist()
    held = validation_mask(data.record_id, 0.2, seed=1)
    row = int(np.flatnonzero(held & ~np.isin(data.user_idx, [3, 40]))[0])  # a held-out record
    pair = (data.user_ids[data.user_idx[row]], data.item_ids[data.item_idx[row]])
    report = model.forget(users=users, interactions=[pair])
    assert report.aggregator_seconds > 0
    remaining = data.without(users=users, interactions=[pair])
    keep = np.isin(data.record_id, remaining.record_id)
    ref = make(aggregator, sharder).fit(remaining, assignment=[a[keep] for a in assignment])
    assert_same_run(model, ref)


@pytest.mark.parametrize("aggregator", ["attention", "proto", "weighted", "fold-in"])
def test_fitted_state_survives_reload(data, tmp_path, aggregator):
    model = make(aggregator, workdir=tmp_path / "run").fit(data)
    model.forget(users=[data.user_ids[7]])
    assert_same_run(model, sisakit.SISA.load(tmp_path / "run", device="cpu"))


# ---------------------------------------------------------------------------- attention
def test_masked_softmax_is_zero_off_mask_and_never_nan():
    logits = torch.tensor([[1.0, 50.0], [2.0, -3.0], [0.5, 7.0]])
    valid = torch.tensor([[True, False], [True, False], [False, False]])
    w = masked_softmax(logits, valid)
    assert torch.equal(w[:, 1], torch.zeros(3)) and torch.equal(w[2], torch.zeros(2))
    assert torch.allclose(w[:2, 0], torch.softmax(logits[:2, 0], 0))


@pytest.mark.parametrize("aggregator", ["attention", "proto"])
def test_untrained_shard_vectors_have_no_influence(aggregator):
    """Garbage in a shard's vector of a user (item) it never trained on changes nothing."""
    data = make_interactions(n_users=60, n_items=200, n=600, seed=3)
    model = make(aggregator, "random-user", n_slices=1).fit(data)
    before = model.aggregator.state_dict()
    scores = model.scores(np.arange(data.n_users))
    users, items = model.shard_counts()
    s = 0
    u = torch.nonzero(users[s] == 0).flatten()
    i = torch.nonzero(items[s] == 0).flatten()
    assert len(u) and len(i), "the fixture must leave some users and items out of shard 0"
    shard = model.shard_models[s]
    orig_p, orig_q = shard.user_embeddings()[u].clone(), shard.item_embeddings()[i].clone()
    with torch.no_grad():
        shard.item_embeddings()[i] = 1e3  # a view of the live parameters
    shard.set_user_embeddings(u, torch.full((len(u), 8), -1e3))
    assert torch.equal(shard.user_embeddings()[u], torch.full((len(u), 8), -1e3))
    assert not torch.equal(shard.user_embeddings()[u], orig_p)
    assert not torch.equal(shard.item_embeddings()[i], orig_q)
    with engine_threads(model):  # compared bit for bit with the engine's fit below
        refit = model.aggregator.clone().fit(model.view(), model.data)
    model._state = model._state.evolve(aggregator=refit)
    after = refit.state_dict()
    if aggregator == "attention":  # the whole learned state is untouched
        assert all(torch.equal(before[k], after[k]) for k in before)
    # Shard 0's own scores changed for those users/items, the ensemble's did not.
    assert torch.equal(model.scores(np.arange(data.n_users)), scores)


def test_attention_score_mode_for_models_without_embeddings(data):
    model = make("attention", model="popularity", model_params={}).fit(data)
    agg = model.aggregator
    assert not agg.uses_embeddings and set(agg.state_dict()) == {"shard_bias", "count_slope"}
    counts, _ = model.shard_counts()
    w = agg.weights(counts[:, :10])
    assert torch.equal(w > 0, counts[:, :10] > 0)
    assert torch.allclose(w.sum(0), torch.ones(10))
    with pytest.raises(sisakit.ValidationError, match="mode='scores'"):
        make("attention", model="popularity", model_params={},
             aggregator_params={"mode": "embeddings", "epochs": 1, "device": "cpu"}).fit(data)


def test_attention_learns_something(data):
    """Trained attention ranks held-out positives above random items more often than chance."""
    train, test = sisakit.split.holdout(data, 0.2, seed=0)
    model = make("attention", n_slices=1, aggregator_params={**AGG["attention"], "epochs": 8}
                 ).fit(train)
    res = sisakit.metrics.evaluate(model, train, test, k=10)
    random_ndcg = sisakit.metrics.evaluate(_RandomScorer(train), train, test, k=10)["ndcg@10"]
    assert res["ndcg@10"] > random_ndcg


class _RandomScorer:
    def __init__(self, data):
        self.n_users, self.n_items = data.n_users, data.n_items

    def scores(self, user_idx):
        g = torch.Generator().manual_seed(0)
        return torch.rand(len(user_idx), self.n_items, generator=g)


@pytest.mark.parametrize(("cls", "params"), [
    (AttentionAggregator, {"dim": 0}), (AttentionAggregator, {"epochs": 1.5}),
    (AttentionAggregator, {"lr": 0}), (AttentionAggregator, {"mode": "both"}),
    (AttentionAggregator, {"device": "tpu"}), (ProtoAggregator, {"n_prototypes": 0}),
    (ProtoAggregator, {"shrinkage": -1.0}), (ProtoAggregator, {"seed": -1}),
    (FoldInAggregator, {"reg": 0}), (FoldInAggregator, {"alpha": -1.0}),
    (FoldInAggregator, {"batch_size": 0}),
])
def test_rejects_bad_parameters(cls, params):
    with pytest.raises(sisakit.ValidationError):
        cls(**params)


@pytest.mark.parametrize("cls", [AttentionAggregator, ProtoAggregator, WeightedAggregator,
                                 FoldInAggregator])
def test_unfitted_use_names_the_fix(cls):
    agg = cls(by="validation") if cls is WeightedAggregator else cls()
    extra = {"user_idx": torch.arange(3)} if agg.needs_user_idx else {}
    with pytest.raises(sisakit.ValidationError, match="not fitted"):
        agg.aggregate(torch.zeros(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.bool),
                      torch.ones(2, 3), **extra)


# ---------------------------------------------------------------------------- proto
def test_proto_without_shrinkage_is_the_mean(data):
    mean = make("mean").fit(data)
    proto = make("proto", aggregator_params={"shrinkage": 0.0}).fit(data)
    users = np.arange(data.n_users)
    torch.testing.assert_close(proto.scores(users), mean.scores(users), rtol=1e-5, atol=1e-5)


def test_proto_shrinks_sparse_vectors_more(data):
    model = make("proto", n_slices=1).fit(data)
    st = model.aggregator.state_dict()
    users, _ = model.shard_counts()
    move = (st["user_aug"][..., :8] - st["user_aug"][..., 8:]).norm(dim=2)  # |p~ - p|
    assert bool((move[users == 0] == 0).all()), "untrained rows must not move"
    rel = move / st["user_aug"][..., 8:].norm(dim=2)
    few, many = users == 1, users >= 4
    assert few.any() and many.any()
    assert float(rel[few].mean()) > float(rel[many].mean())


def test_proto_needs_embeddings(data):
    with pytest.raises(sisakit.ValidationError, match="embeddings"):
        make("proto", model="popularity", model_params={}).fit(data)


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(50, 2, generator=g) * 0.1 + 5, torch.randn(50, 2, generator=g) * 0.1 - 5])
    c, assign = kmeans(x, 2, 10, torch.Generator().manual_seed(1))
    assert len(torch.unique(assign[:50])) == 1 and len(torch.unique(assign[50:])) == 1
    assert assign[0] != assign[50]
    assert sorted(c[:, 0].round().tolist()) == [-5.0, 5.0]
    c0, a0 = kmeans(x[:0], 3, 5, torch.Generator().manual_seed(1))
    assert c0.shape == (0, 2) and a0.shape == (0,)


# ---------------------------------------------------------------------------- engine opt-in
class _Recorder(sisakit.Aggregator):
    needs_user_idx = True
    seen: ClassVar[list] = []

    def __init__(self) -> None:
        pass

    def weights(self, counts):
        return (counts > 0).float()

    def aggregate(self, scores, mask, counts, user_idx=None):
        _Recorder.seen.append(user_idx.clone())
        return super().aggregate(scores, mask, counts)


def test_engine_passes_user_idx_only_to_opted_in_aggregators(data):
    model = make(_Recorder(), n_slices=1).fit(data)
    _Recorder.seen.clear()
    model.scores(np.array([5, 2, 9]))
    assert len(_Recorder.seen) == 1 and torch.equal(_Recorder.seen[0], torch.tensor([5, 2, 9]))


# ---------------------------------------------------------------------------- fold-in
def _fold_in_by_hand(model: sisakit.SISA, user: int, reg: float = 1.0, alpha: float = 1.0
                     ) -> torch.Tensor:
    """The module docs' formula for one user, one shard at a time, in float64."""
    hist = torch.from_numpy(model.data.to_csr()[user].indices.astype(np.int64))
    _, items = model.shard_counts()
    total, den = torch.zeros(model.n_items, dtype=torch.float64), torch.zeros(model.n_items)
    for s, m in enumerate(model.shard_models):
        seen = items[s] > 0
        y = m.item_embeddings().double() * seen[:, None]
        yh = y[hist]
        a = y.T @ y + alpha * yh.T @ yh + reg * torch.eye(y.shape[1], dtype=torch.float64)
        x = torch.linalg.solve(a, (1 + alpha) * yh.sum(0))
        sc = x @ y.T + m.item_biases().double()
        mu, sd = sc[seen].mean(), sc[seen].std(unbiased=False)
        total += torch.where(seen, (sc - mu) / sd, 0.0)
        den += seen.float()
    return torch.where(den > 0, total / den.clamp_min(1), 0.0)


def test_fold_in_matches_its_formula(data):
    model = make("fold-in", "random-user", n_slices=1).fit(data)
    users = np.array([0, 17, 55])
    got = model.scores(users)
    _, items = model.shard_counts()
    scored = (items > 0).any(0)
    for row, u in enumerate(users):
        expected = _fold_in_by_hand(model, int(u))
        torch.testing.assert_close(got[row][scored].double(), expected[scored], rtol=1e-4,
                                   atol=1e-4)


def test_fold_in_uses_every_shard_but_no_untrained_item_vector():
    """Every shard scores every user with history; garbage in item vectors a shard never
    trained on changes nothing."""
    data = make_interactions(n_users=60, n_items=200, n=600, seed=3)
    model = make("fold-in", "random-user", n_slices=1).fit(data)
    scores = model.scores(np.arange(data.n_users))
    users, items = model.shard_counts()
    shard = model.shard_models[0]
    i = torch.nonzero(items[0] == 0).flatten()
    assert len(i), "the fixture must leave some items out of shard 0"
    with torch.no_grad():
        shard.item_embeddings()[i] = 1e3  # a view of the live parameters
    with engine_threads(model):
        refit = model.aggregator.clone().fit(model.view(), model.data)
        model._state = model._state.evolve(aggregator=refit)
    assert torch.equal(model.scores(np.arange(data.n_users)), scores)
    # A shard that never trained on a user still contributes (through its item factors).
    with torch.no_grad():
        j = torch.nonzero(items[0] > 0).flatten()
        g = torch.Generator().manual_seed(0)  # fold-in is invariant to sign and scale: add noise
        shard.item_embeddings()[j] += torch.randn(len(j), 8, generator=g)
    with engine_threads(model):
        refit = model.aggregator.clone().fit(model.view(), model.data)
        model._state = model._state.evolve(aggregator=refit)
    outsiders = torch.nonzero(users[0] == 0).flatten().numpy()
    assert not torch.equal(model.scores(outsiders), scores[outsiders])


def test_fold_in_forgotten_user_gets_popularity(data):
    model = make("fold-in", "random-user", n_slices=1).fit(data)
    user = data.user_ids[5]
    model.forget(users=[user])
    idx = model.view().user_index([user])
    sc = model.scores(idx)
    active = torch.from_numpy(model.data.item_active.copy())
    assert bool((sc[0][active] < -1e29).all()), "a forgotten user must get the popularity fallback"


def test_fold_in_needs_embeddings(data):
    with pytest.raises(sisakit.ValidationError, match="item embeddings"):
        make("fold-in", model="popularity", model_params={}).fit(data)
