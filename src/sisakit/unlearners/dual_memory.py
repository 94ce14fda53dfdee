"""``dual-memory``: approximate, output-level unlearning for sequential recommenders.

The trained model stays frozen as the **main memory**. A small **side memory** — low-rank (LoRA)
adapters on the main network's attention and feed-forward projections — is trained to suppress
what must be forgotten while staying close to the main memory elsewhere, and a **router** (a small
classifier over the request's history representation) decides per request which memory answers.

This is *approximate, output-level* unlearning: the main weights still hold the forgotten data,
and the router itself recognises forgotten users (it was trained on them). It changes what the
served model outputs, not what the stored parameters know. Exact removal is the job of
:class:`sisakit.SISA`.

The side memory is an in-house LoRA (:class:`LoRALinear`) rather than ``peft``: the targets are
plain ``nn.Linear`` layers with stable names, a LoRA layer is a dozen lines, and it keeps
``peft``/``transformers`` out of the dependencies while giving bit-reproducible seeded
initialisation and a pickle-free saved state.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .._validation import MAX_BATCH, MAX_COUNT, MAX_SEED, MAX_STEPS, MAX_WIDTH, check_int
from ..constraints import Bool, Constraint, Interval, Options, Strings, as_tuple
from ..data import IdMap, Interactions
from ..errors import CheckpointError, ValidationError
from ..hookspecs import hookimpl
from ..models.sasrec import PAD, SASRec, time_order, user_sequences
from ..store import RunStore
from .base import (
    ForgetRequest,
    UnlearnContext,
    Unlearner,
    UnlearnReport,
    UnlearnResult,
    as_context,
)

logger = logging.getLogger(__name__)

__all__ = [
    "PRESETS",
    "DualMemory",
    "DualMemoryModel",
    "LoRALinear",
    "Router",
    "calibrated_ranks",
    "forget_losses",
    "forget_windows",
    "retain_kl",
]

STATE_FILE = "dual_memory.pt"
FORMAT = 1

#: Loss weights and margins of the two presets (``None`` parameters are taken from here).
PRESETS: dict[str, dict[str, Any]] = {
    # behave like a model that never saw the data: stay on the main memory's output for
    # everything else (retention + KL) and push each forgotten item down to the rank a record
    # the model never saw gets (the rank-target term, calibrated on ``held_out`` records), then
    # stop; without ``held_out`` only the weak, self-limiting unlikelihood term acts
    "match-gold": dict(retention_weight=1.0, kl_weight=1.0, unlikelihood_weight=2.0,
                       margin_weight=0.0, topk_weight=0.0, suppress_weight=0.0,
                       rank_weight=5.0, hard_negatives=20, top_k=20, margin=0.5,
                       topk_margin=0.0, suppress_margin=0.0, rank_margin=0.1,
                       stop_at_top_k=True, epochs=6, lr=0.01),
    # aggressive forgetting: push forgotten items far down
    "suppress": dict(retention_weight=1.0, kl_weight=1.0, unlikelihood_weight=5.0,
                     margin_weight=1.0, topk_weight=1.0, suppress_weight=0.5,
                     rank_weight=0.0, hard_negatives=50, top_k=50, margin=1.0, topk_margin=1.0,
                     suppress_margin=0.0, rank_margin=0.1, stop_at_top_k=False, epochs=6,
                     lr=0.01),
}
_TUNABLE = tuple(PRESETS["match-gold"])
#: Fewest optimizer steps per epoch (small requests are split into smaller mini-batches).
MIN_STEPS = 4
#: Relative width of the band the rank-target term keeps a forgotten item in. With target
#: rank ``t``, ranks ``t`` to ``(1 + RANK_BAND) t + 2`` are left alone.
RANK_BAND = 0.25


# ---------------------------------------------------------------------------------- LoRA
class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``scale · B A``.

    Parameters
    ----------
    base : torch.nn.Linear
        The layer to adapt; its parameters are not trained (the caller freezes them).
    rank : int
        Rank ``r`` of the update (at most ``min(in_features, out_features)``).
    alpha : float
        The update is scaled by ``alpha / rank``.
    generator : torch.Generator
        Seeds the initialisation of ``A``; ``B`` starts at zero, so the adapted layer starts
        equal to ``base``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float,
                 generator: torch.Generator) -> None:
        super().__init__()
        limit = min(base.in_features, base.out_features)
        if rank > limit:
            raise ValidationError(
                f"LoRA rank {rank} is larger than the layer ({base.out_features}x"
                f"{base.in_features}) allows; use rank <= {limit}")
        self.base = base
        self.rank = int(rank)
        self.scale = float(alpha) / float(rank)
        a = torch.randn(rank, base.in_features, generator=generator) / math.sqrt(base.in_features)
        self.lora_a = nn.Parameter(a.to(base.weight.device, base.weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype,
                                               device=base.weight.device))

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (libraries such as Hugging Face T5 read its dtype)."""
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``base(x) + scale · (x Aᵀ) Bᵀ``."""
        return self.base(x) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)


def _linear_targets(net: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Full module names of the ``nn.Linear`` layers that ``targets`` (name suffixes) select."""
    linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    chosen = []
    for t in targets:
        hits = [n for n in linears if n == t or n.endswith("." + t)]
        if not hits:
            raise ValidationError(
                f"LoRA target {t!r} matches no linear layer of the model; choose from "
                f"{sorted({n.split('.', 2)[-1] for n in linears})} (or full names like {linears[0]!r})")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def _attach_lora(net: nn.Module, names: list[str], rank: int, alpha: float, seed: int
                 ) -> nn.Module:
    """A frozen deep copy of ``net`` with LoRA adapters on ``names`` (in that order)."""
    side = copy.deepcopy(net)
    for p in side.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    for name in names:  # a handful of layers
        parent_name, _, leaf = name.rpartition(".")
        parent = side.get_submodule(parent_name) if parent_name else side
        setattr(parent, leaf, LoRALinear(parent.get_submodule(leaf), rank, alpha, g))
    return side.eval()


def _lora_state(side: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in side.state_dict().items() if ".lora_" in k}


