"""Pseudobulk profiles and effect vectors (profile minus control profile). Taught in chapters 03-05."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from vcell_lib.data.loading import CELL_TYPE, CONTROL, PERT, _columns_hint, _require_columns, _require_in_memory


def pseudobulk(adata: ad.AnnData, by: str | Sequence[str] = PERT, *, layer: str | None = None) -> ad.AnnData:
    """Mean expression of the cells in each group (e.g. each perturbation). Taught in chapters 04 and 05.

    Returns an AnnData with one row per non-empty group, named "key1|key2" for several keys (obs holds
    the group keys and `n_cells`), and the same genes. Means are taken over whatever `X` (or `layer`)
    holds: counts or log1p values.
    """
    keys = [by] if isinstance(by, str) else list(by)
    if not keys:
        raise ValueError("by is empty: give at least one obs column")
    for key in keys:
        if key not in adata.obs.columns:
            raise ValueError(f"by: {key!r} is not a column of obs; {_columns_hint(adata)}")
    if adata.n_obs == 0:
        raise ValueError("adata has no cells")
    _require_in_memory(adata)
    matrix = adata.X if layer is None else adata.layers[layer]
    codes, groups = pd.MultiIndex.from_frame(adata.obs[keys].astype(str)).factorize(sort=True)
    names = pd.Index(["|".join(group) for group in groups])  # "context_A|STAT1" for two keys
    if not names.is_unique:  # only possible if a label itself contains "|"
        names = pd.Index([f"{name}#{i}" for i, name in enumerate(names)])
    n_cells = np.bincount(codes, minlength=len(names))
    # A (groups x cells) averaging matrix: one sparse product does every group at once.
    averaging = sp.csr_matrix((1.0 / n_cells[codes], (codes, np.arange(adata.n_obs))), shape=(len(names), adata.n_obs))
    means = averaging @ matrix
    means = np.asarray(means.todense() if sp.issparse(means) else means, dtype=np.float64)
    obs = pd.DataFrame(list(groups), columns=keys, index=pd.Index(names, name="group"))
    obs["n_cells"] = n_cells
    return ad.AnnData(X=means, obs=obs, var=adata.var[[]].copy())


def perturbation_effects(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str = CELL_TYPE,
) -> pd.DataFrame:
    """Effect vectors: each (cell type, perturbation) pseudobulk minus its cell type's control. Ch. 03, 04.

    Returns a DataFrame indexed by (context_col, pert_col), one column per gene, without control rows.
    Use it on log1p-normalized data (normalize_log1p) to get the challenge's delta = bulk_p - bulk_control.
    """
    _require_columns(adata, pert_col=pert_col, context_col=context_col)
    bulk = pseudobulk(adata, by=[context_col, pert_col], layer=layer)
    index = pd.MultiIndex.from_frame(bulk.obs[[context_col, pert_col]])
    table = pd.DataFrame(bulk.X, index=index, columns=adata.var_names)
    is_control = table.index.get_level_values(pert_col) == str(control)
    controls = table[is_control].droplevel(pert_col)
    perturbed = table[~is_control]
    contexts = perturbed.index.get_level_values(context_col)
    missing = sorted(set(contexts) - set(controls.index))
    if missing:
        raise ValueError(
            f"no control cells in {context_col} {missing}: an effect is measured against controls of the same cell type"
        )
    return perturbed - controls.loc[contexts].to_numpy()


def profile_table(adata: ad.AnnData, by: str | Sequence[str] = PERT, *, layer: str | None = None) -> pd.DataFrame:
    """Pseudobulk as a table: one mean profile per group (rows) and gene (columns). Taught in chapter 05.

    The same means as `pseudobulk`, as a DataFrame: indexed by the group label for one key (e.g. the
    perturbation, control included), by a MultiIndex of the keys for several; the columns are the genes.
    """
    keys = [by] if isinstance(by, str) else list(by)
    bulk = pseudobulk(adata, by=keys, layer=layer)
    index = pd.Index(bulk.obs[keys[0]], name=keys[0]) if len(keys) == 1 else pd.MultiIndex.from_frame(bulk.obs[keys])
    return pd.DataFrame(bulk.X, index=index, columns=adata.var_names.copy())
