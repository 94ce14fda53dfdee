"""Data poisoning by fake users (a push attack), its effect on exposure, and its removal.

:func:`inject_fake_users` appends ``n_fake`` fake users who each interact with a target item and
``n_filler`` filler items: popular ones, which tie the target to the taste of many real users;
random ones; ones sampled by popularity (an "average" shilling profile); or ones copied from the
histories of real users (``filler="profile"``, the strongest against ``bpr-mf``: each fake looks
like a different real user, so the target's factor is pulled towards the real audience rather
than towards a cluster of identical fakes). :func:`exposure` measures the share of users whose
top-``k`` list holds the target. Forgetting the fake users with :meth:`sisakit.SISA.forget`
removes their influence exactly: the unlearned ensemble equals a scratch fit of the remaining
data.

**What "exactly" means here**

Forgotten users stay in the id space as tombstones. The exact reference is therefore a fit on
``poisoned.without(users=fake)``, which keeps the fake users' (now empty) rows: same id space,
same stored assignment, same bits, same exposure. A model trained on the clean data alone has a
smaller user table, so its seeded initial item factors differ (they are drawn after the user
factors) and its exposure agrees only statistically, not bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import check_int
from .data import IdMap, Interactions, canonical_id
from .errors import UnknownIdError, ValidationError

__all__ = ["PoisonedData", "exposure", "inject_fake_users"]

_FILLERS = ("popular", "random", "sampled", "profile")


@dataclass(frozen=True)
class PoisonedData:
    """Poisoned interactions and what was injected.

    Attributes
    ----------
    data : Interactions
        The clean records followed by the fake users' records; clean users and items keep their
        indices and record ids.
    fake_users : ndarray
        Raw ids of the fake users (forget these to undo the attack).
    target_item : int or str
        Raw id of the pushed item.
    n_filler : int
        Filler items per fake user.
    filler : str
        ``"popular"``, ``"random"``, ``"sampled"`` or ``"profile"`` (see
        :func:`inject_fake_users`).
    """

    data: Interactions
    fake_users: np.ndarray
    target_item: Any
    n_filler: int
    filler: str

    @property
    def n_fake(self) -> int:
        return len(self.fake_users)

    def as_dict(self) -> dict[str, Any]:
        """The attack's parameters (JSON-ready)."""
        return {"n_fake": self.n_fake, "n_filler": self.n_filler, "filler": self.filler,
                "target_item": canonical_id(self.target_item),
                "fake_records": self.n_fake * (self.n_filler + 1)}


def _item_index(data: Interactions, item: Any) -> int:
    if isinstance(item, (list, tuple, np.ndarray)):
        raise ValidationError(f"item must be a single raw item id, got {item!r}")
    raw = canonical_id(item)
    idx, known = data.item_map.lookup(np.array([raw]))
    if not known[0]:
        raise UnknownIdError("item", [raw])
    if not data.item_active[idx[0]]:
        raise ValidationError(f"item {raw!r} was forgotten (inactive); pick an active item")
    return int(idx[0])


def _distinct_draws(rng: np.random.Generator, n_rows: int, n_cols: int, k: int,
                    weights: np.ndarray | None = None, valid: np.ndarray | None = None
                    ) -> np.ndarray:
    """``k`` distinct column indices per row, drawn without replacement (vectorised).

    Uniform, or with probability proportional to ``weights`` (Efraimidis–Spirakis keys
    ``-log(u) / w``); ``valid`` (``n_rows x n_cols`` boolean) excludes entries.
    """
    if k == 0:
        return np.zeros((n_rows, 0), dtype=np.int64)
    keys = rng.random((n_rows, n_cols))
    if weights is not None:
        with np.errstate(divide="ignore"):
            keys = -np.log(keys) / np.asarray(weights, dtype=np.float64)  # w = 0 -> inf (never)
    if valid is not None:
        keys[~valid] = np.inf
    return np.argpartition(keys, k - 1, axis=1)[:, :k]


