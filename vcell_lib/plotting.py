"""One figure style for the whole book, and small plot helpers shared by chapters.

Taught in chapter 01.
"""

from __future__ import annotations

import matplotlib as mpl

__all__ = ["PALETTE", "style"]

PALETTE: dict[str, str] = {
    "control": "#7f7f7f",
    "perturbed": "#d62728",
    "prediction": "#1f77b4",
    "truth": "#2ca02c",
    "accent": "#ff7f0e",
}
"""Colours with a fixed meaning: the same role has the same colour in every chapter."""

_RC: dict[str, object] = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "image.cmap": "viridis",
}


def style() -> None:
    """Apply the book's matplotlib style (explicitly, never on import). Taught in chapter 01."""
    mpl.rcParams.update(_RC)
    mpl.rcParams["axes.prop_cycle"] = mpl.cycler(color=list(PALETTE.values()) + ["#9467bd", "#8c564b", "#e377c2"])
