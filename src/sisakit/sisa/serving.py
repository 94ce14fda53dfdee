"""Serving: the shard index (records per shard and user, items each shard saw, popularity),
raw-id lookup, scoring and ``recommend``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validation import check_int
from ..data import as_id_array, canonical_id
from ..errors import UnknownIdError, ValidationError
from .state import RunState

__all__ = ["ShardIndex", "recommend", "scores", "user_index"]


@dataclass
class ShardIndex:
    """Derived lookup tables of one state. ``counts`` is ``(S, U)`` float32 records per
    (shard, user), ``item_counts`` ``(S, I)`` int64, ``item_seen`` their ``> 0``, and
    ``popularity`` every item's record count over ``max + 1`` (float32)."""

    counts: torch.Tensor
    item_counts: np.ndarray
    data: Any = field(default=None, repr=False)  # the state's data (for the seen-items CSR)
    item_seen: torch.Tensor = field(init=False)
    popularity: torch.Tensor = field(init=False)
    _seen_csr: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.item_seen = torch.from_numpy(self.item_counts > 0)
        pop = self.item_counts.sum(0).astype(np.float64)
        self.popularity = torch.from_numpy(pop / (pop.max() + 1.0)).float()

    @classmethod
    def build(cls, state: RunState, seed: int,
              previous: ShardIndex | None = None,
              removed: tuple[np.ndarray, ...] | None = None) -> ShardIndex:
        """The index of ``state``; with ``previous`` (the index before a forget) and
        ``removed`` (the removed records' shard, user and item) it is updated incrementally
        instead of recounting every record (``previous`` is left unchanged)."""
        d, n_shards = state.data, state.n_shards
        # Records an aggregator holds out are never trained on, so they must not count as "this
        # shard trained on the user/item" (recounted in full: we cannot tell which removed
        # records were held out).
        held = state.aggregator.holdout_mask(d, seed=seed)
        if previous is None or removed is None or held is not None:
            w = None if held is None else (~held).astype(np.float64)
            counts = torch.from_numpy(np.bincount(
                state.shard * d.n_users + d.user_idx, w, minlength=n_shards * d.n_users
            ).reshape(n_shards, d.n_users).astype(np.float32))
            items = np.bincount(state.shard * d.n_items + d.item_idx, w,
                                minlength=n_shards * d.n_items
                                ).reshape(n_shards, d.n_items).astype(np.int64)
        else:
            r_shard, r_user, r_item = removed
            counts, items = previous.counts.clone(), previous.item_counts.copy()
            np.subtract.at(counts.numpy(), (r_shard, r_user), 1.0)
            np.subtract.at(items, (r_shard, r_item), 1)
        return cls(counts, items, d)

    @property
    def seen_csr(self) -> Any:
        """Users' training items as a CSR matrix (built on first use)."""
        if self._seen_csr is None:
            self._seen_csr = self.data.to_csr()
        return self._seen_csr


def bind_models(state: RunState) -> None:
    """Let shard models that keep a reference to the id space rebind to the state's (e.g. to
    drop forgotten users' feature rows)."""
    for model in state.models:
        bind = getattr(model, "bind_space", None)
        if bind is not None:
            bind(state.data)


