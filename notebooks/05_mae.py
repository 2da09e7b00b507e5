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
# # Metric 1: mean absolute error
#
# The first of the challenge's three metrics is the simplest to state.
# Average the predicted cells of each perturbation, average the real ones, and measure how far apart the two profiles are, gene by gene.
# Simple does not mean easy to read.
# In this chapter we compute the metric exactly as the challenge's evaluator does, then score predictions whose quality we know in advance: a perfect model, the control mean ("nothing happens"), a model that mixes up perturbations.
# The results are surprising.
# The mean absolute error ranks "nothing happens" above a perfect simulator of the experiment on most perturbations, it rewards shrinking every predicted effect toward zero, and even the truth itself cannot score zero.

# %% [markdown]
# ```{admonition} Objectives and prerequisites
# :class: tip
# After this chapter you will be able to:
# - say what the challenge's evaluator needs from a prediction: log1p-normalized cells labelled by perturbation, predicted control cells included, the same genes and perturbations as the real data;
# - compute the mean absolute error (MAE) from pseudobulks in numpy, exactly as cell-eval does, and check it against `vcell_lib.metrics`;
# - explain why MAE on expression levels is dominated by the genes that do not change, and why it rewards predicting means and shrinking effects toward zero;
# - estimate the MAE noise floor of a dataset from its number of cells or from a half-split, and judge a model's MAE against it.
#
# **Prerequisites:** the noise model and the simulator with known truth from [chapter 3](03_noise_model.ipynb); pseudobulk, effect vectors and splits from [chapter 4](04_data_for_modelling.ipynb).
# ```

# %%
import sys

if "google.colab" in sys.modules:  # On Colab only: install the book's library.
    import subprocess

    PACKAGE = "vcell-lib @ git+https://github.com/virtual-cell-book/virtual-cell-book"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PACKAGE], check=True)

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import ticker

from vcell_lib.baselines import (
    cell_mean_baseline,
    control_mean_baseline,
    prediction_from_profiles,
)
from vcell_lib.data import (
    CONTROL,
    PERT,
    half_split,
    load_papalexi2021,
    normalize_log1p,
    profile_table,
    select_perturbations,
)
from vcell_lib.env import by_mode, set_seed, versions
from vcell_lib.metrics import evaluate, mae
from vcell_lib.plotting import PALETTE, style
from vcell_lib.simulate import simulate_perturbseq, true_effects

rng = set_seed(0)
style()
N_PERTS = by_mode(full=40, fast=16)  # VCELL_FAST=1 (the tests) shrinks the data
N_CELLS = by_mode(full=100, fast=50)  # cells per perturbation in each half
N_CONTROLS = by_mode(full=400, fast=200)  # control cells in each half
versions()

# %% [markdown]
# ## Where the metric sits
#
# The Virtual Cell Challenge ranks models by one score, the average of three metrics {cite}`roohani2025`:
#
# 1. the {term}`mean absolute error` between predicted and real expression (this chapter);
# 2. perturbation discrimination: can each prediction be told apart from the other perturbations (chapter 6);
# 3. differential expression overlap: does the prediction change the same genes as the real cells (chapter 7).
#
# Each metric is first scaled against the same metric for a simple baseline, so that 0 means "no better than the baseline"; chapter 8 puts the three together.
# All three are computed by the challenge's evaluator, the `cell-eval` package, from two AnnData objects: the model's prediction and the real held-out cells.
# The prediction must follow a fixed format:
#
# - one row per predicted cell, with the perturbation in `obs["target_gene"]`, and the same set of perturbation labels as the real data;
# - predicted control cells, labelled `non-targeting`: every effect is measured against control cells, and each side is compared with *its own* controls;
# - exactly the real data's genes, in the same order;
# - in `X`, {term}`log1p`-normalized expression (counts scaled to a common total, then $\log(1+x)$); the evaluator normalizes integer-valued data itself, and rejects non-integer data with negative values or values of 15 or more.
#
# The challenge also says how many cells to predict for each perturbation.
#
# To see the format, and to have predictions whose quality we know, we simulate an experiment with chapter 3's simulator: one cell type, `N_PERTS` perturbations with twice `N_CELLS` cells each, and twice `N_CONTROLS` control cells.
# Half of the perturbations are training perturbations; the other half are the test.
# We then split the cells of every label, controls included, into two random halves.
# Half A of the test perturbations is the real data the evaluator holds.
# Half B is a second, independent sample of the same experiment: the cells a perfect model of the experiment could have produced.
# `half_split` from the library draws the halves: it shuffles the cells of each label and gives each half $\lfloor n/2 \rfloor$ of them (an odd cell out is left out), exactly as cell-eval draws its data ceiling (chapter 8).
# `select_perturbations` keeps the cells of the given perturbations and the control cells.

# %%
EXPERIMENT = dict(  # one context; twice the cells, to split into halves
    seed=0,
    n_contexts=1,
    n_perturbations=N_PERTS,
    cells_per_perturbation=2 * N_CELLS,
    n_control_cells=2 * N_CONTROLS,
)
sim = simulate_perturbseq(**EXPERIMENT)
TARGET_SUM = float(np.median(np.asarray(sim.X.sum(axis=1))))  # median library size
norm = normalize_log1p(sim, target_sum=TARGET_SUM)
half_a, half_b = half_split(norm, seed=0)

