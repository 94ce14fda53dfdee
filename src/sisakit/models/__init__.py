"""Shard models: what each shard trains. Built-ins live in this package."""

from .base import ShardModel
from .bpr import BPRMF
from .ials import IALS
from .ncf import NCF
from .popularity import Popularity

__all__ = ["BPRMF", "IALS", "NCF", "Popularity", "ShardModel"]
