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
# # Protein language models and gene embeddings
#
# A model that must predict what silencing a gene does needs to know something about that gene.
# A one-hot code says only "gene number 4,711": it gives a model nothing to go on for a gene it never saw silenced.
# STATE instead describes every gene by the protein it encodes, read by a {term}`protein language model` trained on millions of sequences {cite}`adduri2025`.
# This chapter opens that pipeline: it turns a protein into tokens, runs ESM-2 on them, pools the residues and the isoforms of a gene into one vector, and inspects what those vectors can and cannot tell us.
# It runs on a laptop CPU with the smallest ESM-2; the same code, with a larger checkpoint and a GPU, produces the vectors STATE uses.

# %% [markdown]
# ```{admonition} Objectives and prerequisites
# :class: tip
# After this chapter you will be able to:
# - explain what a protein language model learns from masked amino-acid prediction, and why evolution makes that task informative;
# - tokenize proteins for ESM-2, run the model, and pool per-residue vectors into one vector per protein, special tokens excluded;
# - handle proteins longer than the model's context with overlapping windows, and pool isoforms into a gene embedding with an on-disk cache;
# - inspect gene embeddings with cosine similarities, tell what a randomly initialized model can and cannot show, and turn gene vectors into perturbation features.
#
# **Prerequisites:** genes, isoforms and translation from [chapter 1](01_central_dogma.ipynb); the THP-1 CRISPR data and its perturbations from [chapter 4](04_data_for_modelling.ipynb).
# Some familiarity with transformers (tokens, attention, BERT-style pre-training) helps but is not required.
# ```

# %%
import sys

if "google.colab" in sys.modules:  # On Colab only: install vcell-lib with ESM-2.
    import subprocess

    PACKAGE = (
        "vcell-lib[esm] @ git+https://github.com/virtual-cell-book/virtual-cell-book"
    )
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PACKAGE], check=True)

import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from vcell_lib.data import CONTROL, PAPALEXI_RENAMED, PROTEIN_FILE, load_papalexi2021, shipped_file
from vcell_lib.embeddings import (
    AMINO_ACIDS,
    ESM2_MODELS,
    MAX_RESIDUES,
    clean_sequence,
    embed_sequences,
    gene_embeddings,
    load_esm2,
    mean_pool,
    read_fasta,
    residue_mask,
    windows,
)
from vcell_lib.env import by_mode, set_seed, versions
from vcell_lib.plotting import PALETTE, style

rng = set_seed(0)
style()
N_THROUGHPUT = by_mode(full=24, fast=8)  # VCELL_FAST=1 (the tests) times fewer proteins
versions()

# %% [markdown]
# ## What a protein language model learns
#
# Chapter 1 translated an mRNA into a protein: a string over an alphabet of 20 {term}`amino acids <amino acid>`, typically a few hundred letters long.
# A protein language model treats such strings the way BERT treats sentences.
# During training, about 15% of the positions of each sequence are hidden (most replaced by a `<mask>` token), and the model must predict the hidden amino acids from the rest: {term}`masked language modelling`.
# Nobody labels anything; the sequences themselves are the supervision.
#
# Why would this teach a model anything about biology?
# Because the training sequences are not random strings: they are the survivors of evolution.
# Related proteins in different species, and related proteins of one species ({term}`paralogs <paralog>`), share a common ancestor, and mutations that broke the protein were weeded out.
# Positions that matter, such as the residues of an active site, are *conserved*: seeing the family context, the model can predict them with confidence.
# Residues that touch in the folded 3D structure *co-vary*: a change at one is compensated by a change at the other, so predicting one well requires attending to the other.
# To do well on the task, the model must therefore absorb which residues are constrained and which are in contact, and indeed structure and function can be read off the internal representations of such models {cite}`rives2021`.
# ESM-2 {cite}`lin2023` is a family of transformer encoders trained this way on UniRef protein sequences (the `UR50D` in the model names); its internal vectors, averaged over a protein, are the protein's {term}`embedding`.
#
# The released sizes differ by a factor of about 2,000 in parameters:

# %%
sizes = pd.DataFrame(
    [
        {
            "model": name,
            "parameters": name.split("_")[2],
            "layers": layers,
            "width": width,
            "heads": heads,
        }
        for name, (layers, width, heads) in ESM2_MODELS.items()
    ]
).set_index("model")
sizes["used by"] = ""
sizes.loc["esm2_t48_15B_UR50D", "used by"] = "STATE"
sizes.loc["esm2_t6_8M_UR50D", "used by"] = "this book"
print(sizes.to_string())

# %% [markdown]
# STATE takes its gene embeddings from the largest model, ESM-2 15B, whose vectors have 5,120 dimensions {cite}`adduri2025`.
# For every protein isoform of a gene it averages the per-residue vectors (special tokens excluded), averages the isoform vectors into one gene vector, and keeps these vectors frozen; about 19,790 genes get one.
# Running 15 billion parameters over the human proteome needs GPUs and hours.
# This book uses the smallest model, 8M parameters and width 320, which runs on a CPU in seconds; the pipeline is identical, only the checkpoint name changes.
#
# `load_esm2` downloads a checkpoint through fair-esm, the ESM authors' own package.
# Where the weights cannot be downloaded (no internet), it falls back, loudly, to a *randomly initialized* ESM-2 with the 8M architecture: same code path, same shapes, no learned biology.
# We put the model on a GPU when there is one; `embed_sequences` then runs it where it is, and our own hand-written calls send their tokens to the same device.