perturbations = sorted(str(p) for p in sim.uns["truth"]["perturbations"])
test_perts = sorted(
    str(p) for p in rng.choice(perturbations, N_PERTS // 2, replace=False)
)
train_perts = sorted(set(perturbations) - set(test_perts))
real = select_perturbations(half_a, test_perts)  # what the evaluator holds
# an independent sample of the same experiment
resample = select_perturbations(half_b, test_perts)
train = select_perturbations(half_b, train_perts)  # what a model could learn from
print(f"real: {real.n_obs} cells, {len(test_perts)} test perturbations + controls")
print(
    f"train: {train.n_obs} cells, {len(train_perts)} training perturbations + controls"
)

# %% [markdown]
# Here is a prediction in the challenge's format, from the simplest model there is, the control mean ("nothing happens"): every perturbed cell is the mean profile of the training control cells.
# Its tables and plots in this chapter say "nothing happens"; later chapters call it the control mean.
# `control_mean_baseline` from `vcell_lib.baselines` takes the training cells and the number of cells to predict per perturbation, and appends the training control cells as the predicted controls.

# %%
cell_counts = real.obs[PERT].value_counts().drop(CONTROL)  # cells to predict
nothing = control_mean_baseline(train, cell_counts)
print(nothing)
print(nothing.obs[PERT].value_counts().head(3).to_string())
print(
    f"X: {nothing.X.dtype}, values from {nothing.X.min():.2f} to {nothing.X.max():.2f}"
)
assert nothing.var_names.equals(real.var_names)
assert set(nothing.obs[PERT]) == set(real.obs[PERT])

# %% [markdown]
# ## The definition
#
# For each perturbation $p$, take the {term}`pseudobulk` of the predicted cells, $\hat{x}_{p}$, and of the real cells, $x_{p}$: one mean log1p value per gene $g$.
# The metric is the mean, over the $G$ genes, of the absolute difference, then the mean over the $K$ perturbations:
#
# $$
# \operatorname{MAE}_p = \frac{1}{G}\sum_{g=1}^{G} \bigl|\hat{x}_{p,g} - x_{p,g}\bigr|,
# \qquad
# \operatorname{MAE} = \frac{1}{K}\sum_{p=1}^{K} \operatorname{MAE}_p .
# $$
#
# Lower is better, and 0 means the two pseudobulks are identical.
# Four details matter:
#
# - the metric compares absolute *levels*, the mean log1p expression itself, not {term}`effect vectors <effect vector>` (the change against control cells);
# - control cells do not enter the formula, so MAE never looks at them (but the evaluator still requires them);
# - every gene counts the same, whether it is highly expressed or barely detected, and whether the perturbation moves it or not;
# - every perturbation counts the same, whether it has 20 cells or 2,000.
#
# In numpy:


# %%
def mae_numpy(pred: ad.AnnData, real: ad.AnnData) -> pd.Series:
    """Per perturbation: mean over genes of |pseudobulk of pred - pseudobulk of real|."""
    perts = sorted(set(real.obs[PERT].astype(str)) - {CONTROL})
    values = {}
    for p in perts:
        bulk_pred = np.asarray(pred[pred.obs[PERT] == p].X.mean(axis=0)).ravel()
        bulk_real = np.asarray(real[real.obs[PERT] == p].X.mean(axis=0)).ravel()
        values[p] = np.mean(np.abs(bulk_pred - bulk_real))
    return pd.Series(values)


per_pert = mae_numpy(nothing, real)
print(per_pert.head(3).round(4).to_string())
print(f"MAE of 'nothing happens': {per_pert.mean():.4f}")

# %% [markdown]
# `vcell_lib.metrics` has the same computation in two forms.
# `mae` takes two pseudobulk tables (perturbations x genes) and returns one value per row.
# `evaluate` takes the two AnnData objects, checks them as the evaluator does, and returns every metric of the next chapters for every perturbation; its `mae` column is this chapter's metric.
# The library reproduces `cell-eval` 0.8.2 to within float32 rounding (for float32 data, cell-eval accumulates each pseudobulk in float64, rounds it to float32, and computes MAE in float32), and the book's tests check it.
# `profile_table` from `vcell_lib.data` makes the tables: chapter 4's pseudobulk as a DataFrame, one row per label (control included), one column per gene.

# %%
real_bulk = profile_table(real)
from_tables = mae(profile_table(nothing).loc[test_perts], real_bulk)
table = evaluate(nothing, real)
print(table[["mae", "mse", "mae_delta"]].head(3).round(4))
assert np.allclose(from_tables, per_pert.loc[test_perts], atol=1e-6)
assert np.allclose(table["mae"], per_pert.loc[table.index], atol=1e-6)

# %% [markdown]
# Two relatives of MAE sit in the same table; the challenge's score does not use them, but they help to read it.
#
# - `mse`, the mean squared error, squares each gene's difference instead of taking its absolute value, so a few large errors weigh much more than many small ones.
# - `mae_delta` compares effect vectors instead of levels: $\frac{1}{G}\sum_g |(\hat{x}_{p,g} - \hat{x}_{\text{ctrl},g}) - (x_{p,g} - x_{\text{ctrl},g})|$, each side against its own control pseudobulk. A shift that moves a side's perturbed and control cells alike cancels out of it.
#
# "Nothing happens" predicts an effect of exactly zero (its perturbed cells equal the mean of its own control cells), so its `mae_delta` is the mean size of the real effects:

# %%
real_delta = real_bulk.loc[test_perts] - real_bulk.loc[CONTROL]
print(f"mean |real effect|: {real_delta.abs().mean(axis=1).mean():.4f}")
print(f"mae_delta of 'nothing happens': {table['mae_delta'].mean():.4f}")
assert np.allclose(table["mae_delta"], real_delta.abs().mean(axis=1), atol=1e-6)

# %% [markdown]
# Which genes make up the MAE?
# The simulator knows which genes each perturbation really affects (a true effect different from zero).
# They are few:

# %%
truth = true_effects(sim).droplevel("cell_type").loc[test_perts]
affected = (truth != 0).to_numpy()  # perturbations x genes
print(
    f"genes affected per test perturbation: median {np.median(affected.sum(1)):.0f} of {truth.shape[1]}"
)
print(f"unaffected (perturbation, gene) pairs: {1 - affected.mean():.1%}")
assert affected.mean() < 0.1

# %% [markdown]
# A perturbation moves a dozen or two genes; the rest stay where the control cells are.
# Since the MAE is a mean over *all* genes, the unaffected ones make up almost all of its terms.
# On those genes a prediction is judged on how well it reproduces the control level and the noise of the real pseudobulk, not on anything the perturbation did.
# The next section shows what that does to the ranking of models.

# %% [markdown]
# ## What MAE rewards: predictions with known quality
#
# We score six predictions of the same real cells:
#
# - **the real cells themselves**: the answer key, as a sanity check;
# - **the true mean**: for every perturbation, copies of its mean profile estimated from a new, much larger sample of the same experiment (a simulation with the same seed and more cells per perturbation has the same perturbations and effects, with new cells), the best a model could know;
# - **an independent sample**: half B, the cells of a perfect simulator of the experiment;
# - **nothing happens**: the control mean of the training cells, as above;
# - **cell mean**: the challenge's baseline, the mean over the training perturbations (and the controls) of their mean profiles;
# - **shuffled labels**: half B again, but each perturbation gets the cells of another one, so every effect is real and attributed to the wrong perturbation.
#
# `prediction_from_profiles` from `vcell_lib.baselines` lays out a prediction from one profile per perturbation: `counts[p]` identical cells for each perturbation $p$, followed by the control cells of an AnnData we pass, as the baselines do (negative values become 0: log1p values cannot be negative).

# %%
ORACLE_CELLS = by_mode(full=1000, fast=400)
big = simulate_perturbseq(
    seed=0,
    n_contexts=1,
    n_perturbations=N_PERTS,
    cells_per_perturbation=ORACLE_CELLS,
    n_control_cells=2 * N_CONTROLS,
)
# Same seed, more cells: the same perturbations and true effects, new cells.
assert np.array_equal(big.uns["truth"]["effect"], sim.uns["truth"]["effect"])
# Normalized to the same total as the real cells, so that levels compare (exercise 2).
big_norm = normalize_log1p(big, target_sum=TARGET_SUM)
oracle_bulk = profile_table(select_perturbations(big_norm, test_perts))

# Each test perturbation receives the cells of the next one in the list.
shift = dict(zip(test_perts, np.roll(test_perts, 1)))
shuffled = resample.copy()
shuffled.obs[PERT] = (
    shuffled.obs[PERT].astype(str).map(lambda x: shift.get(x, x)).astype("category")
)

predictions = {
    "real cells": real,
    "true mean": prediction_from_profiles(oracle_bulk, cell_counts, big_norm),
    "independent sample": resample,
    "nothing happens": nothing,
    "cell mean": cell_mean_baseline(train, cell_counts),
    "shuffled labels": shuffled,
}
results = {name: evaluate(pred, real) for name, pred in predictions.items()}
summary = pd.DataFrame(
    {name: r[["mae", "mse", "mae_delta"]].mean() for name, r in results.items()}
).T
print(summary.round(4).to_string())
# Our numpy version agrees with evaluate on every prediction.
for name, pred in predictions.items():
    assert np.allclose(
        results[name]["mae"], mae_numpy(pred, real).loc[test_perts], atol=1e-6
    )

# %% [markdown]
# Read the `mae` column from top to bottom.
# The real cells score 0, and the true mean scores best of the others; so far, as expected.
# But the independent sample, cells drawn from exactly the right distribution, scores *worse* than "nothing happens" and than the cell-mean baseline, which know nothing about the test perturbations.
# And all the non-trivial predictions lie within a factor of two of each other, the shuffled labels included.
#
# The culprit is noise.
# A pseudobulk of `N_CELLS` cells is the true mean plus sampling noise on every gene.
# The independent sample carries its own noise, independent of the real data's, so on every unaffected gene it pays for both.
# "Nothing happens" is an average over many more control cells, almost noise-free, and on the unaffected genes it is right on average; it pays only on the few genes the perturbation moves.
# Split each prediction's MAE into the part from unaffected genes and the part from affected ones:

# %%
G = real.n_vars
parts = {}
for name, pred in predictions.items():
    error = (
        (profile_table(pred).loc[test_perts] - real_bulk.loc[test_perts])
        .abs()
        .to_numpy()
    )
    parts[name] = {
        "unaffected genes": (error * ~affected).sum(1).mean() / G,
        "affected genes": (error * affected).sum(1).mean() / G,
        "per affected gene": (error * affected).sum() / affected.sum(),
    }
parts = pd.DataFrame(parts).T
print(parts.round(4).to_string())
assert np.allclose(parts["unaffected genes"] + parts["affected genes"], summary["mae"])
mae_of = summary["mae"]
assert mae_of["real cells"] == 0
assert mae_of["true mean"] < mae_of["nothing happens"] < mae_of["independent sample"]
assert mae_of["cell mean"] < mae_of["independent sample"]
assert mae_of["shuffled labels"] == mae_of.max()
ratio = (
    parts.loc["nothing happens", "per affected gene"]
    / parts.loc["independent sample", "per affected gene"]
)
assert ratio > 2
assert mae_of.drop("real cells").max() < 2 * mae_of.drop("real cells").min()
mse_of, delta_of = summary["mse"], summary["mae_delta"]
assert mse_of["independent sample"] < mse_of["nothing happens"]
assert delta_of["nothing happens"] < delta_of["independent sample"]

# %% tags=["hide-input"]
order = list(predictions)[::-1]
fig, ax = plt.subplots(figsize=(7, 3.4))
left = np.zeros(len(order))
for part, colour in (
    ("unaffected genes", PALETTE["control"]),
    ("affected genes", PALETTE["perturbed"]),
):
    values = parts.loc[order, part].to_numpy()
    ax.barh(order, values, left=left, color=colour, label=f"from {part}")
    left += values
ax.set(
    xlabel="MAE (mean over perturbations)",
    title="Where each prediction's MAE comes from",
)
ax.legend(loc="upper right")
ax.grid(axis="y", visible=False)
plt.show()

# %% [markdown]
# On the affected genes, the genes that carry the biology, "nothing happens" is two or more times worse per gene than the independent sample (the `per affected gene` column).
# But they are a few percent of all genes, and the mean over all genes dilutes their weight accordingly.
# The grey bars, the unaffected genes, decide the ranking.
# The shuffled labels lose on both counts: they put real effects where there are none and miss the ones that exist.
#
# The lesson for a model builder: MAE rewards predicting the *mean* of each perturbation's cells with as little noise as possible.
# A generative model that outputs realistic, varied cells adds its own sampling noise to every gene; predicting the same mean profile for every cell of a perturbation removes it.
# The other two columns confirm the diagnosis.
# The mean squared error weighs large errors more, that is the errors on affected genes, and it does rank the independent sample ahead of "nothing happens"; but the challenge uses the absolute error.
# `mae_delta` is no cure: it too averages over all genes, and it too prefers "nothing happens".

# %% [markdown]
# In this simulation each perturbation's effect is its own, so the cell mean, an average over training perturbations, knows little more than "nothing happens".
# Real screens share part of the response between perturbations, {term}`systematic variation` {cite}`vinastorne2025`, and chapter 3's `shared_response` adds it.
# We repeat the two baselines on the same experiment, split and test perturbations with the shared response switched on.


# %%
def mean_baselines(**knobs) -> pd.Series:
    """MAE of "nothing happens" and of the cell mean on the test perturbations, as above."""
    data = simulate_perturbseq(**EXPERIMENT, **knobs)
    target_sum = float(np.median(np.asarray(data.X.sum(axis=1))))
    half_a_k, half_b_k = half_split(
        normalize_log1p(data, target_sum=target_sum), seed=0
    )
    real_k = select_perturbations(half_a_k, test_perts)
    train_k = select_perturbations(half_b_k, train_perts)
    counts_k = real_k.obs[PERT].value_counts().drop(CONTROL)
    return pd.Series(
        {
            name: mae_numpy(build(train_k, counts_k), real_k).mean()
            for name, build in (
                ("nothing happens", control_mean_baseline),
                ("cell mean", cell_mean_baseline),
            )
        }
    )


shared_mae = pd.DataFrame(
    {
        "private effects": mean_baselines(),
        "shared_response=0.3": mean_baselines(shared_response=0.3),
    }
)
shared_mae.loc["cell mean gains"] = (
    shared_mae.loc["nothing happens"] - shared_mae.loc["cell mean"]
)
print(shared_mae.round(4).to_string())
assert np.allclose(
    shared_mae["private effects"].iloc[:2],
    summary.loc[["nothing happens", "cell mean"], "mae"],
)
gains = shared_mae.loc["cell mean gains"]
assert gains["shared_response=0.3"] > 1.5 * gains["private effects"] > 0

# %% [markdown]
# With the shared response, every test perturbation moves a fifth of the genes in a common direction.
# "Nothing happens" misses that on every perturbation; the cell mean has it, averaged from the training perturbations, so its lead over "nothing happens" grows (the last row).
# A baseline that knows nothing about the silenced gene thus gets better exactly where perturbations resemble each other, as on real screens; chapter 8 shows that it gains on the other metrics too, and that a model then has to predict what is specific to each perturbation to beat it.

# %% [markdown]
# ## Shrinking effects toward zero
#
# If noise on unaffected genes costs so much, what about a model that knows the effects but hedges?
# Take the effects measured in the independent sample, $\delta'_p = x'_p - x'_{\text{ctrl}}$ (the prime marks that sample), and predict $x'_{\text{ctrl}} + \alpha\,\delta'_p$ for a factor $\alpha$: $\alpha = 0$ is "nothing happens", $\alpha = 1$ the independent sample's pseudobulk, $\alpha = 2$ doubles every effect (levels below zero are set to zero, since log1p values cannot be negative).
# Because MAE only sees pseudobulks, one predicted cell per perturbation, equal to the profile, would score the same as many copies; we build the copies anyway, in the challenge's format.

# %%
FACTORS = [0.0, 0.5, 1.0, 1.5, 2.0]


def scaled_profiles(bulk: pd.DataFrame, s: float) -> pd.DataFrame:
    """Control profile plus s times each perturbation's effect (control row kept)."""
    control = bulk.loc[CONTROL]
    return pd.concat(
        [control + s * (bulk.loc[test_perts] - control), bulk.loc[[CONTROL]]]
    )


sources = {
    f"effects from {N_CELLS} cells (half B)": profile_table(resample),
    f"effects from {ORACLE_CELLS} cells": oracle_bulk,
}
scaled = pd.DataFrame(
    {
        name: [
            # MAE ignores the control cells: half B's close the prediction
            mae_numpy(
                prediction_from_profiles(
                    scaled_profiles(bulk, s), cell_counts, resample
                ),
                real,
            ).mean()
            for s in FACTORS
        ]
        for name, bulk in sources.items()
    },
    index=pd.Index(FACTORS, name="factor α"),
)
print(scaled.round(4).to_string())

# %%
grid = np.round(np.arange(0, 2.001, 0.05), 2)
curves = {
    name: np.array(
        [
            mae(
                scaled_profiles(bulk, s).loc[test_perts].clip(lower=0), real_bulk
            ).mean()
            for s in grid
        ]
    )
    for name, bulk in sources.items()
}
best = {name: grid[np.argmin(curve)] for name, curve in curves.items()}
print("best factor:", {name: float(value) for name, value in best.items()})
noisy, precise = sources
assert np.isclose(curves[noisy][grid == 1.0][0], scaled.loc[1.0, noisy], atol=1e-6)
assert best[noisy] < 1 and best[noisy] < best[precise]
assert scaled.loc[0.5, noisy] < scaled.loc[1.0, noisy]
assert (scaled.loc[1.5] > scaled.loc[0.5]).all()  # exaggerating costs more

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6, 3.8))
for (name, curve), colour in zip(
    curves.items(), (PALETTE["prediction"], PALETTE["truth"])
):
    ax.plot(grid, curve, color=colour, label=name)
    ax.plot(FACTORS, scaled[name], "o", color=colour)
    ax.plot(best[name], curve.min(), "*", color=colour, markersize=14)
