"""Reproducibility and run-mode helpers: seeds, devices, fast mode, versions.

Taught in chapter 01.
"""

from __future__ import annotations

import os
import platform
import random
from importlib import metadata
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: importing vcell_lib stays cheap
    import torch

__all__ = ["FAST", "by_mode", "fast_mode", "get_device", "set_seed", "versions"]

T = TypeVar("T")

_FAST_ENV = "VCELL_FAST"


def fast_mode() -> bool:
    """True when the environment variable VCELL_FAST is "1" (tests shrink data and epochs). Taught in chapter 01."""
    value = os.environ.get(_FAST_ENV, "0").strip()
    if value not in {"", "0", "1"}:
        raise ValueError(f"{_FAST_ENV} must be '0' or '1', got {value!r}")
    return value == "1"


FAST: bool = fast_mode()
"""Fast mode as it was when vcell_lib was imported; `fast_mode()` reads it again."""


def by_mode(full: T, fast: T) -> T:
    """Return `fast` in fast mode (VCELL_FAST=1) and `full` otherwise. Taught in chapter 01."""
    return fast if fast_mode() else full


def set_seed(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and (if installed) PyTorch; return a fresh NumPy Generator. Taught in chapter 01."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # torch is optional for the early chapters
        pass
    else:
        torch.manual_seed(seed)  # also seeds every CUDA device
    return np.random.default_rng(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best torch device ("cuda", then "mps", then "cpu"), or the one asked for. Taught in chapter 01."""
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if prefer is not None:
        kind = prefer.split(":")[0]
        if kind not in available:
            raise ValueError(f"prefer must be one of {sorted(available)} (optionally with ':index'), got {prefer!r}")
        if not available[kind]:
            raise ValueError(f"prefer={prefer!r} but no {kind} device is available here; use prefer=None to pick one")
        return torch.device(prefer)
    for kind in ("cuda", "mps"):
        if available[kind]:
            return torch.device(kind)
    return torch.device("cpu")


_REPORTED = ("numpy", "scipy", "pandas", "matplotlib", "anndata", "scanpy", "torch", "vcell-lib")


def versions(packages: tuple[str, ...] = _REPORTED) -> dict[str, str]:
    """Versions of Python and the given installed packages ("not installed" otherwise). Taught in chapter 01."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