def _profile_fillers(data: Interactions, target: int, candidates: np.ndarray, n_fake: int,
                     n_filler: int, rng: np.random.Generator) -> np.ndarray:
    """Fillers copied from real profiles: fake ``j`` takes ``n_filler`` distinct items from the
    history of one real user (drawn without replacement while there are enough) who never
    interacted with the target and has at least ``n_filler`` filler candidates."""
    keep = np.isin(data.item_idx, candidates)
    users, items = data.user_idx[keep], data.item_idx[keep]
    pairs = np.unique(users.astype(np.int64) * data.n_items + items)  # distinct (user, item)
    users, items = pairs // data.n_items, pairs % data.n_items
    deg = np.bincount(users, minlength=data.n_users)
    saw_target = np.zeros(data.n_users, dtype=bool)
    saw_target[data.user_idx[data.item_idx == target]] = True
    eligible = np.flatnonzero((deg >= max(n_filler, 1)) & ~saw_target)
    if len(eligible) == 0:
        raise ValidationError(f"no real user without the target has {n_filler} filler items to "
                              "copy; lower n_filler or use filler='popular'")
    source = rng.choice(eligible, size=n_fake, replace=n_fake > len(eligible))
    start = np.r_[0, np.cumsum(deg)][source]  # pairs are sorted by user
    width = int(deg[source].max())
    valid = np.arange(width)[None, :] < deg[source][:, None]
    pick = _distinct_draws(rng, n_fake, width, n_filler, valid=valid)
    return items[start[:, None] + pick]


def _blank_like(col: np.ndarray, n: int) -> np.ndarray:
    """``n`` empty attribute values for fake users (NaN, -1, False or the empty string)."""
    kind = col.dtype.kind
    fill: Any = np.nan if kind == "f" else 0 if kind == "u" else -1 if kind == "i" else (
        False if kind == "b" else "")
    return np.concatenate([col, np.full(n, fill, dtype=col.dtype if kind != "O" else object)])


