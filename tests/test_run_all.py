"""benchmarks/run_all.py: registry, resume rule and RESULTS.md rendering (no benchmark is run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402


def test_registry_names_are_unique_and_cover_every_script():
    names = [b.name for b in run_all.REGISTRY]
    assert len(names) == len(set(names))
    outputs = [b.output for b in run_all.REGISTRY]
    assert len(outputs) == len(set(outputs)), "two benchmarks would write the same JSON"
    registered = {b.script for b in run_all.REGISTRY}
    scripts = {p.name for p in BENCH.glob("bench_*.py")}
    assert not scripts - registered, (
        f"benchmark scripts missing from run_all.REGISTRY: {sorted(scripts - registered)}")
    for b in run_all.REGISTRY:
        assert (BENCH / b.script).is_file(), b.script
        assert b.runs and all(isinstance(r, tuple) for r in b.runs)
        assert "--out" not in [a for r in b.runs for a in r], "run_all passes --out itself"


_HELP_ALL = """
import contextlib, io, json, runpy, sys
out = {}
for script in sys.argv[1:]:
    buf, sys.argv = io.StringIO(), [script, "--help"]
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(script, run_name="__main__")
        code = "no exit"
    except SystemExit as exc:
        code = exc.code
    out[script] = [code, buf.getvalue()]
