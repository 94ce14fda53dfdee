"""Contract tests for sisakit components: run them against your own sharder, model, aggregator
or attacker.

Every built-in component passes these suites, and a third-party plugin should too. Subclass the
contract class in a pytest test module and provide the factory method; pytest collects the
inherited ``test_*`` methods:

.. code-block:: python

    from sisakit.testing import SharderContract

    class TestMySharder(SharderContract):
        def make_sharder(self):
            return MySharder()

The contract classes are not named ``Test*``, so pytest never collects them on their own.
Each class keeps its fixtures tiny (a few hundred records) and runs in a few seconds.

Optional knobs are class attributes (``n_shards``, ``seed``…) and the ``make_data`` method,
which you may override to feed your component data it supports.

This module imports :mod:`pytest`; ``import sisakit`` never imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
import torch

from . import plugins
from ._device import deterministic, torch_threads
from .aggregators.base import Aggregator
from .attackers.base import Attacker, AttackResult
from .data import Interactions
from .errors import PluginError, SisakitError, ValidationError
from .executors.base import Executor
from .influence.base import InfluenceMeasure
from .models.base import ShardModel
from .sharders.base import Sharder
from .sisa import SISA, parameters_equal
from .store import RunStore
from .unlearners.base import UnlearnContext, Unlearner, UnlearnReport, UnlearnResult
from .unlearners.retrain import RetrainUnlearner

__all__ = [
    "AggregatorContract",
    "AttackerContract",
    "ExecutorContract",
    "InfluenceContract",
    "ShardModelContract",
    "SharderContract",
    "UnlearnerContract",
    "assert_exact",
    "engine_threads",
    "make_attack_data",
    "make_interactions",
    "scratch_fit",
    "stored_assignment",
]


# ---------------------------------------------------------------------------------- fixtures
def make_interactions(
    n_users: int = 60,
    n_items: int = 40,
    n: int = 800,
    seed: int = 0,
    *,
    str_ids: bool = False,
) -> Interactions:
    """Small seeded interaction data for tests.

    Every user has at least one record and no (user, item) pair occurs twice, so deleting a
    pair removes exactly one record. Raw ids are ``1000 + index`` for users and ``5000 + index``
    for items (so raw ids never coincide with dense indices), or their string forms
    (``"u1000"``, ``"i5000"``) with ``str_ids=True``. Records carry a ``timestamp``.

    Parameters
    ----------
    n_users, n_items : int
        Size of the id space.
    n : int
        Number of records, between ``n_users`` and ``n_users * n_items``.
    seed : int
        Seed of the :class:`numpy.random.Generator`; the same arguments give identical data.
    str_ids : bool
        Use string raw ids instead of integers.

    Returns
    -------
    Interactions
        ``n`` records in an id space of ``n_users`` users and ``n_items`` items.
    """
    if n_users < 1 or n_items < 1:
        raise ValidationError(f"n_users and n_items must be >= 1, got {n_users}, {n_items}")
    if not n_users <= n <= n_users * n_items:
        raise ValidationError(
            f"n must lie in [n_users, n_users * n_items] = [{n_users}, {n_users * n_items}], "
            f"got {n}"
        )
    rng = np.random.default_rng(seed)
    # One record per user first (so every user has data), then distinct random cells.
    first = np.arange(n_users, dtype=np.int64) * n_items + rng.integers(0, n_items, n_users)
    rest = np.setdiff1d(np.arange(n_users * n_items, dtype=np.int64), first)
    cells = np.concatenate([first, rng.choice(rest, size=n - n_users, replace=False)])
    cells = cells[rng.permutation(len(cells))]
    users, items = cells // n_items, cells % n_items
    uid = 1000 + np.arange(n_users, dtype=np.int64)
    iid = 5000 + np.arange(n_items, dtype=np.int64)
    if str_ids:
        uid = np.array([f"u{v}" for v in uid])
        iid = np.array([f"i{v}" for v in iid])
    timestamp = 1_600_000_000 + rng.integers(0, 10_000_000, len(cells))
    return Interactions.from_arrays(
        uid[users], iid[items], timestamp=timestamp, user_ids=uid, item_ids=iid
    )


def make_attack_data(
    n_train: int = 400,
    n_test: int = 400,
    n_features: int = 8,
    shift: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian features with a planted binary signal, for attacker tests.

    Labels are balanced 0/1; the mean of the first half of the features is ``shift`` larger
    for label 1 than for label 0 (the remaining features are pure noise).

    Parameters
    ----------
    n_train, n_test : int
        Samples in the training and the test split.
    n_features : int
        Feature dimension.
    shift : float
        Mean shift of the informative features (0 plants no signal).
    seed : int
        Seed of the :class:`numpy.random.Generator`.

    Returns
    -------
    x_train, y_train, x_test, y_test : ndarray
        Float64 features of shape ``(n, n_features)`` and int64 labels of shape ``(n,)``.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % 2).astype(np.int64)
    x = rng.normal(0.0, 1.0, (n, n_features))
    x[:, : max(1, n_features // 2)] += shift * y[:, None]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# ---------------------------------------------------------------------------------- helpers
def _assert_same_state(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], what: str
) -> None:
    """Assert two state dicts have the same keys and bit-identical tensors."""
    assert set(a) == set(b), f"{what}: state keys differ: {sorted(set(a) ^ set(b))}"
    for key in sorted(a):
        ta, tb = a[key], b[key]
        assert ta.dtype == tb.dtype and ta.shape == tb.shape, (
            f"{what}: tensor {key!r} is {ta.dtype}{tuple(ta.shape)} vs {tb.dtype}{tuple(tb.shape)}"
        )
        assert torch.equal(ta.cpu(), tb.cpu()), f"{what}: tensor {key!r} differs"


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and values, treating NaN as equal to NaN."""
    if a.shape != b.shape:
        return False
    both_nan = torch.isnan(a) & torch.isnan(b) if a.is_floating_point() else torch.zeros_like(a)
    return bool(((a == b) | both_nan.bool()).all())


def _is_unfitted(model: ShardModel) -> bool:
    """True when ``model`` holds no trained state (state_dict raises or is empty)."""
    try:
        state = model.state_dict()
    except SisakitError:
        return True
    return len(state) == 0


def _check_params_roundtrip(component: Any) -> None:
    """``clone()`` and ``type(c)(**c.get_params())`` reproduce the parameters."""
    params = component.get_params()
    assert isinstance(params, dict), "get_params() must return a dict"
    clone = component.clone()
    assert type(clone) is type(component), "clone() must return the same class"
    assert clone is not component, "clone() must return a new object"
    assert clone.get_params() == params, "clone() changed the parameters"
    rebuilt = type(component)(**params)
    assert rebuilt.get_params() == params, (
        "type(c)(**c.get_params()) does not reproduce the parameters; store every constructor "
        "argument as an attribute of the same name"
    )


@contextlib.contextmanager
def engine_threads(model: Any) -> Iterator[None]:
    """Run a block under the thread count and determinism settings a fitted
    :class:`~sisakit.SISA` run trains with.

    A float reduction's order depends on the number of threads (and the CPU's vector width),
    so learned state computed outside the engine equals the engine's bit for bit only when it
    is computed under the engine's settings, never under the process's default thread count.

    Parameters
    ----------
    model : SISA
        The run whose ``threads_per_shard`` and device to use.

    Examples
    --------
    >>> with engine_threads(run):  # doctest: +SKIP
    ...     refit = run.aggregator.clone().fit(run, run.data)
    """
    with torch_threads(model.threads_per_shard), deterministic(model.device):
        yield


