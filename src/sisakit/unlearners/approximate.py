"""Approximate input unlearning for plain shard models (the matrix-factorisation family).

:class:`ApproximateUnlearner` owns the loop every such method shares — check the request and
the context, split the training data into the forget set and the retained data, copy the model
(the input is never modified), time the update, write the report — so a method is only its
update rule (:meth:`ApproximateUnlearner.update`). ``finetune`` is the first: continue training
on the retained data only. The result is *not* equal to retraining: compare it with ``retrain``
(see :doc:`/plugins`).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Any, ClassVar

from .. import plugins
from .._rng import derive_seed
from .._validation import MAX_SEED, MAX_STEPS
from ..constraints import Constraint, Interval
from ..data import Interactions
from ..errors import PluginError, ValidationError
from ..hookspecs import hookimpl
from ..models.base import ShardModel
from .base import (
    ForgetRequest,
    UnlearnContext,
    Unlearner,
    UnlearnReport,
    UnlearnResult,
    as_context,
)

__all__ = ["ApproximateUnlearner", "FineTune"]


class ApproximateUnlearner(Unlearner):
    """Base of approximate unlearners of plain shard models: subclasses implement
    :meth:`update` and list the models they support in ``supported_models``."""

    exact = False
    #: Registered model names the method supports.
    supported_models: ClassVar[tuple[str, ...]] = ("bpr-mf", "ials", "ncf")

    def unlearn(self, model: Any, request: ForgetRequest, *,
                context: UnlearnContext | None = None) -> UnlearnResult:
        """Return an unlearned copy of ``model`` (``context.data``: the records it was
        trained on); ``model`` itself is not modified."""
        ctx = as_context(context)
        name = self._method_name()
        if not isinstance(request, ForgetRequest) or request.is_empty():
            raise ValidationError(f"{name} takes a non-empty ForgetRequest(users=..., "
                                  "interactions=..., items=...)")
        self._check_model(model, name)
        if ctx.data is None:
            raise ValidationError(f"{name} needs the records the model was trained on: pass "
                                  "context=UnlearnContext(data=train)")
        self.validate_params()
        forget_rows = ctx.data.resolve(users=request.users, interactions=request.interactions,
                                       items=request.items).remove
        retain = ctx.data.without(users=request.users, interactions=request.interactions,
                                  items=request.items)
        t0, c0 = time.perf_counter(), time.process_time()
        new = model.copy()
        details = self.update(new, forget=ctx.data.take(forget_rows), retain=retain,
                              context=ctx) or {}
        report = UnlearnReport(method=name, exact=False, seconds=time.perf_counter() - t0,
                               cpu_seconds=time.process_time() - c0,
                               removed={"records": int(forget_rows.sum())}, details=details)
        return UnlearnResult(model=new, report=report)

    @abstractmethod
    def update(self, model: ShardModel, *, forget: Interactions, retain: Interactions,
               context: UnlearnContext) -> dict[str, Any] | None:
        """Change ``model`` (a copy) in place so it forgets ``forget``; ``retain`` is the rest
        of its training data. Returns method-specific report fields."""

    def _method_name(self) -> str:
        try:
            return plugins.name_of("unlearner", self)
        except PluginError:
            return type(self).__name__

    def _check_model(self, model: Any, name: str) -> None:
        try:
            model_name = plugins.name_of("model", model) if isinstance(model, ShardModel) \
                else None
        except PluginError:
            model_name = None
        if model_name not in self.supported_models:
            raise ValidationError(
                f"{name} unlearns plain shard models {', '.join(self.supported_models)}; got "
                f"{type(model).__name__} (for a SISA run use the exact 'sisa' unlearner)")


class FineTune(ApproximateUnlearner):
    """``finetune``: continue training on the retained data only.

    The simplest baseline: the forget set's influence fades as the model keeps training
    without it (a forgotten user's own embedding is not retrained, since the user has no
    retained records). Cheap, and far from exact.

    Parameters
    ----------
    epochs : int
        Epochs of training on the retained data.
    seed : int
        Seed of the epochs' randomness (combined with ``context.seed``).
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "epochs": Interval(int, 1, MAX_STEPS),
        "seed": Interval(int, 0, MAX_SEED),
    }

    def __init__(self, epochs: int = 2, seed: int = 0) -> None:
        self.epochs = epochs
        self.seed = seed
        self.validate_params()

    def update(self, model: ShardModel, *, forget: Interactions, retain: Interactions,
               context: UnlearnContext) -> dict[str, Any]:
        seeds = [derive_seed(self.seed, context.seed, 0xF17E, e) for e in range(self.epochs)]
        model.partial_fit(retain, epoch_seeds=seeds)
        return {"epochs": self.epochs, "retained_records": len(retain),
                "forget_records": len(forget)}


@hookimpl
def register_unlearners(register: Any) -> None:
    register("finetune", FineTune)
