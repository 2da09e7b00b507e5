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
# # The noise model
#
# A perturbed cell's counts mix the effect we want to predict with variation that has nothing to do with the perturbation: the cell's type, its size, where it is in its cycle, which batch it was processed in, and the luck of which molecules were captured.
# To build a model, or to judge one, you must know which part of the data is signal.
# This chapter writes the data-generating process as one equation, $X_p = T_p(X_0) + H + \varepsilon$, and builds a simulator from it, term by term, whose ground truth we know.
# With it we can answer questions no real dataset can: how close does the measured effect come to the true one, why are control cells indispensable, and how many cells does it take to see an effect of a given size?

# %% [markdown]
# ```{admonition} Objectives and prerequisites
# :class: tip
# After this chapter you will be able to:
# - write the noise model $X_p = T_p(X_0) + H + \varepsilon$ and name the biological or technical source of each term;
# - simulate a Perturb-seq experiment with known ground truth, and switch each term on and off;
# - explain why a perturbation's effect is only defined against control cells of the same cell type, and what batch effects do;
# - estimate how many cells are needed to detect an effect of a given size;
# - explain systematic variation and informative gene features, and switch both on in the simulator.
#
# **Prerequisites:** bursting, capture and overdispersion from [chapter 1](01_central_dogma.ipynb); AnnData, normalization and log1p from [chapter 2](02_single_cell_data.ipynb).
# ```

# %%
import sys

if "google.colab" in sys.modules:  # On Colab only: install the book's library.
    import subprocess

    PACKAGE = "vcell-lib @ git+https://github.com/virtual-cell-book/virtual-cell-book"
    # myst-nb: `glue` passes numbers from the code to the prose (the book's build shows them)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", PACKAGE, "myst-nb"], check=True
    )

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from myst_nb import glue

from vcell_lib.data import CONTROL, normalize_log1p, perturbation_effects, pseudobulk
from vcell_lib.env import by_mode, set_seed, versions
from vcell_lib.plotting import PALETTE, style
from vcell_lib.simulate import SimulationParams, simulate_perturbseq, true_effects

rng = set_seed(0)
style()
versions()

# %% [markdown]
# ## One equation for the data
#
# Think of a perturbed cell's expression as built in layers.
#
# $$
# \underbrace{X_p}_{\text{what we measure}} \;=\; \underbrace{T_p(X_0)}_{\text{basal state, transformed by the perturbation}} \;+\; \underbrace{H}_{\text{biological variability}} \;+\; \underbrace{\varepsilon}_{\text{technical noise}}
# $$
#
# - $X_0$ is the **basal state**: the expression program of the cell type (the "context") before any perturbation.
# - $T_p$ is the **perturbation effect**: silencing gene $p$ lowers its own expression, and the change travels through the gene regulatory network to the genes it controls.
# - $H$ is **biological variability** between cells of the same type, regardless of the perturbation: programs such as the cell cycle or stress, the cell's size (its total mRNA), and transcription in {term}`bursts <burst>`, which makes a gene's molecule count overdispersed (chapter 1: this is biology, present before any measurement).
# - $\varepsilon$ is **technical noise**: each cell's {term}`capture efficiency`, its sequencing depth, the batch it was processed in, and the binomial thinning that decides which of its molecules are counted (chapter 1).
#
# A virtual cell has to learn $T_p$, for perturbations and cell types it has not seen, while $H$ and $\varepsilon$ blur every example it learns from.
# The "+" is a convenient fiction: in the simulator below, $T_p$, the programs of $H$ and the batch shifts of $\varepsilon$ add up on the *log* scale of expected expression, while cell size and bursting ($H$) and capture ($\varepsilon$) act on the counts.
# Concretely, for cell $i$ of context $c$, batch $b$, with perturbation $p$:
#
# $$
# \log \lambda_{ig} = \underbrace{\mu_{cg}}_{X_0} + \underbrace{\kappa_i\, a_{cpg}}_{T_p} + \underbrace{(L^\top z_i)_g}_{H:\ \text{programs}} + \underbrace{\beta_{bg}}_{\varepsilon:\ \text{batch}},
# \qquad
# \underbrace{m_{ig} \sim \operatorname{NB}\!\Bigl(M_i \tfrac{\lambda_{ig}}{Z_c},\, \theta_g\Bigr)}_{H:\ \text{size, bursting}},
# \qquad
# \underbrace{x_{ig} \sim \operatorname{Binomial}(m_{ig}, \eta_i)}_{\varepsilon:\ \text{capture, depth}}.
# $$
#
# Here $\lambda_{ig}$ is the cell's expected expression rate of gene $g$ before size and capture, $\mu_{cg}$ is the context's basal log-expression, $\kappa_i = \log(1 - \text{efficiency}_i)$ is the strength of the cell's knockdown (zero for controls and for cells whose guide failed; efficiency is capped at 98%, since CRISPRi rarely silences completely), and $a_{cpg}$ is how gene $g$ responds per unit of knockdown of $p$ in context $c$.
# Then $z_i$ are the cell's program scores with gene loadings $L$, $\beta_{bg}$ is batch $b$'s shift of gene $g$, $M_i$ is the cell's total number of mRNA molecules (drawn per cell), $Z_c$ normalizes the context's profile to sum to one, $m_{ig}$ is the number of molecules in the cell, and $\theta_g$ is the gene's negative binomial inverse dispersion (chapter 1 called it $r$).
# Finally $\eta_i$ is the cell's capture efficiency, drawn per cell and scaled by its batch's sequencing depth, and $x_{ig}$ is the observed count.
#
# Writing $T_p(X_0)$ allows the effect to depend on the cell's state.
# The simulator simplifies: the effect depends on the state only through the context $c$, it adds to the log-rate, and it is linear in the knockdown strength $\kappa_i$, whatever the cell's programs or size.
# Real responses are not linear: in exercise 4 of chapter 1, a target was buffered against mild knockdowns of its regulator, and its response steepened as the knockdown grew.
# `simulate_perturbseq` implements exactly this model and stores what is normally hidden: every cell's knockdown, size and capture, and the true mean effect of every perturbation in every context.

