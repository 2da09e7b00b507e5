"""Matching each perturbed cell with a control cell of the same context. Taught in chapter 04."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from vcell_lib.data.loading import BATCH, CELL_TYPE, CONTROL, PERT, _require_columns


def match_controls(
    adata: ad.AnnData,
    *,
    same_batch: bool = False,
    seed: int = 0,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str = CELL_TYPE,
    batch_col: str = BATCH,
) -> pd.Series:
    """For every perturbed cell, a random control cell of the same cell type (and batch). Taught in chapter 04.

    Returns a Series indexed by the perturbed cells' obs_names whose values are the matched control
    cells' obs_names. Controls are drawn with replacement; the same seed gives the same matching.
    """
    _require_columns(
        adata, pert_col=pert_col, context_col=context_col, **({"batch_col": batch_col} if same_batch else {})
    )
    if not adata.obs_names.is_unique:
        dupes = adata.obs_names[adata.obs_names.duplicated()].unique()
        raise ValueError(
            f"obs_names has {len(dupes)} duplicated cell names (e.g. {list(dupes[:3])}): a match names cells, "
            "so names must be unique; call adata.obs_names_make_unique() first"
        )
    rng = np.random.default_rng(seed)
    keys = [context_col, batch_col] if same_batch else [context_col]
    obs = adata.obs[keys].astype(str)
    is_control = (adata.obs[pert_col].astype(str) == str(control)).to_numpy()
    matched = pd.Series(index=adata.obs_names[~is_control], dtype=object)
    for group, rows in obs.groupby(keys, sort=True).indices.items():
        perturbed = rows[~is_control[rows]]
        controls = rows[is_control[rows]]
        if len(perturbed) == 0:
            continue
        if len(controls) == 0:
            where = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
            fix = "use same_batch=False" if same_batch else "add control cells of this cell type"
            raise ValueError(f"no control cells for {where} ({len(perturbed)} perturbed cells): {fix}")
        matched[adata.obs_names[perturbed]] = adata.obs_names[rng.choice(controls, size=len(perturbed))]
    return matched
