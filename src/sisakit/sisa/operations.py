"""The three changes of a run — fit, repartition, forget — each one transaction: stage a new
generation, train, rebuild the index, refit the aggregator, commit. Each returns the new state
(and index); the caller installs it, so a failure leaves the caller's old state in place."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._clock import utc_now
from ..requests import ForgetReport, ForgetRequest
from ..store import FORMAT_VERSION
from .config import SISAConfig
from .forgetting import ForgetPlan, plan_forget, resolve
from .layout import checkpoint_names
from .runtime import Runtime, validate_assignment
from .serving import ShardIndex, bind_models
from .state import DataFiles, RunState
from .training import fit_aggregator, progress_bar, resume_points
from .transaction import Transaction
from .view import stage_work

__all__ = ["apply_request", "fit_run", "forget_run", "repartition_run"]

logger = logging.getLogger(__name__)



def _finish(rt: Runtime, config: SISAConfig, state: RunState, tx: Transaction,
            index: ShardIndex | None = None, removed: Any = None, refit: bool = True
            ) -> tuple[RunState, ShardIndex, float]:
    """Rebuild the index of a trained state and refit its aggregator (the shared middle of
    every change); returns the state, its index and the aggregator's seconds."""
    new_index = ShardIndex.build(state, config.seed, previous=index, removed=removed)
    bind_models(state)
    if not refit:
        return state, new_index, 0.0
    t0 = time.perf_counter()
    agg, agg_file = fit_aggregator(rt.aggregator, rt.view(state, new_index, config), config,
                                   rt.repo.store, tx.files, state.generation)
    return state.evolve(aggregator=agg, aggregator_file=agg_file), new_index, \
        time.perf_counter() - t0


Install = Callable[[RunState, ShardIndex], None]


def fit_run(rt: Runtime, data: Any, shard: np.ndarray, slice_: np.ndarray,
            journal: Mapping[str, Any] | None = None, install: Install | None = None
            ) -> tuple[RunState, ShardIndex, dict]:
    """Train and commit a new run (under the run lock), or resume an interrupted one.

    The new run's files carry a generation no file in the workdir uses yet, so an existing run
    (``overwrite=True``) stays intact until the manifest swap; its files are removed after it.
    Before training, the data files and the fit journal are written, and every checkpoint is
    recorded there once complete, so a killed fit resumes (``journal``: the interrupted fit's
    journal) from its last complete checkpoints. Returns ``(state, index, resumed)``.
    """
    repo, cfg, S, R = rt.repo, rt.config, rt.config.n_shards, rt.config.n_slices
    t0, c0 = time.perf_counter(), time.process_time()
    g = repo.next_generation() if journal is None else int(journal["generation"])
    salt = secrets.token_hex(16) if journal is None else str(journal["salt"])
    ckpt = checkpoint_names(S, R, g)
    state = RunState(data=data, shard=shard, slice=slice_, models=(),
                     checkpoints=tuple(map(tuple, ckpt)), aggregator=rt.aggregator,
                     generation=g, salt=salt)
    # An error (not a crash) leaves nothing resumable behind: drop the journal and the files.
    with Transaction(repo, cleanup=journal is None,
                     on_abort=repo.journal.remove if journal is None else None) as tx:
        tx.planned |= {n for names in ckpt for n in names}
        starts = _start_fit(rt, state, tx, journal)
        state = state.evolve(data_files=starts.pop("data_files"))
        resumed = {"generation": g, "reused": sum(starts.values()),
                   "trained": S * R - sum(starts.values())}
        todo = {s: r for s, r in starts.items() if r < R}
        with progress_bar(rt.progress, S * R, "SISA fit") as bar:
            bar.update(sum(starts.values()))
            trained = rt.trainer.train(
                cfg, rt.aggregator, todo, data, shard, slice_, tx.files, generation=g,
                resume=resume_points(ckpt, tx.files, todo), bar=bar,
                journal=str(repo.journal.dir)) if todo else {}
        models = tuple(trained[s][0] if s in trained else
                       rt.trainer.load_model(repo.store, ckpt[s][-1], tx.files[ckpt[s][-1]])
                       for s in range(S))
        state, index, _ = _finish(rt, cfg, state.evolve(models=models), tx)
        seconds = time.perf_counter() - t0
        state = state.evolve(timings={"fit_seconds": seconds,
                                      "fit_cpu_seconds": time.process_time() - c0})
        repo.needs_sweep = True  # after the swap: delete the replaced run's files and leftovers
        state = tx.commit(state, cfg, rt.determinism(), on_commit=_installer(install, index))
    repo.journal.remove()
    logger.info("fitted %d shards x %d slices in %.2fs", S, R, seconds)
    return state, index, resumed