def user_lookup(state: RunState, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``user_map.lookup`` in which a tombstone is never found: it replaced a forgotten user's
    raw id in the id space, so it must not be mistaken for a user id (raw ids may be negative
    ints); the forgotten user is addressed by their original raw id."""
    idx, known = state.data.user_map.lookup(raw)
    dead = state.tombstoned()
    if dead is not None and known.any():
        known &= ~dead[idx]
    return idx, known


def user_index(state: RunState, users: Iterable[Any], digest: Callable[[str, Any], str]
               ) -> np.ndarray:
    """Indices of raw user ids; a forgotten user maps to its tombstone (no data left)."""
    if isinstance(users, (str, bytes)) or np.ndim(users) == 0:
        raise ValidationError(f"users must be a list of raw ids, e.g. [{users!r}]")
    raw = users if isinstance(users, np.ndarray) else np.asarray(list(users), dtype=object)
    if raw.ndim != 1:
        raise ValidationError(f"users must be a 1-D list of raw ids, got shape {raw.shape}")
    if len(raw) == 0:
        raise ValidationError("users is empty; pass at least one raw user id")
    idx, known = user_lookup(state, raw)
    if known.all():
        return idx
    missing = np.flatnonzero(~known)
    try:  # all ints or all strings: the lookup was exact, only tombstones can still match
        ids = as_id_array(raw[missing], "users").tolist()
        mixed = False
    except ValidationError:  # mixed id types (or floats, bools): one id at a time below
        ids, mixed = [canonical_id(raw[pos]) for pos in missing], True
    if not mixed and not state.tombstones:  # e.g. 10**6 unknown ids: no loop at all
        raise UnknownIdError("user", ids)
    unknown = []
    for pos, one_id in zip(missing.tolist(), ids, strict=True):
        if mixed:
            one, ok = user_lookup(state, np.array([one_id]))
            if ok[0]:
                idx[pos] = one[0]
                continue
        h = digest("users", one_id)
        if h in state.tombstones:
            idx[pos] = state.tombstones[h]
        else:
            unknown.append(one_id)
    if unknown:
        raise UnknownIdError("user", unknown)
    return idx


def is_forgotten(state: RunState, user: Any = None, item: Any = None) -> bool:
    """Whether a raw user (or item) id was forgotten in the run of ``state``."""
    if (user is None) == (item is None):
        raise ValidationError("pass exactly one of user= or item=")
    kind, raw = ("users", user) if item is None else ("items", item)
    raw = canonical_id(raw)
    if state.digest(kind, raw) in set(state.forgotten[kind]):
        return True
    query = np.asarray([raw], dtype=object)
    known = (user_lookup(state, query) if kind == "users"
             else state.data.item_map.lookup(query))[1]
    if not known[0]:
        raise UnknownIdError(kind[:-1], [raw], f"it is not a {kind[:-1]} id of this run and was "
                             "never forgotten here; check the id")
    return False


def check_user_indices(user_idx: Any, n_users: int) -> np.ndarray:
    """``user_idx`` as int64 user indices in ``[0, n_users)``, else a ValidationError."""
    u = np.asarray(user_idx)
    if u.ndim != 1 or (u.size and u.dtype.kind not in "iu"):
        raise ValidationError(
            f"scores() takes a 1-D array of integer user indices, got {u.dtype} {u.shape}; "
            "map raw ids with model.data.user_map.index(raw_ids, 'user') or use recommend()")
    u = u.astype(np.int64)
    if u.size and (u.min() < 0 or u.max() >= n_users):
        raise ValidationError(
            f"user indices must lie in [0, {n_users}), got [{u.min()}, {u.max()}]; "
            "scores() takes indices, not raw ids: map raw ids with "
            "model.data.user_map.index(raw_ids, 'user')")
    return u


def scores(state: RunState, index: ShardIndex, u: np.ndarray) -> torch.Tensor:
    """Ranking scores ``(len(u), n_items)`` (float32) for checked user indices ``u`` (see
    :meth:`sisakit.SISA.scores`)."""
    counts = index.counts[:, u]
    agg = state.aggregator
    if agg.weighted_mean_fast_path():
        agg_scores, scored = _linear_aggregate(state, index, u, counts)
    else:
        if agg.uses_shard_scores:
            stack = torch.stack([m.scores(u).float().cpu() for m in state.models])
            mask = (counts > 0)[:, :, None] & index.item_seen[:, None, :]
        else:  # the aggregator scores from its own state: no shard scoring pass
            stack = torch.empty(state.n_shards, len(u), 0)
            mask = torch.empty(state.n_shards, len(u), 0, dtype=torch.bool)
        extra = {"user_idx": torch.from_numpy(u)} if agg.needs_user_idx else {}  # opt-in only
        agg_scores, scored = agg.aggregate(stack, mask, counts, **extra)
    unscored = (-1.0e30 * (2.0 - index.popularity))[None, :].expand_as(agg_scores)
    out = torch.where(scored, agg_scores.float(), unscored)
    inactive = torch.from_numpy(~state.data.item_active)
    return out.masked_fill_(inactive[None, :], -torch.inf)


def _linear_aggregate(state: RunState, index: ShardIndex, u: np.ndarray, counts: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean over shards, computing each shard's scores only for its own users."""
    w = state.aggregator.weights(counts).float()
    w = torch.where(counts > 0, w, torch.zeros_like(w))
    n_items = state.data.n_items
    num, den = torch.zeros(len(u), n_items), torch.zeros(len(u), n_items)
    for s, model in enumerate(state.models):  # one iteration per shard
        rows = torch.nonzero(w[s] > 0).flatten()
        if len(rows) == 0:
            continue
        ws = w[s, rows][:, None] * index.item_seen[s].float()[None, :]
        sc = model.scores(u[rows.numpy()]).float().cpu()
        num.index_add_(0, rows, sc.mul_(ws))
        den.index_add_(0, rows, ws)
    scored = den > 0
    return num.div_(den.masked_fill_(~scored, 1.0)), scored


def recommend(state: RunState, index: ShardIndex, users: Iterable[Any],
              digest: Callable[[str, Any], str], k: Any, *, exclude_seen: bool,
              batch_size: Any) -> np.ndarray:
    """Top-``k`` raw item ids of each raw user id (see :meth:`sisakit.SISA.recommend`)."""
    k = check_int("k", k, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    n_ok = int(state.data.item_active.sum())
    if k > n_ok:
        raise ValidationError(f"k={k} exceeds the {n_ok} recommendable items; lower k")
    u = user_index(state, users, digest)
    out = np.empty((len(u), k), dtype=np.int64)
    for start in range(0, len(u), batch_size):
        ub = u[start:start + batch_size]
        sc = scores(state, index, ub)
        if exclude_seen:
            rows = index.seen_csr[ub]
            r_idx = np.repeat(np.arange(len(ub)), np.diff(rows.indptr))
            # Below every unseen item (scores lie above -2e30) but above forgotten items.
            sc[torch.from_numpy(r_idx), torch.from_numpy(rows.indices.astype(np.int64))] = -3.0e38
        out[start:start + len(ub)] = torch.topk(sc, k, dim=1).indices.numpy()
    return state.data.item_ids[out]