ax.axvline(1, color="black", lw=0.8, ls="--")
ax.set(
    xlabel="factor α applied to every predicted effect",
    ylabel="MAE",
    title="MAE prefers shrunken effects (stars: best s)",
)
ax.legend()
plt.show()

# %% [markdown]
# With effects measured on `N_CELLS` cells, the best factor is well below 1: halving every effect beats predicting it at full size.
# The measured effect is the true effect plus noise, and on the many genes whose true effect is zero, anything other than $\alpha = 0$ adds noise; shrinking trades a little error on the few real effects for less noise on all the others.
# With effects from the much larger sample, the noise is small and the best factor moves toward 1.
# This is {term}`shrinkage`, a classic of statistics; a model trained to minimize an average error on noisy data tends to learn some of it by itself.
# It is also a way to game MAE: a model can lower its MAE by predicting timid effects without knowing any more biology.
# The other two metrics look at effects rather than levels, and later chapters refer back to this section: chapter 6 shows that shrunken predictions lose their discrimination ranks, and chapter 8 blends a baseline with transferred effects, where MAE again prefers the shrunken blend and the other two metrics prefer bold effects.
# Inflated effects ($\alpha > 1$) are punished hard, and quickly: exaggeration costs more than timidity.

# %% [markdown]
# ## The noise floor
#
# Even a model that knows the truth exactly does not reach MAE 0, because the real pseudobulk is itself a noisy sample.
# How large is this {term}`noise floor`?
# The standard error of an estimate is its standard deviation over repeated experiments; for the mean of $n$ independent cells whose values have standard deviation $\sigma$, it is $\sigma / \sqrt{n}$.
# So for gene $g$ with single-cell standard deviation $\sigma_g$ (of its log1p values), the pseudobulk of $n$ real cells has standard error $\sigma_g / \sqrt{n}$.
# If the prediction is an independent pseudobulk of $\hat n$ cells, their difference has standard deviation $\sigma_g \sqrt{1/n + 1/\hat n}$; for a roughly normal difference the expected absolute value is $\sqrt{2/\pi}$ times that.
# Averaging over genes:
#
# $$
# \mathbb{E}[\operatorname{MAE}_p] \approx \sqrt{\tfrac{2}{\pi}}\,\sqrt{\tfrac{1}{n} + \tfrac{1}{\hat n}}\;\frac{1}{G}\sum_g \sigma_{g},
# $$
#
# and for a model that predicts the exact mean, $\hat n = \infty$ and the term $1/\hat n$ disappears.
# We check this by simulating the same experiment (same seed, so the same perturbations and true effects) with more and more cells per perturbation, split into two halves as before: half B predicts half A.
# The MAE of one half against the other is what we call the **half-split noise floor**: the error of a perfect sampler of the experiment, measurable without knowing the truth.


