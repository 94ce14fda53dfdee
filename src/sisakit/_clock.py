"""The one timestamp format of sisakit's records (ledger lines, run history, results)."""

from __future__ import annotations

import time

#: UTC, to the second, ISO-8601: ``2026-12-04T18:39:13Z``.
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime(UTC_FORMAT, time.gmtime())
