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
# # DNA to RNA to protein, for engineers
#
# Every cell in your body carries the same genome, yet a neuron and a white blood cell behave nothing alike.
# The difference lies in which genes each cell *uses*, and how much: that is what a single-cell experiment measures, and what a virtual cell must predict.
# This chapter turns the {term}`central dogma` of molecular biology into code you can run.
# We will copy a gene into RNA, splice it, translate it, and then simulate, molecule by molecule, how a gene switches on and off in time.
# That simulation explains the single most important fact about the data in the rest of this book: single-cell counts are small, noisy and overdispersed, and silencing a gene shifts a *distribution*, not a number.

# %% [markdown]
# ```{admonition} Objectives and prerequisites
# :class: tip
# After this chapter you will be able to:
# - explain genes, exons and introns, transcription, splicing, isoforms and translation, and run each step on a toy gene;
# - say what a single-cell transcriptome is: a vector of mRNA counts, one per gene, of which only a fraction is captured;
# - simulate bursty transcription exactly (telegraph model, Gillespie algorithm) and derive why counts are overdispersed;
# - distinguish CRISPRi silencing from a CRISPR knockout, and predict what each does to the target gene and to the genes it regulates.
#
# **Prerequisites:** Python and NumPy, and the basics of probability (Poisson and exponential distributions).
# No biology is assumed. The [introduction](../book/intro.md) explains how to run this notebook.
# ```

# %%
import sys

if "google.colab" in sys.modules:  # On Colab only: install the book's library.
    import subprocess

    PACKAGE = "vcell-lib @ git+https://github.com/virtual-cell-book/virtual-cell-book"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PACKAGE], check=True)

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from vcell_lib.biology import (
    GENETIC_CODE,
    GeneKinetics,
    Regulation,
    capture,
    crispri,
    knockout,
    sample_stationary,
    simulate_expression,
    splice,
    telegraph_moments,
    telegraph_pmf,
    transcribe,
    translate,
)
from vcell_lib.env import by_mode, set_seed, versions
from vcell_lib.plotting import PALETTE, style

rng = set_seed(0)
style()
N_CELLS = by_mode(
    full=2000, fast=300
)  # VCELL_FAST=1 (the tests) shrinks the populations
versions()

# %% [markdown]
# ## The genome is the program, genes are its functions
#
# DNA is a long string over a four-letter alphabet: the bases A, C, G and T.
# It is double-stranded: each base pairs with its complement (A with T, C with G), so either strand determines the other.
# The human genome is about 3.1 billion bases long and is (almost) identical in every cell of one person {cite}`alberts2022`.
#
# A {term}`gene` is a region of that string that the cell copies into RNA.
# Humans have about 20,000 protein-coding genes, whose RNA is in turn read to build a protein.
# A gene starts at a {term}`promoter`, where the copying machinery binds, and is made of {term}`exons <exon>` (kept) and {term}`introns <intron>` (cut out).
# The figure shows the flow of information that Crick called the {term}`central dogma` {cite}`crick1970`: DNA is transcribed into RNA, RNA is translated into protein.
#
# ```{figure} ../book/figures/central_dogma.svg
# :name: fig-central-dogma
# :width: 100%
#
# From gene to protein. Transcription copies the whole gene into a pre-mRNA; splicing removes introns and can skip exons, giving several isoforms; translation reads each mRNA three bases at a time. CRISPRi (red) blocks transcription at the promoter.
# ```
#
# An engineer's analogy: the genome is a code base, a gene is a function, and a cell type is a configuration that decides which functions are called and how often.
# A stem cell and a monocyte run the same code with different configurations.
# That is why measuring which genes are being copied, and how much, tells us what state a cell is in.

# %% [markdown]
# ## Transcription and splicing, in code
#
# {term}`Transcription` copies a gene into RNA.
# RNA uses the base U (uracil) where DNA has T, so, read along the coding strand, transcription is a character substitution.
# The first copy, the pre-mRNA, still contains the introns.
# {term}`Splicing` cuts them out and joins the exons into the mature messenger RNA (mRNA).
#
# Here is a toy gene with three exons.
# Its introns begin with `GT` and end with `AG`, as almost all real introns do.
# Those two letters are the core of the signals the splicing machinery recognizes; a few more bases around them, a "branch point" inside the intron and a run of C and T before its end complete the signal (our toy introns have them too).
# The start of exon 1 and the end of exon 3 are *untranslated regions* (UTRs): they are part of the mRNA but lie outside the protein-coding sequence.

# %%
exon1 = "GCCACCATGGCTTCTAAAGGC"  # a 5' UTR (GCCACC), then the start codon ATG
intron1 = "GTAAGTATCTTTCTTTTCCCAG"
exon2 = "GAAGAGCTAAGCACTGGC"  # 18 bases: a multiple of 3
intron2 = "GTGAGTACTAACTCTTTCTTGCAG"
exon3 = "GTGGTGCCCATCCTGTAAGCGGCC"  # the stop codon TAA, then a 3' UTR (GCGGCC)
gene = exon1 + intron1 + exon2 + intron2 + exon3


