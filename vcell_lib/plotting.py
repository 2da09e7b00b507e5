"""One figure style for the whole book, and small plot helpers shared by chapters.

Taught in chapter 01.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib as mpl

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .train import History

__all__ = ["PALETTE", "plot_history", "style"]

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


def plot_history(history: History, title: str, *, ylabel: str = "loss", log: bool = False, ax: Axes | None = None):
    """A training run's loss per step (raw and running mean) and its validation losses. Taught in chapter 11.

    Draws on `ax` (a new figure when None) and returns the axes; `log` puts the loss on a log scale.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    if not history.train_loss:
        raise ValueError("history has no training loss to plot: was it returned by train.fit?")
    if ax is None:
        ax = plt.subplots(figsize=(7, 3.2))[1]
    losses = pd.Series(history.train_loss)
    ax.plot(losses, color=PALETTE["control"], alpha=0.3, lw=0.8, label="training batch")
    window = max(1, min(25, len(losses) // 10))
    running = losses.rolling(window, min_periods=1).mean()
    ax.plot(running, color=PALETTE["control"], label="training (running mean)")
    if history.val_loss:
        steps, values = zip(*history.val_loss)
        ax.plot(steps, values, "o-", color=PALETTE["perturbed"], label="held-out cells")
    ax.set(xlabel="step", ylabel=ylabel, title=title, yscale="log" if log else "linear")
    ax.legend()
    return ax
