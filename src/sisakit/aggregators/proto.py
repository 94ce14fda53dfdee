"""``proto``: prototype-augmented ensembles (the ProtoSISA idea).

Embedding spaces of different shards are not aligned (each shard starts from its own seeded
initialisation), so a centroid of vectors taken from several shards means nothing. ``proto``
therefore builds prototypes *within* each shard: k-means centroids of the shard's trained user
vectors and of its trained item vectors. A shard that saw few records of a user (record-level
sharding spreads every user thin) or few records of an item (user-level sharding gives each
shard a fraction of every item's audience) has a noisy vector for it; ``proto`` shrinks that
vector towards its prototype, the more the fewer records the shard has:

``p~ = p + lam (c(p) - p)``, ``lam = m / (m + n_us)`` (and alike for items with ``n_is``),

where ``m`` is ``shrinkage`` (a prior count). Shard ``s`` then scores
``x_s(u, i) + p~·q~ - p·q`` (its own score with the factor part recomputed from the shrunk
vectors, so terms outside the dot product, such as item biases, are kept), and the ensemble is
the mean over the shards that trained on the user, like ``mean``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch

from .._device import torch_generator
from .._rng import derive_seed
from .._validation import MAX_COUNT, MAX_SEED, MAX_STEPS
from ..constraints import Constraint, Device, Interval
from ..errors import ValidationError
from ..hookspecs import hookimpl
from .attention import fit_device, shard_embeddings
from .base import Aggregator

logger = logging.getLogger(__name__)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from ``min(k, len(x))`` seeded distinct starting points.

    Returns ``(centroids (k', d), assignment (len(x),))``; a cluster that empties keeps its
    previous centroid. Deterministic for a given generator state.
    """
    n = len(x)
    k = min(int(k), n)
    if k == 0:
        return x.new_zeros(0, x.shape[1]), torch.zeros(0, dtype=torch.int64, device=x.device)
    start = torch.randperm(n, generator=generator)[:k].to(x.device)
    c = x[start].clone()
    assign = torch.zeros(n, dtype=torch.int64, device=x.device)
    for _ in range(int(iters)):  # one iteration per Lloyd step, vectorised over points
        assign = nearest(x, c)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        sizes = torch.bincount(assign, minlength=k).to(x.dtype)
        c = torch.where(sizes[:, None] > 0, sums / sizes.clamp_min(1)[:, None], c)
    return c, nearest(x, c)


