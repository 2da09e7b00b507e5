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
# # Single-cell data and AnnData
#
# A virtual cell is trained on tables of numbers, and before building one you should be able to open such a table and read it.
# This chapter loads a real CRISPR screen, about twenty thousand cells in which one gene each was disrupted, and walks through it the way an analyst does on day one.
# We look at how the data are stored (an AnnData object around a sparse count matrix), check their quality, normalize and log-transform them exactly as the Virtual Cell Challenge's evaluator does, and draw the usual PCA and UMAP maps.
# Then we ask the question the whole book is about: which cells were perturbed, and what changed in them?
# The answer holds a few surprises that a model builder must know about.

# %% [markdown]
# ```{admonition} Objectives and prerequisites
# :class: tip
# After this chapter you will be able to:
# - load a perturbation dataset into an AnnData object, navigate its `X`, `obs`, `var`, `obsm` and `uns`, and explain what the book's loader checks;
# - read a sparse CSR count matrix and compute on it without making it dense;
# - run quality control, then normalize for library size and apply log1p as the challenge's evaluator does;
# - select highly variable genes, run PCA and UMAP with scanpy, and say what these maps do and do not show;
# - measure the perturbed gene's own expression and the downstream response of other genes against control cells.
#
# **Prerequisites:** [chapter 1](01_central_dogma.ipynb) (UMI counts, capture, knockout versus CRISPRi), Python with NumPy and a little pandas.
# ```

# %%
import sys
import warnings

if "google.colab" in sys.modules:  # On Colab only: install the book's library.
    import subprocess

    PACKAGE = "vcell-lib @ git+https://github.com/virtual-cell-book/virtual-cell-book"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PACKAGE], check=True)

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from matplotlib.patches import Rectangle
from scipy import stats

from vcell_lib.data import (
    CONTROL,
    PERT,
    load_papalexi2021,
    load_perturbation_data,
    normalize_log1p,
    pseudobulk,
)
from vcell_lib.env import by_mode, set_seed, versions
from vcell_lib.plotting import PALETTE, style

rng = set_seed(0)
style()
# VCELL_FAST=1 (the tests) embeds a subsample of the cells in the UMAP.
MAX_UMAP_CELLS = by_mode(full=30_000, fast=3_000)
versions()

# %% [markdown]
# ## The data: a CRISPR screen in immune cells
#
# Our data come from {cite}`papalexi2021`.
# The cells are THP-1 cells, a human cell line derived from a leukemia of monocytes (a kind of white blood cell).
# They were treated with interferon-gamma (IFN-γ), a signalling protein that immune cells release during an infection.
# IFN-γ binds a receptor on the cell surface, made of the proteins IFNGR1 and IFNGR2.
# Each receptor chain carries a kinase, an enzyme that attaches phosphate groups to proteins and so switches them on or off: JAK1 sits on IFNGR1 and JAK2 on IFNGR2.
# Together they activate the {term}`transcription factor` STAT1, which switches on hundreds of {term}`interferon-stimulated genes <interferon-stimulated gene>`.
# The study asked which genes control PD-L1, a protein that tumours use to switch off immune attacks and that IFN-γ induces.
#
# Each cell received one {term}`guide RNA` that makes Cas9 cut one of 26 genes of this pathway and of related regulators, or a guide that targets nothing (a {term}`non-targeting control`).
# Of the two kinases only JAK2 was targeted.
# Only 25 of the targets have cells here: the guides against CD274, the gene that encodes PD-L1, were barely detected.
# This is a CRISPR **{term}`knockout`** screen, not CRISPRi: remember from [chapter 1](01_central_dogma.ipynb) that a knockout cuts the gene so that no functional protein is made, but may leave the mRNA.
# The method, ECCITE-seq, read each cell's transcriptome, its guide and a few surface proteins; we use the transcriptome and the guide.
#
# The book ships a compact version of the data: all 20,729 cells, but only 299 of the thousands of genes measured.
# The packagers kept 290 genes drawn at random, plus nine of the targeted genes (the last nine columns), which keeps the file at 3.6 MB.
# The Virtual Cell Challenge's data pose the same problem at full scale ({ref}`the last section <sec-challenge-data>` shows how to load them).

# %% [markdown]
# ## An AnnData object, piece by piece
#
# Single-cell data in Python live in an {term}`AnnData` object ("annotated data") {cite}`virshup2024`, the format that scanpy {cite}`wolf2018` and the challenge use.
# `load_papalexi2021` reads the shipped file and returns it in the book's standard form.

# %%
adata = load_papalexi2021()
print(adata)

# %% [markdown]
# An AnnData is a matrix with labelled rows and columns, plus room for everything else we know about them.
# The figure shows its parts for our data.

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(8.5, 4.4))
ax.set(xlim=(0, 10), ylim=(0, 6.2))
ax.axis("off")


def box(x, y, w, h, color, title, text, **kw):
    ax.add_patch(Rectangle((x, y), w, h, facecolor=color, edgecolor="black", lw=1))
    ax.text(x + w / 2, y + h / 2, f"{title}\n{text}", ha="center", va="center", **kw)


n_grna = adata.obsm["grna_counts"].shape[1]
box(
    2.5,
    0.5,
    4.0,
    3.6,
    "#c6dbef",
    "X",
    f"{adata.n_obs:,} cells\n× {adata.n_vars} genes\nraw UMI counts\n(sparse CSR)",
    fontsize=10,
)
box(
    2.5,
    4.4,
    4.0,
    1.1,
    "#fdd0a2",
    "var",
    f"one row per gene ({adata.n_vars})\nindex: var_names (gene symbols)",
    fontsize=9,
)
box(
    0.1,
    0.5,
    2.2,
    3.6,
    "#c7e9c0",
    "obs",
    "one row per cell\nindex: obs_names\n\ntarget_gene\nbatch\ncell_type\ngrna, ...",
    fontsize=9,
)
box(
    6.7,
    0.5,
    1.5,
    3.6,
    "#dadaeb",
    "obsm",
    f'"grna_counts"\n{adata.n_obs:,} × {n_grna}\n(guide UMIs)',
    fontsize=8.5,
)
box(8.4, 4.4, 1.5, 1.1, "#f0f0f0", "uns", "a dict:\nsource, ...", fontsize=8.5)
# One cell is one row across obs, X and obsm; one gene is one column of X and one row of var.
ax.add_patch(
    Rectangle((0.1, 0.75), 8.1, 0.16, color=PALETTE["perturbed"], alpha=0.5, lw=0)
)
ax.text(8.3, 0.83, "one cell", color=PALETTE["perturbed"], va="center", fontsize=9)
ax.add_patch(
    Rectangle((6.2, 0.5), 0.16, 5.0, color=PALETTE["prediction"], alpha=0.5, lw=0)
)
ax.text(6.28, 5.65, "one gene", color=PALETTE["prediction"], ha="center", fontsize=9)
ax.set_title("The parts of an AnnData: everything is indexed by cell or by gene")
plt.show()

