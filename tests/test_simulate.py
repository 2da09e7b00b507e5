"""Unit tests of vcell_lib.simulate (chapter 03): the simulator is reproducible and recovers its own truth."""

import hashlib

import anndata as ad
import numpy as np
import pytest
from scipy import stats

from vcell_lib.data import CONTROL, load_perturbation_data, normalize_log1p, pseudobulk
from vcell_lib.simulate import GENE_LATENT_DIM, SimulationParams, simulate_perturbseq, true_effects

TINY = {"n_genes": 60, "n_perturbations": 6, "cells_per_perturbation": 20, "n_control_cells": 40}


def estimated_effects(adata: ad.AnnData):
    """Pseudobulk log1p effect of every (context, perturbation), aligned with true_effects."""
    bulk = pseudobulk(normalize_log1p(adata), by=["cell_type", "target_gene"])
    table = {tuple(k): row for k, row in zip(bulk.obs[["cell_type", "target_gene"]].to_numpy(), bulk.X)}
    truth = true_effects(adata)
    estimate = np.stack([table[(c, p)] - table[(c, CONTROL)] for c, p in truth.index])
    return estimate, truth.to_numpy()


def test_same_seed_same_data_and_standard_form(tmp_path):
    a = simulate_perturbseq(seed=3, **TINY)
    b = simulate_perturbseq(SimulationParams(**TINY), seed=3)
    c = simulate_perturbseq(seed=4, **TINY)
    assert (a.X != b.X).nnz == 0 and (a.X != c.X).nnz > 0
    n_cells = 2 * (40 + 6 * 20)
    assert a.shape == (n_cells, 60) and a.X.dtype == np.float32
    assert set(a.obs["cell_type"]) == {"context_A", "context_B"}
    assert (a.obs["target_gene"] == CONTROL).sum() == 80
    assert a.uns["simulation"]["seed"] == 3 and a.uns["simulation"]["n_genes"] == 60
    load_perturbation_data(a)  # valid raw counts in the book's standard form
    a.write_h5ad(tmp_path / "sim.h5ad")  # the truth survives a round trip to disk
    back = ad.read_h5ad(tmp_path / "sim.h5ad")
    np.testing.assert_array_equal(true_effects(back).to_numpy(), true_effects(a).to_numpy())


def fingerprint(adata: ad.AnnData) -> str:
    """sha256 of the count matrix (CSR arrays in fixed dtypes): equal only for bit-identical counts."""
    digest = hashlib.sha256()
    for array in (adata.X.data, adata.X.indices, adata.X.indptr):
        digest.update(np.asarray(array, dtype=np.int64 if array.dtype.kind == "i" else np.float32).tobytes())
    return digest.hexdigest()


def test_defaults_reproduce_the_stored_fingerprint():
    # Computed with the simulator before the opt-in knobs (shared response, program shifts, gene
    # features) existed: with them off, the same seed must give bit-identical data and truth.
    adata = simulate_perturbseq(seed=11, **TINY)
    assert fingerprint(adata) == "2f6c6494a077f5fdc54a315519c726687f22b2b52192466f80880b077f549ec9"
    assert adata.X.sum() == 1866411 and adata.X.nnz == 18066
    assert list(adata.uns["truth"]["perturbations"]) == ["G00034", "G00035", "G00053", "G00019", "G00029", "G00031"]
    effect = adata.uns["truth"]["effect"]
    np.testing.assert_allclose([effect.sum(), np.abs(effect).sum()], [-26.873878196595896, 131.48748803499], rtol=1e-12)
    hidden = [adata.obs[name].sum() for name in ("knockdown", "size", "capture")] + [adata.obsm["programs"].sum()]
    expected = [180.71807264162078, 16057071.144096037, 33.21914043367884, -10.800102715729508]
    np.testing.assert_allclose(hidden, expected, rtol=1e-12)


