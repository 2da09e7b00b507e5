"""Unit tests of vcell_lib.metrics (chapters 05-08), and agreement with the official cell-eval package."""

import logging
import warnings

import anndata as ad
import cell_eval  # not importorskip: without cell-eval the cross-checks must fail, not vanish
import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp
from scipy import stats

from vcell_lib.data import ensure_log1p, normalize_log1p
from vcell_lib.metrics import (
    VCC_METRICS,
    de_overlap,
    des_tie_at_cut,
    discrimination_score,
    evaluate,
    score,
    wilcoxon_de,
)

CONTROL = "non-targeting"


def make_side(
    rng, perts, cells, n_controls, n_genes, *, rate=2.0, dtype=np.float32, sparse=False, shift=0.0, spread=0, raw=False
):
    """log1p-normalized cells (raw counts if `raw`): each perturbation knocks down the gene of its name and raises
    another, and `spread` more genes."""
    labels = [CONTROL] * n_controls + [p for p in perts for _ in range(cells)]
    counts = rng.poisson(rate, (len(labels), n_genes)).astype(float)
    for i, p in enumerate(perts):
        rows = np.array(labels) == p
        counts[rows, i] = rng.poisson(rate * 0.1, rows.sum())
        counts[rows, (i + 7) % n_genes] += rng.poisson(2 * rate, rows.sum())
        if spread:
            raised = (len(perts) + 5 * i + np.arange(spread)) % n_genes
            counts[np.ix_(rows, raised)] += rng.poisson(rate, (rows.sum(), spread))
    counts += shift * rng.poisson(1.0, counts.shape)
    X = counts.astype(dtype) if raw else np.log1p(counts / counts.sum(1, keepdims=True).clip(1) * 50).astype(dtype)
    genes = list(perts) + [f"G{g}" for g in range(len(perts), n_genes)]
    obs = pd.DataFrame({"target_gene": labels}, index=[f"cell{i}" for i in range(len(labels))])
    return ad.AnnData(X=sp.csr_matrix(X) if sparse else X, obs=obs, var=pd.DataFrame(index=genes))


def make_pair(seed=0, n_perts=8, cells=30, n_controls=60, n_genes=50, pred_cells=None, **kwargs):
    rng = np.random.default_rng(seed)
    perts = [f"P{i}" for i in range(n_perts)]
    real = make_side(rng, perts, cells, n_controls, n_genes, **kwargs)
    pred = make_side(rng, perts, pred_cells or cells, n_controls, n_genes, shift=1.0, **kwargs)
    return pred, real


# ----------------------------------------------------------------------------- the Wilcoxon test


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wilcoxon_matches_scipy_mannwhitneyu_with_ties(dtype):
    rng = np.random.default_rng(1)
    n_genes = 40
    labels = [CONTROL] * 70 + ["A"] * 25 + ["B"] * 3
    values = rng.poisson(0.7, (len(labels), n_genes)).astype(dtype)  # many ties, many zeros
    values[:, 5] = 0  # a gene that is 0 everywhere: all tied
    values[:, 6] = rng.random(len(labels))  # no ties at all
    adata = ad.AnnData(X=values, obs=pd.DataFrame({"target_gene": labels}, index=[f"c{i}" for i in range(98)]))
    de = wilcoxon_de(adata).set_index(["target", "gene"])
    control = values[np.array(labels) == CONTROL]
    for target in ("A", "B"):
        group = values[np.array(labels) == target]
        # In float64, as pdex computes (scipy would otherwise work in float32 for float32 input).
        expected = stats.mannwhitneyu(
            group.astype(np.float64), control.astype(np.float64), method="asymptotic", use_continuity=True, axis=0
        ).pvalue
        expected = np.where(np.isnan(expected), 1.0, expected)  # scipy gives NaN when all values are tied
        np.testing.assert_allclose(de.loc[target, "p_value"].to_numpy(), expected, rtol=1e-12, atol=1e-15)
    assert de.loc[("A", adata.var_names[5]), "p_value"] == 1.0


