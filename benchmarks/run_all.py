"""Run every benchmark of the project, resume where results are current, render RESULTS.md.

    python benchmarks/run_all.py                  # run what is missing or stale, then render
    python benchmarks/run_all.py --list           # every benchmark with its state
    python benchmarks/run_all.py --only sisa ials # some of them (fresh ones still skipped)
    python benchmarks/run_all.py --force          # rerun even the fresh ones
    python benchmarks/run_all.py --render-only    # rewrite RESULTS.md from the JSON there is
    python benchmarks/run_all.py --smoke --out-dir /tmp/bench  # seconds-long smoke configs

Each benchmark of ``REGISTRY`` is one JSON file under ``benchmarks/results/`` (or ``--out-dir``)
written by one or more runs of its script (``--out`` is always passed). Runs are subprocesses of
this interpreter; their output goes to the console and to ``<out-dir>/logs/<name>.log``. A failed
benchmark is recorded and the next one starts; the exit status is 1 if any failed.

**Resume rule.** A result is *fresh* when the code it measures has not changed since it was
measured, *stale* otherwise, *missing* when there is no JSON. The code it measures is its script,
``benchmarks/bench_sisa.py`` (the helpers every script imports: data loading, ``machine()``) and
``src/sisakit/**/*.py``. Every JSON records the commit it was measured at (``machine.commit``);
the result is stale when

1. it records no commit, or one that is not in this repository's history, or
2. a commit after the recorded one (``git rev-list <recorded>..HEAD -- <paths>``) touches those
   paths, or
3. one of those files has uncommitted changes and was modified after the JSON was written.

Outside a git checkout the rule falls back to file times: stale when any of those files is newer
than the JSON. Commits are used rather than file times because a clone or checkout sets every
file's time to "now", which would make every result look stale (or fresh) at random.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
#: Scripts every benchmark imports helpers from (counted as measured code).
SHARED = ("bench_sisa.py",)
#: The library: a git pathspec and the equivalent glob for the file-time fallback.
LIBRARY_PATHSPEC = ":(glob)src/sisakit/**/*.py"
LIBRARY_GLOB = ("src/sisakit", "**/*.py")


@dataclass(frozen=True)
class Benchmark:
    """One named benchmark: the runs that produce its JSON and how to render it."""

    name: str
    script: str
    output: str
    runs: tuple[tuple[str, ...], ...]
    render: Callable[[dict], str]
    what: str
    #: Seconds-long configuration for ``--smoke`` (None: needs the real data, not smoke-tested).
    smoke: tuple[tuple[str, ...], ...] | None = None
    shared: tuple[str, ...] = field(default=SHARED)

    def measured_paths(self) -> list[str]:
        """Paths of the code this benchmark measures, relative to the repository root."""
        return [f"benchmarks/{self.script}", *(f"benchmarks/{s}" for s in self.shared
                                               if s != self.script)]


# --------------------------------------------------------------------------------------------
# Formatting helpers


def _f(x, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _pm(mean, std, digits: int = 3) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" if not std else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _x(ratio) -> str:
    return "–" if ratio is None else f"{ratio:.1f}×"


def _mean_std(values) -> tuple[float | None, float]:
    values = [v for v in values if v is not None]
    if not values:
        return None, 0.0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _code(s) -> str:
    return f"`{s}`"


# --------------------------------------------------------------------------------------------
# Render functions: JSON -> Markdown body of the section (the frame adds title, machine, date)


def render_sisa(d: dict) -> str:
    c, full = d["config"], d["unsharded"]
    rows = [[1, 1, _f(full["ndcg@10"]), _f(full["recall@20"]), _f(full["eval_seconds"], 2),
             f"{full['forget_median_seconds']:.3f} (full retrain)", "1", "1", ""]]
    for r in d["sisa"]:
        rows.append([r["n_shards"], r["n_slices"], _f(r["ndcg@10"]), _f(r["recall@20"]),
                     _f(r["eval_seconds"], 2), f"{r['forget_median_seconds']:.3f}",
                     _x(r["speedup"]), _x(r["analytic_bound"]),
                     f"{100 * r['fraction_of_bound']:.0f}%"])
    out = [f"{d.get('dataset', '?')}, BPR-MF {c['factors']} factors, {c['epochs']} epochs, batch "
           f"{c['batch_size']}, lr {c['lr']}, {c['n_forget']} single-user forgets per configuration; "
           "speed-up = median unsharded retrain on the remaining data ÷ median forget, same run.",
           "",
           _table(["S", "R", "NDCG@10", "Recall@20", "eval s", "forget s", "speed-up",
                   "analytic bound", "% of bound"], rows)]
    imp = d.get("implicit_bpr") or []
    if imp:
        rows = [[f"`implicit` {r.get('version', '')} BPR, {r['iterations']} iterations",
                 _f(r["ndcg@10"]), _f(r["recall@20"]), _f(r["fit_seconds"], 2),
                 _x(r["fit_seconds"] / full["fit_seconds"])] for r in imp]
        rows.insert(0, ["sisakit `bpr-mf` (unsharded)", _f(full["ndcg@10"]), _f(full["recall@20"]),
                        _f(full["fit_seconds"], 2), "1.0×"])
        out += ["", _table(["model", "NDCG@10", "Recall@20", "fit s", "fit time ÷ sisakit's"], rows)]
    return "\n".join(out)


def render_ials(d: dict) -> str:
    s, c = d["summary_mean_std"], d["config"]
    rows = []
    for key, label in (("sisakit_ials", "sisakit `ials`"), ("implicit_als", "`implicit` ALS")):
        if key in s:
            m = s[key]
            rows.append([label, _pm(*m["ndcg@10"], digits=4), _pm(*m["recall@20"], digits=4),
                         _pm(*m["fit_seconds"], digits=2)])
    ratio = None
    if "implicit_als" in s:
        ratio = s["sisakit_ials"]["fit_seconds"][0] / s["implicit_als"]["fit_seconds"][0]
    out = [f"{d.get('dataset', '?')}, {c['factors']} factors, reg {c['reg']}, alpha {c['alpha']}, "
           f"{c['iterations']} iterations, {c['threads']} threads, seeds {c['seeds']} (mean ± std, "
           f"median of {c['repeats']} fits per seed).", "",
           _table(["model", "NDCG@10", "Recall@20", "fit s"], rows)]
    if ratio is not None:
        out += ["", f"Fit time sisakit ÷ implicit: {ratio:.2f}× (same run)."]
    full = d["unsharded"]
    rows = [[r["n_shards"], r["n_slices"], _f(r["ndcg@10"]), _f(r["recall@20"]),
             f"{r['forget_median_seconds']:.3f}", _x(r["speedup"])] for r in d["sisa"]]
    out += ["", f"SISA with `ials` (seed {d.get('sisa_seed')}); unsharded NDCG@10 "
            f"{_f(full['ndcg@10'])}, retrain median {full['forget_median_seconds']:.3f} s:", "",
            _table(["S", "R", "NDCG@10", "Recall@20", "forget s", "speed-up"], rows)]
    return "\n".join(out)


def render_optimizer(d: dict) -> str:
    c, ms = d["config"], d["ms_per_step"]
    labels = {"adam": "autograd + `torch.optim.Adam`", "adam-fused": "autograd + Adam `fused=True`",
              "sisakit": "`bpr-mf` closed-form step"}
    base = ms.get("adam")
    rows = [[labels.get(k, k), f"{v:.2f}", _x(base / v) if base else "–"] for k, v in ms.items()]
    return "\n".join([
        f"One BPR step, {c['users']:,} users × {c['items']:,} items × {c['factors']} factors, batch "
        f"{c['batch_size']}, {c['threads']} thread(s), median of {c['steps']} steps.", "",
        _table(["variant", "ms / step", "speed-up vs Adam"], rows)])


def render_potau(d: dict) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in d["rows"]:
        groups.setdefault((r["dataset"], r["model"], r["attribute"]), []).append(r)
    rows = []
    for (ds, model, attr), rs in groups.items():
        def ms(get, rs=rs):
            return _mean_std([get(r) for r in rs])

        def auc(att, rs=rs):
            b = _pm(*_mean_std([r["auc_before"].get(att) for r in rs]))
            a = _pm(*_mean_std([r["auc_after"].get(att) for r in rs]))
            return f"{b} → {a}"

        adv = [r["adversarial_baseline"] for r in rs if r.get("adversarial_baseline")]
        adv_cell = "–"
        if adv:
            adv_cell = (f"{_f(_mean_std([a['ndcg@10'] for a in adv])[0], 3)} / "
                        f"{_f(_mean_std([a['auc'].get('xgboost-attribute') for a in adv])[0], 3)} / "
                        f"{_f(_mean_std([a['auc'].get('mlp-attribute') for a in adv])[0], 3)}")
        rows.append([ds, _code(model), attr, len(rs),
                     f"{_f(ms(lambda r: r['ndcg@10_before'])[0], 3)} → "
                     f"{_f(ms(lambda r: r['ndcg@10_after'])[0], 3)}",
                     auc("xgboost-attribute"), auc("mlp-attribute"),
                     _f(ms(lambda r: r["unlearn_seconds"])[0], 1), adv_cell])
    c = d["config"]
    proto = c.get("protocol", "full")
    return "\n".join([
        f"{c['epochs']} epochs, {c['steps']} PoT-AU steps, protocol `{proto}`, seeds {c['seeds']} "
        "(mean ± std over seeds); AUC of the attribute attacker before → after the edit.", "",
        _table(["data", "model", "attribute", "seeds", "NDCG@10 before → after",
                "xgboost AUC", "MLP AUC", "edit s", "adversarial baseline NDCG / xgb / MLP AUC"],
               rows)])


def _sharding_rows(d: dict) -> tuple[list[dict], dict]:
    """Summary rows and, per summary key, the median aggregator refit seconds of its cells."""
    refit: dict[tuple, list[float]] = {}
    for cell in d.get("cells", []):
        if "aggregator_seconds" in cell:
            key = (cell["model"], cell["n_shards"], cell["n_slices"], cell["sharder"],
                   cell["aggregator"])
            refit.setdefault(key, []).extend(cell["aggregator_seconds"])
    return d.get("summary", []), {k: statistics.median(v) for k, v in refit.items() if v}


def render_sharding_grid(d: dict) -> str:
    summary, _ = _sharding_rows(d)
    failed = sum("error" in c for c in d.get("cells", []))
    out = [f"{len(d.get('cells', []))} cells ({failed} failed); NDCG@10, mean ± std over seeds."]
    for full in (r for r in summary if r["n_shards"] == 1):
        out.append(f"Unsharded `{full['model']}` ({full['dataset']}, {full['n_seeds']} seeds): "
                   f"NDCG@10 {_pm(full['ndcg@10'], full['ndcg@10_std'])}, low-activity "
                   f"{_f(full['ndcg@10_low_activity'], 3)}.")
    for model in sorted({r["model"] for r in summary}):
        for s in sorted({r["n_shards"] for r in summary if r["n_shards"] > 1}):
            cells = [r for r in summary if r["model"] == model and r["n_shards"] == s]
            aggs = list(dict.fromkeys(r["aggregator"] for r in cells))
            sharders = list(dict.fromkeys(r["sharder"] for r in cells))
            by = {(r["sharder"], r["aggregator"]): r for r in cells}
            rows = [[_code(sh)] + [_pm(by[sh, a]["ndcg@10"], by[sh, a]["ndcg@10_std"])
                                   if (sh, a) in by else "–" for a in aggs] for sh in sharders]
            out += ["", f"`{model}`, S={s}:", "", _table(["sharder", *aggs], rows)]
    return "\n".join(out)


def render_sharding(d: dict) -> str:
    summary, refit = _sharding_rows(d)
    base = {(r["model"]): r for r in summary if r["n_shards"] == 1 and r["n_slices"] == 1}
    rows = []
    for r in summary:
        key = (r["model"], r["n_shards"], r["n_slices"], r["sharder"], r["aggregator"])
        b = base.get(r["model"])
        rel = f" ({100 * r['ndcg@10'] / b['ndcg@10']:.1f}%)" if b and r["n_shards"] > 1 else ""
        forget = r.get("forget_median_seconds")
        speed = "–"
        if forget and b and b.get("forget_median_seconds"):
            speed = _x(b["forget_median_seconds"] / forget)
        sharded = r["n_shards"] > 1
        rows.append([_code(r["model"]), r["n_shards"], r["n_slices"],
                     _code(r["sharder"]) if sharded else "–",
                     _code(r["aggregator"]) if sharded else "–", r["n_seeds"],
                     _pm(r["ndcg@10"], r["ndcg@10_std"], 4) + rel,
                     _pm(r["recall@20"], r["recall@20_std"], 4), _f(r["ndcg@10_low_activity"]),
                     _f(r["fit_seconds"], 1),
                     "–" if forget is None else f"{forget:.3f}"
                     + (f" ({refit[key]:.3f})" if key in refit and sharded else ""), speed])
    failed = sum("error" in c for c in d.get("cells", []))
    note = (f"{len(d.get('cells', []))} cells ({failed} failed); % = of the unsharded model's NDCG@10 "
            "(S=1, R=1, same model); forget s = median single-user forget (aggregator refit in "
            "brackets; at S=1 a full retrain); speed-up = unsharded ÷ sharded forget, same run.")
    return "\n".join([note, "", _table(
        ["model", "S", "R", "sharder", "aggregator", "seeds", "NDCG@10", "Recall@20",
         "low-activity NDCG@10", "fit s", "forget s", "speed-up"], rows)])


def render_aggregators(d: dict) -> str:
    res = d["results"]
    rows = []
    for key, r in res.items():
        sharder, _, agg = key.partition(" / ")
        rows.append([_code(sharder) if agg else key, _code(agg) if agg else "–", _f(r["ndcg@10"]),
                     _f(r["recall@20"]), _f(r["fit_seconds"], 1),
                     _f(r.get("aggregator_fit_seconds"), 2)])
    return "\n".join([
        f"{d.get('dataset')}, `{d.get('model')}` {d.get('factors')} factors, {d.get('epochs')} "
        f"epochs, S={d.get('n_shards')}, R={d.get('n_slices')}, seed {d.get('seed')}.", "",
        _table(["sharder", "aggregator", "NDCG@10", "Recall@20", "fit s", "aggregator fit s"],
               rows)])


def render_classification(d: dict) -> str:
    c = d["config"]
    rows = [[r["n_classes"], r["leakage"], r["seeds"],
             f"{r['acc_before']:.3f} / {r['acc_retrained']:.3f} / {r['acc_full_retrain']:.3f}",
             f"{r['acc_forgotten_retrained']:.3f}", f"{r['shards_retrained']:.3g} of {r['n_shards']}",
             f"{r['work_fraction']:.2f}", f"{r['forget_seconds']:.2f}",
             _x(r["full_retrain_seconds"] / r["forget_seconds"]) if r["forget_seconds"] else "–"]
            for r in d["summary"]]
    return "\n".join([
        f"{c.get('dataset')}, forget class {c['forget']}, {c['shards_per_class']} shards per class, "
        f"{c['n_slices']} slices, {c['epochs']} epochs, leak fraction {c['leak_fraction']} "
        "(means over seeds).", "",
        _table(["classes", "leakage", "seeds",
                "accuracy before / after retraining / full retrain without the class",
                "forgotten-class accuracy after", "shards retrained", "work fraction", "forget s",
                "speed-up vs full retrain"], rows)])


def render_influence(d: dict) -> str:
    rows = []
    for name, v in d["validation"].items():
        c, rho = v["config"], v["spearman_vs_effect_jaccard"]
        rows.append([name, c["n_forgotten"], c["n_shards"], c["n_slices"], _f(rho["estimate"], 3),
                     _f(rho.get("activity"), 3), _f(rho.get("work_fraction"), 3),
                     _f(rho.get("reach"), 3), _f(v["median_seconds"]["estimate_one_user"], 3),
                     _f(v["median_seconds"]["forget"], 3)])
    out = ["Spearman ρ against the exact effect of forgetting each user alone (mean 1 − Jaccard@10 "
           "over the remaining users).", "",
           _table(["data", "users", "S", "R", "ρ estimate", "ρ activity", "ρ work fraction",
                   "ρ reach", "estimate s", "forget s"], rows)]
    t = d.get("compare_timing")
    if t:
        out += ["", f"Jaccard@{t['k']} for all {t['n_users']:,} users of {t['data']}: "
                f"{t['jaccard_seconds']:.4f} s median (max {t['jaccard_max_seconds']:.3f} s); all "
                f"built-in measures {t['all_builtin_seconds']:.3f} s."]
    return "\n".join(out)


def render_membership(d: dict) -> str:
    rows = []
    for r in d["runs"]:
        u, auc = r["user_level"], r["auc"]
        inter = r.get("interaction_level") or {}
        rows.append([r["n_shards"], r["n_slices"], _f(r["ndcg@10"]),
                     _f(u["all_members"]["auc"]) if "all_members" in u else "–",
                     f"{auc['original']:.4f} / {auc['unlearned']:.4f} / {auc['gold']:.4f}",
                     "yes" if u.get("identical_unlearned_gold") else "no",
                     _f(inter.get("auc"), 3), _f(u.get("forget_seconds"), 2)])
    c = d["config"]
    return "\n".join([
        f"{d.get('dataset')}, `bpr-mf` {c['factors']} factors, {c['epochs']} epochs, lists of "
        f"k={c['k']}, {c['n_forget']} users forgotten.", "",
        _table(["S", "R", "NDCG@10", "AUC (all members)", "AUC forgotten: original / unlearned / gold",
                "unlearned = gold", "interaction-level AUC", "forget s"], rows)])


def render_poisoning(d: dict) -> str:
    rows = []
    for r in d["runs"]:
        e, a = r["exposure"], r["attack"]
        rows.append([r["n_shards"], r["n_slices"], a["n_fake"], f"{100 * a['fake_share_of_users']:.1f}%",
                     f"{100 * e['clean']:.2f}% → {100 * e['attacked']:.2f}% → "
                     f"{100 * e['after_forget']:.2f}%", f"{r['gain_pp']:+.2f}",
                     "yes" if r.get("after_forget_equals_reference") else "no",
                     _f(r["forget_seconds"], 2), _f(r.get("retrain_same_S_seconds"), 2),
                     _x(r.get("speedup_vs_same_S"))])
    t, c = d["target"], d["config"]
    return "\n".join([
        f"{d.get('dataset')}, target item {t['item']} ({t['quantile']:.0%} popularity quantile, "
        f"audience {t['audience']:,}), `{c['filler']}` fillers × {c['n_filler']}, k={c['k']}.", "",
        _table(["S", "R", "fake users", "share", "exposure clean → attacked → after forget",
                "gain pp", "after forget = reference", "forget s", "retrain s",
                "speed-up vs retrain"], rows)])


def render_executors(d: dict) -> str:
    rows = []
    for r in d["results"]:
        start = (r.get("cluster_start_seconds") or 0.0) + (r.get("worker_start_seconds") or 0.0)
        rows.append([f"`{r['executor']}`", _f(r["fit_seconds"], 2), _x(r["fit_speedup_vs_serial"]),
                     _f(r["forget_seconds"], 2), _x(r["forget_speedup_vs_serial"]),
                     _f(start, 1) if start else "–"])
    c = d["config"]
    same = "yes" if d.get("bitwise_identical_fit") and d.get("bitwise_identical_after_forget") else "no"
    return "\n".join([
        f"{d.get('dataset')}, `bpr-mf` {c.get('factors')} factors, {c.get('epochs')} epochs, "
        f"S={c.get('n_shards')}, R={c.get('n_slices')}, {c.get('workers')} workers, one thread per "
        f"shard; parameters bit-for-bit identical across executors: {same}.", "",
        _table(["executor", "fit s", "fit speed-up", "forget s", "forget speed-up",
                "start-up s (cluster + worker imports)"], rows), *_executors_extra(d)])


def _executors_extra(d: dict) -> list[str]:
    """Steady-state config and the machine's 2-process ceiling (newer bench_executors JSON)."""
    out = []
    long = (d.get("configs") or {}).get("long")
    if long:
        out += ["", f"Steady state ({long['epochs']} epochs, median fit s): " + ", ".join(
            f"`{r['executor']}` {_f(r['fit_seconds'], 2)} ({_x(r['fit_speedup_vs_serial'])})"
            for r in long["results"]) + "."]
    c = d.get("scaling_ceiling")
    if c:
        out += ["", f"2-process scaling ceiling measured in the same run: "
                f"{_x(c['two_process_speedup_ceiling'])} (one shard job alone vs two at once)"
                + (f", {_x(c['gemm_two_process_speedup_ceiling'])} (matrix products)"
                   if "gemm_two_process_speedup_ceiling" in c else "")
                + f"; load average at the end {d.get('machine', {}).get('load_average_at_end')}."]
    return out


