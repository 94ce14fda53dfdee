"""Small checks of user-given parameters, shared by the public classes."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ValidationError


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum`` (and
    ``<= maximum`` when given), else a :class:`~sisakit.errors.ValidationError` naming ``name``
    and the range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum \
            or (maximum is not None and value > maximum):
        if maximum is None:
            raise ValidationError(f"{name} must be an integer >= {minimum}, got {_show(value)}")
        raise ValidationError(
            f"{name} must be {_int_range(minimum, maximum)}, got {_show(value)}; use a value in "
            f"[{minimum:,}, {maximum:,}]"
        )
    return int(value)


_PARAM_EXAMPLES = {"model_params": "{'factors': 32}", "sharder_params": "{'n_bins': 5}",
                   "aggregator_params": "{'epochs': 20}", "executor_params": "{'n_jobs': 2}"}


def check_params(name: str, value: Any) -> dict[str, Any]:
    """Component parameters (``model_params`` etc.) as a fresh dict: ``None`` or a mapping
    with string keys, else a :class:`~sisakit.errors.ValidationError` naming ``name``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValidationError(
            f"{name} must be a dict of parameter names to values, got {type(value).__name__} "
            f"{value!r:.80}; pass e.g. {name}={_PARAM_EXAMPLES.get(name, '{}')}"
        )
    return dict(value)


def check_path(name: str, value: Any) -> Any:
    """A path-like ``value`` (``str`` or :class:`os.PathLike`, non-empty, no NUL byte), else a
    :class:`~sisakit.errors.ValidationError` naming ``name``."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and text and "\x00" not in text:
            return value
    raise ValidationError(
        f"{name} must be a path (a str or pathlib.Path naming a directory), got "
        f"{type(value).__name__} {value!r:.80}; pass e.g. {name}='runs/demo'"
    )


def check_bool(name: str, value: Any, *, none: bool = False) -> Any:
    """``value`` if it is a bool (or ``None`` when ``none``), else a ValidationError."""
    if isinstance(value, (bool, np.bool_)) or (none and value is None):
        return None if value is None else bool(value)
    allowed = "True, False or None" if none else "True or False"
    raise ValidationError(f"{name} must be {allowed}, got {value!r:.80}")


# ---------------------------------------------------------------------------------- components
# Upper bounds of the sizes a component takes as parameters. They lie far above any useful
# value and low enough that a slip (an extra run of zeros, 10**12) is refused when the component
# is constructed, before anything is allocated or a loop runs for ever.
#: Embedding and hidden sizes (``factors``, ``dim``, ``layers``, ``hidden``).
MAX_WIDTH = 16_384
#: Epochs, iterations and solver steps.
MAX_STEPS = 100_000
#: Rows per optimizer step or per scoring batch.
MAX_BATCH = 1 << 24
#: Other counts (bins, prototypes, negatives per positive, history length).
MAX_COUNT = 1_000_000
#: Threads per shard: torch crashes the process (not an exception) on absurd thread counts.
MAX_THREADS = 1_024
#: Seeds: they are hashed as int64.
MAX_SEED = 2**63 - 1


#: The int64 range every id and timestamp must fit.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def short_repr(v: Any) -> str:
    """``repr`` of a value for a message: plain Python scalars, at most 60 characters."""
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 200:
        return f"an int of {len(str(abs(v))) if v.bit_length() < 10_000 else 'many'} digits"
    try:
        text = repr(v)
    except (ValueError, RecursionError):  # e.g. an object whose repr fails
        text = f"<{type(v).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def check_user_selection(users: Any, n_users: int) -> np.ndarray | None:
    """``users`` (None, a boolean mask over the users or user indices) as sorted unique user
    indices (None: every user), else a ValidationError."""
    if users is None:
        return None
    u = np.asarray(users)
    if u.dtype == bool:
        if u.shape != (n_users,):
            raise ValidationError(f"a boolean users mask needs shape ({n_users},), got {u.shape}")
        return np.flatnonzero(u)
    if u.ndim != 1 or (u.size and u.dtype.kind not in "iu"):
        raise ValidationError(
            "users must be a 1-D array of user indices (use data.user_map.index(raw_ids, 'user') "
            "to convert raw ids)"
        )
    u = u.astype(np.int64)
    if u.size and (u.min() < 0 or u.max() >= n_users):
        raise ValidationError(f"users holds indices outside [0, {n_users})")
    return np.unique(u)


def _show(value: Any) -> str:
    """A short repr of a bad value, with its type when the type is the problem."""
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return f"{text} ({type(value).__name__})"
    return text


def _int_range(minimum: int, maximum: int) -> str:
    if minimum == 1:
        return f"a positive integer <= {maximum:,}"
    if minimum == 0:
        return f"a non-negative integer <= {maximum:,}"
    return f"an integer in [{minimum:,}, {maximum:,}]"


def check_float(name: str, value: Any, *, minimum: float | None = None,
                maximum: float | None = None, min_open: bool = False, max_open: bool = False,
                none: bool = False, example: Any = None) -> float | None:
    """``value`` as a finite ``float`` within the bounds (``min_open``/``max_open`` exclude the
    bound itself; ``None`` allowed when ``none``), else a ValidationError naming ``name``, the
    range and an example value."""
    if none and value is None:
        return None
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))
    number = 0.0
    if ok:
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            ok = False
    ok = ok and math.isfinite(number)
    if ok and minimum is not None:
        ok = number > minimum if min_open else number >= minimum
    if ok and maximum is not None:
        ok = number < maximum if max_open else number <= maximum
    if ok:
        return number
    bounds = []
    if minimum is not None:
        bounds.append(f"{'>' if min_open else '>='} {minimum:g}")
    if maximum is not None:
        bounds.append(f"{'<' if max_open else '<='} {maximum:g}")
    what = "a finite number" + (f" {' and '.join(bounds)}" if bounds else "")
    if none:
        what = f"None or {what}"
    fix = f"; pass e.g. {name}={example!r}" if example is not None else ""
    raise ValidationError(f"{name} must be {what}, got {_show(value)}{fix}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices`` (compared by type and value), else a
    ValidationError listing them."""
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return value
    listed = ", ".join(repr(c) for c in choices)
    raise ValidationError(f"{name} must be one of {listed}, got {_show(value)}")