def test_fdr_scopes_and_fold_changes():
    adata = make_side(np.random.default_rng(2), ["P0", "P1", "P2"], 20, 40, 30)
    local = wilcoxon_de(adata)
    for _, rows in local.groupby("target"):
        np.testing.assert_allclose(rows["fdr"], stats.false_discovery_control(rows["p_value"]))
    pooled = wilcoxon_de(adata, fdr_scope="global")
    np.testing.assert_array_equal(pooled["p_value"], local["p_value"])
    np.testing.assert_allclose(pooled["fdr"], stats.false_discovery_control(local["p_value"]))
    with pytest.raises(ValueError, match="fdr_scope"):
        wilcoxon_de(adata, fdr_scope="per_gene")
    with pytest.raises(ValueError, match="no column 'guide'"):
        wilcoxon_de(adata, pert_col="guide")
    counts = adata.copy()
    counts.X = np.random.default_rng(0).poisson(5.0, counts.shape).astype(np.float32)
    with pytest.warns(UserWarning, match="raw counts"):  # normalized first: no overflow in the fold change
        assert np.isfinite(wilcoxon_de(counts)["p_value"]).all()

    X = np.array([[0, 0.5, 0], [0, 0.5, 0], [0, 0, 0.5], [0, 0, 0.5]], dtype=np.float32)  # controls first
    tiny = ad.AnnData(X=X, obs=pd.DataFrame({"target_gene": [CONTROL, CONTROL, "T", "T"]}, index=list("abcd")))
    lfc = wilcoxon_de(tiny).set_index("gene")["log2_fold_change"]
    assert lfc.iloc[0] == 0 and lfc.iloc[1] == -np.inf and lfc.iloc[2] == np.inf  # 0/0, pert 0, control 0


# ----------------------------------------------------------------------------- discrimination and overlap


def test_discrimination_by_hand():
    genes = ["A", "B", "X", "Y"]
    real = pd.DataFrame([[-2, 0, 1, 0], [0, -2, 0, 1], [0, 0, -1, -1]], index=["A", "B", "C"], columns=genes)
    assert (discrimination_score(real, real) == 1).all()  # a perfect prediction ranks first everywhere
    swapped = real.loc[["B", "A", "C"]].set_axis(["A", "B", "C"])
    # Prediction for A is B's effect: without gene A's column, it is closest to B (rank 1 of N = 3).
    scores = discrimination_score(swapped, real)
    assert scores["A"] == pytest.approx(1 - 1 / 3) and scores["C"] == 1
    # Only the target gene differs: excluded, the prediction cannot be told from the others.
    knock_only = pd.DataFrame(np.diag([-1.0, -1.0, 0.0, 0.0])[:3], index=["A", "B", "C"], columns=genes)
    zero = pd.DataFrame(np.zeros((3, 4)), index=["A", "B", "C"], columns=genes)
    assert discrimination_score(knock_only, zero).min() < 1
    with pytest.raises(ValueError, match="metric"):
        discrimination_score(real, real, metric="l3")


@pytest.mark.parametrize("metric", ["l1", "l2", "cosine"])
def test_discrimination_distances_are_sklearns(metric):
    """cell-eval ranks with sklearn's pairwise_distances, including all-zero predictions (cosine: distance 1)."""
    from sklearn.metrics import pairwise_distances

    rng = np.random.default_rng(6)
    perts = [f"P{i}" for i in range(12)]
    real = pd.DataFrame(rng.normal(size=(12, 30)), index=perts, columns=perts + [f"G{i}" for i in range(18)])
    pred = real + rng.normal(scale=1.5, size=real.shape)
    pred.iloc[3] = 0.0  # an all-zero predicted effect
    ours = discrimination_score(pred, real, metric)
    kind = {"l1": "manhattan", "l2": "euclidean", "cosine": "cosine"}[metric]
    for i, p in enumerate(perts):
        keep = real.columns != p
        d = pairwise_distances(real.loc[:, keep].to_numpy(), pred.loc[[p], keep].to_numpy(), metric=kind).ravel()
        rank = int(np.flatnonzero(np.argsort(d) == i)[0])
        assert ours[p] == pytest.approx(1 - rank / 12), p


