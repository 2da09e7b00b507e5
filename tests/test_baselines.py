"""Unit tests of vcell_lib.baselines (chapter 08)."""

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from vcell_lib.baselines import (
    cell_mean_baseline,
    control_mean_baseline,
    linear_baseline,
    perturbation_mean_baseline,
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
