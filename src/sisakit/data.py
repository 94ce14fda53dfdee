"""The :class:`Interactions` container: user–item records in a fixed id space."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .errors import DataError, UnknownIdError, ValidationError

__all__ = ["IdMap", "Interactions", "ResolvedRequest", "canonical_id", "labelled"]


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def _as_id_array(values: Any, what: str) -> np.ndarray:
    """Raw ids as an int64 or unicode array; floats and mixed types are rejected."""
    arr = np.asarray(values)
    if arr.dtype.kind == "U" and not isinstance(values, np.ndarray):
        arr = np.asarray(values, dtype=object)  # numpy turns [1, "2"] into strings: refuse that
    if arr.ndim != 1:
        raise ValidationError(f"{what} must be one-dimensional, got shape {arr.shape}; pass a flat "
                              "array of ids (e.g. array.ravel())")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "O":
        kinds = {type(v) for v in arr.tolist()}
        if all(issubclass(k, str) for k in kinds):
            return arr.astype(str)
        if all(issubclass(k, (int, np.integer)) and not issubclass(k, bool) for k in kinds):
            return arr.astype(np.int64)
        if not len(arr):
            return np.zeros(0, dtype=np.int64)
        raise ValidationError(
            f"{what} mixes id types {sorted(k.__name__ for k in kinds)}; use all ints or all "
            "strings"
        )
    raise ValidationError(
        f"{what} has dtype {arr.dtype}; ids must be integers or strings (convert float ids "
        "with .astype(int) or .astype(str))"
    )


def canonical_id(value: Any) -> Any:
    """A raw id as a plain Python ``int`` or ``str`` (numpy scalars unwrapped), so the same id
    always hashes and compares the same way whatever container it came in."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError(
            f"ids must be integers or strings, got {value!r} ({type(value).__name__})"
        )
    return value


