"""The :class:`Sharder` interface: which shard each record goes to."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from ..base import Component
from ..errors import ValidationError


class Sharder(Component, ABC):
    """Assigns every record to one of ``n_shards`` shards.

    Contract
    --------
    * :meth:`assign` returns one shard id in ``[0, n_shards)`` per record (int64 array).
    * It is deterministic for a given ``seed``.
    * A record's shard must not change when *other* records are deleted (hash the raw id, never
      a position). Data-dependent sharders may break this; the SISA engine stores the
      assignment at fit time, so exactness still holds for them.
    * With ``unit == "user"`` every record of a user gets the same shard, and slices are drawn
      per user too; with ``unit == "item"`` every record of an item gets the same shard and
      slices are drawn per item; with ``unit == "record"`` shards and slices are drawn per
      record. Whatever the unit, forgetting a user removes all of that user's records.
    """

    #: ``"user"`` (all of a user's records share a shard and a slice), ``"item"`` (all of an
    #: item's records do) or ``"record"``.
    unit: ClassVar[str] = "user"
    #: True when the assignment is computed from the data itself (see the docs on exactness).
    data_dependent: ClassVar[bool] = False

    @abstractmethod
    def assign(self, data: Any, n_shards: int, *, seed: int) -> np.ndarray:
        """Return the shard id of every record of ``data``."""

    def unit_keys(self, data: Any) -> np.ndarray:
        """Raw key of each record's sharding unit (raw user id, raw item id, or record id)."""
        if self.unit == "user":
            return data.user_ids[data.user_idx]
        if self.unit == "item":
            return data.item_ids[data.item_idx]
        return data.record_id

    def n_units(self, data: Any) -> int:
        """Number of distinct sharding units present in ``data``."""
        if self.unit == "user":
            return int(np.count_nonzero(np.bincount(data.user_idx, minlength=data.n_users)))
        if self.unit == "item":
            return int(np.count_nonzero(np.bincount(data.item_idx, minlength=data.n_items)))
        return len(data)

    def _check(self, data: Any, n_shards: int) -> None:
        if not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
            raise ValidationError(f"n_shards must be a positive integer, got {n_shards!r}")
        units = self.n_units(data)
        if n_shards > units:
            raise ValidationError(
                f"n_shards={n_shards} is larger than the number of {self.unit}s with data "
                f"({units}); use at most {units} shards"
            )
