"""The ``sasrec`` sequential model: sequence building, learning, scoring input checks, SISA."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import sisakit
from sisakit import plugins
from sisakit._rng import epoch_seeds
from sisakit.data import Interactions
from sisakit.datasets import synthetic
from sisakit.errors import ValidationError
from sisakit.metrics import evaluate
from sisakit.models.sasrec import PAD, user_sequences
from sisakit.split import leave_last_out
from sisakit.testing import assert_exact


def _model(**kw):
    params = dict(factors=16, n_heads=2, max_len=8, batch_size=32, dropout=0.1, lr=0.01,
                  device="cpu")
    params.update(kw)
    return plugins.get("model", "sasrec")(**params)


def _chains(n_users=120, n_items=40, length=9, seed=0) -> Interactions:
    """Every user walks consecutive items (i, i+1, ... mod n_items) from a random start, with
    timestamps that are NOT in record order (records are shuffled)."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, n_items, n_users)
    users = np.repeat(np.arange(n_users), length)
    steps = np.tile(np.arange(length), n_users)
    items = (start[users] + steps) % n_items
    perm = rng.permutation(len(users))
    return Interactions.from_arrays(users[perm], items[perm],
                                    timestamp=(1000 * users + 10 * steps)[perm])


def test_user_sequences_orders_by_time_and_truncates():
    data = Interactions.from_arrays([1, 1, 1, 2, 1, 3], [10, 20, 30, 10, 40, 50],
                                    timestamp=[5, 1, 3, 2, 9, 0])
    seqs = user_sequences(data, 3)
    item = data.item_map.index  # raw id -> index
    u1, u2, u3 = data.user_map.index([1, 2, 3], "users")
    # user 1 by time: 20 (t1), 30 (t3), 10 (t5), 40 (t9) -> the last three, oldest first
    assert seqs[u1].tolist() == [int(i) + 1 for i in item([30, 10, 40], "items")]
    assert seqs[u2].tolist() == [PAD, PAD, int(item([10], "items")[0]) + 1]
    assert seqs[u3].tolist() == [PAD, PAD, int(item([50], "items")[0]) + 1]


def test_user_sequences_ties_broken_by_record_id_and_no_timestamps():
    data = Interactions.from_arrays([1, 1, 1], [10, 20, 30], timestamp=[7, 7, 7])
    plain = Interactions.from_arrays([1, 1, 1], [10, 20, 30])
    expected = [int(i) + 1 for i in data.item_map.index([10, 20, 30], "items")]
    assert user_sequences(data, 3)[0].tolist() == expected
    assert user_sequences(plain, 4)[0].tolist() == [PAD, *expected]


def test_user_sequences_matches_a_plain_reference():
    data = synthetic(n_users=50, n_items=30, mean_interactions=12, seed=3)
    seqs = user_sequences(data, 7).numpy()
    for u in range(data.n_users):  # reference: a plain per-user sort (test only)
        mask = data.user_idx == u
        order = np.lexsort((data.record_id[mask], data.timestamp[mask]))
        hist = (data.item_idx[mask][order] + 1)[-7:]
        row = seqs[u]
        assert row[7 - len(hist):].tolist() == hist.tolist()
        assert (row[:7 - len(hist)] == PAD).all()


def test_sasrec_learns_a_sequential_pattern():
    data = _chains()
    train, test = leave_last_out(data)
    model = _model().fit(train, epochs=40, seed=0)
    pop = plugins.get("model", "popularity")().fit(train, epochs=1, seed=0)
    hr = evaluate(model, train, test, k=(1, 10))
    # the next item is determined by the last one: a sequence model finds it, popularity cannot
    assert hr["hr@1"] > 0.9
    assert evaluate(pop, train, test, k=10)["hr@10"] < 0.5


def test_scores_equal_score_sequences_of_the_history():
    data = _chains(n_users=30)
    model = _model().fit(data, epochs=2, seed=1)
    users = np.arange(data.n_users)
    hist = model.histories(users)
    assert torch.equal(model.scores(users), model.score_sequences(hist))
    as_lists = [row[row != PAD].numpy() - 1 for row in hist]
    assert torch.allclose(model.score_sequences(as_lists), model.scores(users))


@pytest.mark.parametrize(("seqs", "match"), [
    ([np.arange(9)], "at most max_len=8"),
    (np.ones((2, 9), dtype=np.int64), "at most max_len=8"),
    ([[0, 1, 999]], "outside"),
    (np.ones((2, 3), dtype=np.float32), "integer"),
    ([[0.5, 1.0]], "item indices"),
])
def test_score_sequences_rejects_bad_histories(seqs, match):
    model = _model().fit(_chains(n_users=20), epochs=1, seed=0)
    with pytest.raises(ValidationError, match=match):
        model.score_sequences(seqs)


@pytest.mark.parametrize(("params", "match"), [
    (dict(factors=10, n_heads=3), "must divide factors"),
    (dict(dropout=1.0), "dropout"),
    (dict(max_len=0), "max_len"),
    (dict(time_budget=0), "time_budget"),
])
def test_bad_parameters_are_refused(params, match):
    with pytest.raises(ValidationError, match=match):
        _model(**params).fit(_chains(n_users=10), epochs=1, seed=0)


def test_time_budget_stops_after_the_first_epoch(caplog):
    data = _chains(n_users=40)
    cut = _model(time_budget=1e-9)
    with caplog.at_level(logging.WARNING, logger="sisakit.models.sasrec"):
        cut.fit(data, epochs=5, seed=0)
    assert "time_budget" in caplog.text
    one = _model()
    one.setup(data, seed=0)
    one.partial_fit(data, epoch_seeds=epoch_seeds(0, (0, 0), 5)[:1])
    for key, value in one.state_dict().items():
        assert torch.equal(value, cut.state_dict()[key]), key


def test_unfitted_and_unbound_models_say_what_to_do():
    with pytest.raises(ValidationError, match="fit"):
        _model().scores(np.arange(3))
    fitted = _model().fit(_chains(n_users=10), epochs=1, seed=0)
    fresh = fitted.clone()
    fresh.load_state_dict(fitted.state_dict())
    with pytest.raises(ValidationError, match="bind_space"):
        fresh.scores(np.arange(3))


def test_sisa_forget_with_sasrec_is_exact_and_histories_drop_the_record(tmp_path):
    data = _chains(n_users=60)
    sisa = sisakit.SISA(model=_model(), n_shards=3, n_slices=2, epochs=2, seed=0,
                        workdir=tmp_path / "run", progress=False, device="cpu")
    sisa.fit(data)
    user, item = data.user_ids[5], data.item_ids[data.item_idx[data.user_idx == 5][0]]
    sisa.forget(interactions=[(user, item)], users=[data.user_ids[7]])
    first = data.item_idx[data.user_idx == 5][0]
    keep = ~(((data.user_idx == 5) & (data.item_idx == first)) | (data.user_idx == 7))
    assert len(sisa.data) == int(keep.sum())
    assert_exact(sisa, data.take(keep))
    for shard_model in sisa.shard_models:  # every shard reads the remaining histories
        assert int(first) + 1 not in shard_model.histories([5])[0].tolist()
        assert (shard_model.histories([7]) == PAD).all()