def render_coordinator(d: dict) -> str:
    rows = []
    for policy, r in d["results"].items():
        rows.append([f"`{policy}`", r["n_acknowledged"], r["n_applied"], r["n_forgets"],
                     _f(r["total_retrain_seconds"], 1), _f(r["mean_latency"], 1),
                     _f(r["max_latency"], 1), "yes" if r.get("within_deadline") else "no"])
    c = d["config"]
    return "\n".join([
        f"{d.get('dataset')}, S={c['shards']}, R={c['slices']}, `bpr-mf` {c['factors']} factors, "
        f"{c['epochs']} epochs; {c['n_requests']} single-user requests, Poisson at {c['rate']:g}/s "
        f"(virtual clock, measured forget seconds), max delay {c['max_delay']:g} s, batch size "
        f"{c['batch_size']}, deadline budget {c['budget_seconds']:g} s. `batch` saves "
        f"{100 * (d.get('batch_saving_vs_immediate') or 0):.0f}% of `immediate`'s retrain seconds.",
        "", _table(["policy", "acknowledged", "applied", "forgets", "retrain s", "mean latency s",
                    "max latency s", "within max delay"], rows)])


# --------------------------------------------------------------------------------------------
# Registry


def render_sequential(d: dict) -> str:
    rows = [[e["model"], e["n_shards"], _pm(e["ndcg@10"], e["ndcg@10_std"], 4), _f(e["hr@10"]),
             f"{e['ndcg@10_vs_unsharded']:.1%}", _f(e["fit_seconds"], 1),
             _f(e["forget_median_seconds"], 2)] for e in d["summary"]]
    return _table(["model", "S", "NDCG@10", "HR@10", "vs S=1", "fit s", "forget s"], rows)