def piece_intervals(*pieces: str) -> list[tuple[int, int]]:
    """Half-open [start, end) coordinates of consecutive pieces of a sequence."""
    ends = np.cumsum([len(p) for p in pieces])
    return [(int(end - len(p)), int(end)) for p, end in zip(pieces, ends)]


span1, _, span2, _, span3 = piece_intervals(exon1, intron1, exon2, intron2, exon3)
pre_mrna = transcribe(gene)
isoform_1 = splice(pre_mrna, [span1, span2, span3])  # all exons
isoform_2 = splice(pre_mrna, [span1, span3])  # exon 2 skipped
print(f"gene      {len(gene):3d} bases  {gene}")
print(f"pre-mRNA  {len(pre_mrna):3d} bases  {pre_mrna}")
print(f"isoform 1 {len(isoform_1):3d} bases  {isoform_1}")
print(f"isoform 2 {len(isoform_2):3d} bases  {isoform_2}")

# %% [markdown]
# The two spliced RNAs are two {term}`isoforms <isoform>` of one gene.
# Skipping or including exons, called alternative splicing, is the rule rather than the exception: most human multi-exon genes make more than one isoform {cite}`pan2008`.
# Later in the book, when we represent a gene by embedding its proteins with a language model, we will average over its isoforms for exactly this reason.

# %% [markdown]
# ## Translation and the genetic code
#
# {term}`Translation` reads an mRNA from its first `AUG` (the start codon) in steps of three bases, the {term}`codons <codon>`.
# Each codon names one of 20 amino acids, or says "stop".
# The table from codons to amino acids, the genetic code, is the same in almost every organism.

# %%
protein_1, protein_2 = translate(isoform_1), translate(isoform_2)
print("protein from isoform 1:", protein_1)
print("protein from isoform 2:", protein_2)

# Exon 2 is 18 bases long, a whole number of codons, so skipping it removes 6 amino acids
# and keeps the rest of the protein in frame.
codons_in_exon1 = (
    len(exon1) - exon1.find("ATG")
) // 3  # from the start codon to the end of exon 1
codons_in_exon2 = len(exon2) // 3
assert (
    protein_2
    == protein_1[:codons_in_exon1] + protein_1[codons_in_exon1 + codons_in_exon2 :]
)

# %% [markdown]
# Sixty-four codons encode only 21 meanings, so the code is redundant: several codons can name the same amino acid.

# %% tags=["hide-input"]
amino_acids = sorted(set(GENETIC_CODE.values()))
codons_per_aa = {aa: sum(v == aa for v in GENETIC_CODE.values()) for aa in amino_acids}
order = sorted(amino_acids, key=lambda aa: -codons_per_aa[aa])
fig, ax = plt.subplots(figsize=(7.5, 2.6))
ax.bar(
    order,
    [codons_per_aa[aa] for aa in order],
    color=[
        PALETTE["perturbed"] if aa == "*" else PALETTE["prediction"] for aa in order
    ],
)
ax.set(
    xlabel='amino acid (one-letter code; "*" = stop)',
    ylabel="codons",
    title="The genetic code is redundant",
)
plt.show()

# %% [markdown]
# A coding sequence of 1,000 bases (UTRs excluded) encodes a protein of about 330 amino acids.
# The translating machine is the *ribosome*; the protein then folds into its working shape.
# Proteins do the cell's work: they catalyse reactions, build structures, and, crucially for us, some of them, the {term}`transcription factors <transcription factor>`, bind DNA and switch *other* genes on or off.
# That wiring makes the cell a network: silence one gene and its effect can ripple through many others.

# %% [markdown]
# ## A transcriptome is a vector of counts
#
# A single-cell RNA-sequencing experiment does not read proteins.
# It captures the mRNA molecules of each cell, tags each with a cell barcode and a {term}`UMI`, and counts molecules per gene {cite}`islam2014,zheng2017`.
# The result for one cell is a vector of non-negative integers, one entry per gene: its {term}`transcriptome`.
# Stacking cells gives a count matrix $X$ with cells in rows and genes in columns, the object at the centre of every later chapter.
#
# Two facts shape everything that follows.
# First, the numbers are small: in mouse fibroblasts a typical gene has around 17 mRNA molecules per cell, and each lives about 9 hours before it is degraded {cite}`schwanhausser2011`; many genes have far fewer.
# Synthesis is slow compared with decay, so few molecules are present at any moment.
# (Our simulations below use faster, toy rates so that they finish in seconds.)
# Second, the experiment sees only a fraction $\eta$ of the molecules, the {term}`capture efficiency`.
# To understand the data, we first need to understand where the molecules come from.

