"""Tests of sisakit.data: id coercion, IdMap lookups and the per-record columns of Interactions.

Bad input must raise a :class:`~sisakit.SisakitError` naming the problem and the fix, and a
value must never be silently changed (no wrapped ints, no inf, no truncated timestamps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sisakit.data import IdMap, Interactions, canonical_id
from sisakit.errors import DataError, UnknownIdError, ValidationError

USERS, ITEMS = [1, 2, 3], [10, 11, 12]
RAGGED = [[[1, 2], [3]], [1, [2]], [(1, 2), (3,)], [1, {2}]]
HUGE = [2**70, -(2**70), 2**63, -(2**63) - 1, 2**64 - 1]


@pytest.fixture
def data() -> Interactions:
    return Interactions.from_arrays(USERS, ITEMS)


# ------------------------------------------------------------------------ ragged / nested ids
@pytest.mark.parametrize("bad", RAGGED, ids=repr)
def test_from_arrays_refuses_ragged_or_nested_ids(bad: list) -> None:
    with pytest.raises(ValidationError, match=r"users must be a flat list of ids.*entry \d"):
        Interactions.from_arrays(bad, [10] * len(bad))
    with pytest.raises(ValidationError, match=r"user ids must be a flat list.*one int or str"):
        Interactions.from_arrays([1], [10], user_ids=bad)


@pytest.mark.parametrize("bad", RAGGED, ids=repr)
def test_without_and_lookups_refuse_ragged_ids(data: Interactions, bad: list) -> None:
    with pytest.raises(ValidationError, match=r"users must be a flat list of ids"):
        data.without(users=bad)
    with pytest.raises(ValidationError, match=r"items must be a flat list of ids"):
        data.without(items=bad)
    with pytest.raises(ValidationError, match=r"flat list of ids"):
        data.user_map.lookup(bad)
    with pytest.raises(ValidationError, match=r"flat list of ids"):
        data.user_map.index(bad, "user")
    objects = np.empty(len(bad), dtype=object)  # the engine's path: a 1-D object array
    for k, v in enumerate(bad):
        objects[k] = v
    with pytest.raises(ValidationError, match=r"flat list of ids"):
        data.user_map.lookup(objects)


def test_ragged_attribute_ids_and_columns(data: Interactions) -> None:
    with pytest.raises(ValidationError, match=r"flat list of ids"):
        data.with_user_attributes([[1, 2], [3]], a=[1, 2])
    with pytest.raises(ValidationError, match=r"attribute 'a'.*ragged"):
        data.with_user_attributes(USERS, a=[[1, 2], [3], [4]])
    with pytest.raises(ValidationError, match=r"attribute 'a' has"):
        data.with_user_attributes(USERS, a=5)


@pytest.mark.parametrize("name", ["rating", "timestamp", "weight"])
def test_ragged_record_columns(name: str) -> None:
    with pytest.raises(ValidationError, match=rf"{name} must be a flat numeric array"):
        Interactions.from_arrays(USERS, ITEMS, **{name: [[1], [2, 3], [4]]})


# ---------------------------------------------------------------------------- ints beyond int64
@pytest.mark.parametrize("big", HUGE)
def test_from_arrays_refuses_ids_beyond_int64(big: int) -> None:
    with pytest.raises(ValidationError, match=r"does not fit a 64-bit integer id.*strings"):
        Interactions.from_arrays([1, big], [10, 11])
    with pytest.raises(ValidationError, match=r"does not fit a 64-bit integer id"):
        Interactions.from_arrays([1], [10], user_ids=[1, big])


def test_uint64_ids_never_wrap_negative() -> None:
    ids = np.array([5, 2**63 + 5], dtype=np.uint64)
    with pytest.raises(ValidationError, match=str(2**63 + 5)):
        Interactions.from_arrays(ids, [1, 2])
    d = Interactions.from_arrays(np.array([5, 7], dtype=np.uint64), [1, 2])
    assert d.user_ids.tolist() == [5, 7] and d.user_ids.dtype == np.int64


@pytest.mark.parametrize("big", HUGE)
def test_huge_ids_are_unknown_in_lookups(data: Interactions, big: int) -> None:
    idx, known = data.user_map.lookup([1, big, 3])
    assert known.tolist() == [True, False, True] and idx[[0, 2]].tolist() == [0, 2]
    with pytest.raises(UnknownIdError, match=rf"unknown user id\(s\): {big};") as info:
        data.user_map.index([1, big], "user")
    assert info.value.ids == [big]
    with pytest.raises(UnknownIdError, match=rf"{big}.*nothing was deleted"):
        data.without(users=[big])
    with pytest.raises(UnknownIdError, match=rf"{big}"):
        data.without(items=[10, big])
    with pytest.raises(UnknownIdError, match=r"interaction"):
        data.without(interactions=[(big, 10)])


def test_uint64_lookup_is_exact() -> None:
    # searchsorted promotes uint64 with int64 to float64, where 2**62 + 1 == 2**62
    m = IdMap(np.array([2**62, 2**62 + 1]), "user")
    idx, known = m.lookup(np.array([2**62 + 1], dtype=np.uint64))
    assert known.tolist() == [True] and idx.tolist() == [1]
    m = IdMap(np.array([-1, 2**62, 2**63 - 1]), "user")
    q = np.array([2**62 + 1, 2**63 - 1, 2**64 - 1], dtype=np.uint64)  # 2**64 - 1 is not -1
    _, known = m.lookup(q)
    assert known.tolist() == [False, True, False]
    with pytest.raises(UnknownIdError, match=str(2**64 - 1)):
        m.index(q[2:], "user")


def test_lookup_does_not_coerce_types() -> None:
    m = IdMap(np.array(["1", "a"]), "user")
    _, known = m.lookup([1, "a"])  # numpy would turn [1, "a"] into ["1", "a"]
    assert known.tolist() == [False, True]
    m = IdMap(np.array([1, 2]), "user")
    _, known = m.lookup([1.0, 2])
    assert known.tolist() == [False, True]


def test_absurd_ints_never_break_messages() -> None:
    big = 10**5000  # repr() of it raises ValueError (Python's int digit limit)
    with pytest.raises(ValidationError, match=r"int of many digits.*64-bit"):
        Interactions.from_arrays([big], [1])
    with pytest.raises(ValidationError, match=r"64-bit"):
        canonical_id(big)
    assert canonical_id(2**70) == 2**70  # merely unknown, not invalid


def test_float_and_mixed_ids_name_the_fix() -> None:
    with pytest.raises(ValidationError, match=r"holds floats.*convert float ids"):
        Interactions.from_arrays([1.0, 2.0], [1, 2])
    with pytest.raises(ValidationError, match=r"mixes id types \['float', 'int'\]"):
        Interactions.from_arrays([1, 2.5], [1, 2])


# ------------------------------------------------------------------- per-record value columns
def test_fractional_timestamps_are_refused_not_truncated() -> None:
    with pytest.raises(DataError, match=r"timestamp has fractional values.*records \[1\].*1\.5"):
        Interactions.from_arrays(USERS, ITEMS, timestamp=[1.0, 1.5, 2.0])
    d = Interactions.from_arrays(USERS, ITEMS, timestamp=[1.0, 2.0, 1.6e9])
    assert d.timestamp.tolist() == [1, 2, 1_600_000_000]


@pytest.mark.parametrize("ts", [[1e20], [-1e19], [2.0**63], [2**70],
                                np.array([2**64 - 1], np.uint64)], ids=repr)
def test_timestamps_beyond_int64_are_refused_not_wrapped(ts) -> None:
    with pytest.raises(DataError, match=r"timestamp does not fit int64 seconds.*records \[0\]"):
        Interactions.from_arrays([1], [10], timestamp=ts)


def test_int64_timestamp_extremes_are_kept() -> None:
    ts = np.array([-(2**63), 2**63 - 1])
    d = Interactions.from_arrays([1, 2], [1, 2], timestamp=ts)
    assert d.timestamp.tolist() == ts.tolist()
    d = Interactions.from_arrays([1], [1], timestamp=np.array([2**63 - 1], np.uint64))
    assert d.timestamp.tolist() == [2**63 - 1]


@pytest.mark.parametrize("name", ["rating", "weight"])
@pytest.mark.parametrize("value", [1e39, -1e300, 1e308])
def test_rating_and_weight_never_overflow_to_inf(name: str, value: float) -> None:
    with pytest.raises(DataError, match=rf"{name} overflows float32.*records \[1\].*rescale"):
        Interactions.from_arrays(USERS, ITEMS, **{name: [1.0, value, 2.0]})
    d = Interactions.from_arrays(USERS, ITEMS, **{name: [1.0, 3.0e38, -3.0e38]})
    assert np.isfinite(getattr(d, name)).all()


def test_nan_and_text_columns_still_refused() -> None:
    with pytest.raises(DataError, match=r"rating has NaN.*records \[1\]"):
        Interactions.from_arrays(USERS, ITEMS, rating=[1.0, math.nan, 2.0])
    with pytest.raises(ValidationError, match=r"rating must be numeric"):
        Interactions.from_arrays(USERS, ITEMS, rating=["a", "b", "c"])


# --------------------------------------------------------------------------------- take()
def test_take_refuses_out_of_range_and_wrong_masks(data: Interactions) -> None:
    with pytest.raises(ValidationError, match=r"1-D integer index in \[0, 3\)"):
        data.take([5])
    with pytest.raises(ValidationError, match=r"boolean mask of shape \(3,\)"):
        data.take(np.array([True, False]))
    with pytest.raises(ValidationError, match=r"ragged"):
        data.take([[0, 1], [2]])
    assert len(data.take([])) == 0
    assert data.take([2, 0]).record_id.tolist() == [2, 0]


def test_other_public_methods_refuse_bad_arguments(data: Interactions) -> None:
    with pytest.raises(ValidationError, match=r"interactions must be a sequence of \(user, item\)"):
        data.resolve(interactions=5)
    with pytest.raises(ValidationError, match=r"state must be a mapping of arrays"):
        Interactions.from_state(None)
    with pytest.raises(ValidationError, match=r"unknown field\(s\) \['foo'\]"):
        data.replace(foo=1)
    with pytest.raises(ValidationError, match=r"same_space\(\) needs Interactions"):
        data.same_space(None)
    with pytest.raises(ValidationError, match=r"item_active must be booleans"):
        data.replace(item_active=["False", "True", "True"])  # not silently all True
    with pytest.raises(DataError, match=r"user_features overflows float32"):
        data.replace(user_features=np.full((3, 1), 1e300))
    with pytest.raises(ValidationError, match=r"datetime64\[s\]"):
        Interactions.from_arrays([1], [1], timestamp=np.array(["2020-01-01"], "datetime64[s]"))


def test_id_ndim_helper_for_callers_outside_data() -> None:
    from sisakit.data import _id_ndim

    assert _id_ndim([1, 2], "users") == 1 and _id_ndim(np.zeros((2, 3)), "users") == 2
    with pytest.raises(ValidationError, match=r"users must be a flat list of ids.*entry 0"):
        _id_ndim([[1, 2], [3]], "users")
