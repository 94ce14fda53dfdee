"""A small base class shared by every pluggable component (scikit-learn style parameters)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

from .constraints import Constraint, check_constraints


class Component:
    """Gives a component scikit-learn style ``get_params`` / ``clone`` and a readable repr.

    Constructor arguments must be stored as attributes of the same name; that makes every
    component rebuildable from its config (which the run manifest records).
    """

    #: What each constructor parameter may be (see :mod:`sisakit.constraints`), checked by
    #: :meth:`validate_params`; declared once per class, and the tests generate bad values
    #: from it.
    parameter_constraints: ClassVar[Mapping[str, Constraint]] = {}

    def validate_params(self) -> None:
        """Check every declared parameter; a :class:`~sisakit.ValidationError` names the first
        one that breaks its constraint."""
        check_constraints(self, type(self).parameter_constraints)

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the constructor's parameters (what :meth:`get_params` returns)."""
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments of this component, as a dict."""
        return {name: getattr(self, name) for name in self.param_names()}

    def clone(self, **overrides: Any) -> Any:
        """A fresh, unfitted copy with the same (or overridden) parameters."""
        params = self.get_params()
        params.update(overrides)
        return type(self)(**params)

    # The name before 0.2 (third-party code may call it).
    _param_names = param_names

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
