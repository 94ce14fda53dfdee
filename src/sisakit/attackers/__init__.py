"""Attackers: evidence of what a model still reveals."""

from .base import Attacker, AttackResult

__all__ = ["AttackResult", "Attacker"]