# %%
params = SimulationParams(
    n_genes=500,
    n_perturbations=by_mode(full=30, fast=12),
    cells_per_perturbation=by_mode(full=100, fast=60),
    n_control_cells=by_mode(full=400, fast=200),
)
sim = simulate_perturbseq(params, seed=0)
truth = true_effects(sim)
print(sim)
print(sim.obs.head())

# %% [markdown]
# Two contexts (think: two cell types), two batches, one group of control cells and one group per perturbation in each context.
# The `obs` columns after `cell_type` are hidden quantities a real experiment never reports: how strongly the cell's target was knocked down, whether its guide failed ("escaped"), its total mRNA (`size`) and the fraction of its molecules captured.
# We now look at each term of the equation in turn.

# %% [markdown]
# ## $X_0$: every cell type has its own basal program
#
# The same genome runs a different program in each cell type (chapter 1).
# In the simulator each context has its own mean log-expression profile $\mu_c$: a shared component plus context-specific deviations, and a few strong "marker" genes.
# Control cells show that program directly, so we compare the two contexts' control {term}`pseudobulk` profiles: the mean log1p-normalized expression of a group of cells, introduced in chapter 2 (chapter 4 covers it in depth).

# %%
norm = normalize_log1p(sim)
bulk = pseudobulk(norm, by=["cell_type", "target_gene"])
profile = {
    (c, p): x
    for (c, p), x in zip(bulk.obs[["cell_type", "target_gene"]].to_numpy(), bulk.X)
}
control_a, control_b = profile[("context_A", CONTROL)], profile[("context_B", CONTROL)]
print(
    f"correlation of the two contexts' control profiles: {np.corrcoef(control_a, control_b)[0, 1]:.3f}"
)
print(
    f"mean |difference| per gene: {np.abs(control_a - control_b).mean():.3f} (log1p units)"
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(4.6, 4.2))
ax.scatter(control_a, control_b, s=8, color=PALETTE["control"], alpha=0.7)
lim = [0, max(control_a.max(), control_b.max()) * 1.05]
ax.plot(lim, lim, ls="--", color="black", lw=1)
ax.set(
    xlabel="context A controls (mean log1p)",
    ylabel="context B controls (mean log1p)",
    title="Two cell types, one genome",
    xlim=lim,
    ylim=lim,
)
plt.show()

# %% [markdown]
# The profiles are correlated, because most genes do similar jobs in both cell types, but far from identical.
# This is why transfer between cell types is hard.
# The challenge eases it: it supplies control cells and 150 training perturbations in its own cell type, H1 human embryonic stem cells, so the test cell type is not entirely unseen {cite}`roohani2025`.
# But the test perturbations were never measured in H1, and most public Perturb-seq data come from other cell types: a model must carry what it learns across perturbations, and what it learns from other data across cell types.

# %% [markdown]
# ## $T_p$: a knockdown travels through the network
#
# The simulator wires a random sparse gene regulatory network: about one gene in ten is a regulator, and each regulator controls a dozen targets with a random positive (activating) or negative (repressing) weight.
# Silencing gene $p$ changes its own log-expression by $\kappa_i$, and each target of $p$ changes by $\kappa_i$ times the edge weight; the change propagates along paths of up to three edges.
# So $a_{cpg}$ is 1 for the silenced gene itself (plus any loop back to it) and, for every other gene, the sum over paths from $p$ to $g$ of the product of their edge weights.
# Each edge is active in a context only with some probability, so the same perturbation has a different effect in each cell type.
# The stored truth, `true_effects(sim)`, is the *mean* log-change over perturbed cells, including incomplete knockdowns and escapers.

# %% tags=["hide-input"]
perturbations = list(sim.uns["truth"]["perturbations"])
regulator_perts = [p for p in perturbations if sim.var.loc[p, "is_regulator"]]
example = regulator_perts[0]
effect_a = truth.loc[("context_A", example)]
top_genes = effect_a.abs().sort_values(ascending=False).index[:25]

fig, axes = plt.subplots(
    1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]}
)
shown = truth.xs("context_A", level="cell_type").loc[regulator_perts[:12]]
downstream = shown.drop(columns=shown.index).abs().max().sort_values(ascending=False)
columns = list(shown.index) + list(
    downstream.index[:18]
)  # the silenced genes first: a diagonal
image = axes[0].imshow(
    shown[columns].to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto"
)
axes[0].set_yticks(range(len(shown)), shown.index)
axes[0].set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
axes[0].set_title("True effects in context A (log scale)")
axes[0].set_xlabel("gene")
axes[0].set_ylabel("silenced gene")
axes[0].grid(False)
fig.colorbar(image, ax=axes[0], shrink=0.8, label="true effect (colours clipped at ±1)")
effect_b = truth.loc[("context_B", example)]
axes[1].scatter(effect_a, effect_b, s=10, color=PALETTE["perturbed"], alpha=0.7)
axes[1].axhline(0, color="black", lw=0.5)
axes[1].axvline(0, color="black", lw=0.5)
axes[1].set(
    xlabel="true effect in context A",
    ylabel="true effect in context B",
    title=f"Silencing {example} in two contexts",
)
plt.tight_layout()
plt.show()

