"""An example sisakit plugin providing the ``example-modulo`` sharder.

sisakit discovers this module through the entry point declared in ``pyproject.toml``::

    [project.entry-points.sisakit]
    example = "sisakit_plugin_example"

and calls the hook implementations below, which register the components.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

import sisakit

__all__ = ["ModuloSharder", "register_sharders"]
__version__ = "0.1.0"


class ModuloSharder(sisakit.Sharder):
    """User-level sharder: shard ``(raw_id + seed) mod n_shards`` for integer user ids.

    String user ids go to ``int(sha256(f"{seed}:{raw_id}")) mod n_shards``. Either way the
    shard depends only on the user's raw id and the seed, so a user's records keep their shard
    when other data is deleted.
    """

    unit = "user"

    def __init__(self) -> None:
        pass

    def assign(self, data: Any, n_shards: int, *, seed: int) -> np.ndarray:
        """Shard id of every record of ``data`` (all of a user's records share one).

        Parameters
        ----------
        data : sisakit.Interactions
            The records to shard.
        n_shards : int
            Number of shards, at most the number of users with records.
        seed : int
            Run seed.

        Returns
        -------
        ndarray of int64
            One shard id in ``[0, n_shards)`` per record.
        """
        self._check(data, n_shards)  # raises sisakit.ValidationError for a bad n_shards
        raw = np.asarray(data.user_ids)
        n = np.int64(n_shards)
        if raw.dtype.kind in "iu":
            # (a + b) mod n computed from the residues, so large ids cannot overflow.
            per_user = (raw.astype(np.int64) % n + np.int64(seed) % n) % n
        else:
            per_user = np.array(
                [int.from_bytes(hashlib.sha256(f"{seed}:{u}".encode()).digest()[:8], "big")
                 % n_shards for u in raw.tolist()],
                dtype=np.int64,
            )
        return per_user.astype(np.int64)[data.user_idx]


@sisakit.hookimpl
def register_sharders(register):
    """Register the components of this plugin with sisakit."""
    register("example-modulo", ModuloSharder)