def test_truth_has_the_knockdown_and_the_network():
    adata = simulate_perturbseq(seed=0, **TINY)
    truth = true_effects(adata)
    assert truth.shape == (2 * 6, 60)
    assert all(type(label) is str for pair in truth.index for label in pair)  # plain str, not numpy.str_
    perturbations = list(adata.uns["truth"]["perturbations"])
    self_effects = np.array([truth.loc[(c, p), p] for c, p in truth.index])
    assert (self_effects < -1).all()  # the silenced gene itself falls several-fold
    regulators = adata.var["is_regulator"]
    for p in perturbations:
        downstream = (truth.xs(p, level="target_gene").drop(columns=p).abs() > 1e-12).any(axis=None)
        assert downstream == bool(regulators[p]), p  # only regulators have downstream effects
    a, b = truth.xs("context_A", level="cell_type"), truth.xs("context_B", level="cell_type")
    assert not np.allclose(a.to_numpy(), b.to_numpy())  # the network differs between contexts


def test_cell_level_knockdown_and_escape():
    adata = simulate_perturbseq(seed=1, n_genes=50, n_perturbations=5, cells_per_perturbation=400, escape_fraction=0.2)
    obs = adata.obs
    control = obs["target_gene"] == CONTROL
    assert (obs.loc[control, "knockdown"] == 0).all() and not obs.loc[control, "escaped"].any()
    escaped = obs.loc[~control, "escaped"].mean()
    assert abs(escaped - 0.2) < 0.03
    working = obs.loc[~control & ~obs["escaped"], "knockdown"]
    assert abs(working.mean() - 0.85) < 0.02 and working.between(0, 1).all()


def test_simulator_recovers_its_truth_better_with_more_cells():
    correlations = {}
    for cells in (10, 200):
        estimate, truth = estimated_effects(simulate_perturbseq(seed=2, n_genes=300, cells_per_perturbation=cells))
        correlations[cells] = np.median([np.corrcoef(e, t)[0, 1] for e, t in zip(estimate, truth)])
    assert correlations[200] > 0.7
    assert correlations[200] > correlations[10] + 0.2


def test_noise_terms_can_be_switched_off():
    quiet = {"batch_sd": 0.0, "batch_depth_sd": 0.0, "n_programs": 0, "size_sd": 0.0, "context_sd": 0.0}
    adata = simulate_perturbseq(seed=5, n_genes=200, n_perturbations=2, n_control_cells=2000, **quiet)
    controls = normalize_log1p(adata[adata.obs["target_gene"] == CONTROL].copy())
    by_batch = pseudobulk(controls, by="batch").X
    assert np.abs(by_batch[0] - by_batch[1]).mean() < 0.03  # no batch effect beyond sampling noise
    loud = simulate_perturbseq(
        seed=5, n_genes=200, n_perturbations=2, n_control_cells=2000, **{**quiet, "batch_sd": 0.5}
    )
    controls = normalize_log1p(loud[loud.obs["target_gene"] == CONTROL].copy())
    by_batch = pseudobulk(controls, by="batch").X
    assert np.abs(by_batch[0] - by_batch[1]).mean() > 0.1
    assert adata.obsm["programs"].shape == (adata.n_obs, 0)


def test_more_capture_means_more_umis():
    low = simulate_perturbseq(seed=6, capture_mean=0.05, **TINY)
    high = simulate_perturbseq(seed=6, capture_mean=0.3, **TINY)
    ratio = high.X.sum() / low.X.sum()
    assert 4 < ratio < 8  # about 0.3 / 0.05 = 6


def mean_pairwise_correlation(effects: np.ndarray) -> float:
    """Mean Pearson r between the rows of `effects` (perturbations x genes), over distinct pairs."""
    r = np.corrcoef(effects)
    return float(r[np.triu_indices(len(r), 1)].mean())


def feature_effect_spearman(adata: ad.AnnData) -> float:
    """Spearman r, over pairs of silenced regulators, between their features' cosine and their effects' Pearson r.

    The effects skip the silenced genes' own columns: each perturbation's knockdown of its own target
    says nothing about how it resembles another.
    """
    truth = true_effects(adata).xs("context_A", level="cell_type")
    regulators = [p for p in truth.index if adata.var.loc[p, "is_regulator"]]
    effects = truth.loc[regulators].drop(columns=truth.index).to_numpy()
    features = adata.varm["gene_features"][adata.var_names.get_indexer(regulators)]
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    pairs = np.triu_indices(len(regulators), 1)
    return stats.spearmanr((unit @ unit.T)[pairs], np.corrcoef(effects)[pairs])[0]


