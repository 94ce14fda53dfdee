"""Reading interaction tables from CSV, TSV and Parquet files.

This module also holds the fast, vectorised text parsing shared with
:mod:`sisakit.datasets.movielens`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import INT64_MAX, INT64_MIN, short_repr
from ..data import Interactions
from ..errors import DataError, ValidationError

__all__ = ["read_interactions"]

logger = logging.getLogger(__name__)

_ID_MODES = ("auto", "int", "str")
_FORMATS = ("csv", "tsv", "parquet")
_CHUNK_BYTES = 1 << 22
_POW10 = 10.0 ** np.arange(16)
_MAX_DIGITS = 15  # exact in float64 accumulation
_F32_MAX = float(np.finfo(np.float32).max)
# the decimal digits of 2**63 - 1 and of 2**63 (the magnitude of the smallest int64)
_LIM_POS = np.array([int(c) for c in str(INT64_MAX)], np.uint32)
_LIM_NEG = np.array([int(c) for c in str(-INT64_MIN)], np.uint32)


# ---------------------------------------------------------------------------------- helpers
def _read_bytes(path: Path, hint: str) -> bytes:
    """Bytes of ``path``; a missing or unreadable file is a :class:`DataError` with ``hint``."""
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a file; {hint}")
    if not path.is_file():
        raise DataError(f"{path} not found; {hint}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc}); {hint}") from exc


def _line_text(raw: bytes, lineno: int) -> str:
    """Line ``lineno`` (1-based) of ``raw``, decoded leniently and shortened for messages."""
    lines = raw.split(b"\n")
    text = lines[lineno - 1].rstrip(b"\r").decode("latin-1") if lineno <= len(lines) else ""
    return text if len(text) <= 120 else text[:117] + "..."


def _malformed(path: Path, lineno: int, problem: str, layout: str, raw: bytes | None) -> DataError:
    shown = f" {_line_text(raw, lineno)!r}" if raw is not None else ""
    return DataError(
        f"{path}, line {lineno}: malformed line{shown}: {problem}. Every line must be "
        f"{layout}; fix or delete that line (or get a fresh copy of the file)"
    )


def _parse_int_chunk(c: np.ndarray, sepc: int, ncols: int) -> tuple[np.ndarray | None, tuple]:
    """Parse one chunk of non-negative integer fields; return ``(values, ())`` or
    ``(None, (line_offset, problem))`` for the first malformed line of the chunk."""
    nl = c == 10
    is_sep = c == sepc
    delim = nl | is_sep
    digit = (c - np.uint8(48)) < 10
    line = np.cumsum(nl, dtype=np.int64)
    n_lines = int(line[-1]) + 1
    problems: list[tuple[int, str]] = []
    bad_char = np.flatnonzero(~(digit | delim))
    if bad_char.size:
        ch = chr(c[bad_char[0]])
        problems.append((int(line[bad_char[0]]), f"unexpected character {ch!r}"))
    nsep = np.bincount(line[is_sep], minlength=n_lines)
    bad_count = np.flatnonzero(nsep != ncols - 1)
    if bad_count.size:
        k = int(bad_count[0])
        problems.append((k, f"expected {ncols} fields, found {int(nsep[k]) + 1}"))
    d = np.flatnonzero(delim)
    starts = np.concatenate(([0], d + 1))
    ends = np.append(d, len(c))
    if not bad_count.size:
        tlen = ends - starts
        bad_tok = np.flatnonzero((tlen == 0) | (tlen > _MAX_DIGITS))
        if bad_tok.size:
            problems.append((int(bad_tok[0]) // ncols, "a field is empty or too long"))
    if problems:
        return None, min(problems)
    tid = np.cumsum(delim, dtype=np.int64) - delim
    pos = np.flatnonzero(digit)
    tok = tid[pos]
    contrib = (c[pos] - np.uint8(48)) * _POW10[ends[tok] - pos - 1]
    vals = np.bincount(tok, weights=contrib, minlength=len(starts))
    return np.rint(vals).astype(np.int64).reshape(-1, ncols), ()


def _int_table(path: Path, sep: str, ncols: int, layout: str, hint: str) -> np.ndarray:
    """Parse a headerless text file of non-negative integers, ``ncols`` fields per line.

    Vectorised over bytes (no loop per line). Returns an int64 array of shape (n, ncols).
    A malformed line raises :class:`DataError` naming the file and its 1-based line number.
    """
    raw = _read_bytes(path, hint)
    buf = raw.replace(b"\r\n", b"\n") if b"\r" in raw else raw
    bsep = sep.encode()
    if len(bsep) != 1:
        sub = next((s for s in (b"\x1f", b"\x1e", b"\x1d", b"\x1c") if s not in buf), None)
        if sub is None:
            raise DataError(f"{path} contains binary control characters; it is not a text table")
        buf = buf.replace(bsep, sub)
        bsep = sub
    buf = buf.rstrip(b"\n")
    if not buf:
        raise DataError(f"{path} is empty; expected lines of {layout}")
    a = np.frombuffer(buf, dtype=np.uint8)
    parts: list[np.ndarray] = []
    start, line0 = 0, 0
    while start <= len(a):
        stop = len(a)
        if start + _CHUNK_BYTES < len(a):
            nlpos = buf.rfind(b"\n", start, start + _CHUNK_BYTES)
            if nlpos < start:
                nlpos = buf.find(b"\n", start + _CHUNK_BYTES)
            stop = len(a) if nlpos < 0 else nlpos
        chunk = a[start:stop]
        if chunk.size == 0:
            raise _malformed(path, line0 + 1, "the line is empty", layout, raw)
        vals, problem = _parse_int_chunk(chunk, bsep[0], ncols)
        if vals is None:
            off, what = problem
            raise _malformed(path, line0 + off + 1, what, layout, raw)
        parts.append(vals)
        line0 += len(vals)
        start = stop + 1
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _text_rows(
    path: Path, sep: str, nfields: int, layout: str, hint: str, encoding: str = "latin-1"
) -> tuple[list[list[str]], np.ndarray, bytes]:
    """Split a small headerless text file into fields; return rows, 1-based line numbers, bytes.

    Meant for metadata files (thousands of lines); blank trailing lines are ignored.
    """
    raw = _read_bytes(path, hint)
    text = raw.decode(encoding).rstrip("\r\n")
    if not text:
        raise DataError(f"{path} is empty; expected lines of {layout}")
    rows = [line.rstrip("\r").split(sep) for line in text.split("\n")]
    bad = next((k for k, r in enumerate(rows) if len(r) != nfields), None)
    if bad is not None:
        problem = f"expected {nfields} fields separated by {sep!r}, found {len(rows[bad])}"
        raise _malformed(path, bad + 1, problem, layout, raw)
    return rows, np.arange(1, len(rows) + 1), raw


def _field_ints(
    values: list[str], lines: np.ndarray, path: Path, what: str, layout: str, raw: bytes
) -> np.ndarray:
    """Convert a list of decimal strings to int64; the first bad one is a malformed line."""
    try:
        return np.array(values, dtype=str).astype(np.int64)
    except (ValueError, OverflowError):
        for k, v in enumerate(values):
            try:
                iv = int(v)
            except ValueError:
                problem = f"{what} {short_repr(v)} is not an integer"
            else:
                if INT64_MIN <= iv <= INT64_MAX:
                    continue
                problem = f"{what} {short_repr(v)} does not fit a 64-bit integer"
            raise _malformed(path, int(lines[k]), problem, layout, raw) from None
        raise DataError(f"{path}: the {what} column is not integers; {layout}") from None


def _unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based: much faster than ``np.unique``'s hash path on
    numpy 2 when most values are distinct)."""
    srt = np.sort(x, kind="stable")
    if len(srt) < 2:
        return srt
    return srt[np.concatenate(([True], srt[1:] != srt[:-1]))]


