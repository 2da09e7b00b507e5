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
# # Pseudobulk, control matching and splits
#
# Before any model is trained, three decisions about the data quietly fix what it can learn and what its score means.
# What is the target: single cells, or an average over cells?
# Against which control cells is an effect measured?
# And which examples may the model see while training, so that the test really asks the question we care about?
# This chapter answers all three on simulated data, where the true effects are known, and on real CRISPR data.
# It ends with the most expensive mistake in machine learning on biological data, {term}`data leakage`: a test score that looks excellent because the test was, in disguise, part of the training set.

# %% [markdown]
# ```{admonition} Objectives and prerequisites
# :class: tip
# After this chapter you will be able to:
# - compute pseudobulk profiles and effect vectors from single cells, and say what a mean of log1p values does and does not measure;
# - pair perturbed cells with control cells of the same cell type and batch, as the State Transition model does when it builds its training sets;
# - split perturbation data by perturbation and by cell type (with a few examples of the new cell type), and say which of the two the Virtual Cell Challenge is;
# - recognize data leakage, measure how much a leaky split flatters a model, and catch a leaked split with `check_split`.
#
# **Prerequisites:** [chapter 2](02_single_cell_data.ipynb) (AnnData, log1p normalization, the THP-1 CRISPR data) and [chapter 3](03_noise_model.ipynb) (the noise model and the simulator with known truth).
# ```

# %%
import sys

if "google.colab" in sys.modules:  # On Colab only: install the book's library.
    import subprocess

    PACKAGE = "vcell-lib @ git+https://github.com/virtual-cell-book/virtual-cell-book"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PACKAGE], check=True)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from vcell_lib.data import (
    BATCH,
    CELL_TYPE,
    CONTROL,
    PERT,
    Split,
    assign_split,
    check_split,
    load_papalexi2021,
    match_controls,
    normalize_log1p,
    perturbation_effects,
    pseudobulk,
    split_by_context,
    split_by_perturbation,
)
from vcell_lib.env import by_mode, set_seed, versions
from vcell_lib.plotting import PALETTE, style
from vcell_lib.simulate import simulate_perturbseq, true_effects

rng = set_seed(0)
style()
N_PERTS = by_mode(full=30, fast=12)  # VCELL_FAST=1 (the tests) shrinks the data
N_CELLS = by_mode(full=400, fast=100)  # perturbed cells per (cell type, perturbation)
N_CONTROLS = by_mode(full=1000, fast=300)  # control cells per cell type
versions()

# %% [markdown]
# ## One profile per perturbation: the pseudobulk
#
# A single cell is a noisy measurement: as chapter 1 showed, most of a cell's counts are zeros and small integers.
# A perturbation's effect is a property of a *population* of cells.
# This is why the challenge asks a model for predicted populations of cells, one per perturbation (chapter 1), not for a single profile.
# Its evaluator then compares them with the real cells in three ways: the mean absolute error compares the average of the predicted cells of each perturbation with the average of the real ones ([chapter 5](05_mae.ipynb)), the discrimination score compares the changes of these averages from the controls ([chapter 6](06_perturbation_discrimination.ipynb)), and the differential expression score runs statistical tests on the predicted single cells themselves ([chapter 7](07_differential_expression.ipynb)).
# The average of a group of single cells is called a {term}`pseudobulk`: "bulk" because older experiments ground up thousands of cells and measured their total RNA, "pseudo" because here the average is assembled after the fact from single cells.
#
# The recipe the challenge's evaluator uses for these averages is precise {cite}`roohani2025`:
#
# 1. normalize each cell to the same total count (its {term}`library size`) and take $\log(1 + x)$, as in chapter 2;
# 2. average these log1p values over the cells of each group, here each pair (cell type $c$, perturbation $p$), giving the pseudobulk $\bar{x}_{c,p}$, a vector with one entry per gene;
# 3. subtract the pseudobulk of the control cells of the same cell type: the {term}`effect vector` $\delta_{c,p} = \bar{x}_{c,p} - \bar{x}_{c,\text{control}}$.
#
# We start with simulated data from chapter 3's simulator, three cell types (the simulator calls them contexts) with the same perturbations in each, so that we can compare every estimate with the truth.

# %%
sim = simulate_perturbseq(
    seed=0,
    n_contexts=3,
    n_perturbations=N_PERTS,
    cells_per_perturbation=N_CELLS,
    n_control_cells=N_CONTROLS,
)
norm = normalize_log1p(sim)  # X: log1p of library-size-normalized counts
bulk = pseudobulk(norm, by=[CELL_TYPE, PERT])
print(f"{sim.n_obs:,} cells -> {bulk.n_obs} pseudobulk profiles of {bulk.n_vars} genes")
bulk.obs.head(4)

# %% [markdown]
# `pseudobulk` returns an AnnData with one row per group, named `cell type|perturbation`, and the number of cells in each.
# Step 3 is one subtraction per row; here it is by hand for one pair, then with the library function `perturbation_effects`, which does it for every pair and returns a pandas table indexed by (cell type, perturbation).

# %%
first_pert = bulk.obs.loc[bulk.obs[PERT] != CONTROL].iloc[0]
context, pert = first_pert[CELL_TYPE], first_pert[PERT]
by_hand = bulk[f"{context}|{pert}"].X.ravel() - bulk[f"{context}|{CONTROL}"].X.ravel()
effects = perturbation_effects(norm)
np.testing.assert_allclose(effects.loc[(context, pert)].to_numpy(), by_hand)
print(f"delta for {pert} in {context}, first five genes: {np.round(by_hand[:5], 3)}")

# %%
truth = true_effects(sim)  # the simulator's true mean log-effects, same index
delta = effects.loc[truth.index]
r = np.array(
    [np.corrcoef(d, t)[0, 1] for d, t in zip(delta.to_numpy(), truth.to_numpy())]
)
print(
    f"{len(delta)} effect vectors; correlation with the truth: median {np.median(r):.2f}"
)
own = np.array([delta.loc[(c, p), p] for c, p in truth.index])
own_true = np.array([truth.loc[(c, p), p] for c, p in truth.index])
print(
    f"the silenced gene itself: true effect {own_true.mean():.2f}, estimated {own.mean():.2f} (means)"
)
assert np.median(r) > 0.6
assert (own < 0).all() and own.mean() > own_true.mean()  # right sign, smaller size