# ---------------------------------------------------------------------------------- router
class Router(nn.Module):
    """A small MLP: standardised history representation → weight of the side memory.

    Parameters
    ----------
    d : int
        Size of the history representation.
    hidden : int
        Hidden units.
    """

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Logit of "answer from the side memory" for representations ``h`` ``(n, d)``."""
        return self.net((h - self.mean) / self.std).squeeze(-1)


# ---------------------------------------------------------------------------------- data
def forget_windows(data: Interactions, remove: np.ndarray, max_len: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The training windows in which the model saw the records marked in ``remove``.

    For each removed record, the window is the ``max_len + 1`` items of its user ending at it
    (oldest first, left-padded; items before it are taken from ``data`` as trained). A window is
    dropped when a later removed record of the same user lies within its last ``max_len``
    targets' reach, since that record's window covers it (a whole forgotten user thus gives one
    window, as the model only ever trained on each user's last ``max_len + 1`` items).

    Parameters
    ----------
    data : Interactions
        The records the model was trained on.
    remove : ndarray of bool
        One flag per record of ``data``.
    max_len : int
        The model's history length.

    Returns
    -------
    windows : torch.Tensor
        ``(n, max_len + 1)`` int64: item index + 1, ``0`` = padding.
    forgotten : torch.Tensor
        ``(n, max_len)`` bool: which targets (``windows[:, 1:]``) are removed records.
    """
    length = int(max_len) + 1
    order, starts = time_order(data)
    sorted_items = np.asarray(data.item_idx)[order] + 1
    sorted_remove = np.asarray(remove, bool)[order]
    sorted_user = np.asarray(data.user_idx)[order]
    pos = np.flatnonzero(sorted_remove)  # positions in the sorted order, grouped by user
    if len(pos) == 0:
        return (torch.zeros(0, length, dtype=torch.int64),
                torch.zeros(0, length - 1, dtype=torch.bool))
    same_next = np.r_[sorted_user[pos[1:]] == sorted_user[pos[:-1]], False]
    gap = np.r_[pos[1:] - pos[:-1], np.iinfo(np.int64).max]
    keep = ~same_next | (gap > length - 2)
    ends = pos[keep]
    first = starts[sorted_user[ends]]
    cols = ends[:, None] - (length - 1) + np.arange(length)[None, :]
    valid = cols >= first[:, None]
    cols = np.where(valid, cols, 0)
    windows = np.where(valid, sorted_items[cols], PAD)
    flags = np.where(valid, sorted_remove[cols], False)
    return torch.from_numpy(windows.astype(np.int64)), torch.from_numpy(flags[:, 1:].copy())


def _right_aligned(windows: torch.Tensor) -> torch.Tensor:
    """The inputs of windows (all but the last item): right-aligned histories of length L."""
    return windows[:, :-1]


# ---------------------------------------------------------------------------------- model
def _main_checksum(main: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(main.network.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16)
                 .numpy().tobytes())
    return h.hexdigest()


