"""The :class:`Aggregator` interface: how per-shard scores become one ranking."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
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
      is the weighted mean over the shards that did not abstain; when :attr:`weighted_mean`
      holds, the engine computes exactly that without materialising the stack (the fast
      path: each shard scores only its own users) and does not call :meth:`aggregate`.
    * Aggregators with ``requires_fit = True`` are fitted on the training data after the shards
      (and refitted from scratch after every forget, so exactness holds).
    * Aggregators with ``needs_user_idx = True`` receive the batch's user indices as
      ``aggregate(scores, mask, counts, user_idx=...)`` (an ``int64`` tensor of shape ``(B,)``);
      the engine never passes the keyword to aggregators that do not opt in.
    * Aggregators with ``uses_shard_scores = False`` score from their fitted state alone: the
      engine then skips computing the shard scores and passes empty ``(S, B, 0)`` ``scores``
      and ``mask``.
    * :meth:`holdout_mask` may reserve training records for the aggregator's own validation:
      the engine keeps them in the run (stored, forgettable, excluded from recommendations as
      seen items) but no shard trains on them, and they do not count in ``counts``.
    * Output is deterministic and has the documented shapes.
    """

    requires_fit: ClassVar[bool] = False
    #: Opt-in: the engine passes ``user_idx=`` to :meth:`aggregate`.
    needs_user_idx: ClassVar[bool] = False
    #: Set to False when :meth:`aggregate` never reads ``scores`` and ``mask`` (an opt-out).
    uses_shard_scores: ClassVar[bool] = True
    #: Whether the scores are the :meth:`weights`-weighted mean of the shard scores, so the
    #: engine may take the fast path instead of calling :meth:`aggregate`. ``None`` (default):
    #: exactly when :meth:`aggregate` is not overridden. Set True on a subclass that overrides
    #: :meth:`aggregate` (e.g. to log) but still computes that mean, to keep the fast path.
    weighted_mean: ClassVar[bool | None] = None

    def weighted_mean_fast_path(self) -> bool:
        """Whether the engine scores through the fast path (see :attr:`weighted_mean`)."""
        if self.weighted_mean is not None:
            return bool(self.weighted_mean)
        return type(self).aggregate is Aggregator.aggregate

    def fit(self, ensemble: Any, data: Any) -> Aggregator:
        """Fit on a trained ensemble and its training data (no-op by default).

        ``ensemble`` is a :class:`~sisakit.sisa.EnsembleView` (``shard_models``,
        ``shard_counts()``, ``seed``, ``device``, ``assignment``); the engine calls this under
        the run's thread and determinism settings and refits from scratch after every forget.
        """
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

    def holdout_mask(self, data: Any, *, seed: int) -> np.ndarray | None:
        """Records (boolean mask over ``data``) held out from shard training, or None (default).

        It must depend on each record alone (e.g. a seeded hash of its ``record_id``), so that a
        record stays held out, or not, whatever else is deleted; otherwise exactness breaks.
        """
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Fitted state (empty for aggregators without one)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a fitted state."""
