"""PoT-AU attribute unlearning on MovieLens: attacker AUC and NDCG@10 before and after.

For each dataset, model and seed: per-user 80/20 holdout, train the model, evaluate NDCG@10,
attack gender (2 classes) and age group (<25 / 25-34 / 35+) with ``xgboost-attribute`` and
``mlp-attribute`` (balanced classes, 5-fold × 3 repeats), apply ``pot-au`` for that attribute and
measure again. Also a noise baseline: Gaussian noise on the user embeddings scaled to cost the
same NDCG@10 as PoT-AU.

    python benchmarks/bench_potau.py --datasets ml-100k --seeds 0 1 2
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
from sisakit import metrics, plugins

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sisa import HERE, load_dataset, machine


def age_group(age: np.ndarray) -> np.ndarray:
    return np.where(age < 25, 0, np.where(age < 35, 1, 2))


def quality(model, train, test, protocol: str, seed: int) -> float:
    """NDCG@10: full ranking, or against 99 sampled negatives for leave-one-out."""
    if protocol == "loo":
        return metrics.evaluate_sampled(model, train, test, k=(10,), seed=seed)["ndcg@10"]
    return metrics.evaluate(model, train, test, k=(10,))["ndcg@10"]


def attack(emb: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, float]:
    return {name: plugins.build("attacker", name, seed=seed).evaluate(emb, labels).auc
            for name in ("xgboost-attribute", "mlp-attribute")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["ml-100k"])
    p.add_argument("--models", nargs="+", default=["bpr-mf"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--protocol", choices=["full", "loo"], default="full",
                   help="full: per-user 80/20 holdout, full ranking; loo: leave-last-out with 99 "
                        "sampled negatives (the paper's protocol)")
    p.add_argument("--adv-weight", type=float, default=1.0,
                   help="confusion weight of the in-training adversarial baseline (0: skip)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_potau.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("bench_potau")
    torch.set_num_threads(2)
    rows: list[dict] = []
    info = machine()

    def save(rows: list[dict]) -> None:  # after every row, so a long run keeps what it measured
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"benchmark": "bench_potau", "config": vars(args),
                                   "machine": info, "rows": rows,
                                   "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                  indent=2))

    for name in args.datasets:
        data = load_dataset(name)
        attributes = {"gender": np.asarray(data.user_attributes["gender"]),
                      "age_group": age_group(np.asarray(data.user_attributes["age"]))}
        for model_name in args.models:
            for seed in args.seeds:
                if args.protocol == "loo":
                    train, test = sisakit.split.leave_last_out(data)
                else:
                    train, test = sisakit.split.holdout(data, test_fraction=0.2, seed=seed)
                model = plugins.build("model", model_name, device="cpu")
                if model_name == "ncf":  # full ranking runs the network on every pair
                    model = plugins.build("model", model_name, device="cpu", score_batch=64)
                model.fit(train, epochs=args.epochs, seed=seed)
                ndcg0 = quality(model, train, test, args.protocol, seed)
                emb0 = model.user_embeddings().detach().numpy()
                for attr, labels in attributes.items():
                    before = attack(emb0, labels, seed)
                    t0 = time.perf_counter()
                    res = plugins.build("unlearner", "pot-au", steps=args.steps, seed=seed,
                                        attackers=()).unlearn(
                        model, sisakit.AttributeRequest(attr, labels=labels))
                    secs = time.perf_counter() - t0
                    ndcg1 = quality(res.model, train, test, args.protocol, seed)
                    emb1 = res.model.user_embeddings().detach().numpy()
                    after = attack(emb1, labels, seed)
                    # Noise baseline at the same NDCG cost (bisection on the noise scale).
                    target = ndcg1
                    lo, hi, noise_row = 0.0, 4.0 * float(emb0.std()), None
                    for _ in range(8):
                        mid = (lo + hi) / 2
                        noisy = model.copy()
                        g = torch.Generator().manual_seed(seed)
                        noisy.set_user_embeddings(
                            torch.arange(data.n_users),
                            torch.from_numpy(emb0) + mid * torch.randn(emb0.shape, generator=g))
                        nd = quality(noisy, train, test, args.protocol, seed)
                        noise_row = (mid, nd, noisy)
                        lo, hi = (mid, hi) if nd > target else (lo, mid)
                    mid, nd, noisy = noise_row
                    noise = attack(noisy.user_embeddings().detach().numpy(), labels, seed)
                    adversarial = None
                    if model_name == "bpr-mf" and args.adv_weight > 0:
                        from sisakit.baselines import AdversarialBPR

                        adv = AdversarialBPR(adv_weight=args.adv_weight, device="cpu").fit(
                            train, labels, epochs=args.epochs, seed=seed)
                        adversarial = {
                            "adv_weight": args.adv_weight,
                            "ndcg@10": quality(adv, train, test, args.protocol, seed),
                            "auc": attack(adv.user_embeddings().numpy(), labels, seed)}
                    row = {"dataset": name, "model": model_name, "seed": seed, "attribute": attr,
                           "adversarial_baseline": adversarial,
                           "ndcg@10_before": ndcg0, "ndcg@10_after": ndcg1,
                           "ndcg_drop_relative": (ndcg0 - ndcg1) / ndcg0,
                           "auc_before": before, "auc_after": after, "unlearn_seconds": secs,
                           "noise_baseline": {"scale": mid, "ndcg@10": nd, "auc": noise}}
                    rows.append(row)
                    save(rows)
                    log.info("%s %s seed %d %s: ndcg %.4f->%.4f auc %s -> %s (noise %s) %.1fs",
                             name, model_name, seed, attr, ndcg0, ndcg1, before, after, noise,
                             secs)
    save(rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
