# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Baselines and the challenge score
#
# A mean absolute error of 0.07 or a discrimination score of 0.9 means little on its own: is that good for this dataset, with this many cells?
# The Virtual Cell Challenge answers by comparing every model with a deliberately simple {term}`baseline`, a prediction that ignores which gene was silenced, and by reporting how much of the gap between that baseline and perfection the model closes.
# This chapter builds the baseline exactly as the official evaluator does, computes the score in a few lines, and then runs an honest contest on data whose truth we know: simple baselines, a perfect model, and the ceiling that the noise in the data allows.
# The results are sobering in places, and that is the point: a score is only as meaningful as the yardsticks beside it.

# %% [markdown]
# ```{admonition} Objectives and prerequisites
# :class: tip
# After this chapter you will be able to:
# - compute the challenge score from per-perturbation metric tables, exactly as cell-eval does, and explain each scaling and clipping step;
# - build the cell-mean baseline by hand and with `vcell_lib.baselines`, and check it against cell-eval's own;
# - compare baselines with a perfect model and with the data ceiling on held-out perturbations, on simulated and real data;
# - cross-check every metric and the score with the official cell-eval package;
# - recognize how the score can be gamed: clipping per metric, the number of predicted cells, and trade-offs between metrics.
#
# **Prerequisites:** pseudobulks and splits from [chapter 4](04_data_for_modelling.ipynb); the three metrics from [chapter 5](05_mae.ipynb) (MAE), [chapter 6](06_perturbation_discrimination.ipynb) (perturbation discrimination) and [chapter 7](07_differential_expression.ipynb) (differential expression).
# ```

# %%
import sys

if (
    "google.colab" in sys.modules
):  # On Colab only: install the book's library and cell-eval.
    import subprocess

    PACKAGE = "vcell-lib[crosscheck] @ git+https://github.com/virtual-cell-book/virtual-cell-book"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PACKAGE], check=True)

import contextlib
import io
import logging
import tempfile
import warnings

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vcell_lib.baselines import (
    cell_mean_baseline,
    control_mean_baseline,
    linear_baseline,
    perturbation_mean_baseline,
    prediction_from_profiles,
    with_controls,
)
from vcell_lib.data import (
    CELL_TYPE,
    CONTROL,
    PERT,
    assign_split,
    half_split,
    load_papalexi2021,
    normalize_log1p,
    perturbation_effects,
    profile_table,
    pseudobulk,
    split_by_context,
    split_by_perturbation,
)
from vcell_lib.env import by_mode, set_seed, versions
from vcell_lib.metrics import VCC_METRICS, evaluate, score, wilcoxon_de
from vcell_lib.plotting import PALETTE, style
from vcell_lib.simulate import SimulationParams, simulate_perturbseq, true_effects

rng = set_seed(0)
style()
pd.set_option("display.width", 120)
versions()

# %% [markdown]
# ## The score, step by step
#
# Chapters 5 to 7 built the three metrics of the challenge, each computed for every test perturbation $p$:
#
# - `mae`, the mean absolute error between the predicted and the real {term}`pseudobulk` of $p$ (lower is better);
# - `discrimination_score_l1` (PDS), how well the predicted {term}`effect vector` of $p$ picks out the real effect of $p$ among all real effects (1 is best);
# - `overlap_at_N` (DES), the fraction of the genes really differentially expressed after silencing $p$ that the prediction also calls differentially expressed (1 is best); the N in cell-eval's name is the top-$k$ cut of chapter 7, not a number of cells.
#
# The challenge {cite}`roohani2025` turns them into one number, relative to a baseline; cell-eval's `score_agg_metrics` does it in four steps:
#
# 1. Average each metric over the test perturbations, for the model ($u$) and for the baseline ($u^\text{base}$), both evaluated on the same real cells.
# 2. Scale each average against the baseline, so that 0 means "as good as the baseline" and 1 means "perfect":
#
#    $$
#    s_{\text{MAE}} = 1 - \frac{u_{\text{MAE}}}{u^\text{base}_{\text{MAE}}},
#    \qquad
#    s_{\text{PDS}} = \frac{u_{\text{PDS}} - u^\text{base}_{\text{PDS}}}{1 - u^\text{base}_{\text{PDS}}},
#    \qquad
#    s_{\text{DES}} = \frac{u_{\text{DES}} - u^\text{base}_{\text{DES}}}{1 - u^\text{base}_{\text{DES}}} .
#    $$
#
#    For MAE, whose perfect value is 0, the score is the fraction of the baseline's error that the model removes; for the other two, whose perfect value is 1, it is the fraction of the distance from the baseline to 1 that the model covers.
# 3. Replace an undefined value (NaN, e.g. from $0/0$) by 0, then clip each scaled metric below at 0: a model worse than the baseline on a metric gets 0 for it, never a negative number. There is no upper clip, but none is needed: no scaled metric can exceed 1.
# 4. Average the three scaled metrics. The leaderboard shows 100 times this average.
#
# It takes a few lines:

# %%
LOWER_IS_BETTER = {"mae"}


def challenge_score(user: pd.DataFrame, base: pd.DataFrame) -> pd.Series:
    """The challenge score from two per-perturbation tables (one row per perturbation)."""
    scaled = {}
    for metric in VCC_METRICS:  # ("mae", "discrimination_score_l1", "overlap_at_N")
        # skipna=False: like cell-eval's polars mean, a single NaN makes the mean NaN
        # (and the metric then scores 0); pandas would otherwise skip it silently
        u = np.float64(user[metric].mean(skipna=False))
        b = np.float64(base[metric].mean(skipna=False))
        with np.errstate(divide="ignore", invalid="ignore"):
            s = 1 - u / b if metric in LOWER_IS_BETTER else (u - b) / (1 - b)
        s = 0.0 if np.isnan(s) else float(s)  # NaN -> 0
        scaled[metric] = max(0.0, s)  # clip below at 0, not above
    scaled["avg_score"] = float(np.mean(list(scaled.values())))
    return pd.Series(scaled)


# %% [markdown]
# For context, the challenge reported these values for its cell-mean baseline: MAE about 0.027, DES about 0.106 and PDS about 0.514.
# We take them as reported: recomputing them needs the challenge's held-out cells.
# Suppose a model reaches MAE 0.025, PDS 0.70 and DES 0.25 on the same cells, and a second model the same except for a worse MAE of 0.030.
# A table with a single row stands in for the per-perturbation tables, since only their means matter:

