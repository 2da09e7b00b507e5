"""The 2026 Virtual Cell Challenge's six scored metrics from scratch, matching cell-eval2 0.20.0. Taught in chapter 09.

A submission is raw integer counts. Each context is scored on its own, against its own controls:

- `pds_cosine`: pseudobulk profiles log1p(5e4 * P_g / sum P) of each perturbation's summed counts; effects
  against the REFERENCE control on both sides; every panel target removed from the features; cosine distance
  from each predicted effect to every real effect; the true one's mid-rank r among the n real effects gives
  1 - r / (n - 1).
- `expr_mse_unbiased_capped_norm`: squared error of the predicted profile against the real one, minus both
  sides' delete-one jackknife estimates of their sampling noise (the prediction's capped at the reference's,
  then scaled down so the panel claims no more noise than its spread across perturbations), over the real
  effect size measured the same way (sum over perturbations of the numerator / sum of the denominator).
  1 = predicting the control.
- four DE metrics on one Wilcoxon table per side (per-cell CPM, genes kept where the control's mean CPM
  exceeds 5, Benjamini-Hochberg per perturbation, each perturbation's own gene left out): direction fidelity
  (right-signed calls k over max(called, real calls)), direction reach (the deepest prefix of the
  prediction's ranking that stays >= 90 % right-signed, over the real calls), the significant sets' Jaccard,
  and the fold-change error normalized by the real fold changes (NMAE, on >= 10 real calls).

`evaluate` gives the six panel values (mean over perturbations, NaN skipped); `baseline` and `replicate`
give the two anchors; `score` scales (u - b) / (r - b) per metric and averages the six. `to_counts` turns
log1p predictions into integer counts so they can be scored.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from vcell_lib.data import half_split, pseudobulk
from vcell_lib.data.loading import _check_counts
from vcell_lib.ranksum import rank_sum_pvalues

__all__ = [
    "PANEL",
    "baseline",
    "de_metrics",
    "de_table",
    "evaluate",
    "evaluate_baseline",
    "expr_mse_unbiased_capped_norm",
    "jackknife_noise",
    "pds_cosine",
    "profiles",
    "replicate",
    "score",
    "split_seeds",
    "to_counts",
    "validate_counts",
]

PANEL = (
    "pds_cosine",
    "expr_mse_unbiased_capped_norm",
    "de_wilcoxon_lfc_nmae",
    "de_wilcoxon_direction_fidelity_yield_raw",
    "de_wilcoxon_direction_reach_raw",
    "de_wilcoxon_sig_jaccard",
)
"""The six scored metrics, in cell-eval2's names and order."""

BULK_TARGET_SUM = 5e4
"""Depth the pseudobulk profiles are scaled to before log1p (cell-eval2's `bulk_target_sum`)."""
CPM = 1e6
"""Per-cell target sum of the DE table's normalization."""
MIN_CONTROL_CPM = 5.0
"""A gene enters the DE table when the control's mean CPM is above this."""
ALPHA = 0.05
"""Significance threshold on the BH-adjusted p-value."""
EPSILON = 1e-9
"""Added to both means of a log2 fold change."""
REACH_PURITY = 0.9
"""Direction reach: the fraction of right signs the prefix must keep."""
MIN_GATE = 10
"""NMAE is defined for perturbations with at least this many real calls."""
MAX_COUNTS_PER_CELL = 1e6
"""The largest library a submitted cell may have."""


# ---------------------------------------------------------------- validation


def _dense(matrix) -> np.ndarray:
    """A float64 dense copy of a matrix."""
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float64)


def validate_counts(adata: ad.AnnData, name: str = "adata", *, integers: bool = True) -> None:
    """Refuse anything but raw counts: non-negative integers, at most 1e6 per cell. Taught in chapter 09.

    `integers=False` admits fractional counts, as cell-eval2 does for its own baseline's scaled cells.
    """
    _check_counts(
        adata.X,
        f"{name}.X",
        integers=integers,
        fractional_fix="Submit raw integer counts: turn log1p predictions into counts with vcell_lib.vcc2026.to_counts",
    )
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    if totals.size and totals.max() > MAX_COUNTS_PER_CELL:
        raise ValueError(
            f"{name} has a cell with {totals.max():.0f} counts, above the limit of {MAX_COUNTS_PER_CELL:.0f} per "
            "cell; sample fewer counts per cell"
        )


