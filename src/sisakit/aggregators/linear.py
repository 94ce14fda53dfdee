"""Built-in linear aggregators: ``mean`` and ``weighted``."""

from __future__ import annotations

import torch

from ..hookspecs import hookimpl
from .base import Aggregator


class MeanAggregator(Aggregator):
    """Unweighted mean of the scores of the shards that trained on the user."""

    def __init__(self) -> None:
        pass

    def weights(self, counts: torch.Tensor) -> torch.Tensor:
        return (counts > 0).to(torch.float32)


class WeightedAggregator(Aggregator):
    """Mean weighted by each shard's number of training records of the user."""

    def __init__(self) -> None:
        pass

    def weights(self, counts: torch.Tensor) -> torch.Tensor:
        return counts.to(torch.float32)


@hookimpl
def register_aggregators(register):
    register("mean", MeanAggregator)
    register("weighted", WeightedAggregator)