# %%
reported_baseline = pd.DataFrame(
    {"mae": [0.027], "discrimination_score_l1": [0.514], "overlap_at_N": [0.106]}
)
model = pd.DataFrame(
    {"mae": [0.025], "discrimination_score_l1": [0.70], "overlap_at_N": [0.25]}
)
worse_mae = model.assign(mae=0.030)
example = pd.DataFrame(
    {
        "model": challenge_score(model, reported_baseline),
        "worse MAE": challenge_score(worse_mae, reported_baseline),
    }
)
print(example.round(3))
print(f"leaderboard: {100 * example.loc['avg_score', 'model']:.1f}")
for user in (model, worse_mae):
    pd.testing.assert_series_equal(
        challenge_score(user, reported_baseline), score(user, reported_baseline)
    )

# %% [markdown]
# The library's `vcell_lib.metrics.score` gives the same numbers (the assert above).
# One detail matters if you copy the function: cell-eval averages with polars, where a single NaN among the perturbations makes the mean NaN, and the metric then scores 0; pandas' `.mean()` skips NaN by default, hence `skipna=False`.
# Notice three things.
# A 7% lower MAE than the baseline earns only 0.074: MAE moves little between models, so it contributes little.
# The second model's MAE is 11% worse than the baseline's, yet its MAE term only falls from 0.074 to 0, not to $-0.111$: being worse than the baseline costs nothing beyond being equal to it.
# And the score is relative: the same model scores differently against a different baseline, or on a different test set.
# Model and baseline must therefore be evaluated on the same real cells, with the same evaluator version.

# %% [markdown]
# ## A held-out cell type to predict
#
# To compare models we need a test set whose truth we know.
# As in chapter 4, we simulate three cell types (contexts) with the same perturbations, and hold out one of them as the challenge does: `split_by_context` puts every perturbation of contexts A and B in training, plus half of context C's, a {term}`few-shot` setting; the other half of context C is the test set.

# %%
params = SimulationParams(
    n_contexts=3,
    n_perturbations=by_mode(full=30, fast=12),
    cells_per_perturbation=by_mode(full=100, fast=60),
    n_control_cells=by_mode(full=400, fast=200),
)
sim = simulate_perturbseq(params, seed=0)
norm = normalize_log1p(sim)  # log1p of library-size-normalized counts
split = split_by_context(norm, "context_C", few_shot=0.5, seed=0)
part = assign_split(norm, split).to_numpy()  # "train", "test" or "control" per cell
in_c = (norm.obs[CELL_TYPE] == "context_C").to_numpy()
# context C's few-shot perturbations and its controls; contexts A and B entirely
train_c = norm[in_c & np.isin(part, ["train", "control"])].copy()
train_ab = norm[~in_c & np.isin(part, ["train", "control"])].copy()
real = norm[in_c & np.isin(part, ["test", "control"])].copy()  # the test cells of C
real.obs = real.obs[[PERT]].astype(str)  # the evaluators need only the label column

counts = (
    real.obs[PERT].value_counts().drop(CONTROL).sort_index().rename("n_cells")
).reset_index()  # the shape of the challenge's pert_counts.csv
print(f"training perturbations in C: {train_c.obs[PERT].nunique() - 1}")
print(
    f"test perturbations in C: {len(counts)}, control cells of C: {(part[in_c] == 'control').sum()}"
)
counts.head(3)

# %% [markdown]
# `counts` plays the role of the challenge's `pert_counts.csv`: how many cells to predict for each test perturbation.
# A prediction is an AnnData of log1p values with exactly those cells, labelled in `target_gene`, plus control cells: each side's effects are measured against its own {term}`non-targeting controls <non-targeting control>`, and the baselines append the real control cells of the test cell type.

# %% [markdown]
# ## The cell-mean baseline
#
# The challenge's baseline, built by `cell-eval baseline`, predicts the same cell for every perturbation:
#
# 1. take the training cells of the test cell type (in the challenge, the H1 training data) and compute the mean log1p profile of each label, *control included*;
# 2. average these profiles with equal weight per label, however many cells each has;
# 3. copy the result `n_cells` times for each test perturbation, from `pert_counts`;
# 4. append the real control cells.
#
# By hand, with chapter 5's `prediction_from_profiles` for steps 3 and 4:

# %%
profiles = pseudobulk(train_c, by=PERT)  # one mean log1p profile per label
mean_profile = profiles.X.mean(axis=0)  # unweighted: every label counts once
n_cells = counts.set_index(PERT)["n_cells"]
controls = real[real.obs[PERT] == CONTROL]  # the real control cells of context C
same_profile = pd.DataFrame(
    [mean_profile] * len(n_cells), index=n_cells.index, columns=real.var_names
)
by_hand = prediction_from_profiles(same_profile, n_cells, controls)
print(f"{profiles.n_obs} labels averaged; prediction: {by_hand.n_obs} cells")
print(by_hand.obs[PERT].value_counts().head(3))

# %% [markdown]
# The library's `cell_mean_baseline` takes the training cells and the counts table and does the same; with `controls=` it appends the control cells of another AnnData (by default those of the training cells, which here are the same cells).

# %%
cell_mean = cell_mean_baseline(train_c, counts, controls=real)
assert list(cell_mean.obs[PERT]) == list(by_hand.obs[PERT])
np.testing.assert_allclose(cell_mean.X, by_hand.X, atol=1e-6)

# %% [markdown]
# Now the official implementation.
# cell-eval is installed with the book's `crosscheck` extra; its `build_base_mean_adata` is what `cell-eval baseline` runs.
# It modifies the AnnData it is given, so we pass a copy, and it takes the counts as a polars table.

# %%
import cell_eval
import polars as pl