# %%
esm2 = load_esm2("esm2_t6_8M_UR50D")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
esm2.model.to(DEVICE)
print(
    f"{esm2.name}: {esm2.layers} layers, width {esm2.width}, pretrained={esm2.pretrained}, on {DEVICE}"
)

# %% [markdown]
# The next cell says which model produced every number and figure of this page.
# Its output depends on whether the download worked where the page was executed, so read it before the rest.

# %%
if esm2.pretrained:
    print(
        f"This page was executed with the PRETRAINED {esm2.name}.\n"
        "Its embeddings carry what ESM-2 learned from evolution: expect masked residues to be\n"
        "recovered well above chance, and members of a protein family to be closer to each other\n"
        "than to unrelated proteins."
    )
else:
    print(
        "This page was executed OFFLINE, with a RANDOMLY INITIALIZED ESM-2 (the 8M architecture).\n"
        "Shapes, tokenization, pooling, windowing, isoform averaging and caching are exactly as\n"
        "with the real model, but the numbers carry no learned biology: masked-residue predictions\n"
        "are arbitrary, and similarities between proteins reflect little more than shared letters\n"
        "(amino-acid composition, near-identical sequences).\n"
        "With the pretrained weights (the online book, or Colab) the same cells show real\n"
        "embeddings: masked residues recovered well above chance, protein families clustering."
    )

# %% [markdown]
# ### Masked prediction, on one protein
#
# Let us play the training game on one real protein.
# The book ships one canonical sequence for each of 19,139 human protein-coding genes, keyed by gene symbol (see `data/README.md`).
# We take STAT1, a {term}`transcription factor` that interferon signalling switches on and that is one of the genes silenced in the THP-1 screen of chapter 4.
# We hide 15% of its positions at once, run the model once, and read its predicted distribution over the 20 amino acids at each hidden position.

# %%
proteins = read_fasta(shipped_file(PROTEIN_FILE, "human_proteins"))
stat1 = proteins["STAT1"][0]
print(f"{len(proteins):,} genes; STAT1 has {len(stat1)} residues: {stat1[:40]}...")

alphabet = esm2.alphabet
converter = alphabet.get_batch_converter()
amino_acids = sorted(AMINO_ACIDS)
aa_tokens = [alphabet.get_idx(a) for a in amino_acids]  # token ids of the 20 letters

_, _, tokens = converter([("STAT1", stat1)])
hidden = np.sort(rng.choice(len(stat1), size=int(0.15 * len(stat1)), replace=False))
masked = tokens.clone()
masked[0, hidden + 1] = alphabet.mask_idx  # +1: token 0 is the start token <cls>
with torch.inference_mode():
    logits = esm2.model(masked.to(DEVICE))["logits"][0, hidden + 1][:, aa_tokens]
# One row per hidden position, one column per amino acid:
probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
truth = np.array([amino_acids.index(stat1[p]) for p in hidden])

# A baseline that knows only the proteome's amino-acid frequencies.
letters = np.frombuffer("".join(s[0] for s in proteins.values()).encode(), np.uint8)
counts = np.bincount(letters, minlength=128)[[ord(a) for a in amino_acids]]
background = counts / counts.sum()

accuracy = np.mean(probs.argmax(1) == truth)
baseline_accuracy = np.mean(truth == background.argmax())
entropy_bits = -(probs * np.log2(np.clip(probs, 1e-30, None))).sum(1).mean()
print(f"{len(hidden)} positions hidden; model's top guess right: {accuracy:.1%}")
print(
    f"always guessing the commonest amino acid ({amino_acids[background.argmax()]}): {baseline_accuracy:.1%}"
)
print(
    f"mean probability given to the true residue: model {probs[np.arange(len(truth)), truth].mean():.3f}, "
    f"proteome frequencies {background[truth].mean():.3f}"
)
print(
    f"mean entropy of the model's predictions: {entropy_bits:.2f} bits (uniform over 20: {np.log2(20):.2f})"
)
assert probs.shape == (len(hidden), 20) and np.allclose(probs.sum(1), 1, atol=1e-5)
if not esm2.pretrained:  # what the text below says about the random model
    assert accuracy <= baseline_accuracy
    assert probs[np.arange(len(truth)), truth].mean() < background[truth].mean()

# %% tags=["hide-input"]
row = 0  # the first hidden position
position = hidden[row]
order = np.argsort(-background)
fig, ax = plt.subplots(figsize=(8, 3.0))
ax.bar(range(20), probs[row, order], color=PALETTE["prediction"], label="model")
ax.plot(
    range(20),
    background[order],
    "o",
    color=PALETTE["control"],
    ms=4,
    label="proteome frequency",
)
ax.set_xticks(range(20), [amino_acids[i] for i in order])
true_slot = [amino_acids[i] for i in order].index(stat1[position])
ax.get_xticklabels()[true_slot].set(color=PALETTE["truth"], fontweight="bold")
ax.axvspan(
    true_slot - 0.45,
    true_slot + 0.45,
    color=PALETTE["truth"],
    alpha=0.2,
    lw=0,
    label="hidden residue",
)
ax.set_ylim(0, 1.05)
ax.set(
    xlabel="amino acid (green: the residue that was hidden)",
    ylabel="probability",
    title=f"STAT1 position {position + 1} hidden ({esm2.name})",
)
ax.legend()
plt.show()

