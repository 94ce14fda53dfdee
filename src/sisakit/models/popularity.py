"""``popularity``: recommend the items with the most records in the training data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from ..constraints import Constraint, Device
from ..errors import ValidationError
from ..hookspecs import hookimpl
from .base import ShardModel


class Popularity(ShardModel):
    """Scores every item by its number of training records (the same list for every user).

    A sanity baseline: any personalised model should beat it. Epochs are irrelevant; the
    counts are recomputed from the cumulative data of each slice.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "device": Device(),
    }

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.validate_params()  # refuse bad parameters now, before any fit
        self._counts: torch.Tensor | None = None

    def setup(self, space: Any, *, seed: int) -> None:
        self._counts = torch.zeros(space.n_items, dtype=torch.float32)
        self.n_users, self.n_items = int(space.n_users), int(space.n_items)

    def partial_fit(self, data: Any, *, epoch_seeds: Sequence[int]) -> None:
        if self._counts is None:
            raise ValidationError("call setup() or fit() before partial_fit()")
        counts = np.bincount(data.item_idx, minlength=len(self._counts)).astype(np.float32)
        self._counts = torch.from_numpy(counts)

    def scores(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        if self._counts is None:
            raise ValidationError("this model is not fitted; call fit() first")
        return self._counts.expand(len(user_idx), -1).clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self._counts is None:
            raise ValidationError("this model is not fitted; call fit() first")
        return {"counts": self._counts.clone()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != {"counts"}:
            raise ValidationError(f"state has keys {sorted(state)}, expected ['counts']")
        self._counts = state["counts"].clone()

    def n_parameters(self) -> int:
        return 0 if self._counts is None else int(self._counts.numel())


@hookimpl
def register_models(register):
    register("popularity", Popularity)
