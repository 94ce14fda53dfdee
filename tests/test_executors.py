"""Executors: serial, joblib processes and a local Ray instance give the same bits.

No mocks: joblib runs real worker processes and Ray a real local instance (2 CPUs, started once
for this module; its tests are skipped when Ray is not installed).
"""

from __future__ import annotations

import operator
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sisakit
from sisakit import plugins
from sisakit.engine import parameters_equal
from sisakit.errors import DataError, PluginError, ValidationError
from sisakit.executors import Executor, JoblibExecutor, RayExecutor, SerialExecutor

SMALL: dict[str, Any] = dict(model_params=dict(factors=8, batch_size=64), epochs=4,
                             progress=False, device="cpu")


@pytest.fixture(scope="module")
def data() -> sisakit.Interactions:
    return sisakit.datasets.synthetic(n_users=120, n_items=50, mean_interactions=12, seed=3)


@pytest.fixture(scope="module")
def joblib_executor() -> Iterator[JoblibExecutor]:
    ex = JoblibExecutor(n_jobs=2)
    ex.start()  # pay for the worker processes once
    yield ex


@pytest.fixture(scope="module")
def ray_executor() -> Iterator[RayExecutor]:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # pragma: no cover - only when another module left Ray running
        ray.shutdown()
    ex = RayExecutor(num_cpus=2)
    ex.start()
    yield ex
    ex.close()


@pytest.fixture(params=["serial", "joblib", "ray"])
def executor(request) -> Executor:
    return {"serial": lambda: SerialExecutor(),
            "joblib": lambda: request.getfixturevalue("joblib_executor"),
            "ray": lambda: request.getfixturevalue("ray_executor")}[request.param]()


def make(executor: Any = "serial", n_shards: int = 3, n_slices: int = 3, seed: int = 0,
         **kw: Any) -> sisakit.SISA:
    return sisakit.SISA(n_shards=n_shards, n_slices=n_slices, seed=seed, executor=executor,
                        **{**SMALL, **kw})


def _all_executors(request) -> list[Executor]:
    out: list[Executor] = [SerialExecutor(), request.getfixturevalue("joblib_executor")]
    try:
        out.append(request.getfixturevalue("ray_executor"))
    except pytest.skip.Exception:
        pass
    return out


# ---------------------------------------------------------------------------------- the map contract
def test_map_returns_results_in_job_order(executor):
    seen: list[int] = []
    out = executor.map(operator.mul, [3, 1, 4, 1, 5], shared=10, on_result=lambda i, r: seen.append(i))
    assert out == [30, 10, 40, 10, 50]
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert executor.map(operator.mul, [], shared=1) == []


def test_worker_error_keeps_its_type(executor):
    with pytest.raises(ZeroDivisionError):
        executor.map(operator.truediv, [1, 2, 3], shared=0)
    assert executor.map(operator.add, [1, 2], shared=1) == [2, 3]  # still usable afterwards


# ---------------------------------------------------------------------------------- exactness
@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_shards=st.integers(1, 3),
    n_slices=st.integers(1, 3),
    sharder=st.sampled_from(["random-user", "random-interaction"]),
    picks=st.lists(st.integers(0, 119), min_size=1, max_size=3, unique=True),
)
def test_fit_and_forget_are_bitwise_equal_across_executors(request, data, n_shards, n_slices,
                                                           sharder, picks):
    users = data.user_ids[picks].tolist()
    runs = []
    for ex in _all_executors(request):
        model = make(ex, n_shards, n_slices, sharder=sharder).fit(data)
        runs.append((model, model.parameters()))
        model.forget(users=users)
    ref = make("serial", n_shards, n_slices, sharder=sharder).fit(data.without(users=users))
    fitted = runs[0][1]
    for model, params in runs:
        assert all(set(a) == set(b) for a, b in zip(params, fitted, strict=True))
        assert all(bool((a[k] == b[k]).all()) for a, b in zip(params, fitted, strict=True)
                   for k in a), f"fit with {model.executor!r} differs from the serial fit"
        equal, n = parameters_equal(model, ref)
        assert n > 0 and equal, f"forget with {model.executor!r} differs from a scratch fit"
    recs = ref.recommend(data.user_ids[:20], k=5)
    for model, _ in runs:
        assert np.array_equal(model.recommend(data.user_ids[:20], k=5), recs)


def test_forget_item_and_interactions_through_each_executor(data, executor):
    model = make(executor, 2, 3).fit(data)
    item = data.item_ids[int(np.argmax(data.item_counts()))]
    report = model.forget(items=[item])
    assert report.shards_retrained == [0, 1]
    pair = (data.user_ids[data.user_idx[5]], data.item_ids[data.item_idx[5]])
    model.forget(interactions=[pair])
    ref = make("serial", 2, 3).fit(data.without(items=[item]).without(interactions=[pair]))
    assert parameters_equal(model, ref)[0]


