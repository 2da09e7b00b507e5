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
# # ST: the cell simulator
#
# A perturbation experiment never measures the same cell twice: sequencing destroys it.
# So a model cannot learn "this cell, before and after"; it can only learn how a *population* of control cells becomes a *population* of perturbed cells.
# The State Transition model (ST) takes that literally {cite}`adduri2025`: it reads a set of control cells and a perturbation, and writes a set of perturbed cells, trained so that the predicted set is distributed like the observed one.
# This chapter builds ST from its parts with the shapes printed at every step, trains a small one on the simulator, predicts perturbations it has never seen, and scores them with both challenges' rules against every baseline and against a perfect resample of the truth.
# It ends with the same contest on the real THP-1 screen and with what the book's small ST leaves out of Arc's.

# %% [markdown]
# ```{admonition} Objectives and prerequisites
# :class: tip
# After this chapter you will be able to:
# - build ST's training sets (cells of one cell type and perturbation, each paired with a random control), its perturbation and basal encoders, its bidirectional Llama backbone and its output head;
# - explain why ST is trained with a distribution loss, the energy distance, and what goes wrong with a cell-by-cell loss;
# - train ST with `vcell_lib.train.fit`, predict a challenge template with it, and score it under the 2025 and 2026 rules against the control mean, the cell mean, the perturbation mean, a linear model on the same features and a perfect resample;
# - read an ablation and a learning curve, and say what a small model on a small screen can and cannot show;
# - load a checkpoint of Arc's ST into `vcell_lib.models.st`.
#
# **Prerequisites:** the simulator's shared response and gene features from [chapter 3](03_noise_model.ipynb), splits and control matching from [chapter 4](04_data_for_modelling.ipynb), the baselines and the score from [chapter 8](08_baselines_and_score.ipynb), the 2026 metrics from [chapter 9](09_vcc2026_metrics.ipynb), the training loop and the energy distance from [chapter 11](11_state_embedding.ipynb).
# ```

# %% tags=["hide-input"]
import sys
import warnings

if "google.colab" in sys.modules:  # On Colab only: install the book's library.
    import subprocess

    PACKAGE = "vcell-lib @ git+https://github.com/virtual-cell-book/virtual-cell-book"
    # myst-nb: `glue` passes numbers from the code to the prose (the book's build shows them)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", PACKAGE, "myst-nb"], check=True
    )

import dataclasses
import json
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from IPython.display import Markdown
from myst_nb import glue

from vcell_lib.baselines import baseline_predictions
from vcell_lib.compare import leaderboard
from vcell_lib.data import (
    CELL_TYPE,
    CONTROL,
    PERT,
    assign_split,
    half_split,
    load_papalexi2021,
    normalize_log1p,
    repository_file,
    split_by_perturbation,
)
from vcell_lib.env import FAST, by_mode, get_device, set_seed, versions
from vcell_lib.models import st
from vcell_lib.models.losses import energy_distance, mmd_rbf
from vcell_lib.models.st_data import STSets, perturbation_features, predict, st_loss
from vcell_lib.plotting import PALETTE, plot_history, style
from vcell_lib.simulate import SimulationParams, simulate_perturbseq
from vcell_lib.train import TrainConfig, fit

rng = set_seed(0)
style()
DEVICE = get_device()
versions()

# %% [markdown]
# ## The task
#
# We simulate a screen with the simulator's default sizes and the two kinds of realism that chapter 3 added: a {term}`shared response <systematic variation>` with program shifts (`shared_response=0.3`, `program_shift=0.3`), and 16 informative features per gene (`n_gene_features=16`), the simulator's stand-in for ESM-2 gene embeddings.
# Then we hold out 30% of the perturbations in *both* cell types with `split_by_perturbation` (chapter 4): the model must predict the effect of silencing genes it has never seen silenced, in cell types it knows.
# The test cells are split in two halves (`half_split`, chapter 5): one half plays the real data, the other is the **perfect resample**, other cells drawn from the same truth: a prediction from the true distribution, limited only by sampling noise, the ceiling for discrimination and DES (though not, we will see, for MAE).

# %%
KNOBS = {"shared_response": 0.3, "program_shift": 0.3, "n_gene_features": 16}
params = SimulationParams(n_perturbations=by_mode(full=30, fast=12))
simulated = simulate_perturbseq(params, seed=0, **KNOBS)
norm = normalize_log1p(simulated)  # log1p in X, the raw counts in layers["counts"]
part = assign_split(
    norm, split_by_perturbation(norm, val=0.0, test=0.3, seed=0)
).to_numpy()
train = norm[np.isin(part, ["train", "control"])].copy()
real, resample = half_split(norm[np.isin(part, ["test", "control"])].copy(), seed=0)
test_perts = sorted(set(real.obs[PERT]) - {CONTROL})
n_train_perts = train.obs[PERT].nunique() - 1
print(f"training: {train.n_obs} cells, {n_train_perts} perturbations x 2 cell types")
print(
    f"test: {len(test_perts)} perturbations, {real.n_obs} real cells, {resample.n_obs} resampled"
)
glue("n_train_perts", n_train_perts, display=False)
glue("n_test_perts", len(test_perts), display=False)

# %% [markdown]
# ## Step 1: sets of cells, each with a random control
#
# ST's unit of training is a **set**: $S$ cells that share a cell type and a perturbation.
# Each cell of the set is paired with a control cell of the same cell type, drawn at random; the model reads the $S$ controls and must write $S$ cells that look like the perturbed ones.
# The pairing is random because nothing better exists: the perturbed cell and its control are different cells, and the draw is repeated every pass over the data so the model never learns a particular pairing.
# Control cells form sets too (control to control), which teaches the model that "no perturbation" means "no change".
# A group whose cells do not fill its last set fills it by drawing its own cells again, as Arc's data module does.
#
# `STSets` builds these batches from an AnnData, as Arc's data module (`cell-load`) does, reading only the rows each batch needs (so a backed file of any size works).
# It needs a table that turns each perturbation into a vector, the subject of step 2; for now, gene features.

# %%
SET_SIZE, SETS_PER_BATCH = 32, 8
gene_features = perturbation_features(norm.obs[PERT].unique(), simulated)
sets = STSets(
    train, gene_features, set_size=SET_SIZE, sets_per_batch=SETS_PER_BATCH, seed=0
)
batch = next(iter(sets))
for key, value in batch.items():
    print(f"{key:13s} {tuple(value.shape)}")

