"""Device resolution and deterministic-execution helpers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from .errors import ValidationError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU; anything else is passed to torch."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValidationError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValidationError("device='cuda' was requested but CUDA is not available; use 'auto'")
    return dev


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (bit-exact results need a fixed thread count)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with a 64-bit seed (CPU generators give device-independent draws)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return g


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """On CUDA, run a block with ``torch.use_deterministic_algorithms(True)`` (bit-exact
    retraining needs it); on the CPU the kernels sisakit uses are deterministic already."""
    if device.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old)
