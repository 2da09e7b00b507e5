"""Executable central dogma: sequences, bursty transcription, translation and CRISPR perturbations.

Taught in chapter 01. Everything here is a teaching model: small, exact for what it models,
and deliberately silent about most of real cell biology.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy import special

__all__ = [
    "GENETIC_CODE",
    "Expression",
    "GeneKinetics",
    "Regulation",
    "capture",
    "crispri",
    "knockout",
    "sample_stationary",
    "simulate_expression",
    "splice",
    "telegraph_moments",
    "telegraph_pmf",
    "transcribe",
    "translate",
]

# ----------------------------------------------------------------------------- sequences

_CODON_BASES = "UCAG"
_AMINO_ACIDS = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
GENETIC_CODE: dict[str, str] = {
    a + b + c: _AMINO_ACIDS[16 * i + 4 * j + k]
    for i, a in enumerate(_CODON_BASES)
    for j, b in enumerate(_CODON_BASES)
    for k, c in enumerate(_CODON_BASES)
}
"""The standard genetic code: RNA codon -> one-letter amino acid, "*" for stop."""


def _check_letters(sequence: str, allowed: str, name: str) -> None:
    if not isinstance(sequence, str):
        raise ValueError(f"{name} must be a str, got {type(sequence).__name__}")
    if not sequence:
        raise ValueError(f"{name} is empty")
    bad = sorted(set(sequence) - set(allowed))
    if bad:
        raise ValueError(f"{name} may contain only {', '.join(allowed)} (upper case); found {bad}")


def transcribe(dna: str) -> str:
    """Copy a coding-strand DNA sequence into RNA (T becomes U). Taught in chapter 01."""
    _check_letters(dna, "ACGT", "dna")
    return dna.replace("T", "U")


def splice(pre_mrna: str, exons: Sequence[tuple[int, int]]) -> str:
    """Join the exons (0-based, half-open [start, end) intervals in order) of a pre-mRNA. Taught in chapter 01."""
    _check_letters(pre_mrna, "ACGU", "pre_mrna")
    if len(exons) == 0:
        raise ValueError("exons is empty: a transcript needs at least one exon")
    previous_end = 0
    for start, end in exons:
        if not 0 <= start < end <= len(pre_mrna):
            raise ValueError(f"exons: interval ({start}, {end}) must satisfy 0 <= start < end <= {len(pre_mrna)}")
        if start < previous_end:
            raise ValueError(f"exons: interval ({start}, {end}) overlaps or precedes the previous exon")
        previous_end = end
    return "".join(pre_mrna[start:end] for start, end in exons)


def translate(mrna: str) -> str:
    """Translate from the first AUG to the first in-frame stop (excluded); "" without AUG. Taught in chapter 01."""
    _check_letters(mrna, "ACGU", "mrna")
    start = mrna.find("AUG")
    if start < 0:
        return ""
    protein = []
    for i in range(start, len(mrna) - 2, 3):
        amino_acid = GENETIC_CODE[mrna[i : i + 3]]
        if amino_acid == "*":
            break
        protein.append(amino_acid)
    return "".join(protein)


# ----------------------------------------------------------------------------- kinetics


@dataclass(frozen=True)
class GeneKinetics:
    """Rates (per hour) of the two-state "telegraph" model of one gene plus translation. Taught in chapter 01.

    The promoter switches OFF -> ON at `k_on` and ON -> OFF at `k_off`; while ON it makes mRNA at
    `k_tx`; each mRNA decays at `k_deg` and is translated at `k_tl`; each protein decays at `k_pdeg`.
    """

    name: str
    k_on: float
    k_off: float
    k_tx: float
    k_deg: float = 0.2
    k_tl: float = 0.0
    k_pdeg: float = 0.05

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty str, got {self.name!r}")
        for field in fields(self)[1:]:
            value = getattr(self, field.name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{field.name} must be a finite rate >= 0, got {value!r} (gene {self.name})")
        for name in ("k_deg", "k_pdeg"):
            if getattr(self, name) == 0:
                raise ValueError(f"{name} must be > 0 (gene {self.name}): without decay there is no steady state")

    @property
    def burst_size(self) -> float:
        """Mean number of mRNAs made per ON period: k_tx / k_off."""
        return self.k_tx / self.k_off if self.k_off > 0 else float("inf")


@dataclass(frozen=True)
class Regulation:
    """`source`'s protein activates (or represses) `target`'s promoter through a Hill function. Taught in chapter 01.

    The target's effective k_on is multiplied by P^n / (K^n + P^n) (activation) or
    K^n / (K^n + P^n) (repression), with P the source protein count, K = `threshold`, n = `hill`.
    """

    source: str
    target: str
    threshold: float
    hill: float = 2.0
    activates: bool = True

    def __post_init__(self) -> None:
        if not np.isfinite(self.threshold) or self.threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold!r}")
        if not np.isfinite(self.hill) or self.hill <= 0:
            raise ValueError(f"hill must be > 0, got {self.hill!r}")
        if self.source == self.target:
            raise ValueError(f"source and target are both {self.source!r}: self-regulation is not modelled")

    def factor(self, protein: np.ndarray) -> np.ndarray:
        """Multiplier in [0, 1] on the target's k_on, given the source's protein counts."""
        p = np.asarray(protein, dtype=float) ** self.hill
        k = self.threshold**self.hill
        return p / (k + p) if self.activates else k / (k + p)


def crispri(gene: GeneKinetics, efficiency: float = 0.9) -> GeneKinetics:
    """CRISPRi (dCas9-KRAB) silencing, modelled as fewer bursts: k_on *= 1 - efficiency. Taught in chapter 01."""
    if not 0 <= efficiency <= 1:
        raise ValueError(f"efficiency must be in [0, 1], got {efficiency!r}")
    return replace(gene, k_on=gene.k_on * (1 - efficiency))


def knockout(gene: GeneKinetics, nmd_factor: float = 3.0) -> GeneKinetics:
    """CRISPR knockout: no functional protein, and nonsense-mediated decay speeds mRNA decay. Taught in chapter 01."""
    if not np.isfinite(nmd_factor) or nmd_factor < 1:
        raise ValueError(f"nmd_factor must be >= 1 (1 = no decay speed-up), got {nmd_factor!r}")
    return replace(gene, k_tl=0.0, k_deg=gene.k_deg * nmd_factor)


# ----------------------------------------------------------------------------- stationary theory


def telegraph_moments(gene: GeneKinetics) -> tuple[float, float]:
    """Stationary mean and variance of the telegraph model's mRNA count. Taught in chapter 01."""
    a, b, c = gene.k_on / gene.k_deg, gene.k_off / gene.k_deg, gene.k_tx / gene.k_deg
    if a + b == 0:
        raise ValueError(f"gene {gene.name}: k_on and k_off are both 0, the promoter never switches")
    mean = c * a / (a + b)
    fano = 1 + c * b / ((a + b) * (a + b + 1))
    return mean, mean * fano