logging.getLogger("cell_eval").setLevel(logging.ERROR)
logging.getLogger("pdex").setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet():
    """Silence cell-eval's warnings and progress bars."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


with quiet():
    official = cell_eval.build_base_mean_adata(
        train_c.copy(),
        counts_df=pl.from_pandas(counts),
        pert_col=PERT,
        control_pert=CONTROL,
    )
gap = np.abs(cell_mean.X - official.to_df().to_numpy()).max()
print(f"largest difference from cell-eval's baseline: {gap:.1e}")
assert list(official.obs[PERT].astype(str)) == list(cell_mean.obs[PERT])
assert gap < 1e-6

# %% [markdown]
# The two agree to within about one float32 rounding step; cell-eval's own result varies at that level from run to run, because it averages the label profiles in an unordered group-by.
#
# What does this prediction know?
# It gets the cell type right, since every profile comes from context C, and it contains the average effect of the training perturbations, diluted by the control profile.
# It knows nothing about which gene was silenced: every test perturbation gets the same cells.
#
# ### More baselines
#
# Three other simple predictions bracket what a model should beat:
#
# - `control_mean_baseline`, the control mean ("nothing happens", as in chapter 5): every perturbation is predicted as the mean control cell of the test cell type.
# - `perturbation_mean_baseline`: the effect of silencing $p$ measured in *other* cell types, each time against the control cells of the same cell type and then averaged over those cell types, added to the control profile of the test cell type; a perturbation never seen anywhere gets the mean effect. Here we train it on contexts A and B, where every test perturbation was measured.
# - `linear_baseline`: a linear model from the benchmark of Ahlmann-Eltze, Huber and Anders {cite}`ahlmanneltze2025`, which found that deep-learning models did not yet outperform such simple linear baselines at predicting unseen perturbations.
#
# The perturbation mean is one subtraction per cell type, a mean and one addition; by hand, for the first test perturbation:

# %%
transfer = perturbation_mean_baseline(train_ab, counts, controls=real)
first = counts[PERT].iloc[0]
# its effect in A and in B, each against the same cell type's controls (chapter 4)
effect_ab = perturbation_effects(train_ab).xs(first, level=PERT).mean().to_numpy()
control_c = profile_table(real).loc[CONTROL].to_numpy()
# the library clips at 0: log1p values cannot be negative
by_hand_first = np.clip(control_c + effect_ab, 0, None)
np.testing.assert_allclose(
    transfer[transfer.obs[PERT] == first].X[0], by_hand_first, atol=1e-6
)

# %% [markdown]
# The linear model needs a word more.
# Let $Y$ be the matrix of training effects (genes × training perturbations) and $\bar y$ their mean.
# A {term}`PCA` of $Y - \bar y$ gives each gene an embedding: its row in $\Gamma$, the top $d$ principal directions (genes × $d$).
# A perturbation is described by the embedding of the gene it silences, $\Pi = \Gamma[\text{silenced genes}]$.
# The model is bilinear, $Y - \bar y \approx \Gamma\,W\,\Pi^\top$: it is linear in the gene embeddings $\Gamma$ when $\Pi$ is held fixed, and linear in the perturbation embeddings $\Pi$ when $\Gamma$ is held fixed, and the predicted effect on gene $g$ of perturbation $q$ is the product $\Gamma[g]\,W\,\Pi[q]^\top$.
# The $d \times d$ matrix $W$ is fitted by ridge regression, least squares plus a penalty $\lambda$ times the sum of the squared entries of $W$, which pulls them toward zero and keeps the fit stable when there are few training perturbations (the library's defaults are $d = 10$ (`n_components`) and $\lambda = 0.1$):
#
# $$
# W = (\Gamma^\top \Gamma + \lambda I)^{-1}\, \Gamma^\top (Y - \bar y)\, \Pi\, (\Pi^\top \Pi + \lambda I)^{-1},
# \qquad
# \hat\delta_q = \bar y + \Gamma\,W\,\Gamma[q] .
# $$
#
# A new perturbation $q$ gets a prediction through its gene's embedding, which comes from how that gene *responded* to the training perturbations.
# It works when genes that respond alike also act alike when silenced, as the members of one protein complex tend to.
# We train it on context C's few-shot perturbations: it never sees contexts A and B.

# %%
predictions = {
    "cell mean": cell_mean,
    "control mean": control_mean_baseline(train_c, counts, controls=real),
    "perturbation mean": transfer,
    "linear": linear_baseline(train_c, counts, controls=real),
}

# %% [markdown]
# ## An honest comparison
#
# Two references complete the picture.
#
# **A perfect model.**
# The best any model can do is predict the true distribution of each test perturbation's cells.
# It cannot predict the *same* cells: the real test cells carry their own sampling noise.
# So the perfect prediction is an independent resample: the simulator with the same seed and every other setting unchanged has the same cell types, network and true effects, and with a different `cells_per_perturbation` it draws different cells.
# We simulate twice as many and keep the right number for each test perturbation.

# %%
resample = normalize_log1p(
    simulate_perturbseq(
        params, seed=0, cells_per_perturbation=2 * params.cells_per_perturbation
    )
)
pd.testing.assert_frame_equal(true_effects(resample), true_effects(sim))  # same truth
rows = []
for pert, n in n_cells.items():
    mask = (resample.obs[CELL_TYPE] == "context_C") & (resample.obs[PERT] == pert)
    rows.extend(np.flatnonzero(mask.to_numpy())[:n])
fresh = resample[rows]
predictions["perfect (resample)"] = with_controls(fresh, controls)

# %% [markdown]
# **The data ceiling.**
# On real data there is no second sample.
# What we can do is split the real cells of every perturbation, and the controls, into two disjoint halves, treat one half as the prediction of the other, and compute the metrics: how well does the data agree with itself?
# Chapters 6 and 7 showed such half-splits as they are, uncorrected.
# Here they become the {term}`data ceiling`, an estimate of what the noise in the data allows at full depth.
# Each half has only half the cells, so the raw half-split underestimates agreement at full depth.
# cell-eval compensates with a heuristic correction of PDS and DES, $r' = 2r/(1 + r)$, and leaves MAE without a ceiling.
# The formula is borrowed from psychometrics, where the Spearman-Brown formula predicts how a reliability *correlation* grows when a test is made twice as long.
# PDS and DES are not correlations, and the formula knows nothing of their scales: it turns a PDS at chance, 0.5, into 0.67.
# Treat the corrected value as a rough guide; we will see that here it overshoots on DES.
# We draw the halves exactly as cell-eval's `MetricsEvaluator.compute_ceiling` does, so that we can check the result below.


# %%
def ceiling(adata: ad.AnnData, seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    """Half-split self-agreement of PDS and DES with cell-eval's 2r/(1+r) correction.

    NaN for MAE, or where r <= 0. Also returns the uncorrected half-split table.
    """
    half_real, half_pred = half_split(adata, seed)
    table = evaluate(half_pred, half_real)
    r = table[list(VCC_METRICS)].mean()
    corrected = (2 * r / (1 + r)).where(r > 0)
    corrected["mae"] = np.nan  # no defensible ceiling for an error
    return corrected, table


data_ceiling, half_table = ceiling(real)
print(
    pd.DataFrame(
        {
            "half vs half": half_table[list(VCC_METRICS)].mean(),
            "corrected (data ceiling)": data_ceiling,
        }
    ).round(3)
)

# %% [markdown]
# Now every prediction is evaluated against the real test cells of context C with `evaluate` (chapters 5 to 7), and scored against the cell-mean baseline.


# %%
def summarize(
    tables: dict, baseline: pd.DataFrame, data_ceiling: pd.Series
) -> pd.DataFrame:
    """Mean of each metric and the scaled scores, one row per method, plus the ceiling."""
    rows = {}
    for name, table in tables.items():
        means = table[list(VCC_METRICS)].mean()
        scores = score(table, baseline).add_prefix("score_")
        rows[name] = pd.concat([means, scores])
    summary = pd.DataFrame(rows).T
    summary.loc["data ceiling"] = data_ceiling
    # VCC_METRICS order: mae, discrimination_score_l1 (PDS), overlap_at_N (DES)
    summary.columns = [
        "mae",
        "PDS",
        "DES",
        "score_mae",
        "score_PDS",
        "score_DES",
        "score_avg",
    ]
    return summary


tables = {name: evaluate(pred, real) for name, pred in predictions.items()}
baseline_table = tables["cell mean"]
comparison = summarize(tables, baseline_table, data_ceiling)
print(comparison.to_string(float_format="{:.3f}".format, na_rep="-"))

# %% tags=["hide-input"]
methods = list(tables)
colors = {
    "cell mean": PALETTE["control"],
    "control mean": PALETTE["control"],
    "perturbation mean": PALETTE["prediction"],
    "linear": PALETTE["prediction"],
    "perfect (resample)": PALETTE["truth"],
}
panels = [
    ("mae", "MAE (lower is better)"),
    ("PDS", "PDS (discrimination)"),
    ("DES", "DES (DE overlap)"),
    ("score_avg", "score vs cell mean"),
]
fig, axes = plt.subplots(1, 4, figsize=(12, 3.4), sharey=True)
y = np.arange(len(methods))
for ax, (column, title) in zip(axes, panels):
    values = comparison.loc[methods, column].to_numpy(dtype=float)
    ax.barh(y, values, color=[colors[m] for m in methods])
    digits = 3 if column == "mae" else 2
    for yi, value in zip(y, values):
        ax.annotate(
            f"{value:.{digits}f}",
            (value, yi),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
        )
    if column in ("PDS", "DES"):
        line = comparison.loc["data ceiling", column]
        ax.axvline(line, color="black", ls="--", lw=1, zorder=1)
        ax.text(line, -0.75, "ceiling ", ha="right", va="center", fontsize=8)
    ax.set_title(title)
    top = np.nanmax([values.max(), comparison.loc["data ceiling", column]])
    ax.set_xlim(0, top * 1.3)
    ax.set_ylim(len(methods) - 0.5, -1.1)  # top to bottom, room for the label
axes[0].set_yticks(y, methods)
fig.tight_layout()
plt.show()

# %%
pds = comparison["PDS"]
assert pds["perturbation mean"] > pds["cell mean"] + 0.2  # transfer works here
assert comparison.loc["perfect (resample)", "score_mae"] == 0  # perfect loses MAE
assert comparison.loc["perfect (resample)", "mae"] > comparison.loc["cell mean", "mae"]
assert comparison.loc["perfect (resample)", "DES"] < 1
assert comparison.loc["perturbation mean", "mae"] > comparison.loc["cell mean", "mae"]
assert comparison.loc["linear", "PDS"] < comparison.loc["cell mean", "PDS"] + 0.05
des_half = half_table["overlap_at_N"].mean()  # the uncorrected half-split
des_perfect = comparison.loc["perfect (resample)", "DES"]
assert des_half < des_perfect < comparison.loc["data ceiling", "DES"]
assert tables["control mean"]["des_tie_at_cut"].any()  # the warnings above

# %% [markdown]
# Read the table row by row; the printed numbers are the ones to trust.
#
# - **Cell mean and control mean** are nearly tied. On PDS they sit near chance, which for a prediction that ignores the perturbation is $0.5 + 1/(2K)$ on average with $K$ test perturbations: the same prediction for every perturbation cannot tell them apart. Their DES is near 0.
# - **The perturbation mean** is the clear winner among baselines on PDS and DES. In this simulator three quarters of the regulatory network is shared between cell types, so an effect measured in contexts A and B transfers well to C. On MAE it is *worse* than the cell mean, and its MAE score is clipped to 0.
# - **The linear model** is no better than the cell mean here: it is even slightly worse on PDS (0.547 against 0.551) and on DES (0.005 against 0.012). That is a fact about the simulator, not about the method: our network is random, so how a gene responds to other perturbations says nothing about what silencing it does, and a gene embedding learned from responses cannot help. On real screens, where genes of one complex or pathway respond and act together, Ahlmann-Eltze and colleagues found the opposite {cite}`ahlmanneltze2025`. Which baseline wins depends on the data.
# - **The perfect model** is best on DES (and best or tied on PDS) but does not reach 1 on DES, and its MAE is *worse than the cell mean's*. Its score is far from 1.
#
# The warnings printed above the table come from `evaluate`'s tie check (chapter 7): the control mean's fold changes are rounding noise, many of them exactly equal, so for some perturbations the DES cut falls inside a block of tied values; `des_tie_at_cut` flags them, and their DES (near 0 in any order) is not defined by the metric.
#
# The MAE result deserves a closer look, because it is the most surprising.
# MAE compares levels gene by gene, and most genes are not affected by a given perturbation.
# On those genes, the real pseudobulk of a few dozen or hundred cells is the true mean plus sampling noise; the resample adds its own, independent noise of the same size, while the cell mean, averaged over many more cells, adds almost none.
# The perfect model pays for noise it cannot avoid on hundreds of unaffected genes, and this outweighs what it gains on the few affected ones.
# The half-split confirms the noise explanation: with half the cells on each side, its MAE is larger by about $\sqrt 2$:

# %%
mae_half = half_table["mae"].mean()
mae_perfect = comparison.loc["perfect (resample)", "mae"]
print(
    f"MAE half vs half: {mae_half:.3f}; perfect vs real: {mae_perfect:.3f}; ratio {mae_half / mae_perfect:.2f}"
)
assert 1.2 < mae_half / mae_perfect < 1.6

# %% [markdown]
# In the challenge, with about a thousand cells per perturbation, the noise is smaller but the lesson stands: a large part of MAE is the noise of the real cells, which no model can predict.
#
# On PDS the data ceiling and the perfect resample roughly agree.
# On DES the truth lies between the two versions of the half-split: the raw half-split (0.717) falls below the resample (0.782), and the corrected ceiling (0.835) overshoots it; the correction is a heuristic, not a law.
# The half-split, which needs no simulator, is still a fair rough estimate of what real data allow.
# It is an estimate, not a bound: with few test perturbations it is noisy, and a method can land above it.
# The gap between the best baseline and the ceiling, not between 0 and 1, is the room a model has to improve.

# %% [markdown]
# ### The same comparison on real cells
#
# The THP-1 CRISPR screen of chapter 2 {cite}`papalexi2021` has a single cell type, so we hold out perturbations instead: `split_by_perturbation` keeps 40% of the silenced genes for testing, and every baseline is trained on the rest.
# With one cell type there is nothing to transfer: the perturbation mean of an unseen perturbation is just the mean effect, so we leave it out.

# %%
thp1 = normalize_log1p(load_papalexi2021())
thp1_split = split_by_perturbation(thp1, val=0.0, test=0.4, seed=0)
thp1_part = assign_split(thp1, thp1_split).to_numpy()
thp1_train = thp1[np.isin(thp1_part, ["train", "control"])].copy()
thp1_real = thp1[np.isin(thp1_part, ["test", "control"])].copy()
thp1_real.obs = thp1_real.obs[[PERT]].astype(str)
thp1_counts = thp1_real.obs[PERT].value_counts().drop(CONTROL)
measured = [p for p in sorted(thp1_counts.index) if p in thp1.var_names]
print(f"test perturbations: {sorted(thp1_counts.index)}")
print(f"of which measured among the {thp1.n_vars} genes: {measured}")

thp1_tables = {
    name: evaluate(build(thp1_train, thp1_counts, controls=thp1_real), thp1_real)
    for name, build in (
        ("cell mean", cell_mean_baseline),
        ("control mean", control_mean_baseline),
        ("linear", linear_baseline),
    )
}
thp1_comparison = summarize(
    thp1_tables, thp1_tables["cell mean"], ceiling(thp1_real)[0]
)
print(thp1_comparison.to_string(float_format="{:.3f}".format, na_rep="-"))
for metric in ("PDS", "DES"):
    best_baseline = thp1_comparison.drop(index="data ceiling")[metric].max()
    assert thp1_comparison.loc["data ceiling", metric] > best_baseline + 0.2

# %% [markdown]
# On real cells the picture is starker.
# No baseline gets far from the cell mean: every score in the table is small.
# The linear model has little to work with: only silenced genes that are among the 299 measured genes have an embedding (the others get the mean effect), and 15 training perturbations say little about how genes act together.
# The ceiling, however, shows that the data contain much more: a model that predicted these held-out perturbations as well as the data allow would reach PDS and DES far above any baseline.

# %% [markdown]
# ### When perturbations share a response
#
# In the simulation above, every perturbation's effect is its own, so a prediction that ignores the perturbation has nothing to get right, and the cell mean and the control mean nearly tie.
# Real screens share part of the response between perturbations, {term}`systematic variation` {cite}`vinastorne2025`, and chapter 3's `shared_response` adds it to the simulator.
# We rerun the cell mean and the control mean on context C with the shared response switched on: the same seed gives the same perturbations, so the same split and the same `counts` apply.
# Besides the challenge's metrics we look at `pearson_delta` from `evaluate`'s table, the Pearson correlation between the predicted and the real effect vector, which many papers report.


# %%
def cell_mean_vs_control_mean(cell: pd.DataFrame, control: pd.DataFrame) -> pd.Series:
    """The cell mean's metrics (means over perturbations) and its score against the control mean."""
    metrics = [*VCC_METRICS, "pearson_delta"]
    return pd.concat(
        [
            cell[metrics].mean(),
            score(cell, control)[["avg_score"]].rename(
                {"avg_score": "score vs control mean"}
            ),
        ]
    )