# %% [markdown]
# ## Genes are transcribed in bursts: the telegraph model
#
# A gene's promoter is not on or off for good.
# It flickers between an inactive and an active state, and mRNAs are made only while it is active, in {term}`bursts <burst>` {cite}`raj2006`.
# The simplest model of this, the *telegraph model* {cite}`peccoud1995`, has four reactions:
#
# $$
# \begin{aligned}
# \text{OFF} &\xrightarrow{k_\text{on}} \text{ON}, & \text{ON} &\xrightarrow{k_\text{off}} \text{OFF}, \\
# \text{ON} &\xrightarrow{k_\text{tx}} \text{ON} + \text{mRNA}, & \text{mRNA} &\xrightarrow{k_\text{deg}} \varnothing .
# \end{aligned}
# $$
#
# Each arrow is a random event with a rate (per hour): in a short time $dt$, an OFF promoter turns ON with probability $k_\text{on}\,dt$, and each of the $m$ mRNA molecules decays with probability $k_\text{deg}\,dt$.
# Molecule numbers are small, so we simulate the events themselves, not a smooth concentration.
#
# The exact way to do so is Gillespie's algorithm {cite}`gillespie1977`.
# Give each reaction $j$ its *propensity* $a_j$ (its rate in the current state: $k_\text{on}$ if OFF, $k_\text{tx}$ if ON, $k_\text{deg}\, m$ for decay, ...) and let $a_0 = \sum_j a_j$.
# Then the waiting time to the next event is exponential with rate $a_0$, and the event is reaction $j$ with probability $a_j / a_0$.
# Written for one gene in one cell, it is a dozen lines:


# %%
def gillespie_telegraph(gene: GeneKinetics, t_max: float, rng: np.random.Generator):
    """One cell, one gene: event times, promoter states and mRNA counts after each event."""
    t, on, m = 0.0, False, 0
    times, states, counts = [0.0], [on], [m]
    while True:
        propensities = np.array(
            [gene.k_on * (not on), gene.k_off * on, gene.k_tx * on, gene.k_deg * m]
        )
        total = propensities.sum()
        t += rng.exponential(1 / total)
        if t > t_max:
            return np.array(times), np.array(states), np.array(counts)
        reaction = rng.choice(4, p=propensities / total)
        if reaction == 0:
            on = True
        elif reaction == 1:
            on = False
        elif reaction == 2:
            m += 1
        else:
            m -= 1
        times.append(t)
        states.append(on)
        counts.append(m)


bursty = GeneKinetics("bursty", k_on=0.1, k_off=0.5, k_tx=10.0, k_deg=0.2)
times, states, counts = gillespie_telegraph(bursty, t_max=100.0, rng=rng)
print(
    f"{len(times) - 1} events in 100 hours; mRNA ranged from {counts.min()} to {counts.max()}"
)

# %% [markdown]
# The rates above mean: the promoter turns on about once every 10 hours ($1/k_\text{on}$), stays on for about 2 hours ($1/k_\text{off}$), and makes 10 mRNAs per hour while on, so each {term}`burst` yields on average $k_\text{tx}/k_\text{off} = 20$ molecules.
# Each mRNA lives about 5 hours ($1/k_\text{deg}$).
# For comparison we also simulate a *constitutive* gene, one that never switches off ($k_\text{off} = 0$; it starts OFF and switches on within about an hour), tuned to have the same average.

# %% tags=["hide-input"]
mean_bursty, _ = telegraph_moments(bursty)
constitutive = GeneKinetics(
    "constitutive", k_on=1.0, k_off=0.0, k_tx=mean_bursty * 0.2, k_deg=0.2
)
c_times, _, c_counts = gillespie_telegraph(constitutive, t_max=100.0, rng=rng)

fig, axes = plt.subplots(2, 1, figsize=(8, 4.6), sharex=True, sharey=True)
ax = axes[0]
ax.step(times, counts, where="post", color=PALETTE["perturbed"])
on_intervals = np.flatnonzero(np.diff(states.astype(int)) == 1)
for start in on_intervals:
    stop = next(
        (i for i in range(start + 1, len(states)) if not states[i]), len(states) - 1
    )
    ax.axvspan(
        times[start + 1], times[stop], color=PALETTE["perturbed"], alpha=0.12, lw=0
    )
ax.set(ylabel="mRNA molecules", title="A bursty gene in one cell (shaded: promoter ON)")
axes[1].step(c_times, c_counts, where="post", color=PALETTE["prediction"])
axes[1].set(
    xlabel="time (hours)",
    ylabel="mRNA molecules",
    title="A constitutive gene with the same mean",
)
plt.show()

# %% [markdown]
# Both cells start with no mRNA.
# After that, the bursty gene alternates between stretches with few or no molecules and sudden jumps to dozens; the constitutive gene wanders around its mean.
# Both have the same average, so a *bulk* measurement, which grinds up many cells and reports their total, could not tell them apart.
# A single-cell measurement can.
#
# The library function `simulate_expression` runs the same algorithm for many cells and genes at once (the loop is vectorized over cells), and adds translation, protein decay and regulation between genes, which we use below.
# Before trusting it, we check that it agrees with our dozen lines: both should give the same distribution of counts across cells after 60 hours (same mean, same spread, same share of zeros).

