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
# # The 2026 challenge and its metrics
#
# Chapters 5 to 8 took the 2025 challenge's three metrics apart and found ways to raise the score without predicting biology better: give up a clipped metric, exaggerate effects, choose how many cells to predict.
# The 2026 Virtual Cell Challenge answers with new rules: submissions are raw counts, six metrics replace three, every predicted effect is measured from the real control cells, sampling noise is subtracted from the error, and the yardstick at the top is no longer perfection but a repeat of the experiment.
# This chapter builds each new metric from the library's building blocks on simulated data, and then scores the same predictions under both rule sets, to see where they agree and where they part.

# %% [markdown]
# ```{admonition} Objectives and prerequisites
# :class: tip
# After this chapter you will be able to:
# - explain what the 2025 metrics rewarded that they should not, and which 2026 rule answers each weakness;
# - compute the 2026 pseudobulk profiles, the cosine discrimination score and the noise-corrected expression error, and say why a perfect resample scores about 0 and a prediction of the control about 1;
# - read the four differential-expression metrics and say what each one rewards;
# - compute the two anchors (the context-mean baseline and the split-half replicate) and the score $(u - u^\text{base})/(u^\text{rep} - u^\text{base})$ with `vcell_lib.vcc2026`;
# - score a log1p model under both rule sets, turning its predictions into counts with `to_counts`.
#
# **Prerequisites:** the 2025 metrics and score from [chapter 5](05_mae.ipynb) (MAE), [chapter 6](06_perturbation_discrimination.ipynb) (perturbation discrimination), [chapter 7](07_differential_expression.ipynb) (differential expression) and [chapter 8](08_baselines_and_score.ipynb) (baselines, the score and how it can be gamed); the simulator and its `shared_response` from [chapter 3](03_noise_model.ipynb).
# ```

# %%
import sys
import warnings

if "google.colab" in sys.modules:  # On Colab only: install the book's library.
    import subprocess

    PACKAGE = "vcell-lib @ git+https://github.com/virtual-cell-book/virtual-cell-book"
    # myst-nb: `glue` passes numbers from the code to the prose (the book's build shows them)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", PACKAGE, "myst-nb"], check=True
    )

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from myst_nb import glue

from vcell_lib import metrics, vcc2026
from vcell_lib.baselines import (
    cell_mean_baseline,
    control_mean_baseline,
    prediction_from_profiles,
)
from vcell_lib.data import CONTROL, PERT, half_split, normalize_log1p, profile_table
from vcell_lib.env import by_mode, set_seed, versions
from vcell_lib.plotting import PALETTE, style
from vcell_lib.simulate import SimulationParams, simulate_perturbseq

rng = set_seed(0)
style()
pd.set_option("display.width", 120)
versions()

# %% [markdown]
# ## Why the rules changed
#
# The 2025 challenge {cite}`roohani2025` scored log1p predictions with three metrics, each scaled between a cell-mean {term}`baseline` and perfection.
# The previous chapters found what that rewarded:
#
# - **Clipping per metric.** A metric on which a model is worse than the baseline scores 0, however much worse, so a model can give up MAE entirely; exaggerated effects then raise the average (the section "How the score can be gamed" of [chapter 8](08_baselines_and_score.ipynb)).
# - **MAE measures noise.** The real {term}`pseudobulk` carries sampling noise, and the error of a perfect model is mostly that noise ([chapter 5](05_mae.ipynb)).
# - **Each side against its own controls.** Effects were measured on the predicted side against the *predicted* control cells, so a submission chose its own origin.
# - **DES depends on choices outside biology**: the number of predicted cells, their spread, and, for predictions with exact zeros, a top-$k$ cut that can fall inside a block of tied fold changes (the section "When the cut falls inside a tie" of [chapter 7](07_differential_expression.ipynb)).
# - **log1p values cannot be checked.** The evaluator could not tell how a submission had been normalized.
#
# The 2026 rules, as implemented by the official evaluator cell-eval2 and by `vcell_lib.vcc2026` (which matches it to about $10^{-14}$ in the book's tests), change each of these:
#
# - A submission is **raw integer counts**, at most $10^6$ per cell; the evaluator normalizes both sides itself. The number of cells per perturbation is free.
# - Each **context** (cell type) is scored on its own, against its own reference cells.
# - Predicted effects are measured from the **reference control** cells, never from the submission's.
# - **Six metrics** replace three: a cosine discrimination score, an expression error with the sampling noise subtracted, and four differential-expression metrics.
# - Each metric is scaled between the baseline (0) and a **replicate** of the experiment (1), a split of the real cells into two halves; the formula does not clip (the leaderboard adds two limits, see below).