def test_overlap_by_hand():
    def table(target, genes, fdrs, lfcs):
        return pd.DataFrame({"target": target, "gene": genes, "fdr": fdrs, "log2_fold_change": lfcs})

    genes = ["g1", "g2", "g3", "g4"]
    real = pd.concat([table("A", genes, [0.01, 0.01, 0.01, 0.5], [3, -2, 1, 5]), table("B", genes, [0.5] * 4, [1] * 4)])
    pred = pd.concat(
        [table("A", genes, [0.01, 0.5, 0.01, 0.01], [4, 9, 0.5, -6]), table("B", genes, [0.01] * 4, [1] * 4)]
    )
    overlap = de_overlap(pred, real)
    # real sig A = {g1, g2, g3} (k = 3); pred sig ranked by |lfc|: g4, g1, g3 -> top 3 = {g4, g1, g3}: 2 of 3.
    assert overlap["A"] == pytest.approx(2 / 3)
    assert overlap["B"] == 0  # no real significant genes: 0, and it counts
    assert de_overlap(pred, real, k=1)["A"] == 0  # real top-1 g1 vs pred top-1 g4


def de_table(target, lfcs, fdrs=None, genes=None):
    """A DE table of one perturbation, as wilcoxon_de lays it out (rows in gene order)."""
    genes = genes or [f"g{i}" for i in range(len(lfcs))]
    fdrs = [0.01] * len(lfcs) if fdrs is None else fdrs
    return pd.DataFrame({"target": target, "gene": genes, "fdr": fdrs, "log2_fold_change": lfcs})


def real_with(n_sig, n_genes=8, target="A"):
    """A real DE table whose first `n_sig` genes are significant, with distinct fold changes."""
    lfcs = list(np.arange(n_genes, 0, -1.0))
    return de_table(target, lfcs, [0.01] * n_sig + [0.5] * (n_genes - n_sig))


def test_des_tie_at_cut_rule():
    # Predicted significant genes by |lfc|: inf, inf, inf (three exact zeros), 2, 1, 0.5; g6, g7 not significant.
    pred = de_table("A", [-np.inf, 2.0, np.inf, -np.inf, 1.0, 0.5, 9.0, 9.0], [0.01] * 6 + [0.5, 0.5])
    for n_real, tie in [(0, False), (1, True), (2, True), (3, False), (4, False), (5, False), (6, False), (7, False)]:
        assert des_tie_at_cut(pred, real_with(n_real))["A"] == tie, n_real  # k = |real_sig| = n_real
    # overlap_at_k cuts at min(k, |real_sig|): 5 real significant genes, k = 2 cuts inside the block of infinities
    assert des_tie_at_cut(pred, real_with(5), k=2)["A"]
    assert not des_tie_at_cut(pred, real_with(5), k=3)["A"]
    assert not des_tie_at_cut(pred, real_with(3), k=500)["A"]  # min(500, 3) = 3: just after the block
    assert des_tie_at_cut(pred, real_with(2), k=50)["A"]  # min(50, 2) = 2: inside the block
    # Equality in float32: 1 + 1e-9 is 1 in float32 (tie), 1 + 1e-6 is not.
    assert des_tie_at_cut(de_table("A", [3.0, 1.0, 1 + 1e-9]), real_with(2))["A"]
    assert not des_tie_at_cut(de_table("A", [3.0, 1.0, 1 + 1e-6]), real_with(2))["A"]
    # Fewer than k + 1 predicted significant genes: nothing is cut off, no tie at the cut.
    assert not des_tie_at_cut(de_table("A", [np.inf, np.inf]), real_with(2))["A"]
    assert not des_tie_at_cut(de_table("A", [np.inf, np.inf, np.inf], [0.01, 0.01, 0.5]), real_with(2))["A"]
    # With k given the real list is cut too: a tie across its cut makes the value order-dependent as well.
    real_tied = de_table("A", [5.0, np.inf, -np.inf, 1.0])
    assert des_tie_at_cut(de_table("A", [4.0, 3.0, 2.0, 1.0]), real_tied, k=1)["A"]
    assert not des_tie_at_cut(de_table("A", [4.0, 3.0, 2.0, 1.0]), real_tied)["A"]  # k = 4: the whole real list


