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
# - estimate how many cells are needed to detect an effect of a given size.
#
# **Prerequisites:** bursting, capture and overdispersion from [chapter 1](01_central_dogma.ipynb); AnnData, normalization and log1p from [chapter 2](02_single_cell_data.ipynb).
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
# \underbrace{X_p}_{\text{what we measure}} \;=\; \underbrace{T_p(X_0)}_{\text{basal state, transformed by the perturbation}} \;+\; \underbrace{H}_{\text{cell-to-cell heterogeneity}} \;+\; \underbrace{\varepsilon}_{\text{technical noise}}
# $$
#
# - $X_0$ is the **basal state**: the expression program of the cell type (the "context") before any perturbation.
# - $T_p$ is the **perturbation effect**: silencing gene $p$ lowers its own expression, and the change travels through the gene regulatory network to the genes it controls.
# - $H$ is **biological heterogeneity**: programs that vary between cells of the same type regardless of the perturbation, such as the cell cycle, cell size or stress.
# - $\varepsilon$ is **technical noise**: each cell's capture efficiency, its sequencing depth, the batch it was processed in, and the random sampling of molecules (chapter 1).
#
# A virtual cell has to learn $T_p$, for perturbations and cell types it has not seen, while $H$ and $\varepsilon$ blur every example it learns from.
# The "+" is a convenient fiction: in the simulator below, $T_p$, $H$ and batch shifts add up on the *log* scale of expected expression, and sampling noise then acts on the counts.
# Concretely, for cell $i$ of context $c$, batch $b$, with perturbation $p$:
#
# $$
# \log \lambda_{ig} = \underbrace{\mu_{cg}}_{X_0} + \underbrace{k_i\, r_{cpg}}_{T_p} + \underbrace{(L^\top z_i)_g}_{H} + \underbrace{\beta_{bg}}_{\text{batch}},
# \qquad
# m_{ig} \sim \operatorname{NB}\!\Bigl(M_i \tfrac{\lambda_{ig}}{Z_c},\, \theta_g\Bigr),
# \qquad
# x_{ig} \sim \operatorname{Binomial}(m_{ig}, \eta_i).
# $$
#
# Here $k_i = \log(1 - \text{efficiency}_i)$ is the strength of the cell's knockdown (zero for controls and for cells whose guide failed; efficiency is capped at 98%, since CRISPRi rarely silences completely), $r_{cpg}$ is how gene $g$ responds per unit of knockdown of $p$ in context $c$, $z_i$ are the cell's program scores with gene loadings $L$, $M_i$ is the cell's total number of mRNA molecules, $Z_c$ normalizes the context's profile, $\theta_g$ is the gene's negative binomial inverse dispersion, and $\eta_i$ is the cell's capture efficiency.
# `simulate_perturbseq` implements exactly this and stores what is normally hidden: every cell's knockdown, size and capture, and the true mean effect of every perturbation in every context.

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
# Control cells show that program directly, so we compare the two contexts' control pseudobulks (the mean log1p-normalized expression of a group of cells, chapter 4 covers it in depth).

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
# This is why the challenge is hard: its test cell type (H1 stem cells) differs from the cell types that most public training data come from {cite}`roohani2025`.

# %% [markdown]
# ## $T_p$: a knockdown travels through the network
#
# The simulator wires a random sparse gene regulatory network: about one gene in ten is a regulator, and each regulator controls a dozen targets with a random positive (activating) or negative (repressing) weight.
# Silencing gene $p$ changes its own log-expression by $k_i$, and each target of $p$ changes by $k_i$ times the edge weight; the change propagates along paths of up to three edges.
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
fig.colorbar(image, ax=axes[0], shrink=0.8)
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
# In the heatmap, each row is a silenced gene and the first twelve columns are the same genes, so the dark blue diagonal is each target's own knockdown; the columns to the right are the most affected downstream genes, pushed up (red) or down (blue).
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
# Two control cells of the same type, same batch, differ by more than sampling noise: one may be dividing, another larger or stressed.
# The simulator gives each cell scores $z_i$ on a few hidden programs, each of which shifts a subset of genes up or down.
# The principal components of control cells pick these programs up:

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
# The first principal component of control cells tracks a hidden program: the largest structure among unperturbed cells is heterogeneity, not noise.
# Because controls carry the same programs as perturbed cells, $H$ cancels in the *mean* difference between perturbed and control cells, but it adds variance to every single cell.

