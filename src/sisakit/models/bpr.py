"""``bpr-mf``: Bayesian Personalised Ranking matrix factorisation (Rendle et al., 2009).

The gradient is written in closed form (no autograd graph), scattered into one dense gradient
buffer and applied with torch's fused Adam kernel. ``benchmarks/bench_optimizer.py`` compares
this step with autograd + ``torch.optim.Adam`` (plain and fused). Rows that a shard never trained
have zero gradient and zero Adam moments, so they keep their seeded initial value exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch.optim.adam import adam

from .._device import resolve_device, torch_generator
from .._rng import INIT, derive_seed, seed_from_tensor, seed_to_tensor
from .._validation import MAX_BATCH, MAX_WIDTH
from ..constraints import Constraint, Device, Interval
from ..errors import ValidationError
from ..hookspecs import hookimpl
from .base import ShardModel, allocation_guard

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


def negative_pool(data: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                      torch.Tensor]:
    """What :func:`sample_negatives` needs for the records of ``data``.

    Returns ``(users, items, local, positives, active)``: the records' user and item indices, each
    record's user numbered densely within ``data`` (``local``), the flat boolean table of
    ``(local user, item)`` positives, and the active items to draw from.
    """
    users = torch.from_numpy(np.array(data.user_idx))
    items = torch.from_numpy(np.array(data.item_idx))
    uniq, local = torch.unique(users, return_inverse=True)
    positives = torch.zeros(len(uniq) * data.n_items, dtype=torch.bool)
    positives[local * data.n_items + items] = True
    active = torch.from_numpy(np.flatnonzero(data.item_active))
    if len(active) == 0:
        raise ValidationError("no active items to sample negatives from")
    return users, items, local, positives, active


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

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "factors": Interval(int, 1, MAX_WIDTH),
        "lr": Interval(float, 0, None, closed="right", example=0.01),
        "reg": Interval(float, 0, None, example=1e-4),
        "batch_size": Interval(int, 1, MAX_BATCH),
        "init_std": Interval(float, 0, None, example=0.1),
        "device": Device(),
    }

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
        self.validate_params()  # refuse bad parameters now, before any fit allocates
        self._state: dict[str, torch.Tensor] | None = None

    # Internal layout: one table E holding the rows of the users this model has trained on
    # (sorted by user index; ``rows`` maps them back, ``local`` maps user index -> row or -1)
    # followed by every item, d + 1 columns. A user's last column is a constant 1 and an item's
    # last column is its bias, so x_uij = <E_u, E_i - E_j> includes b_i - b_j, and one
    # index_add/Adam per step updates users, items and biases together. Users a shard never
    # trained on keep their seeded initial vector, regenerated on demand, so a shard's table,
    # optimizer state and checkpoints scale with the shard rather than the whole user base. Every
    # update is per row, so this layout gives the same numbers as a full user table would.

    def setup(self, space: Any, *, seed: int) -> None:
        self.validate_params()
        self._init_seed = derive_seed(seed, INIT)
        self.n_users, self.n_items = int(space.n_users), int(space.n_items)
        self._p0: torch.Tensor | None = None
        with allocation_guard(self, space, f"factors={self.factors}"):
            _, q = self._init_tables(self.n_users, self.n_items, self._init_seed)
            self._allocate(torch.zeros(0, dtype=torch.int64), torch.zeros(0, int(self.factors)),
                           q, torch.zeros(self.n_items))

    def _init_tables(self, n_users: int, n_items: int | None, init_seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = torch_generator(init_seed)
        d = int(self.factors)
        p = torch.randn(n_users, d, generator=g) * self.init_std
        q = None if n_items is None else torch.randn(n_items, d, generator=g) * self.init_std
        return p, q

    def _initial_users(self) -> torch.Tensor:
        """The seeded initial user vectors (cached; only rows never trained are read from it)."""
        if self._p0 is None:
            self._p0, _ = self._init_tables(self.n_users, None, self._init_seed)
        return self._p0

    def _allocate(self, rows: torch.Tensor, p: torch.Tensor, q: torch.Tensor, b: torch.Tensor,
                  m: torch.Tensor | None = None, v: torch.Tensor | None = None,
                  step: torch.Tensor | None = None) -> None:
        dev = resolve_device(self.device)
        e = torch.cat([torch.cat([p, torch.ones(len(p), 1)], 1), torch.cat([q, b[:, None]], 1)])
        local = torch.full((self.n_users,), -1, dtype=torch.int64)
        local[rows] = torch.arange(len(rows))
        self._state = {
            "E": e.to(dev),
            "opt.m": (torch.zeros_like(e) if m is None else m).to(dev),
            "opt.v": (torch.zeros_like(e) if v is None else v).to(dev),
            "opt.step": (torch.zeros((), dtype=torch.float32) if step is None
                         else step.to(torch.float32)).to(dev),
            "grad": torch.zeros_like(e, device=dev),
            "rows": rows.clone(),
            "local": local,
        }

    def _add_users(self, users: torch.Tensor) -> None:
        """Give the users about to be trained their own rows (seeded initial vectors)."""
        st = self._require()
        new = users[st["local"][users] < 0]
        if len(new) == 0:
            return
        nl, d = len(st["rows"]), int(self.factors)
        rows = torch.cat([st["rows"], new])
        order = torch.argsort(rows)
        rows = rows[order]
        p0 = self._initial_users()[new]
        dev = st["E"].device
        # Old rows keep their values and moments; new rows start from the seed, moments zero.
        users_e = torch.cat([st["E"][:nl], torch.cat([p0, torch.ones(len(new), 1)], 1).to(dev)])
        zeros = torch.zeros(len(new), d + 1, device=dev)
        users_m = torch.cat([st["opt.m"][:nl], zeros])
        users_v = torch.cat([st["opt.v"][:nl], zeros])
        self._allocate(rows, users_e[order, :d].cpu(), st["E"][nl:, :d].cpu(),
                       st["E"][nl:, d].cpu(),
                       m=torch.cat([users_m[order], st["opt.m"][nl:]]),
                       v=torch.cat([users_v[order], st["opt.v"][nl:]]), step=st["opt.step"])

    def _require(self) -> dict[str, torch.Tensor]:
        if self._state is None:
            raise ValidationError("this model has no parameters yet; call fit() or setup() first")
        return self._state

    def partial_fit(self, data: Any, *, epoch_seeds: Sequence[int]) -> None:
        self._require()
        if len(data) == 0 or not epoch_seeds:
            return
        with allocation_guard(self, data, f"factors={self.factors}"):
            self._train(data, epoch_seeds)

    def _train(self, data: Any, epoch_seeds: Sequence[int]) -> None:
        n_items = self.n_items
        users, items, local, positives, active = negative_pool(data)
        self._add_users(torch.unique(users))
        st = self._require()
        dev = st["E"].device
        rows_of = st["local"][users]  # each record's user row in E
        offset = len(st["rows"])  # items follow the user rows
        n, bs = len(users), int(self.batch_size)
        for seed in epoch_seeds:
            g = torch_generator(seed)
            perm = torch.randperm(n, generator=g)
            eu, ei = rows_of[perm], items[perm]
            ej = sample_negatives(local[perm], positives, active, n_items, g)
            eu, ei, ej = eu.to(dev), (ei + offset).to(dev), (ej + offset).to(dev)
            for start in range(0, n, bs):  # one iteration per mini-batch, vectorised inside
                self._step(eu[start:start + bs], ei[start:start + bs], ej[start:start + bs])

    def _step(self, bu: torch.Tensor, bi: torch.Tensor, bj: torch.Tensor) -> None:
        """One BPR step on rows ``bu`` (users) and ``bi``/``bj`` (items) of the table E."""
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
        _adam_step(E, grad, m, v, st["opt.step"], self.lr)

    def _user_vectors(self, user_idx: torch.Tensor) -> torch.Tensor:
        """(d + 1)-vectors of the given users: trained rows, else the seeded initial vector."""
        st = self._require()
        E = st["E"]
        row = st["local"][user_idx.cpu()]
        out = torch.empty(len(user_idx), E.shape[1], device=E.device)
        trained = row >= 0
        if bool(trained.any()):
            out[trained.to(E.device)] = E.index_select(0, row[trained].to(E.device))
        if not bool(trained.all()):
            p0 = self._initial_users()[user_idx.cpu()[~trained]]
            out[(~trained).to(E.device)] = torch.cat([p0, torch.ones(len(p0), 1)], 1).to(E.device)
        return out

    def scores(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        st = self._require()
        E = st["E"]
        u = torch.as_tensor(np.asarray(user_idx), dtype=torch.int64)
        return self._user_vectors(u) @ E[len(st["rows"]):].T  # the constant column adds the bias

    _KEYS = ("init_seed", "n_users", "user_rows", "P", "opt.mP", "opt.vP", "Q", "b", "opt.mQ",
             "opt.vQ", "opt.mb", "opt.vb", "opt.step")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Training state: the rows of the users this model trained on (the others still hold
        their seeded initial value, which ``init_seed`` regenerates), every item, the Adam
        moments and step. Its size follows the shard, not the whole user base."""
        st = self._require()
        d, nl = int(self.factors), len(st["rows"])
        E, m, v = (st[k].detach().cpu() for k in ("E", "opt.m", "opt.v"))
        return {
            "init_seed": seed_to_tensor(self._init_seed),
            "n_users": torch.tensor(self.n_users, dtype=torch.int64),
            "user_rows": st["rows"].clone(),
            "P": E[:nl, :d].clone(), "opt.mP": m[:nl, :d].clone(), "opt.vP": v[:nl, :d].clone(),
            "Q": E[nl:, :d].clone(), "b": E[nl:, d].clone(),
            "opt.mQ": m[nl:, :d].clone(), "opt.vQ": v[nl:, :d].clone(),
            "opt.mb": m[nl:, d].clone(), "opt.vb": v[nl:, d].clone(),
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
        self.validate_params()
        n_users = int(state["n_users"])
        rows = state["user_rows"].long()
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n_users
                          or bool((rows[1:] <= rows[:-1]).any())):
            raise ValidationError("state has user rows outside the user table or out of order")
        self.n_users, self.n_items = n_users, int(state["Q"].shape[0])
        self._init_seed = seed_from_tensor(state["init_seed"])
        self._p0 = None

        def moments(kind: str) -> torch.Tensor:
            return torch.cat([
                torch.cat([state[f"opt.{kind}P"], torch.zeros(len(rows), 1)], 1),
                torch.cat([state[f"opt.{kind}Q"], state[f"opt.{kind}b"][:, None]], 1)])

        self._allocate(rows, state["P"], state["Q"], state["b"], m=moments("m"),
                       v=moments("v"), step=state["opt.step"])

    def user_embeddings(self) -> torch.Tensor:
        """User factors ``(n_users, factors)``: trained rows, and the seeded initial vector of
        users this model never trained on (a new tensor, not a view)."""
        u = torch.arange(self.n_users)
        return self._user_vectors(u)[:, : self.factors]

    def set_user_embeddings(self, user_idx: torch.Tensor, values: torch.Tensor) -> None:
        st = self._require()
        self._add_users(torch.unique(torch.as_tensor(user_idx, dtype=torch.int64).cpu()))
        st = self._require()
        rows = st["local"][torch.as_tensor(user_idx, dtype=torch.int64).cpu()].to(st["E"].device)
        st["E"][rows, : self.factors] = values.to(st["E"].device, st["E"].dtype)

    def item_embeddings(self) -> torch.Tensor:
        """Item factors ``(n_items, factors)`` (a view of the live parameters)."""
        st = self._require()
        return st["E"][len(st["rows"]):, : self.factors]

    def item_biases(self) -> torch.Tensor:
        """Item biases ``(n_items,)`` (a view of the live parameters)."""
        st = self._require()
        return st["E"][len(st["rows"]):, self.factors]

    @property
    def optimizer_impl(self) -> str:
        """The optimizer implementation this model trains with on its device."""
        return f"row-gradient BPR + {adam_implementation(resolve_device(self.device))}"

    def n_parameters(self) -> int:
        """Trained parameters: the rows of users this model trained on, all items and biases."""
        trained = len(self._require()["rows"])
        return (trained + self.n_items) * int(self.factors) + self.n_items


@hookimpl
def register_models(register):
    register("bpr-mf", BPRMF)
