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

from ._device import deterministic, resolve_device, torch_threads
from .store import RunStore

__all__ = ["ShardContext", "ShardJob", "ShardResult", "checkpoint_name", "train_shard"]


def checkpoint_name(shard: int, stage: int, generation: int) -> str:
    """Run-relative file name of the checkpoint of ``shard`` after slice stage ``stage``."""
    return f"checkpoints/shard-{shard:04d}/slice-{stage:04d}.g{generation}.pt"


@dataclass(frozen=True)
class ShardContext:
    """What every shard job of one fit/forget/repartition shares.

    Attributes
    ----------
    model : ShardModel
        Unfitted template; each job trains a clone.
    data : Interactions
        The run's training data (its id space initialises the model; jobs select their rows).
    root : str
        Run directory; workers save checkpoints there through :class:`~sisakit.store.RunStore`.
    threads : int
        Torch intra-op threads while a shard trains (``threads_per_shard``).
    device : str
        Torch device of the run.
    """

    model: Any
    data: Any
    root: str
    threads: int
    device: str


@dataclass(frozen=True)
class ShardJob:
    """Train shard ``shard`` for stages ``start..n_slices-1``.

    Attributes
    ----------
    shard, start, n_slices, generation : int
        Shard, first stage to train, number of slices, and the generation tag of the new
        checkpoint file names.
    rows : ndarray of int64
        Indices into the shared data of the records this shard trains on.
    rows_slice : ndarray of int64
        Slice of each of those records (stage ``r`` trains on slices ``0..r``).
    init_seed : int
        Seed of the model initialisation (used when ``start == 0``).
    stage_seeds : tuple of tuple of int
        Epoch seeds of stages ``start, start+1, ...``.
    resume : (str, str) or None
        Name and sha256 of the checkpoint of stage ``start - 1`` (None when ``start == 0``).
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

    def __str__(self) -> str:
        return f"shard {self.shard} (stages {self.start}..{self.n_slices - 1})"


@dataclass
class ShardResult:
    """What a job returns: the final model state and the checkpoints it wrote."""

    shard: int
    state: dict[str, torch.Tensor]
    names: list[str]
    digests: dict[str, str]
    seconds: float


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
    t0 = time.perf_counter()
    store = RunStore(ctx.root)
    model = ctx.model.clone()
    names: list[str] = []
    digests: dict[str, str] = {}
    try:
        with torch_threads(ctx.threads), deterministic(resolve_device(ctx.device)):
            if job.resume is None:
                model.setup(ctx.data, seed=job.init_seed)
            else:
                model.load_state_dict(store.load_tensors(*job.resume))
            for r, seeds in zip(range(job.start, job.n_slices), job.stage_seeds, strict=True):
                stage = ctx.data.take(job.rows[job.rows_slice <= r])
                model.partial_fit(stage, epoch_seeds=list(seeds))
                name = checkpoint_name(job.shard, r, job.generation)
                digests[name] = store.save_tensors(name, model.state_dict())
                names.append(name)
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    except Exception as exc:
        if hasattr(exc, "add_note"):  # Python >= 3.11: keep the type, name the shard
            exc.add_note(f"(raised while sisakit trained {job})")
        raise
    return ShardResult(job.shard, state, names, digests, time.perf_counter() - t0)
