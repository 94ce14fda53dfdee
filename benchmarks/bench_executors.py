"""Executors on MovieLens-1M: serial vs joblib processes vs a local Ray instance.

Fits SISA (bpr-mf, 64 factors, 10 epochs, S=10 shards) on the ML-1M pairs with each executor at
``threads_per_shard=1`` and ``--workers`` worker processes, then forgets a batch of random
users. Reports fit and forget seconds, the speed-up over serial, and, separately, the executor
start-up (Ray cluster start, worker process start and import of torch/sisakit), which a
long-lived process pays once. Checks that every executor produced the same bits.

    python benchmarks/bench_executors.py                      # ML-1M pairs from $SISAKIT_DATA
    python benchmarks/bench_executors.py --synthetic --quick  # smoke run on built-in data
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sisakit
from sisakit.engine import parameters_equal
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


def run_one(name: str, executor: Any, data: sisakit.Interactions, args: argparse.Namespace,
            forget_users: list[Any]) -> tuple[dict[str, Any], sisakit.SISA]:
    row: dict[str, Any] = {"executor": name, "params": executor.get_params()}
    if name == "ray":
        t = time.perf_counter()
        executor.start()  # ray.init: start the local instance
        row["cluster_start_seconds"] = time.perf_counter() - t
    if name != "serial":
        t = time.perf_counter()
        if name == "joblib":
            executor.start()  # spawn the worker processes and import torch + sisakit there
        else:
            executor.map(warm_up, list(range(args.workers)))  # import torch + sisakit in workers
        row["worker_start_seconds"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="bench-executors-") as tmp:
        model = sisakit.SISA(
            model="bpr-mf", n_shards=args.shards, n_slices=args.slices, epochs=args.epochs,
            seed=0, workdir=Path(tmp) / "run", device="cpu", threads_per_shard=1,
            progress=False, model_params={"factors": args.factors}, executor=executor,
        )
        t = time.perf_counter()
        model.fit(data)
        row["fit_seconds"] = time.perf_counter() - t
        fitted = [{k: v.clone() for k, v in p.items()} for p in model.parameters()]
        report = model.forget(users=forget_users)
        row["forget_seconds"] = report.seconds
        row["forget_shards_retrained"] = len(report.shards_retrained)
        model._bench_fitted = fitted  # keep for the exactness check
    logging.info("%s: %s", name, {k: v for k, v in row.items() if k != "params"})
    return row, model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="joblib n_jobs and Ray num_cpus")
    ap.add_argument("--n-forget", type=int, default=20, help="users forgotten in one batch")
    ap.add_argument("--synthetic", action="store_true", help="built-in synthetic data")
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_executors.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.quick:
        args.epochs, args.factors = 2, 16
    if args.synthetic:
        data = sisakit.datasets.synthetic(n_users=3000 if not args.quick else 300, n_items=500,
                                          mean_interactions=40, seed=0)
    else:
        data = load_pairs(data_root())
    rng = np.random.default_rng(0)
    forget_users = rng.choice(data.user_ids, size=args.n_forget, replace=False).tolist()

    executors: list[tuple[str, Any]] = [("serial", SerialExecutor()),
                                        ("joblib", JoblibExecutor(n_jobs=args.workers))]
    if _ray_available() and not args.no_ray:
        executors.append(("ray", RayExecutor(num_cpus=args.workers)))
    rows, models = [], []
    try:
        for name, ex in executors:
            row, model = run_one(name, ex, data, args, forget_users)
            rows.append(row)
            models.append(model)
    finally:
        for _, ex in executors:
            ex.close()
    serial = rows[0]
    for row in rows:
        row["fit_speedup_vs_serial"] = serial["fit_seconds"] / row["fit_seconds"]
        row["forget_speedup_vs_serial"] = serial["forget_seconds"] / row["forget_seconds"]
        startup = row.get("cluster_start_seconds", 0.0) + row.get("worker_start_seconds", 0.0)
        row["fit_speedup_incl_startup"] = serial["fit_seconds"] / (row["fit_seconds"] + startup)
    identical_fit = all(
        all(torch.equal(a[k], b[k]) for a, b in zip(m._bench_fitted, models[0]._bench_fitted,
                                                     strict=True) for k in a)
        for m in models)
    identical_forget = all(parameters_equal(m, models[0])[0] for m in models)
    result = {
        "benchmark": "bench_executors",
        "dataset": "synthetic" if args.synthetic else "ml-1m pairs",
        "n_records": len(data), "n_users": data.n_users, "n_items": data.n_items,
        "config": {"model": "bpr-mf", "factors": args.factors, "epochs": args.epochs,
                   "n_shards": args.shards, "n_slices": args.slices, "threads_per_shard": 1,
                   "workers": args.workers, "n_forget": args.n_forget},
        "results": rows,
        "bitwise_identical_fit": identical_fit,
        "bitwise_identical_after_forget": identical_forget,
        "machine": {**machine(), "load_average_at_end":
                    list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(f"{row['executor']:>7}: fit {row['fit_seconds']:7.2f}s "
              f"(x{row['fit_speedup_vs_serial']:.2f}), forget {row['forget_seconds']:6.2f}s "
              f"(x{row['forget_speedup_vs_serial']:.2f}), start-up "
              f"{row.get('cluster_start_seconds', 0.0):.1f}s cluster + "
              f"{row.get('worker_start_seconds', 0.0):.1f}s workers")
    print(f"identical bits: fit={identical_fit} forget={identical_forget} -> {args.out}")


if __name__ == "__main__":
    main()
