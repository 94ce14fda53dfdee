"""Unlearners: remove data from a trained model. Built-ins live in this package."""

from .base import AttributeRequest, ForgetReport, ForgetRequest, Unlearner, UnlearnResult
from .sisa import SisaUnlearner

__all__ = [
    "AttributeRequest",
    "ForgetReport",
    "ForgetRequest",
    "SisaUnlearner",
    "UnlearnResult",
    "Unlearner",
]
