"""A seeded synthetic interaction generator with latent-factor structure."""

from __future__ import annotations

import logging
import math
import numbers

import numpy as np

from .._validation import short_repr
from ..data import Interactions
from ..errors import ValidationError

__all__ = ["synthetic"]

logger = logging.getLogger(__name__)

_CHUNK_CELLS = 1 << 22  # users x items cells sampled at once
_T0 = 1_500_000_000  # 2017-07-14, start of the synthetic clock
_SPAN = 2 * 365 * 86_400  # users join within two years
_AGE_PROBS = (0.3, 0.45, 0.25)
# Size limits, checked before anything is allocated: the generator scores every user-item
# pair (in chunks) and holds the latent factors and every record in memory.
_MAX_USERS = 10**8
_MAX_ITEMS = 10**7
_MAX_FACTORS = 1024
_MAX_PAIRS = 10**11  # n_users * n_items
_MAX_LATENT = 2 * 10**8  # (n_users + n_items) * n_factors
_MAX_RECORDS = 2 * 10**8  # expected records


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    valid = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high:,}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValidationError(f"{name} must be {valid}, got {short_repr(value)} "
                              f"({type(value).__name__})")
    if value < low or (high is not None and value > high):
        raise ValidationError(f"{name} must be {valid}, got {short_repr(int(value))}")
    return int(value)


