"""Unit tests of vcell_lib.compare (chapter 12): both challenges' scores of several predictions in one table."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from vcell_lib import metrics, vcc2026
from vcell_lib.baselines import cell_mean_baseline, control_mean_baseline
from vcell_lib.compare import SCORE_COLUMNS, leaderboard
from vcell_lib.data import CELL_TYPE, CONTROL, PERT, half_split, normalize_log1p, select_perturbations
from vcell_lib.simulate import SimulationParams, simulate_perturbseq


@pytest.fixture(scope="module")
def two_contexts():
    params = SimulationParams(n_genes=200, n_perturbations=6, cells_per_perturbation=60, n_control_cells=120)
    norm = normalize_log1p(simulate_perturbseq(params, seed=0))
    real, resample = half_split(norm, seed=0)
    predictions = {"resample": resample}
    for name, build in (("cell mean", cell_mean_baseline), ("control mean", control_mean_baseline)):
        parts = []
        for context in ("context_A", "context_B"):
            real_c = real[real.obs[CELL_TYPE] == context]
            counts = real_c.obs[PERT].astype(str).value_counts().drop(CONTROL)
            part = build(resample[resample.obs[CELL_TYPE] == context].copy(), counts, controls=real_c.copy())
            part.obs[CELL_TYPE] = context
            parts.append(part)
        predictions[name] = ad.concat(parts, index_unique="-")
    return real, predictions


def test_leaderboard_equals_the_two_suites_context_by_context(two_contexts):
    real, predictions = two_contexts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = leaderboard(predictions, real)
    assert list(table.columns) == list(SCORE_COLUMNS) and list(table.index) == list(predictions)
    assert table.loc["cell mean", "score_2025"] == 0.0
    assert table.loc["resample", "score_2025"] > 0.3 > table.loc["control mean", "score_2025"]
    assert table.loc["resample", "score_2026"] > 0.5 > table.loc["control mean", "score_2026"]

    # context B by hand with the two suites' own functions
    def pick(adata):
        out = adata[adata.obs[CELL_TYPE] == "context_B"].copy()
        out.obs = out.obs[[PERT]].astype(str)
        return out

    real_b = pick(real)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tables = {n: metrics.evaluate(pick(p), real_b) for n, p in predictions.items()}
        b_score = metrics.score(tables["resample"], tables["cell mean"])["avg_score"]
        real_counts = real_b.copy()
        real_counts.X = real_counts.layers["counts"]
        depth = float(np.median(np.asarray(real_counts.X.sum(axis=1)).ravel()))
        counts = vcc2026.to_counts(pick(predictions["cell mean"]), depth, seed=0)
        panel = vcc2026.evaluate(counts, real_counts)
        b_2026 = vcc2026.score(panel, vcc2026.evaluate_baseline(real_counts), vcc2026.replicate(real_counts))["mean"]
        only_b = leaderboard(predictions, real[real.obs[CELL_TYPE] == "context_B"].copy())
    assert only_b.loc["resample", "score_2025"] == pytest.approx(b_score, abs=1e-12)
    assert only_b.loc["cell mean", "score_2026"] == pytest.approx(b_2026, abs=1e-12)
    anchors = pd.DataFrame(table.attrs["anchors_2026"]).T
    assert len(pd.concat([table, only_b])) == 2 * len(table)  # the attrs do not stop tables from concatenating
    assert set(anchors.index) == {(c, a) for c in ("context_A", "context_B") for a in ("baseline b", "replicate r")}
    replicate_b = vcc2026.replicate(real_counts)[anchors.columns]
    np.testing.assert_allclose(anchors.loc[("context_B", "replicate r")], replicate_b)
    assert only_b.loc["resample", "mae"] == pytest.approx(tables["resample"]["mae"].mean(), abs=1e-12)
    # the full table is the mean of the two contexts' tables
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        only_a = leaderboard(predictions, real[real.obs[CELL_TYPE] == "context_A"].copy())
    np.testing.assert_allclose(table.to_numpy(), (only_a.to_numpy() + only_b.to_numpy()) / 2, atol=1e-12)


def test_leaderboard_on_some_perturbations_scores_only_those(two_contexts):
    real, predictions = two_contexts
    some = sorted(set(real.obs[PERT]) - {CONTROL})[1:]  # 5 of 6 (fewer leave no measurable effect here)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = leaderboard(predictions, real, perturbations=some)
        by_hand = leaderboard(
            {n: select_perturbations(p, some) for n, p in predictions.items()}, select_perturbations(real, some)
        )
    pd.testing.assert_frame_equal(table, by_hand)
    with pytest.raises(ValueError, match="real: .*have no cells"):
        leaderboard(predictions, real, perturbations=["not a perturbation"])
    lacking = {**predictions, "cell mean": select_perturbations(predictions["cell mean"], some[1:])}
    with pytest.raises(ValueError, match="cell mean: .*have no cells"):
        leaderboard(lacking, real, perturbations=some)
    with pytest.raises(TypeError, match="list of names"):
        leaderboard(predictions, real, perturbations=some[0])


def test_leaderboard_errors(two_contexts):
    real, predictions = two_contexts
    with pytest.raises(ValueError, match="baseline='linear' is not among"):
        leaderboard(predictions, real, baseline="linear")
    no_counts = real.copy()
    del no_counts.layers["counts"]
    with pytest.raises(ValueError, match="no layers\\['counts'\\]"):
        leaderboard(predictions, no_counts)
    unlabelled = predictions["cell mean"].copy()
    del unlabelled.obs[CELL_TYPE]
    with pytest.raises(ValueError, match="lacks the columns \\['cell_type'\\]"):
        leaderboard({**predictions, "cell mean": unlabelled}, real)
    only_a = predictions["cell mean"][predictions["cell mean"].obs[CELL_TYPE] == "context_A"].copy()
    with pytest.raises(ValueError, match="no cells of cell_type 'context_B'"):
        leaderboard({**predictions, "cell mean": only_a}, real)
