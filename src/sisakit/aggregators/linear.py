"""Built-in linear aggregators: ``mean`` and ``weighted`` (by record count or validation NDCG)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch

from .._hashing import hash_ids
from .._validation import MAX_COUNT
from ..constraints import Constraint, Interval, Options
from ..errors import ValidationError
from ..hookspecs import hookimpl
from ..metrics import ModelScorer, evaluate
from .base import Aggregator

logger = logging.getLogger(__name__)

_BY = ("count", "validation")


def validation_mask(record_id: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Records held out for validation: a seeded hash of each record id below ``fraction``.

    A record's membership depends on its own id only, so it never changes when other records
    are deleted (each user keeps about ``fraction`` of their records out, independently).
    """
    h = hash_ids(np.asarray(record_id), seed, "validation") >> np.uint64(11)  # 53 bits -> exact
    return h.astype(np.float64) / float(1 << 53) < float(fraction)


class MeanAggregator(Aggregator):
    """Unweighted mean of the scores of the shards that trained on the user."""

    def __init__(self) -> None:
        pass

    def weights(self, counts: torch.Tensor) -> torch.Tensor:
        return (counts > 0).to(torch.float32)


class WeightedAggregator(Aggregator):
    """Weighted mean of the shard scores, by record count (default) or by validation quality.

    Parameters
    ----------
    by : {"count", "validation"}
        ``"count"``: each shard weighs by its number of training records of the user (no fit).
        ``"validation"``: each shard weighs ``softmax(ndcg_s / temperature)`` over the shards,
        where ``ndcg_s`` is the shard's NDCG@``k`` on a validation holdout (see Notes).
    temperature : float
        Softmax temperature (> 0); smaller values favour the best shards more strongly.
    validation_fraction : float
        Fraction of the training records held out for validation, in (0, 1) (``by="validation"``).
    k : int
        NDCG cut-off of the validation metric.

    Notes
    -----
    With ``by="validation"`` the records whose seeded hash of the record id falls below
    ``validation_fraction`` form the validation set: the engine keeps them in the run (stored,
    forgettable, excluded from recommendations as seen items) but no shard trains on them. A
    record's membership depends on its own id, so it is stable under deletion and a forgotten
    record leaves the validation set too; the weights are refitted after every forget.

    Shard ``s`` is evaluated on the validation records of the users it trained on (ranking every
    item but the user's training items). A shard with no such user gets the mean NDCG of the
    others (a neutral weight); if no shard has one, the weights are uniform.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "by": Options(_BY),
        "temperature": Interval(float, 0, None, closed="right", example=1.0),
        "validation_fraction": Interval(float, 0, 1, closed="neither", example=0.1),
        "k": Interval(int, 1, MAX_COUNT),
    }

    def __init__(self, by: str = "count", temperature: float = 1.0,
                 validation_fraction: float = 0.1, k: int = 10) -> None:
        self.by = by
        self.temperature = temperature
        self.validation_fraction = validation_fraction
        self.k = k
        self.validate_params()
        self._shard_weights: torch.Tensor | None = None

    @property
    def requires_fit(self) -> bool:  # type: ignore[override]
        """Only validation weighting is fitted."""
        return self.by == "validation"

    def holdout_mask(self, data: Any, *, seed: int) -> np.ndarray | None:
        if self.by != "validation":
            return None
        return validation_mask(data.record_id, self.validation_fraction, seed)

    def fit(self, ensemble: Any, data: Any) -> WeightedAggregator:
        """Compute each shard's validation NDCG@k and the softmax shard weights."""
        if self.by != "validation":
            return self
        models = ensemble.shard_models
        counts, _ = ensemble.shard_counts()
        held = validation_mask(data.record_id, self.validation_fraction, ensemble.seed)
        ndcg = torch.full((len(models),), float("nan"), dtype=torch.float64)
        if held.any() and not held.all():
            train, val = data.take(~held), data.take(held)
            has_val = np.bincount(val.user_idx, minlength=data.n_users) > 0
            for s, model in enumerate(models):  # one evaluation per shard
                users = np.flatnonzero(has_val & (counts[s].numpy() > 0))
                if len(users) == 0:
                    continue
                try:
                    scorer = ModelScorer(model, data.n_users, data.n_items)
                    res = evaluate(scorer, train, val, k=min(self.k, data.n_items), users=users)
                except ValidationError:  # no evaluable user (e.g. only training items held out)
                    continue
                ndcg[s] = res[f"ndcg@{min(self.k, data.n_items)}"]
        known = ~torch.isnan(ndcg)
        if not bool(known.any()):
            logger.warning("no shard has validation records; weighting shards uniformly")
            ndcg = torch.zeros_like(ndcg)
        else:
            ndcg = torch.where(known, ndcg, ndcg[known].mean())  # neutral weight when unknown
        self._shard_weights = torch.softmax(ndcg / float(self.temperature), 0).float()
        logger.info("validation NDCG per shard %s -> weights %s", ndcg.tolist(),
                    self._shard_weights.tolist())
        return self

    def weights(self, counts: torch.Tensor) -> torch.Tensor:
        if self.by == "count":
            return counts.to(torch.float32)
        if self._shard_weights is None:
            raise ValidationError("the validation-weighted aggregator is not fitted; fit the SISA "
                                  "ensemble that uses it (or call fit(ensemble, data)) first")
        if counts.shape[0] != len(self._shard_weights):
            raise ValidationError(f"counts has {counts.shape[0]} shards but the aggregator was "
                                  f"fitted on {len(self._shard_weights)}; refit it")
        return (counts > 0).to(torch.float32) * self._shard_weights[:, None]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self._shard_weights is None else {"shard_weights": self._shard_weights.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        w = state.get("shard_weights")
        self._shard_weights = None if w is None else w.detach().cpu().float().clone()


@hookimpl
def register_aggregators(register):
    register("mean", MeanAggregator)
    register("weighted", WeightedAggregator)