# %% [markdown]
# ## The data
#
# We simulate one context with the book's simulator (chapter 3); raw counts are what it produces.
# With `shared_response=0.3` every perturbation also moves a common set of genes, as in real screens ({term}`systematic variation`), which makes a baseline that predicts the average effect realistic.
# One random half of every label's cells, controls included, plays the real data; the other half is a **perfect resample**: different cells from the same truth, what a model that knew the biology exactly could at best submit.

# %%
params = SimulationParams(
    n_contexts=1,
    n_genes=500,
    n_perturbations=by_mode(full=24, fast=12),
    cells_per_perturbation=by_mode(full=200, fast=100),
    n_control_cells=by_mode(full=2400, fast=1200),
    shared_response=0.3,
)
sim = simulate_perturbseq(params, seed=0)
sim.obs = sim.obs[[PERT]].astype(str)  # one context: the label is all we need
resample, real = half_split(sim, seed=0)
train_log1p, real_log1p = normalize_log1p(resample), normalize_log1p(real)  # for 2025
depth = float(np.median(np.asarray(real.X.sum(axis=1)).ravel()))
n_cells = real.obs[PERT].value_counts().drop(CONTROL).sort_index()
vcc2026.validate_counts(real, "real")  # raw integer counts, as the 2026 rules require
print(f"real: {real.n_obs} cells, {n_cells.size} perturbations, {real.n_vars} genes")
print(f"cells per perturbation: {n_cells.iloc[0]}, median depth: {depth:.0f} counts")

# %% [markdown]
# The challenge's contexts have 400 cells per perturbation and a median depth of 20,000 counts; our simulated cells are shallower, which makes every metric noisier, but the logic is the same.

# %% [markdown]
# ## Profiles and cosine discrimination
#
# The 2026 pseudobulk of a label sums its cells' counts of each gene $g$, $\sum_i x_{ig}$, and scales the sums to 50,000 before `log1p`: $\log\bigl(1 + 5 \cdot 10^4 \sum_i x_{ig} / \sum_{i,h} x_{ih}\bigr)$.
# Summing counts, rather than averaging log1p cells as in 2025, makes the profile independent of how the counts are spread over cells.
# By hand, for the first perturbation, and with `vcc2026.profiles`:

# %%
real_profiles = vcc2026.profiles(real)
first = n_cells.index[0]
cells = real[real.obs[PERT] == first].X.astype(
    np.float64
)  # counts are stored as float32
summed = np.asarray(cells.sum(axis=0)).ravel()
by_hand = np.log1p(5e4 * summed / summed.sum())
np.testing.assert_allclose(real_profiles.loc[first].to_numpy(), by_hand, rtol=1e-12)
real_profiles.iloc[:3, :6].round(3)

# %% [markdown]
# `pds_cosine` is chapter 6's perturbation discrimination with four changes:
#
# 1. the effect of $p$ is its profile minus the **reference** control's profile, on both sides;
# 2. the distance is the cosine distance $1 - \cos(\hat\delta_p, \delta_q)$ ({term}`cosine similarity`), so only the direction of an effect counts, not its size;
# 3. where 2025 skipped each perturbation's own gene, every gene targeted by a perturbation of the panel is now removed from the features, so no target's drop can identify a perturbation;
# 4. the rank $r$ of the true perturbation among the $K$ real effects (0 = closest) gives $1 - r/(K - 1)$ instead of $1 - r/K$, ties sharing their mean place, so a perfect prediction scores 1, the worst 0, and one that cannot tell perturbations apart about 0.5.
#
# By hand for the perfect resample, then with the library:

# %%
resample_profiles = vcc2026.profiles(resample)
perts = list(n_cells.index)
features = [g for g in real.var_names if g not in set(perts)]  # panel targets removed
origin = real_profiles.loc[CONTROL, features]  # the reference control, for both sides
real_effects = real_profiles.loc[perts, features] - origin
pred_effects = resample_profiles.loc[perts, features] - origin


def unit(frame: pd.DataFrame) -> np.ndarray:
    """Rows scaled to length 1."""
    values = frame.to_numpy()
    return values / np.linalg.norm(values, axis=1, keepdims=True)


cosine = unit(pred_effects) @ unit(real_effects).T  # predicted rows, real columns
distance = 1 - cosine
own = np.diag(distance)[:, None]
rank = (distance < own).sum(axis=1) + ((distance == own).sum(axis=1) - 1) / 2
pds_by_hand = 1 - rank / (len(perts) - 1)
pds_resample = vcc2026.pds_cosine(resample_profiles, real_profiles)
np.testing.assert_allclose(pds_resample.loc[perts].to_numpy(), pds_by_hand, atol=1e-12)
print(f"pds_cosine of the perfect resample: {pds_resample.mean():.3f}")

