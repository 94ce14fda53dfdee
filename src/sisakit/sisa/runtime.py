"""What every operation on a run works with: its configuration, components and services
(repository, trainer), plus the checks of an assignment and the view of a state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import plugins
from .._device import resolve_device
from .._hashing import bucket
from .._validation import check_bool, check_params
from ..aggregators.base import Aggregator
from ..data import Interactions
from ..errors import ValidationError
from ..executors.base import Executor
from ..models.base import ShardModel
from ..sharders.base import Sharder
from .config import ComponentSpec, SISAConfig, check_counts
from .repository import Repository
from .serving import ShardIndex, user_index
from .state import RunState
from .training import Trainer
from .view import EnsembleView

__all__ = ["Runtime", "assignment_arrays", "build_runtime", "validate_assignment"]

KINDS = ("model", "sharder", "aggregator", "executor")


@dataclass(frozen=True)
class Runtime:
    """A run's configuration, component templates and services (immutable: a repartition
    makes a new one with the new seed)."""

    config: SISAConfig
    model: ShardModel
    sharder: Sharder
    aggregator: Aggregator  # the unfitted template (a state holds the fitted one)
    executor: Executor
    device: torch.device
    root: Path
    progress: bool | None
    repo: Repository = field(compare=False)

    @property
    def trainer(self) -> Trainer:
        return Trainer(self.model, self.executor, self.root, self.device)

    def evolve(self, **changes: Any) -> Runtime:
        return replace(self, **changes)

    def determinism(self) -> dict[str, Any]:
        """The facts bit-exact retraining depends on (recorded in the manifest)."""
        model = type(self.model)
        return {
            "device_type": self.device.type,
            "torch_version": torch.__version__,
            "threads_per_shard": self.config.threads_per_shard,
            "model_class": f"{model.__module__}.{model.__qualname__}",
            "optimizer": getattr(self.model, "optimizer_impl", "unspecified"),
            "cuda_deterministic": self.device.type == "cuda",
        }

    def draw_assignment(self, data: Interactions, config: SISAConfig | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The sharder's shards and the seeded slices of ``data``'s records."""
        cfg = config or self.config
        shard = np.asarray(self.sharder.assign(data, cfg.n_shards, seed=cfg.seed))
        slice_ = bucket(self.sharder.unit_keys(data), cfg.n_slices, cfg.seed, "slice")
        return shard, slice_

    def view(self, state: RunState, index: ShardIndex, config: SISAConfig | None = None
             ) -> EnsembleView:
        """The public read model of ``state``."""
        cfg = config or self.config
        return EnsembleView(
            shard_models=tuple(state.models), data=state.data, shard=state.shard,
            slice=state.slice, n_shards=cfg.n_shards, n_slices=cfg.n_slices,
            stage_epochs=cfg.stage_epochs, seed=cfg.seed, device=self.device,
            checkpoints=state.checkpoints, workdir=self.root, timings=dict(state.timings),
            user_counts=index.counts, item_counts=index.item_counts,
            resolve_users=lambda users: user_index(state, users, state.digest))


def build_runtime(specs: Sequence[Any], params: Sequence[Any], counts: Mapping[str, Any],
                  device: Any, progress: Any, root: Path) -> Runtime:
    """Validate ``SISA``'s arguments and build its components (model, sharder, aggregator,
    executor: a registered name or an instance each, with its ``*_params``)."""
    counts = check_counts(**counts)  # before any component is built: the clearest error
    dev = resolve_device(device)
    progress = check_bool("progress", progress, none=True)
    checked = [check_params(f"{k}_params", p) for k, p in zip(KINDS, params, strict=True)]
    model = specs[0]
    if isinstance(model, str) and "device" in plugins.get("model", model).param_names():
        checked[0].setdefault("device", str(dev))
    parts = [plugins.build(k, spec, **p) for k, spec, p in zip(KINDS, specs, checked,
                                                               strict=True)]
    config = SISAConfig(*(ComponentSpec.of(k, c) for k, c in zip(KINDS[:3], parts[:3],
                                                                 strict=True)), **counts)
    return Runtime(config.check_json(), *parts, device=dev, root=root, progress=progress,
                   repo=Repository(root))


def assignment_arrays(assignment: Any, n: int) -> list[np.ndarray]:
    """``fit(assignment=...)`` as two integer arrays of ``n`` entries (checked for shape and
    type here; their values by :func:`validate_assignment`)."""
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


def validate_assignment(config: SISAConfig, n_records: int, shard: np.ndarray,
                        slice_: np.ndarray, *, allow_empty: bool = False) -> None:
    """Refuse an assignment of the wrong shape or range, or (unless ``allow_empty``) one that
    leaves a shard without records."""
    for name, arr, hi in (("shard", shard, config.n_shards), ("slice", slice_, config.n_slices)):
        if arr.shape != (n_records,) or arr.dtype.kind not in "iu":
            raise ValidationError(
                f"the {name} assignment must be an integer array with one entry per record "
                f"({n_records}), got {arr.dtype} {arr.shape}; pass integer arrays, e.g. "
                "the assignment a SISA run stores")
        if len(arr) and (arr.min() < 0 or arr.max() >= hi):
            raise ValidationError(
                f"the {name} assignment's ids must lie in [0, {hi}) (n_{name}s={hi}), got "
                f"[{arr.min()}, {arr.max()}]; renumber the assignment or configure "
                f"n_{name}s to match it")
    sizes = np.bincount(shard, minlength=config.n_shards)
    if (sizes == 0).any() and not allow_empty:
        raise ValidationError(
            f"shard(s) {np.flatnonzero(sizes == 0).tolist()} received no records; use fewer "
            f"shards (n_shards={config.n_shards}) or a balanced sharder")