# %%
def predicted_floor(real: ad.AnnData, pred_cells: pd.Series | float) -> pd.Series:
    """Expected MAE of an independent pseudobulk of pred_cells cells, per perturbation of real."""
    labels = real.obs[PERT].astype(str).to_numpy()
    floor = {}
    for p in sorted(set(labels) - {CONTROL}):
        cells = real.X[labels == p]
        cells = cells.toarray() if hasattr(cells, "toarray") else np.asarray(cells)
        m = pred_cells[p] if isinstance(pred_cells, pd.Series) else pred_cells
        sigma = cells.std(axis=0, ddof=1).mean()
        floor[p] = np.sqrt(2 / np.pi) * np.sqrt(1 / len(cells) + 1 / m) * sigma
    return pd.Series(floor)


sweep_sizes = by_mode(full=[10, 25, 50, 100, 200, 400], fast=[10, 40, 160])
sweep, sweep_bulks = [], {}
for n in sweep_sizes:
    data = simulate_perturbseq(
        seed=0,
        n_contexts=1,
        n_perturbations=N_PERTS,
        cells_per_perturbation=2 * n,
        n_control_cells=2 * N_CONTROLS,
    )
    a, b = half_split(normalize_log1p(data), seed=n)
    bulk_a, bulk_b = profile_table(a), profile_table(b)
    sweep_bulks[n] = (bulk_a, bulk_b)
    # "Nothing happens": half B's control mean for every perturbation.
    nothing_bulk = bulk_a.loc[perturbations] * 0 + bulk_b.loc[CONTROL]
    sweep.append(
        {
            "cells": n,
            "independent sample": mae(bulk_b.loc[perturbations], bulk_a).mean(),
            "predicted": predicted_floor(a, float(n)).mean(),
            "true mean (predicted)": predicted_floor(a, np.inf).mean(),
            "nothing happens": mae(nothing_bulk, bulk_a).mean(),
        }
    )
