"""Membership-inference attack models: was a user (or a (user, item) pair) in the training data?

These are the *classifiers* of the attacks; the pipelines that turn a recommender's output into
their features (shadow training, user and interaction features, unlearning audits) live in
:mod:`sisakit.membership`.

* ``membership`` (:class:`MembershipAttacker`): the attack model of Zhang et al. (CCS 2021), a
  multi-layer perceptron over user feature vectors (the difference between the centroid of a
  user's items and the centroid of the items recommended to them).
* ``membership-interaction`` (:class:`InteractionMembershipAttacker`): an MLP over a few
  per-pair features computed from any model's scores (rank of the item among the user's
  scores, its z-score, the item's popularity, the user's activity).

They are separate plugins rather than two modes of one because their inputs have different,
fixed schemas (a ``dim``-dimensional embedding difference vs. four scalar pair features) and
different sensible capacities; a run that records ``"membership-interaction"`` says exactly which
features the model expects.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._validation import MAX_STEPS
from ..constraints import Constraint, Interval, Sizes
from ..errors import ValidationError
from ..hookspecs import hookimpl
from .base import MAX_ATTACK_SEED, Attacker


class MembershipAttacker(Attacker):
    """User-level membership attack model: a standardised scikit-learn MLP (binary).

    Labels are ``1`` for members and ``0`` for non-members (any two classes work; probabilities
    follow ``numpy.unique(labels)``).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int
        Units per hidden layer, each in ``[1, 16384]`` (empty: no hidden layer).
    max_iter : int
        Maximum optimiser epochs, in ``[1, 100000]`` (early stopping on a 10 % validation split
        usually stops it sooner).
    alpha : float
        L2 penalty, ``>= 0``.
    seed : int
        Seeds the weight initialisation and the validation split, in ``[0, 2**32 - 1]``: same
        data and seed, same probabilities.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "hidden_layer_sizes": Sizes(example="(64, 32)"),
        "max_iter": Interval(int, 1, MAX_STEPS),
        "alpha": Interval(float, 0, None, example=1e-4),
        "seed": Interval(int, 0, MAX_ATTACK_SEED),
    }

    def __init__(self, hidden_layer_sizes: tuple[int, ...] = (64, 32), max_iter: int = 300,
                 alpha: float = 1e-4, seed: int = 0) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_iter = max_iter
        self.alpha = alpha
        self.seed = seed
        self.validate_params()  # refuse bad parameters now, before any fit trains
        self.hidden_layer_sizes = tuple(int(h) for h in hidden_layer_sizes)

    def _make(self) -> Any:
        self.validate_params()
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=self.hidden_layer_sizes, max_iter=self.max_iter,
            alpha=self.alpha, random_state=self.seed, early_stopping=True))

    def fit(self, features: np.ndarray, labels: np.ndarray) -> MembershipAttacker:
        """Train on ``(features, labels)``; two classes are required.

        Parameters
        ----------
        features : ndarray, shape (n, d)
            Finite feature vectors.
        labels : ndarray, shape (n,)
            Two classes (1 = member, 0 = non-member by convention).

        Returns
        -------
        self
        """
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels)
        if x.ndim != 2 or not np.isfinite(x).all():
            raise ValidationError(f"features must be a finite 2-D (n, dim) array, got shape "
                                  f"{x.shape}; compute them with sisakit.membership")
        if y.shape != (len(x),):
            raise ValidationError(f"labels must have one entry per row of features ({len(x)}), "
                                  f"got shape {y.shape}")
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) != 2:
            raise ValidationError(
                f"membership labels must hold exactly two classes (member / non-member), got "
                f"{len(classes)}: {classes[:10].tolist()}"
            )
        if np.bincount(codes).min() < 5:
            raise ValidationError(
                f"too few examples of one class ({np.bincount(codes).min()}); give the attack "
                "at least 5 members and 5 non-members"
            )
        self.classes_ = classes
        self._clf = self._make().fit(x, codes)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities of each class, shape ``(n, 2)``, columns in ``classes_`` order."""
        if not hasattr(self, "_clf"):
            raise ValidationError("fit the attacker before predict_proba()")
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or not np.isfinite(x).all():
            raise ValidationError(
                f"features must be a finite 2-D array, got shape {x.shape}; compute them with "
                "sisakit.membership"
            )
        return self._clf.predict_proba(x)


class InteractionMembershipAttacker(MembershipAttacker):
    """Interaction-level membership attack model: a smaller MLP over per-pair features.

    Same interface as :class:`MembershipAttacker`; the features come from
    :func:`sisakit.membership.interaction_features`.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **MembershipAttacker.parameter_constraints,
        "hidden_layer_sizes": Sizes(example="(32, 16)"),  # shown in the error for a bad one
    }

    def __init__(self, hidden_layer_sizes: tuple[int, ...] = (32, 16), max_iter: int = 300,
                 alpha: float = 1e-4, seed: int = 0) -> None:
        super().__init__(hidden_layer_sizes, max_iter, alpha, seed)


@hookimpl
def register_attackers(register):
    register("membership", MembershipAttacker)
    register("membership-interaction", InteractionMembershipAttacker)
