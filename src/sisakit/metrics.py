"""Full-ranking top-K evaluation of recommenders: Precision, Recall, NDCG and HitRate.

The scoring protocol
--------------------
Anything that recommends can be evaluated if it follows the :class:`Scorer` protocol:

* ``scores(user_idx)`` takes a 1-D int64 array of user *indices* and returns a float array
  (``torch.Tensor`` or ``numpy.ndarray``) of shape ``(len(user_idx), n_items)``: one score per
  item, in the index space of the :class:`~sisakit.data.Interactions` the model was fitted on.
  Larger is better. ``-inf`` means "never recommend this item"; NaN is an error.
* ``n_users`` and ``n_items`` are the sizes of that index space.

The returned array is never modified in place, so a model may hand out a view of a cache.

Evaluation protocol
-------------------
:func:`evaluate` ranks *all* items for every evaluated user (no negative sampling):

1. Items the user interacted with in ``train`` (when ``exclude_train=True``) and items that are
   inactive in ``train`` (``~train.item_active``, i.e. forgotten) get score ``-inf``.
2. The ``max(k)`` best items are taken with :func:`torch.topk` (ties: topk order). A position
   whose score is ``-inf`` is never a hit, even when fewer than ``k`` items are left to rank.
3. The relevant items of a user are the items of their ``test`` records that can be ranked,
   i.e. minus the items excluded in step 1 (a forgotten item or a training item cannot be
   recommended, so it does not count against the model). Users with at least one relevant item
   are evaluated (optionally only those in ``users``); the others are skipped.
4. Per user, with ``h`` the number of relevant items in the top ``K`` and ``r`` the number of
   relevant items: ``precision@K = h / K``, ``recall@K = h / r``, ``hr@K = 1 if h > 0``,
   ``ndcg@K = DCG / IDCG`` with binary gains, ``DCG = sum over hit ranks i (1-based) of
   1 / log2(i + 1)`` and ``IDCG`` the DCG of ``min(r, K)`` hits at the top.

The reported value of each metric is the mean over evaluated users.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch

from ._validation import check_int, check_user_selection, short_repr
from .data import Interactions
from .errors import ValidationError

__all__ = ["METRIC_NAMES", "ModelScorer", "Scorer", "evaluate", "evaluate_sampled", "ranking_metrics",
           "topk_items"]

logger = logging.getLogger(__name__)

#: Metric name prefixes, in the order they appear in results (``"precision@10"`` etc.).
METRIC_NAMES: tuple[str, ...] = ("precision", "recall", "ndcg", "hr")


@runtime_checkable
class Scorer(Protocol):
    """What :func:`evaluate` needs from a model.

    Attributes
    ----------
    n_users, n_items : int
        Size of the index space the model was fitted in.
    """

    n_users: int
    n_items: int

    def scores(self, user_idx: np.ndarray) -> torch.Tensor | np.ndarray:
        """Scores of every item for each user in ``user_idx``.

        Parameters
        ----------
        user_idx : ndarray of int64, shape (n,)
            User indices.

        Returns
        -------
        Tensor or ndarray of float, shape (n, n_items)
            Larger is better; ``-inf`` means "never recommend".
        """
        ...


# ---------------------------------------------------------------------------------- helpers
class ModelScorer:
    """A single :class:`~sisakit.ShardModel` seen as a :class:`Scorer` over an id space.

    Parameters
    ----------
    model : ShardModel
        A fitted model (e.g. one shard of a SISA ensemble).
    n_users, n_items : int
        Size of the id space the model was set up in.
    """

    def __init__(self, model: Any, n_users: int, n_items: int) -> None:
        self.model, self.n_users, self.n_items = model, int(n_users), int(n_items)

    def scores(self, user_idx: np.ndarray) -> torch.Tensor:
        return self.model.scores(user_idx).float().cpu()


def _normalise_k(k: int | Iterable[int]) -> list[int]:
    """Sorted distinct positive cut-offs."""
    if isinstance(k, (int, np.integer)):
        ks: list[Any] = [k]
    elif isinstance(k, Iterable) and not isinstance(k, (str, bytes)):
        ks = list(k)
    else:
        raise ValidationError(f"k must be an int or a sequence of ints, got {k!r}")
    if not ks:
        raise ValidationError("k is empty; pass a cut-off such as k=10 or k=(5, 10, 20)")
    out: set[int] = set()
    for v in ks:
        # check_int cannot carry the example, which shows that k may also be a sequence
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValidationError(f"k must contain integers >= 1, got {short_repr(v)}; pass e.g. k=10 or "
                                  "k=(5, 10, 20)")
        out.add(int(v))
    return sorted(out)


def _discounts(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``1 / log2(i + 1)`` for ranks ``i = 1..n``."""
    return 1.0 / torch.log2(torch.arange(2, n + 2, dtype=dtype))