sweep = pd.DataFrame(sweep).set_index("cells")
print(sweep.round(4).to_string())
assert (np.diff(sweep["independent sample"]) < 0).all()
assert np.allclose(sweep["independent sample"], sweep["predicted"], rtol=0.1)
slope = np.polyfit(np.log(sweep.index), np.log(sweep["independent sample"]), 1)[0]
print(f"log-log slope: {slope:.2f} (1/sqrt(n) would be -0.5)")
assert -0.6 < slope < -0.4


# %% tags=["hide-input"]
def plain_log_ticks(axis, ticks) -> None:
    """Label a log axis with plain numbers at the given ticks only."""
    axis.set_major_locator(ticker.FixedLocator(ticks))
    axis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axis.set_minor_formatter(ticker.NullFormatter())


fig, ax = plt.subplots(figsize=(6.2, 4))
cells = sweep.index.to_numpy()
curves = (
    (
        "independent sample",
        "o",
        PALETTE["prediction"],
        "independent sample (simulated)",
    ),
    ("predicted", "-", PALETTE["prediction"], "independent sample (formula)"),
    ("true mean (predicted)", "--", PALETTE["truth"], "exact true mean (formula)"),
    ("nothing happens", "s-", PALETTE["control"], "nothing happens"),
)
for column, style_code, color, label in curves:
    ax.loglog(cells, sweep[column], style_code, color=color, label=label)