# %% [markdown]
# In the heatmap, each row is a silenced gene and the first columns are the same genes, in the same order, so the dark blue diagonal is each target's own knockdown; the columns to the right are the most affected downstream genes, pushed up (red) or down (blue).
# The colour scale stops at ±1 so that weaker downstream effects stay visible: the knockdowns on the diagonal (about $-2$) and every effect beyond ±1 show in the darkest colour.
# On the right, the same perturbation in the two contexts: many effects agree, some exist in only one context (points on an axis).
# A model that learned the effect in one cell type must guess which parts transfer.
#
# The knockdown itself varies from cell to cell.
# CRISPRi efficiency differs between cells, and in some cells the guide fails entirely (they "escape"):

# %%
perturbed = sim.obs[sim.obs["target_gene"] != CONTROL]
print(f"escaped cells: {perturbed['escaped'].mean():.1%}")
print(
    f"knockdown efficiency of the others: mean {perturbed.loc[~perturbed['escaped'], 'knockdown'].mean():.2f}"
)

cells = norm[norm.obs["target_gene"] == example]
own = cells[:, example].X.toarray().ravel()
controls_own = norm[(norm.obs["target_gene"] == CONTROL), example].X.toarray().ravel()
escaped = cells.obs["escaped"].to_numpy()
print(f"{example} in control cells:         mean log1p {controls_own.mean():.2f}")
print(f"{example} in its knocked-down cells: mean log1p {own[~escaped].mean():.2f}")
print(f"{example} in its escaped cells:      mean log1p {own[escaped].mean():.2f}")
assert own[~escaped].mean() < own[escaped].mean()

# %% [markdown]
# Escapers look like controls, so they dilute the measured effect: a model is scored against the average over *all* cells that received the guide, escapers included.

# %% [markdown]
# ## $H$: cells of one type are not identical
#
# Two control cells of the same type, same batch, differ by more than measurement noise: one may be dividing, another larger or stressed.
# The simulator gives each cell scores $z_i$ on a few hidden programs, each of which shifts a subset of genes up or down.
# It also draws each cell's total mRNA $M_i$ (stored as `size`), and draws each gene's molecule count from a negative binomial: the bursting of chapter 1, which makes molecule counts vary far more than Poisson counts, before anything is measured.
# The principal components of control cells pick the programs up:

# %%
controls_a = norm[
    (norm.obs["target_gene"] == CONTROL) & (norm.obs["cell_type"] == "context_A")
]
centred = controls_a.X.toarray() - controls_a.X.toarray().mean(0)
u, singular, _ = np.linalg.svd(centred, full_matrices=False)
pc1 = u[:, 0] * singular[0]
programs = controls_a.obsm["programs"]
correlations = [
    abs(np.corrcoef(pc1, programs[:, k])[0, 1]) for k in range(programs.shape[1])
]
print("|correlation| of PC1 with each hidden program:", np.round(correlations, 2))
assert max(correlations) > 0.5

# %% [markdown]
# The first principal component of control cells tracks a hidden program: the largest structure among unperturbed cells is biological, not technical noise.
# Because controls carry the same programs as perturbed cells, $H$ cancels in the *mean* difference between perturbed and control cells, but it adds variance to every single cell.

# %% [markdown]
# ## $\varepsilon$: capture, depth, batch and thinning
#
# Technical noise comes in layers too.
# Each molecule in a cell is counted with probability $\eta_i$, the cell's capture efficiency: the binomial thinning of chapter 1, with an efficiency that itself varies from cell to cell.
# Each batch shifts genes slightly ($\beta_{bg}$) and changes sequencing depth (a factor on $\eta_i$ shared by the batch's cells).
# A cell's {term}`library size` is therefore the product of a biological quantity, its total mRNA $M_i$, and a technical one, $\eta_i$; normalization divides out both (chapter 2), because it cannot tell them apart.
# The printout below the figure splits the spread of library sizes between the two.
# The counts are overdispersed: bursting makes the molecule counts negative binomial, thinning keeps them negative binomial with the same $\theta_g$ (chapter 1), and the differences in size, programs and capture between cells add more variance.

# %% tags=["hide-input"]
library = np.asarray(sim.X.sum(1)).ravel()
controls_counts = sim[sim.obs["target_gene"] == CONTROL].X.toarray()
gene_mean, gene_var = controls_counts.mean(0), controls_counts.var(0)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
log_bins = np.logspace(np.log10(library.min()), np.log10(library.max()), 50)
axes[0].hist(library, bins=log_bins, color=PALETTE["control"])
axes[0].set_xscale("log")
axes[0].set(
    xlabel="UMIs per cell", ylabel="cells", title="Library sizes vary between cells"
)
keep = gene_mean > 0
axes[1].loglog(
    gene_mean[keep],
    gene_var[keep],
    ".",
    color=PALETTE["control"],
    alpha=0.6,
    label="genes (control cells)",
)
line = np.logspace(np.log10(gene_mean[keep].min()), np.log10(gene_mean[keep].max()), 50)
axes[1].loglog(line, line, ls="--", color=PALETTE["prediction"], label="Poisson")
axes[1].set(
    xlabel="mean UMIs per cell",
    ylabel="variance",
    title="Overdispersion, as in chapter 1",
)
axes[1].legend()
plt.tight_layout()
plt.show()
for name, values, fmt in (
    ("library size (UMIs)", library, ",.0f"),
    ("cell size M_i (molecules)", sim.obs["size"].to_numpy(), ",.0f"),
    ("capture efficiency eta_i", sim.obs["capture"].to_numpy(), ".3f"),
):
    low, mid, high = np.percentile(values, [5, 50, 95])
    print(
        f"{name:26s}: median {mid:{fmt}}, 5th-95th percentile {low:{fmt}} to {high:{fmt}}"
    )
