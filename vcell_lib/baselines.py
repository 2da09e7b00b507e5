"""Baseline predictions in the challenge's shape: the yardsticks every model must beat.

Taught in chapter 08. Each baseline takes training cells (log1p-normalized AnnData with a perturbation
column and control cells) and the number of cells to predict per perturbation, and returns a prediction
AnnData: those cells, labelled in `target_gene`, followed by real control cells (the evaluation compares
each side with its own controls). `prediction_from_profiles` and `with_controls` lay out predictions of
your own in the same shape (chapters 05, 07 and 08).

The cell mean and the control mean pool the training cells they are given: pass the target cell type's
cells. The perturbation mean and the linear model measure each effect within its own cell type
(`context_col`) and add it to the control profile of `controls`, the target cell type's cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from vcell_lib.data import CELL_TYPE, CONTROL, PERT, ensure_log1p, perturbation_effects, profile_table

__all__ = [
    "RIDGE_GRID",
    "baseline_predictions",
    "calibrated_transfer_baseline",
    "cell_mean_baseline",
    "control_mean_baseline",
    "linear_baseline",
    "perturbation_mean_baseline",
    "prediction_from_profiles",
    "with_controls",
]

Counts = Mapping[str, int] | pd.Series | pd.DataFrame


def _cell_counts(counts: Counts, control: str) -> pd.Series:
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


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)


def with_controls(
    predicted: ad.AnnData, controls: ad.AnnData, *, pert_col: str = PERT, control: str = CONTROL
) -> ad.AnnData:
    """A prediction: the perturbed cells of `predicted`, then the control cells of `controls`. Taught in chapter 07.

    A model predicts perturbed cells; the evaluation also needs the prediction's own control cells, and
    the safe choice is the real ones of the target cell type. Control cells in `predicted` are dropped.
    Both must have the same genes in the same order. Returns a new AnnData with float32 X and `pert_col`
    as its only obs column.
    """
    controls = ensure_log1p(controls, "controls")
    if not controls.var_names.equals(predicted.var_names):
        raise ValueError("controls must have the same genes, in the same order, as the predicted cells")
    for name, adata in (("predicted", predicted), ("controls", controls)):
        if pert_col not in adata.obs.columns:
            raise ValueError(
                f"{name}.obs has no column {pert_col!r} (pert_col); its columns are {list(adata.obs.columns)}"
            )
    perturbed = predicted[predicted.obs[pert_col].astype(str) != control]
    control_cells = controls[controls.obs[pert_col].astype(str) == control]
    if control_cells.n_obs == 0:
        raise ValueError(f"controls has no control cells ({pert_col} == {control!r})")
    labels = np.concatenate([perturbed.obs[pert_col].astype(str).to_numpy(), np.full(control_cells.n_obs, control)])
    obs = pd.DataFrame(
        {pert_col: labels},
        index=[f"pred_{i}" for i in range(perturbed.n_obs)] + [f"control_{name}" for name in control_cells.obs_names],
    )
    X = np.vstack([_dense(perturbed.X), _dense(control_cells.X)]).astype(np.float32)
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=controls.var_names.copy()))


def prediction_from_profiles(
    profiles: pd.DataFrame,
    counts: int | Counts,
    controls: ad.AnnData,
    *,
    pert_col: str = PERT,
    control: str = CONTROL,
) -> ad.AnnData:
    """A prediction: `counts[p]` identical cells per perturbation p, each its profile, then real controls. Ch. 05, 08.

    Parameters
    ----------
    profiles
        One log1p profile per perturbation (rows, indexed by name) and gene (columns, the genes of
        `controls` in their order), e.g. from `vcell_lib.data.profile_table`; negative values are set to 0.
    counts
        Cells to predict per perturbation (a mapping, a Series or a pert_counts table), or one number for
        every non-control row of `profiles`.
    controls
        Cells whose control cells end the prediction (see `with_controls`).
    """
    if isinstance(counts, (int, np.integer)):
        counts = pd.Series(int(counts), index=profiles.index.astype(str).drop(control, errors="ignore"))
    counts = _cell_counts(counts, control)
    missing = counts.index.difference(profiles.index.astype(str))
    if len(missing):
        raise ValueError(
            f"profiles has no row for perturbations {list(missing[:5])}: give one profile per perturbation"
        )
    rows = profiles.set_axis(profiles.index.astype(str)).loc[counts.index].clip(lower=0).to_numpy(np.float32)
    labels = np.repeat(counts.index.to_numpy(), counts.to_numpy())
    predicted = ad.AnnData(
        X=np.repeat(rows, counts.to_numpy(), axis=0),
        obs=pd.DataFrame({pert_col: labels}, index=[f"pred_{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=profiles.columns.astype(str)),
    )
    return with_controls(predicted, controls, pert_col=pert_col, control=control)


def _label_profiles(adata: ad.AnnData, name: str, pert_col: str, control: str) -> pd.DataFrame:
    """Mean log1p profile of each label of `adata`, control included; raise if it has no control cells."""
    if pert_col not in adata.obs.columns:
        raise ValueError(f"{name}.obs has no column {pert_col!r}; its columns are {list(adata.obs.columns)}")
    table = profile_table(adata, by=pert_col)
    if control not in table.index:
        raise ValueError(f"{name} has no control cells ({pert_col} == {control!r})")
    return table


@dataclass(frozen=True)
class _Training:
    """A baseline's checked inputs, and the steps the four baselines share."""

    train: ad.AnnData  # log1p-normalized training cells
    profiles: pd.DataFrame  # their mean profile per label, control included
    counts: pd.Series  # cells to predict per perturbation
    controls: ad.AnnData  # the cells whose controls end the prediction
    target_control: np.ndarray  # the mean profile of those control cells
    pert_col: str
    control: str

    @classmethod
    def check(cls, train: ad.AnnData, counts: Counts, controls: ad.AnnData | None, pert_col: str, control: str):
        train = ensure_log1p(train, "train")
        profiles = _label_profiles(train, "train", pert_col, control)
        counts = _cell_counts(counts, control)
        if controls is None:
            controls, target_control = train, profiles.loc[control]
        else:
            controls = ensure_log1p(controls, "controls")
            target_control = _label_profiles(controls, "controls", pert_col, control).loc[control]
        return cls(train, profiles, counts, controls, target_control.to_numpy(), pert_col, control)

    def effects(self, context_col: str | None) -> pd.DataFrame:
        """Each training perturbation's effect, measured within each context, averaged over contexts.

        Within a context (cell type), an effect is the perturbation's profile minus that context's control
        profile; a perturbation seen in several contexts gets the mean of its effects there, each context
        counted once. `context_col=None`, or a column that train lacks, makes all cells one context.
        """
        pert_col, control = self.pert_col, self.control
        if context_col is None or context_col not in self.train.obs.columns:
            return self.profiles.drop(index=control) - self.profiles.loc[control].to_numpy()
        effects = perturbation_effects(self.train, pert_col=pert_col, control=control, context_col=context_col)
        contexts = effects.index.get_level_values(context_col).unique()
        if len(contexts) > 1 and self.controls is self.train:
            raise ValueError(
                f"train holds several cell types ({context_col}: {list(contexts)}): pass the target "
                "cell type's cells as controls=..., whose control profile the effects are added to"
            )
        return effects.groupby(level=pert_col).mean()

    def prediction(self, rows: np.ndarray) -> ad.AnnData:
        """The prediction whose profile for the i-th perturbation of `counts` is rows[i]."""
        profiles = pd.DataFrame(np.asarray(rows), index=self.counts.index, columns=self.profiles.columns)
        return prediction_from_profiles(
            profiles, self.counts, self.controls, pert_col=self.pert_col, control=self.control
        )


