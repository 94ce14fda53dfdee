"""Dual-memory unlearning of a SASRec model vs retraining: forgetting, collateral cost, MIA, time.

Protocol, per data set and seed (issue #8):

* leave-last-out: each user's last interaction is the held-out **test** record; ``main`` is a
  SASRec trained on the rest (``train``);
* **interaction variant**: 5% of the users (seeded) forget their last *training* interaction;
  **whole-user variant**: 5% of the users forget every training interaction;
* ``gold`` is the same SASRec (same seed and epochs) retrained from scratch without the forget
  records; ``match-gold`` and ``suppress`` are ``dual-memory`` on ``main``;
* ``match-gold`` is calibrated (``held_out``) on the test records of a seeded half of the
  non-forget users: only the main model's *ranks* of them are used, no item or user is trained;
* sets: **forget** = the forgotten last training record of each forget user, ranked given the
  user's sequence before it; in the whole-user variant also **forget_all** = every forgotten
  record sasrec trained as a target (each user's last ``max_len``), each ranked given the
  sequence before it (many more records: less noise, and it tests the router on older
  histories); **retain** = the test records of users who were not asked to forget;
  **collateral** = the test records of non-forget users whose training history holds a
  forgotten item; HR/NDCG@10,20, full ranking, training items excluded;
* **MIA**: :class:`sisakit.membership.InteractionMembershipAttack` fitted on a shadow SASRec
  (other seed) trained without the last training record of half the other users (non-members)
  against the last training record of the other half (members); target pairs: the forget
  records (members of ``main``) vs the test records of as many non-forget users (never trained
  on). Item popularity and user activity are counted on what the attacker knows *without* the
  attacked pairs (else a member's item counts one more). The attack must reach AUC >= 0.6 on
  ``main`` for the comparison to mean anything: the default SASRec (dropout 0.2, 30 epochs)
  memorises too little for that, so run also ``--dropout 0 --epochs 50`` (a memorising model,
  results labelled ``<data set>-dropout0-50ep``);
* router accuracy; CPU seconds of unlearning vs the gold retraining (CPU time, not wall time:
  the machine may be shared; run with one torch thread, the default).

    python benchmarks/bench_dual_memory.py                          # ML-100K, 3 seeds
    python benchmarks/bench_dual_memory.py --datasets ml-100k --dropout 0 --epochs 50 --append
    python benchmarks/bench_dual_memory.py --datasets ml-1m-2999 --seeds 0
    python benchmarks/bench_dual_memory.py --synthetic --quick      # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

import sisakit
from sisakit import metrics
from sisakit.membership import InteractionMembershipAttack
from sisakit.models import SASRec
from sisakit.models.sasrec import time_order
from sisakit.split import leave_last_out
from sisakit.unlearners import DualMemory, ForgetRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sisa import HERE, data_root, load_dataset, machine

KS = (10, 20)


def load(name: str, args: argparse.Namespace) -> sisakit.Interactions:
    """ML-100K, the ML-1M users 1-2999 (timestamped), or synthetic data."""
    if name == "synthetic":
        return sisakit.datasets.synthetic(n_users=200 if args.quick else 943,
                                          n_items=100 if args.quick else 1682,
                                          mean_interactions=25 if args.quick else 60, seed=0)
    if name == "ml-100k":
        return load_dataset("ml-100k")
    if name == "ml-1m-2999":
        path = data_root() / "ml-1m-partial" / "ratings_users_1-2999.dat"
        if not path.is_file():
            sys.exit(f"{path} not found: set SISAKIT_DATA to the folder holding ml-1m-partial/")
        table = np.array(path.read_text().replace("::", " ").split(), dtype=np.int64)
        table = table.reshape(-1, 4)
        return sisakit.Interactions.from_arrays(table[:, 0], table[:, 1], rating=table[:, 2],
                                                timestamp=table[:, 3])
    sys.exit(f"unknown data set {name!r}")


def last_records(data: sisakit.Interactions, users: np.ndarray) -> np.ndarray:
    """Index of the latest record (time, then record id) of each of ``users`` (-1: none)."""
    order, starts = time_order(data)
    ends = np.r_[starts[1:], len(order)]
    return np.where(ends[users] > starts[users], order[np.maximum(ends[users] - 1, 0)], -1)


def prefix_ranking(model, data, idx, max_len) -> dict:
    """HR/NDCG@K of records ``idx`` of ``data``, each ranked given its user's items before it
    (the last ``max_len``; those items excluded from the ranking) by ``model.score_sequences``."""
    order, starts = time_order(data)
    where = np.empty(len(order), np.int64)
    where[order] = np.arange(len(order))
    pos = where[idx]  # positions in the time order
    items = data.item_idx[order] + 1
    first = starts[data.user_idx[idx]]
    cols = pos[:, None] - max_len + np.arange(max_len)[None, :]
    valid = cols >= first[:, None]
    seqs = torch.from_numpy(np.where(valid, items[np.where(valid, cols, 0)], 0))
    keep = (seqs != 0).any(1)  # a first record has no history to rank it from
    seqs, target = seqs[keep], torch.from_numpy(data.item_idx[idx][keep.numpy()])
    ranks = []
    for s in range(0, len(seqs), 512):  # batches of sequences
        sc = torch.as_tensor(model.score_sequences(seqs[s:s + 512])).float().cpu()
        z = sc.gather(1, target[s:s + 512, None])
        above = sc > z
        seen = torch.zeros(len(sc), sc.shape[1] + 1, dtype=torch.bool)
        seen.scatter_(1, seqs[s:s + 512], True)
        ranks.append((above & ~seen[:, 1:]).sum(1))
    r = torch.cat(ranks).numpy()
    out = {"n_records": len(r)}
    for k in KS:
        out[f"hr@{k}"] = float((r < k).mean())
        out[f"ndcg@{k}"] = float(np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0).mean())
    return out


def trained_targets(data, users, max_len) -> np.ndarray:
    """Indices of the records of ``users`` that sasrec trained as next-item targets: the last
    ``max_len`` of each user's sequence but not its first record (sasrec reads the last
    ``max_len + 1`` items)."""
    order, starts = time_order(data)
    ends = np.r_[starts[1:], len(order)]
    u = data.user_idx[order]
    rank_from_end = ends[u] - np.arange(len(order))  # 1 = the user's last record
    take = np.isin(u, users) & (rank_from_end <= max_len) & (np.arange(len(order)) > starts[u])
    return np.sort(order[take])


def ranking(model, context, test, users) -> dict:
    res = metrics.evaluate(model, context, test, k=KS, users=users)
    return {key: res[key] for key in res if key.startswith(("hr@", "ndcg@"))} | {
        "n_users": res["n_users"]}


def fit_sasrec(data, args, seed) -> tuple[SASRec, float]:
    """A SASRec fitted on ``data``, and its CPU seconds (stable under a shared machine's load;
    with one torch thread about the wall time of an idle machine)."""
    t0 = time.process_time()
    model = SASRec(factors=args.factors, max_len=args.max_len, dropout=args.dropout,
                   device="cpu").fit(
        data, epochs=args.epochs, seed=seed)
    return model, time.process_time() - t0


def mask_of(n: int, idx: np.ndarray) -> np.ndarray:
    out = np.zeros(n, bool)
    out[idx] = True
    return out


def run_variant(variant, train, test, main, main_seconds, mia, args, seed, rng_users, held):
    """One forget variant: gold retraining, both presets, every metric."""
    n = len(train)
    forget_users = rng_users
    last_train = last_records(train, forget_users)
    if variant == "interaction":
        remove = mask_of(n, last_train)
        request = ForgetRequest(interactions=list(zip(train.user_ids[forget_users],
                                                      train.item_ids[train.item_idx[last_train]],
                                                      strict=True)))
    else:
        remove = np.isin(train.user_idx, forget_users)
        request = ForgetRequest(users=list(train.user_ids[forget_users]))
    remaining = train.take(~remove)
    forget_set = train.take(last_train)  # the records whose ranking is measured
    forget_ctx = train.take(~mask_of(n, last_train))  # everything before them
    others = np.setdiff1d(np.arange(train.n_users), forget_users)
    forgotten_items = np.unique(train.item_idx[remove])
    holds = np.zeros(train.n_users, bool)
    holds[remaining.user_idx[np.isin(remaining.item_idx, forgotten_items)]] = True
    collateral = others[holds[others]]
    gold, gold_seconds = fit_sasrec(remaining, args, seed)
    out = {"variant": variant, "forget_users": len(forget_users),
           "records_forgotten": int(remove.sum()), "collateral_users": len(collateral),
           "gold_seconds": gold_seconds, "main_seconds": main_seconds, "models": {}}
    # target MIA pairs: forget records (members of main) vs test records of other users
    rng = np.random.default_rng(seed + 17)
    non_users = rng.choice(others, size=min(len(others), len(forget_users)), replace=False)
    non_members = test.take(np.isin(test.user_idx, non_users))
    trained = trained_targets(train, forget_users, args.max_len) if variant == "user" else None
    models = {"main": main, "gold": gold}
    for preset in args.presets:
        res = DualMemory(preset=preset, seed=seed, progress=False,
                         **({"epochs": args.dm_epochs} if args.dm_epochs else {})
                         ).unlearn(main, request, data=train, held_out=held)
        models[preset] = res.model
        out.setdefault("unlearn", {})[preset] = {
            "seconds": res.report["seconds"], "cpu_seconds": res.report["cpu_seconds"],
            "router": res.report["router"],
            "seconds_vs_retrain": res.report["cpu_seconds"] / gold_seconds,
            "forget_windows": res.report["forget_windows"],
            "calibration": res.report["calibration"],
            "final_losses": res.report["losses"][-1]}
    for name, model in models.items():
        row = {}
        # retain / collateral: test records, histories = the model's (remaining data for
        # gold and the unlearned models; the full train for main, equal for these users)
        ctx = train if name == "main" else remaining
        row["retain"] = ranking(model, ctx, test, others)
        row["collateral"] = ranking(model, ctx, test, collateral) if len(collateral) else None
        # forget set: the forgotten record given the user's sequence before it
        model.bind_space(forget_ctx)
        row["forget"] = ranking(model, forget_ctx, forget_set, forget_users)
        if trained is not None:
            row["forget_all"] = prefix_ranking(model, train, trained, args.max_len)
        if mia is not None:  # forget records vs never-trained test records of other users;
            # the attacker's counts leave the attacked pairs out
            row["mia_auc"] = mia.evaluate(model, forget_ctx, forget_set, non_members).auc
        model.bind_space(train if name == "main" else remaining)
        out["models"][name] = row
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m-2999"],
                   help="ml-100k, ml-1m-2999 (users 1-2999 of ML-1M) or synthetic")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seeds-ml1m", type=int, nargs="+", default=[0],
                   help="seeds for ml-1m-2999 (default: one)")
    p.add_argument("--append", action="store_true",
                   help="add to the results already in --out (same data set, seed and variant "
                        "are replaced)")
    p.add_argument("--variants", nargs="+", default=["interaction", "user"])
    p.add_argument("--presets", nargs="+", default=["match-gold", "suppress"])
    p.add_argument("--epochs", type=int, default=30, help="SASRec training epochs")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--dropout", type=float, default=0.2, help="SASRec dropout (0: memorises more)")
    p.add_argument("--dm-epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--forget-frac", type=float, default=0.05)
    p.add_argument("--no-mia", action="store_true")
    p.add_argument("--synthetic", action="store_true", help="synthetic data instead")
    p.add_argument("--quick", action="store_true", help="small data, few epochs (smoke test)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_dual_memory.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.synthetic:
        args.datasets = ["synthetic"]
    if args.quick:
        args.epochs, args.factors, args.max_len = 3, 16, 10
        args.seeds = args.seeds[:1]
    results = []
    if args.append and Path(args.out).is_file():
        results = json.loads(Path(args.out).read_text())["results"]
    for ds in args.datasets:
        data = load(ds, args)
        label = ds if (args.dropout, args.epochs) == (0.2, 30) else (
            f"{ds}-dropout{args.dropout:g}-{args.epochs}ep")
        for seed in (args.seeds_ml1m if ds == "ml-1m-2999" else args.seeds):
            t0 = time.perf_counter()
            train, test = leave_last_out(data)
            main_model, main_seconds = fit_sasrec(train, args, seed)
            rng = np.random.default_rng(seed)
            counts = train.user_counts()
            eligible = np.flatnonzero((counts >= 3) & (test.user_counts() > 0))
            n_f = max(1, round(args.forget_frac * data.n_users))
            forget_users = np.sort(rng.choice(eligible, size=n_f, replace=False))
            others = np.setdiff1d(np.arange(train.n_users), forget_users)
            cal = np.random.default_rng(seed + 29).permutation(others)[:len(others) // 2]
            held = test.take(np.isin(test.user_idx, cal))
            mia = None
            if not args.no_mia:
                mia = fit_mia(train, forget_users, args, seed)
            for variant in args.variants:
                r = run_variant(variant, train, test, main_model, main_seconds, mia, args, seed,
                                forget_users, held)
                r.update(dataset=label, seed=seed, users=data.n_users, items=data.n_items,
                         records=len(data), model_config={
                             "dropout": args.dropout, "epochs": args.epochs,
                             "factors": args.factors, "max_len": args.max_len})
                if mia is not None:
                    r["mia_shadow_auc"] = mia.shadow_result_.auc
                results = [old for old in results if (old["dataset"], old["seed"], old["variant"])
                           != (label, seed, variant)] + [r]
                print(json.dumps(summary_line(r)), flush=True)
            print(f"{ds} seed {seed}: {time.perf_counter() - t0:.0f}s", flush=True)
    out = {"benchmark": "dual_memory", "machine": machine(), "args": vars(args),
           "results": results, "summary": summarise(results)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps(out["summary"], indent=2))
    return 0


def fit_mia(train, forget_users, args, seed) -> InteractionMembershipAttack:
    """The attack, fitted on a shadow SASRec (seed + 1000) with known member/non-member pairs."""
    rng = np.random.default_rng(seed + 1000)
    others = np.setdiff1d(np.flatnonzero(train.user_counts() >= 3), forget_users)
    pick = rng.permutation(others)
    k = max(1, len(others) // 2)
    non_users, mem_users = pick[:k], pick[k:2 * k]
    non_rec = last_records(train, non_users)
    mem_rec = last_records(train, mem_users)
    shadow_train = train.take(~mask_of(len(train), non_rec))
    shadow, _ = fit_sasrec(shadow_train, args, seed + 1000)
    # every attacked pair is scored from the user's history before it
    known = train.take(~mask_of(len(train), np.r_[non_rec, mem_rec]))
    shadow.bind_space(known)
    mia = InteractionMembershipAttack(seed=seed)
    mia.fit(shadow, known, train.take(mem_rec), train.take(non_rec))
    return mia


def summary_line(r: dict) -> dict:
    line = {"dataset": r["dataset"], "seed": r["seed"], "variant": r["variant"]}
    for name, row in r["models"].items():
        line[name] = {"retain_hr10": round(row["retain"]["hr@10"], 4),
                      "forget_hr10": round(row["forget"]["hr@10"], 4),
                      "collateral_hr10": (round(row["collateral"]["hr@10"], 4)
                                          if row["collateral"] else None),
                      "mia": round(row.get("mia_auc", float("nan")), 3)}
        if row.get("forget_all"):
            line[name]["forget_all_hr10"] = round(row["forget_all"]["hr@10"], 4)
    for preset, u in r.get("unlearn", {}).items():
        line[preset]["time_ratio"] = round(u["seconds_vs_retrain"], 3)
        line[preset]["router"] = {k: (round(v, 3) if isinstance(v, float) else v)
                                  for k, v in u["router"].items()}
    return line


def summarise(results: list[dict]) -> list[dict]:
    """Mean over seeds per (dataset, variant, model), and the targets of issue #8."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["variant"]), []).append(r)
    out = []
    for (ds, variant), rs in groups.items():
        for name in rs[0]["models"]:
            def mean(f, name=name, rs=rs):
                vals = [f(r["models"][name], r) for r in rs]
                vals = [v for v in vals if v is not None]
                return float(np.mean(vals)) if vals else None

            row = {"dataset": ds, "variant": variant, "model": name, "seeds": len(rs)}
            for s in ("retain", "forget", "collateral", "forget_all"):
                for key in ("hr@10", "hr@20", "ndcg@10", "ndcg@20"):
                    row[f"{s}_{key}"] = mean(lambda m, _r, s=s, key=key:
                                             m[s][key] if m.get(s) else None)
            row["mia_auc"] = mean(lambda m, _r: m.get("mia_auc"))
            if name in rs[0].get("unlearn", {}):
                row["seconds"] = mean(lambda _m, r, name=name: r["unlearn"][name]["cpu_seconds"])
                row["seconds_vs_retrain"] = mean(
                    lambda _m, r, name=name: r["unlearn"][name]["seconds_vs_retrain"])
                row["router_other_users_to_main"] = mean(
                    lambda _m, r, name=name: r["unlearn"][name]["router"]["other_users_to_main"])
                row["router_forget_to_side"] = mean(
                    lambda _m, r, name=name: r["unlearn"][name]["router"][
                        "forget_contexts_to_side"])
            elif name == "gold":
                row["seconds"] = mean(lambda _m, r: r["gold_seconds"])
            out.append(row)
        by = {row["model"]: row for row in out if row["dataset"] == ds
              and row["variant"] == variant}
        gold, main_row = by.get("gold"), by.get("main")
        for name, row in by.items():
            if name in ("main", "gold") or gold is None or main_row is None:
                continue
            row["targets"] = {
                "forget_hr10_abs_diff_vs_gold": abs(row["forget_hr@10"] - gold["forget_hr@10"]),
                "retain_hr10_rel_drop_vs_main": 1 - row["retain_hr@10"] / main_row["retain_hr@10"],
                "collateral_hr10_rel_drop_vs_main": (
                    1 - row["collateral_hr@10"] / main_row["collateral_hr@10"]
                    if row["collateral_hr@10"] is not None and main_row["collateral_hr@10"]
                    else None),
                "mia_abs_diff_vs_gold": (abs(row["mia_auc"] - gold["mia_auc"])
                                         if row["mia_auc"] is not None else None),
                "forget_all_hr10_abs_diff_vs_gold": (
                    abs(row["forget_all_hr@10"] - gold["forget_all_hr@10"])
                    if row["forget_all_hr@10"] is not None else None),
                "main_mia_auc": main_row["mia_auc"],
                "mia_attack_valid": (main_row["mia_auc"] is not None
                                     and main_row["mia_auc"] >= 0.6),
            }
    return out


if __name__ == "__main__":
    sys.exit(main())
