"""Seed derivation: one independent stream per (shard, slice, epoch), spawned from the run seed."""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(seed: int, *key: int) -> int:
    """A 64-bit seed for the stream named by ``key`` (``numpy.random.SeedSequence`` spawning)."""
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(int(k) for k in key))
    return int(ss.generate_state(1, dtype=np.uint64)[0])


INIT = 1_000_000  # spawn-key tag for parameter initialisation


def epoch_seeds(seed: int, prefix: tuple[int, ...], n_epochs: int) -> list[int]:
    """Seeds for epochs ``0..n_epochs-1`` of the stream ``prefix``."""
    return [derive_seed(seed, *prefix, e) for e in range(n_epochs)]


def seed_to_tensor(seed: int) -> torch.Tensor:
    """A 64-bit unsigned seed stored losslessly in an int64 tensor (for checkpoints)."""
    return torch.tensor(seed - (1 << 64) if seed >= (1 << 63) else seed, dtype=torch.int64)


def seed_from_tensor(t: torch.Tensor) -> int:
    """Inverse of :func:`seed_to_tensor`."""
    return int(t) & 0xFFFF_FFFF_FFFF_FFFF