# %% [markdown]
# Read the printed numbers with the model's name in mind.
# A randomly initialized network is not "uncertain": its output layer reuses its token embeddings, random vectors of norm about $\sqrt{320}$, so its logits are large and arbitrary, and it tends to pile its probability on some letter that has nothing to do with the position, often the same letter everywhere.
# Its accuracy is then at or below the trivial baseline of always guessing the commonest amino acid (leucine), and the true residue gets less probability than the proteome's frequencies would give it.
# A pretrained ESM-2 is expected to beat that baseline clearly, though not to be perfect: many positions of a protein are genuinely free to vary, and its perplexity on held-out proteins falls as the model grows {cite}`lin2023`.
# Either way the mechanics are the ones the model was trained with: mask, predict, compare with the truth.

# %% [markdown]
# ## Tokens, residues and one vector per protein
#
# ESM-2 reads one token per amino acid.
# Its alphabet has 33 tokens: the 20 standard amino acids, a few rarer or ambiguous letters (`X` for unknown, `U` for selenocysteine, ...), and special tokens.
# `<cls>` starts every sequence, `<eos>` ends it, `<pad>` fills shorter sequences of a batch up to the longest, and `<mask>` hides a residue.

# %%
print({token: index for index, token in enumerate(alphabet.all_toks)})
special = {
    "<cls>": alphabet.cls_idx,
    "<eos>": alphabet.eos_idx,
    "<pad>": alphabet.padding_idx,
    "<mask>": alphabet.mask_idx,
}
print("special tokens:", special)
assert len(alphabet.all_toks) == 33

_, _, batch = converter([("STAT1 start", stat1[:8]), ("short", "MKV")])
print(batch)
print(residue_mask(batch, alphabet))
assert batch.shape == (2, 8 + 2) and residue_mask(batch, alphabet).sum().item() == 8 + 3

# %% [markdown]
# The batch converter turned two sequences into a tensor of token ids: each row starts with `<cls>` (0) and ends with `<eos>` (2), and the shorter row is padded with `<pad>` (1).
# `residue_mask` is true exactly on the amino-acid tokens.
#
# The model maps each token to a vector of width 320 and refines it through 6 transformer layers, in which every residue attends to every other.
# We ask for the last layer's output and get one vector per token, including the special ones:

# %%
with torch.inference_mode():
    out = esm2.model(tokens.to(DEVICE), repr_layers=[esm2.layers])
# One vector per token: (1 protein, 1 + 750 + 1 tokens, 320).
per_token = out["representations"][esm2.layers].cpu()
mask = residue_mask(tokens, alphabet)
by_hand = mean_pool(per_token, mask).numpy()  # mean over the 750 residues only
print(
    f"per-token representations {tuple(per_token.shape)}, residues {mask.sum().item()}"
)
print(f"protein vector {by_hand.shape}")

library = embed_sequences(esm2, [stat1])
print(f"largest difference from embed_sequences: {np.abs(library - by_hand).max():.2e}")
assert np.allclose(library, by_hand, atol=1e-5)

# %% [markdown]
# `embed_sequences` does the same for any list of proteins: it sorts them by length, batches similar lengths together so that little padding is computed, and returns one mean-pooled vector per protein (a progress bar is available with `progress=True`).
# Excluding the special tokens matters: `<cls>` and `<eos>` carry vectors that do not describe any residue, and padding positions would make a protein's vector depend on which other proteins shared its batch.
#
# The heat map below shows the first 48 of the 320 dimensions for `<cls>` and the first 39 residues of STAT1; the scatter projects the 750 residue vectors on their first two principal components ({term}`PCA`), coloured by the chemistry of the amino acid.

# %% tags=["hide-input"]
groups = {
    "hydrophobic": "AVILMFW",
    "polar": "STNQYC",
    "positive": "KRH",
    "negative": "DE",
    "G, P": "GP",
}
residue_vectors = per_token[0, 1 : 1 + len(stat1)].numpy()
centered = residue_vectors - residue_vectors.mean(0)
_, singular, components = np.linalg.svd(centered, full_matrices=False)
projection = centered @ components[:2].T
explained = singular[:2] ** 2 / (singular**2).sum()

fig, axes = plt.subplots(
    1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.5, 1], "wspace": 0.35}
)
N_SHOWN = 40  # <cls> and the first 39 residues
shown = per_token[0, :N_SHOWN, :48].numpy().T
limit = np.percentile(np.abs(shown), 99)
image = axes[0].imshow(
    shown, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="none"
)
axes[0].set_xticks(
    range(N_SHOWN), ["<cls>", *stat1[: N_SHOWN - 1]], fontsize=7, rotation=90
)
axes[0].set(
    xlabel="token (the first residues of STAT1)",
    ylabel="dimension",
    title="Per-token vectors, first 48 of 320 dimensions",
)
axes[0].grid(False)
fig.colorbar(image, ax=axes[0], fraction=0.04, pad=0.02)
palette = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#7f7f7f"]
for (group, members), color in zip(groups.items(), palette):
    chosen = [i for i, a in enumerate(stat1) if a in members]
    axes[1].scatter(*projection[chosen].T, s=6, color=color, label=group, alpha=0.7)
axes[1].set(
    xlabel=f"PC 1 ({explained[0]:.0%})",
    ylabel=f"PC 2 ({explained[1]:.0%})",
    title=f"All {len(stat1)} residue vectors of STAT1",
)
axes[1].legend(markerscale=2.5, fontsize=8, loc="best")
fig.suptitle(f"Model: {esm2.name}", y=1.02)
plt.show()