print(json.dumps(out))
"""


def test_every_script_help_parses_and_knows_the_registered_options():
    # One interpreter runs every script's --help (torch is imported once: seconds, not minutes).
    scripts = sorted({b.script for b in run_all.REGISTRY})
    proc = subprocess.run([sys.executable, "-c", _HELP_ALL, *(str(BENCH / s) for s in scripts)],
                          cwd=BENCH.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    helps = {}
    for s in scripts:
        code, text = result[str(BENCH / s)]
        assert code in (0, None) and "usage:" in text, f"{s} --help exited with {code}"
        helps[s] = text
    for b in run_all.REGISTRY:
        known = set(re.findall(r"--[a-z0-9][a-z0-9-]*", helps[b.script]))
        assert "--out" in known, f"{b.script} has no --out option"
        for args in (*b.runs, *(b.smoke or ())):
            for a in args:
                if a.startswith("--"):
                    assert a in known, f"{b.name}: {b.script} has no option {a}"


# ---------------------------------------------------------------------------------------------
# The resume rule, on a throw-away git repository


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c",
                           "commit.gpgsign=false", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def _write_json(path: Path, commit: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": {"commit": commit} if commit else {}}))


def _touch_older(path: Path, than: Path) -> None:
    t = than.stat().st_mtime - 100
    os.utime(path, (t, t))


@pytest.fixture
def repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    root = tmp_path / "repo"
    (root / "src" / "sisakit" / "sub").mkdir(parents=True)
    (root / "benchmarks").mkdir()
    (root / "src" / "sisakit" / "sub" / "core.py").write_text("x = 1\n")
    (root / "benchmarks" / "bench_x.py").write_text("print(1)\n")
    (root / "benchmarks" / "bench_sisa.py").write_text("print(2)\n")
    (root / "benchmarks" / "bench_y.py").write_text("print(3)\n")
    (root / "README.md").write_text("hi\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "init")
    return root


def _bench() -> run_all.Benchmark:
    return run_all.Benchmark("x", "bench_x.py", "x.json", ((),), lambda d: "", "test")


def test_state_git_rule(repo, tmp_path):
    results, b = tmp_path / "results", _bench()
    assert run_all.state(b, results, repo)[0] == "missing"
    head = _git(repo, "rev-parse", "HEAD")
    _write_json(results / "x.json", head)
    assert run_all.state(b, results, repo)[0] == "fresh"

    (results / "x.json").write_text("{not json")
    assert run_all.state(b, results, repo)[0] == "stale"
    _write_json(results / "x.json", None)
    assert run_all.state(b, results, repo) == ("stale", "the JSON records no commit")
    _write_json(results / "x.json", "0" * 40)
    assert "not in this repository" in run_all.state(b, results, repo)[1]

    # A later commit to an unrelated file or another benchmark's script keeps it fresh.
    _write_json(results / "x.json", head)
    (repo / "README.md").write_text("changed\n")
    (repo / "benchmarks" / "bench_y.py").write_text("print(4)\n")
    _git(repo, "commit", "-q", "-am", "docs")
    assert run_all.state(b, results, repo)[0] == "fresh"
    # ... a later commit to the library (any depth), its script or bench_sisa.py does not.
    for path in ("src/sisakit/sub/core.py", "benchmarks/bench_x.py", "benchmarks/bench_sisa.py"):
        _write_json(results / "x.json", _git(repo, "rev-parse", "HEAD"))
        (repo / path).write_text((repo / path).read_text() + "# edit\n")
        _git(repo, "commit", "-q", "-am", f"edit {path}")
        st, why = run_all.state(b, results, repo)
        assert st == "stale" and "code changed" in why, (path, why)


def test_state_uncommitted_changes(repo, tmp_path):
    results, b = tmp_path / "results", _bench()
    _write_json(results / "x.json", _git(repo, "rev-parse", "HEAD"))
    core = repo / "src" / "sisakit" / "sub" / "core.py"
    core.write_text("x = 2\n")  # edited after the result was written
    st, why = run_all.state(b, results, repo)
    assert st == "stale" and "uncommitted" in why
    _touch_older(core, results / "x.json")  # edited before the run: the run measured it
    assert run_all.state(b, results, repo)[0] == "fresh"
    new = repo / "src" / "sisakit" / "new.py"  # a new, untracked module counts too
    new.write_text("y = 1\n")
    assert run_all.state(b, results, repo)[0] == "stale"


def test_state_file_time_fallback_outside_git(tmp_path):
    root = tmp_path / "plain"
    (root / "src" / "sisakit").mkdir(parents=True)
    (root / "benchmarks").mkdir()
    lib = root / "src" / "sisakit" / "core.py"
    lib.write_text("x = 1\n")
    (root / "benchmarks" / "bench_x.py").write_text("print(1)\n")
    results, b = tmp_path / "results", _bench()
    _write_json(results / "x.json", None)
    for f in (lib, root / "benchmarks" / "bench_x.py"):
        _touch_older(f, results / "x.json")
    assert run_all.state(b, results, root)[0] == "fresh"
    lib.write_text("x = 2\n")
    os.utime(lib, (results.joinpath("x.json").stat().st_mtime + 10,) * 2)
    assert run_all.state(b, results, root)[0] == "stale"


# ---------------------------------------------------------------------------------------------
# Rendering


def test_render_real_results_has_a_section_per_existing_json():
    md = run_all.render()
    assert md.startswith("<!-- Generated by benchmarks/run_all.py")
    assert "Could not render" not in md
    for b in run_all.REGISTRY:
        present = (run_all.RESULTS / b.output).is_file()
        assert (f"## `{b.name}`:" in md) == present, b.name
    assert "| S | R | NDCG@10" in md or not (run_all.RESULTS / "bench_sisa.json").is_file()


def test_render_tolerates_missing_and_broken_files(tmp_path):
    (tmp_path / "bench_optimizer.json").write_text(json.dumps({
        "config": {"users": 10, "items": 5, "factors": 4, "batch_size": 8, "steps": 3, "threads": 1},
        "ms_per_step": {"adam": 2.0, "sisakit": 1.0},
        "machine": {"commit": None, "cpu_count": 2}, "created": "2026-01-01T00:00:00Z"}))
    (tmp_path / "bench_sisa.json").write_text("{broken")
    (tmp_path / "bench_ials.json").write_text(json.dumps({"machine": {}}))  # unrenderable
    md = run_all.render(tmp_path)
    assert "## `optimizer`:" in md and "2.0×" in md and "2026-01-01 00:00:00 UTC" in md
    assert "## `sisa`:" not in md  # broken JSON counts as missing
    assert "## `ials`:" in md and "Could not render" in md
    assert md.count("not run yet") == len(run_all.REGISTRY) - 2


def test_cli_list_and_dry_run(tmp_path, capsys):
    assert run_all.main(["--list", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(b.name in out for b in run_all.REGISTRY) and "missing" in out
    assert run_all.main(["--dry-run", "--only", "sisa", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "bench_sisa.py" in out and str(tmp_path / "bench_sisa.json") in out
    assert not (tmp_path / "RESULTS.md").exists()
    with pytest.raises(SystemExit):
        run_all.main(["--smoke"])  # smoke results must not land in benchmarks/results