shared_norm = normalize_log1p(simulate_perturbseq(params, seed=0, shared_response=0.3))
shared_part = assign_split(shared_norm, split).to_numpy()
shared_c = (shared_norm.obs[CELL_TYPE] == "context_C").to_numpy()
shared_train = shared_norm[shared_c & np.isin(shared_part, ["train", "control"])].copy()
shared_real = shared_norm[shared_c & np.isin(shared_part, ["test", "control"])].copy()
shared_real.obs = shared_real.obs[[PERT]].astype(str)
shared_tables = {
    name: evaluate(build(shared_train, counts, controls=shared_real), shared_real)
    for name, build in (
        ("cell mean", cell_mean_baseline),
        ("control mean", control_mean_baseline),
    )
}
systematic = pd.DataFrame(
    {
        "private effects": cell_mean_vs_control_mean(
            tables["cell mean"], tables["control mean"]
        ),
        "shared_response=0.3": cell_mean_vs_control_mean(*shared_tables.values()),
    }
)
print(systematic.round(3).to_string())
before, after = systematic["private effects"], systematic["shared_response=0.3"]
assert after["pearson_delta"] > before["pearson_delta"] + 0.1
assert after["overlap_at_N"] > before["overlap_at_N"] + 0.05
assert after["score vs control mean"] > before["score vs control mean"] + 0.03
assert abs(after["discrimination_score_l1"] - before["discrimination_score_l1"]) < 0.05

