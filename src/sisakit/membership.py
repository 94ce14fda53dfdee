"""Membership inference against recommenders, and audits of unlearning built on it.

**User level (Zhang et al., CCS 2021, "Membership Inference Attacks Against Recommender Systems")**

The attacker knows a target user's interaction history and sees the top-``k`` list the
recommender serves them. Items are embedded by a seeded truncated SVD of the binary user × item
matrix the attacker knows (:func:`item_vectors`); a user's feature vector is the centroid of
their items minus the centroid of their recommendations (:func:`user_features`). A personalised
list sits close to the user's history; the list served to someone the model never trained on does
not. A *shadow* recommender, trained by the attacker on disjoint users, provides labelled member
/ non-member feature vectors; the ``membership`` attack model (an MLP) learns from them and is
then applied to the target model.

Non-members
    A deployed recommender serves a user it has no data about the same way it serves a forgotten
    user. Here non-members stay in the id space with no records (``data.without(users=...)``), so
    :meth:`sisakit.SISA.recommend` serves them its popularity fallback, exactly what it serves a
    user after :meth:`~sisakit.SISA.forget`. Recommendations exclude a user's *training* items, so
    a non-member's list may contain items they did interact with: the model cannot know them.

Users are split into four disjoint groups (:func:`split_users`): target members, target
non-members, shadow members and shadow non-members, stratified on activity so that members and
non-members have the same activity distribution.

**Interaction level**

Was a (user, item) pair in the training data? :func:`interaction_features` computes, from the
scores of *any* model with ``scores(user_idx)``: the item's rank among the user's scores, its
z-score within the user's scores, the item's popularity and the user's activity (both counted in
the data the attacker knows). A shadow model trained with part of each shadow user's records held
out provides the labels; the ``membership-interaction`` attack model classifies.

**Metrics**

AUC (ROC, from the member probability), accuracy at the attack model's decision (probability
>= 0.5) and the membership advantage ``TPR - FPR`` at that same decision, i.e. ``2·balanced
accuracy - 1`` (Yeom et al., 2018). ``advantage_max``, the maximum of ``TPR - FPR`` over all
thresholds, is reported too; it picks the threshold on the evaluated data, so it is optimistic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from tqdm.auto import tqdm

from . import plugins
from ._validation import check_int
from .attackers.base import Attacker
from .data import Interactions
from .errors import ValidationError
from .sisa import SISA
from .split import holdout as split_holdout

__all__ = [
    "InteractionMembershipAttack",
    "MembershipResult",
    "UnlearningAudit",
    "UserMembershipAttack",
    "UserSplit",
    "interaction_features",
    "interaction_membership_inference",
    "item_vectors",
    "membership_inference",
    "membership_metrics",
    "split_users",
    "unlearning_audit",
    "user_features",
]

logger = logging.getLogger(__name__)

#: A way to train the target or shadow model: a callable ``fit(Interactions) -> model`` or a
#: dict of :class:`sisakit.SISA` keyword arguments (each fit gets a private run directory).
ModelSpec = Callable[[Interactions], Any] | Mapping[str, Any]

#: Scores at or below this are "not scored" (SISA's popularity fallback keys lie below -1e30).
_UNSCORED = -1.0e29


# ---------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class MembershipResult:
    """Outcome of a membership-inference attack on held-out members and non-members.

    Attributes
    ----------
    auc : float
        ROC AUC of the member probability.
    accuracy : float
        Accuracy of the decision ``probability >= 0.5``.
    advantage : float
        ``TPR - FPR`` of that decision (``2·balanced accuracy - 1``).
    advantage_max : float
        Maximum ``TPR - FPR`` over all thresholds (optimistic: chosen on the evaluated data).
    n_members, n_non_members : int
        Evaluated examples per class.
    details : dict
        Pipeline-specific extras (fit times, sizes, model quality...).
    """

    auc: float
    accuracy: float
    advantage: float
    advantage_max: float
    n_members: int
    n_non_members: int
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return {"auc": self.auc, "accuracy": self.accuracy, "advantage": self.advantage,
                "advantage_max": self.advantage_max, "n_members": self.n_members,
                "n_non_members": self.n_non_members, "details": dict(self.details)}


def membership_metrics(proba: np.ndarray, labels: np.ndarray,
                       details: dict[str, Any] | None = None) -> MembershipResult:
    """AUC, accuracy and membership advantage of member probabilities.

    Parameters
    ----------
    proba : ndarray, shape (n,)
        Probability that each example is a member.
    labels : ndarray of bool or {0, 1}, shape (n,)
        True membership.
    details : dict, optional
        Stored in the result.

    Returns
    -------
    MembershipResult
    """
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if p.shape != y.shape or p.ndim != 1:
        raise ValidationError(f"proba and labels must be 1-D of equal length, got {p.shape} and "
                              f"{y.shape}")
    if y.all() or not y.any():
        raise ValidationError("membership metrics need both members and non-members")
    pred = p >= 0.5
    tpr, fpr = float(pred[y].mean()), float(pred[~y].mean())
    curve_fpr, curve_tpr, _ = roc_curve(y, p)
    return MembershipResult(
        auc=float(roc_auc_score(y, p)), accuracy=float((pred == y).mean()),
        advantage=tpr - fpr, advantage_max=float(np.max(curve_tpr - curve_fpr)),
        n_members=int(y.sum()), n_non_members=int((~y).sum()), details=dict(details or {}))


@dataclass(frozen=True)
class UnlearningAudit:
    """Membership inference on forgotten users: before forgetting, after, and against gold.

    Each metric is computed on the forgotten users (label member) against the target
    non-members (label non-member) for three models: ``original`` (trained with the forgotten
    users: "no unlearning"), ``unlearned`` (the original after forgetting them) and ``gold``
    (retrained from scratch without them).

    Attributes
    ----------
    results : dict of str to MembershipResult
        Keys ``"original"``, ``"unlearned"``, ``"gold"``.
    member_probability : dict of str to ndarray
        The attack's member probability of every forgotten user, per model.
    features : dict of str to ndarray
        The feature vectors of the forgotten users, per model.
    identical : bool
        Whether the forgotten users' features (hence probabilities) are bit-identical after
        unlearning and for gold (True for exact unlearning).
    forget_seconds, gold_fit_seconds : float
        Wall time of the forget call and of the gold retrain.
    details : dict
        Sizes, fit times, the shadow attack's AUC and ``all_members``: the attack on every
        target member vs the target non-members on the original model (its power).
    """

    results: dict[str, MembershipResult]
    member_probability: dict[str, np.ndarray]
    features: dict[str, np.ndarray]
    identical: bool
    forget_seconds: float
    gold_fit_seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """AUC per model: ``{"original": auc, "unlearned": auc, "gold": auc}``."""
        return {name: res.auc for name, res in self.results.items()}

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: every metric per model, the mean member probability of the
        forgotten users, exactness and times."""
        return {
            "auc": self.as_dict(),
            "accuracy": {k: r.accuracy for k, r in self.results.items()},
            "advantage": {k: r.advantage for k, r in self.results.items()},
            "advantage_max": {k: r.advantage_max for k, r in self.results.items()},
            "mean_member_probability": {k: float(v.mean())
                                        for k, v in self.member_probability.items()},
            "identical_unlearned_gold": self.identical,
            "forget_seconds": self.forget_seconds,
            "gold_fit_seconds": self.gold_fit_seconds,
            **self.details,
        }


