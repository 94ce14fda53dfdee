"""``ncf``: Neural Collaborative Filtering, the NeuMF model (He et al., WWW 2017).

A generalised-MF branch (element-wise product of user and item embeddings) and an MLP branch
(a tower over the concatenated user and item embeddings) are joined by a final linear layer into
one logit, trained with binary cross-entropy on observed pairs and ``n_negatives`` sampled
negatives per positive. The user embedding exposed to attackers and to PoT-AU is the
concatenation of both branches' user vectors.

All randomness (initialisation, shuffling, negatives) comes from seeded generators and the
optimizer state is part of the checkpoint, so SISA retraining is bit-exact on the CPU.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .._device import resolve_device, torch_generator
from .._rng import INIT, derive_seed, seed_from_tensor
from .._validation import MAX_BATCH, MAX_WIDTH
from ..constraints import Constraint, Device, Interval, Sizes
from ..errors import ValidationError
from ..hookspecs import hookimpl
from ._module_state import load_module_state, module_state
from .base import ShardModel, _Space, allocation_guard
from .bpr import negative_pool, sample_negatives


class _NeuMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, d: int, layers: Sequence[int]) -> None:
        super().__init__()
        self.user_gmf = nn.Embedding(n_users, d)
        self.item_gmf = nn.Embedding(n_items, d)
        self.user_mlp = nn.Embedding(n_users, d)
        self.item_mlp = nn.Embedding(n_items, d)
        sizes = [2 * d, *layers]
        self.tower = nn.Sequential(*[m for a, b in itertools.pairwise(sizes)
                                     for m in (nn.Linear(a, b), nn.ReLU())])
        self.out = nn.Linear(d + sizes[-1], 1)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        gmf = self.user_gmf(u) * self.item_gmf(i)
        mlp = self.tower(torch.cat([self.user_mlp(u), self.item_mlp(i)], -1))
        return self.out(torch.cat([gmf, mlp], -1)).squeeze(-1)


#: Negatives sampled per positive (each epoch trains on ``(1 + n_negatives)`` pairs per record).
MAX_NEGATIVES = 1_000


class NCF(ShardModel):
    """NeuMF trained with BCE on sampled negatives.

    Parameters
    ----------
    factors : int
        Embedding size of each branch.
    layers : tuple of int
        Hidden sizes of the MLP tower.
    lr : float
        Adam learning rate.
    n_negatives : int
        Negatives sampled per positive and epoch.
    batch_size : int
        Training pairs (positives and negatives) per step.
    score_batch : int
        Users scored at once in :meth:`scores` (full ranking evaluates the network on every
        (user, item) pair).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "factors": Interval(int, 1, MAX_WIDTH),
        "layers": Sizes(example="(64, 32)"),
        "lr": Interval(float, 0, None, closed="right", example=0.001),
        "n_negatives": Interval(int, 1, MAX_NEGATIVES),
        "batch_size": Interval(int, 1, MAX_BATCH),
        "score_batch": Interval(int, 1, MAX_BATCH),
        "device": Device(),
    }

    def __init__(self, factors: int = 32, layers: tuple[int, ...] = (64, 32), lr: float = 0.001,
                 n_negatives: int = 4, batch_size: int = 4096, score_batch: int = 128,
                 device: str = "auto") -> None:
        self.factors = factors
        self.layers = layers  # stored as a tuple of ints by _validate
        self.lr = lr
        self.n_negatives = n_negatives
        self.batch_size = batch_size
        self.score_batch = score_batch
        self.device = device
        self._validate()  # refuse bad parameters now, before any fit allocates
        self._net: _NeuMF | None = None

    def _validate(self) -> None:
        self.validate_params()
        self.layers = tuple(int(h) for h in self.layers)

    def _build(self, n_users: int, n_items: int, seed: int) -> None:
        self._validate()
        dev = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]), allocation_guard(  # seeded init, global
                self, _Space(n_users, n_items), f"factors={self.factors}"):  # state untouched
            torch.manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
            net = _NeuMF(n_users, n_items, int(self.factors), [int(h) for h in self.layers])
            for emb in (net.user_gmf, net.item_gmf, net.user_mlp, net.item_mlp):
                nn.init.normal_(emb.weight, std=0.01)
        self._net = net.to(dev)
        self._opt = torch.optim.Adam(self._net.parameters(), lr=self.lr, foreach=False)
        self.n_users, self.n_items = int(n_users), int(n_items)

    def setup(self, space: Any, *, seed: int) -> None:
        self._init_seed = derive_seed(seed, INIT)
        self._build(space.n_users, space.n_items, self._init_seed)

    def _require(self) -> _NeuMF:
        if self._net is None:
            raise ValidationError("this model has no parameters yet; call fit() or setup() first")
        return self._net

    def partial_fit(self, data: Any, *, epoch_seeds: Sequence[int]) -> None:
        net = self._require()
        if len(data) == 0 or not epoch_seeds:
            return
        with allocation_guard(self, data, f"n_negatives={self.n_negatives}"):
            self._train(net, data, epoch_seeds)

    def _train(self, net: _NeuMF, data: Any, epoch_seeds: Sequence[int]) -> None:
        dev = next(net.parameters()).device
        n_items, k = self.n_items, int(self.n_negatives)
        users, items, local, positives, active = negative_pool(data)
        loss_fn = nn.BCEWithLogitsLoss()
        net.train()
        for seed in epoch_seeds:
            g = torch_generator(seed)
            neg = sample_negatives(local.repeat(k), positives, active, n_items, g)
            u_all = torch.cat([users, users.repeat(k)])
            i_all = torch.cat([items, neg])
            y_all = torch.cat([torch.ones(len(users)), torch.zeros(len(neg))])
            perm = torch.randperm(len(u_all), generator=g)
            u_all, i_all, y_all = u_all[perm].to(dev), i_all[perm].to(dev), y_all[perm].to(dev)
            bs = int(self.batch_size)
            for start in range(0, len(u_all), bs):  # one iteration per mini-batch
                sl = slice(start, start + bs)
                self._opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(u_all[sl], i_all[sl]), y_all[sl])
                loss.backward()
                self._opt.step()
        net.eval()

    @torch.no_grad()
    def scores(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        net = self._require()
        dev = next(net.parameters()).device
        u = torch.as_tensor(np.asarray(user_idx), dtype=torch.int64, device=dev)
        items = torch.arange(self.n_items, device=dev)
        out = torch.empty(len(u), self.n_items, device=dev)
        for start in range(0, len(u), int(self.score_batch)):  # batches of users, not per user
            ub = u[start:start + int(self.score_batch)]
            out[start:start + len(ub)] = net(ub.repeat_interleave(self.n_items),
                                             items.repeat(len(ub))).view(len(ub), self.n_items)
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        net = self._require()
        return module_state(net, self._opt, self._init_seed)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` (no :meth:`setup` needed first)."""
        if "net.user_gmf.weight" not in state or "init_seed" not in state:
            raise ValidationError("state was not saved by an ncf model")
        n_users, d = state["net.user_gmf.weight"].shape
        if d != self.factors:
            raise ValidationError(f"state has {d} factors but this model has {self.factors}")
        self._init_seed = seed_from_tensor(state["init_seed"])
        self._build(int(n_users), int(state["net.item_gmf.weight"].shape[0]), self._init_seed)
        net = self._require()
        load_module_state(net, self._opt, state, "ncf")

    def user_embeddings(self) -> torch.Tensor:
        """Concatenated GMF and MLP user vectors ``(n_users, 2·factors)`` (a new tensor)."""
        net = self._require()
        return torch.cat([net.user_gmf.weight, net.user_mlp.weight], 1).detach().clone()

    def item_embeddings(self) -> torch.Tensor:
        """Concatenated GMF and MLP item vectors ``(n_items, 2·factors)`` (a new tensor)."""
        net = self._require()
        return torch.cat([net.item_gmf.weight, net.item_mlp.weight], 1).detach().clone()

    @torch.no_grad()
    def set_user_embeddings(self, user_idx: torch.Tensor, values: torch.Tensor) -> None:
        net = self._require()
        d = int(self.factors)
        idx = torch.as_tensor(user_idx, dtype=torch.int64).to(net.user_gmf.weight.device)
        values = values.to(net.user_gmf.weight)
        net.user_gmf.weight[idx] = values[:, :d]
        net.user_mlp.weight[idx] = values[:, d:]

    optimizer_impl = "torch.optim.Adam(foreach=False), autograd"

    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self._require().parameters()))


@hookimpl
def register_models(register):
    register("ncf", NCF)