# %% [markdown]
# The cell mean still knows nothing about any one perturbation, yet its `pearson_delta` and its DES climb (printed above), because the effect it predicts for every perturbation, the average of the training effects, now contains the part that all perturbations share, and with it the genes that part moves.
# Its score against the control mean rises too: on such data the challenge's baseline is a harder bar than "nothing happens", and a model must predict what is specific to each perturbation to clear it.
# Only PDS does not move: a prediction that is the same for every perturbation ranks each one at about chance, whatever they share.
# Viñas Torné and colleagues report the same on real screens: a baseline that predicts the mean of the perturbed cells does about as well as published methods on common metrics, which credit the systematic part of the effects; only what a method predicts beyond it shows that it learned the perturbations {cite}`vinastorne2025`.

# %% [markdown]
# ## Cross-checking with cell-eval
#
# Every number above came from `vcell_lib.metrics`.
# The official evaluator should give the same ones.
# We run cell-eval's `MetricsEvaluator` with the challenge's `vcc` profile on exactly the same inputs.
# Two practical details: cell-eval modifies the AnnData objects it receives, so we pass copies, and its differential expression step trips over unused categories in the label column, so we convert labels to plain strings.


# %%
def run_cell_eval(
    pred: ad.AnnData, real: ad.AnnData
) -> tuple[pd.DataFrame, pl.DataFrame]:
    """cell-eval's per-perturbation VCC metrics and their aggregate, on copies of the inputs."""
    pred, real = pred.copy(), real.copy()
    for adata in (pred, real):
        adata.obs[PERT] = adata.obs[PERT].astype(str)
    with quiet(), tempfile.TemporaryDirectory() as outdir:
        evaluator = cell_eval.MetricsEvaluator(
            adata_pred=pred,
            adata_real=real,
            pert_col=PERT,
            control_pert=CONTROL,
            num_threads=1,
            outdir=outdir,
        )
        results, aggregate = evaluator.compute(profile="vcc", write_csv=False)
    return results.to_pandas().set_index("perturbation"), aggregate