# %%
first = batch["target_index"][0].numpy()  # the cells of the first set
controls = batch["basal_index"][0].numpy()  # and their drawn controls
assert train.obs[PERT].iloc[first].nunique() == 1  # one perturbation per set
assert (
    train.obs[PERT].iloc[controls] == CONTROL
).all()  # every basal cell is a control
assert (  # of the same cell type as the set
    train.obs[CELL_TYPE].iloc[controls].to_numpy()
    == train.obs[CELL_TYPE].iloc[first].to_numpy()
).all()
print(
    f"{len(sets)} batches of {SETS_PER_BATCH} sets per pass; the first set: "
    f"{train.obs[PERT].iloc[first[0]]} in {train.obs[CELL_TYPE].iloc[first[0]]}"
)

# %% [markdown]
# ## Step 2: what the model knows about a perturbation
#
# A perturbation enters ST as a vector, the same for every cell of a set.
# Two choices:
#
# - **one-hot**: one column per perturbation. It names the perturbation and says nothing else: the one-hot vector of a perturbation never seen in training selects a column of the first layer's weights that training never updated;
# - **gene features**: a vector that describes the silenced gene, known before any experiment. Arc's challenge recipe used the ESM-2 embedding of the gene's protein (chapter 10); the simulator's `varm["gene_features"]` plays that role here.
#
# With gene features a model *can* say something about a gene it never saw silenced, to the extent that genes with similar features have similar effects (chapter 3 measured how far that goes).

# %%
onehot = perturbation_features(norm.obs[PERT].unique(), "onehot")
print(f"one-hot: {onehot.shape}, gene features: {gene_features.shape}")
gene_features.loc[test_perts[:3]].round(2).iloc[:, :6]

# %% [markdown]
# ## Step 3: one token per cell
#
# Each cell of a set becomes one {term}`token <transformer>` of width $d$: an MLP of the perturbation vector plus a linear map of the control's expression,
#
# $$
# t_i = \mathrm{MLP}_\text{pert}(p) + W_\text{basal}\, x^\text{ctrl}_i .
# $$
#
# `STConfig.small` is the book's CPU size: $d = 128$, two transformer blocks, sets of 32 cells.
# Arc's `state_sm` (`STConfig.state_sm`) has $d = 672$ and four blocks; the last section compares them.

# %%
config = st.STConfig.small(n_genes=train.n_vars, pert_dim=gene_features.shape[1])
model = st.StateTransition(config)
basal, pert = batch["basal"], batch["pert"]
with torch.no_grad():
    tokens = model.pert_encoder(pert) + model.basal_encoder(basal)
print(
    f"basal {tuple(basal.shape)} + pert {tuple(pert.shape)} -> tokens {tuple(tokens.shape)}"
)
n_parameters = sum(p.numel() for p in model.parameters())
print(f"{n_parameters:,} parameters")
glue("st_parameters", n_parameters, display=False)

# %% [markdown]
# ## Step 4: cells that look at each other
#
# The tokens pass through a {term}`transformer`: Arc uses Hugging Face's Llama blocks {cite}`touvron2023` (RMSNorm, a LayerNorm that only rescales; SwiGLU, a gated feed-forward layer), with two changes from a language model: attention is bidirectional (every cell sees every other, where a language model masks the tokens to come) and the rotary positional encodings are switched off.
# A set has no order, so the model should not have one: permuting the input cells must permute the output cells the same way, a property called {term}`permutation equivariance`, which is what set models are built to have {cite}`zaheer2017,lee2019`.
# Attention lets each cell's prediction depend on the whole set: the model can learn the *distribution* of the controls (how many are cycling, say) and not only each control on its own.
# `vcell_lib.models.layers.LlamaEncoder` writes the block out; we check the equivariance on the untrained model.

# %%
model.eval()
with torch.no_grad():
    hidden = model.backbone(tokens)
    order = torch.randperm(SET_SIZE)
    shuffled = model(basal[:, order], pert[:, order])
    straight = model(basal, pert)
print(f"backbone: {tuple(tokens.shape)} -> {tuple(hidden.shape)}")
gap = (shuffled - straight[:, order]).abs().max().item()
print(f"largest change from permuting the cells: {gap:.1e}")
assert gap < 1e-5

# %% [markdown]
# ## Step 5: back to genes
#
# An MLP (`project_out`) reads each token back to the $G$ genes.
# The control is added back as a {term}`residual <residual connection>`; Arc's code has two ways to do it (`output_space`):
#
# - `"all"` (Arc's challenge recipe, on all 18,080 genes): $\hat x_i = B(\mathrm{out}(h_i) + x^\text{ctrl}_i)$, the residual in gene space, followed by a bottleneck $B$: Linear($G \to G/8$), GELU, Linear($G/8 \to G$);
# - `"gene"` (Arc's default for a few thousand highly variable genes): $\hat x_i = \mathrm{out}(h_i + W_\text{basal}\, x^\text{ctrl}_i)$, the residual in the token space.
#
# In `"all"` the network only has to learn the change from the control; in `"gene"` the control is added back to the token before the output MLP, which still writes the whole profile.
# Both end in a ReLU, since expression cannot be negative.
# The book's small ST uses `"gene"`: on 500 genes the bottleneck of `"all"` would squeeze every cell through 62 numbers after the residual was added, and the ablations below show what that costs.
# A ReLU also means that predicted zeros are exact zeros, which matters for the DE metrics (chapter 7's ties).

# %%
print(f"output {tuple(straight.shape)}, smallest value {straight.min().item():.2f}")
print(
    f"exact zeros: {(straight == 0).float().mean().item():.0%} of the untrained model's outputs"
)
assert straight.shape == batch["target"].shape and straight.min() >= 0

