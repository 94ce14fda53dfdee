"""The ``sisakit`` command line: ``sisakit plugins``, ``sisakit demo``, ``sisakit experiment``,
``sisakit resume``."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, datasets, experiment, metrics, plugins, split
from ._validation import make_out_dir
from .errors import SisakitError
from .sisa import SISA, parameters_equal

logger = logging.getLogger(__name__)


def _cmd_plugins(args: argparse.Namespace) -> int:
    rows = [{**r.as_dict(), "status": "ok"} for r in plugins.list_components()]
    rows += [{"kind": "plugin", "name": f.name, "plugin": f"{f.distribution}:{f.name}",
              "version": f.version, "status": "failed", "error": f.error}
             for f in plugins.failed_plugins()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ("kind", "name", "plugin", "version")
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in cols}
    print("  ".join(k.upper().ljust(widths[k]) for k in cols) + "  STATUS")
    for r in rows:
        status = "ok" if r["status"] == "ok" else f"FAILED ({r['error']})"
        print("  ".join(r[k].ljust(widths[k]) for k in cols) + "  " + status)
    return 0


def run_demo(out: Path, *, seed: int = 0, quiet: bool = False, n_forget_batch: int = 20,
             n_users: int = 2000, n_items: int = 500, epochs: int = 20) -> dict[str, Any]:
    """Train a full model and a SISA ensemble on synthetic data, forget, check exactness.

    Returns the figures as a dict (what ``sisakit demo --json`` prints).
    """
    progress = False if quiet else None
    data = datasets.synthetic(n_users=n_users, n_items=n_items, seed=seed)
    train, test = split.holdout(data, test_fraction=0.2, seed=seed)
    common = dict(model="bpr-mf", sharder="random-user", aggregator="mean", epochs=epochs,
                  seed=seed, progress=progress, device="cpu")

    def quality(model: SISA) -> dict[str, float]:
        m = metrics.evaluate(model, train, test, k=(10,))
        return {"ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"]}

    # Warm torch up first (thread pools, allocator) so the timings compare like with like.
    SISA(n_shards=1, n_slices=1, **{**common, "epochs": 1}).fit(train.take(np.arange(2000)))
    t0 = time.perf_counter()
    full = SISA(n_shards=1, n_slices=1, workdir=out / "full", overwrite=True, **common).fit(train)
    full_seconds = time.perf_counter() - t0
    sisa = SISA(n_shards=5, n_slices=4, workdir=out / "sisa", overwrite=True, **common)
    t0 = time.perf_counter()
    sisa.fit(train)
    sisa_fit_seconds = time.perf_counter() - t0
    before = quality(sisa)
    full_quality = quality(full)

    rng = np.random.default_rng(seed)
    with_data = train.user_ids[np.flatnonzero(train.user_counts() > 0)]
    picked = rng.choice(with_data, size=1 + n_forget_batch, replace=False)
    one, batch = picked[:1].tolist(), picked[1:].tolist()
    rep_one = sisa.forget(users=one)
    rep_batch = sisa.forget(users=batch)
    after = quality(sisa)

    reference = SISA(n_shards=5, n_slices=4, workdir=out / "reference", overwrite=True, **common)
    reference.fit(train.without(users=one + batch))
    exact, n_compared = parameters_equal(sisa, reference)
    all_users = train.user_ids
    same_recs = bool(np.array_equal(sisa.recommend(all_users, k=10),
                                    reference.recommend(all_users, k=10)))
    return {
        "sisakit": __version__,
        "torch": torch.__version__,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch_threads": torch.get_num_threads()},
        "seed": seed,
        "data": {"n_users": train.n_users, "n_items": train.n_items,
                 "train_records": len(train), "test_records": len(test)},
        "config": {"full": {"n_shards": 1, "n_slices": 1}, "sisa": {"n_shards": 5, "n_slices": 4},
                   "model": "bpr-mf", "epochs": epochs},
        "full_retrain_seconds": full_seconds,
        "sisa_fit_seconds": sisa_fit_seconds,
        "full_model": full_quality,
        "before": before,
        "after": after,
        "forget_one": {"users": 1, **rep_one.as_dict()},
        "forget_batch": {"users": len(batch), **rep_batch.as_dict()},
        "speedup": full_seconds / rep_one.seconds if rep_one.seconds > 0 else float("inf"),
        "speedup_batch": full_seconds / rep_batch.seconds if rep_batch.seconds > 0 else None,
        "exact": bool(exact and n_compared > 0),
        "exact_tensors_compared": n_compared,
        "same_recommendations": same_recs,
        "out": str(out),
    }


def _format_demo(r: dict[str, Any]) -> str:
    one, batch = r["forget_one"], r["forget_batch"]
    lines = [
        f"sisakit {r['sisakit']} demo — synthetic data: {r['data']['n_users']} users, "
        f"{r['data']['n_items']} items, {r['data']['train_records']} training records",
        "",
        f"{'':32}{'NDCG@10':>10}{'Recall@10':>11}",
        f"{'full model (S=1, R=1)':32}{r['full_model']['ndcg@10']:>10.4f}"
        f"{r['full_model']['recall@10']:>11.4f}",
        f"{'SISA S=5 R=4, before forget':32}{r['before']['ndcg@10']:>10.4f}"
        f"{r['before']['recall@10']:>11.4f}",
        f"{'SISA S=5 R=4, after forgets':32}{r['after']['ndcg@10']:>10.4f}"
        f"{r['after']['recall@10']:>11.4f}",
        "",
        f"full retrain                    {r['full_retrain_seconds']:8.2f} s",
        f"forget 1 user                   {one['seconds']:8.2f} s   shards retrained "
        f"{one['shards_retrained']}, {one['slices_retrained']} slice(s), work "
        f"{one['work_fraction']:.1%}  ->  speed-up {r['speedup']:.1f}x",
        f"forget {batch['users']} users (one batch)      {batch['seconds']:8.2f} s   shards "
        f"retrained {batch['shards_retrained']}, work {batch['work_fraction']:.1%}",
        "",
        f"exact: {'YES' if r['exact'] else 'NO'} — {r['exact_tensors_compared']} tensors equal bit "
        "for bit to an independent scratch fit on the remaining data (fresh workdir); "
        f"recommendations identical: {r['same_recommendations']}",
        f"runs saved under {r['out']}",
    ]
    return "\n".join(lines)


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.out:
        out = make_out_dir("--out", args.out)
        result = run_demo(out, seed=args.seed, quiet=args.quiet)
        (out / "demo.json").write_text(json.dumps(result, indent=2))
    else:
        with tempfile.TemporaryDirectory(prefix="sisakit-demo-") as tmp:
            result = run_demo(Path(tmp), seed=args.seed, quiet=args.quiet)
            result["out"] = None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        if result["out"] is None:
            result["out"] = "(a temporary directory; pass --out DIR to keep them)"
        print(_format_demo(result))
    return 0 if result["exact"] else 1


def _cmd_experiment(args: argparse.Namespace) -> int:
    out = make_out_dir("--out", args.out or f"{Path(args.config).stem}-results")
    res = experiment.run(args.config, out, resume=not args.no_resume,
                         progress=False if args.quiet else None)
    print(f"{res.n_cells} cell(s): {res.n_ran} ran, {res.n_skipped} skipped (finished before), "
          f"{res.n_failed} failed; {len(res.rows)} result row(s)")
    print(f"results: {res.results_csv}\nrun record: {res.run_json}")
    if args.plots:
        from . import plots

        made = plots.from_results(res.results_csv, out / "plots")
        print(f"plots: {len(made)} figure(s)/table(s) in {out / 'plots'}")
    return 1 if res.n_failed else 0


def _cmd_resume(args: argparse.Namespace) -> int:
    progress = False if args.json else None
    # First an interrupted fit (if any), then the pending deletion requests.
    fitted = SISA.finish_fit(Path(args.run), device=args.device, progress=progress,
                             lock_timeout=args.lock_timeout)
    fit = None if fitted is None else dict(fitted.fit_resumed or {})
    model = SISA.load(args.run, device=args.device, progress=progress, resume=False,
                      lock_timeout=args.lock_timeout)
    done = model.resume()
    left = model.pending_requests()
    if args.json:
        print(json.dumps({"run": str(args.run), "fit": fit, "finished": done, "pending": left},
                         indent=2))
        return 1 if left or any(d["state"] != "applied" for d in done) else 0
    if fit is not None:
        print(f"{args.run}: finished the interrupted fit (generation {fit['generation']}): "
              f"{fit['reused']} slice checkpoint(s) reused, {fit['trained']} trained")
    if not done:
        print(f"{args.run}: no pending deletion requests")
    else:
        for d in done:
            if d["state"] == "applied":
                rep = d.get("report") or {}
                print(f"{d['request']}  applied (generation {d['generation']}): "
                      f"{rep.get('records_removed', 0)} record(s) removed, shards retrained "
                      f"{rep.get('shards_retrained', [])}")
            else:
                print(f"{d['request']}  FAILED ({d['error']}): submit the request again")
    return 1 if left or any(d["state"] != "applied" for d in done) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sisakit", description="Machine unlearning for recommender systems.")
    parser.add_argument("--version", action="version", version=f"sisakit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plugins", help="list every registered component")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=_cmd_plugins)
    d = sub.add_parser("demo", help="train, forget and check exactness on synthetic data")
    d.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    d.add_argument("--out", metavar="DIR", help="keep the run directories and demo.json here")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    d.set_defaults(func=_cmd_demo)
    e = sub.add_parser("experiment", help="run a sweep from a TOML config; write results.csv")
    e.add_argument("config", metavar="CONFIG", help="experiment config (TOML)")
    e.add_argument("--out", metavar="DIR",
                   help="output folder (default: ./<config name>-results)")
    e.add_argument("--no-resume", action="store_true",
                   help="re-run every cell instead of skipping the finished ones")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.add_argument("--plots", action="store_true",
                   help="also render every plot the results support into DIR/plots")
    e.set_defaults(func=_cmd_experiment)
    r = sub.add_parser("resume", help="finish the fit and the deletion requests an interrupted "
                       "process left unfinished")
    r.add_argument("run", metavar="RUN", help="run directory (a SISA workdir)")
    r.add_argument("--json", action="store_true", help="print what was finished as JSON")
    r.add_argument("--device", default="auto", help="device for retraining (default auto)")
    r.add_argument("--lock-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="wait this long for another process's run lock (default 60)")
    r.set_defaults(func=_cmd_resume)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sisakit`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except SisakitError as exc:
        print(f"sisakit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