def _start_fit(rt: Runtime, state: RunState, tx: Transaction,
               journal: Mapping[str, Any] | None) -> dict[Any, Any]:
    """Write the data files and the journal of a new fit, or read back an interrupted one's;
    returns the first stage to train of every shard (and ``"data_files"``)."""
    repo, S = rt.repo, rt.config.n_shards
    if journal is None:
        data_files = repo.write_data(state, tx.files, range(S), space=True)
        repo.journal.start({"format_version": FORMAT_VERSION, "config": rt.config.to_dict(),
                            "seed": rt.config.seed, "generation": state.generation,
                            "salt": state.salt, "data_files": data_files.to_dict(),
                            "files": dict(tx.files), "started": utc_now()})
        return {**dict.fromkeys(range(S), 0), "data_files": data_files}
    tx.files.update(journal["files"])
    done = repo.journal.completed()
    starts: dict[Any, Any] = {s: repo.journal.verified(list(names), done)
                              for s, names in enumerate(state.checkpoints)}
    for s, names in enumerate(state.checkpoints):
        tx.files.update({n: done[n] for n in names[:starts[s]]})
    logger.info("resuming the interrupted fit of %s: %d of %d slice checkpoints are complete",
                repo.root, sum(starts.values()), S * rt.config.n_slices)
    starts["data_files"] = DataFiles.from_dict(journal["data_files"])
    return starts


def repartition_run(rt: Runtime, state: RunState, config: SISAConfig,
                    install: Install | None = None) -> tuple[RunState, ShardIndex]:
    """Reassign the remaining records with ``config`` (e.g. a new seed) and retrain every
    shard from scratch; the forget ledger, tombstones and history carry over."""
    t0, c0 = time.perf_counter(), time.process_time()
    data, S = state.data, config.n_shards
    shard, slice_ = rt.draw_assignment(data, config)
    validate_assignment(config, len(data), shard, slice_)
    shard, slice_ = shard.astype(np.int64), slice_.astype(np.int64)
    g = state.generation + 1  # new file names: the old run's files stay until the commit
    try:
        with Transaction(rt.repo, state) as tx:
            with progress_bar(rt.progress, S * config.n_slices, "SISA repartition") as bar:
                trained = rt.trainer.train(config, rt.aggregator, dict.fromkeys(range(S), 0),
                                           data, shard, slice_, tx.files, generation=g,
                                           keep=state.files, bar=bar)
            new = state.evolve(shard=shard, slice=slice_, generation=g,
                               models=tuple(trained[s][0] for s in range(S)),
                               checkpoints=tuple(tuple(trained[s][1]) for s in range(S)))
            new, index, _ = _finish(rt, config, new, tx)
            seconds = time.perf_counter() - t0
            new = new.evolve(
                history=(*state.history, {"time": utc_now(), "event": "repartition",
                                          "n_records": len(data), "seed": config.seed,
                                          "seconds": seconds}),
                timings={**state.timings, "repartition_seconds": seconds,
                         "repartition_cpu_seconds": time.process_time() - c0})
            new = tx.commit(new, config, rt.determinism(), shards=range(S), space=True,
                            on_commit=_installer(install, index))
    except BaseException:
        bind_models(state)
        raise
    logger.info("repartitioned %d records into %d shards in %.2fs", len(data), S,
                time.perf_counter() - t0)
    return new, index


