"""Tests of sisakit.split: per-user holdout and leave-last-out."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sisakit.data import Interactions
from sisakit.errors import DataError, ValidationError
from sisakit.split import holdout, leave_last_out


def _data(n_users: int = 50, seed: int = 0, n_items: int = 40) -> Interactions:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 25, n_users)  # some users without records
    users = np.repeat(np.arange(n_users), counts)
    items = rng.integers(0, n_items, len(users))
    ts = rng.integers(0, 20, len(users))  # many timestamp ties
    return Interactions.from_arrays(
        users, items, timestamp=ts, user_ids=np.arange(n_users), item_ids=np.arange(n_items)
    )


def _assert_partition(data: Interactions, train: Interactions, test: Interactions) -> None:
    assert train.same_space(data) and test.same_space(data)
    assert len(np.intersect1d(train.record_id, test.record_id)) == 0
    both = np.sort(np.concatenate([train.record_id, test.record_id]))
    assert np.array_equal(both, np.sort(data.record_id))


def test_holdout_is_a_partition_with_right_fractions() -> None:
    data = _data()
    train, test = holdout(data, 0.3, seed=1)
    _assert_partition(data, train, test)
    n = data.user_counts()
    expected = np.clip(np.floor(0.3 * n + 0.5), 0, np.maximum(n - 1, 0))
    assert np.array_equal(test.user_counts(), expected)
    assert np.all(train.user_counts()[n > 0] >= 1)
    assert abs(len(test) / len(data) - 0.3) < 0.05


def test_holdout_keeps_a_train_record_for_tiny_users() -> None:
    data = Interactions.from_arrays([1, 2, 2, 3, 3, 3], [1, 1, 2, 1, 2, 3])
    train, test = holdout(data, 0.9, seed=0)
    assert train.user_counts().tolist() == [1, 1, 1]
    assert test.user_counts().tolist() == [0, 1, 2]


def test_holdout_is_seeded() -> None:
    data = _data()
    a, b, c = (holdout(data, 0.2, seed=s)[1] for s in (4, 4, 5))
    assert np.array_equal(a.record_id, b.record_id)
    assert not np.array_equal(a.record_id, c.record_id)


def test_holdout_keeps_columns_aligned() -> None:
    data = _data()
    train, test = holdout(data, 0.5, seed=2)
    for part in (train, test):
        pos = part.record_id  # from_arrays numbers records 0..n-1 in order
        assert np.array_equal(part.user_idx, data.user_idx[pos])
        assert np.array_equal(part.item_idx, data.item_idx[pos])
        assert np.array_equal(part.timestamp, data.timestamp[pos])


@pytest.mark.parametrize("frac", [0, 1, -0.1, 1.5, True, "0.2", float("nan")])
def test_holdout_rejects_bad_fraction(frac: object) -> None:
    with pytest.raises(ValidationError, match="test_fraction"):
        holdout(_data(), frac)  # type: ignore[arg-type]


def test_split_rejects_non_interactions() -> None:
    with pytest.raises(ValidationError, match="Interactions"):
        holdout([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Interactions"):
        leave_last_out(None)  # type: ignore[arg-type]


def test_leave_last_out_takes_latest_per_user() -> None:
    data = _data()
    train, test = leave_last_out(data)
    _assert_partition(data, train, test)
    counts = data.user_counts()
    assert np.array_equal(test.user_counts(), (counts > 1).astype(int))
    for u in np.flatnonzero(counts > 1):
        mine = data.user_idx == u
        key = data.timestamp[mine] * 10**6 + data.record_id[mine]  # time, then record id
        assert test.record_id[test.user_idx == u][0] == data.record_id[mine][np.argmax(key)]
        assert test.timestamp[test.user_idx == u][0] == data.timestamp[mine].max()


def test_leave_last_out_ties_use_record_id() -> None:
    data = Interactions.from_arrays([1, 1, 1], [1, 2, 3], timestamp=[5, 9, 9])
    train, test = leave_last_out(data)
    assert test.record_id.tolist() == [2] and train.record_id.tolist() == [0, 1]


def test_leave_last_out_n_and_small_users() -> None:
    data = Interactions.from_arrays(
        [1, 1, 1, 2, 2, 3], [1, 2, 3, 1, 2, 1], timestamp=[3, 1, 2, 1, 2, 1]
    )
    train, test = leave_last_out(data, n=2)
    assert sorted(test.record_id.tolist()) == [0, 2]  # user 1's two latest
    assert train.user_counts().tolist() == [1, 2, 1]  # users 2 and 3 keep all (<= n records)


def test_leave_last_out_errors() -> None:
    data = Interactions.from_arrays([1, 2], [1, 2])
    with pytest.raises(DataError, match="timestamp"):
        leave_last_out(data)
    with pytest.raises(ValidationError, match="n must"):
        leave_last_out(_data(), n=0)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    frac=st.floats(0.01, 0.99),
    n=st.integers(1, 4),
)
def test_split_properties(seed: int, frac: float, n: int) -> None:
    data = _data(n_users=15, seed=seed)
    train, test = holdout(data, frac, seed=seed)
    _assert_partition(data, train, test)
    counts = data.user_counts()
    assert np.all(train.user_counts()[counts > 0] >= 1)
    train, test = leave_last_out(data, n=n)
    _assert_partition(data, train, test)
    assert np.array_equal(test.user_counts(), np.where(counts > n, n, 0))
    # every test record is no earlier than every train record of the same user
    last_train = np.full(data.n_users, -1)
    np.maximum.at(last_train, train.user_idx, train.timestamp)
    assert np.all(test.timestamp >= last_train[test.user_idx])