# %% [markdown]
# - `X` is the data matrix: one row per cell, one column per gene, each entry the number of {term}`UMIs <UMI>` (mRNA molecules) of that gene captured from that cell.
# - `obs` is a pandas DataFrame with one row per cell ("observation"): its labels and measurements.
# - `var` is a DataFrame with one row per gene ("variable"); here only its index, the gene names, is used.
# - `obsm` holds multi-column per-cell arrays: here the UMI counts of each of the 110 guides in each cell; later, PCA and UMAP coordinates.
# - `uns` ("unstructured") is a dictionary for anything else.
#
# Rows of `X`, `obs` and `obsm` always line up, and so do the columns of `X` and the rows of `var`: slicing an AnnData slices all of them together.

# %%
print(adata.obs[["target_gene", "grna", "batch", "cell_type"]].head())
print("\nfirst genes:", list(adata.var_names[:6]))
print("last genes: ", list(adata.var_names[-9:]))

control = (adata.obs[PERT] == CONTROL).to_numpy()
print(f"\ncontrol cells ({CONTROL!r}): {control.sum():,}")
print(f"targets with cells: {adata.obs[PERT].nunique() - 1}")

assert adata.shape == (20_729, 299)
assert control.sum() == 2_386
assert adata.var_names.is_unique and adata.obs_names.is_unique
assert set(adata.var_names[-9:]) < set(
    adata.obs[PERT]
)  # the last nine genes are targets

# %% [markdown]
# Each cell's perturbation is the column `target_gene`, and the control label is `non-targeting`, as in the challenge's data.
# The columns `grna` (which of the guides against the target the cell received; there are about four guides per target) and `batch` will matter later.
# Here `batch` is the biological replicate, one of three independent runs of the experiment.
#
# ### What the loader checks
#
# Every dataset names things differently: one lab calls the perturbation column `gene`, another calls its controls `NTC` or `control`.
# `load_perturbation_data` turns any such file into the book's standard form: it renames the perturbation column to `target_gene` and the control label to `non-targeting`, adds `batch` and `cell_type` columns, and stores `X` as a sparse float32 matrix.
# It also *refuses* data that would silently give wrong results: missing labels, a control label that does not exist, duplicated gene names, or values that are not raw counts.
#
# To see it, we disguise our data as another lab's file and load it the naive way.

# %%
foreign = ad.AnnData(
    X=adata.X,
    obs=pd.DataFrame(
        {
            "gene": adata.obs[PERT].astype(str).replace(CONTROL, "NTC"),
            "replicate": adata.obs["bio_rep"].astype(str),
        },
        index=adata.obs_names,
    ),
    var=pd.DataFrame(index=adata.var_names),
)
try:
    # control is not given, so it defaults to "non-targeting".
    load_perturbation_data(foreign, pert_col="gene")
except ValueError as error:
    print("ValueError:", error)
    caught = error
assert "'non-targeting' not found" in str(caught)

# %% [markdown]
# Without the check, the loader would have found zero control cells, and every later comparison against controls would have been empty or wrong.
# The message lists the labels it found, so the fix is one argument:

# %%
fixed = load_perturbation_data(
    foreign, pert_col="gene", control="NTC", batch_col="replicate"
)
print(fixed.obs[[PERT, "batch", "cell_type"]].head(3))
print(fixed.uns["perturbation_data"])
assert (fixed.obs[PERT] == CONTROL).sum() == control.sum()

# %% [markdown]
# The loader never overwrites what you already have: existing `batch` and `cell_type` columns are kept, and a clash between an existing column and the one it would write is an error, not a silent replacement.
# One clash is easy to miss: a file whose controls are labelled partly `NTC` and partly `non-targeting`.
# With `control="NTC"` both kinds of cells would quietly end up in one control group, so the loader asks you to decide:

# %%
mixed = foreign.copy()
mixed.obs["gene"] = mixed.obs["gene"].astype(str)
mixed.obs.loc[mixed.obs_names[:5], "gene"] = (
    CONTROL  # five cells carry the book's label
)
try:
    load_perturbation_data(mixed, pert_col="gene", control="NTC")
except ValueError as error:
    print("ValueError:", error)
    caught = error
assert "holds both 'NTC'" in str(caught)

# %% [markdown]
# ## The count matrix is sparse
#
# Most entries of a single-cell count matrix are zero: a cell's few captured molecules are spread over thousands of genes.
# Storing all those zeros wastes memory, so `X` is a {term}`sparse matrix` in the {term}`CSR` (compressed sparse row) format.
# CSR keeps three arrays: `data`, the non-zero values row by row; `indices`, the column of each value; and `indptr`, where each row starts in the first two.
# Row $i$ is `data[indptr[i]:indptr[i+1]]`, in columns `indices[indptr[i]:indptr[i+1]]`.
# A tiny example with three cells and five genes:

# %%
tiny_dense = np.array(
    [
        [0, 3, 0, 0, 1],
        [0, 0, 0, 0, 0],
        [2, 0, 0, 7, 0],
    ],
    dtype=np.float32,
)
tiny = sp.csr_matrix(tiny_dense)
print("data   ", tiny.data)
print("indices", tiny.indices)
print("indptr ", tiny.indptr)

# Rebuild row 2 by hand from the three arrays.
start, stop = tiny.indptr[2], tiny.indptr[3]
row = np.zeros(5, dtype=np.float32)
row[tiny.indices[start:stop]] = tiny.data[start:stop]
assert np.array_equal(row, tiny_dense[2])
# The empty cell costs nothing but one repeated entry of indptr.
assert tiny.indptr[1] == tiny.indptr[2]

# %% [markdown]
# Reading a row (a cell) is a contiguous slice, which is why CSR suits single-cell data: models read cells.
# Reading a column (a gene) means searching every row; when you need many genes at once, convert to the column-major twin, CSC, with `.tocsc()`.
# Now the real matrix:

# %%
X = adata.X
n_entries = adata.n_obs * adata.n_vars
sparse_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
dense_bytes = n_entries * X.dtype.itemsize
print(f"type {type(X).__name__}, dtype {X.dtype}")
print(f"non-zero entries: {X.nnz:,} of {n_entries:,} ({X.nnz / n_entries:.1%})")
print(f"memory: sparse {sparse_bytes / 1e6:.1f} MB, dense {dense_bytes / 1e6:.1f} MB")
values = X.data
print(
    f"non-zero values equal to 1: {np.mean(values == 1):.0%}, at most 3: {np.mean(values <= 3):.0%}, largest: {values.max():.0f}"
)
assert sp.issparse(X) and X.format == "csr"
assert np.all(values == np.round(values))  # counts are whole numbers
assert 0.2 < X.nnz / n_entries < 0.25

