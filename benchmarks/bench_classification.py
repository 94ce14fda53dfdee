"""Class-level SISA on scikit-learn's digits: forgetting a class under high/low/no leakage.

For every number of classes (digit subsets 0..C-1), leakage level and seed, fits SISA with the
``mlp-classifier`` model and the ``class-dominant`` sharder (``--shards-per-class`` shards per
class, so classes repeat as dominant), forgets one whole class and reports per-class and overall
test accuracy in five situations (before; affected shards dropped; affected shards retrained;
one model on everything; a full retrain without the class), the shards and slices retrained and
the seconds spent (see :func:`sisakit.classification.class_forgetting_report`).

The JSON file is rewritten after every run and is resumable: runs already in it (same config)
are skipped.

    python benchmarks/bench_classification.py            # 3 and 5 classes x 3 leakages x 3 seeds
    python benchmarks/bench_classification.py --quick    # smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from sisakit import classification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sisa import machine

HERE = Path(__file__).resolve().parent
SITUATIONS = ("before", "dropped", "retrained", "single_model", "full_retrain")


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v == v]  # NaN (no shard votes) is left out of the mean
    return round(statistics.fmean(values), 4) if values else None


def summarise(runs: dict[str, dict], classes: list[int], leakages: list[str]) -> list[dict]:
    rows = []
    for n_classes in classes:
        for leakage in leakages:
            group = [r for r in runs.values()
                     if r["n_classes"] == n_classes and r["leakage"] == leakage]
            if not group:
                continue
            forget = group[0]["forget"]
            row: dict = {"n_classes": n_classes, "leakage": leakage, "seeds": len(group),
                         "n_shards": group[0]["n_shards"]}
            for s in SITUATIONS:
                accs = [r["accuracy"][s] for r in group]
                row[f"acc_{s}"] = _mean([a["overall"] for a in accs])
                row[f"acc_forgotten_{s}"] = _mean([a["per_class"][str(forget)] for a in accs])
                row[f"acc_others_{s}"] = _mean([
                    statistics.fmean(v for k, v in a["per_class"].items() if k != str(forget))
                    for a in accs])
            row["shards_retrained"] = _mean([len(r["shards_retrained"]) for r in group])
            row["slices_retrained"] = _mean([r["slices_retrained"] for r in group])
            row["work_fraction"] = _mean([r["work_fraction"] for r in group])
            row["forget_seconds"] = _mean([r["forget_seconds"] for r in group])
            row["full_retrain_seconds"] = _mean([r["full_retrain_seconds"] for r in group])
            row["fit_seconds"] = _mean([r["fit_seconds"] for r in group])
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, nargs="+", default=[3, 5])
    p.add_argument("--leakage", nargs="+", default=["high", "low", "none"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--forget", type=int, default=2, help="the digit (class) to forget")
    p.add_argument("--shards-per-class", type=int, default=2)
    p.add_argument("--slices", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--leak-fraction", type=float, default=0.1)
    p.add_argument("--hidden", type=int, nargs="*", default=[64])
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="small smoke configuration")
    p.add_argument("--out", default=str(HERE / "results" / "bench_classification.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.classes, args.seeds, args.epochs = [3], [0], 3
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("bench_classification")

    config = {"forget": args.forget, "shards_per_class": args.shards_per_class,
              "n_slices": args.slices, "epochs": args.epochs, "leak_fraction": args.leak_fraction,
              "model": "mlp-classifier", "model_params": {"hidden": args.hidden, "lr": 0.01,
                                                          "batch_size": 64},
              "device": args.device, "test_size": 0.25, "dataset": "sklearn load_digits"}
    out = Path(args.out)
    runs: dict[str, dict] = {}
    if out.is_file():
        old = json.loads(out.read_text())
        if old.get("config") == config:
            runs = old.get("runs", {})
            log.info("resuming: %d runs already in %s", len(runs), out)
        else:
            log.info("%s holds another config; starting over", out)

    def write() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        result = {"benchmark": "bench_classification", "config": config, "machine": machine(),
                  "summary": summarise(runs, args.classes, args.leakage), "runs": runs}
        out.write_text(json.dumps(result, indent=1, default=str))

    # Warm-up (torch start-up, allocator) so the first timed run is not inflated; not recorded.
    classification.class_forgetting_report(
        classification.load_digits_data(3, seed=0), args.forget, n_shards=3, n_slices=1, epochs=1,
        model_params={"hidden": (8,)}, device=args.device, progress=False)
    t_all = time.perf_counter()
    for n_classes in args.classes:
        for seed in args.seeds:
            data = classification.load_digits_data(n_classes, seed=seed)
            for leakage in args.leakage:
                key = f"c{n_classes}-{leakage}-s{seed}"
                if key in runs:
                    continue
                t0 = time.perf_counter()
                report = classification.class_forgetting_report(
                    data, args.forget, n_shards=args.shards_per_class * n_classes,
                    n_slices=args.slices, epochs=args.epochs, seed=seed, leakage=leakage,
                    leak_fraction=args.leak_fraction,
                    model_params={**config["model_params"], "hidden": tuple(args.hidden)},
                    device=args.device, progress=False)
                report.update(n_classes=n_classes, seed=seed,
                              wall_seconds=time.perf_counter() - t0)
                runs[key] = json.loads(json.dumps(report))  # JSON keys, as when resumed
                acc = report["accuracy"]
                log.info("%s: acc before %.3f retrained %.3f full %.3f; forgotten class %.3f; "
                         "retrained %d/%d shards in %.2fs (full retrain %.2fs)", key,
                         acc["before"]["overall"], acc["retrained"]["overall"],
                         acc["full_retrain"]["overall"],
                         acc["retrained"]["per_class"][args.forget],
                         len(report["shards_retrained"]), report["n_shards"],
                         report["forget_seconds"], report["full_retrain_seconds"])
                write()
    write()
    log.info("done in %.1fs; wrote %s", time.perf_counter() - t_all, out)
    for row in summarise(runs, args.classes, args.leakage):
        log.info("%s", row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