log_library = np.log(library)
for name in ("size", "capture"):
    share = np.corrcoef(log_library, np.log(sim.obs[name]))[0, 1] ** 2
    print(f"variance of log library size explained by log {name}: {share:.0%}")

# %% [markdown]
# Here capture explains more of the spread of library sizes than cell size does.
# In real data nothing tells the two apart, so normalization removes both, and with them any real difference in total mRNA between cells; we will meet the consequence below.

# %% [markdown]
# ## Why controls are indispensable
#
# An effect is a *difference*: expression with the perturbation minus expression without it, in the same kind of cell.
# We never observe the same cell both ways, so we compare populations: perturbed cells against control cells that received a non-targeting guide.
# What happens if we pick the wrong reference?
# Below, each perturbation's measured effect (its pseudobulk minus a reference pseudobulk) is compared with the stored truth, using as reference either the controls of the *same* context or the controls of the *other* context.


# %%
def effect_vs_truth(reference_context: dict[str, str]) -> pd.DataFrame:
    """Per (context, perturbation): Pearson r and mean absolute error of the measured effect."""
    rows = []
    for context, pert in truth.index:
        measured = (
            profile[(context, pert)] - profile[(reference_context[context], CONTROL)]
        )
        true = truth.loc[(context, pert)].to_numpy()
        rows.append(
            {
                "r": np.corrcoef(measured, true)[0, 1],
                "mae": np.abs(measured - true).mean(),
            }
        )
    return pd.DataFrame(rows)


same = effect_vs_truth({"context_A": "context_A", "context_B": "context_B"})
swapped = effect_vs_truth({"context_A": "context_B", "context_B": "context_A"})
summary = pd.DataFrame(
    {"same-context controls": same.median(), "other-context controls": swapped.median()}
)
print(summary.round(3))
assert same["r"].median() > swapped["r"].median() + 0.3
assert same["mae"].median() < swapped["mae"].median() / 2

# %% [markdown]
# With the right controls the measured effect tracks the truth; with the wrong ones the difference between cell types swamps the perturbation.
# The library function `perturbation_effects` computes the right version for every perturbation at once: each (cell type, perturbation) pseudobulk minus the control pseudobulk of the same cell type (chapter 4 looks at it closely).
# Controls remove everything the perturbed and control cells share: the basal program $X_0$, the average of $H$ and of the batch effects, and the measurement's overall scale.
# This is why every challenge metric takes each perturbation's effect against the control cells of the same dataset (chapters 5 to 8), and why the challenge ships control cells from the test cell type.
#
# Even the right comparison does not recover the truth exactly.
# Part of the gap is sampling noise, which shrinks with more cells (next section).
# Part comes from how expression is measured and normalized, and does not shrink however many cells we average (the end of the next section).

# %% [markdown]
# ## How many cells does it take?
#
# The effect on gene $g$ is estimated from $n$ perturbed and $n_0$ control cells.
# If single-cell values of the gene (after log1p) have standard deviation $\sigma_g$, the difference of the two means has standard error
#
# $$
# \operatorname{SE}_g = \sigma_g \sqrt{\tfrac{1}{n} + \tfrac{1}{n_0}} .
# $$
#
# To detect an effect with a two-sided test at the 5% level 80% of the time, it must be about $(1.96 + 0.84) \approx 2.8$ standard errors large: the *minimal detectable effect* is $2.8\,\sigma_g\sqrt{1/n + 1/n_0}$.
# Let us compute it from the control cells' spread, for typical genes:

# %%
sigma = controls_a.X.toarray().std(0)
n_controls = controls_a.n_obs
cell_counts = np.array([10, 25, 50, 100, 200, 400, 1000])
quartiles = np.percentile(sigma, [25, 50, 75])
detectable = 2.8 * np.outer(quartiles, np.sqrt(1 / cell_counts + 1 / n_controls))
print(
    pd.DataFrame(
        detectable.round(2),
        index=["sigma 25%", "sigma 50%", "sigma 75%"],
        columns=cell_counts,
    )
)

# %% [markdown]
# With 100 perturbed cells, a typical gene's effect must exceed about 0.2 log1p units to be seen reliably; with 10 cells, only effects of half a unit or more are.
# (The challenge's training data have about 1,200 cells per perturbation on average; chapter 2's real data have 48 to 1,341 per target.)
#
# The formula describes one gene.
# How well does a whole measured effect vector agree with the truth as the number of cells grows?
# We simulate the same experiment with more and more cells per perturbation and correlate measured with true effects.


# %%
def median_r(data) -> float:
    """Median Pearson r between measured and true effect vectors, over (context, perturbation)."""
    measured = perturbation_effects(
        normalize_log1p(data)
    )  # each pseudobulk minus its controls
    true = true_effects(data)
    pairs = zip(measured.loc[true.index].to_numpy(), true.to_numpy())
    return float(np.median([np.corrcoef(m, t)[0, 1] for m, t in pairs]))


sweep = by_mode(full=[10, 25, 50, 100, 200, 400, 1000], fast=[10, 50, 200])
r_by_cells = {}
for cells in sweep:  # a fresh simulation each time, with the same controls
    largest = simulate_perturbseq(params, seed=1, cells_per_perturbation=cells)
    r_by_cells[cells] = median_r(largest)
    print(f"{cells:4d} cells per perturbation: median r = {r_by_cells[cells]:.3f}")