RIDGE_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
"""The penalties `linear_baseline(ridge=None)` chooses from."""


def _ridge_weights(embedding: np.ndarray, centred: np.ndarray, described: np.ndarray, ridge: float) -> np.ndarray:
    """W of the linear model, ridge on both sides as in the paper (Gamma^T Gamma = I):
    W = (Gamma^T Gamma + ridge I)^-1 Gamma^T Y Pi (Pi^T Pi + ridge I)^-1."""
    gram = described.T @ described + ridge * np.eye(described.shape[1])
    return embedding.T @ centred @ described @ np.linalg.inv(gram) / (1 + ridge)


def _cross_validated_ridge(embedding: np.ndarray, centred: np.ndarray, described: np.ndarray) -> float:
    """The penalty of RIDGE_GRID with the smallest leave-one-perturbation-out squared error of the effects."""
    errors = []
    for ridge in RIDGE_GRID:
        error = 0.0
        for i in range(centred.shape[1]):
            keep = np.arange(centred.shape[1]) != i
            weights = _ridge_weights(embedding, centred[:, keep], described[keep], ridge)
            error += float(np.sum((embedding @ weights @ described[i] - centred[:, i]) ** 2))
        errors.append(error)
    return RIDGE_GRID[int(np.argmin(errors))]