class DualMemoryModel:
    """A frozen main model, a LoRA side memory and a router, served together.

    Built by :meth:`DualMemory.unlearn` (or :meth:`load`). Every request (a user's bound history
    or an explicit sequence) is routed: when the router's side-memory weight is at least
    ``threshold`` the side memory answers, otherwise the main model does — unchanged, bit for
    bit. A hard switch keeps every request routed to the main memory exactly on the main model's
    output (a soft mixture would perturb every user a little).

    Parameters
    ----------
    main : SASRec
        The trained model; never modified.
    side : torch.nn.Module
        A copy of ``main.network`` whose target layers are
        :class:`~sisakit.unlearners.dual_memory.LoRALinear`.
    router : Router
        The routing classifier.
    config : dict
        ``rank``, ``alpha``, ``targets`` (full layer names), ``router_hidden``, ``threshold``.
    history : torch.Tensor, optional
        Padded histories ``(n_users, max_len)`` that :meth:`scores` reads.
    item_ids : ndarray, optional
        Raw item id of each item index (for :meth:`recommend`).
    user_ids : ndarray, optional
        Raw user id of each user index (for :meth:`recommend`).
    """

    def __init__(self, main: Any, side: nn.Module, router: Router, config: Mapping[str, Any],
                 history: torch.Tensor | None = None, item_ids: np.ndarray | None = None,
                 user_ids: np.ndarray | None = None) -> None:
        self.main = main
        self.side = side.eval()
        self.router = router.eval()
        self.config = dict(config)
        self.threshold = float(self.config.get("threshold", 0.5))
        self._history = history
        self.item_ids = item_ids
        self.user_ids = user_ids
        self.main_sha256 = self.config.get("main_sha256") or _main_checksum(main)
        self.config["main_sha256"] = self.main_sha256

    # ------------------------------------------------------------------ properties
    @property
    def n_items(self) -> int:
        """Items in the catalogue (as the main model)."""
        return int(self.main.n_items)

    @property
    def n_users(self) -> int:
        """Users with a bound history row."""
        return int(self._history.shape[0]) if self._history is not None else int(
            self.main.n_users)

    @property
    def max_len(self) -> int:
        """History length the model reads."""
        return int(self.main.max_len)

    def _dev(self) -> torch.device:
        return next(self.main.network.parameters()).device

    # ------------------------------------------------------------------ histories
    def bind_space(self, space: Interactions) -> None:
        """Read users' histories from ``space`` from now on (e.g. the remaining data)."""
        if not isinstance(space, Interactions):
            raise ValidationError("bind_space() needs sisakit.Interactions")
        if space.n_items != self.n_items:
            raise ValidationError(f"space has {space.n_items} items but the model has "
                                  f"{self.n_items}; bind data from the model's id space")
        self._history = user_sequences(space, self.max_len)
        self.user_ids = space.user_ids
        self.item_ids = space.item_ids

    def histories(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Padded history rows ``(len(user_idx), max_len)`` of these users."""
        if self._history is None:
            raise ValidationError("this model has no user histories; call bind_space(data)")
        idx = torch.as_tensor(np.asarray(user_idx), dtype=torch.int64)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self._history)):
            raise ValidationError(f"user indices must lie in [0, {len(self._history)})")
        return self._history[idx]

    # ------------------------------------------------------------------ serving
    @torch.no_grad()
    def route_sequences(self, seqs: Any) -> torch.Tensor:
        """Side-memory weight in ``[0, 1]`` of each explicit history (see
        :meth:`sisakit.models.SASRec.score_sequences` for the formats)."""
        padded = self.main.check_sequences(seqs)
        if len(padded) == 0:
            return torch.zeros(0)
        return torch.sigmoid(self.router(self.main.encode(padded).float())).cpu()

    def route(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Side-memory weight in ``[0, 1]`` of each user's bound history."""
        return self.route_sequences(self.histories(user_idx))

    @torch.no_grad()
    def _side_logits(self, padded: torch.Tensor) -> torch.Tensor:
        out = []
        bs = int(self.main.score_batch)
        for start in range(0, len(padded), bs):  # batches of sequences
            chunk = padded[start:start + bs].to(self._dev())
            out.append(self.side.logits(self.side.last_hidden(chunk)))
        return torch.cat(out) if out else torch.zeros(0, self.n_items)

    @torch.no_grad()
    def score_sequences(self, seqs: Any) -> torch.Tensor:
        """Next-item scores ``(n, n_items)`` of explicit histories, routed per request."""
        padded = self.main.check_sequences(seqs)
        hidden = self.main.encode(padded)
        scores = self.main.network.logits(hidden)  # exactly main.score_sequences(padded)
        side = (torch.sigmoid(self.router(hidden.float())) >= self.threshold).cpu()
        if bool(side.any()):
            rows = torch.nonzero(side).flatten()
            scores[rows.to(scores.device)] = self._side_logits(padded[rows]).to(scores.dtype)
        return scores

    def scores(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Next-item scores ``(len(user_idx), n_items)`` of users' bound histories."""
        return self.score_sequences(self.histories(user_idx))

    def recommend(self, users: Iterable[Any], k: int = 10, *, exclude_seen: bool = True
                  ) -> np.ndarray:
        """Top-``k`` raw item ids for each raw user id, best first (like
        :meth:`sisakit.SISA.recommend`); items in the user's bound history rank last unless
        ``exclude_seen=False``."""
        if self.user_ids is None or self.item_ids is None:
            raise ValidationError("bind_space(data) first: recommend() maps raw ids")
        k = check_int("k", k, 1, self.n_items)
        u = IdMap(self.user_ids, "user").index(np.asarray(list(users), dtype=object), "user")
        sc = self.scores(u).clone().cpu()
        if exclude_seen:
            hist = self.histories(u)
            rows, cols = torch.nonzero(hist != PAD, as_tuple=True)
            sc[rows, hist[rows, cols] - 1] = -3.0e38
        return np.asarray(self.item_ids)[torch.topk(sc, k, dim=1).indices.numpy()]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The side memory's adapters and the router (the main model is not included)."""
        state = {f"side.{k}": v for k, v in _lora_state(self.side).items()}
        state.update({f"router.{k}": v.detach().clone()
                      for k, v in self.router.state_dict().items()})
        return state

    def n_parameters(self) -> int:
        """Trainable parameters of the side memory and the router."""
        return int(sum(v.numel() for v in self.state_dict().values()))

    def save(self, path: str | Path) -> None:
        """Save the side memory, the router and the configuration to the directory ``path``.

        Only these are written (atomically, with sha256 checksums in a manifest), together with
        a checksum of the main model's weights so that :meth:`load` refuses another main model.
        """
        store = RunStore(path)
        digest = store.save_tensors(STATE_FILE, self.state_dict())
        cfg = {k: v for k, v in self.config.items()}
        cfg["targets"] = list(cfg.get("targets", []))
        store.write_manifest({"format_version": 1, "kind": "dual-memory", "format": FORMAT,
                              "files": {STATE_FILE: digest}, "config": cfg})

    @classmethod
    def load(cls, path: str | Path, main: Any, data: Interactions | None = None
             ) -> DualMemoryModel:
        """Load a saved side memory and router onto ``main`` (the same trained model).

        Parameters
        ----------
        path : str or Path
            A directory written by :meth:`save`.
        main : SASRec
            The main model the side memory was trained for; refused when its weights differ.
        data : Interactions, optional
            Histories to bind (see :meth:`bind_space`).

        Raises
        ------
        CheckpointError
            Missing, corrupt or tampered files, or a different main model.
        """
        store = RunStore(path)
        manifest = store.read_manifest()
        if manifest.get("kind") != "dual-memory":
            raise CheckpointError(f"{path} does not hold a dual-memory side memory; pass the "
                                  "directory written by DualMemoryModel.save()")
        cfg = dict(manifest["config"])
        if _main_checksum(main) != cfg.get("main_sha256"):
            raise CheckpointError(
                f"the main model's weights do not match the ones the side memory in {path} was "
                "trained on; load it onto that same trained model")
        state = store.load_tensors(STATE_FILE, manifest["files"].get(STATE_FILE))
        side = _attach_lora(main.network, list(cfg["targets"]), int(cfg["rank"]),
                            float(cfg["alpha"]), 0)
        router = Router(int(main.hidden_size), int(cfg["router_hidden"])).to(
            next(main.network.parameters()).device)
        side_state = {k[5:]: v for k, v in state.items() if k.startswith("side.")}
        router_state = {k[7:]: v for k, v in state.items() if k.startswith("router.")}
        try:
            missing = side.load_state_dict(side_state, strict=False)
            if missing.unexpected_keys or any(".lora_" in k for k in missing.missing_keys):
                raise CheckpointError(f"{path}: the side memory's adapters do not match its "
                                      "configuration; the file is damaged — re-run unlearn()")
            router.load_state_dict(router_state)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: saved tensors do not fit the model ({exc}); "
                                  "re-run unlearn()") from exc
        model = cls(main, side, router, cfg)
        if data is not None:
            model.bind_space(data)
        return model


# ---------------------------------------------------------------------------------- losses
def _masked_logits(logits: torch.Tensor, mask_items: torch.Tensor | None) -> torch.Tensor:
    if mask_items is None or len(mask_items) == 0:
        return logits
    # a large finite value: exp() underflows to 0 and no inf - inf appears in the KL
    return logits.index_fill(-1, mask_items, -1e9)


def forget_losses(side_logits: torch.Tensor, main_logits: torch.Tensor | None,
                  targets: torch.Tensor,
                  *, hard_negatives: int, top_k: int, margin: float, topk_margin: float,
                  suppress_margin: float, stop_at_top_k: bool,
                  target_rank: torch.Tensor | None = None, rank_margin: float = 0.1,
                  seen: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The per-term forgetting losses at forgotten positions.

    Parameters
    ----------
    side_logits, main_logits : torch.Tensor
        ``(m, n_items)`` scores of the side and the (frozen) main memory at the ``m`` positions
        whose next item was forgotten. ``main_logits`` only picks the pairwise margin's hard
        negatives: ``None`` turns that term off (zero).
    targets : torch.Tensor
        ``(m,)`` the forgotten item index at each position.
    hard_negatives : int
        Pairwise margin against the main memory's ``hard_negatives`` best other items.
    top_k : int
        The top-K penalty pushes the target below the side memory's K-th best other item.
    margin, topk_margin, suppress_margin : float
        Margins of the pairwise, top-K and absolute terms.
    stop_at_top_k : bool
        Stop every term at a position once its target ranks outside the top ``top_k`` (or, with
        ``target_rank``, once it ranks at or below its target rank).
    target_rank : torch.Tensor, optional
        ``(m,)`` int64: the rank (0 = best; the number of other items above it) each target
        should fall to (see :func:`calibrated_ranks`). Enables the ``rank`` term.
    rank_margin : float
        Margin of the rank-target term.
    seen : torch.Tensor, optional
        ``(m, n_items)`` bool: items already in each position's history. They leave every
        ranking (as they leave served top-K lists): ranks, the K-th item and hard negatives are
        taken among the other items.

    Returns
    -------
    dict
        Scalar tensors ``unlikelihood``, ``margin``, ``topk``, ``suppress``, ``rank``.
    """
    m, n_items = side_logits.shape
    rows = torch.arange(m, device=side_logits.device)
    z_t = side_logits[rows, targets]
    minus_inf = torch.tensor(float("-inf"), device=side_logits.device)
    others = side_logits.index_put((rows, targets), minus_inf)
    n_valid = torch.full_like(targets, n_items - 1)
    if seen is not None:
        others = others.masked_fill(seen, float("-inf"))
        n_valid = torch.isfinite(others).sum(1)
    k = min(int(top_k), n_items - 1)
    kth = others.topk(k, dim=1).values[:, -1]
    kth = torch.where(torch.isfinite(kth), kth, z_t.detach())  # fewer than K unseen items
    if target_rank is not None:
        # the logit the target must fall below to have target_rank other items above it
        need = torch.minimum(target_rank.clamp_min(0), n_valid)
        above = (others > z_t.detach()[:, None]).sum(1)
        to_push = (need > 0) & (above < need)
        # two-sided: the adapters move whole regions of the ranking, so an item pushed for one
        # position overshoots at another; one that fell past its band is lifted back (a buried
        # item is as much a tell to a membership attack as a memorised one)
        upper = torch.minimum(need + 2 + (need.float() * RANK_BAND).long(), n_valid)
        overshot = (need > 0) & (above > upper)
        rank_term = torch.zeros_like(z_t)
        sel = torch.nonzero(to_push | overshot).flatten()
        if len(sel):  # the bars: logits at the target rank (push) or the band's end (lift)
            bound = torch.where(to_push[sel], need[sel], upper[sel])
            ordered = others[sel].detach().topk(int(bound.max()), dim=1).values
            bar = ordered.gather(1, (bound - 1)[:, None]).squeeze(1)
            push = F.relu(float(rank_margin) + z_t[sel] - bar)
            lift = F.relu(float(rank_margin) + bar - z_t[sel])
            rank_term = rank_term.index_put((sel,), torch.where(to_push[sel], push, lift))
    else:
        to_push = z_t >= kth
        rank_term = torch.zeros_like(z_t)
    active = to_push.float() if stop_at_top_k else torch.ones_like(z_t)
    logp = side_logits.log_softmax(-1)[rows, targets]
    # -log(1 - p), computed stably from log p
    unlik = -torch.log1p(-logp.exp().clamp(max=1 - 1e-6))
    n_neg = min(int(hard_negatives), n_items - 1)
    if main_logits is not None:
        main_others = main_logits.index_put((rows, targets), minus_inf)
        if seen is not None:
            main_others = main_others.masked_fill(seen, float("-inf"))
        neg = main_others.topk(n_neg, dim=1).indices
        pair = F.relu(float(margin) + z_t[:, None] - side_logits.gather(1, neg)).mean(1)
    else:
        pair = torch.zeros_like(z_t)
    topk = F.relu(float(topk_margin) + z_t - kth.detach())
    supp = F.relu(z_t - float(suppress_margin))
    denom = float(max(m, 1))
    return {"unlikelihood": (unlik * active).sum() / denom,
            "margin": (pair * active).sum() / denom,
            "topk": (topk * active).sum() / denom,
            "suppress": (supp * active).sum() / denom,
            "rank": rank_term.sum() / denom}


def _prefix_seen(inputs: torch.Tensor, mask: torch.Tensor, n_items: int) -> torch.Tensor:
    """``(mask.sum(), n_items)`` bool: the items of each selected position's history (its
    window up to and including that position), row-major like ``tensor[mask]``."""
    rows, pos = torch.nonzero(mask, as_tuple=True)
    ctx = inputs[rows]
    valid = (torch.arange(ctx.shape[1], device=ctx.device)[None, :] <= pos[:, None]) & (
        ctx != PAD)
    seen = torch.zeros(len(rows), n_items + 1, dtype=torch.bool, device=ctx.device)
    seen.scatter_(1, torch.where(valid, ctx, PAD), True)
    return seen[:, 1:]


@torch.no_grad()
def _window_ranks(net: nn.Module, windows: torch.Tensor, flags: torch.Tensor, batch: int,
                  n_items: int) -> torch.Tensor:
    """Rank (history items left out) of every forgotten target of ``windows`` under ``net``,
    row-major like ``windows[:, 1:][flags & inputs != PAD]``."""
    dev = next(net.parameters()).device
    out = [torch.zeros(0, dtype=torch.int64)]
    for s in range(0, len(windows), batch):  # batches of forget windows
        w, f = windows[s:s + batch].to(dev), flags[s:s + batch].to(dev)
        mask = f & (w[:, :-1] != PAD)
        logits = net.logits(net.hidden_at(w[:, :-1], mask))
        out.append(_target_ranks(logits, w[:, 1:][mask] - 1,
                                 _prefix_seen(w[:, :-1], mask, n_items)).cpu())
    return torch.cat(out)


def _target_ranks(logits: torch.Tensor, targets: torch.Tensor,
                  seen: torch.Tensor | None = None) -> torch.Tensor:
    """Rank of each row's target among its scores: the number of items scored strictly above,
    ``seen`` items (a history, left out of served lists) not counted."""
    z = logits.gather(1, targets[:, None])
    above = logits > z
    if seen is not None:
        above &= ~seen
    return above.sum(1)


def calibrated_ranks(member_ranks: np.ndarray, held_out_ranks: np.ndarray,
                     groups: np.ndarray | None = None) -> np.ndarray:
    """Target ranks for forgotten records, by quantile matching.

    A model that never saw a record ranks it like any record it never saw: the forgotten
    records' ranks under the main model (``member_ranks``) are mapped, order preserved, onto the
    distribution of the main model's ranks of held-out records (``held_out_ranks``). The ``q``-th
    quantile of the first goes to the ``q``-th quantile of the second, so that after pushing,
    the forgotten records' ranks follow the held-out distribution (HR@K included) while the
    records a never-trained model would rank best still rank best. A target never lies above the
    main model's own rank: nothing is pulled up.

    Parameters
    ----------
    member_ranks : ndarray of int
        Rank (0 = best) of each forgotten record under the main model, in its training context.
    held_out_ranks : ndarray of int
        Ranks of records the main model never trained on, each in its user's history.
    groups : ndarray of int, optional
        Match each group of forgotten records separately (``dual-memory`` groups them by
        position from the end of their window: a model memorises the latest positions of a
        sequence most, and pooling them with earlier ones would hand the latest the best
        held-out ranks).

    Returns
    -------
    ndarray of int64
        One target rank per forgotten record.
    """
    member_ranks = np.asarray(member_ranks, np.int64)
    held = np.asarray(held_out_ranks, np.int64)
    if len(member_ranks) == 0:
        return member_ranks.copy()
    groups = np.zeros(len(member_ranks), np.int64) if groups is None else np.asarray(groups)
    # sort by (group, rank): each group's quantiles are its positions within its block
    order = np.lexsort((member_ranks, groups))
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    block_start = np.repeat(starts, sizes)
    q = (np.arange(len(order)) - block_start + 0.5) / np.repeat(sizes, sizes)
    out = np.empty_like(member_ranks)
    out[order] = np.quantile(held, q, method="inverted_cdf").astype(np.int64)
    return np.maximum(out, member_ranks)


def retain_kl(side_logits: torch.Tensor, main_logits: torch.Tensor,
              forgotten_items: torch.Tensor | None) -> torch.Tensor:
    """Mean KL(main ‖ side) over positions, with ``forgotten_items`` (and inactive items, pass
    them here too) masked out of both; logits must be finite."""
    # masked columns get a large finite logit: p = 0 there and no inf - inf appears
    log_p = _masked_logits(main_logits, forgotten_items).log_softmax(-1)
    log_q = _masked_logits(side_logits, forgotten_items).log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


# ---------------------------------------------------------------------------------- unlearner
class DualMemory(Unlearner):
    """Dual-memory unlearning: frozen main model, LoRA side memory, router.

    Parameters
    ----------
    preset : {"match-gold", "suppress"}
        Default loss weights and margins (see
        :data:`~sisakit.unlearners.dual_memory.PRESETS`): ``match-gold`` aims at the behaviour
        of a model retrained without the data; ``suppress`` forgets aggressively. Any of the
        ``None`` parameters below overrides its preset value.
    rank : int
        LoRA rank (at most the smaller dimension of every target layer).
    alpha : float
        LoRA scale numerator (the update is scaled by ``alpha / rank``).
    targets : tuple of str, optional
        Linear layers to adapt, by name or name suffix (``"attn.q"`` matches
        ``blocks.<b>.attn.q`` of every block). ``None``: the model's ``lora_targets``
        (``sasrec``: ``("attn.q", "attn.v", "ff.0", "ff.1")``; ``t5rec``: the query and value
        projections of every attention and both feed-forward projections).
    epochs : int, optional
        Passes over the forget windows.
    lr : float, optional
        Adam learning rate of the adapters.
    batch_size : int
        Windows per optimizer step (forget and retain windows together); small requests are
        split into at least :data:`~sisakit.unlearners.dual_memory.MIN_STEPS` steps per epoch
        (at most one per forget window).
    retain_ratio : float
        Retain windows sampled per epoch, as a multiple of the forget windows (at most all
        retain users).
    retention_weight, kl_weight : float, optional
        Weights of the retention loss (next-item cross-entropy on retain windows) and of the
        KL divergence from the main memory (retain windows, forgotten items masked).
    unlikelihood_weight, margin_weight, topk_weight, suppress_weight : float, optional
        Weights of the forgetting losses: unlikelihood of the forgotten item, pairwise margin
        below hard negatives, top-K penalty and absolute logit suppression.
    hard_negatives : int, optional
        Hard negatives of the pairwise margin (the main memory's best other items).
    top_k : int, optional
        K of the top-K penalty (and of ``stop_at_top_k``).
    margin, topk_margin, suppress_margin : float, optional
        Margins of the pairwise, top-K and absolute-suppression losses.
    rank_weight, rank_margin : float, optional
        Weight and margin of the rank-target term: push each forgotten item down to the rank
        the main model gives records it never saw (calibrated on ``unlearn(held_out=...)``;
        off without it).
    stop_at_top_k : bool, optional
        Stop pushing a forgotten item once it ranks outside the top ``top_k`` (with
        ``held_out``: once it reached its calibrated target rank).
    router_hidden : int
        Hidden units of the router.
    router_epochs : int
        Full-batch Adam steps of the router.
    router_lr : float
        Router learning rate.
    router_retain : int
        At most this many retain users are the router's negatives.
    threshold : float
        Requests with a side-memory weight at least this high are answered by the side memory.
    seed : int
        Seeds the adapters, the router and the retain sampling. The side memory and the router
        live on the main model's device.
    progress : bool or None
        Progress bar over epochs (None: only on a terminal).

    Notes
    -----
    Approximate, output-level unlearning: the main model's weights still hold the forgotten
    data, and the router recognises the forgotten users. Use :class:`sisakit.SISA` for exact
    removal.
    """

    exact: ClassVar[bool] = False

    # ``None`` parameters take their preset's value (see :meth:`settings`), valid by
    # construction; whether ``rank`` fits the target layers is checked by :meth:`unlearn`,
    # which sees the model.
    parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "preset": Options(tuple(PRESETS)),
        "rank": Interval(int, 1, MAX_WIDTH),
        "alpha": Interval(float, 0, None, closed="right", example=16.0),
        "targets": Strings(empty=False, none=True, example="('attn.q', 'attn.v')"),
        "epochs": Interval(int, 1, MAX_STEPS, none=True),
        "lr": Interval(float, 0, None, closed="right", none=True, example=0.01),
        "batch_size": Interval(int, 1, MAX_BATCH),
        "retain_ratio": Interval(float, 0, None, closed="right", example=5.0),
        **{name: Interval(float, 0, None, none=True, example=1.0)
           for name in ("retention_weight", "kl_weight", "unlikelihood_weight", "margin_weight",
                        "topk_weight", "suppress_weight", "rank_weight")},
        "hard_negatives": Interval(int, 1, MAX_COUNT, none=True),
        "top_k": Interval(int, 1, MAX_COUNT, none=True),
        **{name: Interval(float, 0, None, none=True, example=0.5)
           for name in ("margin", "topk_margin", "rank_margin")},
        # a logit level, not a distance: any sign
        "suppress_margin": Interval(float, None, None, none=True, example=0.0),
        "stop_at_top_k": Bool(none=True),
        "router_hidden": Interval(int, 1, MAX_WIDTH),
        "router_epochs": Interval(int, 1, MAX_STEPS),
        "router_lr": Interval(float, 0, None, closed="right", example=0.01),
        # the router trains full-batch: its negatives are the rows of one step
        "router_retain": Interval(int, 1, MAX_BATCH),
        "threshold": Interval(float, 0, 1, closed="neither", example=0.5),
        "seed": Interval(int, 0, MAX_SEED),
        "progress": Bool(none=True),
    }

    def __init__(self, preset: str = "match-gold", rank: int = 8, alpha: float = 16.0,
                 targets: tuple[str, ...] | None = None, epochs: int | None = None,
                 lr: float | None = None, batch_size: int = 128, retain_ratio: float = 5.0,
                 retention_weight: float | None = None, kl_weight: float | None = None,
                 unlikelihood_weight: float | None = None, margin_weight: float | None = None,
                 topk_weight: float | None = None, suppress_weight: float | None = None,
                 hard_negatives: int | None = None, top_k: int | None = None,
                 margin: float | None = None, topk_margin: float | None = None,
                 suppress_margin: float | None = None, rank_weight: float | None = None,
                 rank_margin: float | None = None, stop_at_top_k: bool | None = None,
                 router_hidden: int = 64, router_epochs: int = 200, router_lr: float = 0.01,
                 router_retain: int = 20000, threshold: float = 0.5, seed: int = 0,
                 progress: bool | None = None) -> None:
        self.preset = preset
        self.rank = rank
        self.alpha = alpha
        self.targets = as_tuple(targets)
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.retain_ratio = retain_ratio
        self.retention_weight = retention_weight
        self.kl_weight = kl_weight
        self.unlikelihood_weight = unlikelihood_weight
        self.margin_weight = margin_weight
        self.topk_weight = topk_weight
        self.suppress_weight = suppress_weight
        self.hard_negatives = hard_negatives
        self.top_k = top_k
        self.margin = margin
        self.topk_margin = topk_margin
        self.suppress_margin = suppress_margin
        self.rank_weight = rank_weight
        self.rank_margin = rank_margin
        self.stop_at_top_k = stop_at_top_k
        self.router_hidden = router_hidden
        self.router_epochs = router_epochs
        self.router_lr = router_lr
        self.router_retain = router_retain
        self.threshold = threshold
        self.seed = seed
        self.progress = progress
        self.validate_params()  # refuse bad parameters now, before any unlearn trains

    # ------------------------------------------------------------------ configuration
    def settings(self) -> dict[str, Any]:
        """The effective loss weights and margins: the preset, overridden by explicit values.

        Raises
        ------
        ValidationError
            If a parameter is invalid (checked when the unlearner is built).
        """
        self.validate_params()
        out = dict(PRESETS[self.preset])
        for name in _TUNABLE:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _check_model(model: Any) -> None:
        if not isinstance(model, SASRec):
            raise ValidationError(
                f"dual-memory adapts a trained sisakit SASRec model, got {type(model).__name__}; "
                "fit sisakit.models.SASRec first (use SISA for exact unlearning of other models)")
        model.network  # noqa: B018 - raises if the model has no parameters yet

    def _resolve(self, model: Any, request: Any, data: Any) -> tuple[Interactions, np.ndarray]:
        if data is None:
            data = getattr(model, "data", None)
        if not isinstance(data, Interactions):
            raise ValidationError(
                "dual-memory needs the data the model was trained on: call "
                "unlearn(model, request, data=train) with that sisakit.Interactions")
        if not isinstance(request, ForgetRequest):
            raise ValidationError("dual-memory takes a ForgetRequest(users=..., interactions=...)")
        if request.is_empty():
            raise ValidationError("the forget request is empty; name users or (user, item) "
                                  "interactions to forget")
        if request.items:
            raise ValidationError(
                "dual-memory forgets users or (user, item) interactions, not whole items; pass "
                "ForgetRequest(users=...) or interactions=[(user, item), ...]")
        if data.n_items != model.n_items or data.n_users != model.n_users:
            raise ValidationError(
                f"data has {data.n_users} users and {data.n_items} items but the model has "
                f"{model.n_users} and {model.n_items}; pass the data the model was trained on")
        if model.bound_histories is not None and not torch.equal(
                model.bound_histories, user_sequences(data, int(model.max_len))):
            raise ValidationError("data does not match the histories the model was trained on; "
                                  "pass the same Interactions that fit() received")
        resolved = data.resolve(users=request.users, interactions=request.interactions)
        if len(resolved.pair_found) and not resolved.pair_found.all():
            missing = [request.interactions[i] for i in np.flatnonzero(~resolved.pair_found)]
            raise ValidationError(
                f"{len(missing)} interaction(s) were never seen by the model, e.g. "
                f"{missing[:5]}; only (user, item) pairs of the training data can be forgotten")
        remove = np.asarray(resolved.remove, bool)
        if not remove.any():
            raise ValidationError("the request removes no training record (the users have no "
                                  "records); nothing to forget")
        return data, remove

    # ------------------------------------------------------------------ training
    def unlearn(self, model: Any, request: ForgetRequest, *,
                context: UnlearnContext | None = None,
                data: Interactions | None = None,
                held_out: Interactions | None = None) -> UnlearnResult:
        """Train a side memory and a router that forget ``request``; ``model`` is not modified.

        Parameters
        ----------
        model : SASRec
            The trained main model.
        request : ForgetRequest
            Users and/or (user, item) interactions, by raw id.
        context : UnlearnContext, optional
            ``context.data`` and ``context.held_out`` are the two arguments below (the
            keyword forms are the older spelling and win when both are given).
        data : Interactions, optional
            The records ``model`` was trained on (default: ``model.data`` when it exists).
        held_out : Interactions, optional
            Records the model never trained on (e.g. the validation split; same id space as
            ``data``), each the next item after its user's history in ``data``. The main model's
            ranks of them calibrate the rank-target term (``rank_weight``, on in ``match-gold``):
            every forgotten item is pushed down to the rank an unseen record gets (see
            :func:`~sisakit.unlearners.dual_memory.calibrated_ranks`). Records of users being
            forgotten are not used. Without it the rank-target term is off (logged), and
            ``match-gold`` forgets only through the weak unlikelihood term.

        Returns
        -------
        UnlearnResult
            ``model``: a :class:`DualMemoryModel` with histories bound to the remaining data;
            ``report``: records and windows forgotten, losses per epoch, router accuracy, wall
            and CPU seconds.

        Raises
        ------
        ValidationError
            A missing or mismatched ``data``, an empty request, item requests, interactions the
            model never saw, bad parameters or a LoRA rank larger than a target layer.
        UnknownIdError
            Unknown users or items.
        """
        t0, c0 = time.perf_counter(), time.process_time()
        ctx = as_context(context, data=data, held_out=held_out)
        data, held_out = ctx.data, ctx.held_out
        cfg = self.settings()  # validates the parameters
        self._check_model(model)
        data, remove = self._resolve(model, request, data)
        held = self._check_held_out(held_out, data)
        if float(cfg["rank_weight"]) == 0:
            held = None  # the rank-target term is off
        elif held is None:
            logger.warning("dual-memory: no held_out records, so the rank-target term is off and "
                           "forgetting is not calibrated; pass held_out=<validation records>")
        main_sum = _main_checksum(model)
        net = model.network
        dev = next(net.parameters()).device
        names = _linear_targets(net, self.targets if self.targets is not None
                                else tuple(model.lora_targets))
        max_len = int(model.max_len)
        # ---- data: forget windows, retain windows (remaining users' last windows)
        windows, flags = forget_windows(data, remove, max_len)
        remaining = data.take(~remove)
        forget_users = np.unique(np.asarray(data.user_idx)[remove])
        is_forget = np.zeros(data.n_users, bool)
        is_forget[forget_users] = True
        retain_seqs = user_sequences(remaining, max_len + 1)
        serve = retain_seqs[:, 1:].contiguous()  # every user's history, as served
        has_two = (retain_seqs != PAD).sum(1) >= 2
        retain_users = np.flatnonzero(has_two.numpy() & ~is_forget)
        retain_seqs = retain_seqs[torch.from_numpy(retain_users)]
        forgotten_items = torch.from_numpy(np.unique(np.asarray(data.item_idx)[remove])).to(dev)
        inactive_idx = torch.from_numpy(np.flatnonzero(~np.asarray(data.item_active))).to(dev)
        # forgotten and inactive items leave the KL (once, not per step)
        kl_mask = torch.unique(torch.cat([forgotten_items, inactive_idx]))
        calibration: dict[str, Any] | None = None
        target_rank = None
        if held is not None:
            target_rank, calibration = self._calibrate(model, data, held, windows, flags,
                                                       is_forget)
        # ---- side memory
        side = _attach_lora(net, names, int(self.rank), float(self.alpha), self.seed)
        params = [p for n, p in side.named_parameters() if ".lora_" in n]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=float(cfg["lr"]), foreach=False)
        rng = np.random.default_rng(self.seed)
        n_f = len(windows)
        n_r_epoch = min(len(retain_seqs), math.ceil(float(self.retain_ratio) * n_f))
        # at least MIN_STEPS optimizer steps per epoch: a small request in one or two large
        # Adam steps overshoots, and the rank target's stop / lift needs steps to act
        steps = max(MIN_STEPS, math.ceil((n_f + n_r_epoch) / int(self.batch_size)))
        steps = min(steps, max(1, n_f))
        history: list[dict[str, float]] = []
        net_eval = net.training
        net.eval()
        try:
            for _epoch in tqdm(range(int(cfg["epochs"])), desc="dual-memory",
                               disable=None if self.progress is None else not self.progress,
                               leave=False):  # loop over epochs
                f_order = rng.permutation(n_f)
                r_order = rng.choice(len(retain_seqs), size=n_r_epoch, replace=False) \
                    if n_r_epoch else np.zeros(0, np.int64)
                f_parts = np.array_split(f_order, steps)
                r_parts = np.array_split(r_order, steps)
                sums: dict[str, float] = {}
                for fb, rb in zip(f_parts, r_parts, strict=True):  # loop over mini-batches
                    tr_b = target_rank[fb].to(dev) if target_rank is not None else None
                    losses = self._step(model, side, windows[fb].to(dev), flags[fb].to(dev),
                                        retain_seqs[rb].to(dev), inactive_idx, kl_mask, cfg,
                                        tr_b)
                    total = sum(cfg[f"{k}_weight"] * v for k, v in losses.items())
                    opt.zero_grad(set_to_none=True)
                    if total.requires_grad:
                        total.backward()
                        opt.step()
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + float(v.detach()) / steps
                history.append(sums)
        finally:
            net.train(net_eval)
        for p in params:
            p.requires_grad_(False)
        side.eval()
        if calibration is not None:
            calibration["forgotten_side_hr@10"], calibration["reached"] = self._check_ranks(
                model, side, windows, flags, target_rank)
        train_seconds = time.perf_counter() - t0
        # ---- router
        tr = time.perf_counter()
        router, router_report = self._train_router(model, serve, windows, is_forget,
                                                   retain_users, rng)
        router_seconds = time.perf_counter() - tr
        config = {"rank": int(self.rank), "alpha": float(self.alpha), "targets": names,
                  "router_hidden": int(self.router_hidden), "threshold": float(self.threshold),
                  "preset": self.preset, "main_sha256": main_sum}
        result = DualMemoryModel(model, side, router, config,
                                 history=serve,
                                 item_ids=data.item_ids, user_ids=data.user_ids)
        if _main_checksum(model) != main_sum:  # pragma: no cover - a bug guard
            raise RuntimeError("dual-memory modified the main model; please report this bug")
        report = {"preset": self.preset, "settings": cfg, "records_forgotten": int(remove.sum()),
                  "forget_users": len(forget_users), "forget_windows": int(n_f),
                  "retain_windows_per_epoch": int(n_r_epoch), "targets": names,
                  "side_parameters": int(sum(p.numel() for p in params)),
                  "losses": history, "router": router_report, "calibration": calibration,
                  "train_seconds": train_seconds, "router_seconds": router_seconds,
                  "seconds": time.perf_counter() - t0,
                  "cpu_seconds": time.process_time() - c0}
        logger.info("dual-memory (%s): %d records of %d users forgotten in %.1fs",
                    self.preset, report["records_forgotten"], report["forget_users"],
                    report["seconds"])
        return UnlearnResult(model=result, report=UnlearnReport(
            method="dual-memory", exact=False, seconds=report["seconds"],
            cpu_seconds=report["cpu_seconds"], details=report,
            removed={"users": len(forget_users), "records": int(remove.sum())}))

    def _step(self, model: Any, side: nn.Module, fw: torch.Tensor, ff: torch.Tensor,
              rw: torch.Tensor, inactive_idx: torch.Tensor, kl_mask: torch.Tensor,
              cfg: Mapping[str, Any], target_rank: torch.Tensor | None = None
              ) -> dict[str, torch.Tensor]:
        """All loss terms of one mini-batch (forget windows ``fw``/``ff``, retain windows ``rw``,
        ``target_rank`` per forgotten position of ``fw`` when calibrated; ``kl_mask``: the items
        left out of the KL, ``inactive_idx``: those left out of the retention loss too)."""
        net = model.network
        zero = next(iter(p for p in side.parameters())).new_zeros(())
        out = {"retention": zero, "kl": zero, "unlikelihood": zero, "margin": zero,
               "topk": zero, "suppress": zero, "rank": zero}
        if len(rw):
            inputs, tgt = rw[:, :-1], rw[:, 1:]
            mask = (inputs != PAD) & (tgt != PAD)
            z_side = side.logits(side.hidden_at(inputs, mask))
            with torch.no_grad():
                z_main = net.logits(net.hidden_at(inputs, mask))
            # forgotten and inactive items leave the KL; inactive ones the retention loss too
            out["kl"] = retain_kl(z_side, z_main, kl_mask)
            if len(inactive_idx):
                z_side = z_side.index_fill(-1, inactive_idx, -1e9)
            out["retention"] = F.cross_entropy(z_side, tgt[mask] - 1)
        if len(fw):
            inputs, tgt = fw[:, :-1], fw[:, 1:]
            mask = ff & (inputs != PAD)
            if bool(mask.any()):
                z_side = side.logits(side.hidden_at(inputs, mask))
                z_main = None
                if float(cfg["margin_weight"]) > 0:  # only its hard negatives need the main
                    with torch.no_grad():
                        z_main = net.logits(net.hidden_at(inputs, mask))
                out.update(forget_losses(
                    z_side, z_main, tgt[mask] - 1, hard_negatives=int(cfg["hard_negatives"]),
                    top_k=int(cfg["top_k"]), margin=float(cfg["margin"]),
                    topk_margin=float(cfg["topk_margin"]),
                    suppress_margin=float(cfg["suppress_margin"]),
                    stop_at_top_k=bool(cfg["stop_at_top_k"]),
                    target_rank=target_rank[mask] if target_rank is not None else None,
                    rank_margin=float(cfg["rank_margin"]),
                    seen=_prefix_seen(inputs, mask, z_side.shape[1])))
        return out

    @staticmethod
    def _check_held_out(held_out: Any, data: Interactions) -> Interactions | None:
        if held_out is None:
            return None
        if not isinstance(held_out, Interactions) or len(held_out) == 0:
            raise ValidationError("held_out must be non-empty sisakit.Interactions (records the "
                                  "model never trained on), or None")
        if not held_out.same_space(data):
            raise ValidationError("held_out must share data's id space: build both from one "
                                  "Interactions with take() or without(), e.g. a split")
        return held_out

    @torch.no_grad()
    def _calibrate(self, model: Any, data: Interactions, held: Interactions,
                   windows: torch.Tensor, flags: torch.Tensor, is_forget: np.ndarray
                   ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Target rank of every forgotten position (``-1`` elsewhere), quantile-matched to the
        main model's ranks of ``held`` (see :func:`calibrated_ranks`)."""
        net = model.network
        dev = next(net.parameters()).device
        bs = int(model.score_batch)
        keep = ~is_forget[held.user_idx]
        users, items = held.user_idx[keep], torch.from_numpy(held.item_idx[keep])
        # the model's bound histories are data's (unlearn checked it): no second sort
        seqs = model.bound_histories if model.bound_histories is not None else user_sequences(
            data, int(model.max_len))
        hist = seqs[torch.from_numpy(users)]
        has = (hist != PAD).any(1)
        hist, items = hist[has], items[has]
        if len(hist) == 0:
            raise ValidationError("held_out has no record of a user who keeps a history in "
                                  "data; pass held-out records of users who are not forgotten")
        n_items = int(model.n_items)
        held_ranks = []
        for s in range(0, len(hist), bs):  # batches of users
            h = hist[s:s + bs].to(dev)
            seen = _prefix_seen(h, (h != PAD).cumsum(1) == (h != PAD).sum(1, keepdim=True),
                                n_items)  # the whole history: its last position
            held_ranks.append(_target_ranks(model.score_sequences(h), items[s:s + bs].to(dev),
                                            seen).cpu())
        held_ranks = torch.cat(held_ranks).numpy()
        member_ranks = _window_ranks(net, windows, flags, bs, n_items).numpy()
        # group by position from the window's end (row-major like the member ranks)
        cols = torch.nonzero(flags & (windows[:, :-1] != PAD), as_tuple=True)[1].numpy()
        targets = calibrated_ranks(member_ranks, held_ranks, groups=windows.shape[1] - 2 - cols)
        out = torch.full(flags.shape, -1, dtype=torch.int64)
        out[flags & (windows[:, :-1] != PAD)] = torch.from_numpy(targets)
        report = {"held_out_records": len(hist),
                  "held_out_hr@10": float((held_ranks < 10).mean()),
                  "forgotten_main_hr@10": float((member_ranks < 10).mean()),
                  "forgotten_target_hr@10": float((targets < 10).mean()),
                  "positions": len(targets)}
        return out, report

    @torch.no_grad()
    def _check_ranks(self, model: Any, side: nn.Module, windows: torch.Tensor,
                     flags: torch.Tensor, target_rank: torch.Tensor) -> tuple[float, float]:
        """The side memory's HR@10 of the forgotten items and the share at their target rank."""
        r = _window_ranks(side, windows, flags, int(model.score_batch), int(model.n_items))
        t = target_rank[flags & (windows[:, :-1] != PAD)]
        return float((r < 10).float().mean()), float((r >= t).float().mean())

    def _train_router(self, model: Any, serve: torch.Tensor, windows: torch.Tensor,
                      is_forget: np.ndarray, retain_users: np.ndarray, rng: np.random.Generator
                      ) -> tuple[Router, dict[str, Any]]:
        """Router on forget contexts (label 1) vs retain users' histories (``serve``: every
        user's history after the forget, label 0)."""
        f_users = np.flatnonzero(is_forget)
        f_serve = serve[torch.from_numpy(f_users)]
        f_serve = f_serve[(f_serve != PAD).any(1)]  # forget users with records left
        pos = torch.cat([_right_aligned(windows), f_serve])
        pos = pos[(pos != PAD).any(1)]
        pos = torch.unique(pos, dim=0)
        n_neg = min(len(retain_users), int(self.router_retain))
        neg_users = np.sort(rng.choice(retain_users, size=n_neg, replace=False)) \
            if n_neg else np.zeros(0, np.int64)
        neg = serve[torch.from_numpy(neg_users)]
        feats = model.encode(torch.cat([pos, neg])).float()
        labels = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(feats.device)
        g = torch.Generator().manual_seed(int(self.seed) + 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            router = Router(feats.shape[1], int(self.router_hidden)).to(feats.device)
        with torch.no_grad():
            router.mean.copy_(feats.mean(0))
            router.std.copy_(feats.std(0).clamp_min(1e-6) if len(feats) > 1
                             else torch.ones(feats.shape[1]))
        opt = torch.optim.Adam(router.parameters(), lr=float(self.router_lr), foreach=False)
        n_pos, n_neg_t = float(len(pos)), float(max(len(neg), 1))
        pos_weight = torch.tensor(n_neg_t / max(n_pos, 1.0), device=feats.device)
        router.train()
        for _ in range(int(self.router_epochs)):  # full-batch steps
            opt.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(router(feats), labels,
                                                      pos_weight=pos_weight)
            loss.backward()
            opt.step()
        router.eval()
        with torch.no_grad():
            pred = torch.sigmoid(router(feats)) >= float(self.threshold)
            all_w = torch.sigmoid(router(model.encode(serve).float())) >= float(self.threshold)
        all_w = all_w.cpu().numpy()
        others = np.flatnonzero(~is_forget)
        held_out = np.setdiff1d(others, neg_users)
        report = {
            "train_accuracy": float((pred.float() == labels).float().mean()),
            "forget_contexts_to_side": float(pred[:len(pos)].float().mean()) if len(pos) else 0.0,
            "forget_users_to_side": (float(all_w[f_users].mean())
                                     if len(f_users) and len(f_serve) else None),
            "other_users_to_main": float((~all_w[others]).mean()) if len(others) else None,
            "held_out_users_to_main": (float((~all_w[held_out]).mean())
                                       if len(held_out) else None),
            "positives": len(pos), "negatives": len(neg),
        }
        return router, report


@hookimpl
def register_unlearners(register):
    register("dual-memory", DualMemory)