# Where the true effect of the silenced gene comes from: each cell's CRISPRi efficiency e
perturbed_obs_sim = sim.obs[sim.obs[PERT] != CONTROL]
worked = perturbed_obs_sim.loc[~perturbed_obs_sim["escaped"], "knockdown"]
print(
    f"escaped cells {perturbed_obs_sim['escaped'].mean():.0%}; in the others: mean e {worked.mean():.2f}, "
    f"log(1 - mean e) {np.log1p(-worked.mean()):.2f}, mean log(1 - e) {np.log1p(-worked).mean():.2f}"
)

# %% [markdown]
# The estimates track the truth, but not on the same scale.
# The simulator's truth is the change of the *logarithm of the expression rate*, averaged over the cells of a pair.
# For the silenced gene, a cell with CRISPRi knockdown efficiency $e$ has its log rate lowered by $\log(1-e)$; the simulator's efficiencies average 85% and are capped at 98%, and the 10% of cells whose guide failed (escaped) contribute 0.
# So the truth is $0.9 \times E[\log(1-e)] \approx 0.9 \times (-2.18) = -1.96$, the printed mean.
# That it lies close to $\log(0.15) \approx -1.90$, the log of the mean remaining expression in the cells whose guide worked, is partly a coincidence: two effects nearly cancel, as the last printed line shows on the simulated cells.
# The escapers dilute the mean, from $-2.18$ to $-1.96$.
# In the other direction, $E[\log(1-e)]$ lies below $\log(1 - E[e])$ ({term}`Jensen's inequality`, which returns below), because the cells with the strongest knockdown have a very negative $\log(1-e)$; the cap at 98% limits how far a single cell can pull it.
# The estimated $\delta$ for the same genes is much smaller.
# The reason is the "+1" in $\log(1 + x)$: for a gene with a few counts per cell, $\log(1+x)$ behaves like $x$, not like $\log x$, so a sevenfold drop from 2 counts to 0.3 moves the mean log1p value by much less than $\log 7$.
# The figure shows this shrinkage (left) and how the noise of $\delta$ falls as more cells are averaged (right).
# To measure pure noise we use the genes that a perturbation does not affect at all (true effect exactly 0): whatever $\delta$ shows there is error.

# %%
# A dense copy is fine only for small data like this simulation (at most 39,000 cells x 500
# genes here); never densify a whole real matrix (chapter 2): select cells or genes first.
X = np.asarray(norm.X.todense())
obs = norm.obs
control_mean = {
    c: X[((obs[CELL_TYPE] == c) & (obs[PERT] == CONTROL)).to_numpy()].mean(0)
    for c in truth.index.unique(CELL_TYPE)
}
cells_of = {
    key: np.flatnonzero(((obs[CELL_TYPE] == key[0]) & (obs[PERT] == key[1])).to_numpy())
    for key in truth.index
}
unaffected = truth.abs().to_numpy() < 1e-12
sizes = [n for n in (5, 10, 20, 50, 100, 200, 400) if n <= N_CELLS]
noise = {n: [] for n in sizes}  # root-mean-square delta on unaffected genes, per pair
for n in sizes:
    for i, key in enumerate(truth.index):
        pick = rng.choice(cells_of[key], size=n, replace=False)
        d = X[pick].mean(0) - control_mean[key[0]]
        noise[n].append(np.sqrt(np.mean(d[unaffected[i]] ** 2)))
median_noise = np.array([np.median(noise[n]) for n in sizes])
for n, value in zip(sizes, median_noise):
    print(f"{n:4d} cells: noise {value:.3f}")
assert (np.diff(median_noise) < 0).all()

# %% tags=["hide-input"]
affected = ~unaffected
expression = np.stack([control_mean[c] for c, _ in truth.index])
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
ax = axes[0]
points = ax.scatter(
    truth.to_numpy()[affected],
    delta.to_numpy()[affected],
    c=expression[affected],
    s=8,
    cmap="viridis",
)
lim = [truth.to_numpy()[affected].min() - 0.1, truth.to_numpy()[affected].max() + 0.1]
ax.plot(lim, lim, color=PALETTE["control"], ls="--", lw=1, label="estimate = truth")
ax.set(
    xlabel="true effect (change of log expression rate)",
    ylabel=r"estimated $\delta$ (change of mean log1p)",
    title="Affected genes: shrunk towards 0",
)
fig.colorbar(points, ax=ax, label="control mean log1p expression")
ax.legend(loc="upper left")
ax = axes[1]
ax.loglog(
    sizes, median_noise, "o-", color=PALETTE["perturbed"], label="median over pairs"
)
ax.loglog(
    sizes,
    median_noise[0] * np.sqrt(sizes[0] / np.array(sizes)),
    ls="--",
    color=PALETTE["control"],
    label=r"$\propto 1/\sqrt{n}$",
)
ax.set(
    xlabel="perturbed cells averaged, n",
    ylabel=r"RMS $\delta$ on unaffected genes",
    title="Noise falls with the number of cells",
)
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# On the left, the brightest points (well-expressed genes) lie near the diagonal and the dark points (genes with few counts) are flattened towards zero.
# On the right, the noise falls like $1/\sqrt{n}$, the standard error of a mean, until it bends away from the line: the control pseudobulk has its own noise, which more perturbed cells cannot remove (exercise 1).
# With a handful of cells, the noise on hundreds of unaffected genes is as large as many real effects; this is why effects are estimated from populations of hundreds of cells (the challenge's training data has more than a thousand cells per perturbation on average), not from single cells.
#
# ### The mean of log1p is not the log of the mean
#
# Averaging *after* the logarithm is a deliberate choice, and it has a consequence worth seeing once.
# Two groups of four cells, both with a mean of one count:

# %%
bursty_cells = np.array([0.0, 0.0, 0.0, 4.0])
steady_cells = np.array([1.0, 1.0, 1.0, 1.0])
for name, x in (("bursty", bursty_cells), ("steady", steady_cells)):
    print(
        f"{name}: mean {x.mean():.2f}, log1p(mean) {np.log1p(x.mean()):.3f}, mean(log1p) {np.log1p(x).mean():.3f}"
    )

control_A = ((obs[CELL_TYPE] == "context_A") & (obs[PERT] == CONTROL)).to_numpy()
counts_normalized = np.expm1(X[control_A])  # undo log1p: normalized counts
gap = np.log1p(counts_normalized.mean(0)) - X[control_A].mean(0)
print(
    f"control cells of context_A, per gene: log1p(mean) - mean(log1p): median {np.median(gap):.3f}, max {gap.max():.3f}"
)
assert (gap >= -1e-6).all()  # Jensen's inequality: log1p is concave

