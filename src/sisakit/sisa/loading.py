"""Opening runs: fit inputs, ``SISA.load`` (verify, rebuild, resume), finishing an
interrupted fit, copies, and catching up with a run another process changed."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._device import resolve_device
from .._validation import check_bool, check_path
from ..data import Interactions
from ..errors import CheckpointError, PluginError, SisakitError, ValidationError
from ..ledger import RunLock
from ..store import RunStore
from .config import SISAConfig, comparable_config
from .durability import check_lock_timeout
from .operations import fit_run
from .repository import Repository, same_commit
from .runtime import Runtime, assignment_arrays, validate_assignment
from .serving import ShardIndex
from .state import DataFiles, RunState

if TYPE_CHECKING:
    from .engine import SISA

__all__ = ["catch_up", "copy_run", "finish_fit", "fit_inputs", "load"]

logger = logging.getLogger(__name__)


def check_fit_data(data: Any) -> None:
    """Refuse what ``fit`` cannot train on."""
    if not isinstance(data, Interactions):
        raise ValidationError(
            f"fit() takes sisakit.Interactions, got {type(data).__name__}; build one with "
            "Interactions.from_arrays(users, items) or a loader in sisakit.datasets")
    if len(data) == 0:
        raise ValidationError("fit() got empty data; pass at least one interaction")
    if not data.item_active.any():
        raise ValidationError("every item is inactive; nothing can be recommended")


def prepare_fit(rt: Runtime, data: Any, assignment: Any, *, replace: bool
                ) -> tuple[Interactions, np.ndarray, np.ndarray]:
    """Check ``fit``'s arguments and the workdir, then order the data and draw (or check) the
    assignment."""
    check_fit_data(data)
    arrays = None if assignment is None else assignment_arrays(assignment, len(data))
    rt.repo.check_workdir(rt.config.to_dict(), replace=replace)
    data, shard, slice_ = fit_inputs(rt, data, arrays)
    # A stored assignment may leave a shard empty (all its users were forgotten): such a shard
    # keeps its seeded initial state and contributes nothing.
    validate_assignment(rt.config, len(data), shard, slice_, allow_empty=assignment is not None)
    return data, shard, slice_


def fit_inputs(rt: Runtime, data: Interactions, arrays: list[np.ndarray] | None
               ) -> tuple[Interactions, np.ndarray, np.ndarray]:
    """``fit``'s data in record-id order and its (given or drawn) assignment."""
    order = np.argsort(data.record_id, kind="stable")
    if np.any(order != np.arange(len(order))):
        # Records train in record-id order, so a reloaded run sees the same order.
        data = data.take(order)
        if arrays is not None:
            arrays = [np.asarray(a)[order] for a in arrays]
    if arrays is None:
        return (data, *rt.draw_assignment(data))
    return data, np.asarray(arrays[0]), np.asarray(arrays[1])


def _unfitted(cls: type[SISA], config: Mapping[str, Any], root: Path, *, device: str,
              progress: bool | None) -> SISA:
    """An unfitted SISA of a stored config, on ``root``."""
    cfg = SISAConfig.from_dict(config)
    cfg.check_reloadable()
    return cls(**cfg.sisa_kwargs(device), workdir=root, progress=progress)


def _damaged(root: Path, exc: BaseException, fix: str) -> CheckpointError:
    return CheckpointError(f"the run in {root} is damaged ({exc.__class__.__name__}: {exc}); "
                           f"{fix}")


