"""Baseline predictions in the challenge's shape: the yardsticks every model must beat.

Taught in chapter 08. Each function takes training cells (log1p-normalized AnnData with a
perturbation column and control cells) and the number of cells to predict per perturbation, and
returns a prediction AnnData: those cells, labelled in `target_gene`, followed by real control cells
(the evaluation compares each side with its own controls).

The baselines group training cells by perturbation label only: pass exactly the cells (cell types)
you want pooled, and the target cell type's control cells as `controls`.
"""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd

from vcell_lib.data import CONTROL, PERT, ensure_log1p, pseudobulk

__all__ = [
    "cell_mean_baseline",
    "control_mean_baseline",
    "linear_baseline",
    "perturbation_mean_baseline",
]


def _cell_counts(counts: Mapping[str, int] | pd.Series | pd.DataFrame, control: str) -> pd.Series:
    """Cells to predict per perturbation, from a mapping, a Series or a pert_counts table."""
    if isinstance(counts, pd.DataFrame):
        if not {PERT, "n_cells"} <= set(counts.columns):
            raise ValueError(
                f"counts table needs columns {PERT!r} and 'n_cells' (as pert_counts.csv); got {list(counts)}"
            )
        counts = counts.set_index(PERT)["n_cells"]
    series = pd.Series(counts, dtype=float).drop(control, errors="ignore")
    if series.empty:
        raise ValueError("counts is empty: give the number of cells to predict for each perturbation")
    if series.isna().any() or (series < 1).any() or (series != np.round(series)).any():
        bad = series[series.isna() | (series < 1) | (series != np.round(series))]
        hint = " (value_counts() of a categorical column lists unused categories with 0: use counts[counts > 0])"
        raise ValueError(
            f"counts must be positive integers; bad entries: {bad.head().to_dict()}{hint if (bad == 0).any() else ''}"
        )
    series.index = series.index.astype(str)
    return series.astype(int)


def _profiles(train: ad.AnnData, pert_col: str, control: str) -> pd.DataFrame:
    train = ensure_log1p(train, "train")
    if pert_col not in train.obs.columns:
        raise ValueError(f"train.obs has no column {pert_col!r}; its columns are {list(train.obs.columns)}")
    bulk = pseudobulk(train, by=pert_col)
    table = pd.DataFrame(bulk.X, index=bulk.obs[pert_col].to_numpy(), columns=train.var_names)
    if control not in table.index:
        raise ValueError(f"train has no control cells ({pert_col} == {control!r})")
    return table


def _inputs(
    train: ad.AnnData, counts, controls: ad.AnnData | None, pert_col: str, control: str
) -> tuple[pd.DataFrame, pd.Series, ad.AnnData, np.ndarray]:
    """Checked inputs: training profiles, cell counts, the control cells to append and their mean profile."""
    profiles = _profiles(train, pert_col, control)
    counts = _cell_counts(counts, control)
    controls = train if controls is None else controls
    target_control = profiles.loc[control] if controls is train else _profiles(controls, pert_col, control).loc[control]
    return profiles, counts, controls, target_control.to_numpy()


def _prediction(
    rows: np.ndarray, counts: pd.Series, genes: pd.Index, controls: ad.AnnData, pert_col: str, control: str
) -> ad.AnnData:
    """Stack `counts[p]` copies of each perturbation's row (clipped at 0), then append the control cells."""
    controls = ensure_log1p(controls, "controls")
    if not controls.var_names.equals(genes):
        raise ValueError("controls must have the same genes, in the same order, as the training cells")
    control_cells = controls[controls.obs[pert_col].astype(str) == control]
    if control_cells.n_obs == 0:
        raise ValueError(f"controls has no control cells ({pert_col} == {control!r})")
    labels = np.repeat(counts.index.to_numpy(), counts.to_numpy())
    predicted = np.repeat(np.clip(rows, 0, None).astype(np.float32), counts.to_numpy(), axis=0)
    control_x = control_cells.X.toarray() if hasattr(control_cells.X, "toarray") else np.asarray(control_cells.X)
    obs = pd.DataFrame(
        {pert_col: np.concatenate([labels, np.full(control_cells.n_obs, control)])},
        index=[f"pred_{i}" for i in range(len(labels))] + [f"control_{name}" for name in control_cells.obs_names],
    )
    X = np.vstack([predicted, control_x.astype(np.float32)])
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes.copy()))


