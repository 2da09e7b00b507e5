"""The Wilcoxon rank-sum (Mann-Whitney U) test of many groups of cells against one control, every gene at once.

Taught in chapter 07. This is the library's one rank-sum kernel: `metrics.wilcoxon_de` (2025 metrics, log1p
data) calls it, and any non-negative expression matrix (counts, CPM, log1p; dense or sparse) can be tested with it.

The p-values are scipy.stats.mannwhitneyu(group, control, method="asymptotic", use_continuity=True): the
normal approximation with the tie correction of the variance and a continuity correction of 0.5. For group
size n1, control size n2, n = n1 + n2,

    U1 = sum over group values v of (#controls below v + #controls equal to v / 2)
    var(U1) = n1 n2 / 12 * ((n + 1) - T / (n (n - 1))),   T = sum over distinct pooled values of t^3 - t
    z = (max(U1, n1 n2 - U1) - n1 n2 / 2 - 1/2) / sqrt(var),   p = erfc(z / sqrt(2))   (two-sided)

with t the number of cells (group and control together) that share a value. When every value is tied the
variance is 0 and p is 1 (no evidence; scipy returns NaN).

Why this is fast on single-cell data. Most entries are 0 and 0 is the smallest value, so the zeros need no
sorting. With z1 = zeros in the group and z2 = zeros in the control of a gene:

* every group zero sits level with the z2 control zeros and above nothing: the zeros add z1 * z2 / 2 to U1;
* every non-zero group value lies above all z2 control zeros: it adds z2 plus its place among the control's
  non-zero values (how many lie below it, half of those equal to it);
* the zeros form one block of tied values, t0 = z1 + z2, adding t0^3 - t0 to T; the other tie blocks are
  among the non-zero values.

So only the non-zero entries are sorted. Each is encoded as one integer key (gene, value, label), label 0 for
the control and g + 1 for group g; one sort brings every gene's values into order with, for each distinct
value, the control's cells first. Then a running count of the control keys gives, for every group value, the
controls up to it in its gene (those below it and those equal to it): no search. Values shared by several
cells (ties) need more counting, done on those entries only. Values are compared exactly: float32
data (the usual case) by their bits (the bits of non-negative floats order like the numbers), other data by
their rank among the distinct values.

The work grows with the number of non-zero entries. A sparse matrix is sorted at once (the keys take as
much memory as a float32 CSR matrix), a dense one in ranges of genes of at most MAX_SORTED values; the sorted
keys are then tested in pieces of whole genes, in threads. Only some of numpy's functions release the GIL
(sort, element-wise arithmetic; not bincount or cumsum), so threads help less than the number of cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from scipy import special

__all__ = ["rank_sum_pvalues"]

MAX_ENTRIES = 2**18
"""Non-zero entries handled at once by a thread: bounds the memory of the working arrays."""
MAX_SORTED = 2**25
"""Values of a dense matrix sorted at once (at most 256 MiB of keys)."""
UNTESTED = np.iinfo(np.int64).max
"""The key of an entry that takes no part (a stored 0, a cell in no set): it sorts last and is cut off."""


def _default_threads() -> int:
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def rank_sum_pvalues(
    matrix: np.ndarray | sp.spmatrix | sp.sparray,
    groups: Sequence[np.ndarray],
    control: np.ndarray,
    *,
    n_jobs: int | None = None,
    max_entries: int = MAX_ENTRIES,
) -> np.ndarray:
    """Two-sided Mann-Whitney U p-values of each group against the control, for every gene. Taught in chapter 07.

    Parameters
    ----------
    matrix
        Cells x genes, non-negative (counts, CPM, log1p...), dense or scipy sparse (CSR, CSC, COO).
    groups
        For each group, the row indices of its cells (at least one each).
    control
        Row indices of the control cells (at least one). A cell may belong to several groups, or to a group
        and the control: it is then counted in each.
    n_jobs
        Threads (default: all cores; 1 runs serially).
    max_entries
        Non-zero entries a thread tests at once (bounds the memory of its working arrays).

    Returns
    -------
    numpy.ndarray
        float64, groups x genes: exactly scipy.stats.mannwhitneyu(method="asymptotic", use_continuity=True)
        on the float64 values, except 1.0 where all values of a gene are tied (scipy: NaN).
    """
    if not (sp.issparse(matrix) or isinstance(matrix, np.ndarray)):
        raise ValueError(f"matrix must be a numpy array or a scipy sparse matrix, got {type(matrix).__name__}")
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-dimensional (cells x genes), got shape {matrix.shape}")
    n_cells, n_genes = matrix.shape
    groups = [_rows(rows, n_cells, f"groups[{i}]") for i, rows in enumerate(groups)]
    control = _rows(control, n_cells, "control")
    if not groups:
        raise ValueError("groups is empty: give at least one group of rows to test")
    n_jobs = _default_threads() if n_jobs is None else int(n_jobs)
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1 (or None for all cores), got {n_jobs}")
    if max_entries < 1:
        raise ValueError(f"max_entries must be positive, got {max_entries}")

    if sp.issparse(matrix) and matrix.format not in ("csr", "csc"):
        matrix = matrix.tocsr()
    _check_values(matrix.data if sp.issparse(matrix) else matrix)

    # Label every row: 0 control, g + 1 group g, -1 untested. A row in two sets is copied, once per set.
    rows = np.concatenate([control, *groups])
    labels = np.repeat(np.arange(len(groups) + 1), [len(control)] + [len(g) for g in groups])
    if len(np.unique(rows)) < len(rows):
        matrix, row_label = matrix[rows], labels
    else:
        row_label = np.full(n_cells, -1, dtype=np.int64)
        row_label[rows] = labels

    n1 = np.array([len(g) for g in groups], dtype=np.float64)[:, None]
    n2 = float(len(control))
    label_bits = int(len(groups)).bit_length()
    p_values = np.empty((len(groups), n_genes))

    with ThreadPoolExecutor(n_jobs) as pool:
        each = map if n_jobs == 1 else pool.map  # list(each(...)) re-raises a worker's exception here
        # A sparse matrix is sorted at once; a dense one in ranges of genes with at most MAX_SORTED values.
        step = max(n_genes, 1) if sp.issparse(matrix) else max(1, MAX_SORTED // max(matrix.shape[0], 1))
        for first in range(0, n_genes, step):
            last = min(first + step, n_genes)
            keys, gene_shift = _sorted_keys(matrix, first, last, row_label, label_bits, max_entries, each)
            _test_sorted_keys(keys, gene_shift, label_bits, n1, n2, p_values[:, first:last], max_entries, each)
    return p_values


def _test_sorted_keys(
    keys: np.ndarray,
    gene_shift: int,
    label_bits: int,
    n1: np.ndarray,
    n2: float,
    out: np.ndarray,
    max_entries: int,
    each: Callable,
) -> None:
    """Write the p-values of the genes of the sorted keys into out, in pieces of whole genes (threads)."""
    n_genes = out.shape[1]
    gene_start = np.searchsorted(keys, np.arange(n_genes + 1, dtype=np.int64) << gene_shift)
    # Cut before the gene that holds entry max_entries, 2 max_entries, ...
    inner = np.searchsorted(gene_start, np.arange(max_entries, len(keys), max_entries), "right") - 1
    cuts = np.unique(np.r_[0, inner, n_genes])

    def test(piece: int) -> None:
        first, last = cuts[piece], cuts[piece + 1]
        block = keys[gene_start[first] : gene_start[last]]
        out[:, first:last] = _block_p_values(block, first, last - first, gene_shift - label_bits, label_bits, n1, n2)

    list(each(test, range(len(cuts) - 1)))


def _rows(rows: np.ndarray, n_cells: int, name: str) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.dtype == bool:
        raise ValueError(f"{name} must hold row indices, not a boolean mask: use np.flatnonzero(mask)")
    if rows.ndim != 1 or len(rows) == 0 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D array of row indices, got {rows!r:.60}")
    if rows.min() < -n_cells or rows.max() >= n_cells:
        raise ValueError(f"{name} has row indices outside the matrix's {n_cells} rows")
    return rows % n_cells


def _check_values(values: np.ndarray) -> None:
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool) or np.iscomplexobj(values):
        raise ValueError(f"matrix must hold real numbers, got dtype {values.dtype}")
    smallest = values.min(initial=0)  # NaN if there is one
    if np.isnan(smallest):
        raise ValueError(f"matrix has {int(np.isnan(values).sum())} NaN values: the rank-sum test needs numbers")
    if smallest < 0:
        raise ValueError(
            f"matrix has negative values (min {smallest:.4g}): the kernel needs non-negative data, "
            "where 0 is the smallest value (counts, CPM, log1p)"
        )


def _float32_exact(values: np.ndarray) -> bool:
    return values.dtype == np.float32 or bool(np.array_equal(values, values.astype(np.float32)))


def _sorted_keys(
    matrix: np.ndarray | sp.csr_matrix | sp.csc_matrix,
    first_gene: int,
    last_gene: int,
    row_label: np.ndarray,
    label_bits: int,
    chunk: int,
    each: Callable,
) -> tuple[np.ndarray, int]:
    """The sorted keys of the tested non-zero entries of genes first_gene...last_gene - 1 (numbered from 0).

    A key is (gene, value, label) from the high bits to the low ones; returns the keys and the gene's shift.
    The keys are made in chunks of about `chunk` entries of consecutive rows (CSR, dense) or genes (CSC).
    """
    if sp.issparse(matrix):  # one range: all genes
        values, indptr = matrix.data, matrix.indptr
    else:
        matrix = matrix[:, first_gene:last_gene]
        values, indptr = matrix, np.r_[0, np.cumsum(np.count_nonzero(matrix, axis=1))]
    exact = _float32_exact(values)
    distinct = None if exact else np.unique(values[values != 0])  # codes: ranks among the non-zero values
    value_bits = 31 if exact else int(len(distinct)).bit_length()
    gene_shift = value_bits + label_bits
    if int(last_gene - first_gene - 1).bit_length() + gene_shift > 63:
        raise ValueError("too many genes and groups for 63-bit keys: test fewer genes at a time")
    keys = np.empty(indptr[-1], dtype=np.int64)
    bounds = np.unique(np.r_[np.searchsorted(indptr, np.arange(0, indptr[-1], chunk), "right") - 1, len(indptr) - 1])

    def fill(part: int) -> None:  # the keys of the entries of rows (CSR, dense) or genes (CSC) first...last - 1
        first, last = bounds[part], bounds[part + 1]
        entries = slice(indptr[first], indptr[last])
        counts = np.diff(indptr[first : last + 1])
        if not sp.issparse(matrix):
            rows = matrix[first:last]
            nonzero = rows != 0
            genes, data, labels = (
                np.flatnonzero(nonzero) % rows.shape[1],
                rows[nonzero],
                np.repeat(row_label[first:last], counts),
            )
        elif matrix.format == "csr":
            genes, data, labels = (
                matrix.indices[entries],
                matrix.data[entries],
                np.repeat(row_label[first:last], counts),
            )
        else:
            genes, data, labels = (
                np.repeat(np.arange(first, last), counts),
                matrix.data[entries],
                row_label[matrix.indices[entries]],
            )
        # The bits of non-negative float32 values, read as integers, order like the values (+ 0: -0.0 is 0.0).
        codes = np.add(data, 0, dtype=np.float32).view(np.int32) if exact else np.searchsorted(distinct, data) + 1
        out = keys[entries]
        np.left_shift(genes, gene_shift, out=out, dtype=np.int64)
        out |= np.left_shift(codes, label_bits, dtype=np.int64)
        out |= labels
        out[(data == 0) | (labels < 0)] = UNTESTED  # a stored 0; a cell in no set

    list(each(fill, range(len(bounds) - 1)))
    keys.sort()
    return keys[: np.searchsorted(keys, UNTESTED)], gene_shift


def _block_p_values(
    keys: np.ndarray, first_gene: int, n_genes: int, value_bits: int, label_bits: int, n1: np.ndarray, n2: float
) -> np.ndarray:
    """p-values (groups x genes) from the sorted keys of genes first_gene, first_gene + 1, ... (module docstring)."""
    shape = (len(n1) + 1, n_genes)  # tables with row 0 for the control, row g + 1 for group g

    def split(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The label, the (gene, value) pair and the table cell (label, gene) of each key."""
        label = keys & ((1 << label_bits) - 1)
        value = keys >> label_bits
        return label, value, label * n_genes + (value >> value_bits) - first_gene

    def table(cells: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(cells, weights, minlength=shape[0] * shape[1]).reshape(shape)

    label, value, cells = split(keys)
    nonzero = table(cells)
    # U1 of the non-zero values: each counts the controls up to it in its gene's sorted keys, that is those
    # below it and those equal to it (the controls come first among equal values; corrected further down).
    controls_in_earlier_genes = np.cumsum(nonzero[0]) - nonzero[0]
    u_nonzero = table(cells, np.cumsum(label == 0)) - nonzero * controls_in_earlier_genes
    tie_sums = np.zeros(shape)  # the sum of t^3 - t (row 0), and what each group adds to it (rows 1...)
    same = value[1:] == value[:-1]
    if same.any():  # values that several cells share
        shared = keys[np.flatnonzero(np.r_[same, False] | np.r_[False, same])]
        run_start = np.flatnonzero(np.r_[True, shared[1:] != shared[:-1]])  # a run: cells of one set, one value
        count = np.diff(np.r_[run_start, len(shared)])
        label, value, cells = split(shared[run_start])
        first = np.r_[True, value[1:] != value[:-1]]
        first_of = np.flatnonzero(first)[np.cumsum(first) - 1]  # a value's first run: the control's, if any
        equal = np.where((label > 0) & (label[first_of] == 0), count[first_of], 0)  # controls equal to a group's
        u_nonzero -= table(cells, 0.5 * equal * count)
        pooled = count + equal
        tie_sums = table(cells, pooled**3 - pooled - (equal**3 - equal))  # for a control run: count^3 - count

    # The zeros, in closed form: z1 z2 / 2 to U1, and every non-zero group value lies above the z2 control zeros.
    zeros_group, zeros_control = n1 - nonzero[1:], n2 - nonzero[0]
    u1 = u_nonzero[1:] + nonzero[1:] * zeros_control + 0.5 * zeros_group * zeros_control
    tied_zeros = zeros_group + zeros_control
    ties = tie_sums[0] + tie_sums[1:] + tied_zeros**3 - tied_zeros
    n = n1 + n2
    variance = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    u = np.maximum(u1, n1 * n2 - u1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (u - n1 * n2 / 2.0 - 0.5) / np.sqrt(variance)
        p = np.clip(special.erfc(z / np.sqrt(2.0)), 0.0, 1.0)
    return np.where(variance > 0, p, 1.0)  # all values tied: no evidence