# %%
by_hand = np.array([gillespie_telegraph(bursty, 60.0, rng)[2][-1] for _ in range(300)])
population = simulate_expression(
    [bursty], n_cells=N_CELLS, t_max=60.0, n_times=61, seed=1
)
by_library = population.final_mrna()[:, 0]
print(
    f"mean mRNA after 60 h: by hand {by_hand.mean():.2f} (300 cells), library {by_library.mean():.2f} ({N_CELLS} cells)"
)

# Two samples from the same distribution: their means differ by less than 4 standard errors.
standard_error = np.sqrt(
    by_hand.var() / len(by_hand) + by_library.var() / len(by_library)
)
assert abs(by_hand.mean() - by_library.mean()) < 4 * standard_error
for name, x in (("by hand", by_hand), ("library", by_library)):
    print(
        f"{name:8s} Fano factor {x.var() / x.mean():5.1f}, cells with no mRNA {np.mean(x == 0):.0%}"
    )
# And the whole distributions: a two-sample Kolmogorov-Smirnov test finds no difference.
assert stats.ks_2samp(by_hand, by_library).pvalue > 0.01

# %% [markdown]
# ## From one cell in time to many cells at one moment
#
# A sequencing experiment does not follow one cell in time: it takes a snapshot of thousands of cells at one moment.
# If the cells are alike and independent, and the process has run long enough to forget where it started, the snapshot across cells has the same distribution as one cell's counts over a long time.
# For the telegraph model that *stationary* distribution is known exactly {cite}`peccoud1995`: with the rates measured in mRNA lifetimes, $a = k_\text{on}/k_\text{deg}$, $b = k_\text{off}/k_\text{deg}$, $c = k_\text{tx}/k_\text{deg}$, the count is Poisson with a random mean,
#
# $$
# m \sim \operatorname{Poisson}(c\,q), \qquad q \sim \operatorname{Beta}(a, b),
# $$
#
# where $q$ is, roughly, the fraction of recent time the promoter was on.
# Its mean and variance follow from the laws of total expectation and variance:
#
# $$
# \operatorname{E}[m] = c\,\frac{a}{a+b}, \qquad
# \operatorname{Fano}(m) = \frac{\operatorname{Var}[m]}{\operatorname{E}[m]} = 1 + \frac{c\,b}{(a+b)(a+b+1)} .
# $$
#
# A Poisson count has {term}`Fano factor` 1.
# When the promoter switches off much faster than mRNA decays and than it switches on ($b \gg a$ and $b \gg 1$), bursts are short and rare and the Fano factor is about $1 + k_\text{tx}/k_\text{off}$: one plus the mean burst size.
# Our gene is only halfway there ($b = 2.5$), so its Fano factor is well above one but below $1 + 20$.
# Bursty genes are *overdispersed*.
# Let us compare the simulated population with the exact distribution (`telegraph_pmf`) and with a Poisson distribution of the same mean.

# %% tags=["hide-input"]
mean, variance = telegraph_moments(bursty)
grid = np.arange(0, 120)
fig, ax = plt.subplots(figsize=(7, 3.6))
ax.hist(
    by_library,
    bins=np.arange(-0.5, 120.5),  # one bin per count, to compare with the probabilities
    density=True,
    color=PALETTE["control"],
    alpha=0.6,
    label=f"simulated cells (n={N_CELLS})",
)
ax.plot(
    grid,
    telegraph_pmf(grid, bursty),
    color=PALETTE["perturbed"],
    lw=2,
    label="telegraph model, exact",
)
ax.plot(
    grid,
    stats.poisson.pmf(grid, mean),
    color=PALETTE["prediction"],
    lw=2,
    ls="--",
    label="Poisson, same mean",
)
ax.set(
    xlabel="mRNA molecules in a cell",
    ylabel="fraction of cells",
    title="A bursty gene across a population",
    xlim=(-0.5, 100),
)
ax.legend()
plt.show()

# %%
fano = by_library.var() / by_library.mean()
print(f"theory:    mean {mean:.2f}, Fano factor {variance / mean:.1f}")
print(
    f"simulated: mean {by_library.mean():.2f}, Fano factor {fano:.1f}, cells with no mRNA {np.mean(by_library == 0):.0%}"
)
assert abs(by_library.mean() - mean) < 5 * np.sqrt(variance / len(by_library))
assert fano > 4  # a Poisson count would give about 1

# %% [markdown]
# The Poisson distribution with the same mean is a narrow bump; the real distribution has a pile of cells with no mRNA at all and a long tail of cells caught just after a burst.
# Nothing went wrong in these cells: this variability is biology, and it is there before any measurement error.

