"""Influence of unlearning: validate ``sisakit.influence.estimate`` and time ``compare``.

1. Validation. Fit SISA (BPR-MF) on ML-100K (and, with ``--ml1m``, on the ML-1M pairs), then
   forget ``--n-users`` sampled users one at a time. Before each forget, record the top-10 list
   of every user and the estimate of the user about to be forgotten; after it, the exact effect
   is the mean ``1 - Jaccard@10`` (and the mean normalised footrule, ``rank-change``) over all
   users not forgotten so far. Reports the Spearman correlation of the exact effect with the
   estimate, with the trivial predictor "number of interactions of the user", and with each
   ingredient of the estimate.
2. Timing. ``compare`` of two (6040, 10) top-10 arrays of ML-1M item ids (all ML-1M users):
   Jaccard@10 alone and the three built-in measures (median of 7 repeats).

    python benchmarks/bench_influence.py                  # ML-100K validation + ML-1M timing
    python benchmarks/bench_influence.py --ml1m           # also validate on ML-1M
    python benchmarks/bench_influence.py --synthetic --quick  # smoke run on built-in data
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

import sisakit
from sisakit import influence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sisa import data_root, load_pairs, machine

HERE = Path(__file__).resolve().parent
logger = logging.getLogger("bench_influence")


def validate(data: sisakit.Interactions, *, n_users: int, shards: int, slices: int, epochs: int,
             model_params: dict, seed: int, k: int = 10) -> dict:
    """Forget ``n_users`` sampled users one at a time; correlate estimates with exact effects."""
    t0 = time.perf_counter()
    sisa = sisakit.SISA(model="bpr-mf", n_shards=shards, n_slices=slices, epochs=epochs,
                        seed=seed, progress=False, device="auto", model_params=model_params)
    sisa.fit(data)
    fit_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    with_data = np.flatnonzero(data.user_counts() > 0)
    picked = data.user_ids[rng.choice(with_data, size=n_users, replace=False)]
    all_users = data.user_ids
    alive = np.ones(data.n_users, dtype=bool)
    rows: dict[str, list[float]] = {"effect_jaccard": [], "effect_rank_change": [],
                                    "estimate": [], "activity": [], "work_fraction": [],
                                    "shard_redo": [], "reach": [], "leverage": [], "rarity": [],
                                    "forget_s": [], "estimate_s": [], "compare_s": []}
    before = sisa.recommend(all_users, k)
    for i, user in enumerate(picked.tolist()):
        te = time.perf_counter()
        est = float(influence.estimate(sisa, [user])[0])
        rows["estimate_s"].append(time.perf_counter() - te)
        comp = influence.estimate_components(sisa, [user])
        tf = time.perf_counter()
        sisa.forget(users=[user])
        rows["forget_s"].append(time.perf_counter() - tf)
        after = sisa.recommend(all_users, k)
        tc = time.perf_counter()
        res = influence.compare(before, after, users=all_users, k=k,
                                measures=["jaccard", "rank-change"])
        rows["compare_s"].append(time.perf_counter() - tc)
        alive[data.user_map.index([user], "user")] = False
        rows["effect_jaccard"].append(float(1.0 - res["jaccard"][alive].mean()))
        rows["effect_rank_change"].append(float(res["rank-change"][alive].mean()))
        rows["estimate"].append(est)
        for name in ("activity", "work_fraction", "shard_redo", "reach", "leverage", "rarity"):
            rows[name].append(float(comp[name][0]))
        before = after
        if (i + 1) % 20 == 0:
            logger.info("%d/%d users forgotten", i + 1, n_users)
    eff = np.array(rows["effect_jaccard"])
    eff_r = np.array(rows["effect_rank_change"])

    def rho(name: str, target: np.ndarray = eff) -> float:
        return float(spearmanr(np.array(rows[name]), target)[0])

    predictors = ("estimate", "activity", "work_fraction", "shard_redo", "reach", "leverage",
                  "rarity")
    return {
        "data": {"n_users": data.n_users, "n_items": data.n_items, "records": len(data)},
        "config": {"model": "bpr-mf", "n_shards": shards, "n_slices": slices, "epochs": epochs,
                   "model_params": model_params, "seed": seed, "k": k,
                   "device": str(sisa.device), "n_forgotten": n_users},
        "fit_seconds": fit_s,
        "spearman_vs_effect_jaccard": {p: rho(p) for p in predictors},
        "spearman_vs_effect_rank_change": {p: rho(p, eff_r) for p in predictors},
        "effect_jaccard": {"mean": float(eff.mean()), "min": float(eff.min()),
                           "max": float(eff.max())},
        "median_seconds": {"estimate_one_user": statistics.median(rows["estimate_s"]),
                           "forget": statistics.median(rows["forget_s"]),
                           "compare_all_users": statistics.median(rows["compare_s"])},
        "per_user": {name: rows[name] for name in
                     ("effect_jaccard", "effect_rank_change", "estimate", "activity",
                      "work_fraction", "shard_redo", "reach")},
    }


def time_compare(data: sisakit.Interactions, *, seed: int, repeats: int = 7) -> dict:
    """Time compare() on two top-10 arrays of every user (a popularity SISA before/after)."""
    sisa = sisakit.SISA(model="popularity", n_shards=5, n_slices=1, epochs=1, seed=seed,
                        progress=False).fit(data)
    users = data.user_ids
    before = sisa.recommend(users, 10)
    rng = np.random.default_rng(seed)
    sisa.forget(users=rng.choice(users, 50, replace=False).tolist())
    after = sisa.recommend(users, 10)
    out = {"n_users": len(users), "k": 10}
    for label, measures in (("jaccard_seconds", ["jaccard"]), ("all_builtin_seconds", None)):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            res = influence.compare(before, after, users=users, k=10, measures=measures)
            times.append(time.perf_counter() - t)
        out[label] = statistics.median(times)
        out[label.replace("seconds", "max_seconds")] = max(times)
    out["fraction_changed"] = res.summary()["fraction_changed"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-users", type=int, default=150, help="users forgotten per data set")
    p.add_argument("--shards", type=int, default=5)
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ml1m", action="store_true", help="also validate on the ML-1M pairs")
    p.add_argument("--ml1m-users", type=int, default=100)
    p.add_argument("--synthetic", action="store_true", help="use built-in synthetic data")
    p.add_argument("--quick", action="store_true", help="small smoke configuration")
    p.add_argument("--out", default=str(HERE / "results" / "bench_influence.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.perf_counter()
    result: dict = {"benchmark": "bench_influence", "machine": machine(), "seed": args.seed,
                    "validation": {}}
    root = data_root()
    if args.synthetic:
        small = sisakit.datasets.synthetic(n_users=400 if args.quick else 1000, n_items=300,
                                           seed=args.seed)
        big = sisakit.datasets.synthetic(n_users=6040, n_items=3706, mean_interactions=20,
                                         seed=args.seed)
        small_name, big_name = "synthetic-small", "synthetic-6040"
    else:
        small = sisakit.datasets.load_movielens("ml-100k", root / "ml-100k")
        big = load_pairs(root)
        small_name, big_name = "ml-100k", "ml-1m-pairs"
    n_users = 30 if args.quick else args.n_users
    epochs = 5 if args.quick else args.epochs
    logger.info("validating on %s (%d users forgotten)", small_name, n_users)
    result["validation"][small_name] = validate(
        small, n_users=n_users, shards=args.shards, slices=args.slices, epochs=epochs,
        model_params={}, seed=args.seed)
    if args.ml1m:
        logger.info("validating on %s (%d users forgotten)", big_name, args.ml1m_users)
        # bench_sisa.py's ML-1M configuration.
        result["validation"][big_name] = validate(
            big, n_users=args.ml1m_users, shards=args.shards, slices=args.slices, epochs=10,
            model_params={"factors": 64, "lr": 0.01, "batch_size": 4096}, seed=args.seed)
    logger.info("timing compare() on %s", big_name)
    result["compare_timing"] = {"data": big_name, **time_compare(big, seed=args.seed)}
    result["total_seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for name, v in result["validation"].items():
        s = v["spearman_vs_effect_jaccard"]
        logger.info("%s: Spearman(estimate, effect) = %.3f, Spearman(activity, effect) = %.3f",
                    name, s["estimate"], s["activity"])
    logger.info("compare Jaccard@10, %d users: %.4f s", result["compare_timing"]["n_users"],
                result["compare_timing"]["jaccard_seconds"])
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