# %% [markdown]
# A picture of the cosine matrix shows what the score reads: for the resample, each predicted effect points closest to its own real effect (the diagonal); the cell mean predicts the same effect for every perturbation, so each of its rows is the same, and it cannot tell perturbations apart.

# %%
cell_mean = cell_mean_baseline(train_log1p, n_cells, controls=real_log1p)
cell_mean_counts = vcc2026.to_counts(cell_mean, depth, seed=0)
cell_mean_effects = (
    vcc2026.profiles(cell_mean_counts).loc[perts, features] - origin
)  # the same reference origin
cosine_cell_mean = unit(cell_mean_effects) @ unit(real_effects).T

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
for ax, matrix, title in (
    (axes[0], cosine, "perfect resample"),
    (axes[1], cosine_cell_mean, "cell mean, as counts"),
):
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set(title=title, xlabel="real perturbation")
    ax.set_xticks([])
    ax.set_yticks([])
axes[0].set_ylabel("predicted perturbation")
fig.colorbar(image, ax=axes, shrink=0.8, label="cosine of effects")
plt.show()

# %% [markdown]
# The shared response shows in both panels: all effects point partly the same way, so the cosines are positive almost everywhere.
# The resample's diagonal stands out, the cell mean's does not.

# %% [markdown]
# ## The expression error, corrected for sampling noise
#
# The 2026 expression metric is a squared error between profiles, $\lVert \hat x_p - x_p \rVert^2$ over the genes (the target gene left out).
# Even the perfect resample has an error: each profile is an average of a finite number of cells, so it carries sampling noise, and the squared error of two independent samples of the same truth is, on average, the sum of their two variances.
# cell-eval2 estimates each profile's variance with a delete-one **jackknife**: recompute the profile $n$ times, leaving out one cell each time; $\frac{n-1}{n}\sum_i (v_i - \bar v)^2$, summed over genes, estimates its sampling variance.
# For the perfect resample the raw error should then match the two noise estimates:

# %%
real_noise = vcc2026.jackknife_noise(real)
resample_noise = vcc2026.jackknife_noise(resample)
raw_error = pd.Series(
    {
        p: float(
            (
                (resample_profiles.loc[p] - real_profiles.loc[p]).drop(
                    p, errors="ignore"
                )
                ** 2
            ).sum()
        )
        for p in perts
    }
)
noise_sum = resample_noise.loc[perts] + real_noise.loc[perts]
ratio = float(raw_error.sum() / noise_sum.sum())
glue("noise_ratio", ratio, display=False)
print(f"sum of raw errors / sum of noise estimates: {ratio:.3f}")
assert 0.7 < ratio < 1.3

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(4.6, 4.2))
ax.scatter(noise_sum, raw_error, s=18, color=PALETTE["prediction"])
top = 1.05 * max(noise_sum.max(), raw_error.max())
ax.plot([0, top], [0, top], color="grey", ls=":", lw=1)
ax.set(
    xlim=(0, top),
    ylim=(0, top),
    xlabel="jackknife noise, resample + real",
    ylabel="squared error of the resample",
    title="A perfect resample's error is noise",
)
plt.show()

# %% [markdown]
# Each point is one perturbation.
# Most lie near the diagonal; a few lie well above it, because a perturbation's noise is not independent from gene to gene: a few more cells in one half whose guide failed, for example, can shift all the genes downstream of the target at once, and such shared swings make one draw's squared error vary far more than independent genes would.
# The jackknife estimates the expected error, and over all perturbations the raw error is {glue:text}`noise_ratio:.2f` times the noise estimate.
# The metric subtracts both noise terms from each perturbation's error (the prediction's, capped at the reference's and at the spread of the prediction across perturbations, so a submission cannot claim more noise than it shows), and divides by the real effect size measured the same way, $\lVert x_p - x_{\text{control}} \rVert^2$ minus the noise of both:
#
# $$
# \text{expr\_mse\_unbiased\_capped\_norm} = \frac{\sum_p \left(\lVert \hat x_p - x_p \rVert^2 - \hat C_p - C_p\right)}{\sum_p \left(\lVert x_p - x_{\text{control}} \rVert^2 - C_p - C_{\text{control}}\right)} .
# $$
#
# So 0 is a perfect resample and 1 is predicting the control.
# Two predictions of the control, as counts: for each perturbation, control cells of the resample drawn at random and relabelled; and chapter 5's control mean, the mean log1p control profile copied into identical cells, turned into counts with `vcc2026.to_counts` (a row's `expm1` values read as proportions over the genes, counts drawn from them at the real median depth).