def test_resuming_from_a_middle_slice_matches(data, executor):
    """A forget in the last slice resumes every affected shard from a stored checkpoint."""
    model = make(executor, 2, 3).fit(data)
    rows = np.flatnonzero(model.assignment[1] == 2)
    user = data.user_ids[data.user_idx[rows[0]]]
    report = model.forget(users=[user])
    assert min(report.earliest_slice.values()) >= 0
    assert parameters_equal(model, make("serial", 2, 3).fit(data.without(users=[user])))[0]


def test_repartition_through_joblib_equals_serial(data, joblib_executor):
    a = make("serial", 2, 2).fit(data)
    b = make(joblib_executor, 2, 2).fit(data)
    users = data.user_ids[:4].tolist()
    a.forget(users=users)
    b.forget(users=users)
    a.repartition(seed=5)
    b.repartition(seed=5)
    assert parameters_equal(a, b)[0]


def test_loaded_run_forgets_on_another_executor(tmp_path, data, joblib_executor):
    model = make("serial", 2, 2, workdir=tmp_path / "run").fit(data)
    assert "executor" not in model.config  # a runtime choice: never part of the run
    loaded = sisakit.SISA.load(tmp_path / "run", device="cpu", progress=False)
    assert isinstance(loaded.executor, SerialExecutor)
    loaded.executor = joblib_executor
    users = data.user_ids[:3].tolist()
    loaded.forget(users=users)
    ref = make("serial", 2, 2).fit(data.without(users=users))
    assert parameters_equal(loaded, ref)[0]
    assert parameters_equal(sisakit.SISA.load(tmp_path / "run", device="cpu"), ref)[0]


def test_worker_error_surfaces_with_its_type_and_shard(tmp_path, data, executor):
    # Parameters are refused when the model is built, so the failure has to come from the data a
    # worker trains on: ials refuses negative confidence weights inside partial_fit.
    weight = np.ones(len(data), np.float32)
    weight[-1] = -1.0
    bad_data = sisakit.Interactions.from_arrays(data.user_ids[data.user_idx],
                                                data.item_ids[data.item_idx], weight=weight)
    bad = make(executor, 2, 2, workdir=tmp_path / "run", model="ials",
               model_params=dict(factors=8))
    with pytest.raises(DataError, match="non-negative interaction weights") as info:
        bad.fit(bad_data)
    notes = getattr(info.value, "__notes__", [])
    assert any("shard" in n for n in notes) or not hasattr(info.value, "add_note")
    assert not (tmp_path / "run" / "manifest.json").exists()
    assert not list((tmp_path / "run").rglob("*.pt"))  # staged checkpoints were removed


# ---------------------------------------------------------------------------------- configuration
def test_builtins_are_registered():
    assert {"serial", "joblib", "ray"} <= set(plugins.names("executor"))
    assert isinstance(make().executor, SerialExecutor)
    ex = make("joblib", executor_params={"n_jobs": 2}).executor
    assert isinstance(ex, JoblibExecutor) and ex.n_jobs == 2


@pytest.mark.parametrize(("spec", "params", "error", "match"), [
    ("nope", {}, PluginError, "no executor named 'nope'"),
    ("joblib", {"n_jobs": 0}, ValidationError, "n_jobs must be a non-zero integer"),
    ("joblib", {"n_jobs": 1.5}, ValidationError, "n_jobs"),
    ("joblib", {"workers": 2}, PluginError, "cannot build executor"),
    ("ray", {"num_cpus": 0}, ValidationError, "num_cpus"),
    ("ray", {"address": "auto", "num_cpus": 2}, ValidationError, "not both"),
    (42, {}, PluginError, "expected a executor name"),
])
def test_bad_executor_names_and_params(spec, params, error, match):
    with pytest.raises(error, match=match):
        make(spec, executor_params=params)


def test_assigning_a_bad_executor_is_refused():
    model = make()
    with pytest.raises(PluginError, match="available"):
        model.executor = "nope"
    model.executor = "joblib"
    assert isinstance(model.executor, JoblibExecutor)


# ---------------------------------------------------------------------------------- third party
class ReversedExecutor(Executor):
    """A third-party executor: runs the jobs last to first, returns them in job order."""

    out_of_process = False

    def __init__(self, tag: str = "x") -> None:
        self.tag = tag
        self.calls = 0

    def map(self, fn, jobs, *, shared=None, cpus_per_job=1, on_result=None):
        self.calls += 1
        results: list[Any] = [None] * len(jobs)
        for i in reversed(range(len(jobs))):
            results[i] = fn(jobs[i], shared)
            if on_result is not None:
                on_result(i, results[i])
        return results


class ReversedPlugin:
    @sisakit.hookimpl
    def register_executors(self, register):
        register("reversed", ReversedExecutor)


