#!/usr/bin/env bash
# Install sisakit from this checkout (editable, with the development extras).
#
# When torch is missing, the CPU build is installed first: a bare "torch" requirement can pull a
# multi-gigabyte CUDA build. On a machine with a GPU, install the torch build you want before
# running this script; pyproject.toml only declares a version range.
set -euo pipefail
PY="${PYTHON:-python}"
cd "$(dirname "$0")/.."
# SISAKIT_TORCH overrides the torch requirement, SISAKIT_TORCH_INDEX adds an index URL (for
# example PyTorch's CPU wheel index on machines whose default index serves CUDA builds).
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    spec="${SISAKIT_TORCH:-torch==2.13.0}"
    echo "torch is not installed: installing $spec first"
    if [ -n "${SISAKIT_TORCH_INDEX:-}" ]; then
        "$PY" -m pip install --quiet "$spec" --index-url "$SISAKIT_TORCH_INDEX"
    else
        "$PY" -m pip install --quiet "$spec"
    fi
fi
"$PY" -m pip install --quiet -e ".[dev]"
"$PY" -c "import sisakit, torch; print(f'sisakit {sisakit.__version__} installed (torch {torch.__version__})')"
