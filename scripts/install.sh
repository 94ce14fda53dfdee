#!/usr/bin/env bash
# Install sisakit from this checkout (editable, with the development extras).
#
# When torch is missing, the CPU build is installed first: a bare "torch" requirement can pull a
# multi-gigabyte CUDA build. On a machine with a GPU, install the torch build you want before
# running this script; pyproject.toml only declares a version range.
set -euo pipefail
PY="${PYTHON:-python}"
cd "$(dirname "$0")/.."
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "torch is not installed: installing the CPU build (torch==2.13.0) first"
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[dev]"
"$PY" -c "import sisakit, torch; print(f'sisakit {sisakit.__version__} installed (torch {torch.__version__})')"
