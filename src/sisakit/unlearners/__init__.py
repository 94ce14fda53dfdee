"""Unlearners: remove data from a trained model. Built-ins live in this package."""

from .approximate import ApproximateUnlearner, FineTune
from .base import (
    AttributeRequest,
    ForgetReport,
    ForgetRequest,
    UnlearnContext,
    Unlearner,
    UnlearnReport,
    UnlearnResult,
    as_context,
)
from .dual_memory import DualMemory, DualMemoryModel
from .potau import PotAU
from .retrain import RetrainUnlearner
from .sisa import SisaUnlearner

__all__ = [
    "ApproximateUnlearner",
    "AttributeRequest",
    "DualMemory",
    "DualMemoryModel",
    "FineTune",
    "ForgetReport",
    "ForgetRequest",
    "PotAU",
    "RetrainUnlearner",
    "SisaUnlearner",
    "UnlearnContext",
    "UnlearnReport",
    "UnlearnResult",
    "Unlearner",
    "as_context",
]
