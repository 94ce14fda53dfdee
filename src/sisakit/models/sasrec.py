"""``sasrec``: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

Each user's records, ordered by timestamp (ties and missing timestamps by ``record_id``), form
a sequence; the model reads the last ``max_len`` items through causal self-attention blocks and
predicts the next item at every position. The output layer is tied to the item embeddings and
trained with a full softmax over the active catalogue (cross-entropy), which is stronger than
the original one-negative binary loss and needs no negative sampling.

The network is built from plain ``nn.Linear`` projections with stable names
(``blocks.<b>.attn.{q,k,v,o}``, ``blocks.<b>.ff.{0,1}``) so that adapters such as the LoRA side
memory of :mod:`sisakit.unlearners.dual_memory` can target them by name.

Determinism: initialisation, user shuffling and dropout masks are all drawn from seeded
generators per epoch, and the optimizer state is checkpointed, so SISA retraining of a
``sasrec`` shard is bit-exact on the CPU (and on CUDA under deterministic algorithms).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._device import resolve_device
from .._rng import INIT, derive_seed, seed_from_tensor
from .._validation import MAX_BATCH, MAX_COUNT, MAX_WIDTH
from ..constraints import Constraint, Device, Interval
from ..errors import ValidationError
from ..hookspecs import hookimpl
from ._module_state import load_module_state, module_state
from .base import ShardModel

logger = logging.getLogger(__name__)

PAD = 0  # sequence value of an empty position; item index i is stored as i + 1


def time_order(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """Record positions ordered by user, then ``timestamp`` (if present), then ``record_id``
    (the order of every sequence sasrec reads), and where each user's block starts in it.

    Returns
    -------
    order : ndarray of int64
        Positions into ``data``'s records.
    starts : ndarray of int64
        ``(data.n_users,)``: index in ``order`` of each user's first record.
    """
    user = np.asarray(data.user_idx)
    keys = [np.asarray(data.record_id)]
    if data.timestamp is not None:
        keys.append(np.asarray(data.timestamp))
    keys.append(user)
    counts = np.bincount(user, minlength=int(data.n_users))
    return np.lexsort(keys), np.cumsum(counts) - counts


def user_sequences(data: Any, max_len: int) -> torch.Tensor:
    """The last ``max_len`` items of every user, oldest first, right-aligned and left-padded.

    Parameters
    ----------
    data : Interactions
        Records; ordered within each user by ``timestamp`` (if present) then ``record_id``.
    max_len : int
        Positions kept per user.

    Returns
    -------
    torch.Tensor
        ``(data.n_users, max_len)`` int64; item index ``i`` is stored as ``i + 1`` and ``0``
        marks padding. Users without records have an all-padding row.
    """
    n_users, length = int(data.n_users), int(max_len)
    out = torch.zeros(n_users, length, dtype=torch.int64)
    if len(data) == 0:
        return out
    order, starts = time_order(data)
    user = np.asarray(data.user_idx)[order]
    ends = np.r_[starts[1:], len(user)]
    from_end = ends[user] - 1 - np.arange(len(user))  # 0 for each user's latest record
    keep = from_end < length
    rows = torch.from_numpy(user[keep])
    cols = torch.from_numpy(length - 1 - from_end[keep])
    out[rows, cols] = torch.from_numpy(np.asarray(data.item_idx)[order][keep] + 1)
    return out


class _Block(nn.Module):
    """Pre-norm transformer block: causal multi-head self-attention, then a feed-forward."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.ModuleDict({k: nn.Linear(d, d) for k in ("q", "k", "v", "o")})
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.ModuleList([nn.Linear(d, d), nn.Linear(d, d)])
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.ln1(x)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)

        q, k, v = (heads(self.attn[name](h)) for name in ("q", "k", "v"))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.n_heads)
        att = att.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
        ctx = (self.drop(att) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.attn["o"](ctx))
        h = self.ff[1](self.drop(F.gelu(self.ff[0](self.ln2(x)))))
        return x + self.drop(h)


