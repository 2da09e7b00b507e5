"""vcell_lib.vcc2026 (chapter 09) against the official 2026 evaluator cell-eval2 0.20.0, and its hand-made limits."""

import logging
from dataclasses import replace

import anndata as ad
import cell_eval2  # not importorskip: without cell-eval2 the cross-checks must fail, not vanish
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from vcell_lib import vcc2026

CONTROL = "non-targeting"
TOL = 1e-6


def make_cells(rng, perts, cells, n_controls, genes, *, rate=2.0, effects=None, control_only=False):
    """Raw counts: controls at a per-gene rate, each perturbation scaling the rates by its effect vector."""
    base = rate * rng.gamma(1.0, 1.0, len(genes))
    labels = [CONTROL] * n_controls + [p for p in perts for _ in range(cells)]
    rates = np.tile(base, (len(labels), 1))
    if not control_only:
        for p in perts:
            rates[np.array(labels) == p] *= effects[p]
    counts = rng.poisson(rates).astype(np.float32)
    obs = pd.DataFrame({"target_gene": labels}, index=[f"cell{i}" for i in range(len(labels))])
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))


def make_pair(seed=0, n_perts=6, cells=25, n_controls=50, n_genes=40, pred_cells=None, rate=4.0, absent=0, **kw):
    """A (pred, real) pair of count AnnData; `absent` perturbations target a gene that is not measured."""
    rng = np.random.default_rng(seed)
    perts = [f"P{i}" for i in range(n_perts)]
    genes = perts[: n_perts - absent] + [f"G{g}" for g in range(n_genes - n_perts + absent)]
    effects = {}
    for p in perts:
        effect = np.exp(rng.normal(0.0, 0.8, n_genes))
        if p in genes:
            effect[genes.index(p)] = 0.1  # the knockdown
        effects[p] = effect
    real = make_cells(rng, perts, cells, n_controls, genes, rate=rate, effects=effects)
    noisy = {p: e * np.exp(rng.normal(0.0, 0.3, n_genes)) for p, e in effects.items()}
    pred = make_cells(rng, perts, pred_cells or cells, n_controls, genes, rate=rate, effects=noisy, **kw)
    return pred, real


def official(pred: ad.AnnData, real: ad.AnnData) -> pd.Series:
    """cell-eval2's vcc2026 panel on an in-memory pair (the CPU DE engine, pdex)."""
    preset = cell_eval2.EvalConfig.from_preset("vcc2026")
    config = replace(preset, pert_col="target_gene", cache_strict=False, de=replace(preset.de, backend="pdex"))
    tidy = cell_eval2.compute_metrics(pred, real, config=config)
    agg = cell_eval2.aggregate_metrics(tidy, metrics=list(vcc2026.PANEL))
    return pd.Series(dict(zip(agg["metric"], agg["mean"]))).reindex(list(vcc2026.PANEL))


def _perfect():
    _, real = make_pair(1)
    return real.copy(), real


def _control_only():
    """Every perturbation predicted by the real controls' cells."""
    _, real = make_pair(2)
    controls = real[real.obs["target_gene"] == CONTROL]
    perts = sorted(set(real.obs["target_gene"]) - {CONTROL})
    parts = [controls]
    for p in perts:
        part = controls.copy()
        part.obs["target_gene"] = p
        part.obs_names = [f"{p}_{n}" for n in part.obs_names]
        parts.append(part)
    return ad.concat(parts), real


CASES = {
    "random": lambda: make_pair(0),
    "perfect": _perfect,
    "control-only": _control_only,
    "few cells": lambda: make_pair(3, cells=3, n_controls=8, pred_cells=2, rate=10.0),
    "heavy ties": lambda: make_pair(4, rate=0.5, n_genes=25, cells=60, n_controls=80),
    "target absent": lambda: make_pair(5, absent=2),
    "more predicted cells": lambda: make_pair(6, pred_cells=70),
}


@pytest.fixture(scope="module")
def both_sides():
    """Each case scored by cell-eval2 and by vcc2026 (cell-eval2's calls dominate the run time)."""
    logging.getLogger("cell_eval2").setLevel(logging.ERROR)
    out = {}
    for name, build in CASES.items():
        pred, real = build()
        out[name] = (official(pred, real), vcc2026.evaluate(pred, real))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_matches_cell_eval2(both_sides, case):
    ref, mine = both_sides[case]
    assert list(mine.index) == list(vcc2026.PANEL)
    np.testing.assert_allclose(mine.to_numpy(), ref.to_numpy(), rtol=0, atol=TOL, equal_nan=True)


