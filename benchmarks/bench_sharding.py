"""Sharding and aggregation strategies: quality of every (sharder, aggregator, S) on MovieLens.

Each cell fits SISA with ``bpr-mf`` on a per-user 80/20 holdout and evaluates with full ranking:
NDCG@10 and Recall@20 over all users, and NDCG@10 of the low-activity users (the bottom 20% by
number of training records). ``--forget N`` also times N single-user forgets per cell (the
aggregator refit included, as ``ForgetReport.seconds`` measures it) and, for S=1, a full retrain.

Results go to one JSON file, saved after every cell; a rerun skips the cells already in it
(``--fresh`` starts over). Named studies:

    python benchmarks/bench_sharding.py --study grid-100k            # S x sharder x aggregator x seed
    python benchmarks/bench_sharding.py --study sharders-1m          # every sharder, S=10, mean
    python benchmarks/bench_sharding.py --study aggregators-1m --sharder random-user
    python benchmarks/bench_sharding.py --study sweep-1m --sharder X --aggregator Y
    python benchmarks/bench_sharding.py --study target-1m --sharder X --aggregator Y --forget 10
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

import sisakit
from sisakit import metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sisa import HERE, load_dataset, machine

log = logging.getLogger("bench_sharding")

SHARDERS = {
    "random-user": {},
    "random-interaction": {},
    "activity-stratified": {},
    "attribute-stratified": {"attribute": "gender"},
    "receraser-user": {},
    "receraser-item": {},
    "receraser-interaction": {},
}
#: Aggregator label -> (registered name, params).
AGGREGATORS = {
    "mean": ("mean", {}),
    "weighted": ("weighted", {}),
    "weighted-validation": ("weighted", {"by": "validation"}),
    "attention": ("attention", {}),
    "proto": ("proto", {}),
    "fold-in": ("fold-in", {}),
}
MODELS = {
    "bpr-mf": {"factors": 64, "lr": 0.01, "batch_size": 4096},
    "ials": {"factors": 32, "reg": 1.0},
}


def low_activity_users(train: sisakit.Interactions, fraction: float = 0.2) -> np.ndarray:
    """Indices of the ``fraction`` least active users with training data (ties by index)."""
    counts = train.user_counts()
    active = np.flatnonzero(counts > 0)
    order = active[np.argsort(counts[active], kind="stable")]
    return order[: max(1, round(fraction * len(order)))]


def cell_key(c: dict) -> str:
    return "|".join(f"{k}={c[k]}" for k in ("dataset", "model", "n_shards", "n_slices",
                                             "sharder", "aggregator", "epochs", "seed"))


def run_cell(c: dict, train, test, low: np.ndarray, forget_users: list, workdir: Path) -> dict:
    agg_name, agg_params = AGGREGATORS[c["aggregator"]]
    model = sisakit.SISA(model=c["model"], sharder=c["sharder"], aggregator=agg_name,
                         n_shards=c["n_shards"], n_slices=c["n_slices"], epochs=c["epochs"],
                         seed=c["seed"], model_params=MODELS[c["model"]],
                         sharder_params=SHARDERS[c["sharder"]], aggregator_params=agg_params,
                         progress=False, workdir=workdir, overwrite=True)
    t0 = time.perf_counter()
    model.fit(train)
    row = dict(c, fit_seconds=time.perf_counter() - t0)
    res = metrics.evaluate(model, train, test, k=(10, 20))
    row["ndcg@10"], row["recall@20"] = res["ndcg@10"], res["recall@20"]
    row["ndcg@10_low_activity"] = metrics.evaluate(model, train, test, k=(10,), users=low)["ndcg@10"]
    if forget_users:
        reports = [model.forget(users=[u]) for u in forget_users]
        row["forget_seconds"] = [r.seconds for r in reports]
        row["aggregator_seconds"] = [r.aggregator_seconds for r in reports]
        row["forget_median_seconds"] = statistics.median(row["forget_seconds"])
    log.info("%s: ndcg@10 %.4f recall@20 %.4f low %.4f fit %.1fs", cell_key(c), row["ndcg@10"],
             row["recall@20"], row["ndcg@10_low_activity"], row["fit_seconds"])
    return row


def cells_for(args) -> list[dict]:
    ds = "ml-100k" if args.study == "grid-100k" else "ml-1m-pairs"
    base = {"dataset": ds, "model": args.model, "n_slices": args.slices, "epochs": args.epochs}
    out = []
    for seed in args.seeds:
        if args.study == "grid-100k":
            out.append(dict(base, n_shards=1, sharder="random-user", aggregator="mean", seed=seed))
            for s in args.shards:
                for sh in args.sharders:
                    for ag in args.aggregators:
                        out.append(dict(base, n_shards=s, sharder=sh, aggregator=ag, seed=seed))
        elif args.study == "sharders-1m":
            out.append(dict(base, n_shards=1, sharder="random-user", aggregator="mean", seed=seed))
            for sh in args.sharders:
                out.append(dict(base, n_shards=10, sharder=sh, aggregator="mean", seed=seed))
        elif args.study == "aggregators-1m":
            for ag in args.aggregators:
                out.append(dict(base, n_shards=10, sharder=args.sharder, aggregator=ag, seed=seed))
        elif args.study == "sweep-1m":
            for s in args.shards:
                out.append(dict(base, n_shards=s, sharder=args.sharder, aggregator=args.aggregator,
                                seed=seed))
        elif args.study == "target-1m":
            out.append(dict(base, n_shards=1, sharder="random-user", aggregator="mean", seed=seed))
            out.append(dict(base, n_shards=10, sharder=args.sharder, aggregator=args.aggregator,
                            seed=seed))
    return out


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds of every (dataset, S, sharder, aggregator) cell."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "error" in r:
            continue
        groups.setdefault((r["dataset"], r["model"], r["n_shards"], r["n_slices"], r["sharder"],
                           r["aggregator"], r["epochs"]), []).append(r)
    out = []
    for (ds, model, s, r, sh, ag, ep), rs in sorted(groups.items()):
        row = {"dataset": ds, "model": model, "n_shards": s, "n_slices": r, "sharder": sh,
               "aggregator": ag, "epochs": ep, "n_seeds": len(rs)}
        for m in ("ndcg@10", "recall@20", "ndcg@10_low_activity", "fit_seconds"):
            v = np.array([r[m] for r in rs])
            row[m], row[m + "_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        if all("forget_median_seconds" in r for r in rs):
            row["forget_median_seconds"] = float(np.median([r["forget_median_seconds"]
                                                            for r in rs]))
        out.append(row)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True,
                   choices=["grid-100k", "sharders-1m", "aggregators-1m", "sweep-1m", "target-1m"])
    p.add_argument("--shards", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--sharders", nargs="+", default=list(SHARDERS))
    p.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS))
    p.add_argument("--sharder", default="random-user")
    p.add_argument("--aggregator", default="mean")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--model", default="bpr-mf", choices=list(MODELS))
    p.add_argument("--slices", type=int, default=1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--forget", type=int, default=0, help="single-user forgets timed per cell")
    p.add_argument("--out", default=None)
    p.add_argument("--fresh", action="store_true", help="ignore earlier results in --out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("sisakit").setLevel(logging.WARNING)
    out = Path(args.out or HERE / "results" / f"bench_sharding_{args.study}.json")
    done = {} if args.fresh or not out.is_file() else {
        cell_key(r): r for r in json.loads(out.read_text())["cells"]}
    cells = [c for c in cells_for(args) if cell_key(c) not in done]
    log.info("%d cells to run, %d already done", len(cells), len(done))
    datasets: dict[str, tuple] = {}
    base = Path(tempfile.mkdtemp(prefix="bench-sharding-"))
    for c in cells:
        if c["dataset"] not in datasets:
            data = load_dataset("ml-100k" if c["dataset"] == "ml-100k" else "ml-1m")
            datasets.clear()  # one data set in memory at a time
            train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=0)
            rng = np.random.default_rng(0)
            users = train.user_ids[np.flatnonzero(train.user_counts() > 0)]
            forget = rng.choice(users, size=args.forget, replace=False).tolist()
            datasets[c["dataset"]] = (train, test, low_activity_users(train), forget)
        train, test, low, forget = datasets[c["dataset"]]
        try:
            row = run_cell(c, train, test, low, forget, base / "run")
        except Exception as exc:  # a failed cell is recorded, the sweep goes on
            log.exception("cell %s failed", cell_key(c))
            row = dict(c, error=f"{type(exc).__name__}: {exc}")
        done[cell_key(c)] = row
        result = {"benchmark": "bench_sharding", "study": args.study, "machine": machine(),
                  "model_params": MODELS, "split": "holdout 80/20 seed 0",
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "cells": list(done.values()), "summary": summarise(list(done.values()))}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out)
    summary = summarise(list(done.values()))
    print(f"{'model':<7} {'S':>3} {'R':>2} {'sharder':<22} {'aggregator':<20} {'NDCG@10':>15} "
          f"{'R@20':>15} {'low NDCG':>15}")
    for r in summary:
        print(f"{r['model']:<7} {r['n_shards']:>3} {r['n_slices']:>2} {r['sharder']:<22} "
              f"{r['aggregator']:<20} "
              f"{r['ndcg@10']:.4f}±{r['ndcg@10_std']:.4f} {r['recall@20']:.4f}±{r['recall@20_std']:.4f} "
              f"{r['ndcg@10_low_activity']:.4f}±{r['ndcg@10_low_activity_std']:.4f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
