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
# # Metric 2: perturbation discrimination
#
# A virtual cell that predicts the same change for every gene you silence is of no use to anyone who must choose which gene to silence.
# The mean absolute error of chapter 5 barely notices such a model: most genes change little after most perturbations, so the average change is already a close guess.
# The challenge's second metric asks a sharper question: if we hand the model's prediction for gene $p$ to someone who holds the real measured effects of all $K$ perturbations, can they pick out the real effect of $p$?
# This chapter builds that metric, the {term}`perturbation discrimination score`, in a few lines of numpy, measures what perfect, random and baseline predictions score on data whose truth we know, finds how far noise alone lets real data be told apart, and shows what the metric does not see.

# %% [markdown]
# ```{admonition} Objectives and prerequisites
# :class: tip
# After this chapter you will be able to:
# - compute the perturbation discrimination score by hand: L1 distances from a predicted effect vector to every real one, without the silenced gene's column, a 0-based rank, and $1 - \text{rank}/K$;
# - say what perfect, random, shuffled, cell-mean and control-mean ("nothing happens") predictions score, and why "chance" is not exactly 0.5;
# - explain why the silenced gene is left out, and how the number of cells caps the score that even a perfect model can reach;
# - judge which real perturbations can be told apart at all, from two halves of the same experiment;
# - recognize what the score ignores (the size of an effect) and how it can be gamed.
#
# **Prerequisites:** pseudobulk, effect vectors and the THP-1 data from [chapter 4](04_data_for_modelling.ipynb); the challenge's evaluation inputs and the mean absolute error from [chapter 5](05_mae.ipynb).
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
from matplotlib.lines import Line2D
from scipy import stats

from vcell_lib.baselines import cell_mean_baseline, control_mean_baseline
from vcell_lib.data import (
    CONTROL,
    PERT,
    half_split,
    load_papalexi2021,
    normalize_log1p,
    profile_table,
)
from vcell_lib.env import by_mode, set_seed, versions
from vcell_lib.metrics import discrimination_score, evaluate
from vcell_lib.plotting import PALETTE, style
from vcell_lib.simulate import SimulationParams, simulate_perturbseq, true_effects

rng = set_seed(0)
style()
versions()

# %% [markdown]
# ## The idea: is the prediction nearest to its own perturbation?
#
# Recall the {term}`effect vector` of chapter 4: the {term}`pseudobulk` (mean log1p expression) of the cells with perturbation $q$ minus the pseudobulk of the control cells, one signed number per gene, $\delta_q = \bar{x}_q - \bar{x}_{\text{control}}$.
# A model predicts cells for perturbation $p$; their pseudobulk minus the pseudobulk of the prediction's own control cells is the predicted effect $\hat\delta_p$.
# The discrimination score of that prediction is computed in three steps.
#
# 1. **Distances.** Compare $\hat\delta_p$ with the *real* effect vector of every perturbation $q$ (including $p$ itself) by the L1, or Manhattan, distance: the sum over genes of absolute differences,
#    $\operatorname{dist}(\hat\delta_p, \delta_q) = \sum_{g \ne p} \bigl|\hat\delta_{p,g} - \delta_{q,g}\bigr|$.
#    The sum skips gene $p$ itself, for a reason we come back to below.
# 2. **Rank.** Sort the $K$ distances in ascending order and find the position of the true perturbation $q = p$, counting from 0: $r_p = 0$ means that no other real effect is closer to the prediction than its own.
# 3. **Score.** $s_p = 1 - r_p / K$, where $K$ is the number of perturbations. A prediction nearest to its own effect scores 1; one with every other perturbation closer scores $1/K$.
#
# The score of a model is the mean of $s_p$ over all perturbations.
#
# Why skip the silenced gene?
# With {term}`CRISPRi` the silenced gene's own expression drops sharply, and in the real data this is often the largest and most reliable single change.
# A model knows which gene was silenced from the perturbation's name, so it can predict that drop without having learned anything about the cell.
# Left in, that one column would let a model identify perturbations for free; removed, the score asks whether the model predicts the *consequences* of silencing.
# We measure how much the column matters later in the chapter.
#
# We simulate one cell type, as in the challenge's test set, with chapter 3's simulator.
# A second simulation with the **same seed** has the same regulatory network and so the same true effects; asking for a **different number of cells** per perturbation changes every later random draw, so its cells are a fresh sample.
# It is what a second run of the same experiment would give: an independent resample, the best prediction any model could hope to make, short of the noise-free truth.

# %%
N_PERTS = by_mode(full=50, fast=20)  # perturbations (VCELL_FAST=1 shrinks the data)
params = SimulationParams(
    n_contexts=1,
    n_perturbations=N_PERTS,
    cells_per_perturbation=100,
    n_control_cells=by_mode(full=500, fast=300),
)
sim = simulate_perturbseq(params, seed=0)
resample_sim = simulate_perturbseq(params, seed=0, cells_per_perturbation=120)
assert true_effects(sim).equals(true_effects(resample_sim))  # same truth, new cells

real = normalize_log1p(sim)
resample = normalize_log1p(resample_sim)


def effects(adata) -> pd.DataFrame:
    """Effect vectors of one cell type: each perturbation's pseudobulk minus the control's."""
    table = profile_table(adata)  # chapter 5: pseudobulk as a table, one row per label
    return (table.drop(index=CONTROL) - table.loc[CONTROL]).sort_index()


real_delta = effects(real)
resample_delta = effects(resample)
perts = real_delta.index.to_numpy()
genes = real_delta.columns.to_numpy()
print(f"{len(perts)} perturbations x {len(genes)} genes; first: {list(perts[:4])}")

# %% [markdown]
# The perturbations are named after the silenced gene (`G00019` and so on), and every silenced gene is also a measured gene: the column to skip exists.
# Here is the whole metric in numpy.


