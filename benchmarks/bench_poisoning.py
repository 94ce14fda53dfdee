"""Fake-user poisoning of bpr-mf under SISA on MovieLens-1M, and its removal by forgetting.

For every S in --shards: a clean model is fitted on the training split (per-user 80/20 holdout;
NDCG@10 on the test split checks the configuration). Fake users who each interact with a target
item (at the --target-quantile of item popularity) and --n-filler filler items (--filler; the
default "profile" copies them from the histories of distinct real users) are injected, trying
each --n-fake in turn (at most --max-fake-share of the real users) until the target's top-10
exposure among real users who never interacted with it rises by at least --min-gain. The fake
users are then forgotten with SISA.forget; the exposure is compared with the exact reference (a
scratch fit of the remaining data with the stored assignment, which keeps the fakes' empty rows
in the id space) and with the model fitted on the clean data alone. Recovery time = the forget
call; full retrain = that reference fit (same S) and an unsharded (S=1) fit of the same data.

    python benchmarks/bench_poisoning.py                      # ML-1M pairs from $SISAKIT_DATA
    python benchmarks/bench_poisoning.py --synthetic --quick  # smoke run on built-in data
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

import sisakit
from sisakit import metrics, poisoning
from sisakit.engine import parameters_equal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sisa import add_bpr_args, machine, ml1m_or_synthetic

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, nargs="+", default=[1, 10])
    p.add_argument("--slices", type=int, default=1)
    p.add_argument("--n-fake", type=int, nargs="+", default=[600, 900, 1200])
    p.add_argument("--n-filler", type=int, default=30)
    p.add_argument("--filler", choices=["popular", "random", "sampled", "profile"],
                   default="profile")
    p.add_argument("--max-fake-share", type=float, default=0.2,
                   help="largest --n-fake allowed, as a share of the real users")
    p.add_argument("--target-quantile", type=float, default=0.9,
                   help="popularity quantile of the target item among items with records")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--min-gain", type=float, default=0.05)
    p.add_argument("--out", default=str(HERE / "results" / "bench_poisoning.json"))
    add_bpr_args(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("bench_poisoning")
    logging.getLogger("sisakit").setLevel(logging.WARNING)

    data, dataset = ml1m_or_synthetic(args, 600, 200)
    if args.quick:
        args.shards, args.epochs, args.n_fake, args.n_filler = [1, 2], 10, [30, 60, 120], 10
    train, test = sisakit.split.holdout(data, 0.2, seed=args.seed)
    too_many = [n for n in args.n_fake if n > args.max_fake_share * train.n_users]
    if too_many:
        p.error(f"--n-fake {too_many} exceeds --max-fake-share {args.max_fake_share} of the "
                f"{train.n_users} real users; lower --n-fake")
    counts = train.item_counts()
    with_records = np.flatnonzero(counts > 0)
    by_pop = with_records[np.argsort(counts[with_records], kind="stable")]
    t_idx = int(by_pop[min(len(by_pop) - 1, int(args.target_quantile * len(by_pop)))])
    target = train.item_ids[t_idx]
    audience = train.user_ids[~np.isin(np.arange(train.n_users),
                                       train.user_idx[train.item_idx == t_idx])]
    log.info("data: %s, %d train records; target item %s with %d records; audience %d users",
             dataset, len(train), target, counts[t_idx], len(audience))
    model_params = {"factors": args.factors, "lr": args.lr, "batch_size": args.batch_size}

    def make(n_shards: int) -> sisakit.SISA:
        return sisakit.SISA(model="bpr-mf", n_shards=n_shards, n_slices=args.slices,
                            epochs=args.epochs, seed=args.seed, model_params=model_params,
                            progress=False)

    def timed_fit(n_shards: int, d: sisakit.Interactions, **kw) -> tuple[sisakit.SISA, float]:
        t0 = time.perf_counter()
        m = make(n_shards).fit(d, **kw)
        return m, time.perf_counter() - t0

    def ndcg(m: sisakit.SISA, seen: sisakit.Interactions | None = None) -> float:
        seen = train if seen is None else seen
        # Fake users extend the id space after the real ones, whose indices do not change.
        held = test if seen.n_users == test.n_users else test.replace(user_map=seen.user_map,
                                                                        user_attributes={})
        return metrics.evaluate(m, seen, held, k=10)["ndcg@10"]

    rows = []
    for n_shards in args.shards:
        clean, clean_s = timed_fit(n_shards, train)
        e_clean = poisoning.exposure(clean, target, audience, args.k)
        row = {"n_shards": n_shards, "n_slices": args.slices, "clean_fit_seconds": clean_s,
               "ndcg@10_clean": ndcg(clean), "attempts": []}
        log.info("S=%d: clean exposure %.4f, ndcg@10 %.4f", n_shards, e_clean,
                 row["ndcg@10_clean"])
        best = None
        for n_fake in args.n_fake:
            poisoned = poisoning.inject_fake_users(train, target, n_fake, n_filler=args.n_filler,
                                                   filler=args.filler, seed=args.seed)
            model, fit_s = timed_fit(n_shards, poisoned.data)
            e_att = poisoning.exposure(model, target, audience, args.k)
            row["attempts"].append({"n_fake": n_fake, "exposure": e_att, "fit_seconds": fit_s})
            log.info("S=%d: %d fake users -> exposure %.4f (+%.2f pp)", n_shards, n_fake, e_att,
                     100 * (e_att - e_clean))
            if best is None or e_att > best[0]:
                best = (e_att, model, poisoned)
            if e_att - e_clean >= args.min_gain:
                break
        # Forget the strongest attack tried (the first that reached --min-gain, if any did).
        e_att, model, poisoned = best
        row["attack"] = {**poisoned.as_dict(),
                         "fake_share_of_users": poisoned.n_fake / train.n_users}
        row["gain_pp"] = 100 * (e_att - e_clean)
        row["gain_reached"] = bool(e_att - e_clean >= args.min_gain)
        row["ndcg@10_attacked"] = ndcg(model, poisoned.data)
        fakes = poisoned.fake_users.tolist()
        report = model.forget(users=fakes)
        e_after = poisoning.exposure(model, target, audience, args.k)
        rest = poisoned.data.without(users=fakes)
        # The exact reference: the remaining data with the assignment the run stored.
        ref, ref_s = timed_fit(n_shards, rest, assignment=(model._shard, model._slice))
        equal, n_tensors = parameters_equal(model, ref)
        e_ref = poisoning.exposure(ref, target, audience, args.k)
        _, full_s = timed_fit(1, rest) if n_shards != 1 else (None, ref_s)
        row.update({
            "exposure": {"clean": e_clean, "attacked": e_att, "after_forget": e_after},
            "exposure_reference": e_ref,
            "exposure_clean_alone": e_clean,
            "after_forget_equals_reference": bool(e_after == e_ref and equal),
            "tensors_compared": n_tensors,
            "ndcg@10_after_forget": ndcg(model, poisoned.data),
            "forget_seconds": report.seconds,
            "forget_work_fraction": report.work_fraction,
            "shards_retrained": len(report.shards_retrained),
            "retrain_same_S_seconds": ref_s,
            "retrain_unsharded_seconds": full_s,
            "speedup_vs_same_S": ref_s / report.seconds,
            "speedup_vs_unsharded": full_s / report.seconds,
        })
        log.info("S=%d: after forget %.4f, reference %.4f (bit-identical %s), clean-alone %.4f; "
                 "forget %.2fs vs retrain %.2fs (S=%d) / %.2fs (S=1)", n_shards, e_after, e_ref,
                 equal, e_clean, report.seconds, ref_s, n_shards, full_s)
        rows.append(row)
    result = {
        "benchmark": "bench_poisoning",
        "dataset": dataset,
        "records": {"train": len(train), "test": len(test), "users": train.n_users,
                    "items": train.n_items},
        "target": {"item": sisakit.data.canonical_id(target), "train_records": int(counts[t_idx]),
                   "quantile": args.target_quantile, "audience": len(audience)},
        "config": {**vars(args), "model_params": model_params},
        "seed": args.seed,
        "machine": machine(),
        "runs": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'S':>3} {'n_fake':>6} {'clean':>7} {'attacked':>8} {'forgot':>7} {'exact':>5} "
          f"{'forget s':>8} {'retrain s':>9} {'S=1 s':>6}")
    for row in rows:
        e = row["exposure"]
        print(f"{row['n_shards']:>3} {row['attack']['n_fake']:>6} {e['clean']:7.4f} "
              f"{e['attacked']:8.4f} {e['after_forget']:7.4f} "
              f"{row['after_forget_equals_reference']!s:>5} {row['forget_seconds']:8.2f} "
              f"{row['retrain_same_S_seconds']:9.2f} {row['retrain_unsharded_seconds']:6.2f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