def test_shared_response_joins_every_effect_and_leaves_the_rest():
    off = simulate_perturbseq(seed=7, **TINY)
    on = simulate_perturbseq(seed=7, shared_response=0.4, **TINY)
    truth = on.uns["truth"]
    shared = truth["shared_strength"][:, None] * truth["shared_direction"]  # perturbations x genes
    np.testing.assert_allclose(truth["effect"] - off.uns["truth"]["effect"], np.stack([shared, shared]), atol=1e-12)
    assert (truth["shared_direction"] != 0).mean() < 0.4  # a subset of genes
    assert truth["shared_strength"].std() > 0.2  # some perturbations show it more than others
    for column in ("knockdown", "escaped", "size", "capture", "batch"):  # the other terms' draws are unchanged
        assert (on.obs[column] == off.obs[column]).all(), column
    np.testing.assert_array_equal(on.obsm["programs"], off.obsm["programs"])
    assert "shared_direction" not in off.uns["truth"] and "gene_features" not in on.varm


def test_shared_response_makes_effects_correlate():
    base = {"n_genes": 300, "n_perturbations": 30, "n_contexts": 1, "cells_per_perturbation": 1, "n_control_cells": 1}
    correlation = {
        knob: mean_pairwise_correlation(
            true_effects(simulate_perturbseq(seed=1, shared_response=knob, **base)).to_numpy()
        )
        for knob in (0.0, 0.2, 0.5)
    }
    assert abs(correlation[0.0]) < 0.05  # private random paths: unrelated effects
    assert correlation[0.0] < correlation[0.2] - 0.05 < correlation[0.5] - 0.1
    assert correlation[0.5] > 0.2


def test_program_shift_moves_the_programs_of_perturbed_cells():
    settings = {
        "n_genes": 80,
        "n_perturbations": 4,
        "n_contexts": 1,
        "cells_per_perturbation": 2000,
        "n_control_cells": 500,
    }
    off = simulate_perturbseq(seed=2, **settings)
    on = simulate_perturbseq(seed=2, program_shift=0.5, **settings)
    truth = on.uns["truth"]
    shift = truth["program_shift"]  # perturbations x programs
    np.testing.assert_allclose(truth["effect"] - off.uns["truth"]["effect"], (shift @ truth["program_loadings"])[None])
    labels = on.obs["target_gene"].astype(str).to_numpy()
    moved = on.obsm["programs"] - off.obsm["programs"]
    assert (moved[labels == CONTROL] == 0).all() and (moved[on.obs["escaped"].to_numpy()] == 0).all()
    for p, target in enumerate(truth["perturbations"]):
        np.testing.assert_allclose(moved[labels == target].mean(0), shift[p], atol=0.05)  # mean shift: as stored


def test_stored_truth_matches_the_cells_with_every_knob_on():
    knobs = {"shared_response": 0.4, "program_shift": 0.5, "n_gene_features": 16}
    estimate, truth = estimated_effects(simulate_perturbseq(seed=2, n_genes=300, cells_per_perturbation=200, **knobs))
    assert np.median([np.corrcoef(e, t)[0, 1] for e, t in zip(estimate, truth)]) > 0.7