# %% [markdown]
# ## What the sequencer sees
#
# Now the measurement.
# Each mRNA molecule in a cell is captured independently with probability $\eta$, so the observed count is a binomial thinning of the true count: $x \mid m \sim \operatorname{Binomial}(m, \eta)$.
# Thinning scales the mean by $\eta$ and pulls the Fano factor towards one:
#
# $$
# \operatorname{E}[x] = \eta\, \operatorname{E}[m], \qquad
# \operatorname{Fano}(x) = 1 + \eta\,\bigl(\operatorname{Fano}(m) - 1\bigr) .
# $$
#
# In droplet experiments each cell is sealed in a tiny droplet with beads that carry its cell barcode, so efficiencies are modest.
# With $\eta = 0.1$, a toy value, our bursty gene is seen like this:

# %%
eta = 0.1
observed = capture(by_library, efficiency=eta, seed=2)
fano_observed = observed.var() / observed.mean()
print(
    f"observed: mean {observed.mean():.2f} UMIs, Fano factor {fano_observed:.2f} (formula applied to the simulated Fano {1 + eta * (fano - 1):.2f})"
)
print(
    f"cells with zero counts: {np.mean(observed == 0):.0%} (true mRNA zero in {np.mean(by_library == 0):.0%})"
)
assert abs(fano_observed - (1 + eta * (fano - 1))) < 0.5

# %% [markdown]
# Most cells now show zero, even though most of them did contain the mRNA.
# These zeros are what sampling a small number predicts, not a special failure mode: for UMI data, a Poisson-type or negative binomial model with no extra "zero inflation" fits well {cite}`svensson2020,grun2014`.
#
# Across genes, the signature of bursting plus sampling is a variance that grows faster than the mean.
# In the limit of short bursts the telegraph distribution becomes a negative binomial, whose variance is $\mu + \mu^2/\theta$ with inverse dispersion $\theta = k_\text{on}/k_\text{deg}$ (derived for proteins by {cite}`shahrezaei2008`; the same argument holds for mRNA).
# Thinning keeps it negative binomial with the same $\theta$.
# Bursting is not the only source of extra variance: cells also differ in size, in cell-cycle stage and in how many molecules are captured from them.
# All of this is why single-cell counts are modelled with negative binomials; chapter 3 builds the full noise model on it.
# To see it for many genes at once we draw from the exact stationary distribution (`sample_stationary`, which we just validated), instead of simulating every molecule.

# %% tags=["hide-input"]
gene_rng = np.random.default_rng(3)
many_genes = [
    GeneKinetics(f"g{i}", k_on=k_on, k_off=k_off, k_tx=k_tx)
    for i, (k_on, k_off, k_tx) in enumerate(
        zip(
            10 ** gene_rng.uniform(-2, 0, 60),
            10 ** gene_rng.uniform(-1, 1, 60),
            10 ** gene_rng.uniform(0, 2.5, 60),
        )
    )
]
counts_matrix = np.column_stack(
    [
        capture(sample_stationary(g, N_CELLS, seed=i), eta, seed=100 + i)
        for i, g in enumerate(many_genes)
    ]
)
gene_mean, gene_var = counts_matrix.mean(0), counts_matrix.var(0)
keep = gene_mean > 0

fig, ax = plt.subplots(figsize=(5.2, 4.2))
ax.loglog(
    gene_mean[keep],
    gene_var[keep],
    "o",
    color=PALETTE["perturbed"],
    alpha=0.7,
    label="60 bursty genes, observed",
)
line = np.logspace(np.log10(gene_mean[keep].min()), np.log10(gene_mean[keep].max()), 50)
ax.loglog(
    line, line, color=PALETTE["prediction"], ls="--", label="Poisson: variance = mean"
)
ax.set(
    xlabel="mean UMI count per cell",
    ylabel="variance across cells",
    title="Overdispersion across genes",
)
ax.legend()
plt.show()
print(
    f"genes with variance above their mean: {np.mean(gene_var[keep] > gene_mean[keep]):.0%} of {keep.sum()}"
)