# %%
def pds(
    pred: np.ndarray,
    real: np.ndarray,
    genes: np.ndarray,
    perts: np.ndarray,
    drop_target: bool = True,
) -> np.ndarray:
    """Perturbation discrimination, one score per perturbation.

    pred and real: (K perturbations x G genes) effect vectors, rows in the order of `perts`.
    """
    n = len(perts)
    scores = np.empty(n)
    for i, p in enumerate(perts):
        keep = genes != p if drop_target else np.ones(len(genes), dtype=bool)
        # L1 distance from prediction i to every real effect, gene p left out
        distances = np.abs(real[:, keep] - pred[i, keep]).sum(axis=1)
        # 0-based place of the true perturbation in ascending order
        rank = np.flatnonzero(np.argsort(distances) == i)[0]
        scores[i] = 1 - rank / n
    return scores


scores = pds(resample_delta.to_numpy(), real_delta.to_numpy(), genes, perts)
print(f"resample: mean discrimination score {scores.mean():.3f}")

# %% [markdown]
# To see one step inside the loop, take one perturbation and list the real effects nearest to its prediction:

# %%
i = int(np.argmin(scores))  # the resample's worst-scored perturbation
p = perts[i]
keep = genes != p
distances = pd.Series(
    np.abs(real_delta.to_numpy()[:, keep] - resample_delta.to_numpy()[i, keep]).sum(
        axis=1
    ),
    index=perts,
).sort_values()
print(f"prediction for {p}: nearest real effects (L1 distance over {keep.sum()} genes)")
print(distances.head(6).round(2).to_string())
rank = distances.index.get_loc(p)
print(
    f"rank of the real {p}: {rank}, score 1 - {rank}/{len(perts)} = {1 - rank / len(perts):.2f}"
)
assert np.isclose(scores[i], 1 - rank / len(perts))
size = real_delta.abs().sum(axis=1)  # L1 size of each real effect vector
print(
    f"distance to its own real effect: {distances[p]:.2f}; size of that real effect: "
    f"{size[p]:.2f} (median size over perturbations {size.median():.2f})"
)
# The simulation knows the truth (chapter 3): compare the sizes with the true effect's.
true_size = true_effects(sim).droplevel(0).loc[perts].abs().sum(axis=1)
resample_size = resample_delta.abs().sum(axis=1)
for name, sizes in (("true", true_size), ("real", size), ("resample", resample_size)):
    larger = int((sizes < sizes[p]).sum())
    print(
        f"{name:8s} effect of {p}: size {sizes[p]:5.2f}, median {sizes.median():5.2f}, "
        f"larger than {larger} of the other {len(perts) - 1}"
    )

# %% [markdown]
# Even the resample misses some perturbations, and this one badly.
# The L1 distance adds up small differences over hundreds of genes, and most of them are noise: the size of a real effect vector summed over genes, printed above for comparison, is mostly the noise of its 100 cells rather than the effect.
# Noise alone does not explain why *this* perturbation fails, though, since every comparison carries noise on both sides.
# The simulation knows the true effects, and the last three lines compare sizes.
# The true effect of this perturbation is weaker than most, and the resample's measurement of it has an ordinary size, yet the real measurement is one of the largest of all.
# So the real sample itself is atypical: by the luck of its 100 cells it carries unusually large noise, which puts it further from the resample than several other perturbations' real effects are.
# The fault lies in the test data, not in the prediction, and no better prediction could repair it.
# We return to noise below.
#
# The library's `discrimination_score` takes the two tables of effect vectors, and `evaluate` computes the score, with every other metric of the challenge, from the predicted and real cells themselves, as the challenge's evaluator cell-eval does.
# All three agree:

# %%
library = discrimination_score(resample_delta, real_delta, metric="l1")
table = evaluate(resample, real)
assert np.allclose(library.to_numpy(), scores)
assert np.allclose(table.loc[perts, "discrimination_score_l1"].to_numpy(), scores)
print(
    table[
        [
            "discrimination_score_l1",
            "discrimination_score_l2",
            "discrimination_score_cosine",
        ]
    ].head()
)

# %% [markdown]
# Three variants of the formula circulate, and they differ only in how the rank is scaled:
#
# - **cell-eval** (the evaluator of the challenge, version 0.8) and this book: $s_p = 1 - r_p/K$ with the 0-based rank. Perfect is 1, the worst possible is $1/K$, and a prediction that carries no information scores about 0.5.
# - **The challenge's introductory blog post** ([Hugging Face, 2025](https://huggingface.co/blog/virtual-cell-challenge)) writes $\text{PDisc}_p = r_p/K$ and a normalized $1 - 2\,\text{PDisc}$, which is about 0 for random predictions and 1 for perfect ones; it equals $2 s_p - 1$ (exercise 1).
# - **Chapter 4** used $1 - r_p/(K-1)$, with $r_p$ the number of other perturbations strictly closer, so that the worst case is exactly 0.
#
# One more difference matters more than the scaling.
# cell-eval up to version 0.5 compared the *absolute values* $|\delta|$ of effects; since version 0.6 it compares the signed effects, so a prediction must also get the direction of each change right (exercise 2).
# The book uses signed effects, as cell-eval 0.8 does.

# %% [markdown]
# ## Reference points on data with known truth
#
# What does a score of 0.6 mean?
# Before scoring any model, we score predictions whose quality we know:
#
# - **real itself**: the real effects handed back as the prediction, a perfect score by construction;
# - **resample**: the independent resample, a perfect model that is only limited by noise;
# - **random**: random effect vectors, each gene drawn from a normal distribution with that gene's spread across the real effects;
# - **shuffled labels**: the resample's effects, each given to the wrong perturbation (the next one in the sorted list): right kind of vectors, wrong assignment;
# - **cell mean**: the challenge's baseline, the same prediction for every perturbation, the mean profile of the training data (`cell_mean_baseline`, taught in chapter 8; the resample stands in for the training data);
# - **control mean** ("nothing happens"): every prediction is the mean control profile (`control_mean_baseline`).

# %%
n_cells = pd.Series(100, index=perts)
baseline_cells = {
    "cell mean": cell_mean_baseline(resample, n_cells, controls=real),
    "control mean": control_mean_baseline(resample, n_cells, controls=real),
}
predictions = {
    "real itself": real_delta,
    "resample": resample_delta,
    "random": pd.DataFrame(
        rng.normal(0.0, real_delta.std().to_numpy(), real_delta.shape),
        index=perts,
        columns=genes,
    ),
    "shuffled labels": pd.DataFrame(
        np.roll(resample_delta.to_numpy(), 1, axis=0), index=perts, columns=genes
    ),
}
for name, cells in baseline_cells.items():
    predictions[name] = effects(cells)  # each side's effects against its own controls

