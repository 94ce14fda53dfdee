"""Figures and tables for unlearning experiments (needs matplotlib: ``pip install 'sisakit[plots]'``).

Every plot function writes one PNG and one SVG file named ``<name>.png`` / ``<name>.svg`` into
``out_dir`` and returns their paths. Figures are drawn on matplotlib's Agg canvas directly (no
``pyplot``, no global backend change, never a window), and SVG output carries no date and a
fixed id salt, so the same input gives the same files.

Functions that take ``results`` accept the path of a ``results.csv`` written by
:func:`sisakit.experiment.run`, or its rows as a list of dicts. :func:`from_results` renders
every plot a results file supports.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, ValidationError

__all__ = [
    "comparison_table",
    "coordinator_timeline",
    "forget_time_vs_shards",
    "from_results",
    "jaccard_histogram",
    "mia_auc",
    "poisoning_exposure",
    "quality_before_after",
    "quality_vs_shards",
    "shard_heatmap",
]

PathLike = str | os.PathLike[str]
Results = PathLike | Sequence[Mapping[str, Any]]

_CONFIG_FIELDS = ("model", "sharder", "aggregator", "n_shards", "n_slices", "epochs")


# ---------------------------------------------------------------------------------- helpers
def _matplotlib() -> Any:
    """The Figure class and rc_context, imported lazily (matplotlib is an optional extra)."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise DataError("sisakit.plots needs matplotlib, which is not installed; install it with "
                        "pip install 'sisakit[plots]'") from exc
    return Figure, FigureCanvasAgg, matplotlib.rc_context


def _new_figure(width: float = 6.4, height: float = 4.2) -> Any:
    figure_cls, canvas_cls, _ = _matplotlib()
    fig = figure_cls(figsize=(width, height), layout="constrained")
    canvas_cls(fig)  # the Agg canvas: rendering never touches a GUI
    return fig