# --------------------------------------------------------------------------- column values
class _BadValue(Exception):
    """A value of a column cannot be used; ``row`` is its 0-based data row (None: the whole
    column, e.g. its type)."""

    def __init__(self, column: str, row: int | None, reason: str) -> None:
        super().__init__(reason)
        self.column, self.row, self.reason = column, row, reason


def _strip(x: np.ndarray) -> np.ndarray:
    return np.char.strip(x.astype(str))


def _parse_int_strings(s: np.ndarray, canonical: bool) -> tuple[np.ndarray, np.ndarray]:
    """Parse a unicode array of decimal integers; return ``(values, ok)``.

    Every int64 is accepted exactly (up to 19 digits, range-checked); vectorised over
    character positions (at most 20), not rows. ``canonical`` rejects leading zeros and ``-0``
    so that e.g. ``"007"`` stays a string id.
    """
    n = len(s)
    s = np.ascontiguousarray(s)
    w = s.dtype.itemsize // 4
    if n == 0 or w == 0:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    if w > 20:
        too_long = np.char.str_len(s) > 20
        vals, ok = _parse_int_strings(s.astype("<U20"), canonical)
        return vals, ok & ~too_long
    cp = s.view(np.uint32).reshape(n, w)
    neg = cp[:, 0] == 45
    length = (cp != 0).sum(axis=1)
    blen = length - neg
    digit = cp - np.uint32(48)
    isdig = digit < 10
    col = np.arange(w)
    inbody = (col >= neg[:, None]) & (col < length[:, None])
    ok = (isdig | ~inbody).all(axis=1) & (blen >= 1) & (blen <= 19)
    if canonical:
        first = cp[np.arange(n), neg.astype(np.int64)] if w > 1 else cp[:, 0]
        ok &= (blen == 1) | (first != 48)
        ok &= ~(neg & (first == 48))
    rows = np.flatnonzero(ok & (blen == 19))
    if rows.size:  # 19 digits: compare with the int64 limits digit by digit (no wrap-around)
        at = neg[rows].astype(np.int64)[:, None] + np.arange(19)
        d = np.take_along_axis(digit[rows], at, axis=1)
        lim = np.where(neg[rows][:, None], _LIM_NEG, _LIM_POS)
        diff = d != lim
        first_diff = diff.argmax(axis=1)
        m = np.arange(len(rows))
        ok[rows[diff.any(axis=1) & (d[m, first_diff] > lim[m, first_diff])]] = False
    vals = np.zeros(n, np.int64)
    if not ok.any():  # e.g. text ids or ISO dates: nothing to accumulate
        return vals, ok
    use = inbody & isdig & ok[:, None]
    digit = digit.astype(np.int64)
    for j in range(w):  # loop over character positions, not rows
        vals = np.where(use[:, j], vals * 10 + digit[:, j], vals)
    # -2**63 accumulates to 2**63, which wraps to -2**63: negating it gives -2**63 again
    return np.where(neg, -vals, vals), ok


