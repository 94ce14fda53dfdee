"""The ``joblib`` executor: shards train in parallel in local worker processes (joblib/loky).

The module is called ``local`` so that it does not shadow the ``joblib`` package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._validation import MAX_THREADS
from ..constraints import Constraint
from ..errors import SisakitError, ValidationError
from ..hookspecs import hookimpl
from .base import Executor, OnResult, warm_up

__all__ = ["JoblibExecutor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _NJobs(Constraint):
    """joblib's ``n_jobs`` convention: ``1..N`` workers, or ``-1`` (every core), ``-2`` (all but
    one), ...: a non-zero integer (not a bool) in ``[-MAX_THREADS, MAX_THREADS]``."""

    def check(self, name: str, value: Any) -> None:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                or value == 0 or not -MAX_THREADS <= value <= MAX_THREADS:
            raise ValidationError(
                f"{name} must be a non-zero integer in [-{MAX_THREADS:,}, {MAX_THREADS:,}] (e.g. 2, "
                f"or -1 for every core), got {value!r:.80} ({type(value).__name__}); pass e.g. "
                f"{name}=2")

    def invalid_values(self) -> list[Any]:
        return [0, 1.5, "2", True, None, MAX_THREADS + 1, -MAX_THREADS - 1]

    def valid_values(self) -> list[Any]:
        return [1, 2, -1, -2, MAX_THREADS, -MAX_THREADS]


def _indexed(fn: Callable[[Any, Any], Any], i: int, job: Any, shared: Any) -> tuple[int, Any]:
    return i, fn(job, shared)


class JoblibExecutor(Executor):
    """Train shards in parallel in local worker processes (joblib's ``loky`` backend).

    Parameters
    ----------
    n_jobs : int
        Worker processes; ``-1`` uses every core, ``-2`` all but one (joblib's convention).
        Each worker trains one shard at a time with the run's ``threads_per_shard`` threads,
        so ``n_jobs * threads_per_shard`` should not exceed the core count.

    Notes
    -----
    Workers are reused across calls (joblib keeps the pool alive), so only the first
    :meth:`~sisakit.Executor.map` (or :meth:`start`) pays for starting processes and importing
    torch and sisakit.
    Each job is pickled to its worker with only its own shard's records; the shared context
    (model template and id space, without records) goes with every job but is small. joblib's
    memory mapping is turned off: training on memory-mapped arrays was slower than the copy.
    Workers write their checkpoints into the run directory themselves.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "n_jobs": _NJobs(),
    }

    def __init__(self, n_jobs: int = -1) -> None:
        self.n_jobs = n_jobs
        self.validate_params()  # refuse bad parameters now, before any worker starts

    def _parallel(self, **kw: Any) -> Any:
        from joblib import Parallel

        # max_nbytes=None: no memory-mapping of large arrays. Training on read-only np.memmap
        # views was 2-3x slower than on plain arrays (ML-1M, bpr-mf); pickling the data to each
        # job costs far less.
        return Parallel(n_jobs=self.n_jobs, backend="loky", max_nbytes=None, **kw)

    def start(self) -> None:
        """Start the worker processes and import the training code in each."""
        from joblib import delayed, effective_n_jobs

        n = effective_n_jobs(self.n_jobs)
        pids = self._parallel()(delayed(warm_up)() for _ in range(n))
        logger.debug("joblib executor: %d workers ready (%s)", len(set(pids)), sorted(set(pids)))

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        jobs: Sequence[Any],
        *,
        shared: Any = None,
        cpus_per_job: int = 1,
        on_result: OnResult | None = None,
    ) -> list[Any]:
        """Run ``fn(job, shared)`` in worker processes (see :meth:`Executor.map`)."""
        from joblib import delayed
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        jobs = list(jobs)
        results: list[Any] = [None] * len(jobs)
        if not jobs:
            return results
        parallel = self._parallel(return_as="generator_unordered")
        try:
            for i, result in parallel(delayed(_indexed)(fn, i, job, shared)
                                      for i, job in enumerate(jobs)):
                results[i] = result
                if on_result is not None:
                    on_result(i, result)
        except TerminatedWorkerError as exc:
            raise SisakitError(
                f"a joblib worker process died while running {len(jobs)} job(s) "
                f"({', '.join(str(j) for j in jobs[:5])}{', ...' if len(jobs) > 5 else ''}): "
                f"{exc}; it was probably killed for memory — use fewer n_jobs or the serial "
                "executor"
            ) from exc
        return results


@hookimpl
def register_executors(register):
    register("joblib", JoblibExecutor)
