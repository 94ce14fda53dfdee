"""Cheap per-user influence estimates for a fitted SISA ensemble (no retraining)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import ValidationError
from ..sisa import SISA, EnsembleView

__all__ = ["estimate", "estimate_components"]


def _view(sisa: Any) -> EnsembleView:
    if not isinstance(sisa, SISA):
        raise ValidationError(
            f"estimate() takes a fitted sisakit.SISA ensemble, got {type(sisa).__name__}"
        )
    return sisa.view()


def _users(view: EnsembleView, users: Iterable[Any] | None) -> np.ndarray:
    if users is None:
        return np.arange(view.n_users, dtype=np.int64)
    return view.user_index(users)


def estimate_components(sisa: SISA, users: Iterable[Any] | None = None) -> dict[str, np.ndarray]:
    """The ingredients of :func:`estimate`, per user (all vectorised, no retraining).

    Parameters
    ----------
    sisa : SISA
        A fitted ensemble.
    users : sequence of raw user ids, optional
        Default: every user of the id space, in index order.

    Returns
    -------
    dict of str to ndarray of float64, shape (n_users,)
        ``work_fraction``: share of the ensemble's training work a forget of the user redoes
        (what :attr:`~sisakit.ForgetReport.work_fraction` would report); ``shard_redo``: share of the
        retrained shards' own work that is redone; ``reach``: share of all users whose
        recommendations come from the shards that would be retrained; ``activity``: the
        user's records; ``leverage``: the user's share of the records of the shards holding
        them; ``rarity``: mean ``-log`` popularity share of the user's items.
    """
    view = _view(sisa)
    idx = _users(view, users)
    data = view.data
    S, R, n_users = view.n_shards, view.n_slices, data.n_users
    shard, slice_ = view.assignment
    # Earliest slice of each (user, shard); R where the user has no record in the shard.
    first = np.full(n_users * S, R, dtype=np.int64)
    np.minimum.at(first, data.user_idx * S + shard, slice_)
    first = first.reshape(n_users, S)[idx]
    work = view.stage_work().astype(np.float64)  # (S, R)
    # redo[s, r]: work of stages r..R-1 of shard s; redo[s, R] = 0 (shard untouched).
    redo = np.concatenate([np.cumsum(work[:, ::-1], axis=1)[:, ::-1], np.zeros((S, 1))], axis=1)
    # The user's own records leave with them: each record of slice j counts in stages j..R-1,
    # all at or after the user's earliest slice, so it is subtracted from the redone work too.
    own = np.bincount(data.user_idx * S + shard, weights=(R - slice_) * view.stage_epochs,
                      minlength=n_users * S).reshape(n_users, S)[idx]
    cols = np.arange(S)[None, :]
    redone = redo[cols, first] - own  # (n, S)
    touched = first < R
    total = work.sum() - own.sum(axis=1)
    shard_total = np.where(touched, redo[:, 0][None, :], 0.0).sum(axis=1) - own.sum(axis=1)
    counts = view.user_counts.numpy().astype(np.float64)  # (S, n_users)
    served = (counts > 0).sum(axis=1) / max(n_users, 1)  # share of users each shard serves
    shard_records = counts.sum(axis=1)
    user_counts = counts[:, idx].T  # (n, S)
    item_pop = np.bincount(data.item_idx, minlength=data.n_items).astype(np.float64)
    share = np.maximum(item_pop, 1.0) / max(len(data), 1)
    # Mean -log(popularity share) of each user's items, via one sparse row-sum.
    csr = data.to_csr()
    csr.data = np.ones_like(csr.data, dtype=np.float64)
    n_u = np.asarray(csr.sum(axis=1)).ravel()
    rarity_sum = np.asarray(csr @ (-np.log(share))).ravel()
    rarity = np.divide(rarity_sum, n_u, out=np.zeros_like(rarity_sum), where=n_u > 0)[idx]
    return {
        "work_fraction": np.divide(redone.sum(axis=1), total, out=np.zeros(len(idx)),
                                   where=total > 0),
        "shard_redo": np.divide(redone.sum(axis=1), shard_total,
                                out=np.zeros(len(idx)), where=shard_total > 0),
        "reach": (touched * served[None, :]).sum(axis=1),
        "activity": user_counts.sum(axis=1),
        "leverage": (user_counts / np.maximum(shard_records, 1.0)[None, :]).sum(axis=1),
        "rarity": rarity,
    }


def estimate(
    sisa: SISA,
    users: Iterable[Any] | None = None,
    *,
    redo_power: float = 0.5,
    activity_power: float = 0.0,
) -> np.ndarray:
    """Predicted influence of forgetting each user on the ensemble's recommendations.

    A cheap score (no retraining, vectorised over users) that ranks users by how much
    forgetting them alone would change the top-K lists of all users, e.g. to prioritise or
    batch forget requests::

        score = reach * shard_redo ** redo_power * leverage ** activity_power

    with the ingredients of :func:`estimate_components`: ``reach``, the share of users whose
    recommendations come from the shards the forget retrains; ``shard_redo``, the share of those
    shards' training work that is redone (from the checkpoint before the user's earliest slice);
    ``leverage``, the user's share of those shards' records. See :doc:`/influence` for why and
    for the validation against exact forgets.

    Parameters
    ----------
    sisa : SISA
        A fitted ensemble.
    users : sequence of raw user ids, optional
        Default: every user of the id space, in index order. A user without records left
        (e.g. already forgotten) scores 0.
    redo_power : float, default 0.5
        Exponent of ``shard_redo`` (>= 0). Retraining noise of SGD models saturates quickly, so
        re-running only the last slice already changes much of a shard's lists: a small power.
    activity_power : float, default 0.0
        Exponent of ``leverage`` (>= 0). 0 suits SGD models (``bpr-mf``, ``ncf``), whose change
        does not depend on how much data the user had; about 0.25 suits models solved in closed
        form (``ials``, ``popularity``), where the user's weight in the data drives the change.

    Returns
    -------
    ndarray of float64, shape (n_users,)
        Non-negative scores; larger means a larger expected change. Comparable across the
        users of one ensemble.

    Raises
    ------
    ValidationError
        If ``sisa`` is not a fitted :class:`~sisakit.SISA`, ``users`` is empty or a power is
        negative.
    UnknownIdError
        If a user id is unknown.
    """
    for name, value in (("redo_power", redo_power), ("activity_power", activity_power)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not (
            0 <= value < np.inf
        ):
            raise ValidationError(f"{name} must be a finite number >= 0, got {value!r}")
    c = estimate_components(sisa, users)
    # The reach is 0 for a user without records, so 0 ** 0 = 1 below cannot make them count.
    return c["reach"] * c["shard_redo"] ** float(redo_power) * c["leverage"] ** float(
        activity_power)
