"""Suite-wide fixtures.

Every test runs with a default torch thread count that differs from the engine's
(``threads_per_shard=1`` unless a test says otherwise), so a test that computes learned state
outside the engine under the process default and compares it bit for bit with the engine's
fails here, not only on a machine whose core count or vector extensions differ from ours.
``SISAKIT_TEST_THREADS`` sets that default (CI runs the exactness tests again with 1).
"""

from __future__ import annotations

import os

import pytest
import torch

_DEFAULT_TEST_THREADS = 3  # not the engine's 1, and not this 2-core machine's own default


def _test_threads() -> int:
    raw = os.environ.get("SISAKIT_TEST_THREADS", "").strip()
    if not raw:
        return _DEFAULT_TEST_THREADS
    if not raw.isdigit() or int(raw) < 1:
        raise pytest.UsageError(f"SISAKIT_TEST_THREADS must be a positive integer, got {raw!r}")
    return int(raw)


@pytest.fixture(autouse=True)
def _default_torch_threads():
    """Give the test a default thread count unlike the engine's; restore it afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(_test_threads())
    try:
        yield
    finally:
        torch.set_num_threads(old)
