"""Loading and validating a perturbation dataset into the book's standard form. Taught in chapter 02."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

PERT = "target_gene"
CONTROL = "non-targeting"
BATCH = "batch"
CELL_TYPE = "cell_type"


# ----------------------------------------------------------------------------- loading and validation


def _columns_hint(adata: ad.AnnData) -> str:
    return f"obs columns are {list(adata.obs.columns)}"


def _check_counts(matrix, where: str) -> None:
    """Raise if `matrix` is not finite, non-negative and integer-valued (raw UMI counts)."""
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if values.size == 0:
        return
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(
            f"{where} has {int((~finite).sum())} NaN or infinite values: raw counts must be finite numbers; "
            "fix or drop the affected cells before loading"
        )
    if (values < 0).any():
        raise ValueError(
            f"{where} has {int((values < 0).sum())} negative values: expected raw UMI counts (>= 0); "
            "if these are scaled or centred data, load the raw counts instead (layer=...)"
        )
    fractional = values != np.round(values)
    if fractional.any():
        example = float(values[fractional][0])
        raise ValueError(
            f"{where} has non-integer values (e.g. {example:.4g}): expected raw UMI counts. "
            "If X holds normalized or log1p data, point to the raw counts with layer='counts' "
            "(or load adata.raw.to_adata())"
        )


def load_perturbation_data(
    source: str | os.PathLike | ad.AnnData,
    *,
    pert_col: str = PERT,
    control: str = CONTROL,
    batch_col: str | None = None,
    context_col: str | None = None,
    cell_type: str = "unknown",
    layer: str | None = None,
) -> ad.AnnData:
    """Read and validate a perturbation dataset and return it in the book's standard form. Taught in chapter 02.

    `source` is an .h5ad path or an AnnData (which is never modified: the result is a new object).
    `pert_col` names the perturbation column and `control` its control label; they become
    `target_gene` and "non-targeting". `batch_col` and `context_col` become `batch` and `cell_type`
    (a single batch "0" and the cell type `cell_type` when not given). Counts are read from `layer`
    (default `X`) and must be raw integer counts.
    """
    if isinstance(source, ad.AnnData):
        adata = source.copy()
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"source: no such file {str(path)!r}")
        adata = ad.read_h5ad(path)
    else:
        raise ValueError(f"source must be an AnnData or a path to an .h5ad file, got {type(source).__name__}")

    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"source is empty ({adata.n_obs} cells x {adata.n_vars} genes)")
    for name, column in (("pert_col", pert_col), ("batch_col", batch_col), ("context_col", context_col)):
        if column is not None and column not in adata.obs.columns:
            raise ValueError(f"{name}={column!r} is not a column of obs; {_columns_hint(adata)}")

    labels = adata.obs[pert_col]
    missing = labels.isna() | (labels.astype(str).str.strip() == "")
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} cells have no perturbation label in obs[{pert_col!r}]: "
            "drop them (adata[~mask]) or label them before loading"
        )
    labels = labels.astype(str)
    if control not in set(labels):
        counts = labels.value_counts()
        shown = ", ".join(f"{k!r} ({v})" for k, v in counts.head(15).items())
        raise ValueError(
            f"control label {control!r} not found in obs[{pert_col!r}]; labels (cells) are: {shown}"
            f"{' ...' if len(counts) > 15 else ''}. Pass control=... with the label of your control cells"
        )

    if not adata.var_names.is_unique:
        dupes = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"var_names has {len(dupes)} duplicated gene names (e.g. {list(dupes[:5])}): "
            "sum or drop duplicates, or call adata.var_names_make_unique() before loading"
        )
    if not adata.obs_names.is_unique:
        raise ValueError("obs_names (cell barcodes) are not unique: call adata.obs_names_make_unique() first")

    if layer is None:
        counts = adata.X
    elif layer in adata.layers:
        counts = adata.layers[layer]
    else:
        raise ValueError(f"layer={layer!r} not found; layers are {list(adata.layers)}")
    _check_counts(counts, "X" if layer is None else f"layers[{layer!r}]")

    obs = adata.obs.copy()
    obs[PERT] = pd.Categorical(np.where(labels == control, CONTROL, labels))
    obs[BATCH] = pd.Categorical(obs[batch_col].astype(str) if batch_col else np.full(adata.n_obs, "0"))
    obs[CELL_TYPE] = pd.Categorical(obs[context_col].astype(str) if context_col else np.full(adata.n_obs, cell_type))
    X = sp.csr_matrix(counts, dtype=np.float32)
    X.sort_indices()
    result = ad.AnnData(X=X, obs=obs, var=adata.var.copy(), uns=dict(adata.uns), obsm=dict(adata.obsm))
    result.uns["perturbation_data"] = {
        "pert_col": pert_col,
        "control": control,
        "batch_col": batch_col or "",
        "context_col": context_col or "",
    }
    return result