def topk_items(scores: torch.Tensor | np.ndarray, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest-scoring items of each row, best first.

    Parameters
    ----------
    scores : Tensor or ndarray, shape (n_users, n_items)
        Item scores (already masked; ``-inf`` for items that must not be recommended).
    k : int
        Number of items per row, ``1 <= k <= n_items``.

    Returns
    -------
    Tensor of int64, shape (n_users, k)
        Item indices sorted by decreasing score (ties in :func:`torch.topk` order). When a row
        has fewer than ``k`` finite scores, its tail holds ``-inf``-scored items; check the
        scores if that matters.
    """
    s = torch.as_tensor(scores)
    if s.ndim != 2:
        raise ValidationError(f"scores must be 2-D (users × items), got shape {tuple(s.shape)}")
    k = check_int("k", k, 1, s.shape[1])
    return torch.topk(s, k, dim=1, largest=True, sorted=True).indices


def ranking_metrics(
    scores: torch.Tensor, test_matrix: torch.Tensor, k: int | Iterable[int]
) -> dict[str, torch.Tensor]:
    """Per-user top-K metrics of one batch.

    Parameters
    ----------
    scores : Tensor of float, shape (n_users, n_items)
        Already-masked scores (``-inf`` for excluded items). A ``-inf`` position in the top K is
        never a hit.
    test_matrix : Tensor of bool, shape (n_users, n_items)
        ``True`` where the item is relevant to the user.
    k : int or iterable of int
        Cut-off(s), each at most ``n_items``.

    Returns
    -------
    dict of str to Tensor of float64, shape (n_users,)
        Keys ``"precision@K"``, ``"recall@K"``, ``"ndcg@K"`` and ``"hr@K"`` for every K. Rows
        without relevant items get 0 for every metric.
    """
    ks = _normalise_k(k)
    if scores.ndim != 2 or test_matrix.shape != scores.shape:
        raise ValidationError(
            f"scores {tuple(scores.shape)} and test_matrix {tuple(test_matrix.shape)} must be "
            "2-D with the same shape"
        )
    if test_matrix.dtype != torch.bool:
        raise ValidationError(f"test_matrix must be a bool tensor, got {test_matrix.dtype}")
    n_items = scores.shape[1]
    kmax = ks[-1]
    if kmax > n_items:
        raise ValidationError(f"k={kmax} exceeds the number of items ({n_items}); lower k")
    top = torch.topk(scores, kmax, dim=1, largest=True, sorted=True)
    hits = torch.gather(test_matrix, 1, top.indices) & (top.values != float("-inf"))
    hits_f = hits.to(torch.float64)
    n_rel = test_matrix.sum(dim=1).to(torch.float64)
    has_rel = n_rel > 0
    n_rel_safe = n_rel.clamp(min=1.0)

    disc = _discounts(kmax)
    cum_hits = hits_f.cumsum(dim=1)
    cum_dcg = (hits_f * disc).cumsum(dim=1)
    ideal = torch.cat([torch.zeros(1, dtype=torch.float64), disc.cumsum(dim=0)])

    out: dict[str, torch.Tensor] = {}
    per_k: dict[int, dict[str, torch.Tensor]] = {}
    for kk in ks:
        h = cum_hits[:, kk - 1]
        n_ideal = torch.minimum(n_rel, torch.tensor(float(kk), dtype=torch.float64)).long()
        idcg = ideal[n_ideal].clamp(min=torch.finfo(torch.float64).tiny)
        per_k[kk] = {
            "precision": h / kk,
            "recall": h / n_rel_safe,
            "ndcg": torch.where(has_rel, cum_dcg[:, kk - 1] / idcg, 0.0),
            "hr": (h > 0).to(torch.float64),
        }
    for name in METRIC_NAMES:
        for kk in ks:
            out[f"{name}@{kk}"] = per_k[kk][name]
    return out


def _binary(m: sp.spmatrix) -> sp.csr_matrix:
    """CSR copy without explicit zeros, all stored values 1 (int8)."""
    m = sp.csr_matrix(m, copy=True)
    m.eliminate_zeros()
    m.data = np.ones(len(m.data), dtype=np.int8)
    return m


def _rows_flat_index(m: sp.csr_matrix, rows: np.ndarray, n_cols: int) -> torch.Tensor:
    """Flat indices ``r * n_cols + c`` into a dense ``(len(rows), n_cols)`` block."""
    indptr = m.indptr
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.int64)
    local_row = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    # position of each entry within its row, then into m.indices
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = m.indices[np.repeat(starts, counts) + offsets].astype(np.int64)
    return torch.from_numpy(local_row * n_cols + cols)


def _as_score_tensor(raw: Any, n_rows: int, n_items: int) -> torch.Tensor:
    if isinstance(raw, np.ndarray):
        if not raw.flags.writeable:
            raw = np.array(raw)  # torch refuses to wrap read-only memory without a warning
        s = torch.from_numpy(np.ascontiguousarray(raw))
    elif isinstance(raw, torch.Tensor):
        s = raw.detach()
    else:
        raise ValidationError(
            f"model.scores() returned {type(raw).__name__}; it must return a torch.Tensor or a "
            "numpy array of shape (n_users_in_batch, n_items)"
        )
    if s.device.type != "cpu":
        s = s.cpu()
    if tuple(s.shape) != (n_rows, n_items):
        raise ValidationError(
            f"model.scores() returned shape {tuple(s.shape)}, expected ({n_rows}, {n_items}) "
            "(one row per requested user, one column per item of the training data)"
        )
    if not s.is_floating_point():
        s = s.to(torch.float32)
    if torch.isnan(s).any():
        raise ValidationError(
            "model.scores() returned NaN scores; fix the model (use -inf to exclude an item)"
        )
    return s


def _check_inputs(model: Any, train: Interactions, test: Interactions) -> None:
    if not isinstance(model, Scorer):
        raise ValidationError(
            f"{type(model).__name__} is not a scorer; a model needs a scores(user_idx) method "
            "and n_users / n_items attributes (see sisakit.metrics.Scorer)"
        )
    if not isinstance(train, Interactions) or not isinstance(test, Interactions):
        raise ValidationError("train and test must be sisakit.Interactions")
    if not train.same_space(test):
        raise ValidationError(
            "train and test index users/items differently; split one Interactions (e.g. with "
            "data.take(mask)) so both share its id space"
        )
    if int(model.n_items) != train.n_items or int(model.n_users) != train.n_users:
        raise ValidationError(
            f"the model was fitted on {int(model.n_users)} users × {int(model.n_items)} items "
            f"but train has {train.n_users} × {train.n_items}; evaluate with the train/test "
            "split of the data the model was fitted on (same id space)"
        )
    if len(test) == 0:
        raise ValidationError("test has no records; pass a non-empty held-out set")


# ---------------------------------------------------------------------------------- evaluate
def evaluate(
    model: Scorer,
    train: Interactions,
    test: Interactions,
    k: int | Sequence[int] = (5, 10, 20),
    *,
    users: np.ndarray | None = None,
    batch_size: int = 512,
    exclude_train: bool = True,
    per_user: bool = False,
) -> dict[str, Any]:
    """Full-ranking top-K evaluation of ``model`` on held-out ``test`` records.

    See the module docstring for the protocol.

    Parameters
    ----------
    model : Scorer
        Fitted model in the id space of ``train``.
    train : Interactions
        The data the model was fitted on; its items are excluded from each user's ranking (if
        ``exclude_train``) and its inactive items are always excluded.
    test : Interactions
        Held-out records, in the same id space as ``train``.
    k : int or sequence of int, default (5, 10, 20)
        Cut-offs; each at most ``train.n_items``.
    users : array of int or bool mask, optional
        Evaluate only these user indices (users without relevant test items are still skipped).
    batch_size : int, default 512
        Users scored per batch (memory is about ``batch_size * n_items * 5`` bytes).
    exclude_train : bool, default True
        Exclude each user's training items from their ranking.
    per_user : bool, default False
        Also return per-user values under ``"per_user"``.

    Returns
    -------
    dict
        ``"precision@K"``, ``"recall@K"``, ``"ndcg@K"``, ``"hr@K"`` for every K (python floats,
        means over evaluated users), ``"n_users"`` (int, number of evaluated users) and, with
        ``per_user=True``, ``"per_user"``: a dict with ``"user_idx"`` (int64 array of evaluated
        users, ascending) and one float64 array per metric name, aligned with ``"user_idx"``.

    Raises
    ------
    ValidationError
        If ``train`` and ``test`` are in different id spaces, the model's sizes differ from
        ``train``'s, ``test`` is empty, a K exceeds the number of items, no user is left to
        evaluate, or the model returns scores of the wrong shape or with NaN.
    """
    _check_inputs(model, train, test)
    ks = _normalise_k(k)
    n_items = train.n_items
    if ks[-1] > n_items:
        raise ValidationError(
            f"k={ks[-1]} exceeds the number of items ({n_items}); use k <= {n_items}"
        )
    batch_size = check_int("batch_size", batch_size, 1)
    selected = check_user_selection(users, train.n_users)

    active = np.asarray(train.item_active, dtype=bool)
    inactive_cols = np.flatnonzero(~active)
    train_csr = _binary(train.to_csr()) if exclude_train else None

    # relevant = test items that can be ranked (not excluded as training or inactive items)
    rel = _binary(test.to_csr())
    if train_csr is not None:
        rel = _binary(rel - rel.multiply(train_csr))
    if len(inactive_cols):
        rel.data[~active[rel.indices]] = 0
        rel = _binary(rel)
    n_rel = np.diff(rel.indptr)
    eval_users = np.flatnonzero(n_rel > 0)
    if selected is not None:
        eval_users = np.intersect1d(eval_users, selected, assume_unique=True)
    if len(eval_users) == 0:
        raise ValidationError(
            "no user to evaluate: no selected user has a test item that is active and not in "
            "their training data; check the split and the users argument"
        )
    logger.debug(
        "evaluating %d users × %d items, k=%s, batch_size=%d",
        len(eval_users), n_items, ks, batch_size,
    )

    inactive_t = torch.from_numpy(inactive_cols.astype(np.int64))
    neg_inf = float("-inf")
    chunks: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, len(eval_users), int(batch_size)):
            batch = eval_users[start : start + int(batch_size)]
            b = len(batch)
            scores = _as_score_tensor(model.scores(batch), b, n_items)
            mask = torch.zeros((b, n_items), dtype=torch.bool)
            if train_csr is not None:
                mask.view(-1)[_rows_flat_index(train_csr, batch, n_items)] = True
            if len(inactive_t):
                mask[:, inactive_t] = True
            scores = scores.masked_fill(mask, neg_inf)  # out of place: model's array untouched
            test_dense = torch.zeros((b, n_items), dtype=torch.bool)
            test_dense.view(-1)[_rows_flat_index(rel, batch, n_items)] = True
            for name, values in ranking_metrics(scores, test_dense, ks).items():
                chunks.setdefault(name, []).append(values)

    result: dict[str, Any] = {}
    per: dict[str, np.ndarray] = {"user_idx": eval_users.astype(np.int64)}
    for name, parts in chunks.items():
        arr = torch.cat(parts).numpy()
        per[name] = arr
        result[name] = float(arr.mean())
    result["n_users"] = len(eval_users)
    if per_user:
        result["per_user"] = per
    if logger.isEnabledFor(logging.INFO):
        shown = ", ".join(f"{n}={result[n]:.4f}" for n in chunks if n.endswith(f"@{ks[-1]}"))
        logger.info("evaluated %d users: %s", len(eval_users), shown)
    return result



def evaluate_sampled(
    model: Any,
    train: Interactions,
    test: Interactions,
    k: int | Iterable[int] = (5, 10, 20),
    *,
    n_negatives: int = 99,
    seed: int = 0,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Leave-one-out evaluation with sampled negatives (the NCF / PoT-AU papers' protocol).

    Each test record is ranked against ``n_negatives`` items sampled uniformly (seeded) from the
    active items the user has in neither ``train`` nor ``test``; HR@K is 1 when the test item
    ranks in the top K of the ``n_negatives + 1`` candidates, NDCG@K is ``1/log2(rank + 2)``.
    Ties count against the test item. Use it with :func:`sisakit.split.leave_last_out`; the
    library default is the full ranking of :func:`evaluate`.

    Returns
    -------
    dict
        ``"hr@K"`` and ``"ndcg@K"`` means over test records, and ``"n_records"``.
    """
    _check_inputs(model, train, test)
    ks = _normalise_k(k)
    n_items = train.n_items
    active = torch.from_numpy(np.flatnonzero(train.item_active))
    n_negatives = check_int("n_negatives", n_negatives, 1, len(active) - 1)
    keep = train.item_active[test.item_idx]  # forgotten test items cannot be ranked
    users = torch.from_numpy(test.user_idx[keep])
    targets = torch.from_numpy(test.item_idx[keep])
    if len(users) == 0:
        raise ValidationError("no test record names an active item")
    seen = torch.unique(torch.from_numpy(np.concatenate([
        train.user_idx * np.int64(n_items) + train.item_idx,
        test.user_idx * np.int64(n_items) + test.item_idx])))
    g = torch.Generator().manual_seed(int(seed))
    neg = active[torch.randint(len(active), (len(users), n_negatives), generator=g)]
    todo = torch.ones_like(neg, dtype=torch.bool)
    for _ in range(100):  # vectorised rejection: one round redraws every clashing negative
        keys = users[:, None] * n_items + neg
        pos = torch.searchsorted(seen, keys).clamp_(max=len(seen) - 1)
        todo = seen[pos] == keys
        if not bool(todo.any()):
            break
        neg[todo] = active[torch.randint(len(active), (int(todo.sum()),), generator=g)]
    hits = {kk: [] for kk in ks}
    gains = {kk: [] for kk in ks}
    for start in range(0, len(users), batch_size):
        ub = users[start:start + batch_size]
        scores = _as_score_tensor(model.scores(ub.numpy()), len(ub), n_items)
        cand = torch.cat([targets[start:start + batch_size, None], neg[start:start + batch_size]], 1)
        s = torch.gather(scores, 1, cand)
        rank = (s[:, 1:] >= s[:, :1]).sum(1)  # negatives scoring at least as high as the target
        for kk in ks:
            hit = rank < kk
            hits[kk].append(hit.double())
            gains[kk].append(torch.where(hit, 1.0 / torch.log2(rank.double() + 2.0),
                                         torch.zeros_like(rank, dtype=torch.float64)))
    out: dict[str, Any] = {"n_records": len(users)}
    for kk in ks:
        out[f"hr@{kk}"] = float(torch.cat(hits[kk]).mean())
        out[f"ndcg@{kk}"] = float(torch.cat(gains[kk]).mean())
    return out
