"""The engine moved to the :mod:`sisakit.sisa` package; this module keeps the names that
users' code imports from ``sisakit.engine``."""

from __future__ import annotations

from .sisa import SISA, EnsembleView, SISAConfig, parameters_equal, stage_epochs

__all__ = ["SISA", "EnsembleView", "SISAConfig", "parameters_equal", "stage_epochs"]
