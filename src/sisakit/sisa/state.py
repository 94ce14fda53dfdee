"""The immutable state of a fitted run: a change builds a new state, so rolling back a failed
change means keeping the old one."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._hashing import salted_digest
from ..aggregators.base import Aggregator
from ..data import Interactions
from ..models.base import ShardModel

__all__ = ["DataFiles", "RunState"]

FORGOTTEN_KINDS = ("users", "items", "interactions")


@dataclass(frozen=True)
class DataFiles:
    """The run files holding the id space and each shard's records."""

    space: str = ""
    shards: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "shards": list(self.shards)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataFiles:
        return cls(str(d["space"]), tuple(str(n) for n in d["shards"]))

    def names(self) -> set[str]:
        return {self.space, *self.shards}


@dataclass(frozen=True)
class RunState:
    """Everything a fitted run holds, as of one commit.

    Attributes
    ----------
    data : Interactions
        The remaining records (canonical record-id order) and the id space.
    shard, slice : ndarray of int64
        Each record's shard and slice (drawn once, at fit time).
    models : tuple of ShardModel
        The trained model of every shard.
    checkpoints : tuple of tuple of str
        ``[shard][stage]`` checkpoint file names.
    aggregator : Aggregator
        The (fitted) aggregator; ``aggregator_file`` its state file, if it has one.
    generation : int
        Generation of the commit (see :mod:`sisakit.sisa.layout`).
    salt : str
        This fit's salt of the forgotten ids' hashes.
    forgotten : mapping
        Kind -> salted hashes of every id forgotten so far.
    tombstones : mapping
        Salted user hash -> user index whose raw id was replaced by a tombstone.
    history : tuple of dict
        Forget and repartition records (counts and reports, never raw ids).
    data_files : DataFiles
    files : mapping
        Every listed run file -> its sha256 (what the manifest lists).
    timings : mapping
    """

    data: Interactions
    shard: np.ndarray
    slice: np.ndarray
    models: tuple[ShardModel, ...]
    checkpoints: tuple[tuple[str, ...], ...]
    aggregator: Aggregator
    generation: int
    salt: str
    aggregator_file: str | None = None
    forgotten: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict.fromkeys(FORGOTTEN_KINDS, ()))
    tombstones: Mapping[str, int] = field(default_factory=dict)
    history: tuple[Mapping[str, Any], ...] = ()
    data_files: DataFiles = DataFiles()
    files: Mapping[str, str] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)

    def evolve(self, **changes: Any) -> RunState:
        """A new state with ``changes`` (this one is left as it was)."""
        return replace(self, **changes)

    @property
    def n_shards(self) -> int:
        return len(self.checkpoints)

    def digest(self, kind: str, raw: Any) -> str:
        """The salted hash under which this run records a forgotten id of ``kind``."""
        return salted_digest(raw, f"{self.salt}:{kind}")

    def remembering(self, new_hashes: Mapping[str, list[str]]) -> Mapping[str, tuple[str, ...]]:
        """``forgotten`` with the ``new_hashes`` not listed yet appended, in order."""
        out = {}
        for kind in FORGOTTEN_KINDS:
            old = self.forgotten.get(kind, ())
            seen = set(old)
            out[kind] = old + tuple(h for h in new_hashes.get(kind, ()) if h not in seen)
        return out

    @functools.cached_property
    def _tombstone_mask(self) -> np.ndarray | None:
        if not self.tombstones:
            return None
        dead = np.zeros(self.data.n_users, dtype=bool)
        dead[np.fromiter(self.tombstones.values(), dtype=np.int64)] = True
        dead.flags.writeable = False
        return dead

    def tombstoned(self) -> np.ndarray | None:
        """Mask of the user indices whose raw id is a tombstone (None when there is none);
        computed once per state (every id lookup needs it)."""
        return self._tombstone_mask

    def live_user_ids(self) -> np.ndarray:
        """Raw ids of the users not forgotten (read-only), in index order."""
        dead = self.tombstoned()
        if dead is None:
            return self.data.user_ids
        ids = np.array(self.data.user_ids[~dead])
        ids.flags.writeable = False
        return ids

    def listed_files(self) -> set[str]:
        """The files this state's manifest lists."""
        listed = {n for names in self.checkpoints for n in names} | self.data_files.names()
        if self.aggregator_file:
            listed.add(self.aggregator_file)
        return listed
