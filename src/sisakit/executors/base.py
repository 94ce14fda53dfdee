"""The :class:`Executor` interface: where shard training and retraining run.

An executor maps a picklable task function over a list of jobs and returns the results in the
order of the jobs. The SISA engine hands it one job per shard to (re)train; the job function
(``sisakit._training.train_shard``) applies the run's ``threads_per_shard`` inside the worker,
so every executor gives the same bits. Executors are plugins of the kind ``"executor"``
(hook ``register_executors``; built-ins ``serial``, ``joblib`` and ``ray``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from ..base import Component

__all__ = ["Executor", "OnResult", "run_in_order", "warm_up"]

J = TypeVar("J")
R = TypeVar("R")

#: Called in the calling process as each job finishes: ``on_result(job_index, result)``.
OnResult = Callable[[int, Any], None]


class Executor(Component, ABC):
    """Runs independent jobs, possibly in parallel (a plugin of kind ``"executor"``).

    Contract
    --------
    * :meth:`map` returns ``[fn(job, shared) for job in jobs]``: one result per job, in the order
      of ``jobs``, whatever order the jobs finished in.
    * ``on_result(i, result)`` is called once per job, in the calling process, as soon as job
      ``i`` finished (progress bars use it).
    * An exception raised by ``fn`` reaches the caller as the original exception type (or as a
      :class:`~sisakit.SisakitError` naming the job when the worker itself died). Jobs not yet
      started are cancelled on a best-effort basis.
    * ``fn``, the jobs and ``shared`` are picklable; ``shared`` is the same for every job, so an
      executor may ship it to each worker once.
    * An executor never changes results: the job function pins the thread count itself.

    Subclasses store every constructor argument as an attribute of the same name (see
    :class:`~sisakit.base.Component`), so ``executor_params`` can rebuild them.
    """

    #: True when jobs run outside the calling process (they then write their checkpoints to the
    #: run directory themselves, so it must be reachable from every worker).
    out_of_process: ClassVar[bool] = True

    @abstractmethod
    def map(
        self,
        fn: Callable[[J, Any], R],
        jobs: Sequence[J],
        *,
        shared: Any = None,
        cpus_per_job: int = 1,
        on_result: OnResult | None = None,
    ) -> list[R]:
        """Run ``fn(job, shared)`` for every job and return the results in job order.

        Parameters
        ----------
        fn : callable
            A picklable, module-level function of ``(job, shared)``.
        jobs : sequence
            Picklable job descriptions.
        shared : object, optional
            Picklable data common to every job (e.g. the training data).
        cpus_per_job : int
            CPU cores one job uses (its torch thread count); schedulers that reserve cores
            (Ray) reserve this many.
        on_result : callable, optional
            ``on_result(i, result)``, called in this process as job ``i`` finishes.

        Returns
        -------
        list
            ``fn(jobs[i], shared)`` at position ``i``.
        """

    def start(self) -> None:
        """Start the workers now (optional: :meth:`map` starts them on first use).

        Lets a caller separate start-up cost (cluster start, worker imports) from the work.
        """

    def close(self) -> None:
        """Release the workers this executor started (a no-op for executors without any)."""

    def __enter__(self) -> Executor:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def run_in_order(fn: Callable[[J, Any], R], jobs: Sequence[J], shared: Any,
                 on_result: OnResult | None) -> list[R]:
    """Run the jobs one after another in this process (the serial strategy)."""
    results = []
    for i, job in enumerate(jobs):
        result = fn(job, shared)
        results.append(result)
        if on_result is not None:
            on_result(i, result)
    return results


def warm_up(job: Any = None, shared: Any = None) -> int:
    """A job that only imports the training code; returns the worker's process id.

    Map it over as many jobs as there are workers to pay for worker start-up (importing torch
    and sisakit) before timing real work.
    """
    import os

    from .. import _training  # noqa: F401

    return os.getpid()
