"""The gold unlearner ``retrain``: fit the same model from scratch on the remaining data.

It is the reference every other method is compared with (exact by definition, and the cost an
unlearning method saves). For a :class:`~sisakit.SISA` run it fits a fresh run of the same
configuration on the data a forget would leave, with the stored assignment (so it equals the
run's own exact forget bit for bit); for a plain shard model it trains a clone on
``context.data`` minus the request for ``context.epochs`` epochs from ``context.seed``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from .._rng import derive_seed
from ..constraints import Bool, Constraint
from ..errors import ValidationError
from ..hookspecs import hookimpl
from ..models.base import ShardModel
from ..sisa import SISA
from .base import (
    ForgetRequest,
    UnlearnContext,
    Unlearner,
    UnlearnReport,
    UnlearnResult,
    as_context,
)

__all__ = ["RetrainUnlearner"]


class RetrainUnlearner(Unlearner):
    """Retrain from scratch without the request's data (exact; never modifies its input).

    Parameters
    ----------
    use_stored_assignment : bool
        For SISA runs: fit with the run's stored ``(shard, slice)`` of the remaining records
        (the exactness reference, also for data-dependent sharders) instead of drawing a new
        partition.
    """

    exact = True
    parameter_constraints: ClassVar[dict[str, Constraint]] = {"use_stored_assignment": Bool()}

    def __init__(self, use_stored_assignment: bool = True) -> None:
        self.use_stored_assignment = use_stored_assignment
        self.validate_params()

    def unlearn(self, model: Any, request: ForgetRequest, *,
                context: UnlearnContext | None = None) -> UnlearnResult:
        ctx = as_context(context)
        if not isinstance(request, ForgetRequest):
            raise ValidationError("retrain takes a ForgetRequest(users=..., interactions=..., "
                                  "items=...); attribute unlearning has no retrain reference")
        if request.is_empty():
            raise ValidationError("empty forget request; pass users=, interactions= or items=")
        t0, c0 = time.perf_counter(), time.process_time()
        if isinstance(model, SISA):
            new, n_left = self._retrain_run(model, request)
        elif isinstance(model, ShardModel):
            new, n_left = self._retrain_model(model, request, ctx)
        else:
            raise ValidationError(f"retrain works on sisakit.SISA runs and shard models, got "
                                  f"{type(model).__name__}")
        report = UnlearnReport(
            method="retrain", exact=True, seconds=time.perf_counter() - t0,
            cpu_seconds=time.process_time() - c0, work_fraction=1.0,
            removed={k: len(getattr(request, k)) for k in ("users", "interactions", "items")},
            details={"records_left": n_left})
        return UnlearnResult(model=new, report=report)

    def _retrain_run(self, run: SISA, request: ForgetRequest) -> tuple[SISA, int]:
        data, assignment = run.remaining(request)
        fresh = SISA(**run.sisa_config.sisa_kwargs(run.device.type), progress=False)
        fresh.fit(data, assignment=assignment if self.use_stored_assignment else None)
        return fresh, len(data)

    @staticmethod
    def _retrain_model(model: ShardModel, request: ForgetRequest, ctx: UnlearnContext
                       ) -> tuple[ShardModel, int]:
        if ctx.data is None or ctx.epochs is None:
            raise ValidationError(
                "retrain of a plain shard model needs the data it was trained on and its epochs:"
                " pass context=UnlearnContext(data=train, epochs=E, seed=S)")
        data = ctx.data.without(users=request.users, interactions=request.interactions,
                                items=request.items)
        fresh = model.clone()
        fresh.setup(data, seed=derive_seed(ctx.seed, 0))
        fresh.partial_fit(data, epoch_seeds=[derive_seed(ctx.seed, 1, e)
                                             for e in range(ctx.epochs)])
        return fresh, len(data)


@hookimpl
def register_unlearners(register: Any) -> None:
    register("retrain", RetrainUnlearner)