# %% [markdown]
# ## $\varepsilon$: size, capture, batch and sampling
#
# Technical noise comes in layers too.
# Each cell has its own total mRNA $M_i$ and capture efficiency $\eta_i$, so library sizes vary several-fold; normalization divides this out (chapter 2).
# Each batch shifts genes slightly and changes sequencing depth.
# And the counts themselves are negative binomial samples, with the mean-variance relation we derived in chapter 1.

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
print(
    f"library size: median {np.median(library):.0f}, 5th-95th percentile {np.percentile(library, 5):.0f}-{np.percentile(library, 95):.0f}"
)

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
# Part is the log1p transformation: the mean of $\log(1+x)$ is not the log of the mean, and for lowly expressed genes it compresses large fold changes into small differences.

# %% [markdown]
# ## How many cells does it take?
#
# The effect on gene $g$ is estimated from $n$ perturbed and $m$ control cells.
# If single-cell values of the gene (after log1p) have standard deviation $\sigma_g$, the difference of the two means has standard error
#
# $$
# \operatorname{SE}_g = \sigma_g \sqrt{\tfrac{1}{n} + \tfrac{1}{m}} .
# $$
#
# To detect an effect with a two-sided test at the 5% level 80% of the time, it must be about $(1.96 + 0.84) \approx 2.8$ standard errors large: the *minimal detectable effect* is $2.8\,\sigma_g\sqrt{1/n + 1/m}$.
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


def recovery(cells: int, seed: int = 1) -> float:
    """median_r of a fresh simulation with `cells` cells per perturbation."""
    return median_r(
        simulate_perturbseq(params, seed=seed, cells_per_perturbation=cells)
    )


sweep = by_mode(full=[10, 25, 50, 100, 200, 400], fast=[10, 50, 200])
r_by_cells = {cells: recovery(cells) for cells in sweep}
for cells, r in r_by_cells.items():
    print(f"{cells:4d} cells per perturbation: median r = {r:.3f}")
assert r_by_cells[sweep[-1]] > r_by_cells[sweep[0]] + 0.2

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(5, 3.4))
ax.semilogx(list(r_by_cells), list(r_by_cells.values()), "o-", color=PALETTE["truth"])
ax.set(
    xlabel="cells per perturbation",
    ylabel="median Pearson r (measured vs true)",
    title="More cells, closer to the truth",
    ylim=(0, 1),
)
plt.show()

# %% [markdown]
# Agreement grows quickly at first, then slowly: every doubling of cells buys less.
# It does not approach 1, for two reasons the simulator lets us see: the log1p compression mentioned above, and the many genes whose true effect is zero, whose measured effect is pure noise and pulls the correlation down.
# Real data add a third: nobody knows the true effect, so the best a model can do is match a *noisy* measurement.
# Keep this ceiling in mind when you read any benchmark.

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
# ## Summary
#
# - Measured expression mixes four layers: the cell type's basal program $X_0$, the perturbation effect $T_p$, cell-to-cell heterogeneity $H$ and technical noise $\varepsilon$ (size, capture, batch, sampling).
# - `simulate_perturbseq` builds data from exactly these layers and stores the truth: the mean effect of every perturbation in every context, the network and every cell's hidden state.
# - A knockdown acts on its target and spreads through the regulatory network differently in each cell type; incomplete knockdown and escaping cells dilute it.
# - An effect is only defined against controls of the same cell type (and ideally the same batch); the wrong reference swamps the effect.
# - The detectable effect shrinks as $\sigma\sqrt{1/n + 1/m}$: cells per perturbation limit what any dataset, and so any model, can show.

# %% [markdown]
# ## Exercises
#
# **1. Switch off the noise.**
# Simulate with `n_programs=0`, `batch_sd=0`, `batch_depth_sd=0`, `size_sd=0` and `escape_fraction=0`.
# Does the measured effect agree better with the truth? What limits it now?

# %% tags=["hide-cell"]
# Solution. Removing H, batch and size variation and the escapers leaves only the sampling of
# molecules and the log1p compression: agreement improves but stays below 1.
quiet = {
    "n_programs": 0,
    "batch_sd": 0.0,
    "batch_depth_sd": 0.0,
    "size_sd": 0.0,
    "escape_fraction": 0.0,
}
quiet_sim = simulate_perturbseq(params, seed=3, **quiet)
noisy_sim = simulate_perturbseq(params, seed=3)


print(
    f"with every noise term: r = {median_r(noisy_sim):.3f}; sampling only: r = {median_r(quiet_sim):.3f}"
)
assert median_r(quiet_sim) > median_r(noisy_sim)

# %% [markdown]
# **2. How many cells for an effect of 0.2?**
# Using the minimal detectable effect formula and the median $\sigma_g$ of the control cells above, how many perturbed cells (with 400 controls) are needed to detect a log1p effect of 0.2?

# %% tags=["hide-cell"]
# Solution. Solve 2.8 * sigma * sqrt(1/n + 1/m) = 0.2 for n.
s, m, effect = np.median(sigma), 400, 0.2
inverse_n = (effect / (2.8 * s)) ** 2 - 1 / m
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
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