def _out_dir(out_dir: PathLike, name: str) -> Path:
    """The output folder (created), after checking ``name`` is a plain file stem."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise ValidationError(f"name must be a plain file stem like 'quality', got {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _save(fig: Any, out_dir: PathLike, name: str) -> list[Path]:
    out = _out_dir(out_dir, name)
    _, _, rc_context = _matplotlib()
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    with rc_context({"svg.hashsalt": "sisakit", "svg.fonttype": "none"}):
        fig.savefig(png, format="png", dpi=150, metadata={"Software": None})
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return [png, svg]


def _num(value: Any) -> float:
    """A results cell as a float (NaN when empty or not a number)."""
    if value is None or value == "":
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value in ("True", "False"):
        return float(value == "True")
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _rows(results: Results, where: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    if isinstance(results, (str, os.PathLike)):
        path = Path(results)
        if not path.is_file():
            raise DataError(f"results file {path} does not exist; run sisakit.experiment.run "
                            "(or `sisakit experiment CONFIG`) first, or check the path")
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    elif isinstance(results, Sequence) and all(isinstance(r, Mapping) for r in results):
        rows = [dict(r) for r in results]
    else:
        raise ValidationError(f"results must be a results.csv path or a list of row dicts, got "
                              f"{type(results).__name__}")
    ok = [r for r in rows if str(r.get("status", "ok")) == "ok"]
    if not ok:
        raise DataError("the results hold no successful row (status 'ok'); check the "
                        "error_type/error_message columns and re-run the failed cells")
    if where:
        if not isinstance(where, Mapping):
            raise ValidationError(f"where must be a dict of column -> value, got {where!r}")
        ok = [r for r in ok if all(str(r.get(k)) == str(v) for k, v in where.items())]
        if not ok:
            raise ValidationError(f"no successful row matches where={dict(where)}; check the "
                                  "column names and values against results.csv")
    return ok


def _metric_column(rows: Sequence[Mapping[str, Any]], metric: str, suffix: str = "") -> str:
    col = f"{metric}{suffix}"
    if not any(not math.isnan(_num(r.get(col))) for r in rows):
        have = sorted({c for r in rows for c in r if re.fullmatch(r"(ndcg|recall)@\d+", c)})
        raise ValidationError(f"the results have no values in column {col!r}; use one of the "
                              f"metrics {have}")
    return col


def _default_metric(rows: Sequence[Mapping[str, Any]], prefix: str) -> str:
    for c in rows[0]:
        if re.fullmatch(rf"{prefix}@\d+", c):
            return c
    raise DataError(f"the results have no {prefix}@K column; were they written by "
                    "sisakit.experiment.run?")


def _varying(rows: Sequence[Mapping[str, Any]], fields: Iterable[str]) -> list[str]:
    return [f for f in fields if len({str(r.get(f)) for r in rows}) > 1]


def _label(row: Mapping[str, Any], fields: Sequence[str]) -> str:
    short = {"n_slices": "R", "n_shards": "S"}
    return ", ".join(f"{short.get(f, f)}={row.get(f)}" for f in fields) or "all"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if not len(arr):
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _series_by_shards(rows: Sequence[Mapping[str, Any]], col: str, fields: Sequence[str]
                      ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """label -> (n_shards, mean, std) over the rows (seeds) of each label and shard count."""
    groups: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        groups.setdefault(_label(r, fields), {}).setdefault(int(_num(r["n_shards"])), []).append(
            _num(r.get(col)))
    out = {}
    for label, by_s in groups.items():
        xs = np.array(sorted(by_s))
        stats = np.array([_mean_std(by_s[x]) for x in xs])
        out[label] = (xs, stats[:, 0], stats[:, 1])
    return out


def _one_per_cell(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    seen: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        seen.setdefault(str(r.get("cell", id(r))), r)
    return list(seen.values())


# ---------------------------------------------------------------------------------- plots
def quality_vs_shards(results: Results, out_dir: PathLike, *, metric: str | None = None,
                      name: str = "quality_vs_shards") -> list[Path]:
    """Recommendation quality before any forget against the number of shards.

    One line per configuration that varies besides the shard count (model, sharder,
    aggregator, slices, epochs); points are means over seeds, error bars one standard deviation.

    Parameters
    ----------
    results : path or list of dict
        ``results.csv`` or its rows.
    out_dir : path
        Folder for the files.
    metric : str, optional
        A cell-level metric column such as ``"ndcg@10"`` or ``"recall@20"`` (default: the NDCG
        column).
    name : str
        File stem.

    Returns
    -------
    list of Path
        The PNG and the SVG file.
    """
    rows = _one_per_cell(_rows(results))
    col = _metric_column(rows, metric or _default_metric(rows, "ndcg"))
    fields = _varying(rows, [f for f in _CONFIG_FIELDS if f != "n_shards"])
    fig = _new_figure()
    ax = fig.add_subplot()
    for label, (xs, mean, std) in sorted(_series_by_shards(rows, col, fields).items()):
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xlabel("number of shards S")
    ax.set_ylabel(col.replace("ndcg", "NDCG").replace("recall", "Recall"))
    ax.set_title(f"Quality vs shards (mean ± sd over {len({r.get('seed') for r in rows})} seed(s))")
    ax.grid(alpha=0.3)
    if fields:
        ax.legend(fontsize="small")
    return _save(fig, out_dir, name)


def _panels(n: int, width: float, height: float) -> tuple[Any, list[Any]]:
    """A figure with ``n`` side-by-side panels sharing the y axis."""
    fig = _new_figure(width * n + 0.8, height)
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    return fig, list(axes)


def forget_time_vs_shards(results: Results, out_dir: PathLike, *,
                          where: Mapping[str, Any] | None = None,
                          name: str = "forget_time_vs_shards") -> list[Path]:
    """Wall time of a forget (retraining the affected shards) against the number of shards.

    One panel per scenario; in each, one line per configuration that varies besides the shard
    count (slices, sharder, ...), mean ± sd over seeds, log-scaled. Where the results hold
    full-retrain times, their mean over the ``n_slices = 1`` rows (all rows when there are
    none) is drawn as a dashed black line.

    Parameters
    ----------
    results : path or list of dict
        ``results.csv`` or its rows.
    out_dir : path
        Folder for the files.
    where : mapping, optional
        Keep only rows whose columns equal these values, e.g. ``{"sharder": "random-user"}``.
    name : str
        File stem.
    """
    rows = _rows(results, where)
    _metric_column(rows, "forget_seconds")
    fields = _varying(rows, [f for f in _CONFIG_FIELDS if f != "n_shards"])
    scenarios = list(dict.fromkeys(str(r.get("scenario")) for r in rows))
    fig, axes = _panels(len(scenarios), 3.6, 4.0)
    for ax, sc in zip(axes, scenarios, strict=True):
        sub = [r for r in rows if str(r.get("scenario")) == sc]
        for label, (xs, mean, std) in sorted(_series_by_shards(sub, "forget_seconds",
                                                               fields).items()):
            ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=f"SISA {label}")
        full = [r for r in sub if not math.isnan(_num(r.get("full_retrain_seconds")))]
        plain = [r for r in full if int(_num(r["n_slices"])) == 1]
        if full:
            fx, fmean, fstd = _series_by_shards(plain or full, "full_retrain_seconds", [])["all"]
            ax.errorbar(fx, fmean, yerr=fstd, marker="s", capsize=3, linestyle="--",
                        color="black", label="full retrain")
        ax.set_xticks(sorted({int(_num(r["n_shards"])) for r in sub}))
        ax.set_yscale("log")
        ax.set_title(f"forget: {sc}", fontsize="medium")
        ax.set_xlabel("number of shards S")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("seconds (log scale)")
    axes[0].legend(fontsize="x-small")
    fig.suptitle("Unlearning time vs shards (mean ± sd over seeds)")
    return _save(fig, out_dir, name)


def quality_before_after(results: Results, out_dir: PathLike, *, metric: str | None = None,
                         where: Mapping[str, Any] | None = None,
                         name: str = "quality_before_after") -> list[Path]:
    """Bars of quality before and after each forget (and after a full retrain, if measured).

    Quality is measured on the users whose data remains, so before and after compare like with
    like. One panel per scenario, one group of bars per configuration; bar height is the mean
    over seeds, the error bar one standard deviation.

    Parameters
    ----------
    results : path or list of dict
        ``results.csv`` or its rows.
    out_dir : path
        Folder for the files.
    metric : str, optional
        ``"ndcg@10"``-style metric prefix (default: the NDCG column).
    where : mapping, optional
        Keep only rows whose columns equal these values, e.g. ``{"n_slices": 1}``.
    name : str
        File stem.
    """
    rows = _rows(results, where)
    metric = metric or _default_metric(rows, "ndcg")
    _metric_column(rows, metric, "_before")
    fields = _varying(rows, _CONFIG_FIELDS)
    phases = [("before", f"{metric}_before"), ("after", f"{metric}_after")]
    if any(not math.isnan(_num(r.get(f"full_retrain_{metric}"))) for r in rows):
        phases.append(("full retrain", f"full_retrain_{metric}"))
    scenarios = list(dict.fromkeys(str(r.get("scenario")) for r in rows))
    n_cfg = len({_label(r, fields) for r in rows})
    fig, axes = _panels(len(scenarios), max(2.6, 0.3 * n_cfg * len(phases) + 1.0), 4.4)
    width = 0.8 / len(phases)
    for ax, sc in zip(axes, scenarios, strict=True):
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:
            if str(r.get("scenario")) == sc:
                groups.setdefault(_label(r, fields), []).append(r)
        labels = list(groups)
        x = np.arange(len(labels))
        for i, (phase, col) in enumerate(phases):
            stats = np.array([_mean_std([_num(r.get(col)) for r in groups[g]]) for g in labels])
            ax.bar(x + (i - (len(phases) - 1) / 2) * width, stats[:, 0], width,
                   yerr=stats[:, 1], capsize=2, label=phase, color=f"C{i}")
        rotate = len(labels) > 2
        ax.set_xticks(x, labels, rotation=45 if rotate else 0, ha="right" if rotate else "center",
                      fontsize="x-small")
        ax.set_title(f"forget: {sc}", fontsize="medium")
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel(metric.replace("ndcg", "NDCG").replace("recall", "Recall"))
    axes[0].legend(fontsize="x-small")
    fig.suptitle("Quality before vs after unlearning (retained users; mean ± sd over seeds)")
    return _save(fig, out_dir, name)


def jaccard_histogram(values: Any, out_dir: PathLike, *, k: int = 10,
                      name: str = "jaccard_histogram") -> list[Path]:
    """Histogram of per-user Jaccard@K between the top-K lists before and after a forget.

    Parameters
    ----------
    values : array-like or mapping of str to array-like
        Per-user Jaccard values in [0, 1]; a mapping draws one histogram per label (e.g. per
        scenario), side by side.
    out_dir : path
        Folder for the files.
    k : int
        The list length K (for the axis label; with K given the bins are the K + 1 values a
        Jaccard@K can take).
    name : str
        File stem.
    """
    series = dict(values) if isinstance(values, Mapping) else {"": values}
    if not series:
        raise ValidationError("values is empty; pass per-user Jaccard values")
    arrays = {}
    for label, v in series.items():
        arr = np.asarray(v, dtype=np.float64).ravel()
        if not len(arr) or np.isnan(arr).any() or arr.min() < 0 or arr.max() > 1:
            raise ValidationError(f"Jaccard values{' of ' + label if label else ''} must be a "
                                  "non-empty array of numbers in [0, 1]")
        arrays[str(label)] = arr
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValidationError(f"k must be a positive integer, got {k!r}")
    overlaps = np.arange(k + 1)
    possible = overlaps / (2.0 * k - overlaps)  # the values a Jaccard@k can take
    edges = np.concatenate(([-0.01], (possible[1:] + possible[:-1]) / 2, [1.01]))
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.hist(list(arrays.values()), bins=edges, label=[lb or None for lb in arrays],
            weights=[np.full(len(a), 1.0 / len(a)) for a in arrays.values()])
    ax.set_xlabel(f"Jaccard@{k} of the top-{k} lists before / after")
    ax.set_ylabel("share of users")
    ax.set_title(f"How much recommendations changed (Jaccard@{k}; 1 = unchanged)")
    if any(arrays):
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_dir, name)


def shard_heatmap(matrix: Any, out_dir: PathLike, *, row_labels: Sequence[Any] | None = None,
                  col_labels: Sequence[Any] | None = None, xlabel: str = "slice",
                  ylabel: str = "shard", title: str = "", colorbar_label: str = "",
                  name: str = "shard_heatmap") -> list[Path]:
    """Heatmap of a per-shard matrix (e.g. records per shard × slice, or users per shard ×
    activity group), annotated with the values when it is small.

    Parameters
    ----------
    matrix : array-like, shape (rows, cols)
        Numbers; NaN marks an empty cell (drawn blank), at least one must be finite.
    out_dir : path
        Folder for the files.
    row_labels, col_labels : sequence, optional
        Tick labels (default: 0, 1, ...).
    xlabel, ylabel, title, colorbar_label : str
        Axis labels, title and colour-bar label.
    name : str
        File stem.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.size == 0 or np.isinf(m).any() or np.isnan(m).all():
        raise ValidationError(f"matrix must be a non-empty 2-D array of finite numbers (NaN for "
                              f"empty cells), got shape {m.shape}")
    rows = list(row_labels) if row_labels is not None else list(range(m.shape[0]))
    cols = list(col_labels) if col_labels is not None else list(range(m.shape[1]))
    if len(rows) != m.shape[0] or len(cols) != m.shape[1]:
        raise ValidationError(f"{len(rows)} row and {len(cols)} column labels for a matrix of "
                              f"shape {m.shape}; give one label per row / column")
    fig = _new_figure(max(4.0, 0.6 * m.shape[1] + 2.5), max(3.0, 0.4 * m.shape[0] + 1.5))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(m), aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, label=colorbar_label)
    ax.set_xticks(range(m.shape[1]), [str(c) for c in cols], fontsize="small")
    ax.set_yticks(range(m.shape[0]), [str(r) for r in rows], fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize="medium", wrap=True)
    if m.size <= 400:  # annotate small matrices only: larger ones become unreadable
        mid = (np.nanmax(m) + np.nanmin(m)) / 2
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, "–" if np.isnan(v) else f"{v:.3g}", ha="center", va="center",
                    fontsize="x-small", color="black" if np.isnan(v) or v >= mid else "white")
    return _save(fig, out_dir, name)


