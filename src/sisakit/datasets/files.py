"""Reading interaction tables from CSV, TSV and Parquet files.

This module also holds the fast, vectorised text parsing shared with
:mod:`sisakit.datasets.movielens`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Interactions
from ..errors import DataError, ValidationError

__all__ = ["read_interactions"]

logger = logging.getLogger(__name__)

_ID_MODES = ("auto", "int", "str")
_FORMATS = ("csv", "tsv", "parquet")
_CHUNK_BYTES = 1 << 22
_POW10 = 10.0 ** np.arange(16)
_MAX_DIGITS = 15  # exact in float64 accumulation


# ---------------------------------------------------------------------------------- helpers
def _read_bytes(path: Path, hint: str) -> bytes:
    """Bytes of ``path``; a missing or unreadable file is a :class:`DataError` with ``hint``."""
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
    except ValueError:
        for k, v in enumerate(values):
            try:
                int(v)
            except ValueError:
                problem = f"{what} {v!r} is not an integer"
                raise _malformed(path, int(lines[k]), problem, layout, raw) from None
        raise  # pragma: no cover - numpy and int() disagree


def _unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based: much faster than ``np.unique``'s hash path on
    numpy 2 when most values are distinct)."""
    srt = np.sort(x, kind="stable")
    if len(srt) < 2:
        return srt
    return srt[np.concatenate(([True], srt[1:] != srt[:-1]))]


# --------------------------------------------------------------------------- column values
class _BadValue(Exception):
    """A value of a column cannot be used; ``row`` is its 0-based data row."""

    def __init__(self, column: str, row: int, reason: str) -> None:
        super().__init__(reason)
        self.column, self.row, self.reason = column, row, reason


def _strip(x: np.ndarray) -> np.ndarray:
    return np.char.strip(x.astype(str))


def _parse_int_strings(s: np.ndarray, canonical: bool) -> tuple[np.ndarray, np.ndarray]:
    """Parse a unicode array of decimal integers; return ``(values, ok)``.

    Vectorised over character positions (at most 19), not rows. ``canonical`` rejects leading
    zeros and ``-0`` so that e.g. ``"007"`` stays a string id.
    """
    n = len(s)
    s = np.ascontiguousarray(s)
    w = s.dtype.itemsize // 4
    if n == 0 or w == 0:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    if w > 19:
        too_long = np.char.str_len(s) > 19
        vals, ok = _parse_int_strings(s.astype("<U19"), canonical)
        return vals, ok & ~too_long
    cp = s.view(np.uint32).reshape(n, w)
    neg = cp[:, 0] == 45
    length = (cp != 0).sum(axis=1)
    blen = length - neg
    digit = cp - np.uint32(48)
    isdig = digit < 10
    col = np.arange(w)
    inbody = (col >= neg[:, None]) & (col < length[:, None])
    ok = (isdig | ~inbody).all(axis=1) & (blen >= 1) & (blen <= 18)
    if canonical:
        first = cp[np.arange(n), neg.astype(np.int64)] if w > 1 else cp[:, 0]
        ok &= (blen == 1) | (first != 48)
        ok &= ~(neg & (first == 48))
    vals = np.zeros(n, np.int64)
    use = inbody & isdig
    for j in range(w):  # loop over character positions, not rows
        vals = np.where(use[:, j], vals * 10 + digit[:, j].astype(np.int64), vals)
    return np.where(neg, -vals, vals), ok


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


def _convert_ids(x: Any, mode: str, column: str) -> np.ndarray:
    """Raw ids as int64 or str according to ``mode`` (``"auto"``, ``"int"`` or ``"str"``)."""
    if not isinstance(x, np.ndarray):
        fast = _arrow_ids(x, mode)
        if fast is not None:
            return fast
        x = _to_numpy(x)
    if x.dtype.kind in "iu":
        return x.astype(str) if mode == "str" else x.astype(np.int64)
    if x.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(x) | (x != np.round(x)))
        if bad.size:
            raise _BadValue(
                column, int(bad[0]),
                f"holds {x[bad[0]]!r}, which is not an integer id; store ids as integers or text",
            )
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
    raise _BadValue(column, k, f"holds {s[k]!r}, which is not an integer; pass ids='auto' or 'str'")


