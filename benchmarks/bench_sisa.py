"""SISA on MovieLens-1M (implicit pairs): quality, fit time and single-user forget speed-up.

Runs the unsharded BPR-MF (S=1, R=1) and SISA for every S in --shards and R in --slices on a
per-user 80/20 holdout with full-ranking evaluation, forgets --n-forget random users one at a
time, and writes one JSON file. When the ``implicit`` package is importable its BPR is run on
the same split for comparison.

    python benchmarks/bench_sisa.py                      # ML-1M pairs from $SISAKIT_DATA
    python benchmarks/bench_sisa.py --synthetic --quick  # smoke run on built-in data

The analytic bound of the forget speed-up assumes user-level slices and the 2·E/(R+1) stage
schedule: a random user sits in slice s with probability 1/R and forces stages s..R-1 of one
shard to be retrained, so the expected work is sum_s sum_{r>=s} (r+1) / R out of R(R+1)/2
stage-units of one shard, and the bound against the unsharded model is S times the inverse.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import sisakit
from sisakit import metrics

HERE = Path(__file__).resolve().parent


def data_root() -> Path:
    return Path(os.environ.get("SISAKIT_DATA", HERE.parent.parent / "shared" / "data"))


def load_pairs(root: Path) -> sisakit.Interactions:
    path = root / "ml-1m-partial" / "ratings_user_movie_pairs.parquet"
    if not path.is_file():
        sys.exit(f"{path} not found: set SISAKIT_DATA to the folder holding ml-1m-partial/")
    return sisakit.datasets.read_interactions(path, user_col="userID", item_col="movieID")


def add_bpr_args(p: argparse.ArgumentParser) -> None:
    """The BPR-MF and data options shared by the ML-1M benchmarks."""
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic", action="store_true", help="use built-in synthetic data")
    p.add_argument("--quick", action="store_true", help="small smoke configuration")


def ml1m_or_synthetic(args: argparse.Namespace, quick_users: int, quick_items: int
                      ) -> tuple[sisakit.Interactions, str]:
    """ML-1M pairs, or synthetic data of ML-1M's size (smaller with ``--quick``)."""
    if args.synthetic:
        data = sisakit.datasets.synthetic(n_users=quick_users if args.quick else 6000,
                                          n_items=quick_items if args.quick else 3700,
                                          seed=args.seed)
        return data, "synthetic"
    return load_pairs(data_root()), "ml-1m pairs"


def load_dataset(name: str) -> sisakit.Interactions:
    """ML-100K (``"ml-100k"``) or the ML-1M pairs with ``gender`` and ``age`` from users.dat."""
    root = data_root()
    if name == "ml-100k":
        return sisakit.datasets.load_movielens("ml-100k", root / "ml-100k")
    pairs = load_pairs(root)
    text = (root / "ml-1m" / "users.dat").read_text(encoding="latin-1").replace("::", "\t")
    raw = np.loadtxt(io.StringIO(text), dtype=str, delimiter="\t", usecols=(0, 1, 2))
    return pairs.with_user_attributes(raw[:, 0].astype(int), gender=raw[:, 1],
                                      age=raw[:, 2].astype(int))


def analytic_bound(n_shards: int, n_slices: int) -> float:
    r = n_slices
    total = r * (r + 1) / 2
    expected = sum(sum(k + 1 for k in range(s, r)) for s in range(r)) / r
    return n_shards * total / expected