def test_tied_genes_are_ranked_in_gene_order_and_only_the_flag_tells():
    # Three genes with lfc -inf (exact zeros); the one real significant gene is the third of them.
    pred = de_table("A", [-np.inf, -np.inf, -np.inf, 1.0])
    real = de_table("A", [0.1, 0.1, -3.0, 0.2], [0.5, 0.5, 0.01, 0.5])
    assert de_overlap(pred, real)["A"] == 0  # gene order: g0 first, top-1 = {g0}
    assert de_overlap(pred.iloc[::-1], real)["A"] == 1  # the same genes in another row order: top-1 = {g2}
    assert des_tie_at_cut(pred, real)["A"] and des_tie_at_cut(pred.iloc[::-1], real)["A"]


def relu_prediction(pred, seed=7):
    """A noisy prediction through a ReLU: the i-th perturbation predicts i + 1 genes as fully off (exact zeros).

    For even i its own target (a real DE gene) is one of them. The noise makes exact zeros in single cells too.
    """
    rng = np.random.default_rng(seed)
    X = np.asarray(pred.X.toarray() if sp.issparse(pred.X) else pred.X, dtype=np.float32)
    X = X + rng.normal(0.0, 0.15, X.shape).astype(np.float32)
    labels = pred.obs["target_gene"].to_numpy()
    perts = sorted(set(labels) - {CONTROL})
    for i, p in enumerate(perts):
        off = np.arange(20, 21 + i) % pred.n_vars
        if i % 2 == 0 and p in pred.var_names:
            off = np.r_[pred.var_names.get_loc(p), off[:-1]]
        X[np.ix_(labels == p, off)] = -1.0
    out = pred.copy()
    out.X = np.maximum(X, 0.0)
    return out


def test_evaluate_flags_ties_and_warns_once():
    pred, real = make_pair(n_perts=12, n_genes=60)
    relu = relu_prediction(pred)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = evaluate(relu, real)
    ties = [w for w in caught if "des_tie_at_cut" in str(w.message)]
    assert len(ties) == 1 and issubclass(ties[0].category, UserWarning)
    flagged = table["des_tie_at_cut"]
    assert table["des_tie_at_cut"].dtype == bool and 0 < flagged.sum() < len(flagged)  # both kinds occur
    assert f"{flagged.sum()} of {len(flagged)} perturbations" in str(ties[0].message)
    de_pred, de_real = wilcoxon_de(relu), wilcoxon_de(real)
    pd.testing.assert_series_equal(flagged, des_tie_at_cut(de_pred, de_real), check_names=False)
    # The flag is exactly the rule: the k-th and (k+1)-th predicted significant |lfc|, k = |real_sig|, are equal.
    for target, rows in de_pred.groupby("target"):
        strength = np.sort(np.abs(rows.loc[rows["fdr"] < 0.05, "log2_fold_change"].to_numpy(np.float32)))[::-1]
        k = table.loc[target, "n_sig_real"]
        assert flagged[target] == (0 < k < len(strength) and strength[k - 1] == strength[k]), target
    # Reordering the rows of the DE table reorders tied genes: unflagged perturbations cannot move, and some
    # flagged one does.
    moved = set()
    for seed in range(10):
        shuffled_rows = de_pred.sample(frac=1.0, random_state=seed)
        for k in (None, 50):
            other = de_overlap(shuffled_rows, de_real, k)
            expected = table["overlap_at_N" if k is None else f"overlap_at_{k}"]
            changed = other.index[~np.isclose(other, expected.loc[other.index])]
            assert set(changed) <= set(des_tie_at_cut(de_pred, de_real, k)[lambda f: f].index)
            moved |= set(changed)
    assert moved
    # Without exact zeros there is nothing to flag, and no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not evaluate(pred, real)["des_tie_at_cut"].any()


# ----------------------------------------------------------------------------- input checks


