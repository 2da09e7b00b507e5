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
# # SE: a cell embedding model
#
# A transcriptome is a vector of 18,000 noisy counts, and two cells of the same kind can share few of their non-zero genes.
# The State Embedding model (SE) turns such a vector into a short, dense one, a {term}`cell embedding`, that is meant to mean the same thing whichever lab, chip or cell line it came from {cite}`adduri2025`.
# SE reads a cell as a {term}`sentence <cell sentence>` of its most expressed genes, each gene described by its protein (chapter 10), passes the sentence through a {term}`transformer`, and is trained to fill in genes it was not shown.
# This chapter builds SE from its parts with the shapes printed at every step, trains a small one on the simulator and on the real THP-1 screen, and judges it against the plainest embedding there is, {term}`PCA` of log1p expression.
# It ends with how to load Arc's released weights into the book's model, which is the same network, and embed your own cells with them.

# %% [markdown]
# ```{admonition} Objectives and prerequisites
# :class: tip
# After this chapter you will be able to:
# - build a cell sentence, gene tokens from frozen protein embeddings, soft-binned expression encodings, and the CLS and dataset tokens of SE;
# - explain how SE is trained (masked genes, a decoder conditioned on the cell embedding, an energy-distance loss) and where the public code differs from its description;
# - train a model with the book's training loop, `vcell_lib.train.fit`, on a CPU or a GPU, and on several GPUs with `torchrun`;
# - judge an embedding honestly: against PCA, on held-out cells, with kNN accuracy, silhouette and batch absorption;
# - load Arc's SE checkpoints into `vcell_lib.models.se` and embed your own cells.
#
# **Prerequisites:** log1p normalization and batches from [chapter 2](02_single_cell_data.ipynb), the simulator's contexts and batches from [chapter 3](03_noise_model.ipynb), gene embeddings from [chapter 10](10_esm_gene_embeddings.ipynb).
# A working knowledge of transformers (tokens, self-attention, LayerNorm) helps.
# ```

# %% tags=["hide-input"]
import sys
import warnings

if (
    "google.colab" in sys.modules
):  # On Colab only: install the book's library (with ESM-2).
    import subprocess

    PACKAGE = (
        "vcell-lib[esm] @ git+https://github.com/virtual-cell-book/virtual-cell-book"
    )
    # myst-nb: `glue` passes numbers from the code to the prose (the book's build shows them)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", PACKAGE, "myst-nb"], check=True
    )

import dataclasses
import json
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import torch
from myst_nb import glue
from sklearn.decomposition import PCA

from vcell_lib.data import (
    BATCH,
    CELL_TYPE,
    PAPALEXI_RENAMED,
    PERT,
    PROTEIN_FILE,
    load_papalexi2021,
    normalize_log1p,
    repository_file,
    shipped_file,
)
from vcell_lib.embeddings import gene_embeddings, load_esm2, read_fasta
from vcell_lib.env import FAST, by_mode, get_device, set_seed, versions
from vcell_lib.models import se
from vcell_lib.models.losses import energy_distance
from vcell_lib.plotting import PALETTE, plot_history, style
from vcell_lib.simulate import SimulationParams, simulate_perturbseq
from vcell_lib.train import TrainConfig, fit

rng = set_seed(0)
style()
BIN_COLOURS = plt.cm.viridis(np.linspace(0, 1, 10))  # one colour per soft bin
DEVICE = get_device()
versions()

# %% [markdown]
# ## What an embedding model is for
#
# PCA of log1p expression (chapter 2) already turns a cell into a few dozen numbers.
# Its axes, though, belong to one dataset: fit PCA on another lab's cells and the axes change, and a batch effect that moves many genes a little is a large direction in PCA space.
# SE aims for an embedding that transfers: trained on a large atlas of many cell types and experiments, it should place a T cell near other T cells whatever the chip, and a knocked-down cell near cells in the same state {cite}`adduri2025`.
# Three ideas carry that aim:
#
# - **Genes are described by their proteins, not by a column number.** A gene token is built from the gene's frozen ESM-2 embedding (chapter 10), so any dataset's genes map into the same token space, and genes that are alike get alike tokens.
# - **A cell is a set of tokens.** The model reads the cell's top-expressed genes, each token carrying how much of the gene there is; there is no position, so the order of the genes does not matter.
# - **The embedding is trained to predict expression.** Genes hidden from the model must be read back from the cell's embedding, which forces the embedding to keep what identifies the cell's state.
#
# The part of SE that Arc's perturbation model uses downstream (chapter 12) is the embedding; everything else here exists to train it.
#
# We follow one batch of cells through the model, on simulated data first: three cell types (the simulator's contexts), two batches, and genes that carry {term}`gene features <gene embedding>` in `varm["gene_features"]`, playing the part of the protein embeddings.

# %%
PARAMS = SimulationParams(
    n_contexts=3,
    n_batches=2,
    n_perturbations=30,
    cells_per_perturbation=by_mode(full=60, fast=12),
    n_control_cells=by_mode(full=300, fast=60),
    n_gene_features=64,
)
simulated = normalize_log1p(simulate_perturbseq(PARAMS, seed=0))
held_out = rng.random(simulated.n_obs) < 0.2  # cells the model never trains on
train_cells, test_cells = simulated[~held_out].copy(), simulated[held_out].copy()
gene_vectors = simulated.varm["gene_features"]
print(simulated)
print(
    f"{train_cells.n_obs} training cells, {test_cells.n_obs} held-out cells; gene features: {gene_vectors.shape}"
)

# %% [markdown]
# ## Step 1: the cell sentence
#
# SE does not read all genes of a cell.
# It ranks the genes by the cell's log1p expression and keeps the top ones: the published model keeps 2,047, plus a CLS token at position 0, for sentences of 2,048 tokens.
# Ties are broken at random: the genes are shuffled before the sort, so when a cell expresses fewer genes than there are slots, the zeros that fill the sentence are a different random draw every time the cell is read.
# (A cell with fewer genes in total than slots repeats random unexpressed genes.)
# Each token also carries a value: the gene's share of the cell's total log1p expression, times 100.
#
# Our model is small, with sentences of 128 tokens; here is the start of one cell's sentence.

