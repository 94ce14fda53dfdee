"""The :class:`Interactions` container: user–item records in a fixed id space."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._validation import INT64_MAX, INT64_MIN, short_repr
from .errors import DataError, UnknownIdError, ValidationError

__all__ = ["IdMap", "Interactions", "ResolvedRequest", "canonical_id", "labelled"]


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


_NESTED = (list, tuple, set, frozenset, dict, range, np.ndarray)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _nested_error(values: Any, what: str) -> ValidationError:
    """The error for a ragged or nested id list (``[[1, 2], [3]]``, ``[1, [2]]``)."""
    try:
        k, v = next((k, v) for k, v in enumerate(values) if isinstance(v, _NESTED))
        at = f"entry {k} is {short_repr(v)}"
    except (StopIteration, TypeError):
        at = "it is ragged or nested"
    return ValidationError(
        f"{what} must be a flat list of ids, but {at}; pass one int or str id per entry "
        "(e.g. [1, 2, 3], not [[1, 2], [3]])"
    )


def _oversize_error(v: Any, what: str) -> ValidationError:
    return ValidationError(
        f"{what} holds {short_repr(v)}, which does not fit a 64-bit integer id (range -2**63 .. "
        "2**63 - 1); use smaller ids, or strings (e.g. str(id))"
    )


def _raw_array(values: Any, what: str) -> np.ndarray:
    """``values`` as an array without silent type coercion: a list numpy would turn into text
    or floats (``[1, "2"]``, ``[1, 2**63]``) becomes an object array of its elements; a ragged
    list is a :class:`ValidationError`."""
    if isinstance(values, np.ndarray):
        return values
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        raise _nested_error(values, what) from None
    if arr.dtype.kind in "Uf":  # numpy turns [1, "2"] into strings, [1, 2**63] into floats
        arr = np.asarray(values, dtype=object)
    return arr


def _object_ids(arr: np.ndarray, what: str, oversize: str) -> np.ndarray:
    """Classify a 1-D object array of ids (a Python loop: object arrays have no fast path)."""
    vals = arr.tolist()
    kinds = {type(v) for v in vals}
    if all(issubclass(k, str) for k in kinds):
        return arr.astype(str)
    if any(issubclass(k, _NESTED) for k in kinds):
        raise _nested_error(vals, what)
    if all(issubclass(k, (int, np.integer)) and not issubclass(k, (bool, np.bool_))
           for k in kinds):
        ints = [int(v) for v in vals]
        try:
            return np.array(ints, dtype=np.int64)
        except OverflowError:
            huge = max(ints, key=abs)
            if oversize == "keep" and huge.bit_length() <= 1024:  # a lookup: simply unknown
                out = np.empty(len(ints), dtype=object)
                out[:] = ints
                return out
            raise _oversize_error(huge, what) from None
    if all(issubclass(k, (float, np.floating)) for k in kinds):
        raise ValidationError(
            f"{what} holds floats (e.g. {short_repr(vals[0])}); ids must be integers or strings "
            "(convert float ids with .astype(int) or .astype(str))"
        )
    raise ValidationError(
        f"{what} mixes id types {sorted(k.__name__ for k in kinds)}; use all ints or all "
        "strings"
    )


def as_id_array(values: Any, what: str, oversize: str = "raise") -> np.ndarray:
    """Raw ids as an int64 or unicode array; floats, mixed types, nested lists and ints beyond
    int64 are rejected (``oversize="keep"``: ints beyond int64 come back as an object array of
    Python ints, for lookups that report them unknown)."""
    arr = _raw_array(values, what)
    if arr.ndim != 1:
        raise ValidationError(f"{what} must be one-dimensional, got shape {arr.shape}; pass a flat "
                              "array of ids (e.g. array.ravel())")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind == "i":
        return arr.astype(np.int64)
    if arr.dtype.kind == "u":
        if arr.dtype.itemsize == 8 and int(arr.max()) > INT64_MAX:  # would wrap negative
            if oversize == "keep":
                return np.array(arr.tolist(), dtype=object)
            raise _oversize_error(int(arr.max()), what)
        return arr.astype(np.int64)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "O":
        return _object_ids(arr, what, oversize)
    raise ValidationError(
        f"{what} has dtype {arr.dtype}; ids must be integers or strings (convert float ids "
        "with .astype(int) or .astype(str))"
    )


def _numeric_column(name: str, value: Any, n: int) -> np.ndarray:
    """A per-record column (rating, timestamp, weight) as a numeric 1-D array of ``n`` values."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise ValidationError(f"{name} must be a flat numeric array with one value per record "
                              f"({n}), got a ragged or nested sequence") from None
    if arr.shape != (n,):
        raise ValidationError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.dtype.kind == "O" and n and all(_is_int(v) for v in arr.tolist()):
        ints = [int(v) for v in arr.tolist()]  # Python ints numpy could not hold as int64
        bad = [k for k, v in enumerate(ints) if not INT64_MIN <= v <= INT64_MAX]
        if name == "timestamp" or not bad:
            if bad:
                raise DataError(f"timestamp does not fit int64 seconds (records {bad[:5]}, e.g. "
                                f"{short_repr(ints[bad[0]])}); use Unix seconds")
            return np.array(ints, dtype=np.int64)
        try:
            return np.array([float(v) for v in ints], dtype=np.float64)
        except OverflowError:
            raise DataError(f"{name} overflows float32 (records {bad[:5]}); rescale it") from None
    if arr.dtype.kind == "M" and name == "timestamp":
        raise ValidationError("timestamp must be int64 Unix seconds, got datetimes; convert them "
                              "with .astype('datetime64[s]').astype(np.int64)")
    if arr.dtype.kind not in "iuf":
        raise ValidationError(f"{name} must be numeric, got dtype {arr.dtype}; convert it "
                              "with .astype(float)")
    return arr