# %% [markdown]
# Same mean, different mean of log1p: the average of a concave function is at most the function of the average ({term}`Jensen's inequality`), and the gap grows with the spread of the values.
# So a mean of log1p values mixes the level of a gene with its cell-to-cell variability, and $\delta$ is not a log fold change of mean expression.
# A perturbation that made a gene burstier without changing its mean would still move $\delta$.
# None of this is wrong: $\delta$ is simply the quantity the challenge scores, and a model must predict *that*.
# But do not read $\delta = -0.5$ as "the gene fell by 40%".

# %% [markdown]
# ## Real effects: THP-1 cells
#
# On real data there is no truth to compare with, only the estimates.
# The THP-1 data from chapter 2 {cite}`papalexi2021` has 25 knocked-out genes and 299 measured genes, all in one cell type.
# Chapter 2 drew every knockout's $\delta$ as a heat map; here we list the largest single effects, and the knocked-out genes' own mRNA among the 30 genes that respond most.

# %%
real = normalize_log1p(load_papalexi2021())
real_delta = perturbation_effects(real).droplevel(CELL_TYPE)
top_genes = real_delta.abs().max(axis=0).sort_values(ascending=False).index[:30]
print(f"{real_delta.shape[0]} perturbations x {real_delta.shape[1]} genes")
print("strongest single effects:")
print(real_delta.stack().sort_values().iloc[[0, 1, 2, -3, -2, -1]].round(2).to_string())
own_mrna = pd.Series(
    {g: real_delta.loc[g, g] for g in real_delta.index if g in top_genes}
)
print("targets among these genes, delta of their own mRNA in their own knockout:")
print(own_mrna.sort_values().round(2).to_string())
assert (own_mrna < 0).all()
print("STAT1 and JAK2 mRNA in the knockouts of the interferon chain:")
print(real_delta.loc[["STAT1", "JAK2", "IFNGR1", "IFNGR2"], ["STAT1", "JAK2"]].round(2))
assert (real_delta.loc["IFNGR1", ["STAT1", "JAK2"]] < -0.4).all()

# %% [markdown]
# The strongest effects belong to the interferon-γ signalling chain that chapter 2's heat map shows as one block of four rows.
# The knockouts of its receptor (IFNGR1 and IFNGR2), of the kinase JAK2 and of the transcription factor STAT1 lower the same {term}`interferon-stimulated genes <interferon-stimulated gene>`, STAT1, PSMB9 and UBE2L6 among them, and raise a few others, NFKBIA for one, because they break the same pathway.
# Nine of the 30 genes that respond most are also targets, and each falls in its own knockout.
# For most of them the drop is modest: a knockout's mRNA often survives, only partly destroyed (chapter 1).
# STAT1 and JAK2 fall much further, but much of their drop is not the knockout acting on their own mRNA.
# Both genes are themselves switched on by interferon, so breaking the pathway anywhere lowers them: the knockout of the receptor IFNGR1, which leaves both genes intact, lowers them too (last table, and chapter 2).
# Most of the other knockouts change little that these 299 genes can show.
# A model must predict strong and weak effects alike, and a good first check of any prediction is whether it reproduces the block structure of chapter 2's heat map.

# %% [markdown]
# ## Which controls? Same cell type, same batch
#
# A control pseudobulk is only a fair reference if the control cells differ from the perturbed cells *only* by the perturbation.
# Cell types differ in thousands of genes, so controls must come from the same cell type.
# Within a cell type, cells are processed in batches (a day, a chip, a sequencing run), and each batch shifts many genes a little: a {term}`batch effect`.
# If the controls and the perturbed cells are spread over the batches in the same proportions, the shifts cancel in $\delta$.
# If not, the batch effect leaks into $\delta$.
#
# We simulate a strong batch effect (`batch_sd=0.4`, four times the default) and then make the design unbalanced: most control cells of batch 1 are lost, as happens when a batch fails quality control for part of its cells.

# %%
sim_b = simulate_perturbseq(
    seed=1,
    n_contexts=2,
    batch_sd=0.4,
    n_perturbations=N_PERTS,
    cells_per_perturbation=by_mode(full=200, fast=80),
    n_control_cells=N_CONTROLS,
)
lost = (
    (sim_b.obs[PERT] == CONTROL).to_numpy()
    & (sim_b.obs[BATCH] == "batch_1").to_numpy()
    & (np.random.default_rng(1).random(sim_b.n_obs) < 0.8)
)
norm_b = normalize_log1p(sim_b[~lost].copy())
pd.crosstab(
    np.where(norm_b.obs[PERT] == CONTROL, "control", "perturbed"), norm_b.obs[BATCH]
)

# %% [markdown]
# Three estimates of every $\delta$, from three choices of controls:
#
# - all control cells, of every cell type;
# - for each perturbed cell, one control cell drawn at random from the same cell type, with `match_controls(same_batch=False)`;
# - for each perturbed cell, one control cell drawn at random from the same cell type *and* batch, with `match_controls(same_batch=True)`; these matched controls have the same batch mix as the perturbed cells.
#
# We score each against the truth on the unaffected genes, where any nonzero value is error.

# %%
Xb = np.asarray(norm_b.X.todense())  # small simulated data only: see the note above
obs_b = norm_b.obs
truth_b = true_effects(sim_b)
unaffected_b = truth_b.abs().to_numpy() < 1e-12
is_control = (obs_b[PERT] == CONTROL).to_numpy()
# Series: perturbed cell name -> name of its matched control cell
matched = {
    "same cell type": match_controls(norm_b, same_batch=False, seed=0),
    "same cell type and batch": match_controls(norm_b, same_batch=True, seed=0),
}
row_of = pd.Series(np.arange(norm_b.n_obs), index=norm_b.obs_names)

errors = {"all controls": [], "same cell type": [], "same cell type and batch": []}
for i, (c, p) in enumerate(truth_b.index):
    cells = ((obs_b[CELL_TYPE] == c) & (obs_b[PERT] == p)).to_numpy()
    perturbed_mean = Xb[cells].mean(0)
    references = {"all controls": Xb[is_control].mean(0)}
    for name, partner_of in matched.items():
        partners = row_of[partner_of[norm_b.obs_names[cells]]].to_numpy()
        references[name] = Xb[partners].mean(0)
    for name, reference in references.items():
        errors[name].append(np.abs(perturbed_mean - reference)[unaffected_b[i]].mean())