def _check_pair(pred: ad.AnnData, real: ad.AnnData, pert_col: str, control: str, integers: bool = True) -> None:
    """The checks cell-eval2 makes before scoring a pair: columns, genes, labels, counts."""
    for name, adata in (("pred", pred), ("real", real)):
        if pert_col not in adata.obs.columns:
            raise ValueError(f"{name}.obs has no column {pert_col!r}; pass pert_col= the perturbation column")
        if not adata.var_names.is_unique:
            raise ValueError(f"{name}.var_names has duplicates; call var_names_make_unique() first")
    if not pred.var_names.equals(real.var_names):
        raise ValueError("pred and real must have the same genes in the same order: pred = pred[:, real.var_names]")
    real_labels = set(real.obs[pert_col].astype(str))
    if control not in real_labels:
        raise ValueError(f"real has no {control!r} cells in obs[{pert_col!r}]; pass control= the control label")
    pred_labels = set(pred.obs[pert_col].astype(str))
    if pred_labels != real_labels:  # the control too: cell-eval2 wants the real controls in the prediction
        missing, extra = sorted(real_labels - pred_labels), sorted(pred_labels - real_labels)
        raise ValueError(
            f"pred must hold exactly the real labels, the control included (add the real control cells): "
            f"missing {missing[:5]}, not in real {extra[:5]}"
        )
    validate_counts(pred, "pred", integers=integers)
    validate_counts(real, "real")


# ---------------------------------------------------------------- expression metrics