def nearest(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean distance) for each row of ``x``."""
    d2 = (c * c).sum(1)[None, :] - 2.0 * (x @ c.T)  # ||x||^2 is constant per row
    return d2.argmin(1)


class ProtoAggregator(Aggregator):
    """Mean of prototype-shrunk shard scores (see the module docs).

    Parameters
    ----------
    n_prototypes : int
        k-means clusters per shard, for users and for items.
    shrinkage : float
        Prior count ``m`` (>= 0): a vector backed by ``n`` records of the shard moves the
        fraction ``m / (m + n)`` of the way to its prototype. 0 turns ``proto`` into ``mean``.
    iters : int
        Lloyd iterations of k-means.
    seed : int
        Seed of the k-means starts; combined with the run seed.
    device : str
        ``"auto"`` (the ensemble's device), ``"cpu"`` or ``"cuda"`` for the k-means.

    Notes
    -----
    Needs shard models with user and item embeddings whose score is their dot product plus terms
    that do not involve them (``bpr-mf``, ``ials``). Refitted from scratch after every forget,
    and a shard that never trained on a user has no influence on that user, as with ``mean``.
    The fitted state holds two dense tables per shard, ``(n_users + n_items) × 2d`` floats each.
    """

    requires_fit = True
    needs_user_idx = True

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "n_prototypes": Interval(int, 1, MAX_COUNT),
        "shrinkage": Interval(float, 0, None, example=5.0),
        "iters": Interval(int, 1, MAX_STEPS),
        "seed": Interval(int, 0, MAX_SEED),
        "device": Device(),
    }

    def __init__(self, n_prototypes: int = 16, shrinkage: float = 5.0, iters: int = 20,
                 seed: int = 0, device: str = "auto") -> None:
        self.n_prototypes = n_prototypes
        self.shrinkage = shrinkage
        self.iters = iters
        self.seed = seed
        self.device = device
        self.validate_params()
        self._state: dict[str, torch.Tensor] = {}

    def fit(self, ensemble: Any, data: Any) -> ProtoAggregator:
        """Cluster each shard's trained user and item vectors and build the shrunk tables."""
        models = ensemble.shard_models
        emb = shard_embeddings(models)
        if emb is None:
            raise ValidationError(
                f"proto needs shard models with user and item embeddings, but "
                f"{type(models[0]).__name__} has none; use a factor model (bpr-mf, ials) or "
                "another aggregator (mean, weighted, attention)")
        ucounts, icounts = ensemble.shard_counts()
        dev = fit_device(self.device, ensemble)
        g = torch_generator(derive_seed(int(ensemble.seed), int(self.seed), 11))
        users, items = [], []
        for s in range(len(models)):  # one iteration per shard, vectorised inside
            users.append(self._shrunk(emb[0][s].to(dev), ucounts[s].to(dev), g))
            items.append(self._shrunk(emb[1][s].to(dev), icounts[s].to(dev).float(), g))
        self._state = {"user_aug": torch.stack(users).cpu(), "item_aug": torch.stack(items).cpu()}
        return self

    def _shrunk(self, x: torch.Tensor, n: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``[x~, x]`` with each trained row shrunk towards its prototype (untrained rows keep
        their vector: no shard score uses them)."""
        trained = n > 0
        c, assign = kmeans(x[trained], self.n_prototypes, self.iters, g)
        shrunk = x.clone()
        if len(c):
            lam = float(self.shrinkage) / (float(self.shrinkage) + n[trained])
            shrunk[trained] = x[trained] + lam[:, None] * (c[assign] - x[trained])
        return torch.cat([shrunk, x], 1)

    def _require(self) -> dict[str, torch.Tensor]:
        if not self._state:
            raise ValidationError("the proto aggregator is not fitted; fit the SISA ensemble that "
                                  "uses it (or call fit(ensemble, data)) first")
        return self._state

    def weights(self, counts: torch.Tensor) -> torch.Tensor:
        return (counts > 0).to(torch.float32)

    def corrections(self, user_idx: torch.Tensor) -> torch.Tensor:
        """``p~·q~ - p·q`` of every shard, user and item: ``(S, len(user_idx), n_items)``."""
        st = self._require()
        d = st["user_aug"].shape[2] // 2
        ua = st["user_aug"][:, torch.as_tensor(user_idx, dtype=torch.int64)]
        ua = torch.cat([ua[..., :d], -ua[..., d:]], 2)  # [p~, -p]·[q~, q] = p~·q~ - p·q
        return torch.bmm(ua, st["item_aug"].transpose(1, 2))

    def aggregate(self, scores: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor,
                  user_idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if user_idx is None:
            raise ValidationError("the proto aggregator needs user_idx= (the batch's user "
                                  "indices); the SISA engine passes it")
        corr = self.corrections(user_idx)
        if corr.shape != scores.shape:
            raise ValidationError(f"scores have shape {tuple(scores.shape)} but the aggregator was "
                                  f"fitted for {tuple(corr.shape)}; refit it")
        return super().aggregate(scores + corr.to(scores.dtype), mask, counts)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self._state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) not in (set(), {"user_aug", "item_aug"}):
            raise ValidationError(f"state has keys {sorted(state)}; it was not saved by a proto "
                                  "aggregator")
        self._state = {k: v.detach().cpu().clone() for k, v in state.items()}


@hookimpl
def register_aggregators(register):
    register("proto", ProtoAggregator)
