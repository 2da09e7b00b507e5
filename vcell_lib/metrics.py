"""The Virtual Cell Challenge metrics, built from scratch and matching cell-eval 0.8.2 (pdex 0.3.0).

Taught in chapters 05 (MAE), 06 (perturbation discrimination), 07 (differential expression) and 08
(the score). Inputs are AnnData with log1p-normalized X; each side's effects are taken against its
own control cells. Where cell-eval makes a numerical choice (float32 casts before thresholds and
rankings, infinite fold changes, 0-based ranks), this module makes the same one and says so. Where
cell-eval's result is not defined (DES when its top-k cut splits genes of equal fold change, whose order
cell-eval leaves to its thread count), this module uses a documented order and flags it: `des_tie_at_cut`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from scipy.spatial.distance import cdist

from vcell_lib.data import CONTROL, PERT, ensure_log1p, profile_table, pseudobulk
from vcell_lib.ranksum import MAX_ENTRIES, rank_sum_pvalues

__all__ = [
    "LOWER_IS_BETTER",
    "VCC_METRICS",
    "de_direction_match",
    "de_overlap",
    "des_tie_at_cut",
    "discrimination_score",
    "evaluate",
    "mae",
    "pearson_delta",
    "pseudobulk",
    "score",
    "wilcoxon_de",
]

VCC_METRICS = ("mae", "discrimination_score_l1", "overlap_at_N")
"""The three metrics of the challenge score."""
LOWER_IS_BETTER = frozenset({"mae", "mse", "mae_delta"})
FDR_THRESHOLD = 0.05


# ----------------------------------------------------------------------------- input checks


def _check_pair(pred: ad.AnnData, real: ad.AnnData, pert_col: str, control: str) -> tuple[ad.AnnData, ad.AnnData]:
    for side, adata in (("pred", pred), ("real", real)):
        if not isinstance(adata, ad.AnnData):
            raise ValueError(f"{side} must be an AnnData, got {type(adata).__name__}")
        if pert_col not in adata.obs.columns:
            raise ValueError(f"{side}.obs has no column {pert_col!r}; its columns are {list(adata.obs.columns)}")
        if not adata.var_names.is_unique:
            dupes = adata.var_names[adata.var_names.duplicated()].unique()
            raise ValueError(
                f"{side}.var_names has {len(dupes)} duplicated genes (e.g. {list(dupes[:3])}): every metric is "
                f"per gene, so names must be unique; drop or sum the duplicates ({side}.var_names_make_unique())"
            )
        labels = adata.obs[pert_col].astype(str)
        if control not in set(labels):
            raise ValueError(
                f"{side} has no control cells ({pert_col} == {control!r}): each side's effects are measured "
                f"against its own controls, so a prediction must include predicted control cells"
            )
    if not pred.var_names.equals(real.var_names):
        if set(pred.var_names) == set(real.var_names) and pred.n_vars == real.n_vars:
            raise ValueError("pred and real have the same genes in a different order: use pred[:, real.var_names]")
        missing = real.var_names.difference(pred.var_names)
        extra = pred.var_names.difference(real.var_names)
        raise ValueError(
            f"pred and real genes differ: {len(missing)} real genes missing from pred (e.g. {list(missing[:3])}), "
            f"{len(extra)} extra genes in pred (e.g. {list(extra[:3])}); predict exactly real.var_names"
        )
    pred_perts = set(pred.obs[pert_col].astype(str))
    real_perts = set(real.obs[pert_col].astype(str))
    if pred_perts != real_perts:
        missing, extra = sorted(real_perts - pred_perts), sorted(pred_perts - real_perts)
        raise ValueError(
            f"pred and real perturbations differ: missing from pred {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"extra in pred {extra[:5]}{' ...' if len(extra) > 5 else ''}"
        )
    return ensure_log1p(pred, "pred"), ensure_log1p(real, "real")


# ----------------------------------------------------------------------------- expression metrics


def mae(pred_bulk: pd.DataFrame, real_bulk: pd.DataFrame) -> pd.Series:
    """Per perturbation, the mean over genes of |pseudobulk_pred - pseudobulk_real| (levels, not deltas). Ch. 05."""
    return (pred_bulk - real_bulk.loc[pred_bulk.index]).abs().mean(axis=1)


def pearson_delta(pred_delta: pd.DataFrame, real_delta: pd.DataFrame) -> pd.Series:
    """Per perturbation, Pearson r of predicted and real effect vectors (NaN if one is constant). Ch. 05."""
    real_delta = real_delta.loc[pred_delta.index]
    a = pred_delta.to_numpy() - pred_delta.to_numpy().mean(axis=1, keepdims=True)
    b = real_delta.to_numpy() - real_delta.to_numpy().mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return pd.Series(np.clip(r, -1, 1), index=pred_delta.index)


def _distances(rows: np.ndarray, vector: np.ndarray, metric: str) -> np.ndarray:
    """Distance of each row to `vector`, as sklearn.metrics.pairwise_distances (cell-eval) defines it."""
    if metric != "cosine":
        return cdist(rows, vector[None, :], metric="cityblock" if metric == "l1" else "euclidean").ravel()
    # A zero vector has no direction: similarity 0, distance 1 (scipy's cdist would give NaN).
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(vector)
    with np.errstate(invalid="ignore", divide="ignore"):
        similarity = np.where(norms > 0, rows @ vector / norms, 0.0)
    return np.clip(1.0 - similarity, 0.0, 2.0)


def discrimination_score(pred_delta: pd.DataFrame, real_delta: pd.DataFrame, metric: str = "l1") -> pd.Series:
    """How well each prediction picks out its own perturbation among all real ones (1 = best). Ch. 06.

    For prediction p: distances from its effect vector to every real perturbation's effect vector,
    with the column of gene p left out (its own knockdown would make the task trivial); the score is
    1 - rank / N, with rank the 0-based position of the real p in ascending distance and N the number
    of perturbations. Ties are ordered by numpy's default argsort, as in cell-eval.
    """
    if metric not in {"l1", "l2", "cosine"}:
        raise ValueError(f"metric must be 'l1', 'l2' or 'cosine', got {metric!r}")
    real_delta = real_delta.loc[pred_delta.index]
    genes = pred_delta.columns
    real = real_delta.to_numpy(dtype=np.float64)
    pred = pred_delta.to_numpy(dtype=np.float64)
    n = len(pred_delta)
    scores = np.empty(n)
    for i, pert in enumerate(pred_delta.index):
        keep = np.asarray(genes != pert)
        distances = _distances(real[:, keep], pred[i, keep], metric)
        rank = int(np.flatnonzero(np.argsort(distances) == i)[0])
        scores[i] = 1 - rank / n
    return pd.Series(scores, index=pred_delta.index)


# ----------------------------------------------------------------------------- differential expression


def wilcoxon_de(
    adata: ad.AnnData,
    *,
    pert_col: str = PERT,
    control: str = CONTROL,
    fdr_scope: str = "per_perturbation",
    max_block: int = MAX_ENTRIES,
    n_jobs: int | None = None,
) -> pd.DataFrame:
    """Wilcoxon rank-sum test of every gene, every perturbation vs control, as pdex does for cell-eval. Ch. 07.

    Returns a long table: target, gene, p_value, fdr, log2_fold_change. The test is the two-sided
    Mann-Whitney U with the normal approximation, tie and continuity corrections (as
    scipy.stats.mannwhitneyu(method="asymptotic")), computed by `vcell_lib.ranksum.rank_sum_pvalues` with
    `n_jobs` threads (default: all cores) and at most `max_block` non-zero entries per thread at once.
    The fold change is expm1(mean_p) / expm1(mean_control) on the log1p data, 0 when both are 0 and +-inf
    when one is (cell-eval 0.8 uses no pseudo-count).
    FDR: Benjamini-Hochberg within each perturbation ("per_perturbation", cell-eval 0.8 / pdex >= 0.2)
    or over all tests at once ("global", the VCC-era pdex 0.1.27).
    """
    if fdr_scope not in {"per_perturbation", "global"}:
        raise ValueError(f"fdr_scope must be 'per_perturbation' or 'global', got {fdr_scope!r}")
    if pert_col not in adata.obs.columns:
        raise ValueError(f"adata.obs has no column {pert_col!r}; its columns are {list(adata.obs.columns)}")
    adata = ensure_log1p(adata, "adata")  # fold changes are defined on log1p data
    labels = adata.obs[pert_col].astype(str).to_numpy()
    if control not in set(labels):
        raise ValueError(f"no control cells ({pert_col} == {control!r})")
    targets = sorted(set(labels) - {control})
    if not targets:
        raise ValueError("no perturbed cells: nothing to test")
    control_rows = np.flatnonzero(labels == control)
    groups = [np.flatnonzero(labels == t) for t in targets]
    matrix = adata.X if sp.issparse(adata.X) else np.asarray(adata.X)
    p_values = rank_sum_pvalues(matrix, groups, control_rows, n_jobs=n_jobs, max_entries=max_block)
    n_genes = adata.n_vars

    # Means, expm1 and log2 in the data's own dtype, as pdex computes them: when a prediction's fold
    # changes are at rounding-noise level, their ranking (and so DES) depends on these details.
    def group_mean(rows: np.ndarray) -> np.ndarray:
        return np.expm1(np.asarray(adata.X[rows].mean(axis=0)).ravel())

    control_mean = group_mean(control_rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        lfc = np.stack([np.log2(group_mean(rows) / control_mean) for rows in groups])
    lfc[np.isnan(lfc)] = 0.0  # 0 / 0: unexpressed on both sides

    if fdr_scope == "global":
        fdr = stats.false_discovery_control(p_values.ravel()).reshape(p_values.shape)
    else:
        fdr = stats.false_discovery_control(p_values, axis=1)
    return pd.DataFrame(
        {
            "target": np.repeat(targets, n_genes),
            "gene": np.tile(adata.var_names.to_numpy(), len(targets)),
            "p_value": p_values.ravel(),
            "fdr": fdr.ravel(),
            "log2_fold_change": lfc.ravel(),
        }
    )


_NONE_SIGNIFICANT = pd.Series([], dtype=np.float32)


def _significant(de: pd.DataFrame) -> dict[str, pd.Series]:
    """Per target, its significant genes in DES order: a Series of float32 |log2 fold change| indexed by gene.

    Significant: fdr < 0.05. The order: |log2 fold change| descending; genes of equal |lfc| keep the order of
    their rows in `de`, which for `wilcoxon_de`'s tables is the order of the genes (adata.var_names). As in
    cell-eval, fdr and fold changes are compared in float32. cell-eval orders equal values by polars' internal
    order instead, which changes with its thread count (see `des_tie_at_cut`).
    """
    sig = de[de["fdr"].to_numpy(dtype=np.float32) < np.float32(FDR_THRESHOLD)]
    strength = np.abs(sig["log2_fold_change"].to_numpy(dtype=np.float32))
    genes = sig["gene"].to_numpy()
    ranked = {}
    for target, rows in sig.groupby("target", sort=False).indices.items():
        order = rows[np.argsort(-strength[rows], kind="stable")]  # stable: ties stay in row order
        ranked[target] = pd.Series(strength[order], index=genes[order])
    return {t: ranked.get(t, _NONE_SIGNIFICANT) for t in de["target"].unique()}


def _cut(n_real: int, k: int | None) -> int:
    """Where DES cuts both ranked lists: after k = |real significant| genes, or min(k, that) for overlap_at_k."""
    return n_real if k is None else min(k, n_real)


def _overlap(pred: dict[str, pd.Series], real: dict[str, pd.Series], k: int | None) -> pd.Series:
    values = {}
    for target, real_ranked in real.items():
        top = _cut(len(real_ranked), k)
        pred_top = pred.get(target, _NONE_SIGNIFICANT).index[:top]
        values[target] = 0.0 if top == 0 else len(set(real_ranked.index[:top]) & set(pred_top)) / top
    return pd.Series(values, dtype=float)


def _splits_tie(ranked: pd.Series, top: int) -> bool:
    """Whether keeping the first `top` genes of a ranked list separates genes of equal |lfc|."""
    return 0 < top < len(ranked) and ranked.iloc[top - 1] == ranked.iloc[top]


def _tie_at_cut(pred: dict[str, pd.Series], real: dict[str, pd.Series], k: int | None) -> pd.Series:
    flags = {}
    for target, real_ranked in real.items():
        top = _cut(len(real_ranked), k)
        flags[target] = _splits_tie(pred.get(target, _NONE_SIGNIFICANT), top) or _splits_tie(real_ranked, top)
    return pd.Series(flags, dtype=bool)


def de_overlap(de_pred: pd.DataFrame, de_real: pd.DataFrame, k: int | None = None) -> pd.Series:
    """Overlap of significant DE genes: |real_sig ∩ top_k(pred_sig)| / k, k = |real_sig| by default. Ch. 07.

    Genes are ranked by |log2 fold change| in float32, largest first; genes of equal |lfc| keep their row
    order in the DE table (gene order for `wilcoxon_de`'s tables). With k given, both lists are cut at
    min(k, |real_sig|). 0 for a perturbation without real significant genes (it still counts in the mean).
    Where the cut falls inside a block of equal |lfc| (`des_tie_at_cut`), the value depends on that order.
    """
    return _overlap(_significant(de_pred), _significant(de_real), k)


def des_tie_at_cut(de_pred: pd.DataFrame, de_real: pd.DataFrame, k: int | None = None) -> pd.Series:
    """Per perturbation, whether DES's top-k cut falls inside a block of equal |log2 fold change|. Ch. 07.

    With the predicted significant genes ranked as `de_overlap` ranks them (float32 |lfc|, descending) and
    k the cut (|real_sig|, or min(k, |real_sig|) when k is given), the cut is inside a tie when the k-th and
    (k+1)-th values are equal; with fewer than k + 1 predicted significant genes there is none. When k is
    given, the real list is cut too, and a tie across its cut counts as well (at the default k it is never
    cut). A flagged perturbation's DES is not defined by the metric: it depends on how tied genes are ordered
    (this library: gene order; cell-eval 0.8.2: polars' internal order, which changes with its thread count).
    Exact zeros in a prediction (a ReLU output) are the usual cause: they give blocks of +-inf fold changes.

    Returns a boolean Series indexed by perturbation, aligned with `de_overlap(de_pred, de_real, k)`.
    """
    return _tie_at_cut(_significant(de_pred), _significant(de_real), k)


def de_direction_match(de_pred: pd.DataFrame, de_real: pd.DataFrame) -> pd.Series:
    """Fraction of real significant genes whose predicted fold change has the same sign (NaN: none). Ch. 07."""
    real_sig = de_real[de_real["fdr"].to_numpy(dtype=np.float32) < np.float32(FDR_THRESHOLD)]
    pred = de_pred.set_index(["target", "gene"])["log2_fold_change"]
    pred_lfc = pred.reindex(pd.MultiIndex.from_frame(real_sig[["target", "gene"]])).to_numpy()
    same = np.sign(real_sig["log2_fold_change"].to_numpy(dtype=np.float32)) == np.sign(pred_lfc.astype(np.float32))
    matched = pd.Series(same, index=real_sig["target"].to_numpy()).groupby(level=0).mean()
    return matched.reindex(de_real["target"].unique())


# ----------------------------------------------------------------------------- evaluate and score


def evaluate(
    pred: ad.AnnData,
    real: ad.AnnData,
    *,
    pert_col: str = PERT,
    control: str = CONTROL,
    fdr_scope: str = "per_perturbation",
) -> pd.DataFrame:
    """Every metric for every non-control perturbation, as cell-eval computes them. Taught in ch. 08.

    `pred` and `real` hold log1p-normalized cells (count-like input is normalized as cell-eval does,
    with a warning), the same genes in the same order, the same perturbations and their own control
    cells. Returns one row per perturbation (sorted names) with columns mae, mse, mae_delta,
    pearson_delta, discrimination_score_l1/l2/cosine, overlap_at_N, overlap_at_50/100/200/500,
    de_direction_match, n_sig_real, n_sig_pred and des_tie_at_cut.

    DE genes are ranked by float32 |log2 fold change|, largest first, and genes of equal |lfc| in gene order:
    a deterministic order, where cell-eval's depends on its thread count. `des_tie_at_cut` (see the function
    of that name) flags the perturbations whose overlap_at_N depends on that order; a UserWarning gives their
    number when there are any.
    """
    pred, real = _check_pair(pred, real, pert_col, control)
    pred_bulk, real_bulk = profile_table(pred, by=pert_col), profile_table(real, by=pert_col)
    perts = sorted(set(real_bulk.index) - {control})
    pred_delta = pred_bulk.loc[perts] - pred_bulk.loc[control].to_numpy()
    real_delta = real_bulk.loc[perts] - real_bulk.loc[control].to_numpy()
    error = pred_bulk.loc[perts] - real_bulk.loc[perts]

    table = pd.DataFrame(index=pd.Index(perts, name=pert_col))
    table["mae"] = mae(pred_bulk.loc[perts], real_bulk)
    table["mse"] = (error**2).mean(axis=1)
    table["mae_delta"] = (pred_delta - real_delta).abs().mean(axis=1)
    table["pearson_delta"] = pearson_delta(pred_delta, real_delta)
    for metric in ("l1", "l2", "cosine"):
        table[f"discrimination_score_{metric}"] = discrimination_score(pred_delta, real_delta, metric)

    de_pred = wilcoxon_de(pred, pert_col=pert_col, control=control, fdr_scope=fdr_scope)
    de_real = wilcoxon_de(real, pert_col=pert_col, control=control, fdr_scope=fdr_scope)
    ranked_pred, ranked_real = _significant(de_pred), _significant(de_real)  # once per side, for every column
    table["overlap_at_N"] = _overlap(ranked_pred, ranked_real, None)
    for k in (50, 100, 200, 500):
        table[f"overlap_at_{k}"] = _overlap(ranked_pred, ranked_real, k)
    table["de_direction_match"] = de_direction_match(de_pred, de_real)
    for name, ranked in (("real", ranked_real), ("pred", ranked_pred)):
        table[f"n_sig_{name}"] = pd.Series({target: len(genes) for target, genes in ranked.items()}, dtype=int)
    table["des_tie_at_cut"] = _tie_at_cut(ranked_pred, ranked_real, None)
    ties = int(table["des_tie_at_cut"].sum())
    if ties:
        warnings.warn(
            f"{ties} of {len(table)} perturbations have DES's top-k cut inside a block of predicted genes with "
            "equal |log2 fold change| (often +-inf, from exact zeros in the prediction): their overlap_at_N is "
            "not defined by the metric. This library orders tied genes by gene order; cell-eval's value for them "
            "depends on its thread count (POLARS_MAX_THREADS). See the column des_tie_at_cut.",
            UserWarning,
            stacklevel=2,
        )
    return table


def score(user: pd.DataFrame, baseline: pd.DataFrame, metrics: Sequence[str] = VCC_METRICS) -> pd.Series:
    """The challenge score: each metric's mean, scaled against the baseline's, and their average. Ch. 08.

    Lower-is-better metrics (MAE): 1 - user / baseline. Others: (user - baseline) / (1 - baseline).
    NaN becomes 0 and scores are clipped below at 0 (not above), as in cell-eval; `avg_score` is the
    mean of the scaled metrics (the leaderboard shows 100 x avg_score).
    """
    missing = [m for m in metrics if m not in user.columns or m not in baseline.columns]
    if missing:
        raise ValueError(f"metrics {missing} are missing from the user or baseline table (evaluate() makes them)")
    scaled = {}
    for metric in metrics:
        # skipna=False: as in cell-eval, one NaN makes the mean NaN, and the metric then scores 0.
        u, b = user[metric].mean(skipna=False), baseline[metric].mean(skipna=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = 1 - np.float64(u) / b if metric in LOWER_IS_BETTER else (np.float64(u) - b) / (1 - np.float64(b))
        scaled[metric] = max(0.0, 0.0 if np.isnan(value) else float(value))
    scaled["avg_score"] = float(np.mean(list(scaled.values())))
    return pd.Series(scaled)
