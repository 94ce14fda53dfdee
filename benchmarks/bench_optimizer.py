"""Cost of one BPR optimizer step over ML-1M-sized embedding tables, three ways.

* ``adam``: autograd + plain ``torch.optim.Adam`` over dense embedding tables (updates every row);
* ``adam-fused``: the same with ``fused=True``;
* ``sisakit``: ``bpr-mf``'s closed-form gradient with row-sparse Adam (only the batch's rows).

    python benchmarks/bench_optimizer.py [--threads 1] [--out benchmarks/results/bench_optimizer.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import sisakit
from sisakit.models import BPRMF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sisa import machine

HERE = Path(__file__).resolve().parent


def time_steps(step, n: int, warmup: int = 200) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=6040)
    p.add_argument("--items", type=int, default=3706)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results" / "bench_optimizer.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    nu, ni, d, bs = args.users, args.items, args.factors, args.batch_size
    # A fresh batch every step, as in training (one batch over and over drives the logits to
    # extremes, and denormal gradients would make every variant look slow).
    n_batches = args.steps + 5
    batches = [(torch.randint(nu, (bs,), generator=g), torch.randint(ni, (bs,), generator=g),
                torch.randint(ni, (bs,), generator=g)) for _ in range(n_batches)]
    cursor = {"k": 0}

    def next_batch():
        cursor["k"] = (cursor["k"] + 1) % n_batches
        return batches[cursor["k"]]

    results = {}
    for name, fused in (("adam", False), ("adam-fused", True)):
        P = torch.nn.Parameter(torch.randn(nu, d, generator=g) * 0.1)
        Q = torch.nn.Parameter(torch.randn(ni, d, generator=g) * 0.1)
        opt = torch.optim.Adam([P, Q], lr=0.01, fused=fused)

        def step(P=P, Q=Q, opt=opt):
            bu, bi, bj = next_batch()
            opt.zero_grad(set_to_none=True)
            x = (P[bu] * (Q[bi] - Q[bj])).sum(1)
            loss = -torch.nn.functional.logsigmoid(x).mean()
            loss.backward()
            opt.step()

        results[name] = time_steps(step, args.steps)

    space = sisakit.Interactions.from_arrays(
        np.arange(nu) % nu, np.arange(nu) % ni, user_ids=np.arange(nu), item_ids=np.arange(ni))
    model = BPRMF(factors=d, batch_size=bs, device="cpu")
    model.setup(space, seed=0)
    model._add_users(torch.arange(nu))  # every user trains, as in the unsharded model
    def sisakit_step():
        bu, bi, bj = next_batch()
        model._step(bu, bi + nu, bj + nu)

    results["sisakit"] = time_steps(sisakit_step, args.steps)

    out = {
        "benchmark": "bench_optimizer",
        "config": vars(args),
        "ms_per_step": results,
        "machine": dict(machine(), threads=torch.get_num_threads()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for name, ms in results.items():
        print(f"{name:12s} {ms:8.2f} ms/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
