"""Aggregation strategies on MovieLens-100K: NDCG@10 and aggregator fit time.

For each sharder (random-user, random-interaction) and each aggregator (mean, weighted by count,
weighted by validation NDCG, attention, proto) fits SISA with BPR-MF on a per-user 80/20
holdout and evaluates full-ranking NDCG@10; the aggregator's fit time is measured by refitting a
fresh clone on the trained ensemble (what the engine does after every forget). The unsharded
model (S=1) is the reference.

    python benchmarks/bench_aggregators.py                       # ML-100K from $SISAKIT_DATA
    python benchmarks/bench_aggregators.py --synthetic --quick   # smoke run on built-in data
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import sisakit
from sisakit import metrics
from sisakit._device import torch_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sisa import data_root, machine

HERE = Path(__file__).resolve().parent

AGGREGATORS = {
    "mean": ("mean", {}),
    "weighted-count": ("weighted", {}),
    "weighted-validation": ("weighted", {"by": "validation"}),
    "attention": ("attention", {}),
    "proto": ("proto", {}),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--slices", type=int, default=1)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sharders", nargs="+", default=["random-user", "random-interaction"])
    p.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS))
    p.add_argument("--synthetic", action="store_true", help="use built-in synthetic data")
    p.add_argument("--quick", action="store_true", help="small smoke configuration")
    p.add_argument("--out", default=str(HERE / "results" / "bench_aggregators.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("bench_aggregators")

    if args.synthetic:
        data = sisakit.datasets.synthetic(n_users=300, n_items=200, seed=args.seed)
        dataset = "synthetic"
    else:
        data = sisakit.datasets.load_movielens("ml-100k", data_root() / "ml-100k")
        dataset = "ml-100k"
    if args.quick:
        args.epochs, args.shards = 3, min(args.shards, 3)
    train, test = sisakit.split.holdout(data, 0.2, seed=args.seed)
    common = dict(n_slices=args.slices, epochs=args.epochs, seed=args.seed, progress=False,
                  model_params={"factors": args.factors})

    def run(sharder: str, n_shards: int, agg: str, params: dict) -> dict:
        t0 = time.perf_counter()
        model = sisakit.SISA(sharder=sharder, n_shards=n_shards, aggregator=agg,
                             aggregator_params=params, **common).fit(train)
        fit_s = time.perf_counter() - t0
        agg_s = None
        if model.aggregator.requires_fit:  # refit a fresh clone: the cost of every forget
            with torch_threads(model.threads_per_shard):  # as the engine fits it
                t1 = time.perf_counter()
                model.aggregator.clone().fit(model, model.data)
                agg_s = time.perf_counter() - t1
        res = metrics.evaluate(model, train, test, k=(10, 20))
        return {"ndcg@10": res["ndcg@10"], "recall@20": res["recall@20"], "fit_seconds": fit_s,
                "aggregator_fit_seconds": agg_s}

    results = {"full (S=1)": run("random-user", 1, "mean", {})}
    log.info("full model: %s", results["full (S=1)"])
    for sharder in args.sharders:
        for name in args.aggregators:
            agg, params = AGGREGATORS[name]
            key = f"{sharder} / {name}"
            results[key] = run(sharder, args.shards, agg, params)
            log.info("%s: %s", key, results[key])
    out = {"dataset": dataset, "n_records": len(data), "n_shards": args.shards,
           "n_slices": args.slices, "epochs": args.epochs, "factors": args.factors,
           "seed": args.seed, "split": "per-user holdout 80/20", "model": "bpr-mf",
           "aggregator_params": {k: v[1] for k, v in AGGREGATORS.items()},
           "machine": machine(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