def _phase_bars(values: Mapping[str, Any], keys: Sequence[str], labels: Sequence[str],
                out_dir: PathLike, name: str, ylabel: str, title: str, *,
                chance: float | None = None, unit_range: bool = False) -> list[Path]:
    if not isinstance(values, Mapping) or set(values) != set(keys):
        got = sorted(values) if isinstance(values, Mapping) else type(values).__name__
        raise ValidationError(f"values must be a dict with exactly the keys {list(keys)}, got "
                              f"{got}; one number (or a list of numbers over seeds) per key")
    stats = []
    for key in keys:
        arr = np.atleast_1d(np.asarray(values[key], dtype=np.float64))
        if arr.ndim != 1 or not len(arr) or not np.isfinite(arr).all():
            raise ValidationError(f"values[{key!r}] must be a finite number or a non-empty list "
                                  f"of finite numbers, got {values[key]!r}")
        if unit_range and (arr.min() < 0 or arr.max() > 1):
            raise ValidationError(f"values[{key!r}] must lie in [0, 1], got {values[key]!r}")
        stats.append((arr.mean(), arr.std(ddof=1) if len(arr) > 1 else 0.0, len(arr)))
    fig = _new_figure(5.0, 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(keys))
    bars = ax.bar(x, [s[0] for s in stats], 0.6, yerr=[s[1] for s in stats], capsize=4,
                  color=["#4c72b0", "#c44e52", "#55a868"])
    ax.bar_label(bars, labels=[f"{s[0]:.3f}" for s in stats], padding=3, fontsize="small")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.legend(fontsize="small")
    ax.set_xticks(x, labels)
    ax.set_ylabel(ylabel)
    if unit_range:
        ax.set_ylim(0, 1.05)
    n = max(s[2] for s in stats)
    ax.set_title(title + (f" (mean ± sd over {n} runs)" if n > 1 else ""))
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_dir, name)