# %%
config = se.SEConfig.small(token_dim=gene_vectors.shape[1], n_datasets=PARAMS.n_batches)
X_demo = train_cells.X[:4].toarray()
sentence_genes, sentence_values = se.cell_sentences(X_demo, config.sentence_length, rng)
print(
    "sentence shapes:", sentence_genes.shape, sentence_values.shape, "(cells, tokens)"
)
first = pd.DataFrame(
    {
        "gene": ["[CLS]"] + list(train_cells.var_names[sentence_genes[0, 1:8]]),
        "log1p": [np.nan] + list(X_demo[0, sentence_genes[0, 1:8]].round(2)),
        "value": sentence_values[0, :8].round(3),
    }
)
print(first.to_string(index=False))
assert (np.diff(X_demo[0, sentence_genes[0, 1:]]) <= 0).all()  # ranked by expression

# %% [markdown]
# ## Step 2: gene tokens
#
# Every gene of the vocabulary has a frozen vector: ESM-2 15B's 5,120 numbers in the published model, the simulator's 64 features here.
# SE L2-normalizes the vector, projects it with `Linear -> LayerNorm -> SiLU` to the model width $d$, and multiplies by $\sqrt{d}$.
# The normalization makes every gene the same length, so the projection sees directions only; the factor $\sqrt d$ then makes each token large (LayerNorm already gives its coordinates a scale near one), so at the start of training a token says mostly *which* gene and little about *how much*.
# The {term}`CLS token` is a learnable vector of the same 5,120 (here 64) dimensions placed at position 0 and projected like a gene; the vocabulary index at that position is ignored.
#
# `se.StateEmbedding` holds the vocabulary as a frozen buffer and exposes each step; we build the model and push the sentences through its first layer.

# %%
model = se.StateEmbedding(config, list(simulated.var_names), gene_vectors)
genes_t = torch.from_numpy(sentence_genes)
values_t = torch.from_numpy(sentence_values)
with torch.no_grad():
    unit = torch.nn.functional.normalize(model.gene_embeddings[genes_t], dim=-1)
    projected = model.gene_projection(unit) * math.sqrt(config.d_model)
print(
    "frozen vectors:",
    tuple(model.gene_embeddings[genes_t].shape),
    "-> projected tokens:",
    tuple(projected.shape),
)
n_parameters = sum(p.numel() for p in model.parameters())
print(
    f"trainable parameters: {n_parameters:,}; frozen vocabulary: {tuple(model.gene_embeddings.shape)}"
)

# %% [markdown]
# ## Step 3: the expression encoding, by soft binning
#
# The token says which gene; it must also say how much.
# SE borrows {term}`soft binning` from scFoundation {cite}`hao2024`: a small network maps each value to a probability over 10 bins, `softmax(Linear(1, 512) -> LeakyReLU -> Linear(512, 10))`, and the expression encoding is the probability-weighted mean of 10 learned bin vectors, added to the gene token.
# Unlike a hard histogram, the bins are learned, and nearby values get nearby encodings, so the encoding is smooth in the value.
# Two details from the code matter: the values are computed on log1p expression, not counts (each is $100\,x_g/\sum_{g'} x_{g'}$ with $x$ the log1p values), and the CLS slot carries a value too.
# In the reference that value is, by an accident of indexing, the weight of whichever gene is the dataset's fourth column; the book gives the CLS slot a value of 0, and offers the reference's rule for models trained by Arc (`cls_value_gene=se.ARC_CLS_GENE`).
#
# Before training, the encoding barely depends on the value: every value gets nearly the same mixture of bins.

# %%
grid = torch.linspace(0, float(sentence_values.max()), 200)  # the values that occur
with torch.no_grad():
    bin_weights = model.soft_bins(grid[None, :])[0]
assert torch.allclose(bin_weights.sum(-1), torch.ones(len(grid)))
fig, ax = plt.subplots(figsize=(7, 3))
ax.stackplot(grid.numpy(), bin_weights.T.numpy(), colors=BIN_COLOURS)
ax.set(
    xlabel="expression value (100 x share of log1p)",
    ylabel="bin weight",
    title="Soft bins of an untrained SE",
)
plt.show()
print(
    f"values in the demo sentences range from {sentence_values[:, 1:].min():.2f} to {sentence_values.max():.2f}"
)

# %% [markdown]
# ## Step 4: the dataset token and the encoder
#
# With *dataset correction* on, as in the published model, a second learnable token, the {term}`dataset token`, is appended at the end of every sentence.
# It carries no expression value.
# During training, a small classifier must tell from this token's output which dataset (here: which batch) the cell came from.
# The intent is a division of labour: what is specific to the dataset flows into the dataset token, and the CLS token is left with the biology.
# Whether that happens is a question we will measure, not assume.
#
# The encoder is a stack of standard post-LayerNorm transformer blocks {cite}`vaswani2017` (`vcell_lib.models.layers.EncoderBlock`, self-attention with PyTorch's `scaled_dot_product_attention`, then a GELU feed-forward).
# Nothing in it knows a token's position, so shuffling the genes of a sentence cannot change the CLS output; the check below is the test suite's too.

# %%
with torch.no_grad():
    tokens = model.tokens(genes_t, values_t)
    print("tokens with expression (+ dataset token):", tuple(tokens.shape))
    encoded = model.encode(genes_t, values_t)
    print(
        "cell embedding:",
        tuple(encoded.cell.shape),
        " dataset embedding:",
        tuple(encoded.dataset.shape),
    )
    order = torch.cat(
        [torch.tensor([0]), 1 + torch.randperm(config.sentence_length - 1)]
    )
    shuffled = model.encode(genes_t[:, order], values_t[:, order])
assert torch.allclose(encoded.cell, shuffled.cell, atol=1e-5)
print(model.blocks[0])
print(
    "X_state-style output (cell + dataset embedding):",
    tuple(model(genes_t, values_t).shape),
)

