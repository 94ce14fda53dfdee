"""Shard models: what each shard trains. Built-ins live in this package."""

from .base import ShardModel
from .bpr import BPRMF
from .ials import IALS
from .popularity import Popularity

__all__ = ["BPRMF", "IALS", "Popularity", "ShardModel"]