def _int_syntax(s: np.ndarray) -> np.ndarray:
    """Which strings are ``[-]digits`` of any length (integers, whether or not they fit)."""
    n = len(s)
    s = np.ascontiguousarray(s)
    w = s.dtype.itemsize // 4
    if n == 0 or w == 0:
        return np.zeros(n, bool)
    cp = s.view(np.uint32).reshape(n, w)
    neg = cp[:, 0] == 45
    length = (cp != 0).sum(axis=1)
    inbody = (np.arange(w) >= neg[:, None]) & (np.arange(w) < length[:, None])
    return ((cp - np.uint32(48) < 10) | ~inbody).all(axis=1) & (length - neg >= 1)


_ARROW_INT = {"auto": "^(0|-?[1-9][0-9]{0,17})$", "int": "^-?[0-9]{1,18}$"}


def _arrow_ids(col: Any, mode: str) -> np.ndarray | None:
    """Fast path: a pyarrow text column whose values all are integers, as int64, else None.

    Applies exactly the rules of :func:`_parse_int_strings` (whitespace stripped first).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if mode == "str" or not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return None
    trimmed = pc.utf8_trim_whitespace(col)
    if not pc.all(pc.match_substring_regex(trimmed, _ARROW_INT[mode])).as_py():
        return None
    return np.asarray(pc.cast(trimmed, pa.int64()).to_numpy(zero_copy_only=False), np.int64)


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy array from a numpy array or a pyarrow (chunked) array; text becomes ``str``."""
    if isinstance(x, np.ndarray):
        return x
    arr = np.asarray(x.to_numpy(zero_copy_only=False))
    return arr.astype(str) if arr.dtype.kind == "O" else arr


_SUPPORTED = {
    "id": "integers, whole-valued floats or strings",
    "number": "integers, floats, decimals, booleans or numeric strings",
    "timestamp": "integers, whole-valued floats, timestamps, dates or ISO-8601 strings",
}


def _check_arrow_type(col: Any, column: str, role: str) -> None:
    """Refuse a pyarrow column whose type cannot hold ``role`` values (nested, binary, ...)
    instead of stringifying it."""
    import pyarrow as pa

    t = col.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    text = (pa.types.is_string(t) or pa.types.is_large_string(t)
            or getattr(pa.types, "is_string_view", lambda _: False)(t))
    numeric = pa.types.is_integer(t) or pa.types.is_floating(t)
    ok = {
        "id": numeric or text,
        "number": numeric or text or pa.types.is_decimal(t) or pa.types.is_boolean(t),
        "timestamp": numeric or text or pa.types.is_timestamp(t) or pa.types.is_date(t),
    }[role]
    if not ok and not pa.types.is_null(t):  # an all-null column is reported as null
        raise _BadValue(
            column, None,
            f"has type {t}, which cannot hold {'ids' if role == 'id' else role + 's'}; "
            f"supported: {_SUPPORTED[role]}. Cast the column (e.g. to string) before writing",
        )


