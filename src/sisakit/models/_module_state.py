"""Checkpoint helpers shared by the models that train a ``torch.nn.Module`` with Adam."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .._rng import seed_to_tensor
from ..errors import ValidationError


def module_state(net: torch.nn.Module, opt: torch.optim.Optimizer, init_seed: int
                 ) -> dict[str, torch.Tensor]:
    """The module's weights (``net.*``), Adam's moments per parameter (``opt.<i>.*``) and the
    init seed, as a flat dict of CPU tensors."""
    out = {f"net.{k}": v.detach().cpu().clone() for k, v in net.state_dict().items()}
    for idx, p in enumerate(net.parameters()):
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in st:
                out[f"opt.{idx}.{key}"] = torch.as_tensor(st[key]).detach().cpu().clone()
    out["init_seed"] = seed_to_tensor(init_seed)
    return out


def load_module_state(net: torch.nn.Module, opt: torch.optim.Optimizer,
                      state: Mapping[str, torch.Tensor], name: str) -> None:
    """Restore what :func:`module_state` saved into a freshly built ``net`` and ``opt``."""
    try:
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    except RuntimeError as exc:
        raise ValidationError(f"state does not fit this {name} configuration: {exc}") from exc
    dev = next(net.parameters()).device
    for idx, p in enumerate(net.parameters()):
        if f"opt.{idx}.step" in state:
            opt.state[p] = {
                "step": state[f"opt.{idx}.step"].clone(),
                "exp_avg": state[f"opt.{idx}.exp_avg"].to(dev).clone(),
                "exp_avg_sq": state[f"opt.{idx}.exp_avg_sq"].to(dev).clone(),
            }