def _commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> dict:
    return {
        "commit": _commit(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sisakit": sisakit.__version__,
        "cuda": torch.cuda.is_available(),
    }


class FactorScorer:
    """Adapts an ``implicit`` model (user_factors, item_factors) to sisakit's Scorer protocol."""

    def __init__(self, train: sisakit.Interactions, model) -> None:
        self.n_users, self.n_items = train.n_users, train.n_items
        self.uf = torch.from_numpy(np.asarray(model.user_factors))
        self.itf = torch.from_numpy(np.asarray(model.item_factors))

    def scores(self, user_idx):
        return self.uf[torch.as_tensor(user_idx)] @ self.itf.T


def timed_eval(model, train, test) -> tuple[dict, float]:
    t0 = time.perf_counter()
    res = metrics.evaluate(model, train, test, k=(10, 20))
    return res, time.perf_counter() - t0


def run_implicit(train, test, factors: int, iterations: int, seed: int) -> dict | None:
    try:
        import implicit  # noqa: F401
        from implicit.bpr import BayesianPersonalizedRanking
    except ImportError:
        return None
    from threadpoolctl import threadpool_limits

    csr = train.to_csr().tocsr()
    csr.data[:] = 1.0
    model = BayesianPersonalizedRanking(factors=factors, iterations=iterations,
                                        random_state=seed, num_threads=0)
    with threadpool_limits(1, "blas"):
        t0 = time.perf_counter()
        model.fit(csr, show_progress=False)
        fit_s = time.perf_counter() - t0

    res, eval_s = timed_eval(FactorScorer(train, model), train, test)
    return {"fit_seconds": fit_s, "ndcg@10": res["ndcg@10"], "recall@20": res["recall@20"],
            "eval_seconds": eval_s, "factors": factors, "iterations": iterations,
            "version": __import__("implicit").__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--slices", type=int, nargs="+", default=[1, 5])
    p.add_argument("--n-forget", type=int, default=10)
    p.add_argument("--full-threads", type=int, default=1,
                   help="threads of the unsharded baseline (shards always use 1)")
    p.add_argument("--implicit-iterations", type=int, nargs="*", default=[50, 100])
    p.add_argument("--out", default=str(HERE / "results" / "bench_sisa.json"))
    p.add_argument("--workdir", default=None, help="where run directories go (default: temp)")
    add_bpr_args(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("bench_sisa")
    logging.getLogger("sisakit").setLevel(logging.WARNING)

    data, dataset = ml1m_or_synthetic(args, 600, 300)
    if args.quick:
        args.shards, args.slices, args.epochs, args.n_forget = [2, 4], [1, 2], 4, 3
    train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=args.seed)
    log.info("data: %s, %d train / %d test records", dataset, len(train), len(test))
    model_params = {"factors": args.factors, "lr": args.lr, "batch_size": args.batch_size}
    rng = np.random.default_rng(args.seed)
    candidates = train.user_ids[np.flatnonzero(train.user_counts() > 0)]
    forget_users = rng.choice(candidates, size=args.n_forget, replace=False).tolist()
    import tempfile

    base = Path(args.workdir or tempfile.mkdtemp(prefix="bench-sisa-"))

    def fit(n_shards: int, n_slices: int, threads: int) -> tuple[sisakit.SISA, dict]:
        model = sisakit.SISA(model="bpr-mf", n_shards=n_shards, n_slices=n_slices,
                             epochs=args.epochs, seed=args.seed, model_params=model_params,
                             threads_per_shard=threads, progress=False,
                             workdir=base / f"S{n_shards}-R{n_slices}", overwrite=True)
        t0 = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - t0
        res, eval_s = timed_eval(model, train, test)
        row = {"n_shards": n_shards, "n_slices": n_slices, "threads_per_shard": threads,
               "fit_seconds": fit_s, "eval_seconds": eval_s, "ndcg@10": res["ndcg@10"],
               "recall@20": res["recall@20"], "forget_seconds": [], "work_fraction": []}
        log.info("S=%d R=%d: fit %.2fs ndcg@10 %.4f recall@20 %.4f eval %.3fs", n_shards,
                 n_slices, fit_s, row["ndcg@10"], row["recall@20"], eval_s)
        return model, row

    configs = [(1, 1, args.full_threads)] + [(s, r, 1) for s in args.shards for r in args.slices]
    fitted = [fit(*c) for c in configs]
    # Forget each user from every model in turn, so that slow and fast phases of a shared
    # machine hit every configuration alike; the unsharded model's forget is a full retrain.
    for u in forget_users:
        for model, row in fitted:
            report = model.forget(users=[u])
            row["forget_seconds"].append(report.seconds)
            row["work_fraction"].append(report.work_fraction)
    for _, row in fitted:
        row["forget_median_seconds"] = statistics.median(row["forget_seconds"])
        row["forget_work_fraction_mean"] = float(np.mean(row.pop("work_fraction")))
    full = fitted[0][1]
    rows = []
    for _, row in fitted[1:]:
        s, r = row["n_shards"], row["n_slices"]
        # Headline: median full retrain of the unsharded model over the median SISA forget.
        row["speedup"] = full["forget_median_seconds"] / row["forget_median_seconds"]
        row["speedup_vs_full_fit"] = full["fit_seconds"] / row["forget_median_seconds"]
        row["analytic_bound"] = analytic_bound(s, r)
        row["fraction_of_bound"] = row["speedup"] / row["analytic_bound"]
        rows.append(row)
    implicit_rows = [row for it in args.implicit_iterations
                     if (row := run_implicit(train, test, args.factors, it, args.seed))]
    result = {
        "benchmark": "bench_sisa",
        "dataset": dataset,
        "records": {"train": len(train), "test": len(test), "users": train.n_users,
                    "items": train.n_items},
        "config": {**vars(args), "model_params": model_params},
        "seed": args.seed,
        "machine": machine(),
        "unsharded": full,
        "sisa": rows,
        "implicit_bpr": implicit_rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("speed-up = median unsharded retrain / median single-user SISA forget")
    print(f"{'S':>3} {'R':>2} {'fit s':>7} {'NDCG@10':>8} {'R@20':>7} {'forget s':>9} "
          f"{'speedup':>8} {'bound':>6} {'%bound':>7}")
    print(f"{1:>3} {1:>2} {full['fit_seconds']:7.2f} {full['ndcg@10']:8.4f} "
          f"{full['recall@20']:7.4f} {full['forget_median_seconds']:9.3f}")
    for row in rows:
        print(f"{row['n_shards']:>3} {row['n_slices']:>2} {row['fit_seconds']:7.2f} "
              f"{row['ndcg@10']:8.4f} {row['recall@20']:7.4f} "
              f"{row['forget_median_seconds']:9.3f} {row['speedup']:8.1f} "
              f"{row['analytic_bound']:6.1f} {row['fraction_of_bound']:7.0%}")
    for row in implicit_rows:
        print(f"implicit BPR ({row['iterations']} it.): fit {row['fit_seconds']:.2f}s ndcg@10 "
              f"{row['ndcg@10']:.4f} recall@20 {row['recall@20']:.4f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