def render_dual_memory(d: dict) -> str:
    rows = []
    for r in d["summary"]:
        t = r.get("targets") or {}
        rows.append([r["dataset"], r["variant"], r["model"], r["seeds"], _f(r["retain_hr@10"]),
                     _f(r["forget_hr@10"]), _f(r.get("forget_all_hr@10")),
                     _f(r["collateral_hr@10"]), _f(r["mia_auc"], 3),
                     _f(r.get("seconds"), 1),
                     "–" if r.get("seconds_vs_retrain") is None
                     else f"{r['seconds_vs_retrain']:.1%}",
                     _f(t.get("forget_hr10_abs_diff_vs_gold"), 3)])
    return _table(["data", "forget", "model", "seeds", "retain HR@10", "forget HR@10",
                   "forget (all) HR@10", "collateral HR@10", "MIA AUC", "CPU s", "vs retrain",
                   "forget Δ vs gold"], rows) + (
        "\n\nMIA AUC compares models only where the attack reaches AUC >= 0.6 on `main` "
        "(the memorising `-dropout0-50ep` rows); `forget (all)`: every forgotten training "
        "target of the whole-user variant.")


def _sharding(study: str, what: str, *runs: tuple[str, ...], grid: bool = False) -> Benchmark:
    # The first run starts the study afresh (an old, stale JSON is not resumed cell by cell);
    # later runs add their cells to the same file.
    full = tuple((("--study", study, "--fresh") if i == 0 else ("--study", study)) + r
                 for i, r in enumerate(runs or ((),)))
    return Benchmark(f"sharding-{study}", "bench_sharding.py", f"bench_sharding_{study}.json", full,
                     render_sharding_grid if grid else render_sharding, what)