ax.set(
    xlabel="real cells per perturbation (n = m)",
    ylabel="MAE",
    title="Even a perfect model has MAE > 0",
)
plain_log_ticks(ax.xaxis, cells)
plain_log_ticks(ax.yaxis, [0.02, 0.03, 0.05, 0.1, 0.2])
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The floor falls like $1/\sqrt{n}$, and the formula predicts it to within a few percent.
# A model that knew the exact mean would sit a factor $\sqrt{2}$ lower, but still above zero: the noise of the real cells is a cost no prediction can avoid.
# "Nothing happens" runs just above the exact-mean line for small $n$: its control mean is nearly noise-free, so it pays only the real cells' noise, plus the few missed effects.
# For large $n$ the missed effects dominate and its curve levels off, until the independent sample overtakes it.
# So an MAE is only meaningful next to the floor for the same number of cells: a model is good when its MAE approaches the floor, not when it approaches zero.
# [Chapter 8](08_baselines_and_score.ipynb) turns half-splits into the {term}`data ceiling` of the other two metrics, corrected to the full number of cells; for MAE it reports no ceiling, so the half-split noise floor of this chapter remains the reference for MAE.

# %% [markdown]
# ## On real data: THP-1 knockouts
#
# The real data have no known truth, but the split-halves trick still works.
# We take chapter 2's THP-1 CRISPR knockout screen {cite}`papalexi2021` (25 targets, 299 genes), split every target's cells and the control cells into two random halves, and treat half A as the real data.
# Half B provides three predictions: its own cells (the half-split noise floor), its control mean ("nothing happens"), and the cell-mean baseline computed from it.
# (Here the baseline averages over all 25 targets, test ones included; with 25 targets, leaving a few out would barely change it.)

