"""RecEraser's balanced data partition (Chen et al., "Recommendation Unlearning", WWW 2022).

Embeddings are pre-trained on the data with a recommender (``bpr-mf`` by default), then a
balanced k-means groups similar units: ``n_shards`` anchors are drawn at random (seeded), every
unit's squared Euclidean distance to every anchor is computed, units are assigned greedily in
order of increasing distance to an anchor whose shard still has room, and each anchor moves to
the mean of its members; this repeats for ``max_iter`` iterations (or until the assignment stops
changing). Three granularities exist: users (``receraser-user``), items (``receraser-item``) and
user–item interactions (``receraser-interaction``, whose embedding is the concatenation of the
user's and the item's).

Differences from the reference code (github.com/chenchongthu/Recommendation-Unlearning): shards
are strictly balanced (capacity ``ceil(n_units / n_shards)``, and only ``n_units mod n_shards``
shards may reach it, so no shard is ever empty) where the reference allows 1.2 times the mean
size; the interaction distance is the squared distance of the concatenated embeddings (the sum of
the user and the item distance) where the reference multiplies the two distances.

The pre-trained embeddings are transient: they are computed inside
:meth:`~sisakit.Sharder.assign` and dropped when it returns, so the sharder keeps nothing of
anybody's data. The partition itself was computed from data that may later be deleted (see :doc:`/sharding`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from .. import plugins
from .._device import deterministic, resolve_device, torch_threads
from .._rng import derive_seed
from .._validation import MAX_STEPS
from ..constraints import Constraint, Interval, ParamsDict, TextName
from ..errors import ValidationError
from ..hookspecs import hookimpl
from .base import Sharder

__all__ = [
    "RecEraserInteractionSharder",
    "RecEraserItemSharder",
    "RecEraserUserSharder",
    "balanced_assign",
    "balanced_kmeans",
]

logger = logging.getLogger(__name__)

_PRETRAIN, _ANCHORS = 2_000_001, 2_000_002  # spawn-key tags of the sharder's random streams
_CHUNK = 1 << 22  # rows x anchors x dims computed at once in distance blocks

# A block is (table, index): unit n's features are table[index[n]]; a unit's embedding is the
# concatenation of its blocks (one block for users or items, two for interactions). Keeping the
# tables factored avoids materialising an (n_records, 2d) matrix for interactions.
Block = tuple[np.ndarray, np.ndarray]


def balanced_assign(dist: np.ndarray) -> np.ndarray:
    """Greedy balanced assignment of units to anchors by increasing distance.

    Equivalent to walking every (unit, anchor) pair in order of increasing distance (ties by
    unit, then anchor) and assigning the unit to the anchor unless the unit is already
    assigned or the anchor is full. Capacity is ``q + 1`` for the first ``r`` anchors to fill
    and ``q`` for the rest (``n = q·k + r``), so every anchor receives ``q`` or ``q + 1``
    units: never more than ``ceil(n / k)``, never none.

    The walk is vectorised in rounds: every unassigned unit proposes to its nearest non-full
    anchor; all proposals up to the first one that fills an anchor are accepted at once (no
    anchor changes state before it, so the sequential walk accepts exactly these). Each round
    fills at least one anchor, so there are at most ``k + 1`` rounds.

    Parameters
    ----------
    dist : ndarray of shape (n, k)
        Distance of every unit to every anchor, ``n >= k``.

    Returns
    -------
    ndarray of int64
        Anchor of each unit.
    """
    dist = np.asarray(dist, dtype=np.float64)
    n, k = dist.shape
    if k < 1 or n < k:
        raise ValidationError(f"balanced_assign got {n} units for {k} anchors; it needs "
                              f"1 <= anchors <= units, so use at most {n} anchors")
    q, r = divmod(n, k)
    cap = q + 1 if r else q
    big_left = r  # anchors that may still fill up to q + 1
    labels = np.full(n, -1, dtype=np.int64)
    count = np.zeros(k, dtype=np.int64)
    full = np.zeros(k, dtype=bool)
    todo = np.arange(n, dtype=np.int64)
    while len(todo):  # one round per anchor that fills (at most k + 1)
        d = np.take(dist, todo, axis=0)  # np.take: much faster than dist[todo] for rows
        d[:, full] = np.inf
        choice = np.argmin(d, axis=1)  # ties: the lowest anchor, as in the sequential walk
        key = np.take_along_axis(d, choice[:, None], axis=1)[:, 0]
        # The walk orders pairs by (distance, unit); ``todo`` is ascending, so positions in it
        # order units. Find the earliest proposal that fills an anchor: for each open anchor,
        # its room-th proposal in that order (a partition, not a sort: O(n) per anchor).
        fill: tuple[float, int, int] | None = None
        for a in np.flatnonzero(~full):  # one pass per open anchor
            at = np.flatnonzero(choice == a)
            room = cap - count[a]
            if len(at) < room:
                continue
            ka = key[at]
            kth = np.partition(ka, room - 1)[room - 1]
            pos = int(at[ka == kth][room - 1 - np.count_nonzero(ka < kth)])
            if fill is None or (kth, pos) < fill[:2]:
                fill = (float(kth), pos, int(a))
        if fill is None:
            take = np.ones(len(todo), dtype=bool)
        else:
            kth, pos, _ = fill
            take = (key < kth) | ((key == kth) & (np.arange(len(todo)) <= pos))
        labels[todo[take]] = choice[take]
        count += np.bincount(choice[take], minlength=k)
        if fill is not None:
            full[fill[2]] = True
            if cap == q + 1 and r:
                big_left -= 1
                if big_left == 0:  # the large shards are used up: the rest stop at q
                    cap = q
                    full |= count >= q
        todo = todo[~take]
    return labels


def _sq_dists(table: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(len(table), len(centroids))``, by explicit differences
    (not the expanded dot-product form, whose cancellation can reorder near ties)."""
    k, d = centroids.shape
    out = np.empty((len(table), k), dtype=np.float64)
    step = max(1, _CHUNK // max(1, k * d))
    for start in range(0, len(table), step):  # chunks of rows, vectorised inside
        diff = table[start:start + step, None, :] - centroids[None, :, :]
        out[start:start + step] = np.einsum("nkd,nkd->nk", diff, diff)
    return out


def balanced_kmeans(blocks: Sequence[Block], n_units: int, k: int, *, max_iter: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Balanced k-means over units whose embedding is the concatenation of ``blocks``.

    Parameters
    ----------
    blocks : sequence of (table, index)
        Unit ``n``'s embedding is the concatenation of ``table[index[n]]`` over the blocks.
    n_units : int
        Number of units (the length of every ``index``).
    k : int
        Number of clusters (shards), ``1 <= k <= n_units``.
    max_iter : int
        Maximum number of assignment / update iterations.
    rng : numpy.random.Generator
        Draws the initial anchors (``k`` distinct units).

    Returns
    -------
    labels : ndarray of int64
        Cluster of each unit (sizes ``floor`` or ``ceil`` of ``n_units / k``).
    iterations : int
        Iterations run (fewer than ``max_iter`` when the assignment converged).
    """
    anchors = np.sort(rng.choice(n_units, size=k, replace=False))
    centroids = [table[index[anchors]] for table, index in blocks]
    labels: np.ndarray | None = None
    iterations = 0
    for _ in range(max_iter):  # one iteration per k-means step
        iterations += 1
        dist = np.zeros((n_units, k), dtype=np.float64)
        for (table, index), cen in zip(blocks, centroids, strict=True):
            dist += _sq_dists(table, cen)[index]
        new = balanced_assign(dist)
        if labels is not None and np.array_equal(new, labels):
            break  # converged: the means, and so every later step, would not change
        labels = new
        sizes = np.bincount(labels, minlength=k).astype(np.float64)
        centroids = []
        for table, index in blocks:
            member = sp.csr_matrix((np.ones(n_units), (labels, index)), shape=(k, len(table)))
            centroids.append(np.asarray(member @ table) / sizes[:, None])
    assert labels is not None
    return labels, iterations


class _RecEraserSharder(Sharder):
    """Shared machinery: pre-train, build the unit blocks, run balanced k-means."""

    data_dependent = True
    _salt = 0

    # Whether ``model`` is registered and takes ``model_params`` is checked when
    # :meth:`embeddings` builds it.
    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "model": TextName("the registered name of a model", example="'bpr-mf'"),
        "model_params": ParamsDict(none=True, example="{'factors': 32}"),
        "epochs": Interval(int, 1, MAX_STEPS),
        "max_iter": Interval(int, 1, MAX_STEPS),
    }

    def __init__(
        self,
        model: str = "bpr-mf",
        model_params: dict[str, Any] | None = None,
        epochs: int = 10,
        max_iter: int = 20,
    ) -> None:
        self.model = model
        self.model_params = model_params
        self.epochs = epochs
        self.max_iter = max_iter
        self.validate_params()  # refuse bad parameters now, before any fit

    def embeddings(self, data: Any, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Pre-train ``model`` on ``data`` and return its ``(user, item)`` embeddings (float64).

        The model is built through the plugin registry, trained for ``epochs`` epochs from a
        seed derived from ``seed``, on one thread (so the same seed gives the same bits), and
        discarded.
        """
        self.validate_params()
        est = plugins.build("model", self.model, **(self.model_params or {}))
        device = resolve_device(getattr(est, "device", "cpu"))
        with torch_threads(1), deterministic(device):
            est.fit(data, epochs=int(self.epochs), seed=derive_seed(seed, _PRETRAIN, self._salt))
        users, items = est.user_embeddings(), est.item_embeddings()
        if users is None or items is None:
            raise ValidationError(
                f"model {self.model!r} has no user/item embeddings to partition by; use a factor "
                "model such as 'bpr-mf' or 'ials'"
            )
        with torch.no_grad():
            return (users.detach().cpu().double().numpy().copy(),
                    items.detach().cpu().double().numpy().copy())

    def blocks(self, data: Any, users: np.ndarray, items: np.ndarray
               ) -> tuple[list[Block], np.ndarray]:
        """``(blocks, units)``: the k-means blocks and the index of each unit."""
        raise NotImplementedError

    def spread(self, data: Any, units: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Shard of every record given the shard (label) of every unit."""
        raise NotImplementedError

    def assign(self, data: Any, n_shards: int, *, seed: int) -> np.ndarray:
        """Return the shard of every record.

        The embeddings are pre-trained here and not kept.

        Raises
        ------
        ValidationError
            If ``n_shards`` is not a positive integer, exceeds the number of units, or a
            parameter is invalid.
        """
        self._check(data, n_shards)
        self.validate_params()
        users, items = self.embeddings(data, seed=seed)
        blocks, units = self.blocks(data, users, items)
        del users, items
        rng = np.random.default_rng(derive_seed(seed, _ANCHORS, self._salt))
        labels, iters = balanced_kmeans(blocks, len(units), int(n_shards),
                                        max_iter=int(self.max_iter), rng=rng)
        logger.info("%s: balanced k-means over %d %ss converged after %d iteration(s)",
                    type(self).__name__, len(units), self.unit, iters)
        return self.spread(data, units, labels)


class RecEraserUserSharder(_RecEraserSharder):
    """RecEraser's user-based balanced partition: users with similar pre-trained embeddings
    share a shard, and every shard holds ``floor`` or ``ceil`` of ``n_users / n_shards`` users.

    Use it when shard models should specialise on groups of similar users (RecEraser reports
    better shard models than a random partition); pair it with a learned aggregator.

    Parameters
    ----------
    model : str
        Registered model that pre-trains the embeddings (default ``"bpr-mf"``; it must expose
        ``user_embeddings``/``item_embeddings``).
    model_params : dict, optional
        Constructor arguments of that model (e.g. ``{"factors": 32, "device": "cpu"}``).
    epochs : int
        Pre-training epochs (default 10).
    max_iter : int
        Maximum balanced k-means iterations (default 20; it stops earlier when converged).

    Notes
    -----
    Data dependent; ``unit = "user"``. The pre-trained embeddings exist only inside
    :meth:`~sisakit.Sharder.assign` and are not kept, so nothing of a forgotten user survives
    in the sharder; the partition the engine stored was, however, computed with everybody's data.
    """

    unit = "user"
    _salt = 1

    def blocks(self, data: Any, users: np.ndarray, items: np.ndarray
               ) -> tuple[list[Block], np.ndarray]:
        units = np.flatnonzero(data.user_counts())
        return [(users[units], np.arange(len(units)))], units

    def spread(self, data: Any, units: np.ndarray, labels: np.ndarray) -> np.ndarray:
        per_user = np.zeros(data.n_users, dtype=np.int64)
        per_user[units] = labels
        return per_user[data.user_idx]


class RecEraserItemSharder(_RecEraserSharder):
    """RecEraser's item-based balanced partition: items with similar pre-trained embeddings share
    a shard, and every record goes to its item's shard (``unit = "item"``: shards and slices are
    drawn per item). A user's records spread over several shards, so forgetting a user retrains
    every shard that holds one of their items.

    Use it when shard models should specialise on groups of similar items.

    Parameters
    ----------
    model, model_params, epochs, max_iter
        As for :class:`RecEraserUserSharder`.

    Notes
    -----
    Data dependent. The pre-trained embeddings are transient (computed in :meth:`~sisakit.Sharder.assign`, not
    kept).
    """

    unit = "item"
    _salt = 2

    def blocks(self, data: Any, users: np.ndarray, items: np.ndarray
               ) -> tuple[list[Block], np.ndarray]:
        units = np.flatnonzero(data.item_counts())
        return [(items[units], np.arange(len(units)))], units

    def spread(self, data: Any, units: np.ndarray, labels: np.ndarray) -> np.ndarray:
        per_item = np.zeros(data.n_items, dtype=np.int64)
        per_item[units] = labels
        return per_item[data.item_idx]


class RecEraserInteractionSharder(_RecEraserSharder):
    """RecEraser's interaction-based balanced partition: each record's embedding is the
    concatenation of its user's and its item's pre-trained embedding, and similar records share
    a shard (``unit = "record"``); every shard holds ``floor`` or ``ceil`` of
    ``n_records / n_shards`` records.

    Use it for the finest-grained balance; like any record-level sharder, forgetting a user
    retrains every shard that holds one of their records.

    Parameters
    ----------
    model, model_params, epochs, max_iter
        As for :class:`RecEraserUserSharder`.

    Notes
    -----
    Data dependent. The pre-trained embeddings are transient (computed in :meth:`~sisakit.Sharder.assign`, not
    kept).
    """

    unit = "record"
    _salt = 3

    def blocks(self, data: Any, users: np.ndarray, items: np.ndarray
               ) -> tuple[list[Block], np.ndarray]:
        return [(users, data.user_idx), (items, data.item_idx)], np.arange(len(data))

    def spread(self, data: Any, units: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return labels.astype(np.int64)


@hookimpl
def register_sharders(register):
    register("receraser-user", RecEraserUserSharder)
    register("receraser-item", RecEraserItemSharder)
    register("receraser-interaction", RecEraserInteractionSharder)