def _no_nul(col: Any, column: str) -> None:
    """Refuse text ids holding NUL: numpy text drops a trailing NUL, merging distinct ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return
    has = pc.match_substring(col.cast(t), "\x00")
    if pc.any(has).as_py():
        row = int(np.flatnonzero(has.to_numpy(zero_copy_only=False))[0])
        raise _BadValue(column, row, "holds a NUL character; the file looks binary or corrupt: "
                                     "fix that value")


def _convert_ids(x: Any, mode: str, column: str) -> np.ndarray:
    """Raw ids as int64 or str according to ``mode`` (``"auto"``, ``"int"`` or ``"str"``)."""
    if not isinstance(x, np.ndarray):
        _check_arrow_type(x, column, "id")
        _no_nul(x, column)
        fast = _arrow_ids(x, mode)
        if fast is not None:
            return fast
        x = _to_numpy(x)
    if x.dtype.kind in "iu":
        if mode == "str":
            return x.astype(str)
        if x.dtype.kind == "u" and x.dtype.itemsize == 8 and len(x):
            big = np.flatnonzero(x > np.uint64(INT64_MAX))
            if big.size:  # astype(int64) would wrap it negative
                raise _BadValue(column, int(big[0]),
                                f"holds {int(x[big[0]])}, which does not fit a 64-bit integer "
                                "id; pass ids='str' to keep such ids exactly, as text")
        return x.astype(np.int64)
    if x.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(x) | (x != np.round(x)))
        if bad.size:
            raise _BadValue(
                column, int(bad[0]),
                f"holds {float(x[bad[0]])!r}, which is not an integer id; store ids as integers "
                "or text",
            )
        bad = np.flatnonzero((x < -(2.0**63)) | (x >= 2.0**63))
        if bad.size:
            raise _BadValue(column, int(bad[0]),
                            f"holds {float(x[bad[0]])!r}, which does not fit a 64-bit integer id; "
                            "store ids as integers or text")
        ints = x.astype(np.int64)
        return ints.astype(str) if mode == "str" else ints
    if x.dtype.kind not in "UO":
        raise _BadValue(column, 0, f"has type {x.dtype}; ids must be integers or text")
    s = _strip(x)
    empty = np.flatnonzero(np.char.str_len(s) == 0)
    if empty.size:
        raise _BadValue(column, int(empty[0]), "is empty; every record needs an id")
    if mode == "str":
        return s
    vals, ok = _parse_int_strings(s, canonical=(mode == "auto"))
    if ok.all():
        return vals
    if mode == "auto":
        return s
    k = int(np.flatnonzero(~ok)[0])
    if _int_syntax(s[k:k + 1])[0]:
        raise _BadValue(column, k, f"holds {short_repr(str(s[k]))}, which does not fit a 64-bit "
                                   "integer id; pass ids='str' to keep such ids exactly, as text")
    raise _BadValue(column, k, f"holds {short_repr(str(s[k]))}, which is not an integer; pass "
                               "ids='auto' or 'str'")


def _convert_float(x: Any, column: str) -> np.ndarray:
    """Ratings and weights as float64 values that float32 (how they are stored) can hold."""
    if not isinstance(x, np.ndarray):
        _check_arrow_type(x, column, "number")
    x = _to_numpy(x)
    if x.dtype.kind in "iub":
        return x.astype(np.float64)  # every int64/uint64 is below float32's maximum
    if x.dtype.kind == "f":
        out = x.astype(np.float64)
    else:
        s = _strip(x)
        try:
            out = s.astype(np.float64)
        except (ValueError, OverflowError):
            for k, v in enumerate(s.tolist()):
                try:
                    float(v)
                except (ValueError, OverflowError):
                    raise _BadValue(column, k, f"holds {short_repr(v)}, which is not a number"
                                    ) from None
            raise _BadValue(column, None, "is not numbers") from None
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise _BadValue(column, int(bad[0]), "is NaN, empty or infinite; drop or impute it")
    bad = np.flatnonzero(np.abs(out) > _F32_MAX)
    if bad.size:
        raise _BadValue(column, int(bad[0]),
                        f"holds {float(out[bad[0]])!r}, which overflows float32 (how ratings and "
                        "weights are stored, |x| <= 3.4e38); rescale the column")
    return out


def _whole_seconds(x: np.ndarray, column: str) -> np.ndarray:
    """datetime64 values as int64 Unix seconds; sub-second parts and NaT are refused."""
    bad = np.flatnonzero(np.isnat(x))
    if bad.size:
        raise _BadValue(column, int(bad[0]), "is missing")
    secs = x.astype("datetime64[s]")
    with np.errstate(over="ignore"):
        bad = np.flatnonzero(secs.astype(x.dtype) != x)
    if bad.size:
        raise _BadValue(column, int(bad[0]),
                        f"holds {x[bad[0]]}, which is not a whole number of seconds (timestamps "
                        "are int64 Unix seconds); round the column to seconds first")
    return secs.astype(np.int64)


def _float_seconds(x: np.ndarray, column: str, text: np.ndarray | None = None) -> np.ndarray:
    shown = (lambda k: short_repr(str(text[k]))) if text is not None else (lambda k: repr(float(x[k])))
    bad = np.flatnonzero(~np.isfinite(x) | (x != np.round(x)))
    if bad.size:
        k = int(bad[0])
        raise _BadValue(column, k, f"holds {shown(k)}; use integer timestamps (whole seconds)")
    bad = np.flatnonzero((x < -(2.0**63)) | (x >= 2.0**63))
    if bad.size:
        k = int(bad[0])
        raise _BadValue(column, k, f"holds {shown(k)}, which does not fit int64 seconds; use "
                                   "Unix seconds")
    return x.astype(np.int64)


def _parse_dates(s: np.ndarray) -> np.ndarray:
    """ISO-8601 text as datetime64, never truncated: at the text's own precision when some
    value has a fractional second, else (faster) in seconds (raises ValueError)."""
    fraction = bool(((np.char.find(s, ".") >= 0) | (np.char.find(s, ",") >= 0)).any())
    with warnings.catch_warnings():  # "no explicit representation of timezones": UTC is meant
        warnings.simplefilter("ignore")
        return s.astype("datetime64" if fraction else "datetime64[s]")


def _convert_timestamp(x: Any, column: str) -> np.ndarray:
    """Timestamps as int64: integers, integral floats, datetimes or ISO-8601 text (seconds).

    Nothing is truncated or wrapped: fractional seconds, values beyond int64 and a column that
    mixes integer and ISO-8601 timestamps are refused.
    """
    if not isinstance(x, np.ndarray):
        _check_arrow_type(x, column, "timestamp")
    x = _to_numpy(x)
    if x.dtype.kind == "i":
        return x.astype(np.int64)
    if x.dtype.kind == "u":
        big = np.flatnonzero(x > np.uint64(INT64_MAX)) if x.dtype.itemsize == 8 else []
        if len(big):
            raise _BadValue(column, int(big[0]), f"holds {int(x[big[0]])}, which does not fit "
                                                 "int64 seconds; use Unix seconds")
        return x.astype(np.int64)
    if x.dtype.kind == "M":
        return _whole_seconds(x, column)
    if x.dtype.kind == "f":
        return _float_seconds(x, column)
    if x.dtype.kind not in "UO":
        raise _BadValue(column, 0, f"has type {x.dtype}; use integer timestamps or ISO-8601 text")
    s = _strip(x)
    vals, ok = _parse_int_strings(s, canonical=False)
    if ok.all():
        return vals
    rest = np.flatnonzero(~ok)
    try:  # numeric text such as "1.5e9" or "+5"
        with np.errstate(all="ignore"):
            num = s[rest].astype(np.float64)
    except (ValueError, OverflowError):
        pass
    else:
        big = rest[_int_syntax(s[rest])]  # an integer beyond int64: never rounded via float
        if big.size:
            raise _BadValue(column, int(big[0]), f"holds {short_repr(str(s[big[0]]))}, which does "
                                                 "not fit int64 seconds; use Unix seconds")
        try:
            vals[rest] = _float_seconds(num, column, s[rest])
        except _BadValue as e:  # report the row in the whole column
            raise _BadValue(column, int(rest[e.row]), e.reason) from None
        return vals
    if not ok.any():
        try:
            dates = _parse_dates(s)
        except (ValueError, OverflowError):
            pass
        else:
            return _whole_seconds(dates, column)
    kind0 = None
    for k, v in enumerate(s.tolist()):  # only on the error path: name the offending row
        if not ok[k] and _int_syntax(np.array([v]))[0]:
            raise _BadValue(column, k, f"holds {short_repr(v)}, which does not fit int64 seconds; "
                                       "use Unix seconds")
        kind = "integer" if ok[k] or _is_float(v) else "ISO-8601" if _is_date(v) else None
        if kind is None:
            raise _BadValue(
                column, k,
                f"holds {short_repr(v)}, which is neither an integer timestamp nor an ISO-8601 date",
            )
        kind0 = kind0 or kind
        if kind != kind0:
            raise _BadValue(column, k, f"holds {short_repr(v)} ({kind}) after {kind0} timestamps: "
                                       "the column mixes integer and ISO-8601 timestamps; use one "
                                       "kind")
    raise _BadValue(column, None, "cannot be read as timestamps")  # pragma: no cover


def _is_float(v: str) -> bool:
    try:
        float(v)
    except (ValueError, OverflowError):
        return False
    return True


def _is_date(v: str) -> bool:
    try:
        _parse_dates(np.array([v]))
    except (ValueError, OverflowError):
        return False
    return True


# ----------------------------------------------------------------------------- file readers
def _pyarrow() -> Any | None:
    try:
        import pyarrow
    except ImportError:
        return None
    return pyarrow


def _text_error(path: Path, exc: Exception, line: int | None) -> DataError:
    """A :class:`DataError` for an I/O, decoding or csv-module error while reading ``path``."""
    if isinstance(exc, UnicodeDecodeError):
        try:  # name the line of the first byte that is not UTF-8
            raw = path.read_bytes()
            raw.decode("utf-8")
        except UnicodeDecodeError as full:
            bad = raw[full.start]
            line = raw.count(b"\n", 0, full.start) + 1
            return DataError(f"{path}, line {line}: byte 0x{bad:02x} is not UTF-8 text; re-save "
                             "the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
        except OSError:
            pass
        return DataError(f"{path} is not UTF-8 text ({exc.reason}); re-save it as UTF-8")
    if isinstance(exc, OSError):
        why = exc.strerror or type(exc).__name__
        return DataError(f"cannot read {path} ({why}); check the path and its permissions")
    at = f", line {line}" if line is not None else ""
    return DataError(f"{path}{at}: malformed CSV ({exc}); fix that line (an unbalanced quote "
                     "turns the rest of the file into one field)")


def _csv_header(path: Path, sep: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = next(csv.reader(fh, delimiter=sep), None)
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        raise _text_error(path, exc, 1) from exc
    if not first:
        raise DataError(f"{path} is empty; expected a header row naming the columns")
    return [h.strip() for h in first]


def _csv_stdlib(
    path: Path, sep: str, header: list[str], wanted: list[str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read the ``wanted`` columns as text with the csv module; also return line numbers."""
    pos = [header.index(w) for w in wanted]
    cols: list[list[str]] = [[] for _ in wanted]
    lines: list[int] = []
    n = len(header)
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=sep)
            next(reader, None)
            for row in reader:
                if not row:
                    continue
                if len(row) != n:
                    raise DataError(
                        f"{path}, line {reader.line_num}: malformed line: expected {n} fields "
                        f"separated by {sep!r} (as in the header), found {len(row)}; fix or "
                        "delete that line"
                    )
                lines.append(reader.line_num)
                for c, p in zip(cols, pos, strict=True):
                    c.append(row[p])
                if "\x00" in "".join(row[p] for p in pos):  # numpy text would drop a final NUL
                    raise DataError(f"{path}, line {reader.line_num}: a field holds a NUL "
                                    "character; the file looks binary or corrupt: fix that line")
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        raise _text_error(path, exc, None if reader is None else max(reader.line_num, 1)
                          ) from exc
    out = {w: np.array(c, dtype=str) for w, c in zip(wanted, cols, strict=True)}
    return out, np.array(lines, np.int64)