def mia_auc(values: Mapping[str, Any], out_dir: PathLike, *, name: str = "mia_auc") -> list[Path]:
    """Membership-inference AUC on the original model, after unlearning, and on the gold model
    (retrained without the forgotten data); a successful unlearning brings "unlearned" to "gold".

    Parameters
    ----------
    values : dict
        ``{"original": auc, "unlearned": auc, "gold": auc}``; each a number in [0, 1] or a list
        of them (one per seed: bars show the mean, error bars the standard deviation).
    out_dir : path
        Folder for the files.
    name : str
        File stem.
    """
    return _phase_bars(values, ("original", "unlearned", "gold"),
                       ("original", "unlearned", "gold (retrained)"), out_dir, name,
                       "membership-inference AUC", "Membership inference",
                       chance=0.5, unit_range=True)


def poisoning_exposure(values: Mapping[str, Any], out_dir: PathLike, *,
                       ylabel: str = "exposure of the target items",
                       name: str = "poisoning_exposure") -> list[Path]:
    """Exposure of the attacker's target items on clean data, under a poisoning attack, and
    after forgetting the fake users.

    Parameters
    ----------
    values : dict
        ``{"clean": x, "attacked": x, "after_forget": x}``; each a number or a list over seeds.
    out_dir : path
        Folder for the files.
    ylabel : str
        What the exposure number is (e.g. "hit rate@10 of the target items").
    name : str
        File stem.
    """
    return _phase_bars(values, ("clean", "attacked", "after_forget"),
                       ("clean", "attacked", "after forget"), out_dir, name, ylabel,
                       "Poisoning: exposure before / under attack / after forget")