# %% [markdown]
# Each column of the heat map is one token's vector; the `<cls>` column is not a residue, and neither is `<eos>` at the other end of the protein.
# Compare columns of the same letter (the two `Q`s, the `L`s): how alike they are depends on the model.
# Every layer adds its output to the token's own embedding (a residual connection), so any ESM-2 keeps a trace of *which letter* each residue is.
# A random network keeps little else: its residue vectors form tight clumps in the scatter, about one per letter, and the vector of a residue hardly depends on its neighbours.
# A pretrained model is expected to mix in what it learned about each residue's context (its neighbours in the sequence and in the folded structure), which spreads residues of the same letter apart.

# %% [markdown]
# ## Long proteins and the context limit
#
# ESM-2 was trained on sequences of at most 1,024 tokens, that is 1,022 residues plus `<cls>` and `<eos>`; longer training sequences were cropped at random {cite}`lin2023`.
# Many human proteins are longer than that.

# %%
lengths = pd.Series({gene: len(seqs[0]) for gene, seqs in proteins.items()})
too_long = lengths[lengths > MAX_RESIDUES]
print(
    f"median length {lengths.median():.0f} residues; longest: {lengths.idxmax()} ({lengths.max():,})"
)
print(
    f"{len(too_long):,} of {len(lengths):,} proteins ({len(too_long) / len(lengths):.0%}) exceed {MAX_RESIDUES} residues"
)
myh7 = proteins["MYH7"][0]
print(f"MYH7 ({len(myh7)} residues) is cut into windows {windows(len(myh7))}")

# %% [markdown]
# The library cuts such a protein into windows of 1,022 residues that overlap by half (`windows`; the last window is aligned to the end of the protein), runs each window through the model, *averages the per-residue vectors where windows overlap*, and then pools over all residues as usual.
# Every residue is seen, and, except near the ends of the protein, every residue is seen in at least one window with a few hundred residues of context on both sides.
# The alternatives have costs of their own.
# Cropping to the first 1,022 residues, or to a random crop as during training, is cheapest but ignores the rest of the protein: the vector then describes part of it.
# Embedding non-overlapping chunks cuts the context at arbitrary points.
# This is a design choice, not a fact about ESM-2; the reference STATE code may handle long proteins differently.

# %% tags=["hide-input"]
fig, axes = plt.subplots(
    1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1.2, 1]}
)
bins = np.logspace(np.log10(lengths.min()), np.log10(lengths.max()), 70)
axes[0].hist(lengths, bins=bins, color=PALETTE["prediction"])
axes[0].axvline(MAX_RESIDUES, color=PALETTE["perturbed"], ls="--")
axes[0].text(
    MAX_RESIDUES * 1.1,
    axes[0].get_ylim()[1] * 0.9,
    f"{MAX_RESIDUES} residues:\n{len(too_long):,} proteins beyond",
    color=PALETTE["perturbed"],
    fontsize=8,
    va="top",
)
axes[0].set_xscale("log")
axes[0].set(
    xlabel="protein length (residues, log scale)",
    ylabel="proteins",
    title="Human proteins vs the context",
)
spans = windows(len(myh7))
coverage = np.zeros(len(myh7), int)
for start, end in spans:
    coverage[start:end] += 1
for k, (start, end) in enumerate(spans):
    axes[1].plot(
        [start, end],
        [k + 1, k + 1],
        lw=6,
        color=PALETTE["accent"],
        solid_capstyle="butt",
    )
axes[1].fill_between(
    np.arange(len(myh7)),
    0.4,
    len(spans) + 0.5,
    where=coverage >= 2,
    step="post",
    color=PALETTE["control"],
    alpha=0.25,
    lw=0,
    label="residues seen by two or three windows (averaged)",
)
axes[1].set_yticks(
    range(1, len(spans) + 1), [f"window {k + 1}" for k in range(len(spans))]
)
axes[1].set(
    xlabel="MYH7 residue",
    title=f"Windows over MYH7 ({len(myh7)} residues)",
    ylim=(0.4, len(spans) + 1.2),
)
axes[1].legend(fontsize=8, loc="upper left")
plt.show()

# %% [markdown]
# Here is the averaging written out by hand for JAK1, a kinase of 1,154 residues, two windows, and checked against the library.
# We also keep the first window on its own, the vector that cropping would give, and compare the two with the cosine similarity (1 for vectors pointing the same way).


# %%
def cosine(u, v):
    """Cosine similarity of two vectors."""
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


jak1 = proteins["JAK1"][0]
total = np.zeros((len(jak1), esm2.width))
cover = np.zeros(len(jak1))
for start, end in windows(len(jak1)):
    _, _, window_tokens = converter([("JAK1 window", jak1[start:end])])
    with torch.inference_mode():
        out = esm2.model(window_tokens.to(DEVICE), repr_layers=[esm2.layers])
    reps = out["representations"][esm2.layers].cpu().numpy()
    total[start:end] += reps[0, 1 : 1 + end - start]  # drop <cls> and <eos>
    cover[start:end] += 1
    if start == 0:  # the first window alone is what cropping would keep
        cropped = reps[0, 1 : 1 + end - start].mean(0)
windowed_by_hand = (total / cover[:, None]).mean(0)
windowed = embed_sequences(esm2, [jak1])[0]
print(f"windows {windows(len(jak1))}; residues seen twice: {(cover == 2).sum()}")
print(
    f"largest difference from embed_sequences: {np.abs(windowed - windowed_by_hand).max():.2e}"
)
assert np.allclose(windowed, windowed_by_hand, atol=1e-5)
print(
    "cosine between the windowed vector and the first 1,022 residues alone: "
    f"{cosine(windowed, cropped):.4f}"
)

# %% [markdown]
# JAK1 overhangs the window by only 132 residues, so the crop keeps most of it and the two vectors point almost the same way (the printed cosine).
# For a protein several times longer than the window, a crop would describe only a small part of it, whereas the windowed vector still covers every residue.