def read_state(rt: Runtime, manifest: Mapping[str, Any]) -> RunState:
    """The state a manifest describes (every listed file's checksum verified)."""
    repo, cfg, files = rt.repo, rt.config, dict(manifest["files"])
    data_files = DataFiles.from_dict(manifest["data_files"])
    data, shard, slice_ = repo.read_data(data_files, files, cfg.n_shards)
    ckpt = manifest["checkpoints"]
    if len(ckpt) != cfg.n_shards or any(len(c) != cfg.n_slices for c in ckpt):
        raise CheckpointError(f"{repo.root}: checkpoint list does not match the config")
    aggregator, agg_file = rt.aggregator, manifest.get("aggregator_file")
    loaded = data_files.names() | {c[-1] for c in ckpt} | {agg_file}  # verified as they load
    for name in files.keys() - loaded:  # verify every other listed file too, read once each
        repo.store.read(name, files[name])
    models = tuple(rt.trainer.load_model(repo.store, c[-1], files[c[-1]]) for c in ckpt)
    if agg_file:
        aggregator = rt.aggregator.clone()
        aggregator.load_state_dict(repo.store.load_tensors(agg_file, files[agg_file]))
    forgotten = dict(manifest["forgotten"])
    salt = forgotten.pop("salt")
    return RunState(
        data=data, shard=shard, slice=slice_, models=models,
        checkpoints=tuple(tuple(c) for c in ckpt), aggregator=aggregator,
        aggregator_file=agg_file, generation=int(manifest["generation"]), salt=salt,
        forgotten={k: tuple(v) for k, v in forgotten.items()},
        tombstones={str(h): int(i) for h, i in manifest["tombstones"].items()},
        history=tuple(manifest.get("history", [])), data_files=data_files, files=files,
        timings=dict(manifest.get("timings", {})))


def _from_manifest(cls: type[SISA], store: RunStore, manifest: Mapping[str, Any], *,
                   device: str, progress: bool | None) -> SISA:
    self = _unfitted(cls, manifest["config"], store.root, device=device, progress=progress)
    det, now = manifest.get("determinism", {}), self._rt.determinism()
    for key in ("device_type", "torch_version", "threads_per_shard", "optimizer"):
        if det.get(key) != now[key]:
            logger.warning(
                "run was saved with %s=%r but now %s=%r: later forgets are exact only under "
                "equal values", key, det.get(key), key, now[key])
    state = read_state(self._rt, manifest)
    self._rt.repo.needs_sweep = store.has_unlisted(state.files)  # a crash left staged files
    self._install(state, ShardIndex.build(state, self.seed))
    return self


def load(cls: type[SISA], workdir: Any, *, device: str, progress: bool | None, resume: bool,
         lock_timeout: float | None) -> SISA:
    """``SISA.load`` (see there)."""
    check_path("workdir", workdir)
    resolve_device(device)  # the caller's mistake, before anything is blamed on the run
    check_bool("progress", progress, none=True)
    check_bool("resume", resume)
    if lock_timeout is not None:
        lock_timeout = check_lock_timeout(lock_timeout)
    repo = Repository(Path(workdir))
    fitted = _interrupted_fit(cls, repo, device=device, progress=progress, resume=resume,
                              lock_timeout=lock_timeout)
    try:
        self = fitted if fitted is not None else _from_manifest(
            cls, repo.store, repo.store.read_manifest(), device=device, progress=progress)
    except (CheckpointError, PluginError):
        raise  # PluginError: a component the run needs is not installed (it says so)
    except (SisakitError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        # A bad value in a checksummed manifest or data file: the run itself is damaged.
        raise _damaged(repo.root, exc, "restore the run directory from a backup or re-fit"
                       ) from exc
    if lock_timeout is not None:
        self.lock_timeout = lock_timeout
    _resume_requests(self, resume)
    if resume and self._rt.repo.needs_sweep:
        self._durable.try_sweep()
    return self


def _interrupted_fit(cls: type[SISA], repo: Repository, *, device: str,
                     progress: bool | None, resume: bool, lock_timeout: float | None
                     ) -> SISA | None:
    if not repo.journal.exists():
        return None
    if resume:
        return finish_fit(cls, repo.root, device=device, progress=progress,
                          lock_timeout=lock_timeout)
    if not repo.store.has_manifest():
        raise CheckpointError(
            f"{repo.root} holds a fit that was interrupted before it committed a run; finish it "
            f"with SISA.load({str(repo.root)!r}) (resume=True) or `sisakit resume {repo.root}`")
    if repo.fit_committed(repo.journal.read()) is None:
        logger.warning(
            "%s holds a refit (overwrite=True) that was interrupted; loading the run it would "
            "replace. Finish the refit with SISA.load(...) or `sisakit resume %s`",
            repo.root, repo.root)
    return None


def _resume_requests(self: SISA, resume: bool) -> None:
    ledger = self._durable.ledger
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
            "with .resume() or `sisakit resume %s`", self.workdir, len(pending),
            ", ".join(e["request"] for e in pending), self.workdir)