# %% [markdown]
# The cell embedding is the CLS output passed through a small head (a residual block and a Linear) and L2-normalized.
# The embedding Arc saves (`obsm["X_state"]`) *concatenates* the 10-dimensional dataset embedding to it: 2,048 + 10 = 2,058 numbers for SE-600M.
# Downstream models that expect 2,048 inputs trip over those 10 extra columns; `StateEmbedding.encode` keeps them apart.

# %% [markdown]
# ## Step 5: what the model is asked, and what it is not shown
#
# Training is {term}`self-supervised <self-supervised learning>`, like masked language modelling (chapter 10): hide some genes, ask for them back.
# For every cell SE draws query genes: some among its expressed genes, the same number among its zeros, and a set of genes shared by all cells of the batch (the published sizes are 512, 512 and 512).
# The decoder predicts each query gene's log1p value from the query gene's token, the cell embedding, the cell's read depth and its dataset embedding.
#
# The public code (arc-state 0.11) allocates an input mask, never fills it, and passes no mask to the encoder (`src_key_padding_mask=None`); the query genes are drawn independently of the sentence, so a gene the model must predict can sit in its input with its value attached.
# Here the masking is real: query genes are left out of the sentence, their values do not count in the others' weights, and the read depth comes from the visible genes only.
# (The reference computes the read depth from the values being predicted.)
# One consequence to know: in training each value is a share of the *visible* genes' total, which is smaller than the whole cell's, so values at embedding time, with nothing hidden, run a little lower than in training.

# %%
batch = se.training_batch(
    X_demo,
    np.arange(simulated.n_vars),
    config,
    rng,
    dataset=np.zeros(len(X_demo), dtype=int),
)
for name, tensor in batch.items():
    print(f"{name:16s} {tuple(tensor.shape)}")
for sentence, queries in zip(batch["sentence_genes"], batch["query_genes"]):
    assert not set(sentence[1:].tolist()) & set(
        queries.tolist()
    )  # nothing asked is shown

# %% [markdown]
# ## Step 6: the decoder and the loss
#
# For cell $i$ and query gene $g$, the decoder input is the concatenation
# $[\,\mathrm{proj}(e_g);\ z_i;\ r_i;\ \delta_i\,]$ of the projected gene vector (projected like a token, but without the normalization or the $\sqrt d$), the cell embedding $z_i$, the read depth $r_i$ and the dataset embedding $\delta_i$; two residual blocks and a Linear turn it into one number, the predicted log1p value $\hat x_{ig}$.
#
# The loss is named an {term}`energy distance` (chapter 12 uses it between sets of cells).
# For two sets of points $\{a_j\}$ and $\{b_k\}$,
#
# $$
# E = \frac{1}{nm}\sum_{j,k} \lVert a_j - b_k\rVert - \frac{1}{2n^2}\sum_{j,j'} \lVert a_j - a_{j'}\rVert - \frac{1}{2m^2}\sum_{k,k'} \lVert b_k - b_{k'}\rVert .
# $$
#
# SE applies it with *one point per set*: the vector of a cell's predicted query values against the vector of its true ones, so the two within-set terms vanish and the loss is the Euclidean distance $\lVert \hat x_{i\cdot} - x_{i\cdot}\rVert$.
# A second term groups the errors on the batch's shared genes by gene, across the batch's cells, one Euclidean distance per gene.
# With dataset correction, the cross-entropy of the dataset classifier is added.

# %%
a, b = (
    torch.randn(5, 1, 20, dtype=torch.float64),
    torch.randn(5, 1, 20, dtype=torch.float64),
)
assert torch.allclose(
    energy_distance(a, b), (a - b).norm(dim=-1).squeeze(1), atol=1e-3
)  # one point per set
with torch.no_grad():
    print(
        f"loss of the untrained model on the demo batch: {model.loss(batch).item():.2f}"
    )

# %% [markdown]
# ## Training, with the book's training loop
#
# `vcell_lib.train.fit` is the one training loop of the book (chapter 12 uses it for ST).
# It takes a model, an iterable of batches and a function `loss_fn(model, batch)`, and handles what every training needs: the device (CUDA, then Apple's MPS, then the CPU), seeds, AdamW with a linear warm-up then a cosine decay (PyTorch's own schedulers), gradient clipping, bf16 autocast on GPUs, validation every few steps, early stopping, and checkpoints that a later call resumes from.
# Started under `torchrun --nproc_per_node=N`, the same call trains on N processes ({term}`data parallelism`, PyTorch's DistributedDataParallel), each process reading its share of the batches; the test suite runs it with two CPU processes and checks that both replicas end with the same weights.
#
# In a script, for example with two GPUs: `torchrun --nproc_per_node=2 train_se.py`, where `train_se.py` builds the model and the batches and calls `fit` exactly as below.
#
# `se.SEBatches` draws fresh training batches (new query genes, new tie-breaks) every pass over the cells.
# The held-out cells give the validation loss.

