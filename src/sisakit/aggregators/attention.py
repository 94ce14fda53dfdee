"""``attention``: RecEraser-style learned attention aggregation (Chen et al., WWW 2022).

Embedding mode (every shard model exposes user and item embeddings): each shard's embeddings go
through a learned per-shard transfer ``x -> x W_s + c_s`` into a common ``dim``-dimensional
space; a user's representation is the attention-weighted sum of its transferred shard vectors,
``alpha_us ∝ exp(h · relu(A e_us + a))`` over the shards that trained on the user, and an item's
likewise (own attention parameters, over the shards that trained on the item). The score is the
dot product of the two. The shard embeddings stay frozen; only the transfer and attention
parameters are trained, with a BPR objective on the training data.

Score mode (shard models without embeddings): the per-user weight of shard ``s`` is
``softmax_s(b_s + v · log(1 + n_us))`` over the shards that trained on the user (``n_us`` its
records there), applied to the shard scores; ``b`` and ``v`` are trained with the same objective.

In both modes a shard that never trained on a user gets attention weight exactly zero for that
user, so its (untrained) parameters cannot influence the user's scores.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from .._device import resolve_device, torch_generator
from .._rng import derive_seed
from .._validation import MAX_BATCH, MAX_SEED, MAX_STEPS, MAX_WIDTH
from ..constraints import Bool, Constraint, Device, Interval, Options
from ..errors import ValidationError
from ..hookspecs import hookimpl
from ..models.bpr import negative_pool, sample_negatives
from .base import Aggregator

logger = logging.getLogger(__name__)

_MODES = ("auto", "embeddings", "scores")


def masked_softmax(logits: torch.Tensor, valid: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Softmax over ``dim`` restricted to ``valid`` entries; exactly 0 elsewhere and where no
    entry is valid (never NaN)."""
    z = logits.masked_fill(~valid, -torch.inf)
    top = z.max(dim, keepdim=True).values
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()  # shift only
    e = torch.exp(z - top) * valid
    return e / e.sum(dim, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)


def fit_device(device: str, ensemble: Any) -> torch.device:
    """The device an aggregator fits on: ``"auto"`` follows the ensemble's device (whose
    determinism settings wrap the fit), anything else is resolved as given."""
    if device == "auto" and isinstance(getattr(ensemble, "device", None), torch.device):
        return ensemble.device
    return resolve_device(device)