def test_refuses_a_reference_without_measurable_effect_as_cell_eval2_does():
    """Three weak cells per perturbation: the real effect size sums below 0 and both evaluators refuse."""
    logging.getLogger("cell_eval2").setLevel(logging.ERROR)
    pred, real = make_pair(6, cells=3, n_controls=8, pred_cells=2, rate=2.0)
    with pytest.raises(ValueError, match="not positive"):
        official(pred, real)
    with pytest.raises(ValueError, match="not positive"):
        vcc2026.evaluate(pred, real)


# ----------------------------------------------------------------------------- the anchors


@pytest.fixture(scope="module")
def anchors():
    """cell-eval2's baseline prediction, baseline panel and replicate anchor on one real panel."""
    from cell_eval2.anchor import compute_replicate_anchor
    from cell_eval2.baseline import _prediction_from_adata, _profile_from_adata, build_generic_baseline

    logging.getLogger("cell_eval2").setLevel(logging.ERROR)
    _, real = make_pair(0)
    preset = cell_eval2.EvalConfig.from_preset("vcc2026")
    config = replace(preset, pert_col="target_gene", cache_strict=False, de=replace(preset.de, backend="pdex"))
    profile = _profile_from_adata(real, pert_col="target_gene", control=CONTROL, exclude_target_gene=True)
    cells = _prediction_from_adata(real, profile, pert_col="target_gene", control=CONTROL, emit="dispersed", seed=0)
    agg = build_generic_baseline(real, config=config).agg
    base = pd.Series({m: agg.filter(agg["statistic"] == "mean")[m][0] for m in vcc2026.PANEL})
    _, anchor = compute_replicate_anchor(real, config=config)
    rep = pd.Series(dict(zip(anchor["metric"], anchor["replicate"]))).reindex(list(vcc2026.PANEL))
    return real, cells, base, rep


def test_baseline_cells_are_cell_eval2s(anchors):
    """Same profile, same draws (default_rng(seed), perturbations sorted), same float32 cells."""
    real, cells, _, _ = anchors
    mine = vcc2026.baseline(real)
    assert list(mine.obs_names) == list(cells.obs_names)
    assert abs(mine.X - cells.X).max() == 0


def test_baseline_panel_matches_cell_eval2(anchors):
    real, _, base, _ = anchors
    np.testing.assert_allclose(vcc2026.evaluate_baseline(real).to_numpy(), base.to_numpy(), rtol=0, atol=TOL)


def test_replicate_matches_cell_eval2(anchors):
    """Same split seeds and halves (half_split draws as cell-eval2's _disjoint_halves), each half on its controls."""
    real, _, _, rep = anchors
    np.testing.assert_allclose(vcc2026.replicate(real).to_numpy(), rep.to_numpy(), rtol=0, atol=TOL)


def test_score_scales_each_metric_between_baseline_and_replicate():
    base = pd.Series(0.2, index=list(vcc2026.PANEL))
    rep = pd.Series(0.6, index=list(vcc2026.PANEL))
    user = pd.Series([0.2, 0.6, 0.4, 1.0, 0.0, 0.5], index=list(vcc2026.PANEL))
    scaled = vcc2026.score(user, base, rep)
    np.testing.assert_allclose(scaled[list(vcc2026.PANEL)], [0.0, 1.0, 0.5, 2.0, -0.5, 0.75])  # not clipped
    assert scaled["mean"] == pytest.approx(np.mean([0.0, 1.0, 0.5, 2.0, -0.5, 0.75]))
    assert vcc2026.score(base, base, rep)["mean"] == 0 and vcc2026.score(rep, base, rep)["mean"] == 1
    with pytest.raises(ValueError, match="lacks"):
        vcc2026.score(user.drop("pds_cosine"), base, rep)


# ----------------------------------------------------------------------------- log1p to counts, validation


def test_to_counts_samples_integer_cells_at_the_depth():
    pred, _ = make_pair(0)
    logged = pred.copy()
    dense = pred.X.toarray()
    logged.X = np.log1p(dense / dense.sum(1, keepdims=True) * 1e4)
    counts = vcc2026.to_counts(logged, depth=5000, seed=1)
    values = counts.X.toarray()
    assert np.all(values == np.round(values)) and np.all(values.sum(1) == 5000)
    again = vcc2026.to_counts(logged, depth=5000, seed=1)
    assert abs(again.X - counts.X).max() == 0  # seeded
    # the sampled proportions follow the predicted ones
    share = values.sum(0) / values.sum()
    expected = np.expm1(logged.X).sum(0) / np.expm1(logged.X).sum()
    assert np.abs(share - expected).max() < 0.01
    vcc2026.validate_counts(counts)
    with pytest.raises(ValueError, match="log1p"):
        vcc2026.to_counts(ad.AnnData(X=-np.ones((2, 3))))


