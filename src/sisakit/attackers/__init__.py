"""Attackers: evidence of what a model still reveals. Built-ins live in this package."""

from .attribute import AttributeAttacker, MLPAttributeAttacker, XGBoostAttributeAttacker, balance
from .base import Attacker, AttackResult
from .membership import InteractionMembershipAttacker, MembershipAttacker

__all__ = [
    "AttackResult",
    "Attacker",
    "AttributeAttacker",
    "InteractionMembershipAttacker",
    "MLPAttributeAttacker",
    "MembershipAttacker",
    "XGBoostAttributeAttacker",
    "balance",
]
