"""``pot-au``: post-training attribute unlearning (Li et al., ACM MM 2023).

An attacker who sees a recommender's user embeddings can often infer an attribute the model was
never given (gender, age). PoT-AU edits the trained user embeddings, keeping item embeddings
fixed, so that the groups become indistinguishable while recommendations stay close:

* **user-to-user** loss: the graph-Laplacian term trace(EᵀLE) over the complete bipartite graph
  between every pair of groups, i.e. the mean squared distance between users of different
  groups. In closed form per pair (A, B):
  ``|B|·Σ_A |e|² + |A|·Σ_B |e|² - 2 (Σ_A e)·(Σ_B e)``, O(n·d), no n×n matrix;
* **distribution-to-distribution** loss: multi-kernel MMD² between the groups' embedding
  distributions (Gaussian kernels at several bandwidths, scaled by the median pairwise distance),
  on at most ``max_per_group`` seeded samples per group and step;
* **regulariser**: the relative squared distance of every embedding to its original.

The result is a new model; the input is never modified. On a :class:`sisakit.SISA` ensemble every
shard's users are edited in that shard's model, and the derived ensemble refuses ``forget``.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .. import metrics, plugins
from .._device import torch_generator
from .._validation import MAX_COUNT, MAX_SEED, MAX_STEPS, check_float, check_int, short_repr
from ..attackers.base import MAX_ATTACK_SEED
from ..constraints import Constraint, Interval, Strings, as_tuple
from ..data import canonical_id, labelled
from ..errors import ValidationError
from ..hookspecs import hookimpl
from ..sisa import SISA
from .base import (
    AttributeRequest,
    UnlearnContext,
    Unlearner,
    UnlearnReport,
    UnlearnResult,
    as_context,
)

logger = logging.getLogger(__name__)


def u2u_loss(e: torch.Tensor, codes: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean squared distance between users of different groups, summed over group pairs."""
    total = e.new_zeros(())
    stats = []
    for c in range(n_classes):
        g = e[codes == c]
        stats.append((len(g), g.sum(0), (g * g).sum()))
    for (na, sa, qa), (nb, sb, qb) in itertools.combinations(stats, 2):
        if na and nb:
            total = total + (nb * qa + na * qb - 2.0 * (sa @ sb)) / (na * nb)
    return total