def test_validation_says_what_to_fix():
    pred, real = make_pair(0)
    bad = pred.copy()
    bad.X = bad.X.astype(np.float64) * 0.5
    with pytest.raises(ValueError, match="non-integer.*to_counts"):
        vcc2026.evaluate(bad, real)
    bad = pred.copy()
    bad.X = -bad.X
    with pytest.raises(ValueError, match="negative"):
        vcc2026.evaluate(bad, real)
    bad = pred.copy()
    bad.X = bad.X * 1e6
    with pytest.raises(ValueError, match="limit"):
        vcc2026.evaluate(bad, real)
    with pytest.raises(ValueError, match="same genes"):
        vcc2026.evaluate(pred[:, ::-1].copy(), real)
    with pytest.raises(ValueError, match="missing"):
        vcc2026.evaluate(pred[pred.obs["target_gene"] != "P0"].copy(), real)
    no_controls = pred[pred.obs["target_gene"] != CONTROL].copy()
    with pytest.raises(ValueError, match="control included"):
        vcc2026.evaluate(no_controls, real)
    with pytest.raises(ValueError, match="perturbation sets differ"):  # cell-eval2 refuses it too
        official(no_controls, real)
    with pytest.raises(ValueError, match="pert_col"):
        vcc2026.evaluate(pred, real, pert_col="perturbation")


def test_one_context_at_a_time():
    pred, real = make_pair(0)
    for side in (pred, real):
        side.obs["cell_type"] = "A"
    other_pred, other_real = make_pair(1)
    for side in (other_pred, other_real):
        side.obs["cell_type"] = "B"
        side.obs_names = [f"B{n}" for n in side.obs_names]
    both_pred, both_real = ad.concat([pred, other_pred]), ad.concat([real, other_real])
    with pytest.raises(ValueError, match="context_col='cell_type'"):
        vcc2026.evaluate(both_pred, both_real)
    per_context = vcc2026.evaluate(both_pred, both_real, context_col="cell_type")
    pd.testing.assert_series_equal(per_context.loc["A"], vcc2026.evaluate(pred, real), check_names=False)
    pd.testing.assert_series_equal(per_context.loc["B"], vcc2026.evaluate(other_pred, other_real), check_names=False)


# ----------------------------------------------------------------------------- the limits the reference states


def _table(targets, genes, lfc, p_adj):
    """A DE table with the given fold changes and adjusted p-values for every (target, gene)."""
    rows = [(t, g) for t in targets for g in genes]
    return pd.DataFrame(
        {
            "target": [t for t, _ in rows],
            "feature": [g for _, g in rows],
            "log2_fold_change": np.resize(lfc, len(rows)),
            "p_value": np.resize(p_adj, len(rows)) / 10,
            "p_adj": np.resize(p_adj, len(rows)),
        }
    )


def test_an_all_tied_row_scores_one_half_in_pds():
    """A prediction equal to the control has no effect: every real effect is at distance 1, the mid-rank 0.5."""
    genes = [f"G{g}" for g in range(10)]
    rng = np.random.default_rng(0)
    real = pd.DataFrame(rng.random((5, 10)), index=[CONTROL, "A", "B", "C", "D"], columns=genes)
    pred = pd.DataFrame(np.tile(real.loc[CONTROL].to_numpy(), (5, 1)), index=real.index, columns=genes)
    assert (vcc2026.pds_cosine(pred, real, CONTROL) == 0.5).all()


def test_control_emitting_prediction_reads_about_one_in_expression_error(both_sides):
    ref, mine = both_sides["control-only"]
    assert mine["expr_mse_unbiased_capped_norm"] == pytest.approx(1.0, abs=0.1)