# %%
thp1 = normalize_log1p(load_papalexi2021())
thp1_a, thp1_b = half_split(thp1, seed=1)
thp1_perts = sorted(set(thp1.obs[PERT].astype(str)) - {CONTROL})
thp1_counts = thp1_a.obs[PERT].value_counts().drop(CONTROL)
thp1_real = profile_table(thp1_a)
thp1_predictions = {
    "other half": thp1_b,
    "nothing happens": control_mean_baseline(thp1_b, thp1_counts),
    "cell mean": cell_mean_baseline(thp1_b, thp1_counts),
}
thp1_mae = pd.DataFrame(
    {
        name: mae(profile_table(pred).loc[thp1_perts], thp1_real)
        for name, pred in thp1_predictions.items()
    }
)
thp1_mae["formula"] = predicted_floor(thp1_a, thp1_b.obs[PERT].value_counts())
thp1_mae.insert(0, "cells", thp1_counts)
print(thp1_mae.sort_values("cells").round(4).to_string())
print("mean over targets:")
print(thp1_mae.drop(columns="cells").mean().round(4).to_string())
assert np.allclose(thp1_mae["other half"], thp1_mae["formula"], rtol=0.2)
beaten = thp1_mae["nothing happens"] < thp1_mae["other half"]
print(
    f"'nothing happens' beats the other half on {beaten.sum()} of {len(beaten)} targets"
)
assert beaten.mean() > 0.5
assert thp1_mae["other half"].mean() < thp1_mae["nothing happens"].mean()
fewest = thp1_mae.nsmallest(2, "cells")
share = fewest["other half"].sum() / thp1_mae["other half"].sum()
print(f"{' and '.join(fewest.index)}: {share:.0%} of the summed MAE of the other half")
strong = thp1_mae.index[thp1_mae["nothing happens"] > 1.4 * thp1_mae["other half"]]
print("'nothing happens' at least 1.4 times the floor:", ", ".join(strong))
assert set(strong) == {"IFNGR1", "IFNGR2", "JAK2", "STAT1", "SMAD4", "IRF1"}

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 4.4))
n = thp1_mae["cells"].to_numpy()
ax.loglog(
    n,
    thp1_mae["other half"],
    "o",
    color=PALETTE["prediction"],
    label="other half (half-split noise floor)",
)
ax.loglog(
    n,
    thp1_mae["nothing happens"],
    "s",
    color=PALETTE["control"],
    label="nothing happens",
    alpha=0.8,
)
controls_a = thp1_a[thp1_a.obs[PERT] == CONTROL].X.toarray()
sigma_controls = controls_a.std(axis=0, ddof=1).mean()
line = np.geomspace(n.min() * 0.8, n.max() * 1.2, 50)
ax.loglog(
    line,
    np.sqrt(2 / np.pi) * np.sqrt(2 / line) * sigma_controls,
    "--",
    color=PALETTE["prediction"],
    label=r"formula, $\sigma$ of control cells",
)
for target in strong:
    left = target == "JAK2"  # its neighbour IFNGR2 takes the right side
    ax.annotate(
        target,
        (thp1_mae.loc[target, "cells"], thp1_mae.loc[target, "nothing happens"]),
        xytext=(-6 if left else 6, 0),
        textcoords="offset points",
        fontsize=8,
        va="center",
        ha="right" if left else "left",
    )
ax.set(
    xlabel="cells of the target in half A", ylabel="MAE", title="THP-1: MAE per target"
)
plain_log_ticks(ax.xaxis, [25, 50, 100, 200, 400, 800])
plain_log_ticks(ax.yaxis, [0.01, 0.02, 0.03, 0.05, 0.07])
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Two things stand out.
# First, the half-split noise floor of each target follows the formula: the targets with fewest cells (SPI1, MYC) have three to five times the MAE of those with several hundred, whatever a model does.
# Since the challenge averages over perturbations with equal weight, two targets out of 25 make up a large share of the total (printed above).
# Second, "nothing happens" beats the other half, a perfect sampler, on most targets (16 of 25, printed above).
# It loses, and clearly, only on the targets whose knockout changes many genes (labelled): the four links of the interferon-γ signalling chain from chapter 2, SMAD4 and IRF1.
# These few strong targets are enough to put the other half ahead on the mean over targets (0.0195 against 0.0248).
# So on real data, a model's MAE is decided by a handful of strong perturbations and by how little noise it adds everywhere else.
# The challenge's own data have 18,080 genes, many of them barely expressed, which dilutes every difference further (exercise 1).

# %% [markdown]
# ## Summary
#
# - The challenge's MAE is, per perturbation, the mean over genes of |predicted pseudobulk − real pseudobulk| on log1p levels, then the mean over perturbations; control cells do not enter it, every gene and every perturbation weighs the same.
# - A prediction is an AnnData of log1p-normalized cells labelled in `target_gene`, with predicted control cells and exactly the real genes; `vcell_lib.metrics.evaluate` computes MAE, MSE and `mae_delta` as cell-eval does.
# - Most genes do not respond to a perturbation, so MAE mostly measures the noise of the prediction and of the real pseudobulk on unaffected genes: it barely separates good from useless predictions, and on most perturbations "nothing happens" (the control mean) beats a perfect sampler of the experiment, although a few strong perturbations can put the sampler ahead on the mean (THP-1).
# - MAE rewards low-noise mean predictions and effects shrunk toward zero ({term}`shrinkage`), the more so the noisier the effects; exaggerated effects are punished.
# - Even the exact truth has MAE > 0: the noise floor is about $\sqrt{2/\pi}\,\bar\sigma\sqrt{1/n + 1/\hat n}$ and falls like $1/\sqrt{n}$; judge an MAE against the half-split noise floor for the same number of cells (chapter 8 turns half-splits into the data ceiling of the other metrics).

