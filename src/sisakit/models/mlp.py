"""``mlp-classifier``: a small multi-layer perceptron that classifies samples by their features.

Used for class-level SISA on labelled samples (see :mod:`sisakit.classification`): in the
:class:`~sisakit.Interactions` a sample is a *user* (its feature row is
``Interactions.user_features``) and its class label is the *item* of its one record. The
network maps a feature row to one logit per class (per item of the id space) and trains with
softmax cross-entropy.

All randomness (initialisation and shuffling) comes from seeded generators and the Adam state is
part of the checkpoint, so SISA retraining is bit-exact on the CPU (and on CUDA under
deterministic algorithms, which the engine turns on).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .._device import resolve_device, torch_generator
from .._rng import INIT, derive_seed, seed_from_tensor
from .._validation import MAX_BATCH
from ..constraints import Constraint, Device, Interval, Sizes
from ..errors import ValidationError
from ..hookspecs import hookimpl
from ._module_state import load_module_state, module_state
from .base import ShardModel


def _features(data: Any) -> np.ndarray:
    feats = getattr(data, "user_features", None)
    if feats is None:
        raise ValidationError(
            "mlp-classifier needs a feature row per sample: the Interactions has no "
            "user_features; build the data with sisakit.classification.from_samples(X, y) or "
            "load_digits_data()/load_image_folder()"
        )
    return feats


class MLPClassifier(ShardModel):
    """A ReLU MLP classifier trained with cross-entropy and Adam, mini-batch by mini-batch.

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer sizes (``()`` gives multinomial logistic regression).
    lr : float
        Adam learning rate.
    weight_decay : float
        L2 penalty (Adam's ``weight_decay``).
    batch_size : int
        Samples per optimizer step.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.

    Notes
    -----
    :meth:`predict_logits` classifies *new* samples from their features and is what
    :func:`sisakit.classification.predict_proba` uses. :meth:`~sisakit.ShardModel.scores` (the
    :class:`~sisakit.ShardModel` interface, for samples of the id space) reads the feature matrix
    of the data last passed to :meth:`~sisakit.ShardModel.setup`,
    :meth:`~sisakit.ShardModel.partial_fit` or :meth:`~sisakit.ShardModel.bind_space` (the
    SISA engine binds its remaining data after every fit, forget and load, so forgotten samples'
    rows are dropped from every shard model); that matrix is held by reference and never written
    into checkpoints.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "hidden": Sizes(example="(64,)"),
        "lr": Interval(float, 0, None, closed="right", example=0.01),
        "weight_decay": Interval(float, 0, None, example=0.0),
        "batch_size": Interval(int, 1, MAX_BATCH),
        "device": Device(),
    }

    def __init__(self, hidden: tuple[int, ...] = (64,), lr: float = 0.01, weight_decay: float = 0.0,
                 batch_size: int = 64, device: str = "auto") -> None:
        self.hidden = hidden  # stored as a tuple of ints by _validate
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.device = device
        self._validate()  # refuse bad parameters now, before any fit allocates
        self._net: nn.Sequential | None = None
        self._space_features: np.ndarray | None = None

    def _validate(self) -> None:
        self.validate_params()
        self.hidden = tuple(int(h) for h in self.hidden)

    def _build(self, n_features: int, n_classes: int, seed: int) -> None:
        self._validate()
        sizes = [int(n_features), *(int(h) for h in self.hidden)]
        with torch.random.fork_rng(devices=[]):  # seeded init without touching global state
            torch.manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
            layers: list[nn.Module] = []
            for a, b in itertools.pairwise(sizes):  # nn.Linear draws its init when built
                layers += [nn.Linear(a, b), nn.ReLU()]
            layers.append(nn.Linear(sizes[-1], int(n_classes)))
            net = nn.Sequential(*layers)
        self._net = net.to(resolve_device(self.device))
        self._opt = torch.optim.Adam(self._net.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay, foreach=False)
        self.n_features, self.n_classes = int(n_features), int(n_classes)

    def setup(self, space: Any, *, seed: int) -> None:
        feats = _features(space)
        self._init_seed = derive_seed(seed, INIT)
        self._build(feats.shape[1], space.n_items, self._init_seed)
        self._space_features = feats

    def bind_space(self, space: Any) -> None:
        """Read scores' feature rows from ``space`` (the engine's remaining data) from now on."""
        feats = getattr(space, "user_features", None)
        if feats is not None:
            self._space_features = feats

    def _require(self) -> nn.Sequential:
        if self._net is None:
            raise ValidationError("this model has no parameters yet; call fit() or setup() first")
        return self._net

    def _device(self) -> torch.device:
        return next(self._require().parameters()).device

    def partial_fit(self, data: Any, *, epoch_seeds: Sequence[int]) -> None:
        net = self._require()
        feats = _features(data)
        if feats.shape[1] != self.n_features or data.n_items != self.n_classes:
            raise ValidationError(
                f"data has {feats.shape[1]} features and {data.n_items} classes but this model was "
                f"set up for {self.n_features} and {self.n_classes}; call setup() on this data"
            )
        self._space_features = feats
        if len(data) == 0 or not epoch_seeds:
            return
        dev = self._device()
        x_all = torch.from_numpy(feats[data.user_idx]).to(dev)  # fancy indexing copies
        y_all = torch.from_numpy(np.array(data.item_idx)).to(dev)
        loss_fn = nn.CrossEntropyLoss()
        bs, n = int(self.batch_size), len(data)
        net.train()
        for seed in epoch_seeds:
            perm = torch.randperm(n, generator=torch_generator(seed)).to(dev)
            for start in range(0, n, bs):  # one iteration per mini-batch, vectorised inside
                idx = perm[start:start + bs]
                self._opt.zero_grad(set_to_none=True)
                loss_fn(net(x_all[idx]), y_all[idx]).backward()
                self._opt.step()
        net.eval()

    @torch.no_grad()
    def predict_logits(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Class logits ``(n, n_classes)`` (float32, on the CPU) of feature rows ``(n, d)``."""
        net = self._require()
        x = torch.as_tensor(np.array(features, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValidationError(
                f"features must have shape (n, {self.n_features}), got {tuple(x.shape)}; pass the "
                "same feature layout the model was trained on"
            )
        return net(x.to(self._device())).float().cpu()

    def scores(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Class logits of samples of the id space (rows of the last data seen)."""
        self._require()
        if self._space_features is None:
            raise ValidationError(
                "this model has not seen any data with features yet (it was loaded from a "
                "checkpoint); call predict_logits(features) or partial_fit() first"
            )
        u = np.asarray(torch.as_tensor(np.asarray(user_idx), dtype=torch.int64))
        return self.predict_logits(self._space_features[u])

    def state_dict(self) -> dict[str, torch.Tensor]:
        net = self._require()
        return module_state(net, self._opt, self._init_seed)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` (no :meth:`setup` needed first)."""
        weights = sorted((k for k in state if k.startswith("net.") and k.endswith(".weight")),
                         key=lambda k: int(k.split(".")[1]))
        if not weights or "init_seed" not in state:
            raise ValidationError("state was not saved by an mlp-classifier model")
        shapes = [tuple(state[k].shape) for k in weights]
        if [s[0] for s in shapes[:-1]] != [int(h) for h in self.hidden]:
            raise ValidationError(
                f"state has hidden layers {[s[0] for s in shapes[:-1]]} but this model has "
                f"hidden={self.hidden}; build the model with the hidden sizes it was saved with"
            )
        self._init_seed = seed_from_tensor(state["init_seed"])
        self._build(shapes[0][1], shapes[-1][0], self._init_seed)
        net = self._require()
        load_module_state(net, self._opt, state, "mlp-classifier")

    optimizer_impl = "torch.optim.Adam(foreach=False), autograd"

    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self._require().parameters()))


@hookimpl
def register_models(register):
    register("mlp-classifier", MLPClassifier)
