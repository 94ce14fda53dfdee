"""Deletion requests and what unlearning reports: the types that storage (the deletion
ledger), the engine and the unlearner plugins all share, so none of them imports another's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .data import Interactions, canonical_id
from .errors import ValidationError

__all__ = ["AttributeRequest", "ForgetReport", "ForgetRequest", "UnlearnContext",
           "UnlearnReport", "UnlearnResult"]


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


@dataclass(frozen=True)
class UnlearnContext:
    """What an unlearner may need besides the model and the request: one object for every
    method, so code can call any :class:`~sisakit.Unlearner` the same way
    (``unlearn(model, request, context=...)``). A method ignores what it does not use.

    Attributes
    ----------
    data : Interactions, optional
        The records the model was trained on (for models that do not carry their data).
    held_out : Interactions, optional
        Records the model never trained on (e.g. to calibrate ``dual-memory``).
    eval_data : (train, test) Interactions, optional
        A split to evaluate the model before and after (reports only).
    k : tuple of int
        Ranking cut-offs of those evaluations.
    seed : int
        Seed of any randomness the method has of its own (e.g. ``retrain`` of a plain model).
    epochs : int, optional
        Training epochs, for methods that (re)train a plain model (``retrain``).
    """

    data: Any = None
    held_out: Any = None
    eval_data: tuple[Any, Any] | None = None
    k: tuple[int, ...] = (10, 20)
    seed: int = 0
    epochs: int | None = None

    def __post_init__(self) -> None:
        for name in ("data", "held_out"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Interactions):
                raise ValidationError(f"{name} must be non-empty sisakit.Interactions in the "
                                      f"model's id space, got {type(value).__name__}")
        if self.eval_data is not None and (
                not isinstance(self.eval_data, tuple) or len(self.eval_data) != 2
                or not all(isinstance(d, Interactions) for d in self.eval_data)):
            raise ValidationError("context.eval_data must be a (train, test) pair of "
                                  "sisakit.Interactions")
        if isinstance(self.k, (int, np.integer)) and not isinstance(self.k, bool):
            object.__setattr__(self, "k", (int(self.k),))
        if not isinstance(self.k, tuple) or not self.k or not all(
                isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 1
                for x in self.k):
            raise ValidationError(f"context.k must be positive cut-offs, e.g. (10, 20), got "
                                  f"{self.k!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or \
                self.seed < 0:
            raise ValidationError(f"context.seed must be a non-negative integer, got "
                                  f"{self.seed!r}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(
                self.epochs, (int, np.integer)) or self.epochs < 1):
            raise ValidationError(f"context.epochs must be a positive integer or None, got "
                                  f"{self.epochs!r}")

    def merged(self, **legacy: Any) -> UnlearnContext:
        """This context with the given (non-None) fields replaced: how the keyword forms of
        older ``unlearn`` signatures map onto the one context."""
        return replace(self, **{k: v for k, v in legacy.items() if v is not None})


@dataclass
class UnlearnReport:
    """What an unlearning method did and what it cost (``as_dict()`` is JSON-serialisable).

    Attributes
    ----------
    method : str
        The unlearner's registered name.
    exact : bool
        Whether the result equals retraining without the data.
    seconds, cpu_seconds : float
        Wall and CPU time of the unlearning itself.
    removed : dict of str to int
        What was removed, counted by kind (``users``, ``interactions``, ``items``, ``records``).
    work_fraction : float or None
        Retraining work as a share of training from scratch, where it is meaningful.
    details : dict
        Method-specific named fields; also readable as ``report["name"]``.
    """

    method: str
    exact: bool
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    removed: dict[str, int] = field(default_factory=dict)
    work_fraction: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        if key in self.details:
            return self.details[key]
        if key in {f for f in self.__dataclass_fields__}:
            return getattr(self, key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in self.details or key in self.__dataclass_fields__

    def get(self, key: str, default: Any = None) -> Any:
        """``report[key]`` or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def __getattr__(self, name: str) -> Any:
        # Method-specific fields read as attributes too (e.g. sisa's ``records_removed``).
        details = self.__dict__.get("details")
        if details is not None and name in details:
            return details[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