# ---------------------------------------------------------------------------------- splitting
@dataclass(frozen=True)
class UserSplit:
    """Four disjoint user groups (raw ids) of a membership-inference experiment.

    Raises
    ------
    ValidationError
        If a group is empty or two groups share a user.
    """

    target_members: np.ndarray
    target_non_members: np.ndarray
    shadow_members: np.ndarray
    shadow_non_members: np.ndarray

    _GROUPS = ("target_members", "target_non_members", "shadow_members", "shadow_non_members")

    def __post_init__(self) -> None:
        seen: dict[Any, str] = {}
        for name in self._GROUPS:
            ids = np.asarray(getattr(self, name))
            if ids.ndim != 1 or len(ids) == 0:
                raise ValidationError(
                    f"{name} is empty; every group of a membership experiment needs users "
                    "(use split_users() or pass more users)"
                )
            object.__setattr__(self, name, ids)
            for other in seen.values():
                both = np.intersect1d(ids, getattr(self, other))
                if len(both):
                    raise ValidationError(
                        f"{name} and {other} share {len(both)} user(s), e.g. "
                        f"{both[:5].tolist()}; members and non-members (and target and shadow "
                        "users) must be disjoint"
                    )
            seen[name] = name

    def sizes(self) -> dict[str, int]:
        """Users per group."""
        return {name: len(getattr(self, name)) for name in self._GROUPS}


