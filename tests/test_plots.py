"""Figures and the comparison table (sisakit.plots)."""

from __future__ import annotations

import csv
import itertools
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from sisakit import plots
from sisakit.errors import DataError, ValidationError

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_rows(full_retrain=True):
    """results.csv-like rows: S in {1, 2, 4}, R in {1, 3}, seeds {0, 1}, two scenarios."""
    rng = np.random.default_rng(0)
    rows = []
    for s, r, seed in itertools.product((1, 2, 4), (1, 3), (0, 1)):
        cell = f"c{s}{r}{seed}"
        ndcg = 0.3 - 0.02 * s + rng.normal(0, 0.005)
        for scenario, n in (("one-user", 1), ("group", 20)):
            hist = rng.multinomial(100 - n, np.full(11, 1 / 11))
            row = {"cell": cell, "model": "bpr-mf", "sharder": "random-user", "aggregator": "mean",
                   "n_shards": s, "n_slices": r, "epochs": 5, "seed": seed, "status": "ok",
                   "ndcg@10": ndcg, "recall@20": 2 * ndcg, "scenario": scenario,
                   "users_forgotten": n, "forget_seconds": 1.0 / s / r + 0.01 * n,
                   "ndcg@10_before": ndcg, "ndcg@10_after": ndcg - 0.01,
                   "recall@20_before": 2 * ndcg, "recall@20_after": 2 * ndcg - 0.01,
                   "jaccard@10": 0.8, "jaccard@10_hist": ";".join(map(str, hist))}
            if full_retrain:
                row.update({"full_retrain_seconds": 2.0 + 0.1 * r, "full_retrain_ndcg@10":
                            ndcg - 0.01, "full_retrain_recall@20": 2 * ndcg - 0.01,
                            "exact": True})
            rows.append(row)
    rows.append({**rows[0], "cell": "broken", "status": "error", "forget_seconds": ""})
    return rows


def write_csv(rows, path):
    header = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return path


def check_figure(paths, out_dir, name):
    assert [p.name for p in paths] == [f"{name}.png", f"{name}.svg"]
    png, svg = paths
    assert png.parent == out_dir and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == PNG_MAGIC
    root = ET.parse(svg).getroot()  # the SVG is well-formed XML
    assert root.tag.endswith("svg") and svg.stat().st_size > 1000


@pytest.mark.parametrize("func, name", [
    (plots.quality_vs_shards, "quality_vs_shards"),
    (plots.forget_time_vs_shards, "forget_time_vs_shards"),
    (plots.quality_before_after, "quality_before_after"),
])
def test_results_plots_write_png_and_svg(tmp_path, func, name):
    check_figure(func(fake_rows(), tmp_path), tmp_path, name)


def test_results_plots_read_a_csv_and_filter(tmp_path):
    path = write_csv(fake_rows(full_retrain=False), tmp_path / "results.csv")
    paths = plots.quality_before_after(path, tmp_path, where={"n_slices": 3}, name="qba")
    check_figure(paths, tmp_path, "qba")
    with pytest.raises(ValidationError, match="no successful row matches"):
        plots.forget_time_vs_shards(path, tmp_path, where={"n_shards": 99})
    with pytest.raises(ValidationError, match="recall@20"):
        plots.quality_vs_shards(path, tmp_path, metric="hr@5")


def test_jaccard_histogram(tmp_path):
    values = {"user": np.linspace(0, 1, 50), "group": np.full(30, 0.25)}
    check_figure(plots.jaccard_histogram(values, tmp_path, k=10), tmp_path, "jaccard_histogram")
    check_figure(plots.jaccard_histogram([0.5, 1.0], tmp_path, name="one"), tmp_path, "one")
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        plots.jaccard_histogram([0.5, 1.5], tmp_path)


