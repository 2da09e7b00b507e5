"""Distances between sets of cells, used as training losses: the energy distance. Taught in chapters 11 and 12."""

from __future__ import annotations

from torch import Tensor

__all__ = ["energy_distance"]


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    """Energy distance between point sets x (..., n, d) and y (..., m, d), one value per leading index.

    E = mean_ij |x_i - y_j| - 1/2 mean_ii' |x_i - x_i'| - 1/2 mean_jj' |y_j - y_j'| with Euclidean |.|: zero
    when the two sets are the same distribution, positive otherwise. It equals geomloss's
    `SamplesLoss("energy")` (the loss of SE and ST), including its floor of 1e-4 on each distance. With one point
    per set it is |x - y| (less 1e-4).
    Taught in chapter 11.
    """
    if x.shape[-1] != y.shape[-1] or x.shape[:-2] != y.shape[:-2]:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must agree in all but the set size (dim -2)")
    return _mean_distance(x, y) - 0.5 * _mean_distance(x, x) - 0.5 * _mean_distance(y, y)


def _mean_distance(x: Tensor, y: Tensor) -> Tensor:
    """Mean Euclidean distance over all pairs, computed as geomloss does: |x|^2 - 2 x.y + |y|^2, floored at 1e-8.

    The floor keeps the gradient finite where two points coincide (every point and itself).
    """
    squared = (x * x).sum(-1)[..., :, None] - 2 * x @ y.transpose(-2, -1) + (y * y).sum(-1)[..., None, :]
    return squared.clamp_min(1e-8).sqrt().mean(dim=(-2, -1))