def split_users(
    data: Interactions,
    seed: int = 0,
    *,
    fractions: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
    n_bins: int = 20,
    min_records: int = 1,
) -> UserSplit:
    """Split the users with records into four activity-matched, disjoint groups.

    Users are ranked by activity (ties broken at random) and cut into ``n_bins`` quantile bins;
    each bin is shuffled and divided by ``fractions``, so every group has (nearly) the same
    activity distribution.

    Parameters
    ----------
    data : Interactions
        The users and their records.
    seed : int
        Seed of the shuffles: same data and seed, same split.
    fractions : four floats
        Shares of target members, target non-members, shadow members, shadow non-members
        (positive, summing to 1).
    n_bins : int
        Activity bins of the stratification.
    min_records : int
        Users with fewer records are left out of every group.

    Returns
    -------
    UserSplit
    """
    if not isinstance(data, Interactions):
        raise ValidationError(f"split_users() takes sisakit.Interactions, got {type(data).__name__}")
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (4,) or (frac <= 0).any() or abs(frac.sum() - 1.0) > 1e-9:
        raise ValidationError(
            f"fractions must be four positive shares summing to 1 (target members, target "
            f"non-members, shadow members, shadow non-members), got {list(fractions)}"
        )
    n_bins = check_int("n_bins", n_bins, 1)
    counts = data.user_counts()
    cand = np.flatnonzero(counts >= max(1, int(min_records)))
    if len(cand) < 4:
        raise ValidationError(
            f"only {len(cand)} user(s) have >= {min_records} records; a membership experiment "
            "needs at least 4 (one per group)"
        )
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(cand)), counts[cand]))  # activity, random tie-break
    rank = np.empty(len(cand), dtype=np.int64)
    rank[order] = np.arange(len(cand))
    bins = rank * min(n_bins, len(cand)) // len(cand)
    within = np.lexsort((rng.random(len(cand)), bins))  # shuffle inside each bin
    b_sorted = bins[within]
    start = np.searchsorted(b_sorted, b_sorted, side="left")
    size = np.bincount(b_sorted)[b_sorted]
    pos = (np.arange(len(cand)) - start + 0.5) / size  # position inside the bin, in (0, 1)
    group = np.minimum(np.searchsorted(np.cumsum(frac), pos, side="right"), 3)
    users = cand[within]
    ids = data.user_ids
    return UserSplit(*(np.sort(ids[users[group == g]]) for g in range(4)))


