"""The sisakit exception hierarchy.

Every error raised at the public boundary is a :class:`SisakitError`. Messages name the problem
*and* the fix, so a user reading a traceback knows what to do next.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "DataError",
    "PluginError",
    "PluginWarning",
    "SisakitError",
    "UnknownIdError",
    "ValidationError",
]


class SisakitError(Exception):
    """Base class of every error sisakit raises on purpose."""


class ValidationError(SisakitError, ValueError):
    """An argument has the wrong value, type or shape."""


class UnknownIdError(ValidationError, LookupError):
    """One or more raw ids are not part of the data's id space.

    Attributes
    ----------
    kind : str
        ``"user"``, ``"item"`` or ``"interaction"``.
    ids : list
        The unknown raw ids (all of them, in request order).
    """

    def __init__(self, kind: str, ids: Iterable[object], hint: str | None = None) -> None:
        self.kind = kind
        self.ids = list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:20])
        more = f" (and {len(self.ids) - 20} more)" if len(self.ids) > 20 else ""
        fix = hint or (
            f"check the {kind} ids against the training data; ids are the raw ids you loaded "
            "(strings stay strings, ints stay ints)"
        )
        super().__init__(f"unknown {kind} id(s): {shown}{more}; {fix}")


class DataError(SisakitError, ValueError):
    """A data file or array is missing, malformed or unusable."""


class PluginError(SisakitError, LookupError):
    """A plugin is unknown, clashes with another, or is broken."""


class PluginWarning(UserWarning):
    """A third-party plugin is broken and was skipped (``SISAKIT_STRICT_PLUGINS=1``: an error)."""


class CheckpointError(SisakitError):
    """A run directory or checkpoint is missing, corrupt, tampered with or incompatible."""
