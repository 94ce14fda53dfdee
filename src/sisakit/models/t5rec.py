"""``t5rec``: a Hugging Face T5 generative recommender over item-id tokens (extra ``sisakit[t5]``).

Each item is one token (item index ``i`` is token ``i + 1``; token ``0`` is T5's padding and
decoder start token). The encoder reads a user's history, the decoder generates the next item
in one step, and the scores are the decoder's logits over the item tokens. It is a
:class:`~sisakit.models.SASRec` in everything but the network (same histories, training loop,
scoring, saving, SISA and ``dual-memory`` support), so what the docs say of ``sasrec`` holds.

The network is built from a local configuration (a :class:`transformers.T5Config`, a ``dict``
or the path of a ``config.json``) or from local weights (a directory written by
``save_pretrained``); nothing is ever downloaded (``local_files_only=True``). Without either it
is a small T5 sized by ``factors``, ``n_blocks`` and ``n_heads``.

A generative model predicts the next item from a whole history, so training on every position
of a sequence means one encoder pass per position; ``train_positions`` samples a few positions
of each training sequence per step instead (the latest is always among them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .._device import resolve_device
from .._rng import seed_from_tensor
from .._validation import MAX_COUNT, short_repr
from ..constraints import Constraint, Interval, PathLike
from ..errors import ValidationError
from ..hookspecs import hookimpl
from ._module_state import load_module_state
from .sasrec import PAD, SASRec

__all__ = ["T5Rec", "T5RecNet"]


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValidationError("the t5rec model needs Hugging Face transformers: "
                              "pip install 'sisakit[t5]'") from exc
    return transformers


@dataclass(frozen=True)
class T5ConfigLike(Constraint):
    """None, a ``transformers.T5Config`` (anything with ``to_dict``), a ``dict`` or the path of
    a ``config.json`` (a ``str`` or :class:`pathlib.Path`; its existence is checked when the
    network is built)."""

    none: bool = True

    def check(self, name: str, value: Any) -> None:
        if value is None or isinstance(value, (str, Path, Mapping)) or hasattr(value, "to_dict"):
            return
        raise ValidationError(
            f"{name} must be None, a transformers.T5Config, a dict or a config.json path, "
            f"got {type(value).__name__} {short_repr(value)}; pass e.g. "
            f"{name}='path/to/config.json'")

    def invalid_values(self) -> list[Any]:
        return [3, 2.5, ["d_model", 8], object()]

    def valid_values(self) -> list[Any]:
        return [*super().valid_values(), "path/to/config.json", Path("config.json"),
                {"d_model": 8}]


class T5RecNet(nn.Module):
    """A T5 encoder-decoder scoring the next item of a history (the network of :class:`T5Rec`).

    Parameters
    ----------
    t5 : transformers.T5ForConditionalGeneration
        The model; its vocabulary holds at least ``n_items + 1`` tokens.
    n_items : int
        Items in the catalogue (tokens ``1..n_items``).
    """

    def __init__(self, t5: nn.Module, n_items: int) -> None:
        super().__init__()
        self.t5 = t5
        self.n_items = int(n_items)
        cfg = t5.config
        # T5 rescales the decoder output before a tied output layer
        self.out_scale = cfg.d_model ** -0.5 if cfg.tie_word_embeddings else 1.0

    def last_hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """Decoder state ``(batch, d_model)`` of the one generation step after each history."""
        real = (seq != PAD).long()
        enc = self.t5.encoder(input_ids=seq, attention_mask=real).last_hidden_state
        start = torch.full((len(seq), 1), int(self.t5.config.decoder_start_token_id),
                           dtype=torch.int64, device=seq.device)
        dec = self.t5.decoder(input_ids=start, encoder_hidden_states=enc,
                              encoder_attention_mask=real).last_hidden_state
        return dec[:, -1]

    def hidden_at(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """States ``(mask.sum(), d_model)`` predicting the item after each selected position:
        the history up to that position, right-aligned, through :meth:`last_hidden`."""
        rows, pos = torch.nonzero(mask, as_tuple=True)
        length = seq.shape[1]
        cols = pos[:, None] - (length - 1) + torch.arange(length, device=seq.device)[None, :]
        prefixes = torch.where(cols >= 0, seq[rows[:, None], cols.clamp_min(0)],
                               torch.zeros((), dtype=seq.dtype, device=seq.device))
        if len(prefixes) == 0:
            return torch.zeros(0, self.t5.config.d_model, device=seq.device)
        return self.last_hidden(prefixes)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """States ``(batch, max_len, d_model)`` for every position (one pass per position)."""
        mask = torch.ones_like(seq, dtype=torch.bool)
        return self.hidden_at(seq, mask).view(seq.shape[0], seq.shape[1], -1)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over item indices ``0..n_items-1`` (the item tokens of the output layer)."""
        return self.t5.lm_head(hidden * self.out_scale)[..., 1:self.n_items + 1]


