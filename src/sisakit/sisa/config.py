"""A run's configuration: what the manifest records and everything needed to rebuild the run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .. import plugins
from .._device import resolve_device
from .._validation import MAX_COUNT, MAX_SEED, MAX_STEPS, MAX_THREADS, check_int
from ..errors import CheckpointError, PluginError, ValidationError

__all__ = ["ComponentSpec", "SISAConfig", "stage_epochs"]

KINDS = ("model", "sharder", "aggregator")


def stage_epochs(epochs: int, n_slices: int) -> int:
    """Epochs per slice stage: ``2·epochs/(R+1)``, so a shard sees ``epochs`` passes in total."""
    return max(1, round(2 * epochs / (n_slices + 1)))


@dataclass(frozen=True)
class ComponentSpec:
    """A component as the manifest records it: registered name and constructor parameters.

    ``registered=False`` marks an instance of an unregistered class: the run works, but cannot
    be reopened (its name is ``module:qualname``).
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    registered: bool = True

    @classmethod
    def of(cls, kind: str, component: Any) -> ComponentSpec:
        """The spec of a component instance."""
        try:
            return cls(plugins.name_of(kind, component), dict(component.get_params()))
        except PluginError:
            t = type(component)
            return cls(f"{t.__module__}:{t.__qualname__}", dict(component.get_params()), False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "params": dict(self.params)}
        if not self.registered:
            out["registered"] = False
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComponentSpec:
        return cls(str(d["name"]), dict(d["params"]), bool(d.get("registered", True)))

    def build(self, kind: str, **overrides: Any) -> Any:
        """A fresh instance through the plugin registry (``overrides`` win over ``params``)."""
        return plugins.build(kind, self.name, **{**self.params, **overrides})


@dataclass(frozen=True)
class SISAConfig:
    """The frozen configuration of a SISA run (the manifest's ``config``).

    Attributes
    ----------
    model, sharder, aggregator : ComponentSpec
    n_shards, n_slices, epochs, seed, threads_per_shard : int
        As :class:`~sisakit.SISA` takes them.
    """

    model: ComponentSpec
    sharder: ComponentSpec
    aggregator: ComponentSpec
    n_shards: int
    n_slices: int
    epochs: int
    seed: int
    threads_per_shard: int = 1

    def __post_init__(self) -> None:
        for name, value in check_counts(**{n: getattr(self, n) for n in _COUNTS}).items():
            object.__setattr__(self, name, value)

    @property
    def stage_epochs(self) -> int:
        return stage_epochs(self.epochs, self.n_slices)

    def with_seed(self, seed: int) -> SISAConfig:
        return replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``config``."""
        return {
            "model": self.model.to_dict(), "sharder": self.sharder.to_dict(),
            "aggregator": self.aggregator.to_dict(), "n_shards": self.n_shards,
            "n_slices": self.n_slices, "epochs": self.epochs, "stage_epochs": self.stage_epochs,
            "seed": self.seed, "threads_per_shard": self.threads_per_shard,
        }

    def check_json(self) -> SISAConfig:
        """``self``, if every component parameter is a JSON value (else a ValidationError):
        the manifest must be able to record it."""
        try:
            json.dumps(self.to_dict())
        except TypeError as exc:
            raise ValidationError(
                f"component parameters must be JSON values (numbers, strings, lists): {exc}"
            ) from exc
        return self

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SISAConfig:
        """Parse a manifest's ``config`` (the inverse of :meth:`to_dict`)."""
        return cls(*(ComponentSpec.from_dict(d[k]) for k in KINDS), n_shards=d["n_shards"],
                   n_slices=d["n_slices"], epochs=d["epochs"], seed=d["seed"],
                   threads_per_shard=d["threads_per_shard"])

    def comparable(self) -> dict[str, Any]:
        """The config without what a reload may change (the seed after a repartition, the
        model's device), to tell whether a run on disk is still the same run."""
        return comparable_config(self.to_dict())

    def check_reloadable(self) -> None:
        """Raise :class:`~sisakit.CheckpointError` if a component is not registered."""
        for kind in KINDS:
            spec = getattr(self, kind)
            if not spec.registered:
                raise CheckpointError(
                    f"the run was fitted with an unregistered {kind} ({spec.name}); register it "
                    "through the sisakit plugin hooks so runs can be reopened")

    def sisa_kwargs(self, device: str) -> dict[str, Any]:
        """Keyword arguments of :class:`~sisakit.SISA` that rebuild this run on ``device``
        (the caller's device wins over the one the model was saved with)."""
        model_params = dict(self.model.params)
        if "device" in model_params:
            model_params["device"] = str(resolve_device(device))
        return dict(model=self.model.name, sharder=self.sharder.name,
                    aggregator=self.aggregator.name, n_shards=self.n_shards,
                    n_slices=self.n_slices, epochs=self.epochs, seed=self.seed,
                    model_params=model_params, sharder_params=dict(self.sharder.params),
                    aggregator_params=dict(self.aggregator.params), device=device,
                    threads_per_shard=self.threads_per_shard)


_COUNTS = {"n_shards": (1, MAX_COUNT), "n_slices": (1, MAX_COUNT), "epochs": (1, MAX_STEPS),
           "seed": (0, MAX_SEED), "threads_per_shard": (1, MAX_THREADS)}


def check_counts(**counts: Any) -> dict[str, int]:
    """The run's counts (``n_shards``, ``n_slices``, ``epochs``, ``seed``,
    ``threads_per_shard``) checked and as plain ints (numpy integers are accepted; the
    manifest is JSON)."""
    return {name: check_int(name, counts[name], *_COUNTS[name]) for name in _COUNTS}


def comparable_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict without its seed and its model's device (see :meth:`SISAConfig.comparable`)."""
    if "model" not in cfg:
        return dict(cfg)
    model = {**cfg["model"], "params": {k: v for k, v in cfg["model"]["params"].items()
                                        if k != "device"}}
    return {**{k: v for k, v in cfg.items() if k != "seed"}, "model": model}
