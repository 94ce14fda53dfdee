"""Executors: where SISA trains and retrains its shards (plugin kind ``"executor"``).

Pick one with ``SISA(..., executor="joblib", executor_params={"n_jobs": 4})``. Every executor
gives the same bits (see :doc:`/executors`).
"""

from .base import Executor
from .local import JoblibExecutor
from .ray import RayExecutor
from .serial import SerialExecutor

__all__ = ["Executor", "JoblibExecutor", "RayExecutor", "SerialExecutor"]
