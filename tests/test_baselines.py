"""Unit tests of vcell_lib.baselines (chapter 08)."""

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from vcell_lib.baselines import (
    baseline_predictions,
    calibrated_transfer_baseline,
    cell_mean_baseline,
    control_mean_baseline,
    linear_baseline,
    perturbation_mean_baseline,
    prediction_from_profiles,
    with_controls,
)
from vcell_lib.data import pseudobulk

CONTROL = "non-targeting"


def cells_from_profiles(profiles: dict[str, np.ndarray], n: int, genes, rng=None, noise=0.0) -> ad.AnnData:
    """n cells per label around each profile (log1p scale)."""
    rows, labels = [], []
    for label, profile in profiles.items():
        jitter = np.zeros((n, len(profile))) if rng is None else rng.normal(0, noise, (n, len(profile)))
        rows.append(np.clip(profile + jitter, 0, None))
        labels += [label] * n
    obs = pd.DataFrame({"target_gene": labels}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(X=np.vstack(rows).astype(np.float32), obs=obs, var=pd.DataFrame(index=list(genes)))


def small_train(seed=0, n_genes=12):
    rng = np.random.default_rng(seed)
    genes = [f"P{i}" for i in range(4)] + [f"G{i}" for i in range(n_genes - 4)]
    base = rng.uniform(0.5, 2.0, n_genes)
    profiles = {CONTROL: base} | {f"P{i}": np.clip(base + rng.normal(0, 0.3, n_genes), 0, None) for i in range(4)}
    return cells_from_profiles(profiles, 20, genes, rng, noise=0.2)


def test_cell_mean_baseline_is_cell_evals():
    import cell_eval  # not importorskip: without cell-eval this cross-check must fail, not vanish
    import polars as pl

    logging.getLogger("cell_eval").setLevel(logging.ERROR)
    train = small_train()
    counts = {"P0": 5, "P1": 7, "P2": 3, "P3": 4}
    ours = cell_mean_baseline(train, counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = pl.DataFrame({"target_gene": list(counts), "n_cells": list(counts.values())})
        theirs = cell_eval.build_base_mean_adata(train.copy(), counts_df=table, pert_col="target_gene")
    assert ours.shape == theirs.shape == (19 + 20, 12)
    assert list(ours.obs["target_gene"]) == list(theirs.obs["target_gene"].astype(str))
    np.testing.assert_allclose(ours.X, np.asarray(theirs.X), atol=2e-6)


def test_control_mean_and_counts_table():
    train = small_train()
    table = pd.DataFrame({"target_gene": ["P0", "P1", CONTROL], "n_cells": [3, 2, 99]})
    pred = control_mean_baseline(train, table)
    assert (pred.obs["target_gene"] != CONTROL).sum() == 5  # the control row of the table is ignored
    control_profile = pseudobulk(train).X[list(pseudobulk(train).obs_names).index(CONTROL)]
    np.testing.assert_allclose(pred.X[:5], np.tile(control_profile, (5, 1)), rtol=1e-6)


def test_perturbation_mean_transfers_effects_to_new_controls():
    train = small_train()
    rng = np.random.default_rng(1)
    new_controls = cells_from_profiles({CONTROL: rng.uniform(0.5, 2.0, 12)}, 30, train.var_names)
    pred = perturbation_mean_baseline(train, {"P1": 4, "P9": 2}, controls=new_controls)
    bulk = pd.DataFrame(pseudobulk(train).X, index=pseudobulk(train).obs_names, columns=train.var_names)
    effect = bulk.loc["P1"] - bulk.loc[CONTROL]
    expected = np.clip(new_controls.X.mean(0) + effect.to_numpy(), 0, None)
    np.testing.assert_allclose(pred.X[0], expected, atol=1e-5)
    mean_effect = (bulk.drop(index=CONTROL) - bulk.loc[CONTROL]).mean()
    np.testing.assert_allclose(pred.X[4], np.clip(new_controls.X.mean(0) + mean_effect.to_numpy(), 0, None), atol=1e-5)
    assert (pred.obs["target_gene"] == CONTROL).sum() == 30


def test_linear_baseline_recovers_a_planted_linear_model():
    rng = np.random.default_rng(2)
    n_genes, k = 60, 3
    genes = [f"g{i}" for i in range(n_genes)]
    embedding = rng.normal(0, 0.3, (n_genes, k))
    embedding[:25] -= embedding[:25].mean(0)  # training genes' embeddings centred: the model class fits exactly
    weights = rng.normal(0, 2.0, (k, k))
    base = np.full(n_genes, 3.0)
    perts = genes[:30]
    effect = {p: embedding @ weights @ embedding[i] for i, p in enumerate(perts)}
    train = cells_from_profiles({CONTROL: base} | {p: base + effect[p] for p in perts[:25]}, 5, genes)
    held_out = perts[25:]
    pred = linear_baseline(train, {p: 2 for p in held_out}, n_components=k, ridge=1e-6)
    predicted = pred[pred.obs["target_gene"] != CONTROL].X[::2] - base
    truth = np.stack([effect[p] for p in held_out])
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(predicted, truth)]
    assert min(corr) > 0.99
    mean_only = truth.mean(0)  # what the mean-effect baseline would say for every held-out gene
    assert np.abs(predicted - truth).mean() < 0.1 * np.abs(mean_only - truth).mean()


def test_linear_baseline_on_perturbation_features_recovers_a_linear_map():
    """With features f_q, the model is ybar + Gamma W f_q: a planted linear map from features to effects is found."""
    rng = np.random.default_rng(3)
    n_genes, k, width = 50, 3, 4
    genes = [f"g{i}" for i in range(n_genes)]
    loadings = np.linalg.qr(rng.normal(size=(n_genes, k)))[0]  # the effects live in a k-dimensional space
    weights = rng.normal(0, 1.0, (k, width))
    perts = [f"X{i}" for i in range(30)]  # silenced genes that are not measured: only features describe them
    features = pd.DataFrame(rng.normal(size=(30, width)), index=perts)
    features.iloc[:24] -= features.iloc[:24].mean()  # centred training features: the model class fits exactly
    effect = {p: loadings @ weights @ features.loc[p].to_numpy() for p in perts}
    base = np.full(n_genes, 3.0)
    train = cells_from_profiles({CONTROL: base} | {p: base + effect[p] for p in perts[:24]}, 4, genes)
    held_out = perts[24:]
    pred = linear_baseline(train, {p: 1 for p in held_out}, n_components=k, ridge=1e-8, features=features)
    predicted = pred[pred.obs["target_gene"] != CONTROL].X - base
    truth = np.stack([effect[p] for p in held_out])
    np.testing.assert_allclose(predicted, truth, atol=1e-3)
    with pytest.raises(ValueError, match="whose gene is measured"):  # without features nothing describes them
        linear_baseline(train, {p: 1 for p in held_out}, n_components=k)
    # ridge=None: cross-validation keeps a small penalty where the features explain the effects...
    chosen = linear_baseline(train, {p: 1 for p in held_out}, n_components=k, ridge=None, features=features)
    np.testing.assert_allclose(chosen[chosen.obs["target_gene"] != CONTROL].X - base, truth, atol=0.05)
    # ...and takes the largest where they are noise: the prediction shrinks to the mean effect
    noise = pd.DataFrame(rng.normal(size=features.shape), index=perts)
    shrunk = linear_baseline(train, {p: 1 for p in held_out}, n_components=k, ridge=None, features=noise)
    mean_effect = np.mean([effect[p] for p in perts[:24]], axis=0)
    spread = np.abs(shrunk[shrunk.obs["target_gene"] != CONTROL].X - base - mean_effect).max()
    assert spread < 0.1 * np.abs(truth - mean_effect).max()
    with pytest.raises(ValueError, match="no row for 1 perturbations"):
        linear_baseline(train, {"X99": 1}, features=features)
    with pytest.raises(ValueError, match="at least two training perturbations"):
        linear_baseline(train, {"X25": 1}, features=features.loc[["X0", "X25"]])


def test_baseline_input_errors():
    train = small_train()
    with pytest.raises(ValueError, match="counts is empty"):
        cell_mean_baseline(train, {})
    with pytest.raises(ValueError, match="positive integers"):
        cell_mean_baseline(train, {"P0": 2.5})
    with pytest.raises(ValueError, match=r"unused categories with 0: use counts\[counts > 0\]"):
        cell_mean_baseline(train, {"P0": 2, "P1": 0})
    with pytest.raises(ValueError, match="columns 'target_gene' and 'n_cells'"):
        cell_mean_baseline(train, pd.DataFrame({"gene": ["P0"], "cells": [3]}))
    no_controls = train[train.obs["target_gene"] != CONTROL].copy()
    with pytest.raises(ValueError, match="train has no control cells"):
        cell_mean_baseline(no_controls, {"P0": 2})
    with pytest.raises(ValueError, match="same genes"):
        cell_mean_baseline(train, {"P0": 2}, controls=train[:, ::-1].copy())
    with pytest.raises(ValueError, match="n_components"):
        linear_baseline(train, {"P0": 2}, n_components=0)
    with pytest.raises(ValueError, match="ridge"):
        linear_baseline(train, {"P0": 2}, ridge=-1)


def two_cell_types(a_cells=20, b_cells=10):
    """Cell types A and B with different control profiles; noise-free cells so effects are exact.

    P0 and P1 are seen only in A with no effect (their cells look like A's controls), P2 only in B
    with effect `d`, and P3 in both, with effect `e_a` in A and `e_b` in B, with unequal cell numbers.
    """
    genes = [f"P{i}" for i in range(4)] + [f"G{i}" for i in range(6)]
    rng = np.random.default_rng(3)
    control_a, control_b = rng.uniform(1.0, 2.0, 10), rng.uniform(2.5, 3.5, 10)
    d, e_a, e_b = rng.normal(0, 0.3, 10), rng.normal(0, 0.3, 10), rng.normal(0, 0.3, 10)
    a = cells_from_profiles(
        {CONTROL: control_a, "P0": control_a, "P1": control_a, "P3": control_a + e_a}, a_cells, genes
    )
    b = cells_from_profiles({CONTROL: control_b, "P2": control_b + d, "P3": control_b + e_b}, b_cells, genes)
    a.obs["cell_type"], b.obs["cell_type"] = "A", "B"
    train = ad.concat([a, b], index_unique="-")
    target = cells_from_profiles({CONTROL: rng.uniform(2.8, 3.2, 10)}, 15, genes)  # cell type C's controls
    return train, target, {"d": d, "e_a": e_a, "e_b": e_b}


def test_effects_are_measured_within_each_cell_type():
    # Regression: effects used to be taken against the control profile pooled over A and B, so P0,
    # which changes nothing in A, got the A-versus-pooled control difference as a spurious effect.
    train, target, effect = two_cell_types()
    pred = perturbation_mean_baseline(train, {"P0": 2, "P2": 2, "P3": 2}, controls=target)
    rows = pd.DataFrame(pred.X, index=pred.obs["target_gene"].to_numpy(), columns=train.var_names)
    c = target.X.mean(0)
    np.testing.assert_allclose(rows.loc["P0"].iloc[0], c, atol=1e-5)  # no effect in A: none predicted
    np.testing.assert_allclose(rows.loc["P2"].iloc[0], c + effect["d"], atol=1e-5)
    # seen in both cell types: the mean of the two effects, each cell type counted once
    np.testing.assert_allclose(rows.loc["P3"].iloc[0], c + (effect["e_a"] + effect["e_b"]) / 2, atol=1e-5)


def test_linear_baseline_mean_effect_is_taken_within_cell_types():
    train, target, effect = two_cell_types()
    pred = linear_baseline(train, {"X9": 3}, controls=target)  # X9's gene is not measured: the mean effect
    mean_effect = (0 + 0 + effect["d"] + (effect["e_a"] + effect["e_b"]) / 2) / 4  # P0, P1, P2, P3
    np.testing.assert_allclose(pred.X[0], target.X.mean(0) + mean_effect, atol=1e-5)


def test_one_context_without_a_cell_type_column_is_pooled():
    train, target, _ = two_cell_types()
    only_a = train[train.obs["cell_type"] == "A"].copy()
    without_column = only_a.copy()
    del without_column.obs["cell_type"]
    for baseline in (perturbation_mean_baseline, linear_baseline):
        with_column = baseline(only_a, {"P3": 2, "X9": 1}, controls=target)
        np.testing.assert_array_equal(baseline(without_column, {"P3": 2, "X9": 1}, controls=target).X, with_column.X)
    # context_col=None pools every training cell into one context, as the baselines did before
    pooled = perturbation_mean_baseline(train, {"P0": 1}, controls=target, context_col=None)
    bulk = pd.DataFrame(pseudobulk(train).X, index=pseudobulk(train).obs_names, columns=train.var_names)
    np.testing.assert_allclose(pooled.X[0], target.X.mean(0) + bulk.loc["P0"] - bulk.loc[CONTROL], atol=1e-5)


def test_several_cell_types_need_the_targets_controls():
    train, _, _ = two_cell_types()
    with pytest.raises(ValueError, match="several cell types.*controls="):
        perturbation_mean_baseline(train, {"P0": 2})
    no_b_controls = train[~((train.obs["cell_type"] == "B") & (train.obs["target_gene"] == CONTROL))].copy()
    with pytest.raises(ValueError, match=r"no control cells in cell_type \['B'\]"):
        linear_baseline(no_b_controls, {"P0": 2}, controls=train)


def test_prediction_from_profiles_and_with_controls():
    train = small_train()
    profiles = pd.DataFrame(
        [[-0.5] + [1.0] * 11, [2.0] * 12, [9.0] * 12], index=["P0", "P1", CONTROL], columns=train.var_names
    )
    pred = prediction_from_profiles(profiles, {"P1": 2, "P0": 3}, train)
    labels = list(pred.obs["target_gene"])
    assert labels == ["P1"] * 2 + ["P0"] * 3 + [CONTROL] * 20  # the order of counts, then the control cells
    np.testing.assert_array_equal(pred.X[2], [0.0] + [1.0] * 11)  # log1p cannot be negative: clipped at 0
    np.testing.assert_array_equal(pred.X[5:], train[train.obs["target_gene"] == CONTROL].X)  # real controls
    same_number = prediction_from_profiles(profiles, 4, train)  # 4 cells for every row but the control
    assert same_number.obs["target_gene"].value_counts().to_dict() == {"P0": 4, "P1": 4, CONTROL: 20}
    with pytest.raises(ValueError, match=r"no row for perturbations \['P7'\]"):
        prediction_from_profiles(profiles, {"P7": 2}, train)

    cells = with_controls(train, pred)  # train's perturbed cells, pred's control cells
    assert (cells.obs["target_gene"] != CONTROL).sum() == 80 and (cells.obs["target_gene"] == CONTROL).sum() == 20
    np.testing.assert_array_equal(cells.X[:80], train[train.obs["target_gene"] != CONTROL].X)
    with pytest.raises(ValueError, match="same genes"):
        with_controls(train, train[:, ::-1].copy())
    with pytest.raises(ValueError, match="controls has no control cells"):
        with_controls(train, train[train.obs["target_gene"] != CONTROL].copy())


def test_baseline_predictions_cover_every_cell_type_of_the_test_cells():
    from vcell_lib.data import normalize_log1p
    from vcell_lib.simulate import SimulationParams, simulate_perturbseq

    params = SimulationParams(n_genes=100, n_perturbations=6, cells_per_perturbation=10, n_control_cells=20)
    norm = normalize_log1p(simulate_perturbseq(params, seed=0))
    test_perts = sorted(set(norm.obs["target_gene"]) - {CONTROL})[:2]
    is_test = norm.obs["target_gene"].isin(test_perts).to_numpy()
    is_control = (norm.obs["target_gene"] == CONTROL).to_numpy()
    train, real = norm[~is_test].copy(), norm[is_test | is_control].copy()
    predictions = baseline_predictions(train, real)
    assert list(predictions) == ["control mean", "cell mean", "perturbation mean", "linear"]
    calibrated = baseline_predictions(train, real, calibrated=True)["calibrated transfer"]
    for context in ("context_A", "context_B"):  # the same as calibrated_transfer_baseline for that cell type
        real_c = real[real.obs["cell_type"] == context].copy()
        counts = real_c.obs["target_gene"].value_counts().drop(CONTROL).sort_index()
        alone = calibrated_transfer_baseline(train, counts, controls=real_c)
        np.testing.assert_allclose(calibrated[calibrated.obs["cell_type"] == context].X, alone.X, atol=1e-6)
    for name, pred in predictions.items():
        for context in ("context_A", "context_B"):
            part = pred[pred.obs["cell_type"] == context]
            real_c = real[real.obs["cell_type"] == context]
            assert (
                part.obs["target_gene"].value_counts().to_dict() == real_c.obs["target_gene"].value_counts().to_dict()
            )
            counts = real_c.obs["target_gene"].value_counts().drop(CONTROL)
            train_c = train[train.obs["cell_type"] == context].copy()
            alone = {"cell mean": cell_mean_baseline, "control mean": control_mean_baseline}.get(name)
            if alone is not None:  # the same as the baseline built for that cell type alone
                np.testing.assert_allclose(part.X, alone(train_c, counts.sort_index(), controls=real_c).X, atol=1e-6)
    with pytest.raises(ValueError, match="obs columns \\['cell_type'\\]"):
        baseline_predictions(train, real.copy().__class__(X=real.X, obs=real.obs[["target_gene"]], var=real.var))


def test_calibrated_transfer_rescales_effects_seen_elsewhere_gene_by_gene():
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(6)]
    base_a, base_c = rng.uniform(1.0, 2.0, 6), rng.uniform(1.0, 2.0, 6)
    scale = np.array([2.0, 0.5, 1.0, 1.5, 0.0, 1.0])  # C's response to A's effect, gene by gene
    effects = {f"P{i}": rng.normal(0, 0.3, 6) * (np.arange(6) != 5) for i in range(5)}  # G5: never moved
    a = cells_from_profiles({CONTROL: base_a} | {p: base_a + e for p, e in effects.items()}, 4, genes)
    shots = ["P0", "P1", "P2"]  # measured in C too
    c = cells_from_profiles({CONTROL: base_c} | {p: base_c + scale * effects[p] for p in shots}, 4, genes)
    a.obs["cell_type"], c.obs["cell_type"] = "A", "C"
    train = ad.concat([a, c], index_unique="-")
    target = c[c.obs["target_gene"] == CONTROL].copy()
    counts = {"P0": 2, "P3": 2, "X9": 2}
    pred = calibrated_transfer_baseline(train, counts, controls=target, shrinkage=0.0)
    assert np.isfinite(pred.X).all()  # G5 (no evidence, 0/0) keeps the factor 1
    rows = pd.DataFrame(pred.X, index=pred.obs["target_gene"].to_numpy(), columns=genes)
    np.testing.assert_allclose(rows.loc["P3"].iloc[0], base_c + scale * effects["P3"], atol=1e-5)  # rescaled
    np.testing.assert_allclose(rows.loc["P0"].iloc[0], base_c + scale * effects["P0"], atol=1e-5)  # its own effect
    plain = perturbation_mean_baseline(train, counts, controls=target)
    np.testing.assert_allclose(pred.X[rows.index == "X9"], plain.X[rows.index == "X9"], atol=1e-6)  # never seen
    shrunk = calibrated_transfer_baseline(train, counts, controls=target, shrinkage=1e6)  # factors -> 1
    plain_p3 = np.asarray(plain.X)[plain.obs["target_gene"].to_numpy() == "P3"]
    np.testing.assert_allclose(np.asarray(shrunk.X)[rows.index == "P3"], plain_p3, atol=1e-4)
    no_shots = train[(train.obs["cell_type"] == "A").to_numpy() | (train.obs["target_gene"] == CONTROL).to_numpy()]
    alone = calibrated_transfer_baseline(no_shots.copy(), {"P3": 2}, controls=target)
    np.testing.assert_allclose(alone.X[0], base_c + effects["P3"], atol=1e-5)  # no few-shot: the plain transfer
    with pytest.raises(ValueError, match="one cell type"):
        calibrated_transfer_baseline(train, counts, controls=train)
    with pytest.raises(ValueError, match="shrinkage"):
        calibrated_transfer_baseline(train, counts, controls=target, shrinkage=-1)
