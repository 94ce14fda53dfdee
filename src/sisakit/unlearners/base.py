"""The :class:`Unlearner` interface (the request and report types live in
:mod:`sisakit.requests` and are re-exported here)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ..base import Component
from ..requests import AttributeRequest, ForgetReport, ForgetRequest, UnlearnResult

__all__ = ["AttributeRequest", "ForgetReport", "ForgetRequest", "UnlearnResult", "Unlearner"]


class Unlearner(Component, ABC):
    """Removes the influence of data from a trained model.

    Contract
    --------
    * ``unlearn(model, request)`` returns an :class:`UnlearnResult`.
    * Approximate unlearners (``exact = False``) never modify their input model.
    * Exact unlearners guarantee the result equals retraining without the data.
    """

    exact: ClassVar[bool] = False

    @abstractmethod
    def unlearn(self, model: Any, request: ForgetRequest | AttributeRequest) -> UnlearnResult:
        """Unlearn ``request`` from ``model``."""
