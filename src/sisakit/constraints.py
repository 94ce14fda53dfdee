"""Declared parameter constraints (in the spirit of scikit-learn's ``_parameter_constraints``).

A component declares, once, what each constructor parameter may be::

    class BPRMF(ShardModel):
        parameter_constraints = {
            "factors": Interval(int, 1, MAX_WIDTH),
            "lr": Interval(float, 0, None, closed="right", example=0.01),
            "device": Device(),
        }

:meth:`sisakit.base.Component.validate_params` checks them (every built-in calls it from its
constructor, so a bad value fails before anything trains), and the tests generate invalid and
valid values from the same declarations (:meth:`Constraint.invalid_values`,
:meth:`Constraint.valid_values`). A check that ties several parameters together (``n_heads``
divides ``factors``) stays in the component's ``_validate``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _validation as v

__all__ = ["Bool", "Constraint", "Device", "Interval", "Options", "ParamsDict", "PathLike",
           "Sizes", "Strings", "TextName", "as_tuple", "check_constraints"]


class Constraint:
    """What one parameter may be."""

    #: Whether None is allowed too.
    none: bool = False

    def check(self, name: str, value: Any) -> None:
        """Raise :class:`~sisakit.ValidationError` naming ``name`` if ``value`` is not allowed."""
        raise NotImplementedError

    def invalid_values(self) -> list[Any]:
        """Values this constraint refuses (for generated tests)."""
        return []

    def valid_values(self) -> list[Any]:
        """Values this constraint accepts (for generated tests)."""
        return [None] if self.none else []


@dataclass(frozen=True)
class Interval(Constraint):
    """A number of ``kind`` (``int`` or ``float``) in ``[low, high]``; ``closed`` says which
    ends belong to it (``"both"``, ``"left"``, ``"right"`` or ``"neither"``); None for an
    unbounded end. Floats must be finite; ints are not bools."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    none: bool = False
    example: Any = None

    def check(self, name: str, value: Any) -> None:
        if self.none and value is None:
            return
        if self.kind is int:
            low = None if self.low is None else int(self.low) + (self.closed in ("right",
                                                                                 "neither"))
            high = None if self.high is None else int(self.high) - (self.closed in ("left",
                                                                                    "neither"))
            if self.none and value is not None and not _is_int(value):
                raise v.ValidationError(f"{name} must be None or an integer, got "
                                        f"{v.short_repr(value)}")
            v.check_int(name, value, -(2**63) if low is None else low, high)
            return
        v.check_float(name, value, minimum=self.low, maximum=self.high,
                      min_open=self.closed in ("right", "neither"),
                      max_open=self.closed in ("left", "neither"), none=self.none,
                      example=self.example)

    def invalid_values(self) -> list[Any]:
        out: list[Any] = ["3"] if self.kind is int else ["x", math.nan, math.inf]
        if self.kind is int:
            out.append(2.5)
        if not self.none:
            out.append(None)
        if self.low is not None:
            out.append(self._step(self.low, -1) if self.closed in ("both", "left")
                       else self._as_kind(self.low))
        if self.high is not None:
            out.append(self._step(self.high, +1) if self.closed in ("both", "right")
                       else self._as_kind(self.high))
        return out

    def valid_values(self) -> list[Any]:
        out = super().valid_values()
        if self.low is not None:
            out.append(self._as_kind(self.low) if self.closed in ("both", "left")
                       else self._step(self.low, +1))
        if self.high is not None:
            out.append(self._as_kind(self.high) if self.closed in ("both", "right")
                       else self._step(self.high, -1))
        return out

    def _as_kind(self, x: float) -> Any:
        return int(x) if self.kind is int else float(x)

    def _step(self, x: float, sign: int) -> Any:
        if self.kind is int:
            return int(x) + sign
        return float(np.nextafter(float(x), math.copysign(math.inf, sign)))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Options(Constraint):
    """One of ``values`` (compared by type and value)."""

    values: tuple[Any, ...]
    none: bool = False

    def check(self, name: str, value: Any) -> None:
        if self.none and value is None:
            return
        v.check_choice(name, value, self.values)

    def invalid_values(self) -> list[Any]:
        return ["not-an-option", 3] + ([] if self.none else [None])

    def valid_values(self) -> list[Any]:
        return [*super().valid_values(), *self.values]


@dataclass(frozen=True)
class Bool(Constraint):
    """True or False (or None when ``none``)."""

    none: bool = False

    def check(self, name: str, value: Any) -> None:
        v.check_bool(name, value, none=self.none)

    def invalid_values(self) -> list[Any]:
        return ["yes", 1] + ([] if self.none else [None])

    def valid_values(self) -> list[Any]:
        return [*super().valid_values(), True, False]


