"""The ``ray`` executor: shards train as Ray tasks, on a local Ray instance or a cluster.

Ray is optional: install it with ``pip install "sisakit[ray]"``. This module imports it only when
the executor starts, so the plugin is always registered.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ..constraints import Constraint, Interval, ParamsDict, TextName
from ..errors import PluginError, SisakitError, ValidationError
from ..hookspecs import hookimpl
from .base import Executor, OnResult

__all__ = ["RayExecutor"]

logger = logging.getLogger(__name__)


def _import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise PluginError(
            "the 'ray' executor needs Ray, which is not installed; pip install 'sisakit[ray]' "
            "(or pick executor='joblib' for local processes)"
        ) from exc


def _call(fn: Callable[[Any, Any], Any], job: Any, shared: Any) -> Any:
    """The Ray task: ``shared`` arrives already fetched from the object store."""
    return fn(job, shared)


class RayExecutor(Executor):
    """Train shards as Ray tasks (one task per shard, ``threads_per_shard`` CPUs each).

    Parameters
    ----------
    address : str, optional
        Address of a running Ray cluster (e.g. ``"ray://head:10001"`` or ``"auto"``). Without
        one a local Ray instance is started in this process.
    num_cpus : int, optional
        CPUs of the local instance (default: every core). Not allowed with ``address``: a
        cluster's size is set where it was started.
    init_kwargs : dict, optional
        Further keyword arguments of ``ray.init`` (e.g. ``runtime_env``).

    Notes
    -----
    * If Ray is already initialised in this process (by you or an earlier executor), that
      instance is used and ``address``/``num_cpus`` are ignored; :meth:`close` only shuts
      down an instance this executor started.
    * Workers write their checkpoints straight into the run directory, so **the run directory
      must be on a path every worker can reach** (a shared file system on a multi-node
      cluster), and sisakit (with the plugins the run uses) must be installed on every node.
    * ``RAY_USAGE_STATS_ENABLED=0`` is set unless the environment already sets it.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "address": TextName("a Ray address", example="'auto'", none=True),
        "num_cpus": Interval(int, 1, None, none=True),
        "init_kwargs": ParamsDict(none=True, example="{'runtime_env': {}}"),
    }

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.init_kwargs = init_kwargs
        self._validate()  # refuse bad parameters now, before Ray starts
        self._started = False
        self._remote: Any = None

    def _validate(self) -> None:
        self.validate_params()
        if self.address is not None and self.num_cpus is not None:
            raise ValidationError(
                "pass either address (connect to a running cluster) or num_cpus (start a local "
                "instance of that size), not both"
            )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_started": False, "_remote": None}

    def start(self) -> None:
        """Connect to (or start) Ray; a no-op when Ray is already initialised."""
        ray = _import_ray()
        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if self.address is not None:
            kwargs["address"] = self.address
        if self.num_cpus is not None:
            kwargs["num_cpus"] = self.num_cpus
        kwargs.update(self.init_kwargs or {})
        try:
            ray.init(**kwargs)
        except Exception as exc:
            raise SisakitError(
                f"could not start or reach Ray with ray.init({kwargs}): {exc}; check the address "
                "(or that 'ray start --head' ran there), or drop address= to start a local instance"
            ) from exc
        self._started = True
        logger.info("ray executor: %s CPUs available", ray.cluster_resources().get("CPU"))

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started:
            _import_ray().shutdown()
            self._started = False

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        jobs: Sequence[Any],
        *,
        shared: Any = None,
        cpus_per_job: int = 1,
        on_result: OnResult | None = None,
    ) -> list[Any]:
        """Run ``fn(job, shared)`` as Ray tasks (see :meth:`Executor.map`)."""
        ray = _import_ray()
        self.start()
        jobs = list(jobs)
        results: list[Any] = [None] * len(jobs)
        if not jobs:
            return results
        if self._remote is None:
            self._remote = ray.remote(_call)
        task = self._remote.options(num_cpus=cpus_per_job, max_retries=0)
        shared_ref = ray.put(shared)  # shipped to each node once, not once per job
        refs = [task.remote(fn, job, shared_ref) for job in jobs]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                i = index[done[0]]
                try:
                    results[i] = ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, BaseException):
                        raise cause from exc  # the original exception type
                    raise
                except ray.exceptions.RayError as exc:
                    raise SisakitError(
                        f"Ray could not run {jobs[i]}: {exc}; check the cluster's health and "
                        "memory, or use fewer CPUs per node"
                    ) from exc
                if on_result is not None:
                    on_result(i, results[i])
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
        return results


@hookimpl
def register_executors(register):
    register("ray", RayExecutor)
