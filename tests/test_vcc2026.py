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
