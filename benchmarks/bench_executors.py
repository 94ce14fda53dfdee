"""Executors on MovieLens-1M: serial vs joblib processes vs a local Ray instance.

Fits SISA (bpr-mf, 64 factors, S=10 shards, R=4 slices) on the ML-1M pairs with each executor at
``threads_per_shard=1`` and ``--workers`` worker processes (``--repeats`` times, interleaved, the
median is reported), then forgets a batch of random users. Two configurations:

* ``short``: ``--epochs`` (10, as in the other ML-1M benchmarks); a whole fit is a few seconds,
  so per-job overheads weigh in;
* ``long``: ``--long-epochs`` (40; 0 skips it): the same data with 4x the work per shard, the
  steady-state speed-up.

Reported separately: executor start-up (Ray cluster start; worker process start and import of
torch/sisakit), which a long-lived process pays once; a time breakdown of the fit (work inside
the jobs, checkpoint writes, executor overhead, the engine's serial part); bytes shipped per job;
the torch thread count every job trained with; the machine's own 2-process scaling ceiling (one
shard job alone vs two copies at once); and per-shard train time and peak memory at S = 5, 10,
20 (the measurements behind the scale plan in ``docs/executors.rst``). Checks that every
executor produced the same bits.

    python benchmarks/bench_executors.py --out benchmarks/results/bench_executors.json
    python benchmarks/bench_executors.py --synthetic --quick --no-ray  # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import pickle
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sisakit
from sisakit import plugins
from sisakit._device import torch_threads
from sisakit._hashing import bucket
from sisakit._rng import derive_seed
from sisakit._training import ShardContext, ShardJob, shard_records, train_shard
from sisakit.engine import parameters_equal, stage_epochs
from sisakit.executors import JoblibExecutor, RayExecutor, SerialExecutor
from sisakit.executors.base import warm_up

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_sisa import data_root, load_pairs, machine  # noqa: E402


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _load(args: argparse.Namespace) -> sisakit.Interactions:
    if args.synthetic:
        return sisakit.datasets.synthetic(n_users=3000 if not args.quick else 300, n_items=500,
                                          mean_interactions=40, seed=0)
    return load_pairs(data_root())


class Recorder:
    """Wraps an executor's ``map`` to time it and keep what the jobs reported (main process)."""

    def __init__(self, executor: Any) -> None:
        self.executor, self.inner = executor, executor.map
        self.calls: list[dict[str, Any]] = []
        executor.map = self

    def __call__(self, fn: Any, jobs: Any, *, shared: Any = None, cpus_per_job: int = 1,
                 on_result: Any = None) -> list[Any]:
        jobs = list(jobs)
        t = time.perf_counter()
        results = self.inner(fn, jobs, shared=shared, cpus_per_job=cpus_per_job,
                             on_result=on_result)
        self.calls.append({
            "map_seconds": time.perf_counter() - t,
            "job_seconds": [r.seconds for r in results],
            "save_seconds": [r.save_seconds for r in results],
            "cpu_seconds": [r.cpu_seconds for r in results],
            "threads": sorted({r.threads for r in results}),
            "job_bytes": [len(pickle.dumps(j, protocol=pickle.HIGHEST_PROTOCOL)) for j in jobs],
            "shared_bytes": len(pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)),
            "result_bytes": [len(pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL))
                             for r in results],
        })
        return results

    def restore(self) -> None:
        self.executor.map = self.inner


def start(name: str, executor: Any, workers: int) -> dict[str, float]:
    """Start the executor's workers; return the start-up seconds (cluster, worker imports)."""
    out: dict[str, float] = {}
    if name == "ray":
        t = time.perf_counter()
        executor.start()  # ray.init: start the local instance
        out["cluster_start_seconds"] = time.perf_counter() - t
    if name != "serial":
        t = time.perf_counter()
        if name == "joblib":
            executor.start()  # spawn the worker processes and import torch + sisakit there
        else:
            executor.map(warm_up, list(range(workers)))  # import torch + sisakit in workers
        out["worker_start_seconds"] = time.perf_counter() - t
    return out