score_table = pd.DataFrame(
    {
        name: pds(d.to_numpy(), real_delta.to_numpy(), genes, perts)
        for name, d in predictions.items()
    },
    index=perts,
)
mae = {"resample": table["mae"].mean()}  # the resample's evaluation, from above
for name, cells in baseline_cells.items():  # the same numbers from the full evaluation
    evaluated = evaluate(cells, real)
    assert np.allclose(evaluated["discrimination_score_l1"], score_table[name])
    mae[name] = evaluated["mae"].mean()
print("mean discrimination score:")
print(score_table.mean().round(3).to_string())
print(
    "mean absolute error (chapter 5):", {k: round(float(v), 4) for k, v in mae.items()}
)
K = len(perts)
assert score_table["real itself"].eq(1).all()
assert score_table["resample"].mean() > 0.85
for name in ("random", "shuffled labels", "cell mean", "control mean"):
    assert 0.4 < score_table[name].mean() < 0.65
assert mae["cell mean"] < mae["resample"]

# %% [markdown]
# The real effects score 1, and the resample nearly so.
# Every prediction without information about *which* perturbation it is for lands near 0.5: random vectors, the right vectors under the wrong labels, and both baselines.
# The cell-mean baseline gets nothing from being the average of real profiles; the metric only asks whether predictions differ in the right way.
# Compare the mean absolute error: there the cell-mean baseline beats even a second run of the experiment, whose noise costs more than the baseline's lack of information.
# This is the blind spot the discrimination score was made for.
#
# ### Why "no information" is not exactly 0.5
#
# Look closer at the two baselines: they predict the same vector $\hat\delta$ for every perturbation.
# If we kept every gene, the distances from $\hat\delta$ to the $K$ real effects would be the same list for every $p$, so one sorting would serve all predictions, and the $K$ true perturbations would take the ranks $0, 1, \dots, K-1$ once each.
# The mean score would then be exactly
#
# $$
# \frac{1}{K}\sum_{r=0}^{K-1} \Bigl(1 - \frac{r}{K}\Bigr) = \frac{K+1}{2K},
# $$
#
# slightly above 0.5 because the rank counts from 0 but is divided by $K$.
# Ties cannot change this mean: `argsort` puts tied distances in *some* order, so each rank is still used once; ties only decide which perturbation gets which rank.
# Dropping gene $p$ breaks the argument, because each prediction now sees a slightly different list:

# %%
for name in ("cell mean", "control mean"):
    same = predictions[name].to_numpy()
    kept = pds(same, real_delta.to_numpy(), genes, perts, drop_target=False).mean()
    dropped = pds(same, real_delta.to_numpy(), genes, perts).mean()
    print(
        f"{name:12s}: every gene kept {kept:.4f}, silenced gene dropped {dropped:.4f}"
    )
    assert np.isclose(kept, (K + 1) / (2 * K))
print(f"(K + 1) / 2K = {(K + 1) / (2 * K):.4f}")

# %% [markdown]
# With the silenced gene dropped, identical predictions score above $(K+1)/(2K)$.
# The real effect of $p$ loses its own knockdown, often its largest entry, when its distance is computed, while every other real effect $q$ keeps its own.
# So, seen from a prediction that knows nothing, $p$'s real effect looks a little smaller than the others, closer to any average guess, and ranks a little higher.
# This is one reason why the challenge does not take 0.5 as its reference, but scores a model by how far it rises above the cell-mean baseline's own score, reported as about 0.51 on the challenge data (chapter 8).
#
# Ties need two real effects at *exactly* the same distance from a prediction, which noisy measurements practically never produce.
# When they do occur, `argsort` decides, and cell-eval uses the same rule, so the library does too.
# A toy case with three perturbations, two of which have identical real effects, shows what that means:

# %%
toy_real = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # A and B: the same effect
toy_perts, toy_genes = np.array(["A", "B", "C"]), np.array(["g1", "g2"])
toy_scores = pds(toy_real, toy_real, toy_genes, toy_perts)  # perfect predictions
print({str(p): round(float(s), 3) for p, s in zip(toy_perts, toy_scores)})
assert toy_scores[0] == 1 and toy_scores[1] < 1

# %% [markdown]
# Both A and B are predicted perfectly, yet B scores $1 - 1/3$ because it comes second in the list: when two perturbations cannot be told apart, the tie rule, not the model, decides who gets the credit.
#
# The mean hides the shape of the scores.
# The figure shows the distribution of ranks for each kind of prediction.