def shard_embeddings(models: list[Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Stacked user ``(S, U, d)`` and item ``(S, I, d)`` embeddings (float32, CPU, detached), or
    None when some shard model has none."""
    users, items = [], []
    for m in models:
        p, q = m.user_embeddings(), m.item_embeddings()
        if p is None or q is None:
            return None
        users.append(p.detach().float().cpu())
        items.append(q.detach().float().cpu())
    if len({t.shape for t in users}) != 1 or len({t.shape for t in items}) != 1:
        raise ValidationError("shard models have embeddings of different shapes; use one model "
                              "configuration for every shard")
    return torch.stack(users), torch.stack(items)


def pair_scores(models: list[Any], users: torch.Tensor, items: torch.Tensor,
                batch_users: int = 1024) -> torch.Tensor:
    """Scores ``(S, N)`` of every shard model for the (user, item) pairs, one scoring call per
    shard and batch of distinct users."""
    uniq, inv = torch.unique(users, return_inverse=True)
    out = torch.empty(len(models), len(users))
    for start in range(0, len(uniq), batch_users):  # one iteration per batch of users
        sel = (inv >= start) & (inv < start + batch_users)
        rows, cols = inv[sel] - start, items[sel]
        ub = uniq[start:start + batch_users].numpy()
        for s, m in enumerate(models):
            out[s, sel] = m.scores(ub).float().cpu()[rows, cols]
    return out


class AttentionAggregator(Aggregator):
    """Learned attention over the shards, per user (and per item in embedding mode).

    Parameters
    ----------
    dim : int
        Dimension of the common space the shard embeddings are transferred into (the attention
        MLP has ``max(dim // 2, 1)`` hidden units). Embedding mode only.
    epochs : int
        Passes over the training records.
    lr : float
        Adam learning rate.
    reg : float
        L2 penalty on the transfer parameters.
    batch_size : int
        Training triples per optimizer step.
    mode : {"auto", "embeddings", "scores"}
        ``"auto"`` uses embeddings when every shard model has them, else scores.
    seed : int
        Seed of the initialisation and the sampling; combined with the run seed.
    device : str
        ``"auto"`` (the ensemble's device), ``"cpu"`` or ``"cuda"``.
    progress : bool or None
        Show a progress bar over epochs (None: only on a terminal).

    Notes
    -----
    Fitted after the shards and refitted from scratch after every forget, so the fitted state is
    a deterministic function of the remaining data and the shard models: exact unlearning holds.
    In embedding mode the scores are the learned model's, not a mean of the shard scores.
    """

    requires_fit = True
    needs_user_idx = True

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "dim": Interval(int, 1, MAX_WIDTH),
        "epochs": Interval(int, 1, MAX_STEPS),
        "lr": Interval(float, 0, None, closed="right", example=0.01),
        "reg": Interval(float, 0, None, example=1e-5),
        "batch_size": Interval(int, 1, MAX_BATCH),
        "mode": Options(_MODES),
        "seed": Interval(int, 0, MAX_SEED),
        "device": Device(),
        "progress": Bool(none=True),
    }

    def __init__(self, dim: int = 64, epochs: int = 10, lr: float = 0.01, reg: float = 1e-5,
                 batch_size: int = 4096, mode: str = "auto", seed: int = 0,
                 device: str = "auto", progress: bool | None = None) -> None:
        self.dim = dim
        self.epochs = epochs
        self.lr = lr
        self.reg = reg
        self.batch_size = batch_size
        self.mode = mode
        self.seed = seed
        self.device = device
        self.progress = progress
        self.validate_params()
        self._state: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ fitting
    def fit(self, ensemble: Any, data: Any) -> AttentionAggregator:
        """Train the attention on ``data`` (the ensemble's training records)."""
        models = ensemble.shard_models
        ucounts, icounts = ensemble.shard_counts()
        emb = None if self.mode == "scores" else shard_embeddings(models)
        if emb is None and self.mode == "embeddings":
            raise ValidationError(
                f"mode='embeddings' needs shard models with user and item embeddings, but "
                f"{type(models[0]).__name__} has none; use mode='scores' or 'auto'")
        seed = derive_seed(int(ensemble.seed), int(self.seed), 7)
        dev = fit_device(self.device, ensemble)
        users, items, local, positives, active = negative_pool(data)
        if emb is None:
            self._state = self._fit_scores(models, ucounts, users, items, local, positives,
                                           active, data.n_items, seed)
        else:
            self._state = self._fit_embeddings(emb, ucounts > 0, icounts > 0, users, items, local,
                                               positives, active, data.n_items, seed, dev)
        return self

    def _triples(self, users: torch.Tensor, items: torch.Tensor, local: torch.Tensor,
                 positives: torch.Tensor, active: torch.Tensor, n_items: int, seed: int,
                 epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch_generator(derive_seed(seed, epoch))
        perm = torch.randperm(len(users), generator=g)
        neg = sample_negatives(local[perm], positives, active, n_items, g)
        return users[perm], items[perm], neg

    def _bar(self) -> tqdm:
        return tqdm(total=int(self.epochs), desc="attention fit", leave=False,
                    disable=None if self.progress is None else not self.progress)

    def _fit_embeddings(self, emb: tuple[torch.Tensor, torch.Tensor], uvalid: torch.Tensor,
                        ivalid: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                        local: torch.Tensor, positives: torch.Tensor, active: torch.Tensor,
                        n_items: int, seed: int, dev: torch.device) -> dict[str, torch.Tensor]:
        P, Q = (t.to(dev) for t in emb)
        uvalid, ivalid = uvalid.to(dev), ivalid.to(dev)
        S, _, d = P.shape
        k, h = int(self.dim), max(int(self.dim) // 2, 1)
        g = torch_generator(seed)
        # Glorot-style init (as RecEraser); the attention vector h starts small and constant.
        params = {
            "W": torch.randn(S, d, k, generator=g) * (2.0 / (d + k)) ** 0.5,
            "c": torch.zeros(S, k),
            "A_user": torch.randn(k, h, generator=g) * (2.0 / (k + h)) ** 0.5,
            "a_user": torch.zeros(h), "h_user": torch.full((h,), 0.01),
            "A_item": torch.randn(k, h, generator=g) * (2.0 / (k + h)) ** 0.5,
            "a_item": torch.zeros(h), "h_item": torch.full((h,), 0.01),
        }
        params = {n: t.to(dev).requires_grad_(True) for n, t in params.items()}
        opt = torch.optim.Adam(params.values(), lr=float(self.lr), foreach=False)
        bs = int(self.batch_size)
        with self._bar() as bar:
            for epoch in range(int(self.epochs)):
                eu, ei, ej = self._triples(users, items, local, positives, active, n_items, seed,
                                           epoch)
                for start in range(0, len(eu), bs):  # one iteration per mini-batch
                    bu, bi, bj = (t[start:start + bs].to(dev) for t in (eu, ei, ej))
                    # Combine each distinct user/item once per batch, then index.
                    uu, uinv = torch.unique(bu, return_inverse=True)
                    ii, iinv = torch.unique(torch.cat([bi, bj]), return_inverse=True)
                    zu = _combine(P[:, uu], uvalid[:, uu], params, "user")
                    zi = _combine(Q[:, ii], ivalid[:, ii], params, "item")
                    pu, qi, qj = zu[uinv], zi[iinv[:len(bi)]], zi[iinv[len(bi):]]
                    x = (pu * (qi - qj)).sum(1)
                    loss = torch.nn.functional.softplus(-x).mean() + float(self.reg) * (
                        params["W"].square().sum() + params["c"].square().sum())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                bar.update(1)
                logger.debug("attention epoch %d: last batch loss %.4f", epoch, float(loss.detach()))
        with torch.no_grad():
            user_emb = _combine(P, uvalid, params, "user").cpu()
            item_emb = _combine(Q, ivalid, params, "item").cpu()
        return {"user_emb": user_emb, "item_emb": item_emb}

    def _fit_scores(self, models: list[Any], ucounts: torch.Tensor, users: torch.Tensor,
                    items: torch.Tensor, local: torch.Tensor, positives: torch.Tensor,
                    active: torch.Tensor, n_items: int, seed: int) -> dict[str, torch.Tensor]:
        S = len(models)
        feat = torch.log1p(ucounts)  # (S, U)
        params = {"shard_bias": torch.zeros(S, requires_grad=True),
                  "count_slope": torch.zeros((), requires_grad=True)}
        opt = torch.optim.Adam(params.values(), lr=float(self.lr), foreach=False)
        pos = pair_scores(models, users, items)  # positives are fixed: score them once
        bs = int(self.batch_size)
        with self._bar() as bar:
            for epoch in range(int(self.epochs)):
                g = torch_generator(derive_seed(seed, epoch))
                perm = torch.randperm(len(users), generator=g)
                ej = sample_negatives(local[perm], positives, active, n_items, g)
                eu, xi = users[perm], pos[:, perm]
                xj = pair_scores(models, eu, ej)
                for start in range(0, len(eu), bs):  # one iteration per mini-batch
                    bu = eu[start:start + bs]
                    c = ucounts[:, bu]
                    w = masked_softmax(params["shard_bias"][:, None]
                                       + params["count_slope"] * feat[:, bu], c > 0)
                    x = (w * (xi[:, start:start + bs] - xj[:, start:start + bs])).sum(0)
                    loss = torch.nn.functional.softplus(-x).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                bar.update(1)
        return {n: t.detach().clone() for n, t in params.items()}

    # ------------------------------------------------------------------ scoring
    def _require(self) -> dict[str, torch.Tensor]:
        if not self._state:
            raise ValidationError("the attention aggregator is not fitted; fit the SISA ensemble "
                                  "that uses it (or call fit(ensemble, data)) first")
        return self._state

    @property
    def uses_embeddings(self) -> bool:
        """Whether the fitted aggregator combines embeddings (else shard scores)."""
        return "user_emb" in self._require()

    def weights(self, counts: torch.Tensor) -> torch.Tensor:
        """Score mode: the attention weights; embedding mode: 1 where the shard trained on the
        user (the embedding combination is per user, not a weight per shard)."""
        st = self._require()
        if "user_emb" in st:
            return (counts > 0).to(torch.float32)
        if counts.shape[0] != len(st["shard_bias"]):
            raise ValidationError(f"counts has {counts.shape[0]} shards but the aggregator was "
                                  f"fitted on {len(st['shard_bias'])}; refit it")
        logits = st["shard_bias"][:, None] + st["count_slope"] * torch.log1p(counts.float())
        return masked_softmax(logits, counts > 0)

    def aggregate(self, scores: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor,
                  user_idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        st = self._require()
        if "user_emb" not in st:
            return super().aggregate(scores, mask, counts)
        if user_idx is None:
            raise ValidationError("the embedding-mode attention aggregator needs user_idx= (the "
                                  "batch's user indices); the SISA engine passes it")
        scored = (mask & (counts > 0)[:, :, None]).any(0)
        out = st["user_emb"][torch.as_tensor(user_idx, dtype=torch.int64)] @ st["item_emb"].T
        return out.to(scores.dtype), scored

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self._state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        keys = set(state)
        if keys not in (set(), {"user_emb", "item_emb"}, {"shard_bias", "count_slope"}):
            raise ValidationError(f"state has keys {sorted(keys)}; it was not saved by an "
                                  "attention aggregator")
        self._state = {k: v.detach().cpu().clone() for k, v in state.items()}


def _combine(emb: torch.Tensor, valid: torch.Tensor, params: dict[str, torch.Tensor],
             side: str) -> torch.Tensor:
    """Transfer ``(S, N, d)`` shard vectors into the common space and attention-sum them over
    the valid shards: ``(N, dim)``; rows with no valid shard are zero."""
    z = torch.einsum("snd,sdk->snk", emb, params["W"]) + params["c"][:, None, :]
    logits = torch.relu(z @ params[f"A_{side}"] + params[f"a_{side}"]) @ params[f"h_{side}"]
    w = masked_softmax(logits, valid)  # (S, N)
    return (w[:, :, None] * z).sum(0)


@hookimpl
def register_aggregators(register):
    register("attention", AttentionAggregator)