def telegraph_pmf(counts: np.ndarray | Sequence[int], gene: GeneKinetics) -> np.ndarray:
    """Exact stationary probability of each mRNA count in the telegraph model. Taught in chapter 01.

    With a = k_on/k_deg, b = k_off/k_deg, c = k_tx/k_deg the count is Poisson(c * q) with
    q ~ Beta(a, b) (Peccoud and Ycart 1995); summed over q this gives a confluent
    hypergeometric function, evaluated in its all-positive Kummer form for stability.
    """
    n = np.asarray(counts)
    if n.size == 0:
        raise ValueError("counts is empty")
    if not np.issubdtype(n.dtype, np.integer) or (n < 0).any():
        raise ValueError("counts must be non-negative integers")
    a, b, c = gene.k_on / gene.k_deg, gene.k_off / gene.k_deg, gene.k_tx / gene.k_deg
    if a == 0:  # promoter never turns on: no mRNA
        return (n == 0).astype(float)
    if c == 0:
        return (n == 0).astype(float)
    if b == 0:  # always ON: Poisson(c)
        return np.exp(n * np.log(c) - c - special.gammaln(n + 1))
    n = n.astype(float)
    log_p = (
        special.gammaln(a + n)
        + special.gammaln(a + b)
        - special.gammaln(n + 1)
        - special.gammaln(a + b + n)
        - special.gammaln(a)
        + n * np.log(c)
        - c
        + np.log(special.hyp1f1(b, a + b + n, c))
    )
    return np.exp(log_p)


def sample_stationary(gene: GeneKinetics, n_cells: int, seed: int | None = 0) -> np.ndarray:
    """Draw steady-state mRNA counts exactly: q ~ Beta(a, b), m ~ Poisson(c q). Taught in chapter 01."""
    if int(n_cells) != n_cells or n_cells < 1:
        raise ValueError(f"n_cells must be a positive integer, got {n_cells!r}")
    a, b, c = gene.k_on / gene.k_deg, gene.k_off / gene.k_deg, gene.k_tx / gene.k_deg
    rng = np.random.default_rng(seed)
    if a == 0:
        return np.zeros(int(n_cells), dtype=np.int64)
    on_fraction = np.ones(int(n_cells)) if b == 0 else rng.beta(a, b, int(n_cells))
    return rng.poisson(c * on_fraction)


# ----------------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class Expression:
    """Simulated molecule counts over time: arrays are (cells, times, genes). Taught in chapter 01."""

    genes: tuple[str, ...]
    times: np.ndarray
    mrna: np.ndarray
    protein: np.ndarray
    promoter_on: np.ndarray

    def final_mrna(self) -> np.ndarray:
        """The (cells, genes) mRNA count matrix at the last time point: a population snapshot."""
        return self.mrna[:, -1, :]

    def gene_index(self, name: str) -> int:
        """Column of gene `name` in the gene axis."""
        try:
            return self.genes.index(name)
        except ValueError:
            raise ValueError(f"unknown gene {name!r}; simulated genes are {list(self.genes)}") from None