class SASRecNet(nn.Module):
    """The SASRec network: item and position embeddings, blocks, a final layer norm.

    Item row ``0`` of ``item_emb`` is the padding embedding (kept at zero).
    """

    def __init__(self, n_items: int, d: int, max_len: int, n_blocks: int, n_heads: int,
                 dropout: float) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList([_Block(d, n_heads, dropout) for _ in range(n_blocks)])
        self.ln = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.scale = math.sqrt(d)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(batch, max_len, d)`` of padded item sequences ``(batch, max_len)``."""
        n = seq.shape[1]
        pos = torch.arange(n, device=seq.device)
        x = self.item_emb(seq) * self.scale + self.pos_emb(pos)[None]
        real = seq != PAD
        x = self.drop(x) * real[..., None]
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        # a query may attend to earlier real items, and always to itself (padding rows would
        # otherwise see no key at all and give NaN)
        allowed = (causal & real[:, None, :]) | torch.eye(n, dtype=torch.bool, device=seq.device)
        for block in self.blocks:
            x = block(x, allowed) * real[..., None]
        return self.ln(x)

    def hidden_at(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(mask.sum(), d)`` at the positions ``mask`` selects (row-major),
        each predicting the item after it."""
        return self(seq)[mask]

    def last_hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state ``(batch, d)`` at the last position (the next-item representation)."""
        return self(seq)[:, -1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over item indices ``0..n_items-1`` (the tied output layer)."""
        return hidden @ self.item_emb.weight[1:].T