_SMOKE = (("--synthetic", "--quick"),)
_TARGET = ("--sharder", "random-user", "--aggregator", "fold-in", "--forget", "10", "--seeds", "0")

REGISTRY: list[Benchmark] = [
    Benchmark("sisa", "bench_sisa.py", "bench_sisa.json", ((),), render_sisa,
              "ML-1M pairs: unsharded BPR-MF vs SISA over S and R, quality and forget speed-up",
              smoke=_SMOKE),
    Benchmark("ials", "bench_ials.py", "bench_ials.json", ((),), render_ials,
              "ML-1M pairs: `ials` vs `implicit` ALS, and SISA with `ials`", smoke=_SMOKE),
    Benchmark("optimizer", "bench_optimizer.py", "bench_optimizer.json", ((),), render_optimizer,
              "milliseconds per BPR step: autograd + Adam vs `bpr-mf`'s closed-form step",
              smoke=(("--users", "500", "--items", "300", "--batch-size", "256", "--steps", "5"),)),
    Benchmark("potau-ml100k", "bench_potau.py", "bench_potau_ml100k.json",
              (("--datasets", "ml-100k", "--models", "bpr-mf", "ncf", "--seeds", "0", "1", "2"),),
              render_potau, "PoT-AU attribute unlearning on ML-100K (gender, age)"),
    Benchmark("potau-ml1m", "bench_potau.py", "bench_potau_ml1m.json",
              (("--datasets", "ml-1m", "--models", "bpr-mf", "ncf", "--seeds", "0", "1", "2"),),
              render_potau, "PoT-AU attribute unlearning on ML-1M pairs (gender, age)"),
    Benchmark("potau-ml100k-loo", "bench_potau.py", "bench_potau_ml100k_loo.json",
              (("--datasets", "ml-100k", "--models", "bpr-mf", "--seeds", "0", "--protocol", "loo"),),
              render_potau, "PoT-AU on ML-100K, leave-last-out protocol with 99 sampled negatives"),
    _sharding("grid-100k", "ML-100K: every sharder × aggregator × S, 3 seeds",
              ("--epochs", "20"), grid=True),
    _sharding("sharders-1m", "ML-1M pairs: every sharder at S=10 with `mean`"),
    _sharding("aggregators-1m", "ML-1M pairs: every aggregator with `receraser-user` at S=10",
              ("--sharder", "receraser-user")),
    _sharding("sweep-1m", "ML-1M pairs: S-sweep of `receraser-user` + `fold-in`",
              ("--sharder", "receraser-user", "--aggregator", "fold-in", "--seeds", "0")),
    _sharding("target-1m", "ML-1M pairs: ≥ 97% of the unsharded NDCG@10 at S=10, forget speed-up",
              ("--model", "ials", *_TARGET), ("--model", "ials", "--slices", "5", *_TARGET),
              ("--model", "bpr-mf", *_TARGET)),
    Benchmark("aggregators", "bench_aggregators.py", "bench_aggregators.json", ((),),
              render_aggregators, "ML-100K at S=10: every aggregator under two sharders",
              smoke=_SMOKE),
    Benchmark("classification", "bench_classification.py", "bench_classification.json", ((),),
              render_classification, "class-level SISA on scikit-learn digits",
              smoke=(("--quick",),)),
    Benchmark("influence", "bench_influence.py", "bench_influence.json", (("--ml1m",),),
              render_influence, "influence estimate vs the exact effect of forgetting a user",
              smoke=_SMOKE),
    Benchmark("membership", "bench_membership.py", "bench_membership.json", ((),),
              render_membership, "membership inference against original, unlearned and gold models",
              smoke=_SMOKE),
    Benchmark("poisoning", "bench_poisoning.py", "bench_poisoning.json", ((),), render_poisoning,
              "profile-copy poisoning: exposure of a target item, and forgetting the fake users",
              smoke=_SMOKE),
    Benchmark("executors", "bench_executors.py", "bench_executors.json", ((),), render_executors,
              "serial vs joblib vs Ray: fit and forget seconds at S=10 on ML-1M pairs",
              smoke=(("--quick", "--synthetic", "--no-ray"),)),
    Benchmark("sequential", "bench_sequential.py", "bench_sequential.json", ((),),
              render_sequential, "ML-100K leave-last-out: `sasrec` vs `bpr-mf`, S = 1, 5, 10",
              smoke=_SMOKE),
    Benchmark("dual-memory", "bench_dual_memory.py", "bench_dual_memory.json",
              ((), ("--datasets", "ml-100k", "--dropout", "0", "--epochs", "50", "--append")),
              render_dual_memory, "dual-memory unlearning of `sasrec` vs retraining (ML-100K, "
              "ML-1M users 1-2999; and a memorising SASRec on ML-100K for the MIA): "
              "forget/retain/collateral HR, MIA, time",
              smoke=_SMOKE),
    Benchmark("coordinator", "bench_coordinator.py", "bench_coordinator.json",
              (("--n-requests", "1000"),), render_coordinator,
              "forget-request scheduling on ML-1M pairs: retrain seconds and latency per policy",
              smoke=_SMOKE),
]
BY_NAME = {b.name: b for b in REGISTRY}


