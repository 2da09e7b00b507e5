"""Set distances (vcell_lib.models.losses): geomloss parity, and the properties a distance between sets must have."""

import pytest
import torch
from geomloss import SamplesLoss

from vcell_lib.models.losses import energy_distance, mmd_rbf

LOSSES = {"energy": energy_distance, "mmd": mmd_rbf}


@pytest.fixture
def sets():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 20, 5, generator=generator, dtype=torch.float64)
    y = torch.randn(3, 15, 5, generator=generator, dtype=torch.float64) * 1.5
    return x, y


def test_energy_distance_equals_geomloss(sets):
    x, y = sets
    ours = energy_distance(x, y)
    theirs = SamplesLoss("energy", blur=0.05)(x, y)
    assert ours.shape == (3,)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6), (ours, theirs)


def test_mmd_with_one_bandwidth_is_twice_geomloss_gaussian(sets):
    x, y = sets
    for bandwidth in (0.5, 2.0):
        theirs = 2 * SamplesLoss("gaussian", blur=bandwidth)(x, y)
        assert torch.allclose(mmd_rbf(x, y, [bandwidth]), theirs, rtol=0, atol=1e-6)
    two = mmd_rbf(x, y, [0.5, 2.0])  # a sum of kernels gives the sum of the MMDs
    assert torch.allclose(two, mmd_rbf(x, y, [0.5]) + mmd_rbf(x, y, [2.0]), atol=1e-12)


def test_energy_distance_is_the_mmd_of_the_distance_kernel(sets):
    """The module docstring's claim, by hand: MMD^2 with k(a, b) = (|a| + |b| - |a - b|) / 2."""
    x, y = sets

    def mean_kernel(a, b):
        return (0.5 * (a.norm(dim=-1)[..., :, None] + b.norm(dim=-1)[..., None, :] - torch.cdist(a, b))).mean((-2, -1))

    mmd = mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)
    assert torch.allclose(energy_distance(x, y), mmd, atol=1e-4)  # the 1e-4 floor on each distance


@pytest.mark.parametrize("name", LOSSES)
def test_zero_on_identical_sets_symmetric_and_positive_on_shifted_sets(name, sets):
    loss = LOSSES[name]
    x, y = sets
    assert torch.allclose(loss(x, x.clone()), torch.zeros(3, dtype=x.dtype), atol=1e-7)
    assert torch.allclose(loss(x, y), loss(y, x), atol=1e-10)
    shifted = loss(x, x + 1.0)
    assert (shifted > 1e-2).all(), shifted
    assert (loss(x, x + 3.0) > shifted).all()  # further apart, larger
    reordered = loss(x[:, torch.randperm(20)], y)  # sets: the order of the points does not matter
    assert torch.allclose(reordered, loss(x, y), atol=1e-10)


def test_gradients_are_finite_where_points_coincide(sets):
    x, y = sets
    x = x.clone().requires_grad_(True)
    (energy_distance(x, x.detach()).sum() + mmd_rbf(x, y).sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_bfloat16_autocast_does_not_spoil_the_distances():
    """Under autocast (train.fit's bf16) the distances are still computed in float32."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 16, 2000, generator=generator) * 3  # many genes: |x|^2 is large, |x - y|^2 comparatively small
    y = x + 0.05 * torch.randn(2, 16, 2000, generator=generator)
    exact = energy_distance(x, y), mmd_rbf(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (x @ y.mT).dtype == torch.bfloat16  # autocast is on: a plain matmul would be bfloat16
        ours = energy_distance(x, y), mmd_rbf(x, y)
        bf16 = (x * x).sum(-1)[..., :, None] - 2 * x @ y.mT + (y * y).sum(-1)[..., None, :]  # what that would give
    for value, reference in zip(ours, exact):
        assert value.dtype == torch.float32
        assert torch.allclose(value, reference, rtol=1e-6, atol=0), (value, reference)
    squared = (x[:, :, None] - y[:, None]).pow(2).sum(-1)
    assert (bf16 - squared).abs().max() > 1.0  # bfloat16 distances are off by more than 1 (squared distance ~5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="must agree"):
        energy_distance(torch.zeros(2, 4, 3), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="must agree"):
        mmd_rbf(torch.zeros(2, 4, 3), torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="bandwidths must be positive"):
        mmd_rbf(torch.zeros(4, 3), torch.zeros(4, 3), [0.0])