# %% [markdown]
# ## Isoforms: from protein vectors to a gene vector
#
# A gene can make several proteins through alternative splicing (chapter 1), and STATE represents a gene by the *average* of its isoforms' vectors.
# The shipped file has one canonical sequence per gene, so we build a second isoform by hand from a real case.
# STAT1 has a shorter splice isoform, STAT1$\beta$, which lacks the C-terminal transactivation domain of the full-length STAT1$\alpha$ {cite}`semper2014`; it is about 38 residues shorter.
# We approximate it by the first 712 residues of STAT1 (the real isoform may differ in its last few residues).
#
# `gene_embeddings` takes a FASTA path or a dictionary `{gene: [isoform sequences]}`, embeds every distinct sequence once, and averages each gene's isoforms.
# With `cache_dir`, it stores each isoform vector on disk under the model's name and the sequence's SHA-256 hash, so a later call only runs the model on sequences it has not seen.
# We use a fresh folder in the system's temporary directory, so that every run of this page starts with an empty cache.

# %%
CACHE = Path(tempfile.mkdtemp(prefix="vcell_esm_cache_"))
stat1_alpha, stat1_beta = stat1, stat1[:712]
isoforms = {"STAT1": [stat1_alpha, stat1_beta]}
genes, gene_vector = gene_embeddings(isoforms, esm2, cache_dir=CACHE, progress=False)
_, isoform_vectors = gene_embeddings(
    {"alpha": [stat1_alpha], "beta": [stat1_beta]},
    esm2,
    cache_dir=CACHE,
    progress=False,
)  # two "genes" of one isoform each: both sequences come from the cache

cache_file = next(CACHE.glob("*.npz"))  # one file per model
print(genes, gene_vector.shape, "cache file:", cache_file.name)
print(f"cosine(alpha, beta) = {cosine(*isoform_vectors):.4f}")
print(f"cosine(gene, alpha) = {cosine(gene_vector[0], isoform_vectors[0]):.4f}")
assert np.allclose(gene_vector[0], isoform_vectors.mean(0), atol=1e-6)
assert np.allclose(
    isoform_vectors[0], library[0], atol=1e-5
)  # alpha = the canonical STAT1

# %% [markdown]
# The gene vector is exactly the mean of the two isoform vectors.
# The two isoforms share 95% of their sequence, so their vectors are very close, and averaging changes little here.
# Equal weights are a simplification: a rare isoform counts as much as the dominant one, and an isoform expressed only in another tissue still shapes the vector.
# Weighting isoforms by their expression in the cell type of interest is a natural refinement, but it is not what STATE does.

# %% [markdown]
# ## Gene families in embedding space
#
# Now a small atlas: the seven STAT transcription factors (STAT1 to STAT6, with STAT5A and STAT5B), two interferon regulatory factors (IRF1, IRF7), the four Janus kinases (JAK1, JAK2, JAK3, TYK2), which phosphorylate the STATs, and, for contrast, five proteins of other families that are also silenced in the THP-1 screen: the transcription factors MYC and SPI1, the membrane protein CAV1, the ubiquitin-conjugating enzyme UBE2L6 and the immune co-stimulatory protein CD86.
# We time `gene_embeddings` twice: the second call finds every sequence in the cache.

# %%
FAMILIES = {
    "STAT": ["STAT1", "STAT2", "STAT3", "STAT4", "STAT5A", "STAT5B", "STAT6"],
    "IRF": ["IRF1", "IRF7"],
    "JAK": ["JAK1", "JAK2", "JAK3", "TYK2"],
    "contrast": ["MYC", "SPI1", "CAV1", "UBE2L6", "CD86"],
}
atlas_genes = [g for members in FAMILIES.values() for g in members]

start = time.perf_counter()
names, vectors = gene_embeddings(
    proteins, esm2, genes=atlas_genes, cache_dir=CACHE, progress=False
)
first_call = time.perf_counter() - start
start = time.perf_counter()
_, again = gene_embeddings(
    proteins, esm2, genes=atlas_genes, cache_dir=CACHE, progress=False
)
second_call = time.perf_counter() - start
residues = sum(len(proteins[g][0]) for g in atlas_genes)
print(f"{len(names)} genes, {residues:,} residues -> vectors {vectors.shape}")
print(
    f"first call {first_call:.1f} s (STAT1 came from the cache), second call {second_call:.3f} s"
)
assert np.array_equal(vectors, again) and second_call < first_call / 5

# %% [markdown]
# The cache keeps one file for each combination of everything that changes a vector: the model's name, its weights ("pretrained", or a digest of random weights), the layer and the window; inside it, each sequence is keyed by its sha256. Asking for another layer or window therefore never returns the old vectors.
#
# We compare genes by {term}`cosine similarity`.
# Mean-pooled embeddings share a large common component (every protein is made of the same 20 letters, and the network adds its own biases), so raw cosines are typically all high (the printed range below shows how high).
# The right panel therefore first subtracts the mean vector of the genes shown, which leaves what distinguishes them from one another.