def check_sizes(name: str, value: Any, *, minimum: int = 1, maximum: int = MAX_WIDTH,
                empty: bool = True, example: str = "(64, 32)") -> tuple[int, ...]:
    """``value`` as a tuple of ints in ``[minimum, maximum]`` (a list or tuple of layer sizes;
    empty allowed when ``empty``), else a ValidationError naming ``name``."""
    ok = isinstance(value, (list, tuple)) and (empty or len(value) > 0) and len(value) <= 1_000
    ok = ok and all(not isinstance(h, (bool, np.bool_)) and isinstance(h, (int, np.integer))
                    and minimum <= h <= maximum for h in value)
    if not ok:
        raise ValidationError(
            f"{name} must be a {'' if empty else 'non-empty '}list of layer sizes, each "
            f"{_int_range(minimum, maximum)}, got {_show(value)}; pass e.g. {name}={example}")
    return tuple(int(h) for h in value)


def check_device(name: str, value: Any) -> Any:
    """``value`` if torch can parse it as a device (``"auto"``, ``"cpu"``, ``"cuda"``,
    ``"cuda:1"``, a :class:`torch.device`), else a ValidationError. Whether the device exists is
    checked when the component allocates on it (a run saved on a GPU can be reopened on a CPU).
    """
    import torch

    if isinstance(value, torch.device) or value == "auto":
        return value
    if isinstance(value, str):
        try:
            torch.device(value)
            return value
        except (RuntimeError, TypeError, ValueError):
            pass
    raise ValidationError(f"{name} must be 'auto', 'cpu' or 'cuda' (or 'cuda:<index>'), got "
                          f"{_show(value)}")


def make_out_dir(name: str, value: Any) -> Path:
    """Create output folder ``value`` (parents too) and return it; a ValidationError when it
    names an existing file or cannot be created."""
    path = Path(check_path(name, value))
    if path.exists() and not path.is_dir():
        raise ValidationError(
            f"{name} {str(path)!r} is an existing file, not a folder; pass a folder name "
            "(it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValidationError(
            f"cannot create the {name} folder {str(path)!r} ({exc.strerror or exc}); pass a "
            "writable folder") from exc
    return path