# %% [markdown]
# Only 22% of the entries are non-zero here, and half of those are a single molecule.
# Each stored value costs 8 bytes (a 4-byte float and a 4-byte column index), against 4 bytes for every entry of a dense float32 matrix, so sparse storage wins whenever fewer than half of the entries are non-zero.
# Full transcriptomes contain many genes that are rarely detected, so their matrices are usually sparser still.
#
# The values are integers because each one counts molecules: the {term}`UMI` attached to each captured mRNA lets the pipeline count each molecule once, however many times it was copied before sequencing {cite}`islam2014,zheng2017`.
# They are stored as float32, which represents every integer up to $2^{24}$ exactly.
# Integer counts are what the count models of chapter 3 expect, and what the loader checks.
#
# Sparse matrices support the operations we need without ever becoming dense: sums and means along an axis, products with other matrices, and elementwise functions that keep zeros at zero (applied to `.data` only).

# %%
total_counts = np.asarray(X.sum(axis=1)).ravel()  # one number per cell
genes_detected = np.diff(X.indptr)  # non-zero entries per row, read from indptr
print(
    f"UMIs per cell: median {np.median(total_counts):.0f}, min {total_counts.min():.0f}, max {total_counts.max():.0f}"
)
print(
    f"genes detected per cell: median {np.median(genes_detected):.0f} of {adata.n_vars}"
)
# The packagers stored the same totals in obs: a free consistency check.
assert np.allclose(total_counts, adata.obs["n_counts_299genes"])

# %% [markdown]
# ## Quality control
#
# Not every barcode in a droplet experiment is a healthy single cell.
# Some droplets captured no cell, only stray "ambient" RNA floating in the suspension; some captured two cells (a {term}`doublet`); some captured a dying cell whose RNA leaked out.
# {term}`Quality control <quality control>` (QC) uses a few per-cell summaries to spot them {cite}`luecken2019`:
#
# - the total UMI count per cell (its {term}`library size`): very low for empty droplets and broken cells, unusually high for doublets;
# - the number of genes detected: low for empty droplets;
# - the fraction of counts from mitochondrial genes (names starting with `MT-`): high in dying cells, whose cytoplasmic mRNA leaks out while the mitochondria's RNA stays.
#
# scanpy computes these in one call.

# %%
sc.pp.calculate_qc_metrics(adata, percent_top=None, log1p=False, inplace=True)
qc = adata.obs[["total_counts", "n_genes_by_counts"]]
print(qc.groupby(adata.obs["batch"], observed=True).median())
print(
    "\ncells per batch:",
    adata.obs["batch"].value_counts().sort_index().to_dict(),
)
assert np.array_equal(adata.obs["n_genes_by_counts"], genes_detected)

# %% tags=["hide-input"]
batches = list(adata.obs["batch"].cat.categories)
batch_colors = dict(zip(batches, ["#9467bd", "#8c564b", "#17becf"]))
fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.4))
for column, ax, bins in (
    ("total_counts", axes[0], np.linspace(0, 800, 61)),
    ("n_genes_by_counts", axes[1], np.arange(0, 150, 3)),
):
    for b in batches:
        ax.hist(
            adata.obs.loc[adata.obs["batch"] == b, column],
            bins=bins,
            histtype="step",
            lw=1.5,
            density=True,
            color=batch_colors[b],
            label=b,
        )
    ax.set(ylabel="density of cells")
axes[0].set(xlabel="UMIs per cell (library size)", title="Library size")
axes[1].set(xlabel="genes detected (of 299)", title="Genes detected")
axes[0].legend(title="batch")
order = np.argsort(total_counts)
axes[2].scatter(
    total_counts[order],
    genes_detected[order],
    s=2,
    alpha=0.3,
    color=PALETTE["control"],
    rasterized=True,
)
axes[2].set(
    xscale="log",
    xlabel="UMIs per cell",
    ylabel="genes detected",
    title="The two summaries agree",
)
plt.tight_layout()
plt.show()

# %% [markdown]
# Library sizes spread over more than an order of magnitude, from 25 to 1,031 UMIs, and the cells of replicate `rep_1` have smaller libraries than those of the other two.
# Such differences between runs that have nothing to do with biology are {term}`batch effects <batch effect>`; chapter 4 shows how to compare perturbed cells with control cells of the same batch.
#
# The totals are small because they count only our 299 genes; over all genes each cell has far more UMIs.
# That also limits QC here: the only mitochondrial gene among the 299 is `MT-ATP8`, one of 13 mitochondrial protein-coding genes, so its fraction is a poor proxy for cell health.
# The packagers already removed low-quality cells (no cell has fewer than 25 UMIs on these genes), so **we keep every cell and every gene**.
# With full data we would drop the outliers of library size and genes detected, and cells with a high mitochondrial fraction, using permissive thresholds so that unusual but real cells survive {cite}`luecken2019`.
#
# For a perturbation screen, the number of cells per perturbation matters as much as per-cell quality: it sets how precisely we can measure each effect.

# %% tags=["hide-input"]
per_target = pd.crosstab(adata.obs[PERT], adata.obs["batch"])
per_target = per_target.loc[per_target.sum(axis=1).sort_values(ascending=False).index]
fig, ax = plt.subplots(figsize=(10, 3.4))
bottom = np.zeros(len(per_target))
for b in batches:
    ax.bar(
        per_target.index,
        per_target[b],
        bottom=bottom,
        color=batch_colors[b],
        label=b,
        width=0.8,
    )
    bottom += per_target[b].to_numpy()
for tick in ax.get_xticklabels():
    if tick.get_text() == CONTROL:
        tick.set_fontweight("bold")
ax.tick_params(axis="x", rotation=70)
ax.set(ylabel="cells", title="Cells per perturbation, stacked by batch (replicate)")
ax.legend(title="batch")
plt.show()

# %%
n_cells = adata.obs[PERT].value_counts()
print(
    f"cells per target: {n_cells.drop(CONTROL).min()} ({n_cells.drop(CONTROL).idxmin()}) to {n_cells.drop(CONTROL).max():,} ({n_cells.drop(CONTROL).idxmax()})"
)
guides = adata.obs.groupby(PERT, observed=True)["grna"].nunique()
print(
    f"guides per target: {guides.drop(CONTROL).min()} to {guides.drop(CONTROL).max()}"
)
# SPI1: an effect measured on 48 cells is noisy.
assert n_cells.drop(CONTROL).min() == 48
assert (per_target > 0).all().all()  # every perturbation in every replicate
assert total_counts.min() == 25
assert list(adata.var_names[adata.var_names.str.startswith("MT-")]) == ["MT-ATP8"]

# %% [markdown]
# Every target appears in all three replicates, but the numbers are uneven: 48 cells for SPI1, over a thousand for the interferon receptors.
# Guides are not delivered and detected equally well, and a knockout that slows growth leaves fewer descendants: plausibly why MYC, a gene that drives cell division, has only 109 cells.
# The controls are the largest group, 2,386 cells, because every perturbation is compared against them.

