"""Aggregators: how shard scores are combined. Built-ins live in this package."""

from .base import Aggregator
from .linear import MeanAggregator, WeightedAggregator

__all__ = ["Aggregator", "MeanAggregator", "WeightedAggregator"]
