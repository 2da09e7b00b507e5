"""Library-size normalization and log1p, and the check that data are log1p. Taught in chapters 02 and 05."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import scipy.sparse as sp

from vcell_lib.data.loading import _check_counts, _require_in_memory


def normalize_log1p(adata: ad.AnnData, target_sum: float | None = None) -> ad.AnnData:
    """Scale each cell to `target_sum` counts (default: the median library size), then log1p. Taught in chapter 02.

    This is what the challenge's evaluator does to count data. Returns a new AnnData whose `X` is
    log1p-normalized and whose `layers["counts"]` keeps the raw counts; the input is not modified.
    """
    import scanpy as sc

    _require_in_memory(adata)
    if "log1p" in adata.uns:
        raise ValueError("adata is already log1p-transformed (uns['log1p'] is set): normalizing twice is wrong")
    _check_counts(adata.X, "X")
    if target_sum is not None and not (np.isfinite(target_sum) and target_sum > 0):
        raise ValueError(f"target_sum must be a positive number or None (median library size), got {target_sum!r}")
    result = adata.copy()
    result.layers["counts"] = result.X.copy()
    sc.pp.normalize_total(result, target_sum=target_sum)
    sc.pp.log1p(result)
    return result


def ensure_log1p(adata: ad.AnnData, name: str = "adata") -> ad.AnnData:
    """Return `adata` if X is log1p-normalized; normalize count-like X (with a warning), as cell-eval does. Ch. 05.

    Raises on NaN/inf, negative values, fractional values up to 15 or more (not log1p data), and
    count-like data with empty cells (which cannot be normalized: an all-zero prediction, say).
    """
    _require_in_memory(adata, name)
    values = adata.X.data if sp.issparse(adata.X) else np.asarray(adata.X)
    if values.size and not np.isfinite(values).all():
        raise ValueError(f"{name}.X has {int((~np.isfinite(values)).sum())} NaN or infinite values")
    if values.size and values.min() < 0:
        negative = values < 0
        hint = (
            " They are tiny, like a model's rounding noise: clip them, e.g. "
            f"{name}.X = np.clip({name}.X, 0, None) (sparse: {name}.X.data.clip(0, out={name}.X.data))"
            if values.min() > -1e-3
            else ""
        )
        raise ValueError(
            f"{name}.X has {int(negative.sum())} negative values (min {values.min():.4g}): expected "
            f"log1p-normalized data >= 0.{hint}"
        )
    if values.size == 0 or np.all(values == np.round(values)):
        empty = int((np.asarray(adata.X.sum(axis=1)).ravel() == 0).sum())
        if empty:
            raise ValueError(
                f"{name}.X looks like raw counts (all values are integers), and {empty} of its {adata.n_obs} cells "
                "are all zero, so they cannot be normalized to a library size (cell-eval fails on them with "
                "'Input contains NaN'). A prediction must hold log1p-normalized expression: if yours is all "
                "zeros, the model predicts no expression at all (check its output); if these are counts, "
                "drop the empty cells"
            )
        warnings.warn(
            f"{name}.X looks like raw counts (all values are integers): normalizing each cell to the median "
            "library size and applying log1p, as cell-eval does",
            stacklevel=3,
        )
        plain = ad.AnnData(X=adata.X.copy(), obs=adata.obs.copy(), var=adata.var[[]].copy())
        return normalize_log1p(plain)
    if values.max() >= 15:
        raise ValueError(
            f"{name}.X has values up to {values.max():.4g}: that is not log1p-normalized data (cell-eval rejects "
            "max >= 15); normalize with vcell_lib.data.normalize_log1p"
        )
    return adata