def forget_run(rt: Runtime, state: RunState, index: ShardIndex, plan: ForgetPlan,
               request: ForgetRequest, request_id: str | None = None,
               batch: Sequence[str] | None = None, install: Install | None = None
               ) -> tuple[RunState, ShardIndex, ForgetReport]:
    """Apply a forget plan: retrain each touched shard from its earliest affected slice,
    refit the aggregator, commit. All or nothing."""
    t0, c0 = time.perf_counter(), time.process_time()
    cfg, earliest = rt.config, plan.earliest
    report = ForgetReport(records_removed=plan.records_removed, already_forgotten={
        k: v for k, v in plan.resolution.noop.items() if v})
    g = state.generation + 1
    try:
        with Transaction(rt.repo, state) as tx:
            with progress_bar(rt.progress, sum(cfg.n_slices - r for r in earliest.values()),
                              "SISA forget") as bar:
                trained = rt.trainer.train(
                    cfg, rt.aggregator, earliest, plan.data, plan.shard, plan.slice, tx.files,
                    generation=g, resume=resume_points(state.checkpoints, state.files, earliest),
                    keep=state.files, bar=bar)
            models, ckpt = list(state.models), [list(c) for c in state.checkpoints]
            for s, r in sorted(earliest.items()):
                models[s], ckpt[s][r:] = trained[s]
            new = state.evolve(data=plan.data, shard=plan.shard, slice=plan.slice,
                               models=tuple(models), checkpoints=tuple(map(tuple, ckpt)),
                               generation=g, tombstones=plan.tombstones)
            new, new_index, report.aggregator_seconds = _finish(
                rt, cfg, new, tx, index, plan.removed, refit=bool(earliest))
            _fill_report(report, cfg, new, plan, t0, c0)
            new = new.evolve(forgotten=new.remembering(plan.resolution.hashes), history=(
                *state.history, history_entry(request, report, request_id, g, batch)))
            new = tx.commit(new, cfg, rt.determinism(), shards=sorted(earliest),
                            space=plan.space_changed, on_commit=_installer(install, new_index))
    except BaseException:
        bind_models(state)  # shards it did not retrain were rebound to the new data
        raise
    report.seconds = time.perf_counter() - t0
    report.cpu_seconds = time.process_time() - c0
    logger.info("forgot %d records: retrained shards %s in %.2fs", report.records_removed,
                report.shards_retrained, report.seconds)
    return new, new_index, report


def apply_request(rt: Runtime, state: RunState, index: ShardIndex, request: ForgetRequest,
                  request_id: str | None, batch: Sequence[str] | None, resolution: Any = None,
                  install: Install | None = None
                  ) -> tuple[RunState, ShardIndex, ForgetReport]:
    """Plan and apply one request (``resolution``: its resolution against ``state``, if the
    caller already has it)."""
    if resolution is None or resolution.request is not request or \
            resolution.data is not state.data:  # resolved against an older state
        resolution = resolve(state, request, state.digest)
    plan = plan_forget(state, resolution, rt.config.n_slices)
    return forget_run(rt, state, index, plan, request, request_id, batch, install)


def _installer(install: Install | None, index: ShardIndex) -> Callable[[RunState], None] | None:
    """The transaction's on-commit hook: hand the committed state and its index to ``install``."""
    return None if install is None else (lambda committed: install(committed, index))


def _fill_report(report: ForgetReport, cfg: SISAConfig, new: RunState, plan: ForgetPlan,
                 t0: float, c0: float) -> None:
    earliest = plan.earliest
    work = stage_work(plan.shard, plan.slice, cfg.n_shards, cfg.n_slices, cfg.stage_epochs)
    report.shards_retrained = sorted(earliest)
    report.earliest_slice = dict(sorted(earliest.items()))
    report.slices_retrained = sum(cfg.n_slices - r for r in earliest.values())
    report.parameters_retrained = sum(new.models[s].n_parameters() for s in earliest)
    redo, total = sum(work[s, r:].sum() for s, r in earliest.items()), work.sum()
    report.work_fraction = float(redo / total) if total else 0.0
    report.seconds = time.perf_counter() - t0
    report.cpu_seconds = time.process_time() - c0


def history_entry(request: ForgetRequest, report: ForgetReport, request_id: str | None,
                  generation: int, batch: Sequence[str] | None) -> dict[str, Any]:
    """The run history's record of one forget (counts and the report, never raw ids)."""
    entry: dict[str, Any] = {
        "time": utc_now(), "n_users": len(request.users),
        "n_interactions": len(request.interactions), "n_items": len(request.items),
        "report": report.as_dict(),
    }
    if request_id is not None:  # the manifest records which ledger request it holds
        entry.update(request=request_id, generation=generation)
    if batch:  # the ledger requests one merged forget applied (apply_received)
        entry["requests"] = list(batch)
    return entry
