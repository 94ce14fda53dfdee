"""Reproduce the MovieLens-1M SISA study end to end: sweep, unlearning audits and every figure.

The study: SISA ensembles with S = 1, 5 and 10 shards (with and without slice checkpoints),
random vs activity-stratified user sharding, several seeds; forget one user, one shard's users
("unlearn group 1") and the 20 % least active users; compare with retraining from scratch; then
audit unlearning with membership inference (original / unlearned / gold) and a poisoning attack
(exposure of a pushed item: clean / attacked / after forgetting the fake users).

By default it runs on the built-in synthetic data (no download; a few minutes on a laptop)::

    python examples/movielens_study.py --out study-synthetic

With the MovieLens-1M files (GroupLens licence: never redistribute them)::

    python examples/movielens_study.py --data ../shared/data --out study-ml1m --device auto

``--data`` is a folder holding ``ml-1m-partial/ratings_user_movie_pairs.parquet`` (every
(user, movie) pair of ML-1M ``ratings.dat``, without ratings or timestamps; needs pyarrow) and
``ml-1m/users.dat`` (gender, age and occupation of each user). The sweep resumes: run the same
command again after an interruption and finished cells are skipped.

Outputs in ``--out``: ``results.csv`` and ``run.json`` (see the *Experiments and plots* docs page),
``plots/`` (PNG + SVG figures, ``comparison.csv`` / ``comparison.md``) and ``audits.json``
(membership-inference and poisoning figures).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

import sisakit
from sisakit import experiment, plots

logger = logging.getLogger("movielens_study")


# ---------------------------------------------------------------------------------- data
def load_ml1m(root: Path) -> sisakit.Interactions:
    """ML-1M (user, movie) pairs with the users' gender, age and occupation attached."""
    pairs = root / "ml-1m-partial" / "ratings_user_movie_pairs.parquet"
    users = root / "ml-1m" / "users.dat"
    for path in (pairs, users):
        if not path.is_file():
            raise SystemExit(f"{path} not found: --data must be the folder holding "
                             "ml-1m-partial/ and ml-1m/")
    data = sisakit.datasets.read_interactions(pairs, user_col="userID", item_col="movieID")
    # users.dat: UserID::Gender::Age::Occupation::Zip-code
    text = users.read_text(encoding="latin-1").replace("::", "\t")
    table = np.loadtxt(io.StringIO(text), dtype=str, delimiter="\t", comments=None)
    return data.with_user_attributes(table[:, 0].astype(np.int64), gender=table[:, 1],
                                     age=table[:, 2].astype(np.int64),
                                     occupation=table[:, 3].astype(np.int64))


def sharders() -> list[str]:
    """Random vs activity-stratified sharding (random only if the stratified one is missing)."""
    if "activity-stratified" in sisakit.plugins.names("sharder"):
        return ["random-user", "activity-stratified"]
    logger.warning("the 'activity-stratified' sharder is not registered; comparing "
                   "random-user sharding only")
    return ["random-user"]


