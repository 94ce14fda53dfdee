"""The sisakit command line."""

from __future__ import annotations

import json

import pytest

import sisakit
from sisakit.cli import main


def test_plugins_json_lists_every_component(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {tuple(sorted(r)) for r in rows} == {("kind", "name", "plugin", "status", "version")}
    assert {r["status"] for r in rows} == {"ok"}
    listed = {(r["kind"], r["name"]) for r in rows}
    for kind in sisakit.plugins.KINDS:
        for name in sisakit.plugins.names(kind):
            assert (kind, name) in listed
    assert ("unlearner", "sisa") in listed and ("model", "bpr-mf") in listed


def test_plugins_table(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["KIND", "NAME", "PLUGIN"]
    assert "random-user" in out and sisakit.__version__ in out


def test_demo_json_proves_exactness_and_speedup(capsys, tmp_path):
    code = main(["demo", "--json", "--quiet", "--out", str(tmp_path / "demo")])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["exact"] is True
    assert result["exact_tensors_compared"] > 0
    assert result["same_recommendations"] is True
    assert result["speedup"] > 1.0
    assert result["forget_one"]["records_removed"] > 0
    assert len(result["forget_one"]["shards_retrained"]) == 1
    for key in ("before", "after", "full_model"):
        assert 0.0 < result[key]["ndcg@10"] <= 1.0
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["exact_tensors_compared"] == result["exact_tensors_compared"]
    assert sisakit.SISA.load(tmp_path / "demo" / "sisa").history[-1]["n_users"] == 20


def test_unknown_command_exits_nonzero():
    with pytest.raises(SystemExit) as err:
        main(["no-such-command"])
    assert err.value.code == 2