def _csv_arrow(
    path: Path, sep: str, header: list[str], wanted: list[str]
) -> dict[str, Any] | None:
    """Read the ``wanted`` columns as text with pyarrow; ``None`` if pyarrow cannot parse it."""
    pa = _pyarrow()
    if pa is None:
        return None
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted,
                column_types={w: pa.string() for w in wanted},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # the csv module reports it
        logger.debug("pyarrow could not parse %s (%s); using the csv module", path, exc)
        return None
    return {w: table.column(w) for w in wanted}


def _read_parquet(path: Path, wanted: list[str]) -> dict[str, Any]:
    pa = _pyarrow()
    if pa is None:
        raise DataError(
            f"reading {path} needs pyarrow; install it with `pip install pyarrow` "
            "(or `pip install sisakit[parquet]`)"
        )
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file ({exc}); check the path, or "
                        "re-export the file if it is truncated") from exc
    _check_columns(path, names, wanted)
    try:
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file ({exc}); check the path, or "
                        "re-export the file if it is truncated") from exc
    out = {}
    for w in wanted:
        col = table.column(w)
        if col.null_count:
            nulls = col.is_null().to_numpy(zero_copy_only=False)
            raise _BadValue(w, int(np.flatnonzero(nulls)[0]), "is null (missing)")
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        out[w] = col
    return out