more_controls = 5 * params.n_control_cells
r_more_controls = median_r(
    simulate_perturbseq(
        params, seed=1, cells_per_perturbation=sweep[-1], n_control_cells=more_controls
    )
)
print(
    f"{sweep[-1]:4d} cells per perturbation, {more_controls} controls: median r = {r_more_controls:.3f}"
)
assert r_by_cells[sweep[-1]] > r_by_cells[sweep[0]] + 0.2
assert r_more_controls > r_by_cells[sweep[-1]]

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(5, 3.4))
ax.semilogx(
    list(r_by_cells),
    list(r_by_cells.values()),
    "o-",
    color=PALETTE["truth"],
    label=f"{params.n_control_cells} control cells",
)
ax.plot(
    sweep[-1],
    r_more_controls,
    "s",
    color=PALETTE["accent"],
    label=f"{more_controls} control cells",
)
ax.axhline(1, color="black", lw=0.5)
ax.legend(loc="lower right")
ax.set(
    xlabel="cells per perturbation",
    ylabel="median Pearson r (measured vs true)",
    title="More cells, closer to the truth",
    ylim=(0, 1.05),
)
plt.show()

# %% [markdown]
# Agreement grows quickly at first, then slowly: every doubling of cells buys less.
# Part of what remains is noise that more *perturbed* cells cannot remove: every effect in a context is measured against the same control pseudobulk, and its noise stays; more control cells raise the agreement further (the square).
# Sampling noise of either kind shrinks as cells are added, though, so it cannot hold the agreement below 1 forever.
# Two properties of the measurement can: they stay however many cells are averaged.
# We measure both on the largest simulation of the sweep.

# %%
measured = perturbation_effects(normalize_log1p(largest))
true = true_effects(largest)
measured = measured.loc[true.index]
self_true = np.array([true.loc[key, key[1]] for key in true.index])
self_measured = np.array([measured.loc[key, key[1]] for key in true.index])
print(
    f"silenced genes, own effect (mean): true {self_true.mean():.2f}, measured {self_measured.mean():.2f}"
)

# Each perturbation changes the cell's total mRNA; the basal profiles sum to one.
basal = largest.uns["truth"]["basal_log_expression"]
contexts = list(largest.uns["truth"]["contexts"])
log_total_change = np.array(
    [
        np.log(np.exp(basal[contexts.index(c)] + true.loc[(c, p)].to_numpy()).sum())
        for c, p in true.index
    ]
)
unaffected = true.to_numpy() == 0
unaffected_shift = np.array(
    [row[mask].mean() for row, mask in zip(measured.to_numpy(), unaffected)]
)
follow = np.corrcoef(log_total_change, unaffected_shift)[0, 1]
print(
    f"correlation of the log change of total mRNA with the mean measured effect of unaffected genes: {follow:.2f}"
)
k = np.argmax(np.abs(log_total_change))
print(
    f"largest change, {true.index[k][1]} in {true.index[k][0]}: total mRNA x{np.exp(log_total_change[k]):.2f}, "
    f"mean measured effect of its {unaffected[k].sum()} unaffected genes {unaffected_shift[k]:+.3f}"
)
assert self_measured.mean() > 0.5 * self_true.mean()  # compressed towards 0
assert follow < -0.3

# %% [markdown]
# The first is log1p compression.
# The mean of $\log(1+x)$ is not the log of the mean, and for a gene with a few counts per cell $\log(1+x)$ behaves like $x$, not like $\log x$, so large fold changes become small differences: the silenced genes' own effect is measured at less than half its true size (chapter 4 looks at this closely).
# The compression differs from gene to gene, so no single scale factor undoes it, and the correlation stays below 1.
#
# The second is library-size renormalization.
# A perturbation changes the cell's total mRNA (a knockdown removes its target's molecules; the genes downstream rise or fall), and normalizing every cell to the same total then rescales *every* gene, including those the perturbation does not touch.
# The printed correlation is negative: when a perturbation raises the total, the untouched genes seem to fall, and the reverse.
# Here the shift is small for most perturbations and, being nearly the same for every gene on the log scale, it hardly changes a correlation, but it adds to every gene's error.
#
# Real data add a third limit: nobody knows the true effect, so the best a model can do is match a *noisy* measurement.
# Keep these ceilings in mind when you read any benchmark.

# %% [markdown]
# ## Batch effects
#
# Cells processed on different days, lanes or chips differ systematically: a batch shifts some genes and the sequencing depth.
# If perturbed and control cells are spread evenly over batches, batch shifts cancel in the mean difference.
# If they are not, the batch effect masquerades as a perturbation effect.
# We make batch effects stronger, then compare a perturbation whose cells all come from batch 1 with controls from batch 0, or from batch 1.

# %%
batchy = simulate_perturbseq(params, seed=2, batch_sd=0.3)
batchy_norm = normalize_log1p(batchy)
batchy_truth = true_effects(batchy)
obs = batchy_norm.obs
target = list(batchy.uns["truth"]["perturbations"])[0]


def measured_effect(pert_batch: str, control_batch: str) -> np.ndarray:
    in_a = obs["cell_type"] == "context_A"
    pert = batchy_norm[
        in_a & (obs["target_gene"] == target) & (obs["batch"] == pert_batch)
    ]
    ctrl = batchy_norm[
        in_a & (obs["target_gene"] == CONTROL) & (obs["batch"] == control_batch)
    ]
    return np.asarray(pert.X.mean(0)).ravel() - np.asarray(ctrl.X.mean(0)).ravel()