def _records(mask: np.ndarray) -> str:
    bad = np.flatnonzero(mask)
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"records {bad[:5].tolist()}{more}"


def _check_column(name: str, arr: np.ndarray, dtype: type) -> None:
    """Refuse values the stored ``dtype`` would change: NaN/inf, float32 overflow, fractional
    or out-of-range timestamps (never a silent inf, truncation or wrap-around)."""
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise DataError(f"{name} has NaN or infinite values ({_records(bad)}); drop or "
                            "impute them")
        if dtype is np.float32:
            bad = np.abs(arr) > np.finfo(np.float32).max
            if bad.any():
                v = float(arr[np.flatnonzero(bad)[0]])
                raise DataError(f"{name} overflows float32 ({_records(bad)}, e.g. {v!r}); "
                                f"{name} is stored as float32 (|x| <= 3.4e38): rescale it")
        else:
            bad = arr != np.round(arr)
            if bad.any():
                v = float(arr[np.flatnonzero(bad)[0]])
                raise DataError(f"{name} has fractional values ({_records(bad)}, e.g. {v!r}); "
                                f"{name}s are whole int64 seconds: round them first "
                                "(e.g. np.rint) or pass integers")
            bad = (arr < -(2.0**63)) | (arr >= 2.0**63)
            if bad.any():
                raise DataError(f"{name} does not fit int64 seconds ({_records(bad)}); use "
                                "Unix seconds")
    elif arr.dtype.kind == "u" and dtype is np.int64 and arr.dtype.itemsize == 8:
        bad = arr > np.uint64(INT64_MAX)
        if bad.any():
            raise DataError(f"{name} does not fit int64 seconds ({_records(bad)}); use Unix "
                            "seconds")


