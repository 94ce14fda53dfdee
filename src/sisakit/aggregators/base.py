"""The :class:`Aggregator` interface: how per-shard scores become one ranking."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from ..base import Component


class Aggregator(Component, ABC):
    """Combines the scores of the shard models into one score per (user, item).

    Contract
    --------
    * :meth:`weights` maps ``counts`` — an ``(n_shards, n_users_in_batch)`` tensor with the
      number of training records of each user in each shard — to non-negative weights of the
      same shape. The engine forces the weight of a shard that never saw a user to zero, so no
      untrained parameter can influence a recommendation.
    * :meth:`aggregate` combines stacked scores ``(n_shards, B, n_items)`` with a boolean mask
      of the same shape (False = the shard abstains) into ``(B, n_items)`` scores and a
      ``(B, n_items)`` mask of (user, item) pairs that at least one shard scored. The default
      is the weighted mean over the shards that did not abstain; the engine computes exactly
      that without materialising the stack when :meth:`aggregate` is not overridden.
    * Aggregators with ``requires_fit = True`` are fitted on the training data after the shards
      (and refitted from scratch after every forget, so exactness holds).
    * Output is deterministic and has the documented shapes.
    """

    requires_fit: ClassVar[bool] = False

    def fit(self, ensemble: Any, data: Any) -> Aggregator:
        """Fit on a trained ensemble and its training data (no-op by default)."""
        return self

    @abstractmethod
    def weights(self, counts: torch.Tensor) -> torch.Tensor:
        """Per-shard weight of each user in the batch (``counts`` has shape (S, B))."""

    def aggregate(
        self, scores: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted mean of ``scores`` over the shards where ``mask`` is True."""
        w = self.weights(counts).to(scores.dtype)
        w = torch.where(counts > 0, w, torch.zeros_like(w))[:, :, None] * mask
        den = w.sum(0)
        num = (w * torch.where(mask, scores, torch.zeros_like(scores))).sum(0)
        scored = den > 0
        return torch.where(scored, num / torch.where(scored, den, torch.ones_like(den)), num), scored

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Fitted state (empty for aggregators without one)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a fitted state."""
