"""Attribute-inference attackers: predict a user attribute (gender, age group…) from embeddings.

Evaluation protocol (as in Li et al., ACM MM 2023): classes are balanced by seeded
down-sampling of the majority classes, then scored with
``RepeatedStratifiedKFold(n_splits=5, n_repeats=3, shuffle=True, random_state=seed)``;
accuracy, precision, recall, F1 and AUC (macro one-vs-rest for more than two classes) are
reported as mean ± std over all folds and repeats.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold

from .._validation import MAX_COUNT, MAX_STEPS, MAX_WIDTH
from ..constraints import Constraint, Interval, Sizes
from ..errors import ValidationError
from ..hookspecs import hookimpl
from .base import MAX_ATTACK_SEED, Attacker, AttackResult


def _check_xy(features: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ValidationError(f"features must be a 2-D (n_users, dim) array, got shape {x.shape}")
    if y.shape != (len(x),):
        raise ValidationError(
            f"labels must have one entry per row of features ({len(x)}), got shape {y.shape}"
        )
    if not np.isfinite(x).all():
        raise ValidationError("features contain NaN or infinite values; fix the embeddings first")
    if len(np.unique(y)) < 2:
        raise ValidationError(
            "labels hold a single class; an attribute attack needs at least two groups"
        )
    return x, y


def balance(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices of a class-balanced subsample (every class down-sampled to the smallest)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    n = counts.min()
    picks = [rng.choice(np.flatnonzero(labels == c), size=n, replace=False) for c in classes]
    return np.sort(np.concatenate(picks))


class AttributeAttacker(Attacker):
    """Base of the attribute attackers: a scikit-learn-style classifier plus the protocol."""

    seed: int
    n_splits: int
    n_repeats: int

    #: The protocol parameters; subclasses add their classifier's
    #: (``{**AttributeAttacker.parameter_constraints, ...}``).
    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "seed": Interval(int, 0, MAX_ATTACK_SEED),
        "n_splits": Interval(int, 2, MAX_COUNT),  # k-fold needs k >= 2
        "n_repeats": Interval(int, 1, MAX_COUNT),
    }

    def _make(self) -> Any:  # pragma: no cover - abstract in spirit
        raise NotImplementedError

    def fit(self, features: np.ndarray, labels: np.ndarray) -> AttributeAttacker:
        x, y = _check_xy(features, labels)
        self.classes_, codes = np.unique(y, return_inverse=True)
        self._clf = self._make().fit(x, codes)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        if not hasattr(self, "_clf"):
            raise ValidationError("fit the attacker before predict_proba()")
        return self._clf.predict_proba(np.asarray(features, dtype=np.float64))

    def evaluate(self, features: np.ndarray, labels: np.ndarray) -> AttackResult:
        """Balanced, repeated stratified k-fold evaluation of the attack (the paper protocol)."""
        self.validate_params()
        x, y = _check_xy(features, labels)
        keep = balance(y, self.seed)
        x, y = x[keep], y[keep]
        classes, codes = np.unique(y, return_inverse=True)
        if np.bincount(codes).min() < self.n_splits:
            raise ValidationError(
                f"too few users per class after balancing ({np.bincount(codes).min()}) for "
                f"{self.n_splits}-fold evaluation; use more users or fewer splits"
            )
        folds = RepeatedStratifiedKFold(n_splits=self.n_splits, n_repeats=self.n_repeats,
                                        random_state=self.seed)
        scores: dict[str, list[float]] = {k: [] for k in
                                          ("accuracy", "precision", "recall", "f1", "auc")}
        avg = "binary" if len(classes) == 2 else "macro"
        for train_idx, test_idx in folds.split(x, codes):
            clf = self._make().fit(x[train_idx], codes[train_idx])
            proba = clf.predict_proba(x[test_idx])
            pred = proba.argmax(1)
            truth = codes[test_idx]
            scores["accuracy"].append(accuracy_score(truth, pred))
            scores["precision"].append(precision_score(truth, pred, average=avg, zero_division=0))
            scores["recall"].append(recall_score(truth, pred, average=avg, zero_division=0))
            scores["f1"].append(f1_score(truth, pred, average=avg, zero_division=0))
            scores["auc"].append(roc_auc_score(truth, proba[:, 1]) if len(classes) == 2 else
                                 roc_auc_score(truth, proba, multi_class="ovr",
                                               average="macro"))
        details = {f"{k}_mean": float(np.mean(v)) for k, v in scores.items()}
        details.update({f"{k}_std": float(np.std(v)) for k, v in scores.items()})
        details.update({"n_users": len(y), "n_classes": len(classes),
                        "folds": self.n_splits * self.n_repeats})
        return AttackResult(auc=details["auc_mean"], accuracy=details["accuracy_mean"],
                            details=details)


class XGBoostAttributeAttacker(AttributeAttacker):
    """Gradient-boosted trees (xgboost) on user embeddings; defaults follow the reference code.

    Parameters
    ----------
    max_depth : int
        Maximum tree depth, in ``[1, 16384]``.
    n_estimators : int
        Boosting rounds, in ``[1, 100000]``.
    learning_rate : float
        Shrinkage of each round, in ``(0, 1]``.
    seed : int
        Seeds the classifier, the class balancing and the folds, in ``[0, 2**32 - 1]``.
    n_splits, n_repeats : int
        Cross-validation folds (``>= 2``) and repeats (``>= 1``) of :meth:`evaluate`.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **AttributeAttacker.parameter_constraints,
        "max_depth": Interval(int, 1, MAX_WIDTH),
        "n_estimators": Interval(int, 1, MAX_STEPS),
        "learning_rate": Interval(float, 0, 1, closed="right", example=0.5),
    }

    def __init__(self, max_depth: int = 4, n_estimators: int = 50, learning_rate: float = 0.5,
                 seed: int = 0, n_splits: int = 5, n_repeats: int = 3) -> None:
        self.max_depth = max_depth
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.seed = seed
        self.n_splits = n_splits
        self.n_repeats = n_repeats
        self.validate_params()  # refuse bad parameters now, before any fit trains

    def _make(self) -> Any:
        self.validate_params()
        from xgboost import XGBClassifier

        return XGBClassifier(max_depth=self.max_depth, n_estimators=self.n_estimators,
                             learning_rate=self.learning_rate, random_state=self.seed,
                             n_jobs=1, tree_method="hist", verbosity=0)