def simulate_expression(
    genes: Sequence[GeneKinetics],
    regulations: Sequence[Regulation] = (),
    *,
    n_cells: int = 100,
    t_max: float = 100.0,
    n_times: int = 101,
    seed: int | None = 0,
) -> Expression:
    """Exact stochastic (Gillespie) simulation of independent cells, all starting OFF with no molecules.

    Each cell is its own chemical system; the loop is vectorized over cells (one reaction per
    cell per step), so its length is the number of reactions in one cell. Taught in chapter 01.
    """
    genes = list(genes)
    if not genes:
        raise ValueError("genes is empty: give at least one GeneKinetics")
    names = tuple(g.name for g in genes)
    if len(set(names)) != len(names):
        raise ValueError(f"genes: gene names must be unique, got {list(names)}")
    for reg in regulations:
        for end in (reg.source, reg.target):
            if end not in names:
                raise ValueError(f"regulations: unknown gene {end!r}; simulated genes are {list(names)}")
    if int(n_cells) != n_cells or n_cells < 1:
        raise ValueError(f"n_cells must be a positive integer, got {n_cells!r}")
    if not np.isfinite(t_max) or t_max <= 0:
        raise ValueError(f"t_max must be a positive number of hours, got {t_max!r}")
    if int(n_times) != n_times or n_times < 2:
        raise ValueError(f"n_times must be an integer >= 2, got {n_times!r}")

    rng = np.random.default_rng(seed)
    n, g = int(n_cells), len(genes)
    rate = {f.name: np.array([getattr(x, f.name) for x in genes]) for f in fields(GeneKinetics)[1:]}
    regs = [(names.index(r.source), names.index(r.target), r) for r in regulations]
    times = np.linspace(0.0, float(t_max), int(n_times))

    on = np.zeros((n, g), dtype=bool)
    mrna = np.zeros((n, g), dtype=np.int64)
    protein = np.zeros((n, g), dtype=np.int64)
    t = np.zeros(n)
    next_record = np.zeros(n, dtype=np.int64)
    out_on = np.zeros((n, len(times), g), dtype=bool)
    out_mrna = np.zeros((n, len(times), g), dtype=np.int64)
    out_protein = np.zeros((n, len(times), g), dtype=np.int64)
    rows = np.arange(n)

    while True:
        alive = t <= t_max
        if not alive.any():
            break
        k_on = np.broadcast_to(rate["k_on"], (n, g)).copy()
        for source, target, reg in regs:
            k_on[:, target] *= reg.factor(protein[:, source])
        # Six reactions per gene, in blocks of g columns: the block index is the reaction kind.
        propensity = np.concatenate(
            [
                k_on * ~on,
                rate["k_off"] * on,
                rate["k_tx"] * on,
                rate["k_deg"] * mrna,
                rate["k_tl"] * mrna,
                rate["k_pdeg"] * protein,
            ],
            axis=1,
        )
        total = propensity.sum(axis=1)
        with np.errstate(divide="ignore"):
            dt = rng.exponential(1.0, n) / total  # total == 0: nothing can happen, dt = inf
        t_next = np.where(alive, t + dt, np.inf)
        # The state holds on [t, t_next): record it at every grid time in that interval.
        while True:
            due = (next_record < len(times)) & alive
            due[due] = times[next_record[due]] < t_next[due]
            if not due.any():
                break
            idx = next_record[due]
            out_on[due, idx] = on[due]
            out_mrna[due, idx] = mrna[due]
            out_protein[due, idx] = protein[due]
            next_record[due] += 1
        fire = alive & np.isfinite(t_next) & (t_next <= t_max)
        if fire.any():
            threshold = rng.random(n) * total
            reaction = (np.cumsum(propensity, axis=1) < threshold[:, None]).sum(axis=1)
            reaction = np.minimum(reaction, propensity.shape[1] - 1)[fire]
            kind, gene = np.divmod(reaction, g)
            r = rows[fire]
            on[r, gene] = np.where(kind == 0, True, np.where(kind == 1, False, on[r, gene]))
            mrna[r, gene] += (kind == 2).astype(np.int64) - (kind == 3)
            protein[r, gene] += (kind == 4).astype(np.int64) - (kind == 5)
        t = t_next
    return Expression(genes=names, times=times, mrna=out_mrna, protein=out_protein, promoter_on=out_on)


def capture(counts: np.ndarray, efficiency: float, seed: int | None = 0) -> np.ndarray:
    """What sequencing sees: each molecule is captured with probability `efficiency`. Taught in chapter 01."""
    counts = np.asarray(counts)
    if counts.size == 0:
        raise ValueError("counts is empty")
    if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError("counts must be non-negative integers (molecule numbers)")
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency!r}")
    return np.random.default_rng(seed).binomial(counts, efficiency)
