"""Built-in influence measures: ``jaccard``, ``rank-change`` and ``ndcg-delta``.

All three are computed for every user at once from :func:`~sisakit.influence.base.match_positions`
(no Python loop per user).
"""

from __future__ import annotations

import numpy as np

from ..hookspecs import hookimpl
from .base import InfluenceMeasure, match_positions

__all__ = ["JaccardMeasure", "NDCGDeltaMeasure", "RankChangeMeasure"]


def _discounts(k: int) -> np.ndarray:
    """``1 / log2(p + 2)`` for 0-based positions ``p = 0..k-1``."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


class JaccardMeasure(InfluenceMeasure):
    """Jaccard@K similarity ``|A ∩ B| / |A ∪ B|`` of the two lists (as sets).

    1 for an unchanged set of items (whatever their order), 0 for disjoint lists.
    """

    no_change = 1.0
    extreme = 0.0

    def __init__(self) -> None:
        pass

    def compute(self, before_topk: np.ndarray, after_topk: np.ndarray, k: int) -> np.ndarray:
        overlap = (match_positions(before_topk, after_topk) < k).sum(axis=1).astype(np.float64)
        return overlap / (2.0 * k - overlap)


class RankChangeMeasure(InfluenceMeasure):
    """Normalised Spearman footrule for top-K lists (Fagin, Kumar & Sivakumar, 2003).

    Every item of either list gets its 1-based rank in both lists, ``k + 1`` where it is absent;
    the value is the sum of the absolute rank changes divided by its maximum ``k (k + 1)``,
    which is reached exactly by disjoint lists. 0: unchanged list (same items, same order);
    1: disjoint lists. Unlike Jaccard it sees re-orderings.
    """

    no_change = 0.0
    extreme = 1.0

    def __init__(self) -> None:
        pass

    def compute(self, before_topk: np.ndarray, after_topk: np.ndarray, k: int) -> np.ndarray:
        pos = np.arange(k, dtype=np.int64)
        new = match_positions(before_topk, after_topk)  # k where dropped
        old = match_positions(after_topk, before_topk)  # k where newly entered
        # Items in both lists are counted once (from the before side); entrants add k - q.
        moved = np.abs(new - pos).sum(axis=1)
        entered = np.where(old == k, k - pos, 0).sum(axis=1)
        return (moved + entered).astype(np.float64) / (k * (k + 1))


class NDCGDeltaMeasure(InfluenceMeasure):
    """``1 - NDCG@K`` of the after list, with the before list as the ideal ranking.

    The item at 0-based position ``p`` of the before list has graded relevance ``(k - p) / k``
    (items outside it: 0), so the before list itself is the ideal ranking (NDCG 1) and, by the
    rearrangement inequality, any other list scores lower. 0: unchanged list; 1: disjoint lists.
    Losing or demoting the *top* items of the before list costs most.
    """

    no_change = 0.0
    extreme = 1.0

    def __init__(self) -> None:
        pass

    def compute(self, before_topk: np.ndarray, after_topk: np.ndarray, k: int) -> np.ndarray:
        disc = _discounts(k)
        gain_before = (k - np.arange(k, dtype=np.float64)) / k
        idcg = float((gain_before * disc).sum())
        old = match_positions(after_topk, before_topk)  # rank in the before list, k if absent
        gains = (k - old).astype(np.float64) / k  # 0 for items not in the before list
        dcg = (gains * disc[None, :]).sum(axis=1)
        return np.clip(1.0 - dcg / idcg, 0.0, 1.0)


@hookimpl
def register_influence(register):
    register("jaccard", JaccardMeasure)
    register("rank-change", RankChangeMeasure)
    register("ndcg-delta", NDCGDeltaMeasure)