def _check_columns(path: Path, available: list[str], wanted: list[str]) -> None:
    for w in wanted:
        if w not in available:
            raise DataError(
                f"{path} has no column {w!r}; available columns: {available}. Pass the right "
                "name (user_col=, item_col=, rating_col=, timestamp_col=, weight_col=)"
            )
    if len(set(available)) != len(available):
        dup = sorted({a for a in available if available.count(a) > 1} & set(wanted))
        if dup:
            raise DataError(f"{path} has several columns named {dup}; rename them to be unique")


def _infer_format(path: Path, fmt: str | None, sep: str | None) -> tuple[str, str | None]:
    name = path.name.lower()
    if fmt is None:
        if name.endswith((".parquet", ".pq")):
            fmt = "parquet"
        elif name.endswith((".csv", ".tsv", ".tab")) or sep is not None:
            fmt = "csv"
        else:
            raise ValidationError(
                f"cannot tell the format of {path.name!r} from its extension (.csv, .tsv, .tab, "
                ".parquet, .pq); pass format='csv' with sep=..., or format='parquet'"
            )
    if fmt not in _FORMATS:
        raise ValidationError(f"format must be one of {list(_FORMATS)} or None, got {fmt!r}")
    if fmt == "parquet":
        return fmt, None
    if sep is None:
        sep = "\t" if fmt == "tsv" or name.endswith((".tsv", ".tab")) else ","
    if not isinstance(sep, str) or len(sep) != 1:
        raise ValidationError(
            f"sep must be a single character such as ',' or '\\t', got {sep!r} (for MovieLens "
            "'::' files use sisakit.datasets.load_movielens)"
        )
    return "csv", sep


