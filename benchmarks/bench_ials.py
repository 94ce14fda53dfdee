"""``ials`` on MovieLens-1M (implicit pairs) against ``implicit``'s ALS, then under SISA.

Part 1, for each seed: a per-user 80/20 holdout, full-ranking NDCG@10/Recall@20 and fit seconds
of sisakit's ``ials`` and ``implicit.als.AlternatingLeastSquares`` with the same factors,
regularisation, alpha and iterations, both on all cores (``--threads``).

Part 2 (first seed): SISA with ``ials`` at each S in --shards (R in --slices), one thread per
shard: NDCG@10, fit seconds, and the median single-user forget time against the median time to
retrain the unsharded ``ials`` (S=1, R=1, one thread) on the remaining data.

    python benchmarks/bench_ials.py
    python benchmarks/bench_ials.py --synthetic --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import sisakit
from sisakit import metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sisa import HERE, FactorScorer, data_root, load_pairs, machine


def implicit_als(train, test, args, seed: int) -> dict | None:
    try:
        from implicit.als import AlternatingLeastSquares
    except ImportError:
        return None
    from threadpoolctl import threadpool_limits

    csr = train.to_csr().tocsr()
    model = AlternatingLeastSquares(factors=args.factors, regularization=args.reg,
                                    alpha=args.alpha, iterations=args.iterations,
                                    random_state=seed, num_threads=args.threads)
    times = []
    with threadpool_limits(1, "blas"):
        for _ in range(args.repeats):  # median of repeats: this VM's first touches are slow
            t0 = time.perf_counter()
            model.fit(csr, show_progress=False)
            times.append(time.perf_counter() - t0)
    fit_s = statistics.median(times)

    res = metrics.evaluate(FactorScorer(train, model), train, test, k=(10, 20))
    return {"fit_seconds": fit_s, "ndcg@10": res["ndcg@10"], "recall@20": res["recall@20"],
            "version": __import__("implicit").__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--reg", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shards", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--slices", type=int, nargs="+", default=[1, 5])
    p.add_argument("--n-forget", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="fits per seed; the median is kept")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(HERE / "results" / "bench_ials.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("bench_ials")
    logging.getLogger("sisakit").setLevel(logging.WARNING)
    if args.synthetic:
        data = sisakit.datasets.synthetic(n_users=500 if args.quick else 6000,
                                          n_items=200 if args.quick else 3700, seed=0)
    else:
        data = load_pairs(data_root())
    if args.quick:
        args.seeds, args.shards, args.slices, args.n_forget = [0], [2, 4], [1, 2], 3
    params = {"factors": args.factors, "reg": args.reg, "alpha": args.alpha}

    # Warm both libraries up (first-call kernel and thread-pool start-up is not fit time).
    warm_train, warm_test = sisakit.split.holdout(data, test_fraction=0.2, seed=99)
    sisakit.models.IALS(device="cpu", **params).fit(warm_train.take(np.arange(5000)), epochs=1)
    implicit_als(warm_train, warm_test, argparse.Namespace(**{**vars(args), "iterations": 1}), 0)
    comparison = []
    for seed in args.seeds:
        train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=seed)
        torch.set_num_threads(args.threads)
        model = sisakit.models.IALS(device="cpu", **params)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model.fit(train, epochs=args.iterations, seed=seed)
            times.append(time.perf_counter() - t0)
        fit_s = statistics.median(times)
        res = metrics.evaluate(model, train, test, k=(10, 20))
        row = {"seed": seed, "sisakit_ials": {"fit_seconds": fit_s, "ndcg@10": res["ndcg@10"],
                                               "recall@20": res["recall@20"]},
               "implicit_als": implicit_als(train, test, args, seed)}
        comparison.append(row)
        log.info("seed %d: ials %.2fs ndcg %.4f | implicit %s", seed, fit_s, res["ndcg@10"],
                 row["implicit_als"])

    seed = args.seeds[0]
    train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=seed)
    rng = np.random.default_rng(seed)
    pool = train.user_ids[np.flatnonzero(train.user_counts() > 0)]
    forget_users = rng.choice(pool, size=args.n_forget, replace=False).tolist()
    base = Path(tempfile.mkdtemp(prefix="bench-ials-"))

    def run(n_shards: int, n_slices: int) -> dict:
        m = sisakit.SISA(model="ials", n_shards=n_shards, n_slices=n_slices,
                         epochs=args.iterations, seed=seed, model_params=params,
                         threads_per_shard=1, progress=False, device="cpu",
                         workdir=base / f"S{n_shards}-R{n_slices}", overwrite=True)
        t0 = time.perf_counter()
        m.fit(train)
        fit_s = time.perf_counter() - t0
        res = metrics.evaluate(m, train, test, k=(10, 20))
        secs = [m.forget(users=[u]).seconds for u in forget_users]
        out = {"n_shards": n_shards, "n_slices": n_slices, "fit_seconds": fit_s,
               "ndcg@10": res["ndcg@10"], "recall@20": res["recall@20"],
               "forget_seconds": secs, "forget_median_seconds": statistics.median(secs)}
        log.info("SISA ials S=%d R=%d: fit %.2fs ndcg %.4f forget median %.3fs", n_shards,
                 n_slices, fit_s, res["ndcg@10"], out["forget_median_seconds"])
        return out

    full = run(1, 1)
    sisa_rows = []
    for s in args.shards:
        for r in args.slices:
            row = run(s, r)
            row["speedup"] = full["forget_median_seconds"] / row["forget_median_seconds"]
            sisa_rows.append(row)

    def mean_std(key: str, who: str) -> list[float] | None:
        vals = [r[who][key] for r in comparison if r[who]]
        return [float(np.mean(vals)), float(np.std(vals))] if vals else None

    summary = {who: {k: mean_std(k, who) for k in ("ndcg@10", "recall@20", "fit_seconds")}
               for who in ("sisakit_ials", "implicit_als")}
    result = {"benchmark": "bench_ials", "dataset": "synthetic" if args.synthetic else
              "ml-1m pairs", "config": vars(args), "machine": machine(),
              "comparison": comparison, "summary_mean_std": summary,
              "sisa_seed": seed, "unsharded": full, "sisa": sisa_rows,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for who, vals in summary.items():
        if vals["ndcg@10"]:
            print(f"{who:14s} NDCG@10 {vals['ndcg@10'][0]:.4f}±{vals['ndcg@10'][1]:.4f}  "
                  f"Recall@20 {vals['recall@20'][0]:.4f}  fit {vals['fit_seconds'][0]:.2f}"
                  f"±{vals['fit_seconds'][1]:.2f}s")
    print(f"unsharded ials (1 thread): NDCG@10 {full['ndcg@10']:.4f}, retrain median "
          f"{full['forget_median_seconds']:.2f}s")
    for row in sisa_rows:
        print(f"SISA S={row['n_shards']:>2} R={row['n_slices']}: NDCG@10 {row['ndcg@10']:.4f}  "
              f"forget median {row['forget_median_seconds']:.3f}s  speed-up {row['speedup']:.1f}x")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