def profiles(adata: ad.AnnData, pert_col: str = "target_gene") -> pd.DataFrame:
    """Each label's pseudobulk profile log1p(5e4 * P_g / sum P), P its summed counts. Taught in chapter 09."""
    means = pseudobulk(adata, by=pert_col)  # a label's mean is its sum / n: the scaling cancels n
    totals = means.X.sum(axis=1, keepdims=True)
    scale = np.divide(BULK_TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
    return pd.DataFrame(np.log1p(means.X * scale), index=means.obs[pert_col].to_numpy(), columns=adata.var_names)


def jackknife_noise(adata: ad.AnnData, pert_col: str = "target_gene", chunk: int = 256) -> pd.Series:
    """Delete-one jackknife estimate of each label's profile sampling noise, over genes. Taught in chapter 09.

    For a label with n cells, v_i is the profile without cell i; the estimate is (n - 1) / n * sum over genes
    of sum_i (v_ig - mean_i v_ig)^2; 0 for a label with fewer than 2 cells or no counts.
    """
    out = {}
    for label, cells in adata.obs.groupby(pert_col, observed=True).indices.items():
        n = len(cells)
        counts = adata.X[cells]
        summed = np.asarray(counts.sum(axis=0), dtype=np.float64).ravel()
        total = float(summed.sum())
        if n < 2 or total <= 0:
            out[str(label)] = 0.0
            continue
        full = np.log1p(BULK_TARGET_SUM * summed / total)
        s1, s2 = np.zeros_like(summed), np.zeros_like(summed)
        for start in range(0, n, chunk):
            block = _dense(counts[start : start + chunk])
            rest = total - block.sum(axis=1)
            safe = np.where(rest > 0, rest, 1.0)[:, None]
            # a cell holding all of its label's counts leaves an empty profile: 0, not NaN
            left_out = np.where((rest > 0)[:, None], np.log1p(BULK_TARGET_SUM * (summed - block) / safe), 0.0)
            deviation = left_out - full  # shifted by the full profile: same variance, no cancellation
            s1 += deviation.sum(axis=0)
            s2 += np.einsum("ij,ij->j", deviation, deviation)
        out[str(label)] = max((n - 1) / n * float((s2 - s1**2 / n).sum()), 0.0)
    return pd.Series(out, dtype=np.float64)


def _target_columns(labels, genes: pd.Index) -> dict[int, int]:
    """Row -> column of the row's own target gene, for the labels that are genes."""
    position = {gene: j for j, gene in enumerate(genes)}
    return {i: position[label] for i, label in enumerate(labels) if label in position}


def pds_cosine(
    pred_profiles: pd.DataFrame,
    real_profiles: pd.DataFrame,
    control: str = "non-targeting",
    *,
    origin: pd.DataFrame | None = None,
) -> pd.Series:
    """Perturbation discrimination on cosine distance of effects, panel targets removed. Taught in chapter 09.

    Predicted effects are measured from the control of `origin` (default: the real profiles, the 2026 rule;
    the replicate passes the predicted half's own). Returns 1 - rank / (n - 1) per predicted perturbation, rank
    the mid-rank of its real effect among the n real effects by distance to the predicted one (0 = closest;
    ties share their mean place).
    """
    real_ctrl = real_profiles.loc[control].to_numpy()
    real_keys = [p for p in real_profiles.index if p != control]
    pred_keys = [p for p in pred_profiles.index if p != control]
    keep = np.ones(real_profiles.shape[1], dtype=bool)
    keep[list(_target_columns(real_keys, real_profiles.columns).values())] = False
    if not keep.any():
        raise ValueError("every gene is the target of a perturbation: no feature is left to rank on")
    real_eff = real_profiles.loc[real_keys].to_numpy()[:, keep] - real_ctrl[keep]
    pred_ctrl = real_ctrl if origin is None else origin.loc[control].to_numpy()
    pred_eff = pred_profiles.loc[pred_keys].to_numpy()[:, keep] - pred_ctrl[keep]
    sim = pred_eff @ real_eff.T
    norms = (
        np.sqrt(np.einsum("ig,ig->i", pred_eff, pred_eff))[:, None]
        * np.sqrt(np.einsum("jg,jg->j", real_eff, real_eff))[None, :]
    )
    cosine = np.divide(sim, norms, out=np.zeros_like(sim), where=norms != 0)  # a zero effect: distance 1
    distance = np.clip(1.0 - cosine, 0.0, 2.0)
    where = {p: j for j, p in enumerate(real_keys)}
    denominator = len(real_keys) - 1
    out = {}
    for i, p in enumerate(pred_keys):
        row, own = distance[i], distance[i, where[p]]
        rank = np.count_nonzero(row < own) + (np.count_nonzero(row == own) - 1) / 2.0
        out[p] = 1.0 if denominator <= 0 else 1.0 - rank / denominator
    return pd.Series(out, dtype=np.float64)


def _drop_target(summed: np.ndarray, a: np.ndarray, b: np.ndarray, columns: dict[int, int], n_genes: int):
    """Remove each row's own gene from a summed squared distance; return it and the genes left per row."""
    n_row = np.full(len(summed), float(n_genes))
    for i, j in columns.items():
        summed[i] -= (a[i, j] - b[i, j]) ** 2
        n_row[i] = n_genes - 1
    return summed, n_row


def _spread(pred: np.ndarray, columns: dict[int, int], weights: np.ndarray) -> float:
    """The prediction's weighted spread across perturbations: the most noise the panel may claim."""
    deviation = pred - pred.mean(axis=0)
    s1 = np.einsum("ij,i->j", deviation, weights)
    s2 = np.einsum("ij,ij,i->j", deviation, deviation, weights)
    weight_sum = np.full(pred.shape[1], weights.sum())
    count = np.full(pred.shape[1], float(pred.shape[0]))
    for i, j in columns.items():  # a row's own gene is not scored, so it does not count either
        s1[j] -= weights[i] * deviation[i, j]
        s2[j] -= weights[i] * deviation[i, j] ** 2
        weight_sum[j] -= weights[i]
        count[j] -= 1.0
    ok = (count >= 2.0) & (weight_sum > 0.0)
    return float(np.maximum(s2[ok] - s1[ok] ** 2 / weight_sum[ok], 0.0).sum()) if ok.any() else 0.0


def expr_mse_unbiased_capped_norm(
    pred_profiles: pd.DataFrame,
    real_profiles: pd.DataFrame,
    pred_noise: pd.Series,
    real_noise: pd.Series,
    control: str = "non-targeting",
) -> float:
    """Noise-corrected squared error over the noise-corrected real effect size. Taught in chapter 09.

    1 = predicting the control.

    Per perturbation p, over the genes but p's own: numerator |pred_p - real_p|^2 - C_pred - C_real,
    C_pred = min(jackknife_pred, jackknife_real) scaled so the panel's claim stays within its spread;
    denominator |real_p - real_control|^2 - C_real - C_control. Returns sum(numerator) / sum(denominator).
    """
    genes = real_profiles.columns
    keys = [p for p in pred_profiles.index if p != control]
    n_genes = len(genes)
    columns = _target_columns(keys, genes)
    pred = pred_profiles.loc[keys].to_numpy()
    real = real_profiles.loc[keys].to_numpy()
    real_term = real_noise.loc[keys].to_numpy()
    pred_term = np.minimum(pred_noise.reindex(keys).fillna(0.0).to_numpy(), real_term)
    n_row = np.array([n_genes - 1.0 if i in columns else float(n_genes) for i in range(len(keys))])
    weights = np.divide(1.0, n_row, out=np.zeros_like(n_row), where=n_row > 0)
    claim = float((pred_term * weights).sum())
    if claim > 0.0:
        ratio = _spread(pred, columns, weights) / claim
        if ratio < 1.0:
            pred_term = pred_term * ratio
    numerator = np.einsum("ij,ij->i", pred - real, pred - real) - pred_term - real_term
    numerator, n_row = _drop_target(numerator, pred, real, columns, n_genes)
    ctrl = np.broadcast_to(real_profiles.loc[control].to_numpy(), real.shape)
    denominator = np.einsum("ij,ij->i", real - ctrl, real - ctrl) - real_term - real_noise.loc[control]
    denominator, _ = _drop_target(denominator, real, ctrl, columns, n_genes)
    numerator, denominator = numerator / n_row, denominator / n_row
    ok = np.isfinite(numerator) & np.isfinite(denominator)
    if not denominator[ok].sum() > 0.0:
        raise ValueError(
            f"the real effect size summed over {ok.sum()} perturbations is {denominator[ok].sum():.6g}, not "
            "positive: this reference carries no measurable effect at its depth, so the expression error has no "
            "scale. Use a reference with more cells per perturbation (or stronger effects)."
        )
    return float(numerator[ok].sum() / denominator[ok].sum())


# ---------------------------------------------------------------- DE metrics


def de_table(cells: ad.AnnData, controls: ad.AnnData, pert_col: str = "target_gene") -> pd.DataFrame:
    """Wilcoxon DE of each perturbation against the controls, on per-cell CPM. Taught in chapter 09.

    Columns target, feature, log2_fold_change (log2 of (mean CPM + 1e-9) ratios), p_value, p_adj (BH per
    target); only genes whose mean CPM in `controls` is above 5. `cells` holds the perturbed cells only.
    """
    import scanpy as sc

    both = ad.concat([cells, controls], join="inner", merge="first")
    both.X = both.X.astype(np.float64)
    sc.pp.normalize_total(both, target_sum=CPM)
    matrix = sp.csr_matrix(both.X)
    n_cells = cells.n_obs
    control_rows = np.arange(n_cells, both.n_obs)
    labels = cells.obs[pert_col].astype(str).to_numpy()
    targets = sorted(set(labels))
    groups = [np.flatnonzero(labels == t) for t in targets]
    ref_mean = np.asarray(matrix[control_rows].mean(axis=0)).ravel()
    kept = np.flatnonzero(ref_mean * (1e6 / CPM) > MIN_CONTROL_CPM)
    matrix = matrix[:, kept]
    ref_mean = ref_mean[kept]
    # Tested on log1p(CPM) as cell-eval2 does: the test only reads the order, but log1p in floating point merges
    # CPM values a few ULP apart (the same fraction of two different libraries) into one tie, and so must we.
    logged = matrix.copy()
    np.log1p(logged.data, out=logged.data)
    p_values = rank_sum_pvalues(logged, groups, control_rows)
    frames = []
    for t, rows, p in zip(targets, groups, p_values):
        mean = np.asarray(matrix[rows].mean(axis=0)).ravel()
        frames.append(
            pd.DataFrame(
                {
                    "target": t,
                    "feature": both.var_names[kept],
                    "log2_fold_change": np.log2((mean + EPSILON) / (ref_mean + EPSILON)),
                    "p_value": p,
                    "p_adj": stats.false_discovery_control(p) if len(p) else p,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _sign(values: pd.Series) -> pd.Series:
    """+1 / -1, 0 where there is no direction (0 or NaN)."""
    return np.sign(values.fillna(0.0))


def de_metrics(de_pred: pd.DataFrame, de_real: pd.DataFrame) -> pd.DataFrame:
    """The four DE metrics per perturbation, own gene left out, from two `de_table`s. Taught in chapter 09.

    The tables may hold different genes (each side's control decides its gene filter): the real calls count
    whether or not the prediction reports the gene (an unreported fold change reads 0), while the direction
    metrics rank only the genes both sides report, as cell-eval2 does.
    """
    merged = de_real.merge(de_pred, on=["target", "feature"], suffixes=("_real", "_pred"), how="outer", indicator=True)
    merged = merged[merged["feature"] != merged["target"]]
    merged = merged.assign(
        both=merged.pop("_merge") == "both",
        sig_real=merged["p_adj_real"] < ALPHA,
        sig_pred=merged["p_adj_pred"] < ALPHA,
        defined=_sign(merged["log2_fold_change_real"]) != 0,
        match=(_sign(merged["log2_fold_change_real"]) != 0)
        & (_sign(merged["log2_fold_change_real"]) == _sign(merged["log2_fold_change_pred"])),
    )
    out = {}
    for target, rows in merged.groupby("target", sort=True):
        n_conf = int(rows["sig_real"].sum())
        scored = rows[rows["both"] & rows["sig_pred"] & rows["defined"]]
        called = max(len(scored), n_conf)
        fidelity = scored["match"].sum() / called if called else np.nan
        union = int((rows["sig_real"] | rows["sig_pred"]).sum())
        jaccard = 1.0 if union == 0 else int((rows["sig_real"] & rows["sig_pred"]).sum()) / union
        gate = rows[rows["sig_real"] & np.isfinite(rows["log2_fold_change_real"])]
        lfc_pred = gate["log2_fold_change_pred"].where(np.isfinite(gate["log2_fold_change_pred"]), 0.0)
        den = gate["log2_fold_change_real"].abs().mean()
        nmae = (
            (lfc_pred - gate["log2_fold_change_real"]).abs().mean() / den
            if len(gate) >= MIN_GATE and np.isfinite(den) and den != 0
            else np.nan
        )
        # reach: rank the real calls by the prediction's confidence; deepest prefix still >= 90 % right
        ranked = rows.assign(abs_lfc=rows["log2_fold_change_pred"].abs().fillna(-np.inf))[
            rows["both"] & rows["sig_real"]
        ]
        ranked = ranked.sort_values(
            ["sig_pred", "p_adj_pred", "p_value_pred", "abs_lfc", "feature"],
            ascending=[False, True, True, False, True],
            na_position="last",
            kind="mergesort",
        )
        depth = ranked["defined"].to_numpy(dtype=np.int64).cumsum()
        right = ranked["match"].to_numpy(dtype=np.int64).cumsum()
        purity = np.divide(right, depth, out=np.zeros(len(depth)), where=depth > 0)
        pure = (depth > 0) & (purity >= REACH_PURITY)
        reach = (depth[pure].max() if pure.any() else 0) / n_conf if n_conf else np.nan
        out[target] = {
            "de_wilcoxon_lfc_nmae": nmae,
            "de_wilcoxon_direction_fidelity_yield_raw": fidelity,
            "de_wilcoxon_direction_reach_raw": reach,
            "de_wilcoxon_sig_jaccard": jaccard,
        }
    return pd.DataFrame.from_dict(out, orient="index")


# ---------------------------------------------------------------- the panel


def _one_context(
    pred: ad.AnnData,
    real: ad.AnnData,
    pert_col: str,
    control: str,
    *,
    own_controls: bool = False,
    integers: bool = True,
) -> pd.Series:
    """The six panel values of one context; `own_controls` measures the prediction against its own controls."""
    _check_pair(pred, real, pert_col, control, integers)
    pred_profiles, real_profiles = profiles(pred, pert_col), profiles(real, pert_col)
    origin = pred_profiles if own_controls else real_profiles
    values = {"pds_cosine": pds_cosine(pred_profiles, real_profiles, control, origin=origin).mean()}
    values["expr_mse_unbiased_capped_norm"] = expr_mse_unbiased_capped_norm(
        pred_profiles, real_profiles, jackknife_noise(pred, pert_col), jackknife_noise(real, pert_col), control
    )
    controls = real[real.obs[pert_col].astype(str) == control]
    de_real = de_table(real[real.obs[pert_col].astype(str) != control], controls, pert_col)
    pred_controls = pred[pred.obs[pert_col].astype(str) == control] if own_controls else controls
    de_pred = de_table(pred[pred.obs[pert_col].astype(str) != control], pred_controls, pert_col)
    values.update(de_metrics(de_pred, de_real).mean(skipna=True).to_dict())
    return pd.Series(values, dtype=np.float64).reindex(list(PANEL))


def evaluate(
    pred: ad.AnnData,
    real: ad.AnnData,
    *,
    pert_col: str = "target_gene",
    control: str = "non-targeting",
    context_col: str | None = None,
) -> pd.Series | pd.DataFrame:
    """The six 2026 panel values of a count prediction against the real cells. Taught in chapter 09.

    One context at a time: with `context_col`, each context is scored on its own and a DataFrame (one row per
    context) is returned; without it, data holding a column named like a context with several values is
    refused.
    """
    if context_col is None:
        for column in ("cell_type", "context", "cell_line"):
            if column in real.obs.columns and real.obs[column].nunique() > 1:
                raise ValueError(
                    f"real.obs[{column!r}] holds {real.obs[column].nunique()} contexts; the 2026 metrics score one "
                    f"context at a time: pass context_col={column!r}"
                )
        return _one_context(pred, real, pert_col, control)
    for name, adata in (("pred", pred), ("real", real)):
        if context_col not in adata.obs.columns:
            raise ValueError(f"{name}.obs has no column {context_col!r} (context_col)")
    rows = {}
    for context in sorted(real.obs[context_col].astype(str).unique()):
        pick_real = real[real.obs[context_col].astype(str) == context]
        pick_pred = pred[pred.obs[context_col].astype(str) == context]
        rows[context] = _one_context(pick_pred, pick_real, pert_col, control)
    return pd.DataFrame(rows).T.rename_axis(context_col)


# ---------------------------------------------------------------- the two anchors and the score


def baseline(
    real: ad.AnnData, *, pert_col: str = "target_gene", control: str = "non-targeting", seed: int = 0
) -> ad.AnnData:
    """cell-eval2's context-mean baseline as cells: scaled resampled controls. Taught in chapter 09.

    The profile is the equal-weight mean over the real perturbations of their mean count vectors, each
    perturbation's own target gene left out of that gene's mean. Every perturbation gets as many cells as it
    has in `real`, drawn with replacement from the real controls (numpy default_rng(seed), perturbations in
    sorted order) with each gene scaled by profile / control mean (0 where the control mean is 0); the control
    rows are the real controls. The cells are fractional counts (float32), scored as cell-eval2 scores them.
    """
    if pert_col not in real.obs.columns:
        raise ValueError(f"real.obs has no column {pert_col!r}; pass pert_col= the perturbation column")
    labels = real.obs[pert_col].astype(str).to_numpy()
    is_control = labels == control
    if not is_control.any():
        raise ValueError(f"real has no {control!r} cells in obs[{pert_col!r}]; pass control= the control label")
    means = pseudobulk(real, by=pert_col)
    perts = means.obs[pert_col].astype(str).to_numpy()
    bulk = means.X[perts != control]
    keys = perts[perts != control]
    if len(keys) < 2:
        raise ValueError("the baseline needs at least 2 perturbations: each one's own gene is left out of its mean")
    total, count = bulk.sum(axis=0), np.full(real.n_vars, float(len(keys)))
    for i, j in _target_columns(list(keys), real.var_names).items():
        total[j] -= bulk[i, j]
        count[j] -= 1.0
    if (count <= 0).any():
        raise ValueError("every perturbation targets some gene, so its mean is undefined; add another perturbation")
    profile = total / count
    control_cells = sp.csr_matrix(real.X[is_control])
    control_mean = np.asarray(control_cells.astype(np.float64).mean(axis=0)).ravel()
    scale = np.where(control_mean <= 0, 0.0, profile / np.where(control_mean <= 0, 1.0, control_mean))
    generator = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == p) for p in sorted(set(labels[~is_control]))]
    drawn = np.concatenate([generator.integers(0, control_cells.shape[0], size=len(rows)) for rows in groups])
    emitted = control_cells[drawn].copy()
    emitted.data = (emitted.data * scale[emitted.indices]).astype(np.float32)
    emitted.eliminate_zeros()
    blocks = sp.vstack([emitted, control_cells.astype(np.float32)], format="csr")
    order = np.empty(real.n_obs, dtype=np.intp)
    order[np.concatenate([*groups, np.flatnonzero(is_control)])] = np.arange(real.n_obs)
    return ad.AnnData(X=blocks[order].tocsr(), obs=real.obs.copy(), var=real.var.copy())


def evaluate_baseline(
    real: ad.AnnData, *, pert_col: str = "target_gene", control: str = "non-targeting", seed: int = 0
) -> pd.Series:
    """The baseline's six panel values (its fractional cells admitted, as cell-eval2 does). Taught in chapter 09."""
    return _one_context(
        baseline(real, pert_col=pert_col, control=control, seed=seed), real, pert_col, control, integers=False
    )


def split_seeds(seed: int = 0, n_splits: int = 5) -> list[int]:
    """The replicate's split seeds, derived from one base seed as cell-eval2 derives them. Taught in chapter 09."""
    return [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(n_splits)]


def _nmae_between_halves(de_full: pd.DataFrame, de_a: pd.DataFrame, de_b: pd.DataFrame) -> float:
    """The NMAE replicate: the halves' fold-change disagreement on the full data's gate, over its fold changes."""
    gate = de_full[(de_full["p_adj"] < ALPHA) & np.isfinite(de_full["log2_fold_change"])]
    gate = gate[gate["feature"] != gate["target"]][["target", "feature", "log2_fold_change"]]
    for name, half in (("a", de_a), ("b", de_b)):
        half = half[["target", "feature", "log2_fold_change"]].rename(columns={"log2_fold_change": name})
        gate = gate.merge(half, on=["target", "feature"], how="left")
        gate[name] = gate[name].where(np.isfinite(gate[name]), 0.0)  # a gene a half did not report: 0
    values = []
    for _, rows in gate.groupby("target"):
        den = rows["log2_fold_change"].abs().mean()
        if len(rows) >= MIN_GATE and np.isfinite(den) and den != 0:
            values.append((rows["a"] - rows["b"]).abs().mean() / den)
    return float(np.mean(values)) if values else np.nan


def replicate(
    real: ad.AnnData,
    *,
    pert_col: str = "target_gene",
    control: str = "non-targeting",
    n_splits: int = 5,
    seed: int = 0,
) -> pd.Series:
    """The split-half replicate: one half of the real cells scored against the other. Taught in chapter 09.

    Each split (seeds from `split_seeds`) halves every label's cells with `half_split`; the second half is scored
    as a prediction of the first, each half against its own controls. The NMAE's replicate is cell-eval2's:
    the halves' fold-change disagreement on the full data's significance gate, over the full fold changes.
    """
    _check_pair(real, real, pert_col, control)
    is_control = real.obs[pert_col].astype(str) == control
    de_full = de_table(real[~is_control], real[is_control], pert_col)
    splits = []
    for split_seed in split_seeds(seed, n_splits):
        half_a, half_b = half_split(real, split_seed, pert_col=pert_col)
        values = _one_context(half_b, half_a, pert_col, control, own_controls=True)
        tables = []
        for half in (half_a, half_b):
            ctrl = half.obs[pert_col].astype(str) == control
            tables.append(de_table(half[~ctrl], half[ctrl], pert_col))
        values["de_wilcoxon_lfc_nmae"] = _nmae_between_halves(de_full, *tables)
        splits.append(values)
    return pd.DataFrame(splits).mean().reindex(list(PANEL))


def score(user: pd.Series, baseline: pd.Series, replicate: pd.Series) -> pd.Series:
    """Each panel metric scaled (u - b) / (r - b), and their mean. Taught in chapter 09.

    0 = the baseline, 1 = the replicate.

    Not clipped. All three are `evaluate`-style Series (the baseline prediction scored like any submission).
    """
    for name, values in (("user", user), ("baseline", baseline), ("replicate", replicate)):
        missing = [m for m in PANEL if m not in values.index]
        if missing:
            raise ValueError(f"{name} lacks {missing}: pass the Series vcc2026.evaluate / replicate return")
    u, b, r = (pd.Series(v, dtype=np.float64).reindex(list(PANEL)) for v in (user, baseline, replicate))
    scaled = (u - b) / (r - b)
    return pd.concat([scaled, pd.Series({"mean": scaled.mean(skipna=False)})])


def to_counts(adata: ad.AnnData, depth: float | np.ndarray = 20_000, seed: int = 0) -> ad.AnnData:
    """Integer counts from log1p cells or means, sampled at `depth` per row. Taught in chapter 09.

    A row's expression expm1(x) is read as proportions over the genes; `depth` counts (one number, or one per
    row) are drawn from them with numpy default_rng(seed). Use it to submit a model that predicts log1p values.
    """
    values = _dense(adata.X)
    if values.size and (not np.all(np.isfinite(values)) or values.min() < 0):
        raise ValueError("adata.X must be log1p values: finite and non-negative")
    depths = np.broadcast_to(np.asarray(depth, dtype=np.int64), (adata.n_obs,))
    if (depths < 0).any() or (depths > MAX_COUNTS_PER_CELL).any():
        raise ValueError(f"depth must be between 0 and {MAX_COUNTS_PER_CELL:.0f} counts per cell")
    linear = np.expm1(values)
    totals = linear.sum(axis=1, keepdims=True)
    if ((totals[:, 0] <= 0) & (depths > 0)).any():
        raise ValueError("a row has no expression to sample from: give it depth 0 or some positive value")
    proportions = np.divide(linear, totals, out=np.zeros_like(linear), where=totals > 0)
    generator = np.random.default_rng(seed)
    counts = (
        np.stack(
            [generator.multinomial(n, p) if n else np.zeros(len(p), np.int64) for n, p in zip(depths, proportions)]
        )
        if adata.n_obs
        else np.zeros(adata.shape)
    )
    return ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=adata.obs.copy(), var=adata.var.copy())