def cell_mean_baseline(
    train: ad.AnnData,
    counts: Counts,
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
    t = _Training.check(train, counts, controls, pert_col, control)
    return t.prediction(np.tile(t.profiles.mean(axis=0).to_numpy(), (len(t.counts), 1)))


def control_mean_baseline(
    train: ad.AnnData,
    counts: Counts,
    *,
    controls: ad.AnnData | None = None,
    pert_col: str = PERT,
    control: str = CONTROL,
) -> ad.AnnData:
    """ "Nothing happens": every predicted cell is the mean profile of the control cells of `controls`.

    `controls` defaults to `train`; pass the target cell type's cells to predict its own controls. Ch. 08.
    """
    t = _Training.check(train, counts, controls, pert_col, control)
    return t.prediction(np.tile(t.target_control, (len(t.counts), 1)))


def perturbation_mean_baseline(
    train: ad.AnnData,
    counts: Counts,
    *,
    controls: ad.AnnData | None = None,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str | None = CELL_TYPE,
) -> ad.AnnData:
    """Each perturbation's mean effect where training has it (e.g. in another cell type), else the mean effect.

    An effect is measured within a cell type (`context_col`): the perturbation's profile minus the
    control profile of the same cell type, averaged over the cell types where it was seen. It is added
    to the control profile of `controls`, the target cell type's cells, so a perturbation seen in other
    cell types transfers its effect to the new one. A perturbation never seen gets the mean effect of
    the training perturbations. `context_col=None`, or a column that `train` lacks, makes all training
    cells one cell type. Taught in chapter 08.
    """
    t = _Training.check(train, counts, controls, pert_col, control)
    effects = t.effects(context_col)
    mean_effect = effects.mean(axis=0)
    rows = [effects.loc[p] if p in effects.index else mean_effect for p in t.counts.index]
    return t.prediction(np.vstack(rows) + t.target_control)


def calibrated_transfer_baseline(
    train: ad.AnnData,
    counts: Counts,
    *,
    controls: ad.AnnData,
    shrinkage: float = 0.1,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str = CELL_TYPE,
) -> ad.AnnData:
    """Effects seen in other cell types, rescaled gene by gene to the target cell type. Taught in chapter 13.

    The target cell type is that of `controls`. Its few-shot perturbations, measured both in it (effect y) and in
    other cell types (mean effect x), give each gene a factor s = (sum x*y + shrinkage) / (sum x*x + shrinkage):
    least squares through the origin, shrunk toward 1 (no rescaling) by `shrinkage`, which is in the units of
    sum x*x (squared log1p effects summed over the few-shot perturbations): the default 0.1 suits the simulator's
    effects of a few tenths; smaller effects need a smaller one. A perturbation measured in
    other cell types is predicted as the target's control profile plus s * x; one measured in the target itself
    gets its own effect; one never measured gets the mean effect, as in `perturbation_mean_baseline`. Without
    few-shot perturbations every factor is 1: the plain transfer (`perturbation_mean_baseline`).
    """
    if not np.isfinite(shrinkage) or shrinkage < 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage!r}")
    if context_col not in train.obs.columns or context_col not in controls.obs.columns:
        raise ValueError(f"train and controls need the cell type column {context_col!r} (context_col)")
    targets = pd.unique(controls.obs[context_col].astype(str))
    if len(targets) != 1:
        raise ValueError(f"controls must hold one cell type, the target; it holds {list(targets)[:5]}")
    t = _Training.check(train, counts, controls, pert_col, control)
    measured = perturbation_effects(t.train, pert_col=pert_col, control=control, context_col=context_col)
    in_context = measured.index.get_level_values(context_col).astype(str) == targets[0]
    own = measured[in_context].droplevel(context_col)
    elsewhere = measured[~in_context].groupby(level=pert_col).mean()
    shared = own.index.intersection(elsewhere.index)
    x, y = elsewhere.loc[shared].to_numpy(), own.loc[shared].to_numpy()
    # A gene that no shared perturbation moves elsewhere (sum x*x = 0) has no evidence: with shrinkage 0, factor 1.
    evidence = (x * x).sum(axis=0) + shrinkage
    factor = np.divide((x * y).sum(axis=0) + shrinkage, evidence, out=np.ones(x.shape[1]), where=evidence > 0)
    mean_effect = measured.groupby(level=pert_col).mean().mean(axis=0).to_numpy()  # as t.effects(...).mean(0)
    rows = []
    for p in t.counts.index:
        if p in own.index:
            rows.append(own.loc[p].to_numpy())
        elif p in elsewhere.index:
            rows.append(factor * elsewhere.loc[p].to_numpy())
        else:
            rows.append(mean_effect)
    return t.prediction(np.vstack(rows) + t.target_control)