def stored_assignment(model: Any, data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """The ``(shard, slice)`` a fitted :class:`~sisakit.SISA` run stores for each record of
    ``data`` (matched by ``record_id``), in the order of ``data``.

    Parameters
    ----------
    model : SISA
        A fitted run (possibly after forgets).
    data : Interactions
        Records the run still holds, e.g. ``original.without(users=forgotten)``.

    Returns
    -------
    shard, slice : ndarray of int64
    """
    held = model.data.record_id
    order = np.argsort(held, kind="stable")
    pos = np.minimum(np.searchsorted(held, data.record_id, sorter=order), len(held) - 1)
    pos = order[pos]
    missing = held[pos] != data.record_id
    if missing.any():
        raise ValidationError(
            f"{int(missing.sum())} record(s) of data are not held by the run (e.g. record ids "
            f"{data.record_id[missing][:5].tolist()}); pass the data the run still holds"
        )
    shard, slice_ = model.assignment
    return shard[pos].copy(), slice_[pos].copy()


def scratch_fit(model: Any, data: Interactions, *, use_stored_assignment: bool = True) -> Any:
    """A fresh :class:`~sisakit.SISA` with ``model``'s configuration fitted from scratch on
    ``data``: the exactness reference of a run after forgets.

    Parameters
    ----------
    model : SISA
        The run to reproduce (its registered components, shards, slices, epochs and seed).
    data : Interactions
        The remaining data.
    use_stored_assignment : bool
        Fit with the run's stored assignment of these records (the reference for data-dependent
        sharders and for emptied shards) instead of drawing a fresh one.

    Returns
    -------
    SISA
    """
    ref = SISA(**model.sisa_config.sisa_kwargs(model.device.type), progress=False)
    assignment = stored_assignment(model, data) if use_stored_assignment else None
    return ref.fit(data, assignment=assignment)


def assert_exact(model: Any, remaining: Interactions, *, use_stored_assignment: bool = True,
                 k: int = 5) -> Any:
    """Assert a run equals :func:`scratch_fit` on ``remaining`` bit for bit (every tensor of
    every shard) and recommends the same top-``k`` to every remaining user.

    Returns
    -------
    SISA
        The scratch reference.
    """
    ref = scratch_fit(model, remaining, use_stored_assignment=use_stored_assignment)
    equal, n = parameters_equal(model, ref)
    assert n > 0, "no tensors were compared"
    assert equal, "the run differs from a scratch fit on the remaining data"
    users = np.unique(remaining.user_ids[remaining.user_idx])
    assert np.array_equal(model.recommend(users, k=k), ref.recommend(users, k=k)), (
        "the run recommends differently from the scratch fit"
    )
    return ref


# ---------------------------------------------------------------------------------- sharders
class SharderContract:
    """Contract tests for a :class:`~sisakit.Sharder`.

    Subclass it and implement :meth:`make_sharder`. Override :meth:`make_data` (and
    :meth:`make_string_data`) to test on other data; set ``n_shards`` / ``seed`` to change the
    defaults.

    Checks: assignments are deterministic for a seed; one int64 shard id in
    ``[0, n_shards)`` per record; user-level sharders (``unit == "user"``) keep all of a user's
    records together, item-level ones (``unit == "item"``) all of an item's; a record keeps its
    shard when other records, users or items are deleted (skipped for ``data_dependent``
    sharders, which the engine handles by storing the assignment); ``n_shards`` larger than the
    number of sharding units raises :class:`~sisakit.ValidationError`.
    """

    #: Shards used by the tests.
    n_shards: int = 4
    #: Seed used by the tests.
    seed: int = 0

    def make_sharder(self) -> Sharder:
        """Return a fresh instance of the sharder under test.

        Returns
        -------
        Sharder
        """
        raise NotImplementedError("subclasses of SharderContract must implement make_sharder()")

    def make_data(self) -> Interactions:
        """Return the test data (default: :func:`make_interactions`).

        Returns
        -------
        Interactions
        """
        return make_interactions()

    def make_string_data(self) -> Interactions:
        """Return test data with string raw ids (default: ``make_interactions(str_ids=True)``).

        Returns
        -------
        Interactions
        """
        return make_interactions(str_ids=True)

    def _assign(self, sharder: Sharder, data: Interactions, n_shards: int | None = None,
                seed: int | None = None) -> np.ndarray:
        n = self.n_shards if n_shards is None else n_shards
        return np.asarray(sharder.assign(data, n, seed=self.seed if seed is None else seed))

    def _assert_valid(self, ids: np.ndarray, data: Interactions, n_shards: int) -> None:
        assert ids.dtype == np.int64, f"assign() must return int64 ids, got {ids.dtype}"
        assert ids.shape == (len(data),), (
            f"assign() must return one id per record: shape {ids.shape}, expected ({len(data)},)"
        )
        if len(ids):
            assert ids.min() >= 0 and ids.max() < n_shards, (
                f"shard ids must lie in [0, {n_shards}), got [{ids.min()}, {ids.max()}]"
            )

    def _skip_if_data_dependent(self, sharder: Sharder) -> None:
        if sharder.data_dependent:
            pytest.skip("data-dependent sharder: the engine stores its assignment at fit time")

    def _assert_stable(self, sharder: Sharder, data: Interactions, rest: Interactions) -> None:
        before = self._assign(sharder, data)
        after = self._assign(sharder, rest)
        self._assert_valid(after, rest, self.n_shards)
        order = np.argsort(data.record_id)
        pos = order[np.searchsorted(data.record_id, rest.record_id, sorter=order)]
        assert np.array_equal(data.record_id[pos], rest.record_id)
        moved = np.flatnonzero(before[pos] != after)
        assert len(moved) == 0, (
            f"{len(moved)} remaining record(s) changed shard after other records were deleted "
            f"(record ids {rest.record_id[moved][:10].tolist()}); derive the shard from the "
            "raw id, never from a position"
        )

    def test_is_a_sharder(self) -> None:
        """The factory returns a :class:`~sisakit.Sharder` with a known ``unit``."""
        sharder = self.make_sharder()
        assert isinstance(sharder, Sharder)
        assert sharder.unit in ("user", "item", "record"), f"unknown unit {sharder.unit!r}"

    def test_deterministic_for_seed(self) -> None:
        """The same seed gives the same assignment, also from a fresh clone."""
        data = self.make_data()
        sharder = self.make_sharder()
        first = self._assign(sharder, data)
        assert np.array_equal(first, self._assign(sharder, data))
        assert np.array_equal(first, self._assign(sharder.clone(), data))
        assert np.array_equal(first, self._assign(self.make_sharder(), data))

    def test_ids_in_range_one_per_record(self) -> None:
        """One int64 shard id in ``[0, n_shards)`` per record."""
        data = self.make_data()
        sharder = self.make_sharder()
        for n_shards in (1, 2, self.n_shards):
            self._assert_valid(self._assign(sharder, data, n_shards), data, n_shards)

    def test_every_shard_receives_records(self) -> None:
        """On the (balanced) test data no shard stays empty (the engine rejects empty shards)."""
        data = self.make_data()
        ids = self._assign(self.make_sharder(), data)
        sizes = np.bincount(ids, minlength=self.n_shards)
        assert (sizes > 0).all(), f"empty shard(s) {np.flatnonzero(sizes == 0).tolist()}"

    def test_string_ids(self) -> None:
        """Data with string raw ids is sharded validly and deterministically."""
        data = self.make_string_data()
        sharder = self.make_sharder()
        ids = self._assign(sharder, data)
        self._assert_valid(ids, data, self.n_shards)
        assert np.array_equal(ids, self._assign(sharder, data))

    def test_user_level_keeps_users_together(self) -> None:
        """With ``unit == "user"`` all of a user's records share one shard."""
        sharder = self.make_sharder()
        if sharder.unit != "user":
            pytest.skip("not a user-level sharder")
        for data in (self.make_data(), self.make_string_data()):
            ids = self._assign(sharder, data)
            per_user_min = np.full(data.n_users, np.iinfo(np.int64).max)
            per_user_max = np.full(data.n_users, -1)
            np.minimum.at(per_user_min, data.user_idx, ids)
            np.maximum.at(per_user_max, data.user_idx, ids)
            has = np.bincount(data.user_idx, minlength=data.n_users) > 0
            split = np.flatnonzero(has & (per_user_min != per_user_max))
            assert len(split) == 0, (
                f"user-level sharder split user(s) {data.user_ids[split][:10].tolist()} "
                "across shards"
            )

    def test_item_level_keeps_items_together(self) -> None:
        """With ``unit == "item"`` all of an item's records share one shard."""
        sharder = self.make_sharder()
        if sharder.unit != "item":
            pytest.skip("not an item-level sharder")
        data = self.make_data()
        ids = self._assign(sharder, data)
        lo = np.full(data.n_items, np.iinfo(np.int64).max)
        hi = np.full(data.n_items, -1)
        np.minimum.at(lo, data.item_idx, ids)
        np.maximum.at(hi, data.item_idx, ids)
        split = np.flatnonzero((data.item_counts() > 0) & (lo != hi))
        assert len(split) == 0, (
            f"item-level sharder split item(s) {data.item_ids[split][:10].tolist()} across shards"
        )

    def test_stable_when_users_deleted(self) -> None:
        """Remaining records keep their shard after ``data.without(users=...)``."""
        sharder = self.make_sharder()
        self._skip_if_data_dependent(sharder)
        data = self.make_data()
        rng = np.random.default_rng(1)
        gone = rng.choice(data.user_ids, size=max(1, data.n_users // 4), replace=False)
        self._assert_stable(sharder, data, data.without(users=gone.tolist()))

    def test_stable_when_interactions_deleted(self) -> None:
        """Remaining records keep their shard after ``data.without(interactions=...)``."""
        sharder = self.make_sharder()
        self._skip_if_data_dependent(sharder)
        data = self.make_data()
        rng = np.random.default_rng(2)
        pick = rng.choice(len(data), size=max(1, len(data) // 5), replace=False)
        pairs = list(zip(data.user_ids[data.user_idx[pick]].tolist(),
                         data.item_ids[data.item_idx[pick]].tolist(), strict=True))
        rest = data.without(interactions=pairs)
        assert len(rest) < len(data)
        self._assert_stable(sharder, data, rest)

    def test_stable_when_items_deleted(self) -> None:
        """Remaining records keep their shard after ``data.without(items=...)``."""
        sharder = self.make_sharder()
        self._skip_if_data_dependent(sharder)
        data = self.make_data()
        rng = np.random.default_rng(3)
        gone = rng.choice(data.item_ids, size=max(1, data.n_items // 5), replace=False)
        self._assert_stable(sharder, data, data.without(items=gone.tolist()))

    def _small(self, sharder: Sharder) -> tuple[Interactions, int]:
        data = self.make_data()
        users = np.unique(data.user_idx)[:5]
        small = data.take(np.flatnonzero(np.isin(data.user_idx, users)))
        units = sharder.n_units(small)
        return small, units

    def test_rejects_more_shards_than_units(self) -> None:
        """``n_shards`` larger than the number of users (or records) raises ValidationError."""
        sharder = self.make_sharder()
        small, units = self._small(sharder)
        with pytest.raises(ValidationError):
            sharder.assign(small, units + 1, seed=self.seed)

    def test_accepts_as_many_shards_as_units(self) -> None:
        """``n_shards`` equal to the number of sharding units is allowed."""
        sharder = self.make_sharder()
        small, units = self._small(sharder)
        self._assert_valid(self._assign(sharder, small, units), small, units)

    def test_rejects_non_positive_n_shards(self) -> None:
        """``n_shards < 1`` raises ValidationError."""
        sharder = self.make_sharder()
        data = self.make_data()
        for bad in (0, -1):
            with pytest.raises(ValidationError):
                sharder.assign(data, bad, seed=self.seed)

    def test_params_roundtrip(self) -> None:
        """``clone()`` and the constructor reproduce ``get_params()``."""
        _check_params_roundtrip(self.make_sharder())


# ---------------------------------------------------------------------------------- models
class ShardModelContract:
    """Contract tests for a :class:`~sisakit.ShardModel`.

    Subclass it and implement :meth:`make_model`, returning a small, fast model (a few
    milliseconds per epoch on :func:`make_interactions` data) on the CPU.

    Checks: ``setup`` is bit-reproducible from the seed; ``partial_fit`` is deterministic;
    ``state_dict`` holds only tensors and round-trips bit for bit through
    :class:`sisakit.store.RunStore` into a fresh clone; training slice by slice through a
    checkpoint equals training straight through; ``scores`` has shape
    ``(len(users), n_items)`` and is finite, for every user of the id space; ``clone()`` is an
    unfitted copy with equal parameters; the class is default-constructible.
    """

    #: Seed passed to ``setup``.
    seed: int = 3
    #: Epoch seeds of the first and the second training stage.
    stage0_seeds: tuple[int, ...] = (101, 102)
    stage1_seeds: tuple[int, ...] = (201, 202)

    def make_model(self) -> ShardModel:
        """Return a fresh, small, fast, unfitted instance of the model under test.

        Returns
        -------
        ShardModel
        """
        raise NotImplementedError("subclasses of ShardModelContract must implement make_model()")

    def make_data(self) -> Interactions:
        """Return the test data (default: :func:`make_interactions`).

        Returns
        -------
        Interactions
        """
        return make_interactions()

    def _stages(self, data: Interactions) -> tuple[Interactions, Interactions]:
        """Stage 0 (about half the records, some users absent) and stage 1 (all records)."""
        rng = np.random.default_rng(4)
        in0 = rng.random(len(data)) < 0.5
        absent = np.unique(data.user_idx)[::7]  # users with no record in stage 0
        in0 &= ~np.isin(data.user_idx, absent)
        return data.take(np.flatnonzero(in0)), data

    def _trained(self, seed: int | None = None) -> tuple[ShardModel, Interactions]:
        data = self.make_data()
        stage0, stage1 = self._stages(data)
        model = self.make_model()
        model.setup(data, seed=self.seed if seed is None else seed)
        model.partial_fit(stage0, epoch_seeds=list(self.stage0_seeds))
        model.partial_fit(stage1, epoch_seeds=list(self.stage1_seeds))
        return model, data

    def test_is_a_model(self) -> None:
        """The factory returns a :class:`~sisakit.ShardModel`."""
        assert isinstance(self.make_model(), ShardModel)

    def test_setup_is_bit_reproducible(self) -> None:
        """``setup(data, seed)`` twice (in two models, or one model) gives identical state."""
        data = self.make_data()
        a, b = self.make_model(), self.make_model()
        a.setup(data, seed=self.seed)
        b.setup(data, seed=self.seed)
        first = a.state_dict()
        _assert_same_state(first, b.state_dict(), "setup() with the same seed")
        a.partial_fit(data, epoch_seeds=list(self.stage0_seeds))
        a.setup(data, seed=self.seed)
        _assert_same_state(first, a.state_dict(), "setup() again after training")

    def test_training_is_deterministic(self) -> None:
        """The same seeds and data give bit-identical trained state and scores."""
        a, data = self._trained()
        b, _ = self._trained()
        _assert_same_state(a.state_dict(), b.state_dict(), "training twice")
        users = np.arange(data.n_users)
        assert torch.equal(a.scores(users), b.scores(users))

    def test_state_dict_holds_only_tensors(self) -> None:
        """``state_dict()`` is a flat dict of str -> Tensor."""
        model, _ = self._trained()
        state = model.state_dict()
        assert isinstance(state, Mapping) and len(state) > 0, "state_dict() is empty"
        for key, value in state.items():
            assert isinstance(key, str), f"state key {key!r} is not a str"
            assert isinstance(value, torch.Tensor), (
                f"state[{key!r}] is {type(value).__name__}, not a torch.Tensor"
            )

    def test_state_dict_roundtrip_through_store(self, tmp_path: Any) -> None:
        """A state saved with ``RunStore`` and loaded into a fresh clone is bit-identical."""
        model, data = self._trained()
        state = model.state_dict()
        store = RunStore(tmp_path)
        digest = store.save_tensors("model.pt", state)
        loaded = store.load_tensors("model.pt", digest)
        _assert_same_state(state, loaded, "RunStore round trip")
        fresh = model.clone()  # the engine loads checkpoints into fresh clones, no setup()
        fresh.load_state_dict(loaded)
        _assert_same_state(state, fresh.state_dict(), "load_state_dict() into a fresh clone")
        fresh = model.clone()
        fresh.setup(data, seed=self.seed + 1)  # loading must also overwrite a set-up model
        fresh.load_state_dict(loaded)
        _assert_same_state(state, fresh.state_dict(), "load_state_dict() into a fresh clone")
        fresh.bind_space(data)  # as the engine does after loading (models may read data)
        users = np.arange(data.n_users)
        assert torch.equal(model.scores(users), fresh.scores(users)), (
            "scores differ after load_state_dict()"
        )

    def test_checkpointed_training_equals_straight_through(self, tmp_path: Any) -> None:
        """Stage 0 -> save/load into a fresh model -> stage 1 equals both stages in one model."""
        data = self.make_data()
        stage0, stage1 = self._stages(data)
        first = self.make_model()
        first.setup(data, seed=self.seed)
        first.partial_fit(stage0, epoch_seeds=list(self.stage0_seeds))
        store = RunStore(tmp_path)
        digest = store.save_tensors("stage0.pt", first.state_dict())
        resumed = self.make_model()
        resumed.load_state_dict(store.load_tensors("stage0.pt", digest))
        resumed.partial_fit(stage1, epoch_seeds=list(self.stage1_seeds))
        straight, _ = self._trained()
        _assert_same_state(straight.state_dict(), resumed.state_dict(),
                           "checkpointed vs straight-through training")
        users = np.arange(data.n_users)
        assert torch.equal(straight.scores(users), resumed.scores(users))

    def test_scores_shape_and_finite(self) -> None:
        """``scores(users)`` is a finite float tensor of shape ``(len(users), n_items)``.

        Users without training records (absent from stage 0) must be scorable too.
        """
        data = self.make_data()
        stage0, _ = self._stages(data)
        model = self.make_model()
        model.setup(data, seed=self.seed)
        model.partial_fit(stage0, epoch_seeds=list(self.stage0_seeds))
        for users in (np.array([0, 5, data.n_users - 1]), np.arange(data.n_users)):
            out = model.scores(users)
            assert isinstance(out, torch.Tensor), "scores() must return a torch.Tensor"
            assert out.shape == (len(users), data.n_items), (
                f"scores() shape {tuple(out.shape)}, expected {(len(users), data.n_items)}"
            )
            assert out.is_floating_point(), f"scores() dtype {out.dtype} is not floating"
            assert bool(torch.isfinite(out).all()), "scores() has NaN or infinite values"
        users = np.array([2, 0, 7])
        as_tensor = model.scores(torch.as_tensor(users))
        assert torch.equal(model.scores(users).cpu(), as_tensor.cpu()), (
            "scores() must accept a numpy array or a tensor of user indices alike"
        )
        single = model.scores(users[1:2])
        # Batch size may change floating-point rounding (BLAS), but nothing more.
        torch.testing.assert_close(single.cpu(), model.scores(users).cpu()[1:2],
                                   rtol=1e-5, atol=1e-6,
                                   msg="a user's scores depend on the other users in the batch")

    def test_clone_is_unfitted_copy(self) -> None:
        """``clone()`` has equal parameters, no trained state and no shared tensors."""
        model, data = self._trained()
        reference = model.state_dict()
        clone = model.clone()
        assert type(clone) is type(model) and clone is not model
        assert clone.get_params() == model.get_params()
        assert _is_unfitted(clone), (
            "clone() must return an unfitted copy: its state_dict() should raise a sisakit "
            "ValidationError (or return an empty dict) until setup() is called"
        )
        _, stage1 = self._stages(data)
        clone.setup(data, seed=self.seed + 1)
        clone.partial_fit(stage1, epoch_seeds=[7])
        _assert_same_state(reference, model.state_dict(), "original after training its clone")

    def test_default_constructible(self) -> None:
        """``type(model)()`` works and the parameters round-trip through the constructor."""
        model = self.make_model()
        default = type(model)()
        assert isinstance(default, ShardModel)
        assert set(default.get_params()) == set(model.get_params())
        _check_params_roundtrip(model)

    def test_n_parameters(self) -> None:
        """``n_parameters()`` is a non-negative int."""
        model, _ = self._trained()
        n = model.n_parameters()
        assert isinstance(n, int) and n >= 0, f"n_parameters() returned {n!r}"


# ---------------------------------------------------------------------------------- aggregators
class AggregatorContract:
    """Contract tests for an :class:`~sisakit.Aggregator`.

    Subclass it and implement :meth:`make_aggregator`. Aggregators with
    ``requires_fit = True`` are fitted by :meth:`prepare` on a tiny SISA ensemble
    (``n_shards`` shards of the ``popularity`` model on :func:`make_interactions` data);
    override :meth:`prepare` to fit yours differently.

    Checks: ``aggregate`` returns ``(B, I)`` scores and a ``(B, I)`` boolean mask and is
    deterministic; ``weights`` are finite, non-negative and shaped ``(S, B)``; a shard with a
    zero count for a user has no influence on that user's output (even where its mask is True);
    when every shard gives the same scores, the output equals them wherever it is scored; the
    fitted state round-trips through :class:`sisakit.store.RunStore`.
    """

    #: Shards S of the synthetic inputs.
    n_shards: int = 3
    #: Users B in the synthetic batch.
    batch: int = 8

    def make_aggregator(self) -> Aggregator:
        """Return a fresh, unfitted instance of the aggregator under test.

        Returns
        -------
        Aggregator
        """
        raise NotImplementedError(
            "subclasses of AggregatorContract must implement make_aggregator()"
        )

    def make_data(self) -> Interactions:
        """Return the data the aggregator is fitted on and whose item count sets ``I``.

        Returns
        -------
        Interactions
        """
        return make_interactions()

    def prepare(self, aggregator: Aggregator) -> Aggregator:
        """Fit ``aggregator`` if it ``requires_fit`` (on a tiny popularity SISA ensemble).

        Parameters
        ----------
        aggregator : Aggregator
            A fresh aggregator.

        Returns
        -------
        Aggregator
            The fitted aggregator (the same object unless overridden).
        """
        if not aggregator.requires_fit:
            return aggregator
        data = self.make_data()
        # The ensemble aggregates with "mean"; the aggregator under test need not be registered.
        ensemble = SISA(model="popularity", aggregator="mean", n_shards=self.n_shards,
                        n_slices=1, epochs=1, seed=0, progress=False, device="cpu")
        ensemble.fit(data)
        fitted = aggregator.fit(ensemble.view(), data)  # the read model the engine passes
        return aggregator if fitted is None else fitted

    def _inputs(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random scores (S, B, I) float64, mask (S, B, I) and counts (S, B) with zeros."""
        g = torch.Generator().manual_seed(seed)
        s, b, n_items = self.n_shards, self.batch, self.make_data().n_items
        scores = torch.randn(s, b, n_items, generator=g, dtype=torch.float64)
        mask = torch.rand(s, b, n_items, generator=g) < 0.8
        counts = torch.randint(0, 6, (s, b), generator=g)
        for u in range(b):
            counts[u % s, u] = max(1, int(counts[u % s, u]))  # every user has some shard
            if s > 1 and u % 2 == 0:
                counts[(u + 1) % s, u] = 0  # and some users lack one
        return scores, mask, counts

    def _aggregate(self, agg: Aggregator, scores: torch.Tensor, mask: torch.Tensor,
                   counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, scored = agg.aggregate(scores, mask, counts)
        return out, scored

    def test_is_an_aggregator(self) -> None:
        """The factory returns an :class:`~sisakit.Aggregator`."""
        assert isinstance(self.make_aggregator(), Aggregator)

    def test_output_shapes(self) -> None:
        """``aggregate`` returns ``(B, I)`` float scores and a ``(B, I)`` bool mask."""
        agg = self.prepare(self.make_aggregator())
        scores, mask, counts = self._inputs()
        out, scored = self._aggregate(agg, scores, mask, counts)
        shape = scores.shape[1:]
        assert isinstance(out, torch.Tensor) and out.shape == shape, (
            f"aggregated scores have shape {tuple(out.shape)}, expected {tuple(shape)}"
        )
        assert out.is_floating_point()
        assert isinstance(scored, torch.Tensor) and scored.shape == shape, (
            f"scored mask has shape {tuple(scored.shape)}, expected {tuple(shape)}"
        )
        assert scored.dtype == torch.bool, f"scored mask dtype {scored.dtype}, expected bool"
        assert bool(scored.any()), "nothing was scored although every user has a shard"
        assert bool(torch.isfinite(out[scored]).all()), "scored entries must be finite"

    def test_scored_only_where_some_shard_scored(self) -> None:
        """A pair counts as scored only if a shard with records of the user scored it."""
        agg = self.prepare(self.make_aggregator())
        scores, mask, counts = self._inputs(1)
        _, scored = self._aggregate(agg, scores, mask, counts)
        possible = (mask & (counts > 0)[:, :, None]).any(0)
        assert not bool((scored & ~possible).any()), (
            "pairs were marked scored although no shard that trained on the user scored them"
        )

    def test_deterministic(self) -> None:
        """The same inputs give the same output, also from a fresh instance."""
        scores, mask, counts = self._inputs(2)
        agg = self.prepare(self.make_aggregator())
        out1, sc1 = self._aggregate(agg, scores, mask, counts)
        out2, sc2 = self._aggregate(agg, scores.clone(), mask.clone(), counts.clone())
        out3, sc3 = self._aggregate(self.prepare(self.make_aggregator()), scores, mask, counts)
        assert torch.equal(sc1, sc2) and torch.equal(sc1, sc3)
        assert _same_values(out1, out2) and _same_values(out1, out3)

    def test_weights_non_negative(self) -> None:
        """``weights(counts)`` is finite, non-negative and has shape ``(S, B)``."""
        agg = self.prepare(self.make_aggregator())
        _, _, counts = self._inputs(3)
        w = agg.weights(counts)
        assert isinstance(w, torch.Tensor) and w.shape == counts.shape, (
            f"weights shape {tuple(getattr(w, 'shape', ()))}, expected {tuple(counts.shape)}"
        )
        assert bool(torch.isfinite(w).all()), "weights must be finite"
        assert bool((w >= 0).all()), "weights must be non-negative"
        assert torch.equal(w, agg.weights(counts.clone())), "weights must be deterministic"

    def test_zero_count_shard_has_no_influence(self) -> None:
        """Changing the scores (and mask) of a shard with zero count for a user changes
        nothing."""
        agg = self.prepare(self.make_aggregator())
        scores, mask, counts = self._inputs(4)
        zero = counts == 0
        assert bool(zero.any()), "test inputs must contain zero counts"
        out1, sc1 = self._aggregate(agg, scores, mask, counts)
        g = torch.Generator().manual_seed(99)
        noise = torch.randn(scores.shape, generator=g, dtype=scores.dtype) * 100 + 50
        scores2 = torch.where(zero[:, :, None], noise, scores)
        mask2 = torch.where(zero[:, :, None], torch.ones_like(mask), mask)
        out2, sc2 = self._aggregate(agg, scores2, mask2, counts)
        assert torch.equal(sc1, sc2), "a zero-count shard changed which pairs are scored"
        assert _same_values(out1, out2), (
            "a shard with zero records of a user influenced that user's scores"
        )

    def test_identical_shards_give_their_scores(self) -> None:
        """When every shard gives the same scores, the output equals them where scored."""
        agg = self.prepare(self.make_aggregator())
        scores, mask, counts = self._inputs(5)
        same = scores[0].expand_as(scores).clone()
        out, scored = self._aggregate(agg, same, mask, counts)
        assert bool(scored.any()), "nothing was scored"
        torch.testing.assert_close(out[scored].to(torch.float64), same[0][scored],
                                   rtol=1e-5, atol=1e-6)

    def test_state_roundtrip_through_store(self, tmp_path: Any) -> None:
        """The (possibly empty) fitted state saves and loads into a fresh clone."""
        agg = self.prepare(self.make_aggregator())
        state = agg.state_dict()
        assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
        store = RunStore(tmp_path)
        digest = store.save_tensors("agg.pt", state)
        fresh = agg.clone()
        fresh.load_state_dict(store.load_tensors("agg.pt", digest))
        scores, mask, counts = self._inputs(6)
        out1, sc1 = self._aggregate(agg, scores, mask, counts)
        out2, sc2 = self._aggregate(fresh, scores, mask, counts)
        assert torch.equal(sc1, sc2) and _same_values(out1, out2)

    def test_params_roundtrip(self) -> None:
        """``clone()`` and the constructor reproduce ``get_params()``."""
        agg = self.make_aggregator()
        _check_params_roundtrip(agg)
        assert isinstance(type(agg)(), Aggregator), "aggregators must be default-constructible"


# ---------------------------------------------------------------------------------- attackers
class AttackerContract:
    """Contract tests for an :class:`~sisakit.Attacker`.

    Subclass it and implement :meth:`make_attacker`. The data comes from
    :func:`make_attack_data` (400 training and 400 test samples, seeded).

    Checks: with a planted signal the attack reaches AUC >= ``min_auc`` and accuracy
    > ``min_accuracy``; on shuffled labels its AUC stays within ``0.5 ± chance_tolerance``;
    :class:`~sisakit.AttackResult` fields are floats in ``[0, 1]``; ``predict_proba`` returns
    probabilities of shape ``(n, n_classes)``.
    """

    min_auc: float = 0.75
    min_accuracy: float = 0.6
    chance_tolerance: float = 0.1
    seed: int = 0

    def make_attacker(self) -> Attacker:
        """Return a fresh, unfitted instance of the attacker under test.

        Returns
        -------
        Attacker
        """
        raise NotImplementedError("subclasses of AttackerContract must implement make_attacker()")

    def _data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return make_attack_data(seed=self.seed)

    def test_is_an_attacker(self) -> None:
        """The factory returns an :class:`~sisakit.Attacker`; ``fit`` returns the attacker."""
        attacker = self.make_attacker()
        assert isinstance(attacker, Attacker)
        x, y, _, _ = self._data()
        assert attacker.fit(x, y) is attacker, "fit() must return self"

    def test_beats_chance_on_planted_signal(self) -> None:
        """A planted mean shift is detected: AUC >= ``min_auc``, accuracy > ``min_accuracy``."""
        x, y, xt, yt = self._data()
        result = self.make_attacker().fit(x, y).attack(xt, yt)
        assert result.auc >= self.min_auc, f"AUC {result.auc:.3f} < {self.min_auc}"
        assert result.accuracy > self.min_accuracy, (
            f"accuracy {result.accuracy:.3f} <= {self.min_accuracy}"
        )

    def test_chance_on_shuffled_labels(self) -> None:
        """With labels independent of the features the AUC stays near 0.5."""
        x, y, xt, yt = self._data()
        rng = np.random.default_rng(self.seed + 1)
        result = self.make_attacker().fit(x, rng.permutation(y)).attack(xt, rng.permutation(yt))
        assert abs(result.auc - 0.5) <= self.chance_tolerance, (
            f"AUC {result.auc:.3f} on shuffled labels is not within 0.5 ± "
            f"{self.chance_tolerance}: the attacker leaks test labels or overfits"
        )

    def test_result_fields(self) -> None:
        """``attack`` returns an AttackResult with float AUC and accuracy in [0, 1]."""
        x, y, xt, yt = self._data()
        result = self.make_attacker().fit(x, y).attack(xt, yt)
        assert isinstance(result, AttackResult)
        for name in ("auc", "accuracy"):
            value = getattr(result, name)
            assert isinstance(value, float), f"{name} is {type(value).__name__}, not float"
            assert 0.0 <= value <= 1.0, f"{name}={value} outside [0, 1]"
        assert isinstance(result.details, dict)

    def test_predict_proba(self) -> None:
        """``predict_proba`` returns one probability row per sample that sums to 1."""
        x, y, xt, _ = self._data()
        proba = np.asarray(self.make_attacker().fit(x, y).predict_proba(xt))
        assert proba.shape == (len(xt), 2), f"shape {proba.shape}, expected {(len(xt), 2)}"
        assert np.isfinite(proba).all() and (proba >= 0).all() and (proba <= 1).all()
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6, atol=1e-6)

    def test_params_roundtrip(self) -> None:
        """``clone()`` and the constructor reproduce ``get_params()``."""
        attacker = self.make_attacker()
        _check_params_roundtrip(attacker)
        assert isinstance(type(attacker)(), Attacker), "attackers must be default-constructible"


# ---------------------------------------------------------------------------------- unlearners
def _snapshot_model(model: Any) -> list[dict[str, torch.Tensor]]:
    """Every tensor of a model (a SISA ensemble or a single shard model), copied."""
    if hasattr(model, "parameters") and callable(model.parameters) and hasattr(model, "forget"):
        return [{k: v.clone() for k, v in sd.items()} for sd in model.parameters()]
    return [{k: v.clone() for k, v in model.state_dict().items()}]


class UnlearnerContract:
    """Contract tests for :class:`~sisakit.Unlearner` implementations.

    Provide :meth:`make_unlearner`, :meth:`make_model` (a fitted model it accepts) and
    :meth:`make_request` (a request for that model), and :meth:`make_context` if the method
    needs one. Checks: the one call shape ``unlearn(model, request, context=...)`` returns an
    :class:`~sisakit.UnlearnResult` with a report; an approximate unlearner (``exact = False``)
    leaves its input model bit-for-bit unchanged; an exact unlearner's result equals the
    ``retrain`` unlearner's on a SISA run, and :meth:`reference` (a model trained without the
    data) when the subclass provides one; a request that is not a request, or a context that
    is not an :class:`~sisakit.UnlearnContext`, raises a :class:`~sisakit.SisakitError`.
    """

    def make_unlearner(self) -> Any:
        raise NotImplementedError("return an instance of your Unlearner")

    def make_model(self) -> Any:
        raise NotImplementedError("return a fitted model your unlearner accepts")

    def make_request(self, model: Any) -> Any:
        raise NotImplementedError("return a ForgetRequest or AttributeRequest for the model")

    def reference(self, request: Any) -> Any:
        """A model trained from scratch without the request's data (exact unlearners)."""
        return None

    def make_context(self, model: Any) -> UnlearnContext | None:
        """The :class:`~sisakit.UnlearnContext` the method needs for ``model`` (default:
        None)."""
        return None

    def test_generic_call_with_context(self) -> None:
        """Every unlearner takes ``context=`` (an empty one when it needs nothing)."""
        model = self.make_model()
        context = self.make_context(model) or UnlearnContext()
        result = self.make_unlearner().unlearn(model, self.make_request(model), context=context)
        assert isinstance(result, UnlearnResult) and result.report is not None

    def test_report_is_typed_and_json_serialisable(self) -> None:
        """The report is an :class:`~sisakit.UnlearnReport` with the common fields filled in."""
        unlearner = self.make_unlearner()
        model = self.make_model()
        report = unlearner.unlearn(model, self.make_request(model),
                                   context=self.make_context(model)).report
        assert isinstance(report, UnlearnReport), f"report is a {type(report).__name__}"
        assert report.exact == unlearner.exact, "report.exact must match the unlearner's"
        assert report.seconds >= 0 and report.cpu_seconds >= 0
        try:
            assert report.method == plugins.name_of("unlearner", unlearner)
        except PluginError:  # an unregistered unlearner under test: any name will do
            assert isinstance(report.method, str) and report.method
        json.dumps(report.as_dict())  # raises TypeError if a field is not a JSON value

    def test_bad_request_raises_a_sisakit_error(self) -> None:
        model = self.make_model()
        with pytest.raises(SisakitError):
            self.make_unlearner().unlearn(model, "forget user 3, please",
                                          context=self.make_context(model))

    def test_bad_context_raises_a_sisakit_error(self) -> None:
        model = self.make_model()
        with pytest.raises(SisakitError):
            self.make_unlearner().unlearn(model, self.make_request(model),
                                          context={"data": "not a context"})

    def test_exact_unlearner_equals_retrain(self) -> None:
        """On a SISA run, an exact method's result equals the gold ``retrain`` bit for bit."""
        unlearner = self.make_unlearner()
        if not unlearner.exact:
            pytest.skip("approximate unlearner")
        model = self.make_model()
        if not isinstance(model, SISA):
            pytest.skip("retrain's bit-for-bit reference is defined for SISA runs")
        request = self.make_request(model)
        gold = RetrainUnlearner().unlearn(model, request).model  # before: the exact may edit
        result = unlearner.unlearn(model, request, context=self.make_context(model))
        same, n = parameters_equal(result.model, gold)
        assert same and n > 0, "exact unlearning differs from retraining without the data"

    def test_is_an_unlearner(self) -> None:
        assert isinstance(self.make_unlearner(), Unlearner)

    def test_returns_result_with_report(self) -> None:
        model = self.make_model()
        result = self.make_unlearner().unlearn(model, self.make_request(model),
                                               context=self.make_context(model))
        assert isinstance(result, UnlearnResult)
        assert result.model is not None and result.report is not None

    def test_approximate_unlearner_never_modifies_its_input(self) -> None:
        unlearner = self.make_unlearner()
        if unlearner.exact:
            pytest.skip("exact unlearner: may update its model in place, durably")
        model = self.make_model()
        before = _snapshot_model(model)
        result = unlearner.unlearn(model, self.make_request(model),
                                   context=self.make_context(model))
        assert result.model is not model, "an approximate unlearner must return a new model"
        for a, b in zip(before, _snapshot_model(model), strict=True):
            _assert_same_state(a, b, "the input model after unlearn()")

    def test_exact_unlearner_equals_reference(self) -> None:
        unlearner = self.make_unlearner()
        if not unlearner.exact:
            pytest.skip("approximate unlearner")
        model = self.make_model()
        request = self.make_request(model)
        ref = self.reference(request)
        if ref is None:
            pytest.skip("no reference model provided")
        result = unlearner.unlearn(model, request, context=self.make_context(model))
        for a, b in zip(_snapshot_model(result.model), _snapshot_model(ref), strict=True):
            _assert_same_state(a, b, "exact unlearning vs the scratch reference")

    def test_params_roundtrip(self) -> None:
        _check_params_roundtrip(self.make_unlearner())


# ---------------------------------------------------------------------------------- influence
class InfluenceContract:
    """Contract tests for an :class:`~sisakit.InfluenceMeasure` (plugin kind ``"influence"``).

    Subclass it and implement :meth:`make_measure`; set ``n_users``, ``k``, ``n_items`` or
    ``seed`` to change the random top-K lists the checks use.

    Checks: one float64 value per user; identical lists give ``no_change``; disjoint lists give
    ``extreme``; every value lies between the two; a user's value depends only on that user's
    row (vectorised, order-independent); the same input gives the same bits; ``k = 1`` works;
    parameters round-trip.
    """

    n_users: int = 50
    k: int = 10
    n_items: int = 60
    seed: int = 0

    def make_measure(self) -> InfluenceMeasure:
        """Return a fresh instance of the measure under test."""
        raise NotImplementedError("implement make_measure() in your contract subclass")

    def _lists(self, seed: int = 0) -> np.ndarray:
        """Random top-K lists: distinct items in ``[0, n_items)`` per row."""
        rng = np.random.default_rng(self.seed + seed)
        return np.argsort(rng.random((self.n_users, self.n_items)), axis=1)[:, : self.k]

    def _changed(self, before: np.ndarray, seed: int = 1) -> np.ndarray:
        """Per row: a random re-ordering with some items swapped for unseen ones."""
        rng = np.random.default_rng(self.seed + seed)
        perm = np.argsort(rng.random(before.shape), axis=1)
        after = np.take_along_axis(before, perm, axis=1)
        fresh = self.n_items + np.arange(self.k)[None, :]  # never in the before lists
        swap = rng.random(before.shape) < rng.random((len(before), 1))
        return np.where(swap, np.broadcast_to(fresh, before.shape), after).astype(np.int64)

    def _compute(self, measure: InfluenceMeasure, before: np.ndarray, after: np.ndarray
                 ) -> np.ndarray:
        k = before.shape[1]
        values = measure.compute(before.astype(np.int64), after.astype(np.int64), k)
        assert isinstance(values, np.ndarray), "compute() must return a numpy array"
        assert values.shape == (len(before),), (
            f"compute() returned shape {values.shape}, expected ({len(before)},): one value per user"
        )
        assert values.dtype == np.float64, f"compute() must return float64, got {values.dtype}"
        assert np.isfinite(values).all(), "compute() returned NaN or infinite values"
        return values

    def test_is_a_measure(self) -> None:
        measure = self.make_measure()
        assert isinstance(measure, InfluenceMeasure)
        assert measure.no_change != measure.extreme, "no_change and extreme must differ"

    def test_identical_lists_give_no_change(self) -> None:
        measure = self.make_measure()
        before = self._lists()
        values = self._compute(measure, before, before.copy())
        assert np.allclose(values, measure.no_change, rtol=0, atol=1e-12), (
            "identical lists must give no_change"
        )

    def test_disjoint_lists_give_extreme(self) -> None:
        measure = self.make_measure()
        before = self._lists()
        after = self._lists(seed=7) + self.n_items  # no item in common with before
        values = self._compute(measure, before, after)
        assert np.allclose(values, measure.extreme, rtol=0, atol=1e-12), (
            "lists with no common item must give extreme"
        )

    def test_values_within_bounds(self) -> None:
        measure = self.make_measure()
        before = self._lists()
        values = self._compute(measure, before, self._changed(before))
        lo, hi = measure.bounds
        assert (values >= lo - 1e-12).all() and (values <= hi + 1e-12).all(), (
            f"values must lie in [{lo}, {hi}] (between no_change and extreme)"
        )
        assert not np.allclose(values, measure.no_change), "changed lists all gave no_change"

    def test_rows_are_independent(self) -> None:
        measure = self.make_measure()
        before = self._lists()
        after = self._changed(before)
        full = self._compute(measure, before, after)
        rows = np.random.default_rng(self.seed).permutation(len(before))[: max(1, len(before) // 3)]
        part = self._compute(measure, before[rows], after[rows])
        assert np.allclose(part, full[rows], rtol=1e-12, atol=1e-12), (
            "a user's value must depend only on that user's lists (same value in any subset or "
            "order of users)"
        )

    def test_deterministic(self) -> None:
        before = self._lists()
        after = self._changed(before)
        a = self._compute(self.make_measure(), before, after)
        b = self._compute(self.make_measure(), before, after)
        assert np.array_equal(a, b), "the same input must give the same bits"

    def test_k_equals_one(self) -> None:
        measure = self.make_measure()
        before = self._lists()[:, :1]
        same = self._compute(measure, before, before.copy())
        other = self._compute(measure, before, before + self.n_items)
        assert np.allclose(same, measure.no_change, rtol=0, atol=1e-12)
        assert np.allclose(other, measure.extreme, rtol=0, atol=1e-12)

    def test_params_roundtrip(self) -> None:
        _check_params_roundtrip(self.make_measure())


# ---------------------------------------------------------------------------------- executors
class _ExecutorTaskError(RuntimeError):
    """Raised on purpose by :func:`_fail_on`; the caller must see this very type."""


def _sleepy_echo(job: tuple[int, float], shared: Any) -> tuple[int, Any]:
    """Sleep ``job[1]`` seconds, then return ``(job[0], shared)``."""
    value, delay = job
    if delay > 0:
        time.sleep(delay)
    return value, shared


def _fail_on(job: int, shared: int) -> int:
    """Return ``job``, except raise :class:`_ExecutorTaskError` for the job equal to ``shared``."""
    if job == shared:
        raise _ExecutorTaskError(f"contract job {job} failed on purpose")
    return job


class ExecutorContract:
    """Contract tests for an :class:`~sisakit.Executor` (plugin kind ``"executor"``).

    Subclass it and implement :meth:`make_executor`. The tests that run jobs share one executor
    per test class, the class-scoped fixture ``executor``: it is built by :meth:`make_executor`,
    started (so worker start-up is paid once) and closed after the class's last test. The task
    functions are module-level functions of :mod:`sisakit.testing`, so they pickle to any
    worker that can import sisakit.

    Checks: :meth:`~sisakit.Executor.map` returns one result per job in job order even when the
    jobs finish out of order (job ``i`` of ``n_jobs`` sleeps ``(n_jobs - 1 - i) * delay``
    seconds); ``on_result(i, result)`` is called exactly once per job, in the calling process,
    with the job's index and result; ``shared`` reaches every job; an exception raised by the
    task reaches the caller with its original type, and the executor stays usable; an empty job
    list gives ``[]``; ``cpus_per_job`` is accepted; parameters round-trip and the executor is
    default-constructible; a small SISA fit through the executor equals the same fit with
    ``executor="serial"`` bit for bit.
    """

    #: Jobs of the ordering and callback tests (more than a small pool has workers).
    n_jobs: int = 6
    #: Seconds of sleep per step of the inverse-order delays (job 0 sleeps the longest).
    delay: float = 0.02
    #: ``cpus_per_job`` passed by :meth:`test_accepts_cpus_per_job` (keep it within one
    #: worker's cores: a scheduler that reserves cores waits forever for more).
    cpus_per_job: int = 1

    def make_executor(self) -> Executor:
        """Return a fresh instance of the executor under test.

        Returns
        -------
        Executor
        """
        raise NotImplementedError("subclasses of ExecutorContract must implement make_executor()")

    def make_data(self) -> Interactions:
        """Return the data of the engine check (default: :func:`make_interactions`).

        Returns
        -------
        Interactions
        """
        return make_interactions()

    @pytest.fixture(scope="class")
    @classmethod
    def executor(cls) -> Iterator[Executor]:
        """The executor under test, started once per test class and closed after it."""
        ex = cls().make_executor()  # a class-scoped fixture is a classmethod (pytest >= 9.1)
        ex.start()
        try:
            yield ex
        finally:
            ex.close()

    def _ordered_jobs(self) -> list[tuple[int, float]]:
        """``(value, delay)`` jobs whose values are not sorted and whose delays fall with the
        index, so the last job finishes first on a parallel executor."""
        n = self.n_jobs
        return [((7 * i + 3) % (2 * n + 1), (n - 1 - i) * self.delay) for i in range(n)]

    def _shared(self) -> dict[str, Any]:
        return {"token": "sisakit-executor-contract", "values": (1, 2.5, "x"), "n": self.n_jobs}

    def test_is_an_executor(self) -> None:
        """The factory returns an :class:`~sisakit.Executor`."""
        executor = self.make_executor()
        assert isinstance(executor, Executor), (
            f"make_executor() returned a {type(executor).__name__}, not a sisakit.Executor"
        )
        assert isinstance(executor.out_of_process, bool), "out_of_process must be a bool"

    def test_results_in_job_order(self, executor: Executor) -> None:
        """One result per job, at the job's position, although later jobs finish first."""
        jobs = self._ordered_jobs()
        shared = self._shared()
        results = executor.map(_sleepy_echo, jobs, shared=shared)
        assert isinstance(results, list), f"map() returned a {type(results).__name__}, not a list"
        assert len(results) == len(jobs), (
            f"map() returned {len(results)} results for {len(jobs)} jobs; it must return one per job"
        )
        got = [r[0] for r in results]
        expected = [value for value, _ in jobs]
        assert got == expected, (
            f"results are out of job order: got the results of jobs {got}, expected {expected}; "
            "map() must return fn(jobs[i], shared) at position i, whatever order jobs finish in"
        )

    def test_on_result_once_per_job_in_calling_process(self, executor: Executor) -> None:
        """``on_result(i, result)`` runs once per job, here, with the job's index and result."""
        jobs = self._ordered_jobs()
        shared = self._shared()
        pid = os.getpid()
        calls: list[tuple[int, Any, int]] = []
        # A lambda does not pickle: an executor that ships on_result to a worker fails here.
        results = executor.map(_sleepy_echo, jobs, shared=shared,
                               on_result=lambda i, result: calls.append((i, result, os.getpid())))
        indices = sorted(i for i, _, _ in calls)
        assert indices == list(range(len(jobs))), (
            f"on_result was called with the indices {indices} for {len(jobs)} jobs; it must "
            "be called exactly once per job, with the job's index"
        )
        for i, result, where in calls:
            assert result == (jobs[i][0], shared), (
                f"on_result({i}, ...) received {result!r}, not job {i}'s result"
            )
            assert result == results[i], f"on_result({i}, ...) and map()[{i}] disagree"
            assert where == pid, (
                f"on_result ran in process {where}, not in the calling process {pid}"
            )

    def test_shared_reaches_every_job(self, executor: Executor) -> None:
        """Every job receives ``shared`` unchanged (jobs given as a tuple, a plain Sequence)."""
        shared = self._shared()
        jobs = tuple((i, 0.0) for i in range(2 * self.n_jobs))
        results = executor.map(_sleepy_echo, jobs, shared=shared)
        assert len(results) == len(jobs), f"map() returned {len(results)} results for {len(jobs)} jobs"
        missed = [i for i, r in enumerate(results) if r[1] != shared]
        assert not missed, (
            f"jobs at positions {missed} did not receive shared={shared!r} (e.g. got "
            f"{results[missed[0]][1]!r})"
        )
        assert executor.map(_sleepy_echo, [(0, 0.0)]) == [(0, None)], (
            "without shared= every job must receive None"
        )

    def test_task_exception_keeps_its_type(self, executor: Executor) -> None:
        """An exception raised by the task reaches the caller as its own type; the executor
        stays usable afterwards."""
        jobs = list(range(4))
        try:
            executor.map(_fail_on, jobs, shared=2)
        except _ExecutorTaskError as exc:
            assert "contract job 2" in str(exc), (
                f"the task's exception lost its message: {exc!r}"
            )
        except BaseException as exc:
            raise AssertionError(
                f"the task raised _ExecutorTaskError but the caller got {type(exc).__name__}: "
                f"{exc}; map() must re-raise the task's exception with its original type"
            ) from exc
        else:
            raise AssertionError("map() returned although a task raised")
        assert executor.map(_fail_on, jobs, shared=-1) == jobs, (
            "the executor is not usable after a task raised"
        )

    def test_empty_jobs(self, executor: Executor) -> None:
        """No jobs: ``map`` returns ``[]`` and never calls ``on_result``."""
        calls: list[int] = []
        results = executor.map(_sleepy_echo, [], shared=self._shared(),
                               on_result=lambda i, result: calls.append(i))
        assert results == [] and isinstance(results, list), (
            f"map() over no jobs returned {results!r}, expected []"
        )
        assert not calls, f"on_result was called {len(calls)} time(s) for no jobs"

    def test_accepts_cpus_per_job(self, executor: Executor) -> None:
        """``cpus_per_job`` is accepted and does not change the results."""
        jobs = [(i, 0.0) for i in range(3)]
        results = executor.map(_sleepy_echo, jobs, shared=1, cpus_per_job=self.cpus_per_job)
        assert results == [(i, 1) for i in range(3)], (
            f"map(..., cpus_per_job={self.cpus_per_job}) returned {results!r}"
        )

    def test_params_roundtrip(self) -> None:
        """``clone()`` and the constructor reproduce ``get_params()``."""
        executor = self.make_executor()
        _check_params_roundtrip(executor)
        assert isinstance(type(executor)(), Executor), "executors must be default-constructible"

    def test_sisa_fit_equals_serial(self, executor: Executor) -> None:
        """A small SISA fit through the executor equals the serial fit bit for bit."""
        data = self.make_data()
        kwargs: dict[str, Any] = dict(model="bpr-mf", n_shards=2, n_slices=2, epochs=2,
                                      model_params={"factors": 4}, seed=0, progress=False,
                                      device="cpu")
        ours = SISA(executor=executor, **kwargs).fit(data)
        serial = SISA(executor="serial", **kwargs).fit(data)
        equal, n = parameters_equal(ours, serial)
        assert n > 0, "no tensors were compared"
        assert equal, (
            f"a SISA fit through {executor!r} differs from the serial fit; an executor must never "
            "change results (the job function pins the thread count itself)"
        )
