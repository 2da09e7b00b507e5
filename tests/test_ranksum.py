"""The rank-sum kernel (vcell_lib.ranksum, chapter 07) against scipy.stats.mannwhitneyu."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from vcell_lib import ranksum
from vcell_lib.ranksum import rank_sum_pvalues


def scipy_pvalues(values: np.ndarray, groups: list, control: np.ndarray) -> np.ndarray:
    """scipy's asymptotic, continuity-corrected p-values in float64; 1.0 where scipy gives NaN (all tied)."""
    values = np.asarray(values, dtype=np.float64)
    rows = [
        stats.mannwhitneyu(values[g], values[control], method="asymptotic", use_continuity=True, axis=0).pvalue
        for g in groups
    ]
    return np.where(np.isnan(rows), 1.0, rows)


def tricky_matrix(dtype=np.float64, seed=0) -> tuple[np.ndarray, list, np.ndarray]:
    """Counts-like values with many ties and zeros, plus the hard genes; uneven groups, one of a single cell."""
    rng = np.random.default_rng(seed)
    sizes = [25, 3, 1, 60, 7]
    n_control = 70
    n_cells = n_control + sum(sizes)
    values = rng.poisson(0.6, (n_cells, 40)).astype(np.float64)  # many zeros and ties
    values[:, 1] = 0  # all zero: every value tied
    values[:, 2] = 2.5  # one non-zero value everywhere: every value tied
    values[:n_control, 3] = 1.0  # constant within the controls
    values[:, 4] = rng.random(n_cells)  # no ties at all, no zeros
    values[:, 5] = rng.random(n_cells) * (rng.random(n_cells) < 0.3)  # sparse, no ties among non-zeros
    values[:, 6] = np.log1p(rng.poisson(3.0, n_cells) / 7.3)  # log1p-like values, repeated
    values[n_control:, 7] = 0  # the groups are all zero, the controls are not
    values[:n_control, 8] = 0  # the controls are all zero, the groups are not
    values = values.astype(dtype)
    control = np.arange(n_control)
    bounds = np.cumsum([n_control, *sizes])
    groups = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    return values, groups, control


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["dense", "csr", "csc"])
def test_matches_scipy_mannwhitneyu(dtype, layout):
    values, groups, control = tricky_matrix(dtype)
    matrix = {"dense": values, "csr": sp.csr_matrix(values), "csc": sp.csc_matrix(values)}[layout]
    ours = rank_sum_pvalues(matrix, groups, control, n_jobs=1)
    np.testing.assert_allclose(ours, scipy_pvalues(values, groups, control), rtol=1e-12, atol=1e-15)
    assert (ours[:, [1, 2]] == 1.0).all()  # every value tied: no evidence
    assert ours.dtype == np.float64 and ours.shape == (len(groups), values.shape[1])


def test_values_that_are_not_float32():
    """float64 values that float32 cannot hold are compared exactly: 1 + 1e-12 is not 1."""
    values, groups, control = tricky_matrix(np.float64, seed=1)
    values[:, 10] = np.where(np.arange(len(values)) % 2, 1.0, 1.0 + 1e-12)
    values[:, 11] = np.random.default_rng(2).random(len(values)) * 1e-9
    for matrix in (values, sp.csr_matrix(values)):
        ours = rank_sum_pvalues(matrix, groups, control, n_jobs=1)
        np.testing.assert_allclose(ours, scipy_pvalues(values, groups, control), rtol=1e-12, atol=1e-15)


def test_sparse_dense_threads_and_blocks_agree_exactly():
    rng = np.random.default_rng(3)
    values = (rng.poisson(0.3, (500, 300)) * rng.random(300)).astype(np.float32)  # sparse, ties within genes
    labels = rng.integers(-1, 6, 500)  # -1: cells in no set
    control, groups = np.flatnonzero(labels == 0), [np.flatnonzero(labels == g) for g in range(1, 6)]
    reference = rank_sum_pvalues(values, groups, control, n_jobs=1)
    np.testing.assert_allclose(reference, scipy_pvalues(values, groups, control), rtol=1e-12, atol=1e-15)
    for matrix in (values, sp.csr_matrix(values), sp.csc_matrix(values), sp.coo_matrix(values)):
        for n_jobs in (1, 2, 3):
            for max_entries in (50, 1000, 2**18):  # many pieces, a few, one
                ours = rank_sum_pvalues(matrix, groups, control, n_jobs=n_jobs, max_entries=max_entries)
                np.testing.assert_array_equal(ours, reference)


def test_dense_input_sorted_in_ranges_of_genes(monkeypatch):
    values, groups, control = tricky_matrix(np.float32, seed=6)
    reference = rank_sum_pvalues(sp.csr_matrix(values), groups, control)
    monkeypatch.setattr(ranksum, "MAX_SORTED", 3 * len(values))  # three genes at a time
    np.testing.assert_array_equal(rank_sum_pvalues(values, groups, control, n_jobs=2), reference)


def test_cells_in_several_sets_and_stored_zeros():
    values, groups, control = tricky_matrix(np.float32, seed=4)
    groups = [groups[0], np.r_[groups[0][:5], groups[3]], np.r_[control[:10], groups[4]]]  # overlapping sets
    expected = scipy_pvalues(values, groups, control)
    np.testing.assert_allclose(rank_sum_pvalues(values, groups, control), expected, rtol=1e-12, atol=1e-15)
    stored = sp.csr_matrix(values)
    stored.data[::7] = 0.0  # explicit zeros in the sparse structure, and a negative zero
    stored.data[1] = -0.0
    dense = stored.toarray()
    ours = rank_sum_pvalues(stored, groups, control)
    np.testing.assert_allclose(ours, scipy_pvalues(dense, groups, control), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(ours, rank_sum_pvalues(dense, groups, control))


def test_integer_and_count_data():
    rng = np.random.default_rng(5)
    counts = rng.poisson(2.0, (120, 30))  # int64 counts
    control, groups = np.arange(80), [np.arange(80, 100), np.arange(100, 120)]
    expected = scipy_pvalues(counts, groups, control)
    for matrix in (counts, sp.csr_matrix(counts), counts * 10**9):  # 10^9 x counts: not float32-exact
        np.testing.assert_allclose(rank_sum_pvalues(matrix, groups, control), expected, rtol=1e-12, atol=1e-15)


def test_bad_inputs_are_named():
    values, groups, control = tricky_matrix()
    bad = values.copy()
    bad[3, 4] = -0.5
    with pytest.raises(ValueError, match="negative values"):
        rank_sum_pvalues(bad, groups, control)
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        rank_sum_pvalues(sp.csr_matrix(bad), groups, control)
    with pytest.raises(ValueError, match=r"groups\[1\] must be a non-empty"):
        rank_sum_pvalues(values, [groups[0], []], control)
    with pytest.raises(ValueError, match="boolean mask"):
        rank_sum_pvalues(values, groups, np.arange(len(values)) < 70)
    with pytest.raises(ValueError, match="outside the matrix"):
        rank_sum_pvalues(values, groups, np.array([0, len(values)]))
    with pytest.raises(ValueError, match="n_jobs"):
        rank_sum_pvalues(values, groups, control, n_jobs=0)
    with pytest.raises(ValueError, match="groups is empty"):
        rank_sum_pvalues(values, [], control)
    with pytest.raises(ValueError, match="2-dimensional"):
        rank_sum_pvalues(values[:, 0], groups, control)