def fit_once(name: str, executor: Any, data: sisakit.Interactions, args: argparse.Namespace,
             epochs: int, forget_users: list[Any] | None) -> tuple[dict[str, Any], Any, Any]:
    """One timed fit (and forget); returns the row, the fitted and the forgotten parameters."""
    rec = Recorder(executor)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-executors-") as tmp:
            model = sisakit.SISA(
                model="bpr-mf", n_shards=args.shards, n_slices=args.slices, epochs=epochs,
                seed=0, workdir=Path(tmp) / "run", device="cpu", threads_per_shard=1,
                progress=False, model_params={"factors": args.factors}, executor=executor,
            )
            t = time.perf_counter()
            model.fit(data)
            fit_seconds = time.perf_counter() - t
            call = rec.calls[0]
            jobs = call["job_seconds"]
            ideal = max(sum(jobs) / (1 if name == "serial" else args.workers), max(jobs))
            row: dict[str, Any] = {
                "fit_seconds": fit_seconds,
                "map_seconds": call["map_seconds"],
                "engine_serial_seconds": fit_seconds - call["map_seconds"],
                "job_seconds_sum": sum(jobs),
                "job_seconds_max": max(jobs),
                # CPU time of the jobs: equal to serial's when the only difference in wall time
                # is waiting for a core (other processes on the machine)
                "job_cpu_seconds_sum": sum(call["cpu_seconds"]),
                "checkpoint_save_seconds_sum": sum(call["save_seconds"]),
                "ideal_map_seconds": ideal,
                "executor_overhead_seconds": call["map_seconds"] - ideal,
                "job_threads": call["threads"],
                "job_mib_mean": statistics.fmean(call["job_bytes"]) / 2**20,
                "shared_mib": call["shared_bytes"] / 2**20,
                "result_mib_mean": statistics.fmean(call["result_bytes"]) / 2**20,
            }
            fitted = [{k: v.clone() for k, v in p.items()} for p in model.parameters()]
            forgotten = None
            if forget_users is not None:
                report = model.forget(users=forget_users)
                row["forget_seconds"] = report.seconds
                row["forget_shards_retrained"] = len(report.shards_retrained)
                forgotten = model
    finally:
        rec.restore()
    return row, fitted, forgotten


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in rows[0].items():
        if isinstance(v, float) and all(k in r for r in rows):
            out[k] = statistics.median(r[k] for r in rows)
        else:
            out[k] = v
    out["fit_seconds_runs"] = [r["fit_seconds"] for r in rows]
    return out


