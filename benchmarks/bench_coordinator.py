"""Scheduling a stream of forget requests: total retrain seconds and latency per policy.

Fits SISA once (ML-1M pairs, S=10, R=5, ``bpr-mf`` with 64 factors, 10 epochs), then replays the
same stream of single-user forget requests (Poisson arrivals on a virtual clock) on a copy of the
run under each policy of :class:`sisakit.coordinator.Coordinator`. Forgets are real: the virtual
clock advances by each forget's measured seconds. Targets: ``batch`` cuts total retrain seconds by
>= 30% against ``immediate``; ``deadline`` never exceeds its deadline.

    python benchmarks/bench_coordinator.py                      # 1,000 requests, ML-1M pairs
    python benchmarks/bench_coordinator.py --n-requests 200     # a shorter stream
    python benchmarks/bench_coordinator.py --synthetic --quick  # smoke run on built-in data

Each policy also reports whether every acknowledged request was applied (``n_applied ==
n_acknowledged``); ``targets`` in the JSON holds the three checks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

import sisakit
from sisakit.coordinator import POLICIES, Coordinator
from sisakit.testing import make_interactions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sisa import data_root, load_pairs, machine

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-requests", type=int, default=1000)
    p.add_argument("--rate", type=float, default=1.0, help="requests per (virtual) second")
    p.add_argument("--max-delay", type=float, default=60.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--budget-seconds", type=float, default=5.0)
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--slices", type=int, default=5)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--synthetic", action="store_true", help="use built-in synthetic data")
    p.add_argument("--quick", action="store_true", help="small smoke configuration")
    p.add_argument("--out", default=str(HERE / "results" / "bench_coordinator.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.n_requests, args.shards, args.slices, args.epochs, args.factors = 24, 3, 3, 2, 8
    data = (make_interactions(n_users=200, n_items=100, n=3000, seed=args.seed) if args.synthetic
            else load_pairs(data_root()))
    t0 = time.perf_counter()
    base = sisakit.SISA(n_shards=args.shards, n_slices=args.slices, epochs=args.epochs,
                        seed=args.seed, model_params={"factors": args.factors},
                        device=args.device, progress=False).fit(data)
    fit_seconds = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    users = np.unique(data.user_ids[data.user_idx])
    n = min(args.n_requests, len(users))
    chosen = rng.choice(users, size=n, replace=False)
    times = np.cumsum(rng.exponential(1.0 / args.rate, size=n))
    stream = [(float(t), [u.item()]) for t, u in zip(times, chosen, strict=True)]
    out_dir = Path(args.out).parent
    results = {}
    for policy in POLICIES:
        run = base.copy()
        log = out_dir / f"bench_coordinator_{policy}.jsonl"
        log.unlink(missing_ok=True)
        coord = Coordinator(run, policy, max_delay=args.max_delay, batch_size=args.batch_size,
                            budget_seconds=args.budget_seconds if policy == "deadline" else None,
                            log=log)
        w0 = time.perf_counter()
        r = coord.simulate(stream)
        r.pop("request_ids")
        lat = np.array(r.pop("latencies"))
        r.update(wall_seconds=time.perf_counter() - w0, p95_latency=float(np.quantile(lat, 0.95)),
                 within_deadline=bool(lat.max() <= args.max_delay),
                 all_forgotten=bool(all(run.is_forgotten(u) for _, us in stream for u in us)))
        results[policy] = r
        print(f"{policy:>9}: {r['n_forgets']} forgets, {r['total_retrain_seconds']:.1f} s retrain, "
              f"max latency {r['max_latency']:.1f} s", flush=True)
    imm = results["immediate"]["total_retrain_seconds"]
    saving = 1 - results["batch"]["total_retrain_seconds"] / imm if imm else None
    targets = {
        "batch_saves_30pct_retrain_seconds": bool(saving is not None and saving >= 0.30),
        "deadline_max_latency_within_deadline": bool(
            results["deadline"]["max_latency"] <= args.max_delay),
        "applied_equals_acknowledged": all(
            r["n_applied"] == r["n_acknowledged"] == r["n_requests"] for r in results.values()),
    }
    out = {
        "dataset": "synthetic" if args.synthetic else "ml-1m-pairs",
        "config": {k: getattr(args, k) for k in ("n_requests", "rate", "max_delay", "batch_size",
                                                 "budget_seconds", "shards", "slices", "epochs",
                                                 "factors", "seed")} | {"n_requests": n},
        "fit_seconds": fit_seconds,
        "results": results,
        "batch_saving_vs_immediate": saving,
        "deadline_saving_vs_immediate": (1 - results["deadline"]["total_retrain_seconds"] / imm
                                         if imm else None),
        "targets": targets,
        "machine": {**machine(), "load_average_at_end":
                    list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"batch saves {'–' if saving is None else f'{saving:.0%}'} of immediate's retrain "
          f"seconds; targets: {targets}", flush=True)
    return out


if __name__ == "__main__":
    main()
