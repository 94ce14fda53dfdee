"""The ``serial`` executor: shards train one after another in the calling process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ..hookspecs import hookimpl
from .base import Executor, OnResult, run_in_order

__all__ = ["SerialExecutor"]


class SerialExecutor(Executor):
    """Train shards one after another in this process (the default; no parallelism).

    Useful when a single shard already saturates the machine (``threads_per_shard`` equal to the
    core count, or a GPU), and as the reference the parallel executors are checked against.
    """

    out_of_process: ClassVar[bool] = False

    def __init__(self) -> None:
        pass

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        jobs: Sequence[Any],
        *,
        shared: Any = None,
        cpus_per_job: int = 1,
        on_result: OnResult | None = None,
    ) -> list[Any]:
        """Run ``fn(job, shared)`` for each job in turn (see :meth:`Executor.map`)."""
        return run_in_order(fn, jobs, shared, on_result)


@hookimpl
def register_executors(register):
    register("serial", SerialExecutor)