def canonical_id(value: Any) -> Any:
    """A raw id as a plain Python ``int`` or ``str`` (numpy scalars unwrapped), so the same id
    always hashes and compares the same way whatever container it came in."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError(
            f"ids must be integers or strings, got {short_repr(value)} ({type(value).__name__})"
        )
    if isinstance(value, int) and value.bit_length() > 1024:  # far beyond any int64 id
        raise _oversize_error(value, "ids")
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
        self.ids = _readonly(as_id_array(ids, f"{what} ids"))
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
        q = _raw_array(raw, f"{self.what} ids")
        if q.ndim == 0:
            q = q.reshape(1)
        if q.ndim > 1:  # any shape: look the ids up flat, answer in the same shape
            idx, known = self.lookup(q.reshape(-1))
            return idx.reshape(q.shape), known.reshape(q.shape)
        n = len(q)
        known = np.ones(n, dtype=bool)
        id_kind = self.ids.dtype.kind
        if q.dtype.kind == "u" and id_kind == "i":
            known = q <= np.uint64(INT64_MAX) if q.dtype.itemsize == 8 else known
            q = np.where(known, q, 0).astype(np.int64)  # no float promotion in searchsorted
        elif q.dtype.kind == "O" and n:
            vals = q.tolist()
            if any(isinstance(v, _NESTED) for v in vals):
                raise _nested_error(vals, f"{self.what} ids")
            if id_kind == "i":
                known = np.array([_is_int(v) and INT64_MIN <= v <= INT64_MAX for v in vals])
                q = np.array([int(v) if k else 0 for v, k in zip(vals, known, strict=True)],
                             dtype=np.int64)
            else:
                known = np.array([isinstance(v, str) for v in vals])
                q = np.array([v if k else "" for v, k in zip(vals, known, strict=True)], dtype=str)
        elif not ((q.dtype.kind == "i" and id_kind == "i") or (q.dtype.kind == id_kind == "U")):
            known = np.zeros(n, dtype=bool)  # floats, bools, bytes, other kinds: never ids
        if n == 0 or len(self.ids) == 0 or not known.any():
            return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        pos = np.searchsorted(self._sorted, q)
        pos = np.minimum(pos, len(self._sorted) - 1)
        known &= self._sorted[pos] == q
        return self._order[pos].astype(np.int64), known

    def index(self, raw: Any, kind: str) -> np.ndarray:
        """Indices of ``raw`` ids; raise :class:`~sisakit.UnknownIdError` listing every unknown one."""
        idx, known = self.lookup(raw)
        if not known.all():
            q = np.atleast_1d(np.asarray(raw, dtype=object))
            raise UnknownIdError(kind, [v.item() if isinstance(v, np.generic) else v
                                        for v in q[~known].tolist()])
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


#: The per-record columns of :class:`Interactions`, one entry per record: ``user_idx``,
#: ``item_idx`` and ``record_id`` always, ``rating``, ``timestamp`` and ``weight`` when given
#: (else None). Every other field is the id space, shared by every subset of the records.
RECORD_COLUMNS = ("user_idx", "item_idx", "record_id", "rating", "timestamp", "weight")


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
            arr = _safe_array(getattr(self, name), name)
            if arr.ndim != 1 or len(arr) != n:
                raise ValidationError(f"{name} must be 1-D with {n} entries, got {arr.shape}")
            if arr.dtype.kind not in "iu":
                raise ValidationError(f"{name} must be integers, got dtype {arr.dtype}")
            if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and n and (
                arr.max() > np.uint64(INT64_MAX)
            ):
                raise ValidationError(f"{name} holds values beyond int64; pass int64 values")
            object.__setattr__(self, name, _readonly(arr.astype(np.int64)))
        for name, dtype in (("rating", np.float32), ("timestamp", np.int64), ("weight", np.float32)):
            arr = getattr(self, name)
            if arr is None:
                continue
            arr = _numeric_column(name, arr, n)
            _check_column(name, arr, dtype)
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
        active = np.ones(self.n_items, bool) if active is None else _safe_array(
            active, "item_active")
        if active.dtype != bool and not (active.dtype.kind in "iu" and np.isin(active, (0, 1)).all()):
            raise ValidationError(f"item_active must be booleans (or 0/1), got dtype {active.dtype}; "
                                  "pass one True/False flag per item")  # "False" would be True
        if active.shape != (self.n_items,):
            raise ValidationError(f"item_active must have shape ({self.n_items},)")
        active = active.astype(bool)
        object.__setattr__(self, "item_active", _readonly(active))
        if self.user_features is not None:
            feats = _safe_array(self.user_features, "user_features")
            if feats.ndim != 2 or feats.shape[0] != self.n_users or feats.dtype.kind not in "iuf":
                raise ValidationError(
                    f"user_features must be a numeric (n_users, d) = ({self.n_users}, d) array, got "
                    f"{feats.dtype} {feats.shape}; pass one feature row per user index"
                )
            if not np.isfinite(feats).all():
                raise DataError("user_features has NaN or infinite values; drop or impute them")
            if feats.dtype.kind == "f" and (np.abs(feats) > np.finfo(np.float32).max).any():
                raise DataError("user_features overflows float32 (|x| <= 3.4e38, how it is "
                                "stored); rescale it")
            object.__setattr__(self, "user_features", _readonly(feats.astype(np.float32)))
        for table, size, what in (
            ("user_attributes", self.n_users, "users"),
            ("item_attributes", self.n_items, "items"),
        ):
            cols = {}
            for key, col in dict(getattr(self, table)).items():
                col = _safe_array(col, f"{table}[{key!r}]")
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
            Raw id of the user and the item of each record: a flat list or 1-D array, all ints
            (each within int64) or all strings.
        rating, timestamp, weight : array-like, optional
            Per-record columns. Ratings and weights are stored as float32 (a value with
            ``abs(x) > 3.4e38`` is refused, never turned into inf); timestamps as int64 seconds (a
            fractional or out-of-range value is refused, never truncated or wrapped).
        user_ids, item_ids : array-like, optional
            The full id space (e.g. to include users without records). Defaults to the sorted
            distinct ids seen in ``users`` / ``items``.

        Raises
        ------
        ValidationError
            If ids are nested or ragged, mix types, are floats or do not fit int64.
        DataError
            If a per-record value is NaN/infinite or cannot be stored exactly (see above).
        """
        u = as_id_array(users, "users")
        i = as_id_array(items, "items")
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
        unknown = sorted(set(changes) - set(self._FIELDS))
        if unknown:
            raise ValidationError(f"replace() got unknown field(s) {unknown}; fields are "
                                  f"{list(self._FIELDS)}")
        fields = {name: getattr(self, name) for name in self._FIELDS}
        fields.update(changes)
        return Interactions(**fields)

    def evolve(self, **changes: Any) -> Interactions:
        """Like :meth:`replace`, without re-validating anything: only for values derived from
        this object's own (a subset of its records, a narrowed ``item_active``, tombstoned id
        maps), as the engine and the shard workers make them. Use :meth:`replace` otherwise."""
        out = object.__new__(Interactions)
        for name in self._FIELDS:
            object.__setattr__(out, name, changes.get(name, getattr(self, name)))
        return out

    _evolve = evolve  # the name before 0.2

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
            col = _safe_array(col, f"attribute {key!r}")
            if col.ndim == 0 or len(col) != len(src):
                raise ValidationError(f"attribute {key!r} has {len(col) if col.ndim else 'a single'}"
                                      f" value(s) for {len(src)} ids; pass one value per id")
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
        if not isinstance(other, Interactions):
            raise ValidationError(f"same_space() needs Interactions, got {type(other).__name__}")
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
        if not isinstance(state, Mapping):
            raise ValidationError(f"state must be a mapping of arrays (as to_state() returns), "
                                  f"got {type(state).__name__}")
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
        index = _safe_array(index, "take() index")
        n = len(self)
        if index.size == 0 and index.dtype.kind == "f":  # take([]): no records
            index = index.astype(np.int64)
        if index.dtype != bool and index.dtype.kind not in "iu":
            raise ValidationError(f"take() needs an integer index or a boolean mask, got {index.dtype}")
        if index.dtype == bool and index.shape != (n,):
            raise ValidationError(f"take() needs a boolean mask of shape ({n},), got "
                                  f"{index.shape}; pass one flag per record")
        if index.dtype != bool and (index.ndim != 1 or (index.size and (
                int(index.min()) < -n or int(index.max()) >= n))):
            raise ValidationError(f"take() needs a 1-D integer index in [0, {n}) (record "
                                  "positions, not record_id values)")
        # A subset of validated records is valid: skip re-validation (it dominates on 1M rows).
        out = object.__new__(Interactions)
        for name in self._FIELDS:
            value = getattr(self, name)
            if name in RECORD_COLUMNS:
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
        if interactions is not None and (
            isinstance(interactions, (str, bytes)) or not isinstance(interactions, Iterable)
        ):
            raise ValidationError("interactions must be a sequence of (user, item) pairs, e.g. "
                                  f"[(1, 10), (2, 11)], got {short_repr(interactions)}")
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


