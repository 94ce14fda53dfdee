"""Membership inference against bpr-mf under SISA on MovieLens-1M: original, unlearned, gold.

For every S in --shards: users are split into four activity-matched groups (target members /
non-members, shadow members / non-members); a SISA bpr-mf trains on the target members, a shadow
one on the shadow members, and the user-level attack of Zhang et al. (CCS 2021) is trained on
the shadow model. --n-forget target members are then attacked on the original model, forgotten
with SISA.forget, attacked again, and attacked on a model retrained from scratch without them
(gold); the negatives are the target non-members. The interaction-level attack is run on
separate fits. A holdout fit of the same configuration checks the model quality (NDCG@10).

    python benchmarks/bench_membership.py                      # ML-1M pairs from $SISAKIT_DATA
    python benchmarks/bench_membership.py --synthetic --quick  # smoke run on built-in data
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import sisakit
from sisakit import membership, metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sisa import add_bpr_args, machine, ml1m_or_synthetic

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, nargs="+", default=[1, 10])
    p.add_argument("--slices", type=int, default=1)
    p.add_argument("--n-forget", type=int, default=300)
    p.add_argument("--k", type=int, default=100, help="length of the observed lists")
    p.add_argument("--dim", type=int, default=64, help="SVD item-vector dimension")
    p.add_argument("--no-interaction", action="store_true", help="skip the pair-level attack")
    p.add_argument("--out", default=str(HERE / "results" / "bench_membership.json"))
    add_bpr_args(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("bench_membership")
    logging.getLogger("sisakit").setLevel(logging.WARNING)

    data, dataset = ml1m_or_synthetic(args, 800, 200)
    if args.quick:
        args.shards, args.epochs, args.n_forget, args.k, args.dim = [1, 2], 5, 50, 20, 16
    log.info("data: %s, %d records, %d users, %d items", dataset, len(data), data.n_users,
             data.n_items)
    model_params = {"factors": args.factors, "lr": args.lr, "batch_size": args.batch_size}
    split = membership.split_users(data, args.seed)
    rows = []
    for n_shards in args.shards:
        cfg = dict(model="bpr-mf", n_shards=n_shards, n_slices=args.slices, epochs=args.epochs,
                   seed=args.seed, model_params=model_params, progress=False)
        # Quality check of this configuration on a per-user 80/20 holdout of all users.
        train, test = sisakit.split.holdout(data, 0.2, seed=args.seed)
        t0 = time.perf_counter()
        quality = metrics.evaluate(sisakit.SISA(**cfg).fit(train), train, test, k=(10, 20))
        quality_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        audit = membership.unlearning_audit(data, cfg, n_forget=args.n_forget, split=split,
                                            k=args.k, dim=args.dim, seed=args.seed)
        audit_s = time.perf_counter() - t0
        row = {"n_shards": n_shards, "n_slices": args.slices, "ndcg@10": quality["ndcg@10"],
               "recall@20": quality["recall@20"], "quality_fit_eval_seconds": quality_s,
               "user_level": audit.summary(), "audit_seconds": audit_s,
               "auc": audit.as_dict()}
        log.info("S=%d: ndcg@10 %.4f; MIA AUC all members %.4f; forgotten users: original %.4f "
                 "unlearned %.4f gold %.4f (identical %s); forget %.2fs, gold fit %.2fs",
                 n_shards, row["ndcg@10"], audit.details["all_members"]["auc"],
                 row["auc"]["original"], row["auc"]["unlearned"], row["auc"]["gold"],
                 audit.identical, audit.forget_seconds, audit.gold_fit_seconds)
        if not args.no_interaction:
            t0 = time.perf_counter()
            pair = membership.interaction_membership_inference(data, cfg, split=split,
                                                               seed=args.seed)
            row["interaction_level"] = {**pair.as_dict(), "seconds": time.perf_counter() - t0}
            log.info("S=%d: pair-level MIA AUC %.4f (advantage %.4f)", n_shards, pair.auc,
                     pair.advantage)
        rows.append(row)
    result = {
        "benchmark": "bench_membership",
        "dataset": dataset,
        "records": {"n": len(data), "users": data.n_users, "items": data.n_items},
        "split": split.sizes(),
        "config": {**vars(args), "model_params": model_params},
        "seed": args.seed,
        "machine": machine(),
        "runs": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'S':>3} {'NDCG@10':>8} {'AUC all':>8} {'AUC orig':>9} {'unlearned':>10} {'gold':>7} "
          f"{'identical':>9} {'pair AUC':>9}")
    for row in rows:
        ul = row["user_level"]
        pair = row.get("interaction_level", {}).get("auc", float("nan"))
        print(f"{row['n_shards']:>3} {row['ndcg@10']:8.4f} {ul['all_members']['auc']:8.4f} "
              f"{row['auc']['original']:9.4f} {row['auc']['unlearned']:10.4f} "
              f"{row['auc']['gold']:7.4f} {ul['identical_unlearned_gold']!s:>9} {pair:9.4f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
