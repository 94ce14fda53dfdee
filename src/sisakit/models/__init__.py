"""Shard models: what each shard trains. Built-ins live in this package."""

from .base import ShardModel
from .bpr import BPRMF
from .popularity import Popularity

__all__ = ["BPRMF", "Popularity", "ShardModel"]