# %%
TRAIN_STEPS = by_mode(full=300, fast=20)
train_batches = se.SEBatches(
    train_cells, model, batch_size=64, dataset_col=BATCH, seed=0
)
# Validation batches as large as the training ones: the loss term across cells grows with their number.
val_batches = list(
    se.SEBatches(test_cells, model, batch_size=64, dataset_col=BATCH, seed=1)
)[:8]
settings = TrainConfig(
    max_steps=TRAIN_STEPS,
    lr=3e-3,
    val_every=max(TRAIN_STEPS // 8, 1),
    device=str(DEVICE),
    progress=False,
)
start = time.perf_counter()
history = fit(
    model, train_batches, lambda m, b: m.loss(b), settings, val_data=val_batches
)
seconds = time.perf_counter() - start
cells_per_second = TRAIN_STEPS * 64 / seconds
glue("se_cells_per_second", float(cells_per_second), display=False)
glue("se_train_seconds", float(seconds), display=False)
glue("se_parameters", n_parameters, display=False)
print(
    f"{TRAIN_STEPS} steps in {seconds:.0f} s: {cells_per_second:.0f} cells per second on {DEVICE}"
)


# %% tags=["hide-input"]
plot_history(history, "SE on simulated cells")
plt.show()

# %% [markdown]
# The loss falls fast for the first hundred steps, then slowly, and the held-out cells follow the training cells closely: a model this small does not overfit a few thousand cells in 300 steps.
# On the CPU that built this page the loop trained about {glue:text}`se_cells_per_second:.0f` cells per second; on a recent GPU the same call runs in bf16 autocast (the book is built without one, so no GPU number is quoted).

# %% [markdown]
# ## Judging the embedding against PCA
#
# A learned embedding earns its cost only if it beats a cheap one.
# The cheap one is PCA of log1p expression with as many components as SE has embedding dimensions, fit on the training cells.
# Both embed the held-out cells, and we ask of each:
#
# - **{term}`kNN accuracy`**: fit a 10-nearest-neighbour classifier on the training cells' embeddings, predict a label for each held-out cell. High for the cell type and the perturbation is good; high for the batch means the batch effect survived.
# - **{term}`silhouette`** on the held-out cells, grouped by a label: how tight and separate the groups are, from -1 to 1.
# - a floor: always guessing the most frequent label. A kNN classifier on an embedding that carries no signal does worse than this: it guesses labels in proportion to their frequencies and is right with probability $\sum_c p_c^2$, so values below this row mean *no signal*, not *negative signal*.

# %%
embed_train = se.embed_cells(model, train_cells, progress=False)
embed_test = se.embed_cells(model, test_cells, progress=False)
cell_dims = slice(
    0, config.output_dim
)  # the cell embedding; the last 10 columns are the dataset embedding
pca = PCA(config.output_dim, random_state=0).fit(train_cells.X.toarray())
pca_train, pca_test = (
    pca.transform(train_cells.X.toarray()),
    pca.transform(test_cells.X.toarray()),
)
LABELS = [CELL_TYPE, PERT, BATCH]
judged = se.compare_embeddings(
    {
        "PCA of log1p": (pca_train, pca_test),
        "SE cell embedding": (embed_train[:, cell_dims], embed_test[:, cell_dims]),
        "SE dataset embedding": (
            embed_train[:, cell_dims.stop :],
            embed_test[:, cell_dims.stop :],
        ),
    },
    train_cells.obs[LABELS],
    test_cells.obs[LABELS],
)
print(judged.round(3).to_string())

# %% tags=["remove-cell"]
# Numbers for the text, and its claims checked.
for column, name in [
    ("kNN cell_type", "knn_context"),
    ("kNN target_gene", "knn_pert"),
    ("kNN batch", "knn_batch"),
]:
    glue(f"sim_pca_{name}", float(judged.loc["PCA of log1p", column]), display=False)
    glue(
        f"sim_se_{name}", float(judged.loc["SE cell embedding", column]), display=False
    )
glue(
    "sim_ds_knn_batch",
    float(judged.loc["SE dataset embedding", "kNN batch"]),
    display=False,
)
# what the text below says about this table
for column in ["kNN cell_type", "kNN target_gene"]:
    assert judged.loc["PCA of log1p", column] > judged.loc["SE cell embedding", column]
assert (
    judged.loc["SE cell embedding", "kNN cell_type"]
    > judged.loc["majority guess", "kNN cell_type"] + 0.2
)

# %% [markdown]
# The table is the honest result of a model of {glue:text}`se_parameters:,` parameters trained for {glue:text}`se_train_seconds:.0f` seconds on a few thousand cells; we read it after two more measurements.
# Pictures first: the held-out cells in a {term}`UMAP` of each embedding, coloured by cell type and by batch.


# %% tags=["hide-input"]
def umap_of(embedding, obs):
    view = sc.AnnData(embedding.astype(np.float32), obs=obs.copy())
    sc.pp.neighbors(view, n_neighbors=15, use_rep="X", random_state=0)
    sc.tl.umap(view, random_state=0)
    return view


fig, axes = plt.subplots(2, 2, figsize=(9, 7.5))
for row, (name, embedding) in enumerate(
    [("PCA of log1p", pca_test), ("SE cell embedding", embed_test[:, cell_dims])]
):
    view = umap_of(embedding, test_cells.obs)
    for col, label in enumerate([CELL_TYPE, BATCH]):
        sc.pl.umap(
            view,
            color=label,
            ax=axes[row, col],
            show=False,
            title=f"{name}: {label}",
            frameon=False,
            size=12,
        )
fig.tight_layout()
plt.show()

# %% [markdown]
# PCA gives three clean clusters, one per cell type, with the batches mixed inside each (the batch shift is small and spread over many genes: invisible in two dimensions, yet a kNN classifier in 64 dimensions reads it). SE's embedding breaks into many small fragments that mix the cell types.
#
# **What the dataset token absorbs.**
# The batch can be read from PCA with accuracy {glue:text}`sim_pca_knn_batch:.2f`, from SE's cell embedding with {glue:text}`sim_se_knn_batch:.2f` (the floor is about one half), and from the 10-dimensional dataset embedding with {glue:text}`sim_ds_knn_batch:.2f`.
# A lower batch accuracy in the cell embedding than in PCA is what dataset correction is for, but it is only half of the evidence: an embedding that has learned little also carries little batch signal.
# The test of absorption is the same model trained the same way *without* the dataset token: if the token absorbs the batch, the cell embedding of the model without it carries more batch signal.

# %%
set_seed(0)
plain = se.StateEmbedding(
    dataclasses.replace(config, dataset_correction=False), model.genes, gene_vectors
)
fit(
    plain,
    se.SEBatches(train_cells, plain, batch_size=64, seed=0),
    lambda m, b: m.loss(b),
    dataclasses.replace(settings, val_every=TRAIN_STEPS),
)
plain_scores = se.judge_embedding(
    se.embed_cells(plain, train_cells, key=None, progress=False),
    se.embed_cells(plain, test_cells, key=None, progress=False),
    train_cells.obs[LABELS],
    test_cells.obs[LABELS],
)
absorption = pd.DataFrame(
    {"with the dataset token": judged.loc["SE cell embedding"], "without": plain_scores}
).loc[[f"kNN {label}" for label in LABELS]]
print(absorption.round(3).to_string())
glue("sim_plain_knn_batch", float(plain_scores["kNN batch"]), display=False)
glue("sim_plain_knn_context", float(plain_scores["kNN cell_type"]), display=False)

# %% [markdown]
# Without the token the cell embedding reads the batch with accuracy {glue:text}`sim_plain_knn_batch:.2f` (and the cell type with {glue:text}`sim_plain_knn_context:.2f`), against {glue:text}`sim_se_knn_batch:.2f` (and {glue:text}`sim_se_knn_context:.2f`) with it.
# There is no sign of absorption here: the batch is read about equally well either way, and the model with the token reads the cell type worse; the token's classification task competes for a small model's capacity. With one model per setting and one seed, that is a description of these runs, not a law.

# %% [markdown]
# **Masked-gene prediction.**
# The training task itself can be scored: hide 15% of each held-out cell's genes, let SE predict them from the rest, and compare with the simplest prediction, each gene's mean over the training cells.
# A third row is a prediction that is told each cell's type and predicts the gene's mean in that type: it shows how much knowing the cell type is worth on this task.

# %%
X_test = test_cells.X.toarray()
hidden = np.random.default_rng(1).random(X_test.shape) < 0.15
predicted = se.predict_masked_genes(model, X_test, np.arange(simulated.n_vars), hidden)
gene_mean = np.broadcast_to(train_cells.X.toarray().mean(axis=0), X_test.shape)
type_means = (
    pd.DataFrame(train_cells.X.toarray())
    .groupby(train_cells.obs[CELL_TYPE].to_numpy())
    .mean()
)
type_mean = type_means.loc[
    test_cells.obs[CELL_TYPE].to_numpy()
].to_numpy()  # knows each cell's type
masked = pd.Series(
    {
        "SE decoder": np.abs(predicted - X_test)[hidden].mean(),
        "gene mean": np.abs(gene_mean - X_test)[hidden].mean(),
        "gene mean of the cell's type": np.abs(type_mean - X_test)[hidden].mean(),
    },
    name="MAE on hidden genes (log1p)",
)
print(masked.round(4).to_string())
glue("sim_masked_se", float(masked["SE decoder"]), display=False)
glue("sim_masked_mean", float(masked["gene mean"]), display=False)
if not FAST:  # "no better than the gene mean", as the text below says
    assert masked["SE decoder"] > masked["gene mean"] - 0.005

# %% [markdown]
# After its minute of training the decoder's error on hidden genes, {glue:text}`sim_masked_se:.3f`, is no better than predicting each gene's mean, {glue:text}`sim_masked_mean:.3f`: it has learned the genes' levels and little more.

# %% [markdown]
# **Longer training.**
# A minute of training is what this page can afford; the script `bench/se_training_curve.py` trains the same model on the same cells ten times longer, scoring the held-out cells along the way, and saves the results that the next figure plots (regenerate them with `python bench/se_training_curve.py`, about 12 minutes on two CPU cores).
# Its learning rate follows one warm-up and cosine schedule over all its steps, so its early points are not exactly the model trained above.

# %% tags=["hide-input"]
curve = pd.read_csv(repository_file("bench/results/se_training_curve.csv"))
curve_meta = json.loads(
    repository_file("bench/results/se_training_curve.json").read_text()
)
if not FAST:  # the bench used this chapter's data (full mode) and this chapter's model
    assert curve_meta["simulation"] == dataclasses.asdict(PARAMS) and curve_meta[
        "model"
    ] == dataclasses.asdict(config)
se_curve = curve[curve["model"] == "SE"].set_index("step")
reference = curve[curve["model"] != "SE"].set_index("model")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for column, colour in zip(
    ["kNN cell_type", "kNN target_gene", "kNN batch"],
    ["#9467bd", PALETTE["perturbed"], PALETTE["accent"]],
):
    axes[0].plot(
        se_curve.index, se_curve[column], "o-", color=colour, label=f"SE: {column[4:]}"
    )
    axes[0].axhline(reference.loc["PCA of log1p", column], color=colour, ls="--", lw=1)
axes[0].set(
    xscale="log",
    xlabel="training steps",
    ylabel="kNN accuracy, held-out cells",
    title="SE (solid) against PCA (dashed)",
)
axes[0].legend(fontsize=8)
axes[1].plot(
    se_curve.index,
    se_curve["masked MAE"],
    "o-",
    color=PALETTE["control"],
    label="SE decoder",
)
for name, style_ in [("gene mean", ":"), ("gene mean of the cell's type", "--")]:
    axes[1].axhline(
        reference.loc[name, "masked MAE"], color="k", ls=style_, lw=1, label=name
    )
axes[1].set(
    xscale="log",
    xlabel="training steps",
    ylabel="MAE on hidden genes",
    title="Masked-gene prediction",
)
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()
last = se_curve.index.max()
glue("curve_steps", int(last), display=False)
glue("curve_minutes", float(curve_meta["seconds"] / 60), display=False)
for column, name in [
    ("kNN cell_type", "context"),
    ("kNN target_gene", "pert"),
    ("kNN batch", "batch"),
]:
    glue(f"curve_knn_{name}", float(se_curve.loc[last, column]), display=False)
glue("curve_knn_context_min", float(se_curve["kNN cell_type"].min()), display=False)
glue("curve_knn_context_max", float(se_curve["kNN cell_type"].max()), display=False)
glue("curve_masked", float(se_curve.loc[last, "masked MAE"]), display=False)
print(curve.round(3).to_string(index=False))
glue("curve_gene_mean", float(reference.loc["gene mean", "masked MAE"]), display=False)
glue(
    "curve_type_mean",
    float(reference.loc["gene mean of the cell's type", "masked MAE"]),
    display=False,
)
# what the next paragraph says about the longer run
assert se_curve.loc[last, "masked MAE"] < reference.loc["gene mean", "masked MAE"]
assert se_curve["kNN cell_type"].max() < reference.loc["PCA of log1p", "kNN cell_type"]

# %% [markdown]
# Ten times more training buys a better decoder, not a better embedding.
# After {glue:text}`curve_steps` steps ({glue:text}`curve_minutes:.0f` minutes) the masked-gene error is {glue:text}`curve_masked:.3f`, below the gene mean's {glue:text}`curve_gene_mean:.3f` and on the way to the {glue:text}`curve_type_mean:.3f` of a predictor told each cell's type, while the cell type is read from the embedding with accuracy {glue:text}`curve_knn_context:.2f`, after fluctuating between {glue:text}`curve_knn_context_min:.2f` and {glue:text}`curve_knn_context_max:.2f` with no trend, well below PCA.
# The objective rewards predicting each hidden gene well, and most of that can be done from the gene itself and the cell's depth; separating cell types is a side effect that a small model has little reason to pursue.

# %% [markdown]
# ## The same on real cells
#
# The THP-1 screen of chapter 4 has one cell type, three biological replicates and 25 knocked-out genes.
# Its 299 genes need vocabulary vectors, and for real genes these are protein embeddings, made with chapter 10's `gene_embeddings`.
# On Colab, `load_esm2` downloads the pretrained ESM-2 (8M parameters); where the hub cannot be reached, as on the machine that builds this book, it falls back, with a warning, to a **randomly initialized** ESM-2 of the same shape.
# A random protein model still gives every protein its own vector (chapter 10 showed that it separates sequences), so the vocabulary is usable, but the vectors carry no learned biology: similar proteins do not get similar tokens.
#
# Genes without a protein (non-coding RNAs, and names the protein file does not know) get a zero vector, the reference's rule; `se.gene_table` counts them in a warning.
# After the L2-normalization those genes all share one token, the projection of zero, and the model can tell them apart only by their expression.

# %% [markdown]
# The proteins of these genes have {glue:text}`real_residues:,` residues between them, which ESM-2 needs minutes to read on a CPU (chapter 10 measures its speed).
# On a CPU the chapter therefore embeds each protein's first 100 residues only; with a GPU it embeds whole proteins, as chapter 10 does.

# %%
papalexi = normalize_log1p(load_papalexi2021())
proteins = read_fasta(shipped_file(PROTEIN_FILE, "human_proteins"))
esm2 = load_esm2()
RESIDUES = (
    None if DEVICE.type == "cuda" else 100
)  # residues embedded per protein (None: all)
symbol = {
    g: PAPALEXI_RENAMED.get(g, g) for g in papalexi.var_names
}  # old screen symbols -> current HGNC
with_protein = [symbol[g] for g in papalexi.var_names if symbol[g] in proteins]
sequences = {g: [s[:RESIDUES] for s in proteins[g]] for g in with_protein}
glue(
    "real_residues",
    sum(len(s) for g in with_protein for s in proteins[g]),
    display=False,
)
start = time.perf_counter()
names, vectors = gene_embeddings(sequences, esm2, progress=False)
print(
    f"{len(names)} gene vectors from {esm2.name} in {time.perf_counter() - start:.0f} s"
)
by_symbol = dict(zip(names, vectors))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    real_table = se.gene_table(
        list(papalexi.var_names),
        {g: by_symbol[symbol[g]] for g in papalexi.var_names if symbol[g] in by_symbol},
    )
print(caught[-1].message)
n_without = int((np.abs(real_table).sum(axis=1) == 0).sum())
glue("real_without_protein", n_without, display=False)
print(f"vocabulary: {real_table.shape}, {esm2.name}, pretrained: {esm2.pretrained}")

# %% [markdown]
# {glue:text}`real_without_protein` of the 299 genes have no protein vector and share the zero token.

# %% [markdown]
# We train the same small SE on a subset of the screen, with the replicate as the dataset label, and hold out 20% of those cells.

# %%
N_REAL = by_mode(full=8000, fast=1200)
subset = papalexi[np.sort(rng.choice(papalexi.n_obs, N_REAL, replace=False))].copy()
real_held_out = rng.random(subset.n_obs) < 0.2
real_train, real_test = subset[~real_held_out].copy(), subset[real_held_out].copy()
real_config = se.SEConfig.small(token_dim=real_table.shape[1], n_datasets=3)
set_seed(0)
real_model = se.StateEmbedding(real_config, list(papalexi.var_names), real_table)
real_history = fit(
    real_model,
    se.SEBatches(real_train, real_model, batch_size=64, dataset_col=BATCH, seed=0),
    lambda m, b: m.loss(b),
    TrainConfig(
        max_steps=TRAIN_STEPS,
        lr=3e-3,
        val_every=max(TRAIN_STEPS // 8, 1),
        device=str(DEVICE),
        progress=False,
    ),
    val_data=list(
        se.SEBatches(real_test, real_model, batch_size=64, dataset_col=BATCH, seed=1)
    )[:8],
)
plot_history(real_history, "SE on THP-1 cells")
plt.show()

# %%
real_labels = [PERT, BATCH]
real_embed_train = se.embed_cells(real_model, real_train, progress=False)
real_embed_test = se.embed_cells(real_model, real_test, progress=False)
real_pca = PCA(real_config.output_dim, random_state=0).fit(real_train.X.toarray())
width = real_config.output_dim  # cell embedding first, then the 10 dataset dimensions
real_judged = se.compare_embeddings(
    {
        "PCA of log1p": (
            real_pca.transform(real_train.X.toarray()),
            real_pca.transform(real_test.X.toarray()),
        ),
        "SE cell embedding": (real_embed_train[:, :width], real_embed_test[:, :width]),
        "SE dataset embedding": (
            real_embed_train[:, width:],
            real_embed_test[:, width:],
        ),
    },
    real_train.obs[real_labels],
    real_test.obs[real_labels],
)
print(real_judged.round(3).to_string())

# %%
X_real = real_test.X.toarray()
real_hidden = np.random.default_rng(1).random(X_real.shape) < 0.15
real_predicted = se.predict_masked_genes(
    real_model,
    X_real,
    real_model.vocabulary_positions(real_test.var_names),
    real_hidden,
)
real_masked = pd.Series(
    {
        "SE decoder": np.abs(real_predicted - X_real)[real_hidden].mean(),
        "gene mean": np.abs(real_train.X.toarray().mean(axis=0) - X_real)[
            real_hidden
        ].mean(),
    },
    name="MAE on hidden genes (log1p)",
)
print(real_masked.round(4).to_string())

# %% tags=["remove-cell"]
# Numbers for the text, and its claims checked.
for column, name in [("kNN target_gene", "knn_pert"), ("kNN batch", "knn_batch")]:
    glue(
        f"real_pca_{name}",
        float(real_judged.loc["PCA of log1p", column]),
        display=False,
    )
    glue(
        f"real_se_{name}",
        float(real_judged.loc["SE cell embedding", column]),
        display=False,
    )
glue(
    "real_floor_pert",
    float(real_judged.loc["majority guess", "kNN target_gene"]),
    display=False,
)
glue(
    "real_floor_batch",
    float(real_judged.loc["majority guess", "kNN batch"]),
    display=False,
)
glue(
    "real_ds_knn_batch",
    float(real_judged.loc["SE dataset embedding", "kNN batch"]),
    display=False,
)
glue("real_masked_se", float(real_masked["SE decoder"]), display=False)
glue("real_masked_mean", float(real_masked["gene mean"]), display=False)
if not FAST:  # what the next paragraph says (fast mode trains for a few steps only)
    pca_row, se_row = (
        real_judged.loc["PCA of log1p"],
        real_judged.loc["SE cell embedding"],
    )
    assert pca_row["kNN target_gene"] > se_row["kNN target_gene"]
    assert se_row["kNN batch"] < pca_row["kNN batch"]

# %% [markdown]
# On the THP-1 cells both embeddings find the knocked-out gene hard to read: the most frequent label (the non-targeting controls) is right for {glue:text}`real_floor_pert:.2f` of the held-out cells, PCA's neighbours for {glue:text}`real_pca_knn_pert:.2f` and SE's for {glue:text}`real_se_knn_pert:.2f`.
# Most of these 25 knockouts change few of the 299 measured genes, and a single cell's counts are noisy: chapter 4 found most of their signal only in pseudobulks.
# The replicate is read from PCA with accuracy {glue:text}`real_pca_knn_batch:.2f`, from SE's cell embedding with {glue:text}`real_se_knn_batch:.2f` and from its dataset embedding with {glue:text}`real_ds_knn_batch:.2f`, against a floor of {glue:text}`real_floor_batch:.2f`: SE's cell embedding carries less replicate signal than PCA, and, as on the simulated cells, that alone does not prove that the dataset token absorbed it.
# The decoder predicts hidden genes with a mean absolute error of {glue:text}`real_masked_se:.3f`, against {glue:text}`real_masked_mean:.3f` for each gene's mean: after a short training, and with the {glue:text}`real_without_protein` genes without a protein sharing one zero token (the decoder must give them all the same prediction, whatever their level), it has not learned even the genes' levels.

# %% [markdown]
# ## Loading Arc's weights
#
# `vcell_lib.models.se.StateEmbedding` is Arc's `StateEmbeddingModel` (arc-state 0.11), written out: the same layers in the same order, with names that say what each part does.
# `se.load_arc_checkpoint` reads a checkpoint of Arc's model, renames its parameters (`se.ARC_NAMES` is the whole map) and loads them.
# The test suite proves the equivalence: `tests/test_se.py::test_se_matches_arc_state` builds Arc's model with random weights, saves a checkpoint the way Lightning does, loads it into the book's model, and checks that both give the same cell embeddings, dataset embeddings and decoded genes for the same sentences, to within 1e-5.
#
# The released SE-600M weights (`arcinstitute/SE-600M` on the Hugging Face hub) are a few gigabytes: too large for this book's build, but fine for Colab with a GPU.
# The cell below runs only where the checkpoint has been downloaded.
# Three details matter when you use them:
#
# - the checkpoint is a pickled Lightning file whose configuration is an OmegaConf object, so it needs `omegaconf` and `weights_only=False`: load only files you trust;
# - the protein embeddings (`protein_embeddings.pt`, 19,790 genes x 5,120) are passed separately, and your data's genes must be among them (subset your AnnData to `model.genes`);
# - Arc's training gave the CLS slot the weight of the dataset's fourth gene, so pass `cls_value_gene=se.ARC_CLS_GENE` to reproduce its inputs.
#
# A caveat for this screen: SE-600M was trained on whole transcriptomes, and a panel of 299 genes gives it sentences made mostly of padding, with each gene's share of the total several times larger than in training. Its embeddings of such data are out of the distribution it knows; use it on full transcriptomes.

# %%
SE_600M = Path(
    "SE-600M"
)  # on Colab: huggingface_hub.snapshot_download("arcinstitute/SE-600M", local_dir="SE-600M")
checkpoints = sorted(SE_600M.glob("*.ckpt"))
if checkpoints:
    protein_vectors = torch.load(SE_600M / "protein_embeddings.pt", weights_only=False)
    arc_model = se.load_arc_checkpoint(
        checkpoints[-1], gene_embeddings=protein_vectors
    ).to(DEVICE)
    current = papalexi[:512].copy()
    current.var_names = [symbol[g] for g in current.var_names]  # today's HGNC symbols
    known = [g for g in current.var_names if g in arc_model.gene_position]
    X_state = se.embed_cells(
        arc_model, current[:, known].copy(), cls_value_gene=se.ARC_CLS_GENE
    )
    print(
        f"SE-600M: {len(known)} of {papalexi.n_vars} genes known; embedding {X_state.shape}"
    )
else:
    print(
        f"no SE-600M checkpoint in {SE_600M.resolve()}: skipped (see the comment above to download it)"
    )

# %% [markdown]
# ## What a small SE can and cannot show
#
# A model of {glue:text}`se_parameters:,` parameters, trained for {glue:text}`se_train_seconds:.0f` seconds on a few thousand cells, shows the machinery working: the loss falls on held-out cells, a kNN classifier reads the cell type from the embedding far better than chance, and the architecture is the published model's.
# It does not show that SE beats PCA, and on these data it does not: on simulated cells PCA reads the cell type from held-out cells with accuracy {glue:text}`sim_pca_knn_context:.2f` against SE's {glue:text}`sim_se_knn_context:.2f`, and the perturbation with {glue:text}`sim_pca_knn_pert:.2f` against {glue:text}`sim_se_knn_pert:.2f`.
# Within one small dataset, PCA has every advantage: it sees all genes, it is fit to exactly these cells, and the simulator's cell types differ along a few strong directions that PCA finds at once.
# Its weakness, that it does not transfer, cannot show inside a single dataset.
#
# What the 600M-parameter model adds is scale in every direction at once: 2,048-token sentences, 2,048-dimensional cell embeddings, protein vectors from ESM-2 15B that carry learned biology (ours are random offline), and pre-training on a large atlas of many cell types and experiments {cite}`adduri2025`.
# Its value is claimed where PCA has nothing to offer, across datasets: embeddings of cells from a new experiment that land next to their biological relatives.
# Testing that claim needs many datasets and the released weights; the cell above is where to start.
# Independent evaluations of other single-cell foundation models used without fine-tuning (scGPT, Geneformer) found their cell embeddings often outperformed by simpler representations, such as highly variable genes, at separating cell types and removing batch effects {cite}`kedzierska2025`; chapter 15 returns to that evidence.

# %% [markdown]
# ## Summary
#
# - SE reads a cell as a set of tokens: its top-expressed genes, each a frozen protein embedding projected to the model width plus a soft-binned encoding of its expression, with a learnable CLS token and, optionally, a dataset token.
# - It is trained to predict hidden genes from the CLS embedding; the book hides them for real, where the public code leaves them visible, and scores its loss, an energy distance with one point per set, which is a Euclidean distance.
# - `vcell_lib.train.fit` trains it on a CPU, a GPU or several GPUs under `torchrun`, with warm-up and cosine decay, clipping, validation, early stopping and checkpoints.
# - Judged on held-out cells against PCA of log1p, a small SE trained for a minute loses on cell type and perturbation; its cell embedding carries less batch signal than PCA, which is only evidence of absorption when compared with a model trained without the dataset token.
# - `se.load_arc_checkpoint` loads Arc's weights into the same network, tested to agree with arc-state to within 1e-5.

# %% [markdown]
# ## Exercises
#
# **1. Sentence length.**
# Embed the held-out simulated cells with sentences of 32 tokens instead of 128 (build a `StateEmbedding` with `dataclasses.replace(config, sentence_length=32)` and load the trained weights into it).
# How do the kNN accuracies change, and why can a model trained on 128-token sentences still run on 32?

# %% tags=["hide-cell"]
# Solution. Nothing in the network depends on the sentence length (no positions), so the weights load as they are.
# Fewer tokens mean less information about the cell but also inputs unlike those of training; the accuracies move by a
# few points, in either direction, which at this size is within the noise of a single run.
short = se.StateEmbedding(
    dataclasses.replace(config, sentence_length=32), model.genes, gene_vectors
)
short.load_state_dict(model.state_dict())
short_train = se.embed_cells(short, train_cells, key=None, progress=False)[:, cell_dims]
short_test = se.embed_cells(short, test_cells, key=None, progress=False)[:, cell_dims]
print(
    se.judge_embedding(
        short_train, short_test, train_cells.obs[LABELS], test_cells.obs[LABELS]
    )
    .round(3)
    .to_string()
)

# %% [markdown]
# **2. What the dataset classifier learned.**
# The dataset token's output feeds a classifier that was trained to name each cell's batch (`model.dataset_classifier`, applied to `encode(...).dataset_state`).
# How often does it name the right batch for the held-out cells?
# Compare with the kNN accuracy of the batch from the dataset embedding in the table above.

# %% tags=["hide-cell"]
# Solution. The classifier is the dataset token's own training signal: where it is near chance, the token has not
# found much batch signal to hold, which is what the kNN accuracies of the dataset embedding say too.
held_batches = se.SEBatches(
    test_cells, model, batch_size=512, dataset_col=BATCH, seed=2
)
correct = total = 0
with torch.no_grad():
    for held in held_batches:
        state = model.encode(
            held["sentence_genes"], held["sentence_values"]
        ).dataset_state
        guess = model.dataset_classifier(state).argmax(-1)
        correct += int((guess == held["dataset"]).sum())
        total += len(guess)
print(f"dataset classifier accuracy on held-out cells: {correct / total:.3f}")

# %% [markdown]
# **3. Read the soft bins.**
# Plot the bin weights of the *trained* model over the range of values its sentences contain (use `model.soft_bins`).
# How many bins does it use, and where are the boundaries between them?

# %% tags=["hide-cell"]
# Solution. Print which bins ever carry the largest weight. A small, briefly trained SE often lets one bin win
# over the whole range of values: its expression encoding then varies smoothly within that bin's mixture rather
# than switching bins, and most bins go unused.
grid = torch.linspace(0, float(sentence_values.max()), 200)
with torch.no_grad():
    trained_bins = model.soft_bins(grid[None, :])[0]
fig, ax = plt.subplots(figsize=(7, 3))
ax.stackplot(grid.numpy(), trained_bins.T.numpy(), colors=BIN_COLOURS)
ax.set(xlabel="expression value", ylabel="bin weight", title="Soft bins after training")
plt.show()
print("bins that win somewhere:", sorted(set(trained_bins.argmax(-1).tolist())))

# %% [markdown]
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