# %% [markdown]
# ## Step 6: a loss between sets
#
# Which predicted cell should be compared with which observed cell?
# None: the pairing with controls was random, so the $i$-th predicted cell has no particular partner among the observed ones.
# A cell-by-cell loss such as the mean squared error (MSE) against randomly paired cells is minimized by predicting, for every cell, the *average* perturbed cell: the set collapses to a point.
# ST instead compares the two sets as samples of two distributions, with the {term}`energy distance` {cite}`szekely2013`:
#
# $$
# E(X, Y) = \frac{1}{n m}\sum_{i,j} \lVert x_i - y_j\rVert - \frac{1}{2n^2}\sum_{i,i'} \lVert x_i - x_{i'}\rVert - \frac{1}{2m^2}\sum_{j,j'} \lVert y_j - y_{j'}\rVert .
# $$
#
# This is half of Székely's energy statistic $2\,\mathbb{E}\lVert X - Y\rVert - \mathbb{E}\lVert X - X'\rVert - \mathbb{E}\lVert Y - Y'\rVert$, estimated on the two sets.
# It is zero when the two samples coincide, symmetric, and (for the distributions behind the samples) zero only when they are equal.
# It is a squared {term}`maximum mean discrepancy` with the distance-induced kernel $k(x, y) = \tfrac12(\lVert x\rVert + \lVert y\rVert - \lVert x - y\rVert)$ {cite}`sejdinovic2013` (the norm terms cancel, which is why it is often written with the "kernel" $-\lVert x - y\rVert$), which is why `vcell_lib.models.losses` has an RBF-kernel MMD beside it; Arc computes it with geomloss's `SamplesLoss("energy")` {cite}`feydy2019`, and the book's `energy_distance` equals it (tested to 1e-6, chapter 11).
# We compare one observed set of 32 cells with three candidates: another sample of the same perturbation, that sample's average cell copied 32 times, and control cells.

# %%
label = sorted(set(train.obs[PERT]) - {CONTROL})[0]  # a training perturbation


def cells_of(adata, which: str, context: str = "context_A") -> torch.Tensor:
    """The log1p cells (dense) of one label in one cell type."""
    keep = (adata.obs[PERT] == which) & (adata.obs[CELL_TYPE] == context)
    X = adata[keep.to_numpy()].X
    return torch.from_numpy(
        np.asarray(X.toarray() if sp.issparse(X) else X, np.float32)
    )


observed = cells_of(train, label)[:SET_SIZE]
other = cells_of(train, label)[SET_SIZE : 2 * SET_SIZE]
collapsed = other.mean(0, keepdim=True).expand_as(other)  # another sample's average
candidates = {
    "another sample of the same cells": other,
    "that sample's average cell, copied": collapsed,
    "control cells": cells_of(train, CONTROL)[:SET_SIZE],
}
losses = pd.DataFrame(
    {
        name: {
            "energy distance": energy_distance(guess, observed).item(),
            "MMD (RBF)": mmd_rbf(guess, observed).item(),
            "MSE, random pairs": ((guess - observed) ** 2).mean().item(),
        }
        for name, guess in candidates.items()
    }
).T
print(losses.round(3).to_string())
assert energy_distance(observed, observed).item() < 1e-4
ranked = losses["energy distance"]
assert ranked.idxmin() == "another sample of the same cells"
assert losses["MSE, random pairs"].idxmin() == "that sample's average cell, copied"

# %% [markdown]
# The MSE prefers the collapsed average over a genuine sample of the same cells; both distribution distances rank the genuine sample first.
# A model trained with MSE learns the average, and its cells, all alike, fool the Wilcoxon tests of the DE metrics: with no spread, tiny differences become "significant".
#
# ## Training
#
# `st_loss` runs the model on a batch and returns the mean energy distance over its sets; `vcell_lib.train.fit` (chapter 11) does the rest.
# The function below is the chapter's recipe; the library has it as `vcell_lib.models.st_data.train_st` (chapter 13 uses it, and `bench/st_experiments.py`).

# %%
STEPS = by_mode(full=800, fast=60)
LR = 1e-3


def train_st(
    features, cells=train, steps=STEPS, seed=0, sets_per_batch=SETS_PER_BATCH, **changes
):
    """The chapter's recipe on `cells`: STConfig.small (with `changes`), AdamW at LR."""
    set_seed(seed)
    net = st.StateTransition(
        st.STConfig.small(cells.n_vars, features.shape[1], **changes)
    )
    batches = STSets(
        cells,
        features,
        set_size=net.config.cell_set_len,
        sets_per_batch=sets_per_batch,
        seed=seed,
    )
    config = TrainConfig(  # no validation split in this chapter: never validate
        max_steps=steps, lr=LR, seed=seed, val_every=10**9, progress=False
    )
    return net, fit(net, batches, st_loss, config)


model, history = train_st(gene_features)
cells_per_second = STEPS * SETS_PER_BATCH * SET_SIZE / history.seconds
print(f"{history.seconds:.0f} s, {cells_per_second:,.0f} cells per second on {DEVICE}")
glue("train_seconds", history.seconds, display=False)
glue("cells_per_second", cells_per_second, display=False)
glue("steps", STEPS, display=False)

# %% tags=["hide-input"]
ax = plot_history(history, "ST's training loss", ylabel="energy distance", log=True)
floor = losses.loc["another sample of the same cells", "energy distance"]
ax.axhline(
    floor, color=PALETTE["truth"], ls="--", label="two samples of the same cells"
)
ax.legend()
plt.show()

# %% [markdown]
# The dashed line is the energy distance between two samples of 32 cells of one perturbation (step 6): even a perfect model's sets would not go below about that level, because the loss compares finite samples.
# The loss falls fast and then levels off above that floor.
#
# ## Predicting a challenge template
#
# The challenge gives a template: rows of cells to predict, each labelled with a perturbation, and controls.
# `predict` fills it as Arc's `state tx infer` does: it groups the rows by (cell type, perturbation), cuts each group into sets of up to 32 rows, draws one control cell of that cell type for each row, and writes the model's output into the rows.
# Two of its choices differ from Arc's on purpose: a perturbation without a feature vector is an error (Arc predicts the control for it, with only a printed note), and so is a cell type without controls (Arc would take controls of any cell type).
# Like `state tx infer`, it predicts the template's control rows too: ST's prediction carries the model's own control cells, where the baselines below carry the real ones (exercise 4 scores ST with the real ones).
# Our template is the real half of the test cells, with their labels only; the controls come from the training cells.

# %%
template = real.copy()
template.X = np.zeros(template.shape, dtype=np.float32)  # only the labels are read
st_pred = predict(model, template, train, gene_features, seed=0, progress=False)
print(
    f"predicted: {st_pred.n_obs} cells x {st_pred.n_vars} genes, labels from the template"
)
try:
    predict(model, template, train, gene_features.drop(index=test_perts[0]))
except ValueError as error:
    print("unknown perturbation:", str(error).split(". ")[0])