def run_config(label: str, executors: list[tuple[str, Any]], data: sisakit.Interactions,
               args: argparse.Namespace, epochs: int, forget_users: list[Any] | None
               ) -> dict[str, Any]:
    """``--repeats`` interleaved rounds over the executors; medians per executor."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in executors}
    fitted: dict[str, Any] = {}
    forgotten: dict[str, Any] = {}
    for rep in range(args.repeats):
        for name, ex in executors:
            row, params, model = fit_once(name, ex, data, args, epochs,
                                          forget_users if rep == 0 else None)
            runs[name].append(row)
            fitted.setdefault(name, params)
            if model is not None:
                forgotten[name] = model
            logging.info("%s %s run %d: fit %.2fs (jobs %.2fs, overhead %.2fs)", label, name,
                         rep + 1, row["fit_seconds"], row["job_seconds_sum"],
                         row["executor_overhead_seconds"])
    rows = []
    for name, ex in executors:
        # forget_* (first round only) come through _median_row as rows[0]'s values
        rows.append({"executor": name, "params": ex.get_params(), **_median_row(runs[name])})
    serial = rows[0]
    for row in rows:
        row["fit_speedup_vs_serial"] = serial["fit_seconds"] / row["fit_seconds"]
        row["map_speedup_vs_serial"] = serial["map_seconds"] / row["map_seconds"]
        if "forget_seconds" in row:
            row["forget_speedup_vs_serial"] = serial["forget_seconds"] / row["forget_seconds"]
    ref = fitted[executors[0][0]]
    identical_fit = all(
        all(torch.equal(a[k], b[k]) for a, b in zip(p, ref, strict=True) for k in a)
        for p in fitted.values())
    out = {"epochs": epochs, "results": rows, "bitwise_identical_fit": identical_fit}
    if forgotten:
        first = forgotten[executors[0][0]]
        out["bitwise_identical_after_forget"] = all(
            parameters_equal(m, first)[0] for m in forgotten.values())
    return out


# ------------------------------------------------------------------ single-shard measurements
def _shard_job(data: sisakit.Interactions, n_shards: int, shard: int, n_slices: int,
               epochs: int, generation: int) -> ShardJob:
    """The job the engine would build for ``shard`` (default sharder, seed 0)."""
    sharder = plugins.build("sharder", "random-user")
    assign = np.asarray(sharder.assign(data, n_shards, seed=0))
    slices = bucket(sharder.unit_keys(data), n_slices, 0, "slice")
    rows = np.flatnonzero(assign == shard)
    e = stage_epochs(epochs, n_slices)
    return ShardJob(shard=shard, start=0, n_slices=n_slices, generation=generation, rows=rows,
                    rows_slice=np.asarray(slices)[rows], init_seed=derive_seed(0, shard),
                    stage_seeds=tuple(tuple(derive_seed(0, shard, r, k) for k in range(e))
                                      for r in range(n_slices)),
                    records=shard_records(data, rows))


def _context(data: sisakit.Interactions, factors: int, root: str) -> ShardContext:
    model = plugins.build("model", "bpr-mf", factors=factors, device="cpu")
    return ShardContext(model=model, data=data.take(np.zeros(0, dtype=np.int64)), root=root,
                        threads=1, device="cpu")


def _rss_mib(peak: bool) -> float:
    """This process's peak (``VmHWM``) or current (``VmRSS``) resident memory, MiB (Linux).

    Not ``ru_maxrss``: Linux keeps that across ``execve``, so a spawned child would report its
    parent's peak.
    """
    key = "VmHWM:" if peak else "VmRSS:"
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024  # kB
    return float("nan")


def _probe_shard(path: str) -> dict[str, Any]:
    """In a fresh worker process: train the pickled shard job; its time and memory."""
    import sisakit._training  # noqa: F401  (what a warm worker has imported)

    rss_imports = _rss_mib(peak=False)
    with open(path, "rb") as fh:
        job, ctx = pickle.load(fh)
    result = train_shard(job, ctx)
    return {"train_seconds": result.seconds, "checkpoint_save_seconds": result.save_seconds,
            "threads": result.threads, "rss_after_imports_mib": rss_imports,
            "peak_rss_mib": _rss_mib(peak=True),
            "state_mib": sum(t.numel() * t.element_size() for t in result.state.values()) / 2**20,
            "checkpoint_mib": sum(f.stat().st_size for f in Path(ctx.root).rglob("*.pt"))
            / len(result.names) / 2**20}


def shard_profile(data: sisakit.Interactions, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per-shard train time and peak RSS at several shard counts (shard 0; a fresh process
    each, which receives only the pickled job and context, as a worker does)."""
    out = []
    mp = multiprocessing.get_context("spawn")
    for s in args.profile_shards:
        with tempfile.TemporaryDirectory(prefix="bench-executors-shard-") as tmp:
            job = _shard_job(data, s, 0, args.slices, args.epochs, 0)
            ctx = _context(data, args.factors, tmp)
            path = str(Path(tmp) / "job.pkl")
            with open(path, "wb") as fh:
                pickle.dump((job, ctx), fh, protocol=pickle.HIGHEST_PROTOCOL)
            with ProcessPoolExecutor(1, mp_context=mp) as pool:
                measured = pool.submit(_probe_shard, path).result()
            n_users = len(np.unique(job.records["user_idx"]))
            row = {"n_shards": s, "records": len(job.rows), "users": n_users,
                   "n_items": data.n_items, "epochs": args.epochs, **measured,
                   "peak_rss_over_imports_mib": measured["peak_rss_mib"]
                   - measured["rss_after_imports_mib"],
                   # sample_negatives' dense bool table of (local user, item) positives
                   "positives_table_mib": n_users * data.n_items / 2**20,
                   "job_mib": os.path.getsize(path) / 2**20}
        logging.info("shard profile S=%d: %s", s, row)
        out.append(row)
    return out