official_tables, official_aggregates = {}, {}
for name, pred in predictions.items():
    official_tables[name], official_aggregates[name] = run_cell_eval(pred, real)

differences = pd.DataFrame(
    {
        name: (
            tables[name][list(VCC_METRICS)]
            - official_tables[name].loc[tables[name].index]
        )
        .abs()
        .max()
        for name in predictions
    }
).T
print("largest |vcell_lib - cell-eval| per metric:")
print(differences.map(lambda v: f"{v:.1e}").to_string())
disagree = differences.stack()[lambda d: d >= 1e-6]
print(f"above 1e-6: {disagree.round(4).to_dict()}")
assert set(disagree.index) <= {("control mean", "overlap_at_N")}

# %% [markdown]
# Every metric of every prediction agrees to within float32 rounding (cell-eval computes MAE in float32), in this run including the DES of the control mean.
# That one can differ, and the assert above tolerates it: not because of a bug in either implementation, but because of a property of the prediction.
# The control mean predicts every perturbation as the control profile, and its cells are compared with those same controls: every predicted fold change is exactly zero in exact arithmetic, and what the computer holds is rounding noise.
# Yet the Wilcoxon test finds many "significant" genes, because many identical cells sitting at the control mean differ in rank from the skewed control distribution (chapter 7).
# DES then ranks these genes by |log2 fold change|, that is, by rounding noise, and two implementations that round differently pick different genes:

# %%
de_control_mean = wilcoxon_de(predictions["control mean"])
significant = de_control_mean[de_control_mean["fdr"] < 0.05]
print(
    f"significant genes per perturbation: {len(significant) / len(n_cells):.0f}; "
    f"largest |log2 fold change| among them: {significant['log2_fold_change'].abs().max():.1e}"
)
assert significant["log2_fold_change"].abs().max() < 1e-4  # rounding noise in float32

# %% [markdown]
# Such a DES measures nothing, and is near 0 anyway.
# The score agrees too: cell-eval's `score_agg_metrics` takes the two aggregate tables and returns each scaled metric and their average, `avg_score`.

# %%
score_differences = {}
for name in predictions:
    official_score = (
        cell_eval.score_agg_metrics(
            official_aggregates[name], official_aggregates["cell mean"]
        )
        .to_pandas()
        .set_index("metric")["from_baseline"]
    )
    ours = score(tables[name], baseline_table)
    score_differences[name] = (ours - official_score[ours.index]).abs().max()
    print(
        f"{name:20s} avg_score: cell-eval {official_score['avg_score']:.4f}, ours {ours['avg_score']:.4f}"
    )
assert all(
    gap < 1e-6 for name, gap in score_differences.items() if name != "control mean"
)

# %% [markdown]
# Finally the data ceiling: cell-eval computes it from the real cells alone (`adata_pred=None`), with the same halves as the library's `half_split` (chapter 5) for the same seed.

# %%
with quiet(), tempfile.TemporaryDirectory() as outdir:
    evaluator = cell_eval.MetricsEvaluator(
        adata_pred=None,
        adata_real=real.copy(),
        pert_col=PERT,
        control_pert=CONTROL,
        num_threads=1,
        outdir=outdir,
    )
    ceiling_results, ceiling_aggregate = evaluator.compute_ceiling(
        profile="vcc", write_csv=False, seed=0
    )
ceiling_results = ceiling_results.to_pandas().set_index("perturbation")
official_ceiling = ceiling_aggregate.to_pandas().iloc[0]
per_perturbation = (
    (half_table[list(VCC_METRICS)] - ceiling_results.loc[half_table.index])
    .abs()
    .max()
    .max()
)
print(f"half-split metrics: largest difference {per_perturbation:.1e}")
print(
    pd.DataFrame(
        {"ours": data_ceiling, "cell-eval": official_ceiling[data_ceiling.index]}
    ).round(4)
)
assert per_perturbation < 1e-6
for metric in ("discrimination_score_l1", "overlap_at_N"):
    assert abs(data_ceiling[metric] - official_ceiling[metric]) < 1e-6

# %% [markdown]
# One caveat on versions: these checks are against cell-eval 0.8.2, which corrects p-values for multiple testing within each perturbation.
# The evaluator used during the 2025 challenge corrected over all tests at once (`evaluate(..., fdr_scope="global")` reproduces that), so DES values computed today differ from the leaderboard's.

# %% [markdown]
# ## How the score can be gamed
#
# A single number invites optimizing the number rather than the biology.
# The comparison above already showed the first weakness; here are the others, each checked on the simulated test set.
#
# **Clipping per metric.**
# A metric on which the model is worse than the baseline contributes 0, however much worse.
# The perturbation mean and the perfect model both lose MAE to the cell mean, and their MAE term is 0, exactly as if they had matched the baseline.
# A model can therefore give up one metric entirely and optimize the other two.
#
# **Winning one metric by losing another.**
# Blend the cell mean and the perturbation mean: predict $\text{cell mean} + \alpha\,(\text{perturbation mean} - \text{cell mean})$ for every test perturbation.
# With $\alpha = 0$ this is the baseline, with $\alpha = 1$ the perturbation mean, and with $\alpha > 1$ the predicted effects are exaggerated.