def synthetic(
    n_users: int = 2000,
    n_items: int = 500,
    *,
    n_factors: int = 8,
    mean_interactions: float = 30,
    seed: int = 0,
) -> Interactions:
    """Generate seeded synthetic interactions with latent-factor structure.

    Users and items get latent vectors; each user's items are drawn without replacement with
    probability proportional to ``exp(affinity + popularity)`` (Gumbel-top-k), where the item
    popularity term follows a long tail. User activity is log-normal (at least 3 records, at
    most ``n_items // 2``), so low- and high-activity groups exist. Two user attributes are
    planted and shift the user's latent vector, so they can be inferred from behaviour or
    embeddings: ``"gender"`` (int8, 0/1) and ``"age_group"`` (int8, 0/1/2).

    Parameters
    ----------
    n_users, n_items : int
        Size of the id space. Raw ids are ``1..n_users`` and ``1..n_items``; every user has
        records, items may have none. ``n_users`` is at most 10**8, ``n_items`` at most 10**7
        and ``n_users * n_items`` at most 10**11 (every pair is scored).
    n_factors : int
        Latent dimension, in ``[1, 1024]``; ``(n_users + n_items) * n_factors`` is at most
        2 * 10**8.
    mean_interactions : float
        Mean number of records per user (before clipping to ``[3, n_items // 2]``), finite and
        > 0; about ``n_users * mean_interactions`` records, at most 2 * 10**8.
    seed : int
        Seed of the :class:`numpy.random.Generator` (>= 0); the same seed gives identical output.

    Raises
    ------
    ValidationError
        If an argument is not an integer (a number for ``mean_interactions``) in its range;
        checked before anything is allocated.

    Returns
    -------
    Interactions
        Records sorted by user, then time. ``rating`` is 1–5 (float) and grows with latent
        affinity; ``timestamp`` is int64 Unix seconds, strictly increasing within each user.
    """
    n_users = _check_int("n_users", n_users, 1, _MAX_USERS)
    n_items = _check_int("n_items", n_items, 1, _MAX_ITEMS)
    n_factors = _check_int("n_factors", n_factors, 1, _MAX_FACTORS)
    seed = _check_int("seed", seed, 0)
    mean = None
    if not isinstance(mean_interactions, bool) and isinstance(mean_interactions, numbers.Real):
        try:
            mean = float(mean_interactions)
        except OverflowError:
            mean = math.inf
    if mean is None or not (0 < mean < math.inf):
        raise ValidationError(f"mean_interactions must be a finite number > 0, got "
                              f"{short_repr(mean_interactions)}; pass e.g. mean_interactions=30")
    mean_interactions = mean
    if n_users * n_items > _MAX_PAIRS:
        raise ValidationError(
            f"n_users * n_items = {n_users * n_items:.3g} user-item pairs is too many (at most "
            f"{_MAX_PAIRS:.0e}: every pair is scored); lower n_users or n_items"
        )
    if (n_users + n_items) * n_factors > _MAX_LATENT:
        raise ValidationError(
            f"(n_users + n_items) * n_factors = {(n_users + n_items) * n_factors:.3g} latent "
            f"values is too many (at most {_MAX_LATENT:.0e}); lower n_factors or the sizes"
        )
    expected = n_users * max(min(3, n_items), min(mean_interactions, max(3, n_items // 2)))
    if expected > _MAX_RECORDS:
        raise ValidationError(
            f"about {expected:.3g} records would be generated (n_users * mean_interactions), "
            f"too many (at most {_MAX_RECORDS:.0e}); lower n_users or mean_interactions"
        )
    rng = np.random.default_rng(seed)
    k = n_factors
    scale = 1.0 / np.sqrt(k)

    # users: planted attributes shift the latent vector
    gender = rng.integers(0, 2, n_users).astype(np.int8)
    age_group = rng.choice(3, size=n_users, p=_AGE_PROBS).astype(np.int8)
    gender_offset = rng.normal(0.0, 1.0, (2, k))
    age_offset = rng.normal(0.0, 1.0, (3, k))
    gender_offset *= 0.9 / np.linalg.norm(gender_offset, axis=1, keepdims=True)
    age_offset *= 0.7 / np.linalg.norm(age_offset, axis=1, keepdims=True)
    user_f = (
        rng.normal(0.0, scale, (n_users, k)) + gender_offset[gender] + age_offset[age_group]
    ).astype(np.float32)

    # items: latent vectors plus a long-tail popularity bias
    item_f = rng.normal(0.0, 1.0, (n_items, k)).astype(np.float32)
    pop_rank = rng.permutation(n_items) + 1
    item_bias = (-0.9 * np.log(pop_rank)).astype(np.float32)

    # activity: log-normal counts, clipped
    sigma = 1.0
    mu = np.log(mean_interactions) - sigma**2 / 2
    low = min(3, n_items)
    cap = max(low, n_items // 2)
    counts = np.clip(np.rint(rng.lognormal(mu, sigma, n_users)), low, cap).astype(np.int64)

    # Gumbel-top-k: the top-c keys of (logit + Gumbel noise) are a sample without replacement
    # with probability proportional to exp(logit), in sampling order.
    rows = max(1, _CHUNK_CELLS // n_items)
    picked: list[np.ndarray] = []
    for lo in range(0, n_users, rows):  # loop over chunks of users, not users
        hi = min(n_users, lo + rows)
        c = counts[lo:hi]
        kmax = int(c.max())
        keys = user_f[lo:hi] @ item_f.T
        keys += item_bias
        keys += rng.gumbel(size=keys.shape).astype(np.float32)
        np.negative(keys, out=keys)
        if kmax < n_items:
            top = np.argpartition(keys, kmax - 1, axis=1)[:, :kmax]
        else:
            top = np.broadcast_to(np.arange(n_items), keys.shape)
        order = np.argsort(np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        picked.append(top[np.arange(kmax) < c[:, None]])
    item_idx = np.concatenate(picked).astype(np.int64)
    user_idx = np.repeat(np.arange(n_users, dtype=np.int64), counts)

    # ratings grow with (standardised) latent affinity
    aff = np.einsum("ij,ij->i", user_f[user_idx], item_f[item_idx])
    aff = (aff - aff.mean()) / (aff.std() + 1e-12)
    rating = np.clip(np.rint(3.2 + 1.1 * aff + rng.normal(0.0, 0.7, len(aff))), 1, 5)

    # timestamps: per-user start plus exponential gaps (>= 1 s), strictly increasing per user
    start = _T0 + rng.integers(0, _SPAN, n_users)
    gaps = np.maximum(1, np.rint(rng.exponential(86_400.0, len(user_idx)))).astype(np.int64)
    csum = np.cumsum(gaps)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    before = (csum - gaps)[first]  # sum of gaps of earlier users
    timestamp = start[user_idx] + csum - before[user_idx]

    data = Interactions.from_arrays(
        user_idx + 1,
        item_idx + 1,
        rating=rating.astype(np.float32),
        timestamp=timestamp,
        user_ids=np.arange(1, n_users + 1),
        item_ids=np.arange(1, n_items + 1),
    ).with_user_attributes(np.arange(1, n_users + 1), gender=gender, age_group=age_group)
    logger.debug("synthetic(seed=%d): %s", seed, data)
    return data