for name, values in errors.items():
    print(f"{name:25s} mean absolute error on unaffected genes: {np.mean(values):.3f}")
mean_error = {name: np.mean(values) for name, values in errors.items()}
assert (
    mean_error["all controls"]
    > mean_error["same cell type"]
    > mean_error["same cell type and batch"]
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3.4))
colors = [PALETTE["control"], PALETTE["accent"], PALETTE["truth"]]
for k, values in enumerate(errors.values()):
    jitter = np.random.default_rng(k).uniform(-0.15, 0.15, len(values))
    ax.scatter(values, k + jitter, s=10, alpha=0.6, color=colors[k])
    ax.plot([np.mean(values)] * 2, [k - 0.3, k + 0.3], color="black", lw=2)
ax.set_yticks(
    range(len(errors)),
    [
        "vs all controls",
        "vs matched: same cell type",
        "vs matched: same cell type\nand batch",
    ],
)
ax.set(
    xlabel=r"mean |error of $\delta$| on unaffected genes (one dot per pair)",
    title="The reference decides the error (black: mean)",
    xlim=(0, None),
)
ax.invert_yaxis()
fig.tight_layout()
plt.show()

# %% [markdown]
# Pooling cell types is a gross error: the difference between cell types is read as a perturbation effect.
# Within the cell type, the unbalanced batches add a systematic error to *every* perturbation, the same shift each time; matching the batch removes it.
# Both matched estimates draw one partner per perturbed cell and so carry the same sampling noise: the gap between them is the batch effect alone.
# Had the design been balanced, the batch shifts would have cancelled and the same-cell-type controls alone would have done: matching by batch is insurance against designs you did not choose.
#
# ### Batches in the real data
#
# The THP-1 cells come from three biological replicates, run as separate experiments, and chapter 2 found that the cells of `rep_1` have smaller libraries and partly sit apart from the others in its UMAP.
# Normalization removes the difference in library size, but not every difference between replicates.
# Is the THP-1 design balanced enough for it not to matter?
# Over many epochs, the batch-matched controls of a knockout average to each replicate's control pseudobulk weighted by the share of the knockout's cells in that replicate (exercise 2), so we can compute the batch-matched $\delta$ exactly, without drawing partners.

# %%
replicate = real.obs[BATCH].astype(str)
is_control_real = (real.obs[PERT] == CONTROL).to_numpy()
control_by_replicate = pd.DataFrame(
    {
        b: np.asarray(
            real.X[is_control_real & (replicate == b).to_numpy()].mean(0)
        ).ravel()
        for b in sorted(replicate.unique())
    },
    index=real.var_names,
).T  # one control pseudobulk per replicate (the sparse mean: no dense copy)
control_mix = replicate[is_control_real].value_counts(normalize=True).sort_index()
mix = pd.crosstab(real.obs[PERT], replicate, normalize="index").drop(index=CONTROL)
pooled_reference = control_mix @ control_by_replicate  # the mean of all controls
matched_reference = mix @ control_by_replicate  # one row per knockout
error = matched_reference - pooled_reference  # delta(all controls) - delta(matched)
matched_delta = real_delta - error.loc[real_delta.index]

rep_1_vs_rest = (
    control_by_replicate.loc["rep_1"]
    - (control_by_replicate.drop(index="rep_1").T @ control_mix.drop("rep_1"))
    / control_mix.drop("rep_1").sum()
)
print("control cells, rep_1 minus the other replicates (mean log1p), largest genes:")
print(rep_1_vs_rest[rep_1_vs_rest.abs().nlargest(6).index].round(2).to_string())
print(
    f"share of cells in rep_1: controls {control_mix['rep_1']:.0%}, "
    f"knockouts {mix['rep_1'].min():.0%} ({mix['rep_1'].idxmin()}) to "
    f"{mix['rep_1'].max():.0%} ({mix['rep_1'].idxmax()})"
)
print("STAT1 knockout, delta against all controls and against batch-matched controls:")
print(
    pd.DataFrame(
        {"all controls": real_delta.loc["STAT1"], "matched": matched_delta.loc["STAT1"]}
    )
    .loc[["NFKBIA", "MT-ATP8", "TMA7"]]
    .round(2)
    .to_string()
)
assert np.allclose(
    pooled_reference, np.asarray(real.X[is_control_real].mean(0)).ravel(), atol=1e-5
)
assert error.loc["STAT1", "NFKBIA"] > 0.05
assert np.corrcoef(mix["rep_1"], error["NFKBIA"])[0, 1] > 0.9

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), width_ratios=(1, 1.4))
gene_colors = {"NFKBIA": PALETTE["perturbed"], "MT-ATP8": PALETTE["prediction"]}
ax = axes[0]
top = rep_1_vs_rest[rep_1_vs_rest.abs().nlargest(8).index].sort_values()
ax.barh(
    top.index,
    top.to_numpy(),
    color=[gene_colors.get(g, PALETTE["control"]) for g in top.index],
)
ax.axvline(0, color="black", lw=0.8)
ax.set(
    xlabel="mean log1p, rep_1 controls minus the others",
    title="Replicate rep_1 differs",
)
ax = axes[1]
for gene, color in gene_colors.items():
    ax.scatter(mix["rep_1"], error[gene], s=18, color=color, label=gene)
for knockout, offset in (("STAT1", (-45, -2)), ("PDCD1LG2", (12, -16))):
    ax.annotate(
        knockout,
        (mix.loc[knockout, "rep_1"], error.loc[knockout, "NFKBIA"]),
        xytext=offset,
        textcoords="offset points",
        fontsize=8,
        arrowprops={"arrowstyle": "-", "lw": 0.6},
    )
ax.axvline(control_mix["rep_1"], color=PALETTE["control"], ls="--", lw=1)
ax.text(
    control_mix["rep_1"],
    ax.get_ylim()[0],
    " controls' share",
    color=PALETTE["control"],
    va="bottom",
    fontsize=8,
)
ax.axhline(0, color="black", lw=0.8)
ax.set(
    xlabel="share of the knockout's cells in rep_1",
    ylabel=r"$\delta$(all controls) $-$ $\delta$(matched)",
    title="Error of pooled controls, one dot per knockout",
)
ax.legend(loc="center right")
fig.tight_layout()
plt.show()