# %%
baseline_profiles = profile_table(cell_mean).loc[n_cells.index]
transfer_profiles = profile_table(transfer).loc[n_cells.index]
alphas = [0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3]
blend = {}
for alpha in alphas:
    blended = baseline_profiles + alpha * (transfer_profiles - baseline_profiles)
    table = evaluate(prediction_from_profiles(blended, n_cells, controls), real)
    blend[alpha] = score(table, baseline_table)
blend = pd.DataFrame(blend).T.rename_axis("alpha")
print(blend.round(3).to_string())

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(8.4, 3.8))
for column, label, color in (
    ("mae", "MAE score", PALETTE["accent"]),
    ("discrimination_score_l1", "PDS score", PALETTE["prediction"]),
    ("overlap_at_N", "DES score", PALETTE["perturbed"]),
    ("avg_score", "average (the challenge score)", "black"),
):
    ax.plot(blend.index, blend[column], "o-", label=label, color=color)
ax.axvline(1, color="grey", ls=":", lw=1)
ax.text(1.03, 0.02, "perturbation mean", fontsize=8, color="grey")
ax.set(
    xlabel=r"$\alpha$ (0 = cell mean, 1 = perturbation mean, >1 = exaggerated)",
    ylabel="scaled metric",
    title="One knob, three metrics",
)
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
plt.show()

# %%
best_alpha = blend["avg_score"].idxmax()
print(
    f"best MAE score at alpha = {blend['mae'].idxmax()}, best average at alpha = {best_alpha}"
)
assert blend["mae"].idxmax() < 1  # MAE: best with a shrunken effect
assert (
    blend["discrimination_score_l1"].idxmax() >= 1
)  # PDS: best with the full effect or more
assert blend.loc[2, "avg_score"] > blend.loc[1, "avg_score"]
assert blend.loc[3, "overlap_at_N"] < blend.loc[1, "overlap_at_N"]  # DES: up to a point

# %% [markdown]
# MAE prefers timid predictions, close to the average cell: shrinking an uncertain effect towards the mean lowers the error on the many genes where the effect is noise (the {term}`shrinkage` of [chapter 5](05_mae.ipynb)).
# PDS and DES prefer bolder ones, up to a point: a larger predicted effect is easier to tell apart from other perturbations and makes more genes significant.
# But DES peaks at a moderate exaggeration and then falls; at $\alpha = 3$ it is below its value at $\alpha = 1$, because genes whose exaggerated decrease is clipped at zero get an infinite fold change and crowd the top of the predicted list.
# The average peaks above $\alpha = 1$: *exaggerating* the transferred effects, which makes the prediction less accurate, raises the score, because the MAE it costs was already clipped at 0.
# A model tuned only on the score learns such tricks.
#
# **DES depends on how many cells you predict.**
# Differential expression is tested on the predicted cells against the predicted side's controls, and a Wilcoxon test on more cells finds more significant genes.
# We predict the perturbation-mean profiles with different numbers of identical cells per perturbation.
# MAE and PDS use only the pseudobulk, which does not change:

# %%
by_count = {}
for n in (10, 30, 100, 300, 1000):
    table = evaluate(
        prediction_from_profiles(transfer_profiles, n, controls),
        real,
    )
    by_count[n] = pd.concat(
        [
            table[[*VCC_METRICS, "n_sig_pred"]].mean(),
            score(table, baseline_table).add_prefix("score_"),
        ]
    )
by_count = pd.DataFrame(by_count).T.rename_axis("cells per perturbation")
print(
    by_count[
        [
            "mae",
            "discrimination_score_l1",
            "n_sig_pred",
            "overlap_at_N",
            "score_avg_score",
        ]
    ].round(3)
)
assert (
    np.ptp(by_count["mae"]) < 1e-9
    and np.ptp(by_count["discrimination_score_l1"]) < 1e-9
)
assert by_count["n_sig_pred"].is_monotonic_increasing
assert by_count.loc[10, "overlap_at_N"] < by_count["overlap_at_N"].max() - 0.03

# %% [markdown]
# The number of significant predicted genes (`n_sig_pred`) grows steadily with the number of cells, while MAE and PDS stay fixed.
# DES rises from 10 cells to a few dozen, then levels off: with too few cells, genes with large predicted changes fail to reach significance; once they all do, the extra significant genes have smaller fold changes and fall below the top $k$.
# A model can thus lose or gain DES through the number of cells alone; the challenge's `pert_counts` file says how many cells to predict for each perturbation, and a fair comparison predicts exactly those.
#
# **DES rewards a distribution, not a mean.**
# Copy the *real* test pseudobulk of each perturbation, the answer itself, as identical cells:

# %%
oracle = evaluate(
    prediction_from_profiles(profile_table(real), n_cells, controls), real
)
oracle_summary = pd.concat(
    [
        oracle[list(VCC_METRICS)].mean(),
        score(oracle, baseline_table).add_prefix("score_"),
    ]
)
print(oracle_summary.round(3).to_string())
assert oracle["mae"].max() < 1e-6 and oracle["discrimination_score_l1"].min() == 1
assert oracle_summary["overlap_at_N"] < 1

# %% [markdown]
# MAE is 0 and PDS is 1, as they must be, but DES is far from 1: identical cells have no spread, so the Wilcoxon test calls different genes significant than in the real cells.
# A model that predicts only means leaves DES points on the table, and one that shapes the spread of its cells can collect them without predicting the mean any better.
#
# **The test set sets the scale.**
# Each scaled metric divides by the baseline's distance to perfection on *this* test set.
# With $K$ test perturbations, each carries $1/K$ of the mean PDS: moving one perturbation up by one rank changes the mean by $1/K^2$, and getting one perturbation right instead of at chance changes it by about $1/(2K)$, a large step when $K$ is small.
# With a noisy test set, even the perfect model's DES stays well below 1.
# Scores from different test sets, cell counts or evaluator versions cannot be compared, and an improvement should be judged against the ceiling, not against 1.