def mmd2(a: torch.Tensor, b: torch.Tensor, bandwidths: torch.Tensor) -> torch.Tensor:
    """Biased multi-kernel MMD² between two samples (Gaussian kernels, summed)."""
    def k(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(x, y).pow(2)
        return torch.exp(-d2[None] / (2.0 * bandwidths[:, None, None] ** 2)).sum(0)

    return k(a, a).mean() + k(b, b).mean() - 2.0 * k(a, b).mean()


@dataclass(frozen=True)
class Bandwidths(Constraint):
    """A non-empty list or tuple of finite numbers > 0 (kernel bandwidths)."""

    example: str = "(0.5, 1.0, 2.0)"

    def check(self, name: str, value: Any) -> None:
        if not (isinstance(value, (list, tuple)) and value):
            raise ValidationError(
                f"{name} must be a non-empty tuple of numbers > 0 (multiples of the median "
                f"pairwise distance), got {short_repr(value)}; pass e.g. {name}={self.example}")
        for i, b in enumerate(value):
            check_float(f"{name}[{i}]", b, minimum=0, min_open=True, example=1.0)

    def invalid_values(self) -> list[Any]:
        return [None, 3, "abc", (), (0.0,), (-1.0,), (1.0, math.nan), (math.inf,), ("x",),
                (True,)]

    def valid_values(self) -> list[Any]:
        return [(1.0,), [0.5, 2], (0.25, 0.5, 1.0, 2.0, 4.0)]


class PotAU(Unlearner):
    """Post-training attribute unlearning on user embeddings.

    Parameters
    ----------
    steps : int
        Optimisation steps (Adam) on the user embeddings.
    lr : float
        Learning rate.
    u2u_weight, d2d_weight, reg_weight : float
        Weights of the user-to-user loss, the MMD loss and the closeness regulariser.
    bandwidths : tuple of float
        Gaussian kernel bandwidths, as multiples of the median pairwise distance.
    max_per_group : int
        Users sampled per group and step for the MMD term.
    seed : int
        Seeds the sampling.
    attackers : tuple of str
        Registered attackers whose AUC before and after goes into the report (empty to skip).
    """

    exact = False

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "steps": Interval(int, 1, MAX_STEPS),
        "lr": Interval(float, 0, None, closed="right", example=0.01),
        "u2u_weight": Interval(float, 0, None, example=0.1),
        "d2d_weight": Interval(float, 0, None, example=1.0),
        "reg_weight": Interval(float, 0, None, example=1.0),
        "bandwidths": Bandwidths(),
        "max_per_group": Interval(int, 1, MAX_COUNT),
        # with attackers, _validate narrows this to MAX_ATTACK_SEED
        "seed": Interval(int, 0, MAX_SEED),
        "attackers": Strings(example="('mlp-attribute',)"),
    }

    def __init__(self, steps: int = 200, lr: float = 0.01, u2u_weight: float = 0.1,
                 d2d_weight: float = 1.0, reg_weight: float = 1.0,
                 bandwidths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0),
                 max_per_group: int = 512, seed: int = 0,
                 attackers: tuple[str, ...] = ("xgboost-attribute", "mlp-attribute")) -> None:
        self.steps = steps
        self.lr = lr
        self.u2u_weight = u2u_weight
        self.d2d_weight = d2d_weight
        self.reg_weight = reg_weight
        self.bandwidths = as_tuple(bandwidths)
        self.max_per_group = max_per_group
        self.seed = seed
        self.attackers = as_tuple(attackers)
        self._validate()  # refuse bad parameters now, before any unlearn trains

    def _validate(self) -> None:
        """The declared constraints, then the rule that ties ``seed`` to ``attackers``."""
        self.validate_params()
        # the seed also seeds the attackers, whose scikit-learn random_state is 32-bit
        if self.attackers:
            check_int("seed", self.seed, 0, MAX_ATTACK_SEED)

    # ------------------------------------------------------------------ inputs
    def _labels(self, model: Any, request: AttributeRequest, n_users: int) -> np.ndarray:
        if request.labels is not None:
            labels = np.asarray(request.labels, dtype=object)
        else:
            data = getattr(model, "data", None)
            attrs = getattr(data, "user_attributes", {}) if data is not None else {}
            if request.attribute not in attrs:
                raise ValidationError(
                    f"no user attribute {request.attribute!r} on this model's data (available: "
                    f"{sorted(attrs)}); attach it with Interactions.with_user_attributes or pass "
                    "AttributeRequest(labels=...)"
                )
            labels = np.asarray(attrs[request.attribute], dtype=object)
        if labels.shape != (n_users,):
            raise ValidationError(
                f"attribute {request.attribute!r} has {labels.shape[0] if labels.ndim else 0} "
                f"labels for {n_users} users; give one label per user index"
            )
        return labels

    def _selected(self, model: Any, request: AttributeRequest, labels: np.ndarray) -> np.ndarray:
        """Boolean mask of users to edit: labelled (and listed in ``request.users``)."""
        valid = labelled(labels)
        if request.users is not None:
            data = getattr(model, "data", None)
            if data is None:
                raise ValidationError("request.users needs a model that carries its data (SISA)")
            raw = [canonical_id(u) for u in request.users]
            idx = data.user_map.index(np.asarray(raw, dtype=object), "user")
            chosen = np.zeros(len(labels), dtype=bool)
            chosen[idx] = True
            valid &= chosen
        classes = np.unique(labels[valid].astype(str)) if valid.any() else []
        if len(classes) < 2:
            raise ValidationError(
                f"attribute {request.attribute!r} has fewer than two groups among the selected "
                "users; attribute unlearning needs at least two"
            )
        return valid

    # ------------------------------------------------------------------ optimisation
    def edit(self, emb: torch.Tensor, codes: torch.Tensor, n_classes: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Optimise the embeddings ``emb`` (rows labelled by ``codes``); returns new ones."""
        if not torch.isfinite(emb).all():
            raise ValidationError("user embeddings contain NaN or infinite values")
        e0 = emb.detach().double()
        e = e0.clone().requires_grad_(True)
        opt = torch.optim.Adam([e], lr=self.lr)
        g = torch_generator(self.seed)
        scale = float((e0 * e0).sum(1).mean()) or 1.0
        with torch.no_grad():
            sample = e0[torch.randperm(len(e0), generator=g)[:1024]]
            med = torch.cdist(sample, sample).median().clamp_min(1e-6)
        bw = torch.tensor(self.bandwidths, dtype=torch.float64) * med
        groups = [torch.nonzero(codes == c).flatten() for c in range(n_classes)]
        first = last = 0.0
        for step in range(int(self.steps)):
            opt.zero_grad()
            loss_u = u2u_loss(e, codes, n_classes) / scale
            loss_d = e.new_zeros(())
            picks = [grp[torch.randperm(len(grp), generator=g)[: self.max_per_group]]
                     for grp in groups]
            for a, b in itertools.combinations(picks, 2):
                loss_d = loss_d + mmd2(e[a], e[b], bw)
            loss_r = ((e - e0) ** 2).sum(1).mean() / scale
            loss = self.u2u_weight * loss_u + self.d2d_weight * loss_d + self.reg_weight * loss_r
            loss.backward()
            opt.step()
            if step == 0:
                first = loss.item()
            last = loss.item()
        return e.detach().to(emb.dtype), {"loss_first": first, "loss_last": last}

    def _attack(self, emb: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
        out = {}
        for name in self.attackers:
            result = plugins.build("attacker", name, seed=self.seed).evaluate(emb, labels)
            out[name] = {"auc": result.auc, "accuracy": result.accuracy}
        return out

    # ------------------------------------------------------------------ public
    def unlearn(self, model: Any, request: AttributeRequest, *,
                context: UnlearnContext | None = None,
                eval_data: tuple[Any, Any] | None = None, k: tuple[int, ...] | None = None
                ) -> UnlearnResult:
        """Return a new model whose user embeddings hide ``request.attribute``.

        The report holds, for every attacker in ``attackers``, AUC and accuracy before and
        after; with ``context.eval_data=(train, test)`` also full-ranking NDCG/HR@K (at
        ``context.k``) before and after; and the seconds spent (the attacks and evaluations
        excluded). ``eval_data=`` and ``k=`` are the older spelling of those context fields.
        """
        ctx = as_context(context, eval_data=eval_data, k=k)
        eval_data, k = ctx.eval_data, ctx.k
        if not isinstance(request, AttributeRequest):
            raise ValidationError("pot-au takes an AttributeRequest(attribute=...)")
        self._validate()
        t0, c0 = time.perf_counter(), time.process_time()
        shard_models = model.shard_models if isinstance(model, SISA) else [model]
        n_users = int(getattr(model, "n_users", 0) or shard_models[0].n_users)
        labels = self._labels(model, request, n_users)
        selected = self._selected(model, request, labels)
        classes, codes_all = np.unique(labels[selected].astype(str), return_inverse=True)
        sel_idx = np.flatnonzero(selected)
        if isinstance(model, SISA):  # each user is edited where they were trained
            counts = model.view().user_counts[:, sel_idx]
            owner = counts.argmax(0).numpy()
            trained = counts.sum(0).numpy() > 0
        else:
            owner = np.zeros(len(sel_idx), dtype=np.int64)
            trained = np.ones(len(sel_idx), dtype=bool)
        before_emb = self._embeddings(shard_models, sel_idx, owner)
        report: dict[str, Any] = {"attribute": request.attribute, "users": len(sel_idx),
                                  "classes": classes.tolist()}
        ta = time.perf_counter()
        report["attack_before"] = self._attack(before_emb.numpy(), codes_all)
        attack_seconds = time.perf_counter() - ta
        new_models = [m.copy() for m in shard_models]
        after_emb = before_emb.clone()
        for s, m in enumerate(new_models):
            rows = np.flatnonzero((owner == s) & trained)
            codes = torch.from_numpy(codes_all[rows])
            if len(np.unique(codes_all[rows])) < 2:
                continue  # a shard holding a single group has nothing to hide
            edited, losses = self.edit(before_emb[rows], codes, len(classes))
            m.set_user_embeddings(torch.from_numpy(sel_idx[rows]), edited)
            after_emb[rows] = edited.float()
            report.setdefault("losses", {})[str(s)] = losses
        report["seconds"] = time.perf_counter() - t0 - attack_seconds
        cpu_seconds = time.process_time() - c0
        report["attack_after"] = self._attack(after_emb.numpy(), codes_all)
        derived = (model.derive(new_models, by="pot-au") if isinstance(model, SISA)
                   else new_models[0])
        if eval_data is not None:
            train, test = eval_data
            for when, m in (("before", model), ("after", derived)):
                res = metrics.evaluate(m, train, test, k=k)
                report[f"ranking_{when}"] = {key: res[key] for key in res
                                             if key.startswith(("ndcg@", "hr@"))}
        logger.info("pot-au on %r: attacks %s -> %s", request.attribute,
                    report["attack_before"], report["attack_after"])
        return UnlearnResult(model=derived, report=UnlearnReport(
            method="pot-au", exact=False, seconds=report["seconds"], cpu_seconds=cpu_seconds,
            removed={"attribute_users": int(report["users"])}, details=report))

    @staticmethod
    def _embeddings(models: list[Any], users: np.ndarray, owner: np.ndarray) -> torch.Tensor:
        out = None
        for s, m in enumerate(models):
            emb = m.user_embeddings()
            if emb is None:
                raise ValidationError(
                    f"{type(m).__name__} exposes no user embeddings; pot-au needs a factor model"
                )
            if out is None:
                out = torch.empty(len(users), emb.shape[1])
            rows = np.flatnonzero(owner == s)
            out[rows] = emb[torch.from_numpy(users[rows])].detach().float().cpu()
        assert out is not None
        return out


@hookimpl
def register_unlearners(register):
    register("pot-au", PotAU)