# --------------------------------------------------------------------------------------------
# Staleness


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


def _in_git(root: Path) -> bool:
    try:
        r = _git(root, "rev-parse", "--show-toplevel")
    except OSError:
        return False
    return r.returncode == 0 and Path(r.stdout.strip()).resolve() == root.resolve()


def _library_files(root: Path) -> list[Path]:
    base, pattern = LIBRARY_GLOB
    return sorted((root / base).glob(pattern))


def load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def state(bench: Benchmark, results: Path = RESULTS, root: Path = ROOT) -> tuple[str, str]:
    """``("fresh" | "stale" | "missing", reason)`` of one benchmark's JSON (module docstring)."""
    path = results / bench.output
    if not path.is_file():
        return "missing", f"no {path.name}"
    data = load_json(path)
    if data is None:
        return "stale", f"{path.name} is not valid JSON"
    json_mtime = path.stat().st_mtime
    paths = bench.measured_paths()
    if not _in_git(root):
        files = [root / p for p in paths if (root / p).is_file()] + _library_files(root)
        newer = [f for f in files if f.stat().st_mtime > json_mtime]
        if newer:
            return "stale", f"{newer[0].relative_to(root)} is newer than the result (file times)"
        return "fresh", "no measured file is newer (file times; not a git checkout)"
    commit = (data.get("machine") or {}).get("commit")
    if not commit:
        return "stale", "the JSON records no commit"
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        return "stale", f"recorded commit {commit[:9]} is not in this repository"
    spec = [*paths, LIBRARY_PATHSPEC]
    later = _git(root, "rev-list", "-1", f"{commit}..HEAD", "--", *spec).stdout.strip()
    if later:
        return "stale", f"code changed in {later[:9]} after the measured commit {commit[:9]}"
    dirty = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *spec).stdout.splitlines()
    for line in dirty:
        f = root / line[3:].strip().split(" -> ")[-1]
        if f.is_file() and f.stat().st_mtime > json_mtime:
            return "stale", f"uncommitted change to {line[3:].strip()} after the result was written"
    return "fresh", f"measured at {commit[:9]}, no later change to the code it measures"


