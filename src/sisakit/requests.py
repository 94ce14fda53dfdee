"""Deletion requests and what unlearning reports: the types that storage (the deletion
ledger), the engine and the unlearner plugins all share, so none of them imports another's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .data import canonical_id
from .errors import ValidationError

__all__ = ["AttributeRequest", "ForgetReport", "ForgetRequest", "UnlearnResult"]


def _as_tuple(values: Any, what: str) -> tuple:
    """Request ids as a tuple of plain ints/strs ((user, item) pairs for interactions)."""
    if values is None:
        return ()
    if isinstance(values, (str, bytes)) or np.ndim(values) == 0:
        raise ValidationError(f"{what} must be a list of ids, e.g. [{values!r}], not a single id")
    if what != "interactions" and np.ndim(values) > 1:
        raise ValidationError(f"{what} must be a 1-D list of ids, got shape {np.shape(values)}; "
                              "pass a flat list (e.g. array.ravel())")
    if what != "interactions":
        return tuple(canonical_id(v) for v in values)
    pairs = []
    for pair in values:
        if isinstance(pair, (str, bytes)) or np.ndim(pair) != 1 or len(pair) != 2:
            raise ValidationError(
                f"interactions must be (user, item) pairs, e.g. [(1, 10)], got {pair!r}")
        pairs.append((canonical_id(pair[0]), canonical_id(pair[1])))
    return tuple(pairs)


@dataclass(frozen=True)
class ForgetRequest:
    """Delete users, (user, item) interactions and/or items, by raw id."""

    users: Sequence[Any] = ()
    interactions: Sequence[tuple[Any, Any]] = ()
    items: Sequence[Any] = ()

    def __post_init__(self) -> None:
        for name in ("users", "interactions", "items"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name), name))

    def is_empty(self) -> bool:
        return not (self.users or self.interactions or self.items)


@dataclass(frozen=True)
class AttributeRequest:
    """Make users indistinguishable with respect to a user attribute (attribute unlearning).

    Attributes
    ----------
    attribute : str
        Name of the attribute (a column of ``Interactions.user_attributes`` for models that
        carry their data, such as :class:`sisakit.SISA`).
    users : sequence of raw user ids, optional
        Restrict the unlearning to these users (default: every user with a label).
    labels : array-like, optional
        One label per user index (``n_users``), for models that do not carry their data;
        missing labels may be given as ``None``/NaN/``""``.
    """

    attribute: str
    users: Sequence[Any] | None = None
    labels: Any = None


@dataclass
class ForgetReport:
    """What a forget did and what it cost.

    Attributes
    ----------
    records_removed : int
        Training records deleted.
    shards_retrained : list of int
        Shards retrained from a checkpoint.
    slices_retrained : int
        (shard, slice) training stages re-run.
    parameters_retrained : int
        Parameters in the retrained shard models.
    seconds, cpu_seconds : float
        Wall and CPU time of the whole forget (retraining, aggregator refit, saving).
    work_fraction : float
        Retraining work (records × epochs) as a share of training the whole ensemble from scratch.
    already_forgotten : dict
        Ids that were forgotten before (a no-op), counted by kind.
    aggregator_seconds : float
        Part of ``seconds`` spent refitting the aggregator.
    earliest_slice : dict
        Shard -> first slice retrained.
    """

    records_removed: int = 0
    shards_retrained: list[int] = field(default_factory=list)
    slices_retrained: int = 0
    parameters_retrained: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    work_fraction: float = 0.0
    already_forgotten: dict[str, int] = field(default_factory=dict)
    aggregator_seconds: float = 0.0
    earliest_slice: dict[int, int] = field(default_factory=dict)

    @property
    def noop(self) -> bool:
        """True when nothing had to be deleted."""
        return self.records_removed == 0 and not self.shards_retrained

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["earliest_slice"] = {str(k): v for k, v in self.earliest_slice.items()}
        return d


@dataclass
class UnlearnResult:
    """The model after unlearning and the report of what it cost."""

    model: Any
    report: Any
