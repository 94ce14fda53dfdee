"""Stratified user sharders: every shard receives the same mix of activity levels or attribute
values.

Users are grouped into strata (activity quantile bins, or the values of a user attribute).
Within each stratum they are ordered by a seeded hash of their raw id and dealt round-robin to
the shards, continuing the deal across strata, so every shard holds the same number of users of
each stratum (within one) and the same number of users overall (within one).

Both sharders are *data dependent*: a user's shard depends on the other users' data. The SISA
engine stores the assignment at fit time, which keeps unlearning exact (see
:doc:`/sharding`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._hashing import hash_ids
from .._validation import MAX_COUNT
from ..constraints import Constraint, Interval, TextName
from ..data import labelled
from ..errors import ValidationError
from ..hookspecs import hookimpl
from .base import Sharder

__all__ = ["ActivityStratifiedSharder", "AttributeStratifiedSharder", "deal_strata"]


def deal_strata(strata: np.ndarray, raw_ids: np.ndarray, n_shards: int, seed: int,
                salt: str) -> np.ndarray:
    """Deal units to shards round-robin within each stratum, in seeded-hash order.

    Parameters
    ----------
    strata : ndarray of int
        Stratum of each unit.
    raw_ids : ndarray
        Raw id of each unit (hashed with ``seed`` and ``salt`` to order units in a stratum).
    n_shards : int
        Number of shards.
    seed : int
        Seed of the hash.
    salt : str
        Salt of the hash (one per sharder, so different sharders deal independently).

    Returns
    -------
    ndarray of int64
        Shard of each unit. Every shard holds ``floor`` or ``ceil`` of ``size / n_shards``
        units of every stratum, and of all units together.
    """
    h = hash_ids(raw_ids, seed, salt)
    # Sort by stratum, then hash; the position index breaks (rare) hash ties deterministically.
    order = np.lexsort((np.arange(len(strata)), h, strata))
    shard = np.empty(len(strata), dtype=np.int64)
    # Dealing the concatenated strata round-robin deals each stratum round-robin too, starting
    # where the previous one stopped: per-stratum and total counts both differ by at most one.
    shard[order] = np.arange(len(strata), dtype=np.int64) % n_shards
    return shard


class _StratifiedUserSharder(Sharder):
    """Shared machinery: strata per user with records, dealt by :func:`deal_strata`."""

    unit = "user"
    data_dependent = True
    _salt = "shard:stratified"

    def strata(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(users, stratum)``: the indices of users with records and each one's stratum."""
        raise NotImplementedError

    def assign(self, data: Any, n_shards: int, *, seed: int) -> np.ndarray:
        """Return the shard of every record (all records of a user share one shard).

        Raises
        ------
        ValidationError
            If ``n_shards`` is not a positive integer or exceeds the number of users with data.
        """
        self._check(data, n_shards)
        users, stratum = self.strata(data)
        per_user = np.zeros(data.n_users, dtype=np.int64)
        per_user[users] = deal_strata(stratum, data.user_ids[users], int(n_shards), seed,
                                      self._salt)
        return per_user[data.user_idx]


class ActivityStratifiedSharder(_StratifiedUserSharder):
    """Balance user activity across shards.

    Users are binned by their number of training records into ``n_bins`` quantile bins (users
    with equal activity always share a bin, so ties can leave fewer, uneven bins); each shard
    receives the same number of users of every bin, within one. Use it when shards should see
    the same mix of light and heavy users, e.g. so that no shard is dominated by power users.

    Parameters
    ----------
    n_bins : int
        Number of activity quantile bins (default 5).

    Notes
    -----
    Data dependent: the bins come from everybody's activity, so the engine stores the
    assignment at fit time (exactness is unaffected). ``unit = "user"``.
    """

    _salt = "shard:activity"

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "n_bins": Interval(int, 1, MAX_COUNT),
    }

    def __init__(self, n_bins: int = 5) -> None:
        self.n_bins = n_bins
        self.validate_params()  # refuse bad parameters now, before any fit

    def strata(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(users, bin)``: the users with records and each one's activity bin."""
        self.validate_params()
        counts = data.user_counts()
        users = np.flatnonzero(counts)
        activity = counts[users]
        qs = np.linspace(0.0, 1.0, int(self.n_bins) + 1)[1:-1]
        edges = np.unique(np.quantile(activity, qs, method="linear"))
        return users, np.searchsorted(edges, activity, side="right").astype(np.int64)


class AttributeStratifiedSharder(_StratifiedUserSharder):
    """Balance a user attribute (e.g. gender or age group) across shards.

    Each value of ``data.user_attributes[attribute]`` is a stratum, and users without a value
    (None, NaN, the empty string; forgotten users' blanked values) form one stratum of their
    own; each shard receives the same number of users of every stratum, within one. Use it when
    every shard model should see every group, e.g. before measuring per-group quality or
    attribute leakage.

    Parameters
    ----------
    attribute : str
        Name of a user attribute column (default ``"gender"``).

    Notes
    -----
    Data dependent (a user's shard depends on the other users of their stratum); the engine
    stores the assignment at fit time. ``unit = "user"``.
    """

    _salt = "shard:attribute"

    # Whether the data has this column is checked by strata(), which sees the data.
    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "attribute": TextName("the name of a user attribute column", example="'gender'"),
    }

    def __init__(self, attribute: str = "gender") -> None:
        self.attribute = attribute
        self.validate_params()  # refuse bad parameters now, before any fit

    def strata(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(users, stratum)``: the users with records and the index of their attribute value
        (the last stratum holds users without a value)."""
        self.validate_params()
        cols = data.user_attributes
        if self.attribute not in cols:
            raise ValidationError(
                f"the data has no user attribute {self.attribute!r}; available: "
                f"{sorted(cols) or '(none)'}. Pass attribute=<one of them> in sharder_params, or "
                "attach the column with data.with_user_attributes(ids, **columns)"
            )
        users = np.flatnonzero(data.user_counts())
        col = np.asarray(cols[self.attribute])[users]
        has = labelled(col)
        text = np.asarray(col, dtype=object).astype(str)
        values, inverse = np.unique(text[has], return_inverse=True)
        stratum = np.full(len(users), len(values), dtype=np.int64)  # missing: a stratum of its own
        stratum[has] = inverse.reshape(-1)
        return users, stratum


@hookimpl
def register_sharders(register):
    register("activity-stratified", ActivityStratifiedSharder)
    register("attribute-stratified", AttributeStratifiedSharder)
