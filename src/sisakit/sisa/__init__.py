"""The exact SISA engine: Sharded, Isolated, Sliced, Aggregated training (Bourtoule et al.,
2021).

How exactness holds
-------------------
* Every record's (shard, slice) is drawn once, at fit time, from a seeded hash of its sharding
  unit, stored in the run, and never recomputed.
* Shard ``s`` trains slice stage ``r`` on the records of slices ``0..r`` for
  ``stage_epochs`` epochs; all randomness of epoch ``e`` comes from a generator seeded with
  ``derive_seed(seed, s, r, e)``, and initialisation from ``derive_seed(seed, s)``.
* A checkpoint (parameters and optimizer state) is saved after every stage. Deleting a record in
  slice ``r`` of shard ``s`` restores the checkpoint of stage ``r - 1`` and re-runs stages
  ``r..R-1`` on the remaining records, which is exactly what a scratch fit would have computed.
* Forgetting an item changes the negative-sampling pool of every shard, so every shard restarts
  from slice 0.

The package
-----------
:class:`~sisakit.SISA` (``engine``) is a facade: it validates at the public boundary and delegates to

* ``config`` — :class:`SISAConfig`, the frozen configuration (manifest ``config``);
* ``state`` — ``RunState``, the immutable state of one commit;
* ``layout`` — every run-directory name and generation rule;
* ``repository`` — manifest ↔ state, data files, commit, sweep, copy, workdir checks;
* ``transaction`` — the one commit mechanism of fit, repartition and forget;
* ``training`` — shard jobs, stage seeds, the executor call, the aggregator fit;
* ``forgetting`` — a pure plan of a forget (resolved ids, earliest slices, tombstones);
* ``operations`` — fit, repartition and forget, each one transaction;
* ``durability`` — ledger, lock, pending requests, ``receive``/``apply_received``;
* ``loading`` — ``load``, finishing an interrupted fit, copies, catching up with the disk;
* ``serving`` — the shard index, scoring and ``recommend``;
* ``view`` — :class:`EnsembleView`, the read model collaborators receive.
"""

from __future__ import annotations

from .config import ComponentSpec, SISAConfig, stage_epochs
from .engine import SISA, parameters_equal
from .view import EnsembleView

__all__ = ["SISA", "ComponentSpec", "EnsembleView", "SISAConfig", "parameters_equal",
           "stage_epochs"]