def _as_path(path: Any, name: str, what: str) -> Path:
    """``path`` as a :class:`Path`; anything but a str or ``os.PathLike`` of str is refused."""
    try:
        p = Path(path)
    except TypeError:
        raise ValidationError(f"{name} must be a str or os.PathLike naming {what}, got "
                              f"{short_repr(path)} ({type(path).__name__})") from None
    if "\x00" in str(p):
        raise ValidationError(f"{name} contains a NUL character ({short_repr(str(p))}); pass {what}")
    return p


def _check_min_rating(min_rating: Any) -> float:
    """A usable ``min_rating`` as a float (any real number; NaN and huge ints are refused)."""
    if isinstance(min_rating, bool) or not isinstance(min_rating, (int, float, np.number)):
        raise ValidationError(f"min_rating must be a number or None, got {short_repr(min_rating)}")
    try:
        value = float(min_rating)
    except (OverflowError, TypeError, ValueError):
        raise ValidationError(f"min_rating must be a number within float range, got "
                              f"{short_repr(min_rating)}; pass e.g. min_rating=4") from None
    if math.isnan(value):
        raise ValidationError("min_rating must be a number, got NaN; pass e.g. min_rating=4")
    return value


# ------------------------------------------------------------------------------ public API
def read_interactions(
    path: str | os.PathLike[str],
    *,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    weight_col: str | None = None,
    sep: str | None = None,
    min_rating: float | None = None,
    format: str | None = None,
    ids: str = "auto",
) -> Interactions:
    """Read interactions from a CSV/TSV file with a header row, or from a Parquet file.

    Parameters
    ----------
    path : str or path-like
        The file. ``.csv`` is comma-separated, ``.tsv``/``.tab`` tab-separated,
        ``.parquet``/``.pq`` Parquet (needs pyarrow). Other names need ``format``/``sep``.
    user_col, item_col : str
        Columns holding the raw user and item ids.
    rating_col, timestamp_col, weight_col : str, optional
        Columns for the optional per-record values. Ratings and weights are stored as float32:
        a value beyond float32's range (``abs(x) > 3.4e38``) is refused, never turned into inf.
        Timestamps may be integers, whole-valued floats, Parquet timestamps/dates or ISO-8601
        text, converted exactly to int64 Unix seconds; a fractional second, a value beyond
        int64 and a column mixing integer and ISO-8601 timestamps are refused.
    sep : str, optional
        Field separator of a text file (one character); inferred from the extension.
    min_rating : float, optional
        Keep only records whose rating is at least this (implicit-feedback binarisation);
        needs ``rating_col``. The id space still holds every user and item of the file, so the
        filtered and the full data index users and items identically.
    format : {"csv", "tsv", "parquet"}, optional
        Overrides the format inferred from the extension.
    ids : {"auto", "int", "str"}
        How to type raw ids: ``"auto"`` keeps integer columns as ints and converts text
        columns to ints when every value is a plain decimal integer (no leading zeros) that
        fits int64, otherwise keeps strings; ``"int"`` requires integers; ``"str"`` keeps text
        (integer columns become their decimal text). Id columns must be integers, whole-valued
        floats or strings (Parquet struct, list, binary, decimal, ... columns are refused).
        Integer ids must fit int64: a uint64 Parquet id above 2**63 - 1 is refused with
        ``"auto"``/``"int"`` (never wrapped negative) and kept exactly, as text, with ``"str"``.

    Returns
    -------
    Interactions
        One record per row, in file order.

    Raises
    ------
    DataError
        If the file is missing, a directory, unreadable, not UTF-8 or malformed, a column is
        missing or of an unsupported type, a value cannot be stored exactly (see above), or
        pyarrow is needed but not installed. Messages name the file, the line (CSV) or row
        (Parquet) and the column.
    ValidationError
        If an argument is invalid (e.g. ``path`` is not a str or path-like).
    """
    p = _as_path(path, "path", "a CSV, TSV or Parquet file such as 'ratings.csv'")
    if ids not in _ID_MODES:
        raise ValidationError(f"ids must be one of {list(_ID_MODES)}, got {ids!r}")
    if min_rating is not None:
        if rating_col is None:
            raise ValidationError("min_rating needs rating_col= naming the rating column")
        min_rating = _check_min_rating(min_rating)
    fmt, sep = _infer_format(p, format, sep)
    roles = {
        "user": user_col, "item": item_col, "rating": rating_col,
        "timestamp": timestamp_col, "weight": weight_col,
    }
    roles = {k: v for k, v in roles.items() if v is not None}
    for k, v in roles.items():
        if not isinstance(v, str) or not v:
            raise ValidationError(f"{k}_col must be a non-empty column name, got {v!r}")
    wanted = list(dict.fromkeys(roles.values()))
    if len(wanted) != len(roles):
        raise ValidationError(f"each role needs its own column, got {roles}")
    if p.is_dir():
        raise DataError(f"{p} is a directory, not a {fmt} file; pass the path of the file itself")
    if not p.is_file():
        raise DataError(f"{p} not found; pass the path of an existing {fmt} file")

    lines: np.ndarray | None = None
    if fmt == "parquet":
        try:
            cols = _read_parquet(p, wanted)
        except _BadValue as e:
            at = "" if e.row is None else f", row {e.row + 1}"
            raise DataError(f"{p}{at}: column {e.column!r} {e.reason}") from None
    else:
        assert sep is not None
        header = _csv_header(p, sep)
        _check_columns(p, header, wanted)
        arrow_cols = _csv_arrow(p, sep, header, wanted)
        if arrow_cols is None:
            cols, lines = _csv_stdlib(p, sep, header, wanted)
        else:
            cols = arrow_cols

    def where(row: int) -> str:
        if fmt == "parquet":
            return f"row {row + 1}"
        nonlocal lines
        if lines is None:  # pyarrow path: re-read with the csv module for exact line numbers
            lines = _csv_stdlib(p, sep, header, wanted)[1]
        return f"line {int(lines[row])}"

    try:
        data = _build(cols, roles, ids, min_rating, p)
    except _BadValue as e:
        at = "" if e.row is None else f", {where(e.row)}"
        raise DataError(f"{p}{at}: column {e.column!r} {e.reason}") from None
    logger.info("read %s from %s", data, p)
    return data