# %%
train_controls = resample[resample.obs[PERT] == CONTROL]
drawn = np.concatenate([rng.integers(0, train_controls.n_obs, size=n) for n in n_cells])
control_cells = ad.AnnData(
    X=train_controls.X[drawn],
    obs=pd.DataFrame(
        {PERT: np.repeat(n_cells.index, n_cells.to_numpy())},
        index=[f"cell_{i}" for i in range(len(drawn))],
    ),
    var=real.var[[]],
)
control_mean = control_mean_baseline(train_log1p, n_cells, controls=train_log1p)
expr = {
    name: vcc2026.expr_mse_unbiased_capped_norm(
        vcc2026.profiles(pred),
        real_profiles,
        vcc2026.jackknife_noise(pred),
        real_noise,
    )
    for name, pred in (
        ("perfect resample", resample),
        ("control cells", control_cells),
        ("control mean, via to_counts", vcc2026.to_counts(control_mean, depth, seed=0)),
    )
}
for name, value in zip(
    ("expr_resample", "expr_control", "expr_control_mean"), expr.values()
):
    glue(name, value, display=False)
print(pd.Series(expr).round(3).to_string())
assert abs(expr["perfect resample"]) < 0.25 and abs(expr["control cells"] - 1) < 0.2
assert expr["control mean, via to_counts"] > expr["control cells"]

# %% [markdown]
# The resample scores {glue:text}`expr_resample:.2f` and the control cells {glue:text}`expr_control:.2f`: most of the noise is gone from the numerator, and the denominator sets the scale.
# Neither is exact, because the noise estimates are themselves estimates: on a panel this small and shallow, other random halves give somewhat different values.
# Unlike the 2025 MAE, a perfect model is no longer penalized for the noise of the real cells.
# The control *mean* scores worse, {glue:text}`expr_control_mean:.2f`, although it predicts no effect either: the mean of log1p values is not the log1p of the mean ({term}`Jensen's inequality`), so `expm1` of a mean log1p profile understates the genes whose counts vary most from cell to cell, and the proportions it hands to `to_counts` are not the controls' proportions.
# A log1p model pays this price whenever its predictions are turned into counts this way.

# %% [markdown]
# ## Differential expression on counts
#
# The four remaining metrics read one {term}`differential expression` table per side.
# `vcc2026.de_table` normalizes every cell to counts per million (CPM), keeps the genes whose mean CPM in the **reference** controls is above 5, tests each perturbation against those controls with chapter 7's Wilcoxon rank-sum test, and corrects the p-values with Benjamini-Hochberg per perturbation; the {term}`log fold change` is $\log_2$ of the ratio of mean CPMs.

# %%
is_control = real.obs[PERT] == CONTROL
real_controls = real[is_control]
de_real = vcc2026.de_table(real[~is_control], real_controls)
de_resample = vcc2026.de_table(resample[resample.obs[PERT] != CONTROL], real_controls)
calls = de_real.assign(sig=de_real["p_adj"] < 0.05).groupby("target")["sig"].sum()
print(
    f"{de_real['feature'].nunique()} genes tested; real calls per perturbation: "
    f"median {calls.median():.0f}, range {calls.min()}-{calls.max()}"
)
de_real.head(3)

# %% [markdown]
# With $\mathcal{D}$ the real significant genes of $p$ (its own gene left out) and $\hat{\mathcal{D}}$ the predicted ones:
#
# - **direction fidelity** (`de_wilcoxon_direction_fidelity_yield_raw`): the genes significant on the predicted side whose fold change has the real sign, divided by $\max(|\hat{\mathcal{D}}|, |\mathcal{D}|)$. It rewards calling about as many genes as the real data does, with the right signs: calling too few caps it through $|\mathcal{D}|$, calling too many through $|\hat{\mathcal{D}}|$.
# - **direction reach** (`de_wilcoxon_direction_reach_raw`): rank the real calls by the prediction's confidence (significant first, then by p-value); the deepest prefix whose signs are still at least 90% right, over $|\mathcal{D}|$. It rewards a confident ranking that gets the signs right, and a prediction that abstains reaches nothing.
# - **significant-set Jaccard** (`de_wilcoxon_sig_jaccard`): $|\mathcal{D} \cap \hat{\mathcal{D}}| / |\mathcal{D} \cup \hat{\mathcal{D}}|$, the two sets' overlap, with no top-$k$ cut and thus no tie at the cut.
# - **fold-change error** (`de_wilcoxon_lfc_nmae`): the mean absolute error of the predicted log fold changes on the real calls, divided by the mean absolute real fold change (defined when $|\mathcal{D}| \ge 10$; lower is better). It rewards getting the size of the changes right, which neither exaggerating nor shrinking does.
#
# For the resample and the cell mean:

