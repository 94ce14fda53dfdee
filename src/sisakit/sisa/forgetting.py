"""Forgetting as a pure plan: resolve a request's raw ids, find what it removes, the earliest
slice of every shard it touches and the tombstones it leaves. Nothing here trains or writes;
the engine executes the plan through :mod:`.training` and :mod:`.repository`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import IdMap, Interactions, ResolvedRequest
from ..errors import UnknownIdError
from ..requests import ForgetRequest
from .state import RunState

__all__ = ["ForgetPlan", "Resolution", "plan_forget", "resolve", "unused_ints"]

Digest = Callable[[str, Any], str]


@dataclass(frozen=True)
class Resolution:
    """A request resolved against one state: indices, no-op counts and the salted hashes of
    what is newly forgotten."""

    request: ForgetRequest
    data: Interactions  # the data it was resolved against
    resolved: ResolvedRequest
    noop: dict[str, int]
    hashes: dict[str, list[str]]


@dataclass(frozen=True)
class ForgetPlan:
    """What a forget changes: the remaining data and assignment, the first slice to retrain in
    each touched shard (``earliest``), the records removed (their shard, user and item, for an
    incremental index update) and the new tombstones."""

    resolution: Resolution
    data: Interactions
    shard: np.ndarray
    slice: np.ndarray
    earliest: dict[int, int]
    removed: tuple[np.ndarray, np.ndarray, np.ndarray]
    tombstones: dict[str, int]
    space_changed: bool

    @property
    def records_removed(self) -> int:
        return int(self.resolution.resolved.remove.sum())


def resolve(state: RunState, request: ForgetRequest, digest: Digest) -> Resolution:
    """Resolve a request's raw ids (no side effect).

    Raises
    ------
    UnknownIdError
        If an id is unknown, or a (user, item) pair was never in the training data.
    """
    data = state.data
    forgotten = {k: set(v) for k, v in state.forgotten.items()}
    noop = {"users": 0, "items": 0, "interactions": 0}
    # Users forgotten before are no longer in the id space (only their salted hash is).
    users_live = [u for u in request.users if digest("users", u) not in forgotten["users"]]
    noop["users"] = len(request.users) - len(users_live)
    pairs_live = [p for p in request.interactions
                  if digest("users", p[0]) not in forgotten["users"]]
    noop["interactions"] = len(request.interactions) - len(pairs_live)
    req = data.resolve(users=users_live, interactions=pairs_live, items=request.items)
    dead = state.tombstoned()
    if dead is not None:  # a tombstone is not a user id (see serving.user_lookup)
        ghosts = [users_live[k] for k in np.flatnonzero(dead[req.users])]
        ghosts += [pairs_live[k] for k in np.flatnonzero(dead[req.pair_users])]
        if ghosts:
            raise UnknownIdError("user", ghosts, "nothing was deleted; remove the unknown ids "
                                 "and retry")
    hashes: dict[str, list[str]] = {"users": [digest("users", u) for u in users_live],
                                    "items": [], "interactions": []}
    for raw, idx in zip(request.items, req.items, strict=True):
        if not data.item_active[idx]:
            noop["items"] += 1
        else:
            hashes["items"].append(digest("items", raw))
    never_seen = []
    for k, pair in enumerate(pairs_live):
        h = digest("interactions", pair)
        if req.pair_found[k]:
            hashes["interactions"].append(h)
        elif h in forgotten["interactions"] or not data.item_active[req.pair_items[k]]:
            noop["interactions"] += 1
        else:
            never_seen.append(pair)
    if never_seen:
        raise UnknownIdError(
            "interaction", never_seen,
            "these (user, item) pairs are not in the training data and were never forgotten; "
            "nothing was deleted — remove them from the request",
        )
    return Resolution(request, data, req, noop, hashes)


def plan_forget(state: RunState, resolution: Resolution, n_slices: int) -> ForgetPlan:
    """The plan of a resolved request (pure: ``state`` is not changed)."""
    data, req = state.data, resolution.resolved
    newly_inactive = np.unique(req.items[data.item_active[req.items]])
    remove = req.remove
    if len(newly_inactive):  # the negative-sampling pool of every shard changes
        earliest = dict.fromkeys(range(state.n_shards), 0)
    else:
        first = np.full(state.n_shards, n_slices, dtype=np.int64)
        np.minimum.at(first, state.shard[remove], state.slice[remove])
        earliest = {int(s): int(first[s]) for s in np.flatnonzero(first < n_slices)}
    keep = ~remove
    new_data = data.take(keep)
    if len(newly_inactive):
        active = data.item_active.copy()
        active[newly_inactive] = False
        new_data = new_data.evolve(item_active=active)
    tombstones = dict(state.tombstones)
    if len(req.users):
        order = np.argsort(req.users, kind="stable")
        uniq, first_pos = np.unique(req.users[order], return_index=True)
        hashes = [resolution.hashes["users"][order[f]] for f in first_pos]
        new_data = tombstone_users(new_data, uniq, hashes)
        tombstones.update(zip(hashes, uniq.tolist(), strict=True))
    return ForgetPlan(
        resolution=resolution, data=new_data, shard=state.shard[keep], slice=state.slice[keep],
        earliest=earliest, removed=(state.shard[remove], data.user_idx[remove],
                                    data.item_idx[remove]),
        tombstones=tombstones, space_changed=bool(len(newly_inactive) or len(req.users)))


def tombstone_users(data: Interactions, idx: np.ndarray, hashes: list[str]) -> Interactions:
    """Replace forgotten users' raw ids by tombstones and blank their attributes, so the run
    keeps no raw data of theirs (the id space keeps its size and order)."""
    ids = data.user_ids.copy()
    if ids.dtype.kind == "U":
        by_idx = dict(zip(idx.tolist(), hashes, strict=True))
        stones = np.array([f"\x00forgotten:{by_idx[i][:32]}" for i in idx.tolist()])
        width = max(ids.dtype.itemsize, stones.dtype.itemsize) // 4
        ids = ids.astype(f"<U{width}")
        ids[idx] = stones
    else:  # integers: ids no user has (never found by a lookup: see serving.user_lookup)
        ids[idx] = unused_ints(ids, len(idx))
    attrs = {}
    for key, col in data.user_attributes.items():
        col = col.copy()
        col[idx] = _blank(col.dtype)
        attrs[key] = col
    changes: dict[str, Any] = {"user_map": IdMap(ids, "user"), "user_attributes": attrs}
    if data.user_features is not None:  # zero, not NaN: scoring a tombstone stays finite
        feats = data.user_features.copy()
        feats[idx] = 0.0
        feats.flags.writeable = False
        changes["user_features"] = feats
    return data.evolve(**changes)


def unused_ints(ids: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct int64 values not in ``ids``: below every id (``-1, -2, ...`` for
    non-negative ids), else above every id, else the smallest free values."""
    lo, hi = int(ids.min()), int(ids.max())
    info = np.iinfo(np.int64)
    start = min(lo, 0) - 1
    if start - n + 1 >= info.min:
        return start - np.arange(n, dtype=np.int64)
    if hi + n <= info.max:
        return hi + 1 + np.arange(n, dtype=np.int64)
    taken = np.unique(ids)  # ids fill both ends of int64: take the gaps, smallest first
    out: list[np.ndarray] = []
    left = n
    for a, b in zip(taken[:-1].tolist(), taken[1:].tolist(), strict=True):
        if b - a > 1:
            k = min(left, b - a - 1)
            out.append(np.arange(a + 1, a + 1 + k, dtype=np.int64))
            left -= k
            if not left:
                break
    return np.concatenate(out)


def _blank(dtype: np.dtype) -> Any:
    """The value that erases an attribute of a forgotten user."""
    if dtype.kind == "f":
        return np.nan
    if dtype.kind in "iu":
        return 0 if dtype.kind == "u" else -1
    if dtype.kind == "b":
        return False
    return ""