# %% [markdown]
# ## An honest comparison
#
# Now the contest, scored as in chapters 8 and 9, each cell type on its own and then averaged:
#
# - the **control mean** ("nothing happens") and the **cell mean** (the 2025 challenge's baseline: the average training profile of the cell type);
# - the **perturbation mean**: each perturbation's effect where training saw it; for a perturbation never seen, the mean effect of the training perturbations;
# - the **linear** model of chapter 8 on the *same gene features* as ST: the effect is $\bar y + \Gamma W f_q$ ($\Gamma$: the genes' PCA embeddings from the training effects, chapter 8), with $W$ fit by ridge regression from the training perturbations' features (`linear_baseline(..., features=...)`), its penalty chosen by leave-one-perturbation-out cross-validation on the training perturbations: ST's inputs, in a model with no hidden layer;
# - ST;
# - the **perfect resample**.
#
# `vcell_lib.compare.leaderboard` gives, per prediction, the three 2025 metrics, the 2025 score against the cell mean (chapter 8) and the 2026 score between cell-eval2's baseline (0) and the split-half replicate (1) (chapter 9), the latter on counts drawn from the predicted log1p values at the real cells' depth.

# %%
baselines = baseline_predictions(train, real, features=gene_features)
predictions = baselines | {"ST": st_pred, "perfect resample": resample}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # DES tie notes on the flat baselines (chapter 7)
    board = leaderboard(predictions, real)
board.round(3)


# %% tags=["hide-input"]
def plot_scores(table: pd.DataFrame, title: str) -> None:
    """Bars of the two challenge scores, one row per prediction."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(table) + 1.2), sharey=True)
    for ax, column, label in zip(
        axes,
        ("score_2025", "score_2026"),
        ("2025 score (cell mean = 0)", "2026 score (baseline 0, replicate 1)"),
    ):
        colours = [
            PALETTE["prediction"]
            if n.startswith("ST")
            else PALETTE["truth"]
            if n == "perfect resample"
            else PALETTE["control"]
            for n in table.index
        ]
        ax.barh(table.index, table[column], color=colours)
        ax.axvline(0, color="black", lw=0.6)
        if column == "score_2026":
            ax.axvline(1, color=PALETTE["truth"], lw=0.8, ls="--")  # the replicate
        ax.set(xlabel=label)
    axes[0].invert_yaxis()
    fig.suptitle(title)
    plt.tight_layout()
    plt.show()


plot_scores(board, "Unseen perturbations, simulated screen")

# %% tags=["hide-input"]
row = board.loc["ST"]
ceiling = board.loc["perfect resample", "score_2025"]
for name in ("ST", "linear", "perturbation mean", "cell mean", "perfect resample"):
    key = name.replace(" ", "_")
    glue(f"{key}_2025", float(board.loc[name, "score_2025"]), display=False)
    glue(f"{key}_2026", float(board.loc[name, "score_2026"]), display=False)
for metric in ("mae", "discrimination_score_l1", "overlap_at_N"):
    for name in ("ST", "cell mean", "perfect resample"):
        glue(
            f"{name.replace(' ', '_')}_{metric}",
            float(board.loc[name, metric]),
            display=False,
        )
glue("share_of_ceiling", float(row["score_2025"] / ceiling), display=False)
# Claims the text makes, checked on the executed numbers:
assert ceiling > 0.3 and board["score_2025"].drop("perfect resample").max() < ceiling
assert board.loc["cell mean", "score_2025"] == 0.0
if not FAST:
    assert (
        row["discrimination_score_l1"]
        > board.loc["cell mean", "discrimination_score_l1"]
    )
    assert row["overlap_at_N"] < board.loc["cell mean", "overlap_at_N"]
    assert row["mae"] > board.loc["cell mean", "mae"]
    assert row["score_2025"] < 0.6 * ceiling
    linear, mean_effect = board.loc["linear"], board.loc["perturbation mean"]
    assert abs(linear["score_2025"] - mean_effect["score_2025"]) < 0.01
    from_training = board["score_2026"].drop("perfect resample")
    assert (from_training < 0).all() and board.loc["perfect resample", "score_2026"] > 1
    assert row["score_2026"] < board.loc["cell mean", "score_2026"]

# %% [markdown]
# The linear model's penalty matters: here is the same model with the library's default penalty for PCA embeddings (0.1) instead of the cross-validated one.

# %%
default_ridge = baseline_predictions(train, real, features=gene_features, ridge=0.1)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    default_board = leaderboard(
        {"cell mean": baselines["cell mean"], "linear": default_ridge["linear"]}, real
    )
glue(
    "linear_default_2025",
    float(default_board.loc["linear", "score_2025"]),
    display=False,
)
if not FAST:
    assert default_board.loc["linear", "score_2025"] < board.loc["linear", "score_2025"]
default_board.round(3)

# %% [markdown]
# Read the table one column at a time.
#
# - **Discrimination**: ST's predicted effects rank the right perturbation nearer the top than any baseline's ({glue:text}`ST_discrimination_score_l1:.2f` against the cell mean's {glue:text}`cell_mean_discrimination_score_l1:.2f`): through the gene features it has learned something about genes it never saw silenced.
# - **MAE**: ST's mean error ({glue:text}`ST_mae:.3f`) is *worse* than the cell mean's ({glue:text}`cell_mean_mae:.3f`), and even the perfect resample does worse than the cell mean ({glue:text}`perfect_resample_mae:.3f`). The MAE of a profile averaged over a few dozen noisy cells is mostly noise; a flat average of many training profiles is smooth, and any attempt to say more pays for its mistakes.
# - **DES**: ST finds fewer of the true DE genes ({glue:text}`ST_overlap_at_N:.2f`) than the cell mean ({glue:text}`cell_mean_overlap_at_N:.2f`), whose average profile already carries the shared response, the genes most perturbations move (chapter 3).
#
# So ST scores {glue:text}`ST_2025:.3f` under the 2025 rules, {glue:text}`share_of_ceiling:.0%` of the perfect resample's {glue:text}`perfect_resample_2025:.3f`, all of it from discrimination; this run is the best of the bench's three seeds of the same recipe (below: {glue:text}`bench_st_min:.3f` to {glue:text}`bench_st_max:.3f`, mean {glue:text}`bench_st:.3f`).
# The linear model on the same features scores {glue:text}`linear_2025:.3f`, like the perturbation mean: cross-validation chose a penalty so large that it predicts nearly the mean training effect for every unseen gene (with the library's default penalty for PCA embeddings, 0.1, it overfits the 16 raw features and scores {glue:text}`linear_default_2025:.3f`).
# Under the 2026 rules every prediction built from the training data scores below 0, and ST ({glue:text}`ST_2026:.2f`) below the cell mean ({glue:text}`cell_mean_2026:.2f`): cell-eval2's baseline is built from the test cells' own mean counts (chapter 9), an average that no prediction from training data knows.
# The perfect resample scores {glue:text}`perfect_resample_2026:.2f`, above the replicate's 1, because the replicate splits the real half again, into halves of about 25 cells per perturbation and cell type, where the resample has about 50.
# And on a test set this small the scaled 2026 metrics are unstable, for a reason the next table shows.
# A model that learns from {glue:text}`n_train_perts` perturbations is asked to predict {glue:text}`n_test_perts` new ones: that is few examples of what a gene's features say about its effect, and the learning curve below shows how the picture changes with more.

# %% [markdown]
# Why do the 2026 scores jump around?
# Each 2026 metric is scaled as $(u - b)/(r - b)$ between the baseline $b$ and the replicate $r$ of *this* test set, and on a few perturbations with a few dozen cells each, some pairs of anchors nearly coincide.
# The anchors of each cell type, from chapter 9's `vcc2026.evaluate_baseline` and `vcc2026.replicate` (the leaderboard keeps them in `board.attrs["anchors_2026"]`):

# %% tags=["hide-input"]
anchors = pd.DataFrame(
    board.attrs["anchors_2026"]
).T  # the leaderboard's, per cell type
gaps = (anchors.xs("replicate r", level=1) - anchors.xs("baseline b", level=1)).abs()
closest = gaps.stack().idxmin()  # (cell type, metric) with the nearest anchors
glue("close_metric", Markdown(f"`{closest[1]}`"), display=False)
glue("close_context", Markdown(closest[0]), display=False)
glue("close_gap", float(gaps.stack().min()), display=False)
anchors.round(3)

# %% [markdown]
# In {glue:md}`close_context` the two anchors of {glue:md}`close_metric` differ by only {glue:text}`close_gap:.3f`, so a small difference in that metric becomes a large scaled score, of either sign, and the mean of six scaled metrics inherits it.
# cell-eval2 scores the 2026 challenge on far larger test sets (chapter 9), where the anchors are far apart; on a test set this small, the 2025 score is the steadier guide, and the 2026 column should be read with this table beside it.

# %% [markdown]
# ## One-hot versus gene features
#
# The same model with one-hot perturbation vectors, trained the same way:

# %%
onehot_model, _ = train_st(onehot)
onehot_pred = predict(onehot_model, template, train, onehot, seed=0, progress=False)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    onehot_board = leaderboard(
        {
            "cell mean": baselines["cell mean"],
            "ST, gene features": st_pred,
            "ST, one-hot": onehot_pred,
        },
        real,
    )
onehot_board.round(3)

# %% tags=["hide-input"]
glue("onehot_2025", float(onehot_board.loc["ST, one-hot", "score_2025"]), display=False)
glue(
    "onehot_disc",
    float(onehot_board.loc["ST, one-hot", "discrimination_score_l1"]),
    display=False,
)
if not FAST:
    assert (
        onehot_board.loc["ST, one-hot", "discrimination_score_l1"]
        < onehot_board.loc["ST, gene features", "discrimination_score_l1"]
    )

# %% [markdown]
# With one-hot vectors a test perturbation selects a column of the first layer's weights that training never updated, still at its random initial value: the model has nothing to go on, its discrimination falls to {glue:text}`onehot_disc:.2f` and its 2025 score to {glue:text}`onehot_2025:.3f`.
# One-hot features are fine for perturbations seen in training, for instance in another cell type; for unseen perturbations, only features that describe the gene can help.

# %% [markdown]
# ## Ablations
#
# An {term}`ablation` changes one thing and measures the difference.
# The chapter can afford one more training run, the loss:

# %%
mse_model, _ = train_st(gene_features, loss="mse")
mse_pred = predict(mse_model, template, train, gene_features, seed=0, progress=False)


def spread_of(adata) -> float:
    """Mean over genes of the sd of one test perturbation's cells in context A."""
    return float(cells_of(adata, test_perts[0]).std(0, unbiased=False).mean())


