"""The :class:`Attacker` interface: infer something private from what a model exposes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

from ..base import Component
from ..errors import ValidationError

#: Largest ``seed`` an attacker takes: scikit-learn's ``random_state`` (the MLP initialisation,
#: the validation split, the cross-validation folds) must lie in ``[0, 2**32 - 1]``.
MAX_ATTACK_SEED = 2**32 - 1


@dataclass(frozen=True)
class AttackResult:
    """Outcome of an attack: ROC AUC, accuracy and attacker-specific details."""

    auc: float
    accuracy: float
    details: dict[str, Any] = field(default_factory=dict)


class Attacker(Component, ABC):
    """Learns to predict a private label (an attribute, membership…) from features.

    Contract
    --------
    * :meth:`fit` trains on ``(features, labels)``; :meth:`predict_proba` returns the
      probability of each class, columns in the order of ``numpy.unique(labels)`` at fit time.
    * :meth:`attack` returns an :class:`AttackResult` on held-out data.
    * On data with a planted signal it beats chance; on shuffled labels it does not.
    """

    @abstractmethod
    def fit(self, features: np.ndarray, labels: np.ndarray) -> Attacker:
        """Train the attack model."""

    @abstractmethod
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, n_classes)."""

    def attack(self, features: np.ndarray, labels: np.ndarray) -> AttackResult:
        """Score the fitted attack on ``(features, labels)``: AUC (one-vs-rest macro) and accuracy."""
        labels = np.asarray(labels)
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValidationError("attack() needs labels of at least two classes")
        proba = np.asarray(self.predict_proba(features))
        fitted = getattr(self, "classes_", classes)
        pred = np.asarray(fitted)[proba.argmax(1)]
        if proba.shape[1] == 2:
            auc = roc_auc_score(labels == fitted[1], proba[:, 1])
        else:
            auc = roc_auc_score(labels, proba, multi_class="ovr", average="macro", labels=fitted)
        return AttackResult(auc=float(auc), accuracy=float(accuracy_score(labels, pred)))