def _safe_array(value: Any, what: str, dtype: Any = None) -> np.ndarray:
    """``np.asarray`` whose ragged-input and conversion errors are :class:`ValidationError`."""
    try:
        return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise ValidationError(f"{what} must be a flat (rectangular) array"
                              + (f" of {np.dtype(dtype).name}" if dtype is not None else "")
                              + ", got a ragged, nested or unconvertible sequence") from None


def _id_ndim(values: Any, what: str) -> int:
    """``np.ndim(values)``, but a ragged or nested id list (on which numpy raises ValueError) is
    a :class:`ValidationError` naming the offending entry."""
    try:
        return int(np.ndim(values))
    except (ValueError, TypeError, OverflowError):
        raise _nested_error(values, what) from None


def _request_ids(values: Iterable[Any] | None, what: str) -> np.ndarray:
    """Raw ids of a deletion request; ints beyond int64 stay Python ints (unknown ids)."""
    if values is None:
        return np.zeros(0, dtype=np.int64)
    if isinstance(values, (str, bytes)) or np.isscalar(values):
        raise ValidationError(f"{what} must be a list of ids, e.g. [{values!r}], not a single id")
    if not isinstance(values, np.ndarray):
        try:
            values = list(values)
        except TypeError:
            raise ValidationError(f"{what} must be a list of ids, got {type(values).__name__}"
                                  ) from None
    return as_id_array(values, what, oversize="keep")
