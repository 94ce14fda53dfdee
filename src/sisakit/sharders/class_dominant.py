"""``class-dominant``: every shard is dominated by one class, with controlled leakage.

For class-level unlearning (see :mod:`sisakit.classification`) the *item* of a record is its
class label. Class ``c`` (its item index) is the dominant class of the shards ``s`` with
``s % n_classes == c``; with more shards than classes, classes repeat as dominant, and with
fewer, several classes share a shard (class ``c`` goes to shard ``c % n_shards``). A record goes
to one of its class's dominant shards, except a ``leak_fraction`` of every class, which leaks:

* ``leakage="high"``: to any shard *not* dominated by the class (uniformly);
* ``leakage="low"``: to the neighbouring shard (the next one, cyclically);
* ``leakage="none"``: nowhere; every class stays in its own shard(s).

Every choice is a seeded hash of the record's stable ``record_id`` and its class index, so a
record keeps its shard when other records are deleted (the sharder is not data dependent), and
the leaked share of a class is ``leak_fraction`` in expectation (a Bernoulli draw per record).
Forgetting a whole class therefore retrains only its dominant shards under ``"none"``, those and
their neighbours under ``"low"``, and in practice every shard under ``"high"``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._hashing import hash_ids
from ..constraints import Constraint, Interval, Options
from ..hookspecs import hookimpl
from .base import Sharder

LEAKAGES = ("high", "low", "none")


def _uniform(h: np.ndarray) -> np.ndarray:
    """uint64 hashes -> floats in [0, 1) from their top 53 bits."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class ClassDominantSharder(Sharder):
    """Each shard holds mostly one class; ``leak_fraction`` of every class leaks elsewhere.

    Parameters
    ----------
    leakage : {"high", "low", "none"}
        Where the leaked records of a class go: any shard not dominated by it, only the
        neighbouring shard, or nowhere.
    leak_fraction : float
        Expected share of every class that leaks, in ``[0, 1)``; ignored for ``"none"``.
    """

    unit = "record"
    data_dependent = False

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "leakage": Options(LEAKAGES),
        "leak_fraction": Interval(float, 0, 1, closed="left", example=0.1),
    }

    def __init__(self, leakage: str = "high", leak_fraction: float = 0.1) -> None:
        self.leakage = leakage
        self.leak_fraction = leak_fraction
        self.validate_params()  # refuse bad parameters now, before any fit

    @staticmethod
    def dominated(n_classes: int, n_shards: int) -> np.ndarray:
        """Boolean ``(n_classes, n_shards)`` table: is shard ``s`` a home shard of class ``c``."""
        c, s = np.arange(n_classes)[:, None], np.arange(n_shards)[None, :]
        if n_shards >= n_classes:
            return s % n_classes == c
        return s == c % n_shards

    def assign(self, data: Any, n_shards: int, *, seed: int) -> np.ndarray:
        self._check(data, n_shards)
        n_classes, cls = int(data.n_items), np.asarray(data.item_idx)
        dom = self.dominated(n_classes, n_shards)
        n_home = dom.sum(1)
        # Row c lists class c's home shards first, then the other shards, each in shard order.
        order = np.argsort(~dom, axis=1, kind="stable")
        pick = hash_ids(data.record_id, seed, "class-dominant:home")
        shard = order[cls, (pick % n_home[cls].astype(np.uint64)).astype(np.int64)]
        if self.leakage == "none" or self.leak_fraction == 0 or n_shards == 1:
            return shard.astype(np.int64)
        leak = _uniform(hash_ids(data.record_id, seed, "class-dominant:leak")) < self.leak_fraction
        if self.leakage == "low":
            target = (shard + 1) % n_shards
        else:
            n_other = n_shards - n_home[cls]
            # A class that dominates every shard has nowhere else to leak to.
            leak &= n_other > 0
            j = hash_ids(data.record_id, seed, "class-dominant:target") % np.maximum(
                n_other, 1).astype(np.uint64)
            target = order[cls, np.minimum(n_home[cls] + j.astype(np.int64), n_shards - 1)]
        return np.where(leak, target, shard).astype(np.int64)


@hookimpl
def register_sharders(register):
    register("class-dominant", ClassDominantSharder)