# %% tags=["hide-input"]
ranks = (1 - score_table).drop(columns="real itself") * K  # real itself: all at 0
colors = {
    "resample": PALETTE["truth"],
    "random": PALETTE["control"],
    "shuffled labels": PALETTE["control"],
    "cell mean": PALETTE["prediction"],
    "control mean": PALETTE["prediction"],
}
fig, axes = plt.subplots(1, 5, figsize=(12, 3.2), sharex=True, sharey=True)
bins = np.arange(0, K + 1, max(1, K // 10))
for ax, name in zip(axes, ranks.columns):
    ax.hist(ranks[name], bins=bins, color=colors[name])
    ax.set_title(f"{name}\nmean score {score_table[name].mean():.2f}")
fig.supxlabel(f"rank of the true perturbation (0 = nearest, K = {K})")
fig.supylabel("perturbations")
fig.tight_layout()
plt.show()

# %% [markdown]
# The resample puts most perturbations at rank 0 (the real effects themselves, not drawn, put every one there).
# Predictions without information spread the ranks over the whole range.
# Spread does not mean random, though.
# The control-mean prediction is close to zero for every perturbation, so the real effects nearest to it are those of the *weakest* perturbations: they get low ranks and high scores, and the strongest perturbations get the worst.
# The Spearman correlation measures how consistently one quantity falls as another rises: it is the ordinary (Pearson) correlation computed on the ranks of the two quantities instead of their values, so it is $-1$ when every larger effect goes with a lower score.

# %%
rho = stats.spearmanr(score_table["control mean"], size).statistic
print(
    f"control mean: Spearman correlation of score and size of the real effect {rho:.2f}"
)
assert rho < -0.3

# %% [markdown]
# "Nothing happens" is a perfect prediction for a perturbation that does nothing, and the metric rewards it there (exercise 3 finds the same on real data).

# %% [markdown]
# ### Keep the silenced gene, and a one-gene model looks clever
#
# How much would the silenced gene's column be worth?
# Consider a "target-only" model that predicts no change except in the silenced gene, where it predicts the real drop exactly: it knows the knockdown, which the perturbation's name gives away, and nothing else.
# Let $x = \delta_{p,p}$ be that drop.
# With the L1 distance and column $p$ kept, the prediction moves closer to the real effect of $p$ by $|x|$ and further from every other real effect by about $|x|$: compared with predicting no change at all, it gains at most $2|x|$ against each competitor.
# Whether $2|x|$ is a lot depends on what it is compared with.
# We score the target-only model with the L1 distance and with the cosine distance (1 minus the cosine of the angle between two vectors, which compares directions and ignores lengths), on all genes and on a small panel made only of the silenced genes, as in a targeted experiment that reads out a few hundred genes.

# %%
target_only = pd.DataFrame(0.0, index=perts, columns=genes)
for p in perts:
    target_only.loc[p, p] = real_delta.loc[p, p]
own_drop = np.diag(real_delta.loc[perts, perts].to_numpy())
print(
    f"the silenced gene's own effect: median {np.median(own_drop):.2f}, strongest {own_drop.min():.2f}"
)


def with_target_kept(delta: pd.DataFrame) -> pd.DataFrame:
    """Rename the genes so that no column matches a perturbation: nothing is dropped."""
    return delta.rename(columns=lambda g: f"{g}_kept")


keep_rows = {}
for panel, columns in (("all genes", genes), ("panel of silenced genes", perts)):
    pred_, real_ = target_only[columns], real_delta[columns]
    for metric in ("l1", "cosine"):
        kept = discrimination_score(
            with_target_kept(pred_), with_target_kept(real_), metric
        )
        dropped = discrimination_score(pred_, real_, metric)
        keep_rows[(panel, metric)] = {
            "target kept": kept.mean(),
            "target dropped": dropped.mean(),
        }
keep_table = pd.DataFrame(keep_rows).T
print(keep_table.round(3))
assert keep_table.loc[("all genes", "cosine"), "target kept"] > 0.9
assert (keep_table["target kept"] > keep_table["target dropped"]).all()
assert (keep_table["target dropped"] < 0.7).all()

# %% [markdown]
# With the column dropped, the target-only model is what it is, a prediction of "nothing happens", and scores like the control mean.
# (Under the cosine distance an all-zero prediction has no direction, every distance is undefined, and the ranks fall back on the order of the list: the no-information mean $(K+1)/(2K)$.)
# With the column kept, it looks clever.
# Under the cosine distance it is nearly perfect: its predicted vector points exactly along gene $p$, and the real effect of $p$ is the only one with a large component there.
# Under the L1 distance the gain is real but limited on all genes, because $2|x|$ competes with distances summed over hundreds of genes, each carrying noise; on the small panel it counts for much more.
# How much the column would be worth on the challenge's data depends on the number of genes, the noise and the strength of the knockdowns.
# Whatever it is worth, a model that only learned "the silenced gene goes down" should get no credit for it, and dropping the column makes sure of that.

# %% [markdown]
# ## How noise and cell numbers limit the score
#
# The resample did not score 1, although it is the same experiment run twice.
# L1 distances add up noise over every gene, and both sides carry noise: the prediction, when it is estimated from cells, and the real data, always.
# How much does each side's noise cost?
# We separate the two with two sweeps:
#
# - the real data fixed (100 cells per perturbation), the resample drawn with more and more cells: how good must a prediction be?
# - a resample with many cells (nearly noise-free, the best a model could do) as the prediction, the real data drawn with more and more cells: how good must the test data be?

# %%
SWEEP = by_mode(full=[10, 20, 50, 120, 300, 800], fast=[10, 40, 200])
IDEAL_CELLS = by_mode(full=1000, fast=400)  # the near-noise-free prediction
ideal_delta = effects(
    normalize_log1p(
        simulate_perturbseq(params, seed=0, cells_per_perturbation=IDEAL_CELLS)
    )
)
sweep_rows = []
for cells in SWEEP:  # same seed: same truth; a new number of cells: new cells
    delta = effects(
        normalize_log1p(
            simulate_perturbseq(params, seed=0, cells_per_perturbation=cells)
        )
    )
    sweep_rows.append(
        {
            "cells": cells,
            "noisy prediction, real with 100 cells": pds(
                delta.to_numpy(), real_delta.to_numpy(), genes, perts
            ).mean(),
            f"prediction from {IDEAL_CELLS} cells, noisy real": pds(
                ideal_delta.to_numpy(), delta.to_numpy(), genes, perts
            ).mean(),
        }
    )
sweep = pd.DataFrame(sweep_rows).set_index("cells")
print(sweep.round(3).to_string())
assert (sweep.iloc[-1] > sweep.iloc[0]).all()
assert sweep.iloc[0].max() < sweep.iloc[-1].min()

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6, 3.8))
for column, color in zip(sweep.columns, (PALETTE["prediction"], PALETTE["perturbed"])):
    ax.semilogx(sweep.index, sweep[column], "o-", color=color, label=column)
ax.axhline(
    (K + 1) / (2 * K),
    color=PALETTE["control"],
    ls=":",
    label="no information, (K+1)/2K",
)
ax.set(
    xlabel="cells per perturbation (the swept side)",
    ylabel="mean discrimination score",
    title="Noise on either side caps the score",
    ylim=(0.3, 1.02),
)
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# The two sides are not alike.
# Noise in the prediction costs surprisingly little: predictions from ten cells per perturbation keep most of their score.
# A prediction's noise is one and the same vector in all $K$ of its comparisons, so it pushes the prediction away from every real effect by a similar amount, and the *order* of the distances largely survives.
# Noise on the real side costs more at small numbers of cells: each real effect carries its own, independent noise, which reshuffles the distances, and a nearly noise-free prediction falls far below 1 when the test data have ten cells per perturbation.
# So the score a model can reach is bounded by the noise of the data it is tested on, which no model can reduce.
# (Each point is one simulated experiment; the small wiggles are its luck.)
# Chapter 4 found that the noise of an effect vector falls like $1/\sqrt{n}$; the score depends on the noise only through how it compares with the *differences* between perturbations, so it saturates once those differences stand out.
#
# ### L2 and cosine distances
#
# cell-eval also reports the score with the L2 (Euclidean) and cosine distances; only L1 enters the challenge score.

