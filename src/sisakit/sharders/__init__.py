"""Sharders: which shard each record trains in. Built-ins live in this package."""

from .base import Sharder
from .random import RandomInteractionSharder, RandomUserSharder

__all__ = ["RandomInteractionSharder", "RandomUserSharder", "Sharder"]