# ---------------------------------------------------------------------------------- table
def _comparison_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    nd = _default_metric(rows, "ndcg")
    rc = _default_metric(rows, "recall")
    keys = ("model", "sharder", "aggregator", "n_shards", "scenario")
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(str(r.get(k)) for k in keys), []).append(r)

    def entry(gkey: tuple[str, ...], method: str, n_slices: int, rs: Sequence[Mapping[str, Any]],
              sec: str, nd_col: str, rc_col: str) -> dict[str, Any]:
        mean, std = _mean_std([_num(r.get(sec)) for r in rs])
        exact = [e for e in (_num(r.get("exact")) for r in rs) if not math.isnan(e)]
        return {**dict(zip(keys, gkey, strict=True)), "method": method, "n_slices": n_slices,
                "runs": len(rs), "seconds_mean": mean, "seconds_std": std,
                nd: _mean_std([_num(r.get(nd_col)) for r in rs])[0],
                rc: _mean_std([_num(r.get(rc_col)) for r in rs])[0],
                "exact": sum(exact) / len(exact) if exact and method != "full retrain" else None}

    table: list[dict[str, Any]] = []
    for gkey in sorted(groups, key=lambda g: (g[:3], int(float(g[3])), g[4])):
        rs = groups[gkey]
        plain = [r for r in rs if int(_num(r["n_slices"])) == 1]
        full = [r for r in (plain or rs) if not math.isnan(_num(r.get("full_retrain_seconds")))]
        out = []
        if full:
            out.append(entry(gkey, "full retrain", 1, full, "full_retrain_seconds",
                             f"full_retrain_{nd}", f"full_retrain_{rc}"))
        if plain:
            out.append(entry(gkey, "SISA", 1, plain, "forget_seconds", f"{nd}_after",
                             f"{rc}_after"))
        for n_slices in sorted({int(_num(r["n_slices"])) for r in rs} - {1}):
            sub = [r for r in rs if int(_num(r["n_slices"])) == n_slices]
            out.append(entry(gkey, "SISA + slice checkpoints", n_slices, sub, "forget_seconds",
                             f"{nd}_after", f"{rc}_after"))
        base = out[0]["seconds_mean"] if full else math.nan
        for e in out:
            e["speedup"] = base / e["seconds_mean"] if e["seconds_mean"] > 0 else math.nan
        table.extend(out)
    return table


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def comparison_table(results: Results, out_dir: PathLike, *, name: str = "comparison"
                     ) -> list[Path]:
    """Full retrain vs SISA vs SISA with slice checkpoints, per configuration and scenario.

    For every (model, sharder, aggregator, shard count, scenario) the table has up to three
    kinds of rows: ``full retrain`` (the ``full_retrain_*`` columns of the ``n_slices = 1``
    rows, or of all rows when there are none), ``SISA`` (forgets of ``n_slices = 1`` cells,
    which retrain a whole shard) and ``SISA + slice checkpoints`` (one row per ``n_slices > 1``;
    retraining restarts from the last clean slice checkpoint). Columns: the group keys,
    ``method``, ``n_slices``, ``runs`` (rows averaged, usually one per seed), ``seconds_mean``,
    ``seconds_std``, quality after the forget (NDCG / Recall columns, retained users),
    ``exact`` (share of forgets equal bit for bit to the full retrain; empty when not measured)
    and ``speedup`` (full-retrain seconds / seconds).

    Parameters
    ----------
    results : path or list of dict
        ``results.csv`` or its rows.
    out_dir : path
        Folder for the files.
    name : str
        File stem.

    Returns
    -------
    list of Path
        ``<name>.csv`` and ``<name>.md`` (a Markdown table).
    """
    rows = _rows(results)
    _metric_column(rows, "forget_seconds")
    table = _comparison_rows(rows)
    out = _out_dir(out_dir, name)
    header = list(table[0])
    csv_path, md_path = out / f"{name}.csv", out / f"{name}.md"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        for e in table:
            writer.writerow({k: "" if e[k] is None or (isinstance(e[k], float) and math.isnan(e[k]))
                             else e[k] for k in header})
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(e[k]) for k in header) + " |" for e in table]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [csv_path, md_path]