def study_config(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep: S in {1, 5, 10} x R in {1, 4} x sharders x seeds; three forget scenarios."""
    return {
        "experiment": {"name": "movielens-study", "device": args.device,
                       "full_retrain": not args.no_full_retrain},
        "split": {"method": "holdout", "test_fraction": 0.2, "seed": 0},
        "grid": {"model": "bpr-mf", "sharder": sharders(), "aggregator": "mean",
                 "n_shards": [1, 5, 10], "n_slices": [1, 4], "epochs": args.epochs,
                 "seed": args.seeds},
        "params": {"model": {"bpr-mf": {"factors": args.factors, "batch_size": 4096}}},
        "evaluation": {"ndcg_k": 10, "recall_k": 20, "jaccard_k": 10,
                       "groups": ["gender", "active"]},
        "scenarios": [
            {"name": "one-user", "kind": "user"},
            {"name": "group-1", "kind": "shard", "shard": 0},
            {"name": "inactive-20pct", "kind": "activity", "quantile": 0.2, "side": "bottom"},
        ],
    }


def sisa_args(args: argparse.Namespace, **over: Any) -> dict[str, Any]:
    base = {"model": "bpr-mf", "sharder": "random-user", "aggregator": "mean", "n_shards": 5,
            "n_slices": 4, "epochs": args.epochs, "seed": args.seeds[0], "device": args.device,
            "model_params": {"factors": args.factors, "batch_size": 4096},
            "progress": False if args.quiet else None}
    base.update(over)
    return base


# ---------------------------------------------------------------------------------- audits
def shard_heatmaps(args: argparse.Namespace, train: sisakit.Interactions,
                   test: sisakit.Interactions, out: Path) -> dict[str, list[Path]]:
    """NDCG@10 per (shard, activity quartile) of a 10-shard ensemble, for each sharder."""
    from sisakit import fairness

    made = {}
    for sharder in sharders():
        model = sisakit.SISA(**sisa_args(args, sharder=sharder, n_shards=10)).fit(train)
        grid = fairness.per_shard_metrics(model, train, test, by="activity", k=10)
        made[f"shard_heatmap_{sharder}"] = plots.shard_heatmap(
            grid.values, out, row_labels=grid.shards.tolist(),
            col_labels=grid.groups.tolist(), xlabel="activity quartile (q1 = least active)",
            ylabel="shard", title=f"NDCG@10 per shard and activity group ({sharder})",
            colorbar_label="NDCG@10", name=f"shard_heatmap_{sharder}")
    return made


def membership_audit(args: argparse.Namespace, data: sisakit.Interactions) -> dict[str, Any]:
    """Membership-inference AUC on the forgotten users: original, unlearned, gold."""
    from sisakit import membership

    split = membership.split_users(data, seed=args.seeds[0])
    n_forget = int(min(300, len(split.target_members) // 2))
    audit = membership.unlearning_audit(data, sisa_args(args), n_forget=n_forget, split=split,
                                        seed=args.seeds[0])
    return audit.summary()


def poisoning_audit(args: argparse.Namespace, train: sisakit.Interactions) -> dict[str, Any]:
    """Push an item with fake users, then forget them: exposure before/under/after.

    The settings of ``benchmarks/bench_poisoning.py``: a target at the 90th popularity
    percentile, fake users worth 20% of the real ones, 30 fillers copied from real profiles.
    """
    from sisakit import poisoning

    counts = train.item_counts()
    active = np.flatnonzero(counts > 0)
    order = active[np.argsort(counts[active], kind="stable")]
    target = train.item_ids[order[int(0.9 * (len(order) - 1))]]
    n_fake = max(5, train.n_users // 5)
    poisoned = poisoning.inject_fake_users(train, target, n_fake, n_filler=30, filler="profile",
                                           seed=args.seeds[0])
    # The audience: real users who never interacted with the target.
    seen = np.unique(train.user_idx[train.item_idx == train.item_map.index([target], "item")[0]])
    audience = np.setdiff1d(np.flatnonzero(train.user_counts() > 0), seen)
    audience_ids = train.user_ids[audience].tolist()
    clean = sisakit.SISA(**sisa_args(args)).fit(train)
    attacked = sisakit.SISA(**sisa_args(args)).fit(poisoned.data)
    result = {"target_item": int(target) if np.issubdtype(type(target), np.integer) else target,
              "n_fake": n_fake, "clean": poisoning.exposure(clean, target, audience_ids),
              "attacked": poisoning.exposure(attacked, target, audience_ids)}
    report = attacked.forget(users=poisoned.fake_users.tolist())
    result["after_forget"] = poisoning.exposure(attacked, target, audience_ids)
    result["forget_seconds"] = report.seconds
    return result


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder with ml-1m-partial/ and ml-1m/ "
                        "(default: built-in synthetic data)")
    parser.add_argument("--out", type=Path, default=Path("movielens-study"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per shard (default 10 synthetic, 20 ML-1M)")
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--synthetic-users", type=int, default=1200)
    parser.add_argument("--no-full-retrain", action="store_true",
                        help="skip the (expensive) full-retrain comparison")
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("movielens_study", "sisakit.experiment"):  # progress lines, not every metric
        logging.getLogger(name).setLevel(logging.INFO)
    if args.epochs is None:
        args.epochs = 20 if args.data else 10
    t0 = time.perf_counter()
    if args.data:
        data = load_ml1m(args.data)
    else:
        data = sisakit.datasets.synthetic(n_users=args.synthetic_users, n_items=400,
                                          mean_interactions=30, seed=0)
    logger.info("data: %s", data)
    out = args.out
    figures = out / "plots"

    res = experiment.run(study_config(args), out, data=data, resume=not args.no_resume,
                         progress=False if args.quiet else None)
    logger.info("sweep: %d cells (%d ran, %d skipped, %d failed) -> %s", res.n_cells, res.n_ran,
                res.n_skipped, res.n_failed, res.results_csv)
    made = plots.from_results(res.results_csv, figures)

    train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=0)
    made.update(shard_heatmaps(args, train, test, figures))
    audits = {"membership": membership_audit(args, data), "poisoning": poisoning_audit(args, train)}
    made["mia_auc"] = plots.mia_auc(audits["membership"]["auc"], figures)
    made["poisoning_exposure"] = plots.poisoning_exposure(
        {k: audits["poisoning"][k] for k in ("clean", "attacked", "after_forget")}, figures,
        ylabel="share of users with the pushed item in their top 10")
    (out / "audits.json").write_text(json.dumps(audits, indent=2, default=str))

    print((figures / "comparison.md").read_text())
    print(f"membership AUC: {audits['membership']['auc']}")
    print(f"poisoning exposure: clean {audits['poisoning']['clean']:.3f}, attacked "
          f"{audits['poisoning']['attacked']:.3f}, after forget "
          f"{audits['poisoning']['after_forget']:.3f}")
    print(f"{sum(len(p) for p in made.values())} files in {figures}; "
          f"total {time.perf_counter() - t0:.0f} s")
    return 1 if res.n_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