# %% [markdown]
# Even after normalization, the controls of `rep_1` differ from those of the other replicates by as much as 0.63 on a single gene, the mitochondrial MT-ATP8, and by 0.43 on NFKBIA.
# The knockouts are not spread over the replicates like the controls, and several of the strongest ones have more than half of their cells in `rep_1`.
# Against pooled controls, each of them inherits a share of the replicate difference: on the right, the error grows in proportion to how far a knockout's share in `rep_1` lies from the controls' share, and vanishes where the two agree.
# For the STAT1 knockout, pooled controls overstate the rise of NFKBIA (0.45 against 0.38 with matched controls) and understate that of MT-ATP8.
# Errors of this size, up to about 0.1, are comparable to the weaker own-mRNA drops printed in the previous section.
# The large interferon effects stand either way; for the many small effects, the choice of controls can change the answer.
#
# ### Matched sets: how State builds its training examples
#
# Pairing each perturbed cell with a control cell is not only a way to estimate $\delta$: it is how the State Transition model (ST), which a later chapter builds, sees the data {cite}`adduri2025`.
# There is no "before" picture of a perturbed cell, because sequencing destroys the cell; the best stand-in is a random control cell of the same kind.
# One training example is a *set* of perturbed cells that share a cell type and a perturbation, each paired with a control cell drawn at random from the same cell type (optionally the same batch).
# The model reads the set of controls and the perturbation, and must output the set of perturbed cells; its loss compares the two sets as distributions, not partner by partner.
# The pairing carries no information (any control would do), so it is redrawn every epoch: the model cannot memorize partners and sees fresh control cells each time.
# With `match_controls`, a new epoch is a new seed.

# %%
epoch_0 = match_controls(norm_b, same_batch=True, seed=0)
epoch_1 = match_controls(norm_b, same_batch=True, seed=1)
print(
    pd.DataFrame({"epoch 0 partner": epoch_0, "epoch 1 partner": epoch_1})
    .head(4)
    .to_string()
)
same = (epoch_0 == epoch_1).mean()
print(f"perturbed cells with the same partner in both epochs: {same:.1%}")
partner_obs = obs_b.loc[epoch_0.to_numpy()]
assert (partner_obs[PERT] == CONTROL).all()
assert (
    partner_obs[BATCH].to_numpy() == obs_b.loc[epoch_0.index, BATCH].to_numpy()
).all()
assert same < 0.05

# %% [markdown]
# ## Splits: what does "unseen" mean?
#
# The challenge asks a model to predict perturbations nobody has measured in that cell type.
# A test set answers that question only if it is built to: the unit of a split is not a cell but a (cell type, perturbation) pair.
# The library represents a split as a `Split`, three disjoint sets of such pairs: `train` (the model learns from their cells), `val` (used to tune and to stop training) and `test` (touched once, at the end).
# Control cells are not in any part: every part uses them as its reference.
#
# Two kinds of split matter here.
#
# - `split_by_perturbation` holds out whole perturbations, in every cell type: can the model predict the effect of silencing a gene it has never seen silenced?
# - `split_by_context` holds out one cell type: every perturbation of the other cell types is in training, and of the new cell type only a `few_shot` fraction is (a {term}`few-shot` setting; with `few_shot=0` it is *zero-shot*). Can the model transfer what it learned to a new cell type, helped by a few examples there?

# %%
by_perturbation = split_by_perturbation(norm, val=0.15, test=0.15, seed=0)
by_context = split_by_context(norm, "context_C", few_shot=0.5, val=1 / 6, seed=0)
for name, split in (("by perturbation", by_perturbation), ("by context", by_context)):
    sizes_ = {part: len(getattr(split, part)) for part in ("train", "val", "test")}
    print(f"{name:16s} pairs: {sizes_}")
labels = assign_split(norm, by_context)  # one label per cell
pd.crosstab(labels, norm.obs[CELL_TYPE])

# %% [markdown]
# `assign_split` turns a split into a label per cell: "train", "val", "test", or "control".
# The table shows the context split: the first two cell types are entirely training data, and the held-out one is divided between all four labels.
# The figure draws both splits as grids of pairs.

# %% tags=["hide-input"]
contexts = list(truth.index.unique(CELL_TYPE))
perts = sorted(truth.index.unique(PERT))
part_code = {"train": 0, "val": 1, "test": 2}
part_colors = [PALETTE["prediction"], PALETTE["accent"], PALETTE["perturbed"]]
fig, axes = plt.subplots(2, 1, figsize=(10, 4.6), sharex=True)
for ax, (name, split) in zip(
    axes,
    (
        ("split_by_perturbation: unseen perturbations", by_perturbation),
        (
            "split_by_context('context_C', few_shot=0.5, val=1/6): an unseen cell type",
            by_context,
        ),
    ),
):
    grid = np.full((len(contexts), len(perts)), np.nan)
    for part, code in part_code.items():
        for c, p in getattr(split, part):
            grid[contexts.index(c), perts.index(p)] = code
    ax.imshow(grid, cmap=ListedColormap(part_colors), vmin=0, vmax=2, aspect="auto")
    ax.set_yticks(range(len(contexts)), contexts)
    ax.set_xticks(np.arange(len(perts) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(contexts) + 1) - 0.5, minor=True)
    ax.grid(False)
    ax.grid(which="minor", color="white", lw=1)
    ax.tick_params(which="minor", length=0)
    ax.set_title(name, loc="left")
axes[1].set_xticks(range(len(perts)), perts, rotation=90, fontsize=7)
axes[1].set_xlabel("perturbation (silenced gene)")
fig.legend(
    handles=[Patch(color=col, label=part) for part, col in zip(part_code, part_colors)],
    loc="upper right",
    ncol=3,
)
fig.tight_layout(rect=(0, 0, 1, 0.93))
plt.show()

# %% [markdown]
# The two splits test different abilities.
# In the perturbation split, a test column is unseen in every cell type: the model must infer a new gene's effect from what it knows about genes.
# In the context split, every test perturbation was measured in the two other cell types, and the question is how its effect changes in a new one.
#
# Which of the two is the Virtual Cell Challenge {cite}`roohani2025`?
# In H1 human embryonic stem cells, 300 genes were silenced with CRISPRi: the training data gives the cells of 150 of them, 50 more formed the validation set of the live leaderboard, and the last 100 were the final test.
# With only the challenge's data, that is a perturbation split within one cell type: `split_by_perturbation` with a validation share of 1/6 and a test share of 1/3.
# The 150 training perturbations then play the role of the few-shot examples: they show how H1 cells respond, but say nothing directly about the 150 held-out genes.
# It becomes a context split when a team adds public Perturb-seq data from other cell types, such as the screens of {cite}`replogle2022`, whose genome-scale screen in K562 cells silenced nearly every expressed gene.
# A held-out H1 gene may then have been measured in another cell type, and the question becomes, in this chapter's terms, `split_by_context(data, "H1", few_shot=0.5, val=1/6)`: how does a known effect change in a new cell type?