# %%
variant_table = pd.DataFrame(
    {
        metric: {
            name: discrimination_score(predictions[name], real_delta, metric).mean()
            for name in ("resample", "random", "cell mean", "control mean")
        }
        for metric in ("l1", "l2", "cosine")
    }
)
print(variant_table.round(3))

# %% [markdown]
# On these data the three distances agree about the good and the useless predictions.
# What changes is what each distance weighs.
# L2 squares each gene's difference, so a few large differences dominate and the many small noisy ones count less; L1 weighs every unit of difference alike.
# Cosine compares directions only: a prediction twice too large, or ten times too small, scores exactly the same as the right one, and a prediction of exactly zero has no direction at all.
# We return to size in the last section.

# %% [markdown]
# ## On real data: which THP-1 knockouts can be told apart?
#
# Real data have no known truth, but they can be split.
# We divide the cells of every perturbation, controls included, into two random halves.
# One half plays the real data, the other a prediction, each against its own half of the controls.
# The score tells which perturbations a second, independent measurement can pick out.
# We call it the **half-split (uncorrected) data ceiling**: an estimate of the {term}`data ceiling`, the best score the noise in the data allows, before any correction for the halves' smaller size.
# It is not a strict ceiling: a model predicting noise-free effects could do somewhat better than a noisy half (previous section), and the full data have twice the cells of a half; [chapter 8](08_baselines_and_score.ipynb) corrects it to full depth, as cell-eval does.
# But a perturbation that its own second half cannot find among the others has an effect too weak, or too noisily measured, to be told apart with these cells.
# We repeat the split several times and average each perturbation's score.
# The data are chapter 2's THP-1 {term}`knockouts <knockout>` {cite}`papalexi2021`: 25 knocked-out genes, 299 measured genes, from 48 to over a thousand cells per knockout.

# %%
thp1 = normalize_log1p(load_papalexi2021())
labels = thp1.obs[PERT].astype(str).to_numpy()
thp1_perts = np.array(sorted(set(labels) - {CONTROL}))
thp1_genes = thp1.var_names.to_numpy()
thp1_cells = pd.Series(labels).value_counts()[thp1_perts]


def thp1_effects(cells) -> pd.DataFrame:
    """Effect vectors of the THP-1 knockouts, from a subset of the cells."""
    return effects(cells).loc[thp1_perts]


IFN_PATHWAY = ["IFNGR1", "IFNGR2", "JAK2", "STAT1"]  # chapter 2: one shared signature
N_SPLITS = by_mode(full=10, fast=3)
halves = []
for seed in range(N_SPLITS):
    first, second = half_split(thp1, seed)  # chapter 5: disjoint halves of every label
    halves.append((thp1_effects(first), thp1_effects(second)))
split_scores = pd.DataFrame(
    {
        seed: pds(b.to_numpy(), a.to_numpy(), thp1_genes, thp1_perts)
        for seed, (a, b) in enumerate(halves)
    },
    index=thp1_perts,
)
full_delta = effects(thp1).loc[thp1_perts]
effect_size = pd.Series(
    {p: full_delta.loc[p].drop(p, errors="ignore").abs().sum() for p in thp1_perts}
)
thp1_table = pd.DataFrame(
    {"score": split_scores.mean(axis=1), "cells": thp1_cells, "effect L1": effect_size}
).sort_values("score")
print(
    f"half-split (uncorrected) data ceiling, mean over {N_SPLITS} splits: "
    f"{thp1_table['score'].mean():.3f}"
)
print(thp1_table.round(2).to_string())
assert thp1_table.loc[["SPI1", "MYC"], "score"].max() < 0.6
assert thp1_table.loc[IFN_PATHWAY + ["SMAD4", "IRF1", "STAT2"], "score"].min() > 0.9

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7.5, 4.6))
in_pathway = thp1_table.index.isin(IFN_PATHWAY)
for mask, marker, label in (
    (~in_pathway, "o", "other knockouts"),
    (in_pathway, "^", "IFN-γ pathway knockouts"),
):
    points = ax.scatter(
        thp1_table.loc[mask, "cells"],
        thp1_table.loc[mask, "score"],
        c=thp1_table.loc[mask, "effect L1"],
        cmap="viridis",
        vmin=thp1_table["effect L1"].min(),
        vmax=thp1_table["effect L1"].max(),
        marker=marker,
        s=50,
        edgecolor="black",
        lw=0.4,
        label=label,
    )
offsets = {"STAT3": (-34, -4), "UBE2L6": (5, -1), "SPI1": (5, -3), "MYC": (5, -3)}
offsets |= {"CUL3": (5, -3), "BRD4": (5, -3), "STAT1": (-24, 7)}
for p, (dx, dy) in offsets.items():
    row = thp1_table.loc[p]
    ax.annotate(
        p,
        (row["cells"], row["score"]),
        fontsize=8,
        xytext=(dx, dy),
        textcoords="offset points",
    )
# crowded points near a score of 1: labels set apart, with lines to their points
arrows = {"SMAD4, STAT2": ("SMAD4", (4, 12)), "JAK2": ("JAK2", (-22, 30))}
arrows |= {"IRF1": ("IRF1", (6, 40)), "IFNGR2": ("IFNGR2", (30, 26))}
arrows |= {"IFNGR1": ("IFNGR1", (44, 10))}
for text, (p, (dx, dy)) in arrows.items():
    row = thp1_table.loc[p]
    ax.annotate(
        text,
        (row["cells"], row["score"]),
        fontsize=8,
        xytext=(dx, dy),
        textcoords="offset points",
        ha="center",
        va="bottom",
        arrowprops={
            "arrowstyle": "-",
            "color": "0.4",
            "lw": 0.6,
            "shrinkB": 4,
            "relpos": (0.5, 0),
        },
    )