class SASRec(ShardModel):
    """Causal self-attention next-item recommender, trained with a full softmax.

    Parameters
    ----------
    factors : int
        Hidden size (item and position embedding dimension).
    n_blocks : int
        Transformer blocks.
    n_heads : int
        Attention heads (must divide ``factors``).
    max_len : int
        Items of history the model reads (the most recent ones); training uses each user's
        last ``max_len + 1`` items.
    dropout : float
        Dropout rate in ``[0, 1)``.
    lr : float
        Adam learning rate.
    weight_decay : float
        Adam L2 penalty.
    batch_size : int
        User sequences per optimizer step.
    time_budget : float, optional
        Stop training after the first epoch that ends past this many seconds of this
        :meth:`~sisakit.ShardModel.partial_fit` call. Off by default: a budget makes the number
        of epochs depend on the machine, so results are no longer reproducible (a warning says
        so when it cuts).
    score_batch : int
        Users scored at once.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Notes
    -----
    :meth:`scores` reads each user's history (the input of a sequence model, not a parameter)
    from the data last given to :meth:`fit`, :meth:`~sisakit.ShardModel.partial_fit` or
    :meth:`bind_space`; inside :class:`sisakit.SISA` that is the run's remaining data, so
    forgotten records leave the histories too. :meth:`score_sequences` scores explicit
    histories.
    """

    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "factors": Interval(int, 1, MAX_WIDTH),
        "n_blocks": Interval(int, 1, MAX_WIDTH),
        "n_heads": Interval(int, 1, MAX_WIDTH),
        "max_len": Interval(int, 1, MAX_COUNT),
        "dropout": Interval(float, 0, 1, closed="left", example=0.2),
        "lr": Interval(float, 0, None, closed="right", example=0.001),
        "weight_decay": Interval(float, 0, None, example=0.0),
        "batch_size": Interval(int, 1, MAX_BATCH),
        "time_budget": Interval(float, 0, None, closed="right", none=True, example=600.0),
        "score_batch": Interval(int, 1, MAX_BATCH),
        "device": Device(),
    }

    def __init__(self, factors: int = 64, n_blocks: int = 2, n_heads: int = 1,
                 max_len: int = 50, dropout: float = 0.2, lr: float = 0.001,
                 weight_decay: float = 0.0, batch_size: int = 128,
                 time_budget: float | None = None, score_batch: int = 512,
                 device: str = "auto") -> None:
        self.factors = factors
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.max_len = max_len
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.time_budget = time_budget
        self.score_batch = score_batch
        self.device = device
        self._validate()  # refuse bad parameters now, before any fit allocates
        self._net: SASRecNet | None = None
        self._history: torch.Tensor | None = None

    # ------------------------------------------------------------------ building
    def _validate(self) -> None:
        self.validate_params()
        if self.factors % self.n_heads:
            raise ValidationError(f"n_heads ({self.n_heads}) must divide factors "
                                  f"({self.factors}); e.g. factors=64, n_heads=2")

    def _build(self, n_users: int, n_items: int, seed: int) -> None:
        self._validate()
        dev = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching global state
            torch.manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
            net = SASRecNet(n_items, int(self.factors), int(self.max_len), int(self.n_blocks),
                            int(self.n_heads), float(self.dropout))
            nn.init.normal_(net.item_emb.weight, std=1.0 / math.sqrt(self.factors))
            with torch.no_grad():
                net.item_emb.weight[PAD] = 0.0
        self._net = net.to(dev).eval()  # dropout only inside partial_fit
        self._opt = torch.optim.Adam(self._net.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay, foreach=False)
        self.n_users, self.n_items = int(n_users), int(n_items)

    def setup(self, space: Any, *, seed: int) -> None:
        self._init_seed = derive_seed(seed, INIT)
        self._build(space.n_users, space.n_items, self._init_seed)
        self._history = None

    def _require(self) -> SASRecNet:
        if self._net is None:
            raise ValidationError("this model has no parameters yet; call fit() or setup() first")
        return self._net

    @property
    def hidden_size(self) -> int:
        """Size of the next-item representation (:meth:`encode`)."""
        return int(self.factors)

    @property
    def network(self) -> SASRecNet:
        """The underlying :class:`SASRecNet` (for adapters and inspection)."""
        return self._require()

    def _dev(self) -> torch.device:
        return next(self._require().parameters()).device

    # ------------------------------------------------------------------ training
    def bind_space(self, space: Any) -> None:
        """Read users' histories from ``space`` (the engine's remaining data) from now on."""
        self._history = user_sequences(space, int(self.max_len))

    def partial_fit(self, data: Any, *, epoch_seeds: Sequence[int]) -> None:
        net = self._require()
        # the last max_len + 1 items: inputs are all but the last, targets all but the first;
        # the last max_len of them are each user's history
        seqs = user_sequences(data, int(self.max_len) + 1)
        self._history = seqs[:, 1:].clone()
        if len(data) == 0 or not epoch_seeds:
            return
        seqs = seqs[(seqs != PAD).sum(1) >= 2]
        if len(seqs) == 0:
            return
        dev = self._dev()
        inactive = torch.from_numpy(~np.asarray(data.item_active)).to(dev)
        t0 = time.perf_counter()
        net.train()
        for e, seed in enumerate(epoch_seeds):
            g = torch.Generator().manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
            order = torch.randperm(len(seqs), generator=g)
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                torch.manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)  # dropout masks
                for start in range(0, len(order), int(self.batch_size)):  # per mini-batch
                    batch = seqs[order[start:start + int(self.batch_size)]].to(dev)
                    self._opt.zero_grad(set_to_none=True)
                    loss = self.next_item_loss(batch, inactive)
                    loss.backward()
                    self._opt.step()
            if (self.time_budget is not None and e + 1 < len(epoch_seeds)
                    and time.perf_counter() - t0 > self.time_budget):
                logger.warning("sasrec: time_budget %.1fs reached after %d of %d epochs; "
                               "training stopped early (results now depend on machine speed)",
                               self.time_budget, e + 1, len(epoch_seeds))
                break
        net.eval()

    def next_item_loss(self, batch: torch.Tensor, inactive: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """Mean cross-entropy of predicting each next item of ``batch`` (padded sequences of
        length ``max_len + 1``), over the catalogue with ``inactive`` items masked out."""
        net = self._require()
        inputs, targets = batch[:, :-1], batch[:, 1:]
        mask = (inputs != PAD) & (targets != PAD)
        logits = net.logits(net.hidden_at(inputs, mask))  # only positions with a next item
        if inactive is not None and bool(inactive.any()):
            logits = logits.masked_fill(inactive, float("-inf"))
        return F.cross_entropy(logits, targets[mask] - 1)

    # ------------------------------------------------------------------ scoring
    @property
    def bound_histories(self) -> torch.Tensor | None:
        """The users' training histories the model is bound to (``(n_users, max_len)`` padded
        item indices + 1), or None before it saw data."""
        return self._history

    def check_sequences(self, seqs: Any) -> torch.Tensor:
        """``seqs`` (a 2-D integer array, or a list of item-index sequences) as a
        ``(n, max_len)`` int64 tensor of left-padded item indices + 1; a ValidationError
        otherwise."""
        if isinstance(seqs, torch.Tensor) or (isinstance(seqs, np.ndarray) and seqs.ndim == 2):
            t = torch.as_tensor(seqs)
            if t.ndim != 2 or t.dtype.is_floating_point or t.dtype == torch.bool:
                raise ValidationError("sequences must be a 2-D integer array of padded item "
                                      f"indices (+1, 0 = padding), got {tuple(t.shape)} {t.dtype}")
            if t.shape[1] > int(self.max_len):
                raise ValidationError(
                    f"sequences have {t.shape[1]} positions but this model reads at most "
                    f"max_len={self.max_len}; keep the last {self.max_len} items")
            padded = t.to(torch.int64)
            if padded.shape[1] < int(self.max_len):
                padded = F.pad(padded, (int(self.max_len) - padded.shape[1], 0))
        else:
            rows = [np.asarray(s) for s in seqs]
            for r in rows:
                if r.ndim != 1 or (len(r) and r.dtype.kind not in "iu"):
                    raise ValidationError("each sequence must be a 1-D list of item indices, "
                                          f"got {r!r}")
                if len(r) > int(self.max_len):
                    raise ValidationError(
                        f"a sequence has {len(r)} items but this model reads at most "
                        f"max_len={self.max_len}; pass its last {self.max_len} items")
            padded = torch.zeros(len(rows), int(self.max_len), dtype=torch.int64)
            lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
            flat = torch.from_numpy(np.concatenate(rows).astype(np.int64) if rows
                                    else np.zeros(0, np.int64))
            row_of = torch.repeat_interleave(torch.arange(len(rows)), lengths)
            start = torch.cumsum(lengths, 0) - lengths
            col = int(self.max_len) - lengths[row_of] + (torch.arange(len(flat)) - start[row_of])
            padded[row_of, col] = flat + 1
        real = padded[padded != PAD]
        if len(real) and (int(real.min()) < 1 or int(real.max()) > self.n_items):
            raise ValidationError(f"sequences hold item indices outside [0, {self.n_items}); "
                                  "map raw ids with data.item_map first")
        return padded

    def histories(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Padded history rows ``(len(user_idx), max_len)`` of these users."""
        self._require()
        if self._history is None:
            raise ValidationError("this sasrec model has no user histories; call "
                                  "bind_space(data) (or fit) with the users' records first")
        return self._history[torch.as_tensor(np.asarray(user_idx), dtype=torch.int64)]

    @torch.no_grad()
    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """Representation ``(batch, factors)`` of padded sequences: the last position's state."""
        net = self._require()
        out = []
        for start in range(0, len(seqs), int(self.score_batch)):  # batches of sequences
            out.append(net.last_hidden(seqs[start:start + int(self.score_batch)].to(self._dev())))
        return torch.cat(out) if out else torch.zeros(0, self.hidden_size, device=self._dev())

    @torch.no_grad()
    def score_sequences(self, seqs: Any) -> torch.Tensor:
        """Next-item scores ``(n, n_items)`` for explicit histories.

        Parameters
        ----------
        seqs : list of 1-D item-index arrays, or a padded 2-D array
            Each history oldest first, at most ``max_len`` items; a 2-D array holds item
            index + 1 with 0 as padding (the format of :func:`user_sequences`).
        """
        net = self._require()
        return net.logits(self.encode(self.check_sequences(seqs)))

    @torch.no_grad()
    def scores(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        net = self._require()
        return net.logits(self.encode(self.histories(user_idx)))

    def user_embeddings(self) -> torch.Tensor:
        """Each user's history representation ``(n_users, factors)`` (a new tensor)."""
        return self.encode(self.histories(np.arange(self.n_users)))

    def item_embeddings(self) -> torch.Tensor:
        """Output item vectors ``(n_items, factors)`` (a new tensor)."""
        return self._require().item_emb.weight[1:].detach().clone()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = module_state(self._require(), self._opt, self._init_seed)
        state["n_users"] = torch.tensor(self.n_users, dtype=torch.int64)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` (no :meth:`setup` needed first)."""
        need = ("net.item_emb.weight", "net.pos_emb.weight", "init_seed", "n_users")
        if any(k not in state for k in need):
            raise ValidationError("state was not saved by a sasrec model")
        n_rows, d = state["net.item_emb.weight"].shape
        length = state["net.pos_emb.weight"].shape[0]
        if d != self.factors or length != self.max_len:
            raise ValidationError(f"state has factors={d}, max_len={length} but this model has "
                                  f"factors={self.factors}, max_len={self.max_len}")
        self._init_seed = seed_from_tensor(state["init_seed"])
        self._build(int(state["n_users"]), int(n_rows) - 1, self._init_seed)
        load_module_state(self._require(), self._opt, state, "sasrec")

    optimizer_impl = "torch.optim.Adam(foreach=False), autograd"
    #: Linear layers ``dual-memory`` adapts by default (name suffixes, every block).
    lora_targets: tuple[str, ...] = ("attn.q", "attn.v", "ff.0", "ff.1")

    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self._require().parameters()))


@hookimpl
def register_models(register):
    register("sasrec", SASRec)