def test_empty_union_is_one_in_jaccard_and_zero_fold_change_is_one_in_nmae():
    genes = [f"G{g}" for g in range(20)]
    real_lfc = np.linspace(-2, 2, 20)
    real = _table(["A"], genes, real_lfc, 0.001)
    silent = _table(["A"], genes, 0.0, 1.0)  # nothing called, no fold change
    values = vcc2026.de_metrics(silent, real).loc["A"]
    assert values["de_wilcoxon_lfc_nmae"] == 1.0
    assert values["de_wilcoxon_direction_fidelity_yield_raw"] == 0.0
    assert values["de_wilcoxon_direction_reach_raw"] == 0.0
    nothing = vcc2026.de_metrics(silent, _table(["A"], genes, real_lfc, 1.0)).loc["A"]
    assert nothing["de_wilcoxon_sig_jaccard"] == 1.0  # neither side calls a gene
    assert np.isnan(nothing["de_wilcoxon_lfc_nmae"])  # fewer than 10 real calls: undefined
    assert np.isnan(nothing["de_wilcoxon_direction_fidelity_yield_raw"])
    right = vcc2026.de_metrics(real, real).loc["A"]
    assert right["de_wilcoxon_lfc_nmae"] == 0.0 and right["de_wilcoxon_sig_jaccard"] == 1.0
    assert right["de_wilcoxon_direction_reach_raw"] == 1.0


def test_own_gene_is_left_out_of_the_de_metrics():
    """A row for the target's own gene must not count: here it is the only disagreement."""
    genes = ["A"] + [f"G{g}" for g in range(12)]
    real = _table(["A"], genes, 1.0, 0.001)
    pred = real.copy()
    pred.loc[pred["feature"] == "A", ["log2_fold_change", "p_adj"]] = [-5.0, 0.9]
    values = vcc2026.de_metrics(pred, real).loc["A"]
    assert values["de_wilcoxon_sig_jaccard"] == 1.0 and values["de_wilcoxon_lfc_nmae"] == 0.0


def test_de_metrics_on_tables_with_different_genes_match_cell_eval2():
    """Each half's own control filters its own genes: real calls the prediction does not report still count."""
    import polars as pl
    from cell_eval2.catalog import CATALOG
    from scipy import stats

    rng = np.random.default_rng(0)
    targets, genes = ["A", "B", "C"], ["A", "B"] + [f"G{i}" for i in range(30)]

    def table(drop):
        rows = [(t, g) for t in targets for g in genes if (t, g) not in drop]
        p_value = rng.random(len(rows)) ** 4
        out = pd.DataFrame(
            {
                "target": [t for t, _ in rows],
                "feature": [g for _, g in rows],
                "log2_fold_change": rng.normal(0, 1, len(rows)),
                "p_value": p_value,
            }
        )
        out["p_adj"] = out.groupby("target")["p_value"].transform(lambda p: stats.false_discovery_control(p))
        return out

    real = table(set())
    pred = table({("A", "G1"), ("A", "G2"), ("B", "G3")} | {("C", f"G{i}") for i in range(5)})
    mine = vcc2026.de_metrics(pred, real)
    for metric in vcc2026.PANEL[2:]:
        ref = CATALOG[metric].func(de_pred=pl.from_pandas(pred), de_real=pl.from_pandas(real))
        expected = pd.Series(ref, dtype=np.float64).reindex(mine.index)
        np.testing.assert_allclose(mine[metric].to_numpy(), expected.to_numpy(), rtol=0, atol=TOL, equal_nan=True)


def test_de_table_is_cell_eval2s_table():
    """Same genes, fold changes, p-values and BH on a half where float ties of log1p(CPM) decide p-values."""
    from cell_eval2.anchor import _inner_config
    from cell_eval2.run import _compute_de_side

    from vcell_lib.data import half_split

    preset = cell_eval2.EvalConfig.from_preset("vcc2026")
    config = _inner_config(replace(preset, pert_col="target_gene", de=replace(preset.de, backend="pdex")))
    _, real = make_pair(9, n_genes=600, n_perts=8, cells=30, n_controls=60)
    half, _ = half_split(real, vcc2026.split_seeds()[0])
    is_control = half.obs["target_gene"] == CONTROL
    mine = vcc2026.de_table(half[~is_control], half[is_control])
    theirs = _compute_de_side(half, cfg=config, fp=None, store=None, side="pred").to_pandas()
    both = mine.merge(theirs, on=["target", "feature"], how="outer", indicator=True)
    assert (both["_merge"] == "both").all()
    for column in ("log2_fold_change", "p_value", "p_adj"):
        np.testing.assert_allclose(both[f"{column}_x"], both[f"{column}_y"], rtol=0, atol=1e-12)