# %% [markdown]
# ## Leakage: when the test is secretly in the training set
#
# {term}`Data leakage <data leakage>` is any route by which information about the test set reaches the model, or the choices made about the model, before the final evaluation {cite}`kaufman2011`.
# The model then scores well on a question that differs from the one we meant to ask, and the score does not carry over to truly new data.
# In perturbation modelling it sneaks in through doors that look harmless:
#
# - **A random split of cells.** The standard recipe of shuffling examples and cutting puts cells of every perturbation on both sides. The model then only needs to recognize a perturbation, not predict one.
# - **Different guides of the same gene.** Each gene is usually targeted by several {term}`guide RNAs <guide RNA>`. Holding out guides instead of genes is a random split in disguise, because guides of the same gene have nearly the same effect (exercise 3).
# - **Statistics computed on all cells.** Gene selection (keeping "the most responsive genes"), normalization constants, scaling, PCA or embeddings fitted on every cell see the test cells. Choosing genes by their response to test perturbations is the worst of these: it tells the model where to look.
# - **Tuning on the test set.** Early stopping, picking a checkpoint, a learning rate or a random seed by the test score turns the test into a validation set, and its score into an optimistic one (exercise 4).
#
# ### A model that memorizes
#
# To see the size of the effect, take a model that learns nothing general: a lookup table.
# For a test pair (cell type, perturbation) it returns the $\delta$ measured for the same pair in training if there is one; otherwise the average $\delta$ of the same perturbation in other cell types; otherwise the average $\delta$ of all training pairs, the same guess for every unseen perturbation.
# We evaluate it under three splits of the simulated data:
#
# - a random split of the perturbed cells (half to train, half to test): leaky;
# - the context split above (the test perturbations of context_C were measured in the other cell types): honest, and the lookup table *transfers*;
# - the perturbation split above: honest, and the lookup table has nothing to look up.
#
# Two scores, both computed on the test pairs: the Pearson correlation between predicted and observed $\delta$ (median over pairs), and a simplified version of the challenge's *perturbation discrimination*: for each test pair, rank the $K$ observed test effects of the same cell type by their L1 distance to the prediction, and score $1 - \text{rank}/(K-1)$, where rank counts the other perturbations that lie strictly closer.
# A prediction nearest to its own perturbation's effect scores 1, one nearest to every other effect scores 0, and guessing scores 0.5 on average.
# The challenge's own score, built in [chapter 6](06_perturbation_discrimination.ipynb) and available as `vcell_lib.metrics.discrimination_score`, differs in three details: it leaves out the column of the silenced gene, it divides a 0-based rank by $K$ rather than $K-1$, and it breaks ties by position rather than in the prediction's favour.
# Both compare signed effects, and for the question here the simplified score is clearer: a prediction that is the same for every perturbation scores exactly 0.5, while ties and the division by $K$ move the challenge's score away from 0.5 when there are few perturbations (chapter 6 explains why chance is not exactly 0.5 there).
# Controls are split in half, one half as the training reference and the other as the test reference, so that the two sides share no noise.


# %%
def lookup_model(train: pd.DataFrame, index: pd.MultiIndex) -> pd.DataFrame:
    """Memorize training deltas; fall back to other cell types, then to the training mean."""
    same_pert = train.groupby(level=PERT).mean()
    rows = []
    for c, p in index:
        if (c, p) in train.index:
            rows.append(train.loc[(c, p)].to_numpy())
        elif p in same_pert.index:
            rows.append(same_pert.loc[p].to_numpy())
        else:
            rows.append(train.mean().to_numpy())
    return pd.DataFrame(rows, index=index, columns=train.columns)


def median_pearson(pred: pd.DataFrame, observed: pd.DataFrame) -> float:
    pairs = zip(pred.loc[observed.index].to_numpy(), observed.to_numpy())
    return float(np.median([np.corrcoef(a, b)[0, 1] for a, b in pairs]))


def discrimination(pred: pd.DataFrame, observed: pd.DataFrame) -> float:
    """Mean of 1 - rank/(K - 1), ranking observed effects of the same cell type by L1 distance."""
    scores = []
    for c in observed.index.unique(CELL_TYPE):
        obs_c = observed.xs(c, level=CELL_TYPE, drop_level=False)
        if len(obs_c) < 2:  # nothing to tell apart
            continue
        pred_c = pred.loc[obs_c.index].to_numpy()
        distance = np.abs(pred_c[:, None, :] - obs_c.to_numpy()[None, :, :]).sum(-1)
        rank = (distance < np.diag(distance)[:, None]).sum(1)  # closer wrong answers
        scores += list(1 - rank / (len(obs_c) - 1))
    return float(np.mean(scores))


halves = np.random.default_rng(2).random(norm.n_obs) < 0.5  # one coin per cell
is_control_sim = (norm.obs[PERT] == CONTROL).to_numpy()


def train_test_effects(train_cells: np.ndarray, test_cells: np.ndarray):
    """Effects of the training and test cells, each against its own half of the controls."""
    train = perturbation_effects(norm[train_cells | (is_control_sim & halves)])
    test = perturbation_effects(norm[test_cells | (is_control_sim & ~halves)])
    return train, test


leak_scores = {}
random_train = ~is_control_sim & halves
setups = {
    "random cells (leaky)": (random_train, ~is_control_sim & ~halves),
}
for name, split in (
    ("context split (honest)", by_context),
    ("perturbation split (honest)", by_perturbation),
):
    cell_labels = assign_split(norm, split).to_numpy()
    setups[name] = (cell_labels == "train", cell_labels == "test")
for name, (train_cells, test_cells) in setups.items():
    train, test = train_test_effects(train_cells, test_cells)
    pred = lookup_model(train, test.index)
    leak_scores[name] = (median_pearson(pred, test), discrimination(pred, test))
    print(
        f"{name:28s} Pearson {leak_scores[name][0]:.2f}  discrimination {leak_scores[name][1]:.2f}"
        f"  ({len(test)} test pairs)"
    )
