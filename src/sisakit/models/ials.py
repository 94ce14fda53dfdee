"""``ials``: implicit-feedback alternating least squares (Hu, Koren & Volinsky, 2008).

Minimises ``sum_{u,i} c_ui (p_ui - x_u·y_i)^2 + reg (|X|^2 + |Y|^2)`` with preference
``p_ui = 1`` for observed pairs (0 otherwise) and confidence ``c_ui = 1 + alpha * r_ui``, where
``r_ui`` is the summed weight of the (u, i) records (1 per record without a weight column).

Each half-step solves the normal equations of every user (then every item) at once with a few
conjugate-gradient steps, warm-started from the current factors. The product with the
confidence-weighted Gram matrix never forms it: ``A v = (YᵀY + reg·I) v + alpha·Yᵀ(R ∘ (V Yᵀ))``
where ``R ∘ (V Yᵀ)`` is a sampled dense-dense product on the sparsity pattern of the data
(``torch.sparse.sampled_addmm``) and the outer product is a sparse-dense matmul. There is no
randomness beyond the seeded initial item factors, so retraining is bit-exact.

Users and items without records in the training data keep zero factors and never enter the
Gram matrices: no untrained parameter influences a recommendation.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from .._device import resolve_device, torch_generator
from .._rng import INIT, derive_seed, seed_from_tensor, seed_to_tensor
from .._validation import MAX_WIDTH
from ..constraints import Constraint, Device, Interval
from ..errors import DataError, ValidationError
from ..hookspecs import hookimpl
from .base import ShardModel, allocation_guard

#: Conjugate-gradient steps per half-step: CG solves a d x d system in at most d steps.
_MAX_CG_STEPS = 10_000


def _csr(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, shape: tuple[int, int],
         device: torch.device) -> torch.Tensor:
    """A CSR tensor from COO triples (duplicates summed, columns sorted within rows)."""
    key = rows * shape[1] + cols
    uniq, inv = torch.unique(key, return_inverse=True)
    summed = torch.zeros(len(uniq), dtype=vals.dtype).index_add_(0, inv, vals)
    r, c = uniq // shape[1], uniq % shape[1]
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(r, minlength=shape[0]), 0)
    return _csr_tensor(crow, c, summed, shape, device)


def _csr_tensor(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor,
                shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    with warnings.catch_warnings():  # torch flags CSR support as beta; the ops used are stable
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow.to(device), col.to(device), values.to(device),
                                       size=shape, check_invariants=False)


class _Side:
    """The sparse operators of one half-step (users given items, or items given users)."""

    def __init__(self, pattern: torch.Tensor, alpha: float) -> None:
        self.pattern = pattern  # CSR with values r (rows: solved side, cols: fixed side)
        self.r = pattern.values()
        self.conf = 1.0 + alpha * self.r  # c = 1 + alpha r: right-hand side weights
        self.extra = alpha * self.r  # c - 1: weights of the Gram correction
        self.crow, self.col = pattern.crow_indices(), pattern.col_indices()

    def with_values(self, values: torch.Tensor) -> torch.Tensor:
        return _csr_tensor(self.crow, self.col, values, tuple(self.pattern.shape), values.device)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1, keepdim=True)


def _solve(side: _Side, fixed: torch.Tensor, x: torch.Tensor, reg: float, steps: int) -> torch.Tensor:
    """A few conjugate-gradient steps on ``A_u x_u = b_u`` for every row ``u`` at once."""
    gram = fixed.T @ fixed + reg * torch.eye(fixed.shape[1], dtype=fixed.dtype,
                                             device=fixed.device)
    b = side.with_values(side.conf) @ fixed

    def apply(v: torch.Tensor) -> torch.Tensor:
        dots = torch.sparse.sampled_addmm(side.pattern, v, fixed.T, beta=0.0).values()
        return v @ gram + side.with_values(dots * side.extra) @ fixed

    res = b - apply(x)
    p = res.clone()
    rs_old = _rowdot(res, res)
    for _ in range(steps):
        ap = apply(p)
        denom = _rowdot(p, ap)
        step = torch.where(denom > 0, rs_old / torch.where(denom > 0, denom, 1.0), 0.0)
        x = x + step * p
        res = res - step * ap
        rs_new = _rowdot(res, res)
        beta = torch.where(rs_old > 0, rs_new / torch.where(rs_old > 0, rs_old, 1.0), 0.0)
        p = res + beta * p
        rs_old = rs_new
    return x


class IALS(ShardModel):
    """Weighted matrix factorisation for implicit feedback, solved by alternating least squares.

    Parameters
    ----------
    factors : int
        Embedding dimension.
    reg : float
        L2 regularisation of user and item factors.
    alpha : float
        Confidence scale: ``c = 1 + alpha * r``.
    cg_steps : int
        Conjugate-gradient steps per half-step (warm-started).
    init_std : float
        Standard deviation of the initial item factors.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.

    Notes
    -----
    One epoch is one ALS iteration (users, then items). No random numbers are drawn after
    initialisation, so the epoch seeds SISA passes are not used.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "factors": Interval(int, 1, MAX_WIDTH),
        "reg": Interval(float, 0, None, example=0.01),
        "alpha": Interval(float, 0, None, closed="right", example=1.0),
        "cg_steps": Interval(int, 1, _MAX_CG_STEPS),
        "init_std": Interval(float, 0, None, example=0.01),
        "device": Device(),
    }

    def __init__(
        self,
        factors: int = 64,
        reg: float = 0.01,
        alpha: float = 1.0,
        cg_steps: int = 3,
        init_std: float = 0.01,
        device: str = "auto",
    ) -> None:
        self.factors = factors
        self.reg = reg
        self.alpha = alpha
        self.cg_steps = cg_steps
        self.init_std = init_std
        self.device = device
        self.validate_params()  # refuse bad parameters now, before any fit allocates
        self._state: dict[str, torch.Tensor] | None = None

    def setup(self, space: Any, *, seed: int) -> None:
        self.validate_params()
        self.n_users, self.n_items = int(space.n_users), int(space.n_items)
        self._init_seed = derive_seed(seed, INIT)
        dev = resolve_device(self.device)
        with allocation_guard(self, space, f"factors={self.factors}"):
            self._state = {
                "X": torch.zeros(self.n_users, int(self.factors), device=dev),
                "Y": torch.zeros(self.n_items, int(self.factors), device=dev),
                "item_initialised": torch.zeros(self.n_items, dtype=torch.bool, device=dev),
            }

    def _require(self) -> dict[str, torch.Tensor]:
        if self._state is None:
            raise ValidationError("this model has no parameters yet; call fit() or setup() first")
        return self._state

    def _confidence(self, data: Any) -> torch.Tensor:
        w = np.ones(len(data), np.float32) if data.weight is None else data.weight
        w = np.asarray(w, dtype=np.float32)
        if not np.isfinite(w).all() or (w < 0).any():
            raise DataError(
                "ials needs finite, non-negative interaction weights (confidence 1 + alpha*w); "
                "drop or clip the negative/NaN weights"
            )
        return torch.from_numpy(w.copy())

    def partial_fit(self, data: Any, *, epoch_seeds: Sequence[int]) -> None:
        st = self._require()
        self.validate_params()
        if len(data) == 0 or not epoch_seeds:
            return
        with allocation_guard(self, data, f"factors={self.factors}"):
            self._train(st, data, epoch_seeds)

    def _train(self, st: dict[str, torch.Tensor], data: Any, epoch_seeds: Sequence[int]) -> None:
        dev = st["X"].device
        r = self._confidence(data)
        users = torch.from_numpy(np.array(data.user_idx))
        items = torch.from_numpy(np.array(data.item_idx))
        u_ids, u_loc = torch.unique(users, return_inverse=True)
        i_ids, i_loc = torch.unique(items, return_inverse=True)
        # Items that enter training now start from their seeded initial factors.
        fresh = i_ids[~st["item_initialised"][i_ids.to(dev)].cpu()]
        if len(fresh):
            y0 = torch.randn(self.n_items, int(self.factors),
                             generator=torch_generator(self._init_seed)) * self.init_std
            st["Y"][fresh.to(dev)] = y0[fresh].to(dev)
            st["item_initialised"][fresh.to(dev)] = True
        nu, ni = len(u_ids), len(i_ids)
        by_user = _Side(_csr(u_loc, i_loc, r, (nu, ni), dev), float(self.alpha))
        by_item = _Side(_csr(i_loc, u_loc, r, (ni, nu), dev), float(self.alpha))
        u_dev, i_dev = u_ids.to(dev), i_ids.to(dev)
        x, y = st["X"][u_dev], st["Y"][i_dev]
        reg, steps = float(self.reg), int(self.cg_steps)
        for _ in epoch_seeds:  # one ALS iteration per epoch
            x = _solve(by_user, y, x, reg, steps)
            y = _solve(by_item, x, y, reg, steps)
        st["X"][u_dev] = x
        st["Y"][i_dev] = y

    def scores(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        st = self._require()
        u = torch.as_tensor(np.asarray(user_idx), dtype=torch.int64, device=st["X"].device)
        return st["X"].index_select(0, u) @ st["Y"].T

    def state_dict(self) -> dict[str, torch.Tensor]:
        st = self._require()
        out = {k: v.detach().cpu().clone() for k, v in st.items()}
        out["init_seed"] = seed_to_tensor(self._init_seed)
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` (no :meth:`setup` needed first)."""
        expected = {"X", "Y", "item_initialised", "init_seed"}
        if set(state) != expected:
            raise ValidationError(
                f"state has keys {sorted(state)}, expected {sorted(expected)}; it was not saved "
                "by an ials model"
            )
        if state["X"].ndim != 2 or state["X"].shape[1] != self.factors:
            raise ValidationError(
                f"state has factors of shape {tuple(state['X'].shape)} but this model has "
                f"{self.factors} factors"
            )
        self.validate_params()
        dev = resolve_device(self.device)
        self._state = {k: state[k].to(dev).clone() for k in ("X", "Y", "item_initialised")}
        self._init_seed = seed_from_tensor(state["init_seed"])
        self.n_users, self.n_items = int(state["X"].shape[0]), int(state["Y"].shape[0])

    def user_embeddings(self) -> torch.Tensor:
        """User factors ``(n_users, factors)`` (zero for users without training data)."""
        return self._require()["X"]

    def set_user_embeddings(self, user_idx: torch.Tensor, values: torch.Tensor) -> None:
        st = self._require()
        idx = torch.as_tensor(user_idx, dtype=torch.int64).to(st["X"].device)
        st["X"][idx] = values.to(st["X"].device, st["X"].dtype)

    def item_embeddings(self) -> torch.Tensor:
        """Item factors ``(n_items, factors)`` (zero for items without training data)."""
        return self._require()["Y"]

    optimizer_impl = "alternating least squares, conjugate gradient (torch sparse CSR)"

    def n_parameters(self) -> int:
        """Trained parameters: factors of the users and items that had training data."""
        st = self._require()
        trained = int((st["X"].abs().sum(1) > 0).sum()) + int(st["item_initialised"].sum())
        return trained * int(self.factors)


@hookimpl
def register_models(register):
    register("ials", IALS)
