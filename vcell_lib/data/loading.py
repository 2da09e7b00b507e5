"""Loading and validating a perturbation dataset into the book's standard form. Taught in chapter 02."""

from __future__ import annotations

import copy
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


def _require_in_memory(adata: ad.AnnData, name: str = "adata") -> None:
    """Raise for a backed AnnData (X left on disk): say how to load it, rather than fail deep inside."""
    if adata.isbacked:
        raise ValueError(
            f"{name} is backed (X stays in {adata.filename}): this function needs X in memory. Pass "
            f"{name}.to_memory(), or a subset first ({name}[cells].to_memory()); load_perturbation_data reads "
            "a backed file's counts alone"
        )


def _require_columns(adata: ad.AnnData, **columns: str) -> None:
    """Raise, naming the argument, if an obs column that an argument names is missing."""
    for argument, column in columns.items():
        if column not in adata.obs.columns:
            raise ValueError(
                f"{argument}={column!r} is not a column of obs; {_columns_hint(adata)}. Pass {argument}=... "
                "naming your column, or load the data with load_perturbation_data"
            )


def _check_counts(
    matrix,
    where: str,
    *,
    integers: bool = True,
    fractional_fix: str = "If X holds normalized or log1p data, point to the raw counts with layer='counts' "
    "(or load adata.raw.to_adata())",
) -> None:
    """Raise if `matrix` is not finite, non-negative and (with `integers`) integer-valued: raw UMI counts."""
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
    if integers and fractional.any():
        example = float(values[fractional][0])
        raise ValueError(
            f"{where} has non-integer values (e.g. {example:.4g}): expected raw UMI counts. {fractional_fix}"
        )


def _standard_column(
    obs: pd.DataFrame, name: str, values: np.ndarray, argument: str, source: str | None
) -> pd.Categorical:
    """`values` (read from column `source`) as the standard column `name`; never replace another column silently."""
    if source != name and name in obs.columns and not np.array_equal(obs[name].astype(str).to_numpy(), values):
        raise ValueError(
            f"obs already has a {name!r} column that {argument} would replace with other values: pass "
            f"{argument}={name!r} to use it, or rename it first (adata.obs.rename(columns={{{name!r}: ...}}))"
        )
    return pd.Categorical(values)


def load_perturbation_data(
    source: str | os.PathLike | ad.AnnData,
    *,
    pert_col: str = PERT,
    control: str = CONTROL,
    batch_col: str | None = None,
    context_col: str | None = None,
    cell_type: str | None = None,
    layer: str | None = None,
) -> ad.AnnData:
    """Read and validate a perturbation dataset and return it in the book's standard form. Taught in chapter 02.

    `source` is an .h5ad path or an AnnData (never modified: the result is a new object; a backed
    AnnData is read without loading its other layers). `pert_col` names the perturbation column and
    `control` its control label; they become `target_gene` and "non-targeting". `batch_col` and
    `context_col` name the columns that become `batch` and `cell_type`; when not given, existing `batch`
    and `cell_type` columns are kept, and otherwise every cell gets batch "0" and the cell type
    `cell_type` ("unknown" if not given). A standard column is never silently replaced: if obs already
    has one with other values, this raises. Counts are read from `layer` (default `X`) and must be raw
    integer counts; `uns["log1p"]` is dropped, since the result holds counts.
    """
    if isinstance(source, ad.AnnData):
        adata = source  # read only: the result is built from copies
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
    labels = labels.astype(str).to_numpy()  # numeric labels too: control=0 matches the label "0"
    control = str(control)
    present = set(labels)
    if control not in present:
        counts = pd.Series(labels).value_counts()
        shown = ", ".join(f"{k!r} ({v})" for k, v in counts.head(15).items())
        raise ValueError(
            f"control label {control!r} not found in obs[{pert_col!r}]; labels (cells) are: {shown}"
            f"{' ...' if len(counts) > 15 else ''}. Pass control=... with the label of your control cells"
        )
    if control != CONTROL and CONTROL in present:
        raise ValueError(
            f"obs[{pert_col!r}] holds both {control!r} (the control label you passed) and {CONTROL!r} (the "
            f"book's control label): both would become controls. Relabel one of them, or drop those cells"
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
        counts = adata.X[:] if adata.isbacked else adata.X  # backed: read X alone from disk
    elif layer in adata.layers:
        counts = adata.layers[layer]
    else:
        raise ValueError(f"layer={layer!r} not found; layers are {list(adata.layers)}")
    _check_counts(counts, "X" if layer is None else f"layers[{layer!r}]")

    obs = adata.obs.copy()
    n = adata.n_obs
    if batch_col is None and BATCH in obs.columns:
        batch_col = BATCH
    if context_col is None and CELL_TYPE in obs.columns:
        if cell_type is not None:
            raise ValueError(
                f"cell_type={cell_type!r} would replace the existing obs[{CELL_TYPE!r}] column: pass "
                f"context_col={CELL_TYPE!r} to keep it, or rename it first"
            )
        context_col = CELL_TYPE
    obs[PERT] = _standard_column(obs, PERT, np.where(labels == control, CONTROL, labels), "pert_col", pert_col)
    batches = obs[batch_col].astype(str).to_numpy() if batch_col else np.full(n, "0")
    obs[BATCH] = _standard_column(obs, BATCH, batches, "batch_col", batch_col)
    types = obs[context_col].astype(str).to_numpy() if context_col else np.full(n, cell_type or "unknown")
    obs[CELL_TYPE] = _standard_column(obs, CELL_TYPE, types, "context_col", context_col)

    X = sp.csr_matrix(counts, dtype=np.float32)
    X.sort_indices()
    uns = {key: copy.deepcopy(value) for key, value in adata.uns.items() if key != "log1p"}
    obsm = {key: value.copy() for key, value in adata.obsm.items()}
    result = ad.AnnData(X=X, obs=obs, var=adata.var.copy(), uns=uns, obsm=obsm)
    result.uns["perturbation_data"] = {
        "pert_col": pert_col,
        "control": control,
        "batch_col": batch_col or "",
        "context_col": context_col or "",
    }
    return result