def labelled(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the entries of an attribute column that hold a value (not None, NaN or
    the empty string)."""
    text = np.asarray(labels, dtype=object).astype(str)
    return (text != "None") & (text != "") & (text != "nan")


class IdMap:
    """Two-way map between raw ids and dense indices ``0..n-1``.

    Lookups are vectorised (binary search over a sorted copy).
    """

    def __init__(self, ids: np.ndarray, what: str) -> None:
        self.ids = _readonly(_as_id_array(ids, what))
        self.what = what
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]
        if len(self._sorted) > 1 and np.any(self._sorted[1:] == self._sorted[:-1]):
            dup = self._sorted[1:][self._sorted[1:] == self._sorted[:-1]]
            raise DataError(f"duplicate {what} ids in the id map: {dup[:10].tolist()}; list each "
                            "id once")

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, raw: Any) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(index, known)``; ``index`` is meaningless where ``known`` is False."""
        q = np.asarray(raw)
        if q.ndim == 0:
            q = q.reshape(1)
        n = len(q)
        if n == 0 or len(self.ids) == 0:
            return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        same_kind = (q.dtype.kind in "iu" and self.ids.dtype.kind == "i") or (
            q.dtype.kind == "U" and self.ids.dtype.kind == "U"
        )
        if not same_kind:
            try:
                q = _as_id_array(q, self.what)
            except ValidationError:
                return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
            if q.dtype.kind != self.ids.dtype.kind:
                return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        pos = np.searchsorted(self._sorted, q)
        pos = np.minimum(pos, len(self._sorted) - 1)
        known = self._sorted[pos] == q
        return self._order[pos].astype(np.int64), known

    def index(self, raw: Any, kind: str) -> np.ndarray:
        """Indices of ``raw`` ids; raise :class:`~sisakit.UnknownIdError` listing every unknown one."""
        idx, known = self.lookup(raw)
        if not known.all():
            q = np.atleast_1d(np.asarray(raw, dtype=object))
            raise UnknownIdError(kind, q[~known].tolist())
        return idx


@dataclass(frozen=True)
class ResolvedRequest:
    """A deletion request resolved against one :class:`Interactions` (all indices)."""

    remove: np.ndarray  # bool mask over records
    users: np.ndarray  # user indices named in the request
    items: np.ndarray  # item indices named in the request (to deactivate)
    pair_users: np.ndarray  # (user, item) pairs named in the request
    pair_items: np.ndarray
    pair_found: np.ndarray  # bool per pair: does the pair have a record?


@dataclass(frozen=True, eq=False)
class Interactions:
    """Immutable user–item interaction records in a fixed id space.

    Build one with :meth:`from_arrays` (raw ids) or a loader in :mod:`sisakit.datasets`.
    Every record carries a stable ``record_id``; :meth:`without` removes records but keeps the
    id space, so models fitted before and after a deletion index users and items the same way.

    Attributes
    ----------
    user_idx, item_idx : ndarray of int64
        Dense user / item index of each record.
    user_ids, item_ids : ndarray
        Raw id of each index (``user_ids[i]`` is the raw id of user index ``i``).
    rating, timestamp, weight : ndarray or None
        Optional per-record columns.
    record_id : ndarray of int64
        Stable id of each record, unique.
    user_attributes, item_attributes : dict of str to ndarray
        Per-user / per-item attribute columns (length ``n_users`` / ``n_items``).
    item_active : ndarray of bool
        False for items that were forgotten: never recommended, never sampled as negatives.
    user_features : ndarray of float32 or None
        Optional ``(n_users, d)`` feature matrix, one row per user (e.g. the pixels of a sample
        in :mod:`sisakit.classification`). Rows of forgotten users are zeroed.
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    user_map: IdMap
    item_map: IdMap
    record_id: np.ndarray
    rating: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    weight: np.ndarray | None = None
    user_attributes: Mapping[str, np.ndarray] = field(default_factory=dict)
    item_attributes: Mapping[str, np.ndarray] = field(default_factory=dict)
    item_active: np.ndarray | None = None
    user_features: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        for name in ("user_idx", "item_idx", "record_id"):
            arr = np.asarray(getattr(self, name))
            if arr.ndim != 1 or len(arr) != n:
                raise ValidationError(f"{name} must be 1-D with {n} entries, got {arr.shape}")
            if arr.dtype.kind not in "iu":
                raise ValidationError(f"{name} must be integers, got dtype {arr.dtype}")
            object.__setattr__(self, name, _readonly(arr.astype(np.int64)))
        for name, dtype in (("rating", np.float32), ("timestamp", np.int64), ("weight", np.float32)):
            arr = getattr(self, name)
            if arr is None:
                continue
            arr = np.asarray(arr)
            if arr.shape != (n,):
                raise ValidationError(f"{name} must have shape ({n},), got {arr.shape}")
            if arr.dtype.kind not in "iuf":
                raise ValidationError(f"{name} must be numeric, got dtype {arr.dtype}; convert it "
                                      "with .astype(float)")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                bad = np.flatnonzero(~np.isfinite(arr))[:5].tolist()
                raise DataError(
                    f"{name} has NaN or infinite values (records {bad}); drop or impute them"
                )
            object.__setattr__(self, name, _readonly(arr.astype(dtype)))
        if n and (self.user_idx.min() < 0 or self.user_idx.max() >= self.n_users):
            raise ValidationError(f"user_idx out of range [0, {self.n_users})")
        if n and (self.item_idx.min() < 0 or self.item_idx.max() >= self.n_items):
            raise ValidationError(f"item_idx out of range [0, {self.n_items})")
        if n > 1:
            srt = np.sort(self.record_id)
            if (srt[1:] == srt[:-1]).any():
                raise ValidationError("record_id values must be unique; pass one id per record "
                                      "(e.g. np.arange(n))")
        active = self.item_active
        active = np.ones(self.n_items, bool) if active is None else np.asarray(active, bool)
        if active.shape != (self.n_items,):
            raise ValidationError(f"item_active must have shape ({self.n_items},)")
        object.__setattr__(self, "item_active", _readonly(active))
        if self.user_features is not None:
            feats = np.asarray(self.user_features)
            if feats.ndim != 2 or feats.shape[0] != self.n_users or feats.dtype.kind not in "iuf":
                raise ValidationError(
                    f"user_features must be a numeric (n_users, d) = ({self.n_users}, d) array, got "
                    f"{feats.dtype} {feats.shape}; pass one feature row per user index"
                )
            if not np.isfinite(feats).all():
                raise DataError("user_features has NaN or infinite values; drop or impute them")
            object.__setattr__(self, "user_features", _readonly(feats.astype(np.float32)))
        for table, size, what in (
            ("user_attributes", self.n_users, "users"),
            ("item_attributes", self.n_items, "items"),
        ):
            cols = {}
            for key, col in dict(getattr(self, table)).items():
                col = np.asarray(col)
                if col.shape[:1] != (size,):
                    raise ValidationError(
                        f"{table}[{key!r}] has {col.shape[:1]} rows; it needs one per {what[:-1]} "
                        f"({size} {what})"
                    )
                cols[str(key)] = _readonly(col)
            object.__setattr__(self, table, cols)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        users: Sequence[Any] | np.ndarray,
        items: Sequence[Any] | np.ndarray,
        *,
        rating: Sequence[float] | np.ndarray | None = None,
        timestamp: Sequence[int] | np.ndarray | None = None,
        weight: Sequence[float] | np.ndarray | None = None,
        user_ids: Sequence[Any] | np.ndarray | None = None,
        item_ids: Sequence[Any] | np.ndarray | None = None,
    ) -> Interactions:
        """Build from parallel arrays of raw user and item ids.

        Parameters
        ----------
        users, items : array-like of int or str
            Raw id of the user and the item of each record.
        rating, timestamp, weight : array-like, optional
            Per-record columns.
        user_ids, item_ids : array-like, optional
            The full id space (e.g. to include users without records). Defaults to the sorted
            distinct ids seen in ``users`` / ``items``.
        """
        u = _as_id_array(users, "users")
        i = _as_id_array(items, "items")
        if len(u) != len(i):
            raise ValidationError(f"users has {len(u)} entries but items has {len(i)}; pass "
                                  "parallel arrays, one user and one item per record")
        if len(u) == 0:
            raise DataError("no interactions given; pass at least one (user, item) record")
        umap = IdMap(np.unique(u) if user_ids is None else user_ids, "user")
        imap = IdMap(np.unique(i) if item_ids is None else item_ids, "item")
        return cls(
            user_idx=umap.index(u, "user"),
            item_idx=imap.index(i, "item"),
            user_map=umap,
            item_map=imap,
            record_id=np.arange(len(u), dtype=np.int64),
            rating=rating,
            timestamp=timestamp,
            weight=weight,
        )

    _FIELDS = (
        "user_idx", "item_idx", "user_map", "item_map", "record_id", "rating", "timestamp",
        "weight", "user_attributes", "item_attributes", "item_active", "user_features",
    )

    def replace(self, **changes: Any) -> Interactions:
        """A copy with some fields replaced (the id space is shared); the result is validated."""
        fields = {name: getattr(self, name) for name in self._FIELDS}
        fields.update(changes)
        return Interactions(**fields)

    def _evolve(self, **changes: Any) -> Interactions:
        """Like :meth:`replace` without re-validating the records (internal, trusted changes)."""
        out = object.__new__(Interactions)
        for name in self._FIELDS:
            object.__setattr__(out, name, changes.get(name, getattr(self, name)))
        return out

    def with_user_attributes(self, ids: Any, **columns: Any) -> Interactions:
        """Attach user attribute columns given for raw user ids ``ids`` (aligned by id)."""
        return self._with_attributes(ids, columns, self.user_map, "user_attributes", "user")

    def with_item_attributes(self, ids: Any, **columns: Any) -> Interactions:
        """Attach item attribute columns given for raw item ids ``ids`` (aligned by id)."""
        return self._with_attributes(ids, columns, self.item_map, "item_attributes", "item")

    def _with_attributes(
        self, ids: Any, columns: Mapping[str, Any], idmap: IdMap, table: str, kind: str
    ) -> Interactions:
        src = IdMap(ids, kind)
        pos, known = src.lookup(idmap.ids)
        if not known.all():
            missing = idmap.ids[~known][:10].tolist()
            raise DataError(
                f"attribute table lacks {int((~known).sum())} {kind}(s) of the data, e.g. "
                f"{missing}; give a value for every {kind}"
            )
        merged = dict(getattr(self, table))
        for key, col in columns.items():
            col = np.asarray(col)
            if len(col) != len(src):
                raise ValidationError(f"attribute {key!r} has {len(col)} values for {len(src)} ids")
            merged[key] = col[pos]
        return self.replace(**{table: merged})

    # ------------------------------------------------------------------ basic properties
    @property
    def user_ids(self) -> np.ndarray:
        """Raw user id of each user index."""
        return self.user_map.ids

    @property
    def item_ids(self) -> np.ndarray:
        """Raw item id of each item index."""
        return self.item_map.ids

    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    def __len__(self) -> int:
        return len(self.user_idx)

    def __repr__(self) -> str:
        return (
            f"Interactions(n_records={len(self)}, n_users={self.n_users}, n_items={self.n_items}, "
            f"inactive_items={int((~self.item_active).sum())})"
        )

    def same_space(self, other: Interactions) -> bool:
        """True when ``other`` indexes users and items exactly as this does."""
        return (
            self.user_map is other.user_map or np.array_equal(self.user_ids, other.user_ids)
        ) and (self.item_map is other.item_map or np.array_equal(self.item_ids, other.item_ids))

    def user_counts(self) -> np.ndarray:
        """Number of records per user index."""
        return np.bincount(self.user_idx, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        """Number of records per item index."""
        return np.bincount(self.item_idx, minlength=self.n_items)

    def to_csr(self, values: str = "ones") -> sp.csr_matrix:
        """User × item CSR matrix; ``values`` is ``"ones"``, ``"rating"`` or ``"weight"``.

        Duplicate (user, item) records are summed.
        """
        if values == "ones":
            data = np.ones(len(self), dtype=np.float32)
        elif values in ("rating", "weight"):
            col = getattr(self, values)
            if col is None:
                raise ValidationError(f"these interactions have no {values} column")
            data = col
        else:
            raise ValidationError(f"values must be 'ones', 'rating' or 'weight', got {values!r}")
        m = sp.csr_matrix(
            (data, (self.user_idx, self.item_idx)), shape=(self.n_users, self.n_items)
        )
        m.sum_duplicates()
        return m

    # ------------------------------------------------------------------ serialisation
    def to_state(self) -> dict[str, np.ndarray]:
        """Plain arrays (no pickled objects) that :meth:`from_state` turns back into this."""
        out: dict[str, np.ndarray] = {
            "user_idx": self.user_idx,
            "item_idx": self.item_idx,
            "record_id": self.record_id,
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "item_active": self.item_active,
        }
        for name in ("rating", "timestamp", "weight", "user_features"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for prefix, table in (("ua:", self.user_attributes), ("ia:", self.item_attributes)):
            for key, col in table.items():
                out[prefix + key] = col.astype(str) if col.dtype.kind == "O" else col
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> Interactions:
        """Rebuild from :meth:`to_state` arrays."""
        try:
            return cls(
                user_idx=state["user_idx"],
                item_idx=state["item_idx"],
                user_map=IdMap(state["user_ids"], "user"),
                item_map=IdMap(state["item_ids"], "item"),
                record_id=state["record_id"],
                rating=state.get("rating"),
                timestamp=state.get("timestamp"),
                weight=state.get("weight"),
                user_attributes={k[3:]: v for k, v in state.items() if k.startswith("ua:")},
                item_attributes={k[3:]: v for k, v in state.items() if k.startswith("ia:")},
                item_active=state["item_active"],
                user_features=state.get("user_features"),
            )
        except KeyError as exc:
            raise DataError(f"saved interactions lack the array {exc}; the file is damaged") from exc

    # ------------------------------------------------------------------ subsets and deletion
    def take(self, index: np.ndarray) -> Interactions:
        """Records selected by an integer index or boolean mask, in the same id space."""
        index = np.asarray(index)
        if index.dtype != bool and index.dtype.kind not in "iu":
            raise ValidationError(f"take() needs an integer index or a boolean mask, got {index.dtype}")
        # A subset of validated records is valid: skip re-validation (it dominates on 1M rows).
        out = object.__new__(Interactions)
        for name in self._FIELDS:
            value = getattr(self, name)
            if name in ("user_idx", "item_idx", "record_id", "rating", "timestamp", "weight"):
                value = None if value is None else _readonly(value[index])
            object.__setattr__(out, name, value)
        return out

    def resolve(
        self,
        users: Iterable[Any] | None = None,
        interactions: Iterable[tuple[Any, Any]] | None = None,
        items: Iterable[Any] | None = None,
    ) -> ResolvedRequest:
        """Resolve raw ids of a deletion request; raise :class:`~sisakit.UnknownIdError` if any is unknown.

        Users and items must be part of the id space. An (user, item) pair must name a known user
        and item; whether the pair still has a record is reported in ``pair_found``.
        """
        u_raw = _request_ids(users, "users")
        i_raw = _request_ids(items, "items")
        pairs = [] if interactions is None else list(interactions)
        if any(not isinstance(p, (tuple, list, np.ndarray)) or len(p) != 2 for p in pairs):
            raise ValidationError(
                "interactions must be a sequence of (user, item) pairs, e.g. [(1, 10), (2, 11)]"
            )
        u_idx, u_ok = self.user_map.lookup(u_raw)
        i_idx, i_ok = self.item_map.lookup(i_raw)
        pu_raw = _request_ids([p[0] for p in pairs], "interaction users")
        pi_raw = _request_ids([p[1] for p in pairs], "interaction items")
        pu_idx, pu_ok = self.user_map.lookup(pu_raw)
        pi_idx, pi_ok = self.item_map.lookup(pi_raw)
        unknown: list[tuple[str, list[Any]]] = []
        if not u_ok.all():
            unknown.append(("user", u_raw[~u_ok].tolist()))
        if not i_ok.all():
            unknown.append(("item", i_raw[~i_ok].tolist()))
        bad_pairs = ~(pu_ok & pi_ok)
        if bad_pairs.any():
            unknown.append(("interaction", [pairs[k] for k in np.flatnonzero(bad_pairs)]))
        if unknown:
            kind, ids = unknown[0]
            if len(unknown) > 1:
                ids = [x for _, group in unknown for x in group]
                kind = "/".join(k for k, _ in unknown)
            raise UnknownIdError(kind, ids, "nothing was deleted; remove the unknown ids and retry")
        remove = np.zeros(len(self), dtype=bool)
        if len(u_idx):
            remove |= np.isin(self.user_idx, u_idx)
        if len(i_idx):
            remove |= np.isin(self.item_idx, i_idx)
        pair_found = np.zeros(len(pairs), dtype=bool)
        if pairs:
            keys = self.user_idx * np.int64(self.n_items) + self.item_idx
            qkeys = pu_idx * np.int64(self.n_items) + pi_idx
            remove |= np.isin(keys, qkeys)
            pair_found = np.isin(qkeys, keys)
        return ResolvedRequest(remove, u_idx, i_idx, pu_idx, pi_idx, pair_found)

    def without(
        self,
        users: Iterable[Any] | None = None,
        interactions: Iterable[tuple[Any, Any]] | None = None,
        items: Iterable[Any] | None = None,
    ) -> Interactions:
        """The remaining data after deleting users, (user, item) pairs and/or items.

        The id space is unchanged; forgotten items are marked inactive (never recommended, never
        sampled as negatives). This is the reference that exact unlearning is checked against.

        Raises
        ------
        UnknownIdError
            If any id is not part of the id space (nothing is removed).
        """
        req = self.resolve(users=users, interactions=interactions, items=items)
        out = self.take(~req.remove)
        if len(req.items):
            active = self.item_active.copy()
            active[req.items] = False
            out = out.replace(item_active=active)
        return out


def _request_ids(values: Iterable[Any] | None, what: str) -> np.ndarray:
    if values is None:
        return np.zeros(0, dtype=np.int64)
    if isinstance(values, (str, bytes)) or np.isscalar(values):
        raise ValidationError(f"{what} must be a list of ids, e.g. [{values!r}], not a single id")
    return _as_id_array(list(values) if not isinstance(values, np.ndarray) else values, what)
