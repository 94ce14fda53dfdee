"""Hook specifications: how plugins add components to sisakit.

Each hook receives a ``register(name, cls)`` callable and calls it once per component it
provides. Built-ins use exactly these hooks (see :mod:`sisakit.plugins`).

Example
-------
.. code-block:: python

    import sisakit

    @sisakit.hookimpl
    def register_sharders(register):
        register("my-sharder", MySharder)
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("sisakit")
hookimpl = pluggy.HookimplMarker("sisakit")

Register = Callable[[str, type], None]


@hookspec
def register_sharders(register: Register) -> None:
    """Register :class:`~sisakit.Sharder` subclasses."""


@hookspec
def register_models(register: Register) -> None:
    """Register :class:`~sisakit.ShardModel` subclasses."""


@hookspec
def register_aggregators(register: Register) -> None:
    """Register :class:`~sisakit.Aggregator` subclasses."""


@hookspec
def register_unlearners(register: Register) -> None:
    """Register :class:`~sisakit.Unlearner` subclasses."""


@hookspec
def register_attackers(register: Register) -> None:
    """Register :class:`~sisakit.Attacker` subclasses."""


@hookspec
def register_influence(register: Register) -> None:
    """Register :class:`~sisakit.InfluenceMeasure` subclasses (per-user change of top-K lists)."""


@hookspec
def register_executors(register: Register) -> None:
    """Register :class:`~sisakit.Executor` subclasses (where shards train: serially,
    in local processes, on a cluster)."""
