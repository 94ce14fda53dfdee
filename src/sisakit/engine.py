"""The exact SISA engine: Sharded, Isolated, Sliced, Aggregated training (Bourtoule et al., 2021).

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
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import platform
import re
import secrets
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import plugins
from ._device import deterministic, resolve_device, torch_threads
from ._fitjournal import FIT_DIR, FitJournal
from ._hashing import bucket, salted_digest
from ._rng import derive_seed
from ._training import (
    ShardContext,
    ShardJob,
    ShardResult,
    checkpoint_name,
    shard_records,
    train_shard,
)
from ._validation import (
    MAX_COUNT,
    MAX_SEED,
    MAX_STEPS,
    MAX_THREADS,
    check_bool,
    check_int,
    check_params,
    check_path,
)
from ._version import __version__
from .aggregators.base import Aggregator
from .data import IdMap, Interactions, _as_id_array, canonical_id
from .errors import CheckpointError, PluginError, SisakitError, UnknownIdError, ValidationError
from .executors.base import Executor
from .ledger import DeletionLedger, RunLock, check_request_id, new_request_id
from .models.base import ShardModel
from .sharders.base import Sharder
from .store import FORMAT_VERSION, MANIFEST, RunStore, check_run_name, is_inside
from .unlearners.base import ForgetReport, ForgetRequest

__all__ = ["SISA"]

logger = logging.getLogger(__name__)

def stage_epochs(epochs: int, n_slices: int) -> int:
    """Epochs per slice stage: ``2·epochs/(R+1)``, so a shard sees ``epochs`` passes in total."""
    return max(1, round(2 * epochs / (n_slices + 1)))


def _serialised(method: Any) -> Any:
    """Run a method that changes a fitted run under the run lock, after syncing with the disk and
    finishing pending deletion requests (so no other process's update is lost)."""

    @functools.wraps(method)
    def wrapper(self: SISA, *args: Any, **kwargs: Any) -> Any:
        if not self._fitted or self.derived_by is not None:
            return method(self, *args, **kwargs)  # it raises its own, clearer error
        with self._locked():
            self._finish_pending()
            return method(self, *args, **kwargs)

    return wrapper


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
        Where shards train and retrain: ``"serial"`` (default, one after another in this
        process), ``"joblib"`` (local worker processes) or ``"ray"`` (a Ray cluster), or any
        registered executor plugin. Every executor gives the same bits; it is a runtime choice,
        not part of the run's config (see :doc:`/executors`). Out-of-process executors write
        checkpoints into ``workdir``, which must be reachable from every worker.
    executor_params : dict, optional
        Constructor arguments of an executor given by name (e.g. ``{"n_jobs": 4}``).
    """

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
        self.n_shards = check_int("n_shards", n_shards, 1, MAX_COUNT)
        self.n_slices = check_int("n_slices", n_slices, 1, MAX_COUNT)
        self.epochs = check_int("epochs", epochs, 1, MAX_STEPS)
        self.seed = check_int("seed", seed, 0, MAX_SEED)
        self.threads_per_shard = check_int("threads_per_shard", threads_per_shard, 1,
                                           MAX_THREADS)
        self.device = resolve_device(device)
        self.progress = check_bool("progress", progress, none=True)
        self.overwrite = check_bool("overwrite", overwrite)
        if workdir is not None:
            check_path("workdir", workdir)
        mparams = check_params("model_params", model_params)
        sparams = check_params("sharder_params", sharder_params)
        aparams = check_params("aggregator_params", aggregator_params)
        eparams = check_params("executor_params", executor_params)
        if isinstance(model, str) and "device" in plugins.get("model", model)._param_names():
            mparams.setdefault("device", str(self.device))
        self._model = plugins.build("model", model, **mparams)
        self._sharder = plugins.build("sharder", sharder, **sparams)
        self._aggregator = plugins.build("aggregator", aggregator, **aparams)
        self._executor = plugins.build("executor", executor, **eparams)
        self.config = self._make_config()
        self._tmp = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="sisakit-run-")
            weakref.finalize(self, shutil.rmtree, workdir, True)
        self.workdir = Path(workdir)
        self._store = RunStore(self.workdir)
        self._fitted = False

    # ------------------------------------------------------------------ configuration
    def _make_config(self) -> dict[str, Any]:
        config = {
            "model": _component_config("model", self._model),
            "sharder": _component_config("sharder", self._sharder),
            "aggregator": _component_config("aggregator", self._aggregator),
            "n_shards": self.n_shards,
            "n_slices": self.n_slices,
            "epochs": self.epochs,
            "stage_epochs": stage_epochs(self.epochs, self.n_slices),
            "seed": self.seed,
            "threads_per_shard": self.threads_per_shard,
        }
        try:
            json.dumps(config)
        except TypeError as exc:
            raise ValidationError(
                f"component parameters must be JSON values (numbers, strings, lists): {exc}"
            ) from exc
        return config

    def _determinism(self) -> dict[str, Any]:
        return {
            "device_type": self.device.type,
            "torch_version": torch.__version__,
            "threads_per_shard": self.threads_per_shard,
            "model_class": f"{type(self._model).__module__}.{type(self._model).__qualname__}",
            "optimizer": getattr(self._model, "optimizer_impl", "unspecified"),
            "cuda_deterministic": self.device.type == "cuda",
        }

    @property
    def model(self) -> ShardModel:
        """The model template (each shard trains a clone)."""
        return self._model

    @property
    def sharder(self) -> Sharder:
        return self._sharder

    @property
    def aggregator(self) -> Aggregator:
        return self._aggregator

    @property
    def executor(self) -> Executor:
        """Where shards train and retrain; assign a name or an instance to switch (results do
        not change, so a loaded run may use another executor than the one that fitted it)."""
        return self._executor

    @executor.setter
    def executor(self, spec: str | Executor) -> None:
        self._executor = plugins.build("executor", spec)

    @property
    def shard_models(self) -> list[ShardModel]:
        """The trained model of every shard."""
        self._require_fitted()
        return list(self._models)

    @property
    def data(self) -> Interactions:
        """The remaining training data (after every forget so far)."""
        self._require_fitted()
        return self._data

    @property
    def user_ids(self) -> np.ndarray:
        """Raw ids of the run's users that were not forgotten (read-only), in index order.

        ``data.user_ids`` also lists a tombstone in place of each forgotten user's raw id; a
        tombstone is not a user id (:meth:`recommend` and :meth:`forget` refuse it), while a
        forgotten user's *original* raw id stays addressable (popularity fallback).
        """
        ids = self.data.user_ids
        dead = self._tombstoned()
        return ids if dead is None else _readonly_copy(ids[~dead])

    @property
    def n_users(self) -> int:
        return self.data.n_users

    @property
    def n_items(self) -> int:
        return self.data.n_items

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise ValidationError("this SISA model is not fitted yet; call fit(data) first")

    def _bar(self, total: int, desc: str) -> tqdm:
        return tqdm(total=total, desc=desc, disable=(None if self.progress is None
                                                     else not self.progress), leave=False)

    # ------------------------------------------------------------------ fitting
    def fit(
        self, data: Interactions, *, assignment: Sequence[np.ndarray] | None = None
    ) -> SISA:
        """Train every shard, slice by slice, saving a checkpoint after each slice.

        The fit holds the run lock (:attr:`lock_timeout`) from start to commit and is
        crash-resumable: each checkpoint is recorded, with its sha256, in a fit journal in
        ``workdir`` as it completes, so if the process dies, :meth:`load` or ``sisakit resume``
        finishes the fit from the last complete checkpoints, bit for bit as if uninterrupted.
        With ``overwrite=True`` the existing run is replaced only at the final manifest swap:
        until then (an error or a crash mid-fit) it stays intact and loadable. A fit that raises
        leaves nothing of itself behind. See "Interrupted training" in the docs.

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
            pending deletion requests, or foreign files; or if another process holds the run
            lock for longer than :attr:`lock_timeout`.
        """
        if not isinstance(data, Interactions):
            raise ValidationError(
                f"fit() takes sisakit.Interactions, got {type(data).__name__}; build one with "
                "Interactions.from_arrays(users, items) or a loader in sisakit.datasets"
            )
        if len(data) == 0:
            raise ValidationError("fit() got empty data; pass at least one interaction")
        if not data.item_active.any():
            raise ValidationError("every item is inactive; nothing can be recommended")
        if assignment is not None:
            assignment = self._assignment_arrays(assignment, len(data))
        self._check_workdir()
        order = np.argsort(data.record_id, kind="stable")
        if np.any(order != np.arange(len(order))):
            # Records train in record-id order, so a reloaded run sees the same order.
            data = data.take(order)
            if assignment is not None:
                assignment = [np.asarray(a)[order] for a in assignment]
        if assignment is None:
            shard = np.asarray(self._sharder.assign(data, self.n_shards, seed=self.seed))
            slice_ = bucket(self._sharder.unit_keys(data), self.n_slices, self.seed, "slice")
        else:
            shard, slice_ = (np.asarray(a) for a in assignment)
        # A stored assignment may leave a shard empty (all its users were forgotten): such a shard
        # keeps its seeded initial state and contributes nothing.
        self._validate_assignment(data, shard, slice_, allow_empty=assignment is not None)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with RunLock(self.workdir, self.lock_timeout):
            self._lock_depth = 1
            try:
                self._check_workdir()  # again: another process may have changed it meanwhile
                self._run_fit(data, shard.astype(np.int64), slice_.astype(np.int64))
            finally:
                self._lock_depth = 0
        return self

    def _run_fit(self, data: Interactions, shard: np.ndarray, slice_: np.ndarray,
                 journal: dict[str, Any] | None = None) -> None:
        """Train and commit a new run (call under the run lock), or resume an interrupted one.

        The new run's files are tagged with a generation no file in the workdir uses yet, so an
        existing run (``overwrite=True``) stays intact and loadable until the manifest swap
        replaces it; its files are removed only after the swap. Before training, the data files
        and the fit journal are written (:mod:`sisakit._fitjournal`), and every slice checkpoint
        is recorded there once complete, so a killed fit resumes (``journal``: the journal of
        the interrupted fit) from its last complete checkpoints, reusing them.
        """
        before = dict(self.__dict__)
        committed = False
        store, jr = self._store, FitJournal(self.workdir)
        t0, c0 = time.perf_counter(), time.process_time()
        g = self._next_generation() if journal is None else int(journal["generation"])
        self._fitted = False
        self._data, self._shard, self._slice = data, shard, slice_
        self._salt = secrets.token_hex(16) if journal is None else str(journal["salt"])
        self._forgotten: dict[str, list[str]] = {"users": [], "items": [], "interactions": []}
        self._tombstones: dict[str, int] = {}
        self._history: list[dict[str, Any]] = []
        self._generation = g
        self._models = []
        self._ckpt: list[list[str]] = self._ckpt_of(g)
        self._data_files = {"space": "", "shards": [""] * self.n_shards}
        files: dict[str, str] = {}
        try:
            if journal is None:
                self._save_data(files, range(self.n_shards), space=True)
                jr.start({"format_version": FORMAT_VERSION, "config": self.config,
                          "seed": self.seed, "generation": g, "salt": self._salt,
                          "data_files": self._data_files, "files": files,
                          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                starts = dict.fromkeys(range(self.n_shards), 0)
            else:
                self._data_files = journal["data_files"]
                files.update(journal["files"])
                done = jr.completed()
                starts = {s: jr.verified(names, done) for s, names in enumerate(self._ckpt)}
                for s, names in enumerate(self._ckpt):
                    files.update({n: done[n] for n in names[:starts[s]]})
                logger.info("resuming the interrupted fit of %s: %d of %d slice checkpoints "
                            "are complete", self.workdir, sum(starts.values()),
                            self.n_shards * self.n_slices)
            self._resumed = {"generation": g, "reused": sum(starts.values()),
                             "trained": self.n_shards * self.n_slices - sum(starts.values())}
            todo = {s: r for s, r in starts.items() if r < self.n_slices}
            prev = {s: (self._ckpt[s][r - 1], files[self._ckpt[s][r - 1]])
                    for s, r in todo.items() if r > 0}
            with self._bar(self.n_shards * self.n_slices, "SISA fit") as bar:
                bar.update(sum(starts.values()))
                trained = self._train_shards(
                    todo, data, shard, slice_, files, generation=g, bar=bar, resume_from=prev,
                    journal=str(jr.dir)) if todo else {}
            for s in range(self.n_shards):
                if s in trained:
                    model = trained[s][0]
                else:  # every stage was complete before the interruption
                    last = self._ckpt[s][-1]
                    model = self._model.clone()
                    model.load_state_dict(store.load_tensors(last, files[last]))
                self._models.append(model)
            self._refresh_index()
            agg_file = self._fit_aggregator(files, generation=g)
            fit_seconds = time.perf_counter() - t0
            self._timings = {"fit_seconds": fit_seconds,
                             "fit_cpu_seconds": time.process_time() - c0}
            self._sweep = True  # after the swap: delete the replaced run's files and leftovers
            self._commit(files, agg_file)
            committed = True
            self._fitted = True
            jr.remove()
        except BaseException:
            if not committed:
                self.__dict__.clear()
                self.__dict__.update(before)
                if journal is None:  # an error, not a crash: nothing of this fit is resumable
                    jr.remove()  # (its generation is new: no file of the old run is named so)
                    store.remove_files({*files, *(c for cs in self._ckpt_of(g) for c in cs)})
            raise
        logger.info("fitted %d shards x %d slices in %.2fs", self.n_shards, self.n_slices,
                    fit_seconds)

    def _ckpt_of(self, generation: int) -> list[list[str]]:
        return [[checkpoint_name(s, r, generation) for r in range(self.n_slices)]
                for s in range(self.n_shards)]

    def _next_generation(self) -> int:
        """A generation no run file in the workdir uses yet (0 in a new workdir)."""
        tag = re.compile(r"\.g(\d+)\.")
        found = [int(m.group(1)) for sub in ("checkpoints", "state")
                 if (self.workdir / sub).is_dir() and is_inside(self.workdir, self.workdir / sub)
                 for p in (self.workdir / sub).rglob("*") if (m := tag.search(p.name))]
        if self._store.has_manifest():
            with contextlib.suppress(CheckpointError, KeyError, TypeError, ValueError):
                found.append(int(self._store.read_manifest()["generation"]))
        return max(found) + 1 if found else 0

    def _check_workdir(self) -> None:
        """Refuse a workdir that holds another run (unless ``overwrite``) or foreign files."""
        root = self.workdir
        interrupted = FitJournal(root).exists()
        if interrupted and not (self.overwrite or self._tmp):
            raise CheckpointError(
                f"{root} holds an interrupted fit; finish it with SISA.load({str(root)!r}) or "
                f"`sisakit resume {root}`, or pass overwrite=True to start the fit over"
            )
        if self._store.has_manifest():
            pending = DeletionLedger(root).pending()
            if pending:  # their raw ids would be lost or applied to the new run's data
                raise CheckpointError(
                    f"{root} has {len(pending)} pending deletion request(s); finish them first "
                    f"with `sisakit resume {root}` (or SISA.load), then fit again"
                )
            if not (self.overwrite or self._tmp):  # a private temp run may always be refitted
                try:
                    other = self._store.read_manifest().get("config")
                except CheckpointError:
                    other = None
                what = ("a run with a different config" if other != self.config
                        else "a run with the same config")
                raise CheckpointError(
                    f"{root} already holds {what}; reopen it with SISA.load({str(root)!r}), choose "
                    "another workdir, or pass overwrite=True to replace it"
                )
        elif not interrupted and root.exists() and (not root.is_dir() or any(
                not _own_leftover(p) for p in root.iterdir())):
            raise CheckpointError(
                f"workdir {root} exists and is not an empty directory or a sisakit run; choose an "
                "empty or new directory"
            )

    @staticmethod
    def _assignment_arrays(assignment: Any, n: int) -> list[np.ndarray]:
        """``fit(assignment=...)`` as two integer arrays of ``n`` entries (checked for shape and
        type here; their values by :meth:`_validate_assignment`)."""
        hint = ("pass assignment=(shard, slice): two integer arrays with one entry per record, "
                "e.g. the arrays a SISA run stores")
        if isinstance(assignment, (str, bytes, np.ndarray)) or not isinstance(
                assignment, (tuple, list)) or len(assignment) != 2:
            raise ValidationError(f"assignment must be a (shard, slice) pair, got "
                                  f"{type(assignment).__name__}; {hint}")
        out = []
        for name, a in zip(("shard", "slice"), assignment, strict=True):
            try:
                arr = np.asarray(a)
            except (ValueError, TypeError) as exc:  # ragged or nested lists
                raise ValidationError(f"the {name} assignment is not an array ({exc}); {hint}"
                                      ) from exc
            if arr.shape != (n,) or arr.dtype.kind not in "iu":
                raise ValidationError(
                    f"the {name} assignment must be an integer array with one entry per record "
                    f"({n}), got {arr.dtype} {arr.shape}; {hint}")
            out.append(arr)
        return out

    def _validate_assignment(self, data: Interactions, shard: np.ndarray, slice_: np.ndarray,
                             *, allow_empty: bool = False) -> None:
        for name, arr, hi in (("shard", shard, self.n_shards), ("slice", slice_, self.n_slices)):
            if arr.shape != (len(data),) or arr.dtype.kind not in "iu":
                raise ValidationError(
                    f"the {name} assignment must be an integer array with one entry per record "
                    f"({len(data)}), got {arr.dtype} {arr.shape}; pass integer arrays, e.g. "
                    "the assignment a SISA run stores"
                )
            if len(arr) and (arr.min() < 0 or arr.max() >= hi):
                raise ValidationError(
                    f"the {name} assignment's ids must lie in [0, {hi}) (n_{name}s={hi}), got "
                    f"[{arr.min()}, {arr.max()}]; renumber the assignment or configure "
                    f"n_{name}s to match it")
        sizes = np.bincount(shard, minlength=self.n_shards)
        if (sizes == 0).any() and not allow_empty:
            raise ValidationError(
                f"shard(s) {np.flatnonzero(sizes == 0).tolist()} received no records; use fewer "
                f"shards (n_shards={self.n_shards}) or a balanced sharder"
            )

    def _stage_seeds(self, s: int, r: int) -> list[int]:
        return [derive_seed(self.seed, s, r, e) for e in range(self.config["stage_epochs"])]

    def _train_shards(
        self,
        starts: dict[int, int],
        data: Interactions,
        shard: np.ndarray,
        slice_: np.ndarray,
        files: dict[str, str],
        *,
        generation: int,
        bar: tqdm | None = None,
        resume_from: dict[int, tuple[str, str]] | None = None,
        journal: str | None = None,
    ) -> dict[int, tuple[ShardModel, list[str]]]:
        """Train every shard ``s`` in ``starts`` from stage ``starts[s]`` on the executor.

        A shard starting at stage ``r > 0`` resumes from its current checkpoint of stage
        ``r - 1`` (or the ``(name, sha256)`` given in ``resume_from``); each job saves a
        checkpoint after each stage (see ``sisakit._training.train_shard``), recording it in
        the fit journal folder ``journal`` if given. The checkpoint digests are added to
        ``files``.

        Returns
        -------
        dict
            ``{s: (model, checkpoint names of stages starts[s]..R-1)}``.
        """
        held = self._aggregator.holdout_mask(data, seed=self.seed)
        member = shard if held is None else np.where(held, -1, shard)
        jobs = []
        for s, start in sorted(starts.items()):
            rows = np.flatnonzero(member == s)
            resume = None
            if start > 0 and resume_from and s in resume_from:
                resume = resume_from[s]
            elif start > 0:
                prev = self._ckpt[s][start - 1]
                resume = (prev, self._files[prev])
            jobs.append(ShardJob(
                shard=s, start=start, n_slices=self.n_slices, generation=generation, rows=rows,
                rows_slice=slice_[rows], init_seed=derive_seed(self.seed, s),
                stage_seeds=tuple(tuple(self._stage_seeds(s, r))
                                  for r in range(start, self.n_slices)),
                resume=resume, records=shard_records(data, rows)))
        # Each job carries its own records; the shared context carries only the id space, so an
        # out-of-process executor ships every record once, not the whole data once per job.
        space = data.take(np.zeros(0, dtype=np.int64))
        ctx = ShardContext(model=self._model.clone(), data=space, root=str(self.workdir),
                           threads=self.threads_per_shard, device=str(self.device),
                           journal=journal)

        def done(i: int, result: ShardResult) -> None:
            if bar is not None:
                bar.update(len(result.names))

        try:
            results = self._executor.map(train_shard, jobs, shared=ctx,
                                         cpus_per_job=self.threads_per_shard, on_result=done)
        except BaseException:
            # Best effort: drop what finished jobs wrote (new generation: never listed yet).
            planned = {checkpoint_name(j.shard, r, generation)
                       for j in jobs for r in range(j.start, self.n_slices)}
            self._store.remove_files(planned - set(getattr(self, "_files", {})))
            raise
        out: dict[int, tuple[ShardModel, list[str]]] = {}
        for result in results:
            model = self._model.clone()
            model.load_state_dict(result.state)
            files.update(result.digests)
            out[result.shard] = (model, result.names)
        return out

    def _fit_aggregator(self, files: dict[str, str], generation: int) -> str | None:
        if not self._aggregator.requires_fit:
            return None
        fresh = self._aggregator.clone()  # refit from scratch; the old one stays for rollback
        was_fitted, self._fitted = self._fitted, True  # the shards are trained: fit may read them
        try:
            with torch_threads(self.threads_per_shard), deterministic(self.device):
                fresh.fit(self, self._data)
        finally:
            self._fitted = was_fitted
        self._aggregator = fresh
        name = f"state/aggregator.g{generation}.pt"
        files[name] = self._store.save_tensors(name, self._aggregator.state_dict())
        return name

    def _refresh_index(self, removed: tuple[np.ndarray, ...] | None = None) -> None:
        """Derived lookup tables: records per (shard, user), items seen per shard, popularity.

        ``removed`` (the records just deleted, indexing the data *before* the deletion, with
        their shards) updates the tables incrementally instead of recounting every record.
        """
        d, S = self._data, self.n_shards
        # Records an aggregator holds out are never trained on, so they must not count as "this
        # shard trained on the user/item" (recounted in full: we cannot tell which removed
        # records were held out).
        held = self._aggregator.holdout_mask(d, seed=self.seed)
        if removed is None or held is not None:
            w = None if held is None else (~held).astype(np.float64)
            self._counts = torch.from_numpy(
                np.bincount(self._shard * d.n_users + d.user_idx, w, minlength=S * d.n_users)
                .reshape(S, d.n_users).astype(np.float32))
            self._item_counts = np.bincount(
                self._shard * d.n_items + d.item_idx, w, minlength=S * d.n_items
            ).reshape(S, d.n_items).astype(np.int64)
        else:
            r_shard, r_user, r_item = removed
            np.subtract.at(self._counts.numpy(), (r_shard, r_user), 1.0)
            np.subtract.at(self._item_counts, (r_shard, r_item), 1)
        self._item_seen = torch.from_numpy(self._item_counts > 0)
        pop = self._item_counts.sum(0).astype(np.float64)
        self._popularity = torch.from_numpy(pop / (pop.max() + 1.0)).float()
        self._seen_csr_cache = None
        for model in self._models:  # e.g. drop references to forgotten users' feature rows
            bind = getattr(model, "bind_space", None)
            if bind is not None:
                bind(d)

    @property
    def _seen_csr(self):
        if self._seen_csr_cache is None:
            self._seen_csr_cache = self._data.to_csr()
        return self._seen_csr_cache

    _RECORD_KEYS = ("user_idx", "item_idx", "record_id", "rating", "timestamp", "weight")

    def _save_data(self, files: dict[str, str], shards: Iterable[int], space: bool) -> None:
        """Write the id space and the records of the given shards (one file per shard, so a
        forget rewrites only what it changed)."""
        g = self._generation
        state = self._data.to_state()
        if space:
            name = f"state/space.g{g}.npz"
            files[name] = self._store.save_arrays(
                name, {k: v for k, v in state.items() if k not in self._RECORD_KEYS})
            self._data_files["space"] = name
        for s in shards:
            rows = np.flatnonzero(self._shard == s)
            arrays = {k: state[k][rows] for k in self._RECORD_KEYS if k in state}
            arrays["slice"] = self._slice[rows]
            name = f"state/records-shard-{s:04d}.g{g}.npz"
            files[name] = self._store.save_arrays(name, arrays)
            self._data_files["shards"][s] = name

    def _commit(self, files: dict[str, str], agg_file: str | None, *,
                shards: Iterable[int] = (), space: bool = False) -> None:
        """Write changed data files, then swap the manifest (the atomic commit point)."""
        self._save_data(files, shards, space)
        listed = {n for names in self._ckpt for n in names}
        listed |= {self._data_files["space"], *self._data_files["shards"]}
        if agg_file:
            listed.add(agg_file)
        files = {k: v for k, v in files.items() if k in listed}
        manifest = {
            "format_version": FORMAT_VERSION,
            "library": {"sisakit": __version__, "torch": torch.__version__,
                        "numpy": np.__version__, "python": platform.python_version()},
            "config": self.config,
            "seed": self.seed,
            "determinism": self._determinism(),
            "generation": self._generation,
            "data_files": self._data_files,
            "checkpoints": self._ckpt,
            "aggregator_file": agg_file,
            "files": dict(sorted(files.items())),
            "forgotten": {"salt": self._salt, **self._forgotten},
            "tombstones": self._tombstones,
            "history": self._history,
            "timings": self._timings,
        }
        self._store.write_manifest(manifest)  # the commit point
        superseded = set(getattr(self, "_files", {})) - set(manifest["files"])
        self._files = manifest["files"]
        try:  # best effort: a file left behind is swept by a later commit, never loaded
            if getattr(self, "_sweep", True):
                self._store.remove_unlisted(self._files)  # after fit, or a crash's leftovers
                self._sweep = False
            else:
                self._store.remove_files(superseded)
        except OSError as exc:
            logger.warning("could not delete superseded run files (%s); they will be removed "
                           "by a later forget", exc)
            self._sweep = True

    # ------------------------------------------------------------------ repartitioning
    @_serialised
    def repartition(self, *, seed: int | None = None) -> SISA:
        """Rebuild the partition from the remaining data and retrain every shard from scratch.

        This is a **full retrain**, as expensive as :meth:`fit`. A data-dependent sharder (e.g.
        ``receraser-user`` or ``activity-stratified``) computed the stored partition from the
        data at fit time, including data forgotten since; which users were grouped together is
        a small trace of them. ``repartition`` asks the run's sharder for a fresh assignment of
        the remaining records only and retrains every shard into the same workdir. The forget
        ledger (salted hashes of forgotten ids), the tombstones and the history survive, so
        forgotten users stay forgotten. The result equals a fresh :meth:`fit` of the remaining
        data with the same configuration (and ``seed``), bit for bit.

        The new run is committed atomically: if anything fails, the old run stays in place, in
        memory and on disk.

        Parameters
        ----------
        seed : int, optional
            New run seed (it draws the partition, the slices and the training randomness);
            None keeps the run's seed.

        Returns
        -------
        self

        Raises
        ------
        ValidationError
            If the model is not fitted or was made by :meth:`derive`, if no records are left, or
            if the sharder cannot partition the remaining data into ``n_shards`` non-empty
            shards (e.g. fewer users than shards are left).
        """
        self._require_fitted()
        if self.derived_by is not None:
            raise ValidationError(
                f"this model was derived by {self.derived_by}; repartition the original run "
                "(reopen it with SISA.load), then apply the edit again"
            )
        new_seed = self.seed if seed is None else check_int("seed", seed, 0, MAX_SEED)
        data = self._data
        if len(data) == 0:
            raise ValidationError("no records are left to repartition; fit the run on new data")
        t0, c0 = time.perf_counter(), time.process_time()
        old = {"seed": self.seed, "config": self.config, "_timings": self._timings}
        snapshot = self._snapshot()
        files: dict[str, str] = {}
        committed = False
        try:
            self.seed = new_seed
            self.config = self._make_config()
            shard = np.asarray(self._sharder.assign(data, self.n_shards, seed=self.seed))
            slice_ = bucket(self._sharder.unit_keys(data), self.n_slices, self.seed, "slice")
            self._validate_assignment(data, shard, slice_)
            self._generation += 1  # new file names: the old run's files stay until the commit
            self._shard, self._slice = shard.astype(np.int64), slice_.astype(np.int64)
            models, ckpt = [], []
            with self._bar(self.n_shards * self.n_slices, "SISA repartition") as bar:
                trained = self._train_shards(dict.fromkeys(range(self.n_shards), 0), data,
                                             self._shard, self._slice, files,
                                             generation=self._generation, bar=bar)
                for s in range(self.n_shards):
                    model, names = trained[s]
                    models.append(model)
                    ckpt.append(names)
            self._models, self._ckpt = models, ckpt
            self._refresh_index()
            agg_file = self._fit_aggregator(files, self._generation)
            seconds = time.perf_counter() - t0
            self._history = [*self._history, {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "event": "repartition", "n_records": len(data), "seed": self.seed,
                "seconds": seconds,
            }]
            self._timings = {**self._timings, "repartition_seconds": seconds,
                             "repartition_cpu_seconds": time.process_time() - c0}
            self._data_files = {"space": "", "shards": [""] * self.n_shards}
            self._commit(files, agg_file, shards=range(self.n_shards), space=True)
            committed = True
        except BaseException:
            if not committed:
                for name, value in old.items():  # the seed first: restoring re-indexes with it
                    setattr(self, name, value)
                self._restore(snapshot)
                self._store.remove_files(set(files) - set(self._files))
            raise
        logger.info("repartitioned %d records into %d shards in %.2fs", len(data), self.n_shards,
                    time.perf_counter() - t0)
        return self

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, workdir: str | os.PathLike[str], *, device: str = "auto",
             progress: bool | None = None, resume: bool = True,
             lock_timeout: float | None = None) -> SISA:
        """Reopen a saved run: verify every checksum, then restore data, shards and aggregator.

        Parameters
        ----------
        workdir : path
            The run directory.
        device : str
            Device of the reopened models (``"auto"``, ``"cpu"`` or ``"cuda"``).
        progress : bool or None
            Show progress bars (None: only on a terminal).
        resume : bool
            Finish what a killed process left unfinished before returning: first a
            :meth:`fit` interrupted mid-way (it continues from its last complete slice
            checkpoints, see "Durable deletion requests" in the docs), then the deletion
            requests it received but did not apply (in the order received). With ``False``
            nothing is changed: pending requests are listed in a warning (see
            :meth:`pending_requests`; :meth:`resume`, the next :meth:`forget` or ``sisakit
            resume`` finishes them), and a run whose refit was interrupted loads as it was
            before that refit (forgetting on it is refused until ``sisakit resume`` or
            ``SISA.load`` finishes the refit).
        lock_timeout : float, optional
            Seconds to wait for the run lock held by another process (default
            :attr:`lock_timeout`).

        Raises
        ------
        CheckpointError
            If the directory is missing, incomplete, tampered with, or from a newer format; if
            the run lock is not released within ``lock_timeout`` while resuming; or, with
            ``resume=False``, if the only run in it is an interrupted first fit.
        """
        check_path("workdir", workdir)
        resolve_device(device)  # the caller's mistake, before anything is blamed on the run
        check_bool("progress", progress, none=True)
        check_bool("resume", resume)
        if lock_timeout is not None:
            lock_timeout = _check_lock_timeout(lock_timeout)
        store = RunStore(workdir)
        fitted = None
        if FitJournal(store.root).exists():
            if resume:
                fitted = cls._finish_fit(store.root, device=device, progress=progress,
                                         lock_timeout=lock_timeout)
            elif not store.has_manifest():
                raise CheckpointError(
                    f"{store.root} holds a fit that was interrupted before it committed a run; "
                    f"finish it with SISA.load({str(store.root)!r}) (resume=True) or `sisakit "
                    f"resume {store.root}`"
                )
            elif _fit_committed(store, FitJournal(store.root).read()) is None:
                logger.warning(
                    "%s holds a refit (overwrite=True) that was interrupted; loading the run it "
                    "would replace. Finish the refit with SISA.load(...) or `sisakit resume %s`",
                    store.root, store.root)
        try:
            self = fitted if fitted is not None else cls._from_manifest(
                store, store.read_manifest(), device=device, progress=progress)
        except (CheckpointError, PluginError):
            raise  # PluginError: a component the run needs is not installed (it says so)
        except (SisakitError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            # A bad value in a checksummed manifest or data file: the run itself is damaged.
            raise CheckpointError(
                f"the run in {store.root} is damaged ({exc.__class__.__name__}: {exc}); "
                "restore the run directory from a backup or re-fit"
            ) from exc
        if lock_timeout is not None:
            self.lock_timeout = lock_timeout
        ledger = self._ledger
        pending = ledger.pending()
        if resume and (pending or ledger.has_pending_files()):
            done = self.resume()
            if done:
                logger.warning("finished %d deletion request(s) left pending by an interrupted "
                               "process: %s", len(done),
                               ", ".join(f"{d['request']} ({d['state']})" for d in done))
        elif pending:
            logger.warning(
                "%s has %d pending deletion request(s) (received, not applied): %s; finish them "
                "with .resume() or `sisakit resume %s`", store.root, len(pending),
                ", ".join(e["request"] for e in pending), store.root)
        if resume and self._sweep:
            self._try_sweep()
        return self

    def _try_sweep(self) -> None:
        """Delete what a killed process left behind (staged files of a forget or repartition
        that never committed, a torn manifest write), if the run lock is free right now."""
        try:
            with RunLock(self.workdir, 0):
                if FitJournal(self.workdir).exists():
                    return  # an unfinished refit's files: never swept
                manifest = self._store.read_manifest()
                if (manifest.get("generation"), manifest.get("forgotten", {}).get("salt")) != (
                        self._generation, self._salt):
                    return  # another process committed meanwhile; its next commit sweeps
                self._store.remove_unlisted(self._files)
                self._sweep = False
        except (CheckpointError, OSError) as exc:  # busy or read-only: a later commit sweeps
            logger.info("left %s's stale files for a later commit to remove (%s)", self.workdir,
                        exc)

    @classmethod
    def _finish_fit(cls, root: Path, *, device: str = "auto", progress: bool | None = None,
                    lock_timeout: float | None = None) -> SISA | None:
        """Finish the fit a killed process left in ``root`` (under the run lock).

        Returns the fitted model, or None when there was nothing to train: no interrupted fit,
        or one whose manifest swap had happened (then only its journal and leftovers are
        removed). The model's ``_resumed`` says how many slice checkpoints were reused.
        """
        root = Path(root)
        jr = FitJournal(root)
        if not jr.exists():
            return None
        timeout = cls._lock_timeout if lock_timeout is None else lock_timeout
        with RunLock(root, timeout):
            if not jr.exists():
                return None  # another process finished it meanwhile
            journal = jr.read()
            store = RunStore(root)
            manifest = _fit_committed(store, journal)
            if manifest is not None:  # killed after the manifest swap: only the clean-up was left
                store.remove_unlisted(manifest["files"])
                jr.remove()
                return None
            try:
                self = cls._from_config(journal["config"], root, device=device,
                                        progress=progress)
                if lock_timeout is not None:
                    self.lock_timeout = lock_timeout
                data, shard, slice_ = self._read_data(journal["data_files"], journal["files"])
            except (CheckpointError, PluginError):
                raise
            except (SisakitError, KeyError, TypeError, ValueError, IndexError) as exc:
                raise CheckpointError(
                    f"the interrupted fit in {root} cannot be resumed ({exc.__class__.__name__}: "
                    f"{exc}); fit the model again with overwrite=True"
                ) from exc
            self._lock_depth = 1
            try:
                self._run_fit(data, shard, slice_, journal=journal)
            finally:
                self._lock_depth = 0
        logger.warning("finished the interrupted fit of %s: %d slice checkpoint(s) reused, %d "
                       "trained", root, self._resumed["reused"], self._resumed["trained"])
        return self

    @classmethod
    def _from_config(cls, cfg: dict[str, Any], root: Path, *, device: str,
                     progress: bool | None) -> SISA:
        """An unfitted SISA of a stored config, on ``root``."""
        for kind in ("model", "sharder", "aggregator"):
            if not cfg[kind].get("registered", True):
                raise CheckpointError(
                    f"the run was fitted with an unregistered {kind} ({cfg[kind]['name']}); "
                    f"register it through the sisakit plugin hooks so runs can be reopened"
                )
        mparams = dict(cfg["model"]["params"])
        if "device" in mparams:  # the caller's device wins over the one the run was saved on
            mparams["device"] = str(resolve_device(device))
        self = cls(
            model=cfg["model"]["name"], sharder=cfg["sharder"]["name"],
            aggregator=cfg["aggregator"]["name"], n_shards=cfg["n_shards"],
            n_slices=cfg["n_slices"], epochs=cfg["epochs"], seed=cfg["seed"],
            workdir=root, model_params=mparams,
            sharder_params=cfg["sharder"]["params"],
            aggregator_params=cfg["aggregator"]["params"], device=device,
            threads_per_shard=cfg["threads_per_shard"], progress=progress,
        )
        return self

    def _read_data(self, data_files: dict[str, Any], files: dict[str, str]
                   ) -> tuple[Interactions, np.ndarray, np.ndarray]:
        """The records (canonical order), shard and slice arrays stored in a run's data files."""
        store = self._store
        space = store.load_arrays(data_files["space"], files[data_files["space"]])
        parts = [store.load_arrays(n, files[n]) for n in data_files["shards"]]
        if len(parts) != self.n_shards:
            raise CheckpointError(f"{store.root}: {len(parts)} shard data files for "
                                  f"{self.n_shards} shards; the manifest is damaged")
        records = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        shard = np.repeat(np.arange(self.n_shards), [len(p["slice"]) for p in parts])
        order = np.argsort(records["record_id"], kind="stable")  # canonical record order
        slice_ = records.pop("slice")[order]
        data = Interactions.from_state({**space, **{k: v[order] for k, v in records.items()}})
        return data, shard[order], slice_

    @classmethod
    def _from_manifest(cls, store: RunStore, manifest: dict[str, Any], *, device: str,
                       progress: bool | None) -> SISA:
        files = manifest["files"]
        self = cls._from_config(manifest["config"], store.root, device=device,
                                progress=progress)
        det = manifest.get("determinism", {})
        now = self._determinism()
        for key in ("device_type", "torch_version", "threads_per_shard", "optimizer"):
            if det.get(key) != now[key]:
                logger.warning(
                    "run was saved with %s=%r but now %s=%r: later forgets are exact only under "
                    "equal values", key, det.get(key), key, now[key])
        self._data_files = manifest["data_files"]
        self._data, self._shard, self._slice = self._read_data(self._data_files, files)
        self._ckpt = manifest["checkpoints"]
        if len(self._ckpt) != self.n_shards or any(len(c) != self.n_slices for c in self._ckpt):
            raise CheckpointError(f"{store.root}: checkpoint list does not match the config")
        for name in files:  # verify every listed file, not only the ones used below
            store.read(name, files[name])
        self._models = []
        for s in range(self.n_shards):
            model = self._model.clone()
            model.load_state_dict(store.load_tensors(self._ckpt[s][-1], files[self._ckpt[s][-1]]))
            self._models.append(model)
        agg_file = manifest.get("aggregator_file")
        if agg_file:
            self._aggregator.load_state_dict(store.load_tensors(agg_file, files[agg_file]))
        forgotten = dict(manifest["forgotten"])
        self._salt = forgotten.pop("salt")
        self._forgotten = forgotten
        self._tombstones = {str(h): int(i) for h, i in manifest["tombstones"].items()}
        self._history = manifest.get("history", [])
        self._timings = manifest.get("timings", {})
        self._generation = int(manifest["generation"])
        self._files = files
        self._sweep = store.has_unlisted(files)  # a crashed forget left staged files behind
        self._refresh_index()
        self._fitted = True
        return self

    # ------------------------------------------------------------------ forgetting
    def forget(
        self,
        users: Iterable[Any] | None = None,
        interactions: Iterable[tuple[Any, Any]] | None = None,
        items: Iterable[Any] | None = None,
        *,
        request_id: str | None = None,
    ) -> ForgetReport:
        """Exactly unlearn users, (user, item) interactions and/or items (raw ids).

        The ids of one call are applied as one batch, all or nothing: only the affected shards
        are retrained from their last clean checkpoint, the aggregator is refitted if it was
        fitted on data, and the run directory is updated atomically.

        The request is durable (see "Durable deletion requests" in the docs): it is appended to
        the run's fsync'd ledger before any work starts, and this method returns only after the
        manifest swap and the ledger's ``applied`` line. If the process dies in between,
        :meth:`load` (or ``sisakit resume``) finishes the request. Processes forgetting on the
        same run directory are serialised by a lock; each one first reloads what another
        process committed meanwhile, so no update is lost.

        Parameters
        ----------
        users, interactions, items : iterable, optional
            Raw user ids, (user, item) pairs and raw item ids to forget.
        request_id : str, optional
            An idempotency key (e.g. a ticket number; never personal data). A request id the
            ledger lists as applied is not applied again: the call returns a no-op report.
            Default: a fresh uuid4.

        Returns
        -------
        ForgetReport
            What was deleted and what it cost.

        Raises
        ------
        UnknownIdError
            If any id is unknown (nothing is deleted).
        CheckpointError
            If another process holds the run lock for longer than :attr:`lock_timeout`.
        """
        request = ForgetRequest(users=users, interactions=interactions, items=items)
        return self._forget_durably(request, request_id)

    # ------------------------------------------------------------------ durable requests
    _lock_timeout: float = 60.0
    _lock_depth: int = 0

    @property
    def lock_timeout(self) -> float:
        """Seconds a fit, forget, resume or repartition waits for another process's run lock
        before raising :class:`~sisakit.CheckpointError` (default 60)."""
        return self._lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, value: float) -> None:
        self._lock_timeout = _check_lock_timeout(value)

    @property
    def _ledger(self) -> DeletionLedger:
        # One ledger object per run object: it keeps what it parsed and reads only what was
        # appended since (by any process), so a forget's cost does not grow with the ledger.
        ledger = self.__dict__.get("_ledger_cache")
        if ledger is None or ledger.root != self.workdir:
            ledger = self.__dict__["_ledger_cache"] = DeletionLedger(self.workdir)
        return ledger

    @contextlib.contextmanager
    def _locked(self) -> Any:
        """Hold the run lock (re-entrant within this object); on taking it, reload the run if
        another process committed since this object last read or wrote it."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with RunLock(self.workdir, self.lock_timeout):
            self._lock_depth = 1
            try:
                self._refuse_interrupted_fit()
                self._sync_with_disk()
                yield
            finally:
                self._lock_depth = 0

    def _refuse_interrupted_fit(self) -> None:
        """Under the lock: refuse to change a run whose refit another process left unfinished
        (its new files would collide with ours); clean up after one that had committed."""
        jr = FitJournal(self.workdir)
        if not jr.exists():
            return
        with contextlib.suppress(CheckpointError):
            if _fit_committed(self._store, jr.read()) is not None:
                jr.remove()  # it committed; its leftovers are swept by the next commit
                self._sweep = True
                return
        raise CheckpointError(
            f"{self.workdir} holds a refit that was interrupted (a process was killed during "
            f"fit); finish it with SISA.load({str(self.workdir)!r}) or `sisakit resume "
            f"{self.workdir}` before changing the run"
        )

    def _sync_with_disk(self) -> None:
        """Reload the run's state if the manifest on disk is not the one this object holds."""
        manifest = self._store.read_manifest()
        if (manifest.get("generation"), manifest.get("forgotten", {}).get("salt")) == (
                self._generation, self._salt):
            return

        def comparable(cfg: dict[str, Any]) -> dict[str, Any]:
            model = {**cfg["model"], "params": {k: v for k, v in cfg["model"]["params"].items()
                                                if k != "device"}}
            return {**{k: v for k, v in cfg.items() if k != "seed"}, "model": model}

        if comparable(manifest.get("config", {})) != comparable(self.config):
            raise CheckpointError(
                f"the run in {self.workdir} was replaced by another process with a different "
                f"config; reopen it with SISA.load({str(self.workdir)!r})"
            )
        logger.info("%s changed on disk (generation %s -> %s): reloading it first", self.workdir,
                    self._generation, manifest.get("generation"))
        fresh = type(self).load(self.workdir, device=str(self.device), progress=self.progress,
                                resume=False)
        for name in (*self._MUTABLE, "_salt", "_timings", "_sweep", "seed", "config"):
            setattr(self, name, getattr(fresh, name))
        self._refresh_index()

    def _request_hashes(self, request: ForgetRequest) -> dict[str, list[str]]:
        return {kind: [self._digest(kind, raw) for raw in getattr(request, kind)]
                for kind in ("users", "items", "interactions")}

    def _refuse_derived(self) -> None:
        if self.derived_by is not None:
            raise ValidationError(
                f"this model was derived by {self.derived_by}; forgetting on it would restore "
                "checkpoints and silently undo that edit. Forget on the original model (reopen it "
                "with SISA.load), then apply the edit again"
            )

    def _forget_durably(self, request: ForgetRequest, request_id: str | None = None
                        ) -> ForgetReport:
        """Ledger, lock and apply one request (what :meth:`forget` and the ``sisa`` unlearner
        run)."""
        self._require_fitted()
        self._refuse_derived()
        if request.is_empty():
            raise ValidationError("empty forget request; pass users=, interactions= or items=")
        rid = new_request_id() if request_id is None else check_request_id(request_id)
        with self._locked():
            self._finish_pending()
            ledger = self._ledger
            hashes = self._request_hashes(request)
            if ledger.state(rid) == "applied" and self._same_request(rid, hashes):
                logger.info("deletion request %s was applied before; nothing to do", rid)
                counts = {k: len(getattr(request, k)) for k in ("users", "items", "interactions")}
                return ForgetReport(already_forgotten={k: v for k, v in counts.items() if v})
            # Resolve the ids before anything is written: a request refused for unknown ids
            # leaves the run directory unchanged (the resolution is reused by the forget).
            self._resolved = (request, self._data, self._resolve_forget(request))
            ledger.receive(rid, request, hashes, run=self._run_tag)
            return self._apply_logged(request, rid, resuming=False)

    @property
    def _run_tag(self) -> str:
        """Names this fit in ledger lines (the id hashes' salt changes with every fit)."""
        return salted_digest("run", self._salt)[:16]

    def _same_request(self, rid: str, hashes: dict[str, list[str]]) -> bool:
        """Whether ``rid``'s received request (in the ledger) had exactly these ids, in any
        order; True also when it was never received. A request id names one request: reusing
        it for other ids would silently drop them, so that raises instead."""
        line = self._ledger.received_line(rid)
        if line is None:
            return True
        ours = {k: sorted(set(v)) for k, v in hashes.items() if v}
        theirs = {k: sorted(set(v)) for k, v in (line.get("ids") or {}).items() if v}
        if line.get("run", self._run_tag) != self._run_tag:
            why = "a request on an earlier fit of this run directory"
        elif ours != theirs:
            why = "a request with different ids"
        else:
            return True
        raise ValidationError(
            f"request id {rid!r} was already used for {why}; a request id names one deletion "
            "request (resubmitting the same ids under it is a no-op): pass a new request_id for "
            "this request"
        )

    def _apply_logged(self, request: ForgetRequest, rid: str, *, resuming: bool) -> ForgetReport:
        """Apply a received request and append its final ledger line (call under the lock)."""
        ledger = self._ledger
        try:
            report = self._forget_request(request, request_id=rid)
        except BaseException as exc:
            if self._history and self._history[-1].get("request") == rid:
                # The manifest swap happened before the error: the request is applied.
                ledger.mark_applied(rid, self._generation)
            elif not resuming or isinstance(exc, SisakitError):
                # Not acknowledged (the caller sees the error), or it can never succeed.
                try:
                    ledger.mark_failed(rid, exc)
                except OSError as io_exc:
                    logger.error("could not record that deletion request %s failed (%s); it "
                                 "stays pending and is retried by the next load", rid, io_exc)
            raise
        ledger.mark_applied(rid, self._generation, records_removed=report.records_removed)
        return report

    def _finish_pending(self) -> list[dict[str, Any]]:
        """Apply the pending requests in the order received (call under the lock)."""
        ledger = self._ledger
        ledger.sweep()
        done: list[dict[str, Any]] = []
        for entry in ledger.pending():
            rid = entry["request"]
            committed = next((h for h in self._history if h.get("request") == rid
                              or rid in h.get("requests", ())), None)
            if committed is not None:  # crashed after the manifest swap, before the ledger line
                generation = int(committed.get("generation", self._generation))
                ledger.mark_applied(rid, generation)
                done.append({"request": rid, "state": "applied", "generation": generation,
                             "report": committed.get("report")})
                continue
            try:
                request = ledger.read_request(rid)
            except CheckpointError as exc:
                logger.error("%s", exc)
                ledger.mark_failed(rid, "RawIdsUnreadable")
                done.append({"request": rid, "state": "failed", "error": "RawIdsUnreadable"})
                continue
            try:
                report = self._apply_logged(request, rid, resuming=True)
            except SisakitError as exc:
                logger.error("pending deletion request %s cannot be applied: %s", rid, exc)
                done.append({"request": rid, "state": "failed", "error": type(exc).__name__})
                continue
            done.append({"request": rid, "state": "applied", "generation": self._generation,
                         "report": report.as_dict()})
        ledger.sweep()
        return done

    def resume(self) -> list[dict[str, Any]]:
        """Finish the deletion requests that an interrupted process received but did not apply.

        :meth:`load` does this by default; ``sisakit resume RUN`` is the command-line form.
        Requests are applied in the order received, under the run lock. A request whose
        manifest swap had happened before the interruption is only marked applied (never
        applied twice). An interrupted :meth:`fit` is finished by :meth:`load` or ``sisakit
        resume`` (which do it before the requests); on a run loaded with ``resume=False``
        whose refit was interrupted, this method raises :class:`~sisakit.CheckpointError`.

        Returns
        -------
        list of dict
            One entry per request finished: ``request`` (id), ``state`` (``"applied"`` or
            ``"failed"``), and ``generation`` and ``report`` (a :class:`ForgetReport` as a
            dict) for applied ones or ``error`` (an error class name) for failed ones.
        """
        self._require_fitted()
        self._refuse_derived()
        with self._locked():
            return self._finish_pending()

    def receive(self, users: Iterable[Any] | None = None, items: Iterable[Any] | None = None, *,
                request_id: str | None = None) -> str:
        """Durably acknowledge a deletion request without applying it yet (for schedulers such
        as :class:`sisakit.coordinator.Coordinator`).

        The ids are checked, then the request gets the ledger's ``received`` line (its raw ids in
        an fsync'd pending file), exactly as :meth:`forget` does before any work. It stays
        pending until :meth:`apply_received` applies it; if the process dies first, :meth:`load`,
        :meth:`resume` or the next :meth:`forget` applies it, so an acknowledged request is
        never lost.

        Parameters
        ----------
        users, items : iterable, optional
            Raw user ids and raw item ids to forget (interactions go through :meth:`forget`).
        request_id : str, optional
            An idempotency key (never personal data); a request id the ledger already lists is
            not received twice. Default: a fresh uuid4.

        Returns
        -------
        str
            The request id.

        Raises
        ------
        UnknownIdError
            If an id is unknown (nothing is received).
        ValidationError
            If the request is empty or the model is not fitted or was derived.
        """
        self._require_fitted()
        self._refuse_derived()
        request = ForgetRequest(users=users or (), items=items or ())
        if request.is_empty():
            raise ValidationError("empty deletion request; pass users= or items=")
        rid = new_request_id() if request_id is None else check_request_id(request_id)
        if request.users:
            self._user_index(list(request.users))
        if request.items:
            self._data.resolve(items=list(request.items))
        with self._locked():
            ledger = self._ledger
            hashes = self._request_hashes(request)
            if ledger.state(rid) in ("received", "applied") and self._same_request(rid, hashes):
                logger.info("deletion request %s was received before; not received twice", rid)
                return rid
            ledger.receive(rid, request, hashes, run=self._run_tag)
        return rid

    def apply_received(self, request_ids: Sequence[str]) -> ForgetReport:
        """Apply several received requests (see :meth:`receive`) as **one** forget.

        The union of their ids is forgotten in one batch (each shard hit is retrained once,
        from the earliest slice any of them touches), then every request gets its ledger
        ``applied`` line. Requests already applied (e.g. by :meth:`resume`) are skipped. Other
        pending requests are left pending. If the forget raises, the requests stay pending
        (they were acknowledged): :meth:`resume` retries them.

        Parameters
        ----------
        request_ids : sequence of str
            Ids returned by :meth:`receive`.

        Returns
        -------
        ForgetReport
            The merged forget's report (a no-op report when none was pending).

        Raises
        ------
        ValidationError
            If a request id is not in the run's ledger.
        """
        self._require_fitted()
        self._refuse_derived()
        if isinstance(request_ids, (str, bytes)) or not isinstance(
                request_ids, (Sequence, np.ndarray, set, frozenset)):
            raise ValidationError(
                f"request_ids must be a list of request ids returned by receive(), got "
                f"{type(request_ids).__name__} {request_ids!r:.80}; pass e.g. [rid]")
        ids = [check_request_id(r) for r in request_ids]
        ids = list(dict.fromkeys(ids))
        with self._locked():
            ledger = self._ledger
            states = ledger.states()
            missing = [r for r in ids if r not in states]
            if missing:
                raise ValidationError(
                    f"request id(s) {missing[:5]} are not in the ledger of {self.workdir}; pass "
                    "ids returned by receive() on this run"
                )
            todo = [r for r in ids if states[r] == "received"]
            if not todo:
                return ForgetReport()
            parts = [ledger.read_request(r) for r in todo]
            merged = ForgetRequest(
                users=list(dict.fromkeys(u for p in parts for u in p.users)),
                items=list(dict.fromkeys(i for p in parts for i in p.items)))
            try:
                report = self._forget_request(merged, request_id=todo[0], batch=todo)
            except BaseException:
                if self._history and self._history[-1].get("requests") == todo:
                    for rid in todo:  # the manifest swap happened: the requests are applied
                        ledger.mark_applied(rid, self._generation, batch=todo[0])
                else:
                    logger.error("deletion requests %s stay pending: the batched forget failed",
                                 todo)
                raise
            for rid in todo:
                ledger.mark_applied(rid, self._generation, batch=todo[0])
            return report

    def pending_requests(self) -> list[dict[str, Any]]:
        """Deletion requests received but not yet applied (after a crash), oldest first.

        Returns
        -------
        list of dict
            ``request`` (id), ``time`` (UTC), ``kinds`` and ``counts`` (ids per kind); never
            raw ids.
        """
        return [{k: e.get(k) for k in ("request", "time", "kinds", "counts")}
                for e in self._ledger.pending()]

    def _digest(self, kind: str, raw: Any) -> str:
        return salted_digest(raw, f"{self._salt}:{kind}")

    def _forget_request(self, request: ForgetRequest, request_id: str | None = None,
                        batch: Sequence[str] | None = None) -> ForgetReport:
        """Apply one request (no ledger, no lock: :meth:`_forget_durably` wraps this)."""
        self._require_fitted()
        if self.derived_by is not None:
            raise ValidationError(
                f"this model was derived by {self.derived_by}; forgetting on it would restore "
                "checkpoints and silently undo that edit. Forget on the original model (reopen it "
                "with SISA.load), then apply the edit again"
            )
        if request.is_empty():
            raise ValidationError("empty forget request; pass users=, interactions= or items=")
        t0, c0 = time.perf_counter(), time.process_time()
        data = self._data
        cached, self._resolved = getattr(self, "_resolved", None), None
        if cached is not None and cached[0] is request and cached[1] is data:
            req, noop, new_hashes = cached[2]  # resolved by _forget_durably just before
        else:
            req, noop, new_hashes = self._resolve_forget(request)
        newly_inactive = np.unique(req.items[data.item_active[req.items]])
        remove = req.remove
        report = ForgetReport(records_removed=int(remove.sum()),
                              already_forgotten={k: v for k, v in noop.items() if v})
        # Earliest affected slice per shard.
        if len(newly_inactive):
            earliest = dict.fromkeys(range(self.n_shards), 0)
        else:
            first = np.full(self.n_shards, self.n_slices, dtype=np.int64)
            np.minimum.at(first, self._shard[remove], self._slice[remove])
            earliest = {int(s): int(first[s]) for s in np.flatnonzero(first < self.n_slices)}
        snapshot = self._snapshot()  # before anything changes (tombstoning updates the map)
        keep = ~remove
        new_data = data.take(keep)
        space_changed = bool(len(newly_inactive) or len(req.users))
        if len(newly_inactive):
            active = data.item_active.copy()
            active[newly_inactive] = False
            new_data = new_data._evolve(item_active=active)
        if len(req.users):
            order = np.argsort(req.users, kind="stable")
            uniq, first = np.unique(req.users[order], return_index=True)
            new_data = self._tombstone_users(
                new_data, uniq, [new_hashes["users"][order[f]] for f in first])
        new_shard, new_slice = self._shard[keep], self._slice[keep]
        files = dict(self._files)
        stage_work = self._stage_work(new_shard, new_slice)
        removed = (self._shard[remove], data.user_idx[remove], data.item_idx[remove])
        committed = False
        try:
            self._generation += 1
            new_models = list(self._models)
            new_ckpt = [list(c) for c in self._ckpt]
            with self._bar(sum(self.n_slices - r for r in earliest.values()), "SISA forget") as bar:
                trained = self._train_shards(earliest, new_data, new_shard, new_slice, files,
                                             generation=self._generation, bar=bar)
                for s, r in sorted(earliest.items()):
                    model, names = trained[s]
                    new_models[s] = model
                    new_ckpt[s][r:] = names
            self._data, self._shard, self._slice = new_data, new_shard, new_slice
            self._models, self._ckpt = new_models, new_ckpt
            self._refresh_index(removed)
            agg_file = self._agg_file()
            if earliest:
                ta = time.perf_counter()
                agg_file = self._fit_aggregator(files, self._generation)
                report.aggregator_seconds = time.perf_counter() - ta
            self._remember(new_hashes)
            report.shards_retrained = sorted(earliest)
            report.earliest_slice = dict(sorted(earliest.items()))
            report.slices_retrained = sum(self.n_slices - r for r in earliest.values())
            report.parameters_retrained = sum(new_models[s].n_parameters() for s in earliest)
            redo = sum(stage_work[s, r:].sum() for s, r in earliest.items())
            total = stage_work.sum()
            report.work_fraction = float(redo / total) if total else 0.0
            report.seconds = time.perf_counter() - t0
            report.cpu_seconds = time.process_time() - c0
            self._log_request(request, report, request_id, batch)
            self._commit(files, agg_file, shards=sorted(earliest), space=space_changed)
            committed = True  # the manifest swap happened: the forget is durable
        except BaseException:
            if not committed:
                # All or nothing: restore the in-memory state and drop the staged files.
                self._restore(snapshot)
                self._store.remove_files(set(files) - set(self._files))
            raise
        report.seconds = time.perf_counter() - t0
        report.cpu_seconds = time.process_time() - c0
        logger.info("forgot %d records: retrained shards %s in %.2fs", report.records_removed,
                    report.shards_retrained, report.seconds)
        return report

    def _resolve_forget(self, request: ForgetRequest) -> tuple[Any, dict[str, int],
                                                               dict[str, list[str]]]:
        """Resolve a request's raw ids (no side effect): ``(resolved, no-op counts, salted
        hashes of what is newly forgotten)``.

        Raises
        ------
        UnknownIdError
            If an id is unknown, or a (user, item) pair was never in the training data.
        """
        data = self._data
        forgotten = {k: set(v) for k, v in self._forgotten.items()}
        noop = {"users": 0, "items": 0, "interactions": 0}
        # Users forgotten before are no longer in the id space (only their salted hash is).
        users_live = [u for u in request.users
                      if self._digest("users", u) not in forgotten["users"]]
        noop["users"] = len(request.users) - len(users_live)
        pairs_live = [p for p in request.interactions
                      if self._digest("users", p[0]) not in forgotten["users"]]
        noop["interactions"] = len(request.interactions) - len(pairs_live)
        req = data.resolve(users=users_live, interactions=pairs_live, items=request.items)
        dead = self._tombstoned()
        if dead is not None:  # a tombstone is not a user id (see _user_lookup)
            ghosts = [users_live[k] for k in np.flatnonzero(dead[req.users])]
            ghosts += [pairs_live[k] for k in np.flatnonzero(dead[req.pair_users])]
            if ghosts:
                raise UnknownIdError("user", ghosts, "nothing was deleted; remove the unknown ids "
                                     "and retry")
        new_hashes: dict[str, list[str]] = {"users": [], "items": [], "interactions": []}
        new_hashes["users"] = [self._digest("users", u) for u in users_live]
        for raw, idx in zip(request.items, req.items, strict=True):
            if not data.item_active[idx]:
                noop["items"] += 1
            else:
                new_hashes["items"].append(self._digest("items", raw))
        never_seen = []
        for k, pair in enumerate(pairs_live):
            h = self._digest("interactions", pair)
            if req.pair_found[k]:
                new_hashes["interactions"].append(h)
            elif h in forgotten["interactions"] or not data.item_active[req.pair_items[k]]:
                noop["interactions"] += 1
            else:
                never_seen.append(pair)
        if never_seen:
            raise UnknownIdError(
                "interaction", never_seen,
                "these (user, item) pairs are not in the training data and were never forgotten; "
                "nothing was deleted — remove them from the request",
            )
        return req, noop, new_hashes

    def _tombstone_users(self, data: Interactions, idx: np.ndarray, hashes: list[str]
                         ) -> Interactions:
        """Replace forgotten users' raw ids by tombstones and blank their attributes, so the run
        keeps no raw data of theirs (the id space keeps its size and order)."""
        ids = data.user_ids.copy()
        if ids.dtype.kind == "U":
            by_idx = dict(zip(idx.tolist(), hashes, strict=True))
            stones = np.array([f"\x00forgotten:{by_idx[i][:32]}" for i in idx.tolist()])
            width = max(ids.dtype.itemsize, stones.dtype.itemsize) // 4
            ids = ids.astype(f"<U{width}")
            ids[idx] = stones
        else:  # integers: ids no user has (never found by a lookup: see _user_lookup)
            ids[idx] = _unused_ints(ids, len(idx))
        attrs = {}
        for key, col in data.user_attributes.items():
            col = col.copy()
            col[idx] = _blank(col.dtype)
            attrs[key] = col
        changes: dict[str, Any] = {"user_map": IdMap(ids, "user"), "user_attributes": attrs}
        if data.user_features is not None:  # zero, not NaN: scoring a tombstone stays finite
            feats = data.user_features.copy()
            feats[idx] = 0.0
            feats.flags.writeable = False
            changes["user_features"] = feats
        self._tombstones.update(zip(hashes, idx.tolist(), strict=True))
        return data._evolve(**changes)

    _MUTABLE = ("_data", "_shard", "_slice", "_models", "_ckpt", "_generation", "_forgotten",
                "_history", "_data_files", "_files", "_aggregator", "_tombstones")

    def _snapshot(self) -> dict[str, Any]:
        snap = {name: getattr(self, name) for name in self._MUTABLE}
        snap["_forgotten"] = {k: list(v) for k, v in self._forgotten.items()}
        snap["_history"] = list(self._history)
        snap["_tombstones"] = dict(self._tombstones)
        snap["_data_files"] = {"space": self._data_files["space"],
                               "shards": list(self._data_files["shards"])}
        return snap

    def _restore(self, snap: dict[str, Any]) -> None:
        for name, value in snap.items():
            setattr(self, name, value)
        self._refresh_index()

    def _stage_work(self, shard: np.ndarray, slice_: np.ndarray) -> np.ndarray:
        """Records × epochs of every (shard, stage): stage r trains on slices 0..r."""
        per = np.bincount(shard * self.n_slices + slice_, minlength=self.n_shards * self.n_slices)
        cum = np.cumsum(per.reshape(self.n_shards, self.n_slices), axis=1)
        return cum * self.config["stage_epochs"]

    def _remember(self, new_hashes: dict[str, list[str]]) -> None:
        for kind, hashes in new_hashes.items():
            seen = set(self._forgotten[kind])
            self._forgotten[kind] = self._forgotten[kind] + [h for h in hashes if h not in seen]

    def _log_request(self, request: ForgetRequest, report: ForgetReport,
                     request_id: str | None = None, batch: Sequence[str] | None = None) -> None:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "n_users": len(request.users), "n_interactions": len(request.interactions),
            "n_items": len(request.items), "report": report.as_dict(),
        }
        if request_id is not None:  # the manifest records which ledger request it holds
            entry.update(request=request_id, generation=self._generation)
        if batch:  # the ledger requests one merged forget applied (apply_received)
            entry["requests"] = list(batch)
        self._history.append(entry)

    def _agg_file(self) -> str | None:
        return next((n for n in self._files if n.startswith("state/aggregator.")), None)

    # ------------------------------------------------------------------ scoring
    def _tombstoned(self) -> np.ndarray | None:
        """Mask of the user indices whose raw id is a tombstone (None when there is none)."""
        if not self._tombstones:
            return None
        dead = np.zeros(self._data.n_users, dtype=bool)
        dead[np.fromiter(self._tombstones.values(), dtype=np.int64)] = True
        return dead

    def _user_lookup(self, raw: Any) -> tuple[np.ndarray, np.ndarray]:
        """``user_map.lookup`` in which a tombstone is never found: it replaced a forgotten
        user's raw id in the id space, so it must not be mistaken for a user id (raw ids may
        be negative ints); the forgotten user is addressed by their original raw id."""
        idx, known = self._data.user_map.lookup(raw)
        dead = self._tombstoned()
        if dead is not None and known.any():
            known &= ~dead[idx]
        return idx, known

    def _user_index(self, users: Iterable[Any]) -> np.ndarray:
        """Indices of raw user ids; a forgotten user maps to its tombstone (no data left)."""
        if isinstance(users, (str, bytes)) or np.ndim(users) == 0:
            raise ValidationError(f"users must be a list of raw ids, e.g. [{users!r}]")
        raw = users if isinstance(users, np.ndarray) else np.asarray(list(users), dtype=object)
        if raw.ndim != 1:
            raise ValidationError(f"users must be a 1-D list of raw ids, got shape {raw.shape}")
        if len(raw) == 0:
            raise ValidationError("users is empty; pass at least one raw user id")
        idx, known = self._user_lookup(raw)
        if known.all():
            return idx
        missing = np.flatnonzero(~known)
        try:  # all ints or all strings: the lookup was exact, only tombstones can still match
            ids = _as_id_array(raw[missing], "users").tolist()
            mixed = False
        except ValidationError:  # mixed id types (or floats, bools): one id at a time below
            ids, mixed = [canonical_id(raw[pos]) for pos in missing], True
        if not mixed and not self._tombstones:  # e.g. 10**6 unknown ids: no loop at all
            raise UnknownIdError("user", ids)
        unknown = []
        for pos, one_id in zip(missing.tolist(), ids, strict=True):
            if mixed:
                one, ok = self._user_lookup(np.array([one_id]))
                if ok[0]:
                    idx[pos] = one[0]
                    continue
            h = self._digest("users", one_id)
            if h in self._tombstones:
                idx[pos] = self._tombstones[h]
            else:
                unknown.append(one_id)
        if unknown:
            raise UnknownIdError("user", unknown)
        return idx

    def scores(self, user_idx: np.ndarray) -> torch.Tensor:
        """Ranking scores ``(len(user_idx), n_items)`` (float32) for user *indices*.

        Items that no shard trained on for the user rank below all scored items, ordered by
        popularity (their key lies in ``[-2e30, -1e30]``); a user no shard trained on gets pure
        popularity; inactive items get ``-inf``.
        """
        self._require_fitted()
        u = np.asarray(user_idx)
        if u.ndim != 1 or (u.size and u.dtype.kind not in "iu"):
            raise ValidationError(
                f"scores() takes a 1-D array of integer user indices, got {u.dtype} {u.shape}; "
                "map raw ids with model.data.user_map.index(raw_ids, 'user') or use recommend()")
        u = u.astype(np.int64)
        if u.size and (u.min() < 0 or u.max() >= self.n_users):
            raise ValidationError(
                f"user indices must lie in [0, {self.n_users}), got [{u.min()}, {u.max()}]; "
                "scores() takes indices, not raw ids: map raw ids with "
                "model.data.user_map.index(raw_ids, 'user')")
        counts = self._counts[:, u]
        agg = self._aggregator
        if type(agg).aggregate is Aggregator.aggregate:
            agg_scores, scored = self._linear_aggregate(u, counts)
        else:
            if agg.uses_shard_scores:
                stack = torch.stack([m.scores(u).float().cpu() for m in self._models])
                mask = (counts > 0)[:, :, None] & self._item_seen[:, None, :]
            else:  # the aggregator scores from its own state: no shard scoring pass
                stack = torch.empty(self.n_shards, len(u), 0)
                mask = torch.empty(self.n_shards, len(u), 0, dtype=torch.bool)
            extra = {"user_idx": torch.from_numpy(u)} if agg.needs_user_idx else {}  # opt-in only
            agg_scores, scored = agg.aggregate(stack, mask, counts, **extra)
        unscored = (-1.0e30 * (2.0 - self._popularity))[None, :].expand_as(agg_scores)
        out = torch.where(scored, agg_scores.float(), unscored)
        inactive = torch.from_numpy(~self._data.item_active)
        return out.masked_fill_(inactive[None, :], -torch.inf)

    def _linear_aggregate(self, u: np.ndarray, counts: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted mean over shards, computing each shard's scores only for its own users."""
        w = self._aggregator.weights(counts).float()
        w = torch.where(counts > 0, w, torch.zeros_like(w))
        num = torch.zeros(len(u), self.n_items)
        den = torch.zeros(len(u), self.n_items)
        for s, model in enumerate(self._models):  # one iteration per shard
            rows = torch.nonzero(w[s] > 0).flatten()
            if len(rows) == 0:
                continue
            ws = w[s, rows][:, None] * self._item_seen[s].float()[None, :]
            sc = model.scores(u[rows.numpy()]).float().cpu()
            num.index_add_(0, rows, sc.mul_(ws))
            den.index_add_(0, rows, ws)
        scored = den > 0
        return num.div_(den.masked_fill_(~scored, 1.0)), scored

    def recommend(self, users: Iterable[Any], k: int = 10, *, exclude_seen: bool = True,
                  batch_size: int = 1024) -> np.ndarray:
        """Top-``k`` raw item ids for each user, best first, in the order of ``users``.

        Works for every known user, including one with no training data left and a forgotten
        user (popularity fallback). Training items rank after every unseen item unless
        ``exclude_seen=False`` (they only fill the list when fewer than ``k`` unseen items are
        left); forgotten items are never recommended.
        """
        self._require_fitted()
        k = check_int("k", k, 1)
        batch_size = check_int("batch_size", batch_size, 1)
        n_ok = int(self._data.item_active.sum())
        if k > n_ok:
            raise ValidationError(f"k={k} exceeds the {n_ok} recommendable items; lower k")
        u = self._user_index(users)
        out = np.empty((len(u), k), dtype=np.int64)
        for start in range(0, len(u), batch_size):
            ub = u[start:start + batch_size]
            sc = self.scores(ub)
            if exclude_seen:
                rows = self._seen_csr[ub]
                r_idx = np.repeat(np.arange(len(ub)), np.diff(rows.indptr))
                # Below every unseen item (scores lie above -2e30) but above forgotten items.
                sc[torch.from_numpy(r_idx), torch.from_numpy(rows.indices.astype(np.int64))] = (
                    -3.0e38)
            out[start:start + len(ub)] = torch.topk(sc, k, dim=1).indices.numpy()
        return self._data.item_ids[out]

    # ------------------------------------------------------------------ derived models
    derived_by: str | None = None

    def derive(self, models: Sequence[ShardModel], by: str) -> SISA:
        """A new, in-memory ensemble with the given shard models (e.g. after a post-training
        edit). It recommends like any SISA model but refuses :meth:`forget`; the run directory
        still holds the original."""
        self._require_fitted()
        if len(models) != self.n_shards:
            raise ValidationError(f"derive() needs {self.n_shards} shard models, got {len(models)}")
        other = copy.copy(self)
        other._models = list(models)
        other.derived_by = by
        return other

    def copy(self, workdir: str | os.PathLike[str] | None = None) -> SISA:
        """An independent copy of this run, e.g. to keep the "before" of a forget.

        Copies the run directory's files (the manifest and every file it lists) into
        ``workdir`` and loads it with :meth:`load` (checksums verified). Forgetting on either
        run never changes the other. If only the recommendations before a forget are needed,
        storing ``recommend(users, k)`` first is cheaper.

        Parameters
        ----------
        workdir : path, optional
            A new or empty directory. Without one the copy lives in a private temporary
            directory removed when the copy is garbage collected.

        Returns
        -------
        SISA
            The copy (same device and progress setting).

        Raises
        ------
        CheckpointError
            If ``workdir`` exists and is not an empty directory.
        ValidationError
            If the model is not fitted, or was made by :meth:`derive` (its edit is not in the
            run directory: copy the original instead).
        """
        self._require_fitted()
        if self.derived_by is not None:
            raise ValidationError(
                f"this model was derived by {self.derived_by} and its edit lives only in memory; "
                "copy the original run and apply the edit to the copy"
            )
        tmp = workdir is None
        if not tmp:
            check_path("workdir", workdir)
        target = Path(tempfile.mkdtemp(prefix="sisakit-run-") if tmp else workdir)
        if not tmp and target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise CheckpointError(
                f"copy target {target} exists and is not an empty directory; choose a new or "
                "empty directory (or workdir=None for a temporary one)"
            )
        existed = target.exists()
        try:
            target.mkdir(parents=True, exist_ok=True)
            for name in [*self._files, MANIFEST]:  # the manifest last, like a commit
                src, dst = self._store.path(name), check_run_name(target, name, "the copy")
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst, follow_symlinks=False)
            other = SISA.load(target, device=str(self.device), progress=self.progress)
        except BaseException as exc:
            # A failed copy leaves the target as it was (absent or empty), never half a run.
            with contextlib.suppress(OSError):
                for child in target.iterdir() if existed else ():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink()
            if not existed:
                shutil.rmtree(target, ignore_errors=True)
            if isinstance(exc, OSError):
                raise CheckpointError(
                    f"cannot copy the run into {target} ({exc.strerror or exc}); choose a "
                    "writable directory with enough free space"
                ) from exc
            raise
        other._executor = self._executor  # a runtime choice, not stored in the run
        if tmp:
            other._tmp = True
            weakref.finalize(other, shutil.rmtree, str(target), True)
        return other

    # ------------------------------------------------------------------ introspection
    def shard_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training records per (shard, user) and per (shard, item).

        Returns
        -------
        users : Tensor of float32, shape (n_shards, n_users)
        items : Tensor of int64, shape (n_shards, n_items)
            Records each shard trained on (held-out records excluded); a zero means the shard
            never trained on that user or item, so it must not influence it.
        """
        self._require_fitted()
        return self._counts.clone(), torch.from_numpy(self._item_counts.copy())

    def parameters(self) -> list[dict[str, torch.Tensor]]:
        """Complete state of every shard model (for exactness checks)."""
        self._require_fitted()
        return [m.state_dict() for m in self._models]

    @property
    def history(self) -> list[dict[str, Any]]:
        """Forget requests (and :meth:`repartition` calls, with ``"event": "repartition"``)
        applied to this run: counts and reports only, never raw ids."""
        return list(self._history)

    @property
    def timings(self) -> dict[str, float]:
        return dict(self._timings)

    def is_forgotten(self, user: Any = None, *, item: Any = None) -> bool:
        """Whether a raw user (or item) id was forgotten in this run."""
        self._require_fitted()
        if (user is None) == (item is None):
            raise ValidationError("pass exactly one of user= or item=")
        kind, raw = ("users", user) if item is None else ("items", item)
        raw = canonical_id(raw)
        if self._digest(kind, raw) in set(self._forgotten[kind]):
            return True
        query = np.asarray([raw], dtype=object)
        known = (self._user_lookup(query) if kind == "users"
                 else self._data.item_map.lookup(query))[1]
        if not known[0]:
            raise UnknownIdError(kind[:-1], [raw], f"it is not a {kind[:-1]} id of this run and "
                                 "was never forgotten here; check the id")
        return False

    def __repr__(self) -> str:
        c = self.config
        return (f"SISA(model={c['model']['name']!r}, sharder={c['sharder']['name']!r}, "
                f"aggregator={c['aggregator']['name']!r}, n_shards={self.n_shards}, "
                f"n_slices={self.n_slices}, epochs={self.epochs}, seed={self.seed}, "
                f"workdir={str(self.workdir)!r})")


def _readonly_copy(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.flags.writeable = False
    return a


def _unused_ints(ids: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct int64 values not in ``ids``: below every id (``-1, -2, ...`` for
    non-negative ids), else above every id, else the smallest free values."""
    lo, hi = int(ids.min()), int(ids.max())
    info = np.iinfo(np.int64)
    start = min(lo, 0) - 1
    if start - n + 1 >= info.min:
        return start - np.arange(n, dtype=np.int64)
    if hi + n <= info.max:
        return hi + 1 + np.arange(n, dtype=np.int64)
    taken = np.unique(ids)  # ids fill both ends of int64: take the gaps, smallest first
    out: list[np.ndarray] = []
    left = n
    for a, b in zip(taken[:-1].tolist(), taken[1:].tolist(), strict=True):
        if b - a > 1:
            k = min(left, b - a - 1)
            out.append(np.arange(a + 1, a + 1 + k, dtype=np.int64))
            left -= k
            if not left:
                break
    return np.concatenate(out)