spread = {
    "energy": spread_of(st_pred),
    "MSE": spread_of(mse_pred),
    "real": spread_of(real),
}
print(
    "mean per-gene spread of one perturbation's cells:",
    {k: round(v, 3) for k, v in spread.items()},
)
glue("spread_energy", spread["energy"], display=False)
glue("spread_mse", spread["MSE"], display=False)
glue("spread_real", spread["real"], display=False)
assert spread["MSE"] < 0.5 * spread["energy"]

# Genes whose output the ReLU holds at 0 for every predicted cell, and the real mean of those genes
real_controls_mean = np.asarray(real[(real.obs[PERT] == CONTROL).to_numpy()].X.mean(0))
dead = {
    name: np.asarray(pred.X == 0).all(axis=0)
    for name, pred in (("energy", st_pred), ("MSE", mse_pred))
}
print({name: int(genes.sum()) for name, genes in dead.items()}, "genes always 0")
glue("dead_mse", int(dead["MSE"].sum()), display=False)
glue("dead_energy", int(dead["energy"].sum()), display=False)
glue(
    "dead_mse_level",
    float(real_controls_mean.ravel()[dead["MSE"]].mean()),
    display=False,
)
if not FAST:
    assert dead["MSE"].sum() > 10 * max(1, dead["energy"].sum())

# %% [markdown]
# The MSE-trained model's cells of one perturbation spread by {glue:text}`spread_mse:.3f` per gene, the energy-trained model's by {glue:text}`spread_energy:.3f` and the real cells by {glue:text}`spread_real:.3f`: the MSE model predicts one average cell, as step 6 said it would.
# It also predicts exactly 0, in every cell, for {glue:text}`dead_mse` of the 500 genes (the energy-trained model for {glue:text}`dead_energy`), genes whose real mean is {glue:text}`dead_mse_level:.2f`: once the output of a gene falls below zero before the ReLU, the ReLU passes no gradient and nothing brings it back, a "dead" output.
#
# The other ablations, with three seeds each, run in `bench/st_experiments.py` ({glue:text}`bench_minutes:.0f` minutes on two CPU cores; `python bench/st_experiments.py` regenerates `bench/results/st_experiments.csv`, which the chapter reads).
# Each variant changes one thing in the chapter's recipe: one-hot features, the MSE loss, sets of 8 or of 128 cells (with the same number of cells per update), no residual, Arc's gene-space residual with its bottleneck, and four times as many updates.

