"""Data sets: a synthetic generator, MovieLens loaders and generic file readers.

sisakit ships no third-party data. MovieLens must be downloaded from GroupLens by the user.
"""

from __future__ import annotations

from .files import read_interactions
from .movielens import MOVIELENS_NAMES, load_movielens
from .synthetic import synthetic

__all__ = ["MOVIELENS_NAMES", "load_movielens", "read_interactions", "synthetic"]