def inject_fake_users(
    data: Interactions,
    target_item: Any,
    n_fake: int,
    *,
    n_filler: int = 30,
    filler: str = "popular",
    pool: int | None = None,
    seed: int = 0,
) -> PoisonedData:
    """Append fake users who push ``target_item``.

    Each fake user interacts with the target and with ``n_filler`` distinct filler items (never
    the target), drawn without replacement and independently per fake user:

    ``"popular"``
        uniformly from the ``pool`` most popular active items (default pool ``2 * n_filler``), a
        bandwagon attack;
    ``"random"``
        uniformly from all active items (a random attack);
    ``"sampled"``
        from all active items with probability proportional to their record count (an average
        attack: each profile looks like a draw from the catalogue's popularity);
    ``"profile"``
        from the history of one real user per fake (a profile-copy attack): each fake copies
        ``n_filler`` items of a distinct real user who never interacted with the target and has at
        least ``n_filler`` other active items (users are reused only once ``n_fake`` exceeds the
        eligible ones). The fakes are as diverse as the real users, so training pulls the target's
        factor towards the audience's tastes instead of fitting the fakes as one cluster. On
        MovieLens-1M with ``bpr-mf`` this is the mode that lifts a 90th-percentile target's top-10
        exposure by more than 5 points (``benchmarks/bench_poisoning.py``).

    Parameters
    ----------
    data : Interactions
        Clean records.
    target_item : int or str
        Raw id of the item to push.
    n_fake : int
        Number of fake users (>= 1).
    n_filler : int
        Filler items per fake user (>= 0).
    filler : {"popular", "random", "sampled", "profile"}
        How fillers are chosen (see above).
    pool : int, optional
        Size of the popular pool (``filler="popular"`` only).
    seed : int
        Seed of the filler (and, for ``"profile"``, source user) draws.

    Returns
    -------
    PoisonedData
        Fake raw ids are ``max(user id) + 1, ...`` for integer ids and ``"fake-0", ...`` for
        string ids. Their records get fresh record ids, the latest timestamp, the highest rating
        and weight 1 where those columns exist.

    Raises
    ------
    ValidationError
        On a bad ``n_fake``, ``n_filler``, ``filler`` or ``pool``, when there are fewer filler
        candidates than ``n_filler`` or, for ``"profile"``, no real user to copy.
    UnknownIdError
        When ``target_item`` is not in the id space.
    """
    if not isinstance(data, Interactions):
        raise ValidationError(f"inject_fake_users() takes sisakit.Interactions, got "
                              f"{type(data).__name__}")
    n_fake = check_int("n_fake", n_fake, 1)
    n_filler = check_int("n_filler", n_filler, 0)
    if filler not in _FILLERS:
        raise ValidationError(f"filler must be one of {_FILLERS}, got {filler!r}")
    target = _item_index(data, target_item)
    candidates = np.flatnonzero(data.item_active)
    candidates = candidates[candidates != target]
    if filler == "popular":
        size = 2 * n_filler if pool is None else check_int("pool", pool, n_filler)
        counts = data.item_counts()[candidates]
        # Most popular first; ties by index so the pool is deterministic.
        candidates = candidates[np.lexsort((candidates, -counts))][:size]
    if filler != "profile" and n_filler > len(candidates):
        raise ValidationError(f"n_filler={n_filler} exceeds the {len(candidates)} available "
                              "filler items; lower n_filler or enlarge pool")
    rng = np.random.default_rng(seed)
    if filler == "profile":
        chosen = _profile_fillers(data, target, candidates, n_fake, n_filler, rng)
    else:
        weights = data.item_counts()[candidates] if filler == "sampled" else None
        if weights is not None and np.count_nonzero(weights) < n_filler:
            raise ValidationError(f"n_filler={n_filler} exceeds the {np.count_nonzero(weights)} "
                                  "items with records that filler='sampled' draws from; lower "
                                  "n_filler")
        chosen = candidates[_distinct_draws(rng, n_fake, len(candidates), n_filler, weights)]
    items = np.concatenate([np.full((n_fake, 1), target), chosen], axis=1).ravel()
    local = np.repeat(np.arange(n_fake), n_filler + 1)

    ids = data.user_ids
    if ids.dtype.kind == "U":
        fake = np.array([f"fake-{j}" for j in range(n_fake)])
        clash = np.isin(fake, ids)
        if clash.any():
            raise ValidationError(f"user ids {fake[clash][:5].tolist()} already exist; rename "
                                  "those users before injecting fakes")
    else:
        fake = int(ids.max()) + 1 + np.arange(n_fake, dtype=np.int64)
    user_map = IdMap(np.concatenate([ids, fake]), "user")
    n = len(items)
    cols: dict[str, Any] = {}
    if data.rating is not None:
        cols["rating"] = np.r_[data.rating, np.full(n, data.rating.max(), np.float32)]
    if data.timestamp is not None:
        cols["timestamp"] = np.r_[data.timestamp, np.full(n, data.timestamp.max(), np.int64)]
    if data.weight is not None:
        cols["weight"] = np.r_[data.weight, np.ones(n, np.float32)]
    first_id = int(data.record_id.max()) + 1 if len(data) else 0
    poisoned = Interactions(
        user_idx=np.r_[data.user_idx, data.n_users + local],
        item_idx=np.r_[data.item_idx, items],
        user_map=user_map,
        item_map=data.item_map,
        record_id=np.r_[data.record_id, first_id + np.arange(n, dtype=np.int64)],
        user_attributes={k: _blank_like(v, n_fake) for k, v in data.user_attributes.items()},
        item_attributes=data.item_attributes,
        item_active=data.item_active,
        **cols,
    )
    return PoisonedData(poisoned, fake, data.item_ids[target], n_filler, filler)


def exposure(model: Any, item: Any, users: Any, k: int = 10) -> float:
    """Share of ``users`` whose top-``k`` recommendations contain ``item``.

    Parameters
    ----------
    model : sisakit.SISA or similar
        Needs ``recommend(raw_user_ids, k=...)`` and ``data`` (its :class:`~sisakit.Interactions`, for
        the catalogue). Seen items are excluded as :meth:`sisakit.SISA.recommend` does, so pass
        users who have not interacted with ``item`` to measure a push.
    item : int or str
        Raw item id.
    users : sequence of raw user ids
        The audience (non-empty).
    k : int
        List length, ``1 <= k <= n_items``.

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    if not callable(getattr(model, "recommend", None)) or not hasattr(model, "data"):
        raise ValidationError(f"exposure() needs a fitted model with recommend() and data, like "
                              f"sisakit.SISA; got {type(model).__name__}")
    data = model.data
    idx = _item_index(data, item)
    k = check_int("k", k, 1, data.n_items)
    if isinstance(users, (str, bytes)) or np.ndim(users) != 1:
        raise ValidationError("users must be a 1-D list of raw user ids")
    if len(users) == 0:
        raise ValidationError("users is empty; pass the raw ids of the audience")
    recs = np.asarray(model.recommend(users, k=k))
    return float((recs == data.item_ids[idx]).any(axis=1).mean())