# %% [markdown]
# ## Silencing a gene: CRISPRi versus knockout
#
# Two CRISPR tools dominate genetic screens read out by single-cell sequencing, such as {term}`Perturb-seq` {cite}`dixit2016,replogle2022`.
#
# Both use the Cas9 protein, which a short {term}`guide RNA` steers to the matching 20-letter stretch of the genome.
# In a pooled screen (Perturb-seq), each cell receives one guide at random, and the guide's identity is read out alongside the cell's transcriptome, so thousands of perturbations are measured in one experiment.
#
# - A **{term}`knockout`** uses Cas9 as a nuclease: it cuts the gene's DNA. The cell's error-prone repair often inserts or deletes a few bases; if that shifts the {term}`reading frame`, translation hits an early stop codon and no functional protein is made. Such mRNAs are partly destroyed by {term}`nonsense-mediated decay` {cite}`maquat2004`, but often remain detectable. Not every cell is hit: some repairs keep the frame, some cells are never edited, and protein made before the cut takes time to decay.
# - **{term}`CRISPRi`** uses a "dead" Cas9 (dCas9) that cannot cut, guided to the gene's promoter. dCas9 alone blocks transcription {cite}`qi2013`; fused to the KRAB repressor domain, it also makes the cell pack the surrounding DNA into silent heterochromatin, which works well in human cells {cite}`gilbert2013`. The DNA sequence is untouched; transcription is suppressed. The mRNA itself falls, usually not to zero: a *knockdown*.
#
# The Virtual Cell Challenge uses CRISPRi {cite}`roohani2025`, so the target gene's own mRNA drops, and the task is to predict what happens to all the *other* genes.
# (The real data we explore in chapter 2 come from a knockout screen {cite}`papalexi2021`, which is why the target's mRNA is a less reliable readout there.)
#
# We model both on a small network.
# A {term}`transcription factor` `TF` activates gene `UP` and represses gene `DOWN`: its protein multiplies their promoters' switch-on rate by a Hill function of the protein count, $P^h/(P_{1/2}^h+P^h)$ for activation and $P_{1/2}^h/(P_{1/2}^h+P^h)$ for repression.
# The Hill function is a smooth switch: it is one half when the protein count $P$ equals the threshold $P_{1/2}$, and the Hill exponent $h$ sets how sharp the switch is.
# A fourth gene, `OTHER`, is not connected.
# In our model, CRISPRi reduces the TF's burst frequency $k_\text{on}$ by 90% (`crispri`); the knockout sets translation of functional protein to zero and makes mRNA decay three times faster (`knockout`).
# These are modelling choices, simple and qualitatively right, not measured constants; for instance, every cell here is edited, and real human cells carry two copies (alleles) of each gene that burst independently.

# %%
tf = GeneKinetics("TF", k_on=0.3, k_off=0.3, k_tx=4.0, k_tl=0.5)
up = GeneKinetics("UP", k_on=0.5, k_off=0.5, k_tx=6.0, k_tl=0.5)
down = GeneKinetics("DOWN", k_on=0.5, k_off=0.5, k_tx=6.0, k_tl=0.5)
other = GeneKinetics("OTHER", k_on=0.2, k_off=0.4, k_tx=6.0, k_tl=0.5)
network = [
    Regulation("TF", "UP", threshold=60),
    Regulation("TF", "DOWN", threshold=60, activates=False),
]

conditions = {
    "control": tf,
    "CRISPRi": crispri(tf, efficiency=0.9),
    "knockout": knockout(tf),
}
runs = {
    name: simulate_expression(
        [tf_variant, up, down, other],
        network,
        n_cells=N_CELLS,
        t_max=150.0,
        n_times=76,
        seed=i,
    )
    for i, (name, tf_variant) in enumerate(conditions.items())
}
genes = runs["control"].genes
mrna = {name: run.final_mrna() for name, run in runs.items()}
tf_protein = {
    name: run.protein[:, -1, run.gene_index("TF")] for name, run in runs.items()
}

print("mean mRNA per cell at 150 h")
print(f"{'':10s}" + "".join(f"{g:>8s}" for g in genes) + f"{'TF protein':>12s}")
for name in runs:
    print(
        f"{name:10s}"
        + "".join(f"{v:8.2f}" for v in mrna[name].mean(0))
        + f"{tf_protein[name].mean():12.1f}"
    )

# %% [markdown]
# Starting from cells with no molecules, the populations settle within about 80 hours: proteins live about 20 hours ($1/k_\text{pdeg}$), and `UP` must wait for the TF protein to accumulate.
# We read the populations at 150 hours, well after that.

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3.2))
colors = {
    "control": PALETTE["control"],
    "CRISPRi": PALETTE["perturbed"],
    "knockout": PALETTE["accent"],
}
for name, run in runs.items():
    for g, ls in (("TF", "-"), ("UP", "--")):
        ax.plot(
            run.times,
            run.mrna[:, :, run.gene_index(g)].mean(0),
            ls=ls,
            color=colors[name],
            label=f"{g}, {name}",
        )
ax.set(
    xlabel="time (hours)",
    ylabel="mean mRNA per cell",
    title="Populations approach their steady state",
)
ax.legend(ncol=3, fontsize=8)
plt.show()

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 5, figsize=(11, 3.2))
panels = [("TF", "protein")] + [(g, "mRNA") for g in genes]
for ax, (g, kind) in zip(axes, panels):
    data = [
        tf_protein[name] if kind == "protein" else mrna[name][:, genes.index(g)]
        for name in runs
    ]
    parts = ax.violinplot(data, showmeans=True, showextrema=False)
    for body, name in zip(parts["bodies"], runs):
        body.set_facecolor(colors[name])
        body.set_alpha(0.6)
    parts["cmeans"].set_color("black")
    ax.set_xticks([1, 2, 3], list(runs), rotation=30)
    ax.set_title(f"{g} {kind}")
