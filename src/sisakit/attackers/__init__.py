"""Attackers: evidence of what a model still reveals."""

from .base import AttackResult, Attacker

__all__ = ["AttackResult", "Attacker"]
