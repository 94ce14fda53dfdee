"""Small checks of user-given parameters, shared by the public classes."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ValidationError


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum``, else a
    :class:`~sisakit.errors.ValidationError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValidationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