def _build(
    cols: dict[str, Any],
    roles: dict[str, str],
    ids: str,
    min_rating: float | None,
    path: Path,
) -> Interactions:
    n = len(cols[roles["user"]])  # numpy arrays and pyarrow columns both have len()
    if n == 0:
        raise DataError(f"{path} has no data rows; it needs at least one (user, item) record")
    users = _convert_ids(cols[roles["user"]], ids, roles["user"])
    items = _convert_ids(cols[roles["item"]], ids, roles["item"])
    conv: dict[str, Callable[[np.ndarray, str], np.ndarray]] = {
        "rating": _convert_float, "weight": _convert_float, "timestamp": _convert_timestamp,
    }
    extra = {k: conv[k](cols[c], c) for k, c in roles.items() if k in conv}
    keep: Any = slice(None)
    if min_rating is not None:
        keep = extra["rating"] >= min_rating
        if not keep.any():
            raise DataError(
                f"no record of {path} has {roles['rating']} >= {min_rating}; lower min_rating"
            )
        logger.info("min_rating=%s keeps %d of %d records", min_rating, int(keep.sum()), n)
    return Interactions.from_arrays(
        users[keep],
        items[keep],
        user_ids=_unique(users),
        item_ids=_unique(items),
        **{k: v[keep] for k, v in extra.items()},
    )