leaky_pearson, leaky_discrimination = leak_scores["random cells (leaky)"]
honest_pearson, honest_discrimination = leak_scores["perturbation split (honest)"]
assert leaky_discrimination > 0.9
assert abs(honest_discrimination - 0.5) < 0.01  # one guess for all: chance
assert leaky_pearson > honest_pearson + 0.3

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
names = list(leak_scores)
bar_colors = [PALETTE["perturbed"], PALETTE["prediction"], PALETTE["control"]]
for ax, k, title in zip(
    axes,
    (0, 1),
    ("Pearson of predicted and observed delta", "Perturbation discrimination"),
):
    values = [leak_scores[name][k] for name in names]
    ax.barh(names, values, color=bar_colors)
    for y, v in enumerate(values):
        ax.text(v + 0.01, y, f"{v:.2f}", va="center")
    ax.set(title=title, xlim=(0, 1.12))
axes[1].axvline(0.5, color="black", ls=":", lw=1, label="chance")
axes[1].legend(loc="lower right")
axes[0].invert_yaxis()
fig.suptitle("The same lookup table, three splits", y=1.02)
fig.tight_layout()
plt.show()

# %% [markdown]
# Under the random split, the lookup table identifies almost every test perturbation: it has seen the answer.
# Its Pearson correlation is well below 1 only because half the cells give a noisy $\delta$ on hundreds of unaffected genes.
# Under the perturbation split, it has nothing to look up: its one guess for all test perturbations cannot tell them apart, and its discrimination is exactly that of chance.
# Its correlation is zero because the simulated perturbations share nothing; in real data the average training effect often does correlate with a new perturbation's effect, since many perturbations share a common response, and later chapters take that baseline seriously.
# The context split scores high too, in the same range as the leaky split, and honestly: the effect of a gene in other cell types is legitimate information, and it transfers here because our simulated cell types share most of their regulatory network.
# It also has the fewest test pairs, so its scores are the least precise of the three.
# A context split is only as hard as the held-out cell type is different from the training ones.
# Which split is "right" depends on the question; what is never right is to report the first number as an answer to the third question.
#
# ### Catching a leaked split
#
# `check_split` enforces the basic rule at the level of pairs: no (cell type, perturbation) pair may be in two parts, and every pair must exist in the data.
# `assign_split` calls it, so a leaked split cannot even be turned into cell labels.
# Written as pairs, a random split of cells puts every pair in both train and test:

# %%
all_pairs = frozenset((str(c), str(p)) for c, p in truth.index)
leaky = Split(train=all_pairs, val=frozenset(), test=all_pairs)
try:
    check_split(norm, leaky)
except ValueError as error:
    message = str(error)
print(message)
assert message.startswith("leakage")
check_split(norm, by_perturbation)  # the honest splits pass silently
check_split(norm, by_context)

# %% [markdown]
# A check on pairs cannot see everything.
# It sees two guides of one gene as one perturbation only because the book's standard form labels cells by their target gene, not by their guide; it does not see statistics computed on all cells; and it cannot know what you looked at while tuning.
# Normalization is a small example of the third kind: `normalize_log1p` scales every cell to the median library size of *the cells it is given*, so normalizing the whole data set lets test cells set a constant used in training.

# %%
library_size = np.asarray(sim.X.sum(axis=1)).ravel()
split_labels = assign_split(sim, by_perturbation).to_numpy()
seen = np.isin(split_labels, ["train", "val", "control"])
median_all, median_seen = np.median(library_size), np.median(library_size[seen])
print(
    f"median library size: all cells {median_all:.0f}, cells seen in training {median_seen:.0f}"
)
# The constant comes from the training side and is passed to both sides.
norm_train = normalize_log1p(sim[seen].copy(), target_sum=median_seen)
norm_test = normalize_log1p(sim[~seen].copy(), target_sum=median_seen)
for part in (norm_train, norm_test):
    totals = np.expm1(part.X[:5].toarray()).sum(1)
    assert np.allclose(totals, median_seen, rtol=1e-4)

# %% [markdown]
# Here the two medians barely differ, and the leak is harmless.
# The habit is what matters: compute every statistic on the training side, then pass it explicitly (`target_sum=...`) to the test side, so that the pipeline stays honest when the statistic is one that does matter, such as a list of responsive genes.

# %% [markdown]
# ## Summary
#
# - The challenge asks for predicted cells: its evaluator averages them into pseudobulks, the mean of log1p-normalized expression over the cells of one (cell type, perturbation), for the mean absolute error, compares their effect vectors $\delta = \bar{x}_{c,p} - \bar{x}_{c,\text{control}}$ for perturbation discrimination, and tests the predicted single cells for differential expression (chapters 5 to 7).
# - The noise of $\delta$ falls like $1/\sqrt{n}$ with the number of cells, down to a floor set by the control cells; $\delta$ shrinks the effects of weakly expressed genes, and, being a mean of logs, it is not a log fold change.
# - Controls must match the perturbed cells' cell type, and, when batches are unbalanced, their batch: otherwise the difference between groups is read as an effect; in the THP-1 data, pooled controls shift some effects by up to about 0.1.
# - State's Transition model learns from sets of perturbed cells, each paired with a random control of the same cell type (and batch), redrawn every epoch.
# - Splits are made of (cell type, perturbation) pairs: `split_by_perturbation` tests unseen perturbations and `split_by_context` an unseen cell type, with `few_shot` examples of it; with its own data alone the challenge (150 training, 50 validation, 100 test perturbations in H1) is a perturbation split, and public data from other cell types make it a context split.
# - Leakage (random cell splits, guides of the same gene, statistics or tuning that see the test) makes a memorizing model look excellent; `check_split` catches leaks between pairs, and discipline catches the rest.

# %% [markdown]
# ## Exercises
#
# **1. How many controls?**
# The noise curve above bends away from $1/\sqrt{n}$ at large $n$.
# Show that this floor comes from the controls: estimate $\delta$ from all perturbed cells of each pair against 50, 200 and all control cells, and compare the noise on unaffected genes.