# --------------------------------------------------------------------------------------------
# Rendering


def run_date(data: dict, root: Path = ROOT) -> str:
    """When the JSON was measured: its ``created`` time, else the recorded commit's date."""
    created = data.get("created") or (data.get("machine") or {}).get("date")
    if created:
        return created.replace("T", " ").replace("Z", " UTC")
    commit = (data.get("machine") or {}).get("commit")
    if commit:
        try:
            r = _git(root, "show", "-s", "--format=%cI", commit)
        except OSError:
            r = None
        if r is not None and r.returncode == 0 and r.stdout.strip():
            return f"after {r.stdout.strip()[:10]} (date of the measured commit; no run time recorded)"
    return "unknown"


def machine_line(data: dict) -> str:
    m = data.get("machine") or {}
    parts = []
    if m.get("cpu_count"):
        parts.append(f"{m['cpu_count']} CPUs ({m.get('processor', '?')})")
    if m.get("platform"):
        parts.append(m["platform"])
    for key in ("python", "torch", "numpy", "sisakit"):
        if m.get(key):
            parts.append(f"{key} {m[key]}")
    if "cuda" in m:
        parts.append("CUDA" if m["cuda"] else "no GPU")
    if m.get("threads"):
        parts.append(f"{m['threads']} torch thread(s)")
    parts.append(f"commit {m['commit'][:9]}" if m.get("commit") else "commit not recorded")
    return ", ".join(parts)