# %%
de_cell_mean = vcc2026.de_table(
    cell_mean_counts[cell_mean_counts.obs[PERT] != CONTROL], real_controls
)
de_values = pd.DataFrame(
    {
        "perfect resample": vcc2026.de_metrics(de_resample, de_real).mean(),
        "cell mean": vcc2026.de_metrics(de_cell_mean, de_real).mean(),
    }
).T
print(de_values.round(3).to_string())
assert (
    de_values.loc["perfect resample"].drop("de_wilcoxon_lfc_nmae")
    > de_values.loc["cell mean"].drop("de_wilcoxon_lfc_nmae")
).all()

# %% [markdown]
# A picture of what the four metrics read: every real call of every perturbation, its real log fold change against the predicted one.
# Points in the two grey quadrants have the wrong sign (direction fidelity and reach); their distance from the diagonal is the fold-change error (NMAE); calls the prediction also makes significant are filled (the Jaccard's intersection).


# %% tags=["hide-input"]
def real_calls_vs(de_pred: pd.DataFrame) -> pd.DataFrame:
    """The real calls (own gene left out) with the prediction's fold change and call."""
    real_calls = de_real[
        (de_real["p_adj"] < 0.05) & (de_real["target"] != de_real["feature"])
    ]
    predicted = de_pred.set_index(["target", "feature"])
    keys = pd.MultiIndex.from_frame(real_calls[["target", "feature"]])
    return pd.DataFrame(
        {
            "real": real_calls["log2_fold_change"].to_numpy(),
            "predicted": predicted["log2_fold_change"].reindex(keys).to_numpy(),
            "called": (predicted["p_adj"].reindex(keys) < 0.05).to_numpy(),
        }
    )


fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
for ax, (name, de_pred) in zip(
    axes, {"perfect resample": de_resample, "cell mean": de_cell_mean}.items()
):
    points = real_calls_vs(de_pred)
    lim = np.nanmax(np.abs(points[["real", "predicted"]].to_numpy())) * 1.05
    ax.fill_between([0, lim], -lim, 0, color="0.92", zorder=0)
    ax.fill_between([-lim, 0], 0, lim, color="0.92", zorder=0)
    ax.plot([-lim, lim], [-lim, lim], color="black", lw=0.8)
    for called, face in ((True, PALETTE["prediction"]), (False, "none")):
        part = points[points["called"] == called]
        ax.scatter(
            part["real"],
            part["predicted"],
            s=10,
            facecolors=face,
            edgecolors=PALETTE["prediction"],
            label="called by the prediction" if called else "not called",
        )
    ax.set_title(name)
    ax.set_xlabel("real log2 fold change")