# %% tags=["hide-cell"]
# Solution. Both pseudobulks carry noise: Var(delta) ~ s^2/n_perturbed + s^2/n_controls.
# Control cells are shared by every perturbation, so each extra control improves every delta:
# this is why screens spend a large share of their cells on controls (17% of the challenge's
# training cells are controls).
floor = {}
for n_controls in (50, 200, N_CONTROLS):
    values = []
    for i, key in enumerate(truth.index):
        controls = np.flatnonzero(
            ((obs[CELL_TYPE] == key[0]) & (obs[PERT] == CONTROL)).to_numpy()
        )
        reference = X[rng.choice(controls, size=n_controls, replace=False)].mean(0)
        d = X[cells_of[key]].mean(0) - reference
        values.append(np.sqrt(np.mean(d[unaffected[i]] ** 2)))
    floor[n_controls] = np.median(values)
    print(f"{n_controls:5d} controls: noise {floor[n_controls]:.3f}")
assert floor[50] > floor[200] > floor[N_CONTROLS]

# %% [markdown]
# **2. Many epochs of matched controls.**
# In one epoch the matched controls of a pair are a random sample; over many epochs, what does their average converge to?
# Check it for one pair of the unbalanced batch data: compare the mean of the matched controls over 1, 4 and 16 epochs with the control mean of each batch weighted by the perturbed cells' batch mix.

# %% tags=["hide-cell"]
# Solution. Each draw is a control of the same batch, so the average over many epochs tends to
# sum_b w_b * mean(controls of batch b), with w_b the share of the pair's perturbed cells in batch b:
# the stratified reference, free of the batch imbalance.
c, p = truth_b.index[0]
cells = ((obs_b[CELL_TYPE] == c) & (obs_b[PERT] == p)).to_numpy()
weights = obs_b.loc[cells, BATCH].value_counts(normalize=True)
stratified = sum(
    w
    * Xb[
        is_control & (obs_b[CELL_TYPE] == c).to_numpy() & (obs_b[BATCH] == b).to_numpy()
    ].mean(0)
    for b, w in weights.items()
)
distance = {}
for n_epochs in (1, 4, 16):
    means = []
    for epoch in range(n_epochs):
        partners = match_controls(norm_b, same_batch=True, seed=100 + epoch)
        means.append(Xb[row_of[partners[norm_b.obs_names[cells]]].to_numpy()].mean(0))
    distance[n_epochs] = np.abs(np.mean(means, axis=0) - stratified).mean()
    print(
        f"{n_epochs:2d} epochs: mean |difference| from the stratified reference {distance[n_epochs]:.4f}"
    )
assert distance[16] < distance[1] / 2

# %% [markdown]
# **3. Guides as perturbations.**
# In the THP-1 data, each gene was targeted by about four guides (column `grna`).
# Hold out half of each gene's guides as "unseen", memorize each gene's $\delta$ from its other guides, and score the discrimination.
# Compare with an honest `split_by_perturbation` of the same data, where the lookup table can only predict the mean training $\delta$.
# Would `check_split` have caught the guide split?

# %% tags=["hide-cell"]
# Solution. Guides of one gene silence the same gene, so their effects agree: holding out guides
# tests recognition, like a random split of cells. check_split works on (cell type, target_gene)
# pairs, and a guide split puts every gene in both train and test, so it is caught once it is
# written as a Split.
guide = real.obs["grna"].astype(str)
is_control_real = (real.obs[PERT] == CONTROL).to_numpy()
guide_rng = np.random.default_rng(3)
held_guides = set()
perturbed_obs = real.obs.loc[~is_control_real]
for _gene, guides in perturbed_obs.groupby(PERT, observed=True)["grna"]:
    names_ = sorted(guides.astype(str).unique())
    held_guides |= set(guide_rng.permutation(names_)[: len(names_) // 2])
held = guide.isin(held_guides).to_numpy()
control_half = np.random.default_rng(4).random(real.n_obs) < 0.5
guide_train = perturbation_effects(
    real[(~held & ~is_control_real) | (is_control_real & control_half)]
)
guide_test = perturbation_effects(real[held | (is_control_real & ~control_half)])
guide_score = discrimination(lookup_model(guide_train, guide_test.index), guide_test)

honest = split_by_perturbation(real, val=0.0, test=0.3, seed=0)
real_labels = assign_split(real, honest).to_numpy()
honest_train = perturbation_effects(
    real[(real_labels == "train") | (is_control_real & control_half)]
)
honest_test = perturbation_effects(
    real[(real_labels == "test") | (is_control_real & ~control_half)]
)
honest_score = discrimination(
    lookup_model(honest_train, honest_test.index), honest_test
)
print(
    f"discrimination: guide split {guide_score:.2f}, perturbation split {honest_score:.2f}"
)
assert guide_score > honest_score + 0.1

guide_split = Split(
    train=frozenset(guide_train.index),
    val=frozenset(),
    test=frozenset(guide_test.index),
)
try:
    check_split(real, guide_split)
except ValueError as error:
    print(error)

# %% [markdown]
# **4. Picking the best seed on the test set.**
# Fifty "models" that learned nothing (each predicts a random vector for every pair, fixed by its seed) are scored by discrimination on the test pairs of the perturbation split, and the best is kept.
# What is its test score, and what does it score on the validation pairs, which played no part in the choice?

# %% tags=["hide-cell"]
# Solution. The winner's test score is the maximum of 50 noisy numbers, so it is above chance by
# selection alone; on fresh pairs the same model is back at chance. Choosing anything (a seed, a
# checkpoint, an epoch to stop at) by the test score inflates it: choose on val, report test once.
# The fewer test perturbations, the noisier the score and the larger the inflation.
train_cells, test_cells = setups["perturbation split (honest)"]
val_cells = assign_split(norm, by_perturbation).to_numpy() == "val"
_, test_effects = train_test_effects(train_cells, test_cells)
_, val_effects = train_test_effects(train_cells, val_cells)


def random_model(seed: int) -> pd.DataFrame:
    """A model that learned nothing: a fixed random vector for every pair, set by its seed."""
    noise = np.random.default_rng(seed).normal(size=truth.shape)
    return pd.DataFrame(noise, index=truth.index, columns=truth.columns)


test_scores = np.array(
    [discrimination(random_model(s), test_effects) for s in range(50)]
)
best = int(np.argmax(test_scores))
fresh = discrimination(random_model(best), val_effects)
print(f"50 seeds on test: mean {test_scores.mean():.2f}, best {test_scores[best]:.2f}")
print(f"the best seed ({best}) on val: {fresh:.2f}")
assert test_scores[best] > test_scores.mean() + 0.1 and fresh < test_scores[best]

# %% [markdown]
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
