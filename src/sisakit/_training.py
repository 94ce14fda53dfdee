"""The unit of work every executor runs: train one shard from one slice stage.

:func:`train_shard` is a module-level function of plain, picklable arguments, so it runs the
same in this process, in a joblib worker or in a Ray task. It pins the torch thread count
(``threads_per_shard``) itself, so every executor produces the same bits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._device import deterministic, resolve_device, torch_threads, tune_allocator
from ._fitjournal import record_checkpoint
from .data import RECORD_COLUMNS
from .store import RunStore

__all__ = ["RECORD_COLUMNS", "ShardContext", "ShardJob", "ShardResult", "checkpoint_name",
           "shard_records", "train_shard"]


def checkpoint_name(shard: int, stage: int, generation: int) -> str:
    """Run-relative file name of the checkpoint of ``shard`` after slice stage ``stage``."""
    return f"checkpoints/shard-{shard:04d}/slice-{stage:04d}.g{generation}.pt"


def shard_records(data: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The per-record columns of ``data`` at ``rows``: what a job ships instead of the data set.

    The id space (id maps, ``item_active``, attributes, user features) is left out: it travels
    once in :attr:`ShardContext.data`.
    """
    return {name: np.asarray(getattr(data, name))[rows] for name in RECORD_COLUMNS
            if getattr(data, name) is not None}


@dataclass(frozen=True)
class ShardContext:
    """What every shard job of one fit/forget/repartition shares.

    Attributes
    ----------
    model : ShardModel
        Unfitted template; each job trains a clone.
    data : Interactions
        The run's id space (initialises the model). The engine ships it without records
        (``data.take([])``): each job carries its own shard's records (:attr:`ShardJob.records`),
        so a worker receives only what it trains on, not the whole data set once per job.
    root : str
        Run directory; workers save checkpoints there through :class:`~sisakit.store.RunStore`.
    threads : int
        Torch intra-op threads while a shard trains (``threads_per_shard``).
    device : str
        Torch device of the run.
    journal : str or None
        Fit-journal folder: each checkpoint is recorded there (fsync'd) once written, so an
        interrupted fit resumes from it (see ``sisakit._fitjournal``). None outside a fit.
    """

    model: Any
    data: Any
    root: str
    threads: int
    device: str
    journal: str | None = None


@dataclass(frozen=True)
class ShardJob:
    """Train shard ``shard`` for stages ``start..n_slices-1``.

    Attributes
    ----------
    shard, start, n_slices, generation : int
        Shard, first stage to train, number of slices, and the generation tag of the new
        checkpoint file names.
    rows : ndarray of int64
        Indices into the run's data of the records this shard trains on (ascending).
    rows_slice : ndarray of int64
        Slice of each of those records (stage ``r`` trains on slices ``0..r``).
    init_seed : int
        Seed of the model initialisation (used when ``start == 0``).
    stage_seeds : tuple of tuple of int
        Epoch seeds of stages ``start, start+1, ...``.
    resume : (str, str) or None
        Name and sha256 of the checkpoint of stage ``start - 1`` (None when ``start == 0``).
    records : dict of str to ndarray, or None
        The per-record columns of the shard's records (:func:`shard_records`). When given, the
        job trains on them in the id space of ``ctx.data``, which then needs no records; when
        None, the job selects ``rows`` from ``ctx.data``. Both give the same records in the same
        order, so the same bits.
    """

    shard: int
    start: int
    n_slices: int
    generation: int
    rows: np.ndarray = field(repr=False)
    rows_slice: np.ndarray = field(repr=False)
    init_seed: int = 0
    stage_seeds: tuple[tuple[int, ...], ...] = ()
    resume: tuple[str, str] | None = None
    records: Any = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"shard {self.shard} (stages {self.start}..{self.n_slices - 1})"


@dataclass
class ShardResult:
    """What a job returns: the final model state and the checkpoints it wrote.

    ``seconds`` is the job's wall time in the worker, ``save_seconds`` the part of it spent
    writing checkpoints, ``cpu_seconds`` the CPU time of the worker process meanwhile (wall time
    well above it means the job waited for a core), and ``threads`` the torch intra-op thread
    count the shard trained with (as seen in the worker; benchmarks check it against
    ``threads_per_shard``).
    """

    shard: int
    state: dict[str, torch.Tensor]
    names: list[str]
    digests: dict[str, str]
    seconds: float
    save_seconds: float = 0.0
    threads: int = 0
    cpu_seconds: float = 0.0


def train_shard(job: ShardJob, ctx: ShardContext) -> ShardResult:
    """Train ``job.shard`` from stage ``job.start``, saving a checkpoint after every stage.

    Parameters
    ----------
    job : ShardJob
        The shard, its rows and seeds.
    ctx : ShardContext
        Template model, data, run directory, threads and device.

    Returns
    -------
    ShardResult
        Final state (CPU tensors), checkpoint names and their sha256.
    """
    tune_allocator()  # every executor's process: same allocator, no page-fault churn
    t0, c0 = time.perf_counter(), time.process_time()
    store = RunStore(ctx.root)
    model = ctx.model.clone()
    names: list[str] = []
    digests: dict[str, str] = {}
    save_seconds = 0.0
    # The shard's own records in the run's id space (no re-validation: they came from it).
    own = None if job.records is None else ctx.data.evolve(**job.records)
    try:
        with torch_threads(ctx.threads), deterministic(resolve_device(ctx.device)):
            if job.resume is None:
                model.setup(ctx.data, seed=job.init_seed)
            else:
                model.load_state_dict(store.load_tensors(*job.resume))
            for r, seeds in zip(range(job.start, job.n_slices), job.stage_seeds, strict=True):
                if own is not None:
                    stage = own.take(job.rows_slice <= r)
                else:
                    stage = ctx.data.take(job.rows[job.rows_slice <= r])
                model.partial_fit(stage, epoch_seeds=list(seeds))
                name = checkpoint_name(job.shard, r, job.generation)
                t_save = time.perf_counter()
                digests[name] = store.save_tensors(name, model.state_dict())
                save_seconds += time.perf_counter() - t_save
                if ctx.journal is not None:
                    record_checkpoint(ctx.journal, name, digests[name])
                names.append(name)
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            threads = torch.get_num_threads()
    except Exception as exc:
        if hasattr(exc, "add_note"):  # Python >= 3.11: keep the type, name the shard
            exc.add_note(f"(raised while sisakit trained {job})")
        raise
    return ShardResult(job.shard, state, names, digests, time.perf_counter() - t0,
                       save_seconds=save_seconds, threads=threads,
                       cpu_seconds=time.process_time() - c0)