# %% [markdown]
# ## Normalization and log1p
#
# Two cells with the same expression program can still yield very different library sizes.
# A droplet captures and converts a varying fraction of its cell's mRNA (the {term}`capture efficiency` of chapter 1), bigger cells hold more mRNA, and dividing cells are bigger.
# In raw counts a cell with twice the library size shows roughly twice the counts for *every* gene, which swamps the biological differences we care about.
# We can check it: across cells, a gene's raw count correlates with the library size.
#
# {term}`Library-size normalization <normalization>` divides each cell's counts by its library size and multiplies by a common target, so that every cell sums to the same total.
# The challenge's evaluator (cell-eval) uses the median library size as the target and then applies $\log(1 + x)$, {term}`log1p`; `normalize_log1p` does the same, and keeps the raw counts in `layers["counts"]`.

# %%
normed = normalize_log1p(adata)  # a new AnnData; adata is unchanged
target = np.median(total_counts)

scaled = normed.X.copy()
scaled.data = np.expm1(scaled.data)  # undo log1p on the non-zeros only
library_after = np.asarray(scaled.sum(axis=1)).ravel()
print(f"target (median library size): {target:.0f} UMIs")
print(
    f"library sizes after normalization: min {library_after.min():.2f}, max {library_after.max():.2f}"
)
# Every cell now sums to the median library size.
assert np.allclose(library_after, target, rtol=1e-4)
assert np.array_equal(normed.layers["counts"].data, adata.X.data)  # raw counts kept
assert normed.X.nnz == adata.X.nnz  # log1p(0) = 0: the zeros stay zeros


def mean_var(matrix):
    """Per-gene mean and variance across cells of a sparse matrix, without densifying."""
    mean = np.asarray(matrix.mean(axis=0)).ravel()
    mean_sq = np.asarray(matrix.multiply(matrix).mean(axis=0)).ravel()
    return mean, mean_sq - mean**2


def correlation_with(matrix, covariate):
    """Pearson correlation of each column of a sparse matrix with a per-cell covariate."""
    centred = covariate - covariate.mean()
    # The centred covariate sums to zero, so the gene means drop out of the covariance
    # and the sparse matrix never needs centring (which would make it dense).
    covariance = matrix.T @ centred / matrix.shape[0]
    _, variance = mean_var(matrix)
    return covariance / np.sqrt(variance * centred.var())


raw_corr = correlation_with(adata.X, total_counts)
log_corr = correlation_with(normed.X, total_counts)
print(
    f"median correlation of a gene with library size: raw {np.median(raw_corr):.2f}, normalized log1p {np.median(log_corr):.2f}"
)
assert np.median(log_corr) < np.median(raw_corr) / 3

# %% [markdown]
# After normalization the genes are nearly uncorrelated with the library size.
# The logarithm then does two jobs.
# It turns fold changes into differences: doubling a gene adds $\log 2 \approx 0.69$ whether it goes from 10 to 20 or from 100 to 200, which is how biologists think about expression changes.
# And it compresses large values, which tames the variance: for counts, the variance grows with the mean, so on the raw scale a few highly expressed genes would dominate any distance between cells.
# The "+1" keeps zeros at zero (and the matrix sparse) and keeps small counts from exploding towards $-\infty$.

# %%
for x in (0, 1, 2, 10, 100, 1000):
    print(f"log1p({x:4d}) = {np.log1p(x):.2f}")

# %% [markdown]
# Let us look at the mean-variance relationship of the 299 genes at each stage.


# %% tags=["hide-input"]
stages = {
    "raw counts": adata.X,
    "normalized counts": scaled,
    "normalized + log1p": normed.X,
}
fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.5))
for ax, (name, matrix) in zip(axes, stages.items()):
    mean, var = mean_var(matrix)
    ax.loglog(mean, var, "o", ms=3, alpha=0.6, color=PALETTE["prediction"])
    ax.set(xlabel="mean across cells", title=name)
    if name == "raw counts":  # the Poisson reference applies to counts only
        grid = np.logspace(np.log10(mean.min()), np.log10(mean.max()), 20)
        ax.loglog(grid, grid, "--", color=PALETTE["control"], label="Poisson")
        ax.legend()
axes[0].set_ylabel("variance across cells")
plt.tight_layout()
plt.show()

# %% [markdown]
# On raw counts the variance grows with the mean, faster than the Poisson line for the highly expressed genes: the {term}`overdispersion` of chapter 1, plus the spread of library sizes.
# Normalization removes the library-size part but keeps the trend; the normalized values are no longer counts, so the Poisson line does not apply to them.
# After log1p the variances span a much narrower range and bend over at high means; the transformation is not perfect (lowly expressed genes still have small variance), but a log with a pseudo-count followed by PCA does as well as more sophisticated transformations in benchmarks {cite}`ahlmanneltze2023`.
#
# Two warnings before moving on.
# First, normalize once: `normalize_log1p` refuses data that are already log-transformed, and the loader refuses data that are not raw counts.

# %%
for attempt, call in (
    ("normalize twice", lambda: normalize_log1p(normed)),
    ("load log1p data as counts", lambda: load_perturbation_data(normed)),
):
    try:
        call()
    except ValueError as error:
        print(f"{attempt}: ValueError: {error}\n")
    else:
        raise AssertionError(f"{attempt} should have been refused")

# %% [markdown]
# Second, the normalization target is part of the data's definition.
# The challenge compares log1p values, so predictions and ground truth must be normalized the same way; another common choice, 10,000 counts per cell, would shift every log value.
# In our 299-gene data the library size is computed from those 299 genes only, so a perturbation that moves one of the few highly expressed genes also rescales all the others a little.
# With the challenge's 18,080 genes this effect is usually much smaller.

# %% [markdown]
# ## Highly variable genes, PCA and UMAP
#
# The classic first look at single-cell data is a two-dimensional map of the cells.
# It takes three steps {cite}`luecken2019`.
#
# 1. Keep the {term}`highly variable genes <highly variable gene>` (HVGs): genes whose variance across cells is large *for their mean*. Most genes vary only by sampling noise, which dilutes any structure. scanpy bins genes by mean expression and ranks them by their dispersion (variance over mean) relative to the other genes of their bin.
# 2. {term}`PCA` on the HVGs, each scaled to unit variance, to get a few dozen directions that capture most of the shared variation.
# 3. A k-nearest-neighbour graph of the cells in PCA space, then {term}`UMAP` {cite}`mcinnes2018`, which lays the graph out in two dimensions so that neighbours stay close.

# %%
sc.pp.highly_variable_genes(normed, n_top_genes=100)
hvg = normed[:, normed.var["highly_variable"]].copy()
# Scaling centres the data, which makes it dense anyway: affordable for 100 genes.
hvg.X = hvg.X.toarray()
sc.pp.scale(hvg, max_value=10)  # each gene: mean 0, variance 1, clipped at 10
sc.tl.pca(hvg, n_comps=30, random_state=0)