class T5Rec(SASRec):
    """Generative next-item recommender on a Hugging Face T5 (needs ``sisakit[t5]``).

    Parameters
    ----------
    factors, n_blocks, n_heads : int
        ``d_model``, encoder and decoder layers, and attention heads of the T5 built when
        neither ``config`` nor ``weights`` is given (``d_ff = 2 · factors``).
    max_len, dropout, lr, weight_decay, batch_size, time_budget, score_batch, device
        As for :class:`~sisakit.models.SASRec` (``dropout`` only for the built T5).
    config : transformers.T5Config, dict or path, optional
        A local T5 configuration (a ``config.json`` path or its directory); its vocabulary is
        resized to the catalogue.
    weights : path, optional
        A local directory written by ``save_pretrained`` (an item-token T5 whose vocabulary
        covers the catalogue); loaded with ``local_files_only=True``.
    train_positions : int or None
        Positions per training sequence and step that predict their next item: the latest and
        ``train_positions - 1`` others drawn at random (seeded). ``None``: every position.

    Notes
    -----
    ``hidden_size`` is the T5's ``d_model``; ``dual-memory`` adapts
    :attr:`lora_targets` by default.
    """

    optimizer_impl = "torch.optim.Adam(foreach=False), autograd (Hugging Face T5)"
    lora_targets: tuple[str, ...] = ("SelfAttention.q", "SelfAttention.v", "EncDecAttention.q",
                                     "EncDecAttention.v", "DenseReluDense.wi",
                                     "DenseReluDense.wo")

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **SASRec.parameter_constraints,
        "config": T5ConfigLike(),
        "weights": PathLike(none=True),
        "train_positions": Interval(int, 1, MAX_COUNT, none=True),
    }

    def __init__(self, factors: int = 64, n_blocks: int = 2, n_heads: int = 2,
                 max_len: int = 50, dropout: float = 0.1, lr: float = 0.001,
                 weight_decay: float = 0.0, batch_size: int = 128,
                 time_budget: float | None = None, score_batch: int = 512,
                 device: str = "auto", config: Any = None, weights: str | Path | None = None,
                 train_positions: int | None = 4) -> None:
        self.config = config
        self.weights = weights
        self.train_positions = train_positions
        # SASRec.__init__ stores the shared parameters and calls self._validate(), which checks
        # them all against parameter_constraints, these three included
        super().__init__(factors=factors, n_blocks=n_blocks, n_heads=n_heads, max_len=max_len,
                         dropout=dropout, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, time_budget=time_budget,
                         score_batch=score_batch, device=device)

    # ------------------------------------------------------------------ building
    def _t5_config(self, n_items: int) -> Any:
        tf = _transformers()
        cfg = self.config
        if cfg is None:
            d = int(self.factors)
            return tf.T5Config(vocab_size=n_items + 1, d_model=d, d_kv=d // int(self.n_heads),
                               d_ff=2 * d, num_layers=int(self.n_blocks),
                               num_decoder_layers=int(self.n_blocks),
                               num_heads=int(self.n_heads), dropout_rate=float(self.dropout),
                               feed_forward_proj="relu", tie_word_embeddings=True,
                               pad_token_id=PAD, eos_token_id=1, decoder_start_token_id=PAD)
        if isinstance(cfg, (str, Path)):
            path = Path(cfg)
            path = path / "config.json" if path.is_dir() else path
            if not path.is_file():
                raise ValidationError(f"T5 config {path} not found; pass a local config.json "
                                      "(nothing is downloaded)")
            try:
                cfg = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ValidationError(f"T5 config {path} is not valid JSON: {exc}") from exc
        if isinstance(cfg, Mapping):
            cfg = tf.T5Config(**dict(cfg))
        if not isinstance(cfg, tf.T5Config):
            raise ValidationError(f"config must be a T5Config, a dict or a config.json path, "
                                  f"got {type(cfg).__name__}")
        cfg = tf.T5Config(**cfg.to_dict())  # a copy
        cfg.vocab_size = n_items + 1
        cfg.pad_token_id = cfg.decoder_start_token_id = PAD
        return cfg

    def _build(self, n_users: int, n_items: int, seed: int) -> None:
        self._validate()
        tf = _transformers()
        dev = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching global state
            torch.manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
            if self.weights is not None:
                path = Path(self.weights)
                if not (path / "config.json").is_file():
                    raise ValidationError(f"T5 weights {path} not found: pass a local directory "
                                          "written by save_pretrained (nothing is downloaded)")
                t5 = tf.T5ForConditionalGeneration.from_pretrained(path, local_files_only=True)
                if t5.config.vocab_size < n_items + 1:
                    raise ValidationError(
                        f"the T5 in {path} has {t5.config.vocab_size} tokens but the catalogue "
                        f"needs {n_items + 1} (item i is token i + 1)")
            else:
                t5 = tf.T5ForConditionalGeneration(self._t5_config(n_items))
        t5.config.use_cache = False
        self._net = T5RecNet(t5, n_items).to(dev).eval()
        self._opt = torch.optim.Adam(self._net.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay, foreach=False)
        self.n_users, self.n_items = int(n_users), int(n_items)

    @property
    def hidden_size(self) -> int:
        """Size of the next-item representation (the T5's ``d_model``)."""
        return int(self._require().t5.config.d_model)

    # ------------------------------------------------------------------ training
    def next_item_loss(self, batch: torch.Tensor, inactive: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """Cross-entropy of the next item at the latest position of each sequence of ``batch``
        and at up to ``train_positions - 1`` other positions drawn from torch's (seeded)
        generator."""
        inputs, targets = batch[:, :-1], batch[:, 1:]
        mask = (inputs != PAD) & (targets != PAD)
        tp = self.train_positions
        if tp is not None and int(mask.sum()) > tp * len(batch):
            # random keys, the latest position first: keep the tp smallest keys per row
            key = torch.rand(mask.shape, device=mask.device)
            key[:, -1] = -1.0
            key = key.masked_fill(~mask, math.inf)
            keep = torch.zeros_like(mask)
            keep.scatter_(1, key.topk(tp, dim=1, largest=False).indices, True)
            mask &= keep
        net = self._require()
        logits = net.logits(net.hidden_at(inputs, mask))
        if inactive is not None and bool(inactive.any()):
            logits = logits.masked_fill(inactive, float("-inf"))
        return nn.functional.cross_entropy(logits, targets[mask] - 1)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = super().state_dict()
        state["n_items"] = torch.tensor(self.n_items, dtype=torch.int64)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` (into a model built with the same configuration)."""
        if any(k not in state for k in ("net.t5.shared.weight", "n_users", "n_items",
                                        "init_seed")):
            raise ValidationError("state was not saved by a t5rec model")
        self._init_seed = seed_from_tensor(state["init_seed"])
        self._build(int(state["n_users"]), int(state["n_items"]), self._init_seed)
        load_module_state(self._require(), self._opt, state, "t5rec")


@hookimpl
def register_models(register):
    register("t5rec", T5Rec)
