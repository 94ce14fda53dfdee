"""``fold-in``: every shard scores every user by folding the user's history into its item space.

Under user-level sharding each shard learns its item factors from a tenth (at S=10) of the users,
and the one shard that trained on a user scores them alone: that is where sharding loses
accuracy. ``fold-in`` lets *every* shard score the user without training on them: shard ``s``
computes a user vector from the user's training items and its own item factors ``Y_s`` by the
implicit-feedback least-squares fold-in (the closed-form user step of iALS),

``x_s(u) = (Y_sᵀY_s + alpha Σ_{i∈H(u)} y_i y_iᵀ + reg I)⁻¹ (1 + alpha) Σ_{i∈H(u)} y_i``,

scores ``x_s(u)·Y_sᵀ`` (plus item biases where the model has them), standardises the scores of
the items it trained on, and the ensemble is the mean over the shards. The fold-in user vector
is a *prototype* of the user in each shard's space (a weighted centroid of their items).

Why exactness still holds: the only user-specific input is the user's own remaining history,
read at scoring time; every shard parameter used was trained only on its own shard. Forgetting a
user retrains their shard (its item factors change) and deletes their history, so the user gets
popularity, and every other user's scores are what a scratch fit on the remaining data gives.
This is the one built-in aggregator in which a shard that never trained on a user contributes to
that user's scores: it contributes its *item* factors, never an untrained user vector.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from .._validation import MAX_BATCH
from ..constraints import Constraint, Interval
from ..errors import ValidationError
from ..hookspecs import hookimpl
from .base import Aggregator

logger = logging.getLogger(__name__)


class FoldInAggregator(Aggregator):
    """Mean over all shards of fold-in scores (see the module docs).

    Parameters
    ----------
    reg : float, default 1.0
        Ridge term of the fold-in solve (> 0).
    alpha : float, default 1.0
        Confidence weight of observed items (``c = 1 + alpha``), as in iALS (>= 0).
    batch_size : int, default 256
        Users folded in per solve (memory is about ``batch_size * factors**2`` floats per shard).

    Notes
    -----
    Needs shard models with item embeddings (``bpr-mf``, ``ials``); ``bpr-mf``'s item biases are
    added. Meant for user-level sharders, where every shard trains on most items: under
    item-level partitions (``receraser-item``, ``receraser-interaction``) each item is scored by
    one shard and the ranking is poor (a warning is logged when the shards cover less than half
    of the items on average). No training: :meth:`fit` copies the shards' item factors and the users' training
    items, so the refit after a forget costs a fraction of a second. The fitted state holds
    ``n_shards × n_items × factors`` floats and the training (user, item) pairs.
    """

    requires_fit = True
    needs_user_idx = True
    uses_shard_scores = False

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "reg": Interval(float, 0, None, closed="right", example=1.0),
        "alpha": Interval(float, 0, None, example=1.0),
        "batch_size": Interval(int, 1, MAX_BATCH),
    }

    def __init__(self, reg: float = 1.0, alpha: float = 1.0, batch_size: int = 256) -> None:
        self.reg = reg
        self.alpha = alpha
        self.batch_size = batch_size
        self.validate_params()
        self._state: dict[str, torch.Tensor] = {}

    def fit(self, ensemble: Any, data: Any) -> FoldInAggregator:
        """Copy the shards' item factors (and biases) and the users' training items."""
        models = ensemble.shard_models
        items, biases = [], []
        for m in models:
            q = m.item_embeddings()
            if q is None:
                raise ValidationError(
                    f"fold-in needs shard models with item embeddings, but {type(m).__name__} has "
                    "none; use a factor model (bpr-mf, ials) or another aggregator (mean, weighted)")
            items.append(q.detach().float().cpu())
            b = getattr(m, "item_biases", None)
            biases.append(b().detach().float().cpu() if callable(b) else torch.zeros(len(q)))
        _, icounts = ensemble.shard_counts()
        coverage = float((icounts > 0).float().mean())
        if coverage < 0.5:
            # Item-level partitions leave each item to one shard, whose standardised scores are
            # not comparable with another shard's: fold-in then ranks poorly (measured).
            logger.warning("fold-in: the shards trained on only %.0f%% of the items on average; it "
                           "is meant for user-level sharders (random-user, activity-stratified, "
                           "receraser-user)", 100 * coverage)
        csr = data.to_csr()
        self._state = {
            "Y": torch.stack(items), "b": torch.stack(biases), "seen": icounts > 0,
            "indptr": torch.from_numpy(csr.indptr.astype(np.int64)),
            "indices": torch.from_numpy(csr.indices.astype(np.int64)),
        }
        return self

    def _require(self) -> dict[str, torch.Tensor]:
        if not self._state:
            raise ValidationError("the fold-in aggregator is not fitted; fit the SISA ensemble "
                                  "that uses it (or call fit(ensemble, data)) first")
        return self._state

    def weights(self, counts: torch.Tensor) -> torch.Tensor:
        return (counts > 0).to(torch.float32)

    _KEYS = frozenset({"Y", "b", "seen", "indptr", "indices"})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self._state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) not in (set(), self._KEYS):
            raise ValidationError(f"state has keys {sorted(state)}; it was not saved by a fold-in "
                                  "aggregator")
        self._state = {k: v.detach().cpu().clone() for k, v in state.items()}

    def _history(self, user_idx: torch.Tensor) -> torch.Tensor:
        """Binary ``(B, n_items)`` sparse CSR matrix of the batch's training items."""
        st = self._require()
        indptr, indices = st["indptr"], st["indices"]
        u = torch.as_tensor(user_idx, dtype=torch.int64)
        starts, ends = indptr[u], indptr[u + 1]
        lengths = ends - starts
        crow = torch.zeros(len(u) + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(lengths, 0)
        # Positions of every history entry, gathered without a loop over users.
        offs = torch.arange(int(crow[-1])) - torch.repeat_interleave(crow[:-1], lengths)
        cols = indices[torch.repeat_interleave(starts, lengths) + offs]
        with warnings.catch_warnings():  # "sparse CSR support is in beta": used as documented
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
            return torch.sparse_csr_tensor(crow, cols, torch.ones(len(cols)),
                                           (len(u), st["Y"].shape[1]), check_invariants=False)

    def aggregate(self, scores: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor,
                  user_idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if user_idx is None:
            raise ValidationError("the fold-in aggregator needs user_idx= (the batch's user "
                                  "indices); the SISA engine passes it")
        st = self._require()
        n_shards, n_items, dim = st["Y"].shape
        step = int(self.batch_size)
        u = torch.as_tensor(user_idx, dtype=torch.int64)
        # The batches' histories once, and each shard's item statistics once per call (not once
        # per batch): they do not depend on the users.
        hists = [self._history(u[start:start + step]) for start in range(0, len(u), step)]
        has = torch.cat([(h.crow_indices()[1:] - h.crow_indices()[:-1]) > 0 for h in hists])
        has = has.float()[:, None]
        out = torch.zeros(len(u), n_items)
        eye = torch.eye(dim) * float(self.reg)
        for s in range(n_shards):  # one iteration per shard, vectorised over users and items
            seen = st["seen"][s]
            y = st["Y"][s] * seen[:, None]  # untrained item factors never enter the solve
            b = st["b"][s] * seen
            outer = (y[:, :, None] * y[:, None, :]).reshape(n_items, dim * dim)
            gram = y.T @ y
            # Standardise over the items this shard trained on (so shards weigh alike), with the
            # moments of its item factors: O(B d^2) instead of passes over (B, n_items).
            k = seen.sum().clamp_min(1)
            ybar, bbar, yb = y.sum(0) / k, b.sum() / k, y.T @ b / k
            for n, hist in enumerate(hists):  # one solve per batch of users
                rows = slice(n * step, n * step + hist.shape[0])
                a = (gram + eye) + float(self.alpha) * (hist @ outer).reshape(-1, dim, dim)
                rhs = (1.0 + float(self.alpha)) * (hist @ y)
                x = torch.cholesky_solve(rhs.unsqueeze(-1), torch.linalg.cholesky(a)).squeeze(-1)
                mu = x @ ybar + bbar
                second = ((x @ (gram / k)) * x).sum(1) + 2.0 * (x @ yb) + (b @ b) / k
                inv_sd = (second - mu * mu).clamp_min(1e-12).rsqrt()[:, None]
                out[rows].addcmul_((x @ y.T + b).sub_(mu[:, None]).mul_(inv_sd),
                                   seen[None, :].float() * has[rows])
        den = has * st["seen"].sum(0)[None, :].float()
        scored = den > 0
        return torch.where(scored, out / den.clamp_min(1.0), out), scored


@hookimpl
def register_aggregators(register):
    register("fold-in", FoldInAggregator)
