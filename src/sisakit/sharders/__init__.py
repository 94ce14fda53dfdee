"""Sharders: which shard each record trains in. Built-ins live in this package."""

from .base import Sharder
from .random import RandomInteractionSharder, RandomUserSharder
from .receraser import RecEraserInteractionSharder, RecEraserItemSharder, RecEraserUserSharder
from .stratified import ActivityStratifiedSharder, AttributeStratifiedSharder

__all__ = [
    "ActivityStratifiedSharder",
    "AttributeStratifiedSharder",
    "RandomInteractionSharder",
    "RandomUserSharder",
    "RecEraserInteractionSharder",
    "RecEraserItemSharder",
    "RecEraserUserSharder",
    "Sharder",
]