# %%
def cosine_matrix(x):
    """Cosine similarity between the rows of x."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit @ unit.T


raw = cosine_matrix(vectors)
relative = cosine_matrix(vectors - vectors.mean(0))
off_diagonal = ~np.eye(len(names), dtype=bool)
print(
    f"raw cosines between different genes: {raw[off_diagonal].min():.3f} to {raw[off_diagonal].max():.3f}"
)
i, j = np.unravel_index(
    np.where(off_diagonal, relative, -np.inf).argmax(), relative.shape
)
print(
    f"most similar pair after centering: {names[i]} and {names[j]} ({relative[i, j]:.2f})"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.2))
for ax, matrix, title, (low, high) in zip(
    axes,
    (raw, relative),
    ("raw cosine", "cosine after subtracting the mean vector"),
    ((raw.min(), 1), (-1, 1)),
):
    image = ax.imshow(
        matrix, cmap="RdBu_r" if low < 0 else "viridis", vmin=low, vmax=high
    )
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.grid(False)
    edge = -0.5
    for members in list(FAMILIES.values())[:-1]:
        edge += len(members)
        ax.axhline(edge, color="white", lw=1.5)
        ax.axvline(edge, color="white", lw=1.5)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
fig.suptitle(f"Gene embeddings from {esm2.name}", y=1.0)
plt.show()

# %% [markdown]
# What should you see?
# With the **pretrained** model, the blocks on the diagonal should light up: the STATs share a domain architecture and descend from a common ancestor, as do the JAKs, so their vectors are closer to each other than to the contrast genes, even for pairs whose sequences are far from identical.
# With the **random** model, the same figure mostly shows letters, not function.
# A random network is still a fixed function of the sequence, so proteins made of nearly the same string (STAT5A and STAT5B are over 90% identical) get nearly the same vector, and proteins with a similar amino-acid composition get similar vectors.
# We can test that on the genes above: compare the embedding similarities with the similarities of the plain amino-acid compositions, a 20-number summary that knows nothing about order or evolution.

# %%
composition = np.array(
    [
        [proteins[g][0].count(a) / len(proteins[g][0]) for a in amino_acids]
        for g in names
    ]
)
composition_similarity = cosine_matrix(composition - composition.mean(0))
agreement = np.corrcoef(relative[off_diagonal], composition_similarity[off_diagonal])[
    0, 1
]
print(
    f"correlation between embedding and composition similarities over gene pairs: {agreement:.2f}"
)
if not esm2.pretrained:
    assert {names[i], names[j]} == {"STAT5A", "STAT5B"}  # the most identical pair wins
    assert agreement > 0.5  # a random ESM-2 mostly sees composition

# %% [markdown]
# The printed correlation says how much of the picture plain composition explains.
# For the random model it is high, which is the honest reading of its heat map: similar letters, similar vectors.
# A pretrained model is expected to depart from composition, grouping proteins by family and fold, but a number for that must come from running it, as the online version of this page does.
#
# Some properties hold whatever the weights, and we can assert them here.
# The model is deterministic, so identical sequences give identical vectors.
# And small edits should make small moves: changing one residue of STAT1 (a point mutation) should move its vector far less than replacing STAT1 by another protein.

# %%
twice = embed_sequences(esm2, [stat1, stat1])
assert np.array_equal(twice[0], twice[1])

mutants = []
for position in rng.choice(len(stat1), size=3, replace=False):
    substitute = rng.choice([a for a in amino_acids if a != stat1[position]])
    mutants.append(stat1[:position] + substitute + stat1[position + 1 :])
mutant_vectors = embed_sequences(esm2, mutants)
stat1_vector = vectors[names.index("STAT1")]
to_mutants = [cosine(stat1_vector, m) for m in mutant_vectors]
to_others = {
    g: cosine(stat1_vector, vectors[names.index(g)]) for g in FAMILIES["contrast"]
}
print("cosine of STAT1 to its point mutants:", np.round(to_mutants, 5))
print(
    "cosine of STAT1 to unrelated proteins:",
    {g: round(c, 3) for g, c in to_others.items()},
)
assert min(to_mutants) > max(to_others.values())

# %% [markdown]
# Neither check relies on learned biology, which makes them good unit tests for an embedding pipeline.
# Passing them proves the plumbing, not the biology: a single mutation can destroy a protein's function while barely moving its mean-pooled vector, because the mean over 750 residues dilutes any one of them.

# %% [markdown]
# ## From gene vectors to perturbation features
#
# In a CRISPR screen each perturbation silences one gene.
# The State Transition model (ST, chapter 12) receives the perturbation as a feature vector, and in the challenge recipe that vector is the ESM-2 embedding of the silenced gene {cite}`adduri2025`.
# A gene the model never saw silenced still has a vector, and if that vector resembles those of genes it did see, the model has something to generalize from.
#
# Which of the THP-1 screen's genes (chapter 4) have a protein in our file?
# Gene symbols change over time, and this dataset uses older ones than the protein file, so an exact match misses some genes.

# %%
papalexi = load_papalexi2021()
measured = list(papalexi.var_names)
targets = sorted(set(papalexi.obs["target_gene"]) - {CONTROL})
print(
    f"exact symbol match: {sum(g in proteins for g in measured)} of {len(measured)} measured genes, "
    f"{sum(g in proteins for g in targets)} of {len(targets)} targets; "
    f"missing target: {[g for g in targets if g not in proteins]}"
)

# %% [markdown]
# The missing target, MARCH8, is now MARCHF8: the HGNC renamed the MARCH and SEPT genes in part because spreadsheets turned their symbols into dates.
# The table `PAPALEXI_RENAMED` in `vcell_lib.data` maps the old symbols of the screen to their current ones (chapter 11 reuses it); the UniProt entry names in the FASTA headers still show some of the old names (`MARH8_HUMAN`, `SEPT2_HUMAN`, `MPP5_HUMAN`, `F16A2_HUMAN`).
# Most of the remaining genes are non-coding RNAs or clone-based names (`RP11-...`, `LINC...`, `...-AS1`): they make no protein and can have no protein embedding.
# A complete table of previous symbols, which the HGNC publishes, may map a few more; we list only renames we are sure of.

# %%
RENAMED = PAPALEXI_RENAMED  # symbol in the screen -> current HGNC symbol (vcell_lib.data)
print(RENAMED)
assert all(new in proteins and old not in proteins for old, new in RENAMED.items())


def current_symbol(gene: str) -> str:
    return RENAMED.get(gene, gene)


covered = [g for g in measured if current_symbol(g) in proteins]
print(f"with renames: {len(covered)} of {len(measured)} measured genes have a protein")
print(
    "without one:",
    [g for g in measured if current_symbol(g) not in proteins][:12],
    "...",
)
assert len(covered) == 258 and all(current_symbol(g) in proteins for g in targets)

target_symbols = [current_symbol(g) for g in targets]
cached_before = len(np.load(cache_file).files)
start = time.perf_counter()
_, perturbation_features = gene_embeddings(
    proteins, esm2, genes=target_symbols, cache_dir=CACHE, progress=False
)
seconds = time.perf_counter() - start
cached_after = len(np.load(cache_file).files)
print(
    f"perturbation features {perturbation_features.shape}: {cached_after - cached_before} new sequences "
    f"embedded in {seconds:.1f} s, {len(targets) - (cached_after - cached_before)} came from the cache"
)
features = pd.DataFrame(perturbation_features, index=targets)
assert features.shape == (25, esm2.width) and np.isfinite(perturbation_features).all()
print(features.iloc[:5, :6].round(3))

# %% [markdown]
# `features` is exactly the kind of table ST consumes: one row per perturbation, indexed by the symbol used in the cell data.
# Control cells get no row: they are the basal state that ST transforms.
# In the challenge, STATE's table covers about 19,790 genes with 5,120 numbers each; ours covers the 25 targets with 320.

# %% [markdown]
# ## Errors that stop you early
#
# An embedding pipeline fails quietly if it accepts anything: a lowercase sequence, a symbol that is not in the file, an unusual letter.
# The library refuses such inputs with a message that says what to do.

# %%
for attempt in (
    lambda: clean_sequence(stat1[:20].lower(), name="STAT1 (lowercase)"),
    lambda: gene_embeddings(proteins, esm2, genes=["STAT1", "MARCH8"], progress=False),
):
    try:
        attempt()
    except ValueError as error:
        print(f"ValueError: {error}")
    else:
        raise AssertionError("the mistake was not caught")

selenoproteins = [g for g, seqs in proteins.items() if "U" in seqs[0]]
print(
    f"\n{len(selenoproteins)} proteins contain U (selenocysteine), e.g. {selenoproteins[:4]}"
)
try:
    clean_sequence(proteins[selenoproteins[0]][0], name=selenoproteins[0])
except ValueError as error:
    print(f"ValueError: {error}")
fixed = clean_sequence(proteins[selenoproteins[0]][0], nonstandard="to_x")
assert "U" not in fixed and fixed.count("X") >= 1

# %% [markdown]
# Selenocysteine (`U`) is a real but rare amino acid (the printed count shows how few human proteins contain it), and ESM-2's alphabet has a token for it.
# `nonstandard="keep"` passes it through, `"to_x"` turns it into `X` (unknown); the default refuses, so that you choose.
# `gene_embeddings` uses the same argument.

# %% [markdown]
# ## Throughput
#
# How long does embedding take?
# We time `embed_sequences` on a random sample of proteins of 200 to 400 residues.

# %%
candidates = lengths[(lengths >= 200) & (lengths <= 400)].index
sample = [
    proteins[g][0] for g in rng.choice(candidates, size=N_THROUGHPUT, replace=False)
]
start = time.perf_counter()
sample_vectors = embed_sequences(esm2, sample)
seconds = time.perf_counter() - start
rate = sum(map(len, sample)) / seconds
proteome_residues = lengths.sum()
print(
    f"{len(sample)} proteins, {sum(map(len, sample)):,} residues in {seconds:.1f} s "
    f"on {torch.get_num_threads()} CPU threads: {rate:,.0f} residues per second ({esm2.name})"
)
print(
    f"all {len(lengths):,} proteins ({proteome_residues / 1e6:.1f} M residues) would take about "
    f"{proteome_residues / rate / 3600:.1f} hours at this rate"
)
assert sample_vectors.shape == (N_THROUGHPUT, esm2.width)

# %% [markdown]
# Per residue, a transformer costs roughly twice its number of parameters in floating-point operations, plus attention, so the 15B model is on the order of 2,000 times slower per residue than the 8M one.
# That is why STATE's gene embeddings are computed once, on GPUs, and then shipped as a frozen table, and why caching isoform vectors by sequence pays off.
# On a GPU, `embed_sequences` runs on CUDA automatically, and `max_tokens` sets how many tokens go into one batch.

# %% [markdown]
# ## Summary
#
# - A protein language model such as ESM-2 is trained to predict hidden amino acids from their context; evolution makes this informative, because conserved and co-varying positions encode structure and function.
# - ESM-2 tokenizes a protein as `<cls>`, one token per residue, `<eos>` (33 tokens in all); a protein's embedding is the mean of its per-residue vectors from a chosen layer, special tokens and padding excluded.
# - Proteins longer than 1,022 residues exceed the training context; the library averages overlapping windows, one of several defensible choices.
# - A gene vector is the mean of its isoforms' vectors; caching vectors by sequence hash makes repeated and overlapping requests cheap.
# - STATE uses ESM-2 15B (width 5,120) gene vectors, frozen, both as gene tokens and as perturbation features for ST; this book uses the 8M model on a CPU, and offline a random model whose similarities reflect composition, not function.
# - Gene symbols drift: map old symbols to current ones before looking up vectors, and expect non-coding genes to have none.

# %% [markdown]
# ## Exercises
#
# **1. Order matters, but not at layer 0.**
# Shuffle the letters of STAT1 and embed both sequences, once with `layer=0` (the token embeddings, before any transformer layer) and once with the last layer.
# Which pairs of vectors are identical, and why?
# Show that the layer-0 vector is proportional to the amino-acid composition multiplied by the token-embedding table.

# %% tags=["hide-cell"]
# Solution. ESM-2 has no positional embedding added to its tokens (position enters only through
# rotary attention), so layer 0 is a bag of letters: shuffling cannot change its mean. The
# transformer layers mix residues according to their positions, so the last layer sees the order:
# only slightly in a random model, whose attention hardly depends on position; a pretrained
# model is expected to tell the two apart much more clearly.
shuffled = "".join(rng.permutation(list(stat1)))
layer0 = embed_sequences(esm2, [stat1, shuffled], layer=0)
last = embed_sequences(esm2, [stat1, shuffled])
print(f"layer 0: max difference {np.abs(layer0[0] - layer0[1]).max():.1e}")
print(
    f"last layer: max difference {np.abs(last[0] - last[1]).max():.1e}, cosine {cosine(*last):.6f}"
)
assert np.allclose(layer0[0], layer0[1], atol=1e-5)
assert not np.allclose(last[0], last[1], atol=1e-4)
table = esm2.model.embed_tokens.weight.detach().cpu().numpy()[aa_tokens]  # (20, 320)
stat1_composition = np.array([stat1.count(a) for a in amino_acids]) / len(stat1)
assert cosine(stat1_composition @ table, layer0[0]) > 0.9999

# %% [markdown]
# **2. How far does a protein move per mutation?**
# Take UBE2L6 (153 residues) and introduce 1, 5, 20 and 80 random substitutions, each set containing the previous one.
# Plot the cosine similarity to the original against the number of substitutions.

# %% tags=["hide-cell"]
# Solution. Each substitution moves the mean-pooled vector a little; the similarity falls steadily.
ube2l6 = proteins["UBE2L6"][0]
steps = [1, 5, 20, 80]
order_of_change = rng.permutation(len(ube2l6))
variants, current = [], list(ube2l6)
for k in range(max(steps)):
    position = order_of_change[k]
    current[position] = rng.choice([a for a in amino_acids if a != ube2l6[position]])
    if k + 1 in steps:
        variants.append("".join(current))
variant_vectors = embed_sequences(esm2, [ube2l6, *variants])
similarity = [cosine(variant_vectors[0], v) for v in variant_vectors[1:]]
fig, ax = plt.subplots(figsize=(4.5, 3.2))
ax.plot(steps, similarity, "o-", color=PALETTE["perturbed"])
ax.set_xscale("log")
ax.set_xticks(steps, [str(k) for k in steps])
ax.set(
    xlabel="substitutions",
    ylabel="cosine to UBE2L6",
    title=f"Mutations move the vector ({esm2.name})",
)
plt.show()
print({k: round(c, 4) for k, c in zip(steps, similarity)})
assert all(a > b for a, b in zip(similarity, similarity[1:]))

# %% [markdown]
# **3. The cache at work.**
# Add a third, hypothetical STAT1 isoform that lacks the first 100 residues.
# Before running anything: how many sequences must the model embed, given the cache built above?
# Check it with the cache file, and check that the gene vector is the mean of the three isoform vectors.

# %% tags=["hide-cell"]
# Solution. Alpha and beta are cached, so only the new sequence is embedded: one new cache entry.
entries_before = len(np.load(cache_file).files)
three = [stat1_alpha, stat1_beta, stat1_alpha[100:]]
_, gene_three = gene_embeddings({"STAT1": three}, esm2, cache_dir=CACHE, progress=False)
_, each = gene_embeddings(
    {f"iso{k}": [s] for k, s in enumerate(three)}, esm2, cache_dir=CACHE, progress=False
)
entries_after = len(np.load(cache_file).files)
print(f"cache entries: {entries_before} -> {entries_after}")
assert entries_after == entries_before + 1
assert np.allclose(gene_three[0], each.mean(0), atol=1e-6)

# %% [markdown]
# **4. What does windowing cost?**
# The longest human protein, titin (TTN), has 34,350 residues.
# How many residues does the model process with the default windows (stride of half a window), and with non-overlapping windows (`stride=size`)?
# How many residues are covered twice in each case?

# %% tags=["hide-cell"]
# Solution. Half-overlapping windows process about twice the protein; non-overlapping ones about
# once (the last window is aligned to the end, so it overlaps its neighbour a little).
n = len(proteins["TTN"][0])
for stride in (MAX_RESIDUES // 2, MAX_RESIDUES):
    spans = windows(n, MAX_RESIDUES, stride)
    covered_times = np.zeros(n, int)
    for a, b in spans:
        covered_times[a:b] += 1
    processed = sum(b - a for a, b in spans)
    print(
        f"stride {stride}: {len(spans)} windows, {processed:,} residues processed "
        f"({processed / n:.2f}x), covered twice or more: {(covered_times >= 2).sum():,}"
    )
    assert covered_times.min() >= 1
assert len(windows(n, MAX_RESIDUES, MAX_RESIDUES)) == -(-n // MAX_RESIDUES)

# %% [markdown]
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