# %% [markdown]
# ## Exercises
#
# **1. Dilution by silent genes.**
# The challenge scores 18,080 genes, many of them almost never detected.
# Add 1,000 genes that are zero in every cell to both sides of the THP-1 comparison.
# What happens to each prediction's MAE, and to their ranking?


# %% tags=["hide-cell"]
# Solution. A gene that is zero on both sides adds a zero term to the mean over genes: every MAE
# is multiplied by G / (G + 1000), and the ranking cannot change.
def with_silent_genes(bulk: pd.DataFrame, k: int = 1000) -> pd.DataFrame:
    silent = pd.DataFrame(
        0.0, index=bulk.index, columns=[f"silent_{i}" for i in range(k)]
    )
    return pd.concat([bulk, silent], axis=1)


diluted = pd.Series(
    {
        name: mae(
            with_silent_genes(profile_table(pred)).loc[thp1_perts],
            with_silent_genes(thp1_real),
        ).mean()
        for name, pred in thp1_predictions.items()
    }
)
original = thp1_mae[list(thp1_predictions)].mean()
print(pd.DataFrame({"299 genes": original, "1,299 genes": diluted}).round(4))
factor = thp1.n_vars / (thp1.n_vars + 1000)
assert np.allclose(diluted, original * factor)
assert list(diluted.sort_values().index) == list(original.sort_values().index)

# %% [markdown]
# **2. The wrong normalization.**
# MAE compares levels, and levels depend on the total each cell is scaled to.
# Normalize the counts of half B of the THP-1 data to a total 20% larger than the median library size that half A was normalized to, and score it against half A with `evaluate`.
# How much do `mae` and `mae_delta` change?

# %% tags=["hide-cell"]
# Solution. A larger total raises every non-zero log1p value, in perturbed and control cells
# alike: MAE pays for the shift on every expressed gene, mae_delta cancels most of it.
median_library = float(np.median(np.asarray(thp1.layers["counts"].sum(axis=1)).ravel()))
counts_b = ad.AnnData(
    X=thp1_b.layers["counts"].copy(),
    obs=thp1_b.obs[[PERT]].copy(),
    var=thp1_b.var[[]].copy(),
)
rescaled = normalize_log1p(counts_b, target_sum=1.2 * median_library)
before = evaluate(thp1_b, thp1_a)[["mae", "mae_delta"]].mean()
after = evaluate(rescaled, thp1_a)[["mae", "mae_delta"]].mean()
print(pd.DataFrame({"same total": before, "total +20%": after}).round(4))
assert after["mae"] > 1.5 * before["mae"]
assert after["mae_delta"] - before["mae_delta"] < 0.2 * (after["mae"] - before["mae"])

# %% [markdown]
# **3. How much to shrink?**
# For each number of cells in the noise-floor sweep, find the factor $\alpha$ (on a grid from 0 to 1.5) that minimizes the MAE of half B's shrunken effects against half A.
# How does the best factor change with the number of cells, and why?

# %% tags=["hide-cell"]
# Solution. With few cells the measured effects are mostly noise, so the best prediction is
# close to "nothing happens"; with many cells they are reliable and the best α approaches 1.
shrink_grid = np.round(np.arange(0, 1.501, 0.05), 2)
best_factor = {}
for n, (bulk_a, bulk_b) in sweep_bulks.items():
    control = bulk_b.loc[CONTROL]
    errors = [
        mae(
            (control + s * (bulk_b.loc[perturbations] - control)).clip(lower=0), bulk_a
        ).mean()
        for s in shrink_grid
    ]
    best_factor[n] = shrink_grid[int(np.argmin(errors))]
print(pd.Series(best_factor, name="best s").rename_axis("cells").to_string())
factors = list(best_factor.values())
assert factors[0] < factors[-1] and factors[0] < 0.5

# %% [markdown]
# **4. The best constant prediction.**
# Suppose a model predicts the same profile for every perturbation.
# Which profile minimizes MAE?
# Compare, on THP-1 half A, the per-gene *mean* of the real pseudobulks over targets with their per-gene *median* (both are oracles: they peek at the real data).

# %% tags=["hide-cell"]
# Solution. For each gene, sum_p |c - x_p| is minimized by the median of the x_p, not the mean:
# the absolute error is the median's loss, as the squared error is the mean's.
targets_real = thp1_real.loc[thp1_perts]
constant = {
    "per-gene mean": targets_real.mean(axis=0),
    "per-gene median": targets_real.median(axis=0),
}
constant_mae = pd.Series(
    {
        name: mae(targets_real * 0 + profile, thp1_real).mean()
        for name, profile in constant.items()
    }
)
print(constant_mae.round(5).to_string())
assert constant_mae["per-gene median"] <= constant_mae["per-gene mean"]

# %% [markdown]
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