axes[0].set_ylabel("molecules per cell")
fig.suptitle("Silencing the transcription factor, cell by cell", y=1.02)
plt.show()

# %% [markdown]
# Read the panels from left to right.
# CRISPRi lowers the TF's mRNA and therefore its protein.
# The knockout removes the protein completely, yet the TF's mRNA is still clearly detected: measuring the target's mRNA would underestimate a knockout's strength.
# Downstream, less TF protein means less `UP` and more `DOWN`, and the gene outside the network does not move.
# This is the kind of ripple a virtual cell must predict, for 18,000 genes instead of four.
#
# The challenge summarizes a perturbation by how the average log-expression of each gene changes, $\delta_g = \overline{\log(1+x_g)}_\text{perturbed} - \overline{\log(1+x_g)}_\text{control}$ (chapters 4 to 8 make this precise; there the counts are first normalized for each cell's total, a step we skip here).
# Here is that effect vector for both tools, computed on what the sequencer would see:

# %%
seen = {name: capture(m, eta, seed=7 + i) for i, (name, m) in enumerate(mrna.items())}
effect = {
    name: np.log1p(seen[name]).mean(0) - np.log1p(seen["control"]).mean(0)
    for name in ("CRISPRi", "knockout")
}
for name, delta in effect.items():
    print(f"{name:9s} " + "  ".join(f"{g} {d:+.3f}" for g, d in zip(genes, delta)))

true_mean = {name: m.mean(0) for name, m in mrna.items()}
assert (
    true_mean["CRISPRi"][0] < 0.3 * true_mean["control"][0]
)  # the target itself is knocked down
assert (
    true_mean["knockout"][0] > true_mean["CRISPRi"][0]
)  # a knockout leaves more of the target's mRNA
assert true_mean["CRISPRi"][1] < 0.5 * true_mean["control"][1]  # activated gene falls
assert true_mean["CRISPRi"][2] > 1.2 * true_mean["control"][2]  # repressed gene rises
assert (
    abs(true_mean["CRISPRi"][3] / true_mean["control"][3] - 1) < 0.15
)  # unconnected gene unchanged

# %% [markdown]
# One more observation before we move on: the single-cell distributions in the violin plot overlap a lot.
# Pick one control cell and one CRISPRi cell at random; how often does the control cell show more observed `UP` counts?

# %%
up_control, up_silenced = (
    seen["control"][:, genes.index("UP")],
    seen["CRISPRi"][:, genes.index("UP")],
)
pairs = rng.integers(0, len(up_control), size=(2, 20000))
more = np.mean(up_control[pairs[0]] > up_silenced[pairs[1]])
ties = np.mean(up_control[pairs[0]] == up_silenced[pairs[1]])
print(
    f"control cell higher: {more:.0%}, tie: {ties:.0%}, CRISPRi cell higher: {1 - more - ties:.0%}"
)

# %% [markdown]
# Even for a gene whose average falls several-fold, a random pair of cells often ties and sometimes points the wrong way, as the numbers above show.
# One cell tells you little; the effect of a perturbation is a property of a *population*, measured against control cells.
# This is why the challenge asks for predicted populations of cells, and why chapter 3 asks how many cells it takes to see an effect.

# %% [markdown]
# ## Summary
#
# - Genes are stretches of DNA; transcription copies them into pre-mRNA, splicing removes introns and can skip exons to make isoforms, and translation reads codons into a protein.
# - A single-cell transcriptome is a vector of mRNA counts, one per gene; the experiment captures only a fraction of the molecules.
# - Transcription happens in bursts. The telegraph model, simulated exactly with Gillespie's algorithm, predicts Poisson-Beta counts: overdispersed (Fano factor up to one plus the burst size, when bursts are short and rare), with many zeros.
# - Capture thins the counts binomially: the mean shrinks by $\eta$, the Fano factor moves towards one, and zeros multiply without any special "dropout" process.
# - CRISPRi silences a gene at its promoter, so its mRNA drops; a knockout disrupts the gene so that no functional protein is made, while the mRNA may remain. Either way, the effect propagates through the regulatory network to other genes.
# - Perturbation effects are shifts of distributions over many cells, measured against controls: this is what a virtual cell predicts.

# %% [markdown]
# ## Exercises
#
# **1. Constitutive versus bursty.**
# The constitutive gene above never switches off ($k_\text{off} = 0$).
# Predict its Fano factor from the formula, then check it with `telegraph_moments` and with a simulated population.

# %% tags=["hide-cell"]
# Solution. With k_off = 0 the gene is never off: b = 0, so Fano = 1 (Poisson).
mean_c, var_c = telegraph_moments(constitutive)
cells = simulate_expression(
    [constitutive], n_cells=N_CELLS, t_max=60.0, n_times=2, seed=11
).final_mrna()[:, 0]
print(f"theory Fano {var_c / mean_c:.2f}, simulated {cells.var() / cells.mean():.2f}")
assert abs(cells.var() / cells.mean() - 1) < 0.25