true_effect = batchy_truth.loc[("context_A", target)].to_numpy()
for label, control_batch in (
    ("controls from another batch", "batch_0"),
    ("controls from the same batch", "batch_1"),
):
    err = np.abs(measured_effect("batch_1", control_batch) - true_effect).mean()
    print(f"{label:30s}: mean absolute error vs truth {err:.3f}")
confounded = np.abs(measured_effect("batch_1", "batch_0") - true_effect).mean()
matched = np.abs(measured_effect("batch_1", "batch_1") - true_effect).mean()
assert matched < confounded

# %% [markdown]
# Comparing across batches adds the batch shift to every gene's apparent effect.
# Two defences follow, and chapter 4 builds both: compare each perturbed cell with controls from the same batch where possible, and never let batch membership line up with what you are trying to predict.

# %% [markdown]
# ## What real screens add: shared responses and informative genes
#
# In the simulator so far, every perturbation's effect is a private random path through the network: two perturbations share a downstream gene only by chance, and nothing about a perturbation can be known before it is measured.
# Real screens differ in two ways; the first flatters simple models, the second rewards good ones.
#
# First, many perturbations provoke a common response.
# Silencing an essential gene stresses the cell and slows its growth, so fewer of its cells are dividing: the perturbed cells then differ from controls in a similar direction, whichever gene was silenced.
# Viñas Torné and colleagues call this {term}`systematic variation` and measured it in ten perturbation datasets {cite}`vinastorne2025`.
# It comes from biology and from the choice of genes in a screen (a panel of essential genes shares one response), and it lets a prediction that knows only the *average* perturbed cell look good on metrics that compare effects, so that methods seem to predict more than they do.
# Two knobs of the simulator, both off by default, add it:
#
# - `shared_response` sets the size of a response along one fixed direction $w$ of gene space (a fifth of the genes move), which each perturbation $p$ shows with its own strength $\rho_p$: some strongly, some barely;
# - `program_shift` lets each perturbation move the mean activity $\Delta z_p$ of the cell programs of $H$, for example fewer cells in a cycling program.
#
# Both add to $T_p$: the mean effect of $p$ on gene $g$ becomes $\bar\kappa\, a_{cpg} + \rho_p w_g + (L^\top \Delta z_p)_g$, with $\bar\kappa$ the mean knockdown strength, and each cell carries the two new terms in proportion to its own knockdown (escapers show none).
# Both are in the stored truth, so `true_effects` still holds each perturbation's complete mean effect.
# We simulate the same experiment with both knobs on and compare the true effects of all pairs of perturbations.

# %%
SYSTEMATIC = {"shared_response": 0.3, "program_shift": 0.3}
systematic = simulate_perturbseq(params, seed=0, **SYSTEMATIC)


def effect_correlations(data) -> np.ndarray:
    """Pearson r between the true effects (context A) of every pair of perturbations."""
    effects = true_effects(data).xs("context_A", level="cell_type").to_numpy()
    return np.corrcoef(effects)


def average_of_the_others(data) -> float:
    """Median r between each perturbation's true effect and the mean of all the others'."""
    effects = true_effects(data).xs("context_A", level="cell_type").to_numpy()
    others = (effects.sum(0) - effects) / (len(effects) - 1)
    return float(np.median([np.corrcoef(e, o)[0, 1] for e, o in zip(effects, others)]))


pairs = np.triu_indices(params.n_perturbations, 1)
private_r = float(effect_correlations(sim)[pairs].mean())
shared_r = float(effect_correlations(systematic)[pairs].mean())
private_mean, shared_mean = (
    average_of_the_others(sim),
    average_of_the_others(systematic),
)
print(f"mean r between two perturbations' effects: {private_r:.3f} -> {shared_r:.3f}")
print(
    f"median r, effect vs mean of the others:    {private_mean:.3f} -> {shared_mean:.3f}"
)
glue("private_r", private_r, display=False)
glue("shared_r", shared_r, display=False)
glue("private_mean", private_mean, display=False)
glue("shared_mean", shared_mean, display=False)
assert shared_r > private_r + 0.1 and shared_mean > private_mean + 0.2
# Same seed, every other draw unchanged: the network's part of the truth is the same.
assert (systematic.obs["knockdown"] == sim.obs["knockdown"]).all()

