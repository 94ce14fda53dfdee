"""The :class:`SISA` facade: validates at the public boundary and delegates to the engine
package (see the "Architecture" page of the docs)."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import plugins
from .._device import resolve_device
from .._validation import MAX_SEED, check_bool, check_int, check_path
from ..aggregators.base import Aggregator
from ..data import Interactions
from ..errors import ValidationError
from ..executors.base import Executor
from ..models.base import ShardModel
from ..requests import ForgetReport, ForgetRequest
from ..sharders.base import Sharder
from . import loading, operations, serving
from .config import SISAConfig
from .durability import Durability, EngineHooks, check_lock_timeout
from .forgetting import plan_forget, resolve
from .repository import Repository
from .runtime import build_runtime
from .serving import ShardIndex
from .state import RunState
from .view import EnsembleView

__all__ = ["SISA", "parameters_equal"]

logger = logging.getLogger(__name__)


class SISA:
    """An exact-unlearning recommender ensemble.

    Parameters
    ----------
    model, sharder, aggregator : str or component instance
        Registered plugin names (see ``sisakit plugins``) or instances.
    n_shards, n_slices : int
        Shards S and slices R per shard. ``n_shards=1, n_slices=1`` is plain full retraining.
    epochs : int
        Passes over each shard's data in total (stage ``r`` trains ``2·epochs/(R+1)`` epochs).
    seed : int
        Run seed: the same config, data and seed give the same bits.
    workdir : path, optional
        Run directory (manifest, data and checkpoints). Without one the run lives in a private
        temporary directory removed when the object is garbage collected.
    model_params, sharder_params, aggregator_params : dict, optional
        Constructor arguments for components given by name.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; applied to models that take a
        ``device`` parameter.
    threads_per_shard : int
        Torch threads while a shard trains; exactness is promised for equal values.
    progress : bool or None
        Show progress bars (None: only on a terminal).
    overwrite : bool
        Allow :meth:`fit` to replace an existing run (or an interrupted fit) in ``workdir``;
        the old run is replaced atomically when the new one commits.
    executor : str or Executor
        Where shards train and retrain: ``"serial"`` (default), ``"joblib"``, ``"ray"`` or any
        registered executor plugin. Every executor gives the same bits; it is a runtime choice,
        not part of the run's config (see :doc:`/executors`). Out-of-process executors write
        checkpoints into ``workdir``, which must be reachable from every worker.
    executor_params : dict, optional
        Constructor arguments of an executor given by name (e.g. ``{"n_jobs": 4}``).
    """

    #: Set on an ensemble made by :meth:`derive` (the edit's name); None otherwise.
    derived_by: str | None = None
    #: After a fit in this object (:meth:`fit`, or a :meth:`load` / :meth:`finish_fit` that
    #: finished an interrupted one): its ``generation`` and how many slice checkpoints it
    #: ``reused`` and ``trained``; None otherwise.
    fit_resumed: dict[str, int] | None = None

    def __init__(
        self,
        model: str | ShardModel = "bpr-mf",
        sharder: str | Sharder = "random-user",
        aggregator: str | Aggregator = "mean",
        n_shards: int = 5,
        n_slices: int = 4,
        epochs: int = 20,
        seed: int = 0,
        workdir: str | os.PathLike[str] | None = None,
        *,
        model_params: dict[str, Any] | None = None,
        sharder_params: dict[str, Any] | None = None,
        aggregator_params: dict[str, Any] | None = None,
        device: str = "auto",
        threads_per_shard: int = 1,
        progress: bool | None = None,
        overwrite: bool = False,
        executor: str | Executor = "serial",
        executor_params: dict[str, Any] | None = None,
    ) -> None:
        if workdir is not None:
            check_path("workdir", workdir)
        self.overwrite = check_bool("overwrite", overwrite)
        counts = dict(n_shards=n_shards, n_slices=n_slices, epochs=epochs, seed=seed,
                      threads_per_shard=threads_per_shard)
        rt = build_runtime((model, sharder, aggregator, executor),
                           (model_params, sharder_params, aggregator_params, executor_params),
                           counts, device, progress, Path(workdir or "."))
        self._tmp = workdir is None
        if workdir is None:  # a private run: removed with this object
            workdir = tempfile.mkdtemp(prefix="sisakit-run-")
            weakref.finalize(self, shutil.rmtree, workdir, True)
        root = Path(workdir)
        self._rt = rt.evolve(root=root, repo=Repository(root))
        self._state: RunState | None = None
        self._index: ShardIndex | None = None
        self._durable = Durability(EngineHooks(
            state=self._fitted_state, repo=lambda: self._rt.repo, catch_up=self._catch_up,
            resolve=self._resolve, user_index=lambda users: self.view().user_index(users),
            # late-bound: tests and fault injection patch SISA._forget_request
            apply=lambda *a, **k: self._forget_request(*a, **k)), root)

    # ------------------------------------------------------------------ configuration
    n_shards = property(lambda self: self._rt.config.n_shards, doc="Shards S.")
    n_slices = property(lambda self: self._rt.config.n_slices, doc="Slices R per shard.")
    epochs = property(lambda self: self._rt.config.epochs, doc="Passes over a shard in total.")
    seed = property(lambda self: self._rt.config.seed, doc="The run seed.")
    threads_per_shard = property(lambda self: self._rt.config.threads_per_shard,
                                 doc="Torch threads while a shard trains.")
    device = property(lambda self: self._rt.device, doc="The torch device of the run.")
    @property
    def progress(self) -> bool | None:
        """Whether progress bars are shown (None means only on a terminal); assignable."""
        return self._rt.progress

    @progress.setter
    def progress(self, value: bool | None) -> None:
        self._rt = self._rt.evolve(progress=check_bool("progress", value, none=True))

    workdir = property(lambda self: self._rt.root, doc="The run directory.")
    model = property(lambda self: self._rt.model,
                     doc="The model template (each shard trains a clone).")
    sharder = property(lambda self: self._rt.sharder, doc="The sharder.")

    @property
    def sisa_config(self) -> SISAConfig:
        """The run's frozen configuration."""
        return self._rt.config

    @property
    def config(self) -> dict[str, Any]:
        """The run's configuration as the manifest records it (a fresh dict)."""
        return self._rt.config.to_dict()

    @property
    def aggregator(self) -> Aggregator:
        """The aggregator (the fitted one once the run is fitted)."""
        return self._rt.aggregator if self._state is None else self._state.aggregator

    @property
    def executor(self) -> Executor:
        """Where shards train and retrain; assign a name or an instance to switch (results do
        not change, so a loaded run may use another executor than the one that fitted it)."""
        return self._rt.executor

    @executor.setter
    def executor(self, spec: str | Executor) -> None:
        self._rt = self._rt.evolve(executor=plugins.build("executor", spec))

    @property
    def lock_timeout(self) -> float:
        """Seconds a fit, forget, resume or repartition waits for another process's run lock
        before raising :class:`~sisakit.CheckpointError` (default 60)."""
        return self._durable.lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, value: float) -> None:
        self._durable.lock_timeout = check_lock_timeout(value)

    # ------------------------------------------------------------------ read model
    def view(self) -> EnsembleView:
        """The fitted run as a read-only :class:`~sisakit.sisa.EnsembleView`, what
        collaborators (aggregators, the coordinator, influence) read instead of the engine."""
        self._require_fitted()
        return self._rt.view(self._state, self._index)

    shard_models = property(lambda self: list(self.view().shard_models),
                            doc="The trained model of every shard.")
    data = property(lambda self: self._fitted_state().data,
                    doc="The remaining training data (after every forget so far).")
    assignment = property(lambda self: self.view().assignment,
                          doc="``(shard, slice)`` of every record of :attr:`data` (read-only).")
    generation = property(lambda self: self._fitted_state().generation, doc=(
        "Generation of the run's last commit (what ledger ``applied`` lines record)."))
    n_users = property(lambda self: self.data.n_users)
    n_items = property(lambda self: self.data.n_items)
    history = property(lambda self: list(self._fitted_state().history), doc=(
        "Forget requests (and :meth:`repartition` calls, with ``\"event\": \"repartition\"``) "
        "applied to this run: counts and reports only, never raw ids."))
    timings = property(lambda self: dict(self._fitted_state().timings),
                       doc="Fit, repartition and similar wall/CPU seconds.")

    @property
    def user_ids(self) -> np.ndarray:
        """Raw ids of the run's users that were not forgotten (read-only), in index order.

        ``data.user_ids`` also lists a tombstone in place of each forgotten user's raw id; a
        tombstone is not a user id (:meth:`recommend` and :meth:`forget` refuse it), while a
        forgotten user's *original* raw id stays addressable (popularity fallback).
        """
        return self._fitted_state().live_user_ids()

    def shard_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training records per (shard, user) (float32) and per (shard, item) (int64); a zero
        means the shard never trained on that user or item, so it must not influence it."""
        return self.view().shard_counts()

    def parameters(self) -> list[dict[str, torch.Tensor]]:
        """Complete state of every shard model (for exactness checks)."""
        return [m.state_dict() for m in self._fitted_state().models]

    # ------------------------------------------------------------------ fitting
    def fit(self, data: Interactions, *, assignment: Sequence[np.ndarray] | None = None
            ) -> SISA:
        """Train every shard, slice by slice, saving a checkpoint after each slice.

        The fit holds the run lock from start to commit and is crash-resumable: a killed fit
        is finished by :meth:`load`, :meth:`finish_fit` or ``sisakit resume``, bit for bit.
        With ``overwrite=True`` the existing run is replaced only at the final manifest swap.
        A fit that raises leaves nothing of itself behind.

        Parameters
        ----------
        data : Interactions
            Training records.
        assignment : (shard, slice) arrays, optional
            Use this stored assignment instead of drawing one (the exactness reference for
            data-dependent sharders).

        Returns
        -------
        self

        Raises
        ------
        ValidationError
            If the data or the assignment is invalid.
        CheckpointError
            If ``workdir`` holds another run or an interrupted fit (without ``overwrite``),
            pending deletion requests or foreign files, or the run lock is held too long.
        """
        replace = self.overwrite or self._tmp
        data, shard, slice_ = loading.prepare_fit(self._rt, data, assignment, replace=replace)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self._durable.hold():
            self._rt.repo.check_workdir(self.config, replace=replace)  # again, under the lock
            *_, self.fit_resumed = operations.fit_run(
                self._rt, data, shard.astype(np.int64), slice_.astype(np.int64),
                install=self._install)  # installed at the manifest swap
        return self

    @classmethod
    def finish_fit(cls, workdir: str | os.PathLike[str], *, device: str = "auto",
                   progress: bool | None = None, lock_timeout: float | None = None
                   ) -> SISA | None:
        """Finish the fit a killed process left in ``workdir`` (under the run lock).

        Returns the fitted run (its :attr:`fit_resumed` says how many slice checkpoints were
        reused), or None when there was nothing to train.
        """
        check_path("workdir", workdir)
        resolve_device(device)  # the caller's mistakes, before anything is blamed on the run
        check_bool("progress", progress, none=True)
        if lock_timeout is not None:
            lock_timeout = check_lock_timeout(lock_timeout)
        return loading.finish_fit(cls, Path(workdir), device=device, progress=progress,
                                  lock_timeout=lock_timeout)

    def repartition(self, *, seed: int | None = None) -> SISA:
        """Rebuild the partition from the remaining data and retrain every shard from scratch.

        A **full retrain**: a data-dependent sharder (e.g. ``receraser-user``) drew the stored
        partition from data forgotten since; ``repartition`` draws a fresh one from the
        remaining records only. The forget ledger, tombstones and history survive. The result
        equals a fresh :meth:`fit` of the remaining data with the same configuration (and
        ``seed``), bit for bit, and is committed atomically.

        Parameters
        ----------
        seed : int, optional
            New run seed (partition, slices and training randomness); None keeps the seed.

        Raises
        ------
        ValidationError
            If the model is not fitted or was derived, no records are left, or the sharder
            cannot partition them into ``n_shards`` non-empty shards.
        """
        self._require_fitted()
        self._refuse_derived("repartition")
        new_seed = self.seed if seed is None else check_int("seed", seed, 0, MAX_SEED)
        with self._durable.locked():  # after catching up and finishing pending requests
            self._durable.finish_pending()
            if len(self._state.data) == 0:
                raise ValidationError("no records are left to repartition; fit the run on new "
                                      "data")
            config = self._rt.config.with_seed(new_seed)

            def install(state: RunState, index: ShardIndex) -> None:  # at the manifest swap
                self._rt = self._rt.evolve(config=config)
                self._install(state, index)

            operations.repartition_run(self._rt, self._state, config, install=install)
        return self

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, workdir: str | os.PathLike[str], *, device: str = "auto",
             progress: bool | None = None, resume: bool = True,
             lock_timeout: float | None = None) -> SISA:
        """Reopen a saved run: verify every checksum, then restore data, shards and aggregator.

        With ``resume=True`` (default) it first finishes what a killed process left: a fit
        interrupted mid-way, then the deletion requests it received but did not apply (in the
        order received). With ``False`` nothing is changed (pending requests are logged).

        Raises
        ------
        CheckpointError
            If the directory is missing, incomplete, tampered with, or from a newer format; or
            if the run lock is not released within ``lock_timeout`` while resuming.
        """
        return loading.load(cls, workdir, device=device, progress=progress, resume=resume,
                            lock_timeout=lock_timeout)

    # ------------------------------------------------------------------ forgetting
    def forget(self, users: Iterable[Any] | None = None,
               interactions: Iterable[tuple[Any, Any]] | None = None,
               items: Iterable[Any] | None = None, *, request_id: str | None = None
               ) -> ForgetReport:
        """Exactly unlearn users, (user, item) interactions and/or items (raw ids).

        One call is one batch, all or nothing: only the affected shards retrain from their
        last clean checkpoint, the aggregator is refitted if it was fitted on data, and the run
        directory is updated atomically. The request is durable: it is in the fsync'd ledger
        before any work, and this returns after the manifest swap and its ``applied`` line (a
        crash in between is finished by :meth:`load` or ``sisakit resume``).

        Parameters
        ----------
        users, interactions, items : iterable, optional
            Raw user ids, (user, item) pairs and raw item ids to forget.
        request_id : str, optional
            An idempotency key (never personal data): an applied request id with the same ids is
            a no-op; with other ids it raises. Default: a fresh uuid4.

        Raises
        ------
        UnknownIdError
            If any id is unknown (nothing is deleted).
        ValidationError
            If the request is empty, or its id was used for another request.
        """
        return self.forget_request(ForgetRequest(users=users, interactions=interactions,
                                                 items=items), request_id=request_id)

    def forget_request(self, request: ForgetRequest, request_id: str | None = None
                       ) -> ForgetReport:
        """:meth:`forget` of a :class:`~sisakit.ForgetRequest` (what the ``sisa`` unlearner
        calls)."""
        self._require_fitted()
        self._refuse_derived("forget")
        if not isinstance(request, ForgetRequest):
            raise ValidationError(f"request must be a sisakit.ForgetRequest, got "
                                  f"{type(request).__name__}; or call forget(users=...)")
        return self._durable.forget(request, request_id)

    def resume(self) -> list[dict[str, Any]]:
        """Finish the deletion requests an interrupted process received but did not apply.

        Returns one dict per request: ``request``, ``state`` (``"applied"`` or ``"failed"``),
        and ``generation`` and ``report``, or ``error`` (an error class name).
        """
        self._require_fitted()
        self._refuse_derived("resume")
        with self._durable.locked():
            return self._durable.finish_pending()

    def receive(self, users: Iterable[Any] | None = None, items: Iterable[Any] | None = None, *,
                request_id: str | None = None) -> str:
        """Durably acknowledge a deletion request without applying it yet (it stays pending
        until :meth:`apply_received`, :meth:`resume`, :meth:`load` or the next
        :meth:`forget` applies it). Returns the request id.

        Raises
        ------
        UnknownIdError
            If an id is unknown (nothing is received).
        """
        self._require_fitted()
        self._refuse_derived("forget")
        return self._durable.receive(ForgetRequest(users=users or (), items=items or ()),
                                     request_id)

    def apply_received(self, request_ids: Sequence[str]) -> ForgetReport:
        """Apply several received requests as **one** forget (each shard hit is retrained
        once); requests already applied are skipped; if it raises, they stay pending."""
        self._require_fitted()
        self._refuse_derived("forget")
        return self._durable.apply_received(request_ids)

    def pending_requests(self) -> list[dict[str, Any]]:
        """Requests received but not yet applied, oldest first: ``request``, ``time``,
        ``kinds`` and ``counts`` (never raw ids)."""
        return self._durable.pending_requests()

    def remaining(self, request: ForgetRequest) -> tuple[Interactions, tuple[np.ndarray,
                                                                          np.ndarray]]:
        """The training data a forget of ``request`` would leave, and its stored ``(shard,
        slice)`` assignment, without forgetting anything: what a retrain reference fits on
        (``SISA(...).fit(data, assignment=assignment)`` equals the forget bit for bit).

        Raises
        ------
        UnknownIdError
            If an id is unknown.
        """
        state = self._fitted_state()
        if not isinstance(request, ForgetRequest):
            raise ValidationError(f"request must be a sisakit.ForgetRequest, got "
                                  f"{type(request).__name__}")
        plan = plan_forget(state, self._resolve(request), self.n_slices)
        return plan.data, (plan.shard, plan.slice)

    def is_forgotten(self, user: Any = None, *, item: Any = None) -> bool:
        """Whether a raw user (or item) id was forgotten in this run."""
        return serving.is_forgotten(self._fitted_state(), user, item)

    # ------------------------------------------------------------------ serving
    def scores(self, user_idx: np.ndarray) -> torch.Tensor:
        """Ranking scores ``(len(user_idx), n_items)`` (float32) for user *indices*.

        Items no shard trained on for the user rank below all scored items, by popularity (in
        ``[-2e30, -1e30]``); a user no shard trained on gets pure popularity; inactive items
        get ``-inf``.
        """
        state = self._fitted_state()
        u = serving.check_user_indices(user_idx, state.data.n_users)
        return serving.scores(state, self._index, u)

    def recommend(self, users: Iterable[Any], k: int = 10, *, exclude_seen: bool = True,
                  batch_size: int = 1024) -> np.ndarray:
        """Top-``k`` raw item ids for each user, best first, in the order of ``users``.

        Works for every known user, including one with no training data left and a forgotten
        user (popularity fallback). Training items rank after every unseen item unless
        ``exclude_seen=False``; forgotten items are never recommended.
        """
        state = self._fitted_state()
        return serving.recommend(state, self._index, users, state.digest, k,
                                 exclude_seen=exclude_seen, batch_size=batch_size)

    # ------------------------------------------------------------------ copies
    def derive(self, models: Sequence[ShardModel], by: str) -> SISA:
        """A new, in-memory ensemble with the given shard models (e.g. after a post-training
        edit). It recommends like any SISA model but refuses :meth:`forget`; the run directory
        still holds the original."""
        state = self._fitted_state()
        if len(models) != self.n_shards:
            raise ValidationError(f"derive() needs {self.n_shards} shard models, got {len(models)}")
        other = copy.copy(self)
        other._durable = copy.copy(self._durable)  # its own lock timeout and lock depth
        other._state = state.evolve(models=tuple(models))
        other.derived_by = by
        return other

    def copy(self, workdir: str | os.PathLike[str] | None = None) -> SISA:
        """An independent copy of this run (e.g. to keep the "before" of a forget), loaded and
        checksum-verified. Without ``workdir`` it lives in a private temporary directory.

        Raises
        ------
        CheckpointError
            If ``workdir`` exists and is not an empty directory, or the copy cannot be written.
        ValidationError
            If the model is not fitted, or was made by :meth:`derive`.
        """
        state = self._fitted_state()
        if self.derived_by is not None:
            raise ValidationError(
                f"this model was derived by {self.derived_by} and its edit lives only in memory; "
                "copy the original run and apply the edit to the copy")
        other = loading.copy_run(type(self), self._rt, state, workdir)
        other.executor = self.executor  # a runtime choice, not stored in the run
        return other

    def __repr__(self) -> str:
        c = self.config
        return (f"SISA(model={c['model']['name']!r}, sharder={c['sharder']['name']!r}, "
                f"aggregator={c['aggregator']['name']!r}, n_shards={self.n_shards}, "
                f"n_slices={self.n_slices}, epochs={self.epochs}, seed={self.seed}, "
                f"workdir={str(self.workdir)!r})")

    # ------------------------------------------------------------------ internals
    def _fitted_state(self) -> RunState:
        self._require_fitted()
        return self._state

    def _require_fitted(self) -> None:
        if self._state is None:
            raise ValidationError("this SISA model is not fitted yet; call fit(data) first")

    def _refuse_derived(self, verb: str = "forget") -> None:
        if self.derived_by is None:
            return
        if verb == "forget":
            raise ValidationError(
                f"this model was derived by {self.derived_by}; forgetting on it would restore "
                "checkpoints and silently undo that edit. Forget on the original model (reopen "
                "it with SISA.load), then apply the edit again")
        raise ValidationError(
            f"this model was derived by {self.derived_by} and its edit lives only in memory; "
            f"{verb} the original run (reopen it with SISA.load), then apply the edit again")

    def _install(self, state: RunState, index: ShardIndex) -> None:
        self._state, self._index = state, index
        serving.bind_models(state)

    def _resolve(self, request: ForgetRequest) -> Any:
        return resolve(self._state, request, self._state.digest)

    def _forget_request(self, request: ForgetRequest, request_id: str | None = None,
                        batch: Sequence[str] | None = None, resolution: Any = None
                        ) -> ForgetReport:
        """Apply one request (no ledger, no lock: the durability layer wraps this)."""
        self._require_fitted()
        self._refuse_derived("forget")
        if request.is_empty():
            raise ValidationError("empty forget request; pass users=, interactions= or items=")
        *_, report = operations.apply_request(self._rt, self._state, self._index, request,
                                              request_id, batch, resolution,
                                              install=self._install)  # at the manifest swap
        return report

    def _catch_up(self) -> None:
        """Under the lock: reload the run if another process committed since we last did."""
        loading.catch_up(self)



def parameters_equal(a: SISA, b: SISA) -> tuple[bool, int]:
    """Compare every tensor of two ensembles bit for bit: ``(all_equal, tensors_compared)``."""
    pa, pb = a.parameters(), b.parameters()
    if len(pa) != len(pb):
        return False, 0
    n, ok = 0, True
    for sa, sb in zip(pa, pb, strict=True):
        if set(sa) != set(sb):
            return False, n
        for key in sa:
            n += 1
            ok &= bool(sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]))
    return ok, n