def step_cost(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per bpr-mf mini-batch step (4,096 records, negative sampling included) against
    the rows of the shard's table (its users + every item), one thread.

    Adam and the gradient buffer are dense over the table, so a step costs ``s0 + s1 * rows``;
    at 100 M interactions the item count, not the batch, sets the step time.
    """
    rng = np.random.default_rng(0)
    n, users, rows_out = 4096 * 8, 600, []
    for n_items in args.step_items:
        data = sisakit.Interactions.from_arrays(
            rng.integers(0, users, n), rng.integers(0, n_items, n),
            user_ids=np.arange(users), item_ids=np.arange(n_items))
        model = plugins.build("model", "bpr-mf", factors=args.factors, device="cpu")
        with torch_threads(1):
            model.setup(data, seed=0)
            model.partial_fit(data, epoch_seeds=[0])  # warm-up (allocations, first calls)
            t = time.perf_counter()
            model.partial_fit(data, epoch_seeds=[1, 2])
            sec = (time.perf_counter() - t) / (2 * n / 4096)
        rows_out.append({"n_items": n_items, "table_rows": users + n_items,
                         "seconds_per_step": sec})
        logging.info("step cost: %s", rows_out[-1])
    x = np.array([r["table_rows"] for r in rows_out], float)
    y = np.array([r["seconds_per_step"] for r in rows_out])
    s1, s0 = np.polyfit(x, y, 1) if len(x) > 1 else (0.0, float(y[0]))
    return {"batch_size": 4096, "factors": args.factors, "points": rows_out,
            "s0_seconds": float(s0), "s1_seconds_per_row": float(s1)}


def extrapolate(args: argparse.Namespace, steps: dict[str, Any], profile: list[dict[str, Any]],
                ceiling: dict[str, Any] | None) -> dict[str, Any]:
    """Per-shard time and memory, and fit wall time, at ``--scale-records`` interactions.

    Model (every constant measured above): a shard of ``n`` records trains ``n * epochs / B``
    steps of ``s0 + s1 * (users_per_shard + items)`` seconds, plus its checkpoint writes. Memory
    of a worker: its measured baseline after imports, the table (E, Adam m and v, gradient:
    4 float32 copies of ``rows x (d + 1)``), the dense bool positives table ``users_per_shard x
    items``, the records and the per-epoch index arrays.
    """
    d, B, E, R = args.factors, 4096, args.epochs, args.slices
    U, n_it, N_rec = args.scale_users, args.scale_items, args.scale_records
    base = statistics.median(r["rss_after_imports_mib"] for r in profile) if profile else 300.0
    save_mib_s = (statistics.median(r["checkpoint_mib"] * R / r["checkpoint_save_seconds"]
                                    for r in profile) if profile else 200.0)
    eff = (ceiling["two_process_speedup_ceiling"] / 2) if ceiling else 1.0
    check = []
    for r in profile:  # the step model against the measured ML-1M shards
        rows = r["users"] + r.get("n_items", 0)
        pred = (r["records"] * E / B) * (steps["s0_seconds"] + steps["s1_seconds_per_row"] * rows)
        check.append({"n_shards": r["n_shards"], "measured_seconds": r["train_seconds"]
                      - r["checkpoint_save_seconds"], "model_seconds": pred})
    # What the step model leaves out (set-up, negative pools, state copies per stage) is put
    # back by scaling it to the measured shards.
    calib = (statistics.median(c["measured_seconds"] / c["model_seconds"] for c in check)
             if check else 1.0)
    plans = []
    for S in args.scale_shards:
        n, us = N_rec / S, U / S
        rows = us + n_it
        step = steps["s0_seconds"] + steps["s1_seconds_per_row"] * rows
        ckpt_mib = rows * (d + 1) * 4 * 3 / 2**20  # E, m, v
        t_shard = calib * (n * E / B) * step + R * ckpt_mib / save_mib_s
        mem = {"baseline_mib": base, "table_mib": rows * (d + 1) * 4 * 4 / 2**20,
               "positives_mib": us * n_it / 2**20, "records_mib": n * 8 * 5 / 2**20,
               "epoch_index_mib": n * 8 * 4 / 2**20}
        mem["total_mib"] = sum(mem.values())
        for N in args.scale_nodes:
            slots = N * args.cores_per_node
            waves = int(np.ceil(S / slots))
            plans.append({
                "shards": S, "nodes": N, "cores_per_node": args.cores_per_node,
                "records_per_shard": n, "users_per_shard": us, "table_rows": rows,
                "seconds_per_step": step, "shard_seconds": t_shard,
                "shard_seconds_derated": t_shard / eff, "waves": waves,
                "fit_seconds": waves * t_shard / eff,
                # one user lives in one slice r (uniform): its forget retrains stages r..R-1
                "forget_one_user_seconds_worst": t_shard / eff,
                "forget_one_user_seconds_mean": t_shard / eff
                * (sum((k + 1) ** 2 for k in range(R)) / R) / sum(k + 1 for k in range(R)),
                "checkpoint_mib": ckpt_mib, "worker_memory_mib": mem,
                "node_memory_gib": min(S / N, args.cores_per_node) * mem["total_mib"] / 1024,
                "driver_shard_models_gib": S * rows * (d + 1) * 4 * 4 / 2**30,
            })
    return {"assumptions": {"records": N_rec, "users": U, "items": n_it, "factors": d, "epochs": E,
                            "slices": R, "batch_size": B, "threads_per_shard": 1,
                            "cores_per_node": args.cores_per_node,
                            "parallel_efficiency": eff, "checkpoint_write_mib_s": save_mib_s,
                            "step_model_calibration": calib},
            "model_check_ml1m": check, "plans": plans}


def _gemm_job(n: int, shared: Any = None) -> tuple[float, float]:
    """``n`` single-threaded 512x512 matrix products: (wall, CPU) seconds. Pure compute: if two
    at once are not twice as fast as one after the other, the cores are not free."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        a @ b
    return time.perf_counter() - t, time.process_time() - c


def scaling_ceiling(data: sisakit.Interactions, args: argparse.Namespace) -> dict[str, Any]:
    """One shard job alone in a worker vs two copies at once in two workers (joblib).

    With no shipping or scheduling to speak of, ``2 * alone / together`` is the best speed-up
    two processes can get on this machine for this work.
    """
    ex = JoblibExecutor(n_jobs=2)
    ex.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-executors-ceiling-") as tmp:
            ctx = _context(data, args.factors, tmp)
            jobs = [_shard_job(data, args.shards, 0, args.slices, args.long_epochs or args.epochs,
                               g) for g in range(3)]
            ex.map(train_shard, jobs[:2], shared=ctx)  # warm both workers
            t = time.perf_counter()
            alone = ex.map(train_shard, jobs[:1], shared=ctx)
            alone_wall = time.perf_counter() - t
            t = time.perf_counter()
            both = ex.map(train_shard, jobs[1:3], shared=ctx)
            both_wall = time.perf_counter() - t
        ex.map(_gemm_job, [2, 2])  # warm-up
        g_alone = ex.map(_gemm_job, [args.gemm_reps])
        g_both = ex.map(_gemm_job, [args.gemm_reps, args.gemm_reps])
    finally:
        ex.close()
    return {
        "gemm_512_alone_wall_cpu": g_alone[0], "gemm_512_two_at_once_wall_cpu": g_both,
        "gemm_two_process_speedup_ceiling": 2 * g_alone[0][0] / max(w for w, _ in g_both),
        "job_cpu_seconds_alone": alone[0].cpu_seconds,
        "job_cpu_seconds_two_at_once": [r.cpu_seconds for r in both],
        "epochs": args.long_epochs or args.epochs,
        "job_seconds_alone": alone[0].seconds,
        "job_seconds_two_at_once": [r.seconds for r in both],
        "wall_alone": alone_wall, "wall_two_at_once": both_wall,
        "two_process_speedup_ceiling": 2 * alone_wall / both_wall,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--long-epochs", type=int, default=40,
                    help="epochs of the steady-state configuration (0 skips it)")
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="joblib n_jobs and Ray num_cpus")
    ap.add_argument("--repeats", type=int, default=3, help="timed fits per executor (median)")
    ap.add_argument("--n-forget", type=int, default=20, help="users forgotten in one batch")
    ap.add_argument("--profile-shards", type=int, nargs="*", default=[5, 10, 20],
                    help="shard counts of the per-shard time/memory profile (scale plan)")
    ap.add_argument("--gemm-reps", type=int, default=400,
                    help="matrix products of the pure-compute 2-process ceiling")
    ap.add_argument("--step-items", type=int, nargs="*", default=[3706, 25000, 100000],
                    help="item counts of the per-step cost measurement (scale plan)")
    ap.add_argument("--scale-records", type=float, default=1e8)
    ap.add_argument("--scale-users", type=float, default=1e6)
    ap.add_argument("--scale-items", type=float, default=1e5)
    ap.add_argument("--scale-shards", type=int, nargs="*", default=[100, 1000])
    ap.add_argument("--scale-nodes", type=int, nargs="*", default=[1, 4, 16])
    ap.add_argument("--cores-per-node", type=int, default=16)
    ap.add_argument("--synthetic", action="store_true", help="built-in synthetic data")
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_executors.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.quick:
        args.epochs, args.long_epochs, args.factors, args.repeats = 2, 0, 16, 1
        args.gemm_reps = 20
        args.profile_shards, args.step_items = args.profile_shards[:1], args.step_items[:2]
    data = _load(args)
    rng = np.random.default_rng(0)
    forget_users = rng.choice(data.user_ids, size=args.n_forget, replace=False).tolist()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    t_all = time.perf_counter()

    executors: list[tuple[str, Any]] = [("serial", SerialExecutor()),
                                        ("joblib", JoblibExecutor(n_jobs=args.workers))]
    if _ray_available() and not args.no_ray:
        executors.append(("ray", RayExecutor(num_cpus=args.workers)))
    startup: dict[str, dict[str, float]] = {}
    configs: dict[str, Any] = {}
    try:
        for name, ex in executors:
            startup[name] = start(name, ex, args.workers)
        configs["short"] = run_config("short", executors, data, args, args.epochs, forget_users)
        if args.long_epochs:
            configs["long"] = run_config("long", executors, data, args, args.long_epochs, None)
    finally:
        for _, ex in executors:
            ex.close()
    for cfg in configs.values():
        for row in cfg["results"]:
            row.update(startup[row["executor"]])
            s = (row.get("cluster_start_seconds", 0.0) + row.get("worker_start_seconds", 0.0))
            row["fit_speedup_incl_startup"] = (cfg["results"][0]["fit_seconds"]
                                               / (row["fit_seconds"] + s))
    ceiling = scaling_ceiling(data, args) if args.workers == 2 else None
    profile = shard_profile(data, args) if args.profile_shards else []
    steps = step_cost(args) if args.step_items else None
    scale = extrapolate(args, steps, profile, ceiling) if steps else None
    short = configs["short"]
    result = {
        "benchmark": "bench_executors",
        "dataset": "synthetic" if args.synthetic else "ml-1m pairs",
        "n_records": len(data), "n_users": data.n_users, "n_items": data.n_items,
        "config": {"model": "bpr-mf", "factors": args.factors, "epochs": args.epochs,
                   "long_epochs": args.long_epochs, "n_shards": args.shards,
                   "n_slices": args.slices, "threads_per_shard": 1, "workers": args.workers,
                   "n_forget": args.n_forget, "repeats": args.repeats},
        # the short configuration, kept at the top level for benchmarks/run_all.py
        "results": short["results"],
        "bitwise_identical_fit": all(c["bitwise_identical_fit"] for c in configs.values()),
        "bitwise_identical_after_forget": short.get("bitwise_identical_after_forget"),
        "configs": configs,
        "scaling_ceiling": ceiling,
        "shard_profile": profile,
        "step_cost": steps,
        "scale_plan": scale,
        "main_process_torch_threads": torch.get_num_threads(),
        "runtime_seconds": time.perf_counter() - t_all,
        "machine": {**machine(), "load_average_at_start": load_start, "load_average_at_end":
                    list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for label, cfg in configs.items():
        print(f"[{label}: {cfg['epochs']} epochs, median of {args.repeats}]")
        for row in cfg["results"]:
            print(f"{row['executor']:>7}: fit {row['fit_seconds']:7.2f}s "
                  f"(x{row['fit_speedup_vs_serial']:.2f}; jobs {row['job_seconds_sum']:.2f}s, "
                  f"overhead {row['executor_overhead_seconds']:.2f}s, engine "
                  f"{row['engine_serial_seconds']:.2f}s, threads {row['job_threads']}) start-up "
                  f"{row.get('cluster_start_seconds', 0.0):.1f}s cluster + "
                  f"{row.get('worker_start_seconds', 0.0):.1f}s workers")
    if ceiling:
        print(f"2-process ceiling on this machine: x{ceiling['two_process_speedup_ceiling']:.2f} "
              f"(shard job), x{ceiling['gemm_two_process_speedup_ceiling']:.2f} (GEMM)")
    for row in profile:
        print(f"S={row['n_shards']}: {row['records']} records/shard, {row['train_seconds']:.2f}s, "
              f"peak RSS {row['peak_rss_mib']:.0f} MiB")
    for row in (scale or {}).get("plans", []):
        print(f"100M plan S={row['shards']} N={row['nodes']}: shard {row['shard_seconds']:.0f}s, "
              f"fit {row['fit_seconds']:.0f}s, worker {row['worker_memory_mib']['total_mib']:.0f} "
              f"MiB, driver models {row['driver_shard_models_gib']:.1f} GiB")
    print(f"identical bits: fit={result['bitwise_identical_fit']} "
          f"forget={result['bitwise_identical_after_forget']} -> {args.out} "
          f"({result['runtime_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