def linear_baseline(
    train: ad.AnnData,
    counts: Counts,
    *,
    n_components: int = 10,
    ridge: float | None = 0.1,
    features: pd.DataFrame | None = None,
    controls: ad.AnnData | None = None,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str | None = CELL_TYPE,
) -> ad.AnnData:
    """A linear model of effects (Ahlmann-Eltze et al. 2025): delta_q = ybar + Gamma W Gamma[q], Gamma from PCA.

    Gamma (genes x n_components, the book's d) are the top principal components of the training effect
    matrix, so each gene has an embedding; W is fit by ridge regression so that training effects Y satisfy
    Y - ybar ~ Gamma W Pi^T, with Pi the embeddings of the silenced genes (chapter 8's notation). A new
    perturbation q whose gene is measured gets ybar + Gamma W Gamma[q]; one whose gene is not measured gets
    the mean effect ybar. Effects are measured within each cell type and added to the control profile of
    `controls`, as in `perturbation_mean_baseline`. Taught in ch. 08.

    `features` (a table perturbation -> vector, such as `models.st_data.perturbation_features` builds, e.g.
    gene features) replaces Pi: W (d x features) is fit by the same ridge regression from the training
    perturbations' feature rows, and q gets ybar + Gamma W features[q]. The linear model then reads what a
    neural model such as ST reads (chapter 12); every perturbation to predict needs a row.

    `ridge=None` chooses the penalty among `RIDGE_GRID` by leave-one-perturbation-out error on the training
    effects (Gamma is kept from all of them): a penalty that suits 10 PCA components can overfit 16 raw features.
    """
    if int(n_components) != n_components or n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
    if ridge is not None and (not np.isfinite(ridge) or ridge < 0):
        raise ValueError(f"ridge must be >= 0 or None (chosen by cross-validation), got {ridge!r}")
    t = _Training.check(train, counts, controls, pert_col, control)
    effects = t.effects(context_col)
    genes = t.profiles.columns
    if features is None:
        measured = [p for p in effects.index if p in genes]
        if len(measured) < 2:
            raise ValueError("linear_baseline needs at least two training perturbations whose gene is measured")
    else:
        names = features.index.astype(str)
        lacking = [p for p in t.counts.index if p not in names]
        if lacking:
            raise ValueError(f"features has no row for {len(lacking)} perturbations to predict: {lacking[:5]}")
        measured = [p for p in effects.index if p in names]
        if len(measured) < 2:
            raise ValueError("linear_baseline needs feature rows for at least two training perturbations")
        table = pd.DataFrame(features.to_numpy(np.float64), index=names)
    mean_effect = effects.mean(axis=0).to_numpy()
    centred = (effects.loc[measured].to_numpy() - mean_effect).T  # genes x perturbations
    k = min(int(n_components), *centred.shape)
    embedding = np.linalg.svd(centred, full_matrices=False)[0][:, :k]  # Gamma: orthonormal columns
    position = {gene: i for i, gene in enumerate(genes)}

    def described(p: str):  # Pi's row of p: its gene's embedding, or its features; None when it has none
        if features is not None:
            return table.loc[p].to_numpy()
        return embedding[position[p]] if p in position else None

    pert_embedding = np.stack([described(p) for p in measured])  # Pi
    if ridge is None:
        ridge = _cross_validated_ridge(embedding, centred, pert_embedding)
    weights = _ridge_weights(embedding, centred, pert_embedding, ridge)
    rows = []
    for p in t.counts.index:
        vector = described(p)
        rows.append(mean_effect + (0.0 if vector is None else embedding @ weights @ vector))
    return t.prediction(np.vstack(rows) + t.target_control)


