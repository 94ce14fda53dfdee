"""Fairness of recommendation quality across user groups, before and after unlearning.

Groups are defined per user, by

* ``"activity"``: activity quantile groups (``n_groups`` equal-sized groups by number of training
  records, ``q1`` = least active);
* ``"active"``: the CURE4Rec split, the ``top`` share (default 20 %) most active users
  (``"active"``) against the rest (``"inactive"``);
* the name of a user attribute column of ``train`` (e.g. ``"gender"``); users whose value is
  blank (None, NaN, empty, or erased by a forget) are left out;
* or an array with one group label per user.

Every metric is computed once per user with :func:`sisakit.metrics.evaluate` (full ranking) and
then averaged per group with :func:`numpy.bincount`: no loop over users.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import metrics as _metrics
from ._validation import check_float, check_int, check_user_selection
from .data import Interactions, labelled
from .errors import ValidationError
from .sisa import SISA

__all__ = [
    "GroupDeltas",
    "GroupMetrics",
    "ShardGroupMetrics",
    "active_gap",
    "active_mask",
    "activity_groups",
    "group_deltas",
    "group_metrics",
    "per_shard_metrics",
    "user_groups",
]

logger = logging.getLogger(__name__)

GroupSpec = str | np.ndarray | Sequence[Any]


# ---------------------------------------------------------------------------------- groups
def _check_data(data: Any, what: str = "data") -> Interactions:
    if not isinstance(data, Interactions):
        raise ValidationError(f"{what} must be sisakit.Interactions, got {type(data).__name__}")
    return data


def _activity_rank(data: Interactions) -> np.ndarray:
    """Rank of each user by activity (0 = least active); ties broken by user index."""
    counts = data.user_counts()
    order = np.lexsort((np.arange(data.n_users), counts))
    rank = np.empty(data.n_users, dtype=np.int64)
    rank[order] = np.arange(data.n_users)
    return rank


def activity_groups(data: Interactions, n_groups: int = 4) -> np.ndarray:
    """Activity quantile group of every user.

    Users are ranked by their number of records in ``data`` (ties: by user index, so the groups
    are deterministic) and cut into ``n_groups`` groups of equal size (±1).

    Parameters
    ----------
    data : Interactions
        Usually the training data.
    n_groups : int, default 4
        Number of groups, at most the number of users.

    Returns
    -------
    ndarray of int64, shape (n_users,)
        ``0`` for the least active group, ``n_groups - 1`` for the most active.
    """
    data = _check_data(data)
    n_groups = check_int("n_groups", n_groups, 1, data.n_users)
    return _activity_rank(data) * n_groups // data.n_users


def active_mask(data: Interactions, top: float = 0.2) -> np.ndarray:
    """The ``top`` share most active users (CURE4Rec's active group), as a boolean mask.

    Parameters
    ----------
    data : Interactions
        Usually the training data.
    top : float, default 0.2
        Share of users in the active group, in (0, 1); at least one user is active and one
        inactive.

    Returns
    -------
    ndarray of bool, shape (n_users,)
    """
    data = _check_data(data)
    top = check_float("top", top, minimum=0.0, maximum=1.0, min_open=True, max_open=True,
                      example=0.2)
    if data.n_users < 2:
        raise ValidationError("the active/inactive split needs at least two users")
    n_active = min(max(1, round(top * data.n_users)), data.n_users - 1)
    return _activity_rank(data) >= data.n_users - n_active


def user_groups(
    data: Interactions, by: GroupSpec = "activity", *, n_groups: int = 4, top: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Group code of every user and the label of every group.

    Parameters
    ----------
    data : Interactions
        Data whose users are grouped (its user attributes are looked up for a column name).
    by : str or array-like
        ``"activity"``, ``"active"``, a user attribute column of ``data``, or one label per
        user (length ``n_users``; None / NaN / empty labels leave the user out).
    n_groups : int, default 4
        Groups for ``by="activity"``.
    top : float, default 0.2
        Share of active users for ``by="active"``.

    Returns
    -------
    codes : ndarray of int64, shape (n_users,)
        Group index per user, ``-1`` for users in no group.
    labels : ndarray
        Label of each group (``codes`` index into it).
    """
    data = _check_data(data)
    if isinstance(by, str) and by == "activity":
        codes = activity_groups(data, n_groups)
        return codes, np.array([f"q{g + 1}" for g in range(int(n_groups))])
    if isinstance(by, str) and by == "active":
        return active_mask(data, top).astype(np.int64), np.array(["inactive", "active"])
    if isinstance(by, str):
        if by not in data.user_attributes:
            raise ValidationError(
                f"unknown user grouping {by!r}; use 'activity', 'active', one of the user "
                f"attribute columns {sorted(data.user_attributes)}, or an array of labels"
            )
        column = np.asarray(data.user_attributes[by])
    else:
        column = np.asarray(by)
        if column.shape != (data.n_users,):
            raise ValidationError(
                f"group labels must have one entry per user ({data.n_users}), got shape "
                f"{column.shape}"
            )
    ok = labelled(column)
    if not ok.any():
        raise ValidationError("no user has a group label; check the attribute column or labels")
    labels, inv = np.unique(column[ok], return_inverse=True)
    codes = np.full(data.n_users, -1, dtype=np.int64)
    codes[ok] = inv.reshape(-1)
    return codes, labels


def _group_label(by: GroupSpec) -> str:
    return by if isinstance(by, str) else "labels"


# ---------------------------------------------------------------------------------- results
def _jsonable(a: np.ndarray) -> list[Any]:
    return [None if isinstance(v, float) and np.isnan(v) else v for v in np.asarray(a).tolist()]


@dataclass(frozen=True, eq=False)
class GroupMetrics:
    """Ranking metrics per user group (returned by :func:`group_metrics`).

    Attributes
    ----------
    by : str
        The grouping (``"activity"``, ``"active"``, an attribute name, or ``"labels"``).
    groups : ndarray
        Group labels.
    n_users : ndarray of int64
        Evaluated users per group (users without a relevant test item are skipped).
    values : dict of str to ndarray of float64
        ``"ndcg@10"`` etc. -> mean per group (NaN for a group without evaluated users).
    overall : dict of str to float
        The same metrics over every evaluated user in some group.
    """

    by: str
    groups: np.ndarray
    n_users: np.ndarray
    values: dict[str, np.ndarray]
    overall: dict[str, float]

    def gap(self, metric: str, high: Any, low: Any) -> float:
        """``values[metric]`` of group ``high`` minus that of group ``low``."""
        if metric not in self.values:
            raise ValidationError(f"unknown metric {metric!r}; computed: {sorted(self.values)}")
        labels = self.groups.tolist()
        for g in (high, low):
            if g not in labels:
                raise ValidationError(f"unknown group {g!r}; groups are {labels}")
        v = self.values[metric]
        return float(v[labels.index(high)] - v[labels.index(low)])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        return {"by": self.by, "groups": self.groups.tolist(), "n_users": self.n_users.tolist(),
                "values": {m: _jsonable(v) for m, v in self.values.items()},
                "overall": dict(self.overall)}


@dataclass(frozen=True, eq=False)
class GroupDeltas:
    """Per-group metrics before and after unlearning (returned by :func:`group_deltas`).

    ``delta[m] = after[m] - before[m]`` per group (negative: the group lost quality).
    """

    by: str
    groups: np.ndarray
    n_users: np.ndarray
    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]
    delta: dict[str, np.ndarray]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        return {"by": self.by, "groups": self.groups.tolist(), "n_users": self.n_users.tolist(),
                **{part: {m: _jsonable(v) for m, v in getattr(self, part).items()}
                   for part in ("before", "after", "delta")}}