class MLPAttributeAttacker(AttributeAttacker):
    """A scikit-learn multi-layer perceptron (one hidden layer of 100 units by default).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int
        Units per hidden layer, each in ``[1, 16384]`` (empty: no hidden layer).
    max_iter : int
        Maximum optimiser epochs, in ``[1, 100000]``.
    seed : int
        Seeds the classifier, the class balancing and the folds, in ``[0, 2**32 - 1]``.
    n_splits, n_repeats : int
        Cross-validation folds (``>= 2``) and repeats (``>= 1``) of :meth:`evaluate`.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **AttributeAttacker.parameter_constraints,
        "hidden_layer_sizes": Sizes(example="(100,)"),
        "max_iter": Interval(int, 1, MAX_STEPS),
    }

    def __init__(self, hidden_layer_sizes: tuple[int, ...] = (100,), max_iter: int = 300,
                 seed: int = 0, n_splits: int = 5, n_repeats: int = 3) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_iter = max_iter
        self.seed = seed
        self.n_splits = n_splits
        self.n_repeats = n_repeats
        self.validate_params()  # refuse bad parameters now, before any fit trains
        self.hidden_layer_sizes = tuple(int(h) for h in hidden_layer_sizes)

    def _make(self) -> Any:
        self.validate_params()
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=self.hidden_layer_sizes, max_iter=self.max_iter,
            random_state=self.seed, early_stopping=True))


@hookimpl
def register_attackers(register):
    register("xgboost-attribute", XGBoostAttributeAttacker)
    register("mlp-attribute", MLPAttributeAttacker)
