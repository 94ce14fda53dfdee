"""Built-in random sharders: a seeded hash of the raw user id or of the record id."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._hashing import bucket
from ..hookspecs import hookimpl
from .base import Sharder


class RandomUserSharder(Sharder):
    """Each user (with all their records) goes to the shard given by a seeded hash of the raw
    user id, so a user's shard never depends on anybody else's data."""

    unit = "user"

    def __init__(self) -> None:
        pass

    def assign(self, data: Any, n_shards: int, *, seed: int) -> np.ndarray:
        self._check(data, n_shards)
        per_user = bucket(data.user_ids, n_shards, seed, "shard:user")
        return per_user[data.user_idx]


class RandomInteractionSharder(Sharder):
    """Each record goes to the shard given by a seeded hash of its stable record id."""

    unit = "record"

    def __init__(self) -> None:
        pass

    def assign(self, data: Any, n_shards: int, *, seed: int) -> np.ndarray:
        self._check(data, n_shards)
        return bucket(data.record_id, n_shards, seed, "shard:record")


@hookimpl
def register_sharders(register):
    register("random-user", RandomUserSharder)
    register("random-interaction", RandomInteractionSharder)
