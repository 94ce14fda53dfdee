"""The :class:`Unlearner` interface (the request and report types live in
:mod:`sisakit.requests` and are re-exported here)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ..base import Component
from ..errors import ValidationError
from ..requests import (
    AttributeRequest,
    ForgetReport,
    ForgetRequest,
    UnlearnContext,
    UnlearnReport,
    UnlearnResult,
)

__all__ = ["AttributeRequest", "ForgetReport", "ForgetRequest", "UnlearnContext",
           "UnlearnReport", "UnlearnResult", "Unlearner", "as_context"]


def as_context(context: UnlearnContext | None, **legacy: Any) -> UnlearnContext:
    """The :class:`~sisakit.UnlearnContext` of an ``unlearn`` call: ``context`` (or an empty one) with
    the non-None keyword arguments of the older call forms merged in."""
    if context is not None and not isinstance(context, UnlearnContext):
        raise ValidationError(f"context must be a sisakit.UnlearnContext, got "
                              f"{type(context).__name__}; build one with UnlearnContext(data=...)")
    return (context or UnlearnContext()).merged(**legacy)


class Unlearner(Component, ABC):
    """Removes the influence of data from a trained model.

    Contract
    --------
    * One call shape for every method: ``unlearn(model, request, *, context=None)`` returns an
      :class:`UnlearnResult`; :class:`UnlearnContext` carries what a method may need (training
      data, held-out records, evaluation data, a seed). Older keyword forms of the built-ins
      keep working as aliases of context fields.
    * Approximate unlearners (``exact = False``) never modify their input model.
    * Exact unlearners guarantee the result equals the ``retrain`` unlearner's (retraining
      without the data).
    * A request the method cannot handle raises a :class:`~sisakit.SisakitError`.
    """

    exact: ClassVar[bool] = False

    @abstractmethod
    def unlearn(self, model: Any, request: ForgetRequest | AttributeRequest, *,
                context: UnlearnContext | None = None) -> UnlearnResult:
        """Unlearn ``request`` from ``model``."""