@dataclass(frozen=True, eq=False)
class ShardGroupMetrics:
    """One metric per (shard, user group): the data of a per-shard heatmap.

    Attributes
    ----------
    metric : str
        E.g. ``"ndcg@10"``.
    source : str
        ``"ensemble"`` or ``"shard"`` (see :func:`per_shard_metrics`).
    shards : ndarray of int64, shape (S,)
    groups : ndarray, shape (G,)
    values : ndarray of float64, shape (S, G)
        Mean metric of the group's users served by the shard (NaN where there is none).
    n_users : ndarray of int64, shape (S, G)
    """

    metric: str
    source: str
    by: str
    shards: np.ndarray
    groups: np.ndarray
    values: np.ndarray
    n_users: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        return {"metric": self.metric, "source": self.source, "by": self.by,
                "shards": self.shards.tolist(), "groups": self.groups.tolist(),
                "values": [_jsonable(row) for row in self.values],
                "n_users": self.n_users.tolist()}


# ---------------------------------------------------------------------------------- metrics
def _group_means(codes: np.ndarray, values: np.ndarray, n_groups: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` per group code (codes < 0 ignored): ``(means, counts)``."""
    keep = codes >= 0
    counts = np.bincount(codes[keep], minlength=n_groups)
    sums = np.bincount(codes[keep], weights=values[keep], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means, counts.astype(np.int64)


def _per_user(model: Any, train: Interactions, test: Interactions, k: int | Sequence[int],
              users: Any, batch_size: int) -> dict[str, np.ndarray]:
    result = _metrics.evaluate(model, train, test, k=k, users=users, batch_size=batch_size,
                               per_user=True)
    return result["per_user"]


def _restrict(codes: np.ndarray, users: Any, n_users: int) -> Any:
    """Evaluate only users in some group (and in ``users`` when given)."""
    in_group = codes >= 0
    if users is None:
        return in_group
    sel = check_user_selection(users, n_users)
    mask = np.zeros(n_users, dtype=bool)
    mask[sel] = True
    return mask & in_group


def group_metrics(
    model: Any,
    train: Interactions,
    test: Interactions,
    by: GroupSpec = "activity",
    k: int | Sequence[int] = 10,
    *,
    n_groups: int = 4,
    top: float = 0.2,
    users: np.ndarray | None = None,
    batch_size: int = 512,
) -> GroupMetrics:
    """Precision, recall, NDCG and hit rate at ``k`` per user group.

    Parameters
    ----------
    model : Scorer
        A fitted model (e.g. :class:`sisakit.SISA`) in the id space of ``train``.
    train, test : Interactions
        As in :func:`sisakit.metrics.evaluate`; groups are computed from ``train``.
    by : str or array-like, default "activity"
        The grouping (see :func:`user_groups`).
    k : int or sequence of int, default 10
        Cut-off(s).
    n_groups, top : optional
        Parameters of the ``"activity"`` and ``"active"`` groupings.
    users : array of int or bool mask, optional
        Evaluate only these user indices.
    batch_size : int, default 512
        Users scored per batch.

    Returns
    -------
    GroupMetrics
    """
    train = _check_data(train, "train")
    codes, labels = user_groups(train, by, n_groups=n_groups, top=top)
    per = _per_user(model, train, test, k, _restrict(codes, users, train.n_users), batch_size)
    c = codes[per["user_idx"]]
    values, counts = {}, None
    overall = {}
    for name, v in per.items():
        if name == "user_idx":
            continue
        values[name], counts = _group_means(c, v, len(labels))
        overall[name] = float(v.mean())
    assert counts is not None
    return GroupMetrics(by=_group_label(by), groups=labels, n_users=counts, values=values,
                        overall=overall)


def active_gap(
    model: Any,
    train: Interactions,
    test: Interactions,
    k: int = 10,
    *,
    top: float = 0.2,
    metric: str = "ndcg",
    users: np.ndarray | None = None,
) -> dict[str, Any]:
    """Quality gap between the most active users and the rest (CURE4Rec).

    Parameters
    ----------
    model, train, test
        As in :func:`group_metrics`.
    k : int, default 10
        Cut-off.
    top : float, default 0.2
        Share of most active users (by training records) in the active group.
    metric : str, default "ndcg"
        ``"ndcg"``, ``"recall"``, ``"precision"`` or ``"hr"``.
    users : array, optional
        Evaluate only these user indices.

    Returns
    -------
    dict
        ``metric`` (e.g. ``"ndcg@10"``), ``active``, ``inactive``, ``gap`` (active minus
        inactive), ``relative_gap`` (gap / inactive, NaN when inactive is 0), ``n_active``,
        ``n_inactive`` and ``top``.
    """
    if metric not in _metrics.METRIC_NAMES:
        raise ValidationError(f"unknown metric {metric!r}; use one of {list(_metrics.METRIC_NAMES)}")
    k = check_int("k", k, 1)
    gm = group_metrics(model, train, test, "active", k, top=top, users=users)
    name = f"{metric}@{k}"
    inactive, active = (float(x) for x in gm.values[name])
    gap = active - inactive
    return {"metric": name, "active": active, "inactive": inactive, "gap": gap,
            "relative_gap": gap / inactive if inactive else float("nan"),
            "n_active": int(gm.n_users[1]), "n_inactive": int(gm.n_users[0]), "top": float(top)}


def group_deltas(
    before: Any,
    after: Any,
    train: Interactions,
    test: Interactions,
    by: GroupSpec = "activity",
    k: int | Sequence[int] = 10,
    *,
    n_groups: int = 4,
    top: float = 0.2,
    users: np.ndarray | None = None,
    batch_size: int = 512,
) -> GroupDeltas:
    """Per-group metrics of a model before and after unlearning, and their difference.

    Both models are evaluated on the same ``train`` / ``test`` (use the data ``before`` was fitted
    on; unlearning keeps the id space) and the same users, so the deltas compare like with like.
    To leave the forgotten users out, pass ``users`` (indices of the others).

    Parameters
    ----------
    before, after : Scorer
        E.g. ``sisa.copy()`` taken before :meth:`~sisakit.SISA.forget`, and the forgotten run.
    train, test, by, k, n_groups, top, users, batch_size
        As in :func:`group_metrics`.

    Returns
    -------
    GroupDeltas
    """
    if int(getattr(before, "n_items", -1)) != int(getattr(after, "n_items", -2)) or int(
        getattr(before, "n_users", -1)
    ) != int(getattr(after, "n_users", -2)):
        raise ValidationError(
            "before and after live in different id spaces; compare two versions of the same run "
            "(e.g. sisa.copy() taken before forgetting)"
        )
    b = group_metrics(before, train, test, by, k, n_groups=n_groups, top=top, users=users,
                      batch_size=batch_size)
    a = group_metrics(after, train, test, by, k, n_groups=n_groups, top=top, users=users,
                      batch_size=batch_size)
    delta = {m: a.values[m] - b.values[m] for m in b.values}
    return GroupDeltas(by=b.by, groups=b.groups, n_users=b.n_users, before=b.values,
                       after=a.values, delta=delta)


def per_shard_metrics(
    sisa: Any,
    train: Interactions,
    test: Interactions,
    by: GroupSpec = "activity",
    k: int = 10,
    *,
    metric: str = "ndcg",
    source: str = "ensemble",
    n_groups: int = 4,
    top: float = 0.2,
    batch_size: int = 512,
) -> ShardGroupMetrics:
    """A metric per (shard, user group): the data of a per-shard fairness heatmap.

    Parameters
    ----------
    sisa : SISA
        A fitted ensemble.
    train, test : Interactions
        As in :func:`group_metrics` (``train``: the data the ensemble was fitted on).
    by : str or array-like, default "activity"
        The grouping (see :func:`user_groups`).
    k : int, default 10
        Cut-off.
    metric : str, default "ndcg"
        ``"ndcg"``, ``"recall"``, ``"precision"`` or ``"hr"``.
    source : {"ensemble", "shard"}
        ``"ensemble"``: each user's metric under the ensemble's scores, counted in the shard
        holding most of the user's remaining records (their "home" shard; with user-level
        sharding, the only one). ``"shard"``: each shard model alone, evaluated on every user
        with records in that shard (a user can count in several shards).

    Returns
    -------
    ShardGroupMetrics
    """
    if not isinstance(sisa, SISA):
        raise ValidationError(f"per_shard_metrics() takes a fitted sisakit.SISA, got "
                              f"{type(sisa).__name__}")
    view = sisa.view()  # raises if it is not fitted
    if metric not in _metrics.METRIC_NAMES:
        raise ValidationError(f"unknown metric {metric!r}; use one of {list(_metrics.METRIC_NAMES)}")
    if source not in ("ensemble", "shard"):
        raise ValidationError(f"source must be 'ensemble' or 'shard', got {source!r}")
    k = check_int("k", k, 1)
    train = _check_data(train, "train")
    codes, labels = user_groups(train, by, n_groups=n_groups, top=top)
    name = f"{metric}@{k}"
    counts = view.user_counts.numpy()  # (S, n_users) records per shard and user
    S, G = sisa.n_shards, len(labels)
    values = np.full((S, G), np.nan)
    n = np.zeros((S, G), dtype=np.int64)
    if source == "ensemble":
        per = _per_user(sisa, train, test, k, codes >= 0, batch_size)
        u = per["user_idx"]
        home = np.where(counts[:, u].sum(axis=0) > 0, counts[:, u].argmax(axis=0), -1)
        keep = home >= 0
        cell = home[keep] * G + codes[u][keep]
        sums = np.bincount(cell, weights=per[name][keep], minlength=S * G).reshape(S, G)
        n = np.bincount(cell, minlength=S * G).reshape(S, G).astype(np.int64)
        values = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
    else:
        for s, model in enumerate(sisa.shard_models):  # one evaluation per shard
            served = (counts[s] > 0) & (codes >= 0)
            if not served.any():
                continue
            scorer = _metrics.ModelScorer(model, sisa.n_users, sisa.n_items)
            try:
                per = _per_user(scorer, train, test, k, served, batch_size)
            except ValidationError:  # no served user has a test item: the row stays empty
                continue
            values[s], n[s] = _group_means(codes[per["user_idx"]], per[name], G)
    return ShardGroupMetrics(metric=name, source=source, by=_group_label(by),
                             shards=np.arange(S, dtype=np.int64), groups=labels, values=values,
                             n_users=n)