def _command(bench: Benchmark) -> str:
    return "; ".join("`" + " ".join(["python", f"benchmarks/{bench.script}", *r]) + "`"
                     for r in bench.runs)


def render_section(bench: Benchmark, data: dict, root: Path = ROOT) -> str:
    try:
        body = bench.render(data)
    except Exception as exc:  # one odd JSON must not cost the whole page
        body = f"*Could not render this result: {type(exc).__name__}: {exc}.*"
    return "\n".join([
        f"## `{bench.name}`: {bench.what}", "",
        f"JSON: `benchmarks/results/{bench.output}`; command: {_command(bench)}  ",
        f"Measured {run_date(data, root)} on: {machine_line(data)}.", "", body, ""])


def render(results: Path = RESULTS, root: Path = ROOT, benches: list[Benchmark] | None = None) -> str:
    benches = REGISTRY if benches is None else benches
    loaded = {b.name: load_json(results / b.output) for b in benches}
    index = []
    for b in benches:
        d = loaded[b.name]
        index.append([f"`{b.name}`", f"`{b.script}`", b.what,
                      run_date(d, root) if d is not None else "not run yet"])
    out = ["<!-- Generated by benchmarks/run_all.py from benchmarks/results/*.json: do not edit by "
           "hand; rerun `python benchmarks/run_all.py --render-only`. -->", "",
           "# Benchmark results", "",
           "Generated by `python benchmarks/run_all.py` from the JSON files in `benchmarks/results/`; "
           "each section names the machine, library versions, commit and date of its run. Timings "
           "are compared only within one run (speed-ups and ratios come from the same JSON); "
           "`benchmarks/README.md` discusses the figures.", "",
           _table(["benchmark", "script", "what", "measured"], index), ""]
    for b in benches:
        if loaded[b.name] is not None:
            out.append(render_section(b, loaded[b.name], root))
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Running