# %% tags=["hide-input"]
order = np.argsort(systematic.uns["truth"]["shared_strength"])  # weakest share first
fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
for ax, data, title in (
    (axes[0], sim, "private effects (defaults)"),
    (axes[1], systematic, "with the shared response and program shifts"),
):
    r = effect_correlations(data)[np.ix_(order, order)]
    np.fill_diagonal(r, np.nan)  # a perturbation against itself says nothing
    image = ax.imshow(r, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set(
        title=title,
        xlabel="perturbation (by shared strength)",
        ylabel="perturbation (by shared strength)",
    )
    ax.grid(False)
fig.colorbar(image, ax=axes, shrink=0.8, label="r between true effects (context A)")
plt.show()

# %% [markdown]
# On the left, with the defaults, the effects of two perturbations are nearly unrelated (mean $r$ = {glue:text}`private_r:.3f`).
# On the right they correlate (mean $r$ = {glue:text}`shared_r:.3f`), the more so the stronger both perturbations show the shared response (the rows and columns are sorted by its strength, weakest first); the program shifts add a weaker pattern of their own.
# The mean effect of all *other* perturbations now predicts a perturbation's true effect with a median $r$ of {glue:text}`shared_mean:.2f`, against {glue:text}`private_mean:.3f` without the knobs.
# A baseline that predicts the average perturbed cell, such as the challenge's cell-mean baseline, gets this shared part right without knowing anything about the silenced gene; chapters 5 and 8 show what it does to the metrics.
# On such data a model's merit is what it predicts *beyond* the shared response.
#
# Second, in a real screen we know something about every gene before silencing it: its protein's sequence, its known functions, the genes it interacts with.
# Genes whose proteins work together, in one complex or pathway, tend to have similar effects when silenced, and a model can use such knowledge to predict a perturbation it has never seen: STATE describes each gene by ESM-2 embeddings of its protein ([chapter 10](10_esm_gene_embeddings.ipynb)).
# With `n_gene_features > 0` the simulator draws the analogue.
# Each gene gets a hidden position in a small latent space (`uns["truth"]["gene_latent"]`); a regulator picks its targets among the genes aligned or opposed with it there, activating the aligned ones and repressing the opposed ones, so that genes close in the latent regulate alike.
# Each gene also gets `n_gene_features` features, stored in `varm["gene_features"]`: a random linear read-out of its latent, mixed with noise.
# `feature_informativeness` is the latent's share of the features' variance: at 1 the features are the latent seen through a random rotation, at 0 they are pure noise.
# They are the simulator's analogue of ESM-2 gene embeddings, and later chapters can use them as such, with one difference: here we can dial how much they know.
# Do perturbations of genes with similar features have similar effects?
# With the same seed, the latent and the network stay the same as the knob moves; only the features change.

# %%
FEATURES = {"n_perturbations": 60, "cells_per_perturbation": 10, "n_control_cells": 10}
KNOBS = [0.0, 0.25, 0.5, 0.75, 1.0]  # feature_informativeness


def feature_vs_effect(data) -> tuple[np.ndarray, np.ndarray]:
    """Per pair of silenced regulators: cosine of their features, r of their true effects.

    The effects leave out the silenced genes' own columns: a perturbation's knockdown
    of its own target says nothing about how it resembles another.
    """
    effects = true_effects(data).xs("context_A", level="cell_type")
    regulators = [p for p in effects.index if data.var.loc[p, "is_regulator"]]
    r = np.corrcoef(effects.loc[regulators].drop(columns=effects.index).to_numpy())
    features = data.varm["gene_features"][data.var_names.get_indexer(regulators)]
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    upper = np.triu_indices(len(regulators), 1)
    return (unit @ unit.T)[upper], r[upper]


by_knob, spearman = {}, {}
for knob in KNOBS:  # only the truth is needed: few cells suffice
    featured = simulate_perturbseq(
        params, seed=0, n_gene_features=16, feature_informativeness=knob, **FEATURES
    )
    by_knob[knob] = feature_vs_effect(featured)
    cosine, r = by_knob[knob]
    spearman[knob] = float(pd.Series(cosine).corr(pd.Series(r), method="spearman"))
    print(f"feature_informativeness {knob:.2f}: Spearman r = {spearman[knob]:.2f}")
glue("spearman_0", spearman[0.0], display=False)
glue("spearman_1", spearman[1.0], display=False)
assert spearman[1.0] > 0.3 and abs(spearman[0.0]) < 0.15
assert spearman[1.0] > spearman[0.5] > spearman[0.0]
assert np.allclose(
    by_knob[0.0][1], by_knob[1.0][1]
)  # the same effects: only features change

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
for ax, knob in zip(axes, (0.0, 1.0)):
    cosine, r = by_knob[knob]
    ax.scatter(cosine, r, s=6, alpha=0.4, color=PALETTE["prediction"])
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    ax.set(
        xlabel="cosine similarity of the two genes' features",
        title=f"feature_informativeness = {knob:g} (Spearman r {spearman[knob]:.2f})",
        xlim=(-1, 1),
    )
axes[0].set_ylabel("r between the two perturbations' true effects")
plt.tight_layout()
plt.show()

# %% [markdown]
# Each point is a pair of silenced regulators.
# With informative features (right), pairs with similar features tend to have correlated effects and pairs with opposed features anti-correlated ones (Spearman $r$ = {glue:text}`spearman_1:.2f`); with uninformative features (left) the cloud is flat ({glue:text}`spearman_0:.2f`), and in between the correlation grows with the knob (printed above).
# Even fully informative features leave most of an effect open: the latent only sets which targets a regulator tends to choose; which ones it picks, the weights and the edges active in each context are still random.
# This is also the situation of a model with ESM-2 embeddings of real genes: the features help to an extent nobody knows in advance, whereas here we can set it.
# Exercise 4 uses the features to predict unseen perturbations.

# %% [markdown]
# ## Summary
#
# - Measured expression mixes four layers: the cell type's basal program $X_0$, the perturbation effect $T_p$, biological variability $H$ (programs, cell size, bursting) and technical noise $\varepsilon$ (capture, sequencing depth, batch, binomial thinning).
# - `simulate_perturbseq` builds data from exactly these layers and stores the truth: the mean effect of every perturbation in every context, the network and every cell's hidden state.
# - A knockdown acts on its target and spreads through the regulatory network differently in each cell type; incomplete knockdown and escaping cells dilute it.
# - An effect is only defined against controls of the same cell type (and ideally the same batch); the wrong reference swamps the effect.
# - The detectable effect shrinks as $\sigma\sqrt{1/n + 1/n_0}$: cells per perturbation, and control cells, limit what any dataset, and so any model, can show.
# - More cells never make the measured effect equal the true one: log1p compression and library-size renormalization remain.
# - Real screens add two things, both opt-in in the simulator: a response shared by many perturbations ({term}`systematic variation`: `shared_response`, `program_shift`), which lets a prediction of the average perturbed cell look good, and gene features that tell about a gene's effect before it is measured (`n_gene_features`, `feature_informativeness`), the simulator's analogue of ESM-2 gene embeddings.

# %% [markdown]
# ## Exercises
#
# **1. Switch off part of the noise.**
# Simulate with `n_programs=0`, `batch_sd=0`, `batch_depth_sd=0`, `size_sd=0` and `escape_fraction=0`.
# Does the measured effect agree better with the truth? What limits it now?

# %% tags=["hide-cell"]
# Solution. Agreement improves but stays below 1. Switching off the programs, cell size, batch and
# escapers leaves bursting (negative binomial molecule counts), the per-cell capture efficiency
# (Beta) and its binomial thinning, the per-cell knockdown efficiency (Beta), the finite number of
# cells, and the log1p compression and library-size renormalization.
quiet = {
    "n_programs": 0,
    "batch_sd": 0.0,
    "batch_depth_sd": 0.0,
    "size_sd": 0.0,
    "escape_fraction": 0.0,
}
quiet_sim = simulate_perturbseq(params, seed=3, **quiet)
noisy_sim = simulate_perturbseq(params, seed=3)


r_noisy, r_quiet = median_r(noisy_sim), median_r(quiet_sim)
print(f"default simulation: r = {r_noisy:.3f}")
print(f"no programs, size spread, batch or escapers: r = {r_quiet:.3f}")
assert r_quiet > r_noisy

# %% [markdown]
# **2. How many cells for an effect of 0.2?**
# Using the minimal detectable effect formula and the median $\sigma_g$ of the control cells above, how many perturbed cells (with $n_0 = 400$ controls) are needed to detect a log1p effect of 0.2?

# %% tags=["hide-cell"]
# Solution. Solve 2.8 * sigma * sqrt(1/n + 1/n0) = 0.2 for n.
s, n0, effect = np.median(sigma), 400, 0.2
inverse_n = (effect / (2.8 * s)) ** 2 - 1 / n0
needed = np.inf if inverse_n <= 0 else 1 / inverse_n
print(f"median sigma {s:.2f}: about {needed:.0f} perturbed cells")
assert needed > 50

# %% [markdown]
# **3. Escapers.**
# Simulate with `escape_fraction=0.5`. By how much does the self-effect (the target gene's own true effect) shrink, compared with the default 0.1? Why is it exactly that ratio?

# %% tags=["hide-cell"]
# Solution. The true mean log-effect is (1 - escape_fraction) * E[log(1 - efficiency)]: escapers
# contribute zero, so the ratio is (1 - 0.5) / (1 - 0.1) = 0.556.
half = simulate_perturbseq(params, seed=0, escape_fraction=0.5)
p0 = list(half.uns["truth"]["perturbations"])[0]
ratio = true_effects(half).loc[("context_A", p0), p0] / truth.loc[("context_A", p0), p0]
print(f"self-effect ratio: {ratio:.3f}")
assert abs(ratio - 0.5 / 0.9) < 1e-9

# %% [markdown]
# **4. Predicting an unseen perturbation from gene features.**
# Simulate with `n_gene_features=16` and 60 perturbations (`FEATURES` above).
# For every silenced regulator, predict its true effect in context A from the *other* regulators in three ways: (a) the mean of their effects; (b) the average of their effects weighted by the cosine similarity of features (negative weights for opposed genes); (c) both, (a) plus the weighted average of the others' deviations from their mean.
# Score each by its median Pearson $r$ with the truth, with `feature_informativeness` 1 and 0, each without and with `shared_response=0.3`.
# Which predictor wins, and when?


# %% tags=["hide-cell"]
# Solution. Without a shared response the mean of the others knows nothing (r near 0), and the
# features help only if they are informative. With it, the mean of the others wins over the
# features alone: it captures the shared part without knowing anything about the gene. The
# features still add to it when they are informative (c); uninformative ones only add noise.
def three_predictors(**knobs) -> pd.Series:
    """Median r with the truth of predictors (a), (b) and (c), over silenced regulators."""
    data = simulate_perturbseq(params, seed=4, n_gene_features=16, **FEATURES, **knobs)
    effects = true_effects(data).xs("context_A", level="cell_type")
    regulators = [p for p in effects.index if data.var.loc[p, "is_regulator"]]
    features = data.varm["gene_features"][data.var_names.get_indexer(regulators)]
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    weights = unit @ unit.T
    np.fill_diagonal(weights, 0)  # never a perturbation's own effect
    weights /= np.abs(weights).sum(1, keepdims=True)
    truth_r = effects.loc[regulators].to_numpy()
    mean_others = (truth_r.sum(0) - truth_r) / (len(truth_r) - 1)
    predictions = {
        "(a) mean of the others": mean_others,
        "(b) feature-weighted": weights @ truth_r,
        "(c) both": mean_others + weights @ (truth_r - truth_r.mean(0)),
    }
    return pd.Series(
        {
            name: np.median([np.corrcoef(t, p)[0, 1] for t, p in zip(truth_r, pred)])
            for name, pred in predictions.items()
        }
    )


answer = pd.DataFrame(
    {
        f"informativeness {knob:g}, shared {shared:g}": three_predictors(
            feature_informativeness=knob, shared_response=shared
        )
        for shared in (0.0, 0.3)
        for knob in (1.0, 0.0)
    }
).T
print(answer.round(2).to_string())
a, b, c = answer.columns
assert answer.iloc[0][b] > answer.iloc[0][a] + 0.1  # informative features beat the mean
assert abs(answer.iloc[1][b]) < 0.1  # uninformative ones know nothing
assert answer.iloc[2][a] > answer.iloc[2][b]  # the shared response: the mean wins
assert answer.iloc[2][c] > answer.iloc[2][a]  # informative features still add to it

# %% [markdown]
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