def _check_lock_timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or (
            not 0 <= value < float("inf")):
        raise ValidationError(f"lock_timeout must be a finite number of seconds >= 0, got "
                              f"{value!r}")
    return float(value)


def _fit_committed(store: RunStore, journal: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest, if it is the one the journal's fit committed (None otherwise)."""
    if not store.has_manifest():
        return None
    try:
        manifest = store.read_manifest()
    except CheckpointError:
        return None
    ours = (journal.get("generation"), journal.get("salt"))
    return manifest if (manifest.get("generation"),
                        manifest.get("forgotten", {}).get("salt")) == ours else None


_LEFTOVER_STATE = re.compile(r"(space|records-shard-\d{4})\.g\d+\.npz|\..+\.tmp")


def _own_leftover(path: Path) -> bool:
    """Whether ``path`` (in a workdir holding no run) is what a fit killed before writing its
    journal leaves behind: the run lock, data files and the journal folder's temporary file."""
    if path.name == "run.lock":
        return path.is_file()
    if path.name == FIT_DIR and path.is_dir():
        return all(c.name.startswith(".journal.json.") and c.name.endswith(".tmp")
                   for c in path.iterdir())
    if path.name == "state" and path.is_dir():
        return all(_LEFTOVER_STATE.fullmatch(c.name) for c in path.iterdir())
    return False


def _component_config(kind: str, obj: Any) -> dict[str, Any]:
    """Name and parameters of a component; unregistered instances work but cannot be reloaded."""
    try:
        return {"name": plugins.name_of(kind, obj), "params": obj.get_params()}
    except PluginError:
        cls = type(obj)
        return {"name": f"{cls.__module__}:{cls.__qualname__}", "params": obj.get_params(),
                "registered": False}


def _blank(dtype: np.dtype) -> Any:
    """The value that erases an attribute of a forgotten user."""
    if dtype.kind == "f":
        return np.nan
    if dtype.kind in "iu":
        return 0 if dtype.kind == "u" else -1
    if dtype.kind == "b":
        return False
    return ""


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