def baseline_predictions(
    train: ad.AnnData,
    real: ad.AnnData,
    *,
    features: pd.DataFrame | None = None,
    ridge: float | None = None,
    calibrated: bool = False,
    pert_col: str = PERT,
    control: str = CONTROL,
    context_col: str = CELL_TYPE,
) -> dict[str, ad.AnnData]:
    """Every baseline's prediction of the test cells `real`, in each of its cell types. Taught in chapter 12.

    For each cell type of `real`: as many cells per perturbation as `real` has, and `real`'s control cells of
    that cell type. The cell mean and the control mean are built from `train`'s cells of that cell type; the
    perturbation mean and the linear model from all of `train` (effects measured within cell types), the
    linear model on `features` when given (see `linear_baseline`), else on its PCA gene embeddings, with its
    `ridge` chosen by leave-one-perturbation-out cross-validation unless given.
    `calibrated=True` adds the "calibrated transfer" (`calibrated_transfer_baseline`, chapter 13).
    Returns {"control mean", "cell mean", "perturbation mean", "linear"[, "calibrated transfer"]} -> AnnData with
    `pert_col` and `context_col` in obs, cell types in `real`'s order of appearance.
    """
    missing = [c for c in (pert_col, context_col) if c not in real.obs.columns or c not in train.obs.columns]
    if missing:
        raise ValueError(f"train and real need the obs columns {missing} (pert_col, context_col)")
    names = ["control mean", "cell mean", "perturbation mean", "linear"] + ["calibrated transfer"] * calibrated
    parts: dict[str, list[ad.AnnData]] = {name: [] for name in names}
    for context in pd.unique(real.obs[context_col].astype(str)):
        real_c = real[(real.obs[context_col].astype(str) == context).to_numpy()]
        train_c = train[(train.obs[context_col].astype(str) == context).to_numpy()]
        if train_c.n_obs == 0:
            raise ValueError(f"train has no cells of {context_col} {context!r}: the cell mean needs some")
        counts = real_c.obs[pert_col].astype(str).value_counts().drop(control, errors="ignore")
        counts = counts[counts > 0].sort_index()
        shared = dict(controls=real_c, pert_col=pert_col, control=control)
        built = {
            "control mean": control_mean_baseline(train_c, counts, **shared),
            "cell mean": cell_mean_baseline(train_c, counts, **shared),
            "perturbation mean": perturbation_mean_baseline(train, counts, context_col=context_col, **shared),
            "linear": linear_baseline(train, counts, ridge=ridge, features=features, context_col=context_col, **shared),
        }
        if calibrated:
            built["calibrated transfer"] = calibrated_transfer_baseline(
                train, counts, context_col=context_col, **shared
            )
        for name, prediction in built.items():
            prediction.obs[context_col] = context
            prediction.obs_names = [f"{context}_{i}" for i in range(prediction.n_obs)]
            parts[name].append(prediction)
    return {name: ad.concat(predictions) for name, predictions in parts.items()}
