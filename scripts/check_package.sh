#!/usr/bin/env bash
# Build the sdist and wheel, check them, install the wheel into a fresh virtual environment and
# run the demo from it: proves the packaging, not just the source tree.
set -euo pipefail
PY="${PYTHON:-python}"
cd "$(dirname "$0")/.."
work="$(mktemp -d "${TMPDIR:-/tmp}/sisakit-pkg.XXXXXX")"
trap 'rm -rf "$work"' EXIT
"$PY" -m build --no-isolation --outdir "$work/dist" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
"$PY" -m twine check --strict "$work"/dist/*
wheel="$(ls "$work"/dist/*.whl)"
# The wheel holds the package only: no tests, benchmarks, examples or data files.
"$PY" - "$wheel" <<'PYEOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
bad = [n for n in names if not (n.startswith("sisakit/") or ".dist-info/" in n)]
bad += [n for n in names if n.endswith((".csv", ".dat", ".parquet", ".npz", ".pt", ".zip"))]
assert "sisakit/py.typed" in names, "py.typed missing from the wheel"
assert not bad, f"unexpected files in the wheel: {bad}"
print(f"wheel ok: {len(names)} files")
PYEOF
# Dependencies come from the current environment (no download); the wheel's own copy of sisakit
# shadows the editable checkout because the venv's site-packages comes first.
"$PY" -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --no-deps "$wheel"
cd "$work"
"$work/venv/bin/python" - <<'PYEOF'
import sisakit, sys
assert sys.prefix in sisakit.__file__, f"imported {sisakit.__file__}, not the installed wheel"
print(f"sisakit {sisakit.__version__} imported from {sisakit.__file__}")
PYEOF
"$work/venv/bin/sisakit" demo --json --quiet --out "$work/demo" >"$work/demo.json"
"$work/venv/bin/python" -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['exact'] is True, d; print('demo from the wheel: exact =', d['exact'])" "$work/demo.json"