@dataclass(frozen=True)
class Device(Constraint):
    """A torch device spec: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:<i>"``."""

    def check(self, name: str, value: Any) -> None:
        v.check_device(name, value)

    def invalid_values(self) -> list[Any]:
        return [3, "gpu-please", None]

    def valid_values(self) -> list[Any]:
        return ["auto", "cpu"]


@dataclass(frozen=True)
class Sizes(Constraint):
    """A list or tuple of layer sizes, each an int in ``[low, high]`` (empty when ``empty``)."""

    low: int = 1
    high: int = v.MAX_WIDTH
    empty: bool = True
    example: str = "(64, 32)"

    def check(self, name: str, value: Any) -> None:
        v.check_sizes(name, value, minimum=self.low, maximum=self.high, empty=self.empty,
                      example=self.example)

    def invalid_values(self) -> list[Any]:
        return [5, (self.low - 1,), (self.high + 1,), ("8",)] + ([] if self.empty else [()])

    def valid_values(self) -> list[Any]:
        return [(self.low,), [self.high]] + ([()] if self.empty else [])


@dataclass(frozen=True)
class TextName(Constraint):
    """A non-empty string (a registered name, a column, a preset)."""

    what: str = "a name"
    example: str = "'x'"
    none: bool = False

    def check(self, name: str, value: Any) -> None:
        if self.none and value is None:
            return
        if not isinstance(value, str) or not value:
            raise v.ValidationError(f"{name} must be {self.what} (a non-empty str), got "
                                    f"{v.short_repr(value)}; pass e.g. {name}={self.example}")

    def invalid_values(self) -> list[Any]:
        return [3, ""] + ([] if self.none else [None])

    def valid_values(self) -> list[Any]:
        return [*super().valid_values(), "some-name"]


@dataclass(frozen=True)
class Strings(Constraint):
    """A list or tuple of non-empty strings (empty when ``empty``)."""

    empty: bool = True
    none: bool = False
    example: str = "('a', 'b')"

    def check(self, name: str, value: Any) -> None:
        if self.none and value is None:
            return
        ok = isinstance(value, (list, tuple)) and (self.empty or len(value) > 0) and all(
            isinstance(s, str) and s for s in value)
        if not ok:
            what = ("None or " if self.none else "") + ("a" if self.empty else "a non-empty")
            raise v.ValidationError(f"{name} must be {what} list of non-empty strings, got "
                                    f"{v.short_repr(value)}; pass e.g. {name}={self.example}")

    def invalid_values(self) -> list[Any]:
        return ["abc", (3,), ("",)] + ([] if self.empty else [()])

    def valid_values(self) -> list[Any]:
        return [*super().valid_values(), ("a",)] + ([()] if self.empty else [])


@dataclass(frozen=True)
class PathLike(Constraint):
    """A path (``str`` or :class:`os.PathLike`, non-empty)."""

    none: bool = False

    def check(self, name: str, value: Any) -> None:
        if self.none and value is None:
            return
        v.check_path(name, value)

    def invalid_values(self) -> list[Any]:
        return [3, ""] + ([] if self.none else [None])

    def valid_values(self) -> list[Any]:
        return [*super().valid_values(), "some/path"]


@dataclass(frozen=True)
class ParamsDict(Constraint):
    """A dict of parameter names to values (or None)."""

    none: bool = True
    example: str = "{}"

    def check(self, name: str, value: Any) -> None:
        if self.none and value is None:
            return
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise v.ValidationError(f"{name} must be a dict of names to values, got "
                                    f"{v.short_repr(value)}; pass e.g. {name}={self.example}")

    def invalid_values(self) -> list[Any]:
        return [3, "abc", {1: 2}]

    def valid_values(self) -> list[Any]:
        return [*super().valid_values(), {}]


def as_tuple(value: Any) -> Any:
    """``value`` as a tuple when it is a non-string iterable, else unchanged (so a bad value
    still reaches its declared constraint, which refuses it with a clear error)."""
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        try:
            return tuple(value)
        except TypeError:  # e.g. a 0-d array: iterable by type, not in fact
            return value
    return value


def check_constraints(component: Any, constraints: Mapping[str, Constraint]) -> None:
    """Check every declared parameter of ``component`` (its attribute of the same name)."""
    for name, constraint in constraints.items():
        constraint.check(name, getattr(component, name))