axes[0].set_ylabel("predicted log2 fold change")
axes[0].legend(loc="upper left", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The two anchors and the score
#
# A raw metric value says little on its own, so each is placed on a scale with two anchors computed from the real cells alone:
#
# - the **baseline** $u^\text{base}$ (`vcc2026.baseline`): the context mean, the average over the real perturbations of their mean counts (each one's own gene left out), emitted as resampled real control cells scaled gene by gene to that profile; it knows the context but not the perturbation;
# - the **replicate** $u^\text{rep}$ (`vcc2026.replicate`): the real cells split into two halves, one half scored as a prediction of the other, each half against its own controls, averaged over 5 splits; it is what repeating the experiment, at half its size, achieves, the 2026 version of chapter 8's {term}`data ceiling`.
#
# The score of a metric with value $u$ is $(u - u^\text{base})/(u^\text{rep} - u^\text{base})$, with $u^\text{base}$ and $u^\text{rep}$ the metric's values for the two anchors: 0 at the baseline, 1 at the replicate, whichever direction the metric runs; a context's score is the mean of the six.

# %%
base = vcc2026.evaluate_baseline(real)
rep = vcc2026.replicate(real)
resample_panel = vcc2026.evaluate(resample, real)
anchors = pd.DataFrame(
    {"baseline": base, "replicate": rep, "perfect resample": resample_panel}
)
anchors["score"] = vcc2026.score(resample_panel, base, rep)
resample_score = float(vcc2026.score(resample_panel, base, rep)["mean"])
glue("resample_score_2026", resample_score, display=False)
print(anchors.round(3).to_string())
print(f"perfect resample, 2026 score: {resample_score:.3f}")
assert resample_score > 1

# %% [markdown]
# The perfect resample scores {glue:text}`resample_score_2026:.2f`, above 1: it has as many cells as the real data, while each half of the replicate has half as many, so the resample is a less noisy "repeat of the experiment" than the replicate.
# The top of the scale is therefore not a bound; a model cannot beat the truth, but it can beat a half-sized experiment.
#
# The library's `score` is the plain formula, without clipping.
# cell-eval2's own scoring goes further on two metrics: it clamps the score of `expr_mse_unbiased_capped_norm` to $[0, 1]$ and floors the score of `de_wilcoxon_lfc_nmae` at $-6$ (a straight-line penalty below the baseline); the other four are not clipped.
# To reproduce a leaderboard number, apply those two limits to the output of `score`.

# %% [markdown]
# ## 2025 and 2026 on the same predictions
#
# Now the same predictions, scored under both rule sets.
# The 2025 suite (`vcell_lib.metrics`, chapters 5 to 8) takes log1p cells and the cell mean as its baseline; the 2026 suite takes counts, so each log1p prediction is turned into integer counts with `vcc2026.to_counts` at the real data's median depth: a row's `expm1` values are read as proportions over the genes, and counts are drawn from them.
# The predictions:
#
# - **control mean** and **cell mean**, the 2025 baselines (chapters 5 and 8);
# - the **perfect resample**, its real cells (log1p-normalized for 2025);
# - **resample means**: each perturbation's mean log1p profile in the resample, copied into identical cells;
# - the same with the effects **halved** or **doubled** (profile = control + $\alpha$ (mean $-$ control), $\alpha = 0.5, 2$), and with **noise** added to the effects (normal, with the spread of the effects themselves).

# %%
resample_means = profile_table(train_log1p)
train_control = resample_means.loc[CONTROL]
effects = resample_means.loc[perts] - train_control
noise = rng.normal(0, float(effects.to_numpy().std()), size=effects.shape)
log1p_predictions = {
    "control mean": control_mean_baseline(train_log1p, n_cells, controls=real_log1p),
    "cell mean": cell_mean,
    "perfect resample": train_log1p,
}
for name, profile in (
    ("resample means", train_control + effects),
    ("effects x 0.5", train_control + 0.5 * effects),
    ("effects x 2", train_control + 2 * effects),
    ("effects + noise", train_control + effects + noise),
):
    log1p_predictions[name] = prediction_from_profiles(profile, n_cells, real_log1p)

baseline_2025 = metrics.evaluate(cell_mean, real_log1p)
rows = {}
for name, pred in log1p_predictions.items():
    with (
        warnings.catch_warnings()
    ):  # identical cells put DES's cut inside ties (chapter 7)
        warnings.simplefilter("ignore", UserWarning)
        scaled_2025 = metrics.score(metrics.evaluate(pred, real_log1p), baseline_2025)
    counts = (
        resample
        if name == "perfect resample"
        else vcc2026.to_counts(pred, depth, seed=0)
    )
    scaled_2026 = vcc2026.score(vcc2026.evaluate(counts, real), base, rep)
    rows[name] = pd.concat(
        [scaled_2025.add_prefix("2025 "), scaled_2026.add_prefix("2026 ")]
    )
both = pd.DataFrame(rows).T
short = {
    "2025 avg_score": "2025 score",
    "2026 mean": "2026 score",
}
table = both[list(short)].rename(columns=short)
table["2025 rank"] = table["2025 score"].rank(ascending=False).astype(int)
table["2026 rank"] = table["2026 score"].rank(ascending=False).astype(int)
print(table.round(3).to_string())
for name, row in table.iterrows():
    key = name.replace(" ", "_").replace(".", "").replace("+", "plus")
    glue(f"s2025_{key}", float(row["2025 score"]), display=False)
    glue(f"s2026_{key}", float(row["2026 score"]), display=False)
for metric in ("expr_mse_unbiased_capped_norm", "de_wilcoxon_lfc_nmae"):
    for name in ("effects x 2", "effects + noise", "resample means"):
        key = name.replace(" ", "_").replace("+", "plus")
        glue(
            f"{metric[:8]}_{key}",
            float(both.loc[name, f"2026 {metric}"]),
            display=False,
        )
assert (
    table["2025 score"].idxmax() == table["2026 score"].idxmax() == "perfect resample"
)
assert table.loc["effects x 2", "2025 score"] > table.loc["effects x 0.5", "2025 score"]
assert table.loc["effects x 2", "2026 score"] < table.loc["effects x 0.5", "2026 score"]
assert (
    table.loc["effects + noise", "2025 score"]
    > 0
    > table.loc["effects + noise", "2026 score"]
)
assert (
    table.loc["control mean", "2025 score"]
    == 0
    > table.loc["control mean", "2026 score"]
)

# %% tags=["hide-input"]
panel_2026 = both[[f"2026 {m}" for m in vcc2026.PANEL]]
panel_2026.columns = [
    "pds",
    "expr",
    "lfc nmae",
    "dir. fidelity",
    "dir. reach",
    "jaccard",
]
fig, (left, right) = plt.subplots(
    1, 2, figsize=(11.5, 4.2), gridspec_kw={"width_ratios": [1, 1.4], "wspace": 0.55}
)
for name, row in table.iterrows():
    left.scatter(
        row["2025 score"], row["2026 score"], s=30, color=PALETTE["prediction"]
    )
    right_side = row["2025 score"] > 0.6 * table["2025 score"].max()
    left.annotate(
        name,
        (row["2025 score"], row["2026 score"]),
        fontsize=8,
        xytext=(-4 if right_side else 4, 4),
        textcoords="offset points",
        ha="right" if right_side else "left",
    )
left.axhline(0, color="grey", lw=0.8, ls=":")
left.axvline(0, color="grey", lw=0.8, ls=":")
left.set(
    xlabel="2025 score (cell mean = 0, perfect = 1)",
    ylabel="2026 score (baseline = 0, replicate = 1)",
    title="One prediction, two scores",
)
clipped = panel_2026.clip(-2, 2)
image = right.imshow(clipped.to_numpy(), cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
right.set_xticks(range(clipped.shape[1]), clipped.columns, rotation=30, ha="right")
right.set_yticks(range(clipped.shape[0]), clipped.index)
for i in range(clipped.shape[0]):
    for j in range(clipped.shape[1]):
        value = panel_2026.iat[i, j]
        right.text(
            j,
            i,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if abs(value) > 1.3 else "black",
        )
right.set_title("2026 scaled metrics (colour clipped at ±2)")
fig.colorbar(image, ax=right, shrink=0.8)
plt.show()

# %% [markdown]
# The two rule sets agree at the ends: the perfect resample comes first under both ({glue:text}`s2025_perfect_resample:.2f` in 2025, {glue:text}`s2026_perfect_resample:.2f` in 2026), the resample means second, and the two baselines last.
# In between they disagree, and the reasons are the ones this chapter started from.
#
# - **Exaggeration.** Doubling the effects scores {glue:text}`s2025_effects_x_2:.2f` in 2025, more than halving them ({glue:text}`s2025_effects_x_05:.2f`): the MAE it costs is clipped at 0, and the larger effects help PDS and DES (chapter 8). In 2026 it falls to {glue:text}`s2026_effects_x_2:.2f`, the worst of all, because the expression error ({glue:text}`expr_mse_effects_x_2:.1f` on the scaled scale) and the fold-change error ({glue:text}`de_wilco_effects_x_2:.1f`) are not clipped. Halving the effects, a timid but right-signed prediction, keeps a positive 2026 score ({glue:text}`s2026_effects_x_05:.2f`).
# - **Noise.** Random errors on the effects as large as the effects themselves leave the 2025 score at {glue:text}`s2025_effects_plus_noise:.2f`, but give {glue:text}`s2026_effects_plus_noise:.2f` in 2026: below the baseline.
# - **Below the baseline.** The control mean scores exactly 0 in 2025, the same as the cell mean, because every metric on which it loses is clipped at 0; in 2026 its {glue:text}`s2026_control_mean:.2f` says it is worse than the context mean, which it is.
# - **Identical cells.** The resample means lose against the resample's real cells under both rules. In 2026 the loss is in the expression error ({glue:text}`expr_mse_resample_means:.2f` scaled: identical log1p cells turned into counts carry the Jensen distortion met above) and in the overlap of the significant sets, which depends on the spread of the cells, not only on their mean (chapter 7).
#
# The 2026 rules are harsher, and they rank predictions more as a biologist would: a wrong prediction is penalized by how wrong it is.
# The harshness has a price, which Exercise 2 measures: a single unbounded metric can dominate the average, and this is why cell-eval2 clamps two of them for the leaderboard.

# %% [markdown]
# ## Summary
#
# - The 2025 metrics rewarded giving up a clipped metric, exaggerating effects, choosing one's own controls and the number and spread of predicted cells; they scored log1p values the evaluator could not check, against perfection.
# - 2026 submissions are raw integer counts, scored one context at a time with six metrics, predicted effects measured from the reference control, and each metric scaled between the context-mean baseline (0) and a split-half replicate (1) without clipping: $(u - u^\text{base})/(u^\text{rep} - u^\text{base})$, averaged. cell-eval2's leaderboard additionally clamps the expression score to $[0, 1]$ and floors the fold-change score at $-6$.
# - `pds_cosine` ranks the true perturbation by the cosine distance of effects on pseudobulk profiles of summed counts, with the panel's targets removed; `expr_mse_unbiased_capped_norm` subtracts jackknife estimates of both sides' sampling noise, so a perfect resample scores near 0 and a prediction of the control near 1.
# - Four DE metrics on one Wilcoxon table per side (CPM, reference controls, Benjamini-Hochberg per perturbation) reward calling the right genes with the right signs (fidelity, reach, Jaccard) and the right fold-change sizes (NMAE).
# - On the same predictions, 2025 and 2026 agree on the best and the worst, but 2026 punishes exaggerated and noisy effects that 2025 rewarded or ignored; a log1p model pays for Jensen's inequality when its means are turned into counts with `to_counts`.

# %% [markdown]
# ## Exercises
#
# **1. Own controls or the reference's?**
# Add the same offset (0.3 on every gene) to every predicted profile of the perfect resample, its control included, as a model with a systematic bias would.
# Compute `pds_cosine` with the effects measured from the reference control (the default) and from the prediction's own control (`origin=` the predicted profiles, the 2025 convention).
# Which one notices the bias?

# %% tags=["hide-cell"]
# Solution. Measured from its own control, the offset cancels: the effects are unchanged and so is
# the score. Measured from the reference control, every predicted effect gains the same vector, all
# predicted effects point more alike, and the perturbations are harder to tell apart.
shifted = resample_profiles + 0.3
exercise = pd.DataFrame(
    {
        "own control": [
            vcc2026.pds_cosine(p, real_profiles, origin=p).mean()
            for p in (resample_profiles, shifted)
        ],
        "reference control": [
            vcc2026.pds_cosine(p, real_profiles).mean()
            for p in (resample_profiles, shifted)
        ],
    },
    index=["resample", "resample + 0.3"],
)
print(exercise.round(3).to_string())
own, reference = exercise["own control"], exercise["reference control"]
assert abs(own.iloc[0] - own.iloc[1]) < 1e-9  # the offset cancels
assert reference.iloc[1] < reference.iloc[0]  # the reference origin sees it

# %% [markdown]
# **2. The leaderboard's limits.**
# Apply cell-eval2's two limits to the 2026 scores of the table above: clamp the `expr_mse_unbiased_capped_norm` score to $[0, 1]$ and floor the `de_wilcoxon_lfc_nmae` score at $-6$, then average the six again.
# Which predictions change, and in which direction?

# %% tags=["hide-cell"]
# Solution. Only predictions with an expression score outside [0, 1] (or an NMAE score below -6) move,
# and all of them upwards here: each prediction worse than the baseline on the expression error is
# lifted to 0 on it, and the exaggerated effects' NMAE score is floored. The noisy and exaggerated
# predictions gain the most; their order relative to the others can change.
limited = both[[f"2026 {m}" for m in vcc2026.PANEL]].copy()
limited["2026 expr_mse_unbiased_capped_norm"] = limited[
    "2026 expr_mse_unbiased_capped_norm"
].clip(0, 1)
limited["2026 de_wilcoxon_lfc_nmae"] = limited["2026 de_wilcoxon_lfc_nmae"].clip(
    lower=-6
)
compare = pd.DataFrame(
    {"unclipped": both["2026 mean"], "with the limits": limited.mean(axis=1)}
)
print(compare.round(3).to_string())
assert (limited["2026 expr_mse_unbiased_capped_norm"].between(0, 1)).all()
assert (
    compare["with the limits"] >= compare["unclipped"] - 1e-12
).all()  # all upwards here

# %% [markdown]
# **3. How many cells?**
# The number of predicted cells is free in 2026.
# Score the resample means (identical log1p cells, turned into counts) with 10 and with as many cells per perturbation as the real data has.
# Which of the six metrics move, and why?

# %% tags=["hide-cell"]
# Solution. With the same depth per cell, 10 cells make a much noisier profile, and the noise
# correction does not forgive it: the prediction's noise is credited only up to the reference's
# (the cap), so the expression error explodes. The Wilcoxon tests on 10 cells lose power, so the
# direction fidelity falls, as in chapter 7. The number of cells is free, but not neutral.
by_cells = {}
for n in (10, int(n_cells.iloc[0])):
    pred = prediction_from_profiles(train_control + effects, n, real_log1p)
    by_cells[n] = vcc2026.evaluate(vcc2026.to_counts(pred, depth, seed=0), real)
by_cells = pd.DataFrame(by_cells)
print(by_cells.round(3).to_string())
few, many = by_cells.iloc[:, 0], by_cells.iloc[:, 1]
assert few["expr_mse_unbiased_capped_norm"] > many["expr_mse_unbiased_capped_norm"]
assert (
    few["de_wilcoxon_direction_fidelity_yield_raw"]
    < many["de_wilcoxon_direction_fidelity_yield_raw"]
)

# %% [markdown]
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