def _convert_float(x: Any, column: str) -> np.ndarray:
    x = _to_numpy(x)
    if x.dtype.kind in "iub":
        return x.astype(np.float64)
    if x.dtype.kind == "f":
        out = x.astype(np.float64)
    else:
        s = _strip(x)
        try:
            out = s.astype(np.float64)
        except ValueError:
            for k, v in enumerate(s.tolist()):
                try:
                    float(v)
                except ValueError:
                    raise _BadValue(column, k, f"holds {v!r}, which is not a number") from None
            raise  # pragma: no cover
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise _BadValue(column, int(bad[0]), "is NaN, empty or infinite; drop or impute it")
    return out


def _convert_timestamp(x: Any, column: str) -> np.ndarray:
    """Timestamps as int64: integers, integral floats, datetimes or ISO-8601 text (seconds)."""
    x = _to_numpy(x)
    if x.dtype.kind in "iu":
        return x.astype(np.int64)
    if x.dtype.kind == "M":
        bad = np.flatnonzero(np.isnat(x))
        if bad.size:
            raise _BadValue(column, int(bad[0]), "is missing")
        return x.astype("datetime64[s]").astype(np.int64)
    if x.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(x) | (x != np.round(x)))
        if bad.size:
            raise _BadValue(column, int(bad[0]), f"holds {x[bad[0]]!r}; use integer timestamps")
        return x.astype(np.int64)
    s = _strip(x)
    vals, ok = _parse_int_strings(s, canonical=False)
    if ok.all():
        return vals
    for conv in (
        lambda a: a.astype(np.int64),
        lambda a: _convert_timestamp(a.astype(np.float64), column),
        lambda a: _convert_timestamp(a.astype("datetime64[s]"), column),
    ):
        try:
            return conv(s)
        except (ValueError, OverflowError):
            continue
    for k, v in enumerate(s.tolist()):
        try:
            int(v)
        except ValueError:
            try:
                np.datetime64(v, "s")
            except ValueError:
                raise _BadValue(
                    column, k,
                    f"holds {v!r}, which is neither an integer timestamp nor an ISO-8601 date",
                ) from None
    raise _BadValue(column, 0, "mixes integer and ISO-8601 timestamps; use one kind")


# ----------------------------------------------------------------------------- file readers
def _pyarrow() -> Any | None:
    try:
        import pyarrow
    except ImportError:
        return None
    return pyarrow


def _csv_header(path: Path, sep: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = next(csv.reader(fh, delimiter=sep), None)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); re-save it as UTF-8") from exc
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
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=sep)
        next(reader, None)
        for row in reader:
            if not row:
                continue
            if len(row) != n:
                raise DataError(
                    f"{path}, line {reader.line_num}: malformed line: expected {n} fields "
                    f"separated by {sep!r} (as in the header), found {len(row)}; fix or delete "
                    "that line"
                )
            lines.append(reader.line_num)
            for c, p in zip(cols, pos, strict=True):
                c.append(row[p])
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
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
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
        Columns for the optional per-record values. Timestamps may be integers or ISO-8601
        dates (converted to Unix seconds).
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
        columns to ints when every value is a plain decimal integer (no leading zeros),
        otherwise keeps strings; ``"int"`` requires integers; ``"str"`` keeps text.

    Returns
    -------
    Interactions
        One record per row, in file order.

    Raises
    ------
    DataError
        If the file is missing or malformed, a column is missing, a rating/weight is NaN, or
        pyarrow is needed but not installed. Messages name the file and the line (or row).
    ValidationError
        If an argument is invalid.
    """
    p = Path(path)
    if ids not in _ID_MODES:
        raise ValidationError(f"ids must be one of {list(_ID_MODES)}, got {ids!r}")
    if min_rating is not None:
        if rating_col is None:
            raise ValidationError("min_rating needs rating_col= naming the rating column")
        if isinstance(min_rating, bool) or not isinstance(min_rating, (int, float, np.number)):
            raise ValidationError(f"min_rating must be a number, got {min_rating!r}")
        if math.isnan(float(min_rating)):
            raise ValidationError("min_rating must be a number, got NaN")
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
    if not p.is_file():
        raise DataError(f"{p} not found; pass the path of an existing {fmt} file")

    lines: np.ndarray | None = None
    if fmt == "parquet":
        try:
            cols = _read_parquet(p, wanted)
        except _BadValue as e:
            raise DataError(f"{p}, row {e.row + 1}: column {e.column!r} {e.reason}") from None
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
        raise DataError(
            f"{p}, {where(e.row)}: column {e.column!r} {e.reason}"
        ) from None
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
