"""Matching each perturbed cell with a control cell of the same context. Taught in chapter 04."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from vcell_lib.data.loading import BATCH, CELL_TYPE, CONTROL, PERT


def match_controls(adata: ad.AnnData, *, same_batch: bool = False, seed: int = 0) -> pd.Series:
    """For every perturbed cell, a random control cell of the same cell type (and batch). Taught in chapter 04.

    Returns a Series indexed by the perturbed cells' obs_names whose values are the matched control
    cells' obs_names. Controls are drawn with replacement; the same seed gives the same matching.
    """
    for key in (PERT, CELL_TYPE) + ((BATCH,) if same_batch else ()):
        if key not in adata.obs.columns:
            raise ValueError(f"obs has no {key!r} column: load the data with load_perturbation_data first")
    rng = np.random.default_rng(seed)
    keys = [CELL_TYPE, BATCH] if same_batch else [CELL_TYPE]
    obs = adata.obs[keys].astype(str)
    is_control = (adata.obs[PERT] == CONTROL).to_numpy()
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