def run_benchmark(bench: Benchmark, results: Path, smoke: bool = False) -> tuple[bool, str]:
    """Run every command of ``bench`` in turn; ``(ok, message)``. Output goes to its log too."""
    runs = bench.smoke if smoke else bench.runs
    assert runs is not None
    logs = results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = results / bench.output
    start = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(logs / f"{bench.name}.log", "w", encoding="utf-8") as log:
        for args in runs:
            cmd = [sys.executable, str(HERE / bench.script), *args, "--out", str(out)]
            header = f"$ {' '.join(cmd)}\n"
            log.write(header)
            log.flush()
            print(header, end="", flush=True)
            try:
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
            except OSError as exc:
                log.write(f"could not start: {exc}\n")
                return False, f"could not start: {exc}"
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                print(f"[{bench.name}] {line}", end="", flush=True)
            rc = proc.wait()
            if rc != 0:
                log.write(f"exit status {rc}\n")
                return False, f"exit status {rc} (log: {logs / (bench.name + '.log')})"
    if not out.is_file() or out.stat().st_mtime < start:
        return False, f"finished but did not write {out}"
    return True, f"{time.time() - start:.0f} s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--list", action="store_true", help="list the benchmarks and their state")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=list(BY_NAME),
                   help="run only these benchmarks")
    p.add_argument("--force", action="store_true", help="rerun even fresh results")
    p.add_argument("--render-only", action="store_true", help="only re-render RESULTS.md")
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long configurations (needs --out-dir; benchmarks without one skip)")
    p.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    p.add_argument("--out-dir", type=Path, default=RESULTS,
                   help="where the JSON files and logs/ go (default: benchmarks/results)")
    p.add_argument("--results-md", type=Path, default=None,
                   help="Markdown output (default: benchmarks/RESULTS.md for the default --out-dir, "
                        "else <out-dir>/RESULTS.md)")
    args = p.parse_args(argv)
    out_dir = args.out_dir.resolve()
    md = args.results_md or (RESULTS_MD if out_dir == RESULTS else out_dir / "RESULTS.md")
    if args.smoke and out_dir == RESULTS:
        p.error("--smoke writes throw-away results: give an --out-dir other than benchmarks/results")
    selected = [BY_NAME[n] for n in args.only] if args.only else REGISTRY

    if args.list:
        width = max(len(b.name) for b in REGISTRY)
        for b in selected:
            st, why = state(b, out_dir)
            print(f"{b.name:<{width}}  {st:<7}  {b.output:<34} {why}")
        return 0

    failed: list[str] = []
    if not args.render_only:
        for b in selected:
            if args.smoke and b.smoke is None:
                print(f"skip {b.name}: no smoke configuration (needs the real data)")
                continue
            st, why = state(b, out_dir)
            if st == "fresh" and not args.force:
                print(f"skip {b.name}: fresh ({why})")
                continue
            print(f"run  {b.name}: {st} ({why})", flush=True)
            if args.dry_run:
                runs = b.smoke if args.smoke else b.runs
                for r in runs or ():
                    print("    python", f"benchmarks/{b.script}", *r, "--out", out_dir / b.output)
                continue
            ok, msg = run_benchmark(b, out_dir, smoke=args.smoke)
            print(f"{'done' if ok else 'FAILED'} {b.name}: {msg}", flush=True)
            if not ok:
                failed.append(b.name)
    if not args.dry_run:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(render(out_dir), encoding="utf-8")
        print(f"wrote {md}")
    if failed:
        print(f"{len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