# %% [markdown]
# ## Summary
#
# - The challenge score averages three scaled metrics: $1 - u/u^\text{base}$ for MAE and $(u - u^\text{base})/(1 - u^\text{base})$ for PDS and DES, with $u$ and $u^\text{base}$ the model's and the baseline's means over perturbations; NaN becomes 0, each is clipped below at 0, and the leaderboard shows 100 times the average. `vcell_lib.metrics.score` and cell-eval's `score_agg_metrics` agree.
# - The cell-mean baseline predicts for every perturbation the unweighted mean of the training labels' mean log1p profiles, control included, with `pert_counts` cells and the real controls appended; `cell_mean_baseline` matches cell-eval's `build_base_mean_adata`.
# - On a simulated held-out cell type, transferring each perturbation's effect from other cell types wins among the baselines; a linear model of gene embeddings does not help when genes' responses say nothing about their effects; a perfect model loses on MAE because MAE is dominated by the real cells' sampling noise.
# - The data ceiling, a half-split of the real cells as in chapters 6 and 7 with cell-eval's heuristic correction to full depth, estimates what the noise allows; in simulation it lands near a true resample on PDS and above it on DES, and on real data it shows how far baselines are from what is possible.
# - The score can be gamed: clipping lets a model give up MAE, moderately exaggerated effects raise PDS and DES, DES depends on the number and spread of predicted cells. Compare models on the same test set, with the same evaluator, and against the ceiling.

# %% [markdown]
# ## Exercises
#
# **1. Reading a leaderboard.**
# A team reports MAE 0.024, PDS 0.62 and DES 0.09, evaluated on the same cells as the reported baseline (MAE 0.027, PDS 0.514, DES 0.106).
# What does the leaderboard show for them?

# %% tags=["hide-cell"]
# Solution. MAE: 1 - 0.024/0.027 = 0.111; PDS: (0.62 - 0.514)/(1 - 0.514) = 0.218;
# DES is below the baseline: clipped to 0. The average is 0.110: the leaderboard shows 11.0.
team = pd.DataFrame(
    {"mae": [0.024], "discrimination_score_l1": [0.62], "overlap_at_N": [0.09]}
)
team_score = challenge_score(team, reported_baseline)
print(team_score.round(3).to_string())
print(f"leaderboard: {100 * team_score['avg_score']:.1f}")
assert team_score["overlap_at_N"] == 0
assert abs(100 * team_score["avg_score"] - 11.0) < 0.05

# %% [markdown]
# **2. A weighted baseline.**
# cell-eval averages the label profiles with equal weight.
# Build instead the mean over all training cells of context C (each label weighted by its number of cells), evaluate it, and score the perturbation mean against it.
# Is this baseline closer to the control profile than the cell mean, and why?

# %% tags=["hide-cell"]
# Solution. Controls are a large share of the training cells (n_control_cells vs
# cells_per_perturbation per label), so weighting by cells pulls the profile towards the controls.
weighted_profile = np.asarray(train_c.X.mean(axis=0)).ravel()
control_profile = profiles[CONTROL].X.ravel()
weighted = prediction_from_profiles(
    pd.DataFrame(
        [weighted_profile] * len(n_cells), index=n_cells.index, columns=real.var_names
    ),
    n_cells,
    controls,
)
weighted_table = evaluate(weighted, real)
distance = {
    "cell mean (unweighted)": np.abs(mean_profile - control_profile).mean(),
    "cell-weighted mean": np.abs(weighted_profile - control_profile).mean(),
}
for name, value in distance.items():
    print(f"{name}: mean |difference| from the control profile {value:.4f}")
print("perturbation mean scored against the weighted baseline:")
print(score(tables["perturbation mean"], weighted_table).round(3).to_string())
assert distance["cell-weighted mean"] < distance["cell mean (unweighted)"]

# %% [markdown]
# **3. An unseen perturbation instead of an unseen cell type.**
# Repeat the comparison of the perturbation mean with the cell mean on a `split_by_perturbation` of the simulated data (test perturbations unseen in every cell type), evaluated in context C.
# What happens to the perturbation mean's advantage?

# %% tags=["hide-cell"]
# Solution. Without the test perturbations in any training cell type, the perturbation mean
# falls back to the mean effect, the same for every perturbation: its PDS drops to chance,
# like the cell mean's. Transfer needs the perturbation measured somewhere.
pert_split = split_by_perturbation(norm, val=0.0, test=0.5, seed=0)
pert_part = assign_split(norm, pert_split).to_numpy()
pert_real = norm[in_c & np.isin(pert_part, ["test", "control"])].copy()
pert_real.obs = pert_real.obs[[PERT]].astype(str)
pert_counts = pert_real.obs[PERT].value_counts().drop(CONTROL)
pert_train = norm[np.isin(pert_part, ["train", "control"])]
pert_tables = {
    "cell mean": evaluate(
        cell_mean_baseline(
            pert_train[pert_train.obs[CELL_TYPE] == "context_C"],
            pert_counts,
            controls=pert_real,
        ),
        pert_real,
    ),
    "perturbation mean": evaluate(
        perturbation_mean_baseline(
            pert_train[pert_train.obs[CELL_TYPE] != "context_C"],
            pert_counts,
            controls=pert_real,
        ),
        pert_real,
    ),
}
for name, table in pert_tables.items():
    print(f"{name:18s} PDS {table['discrimination_score_l1'].mean():.3f}")
print(
    score(pert_tables["perturbation mean"], pert_tables["cell mean"])
    .round(3)
    .to_string()
)
assert (
    pert_tables["perturbation mean"]["discrimination_score_l1"].mean()
    < comparison.loc["perturbation mean", "PDS"] - 0.2
)

# %% [markdown]
# **4. Find the best blend for MAE.**
# Using the blend experiment, is there an $\alpha$ whose prediction beats the cell mean on *all three* metrics?
# What does that say about the value of shrinking a model's predictions towards the baseline?

# %% tags=["hide-cell"]
# Solution. Yes: a small alpha (a mild transfer of effects) lowers MAE below the baseline's and
# already improves PDS and DES, so every scaled metric is positive. But compare with alpha = 1
# (last row): the MAE gain is a few hundredths, while the PDS and DES scores fall far below
# their values at alpha = 1, and so does the average. Here shrinkage trades a lot of PDS and
# DES for a little MAE; with the three weighted equally, it does not pay.
all_positive = blend[(blend[list(VCC_METRICS)] > 0).all(axis=1)]
print(pd.concat([all_positive, blend.loc[[1]]]).round(3).to_string())
assert len(all_positive) > 0 and all_positive.index.max() < 1
assert (all_positive["avg_score"] < blend.loc[1, "avg_score"]).all()

# %% [markdown]
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
