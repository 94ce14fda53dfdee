"""The :class:`ShardModel` interface: one model trained on one shard."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from .._rng import epoch_seeds
from .._validation import MAX_STEPS, check_int
from ..base import Component
from ..errors import ValidationError


class _Space(NamedTuple):
    """The sizes :func:`allocation_guard` reports (when no data object is at hand)."""

    n_users: int
    n_items: int


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text
                                              or "out of memory" in text)


@contextlib.contextmanager
def allocation_guard(model: Any, space: Any, sizes: str) -> Iterator[None]:
    """Turn a failed allocation of a model's parameters into a ValidationError that names the
    sizes (``sizes``, e.g. ``"factors=64"``) and the fix, instead of a bare MemoryError or
    torch RuntimeError."""
    try:
        yield
    except Exception as exc:
        if not _out_of_memory(exc):
            raise
        name = type(model).__name__
        users = getattr(space, "n_users", "?")
        items = getattr(space, "n_items", "?")
        raise ValidationError(
            f"{name} cannot allocate its parameters for {users} users x {items} items with "
            f"{sizes} ({type(exc).__name__}: {str(exc)[:160]}); lower {sizes.split('=')[0]} "
            "or the batch sizes, or use a device with more memory"
        ) from None


class ShardModel(Component, ABC):
    """A model that SISA trains on one shard, slice by slice, from checkpoints.

    Contract
    --------
    * :meth:`setup` allocates and initialises every parameter from ``seed`` alone (the same
      seed gives the same bits), in the id space of ``space`` (an ``Interactions``).
    * :meth:`partial_fit` trains for ``len(epoch_seeds)`` epochs on ``data`` (the cumulative
      records of the slices trained so far), drawing all randomness of epoch ``e`` from
      ``epoch_seeds[e]``; it never looks at data outside ``data`` (apart from
      ``data.item_active``).
    * :meth:`state_dict` / :meth:`load_state_dict` round-trip the complete training state
      (parameters and optimizer) bit for bit, as tensors only, so training slice by slice
      through checkpoints equals training straight through. ``load_state_dict`` works on a
      fresh clone (no :meth:`setup` first).
    * :meth:`scores` returns a ``(len(user_idx), n_items)`` float tensor (larger is better).
    """

    device: str

    @abstractmethod
    def setup(self, space: Any, *, seed: int) -> None:
        """Allocate and initialise parameters for the id space of ``space``.

        Read only the id space (``n_users``, ``n_items``, ``item_active``, attributes, user
        features): the SISA engine passes its data without records here, and the records to
        train on to :meth:`partial_fit`.
        """

    @abstractmethod
    def partial_fit(self, data: Any, *, epoch_seeds: Sequence[int]) -> None:
        """Continue training on ``data`` for one epoch per entry of ``epoch_seeds``."""

    @abstractmethod
    def scores(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Score every item for each user index."""

    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Complete training state as a flat dict of tensors."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore a state produced by :meth:`state_dict`."""

    def bind_space(self, space: Any) -> None:
        """Called by the SISA engine with the run's remaining data whenever it changes (after
        fit, forget, load and repartition), for every shard model, retrained or not.

        Models that read per-user side data at scoring time (e.g. ``user_features``) refresh
        their reference here, so rows of forgotten users are not kept alive and a reloaded
        model can score. No-op by default.
        """

    def user_embeddings(self) -> torch.Tensor | None:
        """User embedding matrix ``(n_users, d)``, or None for models without one."""
        return None

    def item_embeddings(self) -> torch.Tensor | None:
        """Item embedding matrix ``(n_items, d)``, or None for models without one."""
        return None

    def set_user_embeddings(self, user_idx: torch.Tensor, values: torch.Tensor) -> None:
        """Overwrite the embeddings of some users (used by post-training unlearners)."""
        raise ValidationError(
            f"{type(self).__name__} has no editable user embeddings; attribute unlearning needs "
            "a factor model such as bpr-mf or ials"
        )

    def copy(self) -> ShardModel:
        """An independent copy with the same parameters and training state."""
        other = self.clone()
        other.load_state_dict(self.state_dict())
        return other

    def n_parameters(self) -> int:
        """Number of trainable scalars (used in forget reports)."""
        return int(sum(t.numel() for k, t in self.state_dict().items() if not k.startswith("opt.")))

    def fit(self, data: Any, *, epochs: int = 20, seed: int = 0) -> ShardModel:
        """Train from scratch on ``data`` (convenience for using a model on its own)."""
        check_int("epochs", epochs, 1, MAX_STEPS)
        check_int("seed", seed, 0)
        self.setup(data, seed=seed)
        self.partial_fit(data, epoch_seeds=epoch_seeds(seed, (0, 0), epochs))
        return self
