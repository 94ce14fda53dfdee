"""Unlearners: remove data from a trained model. Built-ins live in this package."""

from .base import AttributeRequest, ForgetReport, ForgetRequest, Unlearner, UnlearnResult
from .dual_memory import DualMemory, DualMemoryModel
from .potau import PotAU
from .sisa import SisaUnlearner

__all__ = [
    "AttributeRequest",
    "DualMemory",
    "DualMemoryModel",
    "ForgetReport",
    "ForgetRequest",
    "PotAU",
    "SisaUnlearner",
    "UnlearnResult",
    "Unlearner",
]
