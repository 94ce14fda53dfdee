"""Seeded, vectorised, platform-independent hashing of raw ids.

Sharding and slicing use a hash of the *raw* id (not of an index or a position) so that a record
keeps its shard and slice when other records are deleted, and so that a scratch fit on the
remaining data reproduces the same assignment.
"""

from __future__ import annotations

import hashlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, a bijective 64-bit mixer (wrap-around arithmetic intended)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _seed_word(seed: int, salt: str) -> np.uint64:
    digest = hashlib.sha256(f"{salt}:{int(seed)}".encode()).digest()
    return np.frombuffer(digest[:8], dtype="<u8")[0]


def hash_ids(ids: np.ndarray, seed: int, salt: str = "") -> np.ndarray:
    """Hash an array of raw ids (integers or strings) to uint64, seeded and salted.

    Integers hash by value; strings hash by their UTF-32 code points, one vectorised pass per
    character position (never a Python loop per id).
    """
    ids = np.asarray(ids)
    key = _seed_word(seed, salt)
    if ids.dtype.kind in "iub":
        base = ids.astype(np.int64).view(np.uint64)
    elif ids.dtype.kind in "UO":
        text = ids.astype(str)
        width = max(text.dtype.itemsize // 4, 1)
        codes = np.ascontiguousarray(text).view(np.uint32).reshape(len(text), width)
        base = np.full(len(text), np.uint64(0xCBF29CE484222325), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for col in range(width):  # loop over character positions, vectorised over ids
                c = codes[:, col].astype(np.uint64)
                # Padding (code 0) leaves the hash unchanged, so an id hashes the same whatever
                # the longest id in the array is.
                base = np.where(c != 0, _splitmix64(base ^ c), base)
    else:
        raise TypeError(f"cannot hash ids of dtype {ids.dtype}")
    return _splitmix64(base ^ key)


def bucket(ids: np.ndarray, n_buckets: int, seed: int, salt: str) -> np.ndarray:
    """Map raw ids to ``[0, n_buckets)`` by a seeded hash."""
    return (hash_ids(ids, seed, salt) % np.uint64(n_buckets)).astype(np.int64)


def salted_digest(value: object, salt: str) -> str:
    """A salted sha256 hex digest of one id, used to remember forgotten ids without raw data."""
    return hashlib.sha256(f"{salt}\x00{type(value).__name__}\x00{value}".encode()).hexdigest()