def test_evaluate_rejects_bad_pairs():
    pred, real = make_pair()
    with pytest.raises(ValueError, match=r"different order: use pred\[:, real.var_names\]"):
        evaluate(pred[:, pred.var_names[::-1]].copy(), real)
    with pytest.raises(ValueError, match="genes differ: 1 real genes missing"):
        evaluate(pred[:, 1:].copy(), real)
    with pytest.raises(ValueError, match=r"perturbations differ: missing from pred \['P3'\]"):
        evaluate(pred[pred.obs["target_gene"] != "P3"].copy(), real)
    with pytest.raises(ValueError, match="pred has no control cells"):
        evaluate(pred[pred.obs["target_gene"] != CONTROL].copy(), real)
    with pytest.raises(ValueError, match="has no column 'gene'"):
        evaluate(pred, real, pert_col="gene")
    bad = pred.copy()
    bad.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(bad, real)
    bad.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        evaluate(bad, real)
    bad.X[0, 0] = 20.5
    with pytest.raises(ValueError, match="not log1p-normalized"):
        evaluate(bad, real)


def test_count_input_is_normalized_like_cell_eval_and_inputs_untouched():
    rng = np.random.default_rng(3)
    pred, real = make_pair()
    counts = real.copy()
    counts.X = rng.poisson(3.0, counts.shape).astype(np.float32)
    before = counts.X.copy()
    with pytest.warns(UserWarning, match="raw counts"):
        table = evaluate(counts, real)
    np.testing.assert_array_equal(counts.X, before)
    expected = evaluate(normalize_log1p(counts), real)
    pd.testing.assert_frame_equal(table, expected)


# ----------------------------------------------------------------------------- agreement with cell-eval


def one_cell_perturbation(pred, real):
    """P5 keeps a single cell on both sides."""

    def keep_one(side):
        extra = np.flatnonzero(side.obs["target_gene"].to_numpy() == "P5")[1:]
        return side[np.setdiff1d(np.arange(side.n_obs), extra)].copy()

    return keep_one(pred), keep_one(real)


def unmeasured_target(pred, real):
    """P3 becomes a perturbation whose target is not among the genes: discrimination drops no column for it."""
    out = []
    for side in (pred, real):
        side = side.copy()
        side.obs["target_gene"] = side.obs["target_gene"].replace({"P3": "UNMEASURED"})
        out.append(side)
    return tuple(out)


def all_zero_genes(pred, real):
    """G20 is 0 in every cell of both sides (lfc 0/0); G21 in every predicted cell (0/0 on that side only)."""
    pred, real = pred.copy(), real.copy()
    for side, genes in ((pred, ["G20", "G21"]), (real, ["G20"])):
        side.X[:, [side.var_names.get_loc(g) for g in genes]] = 0.0
    return pred, real


# Each case: make_pair's arguments, and how to turn its (pred, real) into the case.
CASES = {
    "random": ({}, None),
    "float64": ({"dtype": np.float64}, None),
    "sparse, many ties": ({"sparse": True, "rate": 0.4}, None),
    "few cells per perturbation": ({"cells": 3, "n_controls": 40}, None),
    "more predicted cells than real": ({"pred_cells": 70}, None),
    "perfect": ({}, lambda pred, real: (real.copy(), real)),
    "shuffled": ({}, lambda pred, real: (shuffled(pred), real)),
    "one-cell perturbation": ({}, one_cell_perturbation),
    "target gene not measured": ({}, unmeasured_target),
    "raw counts on both sides": ({"raw": True}, None),
    "all-zero genes": ({}, all_zero_genes),
    "many DE genes (overlap_at_50 cuts)": ({"n_genes": 300, "spread": 80}, None),
    "ReLU zeros (ties at the cut)": ({"n_perts": 12, "n_genes": 60}, lambda pred, real: (relu_prediction(pred), real)),
}