def test_shard_heatmap(tmp_path):
    m = np.arange(12, dtype=float).reshape(4, 3)
    paths = plots.shard_heatmap(m, tmp_path, row_labels=list("abcd"), title="records")
    check_figure(paths, tmp_path, "shard_heatmap")
    assert "records" in paths[1].read_text()
    m[1, 2] = np.nan  # an empty cell is drawn blank
    check_figure(plots.shard_heatmap(m, tmp_path, name="holes"), tmp_path, "holes")
    with pytest.raises(ValidationError, match="2-D"):
        plots.shard_heatmap(np.ones(3), tmp_path)
    with pytest.raises(ValidationError, match="2-D"):
        plots.shard_heatmap(np.full((2, 2), np.nan), tmp_path)
    with pytest.raises(ValidationError, match="labels"):
        plots.shard_heatmap(m, tmp_path, row_labels=["a"])


def test_mia_and_poisoning_bars(tmp_path):
    check_figure(plots.mia_auc({"original": 0.71, "unlearned": [0.52, 0.5], "gold": 0.5},
                               tmp_path), tmp_path, "mia_auc")
    check_figure(plots.poisoning_exposure({"clean": 0.01, "attacked": 0.4, "after_forget": 0.01},
                                          tmp_path), tmp_path, "poisoning_exposure")
    with pytest.raises(ValidationError, match="gold"):
        plots.mia_auc({"original": 0.7, "unlearned": 0.5}, tmp_path)
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        plots.mia_auc({"original": 1.7, "unlearned": 0.5, "gold": 0.5}, tmp_path)


def test_same_input_gives_the_same_svg(tmp_path):
    a = plots.quality_vs_shards(fake_rows(), tmp_path / "a")[1].read_bytes()
    b = plots.quality_vs_shards(fake_rows(), tmp_path / "b")[1].read_bytes()
    assert a == b


def test_comparison_table_rows(tmp_path):
    csv_path, md_path = plots.comparison_table(fake_rows(), tmp_path)
    with open(csv_path, newline="") as fh:
        table = list(csv.DictReader(fh))
    # Per (shard count, scenario): full retrain, SISA (R=1), SISA + slice checkpoints (R=3).
    assert len(table) == 3 * 2 * 3
    for (s, scenario), group in itertools.groupby(table, key=lambda r: (r["n_shards"],
                                                                          r["scenario"])):
        group = list(group)
        assert [g["method"] for g in group] == ["full retrain", "SISA",
                                                "SISA + slice checkpoints"]
        assert [g["n_slices"] for g in group] == ["1", "1", "3"]
        assert all(g["runs"] == "2" for g in group)  # two seeds each
        full, plain, sliced = group
        assert float(full["speedup"]) == 1.0 and full["exact"] == ""
        assert float(full["seconds_mean"]) == pytest.approx(2.1)  # from the R=1 rows
        n = 1 if scenario == "one-user" else 20
        expect = 1.0 / int(s) + 0.01 * n
        assert float(plain["seconds_mean"]) == pytest.approx(expect)
        assert float(plain["speedup"]) == pytest.approx(2.1 / expect)
        assert float(sliced["exact"]) == 1.0
    md = md_path.read_text().splitlines()
    assert len(md) == 2 + len(table) and md[0].startswith("| model |")


def test_comparison_table_without_full_retrain(tmp_path):
    csv_path, _ = plots.comparison_table(fake_rows(full_retrain=False), tmp_path)
    with open(csv_path, newline="") as fh:
        methods = {r["method"] for r in csv.DictReader(fh)}
    assert methods == {"SISA", "SISA + slice checkpoints"}


def test_from_results_renders_everything_supported(tmp_path):
    path = write_csv(fake_rows(), tmp_path / "results.csv")
    made = plots.from_results(path, tmp_path / "plots")
    assert set(made) == {"quality_vs_shards", "forget_time_vs_shards", "quality_before_after",
                         "comparison", "jaccard_histogram", "forget_seconds_heatmap"}
    for paths in made.values():
        assert all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_results_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        plots.from_results(tmp_path / "nope.csv", tmp_path)
    only_errors = [r for r in fake_rows() if r["status"] == "error"]
    with pytest.raises(DataError, match="no successful row"):
        plots.quality_vs_shards(only_errors, tmp_path)


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(DataError, match=r"pip install 'sisakit\[plots\]'"):
        plots.mia_auc({"original": 0.7, "unlearned": 0.5, "gold": 0.5}, tmp_path)