def finish_fit(cls: type[SISA], root: Path, *, device: str = "auto",
               progress: bool | None = None, lock_timeout: float | None = None
               ) -> SISA | None:
    """``SISA.finish_fit`` (see there)."""
    repo = Repository(root)
    if not repo.journal.exists():
        return None
    timeout = 60.0 if lock_timeout is None else lock_timeout
    with RunLock(root, timeout):
        if not repo.journal.exists():
            return None  # another process finished it meanwhile
        journal = repo.journal.read()
        manifest = repo.fit_committed(journal)
        if manifest is not None:  # killed after the manifest swap: only the clean-up was left
            repo.store.remove_unlisted(manifest["files"])
            repo.journal.remove()
            return None
        try:
            self = _unfitted(cls, journal["config"], root, device=device, progress=progress)
            if lock_timeout is not None:
                self.lock_timeout = lock_timeout
            data, shard, slice_ = repo.read_data(DataFiles.from_dict(journal["data_files"]),
                                                 journal["files"], self.n_shards)
        except (CheckpointError, PluginError):
            raise
        except (SisakitError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(
                f"the interrupted fit in {root} cannot be resumed ({exc.__class__.__name__}: "
                f"{exc}); fit the model again with overwrite=True") from exc
        self._durable.depth = 1
        try:
            *_, resumed = fit_run(self._rt, data, shard, slice_, journal=journal,
                                  install=self._install)  # installed at the manifest swap
        finally:
            self._durable.depth = 0
    self.fit_resumed = resumed
    logger.warning("finished the interrupted fit of %s: %d slice checkpoint(s) reused, %d "
                   "trained", root, resumed["reused"], resumed["trained"])
    return self


def copy_run(cls: type[SISA], rt: Runtime, state: RunState, workdir: Any) -> SISA:
    """Copy a run's listed files into ``workdir`` (a temporary folder when None) and load it."""
    tmp = workdir is None
    if not tmp:
        check_path("workdir", workdir)
    target = Path(tempfile.mkdtemp(prefix="sisakit-run-") if tmp else workdir)
    if not tmp and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CheckpointError(
            f"copy target {target} exists and is not an empty directory; choose a new or "
            "empty directory (or workdir=None for a temporary one)")
    existed = target.exists()
    try:
        target.mkdir(parents=True, exist_ok=True)
        rt.repo.copy_to(target, state.files)
        other = cls.load(target, device=str(rt.device), progress=rt.progress)
    except BaseException as exc:
        _empty(target, existed)  # a failed copy leaves the target absent or empty
        if isinstance(exc, OSError):
            raise CheckpointError(
                f"cannot copy the run into {target} ({exc.strerror or exc}); choose a writable "
                "directory with enough free space") from exc
        raise
    if tmp:
        other._tmp = True
        weakref.finalize(other, shutil.rmtree, str(target), True)
    return other


def _empty(target: Path, existed: bool) -> None:
    with contextlib.suppress(OSError):
        for child in target.iterdir() if existed else ():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink()
    if not existed:
        shutil.rmtree(target, ignore_errors=True)


def catch_up(self: SISA) -> None:
    """Reload ``self``'s state if the manifest on disk is not the one it holds (another
    process committed since)."""
    state, repo = self._state, self._rt.repo
    manifest = repo.store.read_manifest()
    if same_commit(manifest, state.generation, state.salt):
        return
    if comparable_config(manifest.get("config", {})) != self._rt.config.comparable():
        raise CheckpointError(
            f"the run in {self.workdir} was replaced by another process with a different "
            f"config; reopen it with SISA.load({str(self.workdir)!r})")
    logger.info("%s changed on disk (generation %s -> %s): reloading it first", self.workdir,
                state.generation, manifest.get("generation"))
    try:  # the same run (checked above) but perhaps repartitioned with another seed
        rt = self._rt.evolve(config=self._rt.config.with_seed(int(manifest["config"]["seed"])))
        new = read_state(rt, manifest)
    except (CheckpointError, PluginError):
        raise
    except (SisakitError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise _damaged(repo.root, exc, "restore the run directory from a backup or re-fit"
                       ) from exc
    self._rt = rt
    repo.needs_sweep = repo.store.has_unlisted(new.files)
    self._install(new, ShardIndex.build(new, rt.config.seed))