# %% [markdown]
# **2. How many zeros does sampling make?**
# A gene has on average 2 mRNA molecules per cell and the capture efficiency is 10%.
# If the true count were Poisson, what fraction of cells would show zero UMIs?
# What if the gene is bursty with the same mean (try `GeneKinetics("b", k_on=0.02, k_off=1.0, k_tx=20.4)`)?

# %% tags=["hide-cell"]
# Solution. Thinning a Poisson(2) count by 0.1 gives Poisson(0.2): P(0) = exp(-0.2) ~ 0.82.
poisson_zero = np.exp(-0.2)
bursty_gene = GeneKinetics("b", k_on=0.02, k_off=1.0, k_tx=20.4)
print(f"mean of the bursty gene: {telegraph_moments(bursty_gene)[0]:.2f}")
observed_b = capture(sample_stationary(bursty_gene, 20000, seed=5), 0.1, seed=6)
print(f"zeros: Poisson {poisson_zero:.2f}, bursty {np.mean(observed_b == 0):.2f}")
# Bursty genes concentrate their molecules in fewer cells, so even more cells show zero.
assert np.mean(observed_b == 0) > poisson_zero

# %% [markdown]
# **3. A frameshift.**
# Delete one base from exon 2 of the toy gene and translate the isoform that includes it.
# What happens to the protein?
# Nonsense-mediated decay destroys an mRNA when its stop codon lies more than about 50 bases before the last exon-exon junction: would it destroy this one?

# %% tags=["hide-cell"]
# Solution. Exon 2 is no longer a multiple of 3, so every codon after it is read in the wrong frame.
pieces = (exon1, intron1, exon2[1:], intron2, exon3)
first, _, second, _, third = piece_intervals(*pieces)
shifted = splice(transcribe("".join(pieces)), [first, second, third])
print("in frame:  ", protein_1)
print("frameshift:", translate(shifted))
# In the new frame exon 2 reads AAG AGC TAA: a premature stop, starting 11 bases before the
# exon 2-exon 3 junction. The protein is cut short. That stop is too close to the last junction for
# nonsense-mediated decay, so this toy mRNA would survive; in real genes, with many exons,
# most frameshifts put a stop far upstream of the last junction, and knockouts work this way.
assert translate(shifted) == protein_1[:codons_in_exon1] + "K" + "S"
stop = transcribe(exon1 + exon2[1:]).find("UAA", len(exon1))
assert len(exon1 + exon2[1:]) - stop == 11

# %% [markdown]
# **4. Is the network's response linear?**
# Simulate CRISPRi of `TF` with efficiencies from 0.3 to 0.99 and plot the mean `UP` mRNA against the mean TF protein, both relative to the control.
# Is the response proportional? Which part of the model decides?

# %% tags=["hide-cell"]
# Solution. Not proportional. On log-log axes a proportional response is the dashed line of
# slope 1. Near the control level the slope is well below 1: UP is buffered, because its
# promoter already switches on about as often as it can. Towards strong knockdowns the slope
# climbs to about 1 or more: far below the threshold K = 60 the Hill function is about
# (P / K)^2, which alone would make UP fall faster than TF, but cells that keep more TF than
# average keep UP going, and this smooths the switch. The lesson for models: the effect of a
# knockdown depends non-linearly on its strength.
sweep = {}
for efficiency in (0.0, 0.3, 0.6, 0.9, 0.95, 0.99):
    run = simulate_expression(
        [crispri(tf, efficiency), up, down, other],
        network,
        n_cells=by_mode(800, 200),
        t_max=150.0,
        n_times=2,
        seed=21,
    )
    sweep[efficiency] = (run.protein[:, -1, 0].mean(), run.final_mrna()[:, 1].mean())
    print(
        f"efficiency {efficiency:.2f}: TF protein {sweep[efficiency][0]:6.1f}, UP mRNA {sweep[efficiency][1]:5.2f}"
    )
tf_means, up_means = np.array(list(sweep.values())).T
tf_level, up_level = tf_means / tf_means[0], up_means / up_means[0]
fig, ax = plt.subplots(figsize=(4.5, 3.4))
ax.loglog(tf_level, up_level, "o-", color=PALETTE["perturbed"], label="simulated")
ax.loglog(tf_level, tf_level, ls="--", color=PALETTE["control"], label="proportional")
ax.set(
    xlabel="TF protein (fraction of control)", ylabel="UP mRNA (fraction of control)"
)
ax.set_title("Buffered near control")
ax.legend()
plt.show()
slope_near_control = np.log(up_level[2]) / np.log(
    tf_level[2]
)  # control to 60% knockdown
print(f"log-log slope from control to a 60% knockdown: {slope_near_control:.2f}")
assert slope_near_control < 0.9  # buffered

# %% [markdown]
# ## References
#
# ```{bibliography}
# :filter: docname in docnames
# ```