variance_ratio = hvg.uns["pca"]["variance_ratio"]
print(
    f"{hvg.n_vars} HVGs; the first 30 PCs explain {variance_ratio.sum():.0%} of their variance"
)
print("variance explained by PC1 to PC10 (%):", np.round(100 * variance_ratio[:10], 1))
top_genes = {}
for pc in (0, 1, 2):
    loadings = hvg.varm["PCs"][:, pc]
    top_genes[pc] = list(hvg.var_names[np.argsort(-np.abs(loadings))[:6]])
    print(f"PC{pc + 1} ({variance_ratio[pc]:.1%}): largest loadings {top_genes[pc]}")
assert {"PLK1", "CDKN3"} <= set(top_genes[0])  # PC1: genes of cell division
assert "PSMB9" in top_genes[2]  # PC3: the interferon response
assert variance_ratio[0] < 0.05  # no component dominates

# %% [markdown]
# Each component explains only a few percent of the variance.
# That is typical of sparse single-cell counts, where sampling noise is large and independent across genes, and here it is made worse by having few genes with few counts each.
# The loadings tell us what the leading components are.
# PC1 is dominated by genes of cell division (PLK1, CDKN3 and CDCA3 are active around mitosis): the largest source of variation among these cells is where they are in the {term}`cell cycle`, not which gene was knocked out.
# PC3 is led by PSMB9 and UBE2L6, two interferon-stimulated genes: that is where the perturbations show up.
#
# Now the neighbour graph and UMAP.
# The map depends on random initialization, so we fix `random_state`.
# In fast mode (the book's tests) we embed a random subsample of the cells.

# %%
if hvg.n_obs > MAX_UMAP_CELLS:
    keep = np.sort(rng.choice(hvg.n_obs, MAX_UMAP_CELLS, replace=False))
    embedded = hvg[keep].copy()
else:
    embedded = hvg
with warnings.catch_warnings():
    # umap-learn imports tqdm's notebook progress bars, which warn when ipywidgets is missing.
    warnings.filterwarnings("ignore", message="IProgress not found")
    # transformer="sklearn": exact neighbours. scanpy's default above 4,096 cells, pynndescent,
    # fails in this environment (scanpy 1.11.5, scipy 1.17: a csr_array has no getnnz).
    # Exact search takes seconds at this size.
    sc.pp.neighbors(embedded, n_neighbors=15, n_pcs=20, transformer="sklearn")
    sc.tl.umap(embedded, random_state=0)

IFN_PATHWAY = ["IFNGR1", "IFNGR2", "JAK2", "STAT1"]
labels = embedded.obs[PERT].astype(str)
embedded.obs["class"] = np.where(
    labels == CONTROL,
    "control",
    np.where(labels.isin(IFN_PATHWAY), "IFN-γ pathway knockout", "other knockout"),
)
print(embedded.obs["class"].value_counts())

# Is the structure real? Check it on the neighbour graph (15 neighbours per cell, in PCA
# space), not on the picture: what share of a group's neighbours belong to the same group?
knn = embedded.obsp["distances"].astype(bool).tocsr()


def neighbour_share(mask):
    """Among the neighbours of the cells in mask, the fraction that are also in mask."""
    return knn[mask].multiply(mask[None, :]).sum() / knn[mask].nnz


groups = {
    "IFN-γ pathway knockouts": (embedded.obs["class"] == "IFN-γ pathway knockout")
}
groups |= {f"batch {b}": embedded.obs["batch"] == b for b in batches}
shares = {}
for name, mask in groups.items():
    mask = mask.to_numpy()
    shares[name] = (mask.mean(), neighbour_share(mask))
    print(
        f"{name}: {shares[name][0]:.0%} of cells, {shares[name][1]:.0%} of their neighbours"
    )
fraction, share = shares["IFN-γ pathway knockouts"]
assert share > 1.5 * fraction
fraction, share = shares["batch rep_1"]
assert share > fraction + 0.05

# %% tags=["hide-input"]
umap = embedded.obsm["X_umap"]
class_colors = {
    "other knockout": "#fdd49e",  # pale: the background
    "control": PALETTE["control"],
    "IFN-γ pathway knockout": PALETTE["perturbed"],
}
fig, axes = plt.subplots(2, 2, figsize=(10, 8.6))
# Draw the cells in a random order, so that no group hides another; in the class panel the
# many "other knockout" cells go underneath, so that controls and pathway knockouts stay visible.
shuffle = rng.permutation(embedded.n_obs)
is_other = embedded.obs["class"].to_numpy()[shuffle] == "other knockout"
others_first = shuffle[np.argsort(~is_other, kind="stable")]
panels = (
    (axes[0, 0], "class", class_colors, "Perturbation class", others_first),
    (axes[0, 1], "batch", batch_colors, "Batch (replicate)", shuffle),
)
for ax, column, colors, title, order in panels:
    labels = embedded.obs[column].to_numpy()[order]
    ax.scatter(
        *umap[order].T,
        s=2,
        c=[colors[label] for label in labels],
        alpha=0.6,
        rasterized=True,
    )
    for name, color in colors.items():  # one legend entry per category
        ax.scatter([], [], color=color, label=name)
    ax.legend(title=column, loc="lower right", fontsize=8)
    ax.set_title(title)
for ax, gene, note in (
    (axes[1, 0], "PSMB9", "interferon-stimulated"),
    (axes[1, 1], "PLK1", "cell division"),
):
    values = normed[embedded.obs_names, gene].X.toarray().ravel()
    order = np.argsort(values)
    points = ax.scatter(
        *umap[order].T, s=2, c=values[order], cmap="viridis", rasterized=True
    )
    fig.colorbar(points, ax=ax, label="log1p expression", shrink=0.8)
    ax.set_title(f"{gene} ({note})")
for ax in axes.ravel():
    ax.set(xticks=[], yticks=[], xlabel="UMAP 1", ylabel="UMAP 2")
    ax.grid(False)
plt.tight_layout()
plt.show()

# %% [markdown]
# The map shows two real features.
# Many cells knocked out for the IFN-γ receptor, JAK2 or STAT1 gather in one region, where PSMB9 is low: they failed to respond to interferon.
# The rest of these cells are scattered among the controls, as expected if in some cells the knockout failed (we come back to this below).
# And the dividing cells, marked by PLK1, form their own lobe, whatever their perturbation.
# The batches are not perfectly mixed either: the neighbour counts above show that cells of `rep_1` have more neighbours from their own batch than their share, and part of the map is dominated by that replicate.
#
# What the map does *not* show matters as much.
# It cannot tell us much about the other 21 knockouts: they share one colour, and a knockout with a modest signature of its own could shift its cells within the cloud without our noticing.
# Whatever their effects, none is large enough to stand out next to the cell cycle and the pathway knockouts; measuring them gene by gene, below, shows that two of them (SMAD4 and IRF1) do have signatures.
# Distances on a UMAP are not meaningful beyond the nearest neighbours, and the size and shape of a cloud depend on the settings; treat the picture as a sketch of the neighbour graph, never as a measurement.
# That is why we check claims on the data themselves, as we did with the neighbour counts, and why the challenge scores predictions on gene-level statistics, not on maps.

