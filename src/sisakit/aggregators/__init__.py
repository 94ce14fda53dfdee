"""Aggregators: how shard scores are combined. Built-ins live in this package."""

from .attention import AttentionAggregator
from .base import Aggregator
from .foldin import FoldInAggregator
from .linear import MeanAggregator, WeightedAggregator
from .proto import ProtoAggregator

__all__ = ["Aggregator", "AttentionAggregator", "FoldInAggregator", "MeanAggregator",
           "ProtoAggregator", "WeightedAggregator"]
