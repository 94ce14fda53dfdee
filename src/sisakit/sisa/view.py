"""The public, read-only view of a fitted ensemble that collaborators receive (aggregators, the
coordinator, influence, fairness, classification, :mod:`sisakit.testing`) instead of reaching
into the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import Interactions
from ..models.base import ShardModel

__all__ = ["EnsembleView", "stage_work"]


def stage_work(shard: np.ndarray, slice_: np.ndarray, n_shards: int, n_slices: int,
               epochs_per_stage: int) -> np.ndarray:
    """Records × epochs of every (shard, stage), shape ``(n_shards, n_slices)``: stage ``r``
    trains on slices ``0..r``."""
    per = np.bincount(shard * n_slices + slice_, minlength=n_shards * n_slices)
    return np.cumsum(per.reshape(n_shards, n_slices), axis=1) * epochs_per_stage


def _readonly(a: np.ndarray) -> np.ndarray:
    a = a.view()
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class EnsembleView:
    """A fitted run as of one commit, read-only (see :meth:`sisakit.SISA.view`).

    Attributes
    ----------
    shard_models : tuple of ShardModel
        The trained model of every shard (do not train them: they serve the run).
    data : Interactions
        The remaining training records.
    shard, slice : ndarray of int64 (read-only)
        Each record's shard and slice, in the order of ``data``.
    n_shards, n_slices, stage_epochs, seed : int
        The run's configuration (``stage_epochs``: epochs per slice stage).
    device : torch.device
        Where the shard models live.
    checkpoints : tuple of tuple of str
        ``[shard][stage]`` checkpoint names, relative to ``workdir``.
    workdir : Path
    timings : mapping
        ``fit_seconds`` and the like (see :attr:`sisakit.SISA.timings`).
    """

    shard_models: tuple[ShardModel, ...]
    data: Interactions
    shard: np.ndarray
    slice: np.ndarray
    n_shards: int
    n_slices: int
    stage_epochs: int
    seed: int
    device: torch.device
    checkpoints: tuple[tuple[str, ...], ...]
    workdir: Path
    timings: Mapping[str, float]
    user_counts: torch.Tensor
    item_counts: np.ndarray
    resolve_users: Callable[[Iterable[Any]], np.ndarray]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shard", _readonly(self.shard))
        object.__setattr__(self, "slice", _readonly(self.slice))

    @property
    def assignment(self) -> tuple[np.ndarray, np.ndarray]:
        """``(shard, slice)`` of every record."""
        return self.shard, self.slice

    @property
    def n_users(self) -> int:
        return self.data.n_users

    @property
    def n_items(self) -> int:
        return self.data.n_items

    def shard_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training records per (shard, user) (float32) and per (shard, item) (int64), held-out
        records excluded: a zero means the shard never trained on that user or item."""
        return self.user_counts.clone(), torch.from_numpy(self.item_counts.copy())

    def stage_work(self) -> np.ndarray:
        """Records × epochs of every (shard, stage) (see :func:`stage_work`)."""
        return stage_work(self.shard, self.slice, self.n_shards, self.n_slices,
                          self.stage_epochs)

    def earliest_slices(self, records: np.ndarray) -> dict[int, int]:
        """Shard -> first slice holding one of ``records`` (a boolean mask over ``data``): what
        forgetting those records retrains."""
        first = np.full(self.n_shards, self.n_slices, dtype=np.int64)
        np.minimum.at(first, self.shard[records], self.slice[records])
        return {int(s): int(first[s]) for s in np.flatnonzero(first < self.n_slices)}

    def user_index(self, users: Iterable[Any]) -> np.ndarray:
        """User indices of raw ids (a forgotten user maps to its tombstone's index).

        Raises
        ------
        UnknownIdError
            If an id is not a user of this run.
        """
        return self.resolve_users(users)
