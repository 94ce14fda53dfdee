"""``bpr-mf``: Bayesian Personalised Ranking matrix factorisation (Rendle et al., 2009).

The gradient is written in closed form (no autograd graph), scattered into one dense gradient
buffer and applied with torch's fused Adam kernel. ``benchmarks/bench_optimizer.py`` compares
this step with autograd + ``torch.optim.Adam`` (plain and fused). Rows that a shard never trained
have zero gradient and zero Adam moments, so they keep their seeded initial value exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.optim.adam import adam

from .._device import resolve_device, torch_generator
from .._rng import INIT, derive_seed
from ..errors import ValidationError
from ..hookspecs import hookimpl
from .base import ShardModel

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


def sample_negatives(
    local_users: torch.Tensor,
    positives: torch.Tensor,
    active_items: torch.Tensor,
    n_items: int,
    generator: torch.Generator,
    max_rounds: int = 50,
) -> torch.Tensor:
    """Uniform negatives over ``active_items``, rejecting each user's own positives.

    ``positives`` is a flat boolean table indexed by ``local_user * n_items + item`` (users
    numbered densely within the training records), so a rejection test is one gather;
    rejection is vectorised over all records, one round per retry.
    """
    n = len(local_users)
    neg = active_items[torch.randint(len(active_items), (n,), generator=generator)]
    todo = torch.arange(n)
    base = local_users * n_items
    for _ in range(max_rounds):
        clash = positives[base[todo] + neg[todo]]
        if not bool(clash.any()):
            break
        todo = todo[clash]
        neg[todo] = active_items[torch.randint(len(active_items), (len(todo),), generator=generator)]
    return neg


def _adam_step(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
               step: torch.Tensor, lr: float) -> None:
    """One Adam update of ``param`` in place: torch's fused kernel when this build has it for
    the device, else the single-tensor implementation (both deterministic)."""
    kwargs = dict(amsgrad=False, beta1=_BETA1, beta2=_BETA2, lr=lr, weight_decay=0.0, eps=_EPS,
                  maximize=False)
    dev = param.device.type
    if _FUSED_OK.get(dev, True):
        try:
            adam([param], [grad], [m], [v], [], [step], fused=True, **kwargs)
            _FUSED_OK[dev] = True
            return
        except (RuntimeError, NotImplementedError):  # no fused Adam for this device/torch build
            _FUSED_OK[dev] = False
    adam([param], [grad], [m], [v], [], [step], foreach=False, **kwargs)


_FUSED_OK: dict[str, bool] = {}


def adam_implementation(device: torch.device) -> str:
    """Which Adam kernel :func:`_adam_step` uses on ``device`` (recorded in run manifests,
    since exactness is promised only under the same implementation)."""
    if device.type not in _FUSED_OK:
        p = torch.zeros(2, device=device)
        _adam_step(p, torch.ones_like(p), torch.zeros_like(p), torch.zeros_like(p),
                   torch.zeros((), device=device), 1e-3)
    return "torch adam fused" if _FUSED_OK[device.type] else "torch adam single-tensor"


class BPRMF(ShardModel):
    """BPR matrix factorisation with item biases, trained with row-sparse Adam.

    Parameters
    ----------
    factors : int
        Embedding dimension.
    lr : float
        Adam learning rate.
    reg : float
        L2 penalty on the embedding rows of each sampled triple.
    batch_size : int
        Triples per optimizer step.
    init_std : float
        Standard deviation of the normal initialisation.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    """

    def __init__(
        self,
        factors: int = 64,
        lr: float = 0.01,
        reg: float = 1e-4,
        batch_size: int = 4096,
        init_std: float = 0.1,
        device: str = "auto",
    ) -> None:
        self.factors = factors
        self.lr = lr
        self.reg = reg
        self.batch_size = batch_size
        self.init_std = init_std
        self.device = device
        self._state: dict[str, torch.Tensor] | None = None

    def _validate(self) -> None:
        if not isinstance(self.factors, (int, np.integer)) or self.factors < 1:
            raise ValidationError(f"factors must be a positive integer, got {self.factors!r}")
        if not self.lr > 0:
            raise ValidationError(f"lr must be > 0, got {self.lr!r}")
        if self.reg < 0:
            raise ValidationError(f"reg must be >= 0, got {self.reg!r}")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValidationError(f"batch_size must be a positive integer, got {self.batch_size!r}")

    # Internal layout: one table E with the users in rows [0, n_users) and the items after
    # them, d + 1 columns. A user's last column is a constant 1 and an item's last column is its
    # bias, so x_uij = <E_u, E_i - E_j> includes b_i - b_j, and one unique/index_add/Adam per
    # step updates users, items and biases together (the step is kernel-launch bound on a CPU).

    def setup(self, space: Any, *, seed: int) -> None:
        self._validate()
        self._init_seed = derive_seed(seed, INIT)
        self.n_users, self.n_items = int(space.n_users), int(space.n_items)
        p, q = self._init_tables(self.n_users, self.n_items, self._init_seed)
        self._allocate(p, q, torch.zeros(self.n_items))

    def _init_tables(self, n_users: int, n_items: int | None, init_seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = torch_generator(init_seed)
        d = int(self.factors)
        p = torch.randn(n_users, d, generator=g) * self.init_std
        q = None if n_items is None else torch.randn(n_items, d, generator=g) * self.init_std
        return p, q

    def _allocate(self, p: torch.Tensor, q: torch.Tensor, b: torch.Tensor) -> None:
        e = torch.cat([torch.cat([p, torch.ones(len(p), 1)], 1), torch.cat([q, b[:, None]], 1)])
        dev = resolve_device(self.device)
        self._state = {
            "E": e.to(dev),
            "opt.m": torch.zeros_like(e, device=dev),
            "opt.v": torch.zeros_like(e, device=dev),
            "opt.step": torch.zeros((), dtype=torch.float32, device=dev),
            "touched": torch.zeros(len(p), dtype=torch.bool, device=dev),
            "grad": torch.zeros_like(e, device=dev),
        }

    def _require(self) -> dict[str, torch.Tensor]:
        if self._state is None:
            raise ValidationError("this model has no parameters yet; call fit() or setup() first")
        return self._state

    def partial_fit(self, data: Any, *, epoch_seeds: Sequence[int]) -> None:
        st = self._require()
        if len(data) == 0 or not epoch_seeds:
            return
        dev = st["E"].device
        n_items = self.n_items
        users = torch.from_numpy(np.array(data.user_idx))
        items = torch.from_numpy(np.array(data.item_idx))
        uniq, local = torch.unique(users, return_inverse=True)
        positives = torch.zeros(len(uniq) * n_items, dtype=torch.bool)
        positives[local * n_items + items] = True
        active = torch.from_numpy(np.flatnonzero(data.item_active))
        if len(active) == 0:
            raise ValidationError("no active items to sample negatives from")
        n, bs = len(users), int(self.batch_size)
        for seed in epoch_seeds:
            g = torch_generator(seed)
            perm = torch.randperm(n, generator=g)
            eu, ei = users[perm], items[perm]
            ej = sample_negatives(local[perm], positives, active, n_items, g)
            eu, ei, ej = eu.to(dev), (ei + self.n_users).to(dev), (ej + self.n_users).to(dev)
            for start in range(0, n, bs):  # one iteration per mini-batch, vectorised inside
                self._step(eu[start:start + bs], ei[start:start + bs], ej[start:start + bs])

    def _step(self, bu: torch.Tensor, bi: torch.Tensor, bj: torch.Tensor) -> None:
        """One BPR step on rows ``bu`` (users) and ``bi``/``bj`` (items, offset by n_users)."""
        st = self._state
        assert st is not None
        E, m, v = st["E"], st["opt.m"], st["opt.v"]
        d = int(self.factors)
        pu, qi, qj = E.index_select(0, bu), E.index_select(0, bi), E.index_select(0, bj)
        diff = qi - qj
        x = (pu * diff).sum(1)
        scale = 1.0 / len(bu)
        gx = (torch.sigmoid(-x) * -scale)[:, None]  # d/dx of -log(sigmoid(x)), batch mean
        c = 2.0 * float(self.reg) * scale
        g_pu = torch.addcmul(pu * c, gx, diff)
        g_pu[:, d] = 0.0  # the constant column of a user never moves
        g_qi = torch.addcmul(qi * c, gx, pu)
        g_qj = torch.addcmul(qj * c, gx, pu, value=-1.0)
        grad = st["grad"].zero_().index_add_(0, torch.cat([bu, bi, bj]),
                                             torch.cat([g_pu, g_qi, g_qj]))
        st["touched"][bu] = True
        _adam_step(E, grad, m, v, st["opt.step"], self.lr)

    def scores(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        st = self._require()
        E = st["E"]
        u = torch.as_tensor(np.asarray(user_idx), dtype=torch.int64, device=E.device)
        return E.index_select(0, u) @ E[self.n_users:].T  # the constant column adds the bias

    _KEYS = ("init_seed", "n_users", "user_rows", "P", "opt.mP", "opt.vP", "Q", "b", "opt.mQ",
             "opt.vQ", "opt.mb", "opt.vb", "opt.step")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Training state. User rows are stored only where training touched them: the other rows
        still hold their seeded initial value, which ``init_seed`` regenerates. This keeps a
        shard's checkpoint proportional to the shard, not to the whole user base."""
        st = self._require()
        d, nu = int(self.factors), self.n_users
        rows = torch.nonzero(st["touched"]).flatten()
        seed = self._init_seed - (1 << 64) if self._init_seed >= (1 << 63) else self._init_seed
        E, m, v = (st[k].detach().cpu() for k in ("E", "opt.m", "opt.v"))
        r = rows.cpu()
        return {
            "init_seed": torch.tensor(seed, dtype=torch.int64),
            "n_users": torch.tensor(nu, dtype=torch.int64),
            "user_rows": r.clone(),
            "P": E[r, :d].clone(), "opt.mP": m[r, :d].clone(), "opt.vP": v[r, :d].clone(),
            "Q": E[nu:, :d].clone(), "b": E[nu:, d].clone(),
            "opt.mQ": m[nu:, :d].clone(), "opt.vQ": v[nu:, :d].clone(),
            "opt.mb": m[nu:, d].clone(), "opt.vb": v[nu:, d].clone(),
            "opt.step": st["opt.step"].detach().cpu().clone(),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` (no :meth:`setup` needed first)."""
        if set(state) != set(self._KEYS):
            raise ValidationError(
                f"state has keys {sorted(state)}, expected {sorted(self._KEYS)}; it was not saved "
                "by a bpr-mf model"
            )
        if state["Q"].ndim != 2 or state["Q"].shape[1] != self.factors:
            raise ValidationError(
                f"state has item factors of shape {tuple(state['Q'].shape)} but this model has "
                f"{self.factors} factors"
            )
        self._validate()
        n_users, n_items = int(state["n_users"]), int(state["Q"].shape[0])
        init_seed = int(state["init_seed"]) & 0xFFFF_FFFF_FFFF_FFFF
        rows = state["user_rows"].long()
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n_users):
            raise ValidationError("state has user rows outside the user table")
        p, _ = self._init_tables(n_users, None, init_seed)
        p[rows] = state["P"]
        self.n_users, self.n_items, self._init_seed = n_users, n_items, init_seed
        self._allocate(p, state["Q"], state["b"])
        st, d = self._state, int(self.factors)
        for key, src in (("opt.m", "m"), ("opt.v", "v")):
            full = torch.zeros(n_users + n_items, d + 1)
            full[rows, :d] = state[f"opt.{src}P"]
            full[n_users:, :d] = state[f"opt.{src}Q"]
            full[n_users:, d] = state[f"opt.{src}b"]
            st[key] = full.to(st["E"].device)
        st["opt.step"] = state["opt.step"].to(torch.float32).to(st["E"].device).clone()
        st["touched"][rows.to(st["touched"].device)] = True

    def user_embeddings(self) -> torch.Tensor:
        """User factors ``(n_users, factors)`` (a view of the live parameters)."""
        return self._require()["E"][: self.n_users, : self.factors]

    def item_embeddings(self) -> torch.Tensor:
        """Item factors ``(n_items, factors)`` (a view of the live parameters)."""
        return self._require()["E"][self.n_users:, : self.factors]

    def item_biases(self) -> torch.Tensor:
        """Item biases ``(n_items,)`` (a view of the live parameters)."""
        return self._require()["E"][self.n_users:, self.factors]

    @property
    def optimizer_impl(self) -> str:
        """The optimizer implementation this model trains with on its device."""
        return f"row-gradient BPR + {adam_implementation(resolve_device(self.device))}"

    def n_parameters(self) -> int:
        """Trained parameters: the rows of users this model trained on, all items and biases."""
        touched = int(self._require()["touched"].sum())
        return (touched + self.n_items) * int(self.factors) + self.n_items


@hookimpl
def register_models(register):
    register("bpr-mf", BPRMF)
