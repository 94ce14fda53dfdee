"""The :class:`InfluenceMeasure` interface: how much one user's top-K list changed.

An influence measure compares, for every user at once, the top-K list a model recommended
*before* an unlearning request with the list recommended *after* it, and returns one number per
user. Measures are plugins of the kind ``"influence"`` (hook ``register_influence``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from ..base import Component
from ..errors import ValidationError

__all__ = ["InfluenceMeasure", "match_positions"]


def match_positions(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Position of each item of ``a``'s rows in the same row of ``b`` (``k`` when absent).

    Vectorised over rows: every ``(row, item)`` pair becomes one integer key, the keys of ``b``
    are sorted once and looked up with a single :func:`numpy.searchsorted`.

    Parameters
    ----------
    a : ndarray of int64, shape (n, ka)
        Lists of non-negative item codes.
    b : ndarray of int64, shape (n, k)
        Lists of non-negative item codes, no repeated item within a row.

    Returns
    -------
    ndarray of int64, shape (n, ka)
        ``out[u, p]`` is the 0-based position of ``a[u, p]`` in ``b[u]``, or ``k`` (the width
        of ``b``) if ``b[u]`` does not hold it.
    """
    n, k = b.shape
    if a.shape[0] != n:
        raise ValidationError(f"a and b need the same number of rows, got {a.shape[0]} and {n}")
    if n == 0 or k == 0 or a.shape[1] == 0:
        return np.full(a.shape, k, dtype=np.int64)
    width = np.int64(max(int(a.max()), int(b.max())) + 1)
    rows = np.arange(n, dtype=np.int64)[:, None] * width
    kb = (rows + b).ravel()
    order = np.argsort(kb, kind="stable")
    sorted_kb = kb[order]
    ka = (rows + a).ravel()
    pos = np.minimum(np.searchsorted(sorted_kb, ka), len(sorted_kb) - 1)
    found = sorted_kb[pos] == ka
    where = order[pos] % k  # column of the match in b
    return np.where(found, where, k).reshape(a.shape).astype(np.int64)


class InfluenceMeasure(Component, ABC):
    """Per-user change between two top-K lists (a plugin of kind ``"influence"``).

    Contract
    --------
    * :meth:`compute` is vectorised: it takes two ``(n_users, k)`` int64 arrays of item codes
      (best first, no item twice in a row, both rows of a user drawn from the same catalogue)
      and returns a float64 array of shape ``(n_users,)``. Row ``u`` of the output depends only
      on row ``u`` of the inputs.
    * Identical lists give :attr:`no_change`; lists with no item in common give
      :attr:`extreme`; every other value lies between the two (inclusive).
    * It is deterministic: the same input gives the same bits.

    Subclasses set the class attributes :attr:`no_change` and :attr:`extreme` and store every
    constructor argument as an attribute of the same name (see :class:`~sisakit.base.Component`).
    """

    #: Value of a user whose list did not change at all.
    no_change: ClassVar[float] = 0.0
    #: Value of a user whose before and after lists share no item.
    extreme: ClassVar[float] = 1.0

    @abstractmethod
    def compute(self, before_topk: np.ndarray, after_topk: np.ndarray, k: int) -> np.ndarray:
        """Per-user value of the measure.

        Parameters
        ----------
        before_topk, after_topk : ndarray of int64, shape (n_users, k)
            Item codes of each user's top-K list before and after unlearning, best first.
        k : int
            The list length (``before_topk.shape[1]``).

        Returns
        -------
        ndarray of float64, shape (n_users,)
        """

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)``: the range the values lie in (used for histograms)."""
        return (min(self.no_change, self.extreme), max(self.no_change, self.extreme))