# ---------------------------------------------------------------------------------- all
def _jaccard_from_hist(rows: Sequence[Mapping[str, Any]]) -> tuple[int, dict[str, np.ndarray]]:
    col = next((c for c in rows[0] if re.fullmatch(r"jaccard@\d+_hist", c)), None)
    if col is None:
        return 0, {}
    k = int(col.split("@")[1].split("_")[0])
    overlaps = np.arange(k + 1)
    values = overlaps / (2.0 * k - overlaps)
    counts: dict[str, np.ndarray] = {}
    for r in rows:
        text = str(r.get(col) or "")
        if not text:
            continue
        c = np.array([int(x) for x in text.split(";")], dtype=np.int64)
        if len(c) == k + 1:
            counts[str(r["scenario"])] = counts.get(str(r["scenario"]), 0) + c
    return k, {s: np.repeat(values, c) for s, c in counts.items() if c.sum()}


def from_results(results_csv: PathLike, out_dir: PathLike) -> dict[str, list[Path]]:
    """Render every plot and table that a ``results.csv`` supports.

    Quality vs shards, forget time vs shards, quality before/after, the Jaccard@K histogram
    (per scenario, pooled over cells), a heatmap of the mean forget time over shards × slices
    (when the sweep varies either), and the comparison table. Membership-inference and
    poisoning plots need figures a sweep does not produce; call :func:`mia_auc` and
    :func:`poisoning_exposure` directly.

    Parameters
    ----------
    results_csv : path
        A ``results.csv`` written by :func:`sisakit.experiment.run`.
    out_dir : path
        Folder for the files.

    Returns
    -------
    dict
        Plot name -> the files written.
    """
    rows = _rows(results_csv)
    made: dict[str, list[Path]] = {"quality_vs_shards": quality_vs_shards(rows, out_dir)}
    has_forget = any(not math.isnan(_num(r.get("forget_seconds"))) for r in rows)
    if has_forget:
        made["forget_time_vs_shards"] = forget_time_vs_shards(rows, out_dir)
        made["quality_before_after"] = quality_before_after(rows, out_dir)
        made["comparison"] = comparison_table(rows, out_dir)
        k, jac = _jaccard_from_hist(rows)
        if jac:
            made["jaccard_histogram"] = jaccard_histogram(jac, out_dir, k=k)
        shards = sorted({int(_num(r["n_shards"])) for r in rows})
        slices = sorted({int(_num(r["n_slices"])) for r in rows})
        if len(shards) > 1 or len(slices) > 1:
            m = np.full((len(shards), len(slices)), np.nan)
            for i, s in enumerate(shards):
                for j, rr in enumerate(slices):
                    m[i, j] = _mean_std([_num(r.get("forget_seconds")) for r in rows
                                         if int(_num(r["n_shards"])) == s
                                         and int(_num(r["n_slices"])) == rr])[0]
            if np.isfinite(m).any():
                made["forget_seconds_heatmap"] = shard_heatmap(
                    m, out_dir, row_labels=shards, col_labels=slices, xlabel="slices R",
                    ylabel="shards S", title="Mean forget seconds (all scenarios)",
                    colorbar_label="seconds", name="forget_seconds_heatmap")
    return made


