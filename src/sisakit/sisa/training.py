"""Training for fit, forget and repartition: plan the shard jobs (stage seeds, resume points),
run them on the executor, fit the aggregator. Explicit inputs, no manifest I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._device import deterministic, torch_threads
from .._rng import derive_seed
from .._training import ShardContext, ShardJob, ShardResult, shard_records, train_shard
from ..aggregators.base import Aggregator
from ..data import Interactions
from ..executors.base import Executor
from ..models.base import ShardModel
from ..store import RunStore
from .config import SISAConfig
from .layout import aggregator_name, checkpoint_name
from .view import EnsembleView

__all__ = ["Trainer", "stage_seeds"]


def stage_seeds(config: SISAConfig, shard: int, stage: int) -> list[int]:
    """The epoch seeds of one (shard, stage)."""
    return [derive_seed(config.seed, shard, stage, e) for e in range(config.stage_epochs)]


@dataclass(frozen=True)
class Trainer:
    """What every training call of one run shares: the model template, the executor, the run
    directory and the device."""

    template: ShardModel
    executor: Executor
    root: Path
    device: torch.device

    def jobs(self, config: SISAConfig, starts: Mapping[int, int], data: Interactions,
             shard: np.ndarray, slice_: np.ndarray, member: np.ndarray,
             resume: Mapping[int, tuple[str, str]], generation: int) -> list[ShardJob]:
        """One job per shard in ``starts``: train stages ``starts[s]..R-1`` of shard ``s``."""
        jobs = []
        for s, start in sorted(starts.items()):
            rows = np.flatnonzero(member == s)
            jobs.append(ShardJob(
                shard=s, start=start, n_slices=config.n_slices, generation=generation,
                rows=rows, rows_slice=slice_[rows], init_seed=derive_seed(config.seed, s),
                stage_seeds=tuple(tuple(stage_seeds(config, s, r))
                                  for r in range(start, config.n_slices)),
                resume=resume.get(s) if start > 0 else None, records=shard_records(data, rows)))
        return jobs

    def train(self, config: SISAConfig, aggregator: Aggregator, starts: Mapping[int, int],
              data: Interactions, shard: np.ndarray, slice_: np.ndarray,
              files: dict[str, str], *, generation: int,
              resume: Mapping[int, tuple[str, str]] | None = None,
              keep: Mapping[str, str] | None = None, bar: tqdm | None = None,
              journal: str | None = None) -> dict[int, tuple[ShardModel, list[str]]]:
        """Train every shard ``s`` in ``starts`` from stage ``starts[s]`` on the executor.

        A shard starting at stage ``r > 0`` resumes from the ``(name, sha256)`` checkpoint in
        ``resume[s]``. Each job saves a checkpoint after each stage (recorded in the fit journal
        folder ``journal`` if given); their digests are added to ``files``. If training fails,
        the checkpoints it wrote are removed, except those in ``keep`` (the committed run's).

        Returns
        -------
        dict
            ``{s: (model, checkpoint names of stages starts[s]..R-1)}``.
        """
        held = aggregator.holdout_mask(data, seed=config.seed)
        member = shard if held is None else np.where(held, -1, shard)
        jobs = self.jobs(config, starts, data, shard, slice_, member, resume or {}, generation)
        # Each job carries its own records; the shared context carries only the id space, so an
        # out-of-process executor ships every record once, not the whole data once per job.
        ctx = ShardContext(model=self.template.clone(), data=data.take(np.zeros(0, np.int64)),
                           root=str(self.root), threads=config.threads_per_shard,
                           device=str(self.device), journal=journal)

        def done(i: int, result: ShardResult) -> None:
            if bar is not None:
                bar.update(len(result.names))

        try:
            results = self.executor.map(train_shard, jobs, shared=ctx,
                                        cpus_per_job=config.threads_per_shard, on_result=done)
        except BaseException:
            # Best effort: drop what finished jobs wrote (a new generation: never listed yet).
            planned = {checkpoint_name(j.shard, r, generation)
                       for j in jobs for r in range(j.start, config.n_slices)}
            RunStore(self.root).remove_files(planned - set(keep or {}))
            raise
        out: dict[int, tuple[ShardModel, list[str]]] = {}
        for result in results:
            model = self.template.clone()
            model.load_state_dict(result.state)
            files.update(result.digests)
            out[result.shard] = (model, result.names)
        return out

    def load_model(self, store: RunStore, name: str, sha256: str) -> ShardModel:
        """A shard model restored from a checkpoint."""
        model = self.template.clone()
        model.load_state_dict(store.load_tensors(name, sha256))
        return model


def fit_aggregator(template: Aggregator, view: EnsembleView, config: SISAConfig,
                   store: RunStore, files: dict[str, str], generation: int
                   ) -> tuple[Aggregator, str | None]:
    """Fit a fresh clone of ``template`` on the trained ensemble (under the run's thread and
    determinism settings) and save its state; ``(template, None)`` if it needs no fit."""
    if not template.requires_fit:
        return template, None
    fresh = template.clone()  # from scratch: the committed one stays for rollback
    with torch_threads(config.threads_per_shard), deterministic(view.device):
        fresh.fit(view, view.data)
    name = aggregator_name(generation)
    files[name] = store.save_tensors(name, fresh.state_dict())
    return fresh, name


def progress_bar(progress: bool | None, total: int, desc: str) -> tqdm:
    """A progress bar callers can silence (``progress=False``; None: only on a terminal)."""
    return tqdm(total=total, desc=desc, disable=None if progress is None else not progress,
                leave=False)


def resume_points(checkpoints: Any, files: Mapping[str, str], starts: Mapping[int, int]
                  ) -> dict[int, tuple[str, str]]:
    """``{s: (name, sha256)}`` of the checkpoint before each shard's first retrained stage."""
    return {s: (checkpoints[s][r - 1], files[checkpoints[s][r - 1]])
            for s, r in starts.items() if r > 0}