def cell_mean_baseline(
    train: ad.AnnData,
    counts: Mapping[str, int] | pd.Series | pd.DataFrame,
    *,
    controls: ad.AnnData | None = None,
    pert_col: str = PERT,
    control: str = CONTROL,
) -> ad.AnnData:
    """The challenge baseline: every predicted cell is the mean over training labels of their mean profiles.

    Exactly `cell-eval baseline`: per label (control included), the mean log1p profile; then the
    unweighted mean of those profiles, copied `counts[p]` times for each perturbation p, followed by
    the control cells of `controls` (default: `train`'s). Taught in chapter 08.
    """
    profiles, counts, controls, _ = _inputs(train, counts, controls, pert_col, control)
    rows = np.tile(profiles.mean(axis=0).to_numpy(), (len(counts), 1))
    return _prediction(rows, counts, profiles.columns, controls, pert_col, control)


def control_mean_baseline(
    train: ad.AnnData,
    counts: Mapping[str, int] | pd.Series | pd.DataFrame,
    *,
    controls: ad.AnnData | None = None,
    pert_col: str = PERT,
    control: str = CONTROL,
) -> ad.AnnData:
    """ "Nothing happens": every predicted cell is the mean profile of the control cells of `controls`.

    `controls` defaults to `train`; pass the target cell type's cells to predict its own controls. Ch. 08.
    """
    profiles, counts, controls, target_control = _inputs(train, counts, controls, pert_col, control)
    rows = np.tile(target_control, (len(counts), 1))
    return _prediction(rows, counts, profiles.columns, controls, pert_col, control)


def perturbation_mean_baseline(
    train: ad.AnnData,
    counts: Mapping[str, int] | pd.Series | pd.DataFrame,
    *,
    controls: ad.AnnData | None = None,
    pert_col: str = PERT,
    control: str = CONTROL,
) -> ad.AnnData:
    """Each perturbation's mean effect where training has it (e.g. in another cell type), else the mean effect.

    Effects (perturbation profile minus control profile) are added to the control profile of
    `controls`, so a perturbation seen in another cell type transfers its effect to the new one.
    Taught in chapter 08.
    """
    profiles, counts, controls, target_control = _inputs(train, counts, controls, pert_col, control)
    effects = profiles.drop(index=control) - profiles.loc[control].to_numpy()
    mean_effect = effects.mean(axis=0)
    rows = np.vstack([effects.loc[p] if p in effects.index else mean_effect for p in counts.index]) + target_control
    return _prediction(rows, counts, profiles.columns, controls, pert_col, control)


def linear_baseline(
    train: ad.AnnData,
    counts: Mapping[str, int] | pd.Series | pd.DataFrame,
    *,
    n_components: int = 10,
    ridge: float = 0.1,
    controls: ad.AnnData | None = None,
    pert_col: str = PERT,
    control: str = CONTROL,
) -> ad.AnnData:
    """A linear model of effects (Ahlmann-Eltze et al. 2025): delta_q = b + G W G[q], G from a PCA of training effects.

    G (genes x n_components) are the top principal components of the training effect matrix, so
    each gene has an embedding; W is fit by ridge regression so that training effects Y satisfy
    Y - b ~ G W P^T, with P the embeddings of the silenced genes. A new perturbation q whose gene is
    measured gets b + G W G[q]; one whose gene is not measured gets the mean effect b. Taught in ch. 08.
    """
    if int(n_components) != n_components or n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
    if not np.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge!r}")
    profiles, counts, controls, target_control = _inputs(train, counts, controls, pert_col, control)
    effects = profiles.drop(index=control) - profiles.loc[control].to_numpy()
    genes = profiles.columns
    measured = [p for p in effects.index if p in genes]
    if len(measured) < 2:
        raise ValueError("linear_baseline needs at least two training perturbations whose gene is measured")
    mean_effect = effects.mean(axis=0).to_numpy()
    centred = (effects.loc[measured].to_numpy() - mean_effect).T  # genes x perturbations
    k = min(int(n_components), *centred.shape)
    embedding = np.linalg.svd(centred, full_matrices=False)[0][:, :k]  # G: orthonormal columns
    position = {gene: i for i, gene in enumerate(genes)}
    pert_embedding = embedding[[position[p] for p in measured]]  # P
    # Ridge on both sides, as in the paper: W = (G^T G + ridge I)^-1 G^T Y P (P^T P + ridge I)^-1, and G^T G = I.
    weights = (
        embedding.T @ centred @ pert_embedding @ np.linalg.inv(pert_embedding.T @ pert_embedding + ridge * np.eye(k))
    )
    weights /= 1 + ridge
    rows = [
        mean_effect + (embedding @ weights @ embedding[position[p]] if p in position else 0.0) for p in counts.index
    ]
    return _prediction(np.vstack(rows) + target_control, counts, genes, controls, pert_col, control)
