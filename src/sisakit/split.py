"""Train/test splits of :class:`~sisakit.data.Interactions` that keep the id space."""

from __future__ import annotations

import logging
import numbers

import numpy as np

from .data import Interactions
from .errors import DataError, ValidationError

__all__ = ["holdout", "leave_last_out"]

logger = logging.getLogger(__name__)


def _check_data(data: object) -> Interactions:
    if not isinstance(data, Interactions):
        raise ValidationError(
            f"data must be sisakit Interactions, got {type(data).__name__}; build it with "
            "Interactions.from_arrays or a loader in sisakit.datasets"
        )
    return data


def _rank_in_user(user_idx: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Position of each record within its user's group when records are visited in ``order``
    (``order`` must sort by user first). Returned in original record order."""
    u_sorted = user_idx[order]
    n = len(order)
    new_group = np.ones(n, bool)
    new_group[1:] = u_sorted[1:] != u_sorted[:-1]
    starts = np.flatnonzero(new_group)
    group_start = np.repeat(starts, np.diff(np.append(starts, n)))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - group_start
    return rank


def holdout(
    data: Interactions, test_fraction: float = 0.2, *, seed: int = 0
) -> tuple[Interactions, Interactions]:
    """Per-user random holdout.

    Each user with ``n`` records puts ``round(test_fraction * n)`` of them (rounding halves up)
    in the test set, chosen at random, but never all of them: every user with records keeps at
    least one training record.

    Parameters
    ----------
    data : Interactions
        The records to split.
    test_fraction : float
        Fraction of each user's records held out, in (0, 1).
    seed : int
        Seed of the random choice; the same seed gives the same split.

    Returns
    -------
    train, test : Interactions
        A partition of ``data`` (by ``record_id``) in the same id space, each in the original
        record order.
    """
    data = _check_data(data)
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, numbers.Real)
        or not 0 < test_fraction < 1
    ):
        raise ValidationError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValidationError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    counts = data.user_counts()
    n_test = np.minimum(np.floor(counts * float(test_fraction) + 0.5), counts - 1)
    n_test = np.maximum(n_test, 0).astype(np.int64)
    key = rng.random(len(data))
    order = np.lexsort((key, data.user_idx))
    rank = _rank_in_user(data.user_idx, order)
    test = rank < n_test[data.user_idx]
    logger.debug("holdout: %d train / %d test records", int((~test).sum()), int(test.sum()))
    return data.take(~test), data.take(test)


def leave_last_out(data: Interactions, *, n: int = 1) -> tuple[Interactions, Interactions]:
    """Hold out each user's ``n`` latest records (by timestamp; ties broken by ``record_id``).

    Users with ``n`` records or fewer keep all of them in the training set.

    Parameters
    ----------
    data : Interactions
        The records to split; needs a ``timestamp`` column.
    n : int
        Records held out per user (>= 1).

    Returns
    -------
    train, test : Interactions
        A partition of ``data`` (by ``record_id``) in the same id space.

    Raises
    ------
    DataError
        If ``data`` has no timestamps.
    """
    data = _check_data(data)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValidationError(f"n must be an integer >= 1, got {n!r}")
    if data.timestamp is None:
        raise DataError(
            "leave_last_out needs timestamps but these interactions have none; load them with a "
            "timestamp column (e.g. read_interactions(..., timestamp_col=...)) or use holdout()"
        )
    # descending time within user: sort by (user, -timestamp, -record_id)
    order = np.lexsort((-data.record_id, -data.timestamp, data.user_idx))
    rank_from_last = _rank_in_user(data.user_idx, order)
    counts = data.user_counts()
    test = (rank_from_last < n) & (counts[data.user_idx] > n)
    logger.debug("leave_last_out(n=%d): %d test records", n, int(test.sum()))
    return data.take(~test), data.take(test)