ax.set_xscale("log")
ax.axhline(
    (len(thp1_perts) + 1) / (2 * len(thp1_perts)),
    color=PALETTE["control"],
    ls=":",
    label="no information",
)
ax.set(
    xlabel="cells of the knockout (both halves together)",
    ylabel="half-split discrimination score",
    title="THP-1 knockouts: which can a second measurement pick out?",
    yticks=np.arange(0, 1.01, 0.2),
    ylim=(0, 1.26),
    xlim=(40, 2200),
)
fig.colorbar(points, ax=ax, label=r"effect size $\sum_g |\delta_g|$ (all cells)")
grey = {"color": "none", "markerfacecolor": "0.75", "markeredgecolor": "black"}
handles = [
    Line2D([], [], marker="o", markersize=7, label="other knockouts", **grey),
    Line2D([], [], marker="^", markersize=7, label="IFN-γ pathway knockouts", **grey),
    Line2D([], [], color=PALETTE["control"], ls=":", label="no information"),
]
ax.legend(handles=handles, loc="lower right")
plt.show()

# %% [markdown]
# Three groups appear.
#
# - **Strong effects** (brighter points) are picked out (nearly) every time: the interferon-gamma pathway knockouts (triangles), SMAD4, IRF1 and BRD4.
# - **Few cells** sink below chance: SPI1 (48 cells, so 24 per half) and MYC (109). Their large "effect size" is mostly noise. This is the real-side noise of the previous section: each half of a tiny group is far from everything, so the other half finds many well-measured, weak perturbations closer than itself.
# - **Weak effects with many cells** sit in between, most of them well above chance. With several hundred cells per half, even small but consistent changes in a few genes separate them. Both halves share *everything* that sets a knockout's cells apart, though, including technical features such as the mix of replicates or guides, so a half-split can credit a perturbation with a signature that a model could never predict from biology.
#
# STAT2 fits none of the three groups: its effect size (4.35) is moderate, above every weak knockout's and below every strong one's, and with 661 cells it scores 0.99.
# The groups are a rough guide: effect size and number of cells decide together.
#
# ### The interferon-gamma pathway: one signature, four knockouts
#
# Chapter 2 found that the knockouts of IFNGR1, IFNGR2, JAK2 and STAT1, four links of one signalling chain, share one downstream signature.
# They still score near 1 above.
# How close is the call? For each of them, we take the distances from its half-B effect to the half-A effects of the four:


# %%
def distance_block(a: pd.DataFrame, b: pd.DataFrame, rows: list[str]) -> pd.DataFrame:
    """L1 distances from the 'prediction' half b of each row perturbation to the real half a of each."""
    block = {}
    for p in rows:
        keep = a.columns != p
        block[p] = {q: np.abs(b.loc[p, keep] - a.loc[q, keep]).sum() for q in rows}
    return pd.DataFrame(block).T


a, b = halves[0]
block = distance_block(a, b, IFN_PATHWAY)
print("L1 distance, prediction (row) to real half (column):")
print(block.round(2).to_string())
nearest_other = block.apply(lambda row: row.drop(row.name).min(), axis=1)
margin = nearest_other / np.diag(block.to_numpy())
print("nearest other member / own distance:", margin.round(2).to_dict())

# %% [markdown]
# The diagonal wins, but for the receptor subunits and JAK2 by 14% at most, and for JAK2 by about 1%: the nearest other pathway member is almost as close as the knockout itself.
# STAT1 is easier because its effect is the strongest of the four (the largest effect size in the table above).
# With fewer cells the margin disappears.
# We draw the same number of cells from each of the four knockouts and the controls, split them in halves, and count how often a pathway knockout's half B is nearest (among all 25 knockouts) to its own half A rather than to another pathway member:


# %%
def pathway_hits(cells_per_half: int, seed: int) -> float:
    """Fraction of the four pathway knockouts whose nearest real half is their own."""
    draw = np.random.default_rng(seed)
    first, second = np.zeros(len(labels), bool), np.zeros(len(labels), bool)
    for label in np.unique(labels):
        cells = draw.permutation(np.flatnonzero(labels == label))
        take = cells_per_half if label in IFN_PATHWAY else len(cells) // 2
        first[cells[:take]], second[cells[take : 2 * take]] = True, True
    a, b = thp1_effects(thp1[first]), thp1_effects(thp1[second])
    hits = []
    for p in IFN_PATHWAY:
        keep = a.columns != p
        d = np.abs(a.loc[:, keep].to_numpy() - b.loc[p, keep].to_numpy()).sum(axis=1)
        hits.append(thp1_perts[np.argmin(d)] == p)
    return float(np.mean(hits))


for k in by_mode(full=[25, 50, 100, 200], fast=[25, 200]):  # STAT1 has 444 cells
    hit_rate = np.mean(
        [pathway_hits(k, seed) for seed in range(by_mode(full=10, fast=3))]
    )
    print(f"{k:4d} cells per half: own half nearest in {hit_rate:.0%} of cases")
assert pathway_hits(25, 0) < 1

# %% [markdown]
# With a couple of hundred cells per half the four knockouts are mostly told apart; with a few dozen they are mostly confused with each other.
# For a model, this cuts both ways.
# On a test set where the four are measured with few cells, no model could separate them.
# And a model that learned only "this gene belongs to the interferon pathway" loses little.
# Let it predict one shared signature, the mean of the four half-B effects, for all four:

# %%
signature = b.loc[IFN_PATHWAY].mean()
pathway_model = b.copy()  # half B for everyone else, the shared signature for the four
pathway_model.loc[IFN_PATHWAY] = signature.to_numpy()
pathway_scores = pds(pathway_model.to_numpy(), a.to_numpy(), thp1_genes, thp1_perts)
pathway_scores = pd.Series(pathway_scores, index=thp1_perts)[IFN_PATHWAY]
print("one signature for four knockouts:", pathway_scores.round(2).to_dict())
assert pathway_scores.min() >= 1 - 3 / len(thp1_perts)

# %% [markdown]
# The shared signature is nearer to the four real pathway effects than to any other knockout, so each of the four loses at most three ranks out of 25 and scores at least 0.88, without the model ever telling them apart.
# Discrimination *between* perturbations that share a mechanism is a small part of the score; getting the mechanism right is most of it.