@pytest.fixture
def reversed_plugin() -> Iterator[None]:
    name = plugins.register_plugin(ReversedPlugin(), name="test-reversed-executor")
    yield
    plugins.unregister_plugin(name)


def test_third_party_executor_through_the_hook(data, reversed_plugin):
    assert "reversed" in plugins.names("executor")
    model = make("reversed", 3, 2, executor_params={"tag": "y"})
    assert isinstance(model.executor, ReversedExecutor) and model.executor.tag == "y"
    model.fit(data)
    users = data.user_ids[:5].tolist()
    model.forget(users=users)
    assert model.executor.calls == 2
    assert parameters_equal(model, make("serial", 3, 2).fit(data.without(users=users)))[0]


def test_non_executor_class_is_refused_by_the_hook():
    class NotAnExecutor:
        pass

    class Bad:
        @sisakit.hookimpl
        def register_executors(self, register):
            register("bad", NotAnExecutor)

    with pytest.raises(PluginError, match="not a subclass of Executor"):
        plugins.register_plugin(Bad(), name="test-bad-executor")
    assert "bad" not in plugins.names("executor")


# ---------------------------------------------------------------------------------- what is shipped
class RecordingExecutor(SerialExecutor):
    """Runs in this process and keeps every job, the shared context and the results."""

    def __init__(self) -> None:
        self.seen: list[tuple[list[Any], Any, list[Any]]] = []

    def map(self, fn, jobs, *, shared=None, cpus_per_job=1, on_result=None):
        results = super().map(fn, jobs, shared=shared, cpus_per_job=cpus_per_job,
                              on_result=on_result)
        self.seen.append((list(jobs), shared, results))
        return results


def test_jobs_carry_their_own_records_and_the_context_only_the_id_space(data):
    ex = RecordingExecutor()
    model = make(ex, 4, 3, threads_per_shard=1).fit(data)
    (jobs, ctx, results), = ex.seen
    assert len(ctx.data) == 0  # the shared context ships no records
    assert ctx.data.n_users == data.n_users and ctx.data.n_items == data.n_items
    shipped = np.concatenate([j.records["record_id"] for j in jobs])
    np.testing.assert_array_equal(np.sort(shipped), np.sort(data.record_id))  # each record once
    for job in jobs:
        np.testing.assert_array_equal(job.records["user_idx"], model.data.user_idx[job.rows])
        np.testing.assert_array_equal(job.records["item_idx"], model.data.item_idx[job.rows])
    assert {r.threads for r in results} == {1}
    assert all(0.0 <= r.save_seconds <= r.seconds and r.cpu_seconds > 0 for r in results)


def test_job_records_and_row_selection_train_the_same_bits(tmp_path, data):
    import torch

    from sisakit._training import ShardContext, ShardJob, shard_records, train_shard

    rows = np.flatnonzero(data.user_idx % 3 == 1)
    slices = (data.record_id[rows] % 3).astype(np.int64)
    template = plugins.build("model", "bpr-mf", factors=4, device="cpu")
    common = dict(shard=0, start=0, n_slices=3, rows=rows, rows_slice=slices, init_seed=5,
                  stage_seeds=((1,), (2,), (3,)))
    space = data.take(np.zeros(0, dtype=np.int64))
    own = train_shard(ShardJob(generation=0, records=shard_records(data, rows), **common),
                      ShardContext(template, space, str(tmp_path), 1, "cpu"))
    full = train_shard(ShardJob(generation=1, **common),
                       ShardContext(template, data, str(tmp_path), 1, "cpu"))
    assert own.state.keys() == full.state.keys()
    assert all(torch.equal(own.state[k], full.state[k]) for k in own.state)


def test_joblib_workers_train_with_the_runs_thread_count(data, joblib_executor):
    ex = RecordingExecutor()
    ex.map = _recording(joblib_executor, ex.seen)  # type: ignore[method-assign]
    make(ex, 2, 2, threads_per_shard=1).fit(data)
    (_, _, results), = ex.seen
    assert {r.threads for r in results} == {1}


def _recording(inner: Executor, seen: list) -> Any:
    def map_(fn, jobs, *, shared=None, cpus_per_job=1, on_result=None):
        results = inner.map(fn, jobs, shared=shared, cpus_per_job=cpus_per_job,
                            on_result=on_result)
        seen.append((list(jobs), shared, results))
        return results
    return map_


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc allocator only")
def test_allocator_tuning_applies_once_and_can_be_turned_off():
    code = ("import sisakit._device as d; a = d.tune_allocator(); b = d.tune_allocator(); "
            "print(a, b)")
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "SISAKIT_TUNE_MALLOC": "0"})
    assert on.stdout.split() == ["True", "True"]
    assert off.stdout.split() == ["False", "False"]
