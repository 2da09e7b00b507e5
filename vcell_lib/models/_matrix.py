"""Reading a log1p matrix a few rows at a time, in memory or backed, never made dense (SE and ST batches).

Taught in chapters 11 and 12.
"""

from __future__ import annotations

import warnings
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..data.normalize import ensure_log1p

_CHECKED_ROWS = 2000  # a backed X is checked to be log1p on its first rows


def log1p_matrix(adata: ad.AnnData, name: str) -> Any:
    """adata's X, checked to be log1p: in memory through ensure_log1p (counts are normalized, with its warning),
    backed on its first rows (backed counts are an error: normalize and write them first). Never made dense."""
    if not adata.isbacked:
        X = ensure_log1p(adata, name).X
        return X.tocsr() if sp.issparse(X) and not sp.isspmatrix_csr(X) else X
    X = adata.X
    head = ad.AnnData(X=gather_rows(X, np.arange(min(adata.n_obs, _CHECKED_ROWS))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checked = ensure_log1p(head, name)
    if checked is not head:
        raise ValueError(
            f"{name} is backed and its X looks like raw counts (integers): normalize it in memory "
            "(vcell_lib.data.normalize_log1p) and write it, or load it with .to_memory()"
        )
    return X


def gather_rows(X: Any, rows: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """Dense float32 copy of X's `rows` (in that order, repeats allowed), from a CSR, dense or backed X.

    Each distinct row is read once, in increasing order (what h5py needs), then the rows are put in order.
    """
    unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    block = X[unique]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    if columns is not None:
        block = block[:, columns]
    return block.astype(np.float32, copy=False)[inverse]
