"""``sisa``: exact unlearning by retraining the affected shards from their last clean checkpoint."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ValidationError
from ..hookspecs import hookimpl
from ..sisa import SISA
from .base import (
    AttributeRequest,
    ForgetRequest,
    UnlearnContext,
    Unlearner,
    UnlearnReport,
    UnlearnResult,
    as_context,
)


class SisaUnlearner(Unlearner):
    """Exact unlearning for :class:`sisakit.SISA` ensembles.

    It updates the ensemble (and its run directory) in place, durably: ``SISA.forget`` is the
    shorthand for this unlearner. The result equals, bit for bit, a SISA model trained from
    scratch on the remaining data with the same config and seed.
    """

    exact = True

    def __init__(self) -> None:
        pass

    def unlearn(self, model: Any, request: ForgetRequest | AttributeRequest, *,
                context: UnlearnContext | None = None) -> UnlearnResult:
        as_context(context)  # validated; an exact forget needs nothing from it
        if not isinstance(model, SISA):
            raise ValidationError(
                f"the sisa unlearner works on sisakit.SISA models, got {type(model).__name__}; "
                "train with sisakit.SISA(...) to get exact unlearning"
            )
        if not isinstance(request, ForgetRequest):
            raise ValidationError(
                "the sisa unlearner takes a ForgetRequest(users=..., interactions=..., items=...);"
                " attribute unlearning needs an attribute unlearner such as 'pot-au'"
            )
        forget = model.forget_request(request)  # ledgered and locked, like SISA.forget
        return UnlearnResult(model=model, report=UnlearnReport(
            method="sisa", exact=True, seconds=forget.seconds, cpu_seconds=forget.cpu_seconds,
            removed={"records": forget.records_removed}, work_fraction=forget.work_fraction,
            details=dataclasses.asdict(forget)))


@hookimpl
def register_unlearners(register):
    register("sisa", SisaUnlearner)