# %% [markdown]
# ## Finding the targeted gene
#
# Nine of the targets are among the 299 measured genes, so we can ask directly: in the cells whose guide targets gene $g$, how much of $g$'s mRNA is left?
# We compare the mean normalized expression of $g$ in those cells with that in control cells; their ratio is the remaining-mRNA ratio (1 means no change, 0 means the mRNA is gone).
# In a CRISPRi screen the same number measures the strength of the {term}`knockdown`; in a knockout screen it measures only what happened to the mRNA, not to the protein.
# The table adds a 95% confidence interval for the ratio, obtained by resampling the cells with replacement (a bootstrap), the fraction of cells in which the gene was detected at all, and the p-value of a rank test (Mann-Whitney) of whether the two groups differ; chapter 3 discusses such tests.

# %%
measured_targets = [
    g for g in adata.obs[PERT].cat.categories if g != CONTROL and g in adata.var_names
]
print(measured_targets)
assert len(measured_targets) == 9

rows = []
for gene in measured_targets:
    column = scaled[:, normed.var_names.get_loc(gene)].toarray().ravel()
    in_control, in_target = (
        column[control],
        column[(adata.obs[PERT] == gene).to_numpy()],
    )
    boot = [
        rng.choice(in_target, in_target.size).mean()
        / rng.choice(in_control, in_control.size).mean()
        for _ in range(300)
    ]
    rows.append(
        {
            "target": gene,
            "cells": in_target.size,
            "control mean": in_control.mean(),
            "knockout mean": in_target.mean(),
            "ratio": in_target.mean() / in_control.mean(),
            "ratio 95% CI": tuple(np.round(np.percentile(boot, [2.5, 97.5]), 2)),
            "detected, control": np.mean(in_control > 0),
            "detected, knockout": np.mean(in_target > 0),
            "p (Mann-Whitney)": stats.mannwhitneyu(in_target, in_control).pvalue,
        }
    )
remaining = pd.DataFrame(rows).set_index("target").sort_values("ratio")
with pd.option_context("display.precision", 2, "display.width", 140):
    print(remaining)
assert (remaining["ratio"] < 0.8).all()  # every measured target falls...
assert (remaining["ratio"] > 0.2).all()  # ...but none disappears
assert set(remaining.index[:2]) == {"STAT1", "JAK2"}
assert remaining["ratio"].iloc[2:].between(0.5, 0.8).all()
assert (remaining["p (Mann-Whitney)"] < 1e-6).all()

# %% tags=["hide-input"]
fig, axes = plt.subplots(3, 3, figsize=(10, 8), sharey=True)
for ax, gene in zip(axes.ravel(), remaining.index):
    column = normed[:, gene].X.toarray().ravel()
    for mask, color, name in (
        (control, PALETTE["control"], "control"),
        (
            (adata.obs[PERT] == gene).to_numpy(),
            PALETTE["perturbed"],
            f"{gene} knockout",
        ),
    ):
        x = np.sort(column[mask])
        ax.step(
            x, np.arange(1, x.size + 1) / x.size, where="post", color=color, label=name
        )
    ax.set_title(f"{gene}: ratio {remaining.loc[gene, 'ratio']:.2f}")
    ax.legend(fontsize=7, loc="lower right")
for ax in axes[:, 0]:
    ax.set_ylabel("fraction of cells ≤ x")
for ax in axes[-1]:
    ax.set_xlabel("log1p normalized expression")
fig.suptitle("Each target gene, in its own knockout cells and in control cells", y=1.0)
plt.tight_layout()
plt.show()

# %% [markdown]
# Each panel is a cumulative distribution: the curve at $x$ is the fraction of cells expressing the gene at most at level $x$, and the jump at zero is the share of cells where it was not detected.
# A curve shifted to the left or up means lower expression.
#
# Every measured target does fall, and all the differences are far beyond chance (the p-values are tiny).
# But look at the sizes.
# Apart from STAT1 and JAK2, knocked-out cells keep about half to three quarters of the control level, and the curves overlap heavily.
# This is the knockout lesson of chapter 1 in real data: Cas9 cuts the gene so that no functional *protein* is made, while the mRNA is only partly removed, by {term}`nonsense-mediated decay` of frameshifted transcripts; edits that keep the reading frame and unedited cells leave it untouched.
# The original study found that many cells carrying a targeting guide show no perturbation at all, and built a method, mixscape, to separate them {cite}`papalexi2021`.
#
# STAT1 and JAK2 fall much further, to about a quarter, and there is a second reason.
# Both genes are themselves switched on by interferon, so once the pathway is broken their transcription drops as well.
# We can check it: knocking out the receptor IFNGR1, which leaves the STAT1 and JAK2 genes intact, lowers them too.

# %%
bulk = pseudobulk(normed)  # mean log1p expression per perturbation
delta = bulk.to_df() - bulk.to_df().loc[CONTROL]  # effect vectors: minus the controls
delta = delta.drop(index=CONTROL)
print(delta.loc[["STAT1", "JAK2", "IFNGR1", "IFNGR2"], ["STAT1", "JAK2"]].round(2))
assert delta.loc["IFNGR1", "STAT1"] < -0.5 and delta.loc["IFNGR1", "JAK2"] < -0.4

# %% [markdown]
# So for STAT1 and JAK2, the drop of their own mRNA is partly a *downstream* effect of losing the pathway.
# In a knockout screen the target's mRNA is an unreliable readout of whether the perturbation worked.
# In the challenge's CRISPRi data it is a direct one: CRISPRi blocks transcription, so the target's own mRNA falls (chapter 1), and predicting that drop is the first thing a model must get right.
#
# ### The downstream signature
#
# The table `delta` computed above is the effect of each perturbation on every gene: the mean log1p expression in its cells minus that in the control cells.
# Each row is a perturbation's {term}`effect vector`, built from {term}`pseudobulks <pseudobulk>`: the change a virtual cell must predict.
# The challenge does not score this table directly (chapters 5 to 7).
# A submission consists of predicted single cells: the mean absolute error compares their pseudobulks with the real ones, the perturbation discrimination score compares their deltas, and the differential-expression score runs statistical tests on the predicted cells themselves.
#
# How large is a meaningful delta?
# Split the control cells into two random halves and compute the same difference between them: anything of that size is noise.
# The noise shrinks as groups grow (exercise 3), so a fair yardstick divides each difference by its standard error, which gives a $z$-score.
# For groups of $n_a$ and $n_b$ cells in which the gene has variances $s_a^2$ and $s_b^2$, Welch's standard error is $\sqrt{s_a^2/n_a + s_b^2/n_b}$.
# Each group keeps its own variance, so a small knockout group that is more variable than the 2,386 controls gets a wider yardstick; pooling the two variances into one, as the classic $t$ test does, would let the controls speak for it and inflate $z$.
# Welch has the opposite weakness: a gene that happens to be zero in all 48 cells of a group has no variance *there*, and its standard error would be absurdly small.
# So we use the larger of Welch's and the pooled standard error.
# Chapters 3 and 7 treat noise and tests properly; here we only need a conservative threshold, $|z| > 5$, which a gene with no real change passes by chance with probability below one in a million under a normal approximation.
# The approximation is rough for small groups and rarely detected genes, one more reason to set the threshold high.