# evaluate's columns, cell-eval's names for them in its "full" profile, and the largest difference allowed.
# cell-eval takes pseudobulks in float32 (polars means of float32 columns), hence 1e-6 for the expression metrics.
SHARED = {
    "mae": ("mae", 1e-6),
    "mse": ("mse", 1e-6),
    "mae_delta": ("mae_delta", 1e-6),
    "pearson_delta": ("pearson_delta", 1e-6),
    "discrimination_score_l1": ("discrimination_score_l1", 0),
    "discrimination_score_l2": ("discrimination_score_l2", 0),
    "discrimination_score_cosine": ("discrimination_score_cosine", 0),
    "overlap_at_N": ("overlap_at_N", 1e-12),
    "overlap_at_50": ("overlap_at_50", 1e-12),
    "overlap_at_100": ("overlap_at_100", 1e-12),
    "overlap_at_200": ("overlap_at_200", 1e-12),
    "overlap_at_500": ("overlap_at_500", 1e-12),
    "de_direction_match": ("de_direction_match", 1e-12),
    "n_sig_real": ("de_nsig_counts_real", 0),
    "n_sig_pred": ("de_nsig_counts_pred", 0),
}
OVERLAP_K = {
    "overlap_at_N": None,
    "overlap_at_50": 50,
    "overlap_at_100": 100,
    "overlap_at_200": 200,
    "overlap_at_500": 500,
}
# In cell-eval's full profile but not in evaluate. precision_at_k cuts both lists at min(k, |pred_sig|): where
# it cuts the real list it meets the same ties. mse_delta: evaluate has mae_delta only.
ONLY_IN_CELL_EVAL = {
    *(f"precision_at_{k}" for k in ("N", 50, 100, 200, 500)),
    "mse_delta",
    "de_spearman_sig",
    "de_spearman_lfc_sig",
    "de_sig_genes_recall",
    "pr_auc",
    "roc_auc",
}
# Also in the full profile, one number for all perturbations and slow (Leiden clustering): not computed here.
SKIPPED = ["clustering_agreement", "pearson_edistance"]
ONLY_IN_EVALUATE = {"des_tie_at_cut"}


