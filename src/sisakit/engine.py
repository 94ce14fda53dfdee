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

import copy
import json
import logging
import os
import platform
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
from ._hashing import bucket, salted_digest
from ._rng import derive_seed
from ._version import __version__
from .aggregators.base import Aggregator
from .data import IdMap, Interactions, canonical_id
from .errors import CheckpointError, PluginError, SisakitError, UnknownIdError, ValidationError
from .models.base import ShardModel
from .sharders.base import Sharder
from .store import FORMAT_VERSION, RunStore
from .unlearners.base import ForgetReport, ForgetRequest

__all__ = ["SISA"]

logger = logging.getLogger(__name__)

def stage_epochs(epochs: int, n_slices: int) -> int:
    """Epochs per slice stage: ``2·epochs/(R+1)``, so a shard sees ``epochs`` passes in total."""
    return max(1, round(2 * epochs / (n_slices + 1)))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValidationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


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
        Allow :meth:`fit` to replace an existing run in ``workdir``.
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
    ) -> None:
        self.n_shards = _check_int("n_shards", n_shards, 1)
        self.n_slices = _check_int("n_slices", n_slices, 1)
        self.epochs = _check_int("epochs", epochs, 1)
        self.seed = _check_int("seed", seed, 0)
        self.threads_per_shard = _check_int("threads_per_shard", threads_per_shard, 1)
        self.device = resolve_device(device)
        self.progress = progress
        self.overwrite = overwrite
        mparams = dict(model_params or {})
        if isinstance(model, str) and "device" in plugins.get("model", model)._param_names():
            mparams.setdefault("device", str(self.device))
        self._model = plugins.build("model", model, **mparams)
        self._sharder = plugins.build("sharder", sharder, **(sharder_params or {}))
        self._aggregator = plugins.build("aggregator", aggregator, **(aggregator_params or {}))
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
        self._clear_workdir()  # only now that the input is known to be valid
        self._fitted = False
        t0, c0 = time.perf_counter(), time.process_time()
        self._data = data
        self._shard = shard.astype(np.int64)
        self._slice = slice_.astype(np.int64)
        self._salt = secrets.token_hex(16)
        self._forgotten: dict[str, list[str]] = {"users": [], "items": [], "interactions": []}
        self._tombstones: dict[str, int] = {}
        self._history: list[dict[str, Any]] = []
        self._generation = 0
        files: dict[str, str] = {}
        self._models = []
        self._ckpt: list[list[str]] = []
        with self._bar(self.n_shards * self.n_slices, "SISA fit") as bar:
            for s in range(self.n_shards):
                model, names = self._train_shard(s, 0, None, data, self._shard, self._slice,
                                                 files, generation=0, bar=bar)
                self._models.append(model)
                self._ckpt.append(names)
        self._refresh_index()
        agg_file = self._fit_aggregator(files, generation=0)
        fit_seconds = time.perf_counter() - t0
        self._timings = {"fit_seconds": fit_seconds,
                         "fit_cpu_seconds": time.process_time() - c0}
        self._data_files = {"space": "", "shards": [""] * self.n_shards}
        self._commit(files, agg_file, shards=range(self.n_shards), space=True)
        self._fitted = True
        logger.info("fitted %d shards x %d slices in %.2fs", self.n_shards, self.n_slices,
                    fit_seconds)
        return self

    def _check_workdir(self) -> None:
        """Refuse a workdir that holds another run (unless ``overwrite``) or foreign files."""
        root = self.workdir
        if self._store.has_manifest():
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
        elif root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise CheckpointError(
                f"workdir {root} exists and is not an empty directory or a sisakit run; choose an "
                "empty or new directory"
            )

    def _clear_workdir(self) -> None:
        root = self.workdir
        if self._store.has_manifest():
            (root / "manifest.json").unlink()
            shutil.rmtree(root / "checkpoints", ignore_errors=True)
            shutil.rmtree(root / "state", ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        self.__dict__.pop("_files", None)  # a new run: nothing of the old one is listed
        self._sweep = True

    def _validate_assignment(self, data: Interactions, shard: np.ndarray, slice_: np.ndarray,
                             *, allow_empty: bool = False) -> None:
        for name, arr, hi in (("shard", shard, self.n_shards), ("slice", slice_, self.n_slices)):
            if arr.shape != (len(data),) or arr.dtype.kind not in "iu":
                raise ValidationError(
                    f"the {name} assignment must be an integer array with one entry per record "
                    f"({len(data)}), got {arr.dtype} {arr.shape}"
                )
            if len(arr) and (arr.min() < 0 or arr.max() >= hi):
                raise ValidationError(f"{name} ids must lie in [0, {hi}), got [{arr.min()}, "
                                      f"{arr.max()}]")
        sizes = np.bincount(shard, minlength=self.n_shards)
        if (sizes == 0).any() and not allow_empty:
            raise ValidationError(
                f"shard(s) {np.flatnonzero(sizes == 0).tolist()} received no records; use fewer "
                f"shards (n_shards={self.n_shards}) or a balanced sharder"
            )

    def _stage_seeds(self, s: int, r: int) -> list[int]:
        return [derive_seed(self.seed, s, r, e) for e in range(self.config["stage_epochs"])]

    def _train_shard(
        self,
        s: int,
        start: int,
        state: dict[str, torch.Tensor] | None,
        data: Interactions,
        shard: np.ndarray,
        slice_: np.ndarray,
        files: dict[str, str],
        *,
        generation: int,
        bar: tqdm | None = None,
    ) -> tuple[ShardModel, list[str]]:
        """Train shard ``s`` from stage ``start`` (from ``state``, the checkpoint of stage
        ``start - 1``), saving a checkpoint after each stage."""
        model = self._model.clone()
        names: list[str] = []
        held = self._aggregator.holdout_mask(data, seed=self.seed)
        rows = np.flatnonzero(shard == s if held is None else (shard == s) & ~held)
        rows_slice = slice_[rows]
        with torch_threads(self.threads_per_shard), deterministic(self.device):
            if state is None:
                model.setup(data, seed=derive_seed(self.seed, s))
            else:
                model.load_state_dict(state)
            for r in range(start, self.n_slices):
                stage = data.take(rows[rows_slice <= r])
                model.partial_fit(stage, epoch_seeds=self._stage_seeds(s, r))
                name = f"checkpoints/shard-{s:04d}/slice-{r:04d}.g{generation}.pt"
                files[name] = self._store.save_tensors(name, model.state_dict())
                names.append(name)
                if bar is not None:
                    bar.update(1)
        return model, names

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
        new_seed = self.seed if seed is None else _check_int("seed", seed, 0)
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
                for s in range(self.n_shards):
                    model, names = self._train_shard(s, 0, None, data, self._shard, self._slice,
                                                     files, generation=self._generation, bar=bar)
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
             progress: bool | None = None) -> SISA:
        """Reopen a saved run: verify every checksum, then restore data, shards and aggregator.

        Raises
        ------
        CheckpointError
            If the directory is missing, incomplete, tampered with, or from a newer format.
        """
        store = RunStore(workdir)
        manifest = store.read_manifest()
        try:
            return cls._from_manifest(store, manifest, device=device, progress=progress)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            if isinstance(exc, SisakitError):
                raise
            raise CheckpointError(
                f"{store.root}/manifest.json is damaged ({exc.__class__.__name__}: {exc}); "
                "restore the run directory from a backup or re-fit"
            ) from exc

    @classmethod
    def _from_manifest(cls, store: RunStore, manifest: dict[str, Any], *, device: str,
                       progress: bool | None) -> SISA:
        cfg = manifest["config"]
        files = manifest["files"]
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
            workdir=store.root, model_params=mparams,
            sharder_params=cfg["sharder"]["params"],
            aggregator_params=cfg["aggregator"]["params"], device=device,
            threads_per_shard=cfg["threads_per_shard"], progress=progress,
        )
        det = manifest.get("determinism", {})
        now = self._determinism()
        for key in ("device_type", "torch_version", "threads_per_shard", "optimizer"):
            if det.get(key) != now[key]:
                logger.warning(
                    "run was saved with %s=%r but now %s=%r: later forgets are exact only under "
                    "equal values", key, det.get(key), key, now[key])
        self._data_files = manifest["data_files"]
        space = store.load_arrays(self._data_files["space"], files[self._data_files["space"]])
        parts = [store.load_arrays(n, files[n]) for n in self._data_files["shards"]]
        if len(parts) != self.n_shards:
            raise CheckpointError(f"{store.root}: {len(parts)} shard data files for "
                                  f"{self.n_shards} shards; the manifest is damaged")
        records = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        shard = np.repeat(np.arange(self.n_shards), [len(p["slice"]) for p in parts])
        order = np.argsort(records["record_id"], kind="stable")  # canonical record order
        self._shard = shard[order]
        self._slice = records.pop("slice")[order]
        self._data = Interactions.from_state(
            {**space, **{k: v[order] for k, v in records.items()}})
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
    ) -> ForgetReport:
        """Exactly unlearn users, (user, item) interactions and/or items (raw ids).

        The ids of one call are applied as one batch, all or nothing: only the affected shards
        are retrained from their last clean checkpoint, the aggregator is refitted if it was
        fitted on data, and the run directory is updated atomically.

        Raises
        ------
        UnknownIdError
            If any id is unknown (nothing is deleted).
        """
        from .unlearners.sisa import SisaUnlearner

        request = ForgetRequest(users=users, interactions=interactions, items=items)
        return SisaUnlearner().unlearn(self, request).report

    def _digest(self, kind: str, raw: Any) -> str:
        return salted_digest(raw, f"{self._salt}:{kind}")

    def _forget_request(self, request: ForgetRequest) -> ForgetReport:
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
        snapshot = self._snapshot()
        committed = False
        try:
            self._generation += 1
            new_models = list(self._models)
            new_ckpt = [list(c) for c in self._ckpt]
            with self._bar(sum(self.n_slices - r for r in earliest.values()), "SISA forget") as bar:
                for s, r in sorted(earliest.items()):
                    state = None
                    if r > 0:
                        prev = self._ckpt[s][r - 1]
                        state = self._store.load_tensors(prev, self._files[prev])
                    model, names = self._train_shard(s, r, state, new_data, new_shard, new_slice,
                                                     files, generation=self._generation, bar=bar)
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
            self._log_request(request, report)
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
        else:  # integers: fresh negative ids below every id in use
            ids[idx] = min(int(ids.min()), 0) - 1 - np.arange(len(idx))
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

    def _log_request(self, request: ForgetRequest, report: ForgetReport) -> None:
        self._history.append({
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "n_users": len(request.users), "n_interactions": len(request.interactions),
            "n_items": len(request.items), "report": report.as_dict(),
        })

    def _agg_file(self) -> str | None:
        return next((n for n in self._files if n.startswith("state/aggregator.")), None)

    # ------------------------------------------------------------------ scoring
    def _user_index(self, users: Iterable[Any]) -> np.ndarray:
        """Indices of raw user ids; a forgotten user maps to its tombstone (no data left)."""
        if isinstance(users, (str, bytes)) or np.ndim(users) == 0:
            raise ValidationError(f"users must be a list of raw ids, e.g. [{users!r}]")
        raw = users if isinstance(users, np.ndarray) else np.asarray(list(users), dtype=object)
        if raw.ndim != 1:
            raise ValidationError(f"users must be a 1-D list of raw ids, got shape {raw.shape}")
        if len(raw) == 0:
            raise ValidationError("users is empty; pass at least one raw user id")
        idx, known = self._data.user_map.lookup(raw)
        if known.all():
            return idx
        unknown = []
        for pos in np.flatnonzero(~known):  # only ids not in the map: rare, checked one by one
            one, ok = self._data.user_map.lookup(np.array([canonical_id(raw[pos])]))
            h = self._digest("users", canonical_id(raw[pos]))
            if ok[0]:  # a list mixing ids of two types is looked up one id at a time
                idx[pos] = one[0]
            elif h in self._tombstones:
                idx[pos] = self._tombstones[h]
            else:
                unknown.append(raw[pos])
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
        u = np.asarray(user_idx, dtype=np.int64)
        counts = self._counts[:, u]
        agg = self._aggregator
        if type(agg).aggregate is Aggregator.aggregate:
            agg_scores, scored = self._linear_aggregate(u, counts)
        else:
            stack = torch.stack([m.scores(u).float().cpu() for m in self._models])
            mask = (counts > 0)[:, :, None] & self._item_seen[:, None, :]
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
        k = _check_int("k", k, 1)
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
        target = Path(tempfile.mkdtemp(prefix="sisakit-run-") if tmp else workdir)
        if not tmp and target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise CheckpointError(
                f"copy target {target} exists and is not an empty directory; choose a new or "
                "empty directory (or workdir=None for a temporary one)"
            )
        try:
            for name in [*self._files, "manifest.json"]:  # the manifest last, like a commit
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.workdir / name, target / name)
            other = SISA.load(target, device=str(self.device), progress=self.progress)
        except BaseException:
            if tmp:
                shutil.rmtree(target, ignore_errors=True)
            raise
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
        return self._digest(kind, canonical_id(raw)) in set(self._forgotten[kind])

    def __repr__(self) -> str:
        c = self.config
        return (f"SISA(model={c['model']['name']!r}, sharder={c['sharder']['name']!r}, "
                f"aggregator={c['aggregator']['name']!r}, n_shards={self.n_shards}, "
                f"n_slices={self.n_slices}, epochs={self.epochs}, seed={self.seed}, "
                f"workdir={str(self.workdir)!r})")


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