# ---------------------------------------------------------------------------------- features
def item_vectors(data: Interactions, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Item embeddings from a seeded truncated SVD of the binary user × item matrix.

    Parameters
    ----------
    data : Interactions
        The interactions the attacker knows.
    dim : int
        Embedding dimension, below ``min(n_users, n_items)``.
    seed : int
        Seed of the randomised SVD.

    Returns
    -------
    ndarray, shape (n_items, dim)
        ``V·Σ^½`` of the factorisation ``X ≈ U Σ Vᵀ`` (float64).
    """
    from sklearn.utils.extmath import randomized_svd

    if not isinstance(data, Interactions):
        raise ValidationError(f"item_vectors() takes sisakit.Interactions, got {type(data).__name__}")
    limit = min(data.n_users, data.n_items)
    dim = check_int("dim", dim, 1, limit - 1)
    x = data.to_csr().astype(np.float64)
    x.data[:] = 1.0  # binary: repeated records count once
    _, s, vt = randomized_svd(x, n_components=dim, random_state=int(seed))
    return np.ascontiguousarray(vt.T * np.sqrt(s)[None, :])


def _check_vectors(item_vecs: Any, n_items: int) -> np.ndarray:
    v = np.asarray(item_vecs, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != n_items or not np.isfinite(v).all():
        raise ValidationError(
            f"item_vectors must be a finite ({n_items}, dim) array, got shape {v.shape}; compute "
            "them with item_vectors(data) on data of the same id space"
        )
    return v


def user_features(
    recommendations: np.ndarray,
    interactions: Interactions,
    item_vecs: np.ndarray,
    users: np.ndarray | None = None,
) -> np.ndarray:
    """Zhang et al.'s user feature: centroid of the user's items minus centroid of their list.

    Parameters
    ----------
    recommendations : ndarray of int, shape (n_users, k)
        Recommended item *indices* of each user (row ``j`` belongs to ``users[j]``).
    interactions : Interactions
        The histories the attacker knows (each listed user needs at least one record).
    item_vecs : ndarray, shape (n_items, dim)
        Item embeddings, e.g. from :func:`item_vectors`.
    users : ndarray of int, optional
        User *indices* of the rows; default every user of ``interactions``.

    Returns
    -------
    ndarray, shape (n_users, dim)
    """
    recs = np.asarray(recommendations)
    v = _check_vectors(item_vecs, interactions.n_items)
    if recs.ndim != 2 or recs.dtype.kind not in "iu" or recs.shape[1] == 0:
        raise ValidationError(f"recommendations must be a 2-D integer array of item indices, "
                              f"got {recs.dtype} {recs.shape}")
    if len(recs) == 0:
        raise ValidationError("no users given; pass at least one row of recommendations")
    if recs.min() < 0 or recs.max() >= interactions.n_items:
        raise ValidationError(f"recommended item indices must lie in [0, {interactions.n_items})")
    u = np.arange(interactions.n_users) if users is None else np.asarray(users, dtype=np.int64)
    if u.shape != (len(recs),):
        raise ValidationError(f"users has {u.shape} entries for {len(recs)} rows of "
                              "recommendations; pass one user index per row")
    hist = interactions.to_csr()[u]
    hist.data[:] = 1.0
    n_hist = np.asarray(hist.sum(axis=1)).ravel()
    if (n_hist == 0).any():
        bad = interactions.user_ids[u[n_hist == 0]][:5].tolist()
        raise ValidationError(
            f"{int((n_hist == 0).sum())} user(s) have no interactions (e.g. {bad}); the attack "
            "needs each attacked user's history"
        )
    n, k = recs.shape
    rec_m = sp.csr_matrix((np.full(n * k, 1.0 / k), recs.ravel(), np.arange(0, n * k + 1, k)),
                          shape=(n, interactions.n_items))
    return (hist @ v) / n_hist[:, None] - rec_m @ v


def interaction_features(
    model: Any,
    records: Interactions,
    data: Interactions,
    *,
    batch_cells: int = 4_000_000,
    progress: bool | None = False,
) -> np.ndarray:
    """Per-pair features of the interaction-level attack, from any model's scores.

    Parameters
    ----------
    model : object with ``scores(user_idx)``
        Returns ``(len(user_idx), n_items)`` scores (tensor or array) in the id space of
        ``data``; scores at or below ``-1e29`` (SISA's unscored keys) and ``-inf`` count as the
        user's lowest valid score.
    records : Interactions
        The (user, item) pairs to featurise, in the id space of ``data``.
    data : Interactions
        What the attacker knows: item popularity and user activity are counted here.
    batch_cells : int
        Users are scored in batches of about this many (user, item) cells.
    progress : bool or None
        Show a progress bar over user batches (None: only on a terminal).

    Returns
    -------
    ndarray, shape (len(records), 4)
        Columns: rank of the item among the user's scores divided by ``n_items`` (0 = best),
        z-score of its score within the user's valid scores, ``log1p`` item popularity,
        ``log1p`` user activity.
    """
    if not isinstance(records, Interactions) or not isinstance(data, Interactions):
        raise ValidationError("records and data must be sisakit.Interactions")
    if len(records) == 0:
        raise ValidationError("records is empty; pass at least one (user, item) pair")
    if not records.same_space(data):
        raise ValidationError("records and data must share one id space (build both from the "
                              "same Interactions with take() or without())")
    if not callable(getattr(model, "scores", None)):
        raise ValidationError(f"model must have scores(user_idx); got {type(model).__name__}")
    n_items = data.n_items
    pop = np.log1p(data.item_counts().astype(np.float64))
    act = np.log1p(data.user_counts().astype(np.float64))
    uniq, inv = np.unique(records.user_idx, return_inverse=True)
    order = np.argsort(inv, kind="stable")  # pairs grouped by user
    bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
    out = np.empty((len(records), 4), dtype=np.float64)
    step = max(1, int(batch_cells) // max(1, n_items))
    for lo in tqdm(range(0, len(uniq), step), disable=None if progress is None else not progress,
                   desc="pair features", leave=False):  # loop over user batches
        hi = min(len(uniq), lo + step)
        sel = order[bounds[lo]:bounds[hi]]
        s = torch.as_tensor(model.scores(uniq[lo:hi])).detach().to("cpu", torch.float64)
        if s.shape != (hi - lo, n_items):
            raise ValidationError(f"model.scores() returned shape {tuple(s.shape)}, expected "
                                  f"{(hi - lo, n_items)}")
        if torch.isnan(s).any():
            raise ValidationError("model.scores() returned NaN; fix the model")
        rows = torch.from_numpy(inv[sel] - lo)
        cols = torch.from_numpy(records.item_idx[sel])
        # Rank among all items (ties broken by index, as a stable sort does).
        ranking = torch.sort(s, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(ranking)
        rank.scatter_(1, ranking, torch.arange(n_items).expand_as(ranking).contiguous())
        valid = s > _UNSCORED
        n_valid = valid.sum(1).clamp_min(1)
        sv = torch.where(valid, s, torch.zeros_like(s))
        mean = sv.sum(1) / n_valid
        std = torch.sqrt((torch.where(valid, s - mean[:, None], torch.zeros_like(s)) ** 2).sum(1)
                         / n_valid).clamp_min(1e-12)
        low = torch.where(valid, s, torch.full_like(s, torch.inf)).min(1).values
        low = torch.where(torch.isinf(low), mean, low)  # a row with no valid score at all
        pair = s[rows, cols]
        pair = torch.where(pair > _UNSCORED, pair, low[rows])
        out[sel, 0] = (rank[rows, cols].double() / n_items).numpy()
        out[sel, 1] = ((pair - mean[rows]) / std[rows]).numpy()
    out[:, 2] = pop[records.item_idx]
    out[:, 3] = act[records.user_idx]
    return out


# ---------------------------------------------------------------------------------- helpers
def _fitter(spec: ModelSpec, what: str) -> Callable[[Interactions], Any]:
    if isinstance(spec, Mapping):
        cfg = dict(spec)
        if cfg.get("workdir") is not None:
            raise ValidationError(
                f"the {what} config names a workdir, but the pipeline fits several models; drop "
                "'workdir' (each fit gets a private directory) or pass a fit callable"
            )
        return lambda d: SISA(**cfg).fit(d)
    if callable(spec):
        return spec
    raise ValidationError(f"{what} must be a callable fit(Interactions) -> model or a dict of "
                          f"sisakit.SISA arguments, got {type(spec).__name__}")


def _attacker(spec: str | Attacker, seed: int) -> Attacker:
    if isinstance(spec, str):
        cls = plugins.get("attacker", spec)
        return cls(seed=seed) if "seed" in cls.param_names() else cls()
    return plugins.build("attacker", spec).clone()


def _user_index(data: Interactions, users: Any, what: str) -> np.ndarray:
    if isinstance(users, (str, bytes)) or np.ndim(users) != 1:
        raise ValidationError(f"{what} must be a 1-D list of raw user ids")
    raw = np.asarray(users)
    if len(raw) == 0:
        raise ValidationError(f"{what} is empty; pass at least one raw user id")
    return data.user_map.index(raw, "user")


def _only_users(data: Interactions, users: np.ndarray) -> Interactions:
    """The records of ``users`` (indices), in the full id space."""
    return data.take(np.isin(data.user_idx, users))


def _recommended_items(model: Any, data: Interactions, users: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` item indices ``model.recommend`` serves to user indices ``users``."""
    if not callable(getattr(model, "recommend", None)):
        raise ValidationError(f"model must have recommend(raw_user_ids, k=...) like sisakit.SISA; "
                              f"got {type(model).__name__}")
    raw = model.recommend(data.user_ids[users], k=k)
    return data.item_map.index(np.asarray(raw).ravel(), "item").reshape(len(users), k)


def _check_k(k: Any, n_items: int) -> int:
    return check_int("k", k, 1, n_items)


# ---------------------------------------------------------------------------------- user level
class UserMembershipAttack:
    """The user-level attack of Zhang et al.: fit on a shadow model, then attack any model.

    Parameters
    ----------
    k : int
        Length of the recommendation lists the attacker observes.
    dim : int
        Dimension of the SVD item vectors.
    attacker : str or Attacker
        The attack model (default the ``membership`` plugin).
    seed : int
        Seeds the SVD and the attack model.
    """

    def __init__(self, k: int = 100, dim: int = 64, attacker: str | Attacker = "membership",
                 seed: int = 0) -> None:
        self.k = k
        self.dim = dim
        self.attacker = attacker
        self.seed = seed

    def fit(self, shadow_model: Any, data: Interactions, members: Any,
            non_members: Any) -> UserMembershipAttack:
        """Learn item vectors from ``data`` and train the attack model on the shadow model.

        Parameters
        ----------
        shadow_model : object with ``recommend(raw_user_ids, k=...)``
            The attacker's own recommender, trained on ``members`` and not on ``non_members``.
        data : Interactions
            The histories the attacker knows (at least those of every attacked user).
        members, non_members : sequences of raw user ids

        Returns
        -------
        self
        """
        self.k_ = _check_k(self.k, data.n_items)
        self.item_vectors_ = item_vectors(data, self.dim, self.seed)
        x, y = self._labelled(shadow_model, data, members, non_members)
        self.attacker_ = _attacker(self.attacker, self.seed).fit(x, y)
        proba = self._proba(x)
        self.shadow_result_ = membership_metrics(proba, y)
        return self

    def _labelled(self, model: Any, data: Interactions, members: Any, non_members: Any
                  ) -> tuple[np.ndarray, np.ndarray]:
        m = _user_index(data, members, "members")
        n = _user_index(data, non_members, "non_members")
        if np.intersect1d(m, n).size:
            raise ValidationError("members and non_members overlap; membership labels must be "
                                  "disjoint")
        x = self.features(model, data, data.user_ids[np.concatenate([m, n])])
        y = np.r_[np.ones(len(m), np.int64), np.zeros(len(n), np.int64)]
        return x, y

    def proba_of_features(self, x: np.ndarray) -> np.ndarray:
        """Member probability of users given their attack features (:meth:`features`)."""
        proba = self.attacker_.predict_proba(x)
        return proba[:, list(self.attacker_.classes_).index(1)]

    _proba = proba_of_features

    def _require_fitted(self) -> None:
        if not hasattr(self, "attacker_"):
            raise ValidationError("fit the attack on a shadow model first (UserMembershipAttack"
                                  ".fit)")

    def features(self, model: Any, data: Interactions, users: Any) -> np.ndarray:
        """Feature vectors of raw ``users``: their history in ``data`` vs ``model``'s list."""
        if not hasattr(self, "item_vectors_"):
            self._require_fitted()
        idx = _user_index(data, users, "users")
        recs = _recommended_items(model, data, idx, self.k_)
        return user_features(recs, data, self.item_vectors_, idx)

    def predict_proba(self, model: Any, data: Interactions, users: Any) -> np.ndarray:
        """Probability that each raw user id was in ``model``'s training data."""
        self._require_fitted()
        return self._proba(self.features(model, data, users))

    def evaluate(self, model: Any, data: Interactions, members: Any,
                 non_members: Any) -> MembershipResult:
        """Attack ``model`` on known members and non-members (raw ids)."""
        self._require_fitted()
        x, y = self._labelled(model, data, members, non_members)
        return membership_metrics(self._proba(x), y)


def _fit_target_and_shadow(data: Interactions, split: UserSplit, model: ModelSpec,
                           shadow_model: ModelSpec | None
                           ) -> tuple[Any, Any, dict[str, float]]:
    fit_target = _fitter(model, "model")
    fit_shadow = fit_target if shadow_model is None else _fitter(shadow_model, "shadow_model")
    # Each model sees only its members' records; everyone else stays in the id space with no
    # records, so the model serves them what it serves any unknown or forgotten user.
    t_idx = data.user_map.index(split.target_members, "user")
    s_idx = data.user_map.index(split.shadow_members, "user")
    data.user_map.index(split.target_non_members, "user")
    data.user_map.index(split.shadow_non_members, "user")
    t0 = time.perf_counter()
    target = fit_target(_only_users(data, t_idx))
    t1 = time.perf_counter()
    shadow = fit_shadow(_only_users(data, s_idx))
    t2 = time.perf_counter()
    return target, shadow, {"target_fit_seconds": t1 - t0, "shadow_fit_seconds": t2 - t1}


def membership_inference(
    data: Interactions,
    model: ModelSpec,
    *,
    split: UserSplit | None = None,
    shadow_model: ModelSpec | None = None,
    k: int = 100,
    dim: int = 64,
    attacker: str | Attacker = "membership",
    seed: int = 0,
) -> MembershipResult:
    """The full user-level attack: train target and shadow models, attack the target.

    Parameters
    ----------
    data : Interactions
        All records; the attacker knows every user's history.
    model : callable or dict
        ``fit(Interactions) -> model`` (the model needs ``recommend(raw_user_ids, k=...)``), or
        a dict of :class:`sisakit.SISA` arguments.
    split : UserSplit, optional
        The four user groups (default :func:`split_users` with ``seed``).
    shadow_model : callable or dict, optional
        How the attacker trains its shadow model (default: like the target).
    k, dim, attacker, seed
        See :class:`UserMembershipAttack`.

    Returns
    -------
    MembershipResult
        On target members vs target non-members; ``details`` holds the shadow result and fit
        times.
    """
    split = split_users(data, seed) if split is None else split
    target, shadow, times = _fit_target_and_shadow(data, split, model, shadow_model)
    mia = UserMembershipAttack(k=k, dim=dim, attacker=attacker, seed=seed)
    mia.fit(shadow, data, split.shadow_members, split.shadow_non_members)
    res = mia.evaluate(target, data, split.target_members, split.target_non_members)
    details = {**times, "shadow_auc": mia.shadow_result_.auc, "split": split.sizes(), "k": k,
               "dim": dim}
    return MembershipResult(res.auc, res.accuracy, res.advantage, res.advantage_max,
                            res.n_members, res.n_non_members, details)


def unlearning_audit(
    data: Interactions,
    model: ModelSpec,
    *,
    n_forget: int = 300,
    split: UserSplit | None = None,
    shadow_model: ModelSpec | None = None,
    forget: Callable[[Any, np.ndarray], Any] | None = None,
    k: int = 100,
    dim: int = 64,
    attacker: str | Attacker = "membership",
    seed: int = 0,
) -> UnlearningAudit:
    """Judge user unlearning with the user-level attack: original, unlearned and gold.

    ``n_forget`` target members, drawn with ``seed``, are attacked on the original model, then
    forgotten (``forget(model, raw_ids)``, default ``model.forget(users=raw_ids)``), attacked
    again, and attacked on a model fitted from scratch on the target data without them (gold).
    Negatives are the target non-members throughout. For exact unlearning the unlearned and gold
    features coincide (``identical``); note that a gold fit reproduces the stored assignment
    only for sharders that derive it from the raw ids (the built-in random sharders do).

    Parameters
    ----------
    data, model, split, shadow_model, k, dim, attacker, seed
        As in :func:`membership_inference`.
    n_forget : int
        Forgotten users (the benchmark uses >= 300).
    forget : callable, optional
        ``forget(model, raw_user_ids) -> unlearned model``; default SISA's in-place forget.

    Returns
    -------
    UnlearningAudit
    """
    split = split_users(data, seed) if split is None else split
    n_forget = check_int("n_forget", n_forget, 1, len(split.target_members))
    target, shadow, times = _fit_target_and_shadow(data, split, model, shadow_model)
    mia = UserMembershipAttack(k=k, dim=dim, attacker=attacker, seed=seed)
    mia.fit(shadow, data, split.shadow_members, split.shadow_non_members)
    rng = np.random.default_rng([seed, 0x6D1A])
    gone = np.sort(rng.choice(split.target_members, size=n_forget, replace=False))
    negatives = split.target_non_members
    labels = np.r_[np.ones(len(gone), np.int64), np.zeros(len(negatives), np.int64)]
    results, proba, feats = {}, {}, {}

    def attack(name: str, m: Any) -> None:
        x = mia.features(m, data, np.concatenate([gone, negatives]))
        p = mia.proba_of_features(x)
        results[name] = membership_metrics(p, labels)
        proba[name], feats[name] = p[: len(gone)], x[: len(gone)]

    attack("original", target)
    # The attack's power on the whole target population, before anything is forgotten.
    everyone = mia.evaluate(target, data, split.target_members, split.target_non_members)
    t0 = time.perf_counter()
    if forget is None:
        target.forget(users=gone.tolist())  # SISA forgets in place
        unlearned = target
    else:
        unlearned = forget(target, gone)
    forget_seconds = time.perf_counter() - t0
    attack("unlearned", unlearned)
    remaining = _only_users(data, np.setdiff1d(data.user_map.index(split.target_members, "user"),
                                               data.user_map.index(gone, "user")))
    t0 = time.perf_counter()
    gold = _fitter(model, "model")(remaining)
    gold_seconds = time.perf_counter() - t0
    attack("gold", gold)
    identical = bool(np.array_equal(feats["unlearned"], feats["gold"])
                     and np.array_equal(proba["unlearned"], proba["gold"]))
    logger.info("membership audit: AUC original %.3f, unlearned %.3f, gold %.3f",
                results["original"].auc, results["unlearned"].auc, results["gold"].auc)
    return UnlearningAudit(
        results=results, member_probability=proba, features=feats, identical=identical,
        forget_seconds=forget_seconds, gold_fit_seconds=gold_seconds,
        details={**times, "n_forgotten": len(gone), "n_non_members": len(negatives),
                 "shadow_auc": mia.shadow_result_.auc, "split": split.sizes(), "k": k,
                 "dim": dim, "all_members": everyone.as_dict()})


# ---------------------------------------------------------------------------------- pair level
class InteractionMembershipAttack:
    """Interaction-level membership inference: was this (user, item) pair trained on?

    Fit it on a shadow model with known member and non-member pairs, then apply it to any model
    that has ``scores(user_idx)`` (e.g. to judge interaction-level forgetting).

    Parameters
    ----------
    attacker : str or Attacker
        The attack model (default the ``membership-interaction`` plugin).
    seed : int
        Seeds the attack model.
    batch_cells : int
        Scoring batch size, in (user, item) cells.
    """

    def __init__(self, attacker: str | Attacker = "membership-interaction", seed: int = 0,
                 batch_cells: int = 4_000_000) -> None:
        self.attacker = attacker
        self.seed = seed
        self.batch_cells = batch_cells

    def _labelled(self, model: Any, data: Interactions, members: Interactions,
                  non_members: Interactions) -> tuple[np.ndarray, np.ndarray]:
        for name, recs in (("members", members), ("non_members", non_members)):
            if not isinstance(recs, Interactions) or len(recs) == 0:
                raise ValidationError(f"{name} must be non-empty sisakit.Interactions (pairs)")
        keys = lambda r: r.user_idx * np.int64(data.n_items) + r.item_idx  # noqa: E731
        if np.intersect1d(keys(members), keys(non_members)).size:
            raise ValidationError("members and non_members share (user, item) pairs; the labels "
                                  "must be disjoint")
        x = np.concatenate([self.features(model, data, members),
                            self.features(model, data, non_members)])
        y = np.r_[np.ones(len(members), np.int64), np.zeros(len(non_members), np.int64)]
        return x, y

    def features(self, model: Any, data: Interactions, records: Interactions) -> np.ndarray:
        """:func:`interaction_features` of ``records`` under ``model``."""
        return interaction_features(model, records, data, batch_cells=self.batch_cells)

    def fit(self, shadow_model: Any, data: Interactions, members: Interactions,
            non_members: Interactions) -> InteractionMembershipAttack:
        """Train the attack model on the shadow model's member / non-member pairs.

        Parameters
        ----------
        shadow_model : object with ``scores(user_idx)``
        data : Interactions
            What the attacker knows (popularity and activity are counted here).
        members, non_members : Interactions
            Pairs the shadow model was / was not trained on (same id space as ``data``).

        Returns
        -------
        self
        """
        x, y = self._labelled(shadow_model, data, members, non_members)
        self.attacker_ = _attacker(self.attacker, self.seed).fit(x, y)
        self.shadow_result_ = membership_metrics(self._proba(x), y)
        return self

    def _proba(self, x: np.ndarray) -> np.ndarray:
        proba = self.attacker_.predict_proba(x)
        return proba[:, list(self.attacker_.classes_).index(1)]

    def predict_proba(self, model: Any, data: Interactions, records: Interactions) -> np.ndarray:
        """Probability that each pair of ``records`` was in ``model``'s training data."""
        if not hasattr(self, "attacker_"):
            raise ValidationError("fit the attack on a shadow model first")
        return self._proba(self.features(model, data, records))

    def evaluate(self, model: Any, data: Interactions, members: Interactions,
                 non_members: Interactions) -> MembershipResult:
        """Attack ``model`` on known member and non-member pairs."""
        if not hasattr(self, "attacker_"):
            raise ValidationError("fit the attack on a shadow model first")
        x, y = self._labelled(model, data, members, non_members)
        return membership_metrics(self._proba(x), y)


def _member_sample(train: Interactions, n: int, seed: int) -> Interactions:
    """``n`` random training pairs (all if fewer), to balance members against held-out pairs."""
    if n >= len(train):
        return train
    rng = np.random.default_rng(seed)
    return train.take(np.sort(rng.choice(len(train), size=n, replace=False)))


def interaction_membership_inference(
    data: Interactions,
    model: ModelSpec,
    *,
    split: UserSplit | None = None,
    shadow_model: ModelSpec | None = None,
    holdout: float = 0.2,
    attacker: str | Attacker = "membership-interaction",
    seed: int = 0,
) -> MembershipResult:
    """The full interaction-level attack.

    Target users (target members and non-members of ``split``) and shadow users (the shadow
    groups) each have ``holdout`` of their records held out per user
    (:func:`sisakit.split.holdout`); the target and shadow models train on the rest. Member pairs
    are a random sample of the training pairs as large as the held-out set.

    Returns
    -------
    MembershipResult
        On the target model's member vs held-out pairs.
    """
    split = split_users(data, seed) if split is None else split
    fit_target = _fitter(model, "model")
    fit_shadow = fit_target if shadow_model is None else _fitter(shadow_model, "shadow_model")
    out: dict[str, Any] = {}
    parts = {}
    for name, groups in (("target", (split.target_members, split.target_non_members)),
                         ("shadow", (split.shadow_members, split.shadow_non_members))):
        users = data.user_map.index(np.concatenate(groups), "user")
        train, test = split_holdout(_only_users(data, users), holdout, seed=seed)
        if len(test) == 0:
            raise ValidationError("the holdout left no non-member pairs; raise holdout or use "
                                  "users with more records")
        t0 = time.perf_counter()
        fitted = (fit_target if name == "target" else fit_shadow)(train)
        out[f"{name}_fit_seconds"] = time.perf_counter() - t0
        parts[name] = (fitted, _member_sample(train, len(test), seed), test)
    mia = InteractionMembershipAttack(attacker=attacker, seed=seed)
    mia.fit(parts["shadow"][0], data, parts["shadow"][1], parts["shadow"][2])
    res = mia.evaluate(parts["target"][0], data, parts["target"][1], parts["target"][2])
    details = {**out, "shadow_auc": mia.shadow_result_.auc, "holdout": holdout}
    return MembershipResult(res.auc, res.accuracy, res.advantage, res.advantage_max,
                            res.n_members, res.n_non_members, details)