@pytest.fixture(scope="module", autouse=True)
def quiet_cell_eval():
    for name in ("cell_eval", "pdex"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_cell_eval(pred, real, tmp_path, profile="vcc"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = cell_eval.MetricsEvaluator(
            adata_pred=pred.copy(),
            adata_real=real.copy(),
            pert_col="target_gene",
            control_pert=CONTROL,
            num_threads=1,
            outdir=str(tmp_path),
        )
        results, agg = evaluator.compute(profile=profile, write_csv=False, skip_metrics=SKIPPED)
    return results.to_pandas().set_index("perturbation"), agg


def shuffled(pred, seed=4):
    labels = pred.obs["target_gene"].to_numpy().copy()
    perturbed = labels != CONTROL
    labels[perturbed] = np.random.default_rng(seed).permutation(labels[perturbed])
    out = pred.copy()
    out.obs["target_gene"] = labels
    return out


def make_case(case):
    kwargs, transform = CASES[case]
    pred, real = make_pair(**kwargs)
    return transform(pred, real) if transform else (pred, real)


def ranked(de, target):
    """The significant genes of one target by float32 |lfc|, largest first, ties in row order."""
    rows = de[(de["target"] == target) & (de["fdr"].to_numpy(np.float32) < np.float32(0.05))]
    strength = np.abs(rows["log2_fold_change"].to_numpy(np.float32))
    order = np.argsort(-strength, kind="stable")
    return pd.Series(strength[order], index=rows["gene"].to_numpy()[order])


def overlap_bounds(de_pred, de_real, target, k):
    """The smallest and largest overlap over every order of the predicted genes tied at the cut."""
    real, pred = ranked(de_real, target), ranked(de_pred, target)
    top = len(real) if k is None else min(k, len(real))
    assert top == len(real) or real.iloc[top - 1] != real.iloc[top], "a tie at the real cut: bounds not derived"
    real_top = set(real.index[:top])
    above, block = set(pred.index[pred > pred.iloc[top - 1]]), set(pred.index[pred == pred.iloc[top - 1]])
    need, found, in_block = top - len(above), len(real_top & above), len(real_top & block)
    return (found + max(0, need - (len(block) - in_block))) / top, (found + min(need, in_block)) / top


def compare_with_cell_eval(case, tmp_path):
    """evaluate and cell-eval's full profile on one case: per shared column, the largest |difference|.

    Asserts every shared column within its tolerance; a perturbation flagged by des_tie_at_cut is excused for the
    overlap columns only, and there its cell-eval value must still lie within the bounds that tied orders allow.
    """
    pred, real = make_case(case)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = evaluate(pred, real)
        de_pred, de_real = wilcoxon_de(ensure_log1p(pred, "pred")), wilcoxon_de(ensure_log1p(real, "real"))
    flagged = ours["des_tie_at_cut"]
    assert sum("des_tie_at_cut" in str(w.message) for w in caught) == int(flagged.any())
    theirs, _ = run_cell_eval(pred, real, tmp_path, profile="full")
    assert sorted(theirs.index) == list(ours.index)
    assert set(ours.columns) == set(SHARED) | ONLY_IN_EVALUATE
    # cell-eval leaves out a DE column that has no value for any perturbation (de_direction_match when no gene
    # is significant): read it as all NaN, which evaluate must then match.
    assert set(theirs.columns) <= {name for name, _ in SHARED.values()} | ONLY_IN_CELL_EVAL
    theirs = theirs.reindex(index=ours.index, columns=[name for name, _ in SHARED.values()])
    largest = {}
    for column, (name, tolerance) in SHARED.items():
        a, b = ours[column].to_numpy(dtype=float), theirs[name].to_numpy(dtype=float)
        excused = np.zeros(len(a), dtype=bool)
        if column in OVERLAP_K:
            excused = des_tie_at_cut(de_pred, de_real, OVERLAP_K[column]).loc[ours.index].to_numpy()
            for target in ours.index[excused]:
                low, high = overlap_bounds(de_pred, de_real, target, OVERLAP_K[column])
                assert low - 1e-12 <= theirs.loc[target, name] <= high + 1e-12, (column, target)
        np.testing.assert_allclose(a[~excused], b[~excused], rtol=0, atol=tolerance, equal_nan=True, err_msg=column)
        both_nan = np.isnan(a) & np.isnan(b)
        largest[column] = float(np.nanmax(np.abs(a - b)[~both_nan], initial=0.0))
    return largest, flagged


@pytest.mark.parametrize("case", list(CASES))
def test_evaluate_matches_cell_eval(case, tmp_path):
    _, flagged = compare_with_cell_eval(case, tmp_path)
    if case == "perfect":
        pred, real = make_case(case)
        ours = evaluate(pred, real)
        assert (ours["mae"] == 0).all() and (ours["discrimination_score_l1"] == 1).all()
    assert flagged.any() == (case == "ReLU zeros (ties at the cut)")  # the tie case keeps testing ties


def test_score_matches_cell_eval_avg_score(tmp_path):
    pred, real = make_pair(seed=5)
    counts = pl.DataFrame({"target_gene": [f"P{i}" for i in range(8)], "n_cells": [30] * 8})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        baseline = cell_eval.build_base_mean_adata(
            real.copy(), counts_df=counts, pert_col="target_gene", control_pert=CONTROL
        )
    baseline.obs["target_gene"] = baseline.obs["target_gene"].astype(str)
    _, agg_user = run_cell_eval(pred, real, tmp_path / "user")
    _, agg_base = run_cell_eval(baseline, real, tmp_path / "base")
    theirs = cell_eval.score_agg_metrics(agg_user, agg_base).to_pandas().set_index("metric")["from_baseline"]
    ours = score(evaluate(pred, real), evaluate(baseline, real))
    for name in (*VCC_METRICS, "avg_score"):
        assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name


def test_score_formula_and_clipping():
    user = pd.DataFrame({"mae": [0.1, 0.3], "discrimination_score_l1": [0.9, 0.7], "overlap_at_N": [0.2, 0.4]})
    base = pd.DataFrame({"mae": [0.4, 0.4], "discrimination_score_l1": [0.5, 0.5], "overlap_at_N": [0.5, 0.5]})
    result = score(user, base)
    assert result["mae"] == pytest.approx(1 - 0.2 / 0.4)
    assert result["discrimination_score_l1"] == pytest.approx((0.8 - 0.5) / 0.5)
    assert result["overlap_at_N"] == 0  # worse than the baseline: clipped at 0
    assert result["avg_score"] == pytest.approx((0.5 + 0.6 + 0) / 3)
    with pytest.raises(ValueError, match="missing"):
        score(user.drop(columns="mae"), base)
    # As in cell-eval: a NaN anywhere makes that metric's mean NaN, and its score 0.
    with_nan = user.assign(discrimination_score_l1=[0.9, np.nan])
    assert score(with_nan, base)["discrimination_score_l1"] == 0