def test_gene_features_tell_about_effects_as_much_as_the_knob_says():
    base = {"n_genes": 500, "n_perturbations": 60, "n_contexts": 1, "cells_per_perturbation": 1, "n_control_cells": 1}
    informative = simulate_perturbseq(seed=0, n_gene_features=16, feature_informativeness=1.0, **base)
    uninformative = simulate_perturbseq(seed=0, n_gene_features=16, feature_informativeness=0.0, **base)
    assert informative.varm["gene_features"].shape == (500, 16)
    assert feature_effect_spearman(informative) > 0.3  # similar features, correlated effects
    assert abs(feature_effect_spearman(uninformative)) < 0.1
    # Fully informative features keep the angles between the genes' latents.
    latent, features = informative.uns["truth"]["gene_latent"], informative.varm["gene_features"]
    assert latent.shape == (500, GENE_LATENT_DIM)
    cosine = [x @ x.T / np.outer(np.linalg.norm(x, axis=1), np.linalg.norm(x, axis=1)) for x in (latent, features)]
    np.testing.assert_allclose(cosine[0], cosine[1], atol=1e-5)
    # The latent shapes the network: a regulator activates the genes aligned with it, represses the opposed.
    truth = informative.uns["truth"]
    index = informative.var_names.get_indexer
    alignment = np.sum(latent[index(truth["grn_source"])] * latent[index(truth["grn_target"])], axis=1)
    assert (np.sign(alignment) == np.sign(truth["grn_weight"])).all()


def test_features_and_knob_truth_survive_a_round_trip(tmp_path):
    adata = simulate_perturbseq(seed=3, shared_response=0.3, program_shift=0.3, n_gene_features=4, **TINY)
    adata.write_h5ad(tmp_path / "sim.h5ad")
    back = ad.read_h5ad(tmp_path / "sim.h5ad")
    np.testing.assert_array_equal(back.varm["gene_features"], adata.varm["gene_features"])
    for key in ("shared_direction", "shared_strength", "program_shift", "program_loadings", "gene_latent"):
        np.testing.assert_array_equal(back.uns["truth"][key], adata.uns["truth"][key])
    np.testing.assert_array_equal(true_effects(back).to_numpy(), true_effects(adata).to_numpy())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_genes": 0}, "n_genes"),
        ({"n_perturbations": 2.5}, "n_perturbations"),
        ({"n_perturbations": 100, "n_genes": 50}, "n_perturbations"),
        ({"escape_fraction": 1.5}, "escape_fraction"),
        ({"knockdown_mean": 1.0}, "knockdown_mean"),
        ({"capture_mean": 0.0}, "capture_mean"),
        ({"total_molecules": -5.0}, "total_molecules"),
        ({"batch_sd": float("nan")}, "batch_sd"),
        ({"n_control_cells": -1}, "n_control_cells"),
        ({"n_genes": 100.5}, "n_genes=100"),  # the fix is in the message
        ({"cells_per_perturbation": 2.5}, "cells_per_perturbation"),
        ({"n_genes": float("nan")}, "n_genes"),
        ({"n_genes": float("inf")}, "n_genes"),
        ({"n_programs": True}, "n_programs"),
        # 1 regulator among 100 genes, 24 of 30 perturbations asked to silence one: raise regulator_fraction
        ({"n_genes": 100, "regulator_fraction": 0.01}, "raise regulator_fraction to at least 0.24"),
        # every gene a regulator, 2 of 10 perturbations asked to silence a non-regulator
        ({"n_genes": 50, "n_perturbations": 10, "regulator_fraction": 1.0}, "lower regulator_fraction"),
        ({"shared_response": -0.1}, "shared_response"),
        ({"program_shift": 0.5, "n_programs": 0}, "set n_programs >= 1"),
        ({"n_gene_features": 2.5}, "n_gene_features"),
        ({"feature_informativeness": 1.2}, "feature_informativeness"),
    ],
)
def test_bad_parameters_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        simulate_perturbseq(**kwargs)
    with pytest.raises(TypeError):
        simulate_perturbseq(n_cells=3)  # not a parameter: Python's own error names it


def test_integral_floats_are_accepted_as_integers():
    params = SimulationParams(**{**TINY, "n_genes": 60.0, "cells_per_perturbation": np.float64(20)})
    assert type(params.n_genes) is int and type(params.cells_per_perturbation) is int
    as_floats = simulate_perturbseq(params, seed=11)
    assert fingerprint(as_floats) == fingerprint(simulate_perturbseq(seed=11, **TINY))


def test_true_effects_needs_simulated_data():
    with pytest.raises(ValueError, match="simulate_perturbseq"):
        true_effects(ad.AnnData(X=np.zeros((2, 2))))