# %% tags=["hide-input"]
results = repository_file("bench/results/st_experiments.csv")
bench = pd.read_csv(results)
settings = json.loads(results.with_suffix(".json").read_text())
if not FAST:  # the bench ran the chapter's data, model and training
    assert settings["params"] == dataclasses.asdict(params)
    assert settings["knobs"] == KNOBS
    # fields added to STConfig after the bench ran (the gene decoder, chapter 13) are off in this model
    recorded = {
        k: v for k, v in dataclasses.asdict(config).items() if k in settings["model"]
    }
    assert settings["model"] == recorded and config.decoder_genes == 0
    assert (settings["steps"], settings["lr"], settings["sets_per_batch"]) == (
        STEPS,
        LR,
        SETS_PER_BATCH,
    )
ablation = bench[bench["experiment"] == "ablation"]
variants = ablation[ablation["seed"].notna()]
fixed = ablation[ablation["seed"].isna()].set_index("model")
order = list(dict.fromkeys(variants["model"]))
fig, axes = plt.subplots(1, 4, figsize=(13, 3.8), sharey=True)
for ax, (column, label) in zip(
    axes,
    {
        "score_2025": "2025 score",
        "discrimination_score_l1": "discrimination",
        "overlap_at_N": "DES",
        "mae": "MAE",
    }.items(),
):
    for y, name in enumerate(order):
        values = variants.loc[variants["model"] == name, column]
        ax.scatter(
            values, [y] * len(values), color=PALETTE["prediction"], s=18, alpha=0.7
        )
        ax.scatter(values.mean(), y, marker="|", s=250, color="black")
    for name, style_ in (
        ("cell mean", ":"),
        ("linear", "--"),
        ("perfect resample", "-"),
    ):
        ax.axvline(fixed.loc[name, column], color="grey", ls=style_, lw=1, label=name)
    ax.set(xlabel=label)
axes[0].set_yticks(range(len(order)), order)
axes[0].invert_yaxis()
axes[-1].legend(fontsize=8, loc="lower right")
fig.suptitle(
    f"Ablations: {int(variants['seed'].nunique())} seeds each (dots), their mean (bar)"
)
plt.tight_layout()
plt.show()
means = variants.groupby("model")[
    ["score_2025", "discrimination_score_l1", "overlap_at_N", "mae"]
].mean()
for name, key in (
    ("ST", "bench_st"),
    ("ST, MSE loss", "bench_mse"),
    ("ST, Arc's gene-space residual", "bench_all"),
    ("ST, no residual", "bench_nores"),
    ("ST, 4x steps", "bench_long"),
    ("ST, one-hot", "bench_onehot"),
    ("ST, sets of 8", "bench_s8"),
    ("ST, sets of 128", "bench_s128"),
):
    glue(key, float(means.loc[name, "score_2025"]), display=False)
glue("bench_linear", float(fixed.loc["linear", "score_2025"]), display=False)
glue("bench_mse_mae", float(means.loc["ST, MSE loss", "mae"]), display=False)
recipe = variants.loc[variants["model"] == "ST", "score_2025"]
glue("bench_st_min", float(recipe.min()), display=False)
glue("bench_st_max", float(recipe.max()), display=False)
if not FAST:  # the chapter's run is the bench's seed 0, the best of its three
    assert abs(board.loc["ST", "score_2025"] - recipe.max()) < 1e-3
glue("bench_st_mae", float(means.loc["ST", "mae"]), display=False)
# The claims of the text below, checked on the bench's numbers:
seed_spread = variants.groupby("model")["score_2025"].agg(np.ptp).max()
score = means["score_2025"]
assert score["ST, MSE loss"] < 0.01 and score["ST, Arc's gene-space residual"] < 0.01
assert abs(score["ST, no residual"] - score["ST"]) < seed_spread
assert max(score["ST, sets of 8"], score["ST, sets of 128"]) < score["ST"]
assert (
    score["ST, one-hot"] < score["ST"]
    and abs(score["ST, 4x steps"] - score["ST"]) < seed_spread
)
assert means.loc["ST, MSE loss", "mae"] > means.loc["ST", "mae"]
glue("bench_minutes", settings["seconds"]["ablation"] / 60, display=False)

# %% [markdown]
# What the ablations teach (mean 2025 scores over the seeds; the chapter's recipe scores {glue:text}`bench_st:.3f`, the linear model on the same features {glue:text}`bench_linear:.3f`):
#
# - **The loss.** With the MSE the score is {glue:text}`bench_mse:.3f`: collapsed cells are a poor prediction of a population, and their mean profiles are further off too (MAE {glue:text}`bench_mse_mae:.3f` against {glue:text}`bench_st_mae:.3f`), where step 6 would expect the average to be right: the dead outputs above.
# - **The residual.** Without it the score is {glue:text}`bench_nores:.3f`, no different within the spread of the seeds: the control reaches the output through its token anyway. Arc's gene-space residual with its bottleneck scores {glue:text}`bench_all:.3f`: every predicted cell passes through 62 numbers *after* the control was added back, which throws away most of what the residual kept. That design is meant for 18,080 genes, where the bottleneck is 2,260 wide.
# - **The set size.** Sets of 8 ({glue:text}`bench_s8:.3f`) and of 128 cells ({glue:text}`bench_s128:.3f`), with the same number of cells per update, both do worse than 32: a distance between two sets of 8 is a noisy estimate, and a group of 100 training cells fills one set of 128 (28 cells drawn again), so an update holds two sets, two perturbations instead of eight.
# - **Features.** One-hot vectors ({glue:text}`bench_onehot:.3f`) cannot describe an unseen gene.
# - **Training longer.** Four times the updates give {glue:text}`bench_long:.3f`: the model is not short of training, it is short of examples.
#
# The spread between seeds of one variant is as large as some differences between variants: on a screen of this size one run of each proves little, which is why the bench repeats them.

# %% [markdown]
# ## How many perturbations does it take?
#
# ST learns what a gene's features say about its effect from the training perturbations, and the chapter's screen has {glue:text}`n_train_perts` of them.
# The bench's second experiment simulates the same kind of screen with 60 perturbations instead of 30, fixes 12 of them for testing, and trains ST, the linear model on the same features, the perturbation mean and the cell mean on 6, 12, 24 or all 48 of the others: a {term}`learning curve`.