# %% [markdown]
# ## What the score does not measure, and how it can be gamed
#
# The score is a *ranking*: it only asks whether a prediction is nearer to its own real effect than to the others.
# It never asks whether the prediction is near in absolute terms.
# The simplest way to see it is to scale a good prediction.
# We multiply the resample's effect vectors by a factor, from a tenth to ten times, and compute the discrimination score and the mean absolute error of chapter 5.
# Both sides share the same control cells here, so the mean absolute error of the pseudobulks equals the mean of $|\hat\delta - \delta|$ over genes.

# %%
factors = [0.1, 0.25, 0.5, 1, 2, 4, 10]
scale_rows = []
for factor in factors:
    scaled = resample_delta * factor
    scale_rows.append(
        {
            "factor": factor,
            "discrimination (L1)": discrimination_score(scaled, real_delta).mean(),
            "discrimination (cosine)": discrimination_score(
                scaled, real_delta, "cosine"
            ).mean(),
            "mean absolute error": (scaled - real_delta).abs().to_numpy().mean(),
        }
    )
scale_table = pd.DataFrame(scale_rows).set_index("factor")
print(scale_table.round(4).to_string())
assert scale_table["discrimination (cosine)"].nunique() == 1  # blind to size
assert (
    scale_table.loc[10, "discrimination (L1)"]
    > scale_table.loc[1, "discrimination (L1)"] - 0.1
)
assert (
    scale_table.loc[10, "mean absolute error"]
    > 5 * scale_table.loc[1, "mean absolute error"]
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
axes[0].semilogx(
    factors,
    scale_table["discrimination (L1)"],
    "o-",
    color=PALETTE["prediction"],
    label="L1 (the challenge)",
)
axes[0].semilogx(
    factors,
    scale_table["discrimination (cosine)"],
    "s--",
    color=PALETTE["accent"],
    label="cosine",
)
axes[0].set(
    xlabel="factor applied to the predicted effects",
    ylabel="mean discrimination score",
    ylim=(0.4, 1.02),
    title="Discrimination: exaggeration costs little",
)
axes[0].legend(loc="lower right")
axes[1].semilogx(
    factors, scale_table["mean absolute error"], "o-", color=PALETTE["perturbed"]
)
axes[1].set(
    xlabel="factor applied to the predicted effects",
    ylabel="mean absolute error",
    ylim=(0, None),
    title="Mean absolute error: size is everything",
)
for ax in axes:
    ax.axvline(1, color=PALETTE["control"], ls=":", lw=1)
    ax.set_xticks(factors, [f"{f:g}" for f in factors])
    ax.minorticks_off()
fig.tight_layout()
plt.show()

# %% [markdown]
# A prediction ten times too strong keeps most of its discrimination score while its mean absolute error explodes; the cosine version does not change at all.
# The reverse is also instructive: shrinking predictions towards zero ({term}`shrinkage`, [chapter 5](05_mae.ipynb)) *lowers* the mean absolute error at first (noise shrinks with them), but the shrunk predictions drift towards "nothing happens" and lose their ranks, because every weak real effect is then closer.
# The two metrics pull in different directions, which is why the challenge combines them (chapter 8).
#
# What the discrimination score does not measure, and the loopholes that follow:
#
# - **Size.** Only the order of distances counts. A model can exaggerate every effect and lose little.
# - **Absolute accuracy.** A prediction can be far from every real effect and still rank first, as long as its own is the least far.
# - **The competition.** A score depends on which other perturbations are in the test set. Perturbations that share a mechanism make each other hard to tell apart, weak and poorly measured ones make the ranking noisy, and adding or removing perturbations changes every score.
# - **Weak perturbations.** "Nothing happens" ranks the weakest perturbations first; predicting no change where a model expects little change is a cheap way to collect rank.
# - **The silenced gene, if kept.** Any distance that includes it rewards the one thing every model knows; cell-eval drops it.
#
# None of this makes the score wrong: it measures the one thing MAE misses, whether predictions are *specific*.
# It is one of three numbers, and it should be read with the others.

# %% [markdown]
# ## Summary
#
# - The perturbation discrimination score ranks the real effects of all $K$ perturbations by their L1 distance to a predicted effect, without the silenced gene's column, and scores $1 - r/K$ for the 0-based rank $r$ of the true one; the mean over perturbations is the model's score. `vcell_lib.metrics.discrimination_score` and `evaluate` compute it exactly as cell-eval 0.8 does, with signed effects.
# - Perfect predictions score 1; the worst possible is $1/K$. Predictions without information about the perturbation (random, shuffled, cell mean, control mean) score near 0.5: exactly $(K+1)/(2K)$ for identical predictions with every gene kept, a little more once the silenced gene is dropped. The blog's normalized form $1 - 2r/K$ puts chance at about 0 instead.
# - Keeping the silenced gene would reward a model that only predicts the knockdown, dramatically under the cosine distance or on small gene panels.
# - Noise on both sides caps the score: a second measurement of the same experiment discriminates well only with enough cells, and a perturbation measured with few cells can fall below chance even for a perfect model.
# - On the THP-1 knockouts, the half-split (uncorrected) data ceiling shows that strong perturbations are (nearly) always discriminable, tiny groups are not, and the interferon-gamma pathway knockouts are told apart only narrowly.
# - The score ignores the size of effects (a tenfold exaggeration costs little) and rewards "nothing happens" on weak perturbations: read it together with the mean absolute error.

# %% [markdown]
# ## Exercises
#
# **1. The blog's normalized form.**
# Compute $1 - 2r/K$ for the resample and the random predictions, and show that it equals $2s - 1$ for the book's score $s$.
# What do random predictions score on this scale, and why not exactly 0?

# %% tags=["hide-cell"]
# Solution. r/K = 1 - s, so 1 - 2 r/K = 2 s - 1: the same ranking on a stretched scale where
# "no information" sits near 0.
# Is the random predictions' excess above 0 systematic, or luck? If the K ranks were independent,
# the standard error of their mean would be the spread of the K normalized scores over sqrt(K),
# which is larger than the excess itself (printed below): one draw cannot tell. Many fresh draws
# can. Their mean stays above 0: at 1/K (ranks counted from 0) when every gene is kept, and
# higher when the silenced gene is dropped, as for the baselines. And it varies from draw to draw
# much less than that standard error says, because the ranks are not independent: as for the
# control mean, the weakest real effects rank first for any uninformed guess, so the size of
# each real effect fixes most of its rank (the Spearman correlation printed below). The excess is
# systematic; chance moves it by a few hundredths only.
for name in ("resample", "random"):
    book = score_table[name].to_numpy()
    rank_ = (1 - book) * K  # the 0-based ranks
    normalized = 1 - 2 * rank_ / K
    assert np.allclose(normalized, 2 * book - 1)
    print(f"{name:9s}: book {book.mean():.3f}, normalized {normalized.mean():.3f}")
random_normalized = 2 * score_table["random"].to_numpy() - 1
naive_se = random_normalized.std(ddof=1) / np.sqrt(K)
print(f"standard error if the ranks were independent: {naive_se:.3f}")
rho = stats.spearmanr(score_table["random"], size).statistic
print(f"random: Spearman correlation of score and size of the real effect {rho:.2f}")
redraws = {"silenced gene dropped": [], "every gene kept": []}
for seed in range(by_mode(full=200, fast=20)):
    draw = np.random.default_rng(seed).normal(
        0.0, real_delta.std().to_numpy(), real_delta.shape
    )
    for label, drop in (("silenced gene dropped", True), ("every gene kept", False)):
        book = pds(draw, real_delta.to_numpy(), genes, perts, drop_target=drop)
        redraws[label].append(2 * book.mean() - 1)
print(f"normalized score of {len(draw)}-perturbation random predictions, new draws:")
for label, values in redraws.items():
    print(
        f"  {label:21s}: mean {np.mean(values):.3f}, spread (SD) {np.std(values):.3f}"
    )
print(f"  1/K = {1 / K:.3f}")
dropped_, kept_ = (np.array(v) for v in redraws.values())
assert abs(kept_.mean() - 1 / K) < 4 * kept_.std() / np.sqrt(len(kept_))
assert dropped_.mean() - kept_.mean() > 0.02
assert dropped_.std() < naive_se and rho < -0.5

# %% [markdown]
# **2. Absolute effects (cell-eval 0.5 and earlier).**
# A model gets every direction wrong: it predicts $-\hat\delta$ from the resample.
# Score it with signed effects, as cell-eval 0.8 does, and with absolute effects $|\hat\delta|$ against $|\delta|$, as cell-eval did up to version 0.5.
# Why do the two differ so much?

# %% tags=["hide-cell"]
# Solution. Absolute values throw the signs away, so the flipped prediction is as good as the right
# one. With signed effects the flip costs most where the effect is strong: it moves the prediction
# twice the effect away from its own real effect, most other real effects are then closer, and
# strong perturbations fall towards the bottom ranks. A weak, noise-dominated effect is a small
# vector whatever its sign: flipped, it stays close to its own real effect and to the other weak
# ones, and keeps a good rank, as "nothing happens" does. The mean lands near 0.5, like chance,
# but as the average of two opposite halves (printed below).
flipped = -resample_delta
signed = discrimination_score(flipped, real_delta)
signed_score = signed.mean()
absolute_score = discrimination_score(flipped.abs(), real_delta.abs()).mean()
print(
    f"sign-flipped prediction: signed effects {signed_score:.3f}, absolute effects {absolute_score:.3f}"
)
stronger = size > size.median()  # size: L1 size of each real effect vector
by_size = {
    "stronger half": signed[stronger].mean(),
    "weaker half": signed[~stronger].mean(),
}
print(
    "signed effects, mean score by size of the real effect:",
    {k: round(float(v), 3) for k, v in by_size.items()},
)
assert absolute_score > 0.9 and abs(signed_score - 0.5) < 0.1
assert by_size["stronger half"] < 0.4 and by_size["weaker half"] > 0.6

# %% [markdown]
# **3. "Nothing happens" on THP-1.**
# Score a prediction of exactly zero change for every knockout against the first half-split's real half.
# Which knockouts does it score best on? Check that its score falls with the effect size.

# %% tags=["hide-cell"]
# Solution. A zero prediction's distance to a real effect is that effect's own size (without the
# dropped column), so the weakest knockouts rank first and score highest, the strongest last.
a, _ = halves[0]
zero_scores = pd.Series(
    pds(np.zeros(a.shape), a.to_numpy(), thp1_genes, thp1_perts), index=thp1_perts
)
print(
    f"mean {zero_scores.mean():.3f}; best scored: {list(zero_scores.sort_values().index[-4:])}"
)
rho = stats.spearmanr(zero_scores, thp1_table.loc[thp1_perts, "effect L1"]).statistic
print(f"Spearman correlation with effect size: {rho:.2f}")
assert rho < -0.5

# %% [markdown]
# **4. The silenced gene in a knockout screen.**
# Repeat the half-split scores of the THP-1 data keeping the silenced gene's column.
# Which knockouts gain, and what do they have in common?

# %% tags=["hide-cell"]
# Solution. Only 9 of the 25 knocked-out genes are among the 299 measured genes, so the column
# exists only for them, and in a knockout the mRNA is only partly destroyed (chapter 2). The
# knockouts that gain are those whose own mRNA was their clearest change (CMTM6, NFKBIA, STAT3,
# TNFRSF14 and UBE2L6 in chapter 2): without that column they have little else to be found by.
kept_scores = pd.DataFrame(
    {
        seed: pds(b.to_numpy(), a.to_numpy(), thp1_genes, thp1_perts, drop_target=False)
        for seed, (a, b) in enumerate(halves)
    },
    index=thp1_perts,
).mean(axis=1)
gain = (kept_scores - split_scores.mean(axis=1)).round(3)
measured = [str(p) for p in thp1_perts if p in thp1_genes]
print(f"measured targets: {measured}")
print(f"gain from keeping the column:\n{gain[gain != 0].sort_values().to_string()}")
assert set(gain[gain != 0].index) <= set(measured)
assert kept_scores.mean() >= split_scores.mean(axis=1).mean()

# %% [markdown]
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