# %%
def mean_difference(matrix, rows_a, rows_b):
    """Per gene: mean over rows_a minus mean over rows_b, and that difference in standard errors."""
    n_a, n_b = len(rows_a), len(rows_b)
    mean_a, var_a = mean_var(matrix[rows_a])
    mean_b, var_b = mean_var(matrix[rows_b])
    var_a, var_b = var_a * n_a / (n_a - 1), var_b * n_b / (n_b - 1)  # sample variances
    welch = np.sqrt(var_a / n_a + var_b / n_b)
    pooled_variance = ((n_a - 1) * var_a + (n_b - 1) * var_b) / (n_a + n_b - 2)
    pooled = np.sqrt(pooled_variance * (1 / n_a + 1 / n_b))
    # Welch guards against a variable small group, pooling against one with no variance.
    standard_error = np.maximum(welch, pooled)
    difference = mean_a - mean_b
    z = difference / np.where(standard_error > 0, standard_error, np.inf)
    return difference, z


halves = rng.permutation(np.flatnonzero(control))
half_a, half_b = halves[: halves.size // 2], halves[halves.size // 2 :]
noise, noise_z = mean_difference(normed.X, half_a, half_b)
print(
    f"two halves of the controls ({half_a.size} cells each): largest |delta| {np.abs(noise).max():.3f}, largest |z| {np.abs(noise_z).max():.1f}"
)
assert np.abs(noise_z).max() < 5

z_scores = pd.DataFrame(
    [
        mean_difference(
            normed.X, np.flatnonzero(normed.obs[PERT] == p), np.flatnonzero(control)
        )[1]
        for p in delta.index
    ],
    index=delta.index,
    columns=delta.columns,
)
strength = (z_scores.abs() > 5).sum(axis=1).sort_values(ascending=False)
print(f"\ngenes with |z| > 5, per knockout (of {normed.n_vars}):")
print(", ".join(f"{p} {n}" for p, n in strength.items()))
print(
    f"expected by chance in all {delta.size:,} tests: {delta.size * 2 * stats.norm.sf(5):.3f}"
)

assert set(strength.index[:4]) == set(IFN_PATHWAY)
assert strength[IFN_PATHWAY].min() >= 30
assert set(strength.index[4:6]) == {"SMAD4", "IRF1"}
assert strength[["SPI1", "MYC"]].max() == 0
for target in ["CMTM6", "NFKBIA", "STAT3", "TNFRSF14", "UBE2L6"]:
    assert list(z_scores.columns[z_scores.loc[target].abs() > 5]) == [target]
assert (z_scores.loc["IRF1", ["PSMB9", "JAK2"]] < -5).all()
assert (strength <= 3).sum() >= 15  # most knockouts barely move these genes
interferon_genes = ["STAT1", "PSMB9", "UBE2L6", "JAK2"]
assert (delta.loc[IFN_PATHWAY, interferon_genes] < -0.4).all().all()
assert (delta.loc[IFN_PATHWAY, "NFKBIA"] > 0.2).all()
assert (delta.loc["SMAD4", ["FN1", "CLDN23"]] < -0.4).all()
signature_corr = np.corrcoef(delta.loc[IFN_PATHWAY].to_numpy())
print(
    f"\ncorrelation between the four pathway signatures: at least {signature_corr.min():.2f}"
)
assert signature_corr.min() > 0.7

# %% tags=["hide-input"]
responders = delta.abs().max().sort_values(ascending=False).index[:14]
shown = delta.loc[strength.index, responders]
limit = np.abs(shown.to_numpy()).max()
fig, ax = plt.subplots(figsize=(8, 7.5))
image = ax.imshow(shown, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
ax.set_xticks(range(len(responders)), responders, rotation=60, ha="right")
ax.set_yticks(range(len(shown)), [f"{p} ({n_cells[p]})" for p in shown.index])
ax.set(
    xlabel="measured gene",
    ylabel="knocked-out gene (cells)",
    title="Effect of each knockout: mean log1p change vs control",
)
ax.grid(False)
fig.colorbar(image, ax=ax, label="delta (log1p)", shrink=0.7)
plt.show()

# %% [markdown]
# The heat map shows the knockouts (rows, ordered by how many genes pass $|z| > 5$) against the 14 genes that respond most.
# Four knockouts stand out with one shared signature: IFNGR1, IFNGR2, JAK2 and STAT1, four links of the chain from the receptor to the transcription factor.
# In their cells the interferon-stimulated genes among our 299 fall together: STAT1, PSMB9 (a subunit of the "immunoproteasome", which cuts proteins into the pieces that a cell displays to immune cells), UBE2L6 and JAK2.
# A few genes move the other way: NFKBIA, for instance, rises in all four.
# The four signatures are almost the same (correlations above 0.9) whichever step of the chain is broken, as expected when each step is needed to pass the signal on.
# (The darkest square, where STAT1's row meets STAT1's column, is STAT1's own mRNA in its knockout: the target effect of the previous section.)
#
# A second tier has signatures of its own.
# SMAD4 is the transcription factor of another signalling pathway, that of TGF-β, and FN1 (fibronectin) is a classic TGF-β target: SMAD4 knockout lowers FN1 and CLDN23 among others.
# IRF1 is a transcription factor that STAT1 switches on and that in turn drives genes such as PSMB9 and PD-L1, so its knockout removes one branch of the interferon response: it lowers a smaller set of genes that includes PSMB9 and JAK2.
# SPI1 and MYC show some large-looking deltas in the heat map, but on 48 and 109 cells none of them passes the threshold: they may be real, and they may be noise.
# Most knockouts change at most a few of our 299 genes, and for five of them (CMTM6, NFKBIA, STAT3, TNFRSF14 and UBE2L6) the single gene that passes is the target itself: the knockout is visible on its own mRNA and on nothing else we measured.
# Remember that we see only 299 genes: a perturbation that looks silent here may move genes we did not measure.
#
# This is the picture a virtual cell must reproduce: for most perturbations, small or no changes; for a few, a coordinated shift of many genes, shared by perturbations that act in the same pathway.

# %% [markdown]
# (sec-challenge-data)=
# ## The challenge data
#
# The Virtual Cell Challenge's training data follow the same standard at full scale {cite}`roohani2025`: 221,273 H1 human embryonic stem cells × 18,080 genes, raw UMI counts in a CSR matrix, with `obs` columns `target_gene` (controls are `non-targeting`, 38,176 cells), `guide_id` and `batch`.
# The perturbations are CRISPRi knockdowns of 150 training genes; 50 more are held out for validation and 100 for the final test.
# The file is far too large to ship with the book; on Colab (or any machine with internet), `load_vcc_training` downloads the challenge's public support set once, caches it, and returns it in the book's standard form:
#
# ```python
# from vcell_lib.data import load_vcc_training, normalize_log1p
#
# vcc = load_vcc_training()  # or load_vcc_training("path/to/adata_Training.h5ad")
# print(vcc)  # 221,273 cells x 18,080 genes
# print(vcc.obs[["target_gene", "guide_id", "batch"]].head())
# vcc_log = normalize_log1p(vcc)  # as the evaluator does: median library size, then log1p
# ```
#
# The download is not yet pinned to a checksum, so the loader warns that it cannot verify it.
# Everything in this chapter applies unchanged, with one practical difference: size.

# %%
challenge_cells, challenge_genes = 221_273, 18_080
dense_gb = challenge_cells * challenge_genes * 4 / 1e9
print(f"challenge X as a dense float32 matrix: {dense_gb:.1f} GB")
assert 15 < dense_gb < 17

# %% [markdown]
# Never call `.toarray()` on the whole matrix: select cells or genes first, and compute sums and means on the sparse matrix, as we did above.

# %% [markdown]
# ## Summary
#
# - An AnnData object holds a cells × genes matrix `X` with per-cell annotations (`obs`), per-gene annotations (`var`), per-cell arrays (`obsm`), extra layers and a free dictionary (`uns`), all kept aligned.
# - `load_perturbation_data` standardizes a perturbation dataset (`target_gene`, `non-targeting`, `batch`, `cell_type`, raw counts in CSR) and refuses inputs that would give silently wrong answers.
# - Counts are sparse integers; CSR stores the non-zeros row by row (`data`, `indices`, `indptr`), which makes reading cells cheap; compute on it without densifying.
# - Quality control looks at library size, genes detected and mitochondrial fraction per cell, and at cells per perturbation; library sizes differ between cells and batches for technical reasons.
# - Normalizing to the median library size and applying log1p, as the challenge's evaluator does, removes the library-size effect, keeps zeros sparse and tames the variance.
# - HVGs, PCA and UMAP give a first map: here the cell cycle dominates and the IFN-γ pathway knockouts form their own region; maps are sketches, claims are checked on the data.
# - In this knockout screen the target's mRNA falls only partly; the effect shows in downstream genes: four pathway knockouts share one interferon signature, most others barely differ from the controls.

# %% [markdown]
# ## Exercises
#
# **1. Sparse by hand.**
# Using only `indptr`, `indices` and `data` of `adata.X` (no scanpy), compute for every cell the number of detected genes and the library size, and check them against the QC columns of `adata.obs`.
# Hint: `np.add.reduceat` sums consecutive slices of an array.

# %% tags=["hide-cell"]
# Solution. Row i occupies data[indptr[i]:indptr[i+1]], so its length is the number of
# detected genes and its sum is the library size. (reduceat needs non-empty rows: no cell is empty.)
X = adata.X
detected_by_hand = np.diff(X.indptr)
library_by_hand = np.add.reduceat(X.data, X.indptr[:-1])
assert np.array_equal(detected_by_hand, adata.obs["n_genes_by_counts"])
assert np.allclose(library_by_hand, adata.obs["total_counts"])
print("detected genes and library sizes match the QC columns")

# %% [markdown]
# **2. Normalize without scanpy.**
# Reproduce `normalize_log1p` with sparse operations: scale each row of the raw counts to the median library size, then apply log1p to the non-zero values only.
# Why is it important not to apply `np.log1p` to a dense copy of the challenge's matrix?

# %% tags=["hide-cell"]
# Solution. Multiplying by a diagonal matrix on the left scales the rows; log1p(0) = 0, so the
# zeros can stay implicit. A dense copy of the challenge's X would need about 16 GB.
counts = adata.X
library = np.asarray(counts.sum(axis=1)).ravel()
by_hand = sp.diags(np.median(library) / library) @ counts
by_hand = sp.csr_matrix(by_hand)
by_hand.data = np.log1p(by_hand.data)
assert abs(by_hand - normed.X).max() < 1e-5
print("matches normalize_log1p")

# %% [markdown]
# **3. How many cells does an effect need?**
# The noise floor above used two halves of about 1,200 control cells.
# Repeat it with two random groups of 50 control cells and of 500 control cells (several times each).
# How does the largest |delta| change, and what does it mean for SPI1, with 48 cells?

# %% tags=["hide-cell"]
# Solution. The noise in a mean falls like 1/sqrt(cells): ten times more cells, about three
# times less noise. With ~50 cells, changes of a few tenths in log1p can appear by chance on
# some gene, so SPI1's apparent effects must be read with care (chapter 3 makes this precise).
ctrl_idx = np.flatnonzero(control)


def largest_noise(group_size, repeats=20):
    values = []
    for _ in range(repeats):
        pick = rng.choice(ctrl_idx, 2 * group_size, replace=False)
        a, b = pick[:group_size], pick[group_size:]
        values.append(np.abs(normed.X[a].mean(0) - normed.X[b].mean(0)).max())
    return np.mean(values)


noise_50, noise_500 = largest_noise(50), largest_noise(500)
print(f"mean largest |delta|: 50 cells {noise_50:.3f}, 500 cells {noise_500:.3f}")
assert noise_50 > 2 * noise_500

# %% [markdown]
# **4. Do all guides agree?**
# Each target was hit by several guides (`obs["grna"]`).
# For the STAT1 knockout, compute the PSMB9 delta against the controls separately for each guide, with its number of cells.
# Is any guide out of line, and is that more likely noise or a weaker guide?

# %% tags=["hide-cell"]
# Solution. Three STAT1 guides lower PSMB9 by more than 1 (log1p); one barely moves it.
# That guide has only 16 cells, but its standard error is far smaller than the gap, so it is
# most likely a less effective guide. Pooling guides per target, as the challenge does, mixes such cells.
stat1 = normed[normed.obs[PERT] == "STAT1"]
per_guide = pseudobulk(stat1, by="grna")
control_psmb9 = normed[control, "PSMB9"].X.toarray().ravel()
guide_table = pd.DataFrame(
    {
        "cells": per_guide.obs["n_cells"],
        "PSMB9 delta": per_guide[:, "PSMB9"].X.ravel() - control_psmb9.mean(),
    }
)
guide_table["standard error"] = [
    stat1[(stat1.obs["grna"] == g).to_numpy(), "PSMB9"].X.toarray().std()
    / np.sqrt(guide_table.loc[g, "cells"])
    for g in guide_table.index
]
print(guide_table.round(2))
weakest = guide_table["PSMB9 delta"].idxmax()
assert (guide_table["PSMB9 delta"].drop(weakest) < -1).all()
gap = (
    guide_table["PSMB9 delta"].drop(weakest).max()
    - guide_table.loc[weakest, "PSMB9 delta"]
)
assert abs(gap) > 3 * guide_table.loc[weakest, "standard error"]

# %% [markdown]
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