# %% tags=["hide-input"]
curve = bench[bench["experiment"] == "learning curve"]
trained = curve[curve["seed"].notna()]
curve_means = trained.groupby(["model", "n_train_perturbations"])[
    ["score_2025", "discrimination_score_l1"]
].mean()
curve_ceiling = curve[curve["seed"].isna()].set_index("model").loc["perfect resample"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for ax, column, label in zip(
    axes,
    ("score_2025", "discrimination_score_l1"),
    ("2025 score (cell mean = 0)", "discrimination"),
):
    for name, colour in (
        ("ST", PALETTE["prediction"]),
        ("linear", PALETTE["accent"]),
        ("perturbation mean", PALETTE["control"]),
        ("cell mean", "black"),
    ):
        series = curve_means.loc[name, column]
        ax.plot(series.index, series.to_numpy(), marker="o", color=colour, label=name)
    ax.axhline(
        curve_ceiling[column], color=PALETTE["truth"], ls="--", label="perfect resample"
    )
    ax.set(xscale="log", xlabel="training perturbations", ylabel=label)
    ax.set_xticks(series.index, [str(int(n)) for n in series.index])
    ax.minorticks_off()  # the log axis's minor labels (2 x 10^1, ...) only clutter
axes[0].legend(fontsize=8)
fig.suptitle(
    f"Learning curve on 12 unseen perturbations ({int(trained['seed'].nunique())} seeds, mean)"
)
plt.tight_layout()
plt.show()
sizes = sorted(trained["n_train_perturbations"].unique())
for name, key in (("ST", "curve_st"), ("linear", "curve_linear")):
    for size, end in ((sizes[0], "small"), (sizes[-1], "large")):
        value = float(curve_means.loc[(name, size), "score_2025"])
        glue(f"{key}_{end}", value, display=False)
glue("curve_ceiling", float(curve_ceiling["score_2025"]), display=False)
glue("curve_sizes_small", int(sizes[0]), display=False)
glue("curve_sizes_large", int(sizes[-1]), display=False)
learned = curve_means.loc[["ST", "linear"], "score_2025"]
assert learned.max() < 0.25 * curve_ceiling["score_2025"]  # far below the ceiling
assert (learned["ST"] >= learned["linear"]).sum() >= len(sizes) - 1  # a little above
assert curve_means.loc["linear", "score_2025"].max() < 0.02  # about the mean effect

# %% [markdown]
# With {glue:text}`curve_sizes_small` training perturbations ST scores {glue:text}`curve_st_small:.3f` and the linear model {glue:text}`curve_linear_small:.3f`; with {glue:text}`curve_sizes_large`, {glue:text}`curve_st_large:.3f` and {glue:text}`curve_linear_large:.3f`, against the perfect resample's {glue:text}`curve_ceiling:.3f`.
# Neither curve climbs: ST is at or a little above the linear model from 12 perturbations on (below it at 6), the linear model stays near the mean effect, where cross-validation shrinks it, and both stay far below the ceiling.
# On this second screen ST scores lower than on the chapter's: how much it gains depends on the screen as much as on its size.
# The question a learning curve answers is whether a model is limited by the amount of its data or by something else; here, within this range, more perturbations do not help either model.
# What does limit them is what a gene's features say about its effect: in chapter 3, even fully informative features left most of an effect open, and here their informativeness is the simulator's default, 0.5.
# The challenge's own training set had 150 perturbations in its target cell type, and ESM-2 features of real genes, whose informativeness nobody knows in advance.

# %% [markdown]
# ## The same on real cells
#
# The THP-1 screen of chapters 2 and 8 {cite}`papalexi2021` has one cell type and 25 knocked-out genes.
# As in chapter 8, `split_by_perturbation` holds out 40% of them; the test cells are halved into real and resample.
# Offline, the book has no informative vectors for these genes (chapter 10's ESM-2 is random here), so ST reads one-hot vectors: for a held-out knockout it knows only what all knockouts share.

# %%
thp1 = normalize_log1p(load_papalexi2021())
thp1.obs[CELL_TYPE] = "THP-1"
thp1_part = assign_split(
    thp1, split_by_perturbation(thp1, val=0.0, test=0.4, seed=0)
).to_numpy()
thp1_train = thp1[np.isin(thp1_part, ["train", "control"])].copy()
thp1_real, thp1_resample = half_split(
    thp1[np.isin(thp1_part, ["test", "control"])].copy(), seed=0
)
thp1_features = perturbation_features(thp1.obs[PERT].unique(), "onehot")
thp1_model, _ = train_st(thp1_features, cells=thp1_train)
thp1_template = thp1_real.copy()
thp1_template.X = np.zeros(thp1_template.shape, dtype=np.float32)
thp1_predictions = baseline_predictions(thp1_train, thp1_real) | {
    "ST": predict(
        thp1_model, thp1_template, thp1_train, thp1_features, seed=0, progress=False
    ),
    "perfect resample": thp1_resample,
}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    thp1_board = leaderboard(thp1_predictions, thp1_real)
thp1_board.round(3)

# %% tags=["hide-input"]
plot_scores(thp1_board, "Unseen knockouts, THP-1 screen")
for name in ("ST", "perturbation mean", "perfect resample", "linear"):
    glue(
        f"thp1_{name.replace(' ', '_')}_2025",
        float(thp1_board.loc[name, "score_2025"]),
        display=False,
    )
glue("thp1_train_perts", thp1_train.obs[PERT].nunique() - 1, display=False)
assert (
    thp1_board.loc["perfect resample", "score_2025"]
    > thp1_board["score_2025"].drop("perfect resample").max()
)

# %% [markdown]
# On real cells the ceiling is lower, {glue:text}`thp1_perfect_resample_2025:.3f`: most of these knockouts change few of the 299 measured genes, so even a second sample of the same cells only partly agrees with the first.
# ST scores {glue:text}`thp1_ST_2025:.3f`, the perturbation mean {glue:text}`thp1_perturbation_mean_2025:.3f` and the linear model {glue:text}`thp1_linear_2025:.3f`.
# With one-hot vectors and {glue:text}`thp1_train_perts` training knockouts, there is nothing for ST to transfer to a new one beyond the shared response, and no model here can be credited with predicting an unseen knockout.

# %% [markdown]
# ## Where the book's ST is smaller than Arc's
#
# The architecture is Arc's, and `vcell_lib.models.st.load_arc_checkpoint` proves it: `tests/test_st.py::test_st_matches_arc_state` builds arc-state's `StateTransitionPerturbationModel` (0.11.1) with random weights in ten combinations of its options (output space, basal MLP, batch embedding, residual), saves a Lightning checkpoint, loads it into the book's model and finds the same predictions to within 1e-5.
# Everything else is smaller:

# %% tags=["hide-input"]
arc = st.STConfig.state_sm(n_genes=18_080, pert_dim=5120)
pd.DataFrame(  # the last expression of a cell is shown
    {
        "this chapter": [config.hidden_dim, config.n_layers, config.cell_set_len, SETS_PER_BATCH, STEPS,
                         f"{train.n_obs:,} cells x {train.n_vars} genes", f"{gene_features.shape[1]} (simulated)"],
        "Arc's state_sm (VCC 2025)": [arc.hidden_dim, arc.n_layers, arc.cell_set_len, 16, 40_000,
                                      "221,273 cells x 18,080 genes", "5,120 (ESM-2)"],
    },
    index=["width", "Llama blocks", "cells per set", "sets per update", "updates", "training data",
           "perturbation features"],
)  # fmt: skip

# %% [markdown]
# What this costs cannot be measured here: the learning curve found no gain from more perturbations in its range, four times the updates gained nothing either, and Arc's scale (40,000 updates of 16 sets of 128 cells over a whole screen, against {glue:text}`steps` updates here) lies far outside both.
# On this machine the small model trains at {glue:text}`cells_per_second:,.0f` cells per second; `bench/st_throughput.py` measures `state_sm` itself, streaming sets from a sparse or backed file of the challenge's size, and shows why the real recipe is a GPU job.
# What the small model *can* show is the machinery: sets, the loss, the equivariance, training, inference from a template and honest scoring; and, on unseen perturbations, that features which describe the gene are what lets it say anything at all.
#
# To load a trained Arc ST (the `final.ckpt` of `state tx train`), the cell below runs where such a checkpoint exists; to predict with it you must give its inputs in its training order, the genes and the perturbation features that `state tx train` wrote beside the checkpoint.
# As with SE, the file is a pickled Lightning checkpoint: load only files you trust.

# %%
ARC_ST = Path(
    "ST-checkpoint/final.ckpt"
)  # e.g. from `state tx train ... output_dir=ST-checkpoint`
if ARC_ST.exists():
    arc_model = st.load_arc_checkpoint(ARC_ST).to(DEVICE)
    print(arc_model.config)
else:
    print(f"no checkpoint at {ARC_ST.resolve()}: skipped")

# %% [markdown]
# ## Summary
#
# - ST maps a set of control cells and a perturbation vector to a set of predicted cells: one token per cell (perturbation MLP + basal projection), a bidirectional Llama without positions, so permuting the cells permutes the predictions, an output MLP with the control added back, and a ReLU.
# - Cells are paired with controls at random, so ST is trained with a distance between sets, the energy distance; an MSE against random partners collapses every predicted set to its average cell.
# - `STSets`, `st_loss`, `train.fit` and `predict` train it and fill a challenge template; an unknown perturbation is an error, not a silent control.
# - On unseen perturbations of a small simulated screen, ST with gene features beats every baseline at discrimination but not at MAE or DES, reaching {glue:text}`share_of_ceiling:.0%` of the perfect resample's 2025 score; one-hot vectors cannot describe an unseen gene; on the real THP-1 screen nothing beats the baselines.
# - Ablations need several seeds to mean anything at this size, and a learning curve shows whether data or design limits a model.

# %% [markdown]
# ## Exercises
#
# **1. The average cell in disguise.**
# Compute the energy distance between the real test cells of one perturbation and (a) ST's predicted cells, (b) the cell-mean baseline's identical cells.
# Which is closer, and does it agree with the MAE?


# %% tags=["hide-cell"]
# Solution. The energy distance sees the spread of the cells, the MAE only their means: a copied average cell can win
# on MAE and lose on the energy distance, which is the distinction step 6 drew.
target = cells_of(real, test_perts[0])
for name in ("ST", "cell mean"):
    guess = cells_of(predictions[name], test_perts[0])
    mae_value = (guess.mean(0) - target.mean(0)).abs().mean().item()
    print(
        f"{name:10s} energy {energy_distance(guess, target).item():.3f}  MAE {mae_value:.3f}"
    )

# %% [markdown]
# **2. Equivariance is not invariance.**
# Permute the *control* cells of one set and keep the perturbation fixed.
# Show that the set of predictions is the same (as a set) and that each prediction follows its control.

# %% tags=["hide-cell"]
# Solution. The model is equivariant: prediction i depends on control i and on the set as a whole (through
# attention), so permuting the controls permutes the predictions and leaves the set unchanged.
with torch.no_grad():
    b, p = batch["basal"][:1], batch["pert"][:1]
    order = torch.randperm(SET_SIZE)
    moved = model(b[:, order], p)[0]
    still = model(b, p)[0]
print(
    "each prediction follows its control:",
    torch.allclose(moved, still[order], atol=1e-5),
)
print(
    "same set:",
    torch.allclose(moved.sort(0).values, still.sort(0).values, atol=1e-5),
)

# %% [markdown]
# **3. How informative must features be?**
# Simulate the screen again with `feature_informativeness=0.0` (pure-noise features, chapter 3; with the same seed the cells are the same, only the features change), train ST with those features and compare its discrimination with the chapter's.
# What does a model do with features that say nothing?

# %% tags=["hide-cell"]
# Solution. With noise features ST has nothing to transfer: its discrimination on unseen perturbations falls to
# about the cell mean's level (the exact numbers vary with the seed).
noise = simulate_perturbseq(params, seed=0, feature_informativeness=0.0, **KNOBS)
noise_features = perturbation_features(noise.obs[PERT].unique(), noise)
noise_model, _ = train_st(noise_features)
noise_pred = predict(
    noise_model, template, train, noise_features, seed=0, progress=False
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    print(
        leaderboard(
            {"cell mean": baselines["cell mean"], "ST, noise features": noise_pred},
            real,
        )
        .round(3)
        .to_string()
    )

# %% [markdown]
# **4. Whose controls?**
# ST's prediction carries its own predicted control cells, the baselines the real ones, and each side's effects are measured against its own controls.
# Score ST's perturbed cells followed by the real control cells, and compare with the table of the chapter.

# %% tags=["hide-cell"]
# Solution. Only the control rows change. With the real controls, ST's effects are measured from the real control
# profile, so any bias of its predicted cells (the same for every perturbation) becomes part of every effect:
# compare the DES and discrimination columns of the two rows.
real_controls = real[(real.obs[PERT] == CONTROL).to_numpy()].copy()
real_controls.X = real_controls.X.toarray()
del real_controls.layers["counts"]
st_real_controls = ad.concat(
    [st_pred[(st_pred.obs[PERT] != CONTROL).to_numpy()], real_controls]
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    print(
        leaderboard(
            {
                "cell mean": baselines["cell mean"],
                "ST": st_pred,
                "ST, real controls": st_real_controls,
            },
            real,
        )
        .round(3)
        .to_string()
    )

# %% [markdown]
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