# ---------------------------------------------------------------------------------- coordinator
def coordinator_timeline(log: PathLike | Sequence[Mapping[str, Any]], out_dir: PathLike, *,
                         name: str = "coordinator_timeline") -> list[Path]:
    """Timeline of a :class:`sisakit.coordinator.Coordinator` decision log.

    One row per shard: requests as ticks at their arrival, the wait of each applied batch as a
    thin span (first arrival to start) and each retrain as a bar (start to end).

    Parameters
    ----------
    log : path or list of dict
        The JSON-lines decision log, or its decisions.
    out_dir : path
        Folder for the files.
    name : str
        File stem.

    Returns
    -------
    list of Path
        ``<name>.png`` and ``<name>.svg``.

    Raises
    ------
    DataError
        If the log holds no applied forget.
    """
    if isinstance(log, (str, os.PathLike)):
        try:
            text = Path(log).read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot read the decision log {log} ({exc}); pass the log= path "
                            "given to the Coordinator") from exc
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = list(log)
    applies = [r for r in rows if r.get("action") == "apply" and r.get("end") is not None]
    if not applies:
        raise DataError("the decision log holds no applied forget; run the coordinator first")
    fig = _new_figure(8.0, 4.2)
    ax = fig.add_subplot()
    colors = {"immediate": "tab:blue", "batch": "tab:green", "deadline": "tab:orange"}
    for r in rows:
        if r.get("action") == "submit" and r.get("time") is not None:
            for s in r.get("shards") or [-1]:
                ax.plot([r["time"]], [s + 0.3], marker="|", color="0.4", markersize=6)
    for r in applies:
        c = colors.get(r.get("policy"), "tab:purple")
        arrivals = [a for a in r.get("arrivals") or [] if a is not None]
        for s in r.get("shards") or [-1]:
            if arrivals:
                ax.hlines(s + 0.15, min(arrivals), r["time"], color=c, alpha=0.5, linewidth=1)
            ax.broken_barh([(r["time"], max(r["end"] - r["time"], 1e-9))], (s - 0.25, 0.3),
                           facecolors=c)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("shard")
    policies = sorted({str(r.get("policy")) for r in applies})
    ax.set_title(f"Forget requests (ticks), waits (lines) and retrains (bars): {', '.join(policies)}")
    return _save(fig, out_dir, name)
