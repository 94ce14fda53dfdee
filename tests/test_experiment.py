"""Experiment sweeps (sisakit.experiment) and the ``sisakit experiment`` command."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest

import sisakit
from sisakit import experiment
from sisakit.cli import main
from sisakit.errors import SisakitError, ValidationError

ROOT = Path(__file__).resolve().parent.parent

TINY = {
    "experiment": {"name": "tiny", "device": "cpu", "keep_runs": True, "full_retrain": True},
    "data": {"source": "synthetic", "n_users": 60, "n_items": 40, "mean_interactions": 8},
    "grid": {"n_shards": [2, 3], "n_slices": 2, "epochs": 1, "seed": 0},
    "params": {"model": {"bpr-mf": {"factors": 4, "batch_size": 256}}},
    "scenarios": [{"name": "batch", "kind": "random", "size": 3},
                  {"name": "first-shard", "kind": "shard", "shard": 0}],
}

TINY_TOML = """
[experiment]
name = "tiny-cli"
device = "cpu"

[data]
n_users = 50
n_items = 30
mean_interactions = 6

[grid]
n_shards = 2
n_slices = [1, 2]
epochs = 1

[params.model.bpr-mf]
factors = 4

[[scenarios]]
kind = "user"
"""


def tiny(**changes):
    cfg = copy.deepcopy(TINY)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        cfg.setdefault(section, {})[key] = value
    return cfg


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, experiment.run(TINY, out, progress=False)


def test_sweep_writes_one_row_per_cell_and_scenario(sweep):
    out, res = sweep
    rows = read_rows(out / "results.csv")
    assert res.n_cells == 2 and res.n_ran == 2 and res.n_failed == 0
    assert len(rows) == 4 == len(res.rows)
    assert set(experiment.RESULT_COLUMNS) <= set(rows[0])
    assert {(r["n_shards"], r["scenario"]) for r in rows} == {
        (s, sc) for s in ("2", "3") for sc in ("batch", "first-shard")}
    for r in rows:
        assert r["status"] == "ok" and r["error_type"] == ""
        assert float(r["forget_seconds"]) > 0 and float(r["full_retrain_seconds"]) > 0
        assert 0.0 <= float(r["jaccard@10"]) <= 1.0
        hist = [int(x) for x in r["jaccard@10_hist"].split(";")]
        assert len(hist) == 11 and sum(hist) == 60 - int(r["users_forgotten"])
        for col in ("ndcg@10", "ndcg@10_before", "ndcg@10_after", "recall@20_after"):
            assert 0.0 <= float(r[col]) <= 1.0
        assert int(r["shards_retrained"]) >= 1 and int(r["records_removed"]) > 0
        # Forgetting on the copy is exact: the whole ensemble retrained without those users.
        assert r["exact"] == "True"
        assert float(r["full_retrain_ndcg@10"]) == float(r["ndcg@10_after"])
    batch = [r for r in rows if r["scenario"] == "batch"]
    assert {r["users_forgotten"] for r in batch} == {"3"}


def test_forgotten_users_are_gone_from_the_saved_runs(sweep):
    out, res = sweep
    data = sisakit.datasets.synthetic(n_users=60, n_items=40, mean_interactions=8)
    train, _ = sisakit.split.holdout(data, 0.2, seed=0)
    for r in res.rows:
        fitted = sisakit.SISA.load(out / "runs" / r["cell"] / "fitted")
        run = sisakit.SISA.load(out / "runs" / r["cell"] / f"scenario-{r['scenario']}")
        gone = np.flatnonzero(run.data.user_counts() == 0)
        assert len(gone) == r["users_forgotten"]
        assert all(run.is_forgotten(u) for u in train.user_ids[gone].tolist())
        assert not any(fitted.is_forgotten(u) for u in train.user_ids[gone].tolist())
        assert run.history[-1]["n_users"] == r["users_forgotten"]
        if r["scenario"] == "first-shard":  # exactly the users the fit put into shard 0
            assert np.array_equal(gone, np.unique(fitted.data.user_idx[fitted.assignment[0] == 0]))
        # Scenarios run on independent copies: the fitted run forgot nothing.
        assert fitted.history == [] and len(fitted.data) == len(train)


def test_same_seed_gives_the_same_numbers(sweep, tmp_path):
    _, first = sweep
    again = experiment.run(TINY, tmp_path, progress=False, resume=False)
    timing = {"fit_seconds", "forget_seconds", "forget_cpu_seconds", "full_retrain_seconds"}
    for a, b in zip(first.rows, again.rows, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing}


def test_run_json_records_config_versions_and_timings(sweep):
    out, _ = sweep
    meta = json.loads((out / "run.json").read_text())
    assert meta["seeds"] == [0]
    assert meta["library"]["sisakit"] == sisakit.__version__ and "torch" in meta["library"]
    assert meta["machine"]["cpu_count"] >= 1
    assert meta["config"]["grid"]["n_shards"] == [2, 3]
    assert meta["summary"] == {"cells": 2, "ran": 2, "skipped": 0, "failed": 0}
    for cell in meta["cells"]:
        assert cell["status"] == "ok" and cell["error"] is None
        assert cell["timings"]["fit_seconds"] > 0
        assert set(cell["timings"]["scenarios"]) == {"batch", "first-shard"}


def test_resume_skips_finished_cells(tmp_path, monkeypatch):
    cfg = tiny(experiment__full_retrain=False, experiment__keep_runs=False)
    first = experiment.run(cfg, tmp_path, progress=False)
    written = read_rows(tmp_path / "results.csv")
    fits = []
    real_fit = sisakit.SISA.fit
    monkeypatch.setattr(sisakit.SISA, "fit", lambda self, *a, **k: fits.append(1) or real_fit(
        self, *a, **k))
    again = experiment.run(cfg, tmp_path, progress=False)
    assert fits == [] and again.n_skipped == 2 and again.n_ran == 0
    assert read_rows(tmp_path / "results.csv") == written  # the same results, rewritten
    assert [r["forget_seconds"] for r in again.rows] == [r["forget_seconds"] for r in first.rows]
    # A changed cell setting is a different cell; the unchanged one is still skipped.
    cfg["grid"]["n_shards"] = [2, 4]
    third = experiment.run(cfg, tmp_path, progress=False)
    assert third.n_skipped == 1 and third.n_ran == 1 and len(fits) == 1
    experiment.run(cfg, tmp_path, progress=False, resume=False)
    assert len(fits) == 3


def test_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path):
    cfg = tiny(experiment__full_retrain=False, experiment__keep_runs=False)
    cfg["grid"]["n_shards"] = [2, 500]  # 500 shards > 60 users: this cell cannot fit
    res = experiment.run(cfg, tmp_path, progress=False)
    rows = read_rows(tmp_path / "results.csv")
    bad = [r for r in rows if r["n_shards"] == "500"]
    good = [r for r in rows if r["n_shards"] == "2"]
    assert len(bad) == 2 and len(good) == 2 and res.n_failed == 1
    assert all(r["status"] == "error" and r["error_type"] == "ValidationError" for r in bad)
    assert all("500" in r["error_message"] for r in bad)
    assert all(r["status"] == "ok" and float(r["forget_seconds"]) > 0 for r in good)
    meta = json.loads((tmp_path / "run.json").read_text())
    failed = [c for c in meta["cells"] if c["status"] == "error"]
    assert len(failed) == 1 and failed[0]["error"]["type"] == "ValidationError"
    assert failed[0]["params"]["n_shards"] == 500
    again = experiment.run(cfg, tmp_path, progress=False)  # failed cells are retried
    assert again.n_ran == 1 and again.n_skipped == 1 and again.n_failed == 1


def test_scenario_failure_stays_in_its_row(tmp_path):
    cfg = tiny(experiment__full_retrain=False, experiment__keep_runs=False)
    cfg["grid"]["n_shards"] = [2]
    cfg["scenarios"] = [{"name": "ok", "kind": "user"},
                        {"name": "too-far", "kind": "shard", "shard": 7}]
    res = experiment.run(cfg, tmp_path, progress=False)
    by = {r["scenario"]: r for r in res.rows}
    assert by["ok"]["status"] == "ok"
    assert by["too-far"]["status"] == "error" and "shard 7" in by["too-far"]["error_message"]


def test_activity_attribute_scenarios_and_fairness_groups(tmp_path):
    cfg = tiny(experiment__full_retrain=False, experiment__keep_runs=False)
    cfg["grid"]["n_shards"] = [2]
    cfg["evaluation"] = {"groups": ["gender"]}
    cfg["scenarios"] = [{"name": "inactive", "kind": "activity", "quantile": 0.25},
                        {"name": "gender-1", "kind": "attribute", "attribute": "gender",
                         "value": 1}]
    res = experiment.run(cfg, tmp_path, progress=False)
    data = sisakit.datasets.synthetic(n_users=60, n_items=40, mean_interactions=8)
    train, _ = sisakit.split.holdout(data, 0.2, seed=0)
    by = {r["scenario"]: r for r in res.rows}
    assert by["inactive"]["users_forgotten"] == 15  # ceil(0.25 * 60)
    assert by["gender-1"]["users_forgotten"] == int((train.user_attributes["gender"] == 1).sum())
    # Forgetting every gender-1 user leaves no gender-1 user to evaluate afterwards.
    assert "ndcg@10_before[gender=0]" in by["gender-1"]
    assert np.isnan(by["gender-1"]["ndcg@10_after[gender=1]"])
    assert 0 <= by["inactive"]["ndcg@10_after[gender=1]"] <= 1


@pytest.mark.parametrize("change, where", [
    ({"bogus": {}}, "bogus"),
    ({"grid": {"n_shard": [2]}}, "grid.n_shard"),
    ({"grid": {"model": ["no-such-model"]}}, "grid.model[0]"),
    ({"grid": {"n_shards": ["2"]}}, "grid.n_shards[0]"),
    ({"grid": {"n_shards": [0]}}, "grid.n_shards[0]"),
    ({"grid": {"seed": [1, 1]}}, "grid.seed"),
    ({"params": {"model": {"bpr-mf": {"factor": 4}}}}, "params.model.bpr-mf.factor"),
    ({"params": {"sharder": {"nope": {}}}}, "params.sharder.nope"),
    ({"experiment": {"full_retrain": "yes"}}, "experiment.full_retrain"),
    ({"data": {"source": "kaggle"}}, "data.source"),
    ({"data": {"source": "file"}}, "data.path"),
    ({"data": {"source": "file", "path": "x.csv", "n_users": 5}}, "data.n_users"),
    ({"split": {"test_fraction": 1.5}}, "split.test_fraction"),
    ({"scenarios": [{"kind": "everyone"}]}, "scenarios[0].kind"),
    ({"scenarios": [{"name": "x"}]}, "scenarios[0].kind"),
    ({"scenarios": [{"kind": "random", "sise": 3}]}, "scenarios[0].sise"),
    ({"scenarios": [{"kind": "user"}, {"kind": "user"}]}, "scenarios"),
    ({"scenarios": [{"kind": "user", "name": "../escape"}]}, "scenarios[0].name"),
    ({"scenarios": [{"kind": "attribute", "attribute": "shoe_size", "value": 1}]},
     "scenarios[0].attribute"),
    ({"evaluation": {"groups": ["shoe_size"]}}, "evaluation.groups[0]"),
])
def test_config_errors_raise_before_anything_runs(tmp_path, monkeypatch, change, where):
    cfg = copy.deepcopy(TINY)
    for section, value in change.items():
        if section != "data" and isinstance(value, dict) and isinstance(cfg.get(section), dict):
            cfg[section].update(value)
        else:
            cfg[section] = value
    monkeypatch.setattr(sisakit.SISA, "fit", lambda *a, **k: pytest.fail("fit() was called"))
    with pytest.raises(ValidationError) as err:
        experiment.run(cfg, tmp_path / "out", progress=False)
    assert where in str(err.value)
    assert not (tmp_path / "out").exists()


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[grid\nn_shards = 2\n")
    with pytest.raises(ValidationError, match=r"broken\.toml is not valid TOML"):
        experiment.load_config(path)
    with pytest.raises(ValidationError, match="cannot read"):
        experiment.load_config(tmp_path / "missing.toml")


def test_load_config_fills_defaults_and_resolves_paths(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('[data]\nsource = "file"\npath = "pairs.csv"\n')
    cfg = experiment.load_config(path)
    assert cfg["data"]["path"] == str(tmp_path.resolve() / "pairs.csv")
    assert cfg["grid"]["model"] == ["bpr-mf"] and cfg["grid"]["n_shards"] == [5]
    assert cfg["scenarios"] == [{"name": "user", "kind": "user"}]
    assert cfg["experiment"]["full_retrain"] is False


def test_given_data_and_data_section_conflict(tmp_path):
    data = sisakit.datasets.synthetic(n_users=30, n_items=20, mean_interactions=5)
    with pytest.raises(ValidationError, match=r"data\.source"):
        experiment.run(TINY, tmp_path, data=data)
    cfg = {k: v for k, v in TINY.items() if k != "data"}
    cfg["grid"] = {"n_shards": 2, "n_slices": 1, "epochs": 1}
    cfg["scenarios"] = [{"kind": "user"}]
    res = experiment.run(cfg, tmp_path, data=data, progress=False)
    assert res.n_failed == 0 and len(res.rows) == 1


def test_example_config_is_valid():
    cfg = experiment.load_config(ROOT / "examples" / "experiment.toml")
    assert cfg["data"]["source"] == "synthetic"
    assert {s["kind"] for s in cfg["scenarios"]} == set(experiment.SCENARIO_KINDS)


def test_cli_experiment_end_to_end(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    out = tmp_path / "out"
    assert main(["experiment", str(config), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "2 cell(s): 2 ran, 0 skipped" in printed and str(out / "results.csv") in printed
    rows = read_rows(out / "results.csv")
    assert sorted(r["n_slices"] for r in rows) == ["1", "2"]
    assert main(["experiment", str(config), "--out", str(out), "--quiet"]) == 0
    assert "0 ran, 2 skipped" in capsys.readouterr().out
    assert main(["experiment", str(config), "--out", str(out), "--quiet", "--no-resume",
                 "--plots"]) == 0
    printed = capsys.readouterr().out
    assert "2 ran, 0 skipped" in printed
    assert (out / "plots" / "comparison.md").is_file()


def test_cli_experiment_reports_config_errors(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('[grid]\nmodel = "bpr-mff"\n')
    assert main(["experiment", str(config), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "grid.model[0]" in err and "bpr-mf" in err
    assert issubclass(ValidationError, SisakitError)
