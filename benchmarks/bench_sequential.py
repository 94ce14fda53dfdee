"""SASRec vs BPR-MF on ML-100K leave-last-out, unsharded and under SISA (S = 1, 5, 10).

Does sharding hurt a sequence model more than matrix factorisation? Both models train on each
user's records but the latest (by timestamp) and are ranked on that latest item against the full
catalogue (HR/NDCG@10,20, training items excluded). SISA uses the ``random-user`` sharder, one
slice and the ``mean`` aggregator; S = 1 is the unsharded model. For every configuration the
median seconds of forgetting one user (a shard retrain) is measured too.

    python benchmarks/bench_sequential.py                      # ML-100K from $SISAKIT_DATA
    python benchmarks/bench_sequential.py --synthetic --quick  # smoke run on built-in data
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

MODELS = {
    "sasrec": {"factors": 64, "n_blocks": 2, "max_len": 50, "dropout": 0.2, "lr": 0.001},
    "bpr-mf": {"factors": 64, "lr": 0.01, "batch_size": 4096},
}
EPOCHS = {"sasrec": 40, "bpr-mf": 30}  # default epochs per model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--shards", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, nargs="+", default=None,
                   help=f"epochs per model, in --models order, or one for all (default {EPOCHS})")
    p.add_argument("--n-forget", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads per shard")
    p.add_argument("--synthetic", action="store_true", help="use built-in synthetic data")
    p.add_argument("--quick", action="store_true", help="small smoke configuration")
    p.add_argument("--out", default=str(HERE / "results" / "bench_sequential.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("bench_sequential")
    logging.getLogger("sisakit").setLevel(logging.WARNING)
    if args.epochs is None:
        args.epochs = [EPOCHS[m] for m in args.models]
    if len(args.epochs) == 1:
        args.epochs = args.epochs * len(args.models)
    if args.quick:
        args.shards, args.seeds, args.n_forget = [1, 2], [0], 1
        args.epochs = [2] * len(args.models)
    if len(args.epochs) != len(args.models):
        p.error(f"--epochs takes one value or one per model ({len(args.models)})")
    epochs = dict(zip(args.models, args.epochs, strict=True))
    if args.synthetic:
        data = sisakit.datasets.synthetic(n_users=200 if args.quick else 943,
                                          n_items=150 if args.quick else 1682, seed=0)
        dataset = "synthetic"
    else:
        data, dataset = load_dataset("ml-100k"), "ml-100k"
    train, test = sisakit.split.leave_last_out(data)
    log.info("%s: %d train / %d test records", dataset, len(train), len(test))
    base = Path(tempfile.mkdtemp(prefix="bench-sequential-"))
    rows = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        forget = rng.choice(np.unique(test.user_ids[test.user_idx]), size=args.n_forget,
                            replace=False).tolist()
        for name in args.models:
            params = dict(MODELS[name])
            if args.quick and name == "sasrec":
                params.update(factors=16, max_len=20)
            for s in args.shards:
                sisa = sisakit.SISA(model=name, model_params=params, n_shards=s, n_slices=1,
                                    epochs=epochs[name], seed=seed, sharder="random-user",
                                    aggregator="mean", threads_per_shard=args.threads,
                                    progress=False, workdir=base / f"{name}-S{s}-{seed}",
                                    overwrite=True)
                t0 = time.perf_counter()
                sisa.fit(train)
                fit_s = time.perf_counter() - t0
                res = metrics.evaluate(sisa, train, test, k=(10, 20))
                seconds = [sisa.forget(users=[u]).seconds for u in forget]
                row = {"model": name, "n_shards": s, "seed": seed, "epochs": epochs[name],
                       "fit_seconds": fit_s, "forget_median_seconds": statistics.median(seconds),
                       **{k: res[k] for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20")}}
                log.info("%s S=%d seed=%d: ndcg@10 %.4f hr@10 %.4f fit %.1fs forget %.2fs",
                         name, s, seed, row["ndcg@10"], row["hr@10"], fit_s,
                         row["forget_median_seconds"])
                rows.append(row)
    summary = []
    for name in args.models:
        full = [r for r in rows if r["model"] == name and r["n_shards"] == args.shards[0]]
        for s in args.shards:
            sel = [r for r in rows if r["model"] == name and r["n_shards"] == s]
            entry = {"model": name, "n_shards": s}
            for key in ("ndcg@10", "hr@10", "ndcg@20", "hr@20", "fit_seconds",
                        "forget_median_seconds"):
                vals = [r[key] for r in sel]
                entry[key] = float(np.mean(vals))
                entry[key + "_std"] = float(np.std(vals))
            entry["ndcg@10_vs_unsharded"] = entry["ndcg@10"] / float(
                np.mean([r["ndcg@10"] for r in full]))
            summary.append(entry)
    result = {
        "benchmark": "bench_sequential",
        "dataset": dataset,
        "protocol": "leave-last-out by timestamp, full ranking, training items excluded",
        "records": {"train": len(train), "test": len(test), "users": train.n_users,
                    "items": train.n_items},
        "config": {**vars(args), "model_params": MODELS},
        "machine": machine(),
        "rows": rows,
        "summary": summary,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'model':8} {'S':>3} {'NDCG@10':>16} {'HR@10':>8} {'vs S=1':>7} {'fit s':>7} "
          f"{'forget s':>9}")
    for e in summary:
        print(f"{e['model']:8} {e['n_shards']:>3} {e['ndcg@10']:8.4f}±{e['ndcg@10_std']:.4f} "
              f"{e['hr@10']:8.4f} {e['ndcg@10_vs_unsharded']:7.1%} {e['fit_seconds']:7.1f} "
              f"{e['forget_median_seconds']:9.2f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
